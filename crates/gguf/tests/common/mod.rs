//! Helpers shared by the integration tests: temporary files, a
//! deterministic random source, and small builders.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use beamline_gguf::write::GgufWriter;

/// A file in the temp directory, removed on drop.
pub struct TempFile(PathBuf);

impl TempFile {
    pub fn with_bytes(bytes: &[u8]) -> TempFile {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "beamline-gguf-test-{}-{}.gguf",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let path = std::env::temp_dir().join(name);
        std::fs::write(&path, bytes).expect("write temp file");
        TempFile(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// xorshift64*: deterministic test data without a dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [-1, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    /// `n` values, roughly weight-like: mostly small, some outliers.
    pub fn weights(&mut self, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let x = self.unit() * 0.05;
                if i % 37 == 5 {
                    x * 20.0
                } else {
                    x
                }
            })
            .collect()
    }
}

/// Decodes a lowercase hex string.
pub fn hex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex digit"))
        .collect()
}

/// A minimal valid file: one string key and one F32 tensor.
pub fn small_file() -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.add_metadata(
        "general.architecture",
        beamline_gguf::Value::String("llama".into()),
    )
    .expect("metadata");
    w.add_tensor(
        "t",
        &[2, 4],
        &[1., 2., 3., 4., 5., 6., 7., 8.],
        beamline_gguf::GgmlType::F32,
    )
    .expect("tensor");
    w.to_bytes()
}
