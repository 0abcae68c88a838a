//! Walking the GGUF header: magic, version, metadata and the tensor index,
//! then validating every tensor against the file it sits in.
//!
//! Validation happens once, at open, so that later accessors
//! ([`crate::GgufFile::tensor_bytes`], dequantization) can slice the mapped
//! file without any failure path.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use crate::cursor::Cursor;
use crate::error::{GgufError, Result};
use crate::parse_value::read_value;
use crate::tensor::TensorInfo;
use crate::types::GgmlType;
use crate::value::Value;

/// The four magic bytes every GGUF file starts with.
pub const MAGIC: &[u8; 4] = b"GGUF";
/// Alignment of the data section when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml tensors have at most this many dimensions.
pub const MAX_DIMS: u32 = 4;

/// Everything the header says, validated.
pub(crate) struct Header {
    pub version: u32,
    pub metadata: BTreeMap<String, Value>,
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    /// Absolute file offset of the data section.
    pub data_offset: u64,
}

pub(crate) fn parse(buf: &[u8], path: &Path) -> Result<Header> {
    if buf.len() < MAGIC.len() || &buf[..MAGIC.len()] != MAGIC {
        return Err(GgufError::NotGguf {
            path: path.to_path_buf(),
        });
    }
    let mut c = Cursor::new(buf, path);
    c.take(4, || "magic".into())?;
    let version = c.u32(|| "format version".into())?;
    if !(2..=3).contains(&version) {
        return Err(GgufError::UnsupportedVersion {
            path: path.to_path_buf(),
            version,
        });
    }
    let n_tensors = c.u64(|| "tensor count".into())?;
    let n_kv = c.u64(|| "metadata count".into())?;
    // A key/value pair takes at least 8 (key length) + 4 (type) + 1 bytes.
    let n_kv = c.check_count(n_kv, 13, || "metadata".into())?;
    let metadata = read_metadata(&mut c, n_kv)?;
    // A tensor info takes at least 8 (name) + 4 (n_dims) + 4 (type) + 8 (offset).
    let n_tensors = c.check_count(n_tensors, 24, || "tensor index".into())?;
    let tensors = read_tensor_infos(&mut c, n_tensors)?;

    let alignment = alignment(&metadata, path)?;
    let end_of_header = c.position() as u64;
    let data_offset = end_of_header.div_ceil(alignment).saturating_mul(alignment);
    let data_len = (buf.len() as u64).saturating_sub(data_offset);
    validate_tensors(&tensors, alignment, data_len, path)?;
    Ok(Header {
        version,
        metadata,
        tensors,
        alignment,
        data_offset,
    })
}

fn read_metadata(c: &mut Cursor<'_>, n: usize) -> Result<BTreeMap<String, Value>> {
    let mut map = BTreeMap::new();
    for i in 0..n {
        let key = c.string(|| format!("key of metadata entry #{i}"))?;
        let t = c.u32(|| format!("value type of metadata key '{key}'"))?;
        let value = read_value(c, t, &key)?;
        if map.contains_key(&key) {
            return Err(c.corrupt(format!("metadata key '{key}' appears twice")));
        }
        map.insert(key, value);
    }
    Ok(map)
}

fn read_tensor_infos(c: &mut Cursor<'_>, n: usize) -> Result<Vec<TensorInfo>> {
    let mut tensors = Vec::with_capacity(n);
    let mut seen = HashSet::with_capacity(n);
    for i in 0..n {
        let name = c.string(|| format!("name of tensor #{i}"))?;
        let n_dims = c.u32(|| format!("dimension count of tensor '{name}'"))?;
        if n_dims > MAX_DIMS {
            return Err(c.corrupt(format!(
                "tensor '{name}' has {n_dims} dimensions (at most {MAX_DIMS} allowed)"
            )));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for d in 0..n_dims {
            dims.push(c.u64(|| format!("dimension {d} of tensor '{name}'"))?);
        }
        let type_id = c.u32(|| format!("type of tensor '{name}'"))?;
        let offset = c.u64(|| format!("data offset of tensor '{name}'"))?;
        if !seen.insert(name.clone()) {
            return Err(c.corrupt(format!("tensor name '{name}' appears twice")));
        }
        tensors.push(TensorInfo {
            name,
            dims,
            ggml_type: GgmlType::from_id(type_id),
            offset,
        });
    }
    Ok(tensors)
}

fn alignment(metadata: &BTreeMap<String, Value>, path: &Path) -> Result<u64> {
    const KEY: &str = "general.alignment";
    let Some(v) = metadata.get(KEY) else {
        return Ok(DEFAULT_ALIGNMENT);
    };
    let Some(a) = v.as_u64() else {
        return Err(GgufError::WrongType {
            path: path.to_path_buf(),
            key: KEY.into(),
            expected: "an unsigned integer",
            found: v.kind(),
        });
    };
    if !a.is_power_of_two() || a > (1 << 30) {
        return Err(GgufError::Corrupt {
            path: path.to_path_buf(),
            what: format!("{KEY} is {a}, not a power of two up to 2^30"),
        });
    }
    Ok(a)
}

/// Checks type, shape, alignment and bounds of every tensor.
fn validate_tensors(
    tensors: &[TensorInfo],
    alignment: u64,
    data_len: u64,
    path: &Path,
) -> Result<()> {
    for t in tensors {
        let byte_len = checked_byte_len(t, path)?;
        if t.offset % alignment != 0 {
            return Err(GgufError::Misaligned {
                path: path.to_path_buf(),
                tensor: t.name.clone(),
                offset: t.offset,
                alignment,
            });
        }
        let end = t.offset.checked_add(byte_len);
        if end.is_none_or(|end| end > data_len) {
            return Err(GgufError::TensorOutOfBounds {
                path: path.to_path_buf(),
                tensor: t.name.clone(),
                detail: format!(
                    "its {byte_len} bytes at data offset {} run past the {data_len} bytes of the data section",
                    t.offset
                ),
            });
        }
    }
    Ok(())
}

/// The tensor's byte length, with every multiplication checked and the row
/// length checked against the block size.
fn checked_byte_len(t: &TensorInfo, path: &Path) -> Result<u64> {
    let bad = |detail: String| GgufError::BadShape {
        path: path.to_path_buf(),
        tensor: t.name.clone(),
        detail,
    };
    let ty = t.ggml_type;
    if !ty.is_known() {
        return Err(GgufError::UnknownType {
            path: path.to_path_buf(),
            tensor: t.name.clone(),
            type_id: ty.id(),
        });
    }
    let n = t
        .dims
        .iter()
        .try_fold(1u64, |acc, &d| {
            acc.checked_mul(d).filter(|&n| n <= i64::MAX as u64)
        })
        .ok_or_else(|| bad(format!("dimensions {:?} multiply beyond 2^63", t.dims)))?;
    if usize::try_from(n).is_err() {
        return Err(bad(format!(
            "{n} elements do not fit in memory on this machine"
        )));
    }
    let block = ty.block_size() as u64;
    let row = t.dims.first().copied().unwrap_or(1);
    if row % block != 0 {
        return Err(bad(format!(
            "row length {row} is not a multiple of the {} block size {block}",
            ty.name()
        )));
    }
    let bytes = (n / block)
        .checked_mul(ty.type_size() as u64)
        .ok_or_else(|| {
            bad(format!(
                "{n} elements of {} overflow a byte count",
                ty.name()
            ))
        })?;
    if usize::try_from(bytes).is_err() {
        return Err(bad(format!(
            "{bytes} bytes do not fit in memory on this machine"
        )));
    }
    Ok(bytes)
}
