//! The engine's error type. Load errors name the file and the tensor or key; per-request errors
//! (a prompt longer than the context, a bad parameter) are separate from engine failures so the
//! caller can fail one job without failing its batch mates, and a CUDA out-of-memory is its own
//! variant so the caller can split the batch and retry.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The model file or folder could not be read or is not a model beamline understands.
    #[error("{path}: {message}")]
    Load { path: PathBuf, message: String },

    #[error(transparent)]
    Gguf(#[from] beamline_gguf::GgufError),

    /// The architecture named in the model's metadata is not one beamline implements.
    #[error("{path}: unknown architecture '{architecture}' (supported: llama, mistral, qwen2)")]
    UnknownArchitecture { path: PathBuf, architecture: String },

    #[error("tokenizer: {0}")]
    Tokenizer(String),

    #[error("chat template: {0}")]
    ChatTemplate(String),

    /// A single request cannot run; its batch mates are unaffected.
    #[error("{0}")]
    Request(#[from] RequestError),

    /// The device ran out of memory; the caller may retry with a smaller batch.
    #[error("device out of memory: {0}")]
    OutOfMemory(String),

    #[error("device: {0}")]
    Device(String),

    #[error("libtorch: {0}")]
    Torch(String),
}

/// Why one request (one prompt) cannot be served. Permanent: retrying gives the same answer.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum RequestError {
    #[error("prompt has {prompt_tokens} tokens and asks for {max_new_tokens} new ones, but the model's context is {context} tokens")]
    PromptTooLong {
        prompt_tokens: usize,
        max_new_tokens: usize,
        context: usize,
    },
    #[error("prompt is empty after tokenization")]
    EmptyPrompt,
    #[error("invalid parameter '{field}': {reason}")]
    InvalidParam { field: &'static str, reason: String },
}

impl From<tch::TchError> for EngineError {
    fn from(err: tch::TchError) -> Self {
        let text = err.to_string();
        if is_out_of_memory(&text) {
            EngineError::OutOfMemory(first_line(&text))
        } else {
            EngineError::Torch(first_line(&text))
        }
    }
}

/// Whether libtorch's message says an allocation failed: CUDA's "out of memory", or the CPU
/// allocator's "can't allocate memory".
pub(crate) fn is_out_of_memory(text: &str) -> bool {
    text.contains("out of memory") || text.contains("can't allocate memory")
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().to_string()
}

impl EngineError {
    pub(crate) fn load(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        EngineError::Load {
            path: path.into(),
            message: message.into(),
        }
    }
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;
