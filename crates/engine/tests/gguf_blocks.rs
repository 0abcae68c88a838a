//! A GGUF file's Q4_0/Q4_1/Q8_0 tensors are built into the CPU kernels' blocks straight from
//! their bytes (`WeightSource::blocks`), skipping the unpacked codes of `WeightSource::matrix`.
//! Both ways must give the same blocks: checked on every projection of two of SmolLM2's
//! layers, rope-interleaved q/k rows and the fused q/k/v and gate/up stacks included.

mod common;

use beamline_engine::config::Architecture;
use beamline_engine::cpu::BlockMatrix;
use beamline_engine::quant::{Linear, QuantMode};
use beamline_engine::weights::{
    unpermute_rope_order, unpermute_rope_rows, GgufWeights, RawWeight, WeightSource,
};
use beamline_gguf::GgufFile;
use tch::{Device, Kind};

/// The blocks the existing path builds: the unpacked codes, permuted and concatenated as
/// tensors, then turned into blocks.
fn through_codes(source: &GgufWeights, parts: &[(String, Option<usize>)], d: usize) -> Vec<f32> {
    let raws: Vec<RawWeight> = parts
        .iter()
        .map(|(name, heads)| {
            let raw = source.matrix(name).expect("matrix");
            match heads {
                Some(h) => raw.permute_rows(&unpermute_rope_rows(*h, d)),
                None => raw,
            }
        })
        .collect();
    blocks_of(RawWeight::cat_rows(raws))
}

/// What `Linear::build` makes of `raw` in the default mode on the CPU: blocks, as floats.
fn blocks_of(raw: RawWeight) -> Vec<f32> {
    match Linear::build(raw, None, QuantMode::Auto, Device::Cpu, Kind::Float) {
        Linear::Blocks { matrix, .. } => matrix.to_f32(),
        _ => panic!("the CPU path holds GGUF blocks as blocks"),
    }
}

/// The same from the file's bytes, permuted and stacked as blocks.
fn from_bytes(source: &GgufWeights, parts: &[(String, Option<usize>)], d: usize) -> Vec<f32> {
    let blocks = parts
        .iter()
        .map(|(name, heads)| {
            let matrix = source.blocks(name).expect("read").expect("a block format");
            match heads {
                Some(h) => matrix.permute_rows(&unpermute_rope_order(*h, d)),
                None => matrix,
            }
        })
        .collect();
    BlockMatrix::stack_rows(blocks)
        .expect("one format")
        .to_f32()
}

#[test]
fn blocks_from_the_files_bytes_equal_blocks_from_its_codes() {
    let file = GgufFile::open(&common::model_path()).expect("open the test model");
    let source = GgufWeights::new(&file, Architecture::Llama);
    assert!(
        source.rope_interleaved(),
        "llama.cpp interleaves SmolLM2's q/k rows"
    );
    let config = common::lock(common::engine_q4()).config().clone();
    let (h, kvh, d) = (config.num_heads, config.num_kv_heads, config.head_dim);
    for layer in [0, config.num_layers - 1] {
        let name = |tail: &str| format!("model.layers.{layer}.{tail}.weight");
        let projections: [Vec<(String, Option<usize>)>; 4] = [
            vec![
                (name("self_attn.q_proj"), Some(h)),
                (name("self_attn.k_proj"), Some(kvh)),
                (name("self_attn.v_proj"), None),
            ],
            vec![(name("self_attn.o_proj"), None)],
            vec![(name("mlp.gate_proj"), None), (name("mlp.up_proj"), None)],
            vec![(name("mlp.down_proj"), None)],
        ];
        for parts in &projections {
            let want = through_codes(&source, parts, d);
            let got = from_bytes(&source, parts, d);
            assert_eq!(got.len(), want.len(), "{}", parts[0].0);
            assert!(got == want, "{}: the blocks differ", parts[0].0);
        }
    }
    // The token table is Q8_0 in this file.
    let table = "model.embed_tokens.weight".to_string();
    let want = blocks_of(source.matrix(&table).expect("matrix"));
    let got = source.blocks(&table).expect("read").expect("Q8_0").to_f32();
    assert!(got == want, "the Q8_0 token table differs");
}

/// Each format's blocks hold exactly the values the GGUF reader dequantizes the bytes to.
#[test]
fn blocks_from_bytes_dequantize_like_the_reader() {
    use beamline_engine::cpu::GgufBlocks;
    use beamline_gguf::write::GgufWriter;
    use beamline_gguf::GgmlType;
    let (rows, cols) = (6, 96);
    let values: Vec<f32> = (0..rows * cols)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.013)
        .collect();
    for (ty, format) in [
        (GgmlType::Q4_0, GgufBlocks::Q4_0),
        (GgmlType::Q4_1, GgufBlocks::Q4_1),
        (GgmlType::Q8_0, GgufBlocks::Q8_0),
    ] {
        let mut w = GgufWriter::new();
        w.add_tensor("w", &[rows, cols], &values, ty).expect("add");
        let file = GgufFile::from_bytes("blocks.gguf", w.to_bytes()).expect("parse");
        let want = file.dequantize("w").expect("dequantize");
        let got = file
            .with_tensor_bytes("w", |_, bytes| {
                BlockMatrix::from_gguf_blocks(format, rows, cols, bytes)
            })
            .expect("bytes")
            .to_f32();
        assert_eq!(got, want, "{format:?}");
    }
}

