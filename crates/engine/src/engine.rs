//! The engine's front door: load a model (GGUF file or HuggingFace folder) with its tokenizer
//! and chat template, turn prompts into requests, generate, score and tokenize.

use std::path::{Path, PathBuf};

use beamline_gguf::GgufFile;
use tch::{Device, Kind, Tensor};

use crate::chat_template::{ChatTemplate, Message};
use crate::config::ModelConfig;
use crate::cpu;
use crate::device::{self, DeviceChoice};
use crate::error::{EngineError, RequestError, Result};
use crate::generation::{self, BatchStats, GenerationOutput, GenerationParams, GenerationRequest};
use crate::models::{self, decoder::Decoder};
use crate::quant::QuantMode;
use crate::tokenizer::Tokenizer;
use crate::weights::{GgufWeights, SafetensorsWeights};

/// Longest context beamline prepares rope tables for, whatever the model claims.
const MAX_CONTEXT: usize = 32_768;

#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub quant: QuantMode,
    pub device: DeviceChoice,
    /// Sequences decoded together (KV-cache slots).
    pub max_batch: usize,
    /// On a CPU with AMX tile units, or AVX-512 BF16 on AMD, run the block products of several
    /// rows (prefill, batched decoding) in bfloat16: bfloat16 factors with float32 sums, two
    /// (AVX-512 BF16) to several (AMX) times faster than float32 (Intel cores run `vdpbf16ps`
    /// at half the float32 rate, so without AMX they keep 16-bit or float32 products). With AVX-512 BF16
    /// the KV cache is bfloat16 too. Off: float32 activations everywhere (exactly the
    /// dequantized model's arithmetic).
    pub bf16: bool,
    /// On AVX2 CPUs without AVX-512 (where neither the bfloat16 kernels nor the float32 AVX-512
    /// one run), run the block products of several rows with the activations rounded to 8 bits per
    /// 32-input block (llama.cpp's way; integer sums, the weights exact): about 1.3x the
    /// float32 products on a Zen 3 but no faster than 16 bits (`int16`), at a clear cost in
    /// fidelity (see `cpu::Products`), so off by default; on, it takes precedence over `int16`.
    pub int8: bool,
    /// On AVX2 CPUs, and on AVX-512 ones with VNNI, run the products of several rows that no
    /// faster bfloat16 kernel takes (all of them with `bf16` off; the narrow ones, 2 to 4 or
    /// 12 rows, beside AMX or AMD's AVX-512 BF16) with the activations rounded to 16 bits per
    /// 32-input block (a relative step of 2^-15 of the block's largest input; integer sums,
    /// the weights exact): on by default, the float model's arithmetic to about five
    /// significant digits. Off (and `int8` off): float32 activations.
    pub int16: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            quant: QuantMode::Auto,
            device: DeviceChoice::Auto,
            max_batch: 32,
            bf16: true,
            int8: false,
            int16: true,
        }
    }
}

/// A prompt as a job gives it.
#[derive(Debug, Clone)]
pub enum Prompt {
    Text(String),
    Chat(Vec<Message>),
}

pub struct Engine {
    model: Decoder,
    tokenizer: Tokenizer,
    chat_template: Option<ChatTemplate>,
    device: Device,
    quant: QuantMode,
    path: PathBuf,
    options: EngineOptions,
}

/// The result of `score`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ScoreOutput {
    /// Tokens of the text.
    pub tokens: usize,
    /// Summed negative log-likelihood (natural log) of tokens 1..n given their prefix.
    pub nll: f64,
    pub perplexity: f64,
}

impl Engine {
    pub fn load(path: &Path, options: EngineOptions) -> Result<Engine> {
        let device = device::resolve(options.device)?;
        if device == Device::Cpu && crate::cpu::available() {
            // The block kernels run on their own pool (cpu::pool). libtorch's OpenMP workers spin-wait
            // between parallel regions and would take the cores from them (measured: 40% of
            // the time in libgomp's spin loop); the ops left to libtorch here are small.
            tch::set_num_threads(1);
        }
        // What start-up touched (libtorch's operator registrations above all) is not needed again.
        crate::memory::release_mapped_file_pages();
        let _guard = tch::no_grad_guard();
        let (mut model, tokenizer, template_source) = if path.is_dir() {
            load_hf_folder(path, options.quant, device)?
        } else {
            load_gguf(path, options.quant, device)?
        };
        model.allow_products(cpu::Products {
            bf16: options.bf16,
            int8: options.int8,
            int16: options.int16,
        });
        crate::memory::release_free_memory();
        let chat_template = match template_source {
            Some(source) => Some(ChatTemplate::new(
                &source,
                &tokenizer.bos_token,
                &tokenizer.eos_token,
            )?),
            None => None,
        };
        // Likewise the code and read-only data only loading ran (parsing, conversions).
        crate::memory::release_mapped_file_pages();
        Ok(Engine {
            model,
            tokenizer,
            chat_template,
            device,
            quant: options.quant,
            path: path.to_path_buf(),
            options,
        })
    }

