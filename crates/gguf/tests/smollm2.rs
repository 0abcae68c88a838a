//! Conformance against a real model: SmolLM2-135M-Instruct (Q4_1), checked
//! against what llama.cpp's Python `gguf` package reads from the same file
//! (fixture written by `tests/fixtures/make_reference.py`).
//!
//! The model path comes from `BEAMLINE_TEST_MODEL`, by default
//! `<workspace>/models/SmolLM2-135M-Instruct.Q4_1.gguf`.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::OnceLock;

use beamline_gguf::{GgmlType, GgufError, GgufFile, Value};
use serde_json::Value as Json;

const FIXTURE: &str = include_str!("fixtures/smollm2_reference.json");

fn model_path() -> PathBuf {
    match std::env::var_os("BEAMLINE_TEST_MODEL") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../models/SmolLM2-135M-Instruct.Q4_1.gguf"),
    }
}

fn model() -> &'static GgufFile {
    static MODEL: OnceLock<GgufFile> = OnceLock::new();
    MODEL.get_or_init(|| {
        let path = model_path();
        if !path.exists() {
            panic!(
                "test model {} is missing: run scripts/setup.sh to download it \
                 (or point BEAMLINE_TEST_MODEL at a copy)",
                path.display()
            );
        }
        GgufFile::open(&path).unwrap_or_else(|e| panic!("{e}"))
    })
}

fn reference() -> &'static Json {
    static REF: OnceLock<Json> = OnceLock::new();
    REF.get_or_init(|| serde_json::from_str(FIXTURE).expect("fixture json"))
}

fn close(got: f64, want: f64, rel: f64) -> bool {
    (got - want).abs() <= rel * want.abs().max(f64::MIN_POSITIVE)
}

/// Compares one value with its fixture form: `kind` is the Python reader's
/// value type, `want` the JSON value.
fn check_scalar(key: &str, kind: &str, got: &Value, want: &Json) {
    let ok = match (kind, got) {
        ("u8", Value::U8(_))
        | ("u16", Value::U16(_))
        | ("u32", Value::U32(_))
        | ("u64", Value::U64(_)) => got.as_u64() == want.as_u64(),
        ("i8", Value::I8(_))
        | ("i16", Value::I16(_))
        | ("i32", Value::I32(_))
        | ("i64", Value::I64(_)) => got.as_f64() == want.as_i64().map(|v| v as f64),
        ("f32", Value::F32(_)) | ("f64", Value::F64(_)) => {
            let w = want.as_f64().expect("float in fixture");
            got.as_f64().is_some_and(|g| close(g, w, 1e-6))
        }
        ("bool", Value::Bool(b)) => Some(*b) == want.as_bool(),
        ("string", Value::String(s)) => Some(s.as_str()) == want.as_str(),
        _ => false,
    };
    assert!(ok, "metadata '{key}': got {got:?}, reference {kind} {want}");
}

#[test]
fn header_matches_the_reference() {
    let (f, r) = (model(), reference());
    assert_eq!(
        u64::from(f.version()),
        r["version"].as_u64().expect("version")
    );
    assert_eq!(f.alignment(), r["alignment"].as_u64().expect("alignment"));
    assert_eq!(
        f.data_offset(),
        r["data_offset"].as_u64().expect("data_offset")
    );
    let types: BTreeSet<String> = f.tensors().iter().map(|t| t.ggml_type.name()).collect();
    let want: BTreeSet<String> = r["tensor_types"]
        .as_array()
        .expect("types")
        .iter()
        .filter_map(|t| t.as_str().map(String::from))
        .collect();
    assert_eq!(types, want);
}

#[test]
fn metadata_matches_the_reference() {
    let (f, r) = (model(), reference());
    let want = r["metadata"].as_object().expect("metadata");
    let got_keys: BTreeSet<&str> = f.metadata().keys().map(String::as_str).collect();
    let want_keys: BTreeSet<&str> = want.keys().map(String::as_str).collect();
    assert_eq!(got_keys, want_keys);
    for (key, entry) in want {
        let got = f.get(key).expect("key present");
        let kind = entry["kind"].as_str().expect("kind");
        if kind == "array" {
            let items = got
                .as_array()
                .unwrap_or_else(|| panic!("'{key}' is not an array"));
            assert_eq!(
                Some(items.len() as u64),
                entry["len"].as_u64(),
                "'{key}' length"
            );
            let elem = entry["elem"].as_str().expect("elem kind");
            let first = entry["first"].as_array().expect("first");
            assert_eq!(first.len(), items.len().min(5), "'{key}' prefix");
            for (g, w) in items.iter().zip(first) {
                check_scalar(key, elem, g, w);
            }
        } else {
            check_scalar(key, kind, got, &entry["value"]);
        }
    }
}

