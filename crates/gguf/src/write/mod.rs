//! A small GGUF writer for building test models.
//!
//! Tests in this crate and in the engine need tiny GGUF files with known
//! contents (and deliberately broken ones); this writer produces v3 files
//! (or any version number, for negative tests) with metadata of every value
//! kind and tensors quantized by simple round-to-nearest reference
//! quantizers (`write/quantize.rs`). It is not meant for converting real
//! models.
//!
//! ```
//! use beamline_gguf::write::GgufWriter;
//! use beamline_gguf::{GgmlType, GgufFile, Value};
//!
//! let mut w = GgufWriter::new();
//! w.add_metadata("general.architecture", Value::String("llama".into()))?;
//! w.add_tensor("w", &[2, 32], &[0.5; 64], GgmlType::Q8_0)?;
//! let f = GgufFile::from_bytes("tiny.gguf", w.to_bytes())?;
//! let w = f.dequantize("w")?;
//! assert!(w.iter().all(|x| (x - 0.5).abs() < 1e-3));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod quantize;
mod serialize;

use std::path::Path;

use crate::types::GgmlType;
use crate::value::Value;

/// Why a tensor or value could not be added.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(
        "tensor '{name}': shape {shape:?} holds {expected} elements but {got} values were given"
    )]
    LengthMismatch {
        name: String,
        shape: Vec<usize>,
        expected: usize,
        got: usize,
    },
    #[error(
        "tensor '{name}': last dimension {cols} is not a multiple of the {ty} block size {block}"
    )]
    RowNotBlocks {
        name: String,
        cols: usize,
        ty: String,
        block: usize,
    },
    #[error("tensor '{name}': the writer cannot quantize to {ty} (it writes F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q6_K)")]
    UnsupportedType { name: String, ty: String },
    #[error("metadata key '{key}': array elements must all have the same kind")]
    MixedArray { key: String },
    #[error("cannot write {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

struct PendingTensor {
    name: String,
    /// GGUF order (fastest first).
    dims: Vec<u64>,
    type_id: u32,
    bytes: Vec<u8>,
}

/// Builds a GGUF image in memory.
pub struct GgufWriter {
    version: u32,
    alignment: usize,
    metadata: Vec<(String, Value)>,
    tensors: Vec<PendingTensor>,
}

impl Default for GgufWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl GgufWriter {
    /// An empty version-3 file with the default alignment of 32.
    pub fn new() -> Self {
        GgufWriter {
            version: 3,
            alignment: 32,
            metadata: Vec::new(),
            tensors: Vec::new(),
        }
    }

    /// Sets the version number written in the header (any value, so that
    /// tests can write unsupported ones).
    pub fn set_version(&mut self, version: u32) -> &mut Self {
        self.version = version;
        self
    }

    /// Sets the data alignment and records it as `general.alignment`.
    /// `alignment` must be a power of two; others are rounded up to one.
    pub fn set_alignment(&mut self, alignment: u32) -> &mut Self {
        let a = alignment.max(1).next_power_of_two();
        self.alignment = a as usize;
        self.put("general.alignment".into(), Value::U32(a));
        self
    }

    /// Adds (or replaces) a metadata entry.
    pub fn add_metadata(
        &mut self,
        key: impl Into<String>,
        value: Value,
    ) -> Result<&mut Self, WriteError> {
        let key = key.into();
        if !serialize::is_homogeneous(&value) {
            return Err(WriteError::MixedArray { key });
        }
        self.put(key, value);
        Ok(self)
    }

    fn put(&mut self, key: String, value: Value) {
        match self.metadata.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.metadata.push((key, value)),
        }
    }

    /// Adds a tensor of `shape` (PyTorch order, as [`crate::TensorInfo::shape`]
    /// returns it) from row-major `data`, stored as `ty`: one of F32, F16,
    /// BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q6_K.
    pub fn add_tensor(
        &mut self,
        name: &str,
        shape: &[usize],
        data: &[f32],
        ty: GgmlType,
    ) -> Result<&mut Self, WriteError> {
        let expected = shape.iter().product::<usize>();
        if expected != data.len() {
            return Err(WriteError::LengthMismatch {
                name: name.into(),
                shape: shape.to_vec(),
                expected,
                got: data.len(),
            });
        }
        let cols = shape.last().copied().unwrap_or(1);
        let block = ty.block_size();
        if block == 0 || cols % block != 0 {
            return Err(WriteError::RowNotBlocks {
                name: name.into(),
                cols,
                ty: ty.name(),
                block,
            });
        }
        let mut bytes = Vec::with_capacity(data.len() / block * ty.type_size());
        match ty {
            GgmlType::F32 => quantize::f32_bytes(data, &mut bytes),
            GgmlType::F16 => quantize::f16_bytes(data, &mut bytes),
            GgmlType::BF16 => quantize::bf16_bytes(data, &mut bytes),
            GgmlType::Q8_0 => quantize::q8_0_bytes(data, &mut bytes),
            GgmlType::Q4_0 => quantize::q4_0_bytes(data, &mut bytes),
            GgmlType::Q4_1 => quantize::q4_1_bytes(data, &mut bytes),
            GgmlType::Q4_K => quantize::q4_k_bytes(data, &mut bytes),
            GgmlType::Q6_K => quantize::q6_k_bytes(data, &mut bytes),
            other => {
                return Err(WriteError::UnsupportedType {
                    name: name.into(),
                    ty: other.name(),
                })
            }
        }
        Ok(self.add_raw_tensor(name, shape, ty, bytes))
    }

    /// Adds a tensor with the given bytes as its data, unchecked: any type
    /// (including unknown ids via [`GgmlType::Other`]) and any length, for
    /// building files with types the writer cannot quantize, or broken ones.
    pub fn add_raw_tensor(
        &mut self,
        name: &str,
        shape: &[usize],
        ty: GgmlType,
        bytes: Vec<u8>,
    ) -> &mut Self {
        self.tensors.push(PendingTensor {
            name: name.into(),
            dims: shape.iter().rev().map(|&d| d as u64).collect(),
            type_id: ty.id(),
            bytes,
        });
        self
    }

    /// The complete file image.
    pub fn to_bytes(&self) -> Vec<u8> {
        serialize::image(self)
    }

    /// Writes the file image to `path`.
    pub fn write(&self, path: &Path) -> Result<(), WriteError> {
        std::fs::write(path, self.to_bytes()).map_err(|source| WriteError::Io {
            path: path.display().to_string(),
            source,
        })
    }
}