    /// The model itself, for callers that drive it directly (tests, benchmarks).
    pub fn decoder(&self) -> &Decoder {
        &self.model
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    pub fn config(&self) -> &ModelConfig {
        &self.model.config
    }

    pub fn device(&self) -> Device {
        self.device
    }

    pub fn quant(&self) -> QuantMode {
        self.quant
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes of weights held on the device.
    pub fn weight_bytes(&self) -> usize {
        self.model.weight_bytes()
    }

    /// Whether batched products run in bfloat16 (see [`EngineOptions::bf16`]).
    pub fn uses_bf16(&self) -> bool {
        self.model.uses_bf16()
    }

    /// Whether batched products run with 8-bit activations (see [`EngineOptions::int8`]).
    pub fn uses_int8(&self) -> bool {
        self.model.uses_int8()
    }

    /// Whether batched products run with 16-bit activations (see [`EngineOptions::int16`]).
    pub fn uses_int16(&self) -> bool {
        self.model.uses_int16()
    }

    pub fn storage_summary(&self) -> String {
        models::storage_summary(&self.model)
    }

    /// Tokens the model can attend over.
    pub fn context_length(&self) -> usize {
        self.model.config.max_position_embeddings.min(MAX_CONTEXT)
    }

    /// The prompt text a chat becomes under the model's template.
    pub fn render_chat(&self, messages: &[Message]) -> Result<String> {
        match &self.chat_template {
            Some(t) => t.render(messages),
            None => Err(EngineError::ChatTemplate(format!(
                "{} has no chat template",
                self.path.display()
            ))),
        }
    }

    /// Token ids of a prompt as transformers would feed them: plain text with the tokenizer's
    /// special tokens (BOS where the model adds one), a chat rendered by its template as is.
    pub fn prompt_ids(&self, prompt: &Prompt) -> Result<Vec<u32>> {
        match prompt {
            Prompt::Text(text) => self.tokenizer.encode(text, true),
            Prompt::Chat(messages) => self.tokenizer.encode(&self.render_chat(messages)?, false),
        }
    }

    /// Checks one request against the model: prompt non-empty and within the context.
    pub fn request(
        &self,
        prompt_ids: Vec<u32>,
        params: GenerationParams,
    ) -> std::result::Result<GenerationRequest, RequestError> {
        params.validate()?;
        if prompt_ids.is_empty() {
            return Err(RequestError::EmptyPrompt);
        }
        let context = self.context_length();
        if prompt_ids.len() + params.max_new_tokens > context {
            return Err(RequestError::PromptTooLong {
                prompt_tokens: prompt_ids.len(),
                max_new_tokens: params.max_new_tokens,
                context,
            });
        }
        let vocab = self.model.config.vocab_size as u32;
        if let Some(&bad) = prompt_ids.iter().find(|&&t| t >= vocab) {
            return Err(RequestError::InvalidParam {
                field: "prompt",
                reason: format!("token id {bad} is outside the vocabulary ({vocab})"),
            });
        }
        Ok(GenerationRequest { prompt_ids, params })
    }

    /// Token ids of phrases to ban during decoding, with and without a leading space (a phrase
    /// mid-sentence is tokenized with its space), as transformers' bad-words processor expects.
    pub fn banned_sequences(&self, phrases: &[String]) -> Result<Vec<Vec<u32>>> {
        let mut out = Vec::new();
        for phrase in phrases {
            for variant in [phrase.clone(), format!(" {phrase}")] {
                let ids = self.tokenizer.encode(&variant, false)?;
                if !ids.is_empty() && !out.contains(&ids) {
                    out.push(ids);
                }
            }
        }
        Ok(out)
    }

    /// Generates for every request, up to `max_batch` sequences at a time. libtorch reports a
    /// failed operation (a CUDA out-of-memory above all) by unwinding; that becomes an error,
    /// `OutOfMemory` when it is one, so the caller can split the batch and retry.
    pub fn generate(
        &self,
        requests: Vec<GenerationRequest>,
    ) -> Result<(Vec<GenerationOutput>, BatchStats)> {
        let max_batch = self.options.max_batch;
        let run = || generation::run_batch(&self.model, &self.tokenizer, requests, max_batch);
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)).map_err(panic_error)
    }

