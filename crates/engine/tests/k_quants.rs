//! A model quantized the way most published GGUFs are (Q4_K_M: Q4_K projections, Q6_K for v
//! and down in some layers and for the untied output layer, a Q4_K token table; plus a layer of
//! the 5-bit types) loads on the CPU in its own quantization, every projection as blocks built
//! from the file's bytes, and computes what its dequantized float32 weights compute, up to the
//! blocks' rounding.
//!
//! SmolLM2's width (576) is not a multiple of the K-quants' 256-wide super-blocks, so the model
//! here is a small Llama of random weights with SmolLM2's tokenizer and metadata, written by
//! the GGUF writer's reference quantizers.

mod common;

use beamline_engine::models::embedding::Embedding;
use beamline_engine::{DeviceChoice, Engine, EngineOptions, QuantMode};
use beamline_gguf::write::GgufWriter;
use beamline_gguf::{GgmlType, GgufFile, Value};

const HIDDEN: usize = 256;
const INTERMEDIATE: usize = 512;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const LAYERS: usize = 3;

/// Each layer's types for q, k, v, o, gate, up and down. Layers 0 and 1 are Q4_K_M's two kinds
/// (it gives v and down Q6_K in the first and last eighth of the layers and every third in
/// between); layer 2 has the 5-bit types of Q5_K_M files and of the fallbacks llama.cpp writes
/// for tensors whose width is not a multiple of 256 (Q5_0, Q5_1).
fn layer_types(layer: usize) -> [GgmlType; 7] {
    use GgmlType::*;
    match layer {
        0 => [Q4_K, Q4_K, Q6_K, Q4_K, Q4_K, Q4_K, Q6_K],
        1 => [Q4_K; 7],
        _ => [Q5_K, Q5_K, Q6_K, Q5_0, Q5_1, Q5_K, Q5_0],
    }
}

/// The storage each layer's q/k/v, o, gate/up and down should get on the CPU: 4-bit blocks
/// only where every part is 4-bit.
fn expected_storage(layer: usize) -> [&'static str; 4] {
    let t = layer_types(layer);
    let form = |parts: &[GgmlType]| {
        if parts.iter().all(|&p| p == GgmlType::Q4_K) {
            "q4-blocks"
        } else {
            "q8-blocks"
        }
    };
    [
        form(&t[0..3]),
        form(&t[3..4]),
        form(&t[4..6]),
        form(&t[6..7]),
    ]
}

struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    /// Roughly N(0, 0.02^2)-sized weights: uniform with that standard deviation.
    fn weights(&mut self, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| (self.next() as f32 / (1u64 << 31) as f32 - 0.5) * 0.0693)
            .collect()
    }

    /// `n` weights of a 5-bit type as random codes with scales that keep them about as large as
    /// [`Lcg::weights`] (and mins that centre the unsigned codes).
    fn five_bit_blocks(&mut self, ty: GgmlType, n: usize) -> Vec<u8> {
        let (size, halves): (usize, &[(usize, f32)]) = match ty {
            GgmlType::Q5_0 => (22, &[(0, 2e-3)]),
            GgmlType::Q5_1 => (24, &[(0, 2e-3), (2, -0.032)]),
            // Q5_K: d and dmin, times 6-bit factors of about 32.
            _ => (176, &[(0, 6e-5), (2, 1e-3)]),
        };
        let mut bytes: Vec<u8> = (0..n / ty.block_size() * size)
            .map(|_| self.next() as u8)
            .collect();
        for block in bytes.chunks_exact_mut(size) {
            for &(at, value) in halves {
                let bits = half::f16::from_f32(value).to_bits().to_le_bytes();
                block[at..at + 2].copy_from_slice(&bits);
            }
        }
        bytes
    }
}

