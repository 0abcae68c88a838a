//! Metadata values.
//!
//! GGUF metadata is a flat map from dotted keys to typed values; this module
//! holds the value enum and the lenient accessors the rest of beamline uses
//! (a count stored as `u32` in one converter and `u64` in another should read
//! the same).

/// One metadata value, exactly as stored in the file.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
}

impl Value {
    /// Any integer type holding a non-negative value; `None` for negative
    /// integers, floats, booleans, strings and arrays.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// Any integer type whose value fits an `i64`.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => i64::try_from(v).ok(),
            Value::I8(v) => Some(v.into()),
            Value::I16(v) => Some(v.into()),
            Value::I32(v) => Some(v.into()),
            Value::I64(v) => Some(v),
            _ => None,
        }
    }

    /// Any numeric type (integers and floats), converted to `f64`; 64-bit
    /// integers beyond 2^53 lose precision.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v.into()),
            Value::F64(v) => Some(v),
            Value::U64(v) => Some(v as f64),
            Value::I64(v) => Some(v as f64),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    /// The text of a string value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// A boolean value.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// The elements of an array value.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// A short description of the value's kind for error messages, such as
    /// `u32` or `array of 3 string`.
    pub fn kind(&self) -> String {
        match self {
            Value::Array(a) => match a.first() {
                Some(first) => format!("array of {} {}", a.len(), first.kind()),
                None => "empty array".to_string(),
            },
            other => other.scalar_kind().to_string(),
        }
    }

    fn scalar_kind(&self) -> &'static str {
        match self {
            Value::U8(_) => "u8",
            Value::I8(_) => "i8",
            Value::U16(_) => "u16",
            Value::I16(_) => "i16",
            Value::U32(_) => "u32",
            Value::I32(_) => "i32",
            Value::U64(_) => "u64",
            Value::I64(_) => "i64",
            Value::F32(_) => "f32",
            Value::F64(_) => "f64",
            Value::Bool(_) => "bool",
            Value::String(_) => "string",
            Value::Array(_) => "array",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_u64_accepts_non_negative_integers_only() {
        assert_eq!(Value::U8(7).as_u64(), Some(7));
        assert_eq!(Value::I32(7).as_u64(), Some(7));
        assert_eq!(Value::I64(-1).as_u64(), None);
        assert_eq!(Value::U64(u64::MAX).as_u64(), Some(u64::MAX));
        assert_eq!(Value::F32(1.0).as_u64(), None);
        assert_eq!(Value::Bool(true).as_u64(), None);
    }

    #[test]
    fn as_f64_accepts_every_numeric_kind() {
        assert_eq!(Value::I16(-3).as_f64(), Some(-3.0));
        assert_eq!(Value::F32(0.5).as_f64(), Some(0.5));
        assert_eq!(Value::U64(1 << 40).as_f64(), Some((1u64 << 40) as f64));
        assert_eq!(Value::String("1".into()).as_f64(), None);
    }

    #[test]
    fn as_i64_rejects_u64_beyond_range() {
        assert_eq!(Value::U64(u64::MAX).as_i64(), None);
        assert_eq!(Value::I8(-5).as_i64(), Some(-5));
    }

    #[test]
    fn kind_describes_arrays() {
        let v = Value::Array(vec![Value::String("a".into()), Value::String("b".into())]);
        assert_eq!(v.kind(), "array of 2 string");
        assert_eq!(Value::Array(vec![]).kind(), "empty array");
        assert_eq!(v.as_array().map(<[Value]>::len), Some(2));
        assert_eq!(Value::Bool(false).as_bool(), Some(false));
        assert_eq!(Value::String("x".into()).as_str(), Some("x"));
    }
}
