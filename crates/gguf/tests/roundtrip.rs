//! Round trips through the writer: every metadata value kind, every tensor
//! type the writer produces, read back by `GgufFile::open` from a real file.

mod common;

use beamline_gguf::write::GgufWriter;
use beamline_gguf::{GgmlType, GgufError, GgufFile, Value};
use common::{Rng, TempFile};

fn all_kinds() -> Vec<(&'static str, Value)> {
    vec![
        ("k.u8", Value::U8(200)),
        ("k.i8", Value::I8(-100)),
        ("k.u16", Value::U16(60_000)),
        ("k.i16", Value::I16(-30_000)),
        ("k.u32", Value::U32(4_000_000_000)),
        ("k.i32", Value::I32(-2_000_000_000)),
        ("k.u64", Value::U64(u64::MAX - 1)),
        ("k.i64", Value::I64(i64::MIN + 1)),
        ("k.f32", Value::F32(1e-5)),
        ("k.f64", Value::F64(-1.25e300)),
        ("k.bool", Value::Bool(true)),
        ("k.string", Value::String("héllo {{ x }}\n".into())),
        ("k.empty_string", Value::String(String::new())),
        (
            "k.strings",
            Value::Array(vec![
                Value::String("a".into()),
                Value::String("ĠThe".into()),
            ]),
        ),
        ("k.ints", Value::Array(vec![Value::I32(-1), Value::I32(7)])),
        (
            "k.floats",
            Value::Array(vec![Value::F32(0.5), Value::F32(-2.0)]),
        ),
        (
            "k.u64s",
            Value::Array(vec![Value::U64(1), Value::U64(u64::MAX)]),
        ),
        (
            "k.bools",
            Value::Array(vec![Value::Bool(false), Value::Bool(true)]),
        ),
        ("k.empty", Value::Array(vec![])),
        (
            "k.nested",
            Value::Array(vec![
                Value::Array(vec![Value::U8(1)]),
                Value::Array(vec![Value::String("x".into())]),
            ]),
        ),
    ]
}

#[test]
fn every_value_kind_round_trips_through_a_file() {
    let mut w = GgufWriter::new();
    for (k, v) in all_kinds() {
        w.add_metadata(k, v).expect("homogeneous");
    }
    let tmp = TempFile::with_bytes(&w.to_bytes());
    let f = GgufFile::open(tmp.path()).expect("open");
    assert_eq!(f.version(), 3);
    assert_eq!(f.metadata().len(), all_kinds().len());
    for (k, v) in all_kinds() {
        assert_eq!(f.get(k), Some(&v), "key {k}");
    }
    assert_eq!(f.path(), tmp.path());
    assert!(f.tensors().is_empty());
}

#[test]
fn typed_getters_convert_and_name_file_and_key_on_error() {
    let mut w = GgufWriter::new();
    for (k, v) in all_kinds() {
        w.add_metadata(k, v).expect("homogeneous");
    }
    w.add_metadata("general.architecture", Value::String("llama".into()))
        .expect("string");
    let f = GgufFile::from_bytes("mem.gguf", w.to_bytes()).expect("parse");
    assert_eq!(f.architecture().ok(), Some("llama"));
    assert_eq!(f.get_u64("k.u8").ok(), Some(200));
    assert_eq!(f.get_u64("k.u32").ok(), Some(4_000_000_000));
    assert_eq!(f.get_f64("k.i16").ok(), Some(-30_000.0));
    assert!((f.get_f64("k.f32").unwrap_or(0.0) - 1e-5).abs() < 1e-12);
    assert_eq!(f.get_str("k.string").ok(), Some("héllo {{ x }}\n"));
    assert_eq!(f.get_bool("k.bool").ok(), Some(true));
    assert_eq!(f.get_str_array("k.strings").ok(), Some(vec!["a", "ĠThe"]));
    assert_eq!(f.get_i64_array("k.ints").ok(), Some(vec![-1, 7]));
    assert_eq!(f.get_f64_array("k.floats").ok(), Some(vec![0.5, -2.0]));
    assert_eq!(f.get_str_array("k.empty").ok(), Some(vec![]));

    let missing = f.get_u64("llama.block_count").expect_err("missing");
    assert!(matches!(missing, GgufError::MissingKey { .. }));
    assert_eq!(
        missing.to_string(),
        "mem.gguf: metadata key 'llama.block_count' is missing"
    );

    let negative = f.get_u64("k.i8").expect_err("negative");
    assert!(matches!(negative, GgufError::WrongType { .. }));
    assert!(negative
        .to_string()
        .starts_with("mem.gguf: metadata key 'k.i8' should be"));
    assert!(matches!(
        f.get_str("k.u8"),
        Err(GgufError::WrongType { .. })
    ));
    assert!(matches!(
        f.get_f64("k.string"),
        Err(GgufError::WrongType { .. })
    ));
    assert!(matches!(
        f.get_str_array("k.ints"),
        Err(GgufError::WrongType { .. })
    ));
    assert!(matches!(
        f.get_i64_array("k.u64s"),
        Err(GgufError::WrongType { .. })
    ));
    assert!(matches!(
        f.get_f64_array("k.u8"),
        Err(GgufError::WrongType { .. })
    ));

    let t = f.tensor("nope").expect_err("missing tensor");
    assert_eq!(t.to_string(), "mem.gguf: no tensor named 'nope'");
}

