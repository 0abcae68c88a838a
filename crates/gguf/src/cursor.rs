//! A bounds-checked little-endian reader over the mapped file.
//!
//! All header parsing goes through this cursor, so that every declared length
//! is compared with the bytes actually left before anything is read or
//! allocated: a corrupt length becomes a `Truncated` error naming what was
//! being read, never a panic or a huge allocation.

use std::path::Path;

use crate::error::{GgufError, Result};

pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(buf: &'a [u8], path: &'a Path) -> Self {
        Cursor { buf, pos: 0, path }
    }

    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn truncated(&self, what: String) -> GgufError {
        GgufError::Truncated {
            path: self.path.to_path_buf(),
            what,
        }
    }

    pub(crate) fn corrupt(&self, what: String) -> GgufError {
        GgufError::Corrupt {
            path: self.path.to_path_buf(),
            what,
        }
    }

    /// The next `n` bytes; `what` describes them for the error message.
    pub(crate) fn take(&mut self, n: u64, what: impl FnOnce() -> String) -> Result<&'a [u8]> {
        let left = self.remaining();
        match usize::try_from(n) {
            Ok(n) if n <= left => {
                let bytes = &self.buf[self.pos..self.pos + n];
                self.pos += n;
                Ok(bytes)
            }
            _ => Err(self.truncated(format!(
                "{} needs {n} bytes at offset {}, but only {left} remain",
                what(),
                self.pos
            ))),
        }
    }

    fn array<const N: usize>(&mut self, what: impl FnOnce() -> String) -> Result<[u8; N]> {
        let bytes = self.take(N as u64, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, what: impl FnOnce() -> String) -> Result<u8> {
        Ok(self.array::<1>(what)?[0])
    }

    pub(crate) fn u16(&mut self, what: impl FnOnce() -> String) -> Result<u16> {
        self.array(what).map(u16::from_le_bytes)
    }

    pub(crate) fn u32(&mut self, what: impl FnOnce() -> String) -> Result<u32> {
        self.array(what).map(u32::from_le_bytes)
    }

    pub(crate) fn u64(&mut self, what: impl FnOnce() -> String) -> Result<u64> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// A GGUF string: u64 byte length, then UTF-8 bytes (no terminator).
    pub(crate) fn string(&mut self, what: impl Fn() -> String) -> Result<String> {
        let len = self.u64(|| format!("length of {}", what()))?;
        let bytes = self.take(len, || format!("{} (a string of {len} bytes)", what()))?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(e) => Err(self.corrupt(format!("{} is not valid UTF-8: {e}", what()))),
        }
    }

    /// Checks that `count` items of at least `min_size` bytes each can still
    /// be in the file, before anything is allocated for them.
    pub(crate) fn check_count(
        &self,
        count: u64,
        min_size: u64,
        what: impl FnOnce() -> String,
    ) -> Result<usize> {
        let left = self.remaining();
        match count.checked_mul(min_size) {
            Some(need) if need <= left as u64 => usize::try_from(count)
                .map_err(|_| self.truncated(format!("{} declares {count} entries", what()))),
            _ => Err(self.truncated(format!(
                "{} declares {count} entries of at least {min_size} bytes, but only {left} bytes remain",
                what()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_little_endian_and_stops_at_the_end() {
        let data = [1u8, 0, 2, 0, 0, 0, 9];
        let mut c = Cursor::new(&data, Path::new("x.gguf"));
        assert_eq!(c.u16(|| "a".into()).ok(), Some(1));
        assert_eq!(c.u32(|| "b".into()).ok(), Some(2));
        assert_eq!(c.remaining(), 1);
        let err = c.u64(|| "c".into()).err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("x.gguf: file is truncated: c needs 8 bytes at offset 6, but only 1 remain")
        );
        assert_eq!(c.u8(|| "d".into()).ok(), Some(9));
    }

    #[test]
    fn huge_string_length_is_an_error_not_an_allocation() {
        let mut data = (1u64 << 60).to_le_bytes().to_vec();
        data.extend_from_slice(b"abc");
        let mut c = Cursor::new(&data, Path::new("x.gguf"));
        assert!(matches!(
            c.string(|| "key".into()),
            Err(GgufError::Truncated { .. })
        ));
    }

    #[test]
    fn check_count_guards_multiplication_overflow() {
        let data = [0u8; 16];
        let c = Cursor::new(&data, Path::new("x.gguf"));
        assert_eq!(c.check_count(2, 8, || "a".into()).ok(), Some(2));
        assert!(c.check_count(3, 8, || "a".into()).is_err());
        assert!(c.check_count(u64::MAX, 8, || "a".into()).is_err());
    }
}
