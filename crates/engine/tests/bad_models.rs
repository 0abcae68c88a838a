//! A model file that is wrong in any way must give a clear error naming the file and the
//! tensor or key, never a panic. The files are tiny Llama GGUFs built here with the GGUF writer.

use std::path::{Path, PathBuf};

use beamline_engine::{DeviceChoice, Engine, EngineOptions, GenerationParams, QuantMode};
use beamline_gguf::write::GgufWriter;
use beamline_gguf::{GgmlType, Value};

const HIDDEN: usize = 32;
const FFN: usize = 64;
const HEADS: usize = 2;
const KV_HEADS: usize = 1;
const HEAD_DIM: usize = HIDDEN / HEADS;

fn vocab() -> Vec<String> {
    let mut v: Vec<String> = vec!["<s>".into(), "</s>".into()];
    v.extend(('a'..='z').map(|c| c.to_string()));
    v.push("\u{0120}".into()); // byte-level space
    v.extend(('a'..='z').map(|c| format!("\u{0120}{c}")));
    v.extend((0..9).map(|i| format!("<extra{i}>")));
    v // 64 entries
}

fn pseudo_random(n: usize, seed: u32) -> Vec<f32> {
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x as f32 / u32::MAX as f32 - 0.5) * 0.4
        })
        .collect()
}

/// A one-layer Llama; `skip` leaves a tensor out, `arch` renames the architecture, `weight_type`
/// stores the matrices.
fn tiny_llama(arch: &str, skip: Option<&str>, weight_type: GgmlType) -> GgufWriter {
    let tokens = vocab();
    let mut w = GgufWriter::new();
    let s = |x: &str| Value::String(x.into());
    w.add_metadata("general.architecture", s(arch)).unwrap();
    for (k, v) in [
        ("block_count", 1u32),
        ("context_length", 128),
        ("embedding_length", HIDDEN as u32),
        ("feed_forward_length", FFN as u32),
        ("attention.head_count", HEADS as u32),
        ("attention.head_count_kv", KV_HEADS as u32),
    ] {
        w.add_metadata(format!("{arch}.{k}"), Value::U32(v))
            .unwrap();
    }
    w.add_metadata(
        format!("{arch}.attention.layer_norm_rms_epsilon"),
        Value::F32(1e-5),
    )
    .unwrap();
    w.add_metadata("tokenizer.ggml.model", s("gpt2")).unwrap();
    w.add_metadata(
        "tokenizer.ggml.tokens",
        Value::Array(tokens.iter().map(|t| s(t)).collect()),
    )
    .unwrap();
    w.add_metadata("tokenizer.ggml.merges", Value::Array(vec![s("\u{0120} a")]))
        .unwrap();
    w.add_metadata("tokenizer.ggml.eos_token_id", Value::U32(1))
        .unwrap();
    let v = tokens.len();
    let mut seed = 1;
    let mut add = |w: &mut GgufWriter, name: &str, shape: &[usize], ty: GgmlType| {
        if skip == Some(name) {
            return;
        }
        seed += 1;
        let n: usize = shape.iter().product();
        let data = if name.ends_with("norm.weight") {
            vec![1.0; n]
        } else {
            pseudo_random(n, seed)
        };
        w.add_tensor(name, shape, &data, ty).unwrap();
    };
    add(&mut w, "token_embd.weight", &[v, HIDDEN], GgmlType::Q8_0);
    add(&mut w, "output_norm.weight", &[HIDDEN], GgmlType::F32);
    add(&mut w, "blk.0.attn_norm.weight", &[HIDDEN], GgmlType::F32);
    add(&mut w, "blk.0.ffn_norm.weight", &[HIDDEN], GgmlType::F32);
    add(
        &mut w,
        "blk.0.attn_q.weight",
        &[HEADS * HEAD_DIM, HIDDEN],
        weight_type,
    );
    add(
        &mut w,
        "blk.0.attn_k.weight",
        &[KV_HEADS * HEAD_DIM, HIDDEN],
        weight_type,
    );
    add(
        &mut w,
        "blk.0.attn_v.weight",
        &[KV_HEADS * HEAD_DIM, HIDDEN],
        weight_type,
    );
    add(
        &mut w,
        "blk.0.attn_output.weight",
        &[HIDDEN, HIDDEN],
        weight_type,
    );
    add(&mut w, "blk.0.ffn_gate.weight", &[FFN, HIDDEN], weight_type);
    add(&mut w, "blk.0.ffn_up.weight", &[FFN, HIDDEN], weight_type);
    add(&mut w, "blk.0.ffn_down.weight", &[HIDDEN, FFN], weight_type);
    w
}

