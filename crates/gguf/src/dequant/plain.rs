//! Conversion of the unquantized float formats (F32, F16, BF16) to f32.
//!
//! Kept apart from the block decoders because these have no groups or
//! codes: each element is converted on its own.

use half::{bf16, f16};

pub(crate) fn f32_le(src: &[u8], dst: &mut [f32]) {
    for (d, b) in dst.iter_mut().zip(src.chunks_exact(4)) {
        *d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
}

pub(crate) fn f16_le(src: &[u8], dst: &mut [f32]) {
    for (d, b) in dst.iter_mut().zip(src.chunks_exact(2)) {
        *d = f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32();
    }
}

pub(crate) fn bf16_le(src: &[u8], dst: &mut [f32]) {
    for (d, b) in dst.iter_mut().zip(src.chunks_exact(2)) {
        *d = bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_each_float_format() {
        let mut out = [0f32; 2];
        f32_le(&[0, 0, 0x80, 0x3f, 0, 0, 0, 0xc0], &mut out);
        assert_eq!(out, [1.0, -2.0]);
        f16_le(&[0x00, 0x3c, 0x00, 0xb8], &mut out);
        assert_eq!(out, [1.0, -0.5]);
        bf16_le(&[0x80, 0x3f, 0x40, 0x40], &mut out);
        assert_eq!(out, [1.0, 3.0]);
    }
}