/// Writes the model into the test target's temporary folder and returns its path.
fn write_model() -> std::path::PathBuf {
    let donor = GgufFile::open(&common::model_path()).expect("open the test model");
    let mut w = GgufWriter::new();
    let shape_keys = [
        "llama.block_count",
        "llama.embedding_length",
        "llama.feed_forward_length",
        "llama.attention.head_count",
        "llama.attention.head_count_kv",
        "llama.rope.dimension_count",
        "general.alignment",
    ];
    for (key, value) in donor.metadata() {
        if !shape_keys.contains(&key.as_str()) {
            w.add_metadata(key.clone(), value.clone())
                .expect("metadata");
        }
    }
    for (key, value) in [
        ("llama.block_count", LAYERS),
        ("llama.embedding_length", HIDDEN),
        ("llama.feed_forward_length", INTERMEDIATE),
        ("llama.attention.head_count", HEADS),
        ("llama.attention.head_count_kv", KV_HEADS),
        ("llama.rope.dimension_count", HIDDEN / HEADS),
    ] {
        w.add_metadata(key, Value::U32(value as u32))
            .expect("shape");
    }
    let vocab = donor
        .tensor("token_embd.weight")
        .expect("token table")
        .shape()[0];
    let kv = KV_HEADS * HIDDEN / HEADS;
    let mut rng = Lcg(17);
    let mut add = |name: &str, rows: usize, cols: usize, ty: GgmlType| {
        if matches!(ty, GgmlType::Q4_K | GgmlType::Q6_K) {
            w.add_tensor(name, &[rows, cols], &rng.weights(rows * cols), ty)
                .expect(name);
        } else {
            // The writer has no 5-bit quantizers: random codes, small scales.
            w.add_raw_tensor(
                name,
                &[rows, cols],
                ty,
                rng.five_bit_blocks(ty, rows * cols),
            );
        }
    };
    add("token_embd.weight", vocab, HIDDEN, GgmlType::Q4_K);
    add("output.weight", vocab, HIDDEN, GgmlType::Q6_K);
    for i in 0..LAYERS {
        let [q, k, v, o, gate, up, down] = layer_types(i);
        add(&format!("blk.{i}.attn_q.weight"), HIDDEN, HIDDEN, q);
        add(&format!("blk.{i}.attn_k.weight"), kv, HIDDEN, k);
        add(&format!("blk.{i}.attn_v.weight"), kv, HIDDEN, v);
        add(&format!("blk.{i}.attn_output.weight"), HIDDEN, HIDDEN, o);
        add(
            &format!("blk.{i}.ffn_gate.weight"),
            INTERMEDIATE,
            HIDDEN,
            gate,
        );
        add(&format!("blk.{i}.ffn_up.weight"), INTERMEDIATE, HIDDEN, up);
        add(
            &format!("blk.{i}.ffn_down.weight"),
            HIDDEN,
            INTERMEDIATE,
            down,
        );
    }
    let ones = vec![1f32; HIDDEN];
    for name in (0..LAYERS)
        .flat_map(|i| {
            [
                format!("blk.{i}.attn_norm.weight"),
                format!("blk.{i}.ffn_norm.weight"),
            ]
        })
        .chain(["output_norm.weight".to_string()])
    {
        w.add_tensor(&name, &[HIDDEN], &ones, GgmlType::F32)
            .expect("norm");
    }
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("q4_k_m_shaped.gguf");
    w.write(&path).expect("write the model");
    path
}

fn load(path: &std::path::Path, quant: QuantMode) -> Engine {
    Engine::load(
        path,
        EngineOptions {
            quant,
            device: DeviceChoice::Cpu,
            max_batch: 4,
            bf16: false,
            int8: false,
            int16: false,
        },
    )
    .expect("load the K-quant model")
}

#[test]
fn a_q4_k_m_model_runs_as_blocks_and_computes_its_float_weights() {
    let path = write_model();
    let quantized = load(&path, QuantMode::Auto);
    let float = load(&path, QuantMode::None);
    std::fs::remove_file(&path).ok();

    let decoder = quantized.decoder();
    if beamline_engine::cpu::available() {
        for (i, layer) in decoder.layers.iter().enumerate() {
            // A Q6_K v beside Q4_K q and k makes the fused q/k/v 8-bit blocks, not floats.
            let got = [&layer.qkv, &layer.o, &layer.gate_up, &layer.down].map(|l| l.storage_name());
            assert_eq!(
                got,
                expected_storage(i),
                "layer {i}: q/k/v, o, gate/up, down"
            );
        }
        assert_eq!(decoder.lm_head.storage_name(), "q8-blocks");
        assert!(
            matches!(decoder.embed, Embedding::Blocks(_)),
            "the untied Q4_K token table is held as blocks"
        );
        // 4-bit blocks take 0.625 bytes a weight and 8-bit ones 1.125, against float32's 4.
        let ratio = quantized.weight_bytes() as f64 / float.weight_bytes() as f64;
        assert!(ratio < 0.25, "weights held: {ratio:.3} of float32's");
    }

    let ids = quantized
        .tokenizer()
        .encode("The quick brown fox jumps over the lazy dog.", true)
        .expect("encode");
    let got = quantized.prompt_logits(&ids).expect("quantized logits");
    let want = float.prompt_logits(&ids).expect("float logits");
    assert_eq!(got.len(), want.len());
    let mut worst = 0f32;
    for (position, (got, want)) in got.iter().zip(&want).enumerate() {
        let diff: f32 = got.iter().zip(want).map(|(a, b)| (a - b).powi(2)).sum();
        let norm: f32 = want.iter().map(|b| b * b).sum();
        let relative = (diff / norm).sqrt();
        // Q6_K, Q5_1 and Q5_K rounded to 8-bit blocks (an error of at most half an 8-bit step)
        // and Q4_K's scales to half floats (2^-11): about half a percent of the logits.
        assert!(
            relative < 0.03,
            "position {position}: logits off by {relative:.4} of their norm"
        );
        worst = worst.max(relative);
    }
    eprintln!("logits off by at most {worst:.5} of their norm");
}
