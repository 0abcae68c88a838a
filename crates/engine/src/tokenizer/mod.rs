//! Text ↔ token ids. A HuggingFace folder brings its `tokenizer.json`; for a GGUF file the same
//! tokenizer is rebuilt from the `tokenizer.ggml.*` metadata (vocabulary, merges or scores, token
//! types, special ids, the pre-tokenizer named by `tokenizer.ggml.pre`) so ids equal the
//! model's own: byte-level BPE here, SentencePiece in `sentencepiece`.

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

mod sentencepiece;

/// GGUF token types (llama.cpp's `llama_token_type`).
const TYPE_UNKNOWN: i64 = 2;
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

    /// Rebuilds the tokenizer from GGUF metadata: byte-level BPE (`gpt2`) or SentencePiece
    /// (`llama`, see `sentencepiece`).
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        let path = file.path();
        let kind = file.get_str("tokenizer.ggml.model")?;
        let tokens = file.get_str_array("tokenizer.ggml.tokens")?;
        let types = file
            .get_i64_array("tokenizer.ggml.token_type")
            .unwrap_or_default();
        let id = |key: &str| file.get_u64(key).ok().map(|v| v as u32);
        let (bos_id, eos_id, unk_id) = (
            id("tokenizer.ggml.bos_token_id"),
            id("tokenizer.ggml.eos_token_id"),
            id("tokenizer.ggml.unknown_token_id"),
        );
        let flag = |key: &str| file.get(key).and_then(|v| v.as_bool());
        let sentencepiece = match kind {
            "gpt2" => false,
            "llama" => true,
            other => {
                return Err(EngineError::load(
                    path,
                    format!(
                        "tokenizer.ggml.model '{other}' is not supported (supported: gpt2 \
                         byte-level BPE, llama SentencePiece)"
                    ),
                ))
            }
        };
        // llama.cpp adds BOS to a SentencePiece vocabulary that does not say otherwise.
        let add_bos = flag("tokenizer.ggml.add_bos_token").unwrap_or(sentencepiece);
        let add_eos = flag("tokenizer.ggml.add_eos_token").unwrap_or(false);

        let (model, pre_tokenizer, decoder) = if sentencepiece {
            let scores = file.get_f64_array("tokenizer.ggml.scores")?;
            let merges = file.get_str_array("tokenizer.ggml.merges").ok();
            sentencepiece::spec_parts(&tokens, &scores, merges)
        } else {
            let merges = file.get_str_array("tokenizer.ggml.merges")?;
            let vocab = vocab_json(&tokens);
            let pre = file.get_str("tokenizer.ggml.pre").unwrap_or("default");
            let model = json!({
                "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                "vocab": vocab, "merges": merges,
            });
            let decoder = json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true});
            (model, pre_tokenizer(pre), decoder)
        };

        // Control tokens are special, user-defined ones plain added tokens (both matched whole);
        // a SentencePiece vocabulary's unknown, BOS and EOS tokens are special too.
        let named = [bos_id, eos_id, unk_id];
        let added: Vec<Value> = tokens
            .iter()
            .enumerate()
            .filter_map(|(i, t)| {
                let kind = types.get(i).copied();
                let special = kind == Some(TYPE_CONTROL)
                    || (sentencepiece
                        && (kind == Some(TYPE_UNKNOWN) || named.contains(&Some(i as u32))));
                (special || kind == Some(TYPE_USER_DEFINED)).then(|| {
                    json!({"id": i, "content": t, "single_word": false, "lstrip": false,
                           "rstrip": false, "normalized": false, "special": special})
                })
            })
            .collect();
        let named_token = |id: Option<u32>| id.and_then(|i| Some((*tokens.get(i as usize)?, i)));
        let bos = named_token(bos_id).filter(|_| add_bos);
        let eos = named_token(eos_id).filter(|_| add_eos);
        let post_processor = if bos.is_some() || eos.is_some() {
            template(bos, eos)
        } else if sentencepiece {
            Value::Null
        } else {
            json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false})
        };
        let spec = json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": pre_tokenizer,
            "post_processor": post_processor,
            "decoder": decoder,
            "model": model,
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
/// A BPE model's `vocab`: each token to its index.
fn vocab_json(tokens: &[&str]) -> serde_json::Map<String, Value> {
    tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.to_string(), json!(i)))
        .collect()
}

/// A post-processor that puts BOS before and EOS after each sequence (either may be absent).
fn template(bos: Option<(&str, u32)>, eos: Option<(&str, u32)>) -> Value {
    let around = |type_id: u32, seq: &str| -> Vec<Value> {
        let special = |t: &str| json!({"SpecialToken": {"id": t, "type_id": type_id}});
        let mut parts: Vec<Value> = bos.iter().map(|(t, _)| special(t)).collect();
        parts.push(json!({"Sequence": {"id": seq, "type_id": type_id}}));
        parts.extend(eos.iter().map(|(t, _)| special(t)));
        parts
    };
    let mut pair = around(0, "A");
    pair.extend(around(1, "B"));
    let specials: serde_json::Map<String, Value> = bos
        .iter()
        .chain(eos.iter())
        .map(|(t, id)| (t.to_string(), json!({"id": t, "ids": [id], "tokens": [t]})))
        .collect();
    json!({"type": "TemplateProcessing", "single": around(0, "A"), "pair": pair,
           "special_tokens": specials})
}

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
