//! One weight row · one float32 activation row. Weight blocks are expanded to floats in
//! registers (`w = scale * q + min` per 32-wide block) and multiplied with the activations in
//! float32, so a quantized model computes exactly what its dequantized float32 twin computes,
//! up to summation order: no activation is rounded. Per block, `Σ q·x` is formed first and scaled
//! once; the affine term is `min · Σ x`, with the block sums of `x` computed once per row.

use super::blocks::{Q4Block, Q8Block, BLOCK};

/// Block sums of an activation row (for the `min` term of 4-bit affine blocks).
pub fn block_sums(x: &[f32]) -> Vec<f32> {
    x.chunks(BLOCK).map(|c| c.iter().sum()).collect()
}

pub fn q4(w: &[Q4Block], x: &[f32], sums: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if avx512::available() {
        // SAFETY: the CPU has AVX-512F (checked above).
        return unsafe { avx512::q4(w, x) };
    }
    #[cfg(target_arch = "x86_64")]
    if super::available() {
        // SAFETY: the CPU has AVX2 and FMA (checked above).
        return unsafe { avx2::q4(w, x, sums) };
    }
    portable::q4(w, x, sums)
}

pub fn q8(w: &[Q8Block], x: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if avx512::available() {
        // SAFETY: the CPU has AVX-512F (checked above).
        return unsafe { avx512::q8(w, x) };
    }
    #[cfg(target_arch = "x86_64")]
    if super::available() {
        // SAFETY: as above.
        return unsafe { avx2::q8(w, x) };
    }
    portable::q8(w, x)
}

pub mod portable {
    use super::super::blocks::{Q4Block, Q8Block, BLOCK};

    pub fn q4(w: &[Q4Block], x: &[f32], sums: &[f32]) -> f32 {
        let mut total = 0f32;
        for (b, wb) in w.iter().enumerate() {
            let xs = &x[b * BLOCK..(b + 1) * BLOCK];
            let mut dot = 0f32;
            for j in 0..16 {
                dot += (wb.qs[j] & 0x0F) as f32 * xs[j] + (wb.qs[j] >> 4) as f32 * xs[j + 16];
            }
            total += wb.scale() * dot + wb.min() * sums[b];
        }
        total
    }

