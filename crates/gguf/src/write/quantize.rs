//! Simple reference quantizers for the writer (F16, BF16, Q8_0, Q4_0,
//! Q4_1, Q4_K, Q6_K).
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

/// The smallest half float at least `x` (`x >= 0`), so that a scale derived from it never
/// falls short of the range it must cover.
fn f16_at_least(x: f32) -> f16 {
    let h = f16::from_f32(x);
    if h.to_f32() >= x {
        h
    } else {
        f16::from_bits(h.to_bits() + 1)
    }
}

/// Q4_K: super-blocks of 256 with eight 32-wide sub-blocks, `w = d sc_j q - dmin m_j`. Each
/// sub-block's step `(max - min) / 15` and offset `-min` (min taken at most 0) become 6-bit
/// multiples of the super-block's `d` and `dmin` (the step rounded up, so the codes cover the
/// range); codes are then rounded against the stored values.
pub(crate) fn q4_k_bytes(data: &[f32], out: &mut Vec<u8>) {
    for block in data.chunks_exact(256) {
        let mut steps = [0f32; 8];
        let mut offsets = [0f32; 8];
        for (j, sub) in block.chunks_exact(32).enumerate() {
            let lo = sub.iter().fold(0f32, |a, &x| a.min(x));
            let hi = sub.iter().fold(f32::NEG_INFINITY, |a, &x| a.max(x));
            steps[j] = (hi - lo) / 15.0;
            offsets[j] = -lo;
        }
        let d = f16_at_least(steps.iter().fold(0f32, |a, &s| a.max(s)) / 63.0);
        let dmin = f16_at_least(offsets.iter().fold(0f32, |a, &m| a.max(m)) / 63.0);
        let (df, dminf) = (d.to_f32(), dmin.to_f32());
        out.extend_from_slice(&d.to_bits().to_le_bytes());
        out.extend_from_slice(&dmin.to_bits().to_le_bytes());
        let mut sc = [0u8; 8];
        let mut m = [0u8; 8];
        for j in 0..8 {
            sc[j] = (steps[j] * inverse(df)).ceil().clamp(0.0, 63.0) as u8;
            m[j] = (offsets[j] * inverse(dminf)).round().clamp(0.0, 63.0) as u8;
        }
        let mut packed = [0u8; 12];
        for j in 0..4 {
            packed[j] = sc[j] | ((sc[j + 4] >> 4) << 6);
            packed[j + 4] = m[j] | ((m[j + 4] >> 4) << 6);
            packed[j + 8] = (sc[j + 4] & 0x0f) | ((m[j + 4] & 0x0f) << 4);
        }
        out.extend_from_slice(&packed);
        let mut codes = [0u8; 256];
        for (j, (sub, c)) in block
            .chunks_exact(32)
            .zip(codes.chunks_exact_mut(32))
            .enumerate()
        {
            let inv = inverse(df * f32::from(sc[j]));
            let offset = dminf * f32::from(m[j]);
            for (c, &x) in c.iter_mut().zip(sub) {
                *c = ((x + offset) * inv).round().clamp(0.0, 15.0) as u8;
            }
        }
        // Each 64 elements share 32 bytes: the first 32 in the low nibbles, the next 32 high.
        for chunk in codes.chunks_exact(64) {
            for l in 0..32 {
                out.push(chunk[l] | (chunk[l + 32] << 4));
            }
        }
    }
}

/// Q6_K: super-blocks of 256 with sixteen 16-wide groups, `w = d sc_g q`, `q` in -32..=31.
/// Each group's step `max|x| / 31` becomes a multiple (rounded up) of the super-block's `d`
/// in a signed byte; codes are rounded against the stored values. The layout (4 low bits in
/// `ql`, 2 high bits in `qh`, then the group scales and `d`) is ggml's.
pub(crate) fn q6_k_bytes(data: &[f32], out: &mut Vec<u8>) {
    for block in data.chunks_exact(256) {
        let mut steps = [0f32; 16];
        for (g, group) in block.chunks_exact(16).enumerate() {
            steps[g] = group.iter().fold(0f32, |a, &x| a.max(x.abs())) / 31.0;
        }
        let d = f16_at_least(steps.iter().fold(0f32, |a, &s| a.max(s)) / 127.0);
        let df = d.to_f32();
        let sc: [i8; 16] =
            std::array::from_fn(|g| (steps[g] * inverse(df)).ceil().clamp(0.0, 127.0) as i8);
        let mut v = [0u8; 256];
        for (i, (x, v)) in block.iter().zip(v.iter_mut()).enumerate() {
            let q = (x * inverse(df * f32::from(sc[i / 16])))
                .round()
                .clamp(-32.0, 31.0);
            *v = (q as i32 + 32) as u8;
        }
        let mut ql = [0u8; 128];
        let mut qh = [0u8; 64];
        for half in 0..2 {
            let v = &v[128 * half..128 * half + 128];
            let (ql, qh) = (
                &mut ql[64 * half..64 * half + 64],
                &mut qh[32 * half..32 * half + 32],
            );
            for l in 0..32 {
                ql[l] = (v[l] & 0x0f) | ((v[l + 64] & 0x0f) << 4);
                ql[l + 32] = (v[l + 32] & 0x0f) | ((v[l + 96] & 0x0f) << 4);
                qh[l] = (v[l] >> 4)
                    | ((v[l + 32] >> 4) << 2)
                    | ((v[l + 64] >> 4) << 4)
                    | ((v[l + 96] >> 4) << 6);
            }
        }
        out.extend_from_slice(&ql);
        out.extend_from_slice(&qh);
        out.extend(sc.iter().map(|&s| s as u8));
        out.extend_from_slice(&d.to_bits().to_le_bytes());
    }
}
