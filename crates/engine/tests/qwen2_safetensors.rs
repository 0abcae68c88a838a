//! The safetensors loader and the qwen2 path (q/k/v biases, several shards with an index),
//! checked on a tiny random-weight Qwen2 checkpoint that transformers makes in the test set-up
//! (`fixtures/make_tiny_qwen2.py`, deterministic, ~30 s) along with its reference logits.

use std::path::PathBuf;
use std::process::Command;

use beamline_engine::{DeviceChoice, Engine, EngineOptions, GenerationParams, QuantMode};
use serde_json::Value;

fn tiny_qwen2() -> PathBuf {
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("tiny-qwen2");
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/make_tiny_qwen2.py");
    if !out.join("reference.json").exists() {
        let python = std::env::var("BEAMLINE_PYTHON").unwrap_or_else(|_| {
            concat!(env!("CARGO_MANIFEST_DIR"), "/../../.venv/bin/python").to_string()
        });
        let model = std::env::var("BEAMLINE_TEST_MODEL").unwrap_or_else(|_| {
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../models/SmolLM2-135M-Instruct.Q4_1.gguf"
            )
            .to_string()
        });
        let status = Command::new(&python)
            .arg(&script)
            .arg(&out)
            .arg("--gguf")
            .arg(&model)
            .env("HF_HUB_OFFLINE", "1")
            .status()
            .unwrap_or_else(|e| panic!("cannot run {python} (run scripts/setup.sh): {e}"));
        assert!(status.success(), "make_tiny_qwen2.py failed");
    }
    out
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// max |a - b| / max |b|
fn relative_error(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
    got.iter()
        .zip(want)
        .map(|(g, w)| (*g as f64 - w).abs())
        .fold(0.0, f64::max)
        / scale
}

#[test]
fn tiny_qwen2_logits_and_greedy_match_transformers() {
    let dir = tiny_qwen2();
    assert!(
        dir.join("model.safetensors.index.json").exists(),
        "the checkpoint should be sharded"
    );
    let reference: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    let engine = Engine::load(
        &dir,
        EngineOptions {
            quant: QuantMode::None,
            device: DeviceChoice::Cpu,
            max_batch: 4,
            bf16: true,
            int8: true,
            int16: true,
        },
    )
    .unwrap();
    assert_eq!(engine.config().architecture.name(), "qwen2");
    let prompts = reference["prompts"].as_array().unwrap();
    let mut requests = Vec::new();
    for p in prompts {
        let prompt = ids(&p["ids"]);
        let logits = engine.prompt_logits(&prompt).unwrap();
        let err = relative_error(logits.last().unwrap(), &floats(&p["last_logits"]));
        assert!(
            err < 1e-4,
            "prompt of {} tokens: last-position logits off by {err:e} (relative)",
            prompt.len()
        );
        if let Some(all) = p.get("all_logits").and_then(|a| a.as_array()) {
            for (pos, row) in all.iter().enumerate() {
                let err = relative_error(&logits[pos], &floats(row));
                assert!(err < 1e-4, "position {pos}: off by {err:e}");
            }
        }
        requests.push(
            engine
                .request(
                    prompt,
                    GenerationParams {
                        max_new_tokens: 8,
                        ..GenerationParams::default()
                    },
                )
                .unwrap(),
        );
    }
    let (outputs, _) = engine.generate(requests).unwrap();
    for (p, out) in prompts.iter().zip(&outputs) {
        assert_eq!(out.best().token_ids, ids(&p["greedy_ids"]), "greedy ids");
    }
}
