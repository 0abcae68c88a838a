//! Where a model's tensors come from. Both sources answer in HuggingFace's tensor names
//! (`model.layers.0.self_attn.q_proj.weight`), so the model code has one naming scheme; the GGUF
//! source translates them to llama.cpp's names (`blk.0.attn_q.weight`).

mod gguf;
mod raw;
mod safetensors;

pub use gguf::GgufWeights;
pub use raw::{unpermute_rope_order, unpermute_rope_rows, RawWeight};
pub use safetensors::SafetensorsWeights;

use std::path::Path;

use tch::Tensor;

use crate::cpu::BlockMatrix;
use crate::error::Result;

pub trait WeightSource {
    /// The file or folder the weights come from, for error messages.
    fn path(&self) -> &Path;
    fn has(&self, name: &str) -> bool;
    /// A 2-D weight `[out, in]` in the form the file stores it.
    fn matrix(&self, name: &str) -> Result<RawWeight>;
    /// The same weight as the CPU kernels' blocks, built straight from the file's bytes, where
    /// the file stores it quantized (GGUF's Q4_0, Q4_1, Q8_0 and Q5_0 exactly; Q4_K with its
    /// scales rounded to half floats; Q5_1, Q5_K and Q6_K rounded to 8-bit blocks); `None` for
    /// floats. Building from the bytes skips `matrix`'s unpacked codes (or floats) and their
    /// copies.
    fn blocks(&self, _name: &str) -> Result<Option<BlockMatrix>> {
        Ok(None)
    }
    /// A 1-D tensor (norm weights, biases) as `f32`.
    fn vector(&self, name: &str) -> Result<Tensor>;
    /// True when q/k projection rows are in llama.cpp's interleaved rope order.
    fn rope_interleaved(&self) -> bool;
    /// Per-frequency rope divisors (llama.cpp's `rope_freqs.weight`, written for llama3 scaling).
    fn rope_freq_factors(&self) -> Result<Option<Tensor>>;
}
