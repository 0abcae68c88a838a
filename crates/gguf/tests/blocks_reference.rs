//! Dequantization checked bit for bit against llama.cpp's Python `gguf`
//! package (up to the sign of zero), on random blocks of every decoded type (fixture written by
//! `tests/fixtures/make_reference.py`). This covers Q4_K, Q5_0, Q5_1, Q5_K, Q6_K, F16 and BF16,
//! which the SmolLM2 model does not contain.

mod common;

use beamline_gguf::write::GgufWriter;
use beamline_gguf::{GgmlType, GgufFile};
use common::hex;

const FIXTURE: &str = include_str!("fixtures/blocks_reference.json");

fn ggml_type(name: &str) -> GgmlType {
    match name {
        "F32" => GgmlType::F32,
        "F16" => GgmlType::F16,
        "BF16" => GgmlType::BF16,
        "Q4_0" => GgmlType::Q4_0,
        "Q4_1" => GgmlType::Q4_1,
        "Q8_0" => GgmlType::Q8_0,
        "Q4_K" => GgmlType::Q4_K,
        "Q6_K" => GgmlType::Q6_K,
        "Q5_0" => GgmlType::Q5_0,
        "Q5_1" => GgmlType::Q5_1,
        "Q5_K" => GgmlType::Q5_K,
        other => panic!("fixture has unexpected type {other}"),
    }
}

/// Equal as IEEE values: identical bits, except that +0 and -0 are the
/// same (ggml's Q4_0 computes `d * (q - 8)`, which is -0 for a negative `d`
/// and `q = 8`, while beamline computes the equal `d * q + (-8 d)`).
fn same_value(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a == 0.0 && b == 0.0)
}

#[test]
fn every_decoded_type_matches_the_python_reference_bit_for_bit() {
    let json: serde_json::Value = serde_json::from_str(FIXTURE).expect("fixture json");
    let cases = json["cases"].as_array().expect("cases");
    let mut w = GgufWriter::new();
    let mut expected = Vec::new();
    for case in cases {
        let name = case["type"].as_str().expect("type");
        let rows = case["rows"].as_u64().expect("rows") as usize;
        let cols = case["cols"].as_u64().expect("cols") as usize;
        let bytes = hex(case["bytes"].as_str().expect("bytes"));
        let values: Vec<f32> = hex(case["values"].as_str().expect("values"))
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        assert_eq!(values.len(), rows * cols, "{name}");
        w.add_raw_tensor(name, &[rows, cols], ggml_type(name), bytes);
        expected.push((name.to_string(), values));
    }
    let seen: Vec<&str> = expected.iter().map(|e| e.0.as_str()).collect();
    for ty in [
        "F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q4_K", "Q5_K", "Q6_K",
    ] {
        assert!(seen.contains(&ty), "fixture lacks {ty}");
    }
    let f = GgufFile::from_bytes("blocks.gguf", w.to_bytes()).expect("parse");
    for (name, want) in &expected {
        let got = f.dequantize(name).expect(name);
        assert_eq!(got.len(), want.len());
        let mismatches: Vec<_> = got
            .iter()
            .zip(want)
            .enumerate()
            .filter(|(_, (g, w))| !same_value(**g, **w))
            .take(5)
            .collect();
        assert!(
            mismatches.is_empty(),
            "{name}: first mismatches {mismatches:?}"
        );
    }
}
