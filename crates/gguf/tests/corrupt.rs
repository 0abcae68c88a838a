//! Corrupt and hostile files: each defect gives its own error variant, with
//! the file (and key or tensor) named, and nothing ever panics.

mod common;

use beamline_gguf::write::GgufWriter;
use beamline_gguf::{GgmlType, GgufError, GgufFile, Value};
use common::{small_file, Rng, TempFile};

// Layout of `small_file()`: 24-byte header, the key "general.architecture"
// (length at 24, string value "llama"), then the tensor info of "t" (name
// length at 69, dims at 82 and 90, type at 98, offset at 102), header end at
// 110, data section at 128, 32 bytes of data.
const KEY_LEN_AT: usize = 24;
const TENSOR_TYPE_AT: usize = 98;
const TENSOR_OFFSET_AT: usize = 102;
const HEADER_END: usize = 110;
const FILE_LEN: usize = 160;

fn parse(bytes: Vec<u8>) -> Result<GgufFile, GgufError> {
    GgufFile::from_bytes("bad.gguf", bytes)
}

fn patch_u64(bytes: &mut [u8], at: usize, v: u64) {
    bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn patch_u32(bytes: &mut [u8], at: usize, v: u32) {
    bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

#[test]
fn layout_assumed_by_these_tests_holds() {
    let b = small_file();
    assert_eq!(b.len(), FILE_LEN);
    assert_eq!(&b[KEY_LEN_AT..KEY_LEN_AT + 8], &20u64.to_le_bytes());
    assert_eq!(&b[TENSOR_TYPE_AT..TENSOR_TYPE_AT + 4], &0u32.to_le_bytes());
    let f = parse(b).expect("valid");
    assert_eq!(f.data_offset(), 128);
    assert_eq!(
        f.dequantize("t").ok(),
        Some(vec![1., 2., 3., 4., 5., 6., 7., 8.])
    );
}

#[test]
fn bad_magic_and_empty_files_are_not_gguf() {
    let mut b = small_file();
    b[0] = b'g';
    let e = parse(b).expect_err("bad magic");
    assert!(matches!(e, GgufError::NotGguf { .. }));
    assert!(e.to_string().starts_with("bad.gguf: not a GGUF file"));
    let empty = TempFile::with_bytes(&[]);
    assert!(matches!(
        GgufFile::open(empty.path()),
        Err(GgufError::NotGguf { .. })
    ));
}

#[test]
fn every_truncation_is_an_error_of_the_right_kind() {
    let full = small_file();
    for len in 0..full.len() {
        let e = parse(full[..len].to_vec()).expect_err("truncated file accepted");
        match len {
            0..=3 => assert!(matches!(e, GgufError::NotGguf { .. }), "{len}: {e}"),
            4..HEADER_END => assert!(matches!(e, GgufError::Truncated { .. }), "{len}: {e}"),
            _ => assert!(
                matches!(e, GgufError::TensorOutOfBounds { .. }),
                "{len}: {e}"
            ),
        }
    }
    // The same through a real file and the mmap path.
    let tmp = TempFile::with_bytes(&full[..60]);
    let e = GgufFile::open(tmp.path()).expect_err("truncated");
    assert!(matches!(e, GgufError::Truncated { .. }));
    assert!(e.to_string().starts_with(&tmp.path().display().to_string()));
}

#[test]
fn huge_string_length_is_truncated_not_allocated() {
    let mut b = small_file();
    patch_u64(&mut b, KEY_LEN_AT, 1 << 60);
    let e = parse(b).expect_err("huge string");
    assert!(matches!(e, GgufError::Truncated { .. }), "{e}");
    assert!(e.to_string().contains("key of metadata entry #0"), "{e}");
}

#[test]
fn huge_array_count_is_truncated_not_allocated() {
    let mut w = GgufWriter::new();
    w.add_metadata("a", Value::Array(vec![Value::U32(1), Value::U32(2)]))
        .expect("array");
    let good = w.to_bytes();
    // key length 24..32, "a" at 32, value type 33..37, element type 37..41,
    // count 41..49; the 7 bytes of padding after the header leave room for
    // one more element, not three.
    assert_eq!(&good[41..49], &2u64.to_le_bytes());
    for count in [1 << 62, u64::MAX, 5] {
        let mut b = good.clone();
        patch_u64(&mut b, 41, count);
        let e = parse(b).expect_err("huge array");
        assert!(matches!(e, GgufError::Truncated { .. }), "{count}: {e}");
        assert!(e.to_string().contains("array 'a'"), "{e}");
    }
}

#[test]
fn huge_tensor_and_metadata_counts_are_truncated() {
    for at in [8, 16] {
        let mut b = small_file();
        patch_u64(&mut b, at, u64::MAX);
        assert!(
            matches!(parse(b), Err(GgufError::Truncated { .. })),
            "count at {at}"
        );
    }
}

#[test]
fn tensor_past_the_end_is_out_of_bounds() {
    let mut w = GgufWriter::new();
    w.add_raw_tensor("blk.0.attn_q.weight", &[64], GgmlType::F32, vec![0; 16]);
    let e = parse(w.to_bytes()).expect_err("short data");
    assert!(matches!(e, GgufError::TensorOutOfBounds { .. }), "{e}");
    assert!(e
        .to_string()
        .starts_with("bad.gguf: tensor 'blk.0.attn_q.weight' lies outside"));

    // An offset so large that offset + length overflows u64.
    let mut b = small_file();
    patch_u64(&mut b, TENSOR_OFFSET_AT, u64::MAX - 31);
    assert!(matches!(parse(b), Err(GgufError::TensorOutOfBounds { .. })));
}

#[test]
fn misaligned_offset_is_reported() {
    let mut b = small_file();
    patch_u64(&mut b, TENSOR_OFFSET_AT, 4);
    assert!(matches!(
        parse(b),
        Err(GgufError::Misaligned {
            offset: 4,
            alignment: 32,
            ..
        })
    ));
}

#[test]
fn unsupported_type_is_reported_with_file_tensor_and_type() {
    let mut w = GgufWriter::new();
    w.add_raw_tensor(
        "blk.3.attn_q.weight",
        &[2, 256],
        GgmlType::Q3_K,
        vec![0; 2 * 110],
    );
    let tmp = TempFile::with_bytes(&w.to_bytes());
    let f = GgufFile::from_bytes("model.gguf", w.to_bytes()).expect("Q3_K files open");
    let e = f.dequantize("blk.3.attn_q.weight").expect_err("Q3_K");
    assert!(matches!(e, GgufError::UnsupportedType { .. }));
    assert_eq!(
        e.to_string(),
        "model.gguf: tensor 'blk.3.attn_q.weight' has type Q3_K, which beamline does not \
         support (supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K)"
    );
    // Sizes are still known, for the scheduler.
    let f = GgufFile::open(tmp.path()).expect("open");
    assert_eq!(f.tensors()[0].byte_len(), 2 * 110);
}

#[test]
fn unknown_type_id_is_rejected_at_open() {
    let mut b = small_file();
    patch_u32(&mut b, TENSOR_TYPE_AT, 1000);
    let e = parse(b).expect_err("unknown type");
    assert!(
        matches!(e, GgufError::UnknownType { type_id: 1000, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("tensor 't'"));
}

#[test]
fn bad_shapes_are_rejected() {
    let cases: Vec<(&str, Vec<usize>, GgmlType)> = vec![
        ("row not whole blocks", vec![2, 16], GgmlType::Q8_0),
        ("overflowing dims", vec![1 << 40, 1 << 40], GgmlType::F32),
        (
            "overflowing dims 2",
            vec![1 << 31, 1 << 31, 1 << 31],
            GgmlType::F32,
        ),
    ];
    for (what, shape, ty) in cases {
        let mut w = GgufWriter::new();
        w.add_raw_tensor("x", &shape, ty, vec![0; 64]);
        let e = parse(w.to_bytes()).expect_err(what);
        assert!(matches!(e, GgufError::BadShape { .. }), "{what}: {e}");
    }
    let mut w = GgufWriter::new();
    w.add_raw_tensor("x", &[1, 1, 1, 1, 1], GgmlType::F32, vec![0; 4]);
    assert!(matches!(
        parse(w.to_bytes()),
        Err(GgufError::Corrupt { .. })
    ));
}

#[test]
fn unsupported_versions_are_rejected() {
    for v in [0, 1, 4, 0x0300_0000] {
        let mut b = small_file();
        patch_u32(&mut b, 4, v);
        let e = parse(b).expect_err("version");
        assert!(matches!(e, GgufError::UnsupportedVersion { version, .. } if version == v));
        assert_eq!(
            e.to_string().contains("big-endian"),
            v == 0x0300_0000,
            "{e}"
        );
    }
}

#[test]
fn structural_defects_are_corrupt() {
    // Duplicate key: write "a" and "b", then rename "b" to "a".
    let mut w = GgufWriter::new();
    w.add_metadata("a", Value::U8(1)).expect("a");
    w.add_metadata("b", Value::U8(2)).expect("b");
    let mut b = w.to_bytes();
    // "a": 24..32 length, 32 key, 33..37 type, 37 value; "b": 38..46, key at 46.
    assert_eq!(b[46], b'b');
    b[46] = b'a';
    assert!(matches!(parse(b.clone()), Err(GgufError::Corrupt { .. })));
    // Invalid UTF-8 in a key.
    b[46] = 0xff;
    assert!(matches!(parse(b.clone()), Err(GgufError::Corrupt { .. })));
    // Unknown value type.
    b[46] = b'b';
    patch_u32(&mut b, 47, 77);
    assert!(matches!(parse(b), Err(GgufError::Corrupt { .. })));

    // Duplicate tensor names.
    let mut w = GgufWriter::new();
    w.add_tensor("t", &[1], &[1.0], GgmlType::F32).expect("t");
    w.add_tensor("t", &[1], &[1.0], GgmlType::F32).expect("t");
    assert!(matches!(
        parse(w.to_bytes()),
        Err(GgufError::Corrupt { .. })
    ));
}

#[test]
fn bad_alignment_values_are_rejected() {
    let mut w = GgufWriter::new();
    w.add_metadata("general.alignment", Value::U32(24))
        .expect("a");
    assert!(matches!(
        parse(w.to_bytes()),
        Err(GgufError::Corrupt { .. })
    ));
    let mut w = GgufWriter::new();
    w.add_metadata("general.alignment", Value::U32(0))
        .expect("a");
    assert!(matches!(
        parse(w.to_bytes()),
        Err(GgufError::Corrupt { .. })
    ));
    let mut w = GgufWriter::new();
    w.add_metadata("general.alignment", Value::String("32".into()))
        .expect("a");
    assert!(matches!(
        parse(w.to_bytes()),
        Err(GgufError::WrongType { .. })
    ));
}

#[test]
fn missing_file_is_an_io_error_naming_it() {
    let e =
        GgufFile::open(std::path::Path::new("/nonexistent/beamline/x.gguf")).expect_err("missing");
    assert!(matches!(e, GgufError::Io { .. }));
    assert!(e
        .to_string()
        .starts_with("/nonexistent/beamline/x.gguf: cannot read file"));
}

/// Random byte corruption of a file with every decoded type: parsing and,
/// where parsing succeeds, every decoding path must return, not panic.
#[test]
fn random_corruption_never_panics() {
    let mut rng = Rng::new(2024);
    let mut w = GgufWriter::new();
    w.add_metadata("s", Value::Array(vec![Value::String("tok".into()); 3]))
        .expect("s");
    w.add_metadata("n", Value::Array(vec![Value::Array(vec![Value::I64(-1)])]))
        .expect("n");
    for ty in [
        GgmlType::F16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q8_0,
    ] {
        w.add_tensor(&ty.name(), &[2, 32], &rng.weights(64), ty)
            .expect("t");
    }
    w.add_raw_tensor("Q4_K", &[256], GgmlType::Q4_K, vec![0x55; 144]);
    w.add_raw_tensor("Q6_K", &[256], GgmlType::Q6_K, vec![0xaa; 210]);
    let good = w.to_bytes();
    let mut parsed = 0;
    for round in 0..3000 {
        let mut b = good.clone();
        let flips = 1 + (rng.next_u64() % 4) as usize;
        for _ in 0..flips {
            let at = (rng.next_u64() as usize) % b.len();
            b[at] = if round % 2 == 0 {
                rng.next_u64() as u8
            } else {
                0xff
            };
        }
        if round % 7 == 0 {
            let cut = (rng.next_u64() as usize) % b.len();
            b.truncate(cut);
        }
        if let Ok(f) = parse(b) {
            parsed += 1;
            for t in f.tensors() {
                let _ = f.dequantize(&t.name);
                let _ = f.int4_groups(&t.name);
                let _ = f.int8_groups(&t.name);
                assert_eq!(f.tensor_bytes(t).len(), t.byte_len());
            }
        }
    }
    // Flips in tensor data leave the file valid: make sure those paths ran.
    assert!(parsed > 100, "only {parsed} corrupted files parsed");
}
