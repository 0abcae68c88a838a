//! Decoding of typed metadata values from the header.
//!
//! Split from the header walk because values are recursive (arrays of
//! arrays) and need their own guards: a nesting limit against stack
//! exhaustion, and element counts checked against the bytes left in the file.

use crate::cursor::Cursor;
use crate::error::Result;
use crate::value::Value;

/// Value type ids of the GGUF format.
pub(crate) mod tag {
    pub const U8: u32 = 0;
    pub const I8: u32 = 1;
    pub const U16: u32 = 2;
    pub const I16: u32 = 3;
    pub const U32: u32 = 4;
    pub const I32: u32 = 5;
    pub const F32: u32 = 6;
    pub const BOOL: u32 = 7;
    pub const STRING: u32 = 8;
    pub const ARRAY: u32 = 9;
    pub const U64: u32 = 10;
    pub const I64: u32 = 11;
    pub const F64: u32 = 12;
}

/// Arrays nested deeper than this are rejected; real files nest at most once.
const MAX_DEPTH: usize = 8;

/// The fewest bytes one value of type `tag` can occupy, used to bound
/// element counts before allocating.
fn min_size(t: u32) -> Option<u64> {
    Some(match t {
        tag::U8 | tag::I8 | tag::BOOL => 1,
        tag::U16 | tag::I16 => 2,
        tag::U32 | tag::I32 | tag::F32 => 4,
        tag::U64 | tag::I64 | tag::F64 | tag::STRING => 8,
        tag::ARRAY => 12,
        _ => return None,
    })
}

/// Reads one value of type `t`; `key` names the metadata key for messages.
pub(crate) fn read_value(c: &mut Cursor<'_>, t: u32, key: &str) -> Result<Value> {
    read_nested(c, t, key, 0)
}

fn read_nested(c: &mut Cursor<'_>, t: u32, key: &str, depth: usize) -> Result<Value> {
    let what = || format!("value of metadata key '{key}'");
    Ok(match t {
        tag::U8 => Value::U8(c.u8(what)?),
        tag::I8 => Value::I8(c.u8(what)? as i8),
        tag::U16 => Value::U16(c.u16(what)?),
        tag::I16 => Value::I16(c.u16(what)? as i16),
        tag::U32 => Value::U32(c.u32(what)?),
        tag::I32 => Value::I32(c.u32(what)? as i32),
        tag::F32 => Value::F32(f32::from_bits(c.u32(what)?)),
        tag::BOOL => Value::Bool(c.u8(what)? != 0),
        tag::STRING => Value::String(c.string(what)?),
        tag::U64 => Value::U64(c.u64(what)?),
        tag::I64 => Value::I64(c.u64(what)? as i64),
        tag::F64 => Value::F64(f64::from_bits(c.u64(what)?)),
        tag::ARRAY => read_array(c, key, depth)?,
        other => {
            return Err(c.corrupt(format!(
                "metadata key '{key}' has unknown value type {other}"
            )))
        }
    })
}

fn read_array(c: &mut Cursor<'_>, key: &str, depth: usize) -> Result<Value> {
    if depth >= MAX_DEPTH {
        return Err(c.corrupt(format!(
            "metadata key '{key}' nests arrays more than {MAX_DEPTH} deep"
        )));
    }
    let elem = c.u32(|| format!("element type of array '{key}'"))?;
    let Some(min) = min_size(elem) else {
        return Err(c.corrupt(format!("array '{key}' has unknown element type {elem}")));
    };
    let count = c.u64(|| format!("length of array '{key}'"))?;
    let n = c.check_count(count, min, || format!("array '{key}'"))?;
    let mut items = Vec::with_capacity(n);
    for _ in 0..n {
        items.push(read_nested(c, elem, key, depth + 1)?);
    }
    Ok(Value::Array(items))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::GgufError;
    use std::path::Path;

    fn parse(bytes: &[u8], t: u32) -> Result<Value> {
        let mut c = Cursor::new(bytes, Path::new("m.gguf"));
        read_value(&mut c, t, "k")
    }

    #[test]
    fn scalars() {
        assert_eq!(parse(&[0xff], tag::I8).ok(), Some(Value::I8(-1)));
        assert_eq!(parse(&[1], tag::BOOL).ok(), Some(Value::Bool(true)));
        let f = 1.5f32.to_le_bytes();
        assert_eq!(parse(&f, tag::F32).ok(), Some(Value::F32(1.5)));
    }

    #[test]
    fn huge_array_count_is_truncated() {
        let mut b = tag::U32.to_le_bytes().to_vec();
        b.extend_from_slice(&(u64::MAX / 2).to_le_bytes());
        b.extend_from_slice(&[0; 16]);
        assert!(matches!(
            parse(&b, tag::ARRAY),
            Err(GgufError::Truncated { .. })
        ));
    }

    #[test]
    fn deep_nesting_is_rejected() {
        let mut b = Vec::new();
        for _ in 0..100 {
            b.extend_from_slice(&tag::ARRAY.to_le_bytes());
            b.extend_from_slice(&1u64.to_le_bytes());
        }
        b.extend_from_slice(&[0; 64]);
        assert!(matches!(
            parse(&b, tag::ARRAY),
            Err(GgufError::Corrupt { .. })
        ));
    }

    #[test]
    fn unknown_value_type_is_corrupt() {
        assert!(matches!(parse(&[0; 8], 13), Err(GgufError::Corrupt { .. })));
    }
}
