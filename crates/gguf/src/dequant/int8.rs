//! Block decoders for the signed-code formats Q8_0, Q6_K and Q5_0.
//!
//! Each decoder turns one block into signed codes and one scale per group,
//! `w = scale * q`; dequantization and [`crate::GgufFile::int8_groups`] share
//! them. Q6_K's 6-bit values are stored as 4 low bits in `ql` and 2 high
//! bits in `qh`, interleaved as in ggml's `dequantize_row_q6_K`.

use super::int4::read_f16;

/// Geometry and decoder of one 8-bit-code format.
pub(crate) struct Int8Format {
    pub block_elems: usize,
    pub block_bytes: usize,
    pub group: usize,
    /// Decodes one block: `codes` has `block_elems` entries, `scales` has
    /// `block_elems / group`.
    pub decode: fn(&[u8], &mut [i8], &mut [f32]),
}

pub(crate) const Q8_0: Int8Format = Int8Format {
    block_elems: 32,
    block_bytes: 34,
    group: 32,
    decode: decode_q8_0,
};

pub(crate) const Q6_K: Int8Format = Int8Format {
    block_elems: 256,
    block_bytes: 210,
    group: 16,
    decode: decode_q6_k,
};

pub(crate) const Q5_0: Int8Format = Int8Format {
    block_elems: 32,
    block_bytes: 22,
    group: 32,
    decode: decode_q5_0,
};

/// Q5_0: f16 d, 32 bits of high bits, 16 bytes of nibbles; element `j` is the low nibble of
/// byte `j` (the high one for `j + 16`) with bit `j` of the high bits on top, and
/// `w = d * (q - 16)`: signed codes -16..=15, exact as 8-bit codes.
fn decode_q5_0(block: &[u8], codes: &mut [i8], scales: &mut [f32]) {
    scales[0] = read_f16(block, 0);
    let qh = u32::from_le_bytes([block[2], block[3], block[4], block[5]]);
    let qs = &block[6..22];
    for j in 0..16 {
        let high = |bit: usize| (((qh >> bit) & 1) as u8) << 4;
        codes[j] = ((qs[j] & 0x0f) | high(j)) as i8 - 16;
        codes[j + 16] = ((qs[j] >> 4) | high(j + 16)) as i8 - 16;
    }
}

/// Q8_0: f16 d, 32 signed bytes; `w = d * q`.
fn decode_q8_0(block: &[u8], codes: &mut [i8], scales: &mut [f32]) {
    scales[0] = read_f16(block, 0);
    for (c, &b) in codes.iter_mut().zip(&block[2..34]) {
        *c = b as i8;
    }
}

/// Q6_K super-block of 256: 128 bytes `ql`, 64 bytes `qh`, 16 i8 scales,
/// f16 d. Each half of 128 elements uses 64 bytes of `ql` and 32 of `qh`:
/// for `l` in 0..32, elements `l`, `l+32`, `l+64`, `l+96` take the low
/// nibble of `ql[l]`, low nibble of `ql[l+32]`, high nibble of `ql[l]`,
/// high nibble of `ql[l+32]`, each with the next 2 bits of `qh[l]` on top.
/// Group `i / 16` has scale `d * scales[i / 16]`, and `q = value - 32`.
fn decode_q6_k(block: &[u8], codes: &mut [i8], scales: &mut [f32]) {
    let d = read_f16(block, 208);
    for (s, &b) in scales.iter_mut().zip(&block[192..208]) {
        *s = d * f32::from(b as i8);
    }
    for (half, out) in codes.chunks_exact_mut(128).enumerate() {
        let ql = &block[64 * half..64 * half + 64];
        let qh = &block[128 + 32 * half..128 + 32 * half + 32];
        for l in 0..32 {
            let h = qh[l];
            let v = [
                (ql[l] & 0x0f) | ((h & 3) << 4),
                (ql[l + 32] & 0x0f) | (((h >> 2) & 3) << 4),
                (ql[l] >> 4) | (((h >> 4) & 3) << 4),
                (ql[l + 32] >> 4) | (((h >> 6) & 3) << 4),
            ];
            for (k, &v) in v.iter().enumerate() {
                out[l + 32 * k] = v as i8 - 32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q6_k_bit_placement() {
        let mut block = [0u8; 210];
        block[3] = 0x21; // ql[3]: element 3 low = 1, element 67 high = 2
        block[35] = 0x43; // ql[35]: element 35 low = 3, element 99 high = 4
        block[128 + 3] = 0b11_10_01_00; // qh[3]: +0, +16, +32, +48
        block[128 + 32 + 5] = 0b11; // second half, element 128 + 5 high bits 3
        block[192] = 2; // scale of group 0
        block[192 + 15] = (-3i8) as u8;
        block[208..210].copy_from_slice(&half::f16::from_f32(0.25).to_bits().to_le_bytes());
        let (mut codes, mut sc) = ([0i8; 256], [0f32; 16]);
        decode_q6_k(&block, &mut codes, &mut sc);
        assert_eq!(codes[3], 1 - 32);
        assert_eq!(codes[35], 3 + 16 - 32);
        assert_eq!(codes[67], 2 + 32 - 32);
        assert_eq!(codes[99], 4 + 48 - 32);
        assert_eq!(codes[133], 48 - 32);
        assert_eq!(codes[0], -32);
        assert_eq!((sc[0], sc[1], sc[15]), (0.5, 0.0, -0.75));
    }
}