    /// Generates for requests as `source` feeds them (continuous batching across arrivals, at
    /// most `max_batch` sequences at a time) until it closes. A libtorch failure ends the run
    /// with an error; the requests then in flight got no output and the caller retries them.
    pub fn generate_stream(
        &self,
        source: &mut dyn generation::RequestSource,
    ) -> Result<BatchStats> {
        let max_batch = self.options.max_batch;
        let run = || generation::run_stream(&self.model, &self.tokenizer, max_batch, source);
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)).map_err(panic_error)
    }

    /// Runs `ids` through the model in one causal pass; returns the ids as a libtorch input
    /// vector and the final hidden states `[1, len, hidden]`.
    fn prefill_hidden(&self, ids: &[u32]) -> (Vec<i64>, Tensor) {
        let input: Vec<i64> = ids.iter().map(|&t| t as i64).collect();
        let batch = Tensor::from_slice(&input)
            .to_device(self.device)
            .unsqueeze(0);
        let (hidden, _) = self.model.prefill(&batch);
        (input, hidden)
    }

    /// Float32 logits at every position of `ids` (one forward pass, causal), `[len][vocab]`.
    pub fn prompt_logits(&self, ids: &[u32]) -> Result<Vec<Vec<f32>>> {
        let _guard = tch::no_grad_guard();
        let (_, hidden) = self.prefill_hidden(ids);
        let logits = self
            .model
            .logits(&hidden.squeeze_dim(0))
            .to_device(Device::Cpu)
            .contiguous();
        let vocab = logits.size()[1] as usize;
        let mut flat = vec![0f32; logits.numel()];
        let n = flat.len();
        logits.copy_data(&mut flat, n);
        Ok(flat.chunks(vocab).map(<[f32]>::to_vec).collect())
    }

    /// Summed negative log-likelihood and perplexity of `text` (first token not scored).
    pub fn score(&self, text: &str) -> Result<ScoreOutput> {
        let ids = self.tokenizer.encode(text, true)?;
        if ids.len() < 2 {
            return Err(RequestError::InvalidParam {
                field: "text",
                reason: "needs at least two tokens to score".into(),
            }
            .into());
        }
        if ids.len() > self.context_length() {
            return Err(RequestError::PromptTooLong {
                prompt_tokens: ids.len(),
                max_new_tokens: 0,
                context: self.context_length(),
            }
            .into());
        }
        let _guard = tch::no_grad_guard();
        let (input, hidden) = self.prefill_hidden(&ids);
        let targets = Tensor::from_slice(&input[1..]).to_device(self.device);
        let n = ids.len() as i64 - 1;
        let mut nll = 0.0;
        // In chunks, so a long text never materialises [n, vocab] logits at once.
        let chunk = 256;
        let mut start = 0;
        while start < n {
            let len = chunk.min(n - start);
            let logits = self
                .model
                .logits(&hidden.narrow(1, start, len).squeeze_dim(0));
            let logp = logits.to_kind(Kind::Float).log_softmax(-1, Kind::Float);
            let picked = logp.gather(1, &targets.narrow(0, start, len).unsqueeze(1), false);
            nll -= picked
                .to_kind(Kind::Double)
                .sum(Kind::Double)
                .double_value(&[]);
            start += len;
        }
        Ok(ScoreOutput {
            tokens: n as usize,
            nll,
            perplexity: (nll / n as f64).exp(),
        })
    }
}

fn load_gguf(
    path: &Path,
    quant: QuantMode,
    device: Device,
) -> Result<(Decoder, Tokenizer, Option<String>)> {
    let file = GgufFile::open(path)?;
    let config = ModelConfig::from_gguf(&file)?;
    let tokenizer = Tokenizer::from_gguf(&file)?;
    let template = file
        .get_str("tokenizer.chat_template")
        .ok()
        .map(str::to_string);
    let source = GgufWeights::new(&file, config.architecture);
    let model = models::load(&source, config, quant, device)?;
    Ok((model, tokenizer, template))
}

