//! Text ↔ token ids. A HuggingFace folder brings its `tokenizer.json`; for a GGUF file the same
//! tokenizer is rebuilt from the `tokenizer.ggml.*` metadata (vocabulary, merges, token types,
//! special ids, the pre-tokenizer named by `tokenizer.ggml.pre`) so ids equal the model's own.

use std::path::Path;

use beamline_gguf::GgufFile;
use serde_json::{json, Value};

use crate::error::{EngineError, Result};

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    pub bos_id: Option<u32>,
    pub eos_ids: Vec<u32>,
    pub bos_token: String,
    pub eos_token: String,
}

/// GGUF token types (llama.cpp's `llama_token_type`).
const TYPE_CONTROL: i64 = 3;
const TYPE_USER_DEFINED: i64 = 4;

impl Tokenizer {
    pub fn from_file(path: &Path, bos_id: Option<u32>, eos_ids: Vec<u32>) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| EngineError::load(path, format!("invalid tokenizer.json: {e}")))?;
        Ok(Self::with_specials(inner, bos_id, eos_ids))
    }

    fn with_specials(inner: tokenizers::Tokenizer, bos_id: Option<u32>, eos_ids: Vec<u32>) -> Self {
        let name = |id: Option<u32>| id.and_then(|i| inner.id_to_token(i)).unwrap_or_default();
        Tokenizer {
            bos_token: name(bos_id),
            eos_token: name(eos_ids.first().copied()),
            inner,
            bos_id,
            eos_ids,
        }
    }

    /// Rebuilds the tokenizer from GGUF metadata.
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        let path = file.path();
        let model = file.get_str("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(EngineError::load(
                path,
                format!("tokenizer.ggml.model '{model}' is not supported (supported: gpt2 byte-level BPE)"),
            ));
        }
        let tokens = file.get_str_array("tokenizer.ggml.tokens")?;
        let merges = file.get_str_array("tokenizer.ggml.merges")?;
        let types = file
            .get_i64_array("tokenizer.ggml.token_type")
            .unwrap_or_default();
        let pre = file.get_str("tokenizer.ggml.pre").unwrap_or("default");
        let bos_id = file
            .get_u64("tokenizer.ggml.bos_token_id")
            .ok()
            .map(|v| v as u32);
        let eos_id = file
            .get_u64("tokenizer.ggml.eos_token_id")
            .ok()
            .map(|v| v as u32);
        let add_bos = file
            .get("tokenizer.ggml.add_bos_token")
            .and_then(|v| v.as_bool())
            .unwrap_or(false);

        let vocab: serde_json::Map<String, Value> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.to_string(), json!(i)))
            .collect();
        let added: Vec<Value> = tokens
            .iter()
            .enumerate()
            .filter(|(i, _)| matches!(types.get(*i), Some(&TYPE_CONTROL) | Some(&TYPE_USER_DEFINED)))
            .map(|(i, t)| {
                json!({"id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
                       "normalized": false, "special": types.get(i) == Some(&TYPE_CONTROL)})
            })
            .collect();
        let post_processor = match (add_bos, bos_id.and_then(|i| tokens.get(i as usize))) {
            (true, Some(bos)) => json!({
                "type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                         {"SpecialToken": {"id": bos, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {bos.to_string(): {"id": bos, "ids": [bos_id], "tokens": [bos]}}
            }),
            _ => {
                json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false})
            }
        };
        let spec = json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": pre_tokenizer(pre),
            "post_processor": post_processor,
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {
                "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                "vocab": vocab, "merges": merges,
            }
        });
        let inner: tokenizers::Tokenizer = spec.to_string().parse().map_err(|e| {
            EngineError::load(
                path,
                format!("cannot build tokenizer from GGUF metadata: {e}"),
            )
        })?;
        Ok(Self::with_specials(
            inner,
            bos_id,
            eos_id.into_iter().collect(),
        ))
    }

    /// Token ids of `text`, with the special tokens the model's post-processor adds (BOS).
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|e| EngineError::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| EngineError::Tokenizer(e.to_string()))
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn is_eos(&self, id: u32) -> bool {
        self.eos_ids.contains(&id)
    }
}

/// The pre-tokenizer llama.cpp's `tokenizer.ggml.pre` names, as the original `tokenizer.json`
/// of those models defines it.
fn pre_tokenizer(pre: &str) -> Value {
    let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex});
    let split = |pattern: &str| json!({"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": false});
    const LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    const QWEN2: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    match pre {
        "smollm" | "starcoder" | "refact" => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true}, byte_level(true)]}),
        "llama-bpe" | "llama3" | "smaug-bpe" => {
            json!({"type": "Sequence", "pretokenizers": [split(LLAMA3), byte_level(false)]})
        }
        "qwen2" | "deepseek-r1-qwen" => {
            json!({"type": "Sequence", "pretokenizers": [split(QWEN2), byte_level(false)]})
        }
        _ => byte_level(true),
    }
}
