//! `int4_groups` / `int8_groups` must reconstruct exactly what
//! `dequantize` returns, and refuse the types they do not cover.

mod common;

use beamline_gguf::write::GgufWriter;
use beamline_gguf::{GgmlType, GgufError, GgufFile, Int4Groups, Int8Groups};
use common::Rng;

/// Random block bytes with sane f16 scales at the given offsets.
fn random_blocks(rng: &mut Rng, n_blocks: usize, size: usize, f16_at: &[usize]) -> Vec<u8> {
    let mut out = Vec::with_capacity(n_blocks * size);
    for _ in 0..n_blocks {
        let start = out.len();
        out.extend((0..size).map(|_| rng.next_u64() as u8));
        for &at in f16_at {
            let d = half::f16::from_f32(rng.unit() * 0.02);
            out[start + at..start + at + 2].copy_from_slice(&d.to_bits().to_le_bytes());
        }
    }
    out
}

fn file() -> GgufFile {
    let mut rng = Rng::new(99);
    let mut w = GgufWriter::new();
    let shape = [4usize, 2, 96];
    let n = 4 * 2 * 96;
    for ty in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q8_0] {
        let data = rng.weights(n);
        w.add_tensor(&ty.name(), &shape, &data, ty).expect("add");
    }
    let q4k = random_blocks(&mut rng, 6, 144, &[0, 2]);
    w.add_raw_tensor("Q4_K", &[3, 512], GgmlType::Q4_K, q4k);
    let q6k = random_blocks(&mut rng, 6, 210, &[208]);
    w.add_raw_tensor("Q6_K", &[3, 512], GgmlType::Q6_K, q6k);
    w.add_tensor("F16", &[2, 32], &rng.weights(64), GgmlType::F16)
        .expect("f16");
    GgufFile::from_bytes("groups.gguf", w.to_bytes()).expect("parse")
}

fn assert_bits_equal(name: &str, a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len(), "{name}");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert_eq!(x.to_bits(), y.to_bits(), "{name}[{i}]: {x} vs {y}");
    }
}

fn check_int4(g: &Int4Groups, deq: &[f32], name: &str, group: usize) {
    assert_eq!(g.group_size, group, "{name}");
    assert_eq!(g.codes.len(), g.rows * g.cols);
    assert_eq!(g.scales.len(), g.rows * g.cols / group);
    assert_eq!(g.mins.len(), g.scales.len());
    assert!(g.codes.iter().all(|&q| q <= 15), "{name}: code above 15");
    assert!(g.codes.iter().any(|&q| q >= 8), "{name}: codes look empty");
    assert_bits_equal(name, &g.to_f32(), deq);
    let (r, c) = (g.rows - 1, g.cols - 1);
    assert_eq!(g.weight(r, c).to_bits(), deq[r * g.cols + c].to_bits());
}

fn check_int8(g: &Int8Groups, deq: &[f32], name: &str, group: usize) {
    assert_eq!(g.group_size, group, "{name}");
    assert_eq!(g.codes.len(), g.rows * g.cols);
    assert_eq!(g.scales.len(), g.rows * g.cols / group);
    assert!(g.codes.iter().any(|&q| q < 0), "{name}: no negative code");
    assert_bits_equal(name, &g.to_f32(), deq);
    assert_eq!(g.weight(1, 17).to_bits(), deq[g.cols + 17].to_bits());
}

#[test]
fn int4_groups_reconstruct_dequantize_exactly() {
    let f = file();
    for (name, rows, cols, group) in [
        ("Q4_0", 8, 96, 32),
        ("Q4_1", 8, 96, 32),
        ("Q4_K", 3, 512, 32),
    ] {
        let g = f.int4_groups(name).expect(name);
        assert_eq!((g.rows, g.cols), (rows, cols), "{name}");
        check_int4(&g, &f.dequantize(name).expect(name), name, group);
    }
}

#[test]
fn q4_0_groups_follow_the_documented_affine_form() {
    let f = file();
    let g = f.int4_groups("Q4_0").expect("groups");
    for (s, m) in g.scales.iter().zip(&g.mins) {
        assert_eq!(*m, -8.0 * s);
    }
}

