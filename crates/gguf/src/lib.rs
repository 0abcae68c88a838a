//! Pure-Rust reader for GGUF model files (format versions 2 and 3).
//!
//! beamline loads llama.cpp-format models without llama.cpp and without
//! libtorch at this layer: the engine turns the tensors read here into
//! libtorch tensors, while the scheduler only reads metadata and tensor
//! sizes to plan placement. Files are memory-mapped and validated once at
//! [`GgufFile::open`] (magic, version, every length against the file size,
//! shapes, alignment, tensor bounds), so a corrupt or hostile file yields a
//! [`GgufError`] naming the file and the key or tensor at fault, never a
//! panic or an unbounded allocation.
//!
//! Decoded types: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K
//! and Q6_K, to f32 ([`GgufFile::dequantize`], or a block at a time with
//! [`GgufFile::for_each_dequantized_block`]); the 4-bit and signed-code
//! formats also to grouped integer codes for the engine's quantized kernels
//! ([`GgufFile::int4_groups`], [`GgufFile::int8_groups`] and their visitors).
//! Every other ggml type is sized and reported by name.
//!
//! # Layout
//!
//! - `error`: [`GgufError`], the single error type.
//! - `value`: [`Value`], a metadata value, and its lenient accessors.
//! - `types`: [`GgmlType`], type ids, names and block geometry.
//! - `tensor`: [`TensorInfo`], one tensor index entry; GGUF vs PyTorch
//!   dimension order.
//! - `cursor`: bounds-checked little-endian reading of the header.
//! - `parse_value`: decoding of typed (and nested) metadata values.
//! - `header`: the header walk and the validation of every tensor.
//! - `file`: [`GgufFile`], the mapping and tensor access.
//! - `accessors`: typed metadata getters that name file and key on error.
//! - `dequant`: block decoders (`plain`, `int4`, `affine5`, `int8`) and f32 output.
//! - `groups`: [`Int4Groups`] / [`Int8Groups`], codes plus group scales.
//! - [`write`](mod@write): [`write::GgufWriter`], a small writer with reference
//!   quantizers for building test files.

mod accessors;
mod cursor;
mod dequant;
mod error;
mod file;
mod groups;
mod header;
mod parse_value;
mod tensor;
mod types;
mod value;
pub mod write;

pub use error::{GgufError, Result};
pub use file::GgufFile;
pub use groups::{Int4Groups, Int8Groups};
pub use header::{DEFAULT_ALIGNMENT, MAX_DIMS};
pub use tensor::TensorInfo;
pub use types::{GgmlType, DEQUANT_SUPPORTED};
pub use value::Value;
