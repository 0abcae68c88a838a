//! Simple reference quantizers for the writer (F16, BF16, Q8_0, Q4_0,
//! Q4_1).
//!
//! They exist so that tests can build small quantized models with a known
//! source; they are round-to-nearest and make no attempt at the error
//! minimization of llama.cpp's quantizers. Codes are computed against the
//! f16-rounded scale that is actually stored, which keeps the
//! reconstruction error within half a quantization step (one step for
//! Q4_0's clamped extreme).

use half::{bf16, f16};

pub(crate) fn f16_bytes(data: &[f32], out: &mut Vec<u8>) {
    for &x in data {
        out.extend_from_slice(&f16::from_f32(x).to_bits().to_le_bytes());
    }
}

pub(crate) fn bf16_bytes(data: &[f32], out: &mut Vec<u8>) {
    for &x in data {
        out.extend_from_slice(&bf16::from_f32(x).to_bits().to_le_bytes());
    }
}

pub(crate) fn f32_bytes(data: &[f32], out: &mut Vec<u8>) {
    for &x in data {
        out.extend_from_slice(&x.to_le_bytes());
    }
}

fn push_f16(out: &mut Vec<u8>, x: f32) -> f32 {
    let h = f16::from_f32(x);
    out.extend_from_slice(&h.to_bits().to_le_bytes());
    h.to_f32()
}

fn inverse(d: f32) -> f32 {
    if d == 0.0 {
        0.0
    } else {
        1.0 / d
    }
}

/// Packs 32 codes in ggml's order: byte `j` holds element `j` in its low
/// nibble and element `j + 16` in its high nibble.
fn push_nibbles(out: &mut Vec<u8>, codes: &[u8; 32]) {
    for j in 0..16 {
        out.push(codes[j] | (codes[j + 16] << 4));
    }
}

/// Q8_0: `d = amax / 127`, `q = round(x / d)`.
pub(crate) fn q8_0_bytes(data: &[f32], out: &mut Vec<u8>) {
    for block in data.chunks_exact(32) {
        let amax = block.iter().fold(0f32, |a, &x| a.max(x.abs()));
        let d = push_f16(out, amax / 127.0);
        let id = inverse(d);
        for &x in block {
            out.push((x * id).round().clamp(-127.0, 127.0) as i8 as u8);
        }
    }
}

/// Q4_0: the element of largest magnitude `m` maps to code 0, `d = m / -8`,
/// `q = round(x / d) + 8` clamped to 0..=15.
pub(crate) fn q4_0_bytes(data: &[f32], out: &mut Vec<u8>) {
    for block in data.chunks_exact(32) {
        let m = block
            .iter()
            .fold(0f32, |m, &x| if x.abs() > m.abs() { x } else { m });
        let d = push_f16(out, m / -8.0);
        let id = inverse(d);
        let mut codes = [0u8; 32];
        for (c, &x) in codes.iter_mut().zip(block) {
            *c = ((x * id).round() + 8.0).clamp(0.0, 15.0) as u8;
        }
        push_nibbles(out, &codes);
    }
}

/// Q4_1: `d = (max - min) / 15`, `m = min`, `q = round((x - m) / d)`.
pub(crate) fn q4_1_bytes(data: &[f32], out: &mut Vec<u8>) {
    for block in data.chunks_exact(32) {
        let lo = block.iter().fold(f32::INFINITY, |a, &x| a.min(x));
        let hi = block.iter().fold(f32::NEG_INFINITY, |a, &x| a.max(x));
        let d = push_f16(out, (hi - lo) / 15.0);
        let m = push_f16(out, lo);
        let id = inverse(d);
        let mut codes = [0u8; 32];
        for (c, &x) in codes.iter_mut().zip(block) {
            *c = ((x - m) * id).round().clamp(0.0, 15.0) as u8;
        }
        push_nibbles(out, &codes);
    }
}
