//! The shape of a decoder-only transformer, read from GGUF metadata or a HuggingFace
//! `config.json`, so the model code never looks at file formats.

use std::path::Path;

use beamline_gguf::GgufFile;
use serde::Deserialize;

use crate::error::{EngineError, Result};

/// Architectures beamline runs. Mistral is a Llama with different defaults; Qwen2 adds q/k/v
/// biases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    Llama,
    Qwen2,
}

impl Architecture {
    pub fn parse(name: &str, path: &Path) -> Result<Self> {
        match name.to_ascii_lowercase().as_str() {
            "llama" | "mistral" | "llamaforcausallm" | "mistralforcausallm" => Ok(Self::Llama),
            "qwen2" | "qwen2forcausallm" => Ok(Self::Qwen2),
            other => Err(EngineError::UnknownArchitecture {
                path: path.to_path_buf(),
                architecture: other.to_string(),
            }),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Qwen2 => "qwen2",
        }
    }

    /// Whether q, k and v projections carry a bias.
    pub fn qkv_bias(self) -> bool {
        matches!(self, Self::Qwen2)
    }
}

/// Llama 3 style frequency-dependent rope scaling.
#[derive(Debug, Clone, PartialEq)]
pub struct Llama3RopeScaling {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub architecture: Architecture,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: Option<Llama3RopeScaling>,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
}

impl ModelConfig {
    /// Reads `<arch>.*` keys as llama.cpp writes them.
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        let arch_name = file.architecture()?.to_string();
        let architecture = Architecture::parse(&arch_name, file.path())?;
        let key = |k: &str| format!("{arch_name}.{k}");
        let hidden_size = file.get_u64(&key("embedding_length"))? as usize;
        let num_heads = file.get_u64(&key("attention.head_count"))? as usize;
        let num_kv_heads = file
            .get_u64(&key("attention.head_count_kv"))
            .map(|v| v as usize)
            .unwrap_or(num_heads);
        let head_dim = file
            .get_u64(&key("attention.key_length"))
            .map(|v| v as usize)
            .unwrap_or(hidden_size / num_heads.max(1));
        let vocab_size = match file.get_u64(&key("vocab_size")) {
            Ok(v) => v as usize,
            Err(_) => file.get_str_array("tokenizer.ggml.tokens")?.len(),
        };
        let tie_word_embeddings = file.tensor("output.weight").is_err();
        let config = Self {
            architecture,
            vocab_size,
            hidden_size,
            intermediate_size: file.get_u64(&key("feed_forward_length"))? as usize,
            num_layers: file.get_u64(&key("block_count"))? as usize,
            num_heads,
            num_kv_heads,
            head_dim,
            rms_norm_eps: file
                .get_f64(&key("attention.layer_norm_rms_epsilon"))
                .unwrap_or(1e-5),
            rope_theta: file.get_f64(&key("rope.freq_base")).unwrap_or(10_000.0),
            // llama.cpp stores llama3 scaling as a `rope_freqs.weight` tensor instead; the
            // rope module reads it from the weights.
            rope_scaling: None,
            max_position_embeddings: file.get_u64(&key("context_length")).unwrap_or(2048) as usize,
            tie_word_embeddings,
        };
        config.validate(file.path())
    }

    /// Reads a HuggingFace `config.json`.
    pub fn from_hf_json(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| EngineError::load(path, format!("cannot read: {e}")))?;
        let raw: HfConfig = serde_json::from_str(&text)
            .map_err(|e| EngineError::load(path, format!("invalid config.json: {e}")))?;
        let arch_name = raw
            .architectures
            .as_ref()
            .and_then(|a| a.first().cloned())
            .or(raw.model_type.clone())
            .ok_or_else(|| {
                EngineError::load(path, "config.json has no 'architectures' or 'model_type'")
            })?;
        let architecture = Architecture::parse(&arch_name, path)?;
        let num_heads = raw.num_attention_heads;
        // transformers 5 writes `rope_parameters` (theta and scaling together); older versions
        // write `rope_theta` and `rope_scaling`.
        let rope_theta = raw
            .rope_theta
            .or(raw.rope_parameters.as_ref().and_then(|p| p.rope_theta));
        let rope_scaling = match raw.rope_scaling.or(raw.rope_parameters) {
            Some(s) if s.rope_type.as_deref().or(s.r#type.as_deref()) == Some("llama3") => {
                Some(Llama3RopeScaling {
                    factor: s.factor.unwrap_or(8.0),
                    low_freq_factor: s.low_freq_factor.unwrap_or(1.0),
                    high_freq_factor: s.high_freq_factor.unwrap_or(4.0),
                    original_max_position_embeddings: s
                        .original_max_position_embeddings
                        .unwrap_or(8192.0),
                })
            }
            Some(s) => match s.rope_type.as_deref().or(s.r#type.as_deref()) {
                None | Some("default") => None,
                Some(other) => {
                    return Err(EngineError::load(
                        path,
                        format!("rope_scaling type '{other}' is not supported (supported: llama3)"),
                    ))
                }
            },
            None => None,
        };
        let config = Self {
            architecture,
            vocab_size: raw.vocab_size,
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            num_layers: raw.num_hidden_layers,
            num_heads,
            num_kv_heads: raw.num_key_value_heads.unwrap_or(num_heads),
            head_dim: raw.head_dim.unwrap_or(raw.hidden_size / num_heads.max(1)),
            rms_norm_eps: raw.rms_norm_eps.unwrap_or(1e-6),
            rope_theta: rope_theta.unwrap_or(10_000.0),
            rope_scaling,
            max_position_embeddings: raw.max_position_embeddings.unwrap_or(2048),
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
        };
        config.validate(path)
    }

    fn validate(self, path: &Path) -> Result<Self> {
        let bad = |msg: String| Err(EngineError::load(path, msg));
        if self.num_heads == 0 || self.num_kv_heads == 0 || self.num_layers == 0 {
            return bad("head and layer counts must be positive".into());
        }
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return bad(format!(
                "{} attention heads are not a multiple of {} key/value heads",
                self.num_heads, self.num_kv_heads
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return bad(format!("head dimension {} is odd", self.head_dim));
        }
        Ok(self)
    }
}

#[derive(Deserialize)]
struct HfConfig {
    architectures: Option<Vec<String>>,
    model_type: Option<String>,
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    rope_scaling: Option<HfRopeScaling>,
    rope_parameters: Option<HfRopeScaling>,
    max_position_embeddings: Option<usize>,
    tie_word_embeddings: Option<bool>,
}

#[derive(Deserialize)]
struct HfRopeScaling {
    rope_theta: Option<f64>,
    rope_type: Option<String>,
    r#type: Option<String>,
    factor: Option<f64>,
    low_freq_factor: Option<f64>,
    high_freq_factor: Option<f64>,
    original_max_position_embeddings: Option<f64>,
}