#[test]
fn mixed_arrays_are_refused_by_the_writer() {
    let mut w = GgufWriter::new();
    let mixed = Value::Array(vec![Value::U8(1), Value::I8(1)]);
    assert!(w.add_metadata("k", mixed).is_err());
}

/// Largest reconstruction error allowed per block for each writer type,
/// from the quantizer's rules (see write::quantize): half a step, a full
/// step for Q4_0's clamped extreme, plus f16 rounding of scale and min.
fn max_error(ty: GgmlType, block: &[f32]) -> f32 {
    let amax = block.iter().fold(0f32, |a, &x| a.max(x.abs()));
    let lo = block.iter().fold(f32::INFINITY, |a, &x| a.min(x));
    let hi = block.iter().fold(f32::NEG_INFINITY, |a, &x| a.max(x));
    let f16_rel = 1.0 / 1024.0;
    match ty {
        GgmlType::F32 => 0.0,
        GgmlType::F16 => amax * f16_rel / 2.0 + 6e-8,
        GgmlType::BF16 => amax / 256.0,
        GgmlType::Q8_0 => amax / 127.0 * 0.5 + amax * f16_rel,
        GgmlType::Q4_0 => amax / 8.0 + amax * f16_rel,
        GgmlType::Q4_1 => (hi - lo) / 15.0 * 0.5 + (hi - lo) * f16_rel + lo.abs() * f16_rel,
        _ => unreachable!("not a writer type"),
    }
}

#[test]
fn every_writer_tensor_type_round_trips_within_its_error() {
    let types = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
    ];
    let mut rng = Rng::new(7);
    let shape = [3usize, 5, 64];
    let n: usize = shape.iter().product();
    let sources: Vec<Vec<f32>> = types.iter().map(|_| rng.weights(n)).collect();
    let mut w = GgufWriter::new();
    for (ty, src) in types.iter().zip(&sources) {
        w.add_tensor(&format!("w.{}", ty.name()), &shape, src, *ty)
            .expect("add");
    }
    let tmp = TempFile::with_bytes(&w.to_bytes());
    let f = GgufFile::open(tmp.path()).expect("open");
    assert_eq!(f.tensors().len(), types.len());
    for (ty, src) in types.iter().zip(&sources) {
        let name = format!("w.{}", ty.name());
        let info = f.tensor(&name).expect("tensor");
        assert_eq!(info.ggml_type, *ty);
        assert_eq!(info.shape(), shape.to_vec());
        assert_eq!(info.dims, vec![64, 5, 3]);
        assert_eq!(info.offset % 32, 0);
        assert_eq!(
            f.tensor_bytes(info).len(),
            n / ty.block_size() * ty.type_size()
        );
        let got = f.dequantize(&name).expect("dequantize");
        assert_eq!(got.len(), n);
        let mut worst = 0f32;
        for (b, (src, got)) in src.chunks(32).zip(got.chunks(32)).enumerate() {
            let tol = max_error(*ty, src);
            for (x, y) in src.iter().zip(got) {
                let e = (x - y).abs();
                assert!(e <= tol, "{name} block {b}: |{x} - {y}| = {e} > {tol}");
                worst = worst.max(e / tol.max(f32::MIN_POSITIVE));
            }
        }
        // The quantizers must actually quantize: a lossy type that came
        // back exact would mean the test checks nothing.
        if *ty != GgmlType::F32 {
            assert!(got != *src, "{name} came back bit-exact");
        } else {
            assert_eq!(got, *src);
        }
    }
}