    pub fn q8(w: &[Q8Block], x: &[f32]) -> f32 {
        let mut total = 0f32;
        for (b, wb) in w.iter().enumerate() {
            let xs = &x[b * BLOCK..(b + 1) * BLOCK];
            let dot: f32 = wb.qs.iter().zip(xs).map(|(&q, &v)| q as f32 * v).sum();
            total += wb.scale * dot;
        }
        total
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) mod avx2 {
    use std::arch::x86_64::*;

    use super::super::blocks::{Q4Block, Q8Block, BLOCK};

    #[target_feature(enable = "avx2,fma")]
    pub(in crate::cpu) fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps(v, 1);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    /// The 32 codes of a 4-bit block as four vectors of 8 floats, in element order.
    #[target_feature(enable = "avx2,fma")]
    pub(in crate::cpu) unsafe fn q4_floats(b: &Q4Block) -> [__m256; 4] {
        // SAFETY: reads the block's 16 code bytes.
        let packed = unsafe { _mm_loadu_si128(b.qs.as_ptr() as *const __m128i) };
        let mask = _mm_set1_epi8(0x0F);
        let lo = _mm_and_si128(packed, mask);
        let hi = _mm_and_si128(_mm_srli_epi16(packed, 4), mask);
        let f = |v: __m128i| _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v));
        [
            f(lo),
            f(_mm_srli_si128(lo, 8)),
            f(hi),
            f(_mm_srli_si128(hi, 8)),
        ]
    }

    /// The 32 codes of an 8-bit block as four vectors of 8 floats.
    #[target_feature(enable = "avx2,fma")]
    pub(in crate::cpu) unsafe fn q8_floats(b: &Q8Block) -> [__m256; 4] {
        let p = b.qs.as_ptr() as *const __m128i;
        // SAFETY: reads the block's 32 code bytes as two 16-byte halves.
        let (a, c) = unsafe { (_mm_loadu_si128(p), _mm_loadu_si128(p.add(1))) };
        let f = |v: __m128i| _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v));
        [f(a), f(_mm_srli_si128(a, 8)), f(c), f(_mm_srli_si128(c, 8))]
    }

    /// `Σ q·x` over one block.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn block_dot(q: &[__m256; 4], x: &[f32]) -> __m256 {
        let x = &x[..BLOCK];
        let p = x.as_ptr();
        // SAFETY: `x` has 32 floats (sliced above).
        unsafe {
            let t = _mm256_mul_ps(q[0], _mm256_loadu_ps(p));
            let t = _mm256_fmadd_ps(q[1], _mm256_loadu_ps(p.add(8)), t);
            let t = _mm256_fmadd_ps(q[2], _mm256_loadu_ps(p.add(16)), t);
            _mm256_fmadd_ps(q[3], _mm256_loadu_ps(p.add(24)), t)
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn q4(w: &[Q4Block], x: &[f32], sums: &[f32]) -> f32 {
        let mut acc = _mm256_setzero_ps();
        let mut mins = 0f32;
        for (b, wb) in w.iter().enumerate() {
            // SAFETY: AVX2 and F16C are present (callers check); `x` holds a block per weight
            // block.
            unsafe {
                let q = q4_floats(wb);
                let scale_min = wb.scale_min();
                acc = _mm256_fmadd_ps(
                    block_dot(&q, &x[b * BLOCK..]),
                    _mm256_broadcastss_ps(scale_min),
                    acc,
                );
                mins += _mm_cvtss_f32(_mm_movehdup_ps(scale_min)) * sums[b];
            }
        }
        hsum(acc) + mins
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn q8(w: &[Q8Block], x: &[f32]) -> f32 {
        let mut acc = _mm256_setzero_ps();
        for (b, wb) in w.iter().enumerate() {
            // SAFETY: as `q4`.
            unsafe {
                let q = q8_floats(wb);
                acc = _mm256_fmadd_ps(
                    block_dot(&q, &x[b * BLOCK..]),
                    _mm256_set1_ps(wb.scale),
                    acc,
                );
            }
        }
        hsum(acc)
    }

    /// Four activation rows against one 4-bit weight row, expanding each block once.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn q4_x4(w: &[Q4Block], x: [&[f32]; 4], sums: [&[f32]; 4]) -> [f32; 4] {
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut mins = [0f32; 4];
        for (b, wb) in w.iter().enumerate() {
            // SAFETY: as `q4`.
            let min = unsafe {
                let q = q4_floats(wb);
                let scale_min = wb.scale_min();
                let scale = _mm256_broadcastss_ps(scale_min);
                for j in 0..4 {
                    acc[j] = _mm256_fmadd_ps(block_dot(&q, &x[j][b * BLOCK..]), scale, acc[j]);
                }
                _mm_cvtss_f32(_mm_movehdup_ps(scale_min))
            };
            for j in 0..4 {
                mins[j] += min * sums[j][b];
            }
        }
        [
            hsum(acc[0]) + mins[0],
            hsum(acc[1]) + mins[1],
            hsum(acc[2]) + mins[2],
            hsum(acc[3]) + mins[3],
        ]
    }

    /// Four activation rows against one 8-bit weight row.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn q8_x4(w: &[Q8Block], x: [&[f32]; 4]) -> [f32; 4] {
        let mut acc = [_mm256_setzero_ps(); 4];
        for (b, wb) in w.iter().enumerate() {
            // SAFETY: as `q4`.
            unsafe {
                let q = q8_floats(wb);
                let scale = _mm256_set1_ps(wb.scale);
                for j in 0..4 {
                    acc[j] = _mm256_fmadd_ps(block_dot(&q, &x[j][b * BLOCK..]), scale, acc[j]);
                }
            }
        }
        [hsum(acc[0]), hsum(acc[1]), hsum(acc[2]), hsum(acc[3])]
    }
}

/// AVX-512: each block's sixteen possible weights (`scale * q + min`, q = 0..15) form a table in
/// one register, and the codes index it (`vpermps`): the weights come out in two instructions,
/// with none of the integer-to-float conversion and scaling the AVX2 path needs per element.
/// The table holds exactly the dequantized model's weights, as `expand` computes them.
#[cfg(target_arch = "x86_64")]
pub(super) mod avx512 {
    use std::arch::x86_64::*;