fn write(name: &str, w: &GgufWriter) -> PathBuf {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    w.write(&path).unwrap();
    path
}

fn load(path: &Path, quant: QuantMode) -> Result<Engine, String> {
    Engine::load(
        path,
        EngineOptions {
            quant,
            device: DeviceChoice::Cpu,
            max_batch: 4,
            bf16: true,
            int8: true,
            int16: true,
        },
    )
    .map_err(|e| e.to_string())
}

#[test]
fn a_tiny_llama_loads_and_generates_in_every_mode() {
    for ty in [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q8_0,
        GgmlType::F16,
        GgmlType::F32,
    ] {
        let path = write(
            &format!("tiny-{}.gguf", ty.name()),
            &tiny_llama("llama", None, ty),
        );
        for quant in [
            QuantMode::Auto,
            QuantMode::None,
            QuantMode::Int8,
            QuantMode::Int4,
        ] {
            let engine = load(&path, quant).unwrap_or_else(|e| panic!("{ty:?} {quant:?}: {e}"));
            let ids = engine.tokenizer().encode("ab c", false).unwrap();
            let req = engine
                .request(
                    ids,
                    GenerationParams {
                        max_new_tokens: 5,
                        ignore_eos: true,
                        ..Default::default()
                    },
                )
                .unwrap();
            let (out, _) = engine.generate(vec![req]).unwrap();
            assert_eq!(out[0].best().token_ids.len(), 5, "{ty:?} {quant:?}");
        }
    }
}

#[test]
fn unknown_architecture_is_named() {
    let path = write("gptneox.gguf", &tiny_llama("gptneox", None, GgmlType::F32));
    let err = load(&path, QuantMode::Auto).err().expect("must fail");
    assert!(
        err.contains("gptneox.gguf") && err.contains("unknown architecture 'gptneox'"),
        "{err}"
    );
}

#[test]
fn missing_tensor_is_named() {
    let path = write(
        "missing.gguf",
        &tiny_llama("llama", Some("blk.0.ffn_down.weight"), GgmlType::F32),
    );
    let err = load(&path, QuantMode::Auto).err().expect("must fail");
    assert!(
        err.contains("missing.gguf") && err.contains("blk.0.ffn_down.weight"),
        "{err}"
    );
}

#[test]
fn unsupported_tensor_type_is_named() {
    let mut w = tiny_llama("llama", Some("blk.0.attn_output.weight"), GgmlType::F32);
    // Q5_K: 256 weights in 176 bytes.
    let blocks = HIDDEN * HIDDEN / 256;
    w.add_raw_tensor(
        "blk.0.attn_output.weight",
        &[HIDDEN, HIDDEN],
        GgmlType::from_id(13),
        vec![0u8; 176 * blocks],
    );
    let path = write("q5k.gguf", &w);
    let err = load(&path, QuantMode::Auto).err().expect("must fail");
    assert!(
        err.contains("q5k.gguf")
            && err.contains("blk.0.attn_output.weight")
            && err.contains("Q5_K"),
        "{err}"
    );
}

#[test]
fn corrupt_and_truncated_files_fail_cleanly() {
    let bytes = tiny_llama("llama", None, GgmlType::F32).to_bytes();
    for (name, data) in [
        ("truncated.gguf", bytes[..bytes.len() / 2].to_vec()),
        ("garbage.gguf", b"definitely not a model".to_vec()),
        ("empty.gguf", Vec::new()),
    ] {
        let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
        std::fs::write(&path, data).unwrap();
        let err = load(&path, QuantMode::Auto).err().expect("must fail");
        assert!(err.contains(name), "{name}: {err}");
    }
    let err = load(Path::new("/nonexistent/model.gguf"), QuantMode::Auto)
        .err()
        .expect("must fail");
    assert!(err.contains("/nonexistent/model.gguf"), "{err}");
}
