//! beamline's inference engine: a quantized decoder-only transformer on libtorch, with greedy,
//! sampling and beam search decoding over a continuously refilled batch.
//!
//! This is the only crate (with the worker binary) that links libtorch. Weights stay immutable
//! once loaded; all per-sequence state lives in the KV cache, so one loaded model serves a
//! changing batch of requests.
//!
//! # Layout
//! - `engine`: load a model, build requests from prompts, generate, score.
//! - `config`: model shapes from GGUF metadata or `config.json`.
//! - `weights/`: tensors from GGUF or safetensors, under HuggingFace names.
//! - `quant`: linear layers kept quantized on the device (int4, int8) or dense.
//! - `cpu/`: AVX2 block kernels for quantized matmul on the CPU.
//! - `models/`: the decoder (Llama, Mistral, Qwen2) and its quantized embedding.
//! - `rope`, `kv_cache`: rotary positions, the slot-based key/value cache.
//! - `tokenizer`, `chat_template`: ids as HuggingFace's, prompts as transformers renders them.
//! - `generation/`: decoding strategies and the continuous batcher.
//! - `device`: CPU or CUDA, and making sure libtorch's CUDA backend is loaded.
//! - `memory`: handing freed heap and start-up-only mapped pages back to the system.
//! - `startup_heap`: the libraries' start-up heap (libtorch's operator tables) kept in a file.

pub mod chat_template;
pub mod config;
pub mod cpu;
pub mod device;
mod engine;
pub mod error;
pub mod generation;
pub mod kv_cache;
pub mod memory;
pub mod models;
pub mod quant;
pub mod rope;
pub mod startup_heap;
pub mod tokenizer;
pub mod weights;
pub mod zero_pages;

pub use chat_template::Message;
pub use device::DeviceChoice;
pub use engine::{Engine, EngineOptions, Prompt, ScoreOutput};
pub use error::{EngineError, RequestError};
pub use generation::{
    BatchStats, Candidate, Decoding, EarlyStopping, FinishReason, GenerationOutput,
    GenerationParams, GenerationRequest, RequestSource,
};
pub use quant::QuantMode;
