//! [`GgufFile`]: an opened, validated GGUF file and its accessors.
//!
//! The file is memory-mapped, so opening a multi-gigabyte model only reads
//! its header; tensor bytes are paged in when the engine touches them, and
//! the scheduler, which only reads metadata and sizes, never touches them.
//! The accessors that decode a tensor into owned values ([`GgufFile::dequantize`],
//! [`GgufFile::int4_groups`], [`GgufFile::int8_groups`]) hand its pages back afterwards, so a
//! load holds the file's bytes one tensor at a time, not the whole file beside what it built.

use std::collections::BTreeMap;
use std::fs::File;
use std::ops::Deref;
use std::path::{Path, PathBuf};

use memmap2::{Mmap, UncheckedAdvice};

use crate::dequant;
use crate::error::{GgufError, Result};
use crate::groups::{self, Int4Groups, Int8Groups};
use crate::header;
use crate::tensor::TensorInfo;
use crate::types::DEQUANT_SUPPORTED;
use crate::value::Value;

/// The bytes of the file: a read-only mapping, or an owned buffer for
/// files built in memory.
enum Storage {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

impl Deref for Storage {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Storage::Mapped(m) => m,
            Storage::Owned(v) => v,
        }
    }
}

/// An opened GGUF file (format v2 or v3) whose header has been fully
/// validated: every tensor has a known type, a shape made of whole blocks
/// and bytes inside the file.
pub struct GgufFile {
    path: PathBuf,
    storage: Storage,
    version: u32,
    metadata: BTreeMap<String, Value>,
    tensors: Vec<TensorInfo>,
    alignment: u64,
    data_offset: u64,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("metadata_keys", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Maps and validates the file at `path`.
    pub fn open(path: &Path) -> Result<GgufFile> {
        let io = |source| GgufError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        if len < header::MAGIC.len() as u64 {
            return Err(GgufError::NotGguf {
                path: path.to_path_buf(),
            });
        }
        // SAFETY: the mapping is read-only and private to this process. If
        // another process truncates or rewrites the file while it is open,
        // reads may fault or see changed bytes; model files are written once
        // and then only read, which is the contract beamline runs under.
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        Self::from_storage(path.to_path_buf(), Storage::Mapped(map))
    }

    /// Validates a GGUF image held in memory; `path` is only used to name
    /// the file in error messages. Tensor bytes of such a file are not
    /// aligned in memory beyond one byte.
    pub fn from_bytes(path: impl Into<PathBuf>, bytes: Vec<u8>) -> Result<GgufFile> {
        Self::from_storage(path.into(), Storage::Owned(bytes))
    }

    fn from_storage(path: PathBuf, storage: Storage) -> Result<GgufFile> {
        let h = header::parse(&storage, &path)?;
        Ok(GgufFile {
            path,
            storage,
            version: h.version,
            metadata: h.metadata,
            tensors: h.tensors,
            alignment: h.alignment,
            data_offset: h.data_offset,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The format version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The data section alignment (`general.alignment`, default 32).
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Absolute file offset of the data section; a tensor's bytes start at
    /// `data_offset() + info.offset`.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// Size of the whole file in bytes.
    pub fn file_size(&self) -> u64 {
        self.storage.len() as u64
    }

    pub fn metadata(&self) -> &BTreeMap<String, Value> {
        &self.metadata
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub fn tensor(&self, name: &str) -> Result<&TensorInfo> {
        self.tensors
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| GgufError::MissingTensor {
                path: self.path.clone(),
                tensor: name.to_string(),
            })
    }

    /// The raw bytes of a tensor of this file. For an info taken from
    /// [`GgufFile::tensors`] this is exactly [`TensorInfo::byte_len`] bytes
    /// (checked at open); for an info that does not fit this file it is
    /// empty.
    pub fn tensor_bytes(&self, info: &TensorInfo) -> &[u8] {
        let range = usize::try_from(self.data_offset.saturating_add(info.offset))
            .ok()
            .and_then(|start| Some(start..start.checked_add(info.byte_len())?));
        range.and_then(|r| self.storage.get(r)).unwrap_or(&[])
    }

    /// Drops this process's resident pages of the file (a mapped file only), called after a
    /// tensor's bytes were decoded into owned values. The bytes stay readable: a later read
    /// pages them in again from the file.
    ///
    /// The whole mapping, not the tensor's own range: a read fault maps more than the page it
    /// reads (Linux's fault-around, and whole large folios of the page cache), so reading one
    /// tensor maps pages of its neighbours, including ones already decoded and released. Releasing
    /// the tensor's own range left up to 14 MiB of SmolLM2's file resident during a load (6 MiB
    /// with the range widened by the 64 KiB fault-around window). Nothing reads the mapping
    /// between two decodes but the next decode, so none of it needs to stay.
    fn release(&self) {
        let Storage::Mapped(map) = &self.storage else {
            return;
        };
        // SAFETY: the mapping is private and read-only, so no page of it was ever written:
        // dropping its pages only means that the next read faults the same bytes in from the
        // file. (DONTNEED is unchecked in memmap2 because on a written private mapping it
        // would discard the writes.) A failure leaves the pages resident, which is harmless.
        let _ = unsafe { map.unchecked_advise(UncheckedAdvice::DontNeed) };
    }

    /// Calls `read` with a tensor's info and raw bytes (as [`GgufFile::tensor_bytes`]), then
    /// hands the file's pages back as the decoding accessors do: for callers that decode a
    /// block format themselves.
    pub fn with_tensor_bytes<T>(
        &self,
        name: &str,
        read: impl FnOnce(&TensorInfo, &[u8]) -> T,
    ) -> Result<T> {
        let info = self.tensor(name)?;
        let value = read(info, self.tensor_bytes(info));
        self.release();
        Ok(value)
    }

    /// The tensor's values as f32, row-major in [`TensorInfo::shape`] order.
    /// Supports the types of [`DEQUANT_SUPPORTED`].
    pub fn dequantize(&self, name: &str) -> Result<Vec<f32>> {
        let info = self.tensor(name)?;
        let mut out = vec![0f32; info.n_elements()];
        dequant::dequantize(info.ggml_type, self.tensor_bytes(info), &mut out)
            .ok_or_else(|| self.unsupported(info, DEQUANT_SUPPORTED))?;
        self.release();
        Ok(out)
    }

    /// A Q4_0, Q4_1 or Q4_K tensor as 4-bit codes with per-group affine
    /// scales; `rows` is the product of all dimensions but the last in
    /// [`TensorInfo::shape`] order, `cols` the last.
    pub fn int4_groups(&self, name: &str) -> Result<Int4Groups> {
        let info = self.tensor(name)?;
        let f = dequant::int4_format(info.ggml_type)
            .ok_or_else(|| self.unsupported(info, "Q4_0, Q4_1, Q4_K for 4-bit groups"))?;
        let groups = groups::int4_groups(f, self.tensor_bytes(info), info.n_rows(), info.row_len());
        self.release();
        Ok(groups)
    }

    /// A Q8_0 or Q5_0 (groups of 32) or Q6_K (groups of 16) tensor as signed 8-bit
    /// codes with one scale per group; rows and columns as in
    /// [`GgufFile::int4_groups`].
    pub fn int8_groups(&self, name: &str) -> Result<Int8Groups> {
        let info = self.tensor(name)?;
        let f = dequant::int8_format(info.ggml_type)
            .ok_or_else(|| self.unsupported(info, "Q8_0, Q5_0, Q6_K for 8-bit groups"))?;
        let groups = groups::int8_groups(f, self.tensor_bytes(info), info.n_rows(), info.row_len());
        self.release();
        Ok(groups)
    }

    /// Calls `visit` with each group of a Q4_0, Q4_1 or Q4_K tensor in row-major order (its
    /// codes, one per byte, then its scale and min, as in [`GgufFile::int4_groups`]), one block
    /// decoded at a time: for callers that repack the groups and would otherwise hold the whole
    /// tensor's unpacked codes (a byte per weight) beside their own copy.
    pub fn for_each_int4_group(
        &self,
        name: &str,
        visit: impl FnMut(&[u8], f32, f32),
    ) -> Result<()> {
        let info = self.tensor(name)?;
        let f = dequant::int4_format(info.ggml_type)
            .ok_or_else(|| self.unsupported(info, "Q4_0, Q4_1, Q4_K for 4-bit groups"))?;
        groups::visit_int4_groups(f, self.tensor_bytes(info), visit);
        self.release();
        Ok(())
    }

    /// As [`GgufFile::for_each_int4_group`], for a Q8_0 or Q5_0 (groups of 32) or Q6_K (groups of 16)
    /// tensor's signed codes and scales, as in [`GgufFile::int8_groups`].
    pub fn for_each_int8_group(&self, name: &str, visit: impl FnMut(&[i8], f32)) -> Result<()> {
        let info = self.tensor(name)?;
        let f = dequant::int8_format(info.ggml_type)
            .ok_or_else(|| self.unsupported(info, "Q8_0, Q5_0, Q6_K for 8-bit groups"))?;
        groups::visit_int8_groups(f, self.tensor_bytes(info), visit);
        self.release();
        Ok(())
    }

    /// Calls `visit` with a tensor's values as f32, one block of its type at a time (32 or
    /// 256 values; runs of 256 for the plain float types), in row-major order:
    /// [`GgufFile::dequantize`] without the whole tensor's floats, for callers that
    /// re-quantize them.
    pub fn for_each_dequantized_block(
        &self,
        name: &str,
        mut visit: impl FnMut(&[f32]),
    ) -> Result<()> {
        let info = self.tensor(name)?;
        let ty = info.ggml_type;
        let bytes = self.tensor_bytes(info);
        let (elems, size) = match ty.block_size() {
            1 => (256, 256 * ty.type_size()),
            n => (n, ty.type_size()),
        };
        let mut values = vec![0f32; elems];
        for chunk in bytes.chunks(size) {
            // Whole blocks (checked at open); a plain type's last run may be shorter.
            let out = &mut values[..chunk.len() / ty.type_size() * ty.block_size()];
            dequant::dequantize(ty, chunk, out)
                .ok_or_else(|| self.unsupported(info, DEQUANT_SUPPORTED))?;
            visit(out);
        }
        self.release();
        Ok(())
    }

    fn unsupported(&self, info: &TensorInfo, supported: &'static str) -> GgufError {
        GgufError::UnsupportedType {
            path: self.path.clone(),
            tensor: info.name.clone(),
            ggml_type: info.ggml_type.name(),
            supported,
        }
    }
}