    use super::super::blocks::{Q4Block, Q8Block, BLOCK};

    pub fn available() -> bool {
        super::super::isa::allows_avx512()
            && std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("f16c")
    }

    /// A block's 32 weights as two vectors (inputs 0..16 and 16..32), looked up in the table
    /// of its sixteen possible values.
    #[target_feature(enable = "avx512f,f16c")]
    pub(in crate::cpu) fn q4_weights(block: &Q4Block) -> (__m512, __m512) {
        let steps = _mm512_setr_ps(
            0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0,
        );
        // SAFETY: F16C is enabled here (every AVX-512 CPU has it; `available` checks).
        let scale_min = unsafe { block.scale_min() };
        let table = _mm512_fmadd_ps(
            steps,
            _mm512_broadcastss_ps(scale_min),
            _mm512_broadcastss_ps(_mm_movehdup_ps(scale_min)),
        );
        // SAFETY: reads the block's 16 code bytes.
        let packed = unsafe { _mm_loadu_si128(block.qs.as_ptr().cast()) };
        // Lane j holds byte j: code j in bits 0..4 (the only bits `vpermps` reads), and code
        // j + 16 in bits 4..8.
        let bytes = _mm512_cvtepu8_epi32(packed);
        let low = _mm512_permutexvar_ps(bytes, table);
        let high = _mm512_permutexvar_ps(_mm512_srli_epi32(bytes, 4), table);
        (low, high)
    }

    #[target_feature(enable = "avx512f,f16c")]
    pub unsafe fn q4(w: &[Q4Block], x: &[f32]) -> f32 {
        assert!(x.len() >= w.len() * BLOCK);
        let (mut low_acc, mut high_acc) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        for (b, block) in w.iter().enumerate() {
            let (low, high) = q4_weights(block);
            // SAFETY: 32 floats of `x` (asserted above).
            unsafe {
                let p = x.as_ptr().add(b * BLOCK);
                low_acc = _mm512_fmadd_ps(low, _mm512_loadu_ps(p), low_acc);
                high_acc = _mm512_fmadd_ps(high, _mm512_loadu_ps(p.add(16)), high_acc);
            }
        }
        _mm512_reduce_add_ps(_mm512_add_ps(low_acc, high_acc))
    }

    /// `Σ q·x` per block in sixteen lanes, scaled once per block.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn q8(w: &[Q8Block], x: &[f32]) -> f32 {
        assert!(x.len() >= w.len() * BLOCK);
        let mut acc = _mm512_setzero_ps();
        for (b, block) in w.iter().enumerate() {
            // SAFETY: the block's 32 code bytes, and 32 floats of `x` (asserted above).
            unsafe {
                let q = block.qs.as_ptr().cast::<__m128i>();
                let low = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(q)));
                let high = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(q.add(1))));
                let p = x.as_ptr().add(b * BLOCK);
                let sum = _mm512_mul_ps(low, _mm512_loadu_ps(p));
                let sum = _mm512_fmadd_ps(high, _mm512_loadu_ps(p.add(16)), sum);
                acc = _mm512_fmadd_ps(sum, _mm512_set1_ps(block.scale), acc);
            }
        }
        _mm512_reduce_add_ps(acc)
    }
}

/// Four activation rows against one 4-bit weight row.
pub fn q4_x4(w: &[Q4Block], x: [&[f32]; 4], sums: [&[f32]; 4]) -> [f32; 4] {
    #[cfg(target_arch = "x86_64")]
    if super::available() {
        // SAFETY: the CPU has AVX2 and FMA (checked above).
        return unsafe { avx2::q4_x4(w, x, sums) };
    }
    [0, 1, 2, 3].map(|j| portable::q4(w, x[j], sums[j]))
}

/// Four activation rows against one 8-bit weight row.
pub fn q8_x4(w: &[Q8Block], x: [&[f32]; 4]) -> [f32; 4] {
    #[cfg(target_arch = "x86_64")]
    if super::available() {
        // SAFETY: as above.
        return unsafe { avx2::q8_x4(w, x) };
    }
    x.map(|row| portable::q8(w, row))
}
