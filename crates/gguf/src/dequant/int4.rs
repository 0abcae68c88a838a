//! Block decoders for the 4-bit formats Q4_0, Q4_1 and Q4_K.
//!
//! Each decoder turns one block into 4-bit codes plus one affine
//! `(scale, min)` pair per group, so that `w = scale * q + min`. Both
//! [`crate::GgufFile::dequantize`] and [`crate::GgufFile::int4_groups`] go
//! through these decoders, which is what makes the two agree bit for bit.
//! The arithmetic matches ggml's reference dequantization exactly: for
//! Q4_0, `d * q + (-8 d)` equals `d * (q - 8)` because both products are
//! exact in f32 (an f16 scale times a 4-bit code).

use half::f16;

/// Decodes one block into codes, per-group scales and per-group mins.
pub(crate) type Int4Decode = fn(&[u8], &mut [u8], &mut [f32], &mut [f32]);

/// Geometry and decoder of one 4-bit format.
pub(crate) struct Int4Format {
    pub block_elems: usize,
    pub block_bytes: usize,
    pub group: usize,
    /// Decodes one block: `codes` has `block_elems` entries, `scales` and
    /// `mins` have `block_elems / group`.
    pub decode: Int4Decode,
}

pub(crate) const Q4_0: Int4Format = Int4Format {
    block_elems: 32,
    block_bytes: 18,
    group: 32,
    decode: decode_q4_0,
};

pub(crate) const Q4_1: Int4Format = Int4Format {
    block_elems: 32,
    block_bytes: 20,
    group: 32,
    decode: decode_q4_1,
};

pub(crate) const Q4_K: Int4Format = Int4Format {
    block_elems: 256,
    block_bytes: 144,
    group: 32,
    decode: decode_q4_k,
};

pub(crate) fn read_f16(b: &[u8], at: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[at], b[at + 1]])).to_f32()
}

/// ggml's nibble order for 32 elements in 16 bytes: element `j` is the low
/// nibble of byte `j`, element `j + 16` its high nibble.
fn unpack_32(qs: &[u8], codes: &mut [u8]) {
    let (lo, hi) = codes.split_at_mut(16);
    for ((byte, l), h) in qs[..16].iter().zip(lo).zip(hi) {
        *l = byte & 0x0f;
        *h = byte >> 4;
    }
}

/// Q4_0: f16 d, 16 bytes of nibbles; `w = d * (q - 8)`.
fn decode_q4_0(block: &[u8], codes: &mut [u8], scales: &mut [f32], mins: &mut [f32]) {
    let d = read_f16(block, 0);
    unpack_32(&block[2..18], codes);
    scales[0] = d;
    mins[0] = -8.0 * d;
}

/// Q4_1: f16 d, f16 m, 16 bytes of nibbles; `w = d * q + m`.
fn decode_q4_1(block: &[u8], codes: &mut [u8], scales: &mut [f32], mins: &mut [f32]) {
    scales[0] = read_f16(block, 0);
    mins[0] = read_f16(block, 2);
    unpack_32(&block[4..20], codes);
}

/// The 6-bit scale and min of sub-block `j` (0..8) from Q4_K's 12 packed
/// bytes: sub-blocks 0..4 keep theirs in the low 6 bits of bytes `j` and
/// `j + 4`; sub-blocks 4..8 combine a nibble of byte `j + 4` with the top
/// two bits of bytes `j - 4` (scale) and `j` (min).
pub(crate) fn q4_k_scale_min(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

/// Q4_K super-block of 256: f16 d, f16 dmin, 12 bytes of packed 6-bit
/// scales and mins, 128 bytes of nibbles. Each 64-element chunk `c` takes
/// 32 bytes: low nibbles are sub-block `2c`, high nibbles sub-block `2c+1`.
/// `w = (d * sc) * q - dmin * m`.
fn decode_q4_k(block: &[u8], codes: &mut [u8], scales: &mut [f32], mins: &mut [f32]) {
    let d = read_f16(block, 0);
    let dmin = read_f16(block, 2);
    let packed = &block[4..16];
    let qs = &block[16..144];
    for j in 0..8 {
        let (sc, m) = q4_k_scale_min(j, packed);
        scales[j] = d * f32::from(sc);
        mins[j] = -(dmin * f32::from(m));
    }
    for (c, chunk) in codes.chunks_exact_mut(64).enumerate() {
        let bytes = &qs[32 * c..32 * c + 32];
        let (lo, hi) = chunk.split_at_mut(32);
        for ((byte, l), h) in bytes.iter().zip(lo).zip(hi) {
            *l = byte & 0x0f;
            *h = byte >> 4;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q4_k_scale_unpacking_matches_the_bit_layout() {
        // Sub-blocks 0..4: low 6 bits of bytes 0..4 (scales) and 4..8 (mins).
        // Sub-blocks 4..8: nibbles of bytes 8..12 plus top bits of 0..8.
        let mut s = [0u8; 12];
        s[1] = 0b11_000101; // scale 1 = 5, top bits -> scale 5 high = 3
        s[5] = 0b01_001001; // min 1 = 9, top bits -> min 5 high = 1
        s[9] = 0xa7; // scale 5 low nibble 7, min 5 low nibble 10
        assert_eq!(q4_k_scale_min(1, &s), (5, 9));
        assert_eq!(q4_k_scale_min(5, &s), (7 | (3 << 4), 10 | (1 << 4)));
        assert_eq!(q4_k_scale_min(0, &s), (0, 0));
    }

    #[test]
    fn q4_0_nibble_order_and_affine_pair() {
        let mut block = [0u8; 18];
        block[..2].copy_from_slice(&f16::from_f32(0.5).to_bits().to_le_bytes());
        block[2] = 0x3c; // element 0 = 12, element 16 = 3
        let (mut codes, mut sc, mut mn) = ([0u8; 32], [0f32; 1], [0f32; 1]);
        decode_q4_0(&block, &mut codes, &mut sc, &mut mn);
        assert_eq!((codes[0], codes[16], codes[1]), (12, 3, 0));
        assert_eq!((sc[0], mn[0]), (0.5, -4.0));
    }
}