/// The K-quant writers (super-blocks of 256) reconstruct every value within half a step of its
/// sub-block, where a step may exceed the sub-block's own by one unit of the super-block's
/// 6-bit (Q4_K) or 8-bit (Q6_K) scale grid, and Q4_K's offset by half a unit of its min grid.
#[test]
fn k_quant_writers_round_trip_within_their_error() {
    let mut rng = Rng::new(11);
    let shape = [3usize, 512];
    let n = 3 * 512;
    let mut src = rng.weights(n);
    // A super-block of one sign and one of constants, beside the random ones.
    src[256..512].iter_mut().for_each(|x| *x = x.abs() + 0.01);
    src[512..768].iter_mut().for_each(|x| *x = -0.125);
    for ty in [GgmlType::Q4_K, GgmlType::Q6_K] {
        let mut w = GgufWriter::new();
        w.add_tensor("w", &shape, &src, ty).expect("add");
        let f = GgufFile::from_bytes("k.gguf", w.to_bytes()).expect("parse");
        assert_eq!(
            f.tensor_bytes(f.tensor("w").expect("w")).len(),
            n / 256 * ty.type_size()
        );
        let got = f.dequantize("w").expect("dequantize");
        assert!(got != src, "{ty:?} came back bit-exact");
        for (b, (src, got)) in src.chunks(256).zip(got.chunks(256)).enumerate() {
            let sub = if ty == GgmlType::Q4_K { 32 } else { 16 };
            let step = |s: &[f32]| {
                let lo = s.iter().fold(0f32, |a, &x| a.min(x));
                let hi = s.iter().fold(f32::NEG_INFINITY, |a, &x| a.max(x));
                let amax = s.iter().fold(0f32, |a, &x| a.max(x.abs()));
                if ty == GgmlType::Q4_K {
                    ((hi - lo) / 15.0, -lo)
                } else {
                    (amax / 31.0, 0.0)
                }
            };
            let (max_step, max_offset) = src
                .chunks(sub)
                .map(step)
                .fold((0f32, 0f32), |(a, b), (s, o)| (a.max(s), b.max(o)));
            let grid = if ty == GgmlType::Q4_K { 63.0 } else { 127.0 };
            for (g, (s, y)) in src.chunks(sub).zip(got.chunks(sub)).enumerate() {
                let own = step(s).0;
                let tol =
                    (own + max_step / grid) * 0.5 * 1.002 + max_offset / 63.0 * 0.5 * 1.002 + 1e-7;
                for (x, y) in s.iter().zip(y) {
                    let e = (x - y).abs();
                    assert!(
                        e <= tol,
                        "{ty:?} super-block {b} group {g}: |{x} - {y}| = {e} > {tol}"
                    );
                }
            }
        }
    }
}

#[test]
fn version_2_and_custom_alignment_are_read() {
    let mut w = GgufWriter::new();
    w.set_version(2).set_alignment(64);
    w.add_tensor("a", &[32], &[1.0; 32], GgmlType::Q8_0)
        .expect("a");
    w.add_tensor("b", &[3], &[1.0, 2.0, 3.0], GgmlType::F32)
        .expect("b");
    w.add_tensor("c", &[32], &[0.25; 32], GgmlType::Q4_1)
        .expect("c");
    let f = GgufFile::from_bytes("v2.gguf", w.to_bytes()).expect("parse");
    assert_eq!((f.version(), f.alignment()), (2, 64));
    assert_eq!(f.data_offset() % 64, 0);
    for t in f.tensors() {
        assert_eq!(t.offset % 64, 0, "{}", t.name);
    }
    assert_eq!(f.dequantize("b").ok(), Some(vec![1.0, 2.0, 3.0]));
    let a = f.dequantize("a").expect("a");
    assert!(a.iter().all(|x| (x - 1.0).abs() < 1e-3), "{a:?}");
    assert_eq!(f.dequantize("c").ok(), Some(vec![0.25; 32]));
    assert_eq!(f.get_u64("general.alignment").ok(), Some(64));
}

#[test]
fn writer_rejects_bad_tensors() {
    let mut w = GgufWriter::new();
    assert!(w
        .add_tensor("x", &[2, 3], &[0.0; 5], GgmlType::F32)
        .is_err());
    assert!(w
        .add_tensor("x", &[2, 16], &[0.0; 32], GgmlType::Q8_0)
        .is_err());
    assert!(w
        .add_tensor("x", &[256], &[0.0; 256], GgmlType::Q5_K)
        .is_err());
    assert!(w
        .add_tensor("x", &[2, 128], &[0.0; 256], GgmlType::Q4_K)
        .is_err());
}

#[test]
fn gguf_file_can_be_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<GgufFile>();
    assert_send_sync::<GgufError>();
}