fn load_hf_folder(
    dir: &Path,
    quant: QuantMode,
    device: Device,
) -> Result<(Decoder, Tokenizer, Option<String>)> {
    let config = ModelConfig::from_hf_json(&dir.join("config.json"))?;
    let read_json = |name: &str| -> Option<serde_json::Value> {
        let text = std::fs::read_to_string(dir.join(name)).ok()?;
        serde_json::from_str(&text).ok()
    };
    let tokenizer_config = read_json("tokenizer_config.json").unwrap_or_default();
    let generation_config = read_json("generation_config.json").unwrap_or_default();
    let model_config = read_json("config.json").unwrap_or_default();
    let ids = |v: Option<&serde_json::Value>| -> Vec<u32> {
        match v {
            Some(serde_json::Value::Number(n)) => {
                n.as_u64().map(|x| vec![x as u32]).unwrap_or_default()
            }
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .filter_map(|x| x.as_u64())
                .map(|x| x as u32)
                .collect(),
            _ => Vec::new(),
        }
    };
    let tokenizer_path = dir.join("tokenizer.json");
    if !tokenizer_path.exists() {
        return Err(EngineError::load(dir, "no tokenizer.json"));
    }
    let probe = Tokenizer::from_file(&tokenizer_path, None, Vec::new())?;
    let token_id = |key: &str| -> Option<u32> {
        let v = tokenizer_config.get(key)?;
        let name = v
            .as_str()
            .or_else(|| v.get("content").and_then(|c| c.as_str()))?;
        probe.token_to_id(name)
    };
    let mut eos = ids(generation_config.get("eos_token_id"));
    if eos.is_empty() {
        eos = ids(model_config.get("eos_token_id"));
    }
    if eos.is_empty() {
        eos = token_id("eos_token").into_iter().collect();
    }
    let bos = ids(model_config.get("bos_token_id"))
        .first()
        .copied()
        .or_else(|| token_id("bos_token"));
    let tokenizer = Tokenizer::from_file(&tokenizer_path, bos, eos)?;
    let template = tokenizer_config
        .get("chat_template")
        .and_then(|t| t.as_str())
        .map(str::to_string)
        .or_else(|| std::fs::read_to_string(dir.join("chat_template.jinja")).ok());
    let source = SafetensorsWeights::open(dir)?;
    let model = models::load(&source, config, quant, device)?;
    Ok((model, tokenizer, template))
}

/// libtorch reports a failed operation by unwinding; its message becomes a typed error.
fn panic_error(panic: Box<dyn std::any::Any + Send>) -> EngineError {
    let text = panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "generation failed".into());
    // tch's panicking calls format libtorch's error as `called `Result::unwrap()` on an `Err`
    // value: Torch("<message>\n<C++ backtrace>")`, the newlines escaped: keep the message.
    let message = text
        .split_once("Torch(\"")
        .map_or(text.as_str(), |(_, m)| m);
    let first = message
        .split("\\n")
        .next()
        .and_then(|m| m.lines().next())
        .unwrap_or_default()
        .trim_end_matches("\")")
        .to_string();
    if crate::error::is_out_of_memory(&text) {
        EngineError::OutOfMemory(first)
    } else {
        EngineError::Torch(first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_libtorch_panic_becomes_a_short_typed_error() {
        let oom = r#"called `Result::unwrap()` on an `Err` value: Torch("CUDA out of memory. Tried to allocate 3.05 GiB.\nException raised from malloc at CUDACachingAllocator.cpp:1574 (most recent call first):\nframe #0: c10::Error::Error")"#;
        match panic_error(Box::new(oom.to_string())) {
            EngineError::OutOfMemory(m) => {
                assert_eq!(m, "CUDA out of memory. Tried to allocate 3.05 GiB.")
            }
            other => panic!("expected OutOfMemory, got {other:?}"),
        }
        let cpu = r#"called `Result::unwrap()` on an `Err` value: Torch("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you tried to allocate 98304000000 bytes.\nframe #0")"#;
        assert!(matches!(
            panic_error(Box::new(cpu)),
            EngineError::OutOfMemory(_)
        ));
        match panic_error(Box::new("index 9 is out of bounds\nmore")) {
            EngineError::Torch(m) => assert_eq!(m, "index 9 is out of bounds"),
            other => panic!("expected Torch, got {other:?}"),
        }
    }
}
