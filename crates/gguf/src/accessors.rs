//! Typed metadata accessors on [`GgufFile`].
//!
//! Model loading reads dozens of hyper-parameters; these accessors turn a
//! missing or mistyped key into an error that names the file and the key,
//! so callers can use `?` and still produce a useful message.

use crate::error::{GgufError, Result};
use crate::file::GgufFile;
use crate::value::Value;

impl GgufFile {
    fn require(&self, key: &str) -> Result<&Value> {
        self.get(key).ok_or_else(|| GgufError::MissingKey {
            path: self.path().to_path_buf(),
            key: key.to_string(),
        })
    }

    fn wrong(&self, key: &str, expected: &'static str, found: &Value) -> GgufError {
        GgufError::WrongType {
            path: self.path().to_path_buf(),
            key: key.to_string(),
            expected,
            found: found.kind(),
        }
    }

    /// A non-negative integer of any width.
    pub fn get_u64(&self, key: &str) -> Result<u64> {
        let v = self.require(key)?;
        v.as_u64()
            .ok_or_else(|| self.wrong(key, "a non-negative integer", v))
    }

    /// Any numeric value, as f64.
    pub fn get_f64(&self, key: &str) -> Result<f64> {
        let v = self.require(key)?;
        v.as_f64().ok_or_else(|| self.wrong(key, "a number", v))
    }

    pub fn get_str(&self, key: &str) -> Result<&str> {
        let v = self.require(key)?;
        v.as_str().ok_or_else(|| self.wrong(key, "a string", v))
    }

    pub fn get_bool(&self, key: &str) -> Result<bool> {
        let v = self.require(key)?;
        v.as_bool().ok_or_else(|| self.wrong(key, "a boolean", v))
    }

    fn get_array(&self, key: &str, expected: &'static str) -> Result<&[Value]> {
        let v = self.require(key)?;
        v.as_array().ok_or_else(|| self.wrong(key, expected, v))
    }

    /// An array of strings (an empty array is accepted).
    pub fn get_str_array(&self, key: &str) -> Result<Vec<&str>> {
        const EXPECTED: &str = "an array of strings";
        let items = self.get_array(key, EXPECTED)?;
        items
            .iter()
            .map(|v| v.as_str().ok_or_else(|| self.wrong(key, EXPECTED, v)))
            .collect()
    }

    /// An array of numbers of any type, as f64.
    pub fn get_f64_array(&self, key: &str) -> Result<Vec<f64>> {
        const EXPECTED: &str = "an array of numbers";
        let items = self.get_array(key, EXPECTED)?;
        items
            .iter()
            .map(|v| v.as_f64().ok_or_else(|| self.wrong(key, EXPECTED, v)))
            .collect()
    }

    /// An array of integers of any width, each fitting an i64.
    pub fn get_i64_array(&self, key: &str) -> Result<Vec<i64>> {
        const EXPECTED: &str = "an array of integers within the i64 range";
        let items = self.get_array(key, EXPECTED)?;
        items
            .iter()
            .map(|v| v.as_i64().ok_or_else(|| self.wrong(key, EXPECTED, v)))
            .collect()
    }

    /// `general.architecture`, such as `llama`.
    pub fn architecture(&self) -> Result<&str> {
        self.get_str("general.architecture")
    }
}
