//! Shared set-up for the engine's integration tests: the SmolLM2 test model (loaded once per
//! test binary and quantization mode) and the reference fixtures made by transformers.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use beamline_engine::{DeviceChoice, Engine, EngineOptions, QuantMode};
use serde_json::Value;

pub fn model_path() -> PathBuf {
    let path = std::env::var("BEAMLINE_TEST_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../models/SmolLM2-135M-Instruct.Q4_1.gguf")
        });
    assert!(
        path.exists(),
        "{} is missing: run scripts/setup.sh",
        path.display()
    );
    path
}

/// `bf16`: the default bfloat16 products where the CPU has them; `int8`: 8-bit activations
/// where bfloat16 does not run; `int16`: 16-bit ones there (the default).
fn load(quant: QuantMode, bf16: bool, int8: bool, int16: bool) -> Mutex<Engine> {
    let engine = Engine::load(
        &model_path(),
        EngineOptions {
            quant,
            device: DeviceChoice::Cpu,
            max_batch: 16,
            bf16,
            int8,
            int16,
        },
    )
    .expect("load the test model");
    Mutex::new(engine)
}

/// The model dequantized to float32 (what transformers runs).
pub fn engine_f32() -> &'static Mutex<Engine> {
    static E: OnceLock<Mutex<Engine>> = OnceLock::new();
    E.get_or_init(|| load(QuantMode::None, true, false, true))
}

/// The model in its own Q4_1 quantization, as the worker runs it by default (batched products
/// in bfloat16 where that is faster than float32: AMX, or AVX-512 BF16 on AMD; with 16-bit
/// activations on AVX2 CPUs without AVX-512, and on AVX-512 cores with VNNI below the bfloat16
/// kernels' rows: 2 to 4 rows with AMX, 2 to 12 on AMD, every product of several rows on Intel
/// without AMX).
pub fn engine_q4() -> &'static Mutex<Engine> {
    static E: OnceLock<Mutex<Engine>> = OnceLock::new();
    E.get_or_init(|| load(QuantMode::Auto, true, false, true))
}

/// The Q4_1 model with 16-bit activations in its wide products where the CPU has a 16-bit
/// kernel (AVX2 without AVX-512, AVX-512 with VNNI), bfloat16 off (`--bf16 off`).
pub fn engine_q4_int16() -> &'static Mutex<Engine> {
    static E: OnceLock<Mutex<Engine>> = OnceLock::new();
    E.get_or_init(|| load(QuantMode::Auto, false, false, true))
}

/// The Q4_1 model with float32 activations everywhere (`--bf16 off --int16 off`).
pub fn engine_q4_float32() -> &'static Mutex<Engine> {
    static E: OnceLock<Mutex<Engine>> = OnceLock::new();
    E.get_or_init(|| load(QuantMode::Auto, false, false, false))
}

/// The Q4_1 model with 8-bit activations in its wide products (`--bf16 off --int8 on`).
pub fn engine_q4_int8() -> &'static Mutex<Engine> {
    static E: OnceLock<Mutex<Engine>> = OnceLock::new();
    E.get_or_init(|| load(QuantMode::Auto, false, true, false))
}

pub fn reference() -> &'static Value {
    static R: OnceLock<Value> = OnceLock::new();
    R.get_or_init(|| {
        let path =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/smollm2_reference.json");
        serde_json::from_str(&std::fs::read_to_string(path).expect("fixture"))
            .expect("fixture JSON")
    })
}

pub fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("id array")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

pub fn lock(m: &'static Mutex<Engine>) -> std::sync::MutexGuard<'static, Engine> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