#[test]
fn typed_accessors_read_the_llama_hyper_parameters() {
    let f = model();
    assert_eq!(f.architecture().ok(), Some("llama"));
    assert_eq!(f.get_u64("llama.block_count").ok(), Some(30));
    assert_eq!(f.get_u64("llama.embedding_length").ok(), Some(576));
    assert_eq!(f.get_u64("llama.attention.head_count_kv").ok(), Some(3));
    assert_eq!(f.get_f64("llama.rope.freq_base").ok(), Some(100_000.0));
    assert_eq!(f.get_str("tokenizer.ggml.model").ok(), Some("gpt2"));
    assert_eq!(
        f.get_str_array("tokenizer.ggml.tokens")
            .map(|t| t.len())
            .ok(),
        Some(49152)
    );
    assert_eq!(
        f.get_i64_array("tokenizer.ggml.token_type")
            .map(|t| t.len())
            .ok(),
        Some(49152)
    );
    assert!(f
        .get_str("tokenizer.chat_template")
        .is_ok_and(|t| t.contains("<|im_start|>")));
    let e = f.get_u64("llama.expert_count").expect_err("absent key");
    assert!(matches!(e, GgufError::MissingKey { .. }));
    assert!(e
        .to_string()
        .contains("SmolLM2-135M-Instruct.Q4_1.gguf: metadata key 'llama.expert_count'"));
}

#[test]
fn tensor_index_matches_the_reference() {
    let (f, r) = (model(), reference());
    let want = r["tensors"].as_array().expect("tensors");
    assert_eq!(f.tensors().len(), want.len());
    for (t, w) in f.tensors().iter().zip(want) {
        assert_eq!(Some(t.name.as_str()), w["name"].as_str());
        let dims: Vec<u64> = w["dims"]
            .as_array()
            .expect("dims")
            .iter()
            .filter_map(Json::as_u64)
            .collect();
        assert_eq!(t.dims, dims, "{}", t.name);
        let shape: Vec<usize> = dims.iter().rev().map(|&d| d as usize).collect();
        assert_eq!(t.shape(), shape, "{}", t.name);
        assert_eq!(
            Some(t.ggml_type.name().as_str()),
            w["type"].as_str(),
            "{}",
            t.name
        );
        assert_eq!(
            Some(f.data_offset() + t.offset),
            w["data_offset"].as_u64(),
            "{}",
            t.name
        );
    }
    let emb = f.tensor("token_embd.weight").expect("embedding");
    assert_eq!(emb.shape(), vec![49152, 576]);
    assert_eq!(emb.ggml_type, GgmlType::Q8_0);
    assert!(matches!(
        f.tensor("lm_head.weight"),
        Err(GgufError::MissingTensor { .. })
    ));
}

#[test]
fn dequantized_tensors_match_the_reference() {
    let (f, r) = (model(), reference());
    let checks = r["dequant_checks"].as_array().expect("checks");
    assert!(checks.len() >= 3);
    for c in checks {
        let name = c["name"].as_str().expect("name");
        let values = f.dequantize(name).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            Some(f.tensor(name).expect("t").ggml_type.name().as_str()),
            c["type"].as_str()
        );
        let first = c["first"].as_array().expect("first");
        assert_eq!(first.len(), 64);
        for (i, (g, w)) in values.iter().zip(first).enumerate() {
            let w = w.as_f64().expect("float");
            assert!(close(f64::from(*g), w, 1e-6), "{name}[{i}]: {g} vs {w}");
        }
        let sum: f64 = values.iter().map(|&v| f64::from(v)).sum();
        let sum_sq: f64 = values.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
        let (ws, wss) = (
            c["sum"].as_f64().expect("sum"),
            c["sum_sq"].as_f64().expect("sum_sq"),
        );
        assert!(close(sum, ws, 1e-4), "{name}: sum {sum} vs {ws}");
        assert!(
            close(sum_sq, wss, 1e-4),
            "{name}: sum of squares {sum_sq} vs {wss}"
        );
    }
}

#[test]
fn grouped_codes_reconstruct_the_model_weights() {
    let f = model();
    for name in ["blk.0.attn_q.weight", "blk.29.ffn_down.weight"] {
        let g = f.int4_groups(name).unwrap_or_else(|e| panic!("{e}"));
        let info = f.tensor(name).expect("t");
        assert_eq!(vec![g.rows, g.cols], info.shape());
        let deq = f.dequantize(name).expect("dequantize");
        assert!(
            g.to_f32()
                .iter()
                .zip(&deq)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{name}"
        );
    }
    let g = f
        .int8_groups("token_embd.weight")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((g.rows, g.cols, g.group_size), (49152, 576, 32));
    let deq = f.dequantize("token_embd.weight").expect("dequantize");
    assert!(g
        .to_f32()
        .iter()
        .zip(&deq)
        .all(|(a, b)| a.to_bits() == b.to_bits()));
    let e = f
        .int4_groups("token_embd.weight")
        .expect_err("Q8_0 is not int4");
    assert!(matches!(e, GgufError::UnsupportedType { .. }));
}
