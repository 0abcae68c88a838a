//! Byte layout of the files [`GgufWriter`] produces: header, metadata,
//! tensor index, padding, then each tensor's data padded to the alignment.

use super::GgufWriter;
use crate::header::MAGIC;
use crate::parse_value::tag;
use crate::value::Value;

/// Whether every array inside `v` has elements of one kind (arrays of
/// arrays may differ inside), as the format requires.
pub(super) fn is_homogeneous(v: &Value) -> bool {
    match v {
        Value::Array(items) => {
            let first = items.first().map(tag_of);
            items
                .iter()
                .all(|x| Some(tag_of(x)) == first && is_homogeneous(x))
        }
        _ => true,
    }
}

fn tag_of(v: &Value) -> u32 {
    match v {
        Value::U8(_) => tag::U8,
        Value::I8(_) => tag::I8,
        Value::U16(_) => tag::U16,
        Value::I16(_) => tag::I16,
        Value::U32(_) => tag::U32,
        Value::I32(_) => tag::I32,
        Value::U64(_) => tag::U64,
        Value::I64(_) => tag::I64,
        Value::F32(_) => tag::F32,
        Value::F64(_) => tag::F64,
        Value::Bool(_) => tag::BOOL,
        Value::String(_) => tag::STRING,
        Value::Array(_) => tag::ARRAY,
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.push(*x as u8),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(u8::from(*x)),
        Value::String(s) => put_str(out, s),
        Value::Array(items) => {
            // An empty array needs some element type; u8 is as good as any.
            let elem = items.first().map_or(tag::U8, tag_of);
            out.extend_from_slice(&elem.to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for x in items {
                put_value(out, x);
            }
        }
    }
}

fn pad(out: &mut Vec<u8>, alignment: usize) {
    let target = out.len().div_ceil(alignment) * alignment;
    out.resize(target, 0);
}

pub(super) fn image(w: &GgufWriter) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&w.version.to_le_bytes());
    out.extend_from_slice(&(w.tensors.len() as u64).to_le_bytes());
    out.extend_from_slice(&(w.metadata.len() as u64).to_le_bytes());
    for (key, value) in &w.metadata {
        put_str(&mut out, key);
        out.extend_from_slice(&tag_of(value).to_le_bytes());
        put_value(&mut out, value);
    }
    let mut offset = 0usize;
    for t in &w.tensors {
        put_str(&mut out, &t.name);
        out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
        for d in &t.dims {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.extend_from_slice(&t.type_id.to_le_bytes());
        out.extend_from_slice(&(offset as u64).to_le_bytes());
        offset = (offset + t.bytes.len()).div_ceil(w.alignment) * w.alignment;
    }
    pad(&mut out, w.alignment);
    for t in &w.tensors {
        out.extend_from_slice(&t.bytes);
        pad(&mut out, w.alignment);
    }
    out
}