#[test]
fn int8_groups_reconstruct_dequantize_exactly() {
    let f = file();
    for (name, rows, cols, group) in [("Q8_0", 8, 96, 32), ("Q6_K", 3, 512, 16)] {
        let g = f.int8_groups(name).expect(name);
        assert_eq!((g.rows, g.cols), (rows, cols), "{name}");
        check_int8(&g, &f.dequantize(name).expect(name), name, group);
    }
    let q6 = f.int8_groups("Q6_K").expect("q6");
    assert!(q6.codes.iter().all(|&q| (-32..=31).contains(&q)));
}

#[test]
fn groups_refuse_other_types_with_the_tensor_named() {
    let f = file();
    for name in ["Q8_0", "Q6_K", "F16"] {
        let e = f.int4_groups(name).expect_err(name);
        assert!(matches!(e, GgufError::UnsupportedType { .. }), "{name}");
        assert!(
            e.to_string()
                .contains(&format!("tensor '{name}' has type {name}")),
            "{e}"
        );
    }
    for name in ["Q4_0", "Q4_1", "Q4_K", "F16"] {
        let e = f.int8_groups(name).expect_err(name);
        assert!(matches!(e, GgufError::UnsupportedType { .. }), "{name}");
    }
    assert!(matches!(
        f.int4_groups("zz"),
        Err(GgufError::MissingTensor { .. })
    ));
}

/// The visitors hand over the same groups, in the same order, as the whole-tensor accessors.
#[test]
fn visited_groups_equal_the_whole_tensor_groups() {
    let f = file();
    for name in ["Q4_0", "Q4_1", "Q4_K"] {
        let whole = f.int4_groups(name).expect(name);
        let (mut codes, mut scales, mut mins) = (Vec::new(), Vec::new(), Vec::new());
        f.for_each_int4_group(name, |c, s, m| {
            assert_eq!(c.len(), whole.group_size, "{name}");
            codes.extend_from_slice(c);
            scales.push(s);
            mins.push(m);
        })
        .expect(name);
        assert_eq!(codes, whole.codes, "{name}");
        assert_bits_equal(name, &scales, &whole.scales);
        assert_bits_equal(name, &mins, &whole.mins);
    }
    for name in ["Q8_0", "Q6_K"] {
        let whole = f.int8_groups(name).expect(name);
        let (mut codes, mut scales) = (Vec::new(), Vec::new());
        f.for_each_int8_group(name, |c, s| {
            assert_eq!(c.len(), whole.group_size, "{name}");
            codes.extend_from_slice(c);
            scales.push(s);
        })
        .expect(name);
        assert_eq!(codes, whole.codes, "{name}");
        assert_bits_equal(name, &scales, &whole.scales);
    }
    let e = f
        .for_each_int4_group("Q6_K", |_, _, _| {})
        .expect_err("Q6_K");
    assert!(matches!(e, GgufError::UnsupportedType { .. }), "{e}");
    let e = f.for_each_int8_group("Q4_K", |_, _| {}).expect_err("Q4_K");
    assert!(matches!(e, GgufError::UnsupportedType { .. }), "{e}");
}

/// Block by block, the f32 visitor hands over exactly what `dequantize` returns, for the
/// quantized types (a block each) and the plain ones (runs of values).
#[test]
fn dequantized_blocks_equal_dequantize() {
    let f = file();
    for name in ["Q4_0", "Q4_1", "Q8_0", "Q4_K", "Q6_K", "F16"] {
        let mut got = Vec::new();
        let mut sizes = Vec::new();
        f.for_each_dequantized_block(name, |values| {
            sizes.push(values.len());
            got.extend_from_slice(values);
        })
        .expect(name);
        assert_bits_equal(name, &got, &f.dequantize(name).expect(name));
        let block = match name {
            "Q4_K" | "Q6_K" => 256,
            "F16" => 64, // the whole 2 x 32 tensor in one run
            _ => 32,
        };
        assert!(
            sizes.iter().all(|&n| n == block),
            "{name}: runs of {sizes:?}"
        );
    }
}
