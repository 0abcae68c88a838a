//! Block decoders for the 5-bit affine formats Q5_1 and Q5_K.
//!
//! They produce the same `(codes, scale, min)` groups as the 4-bit decoders (`w = scale * q +
//! min`, reusing [`Int4Format`]'s shape) but with codes up to 31, so they are kept out of
//! [`crate::GgufFile::int4_groups`], whose codes are 4-bit; dequantization and the f32 block
//! visitor use them. The fifth bit of every code sits in a separate bit field (`qh`), as in
//! ggml's `dequantize_row_q5_1` / `dequantize_row_q5_K`.

use super::int4::{q4_k_scale_min, read_f16, Int4Format};

pub(crate) const Q5_1: Int4Format = Int4Format {
    block_elems: 32,
    block_bytes: 24,
    group: 32,
    decode: decode_q5_1,
};

pub(crate) const Q5_K: Int4Format = Int4Format {
    block_elems: 256,
    block_bytes: 176,
    group: 32,
    decode: decode_q5_k,
};

/// Q5_1: f16 d, f16 m, 32 bits of high bits, 16 bytes of nibbles; element `j` is the low
/// nibble of byte `j` (the high one for `j + 16`) with bit `j` of the high bits on top;
/// `w = d * q + m`.
fn decode_q5_1(block: &[u8], codes: &mut [u8], scales: &mut [f32], mins: &mut [f32]) {
    scales[0] = read_f16(block, 0);
    mins[0] = read_f16(block, 2);
    let qh = u32::from_le_bytes([block[4], block[5], block[6], block[7]]);
    let qs = &block[8..24];
    for j in 0..16 {
        let high = |bit: usize| (((qh >> bit) & 1) as u8) << 4;
        codes[j] = (qs[j] & 0x0f) | high(j);
        codes[j + 16] = (qs[j] >> 4) | high(j + 16);
    }
}

/// Q5_K super-block of 256: f16 d, f16 dmin, Q4_K's 12 bytes of 6-bit scales and mins, 32
/// bytes of high bits, 128 bytes of nibbles. Sub-block `i` takes the low (even `i`) or high
/// (odd `i`) nibbles of bytes `32 (i / 2)..`, and bit `i` of high-bit byte `l` for its
/// element `l`. `w = (d * sc) * q - dmin * m`, as for Q4_K.
fn decode_q5_k(block: &[u8], codes: &mut [u8], scales: &mut [f32], mins: &mut [f32]) {
    let d = read_f16(block, 0);
    let dmin = read_f16(block, 2);
    let packed = &block[4..16];
    let qh = &block[16..48];
    let qs = &block[48..176];
    for j in 0..8 {
        let (sc, m) = q4_k_scale_min(j, packed);
        scales[j] = d * f32::from(sc);
        mins[j] = -(dmin * f32::from(m));
    }
    for (i, sub) in codes.chunks_exact_mut(32).enumerate() {
        let bytes = &qs[32 * (i / 2)..32 * (i / 2) + 32];
        for (l, c) in sub.iter_mut().enumerate() {
            let nibble = if i % 2 == 0 {
                bytes[l] & 0x0f
            } else {
                bytes[l] >> 4
            };
            *c = nibble | (((qh[l] >> i) & 1) << 4);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q5_1_high_bits_land_on_their_elements() {
        let mut block = [0u8; 24];
        block[0..2].copy_from_slice(&half::f16::from_f32(0.5).to_bits().to_le_bytes());
        block[2..4].copy_from_slice(&half::f16::from_f32(-1.0).to_bits().to_le_bytes());
        block[4..8].copy_from_slice(&(1u32 << 3 | 1 << 20).to_le_bytes());
        block[8 + 3] = 0x2a; // element 3 low nibble 0xa, element 19 high nibble 2
        block[8 + 4] = 0x70; // element 20 nibble 7
        let (mut codes, mut s, mut m) = ([0u8; 32], [0f32; 1], [0f32; 1]);
        decode_q5_1(&block, &mut codes, &mut s, &mut m);
        assert_eq!(
            (codes[3], codes[19], codes[20], codes[4]),
            (0x1a, 2, 0x17, 0)
        );
        assert_eq!((s[0], m[0]), (0.5, -1.0));
    }

    #[test]
    fn q5_k_sub_blocks_take_nibbles_and_bits_in_order() {
        let mut block = [0u8; 176];
        block[16 + 5] = 0b0000_1010; // element 5 of sub-blocks 1 and 3 get the fifth bit
        block[48 + 5] = 0x93; // sub-block 0 element 5 = 3, sub-block 1 element 5 = 9
        block[48 + 32 + 5] = 0x41; // sub-block 2 element 5 = 1, sub-block 3 element 5 = 4
        let (mut codes, mut s, mut m) = ([0u8; 256], [0f32; 8], [0f32; 8]);
        decode_q5_k(&block, &mut codes, &mut s, &mut m);
        assert_eq!(
            [codes[5], codes[32 + 5], codes[64 + 5], codes[96 + 5]],
            [3, 9 + 16, 1, 4 + 16]
        );
        assert!(codes.iter().all(|&c| c <= 31));
    }
}
