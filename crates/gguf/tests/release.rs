//! Decoding a tensor hands its pages of the mapped file back: after every tensor of a file has
//! been decoded, the mapping holds next to nothing resident (Linux, where `/proc/self/smaps`
//! says what is resident).

#![cfg(target_os = "linux")]

mod common;

use beamline_gguf::write::GgufWriter;
use beamline_gguf::{GgmlType, GgufFile};
use common::{Rng, TempFile};

/// The resident KiB of this process's mappings of `path`.
fn resident_kib(path: &std::path::Path) -> usize {
    let smaps = std::fs::read_to_string("/proc/self/smaps").expect("read smaps");
    let name = path.to_str().expect("a UTF-8 temp path");
    let mut inside = false;
    let mut kib = 0;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            inside = line.ends_with(name);
        } else if inside && first == "Rss:" {
            kib += line
                .split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
        }
    }
    kib
}

#[test]
fn decoded_tensors_leave_no_pages_of_the_file_resident() {
    // Tensors of 20,000 bytes: neither page-sized nor page-aligned, so a page fault in one maps
    // (Linux's fault-around) the cached pages of its neighbours too.
    let (count, len) = (48, 5_000);
    let mut rng = Rng::new(7);
    let mut w = GgufWriter::new();
    for i in 0..count {
        w.add_tensor(&format!("t{i}"), &[len], &rng.weights(len), GgmlType::F32)
            .expect("add tensor");
    }
    let file = TempFile::with_bytes(&w.to_bytes());
    let gguf = GgufFile::open(file.path()).expect("open");
    for i in 0..count {
        assert_eq!(
            gguf.dequantize(&format!("t{i}")).expect("dequantize").len(),
            len
        );
    }
    let resident = resident_kib(file.path());
    let total_kib = count * len * 4 / 1024;
    // The header's page and whatever the last fault mapped past the data may stay.
    assert!(
        resident <= 8,
        "{resident} KiB of the {total_kib} KiB file stay resident after decoding every tensor"
    );
}
