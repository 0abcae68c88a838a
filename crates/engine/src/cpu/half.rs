//! IEEE binary16 ("half float") conversions, exact and in software: 4-bit blocks hold their
//! scale and min as half floats (`blocks::Q4Block`), GGUF's own encoding. The vector kernels
//! convert with F16C instead (`Q4Block::scale_min`); these serve building blocks and the
//! scalar paths, and must agree with it bit for bit.

/// IEEE binary16 bits to float32, exactly (every half float is a float32).
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exponent = u32::from((h >> 10) & 0x1F);
    let mantissa = u32::from(h & 0x3FF);
    match exponent {
        // Zero and subnormals: mantissa * 2^-24, exact in float32 arithmetic.
        0 => sign * mantissa as f32 * (1.0 / 16_777_216.0),
        0x1F if mantissa == 0 => sign * f32::INFINITY,
        0x1F => f32::NAN,
        _ => f32::from_bits(u32::from(h & 0x8000) << 16 | (exponent + 112) << 23 | mantissa << 13),
    }
}

/// Float32 to the nearest IEEE binary16 (ties to even), as bits; beyond 65,504 an infinity.
pub fn f32_to_f16(x: f32) -> u16 {
    let bits = x.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let abs = bits & 0x7FFF_FFFF;
    if abs > 0x7F80_0000 {
        return sign | 0x7E00; // NaN
    }
    if abs >= 0x477F_F000 {
        return sign | 0x7C00; // rounds past the largest half float
    }
    if abs < 0x3880_0000 {
        // Below 2^-14: a subnormal half, in units of 2^-24 (the scaling is exact).
        let units = f32::from_bits(abs) * 16_777_216.0;
        return sign | units.round_ties_even() as u16;
    }
    // A normal half: rebias the exponent, round the mantissa from 23 bits to 10 (a carry out of
    // the mantissa correctly bumps the exponent).
    let rebased = abs - (112 << 23);
    let round = 0x0FFF + ((rebased >> 13) & 1);
    sign | ((rebased + round) >> 13) as u16
}

#[cfg(test)]
mod tests {
    use super::super::blocks::Q4Block;
    use super::*;

    /// Every half float converts to float32 and back to itself; NaNs stay NaNs.
    #[test]
    fn every_half_float_round_trips() {
        for h in 0..=u16::MAX {
            let x = f16_to_f32(h);
            if x.is_nan() {
                assert!(f16_to_f32(f32_to_f16(x)).is_nan(), "{h:#06x}");
            } else {
                assert_eq!(f32_to_f16(x), h, "{h:#06x} -> {x}");
            }
        }
    }

    /// The conversions agree with the CPU's own (F16C: round to nearest even), on float32
    /// values of every magnitude, and the vector kernels' `scale_min` with the scalar accessors.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn conversions_agree_with_f16c() {
        use std::arch::x86_64::*;
        if !std::arch::is_x86_feature_detected!("f16c") {
            return;
        }
        #[target_feature(enable = "f16c")]
        fn hardware(x: f32) -> u16 {
            _mm_extract_epi16::<0>(_mm_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm_set1_ps(x))) as u16
        }
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..200_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            // Exponents from far below the subnormal halves to past the largest.
            let bits = (seed as u32 & 0x807F_FFFF) | ((90 + (seed >> 40) % 60) as u32) << 23;
            let x = f32::from_bits(bits);
            // SAFETY: F16C was detected above.
            assert_eq!(f32_to_f16(x), unsafe { hardware(x) }, "{x:e}");
            let block = Q4Block::new(x, -x / 3.0, [0; 16]);
            // SAFETY: as above.
            let lanes: [f32; 4] = unsafe { std::mem::transmute(block.scale_min()) };
            assert_eq!((lanes[0], lanes[1]), (block.scale(), block.min()));
        }
    }
}