/// Q4_K and Q6_K are not the kernels' blocks byte for byte: Q4_K's 32-wide groups get their
/// scales and mins rounded to half floats, Q6_K's pairs of 16-wide groups are rounded to one
/// 8-bit block. Built from the bytes a super-block at a time, they must equal what the
/// whole-tensor path (`matrix`, then `Linear::build`) makes, and stay within that rounding of
/// the reader's values.
#[test]
fn k_quant_blocks_from_bytes_equal_the_converted_groups() {
    use beamline_gguf::write::GgufWriter;
    use beamline_gguf::GgmlType;
    let (rows, cols) = (5, 512);
    let values: Vec<f32> = (0..rows * cols)
        .map(|i| ((i * 7919 % 1009) as f32 - 504.0) * 1e-4 * (1.0 + (i / 256) as f32))
        .collect();
    for ty in [GgmlType::Q4_K, GgmlType::Q6_K] {
        let mut w = GgufWriter::new();
        w.add_tensor("w", &[rows, cols], &values, ty).expect("add");
        let file = GgufFile::from_bytes("k.gguf", w.to_bytes()).expect("parse");
        let source = GgufWeights::new(&file, Architecture::Llama);
        let want = blocks_of(source.matrix("w").expect("matrix"));
        let got = source.blocks("w").expect("read").expect("a block format");
        assert_eq!((got.rows(), got.cols()), (rows, cols), "{ty:?}");
        let got = got.to_f32();
        assert!(
            got == want,
            "{ty:?}: the blocks differ from the converted groups"
        );
        let exact = file.dequantize("w").expect("dequantize");
        for (b, (x, y)) in exact.chunks(32).zip(got.chunks(32)).enumerate() {
            let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
            let tol = match ty {
                // Scale and min each off by at most 2^-11 relative (15 steps span at most
                // about twice the largest magnitude, the min at most about one).
                GgmlType::Q4_K => 4.0 * amax * 2f32.powi(-11) + 1e-7,
                // Half a step of the 8-bit block.
                _ => amax / 127.0 * 0.5 * 1.001 + 1e-7,
            };
            for (x, y) in x.iter().zip(y) {
                assert!((x - y).abs() <= tol, "{ty:?} block {b}: {x} vs {y}");
            }
        }
    }
}

/// Random blocks of `ty` (`size` bytes each) with small half-float scales at `scales_at`, for
/// the formats the writer cannot quantize.
fn random_blocks(n: usize, size: usize, scales_at: &[usize], seed: u64) -> Vec<u8> {
    let mut state = seed;
    let mut bytes: Vec<u8> = (0..n * size)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 56) as u8
        })
        .collect();
    for (b, block) in bytes.chunks_exact_mut(size).enumerate() {
        for &at in scales_at {
            let scale = 1e-3 * (1.0 + (b % 7) as f32) * if b % 2 == 0 { 1.0 } else { -1.0 };
            block[at..at + 2].copy_from_slice(&half::f16::from_f32(scale).to_bits().to_le_bytes());
        }
    }
    bytes
}

/// Q5_0's signed 5-bit codes are 8-bit blocks exactly; Q5_1 and Q5_K (5-bit codes with a min)
/// are rounded to 8-bit blocks, within half a step of the reader's values.
#[test]
fn five_bit_blocks_hold_the_readers_values() {
    use beamline_gguf::write::GgufWriter;
    use beamline_gguf::GgmlType;
    let (rows, cols) = (3, 512);
    for (ty, size, scales_at) in [
        (GgmlType::Q5_0, 22, &[0][..]),
        (GgmlType::Q5_1, 24, &[0, 2][..]),
        (GgmlType::Q5_K, 176, &[0, 2][..]),
    ] {
        let n = rows * cols / ty.block_size();
        let mut w = GgufWriter::new();
        w.add_raw_tensor("w", &[rows, cols], ty, random_blocks(n, size, scales_at, 3));
        let file = GgufFile::from_bytes("q5.gguf", w.to_bytes()).expect("parse");
        let source = GgufWeights::new(&file, Architecture::Llama);
        let got = source.blocks("w").expect("read").expect("a block format");
        assert!(matches!(got, BlockMatrix::Q8 { .. }), "{ty:?}");
        let got = got.to_f32();
        let exact = file.dequantize("w").expect("dequantize");
        if ty == GgmlType::Q5_0 {
            assert_eq!(got, exact, "Q5_0 blocks are exact");
            continue;
        }
        assert!(
            got != exact,
            "{ty:?}: 5-bit codes with a min cannot be exact"
        );
        for (b, (x, y)) in exact.chunks(32).zip(got.chunks(32)).enumerate() {
            let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
            for (x, y) in x.iter().zip(y) {
                let tol = amax / 254.0 * 1.001 + 1e-9;
                assert!((x - y).abs() <= tol, "{ty:?} block {b}: {x} vs {y}");
            }
        }
    }
}
