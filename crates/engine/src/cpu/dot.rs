//! One weight row · one activation row, both as blocks. The AVX2 versions multiply 32 codes at
//! once with `maddubs` (u8 × i8 pairs summed to i16, then to i32) and scale the block's integer
//! dot product once; the portable versions define the same arithmetic.

use super::blocks::{ActBlock, Q4Block, Q8Block};

pub fn q4(w: &[Q4Block], x: &[ActBlock]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if super::available() {
        // SAFETY: the CPU has AVX2 and FMA (checked above).
        return unsafe { avx2::q4(w, x) };
    }
    portable::q4(w, x)
}

/// Four activation rows against one weight row, sharing each unpacked weight block.
pub fn q4_x4(w: &[Q4Block], x: [&[ActBlock]; 4]) -> [f32; 4] {
    #[cfg(target_arch = "x86_64")]
    if super::available() {
        // SAFETY: the CPU has AVX2 and FMA (checked above).
        return unsafe { avx2::q4_x4(w, x) };
    }
    x.map(|row| portable::q4(w, row))
}

/// Four activation rows against one weight row.
pub fn q8_x4(w: &[Q8Block], x: [&[ActBlock]; 4]) -> [f32; 4] {
    #[cfg(target_arch = "x86_64")]
    if super::available() {
        // SAFETY: as above.
        return unsafe { avx2::q8_x4(w, x) };
    }
    x.map(|row| portable::q8(w, row))
}

pub fn q8(w: &[Q8Block], x: &[ActBlock]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if super::available() {
        // SAFETY: as above.
        return unsafe { avx2::q8(w, x) };
    }
    portable::q8(w, x)
}

pub mod portable {
    use super::super::blocks::{ActBlock, Q4Block, Q8Block};

    pub fn q4(w: &[Q4Block], x: &[ActBlock]) -> f32 {
        let mut total = 0f32;
        for (wb, xb) in w.iter().zip(x) {
            let mut dot = 0i32;
            for j in 0..16 {
                dot += (wb.qs[j] & 0x0F) as i32 * xb.qs[j] as i32;
                dot += (wb.qs[j] >> 4) as i32 * xb.qs[j + 16] as i32;
            }
            total += wb.scale * xb.d * dot as f32 + wb.min * xb.sum;
        }
        total
    }

    pub fn q8(w: &[Q8Block], x: &[ActBlock]) -> f32 {
        let mut total = 0f32;
        for (wb, xb) in w.iter().zip(x) {
            let dot: i32 = wb
                .qs
                .iter()
                .zip(&xb.qs)
                .map(|(&a, &b)| a as i32 * b as i32)
                .sum();
            total += wb.scale * xb.d * dot as f32;
        }
        total
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::super::blocks::{ActBlock, Q4Block, Q8Block};

    #[target_feature(enable = "avx2,fma")]
    fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps(v, 1);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn q4(w: &[Q4Block], x: &[ActBlock]) -> f32 {
        // SAFETY: callers run these only where AVX2 and FMA exist; every load reads a
        // whole block (16 or 32 bytes) of a block struct.
        unsafe {
            let mask = _mm_set1_epi8(0x0F);
            let ones = _mm256_set1_epi16(1);
            let mut acc = _mm256_setzero_ps();
            let mut mins = 0f32;
            for (wb, xb) in w.iter().zip(x) {
                let packed = _mm_loadu_si128(wb.qs.as_ptr() as *const __m128i);
                let lo = _mm_and_si128(packed, mask);
                let hi = _mm_and_si128(_mm_srli_epi16(packed, 4), mask);
                let wq = _mm256_set_m128i(hi, lo);
                let xq = _mm256_loadu_si256(xb.qs.as_ptr() as *const __m256i);
                let dot = _mm256_madd_epi16(_mm256_maddubs_epi16(wq, xq), ones);
                acc = _mm256_fmadd_ps(
                    _mm256_cvtepi32_ps(dot),
                    _mm256_set1_ps(wb.scale * xb.d),
                    acc,
                );
                mins += wb.min * xb.sum;
            }
            hsum(acc) + mins
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn q8(w: &[Q8Block], x: &[ActBlock]) -> f32 {
        // SAFETY: callers run these only where AVX2 and FMA exist; every load reads a
        // whole block (16 or 32 bytes) of a block struct.
        unsafe {
            let ones = _mm256_set1_epi16(1);
            let mut acc = _mm256_setzero_ps();
            for (wb, xb) in w.iter().zip(x) {
                let wq = _mm256_loadu_si256(wb.qs.as_ptr() as *const __m256i);
                let xq = _mm256_loadu_si256(xb.qs.as_ptr() as *const __m256i);
                // maddubs takes unsigned × signed: move w's sign onto x.
                let abs_w = _mm256_sign_epi8(wq, wq);
                let signed_x = _mm256_sign_epi8(xq, wq);
                let dot = _mm256_madd_epi16(_mm256_maddubs_epi16(abs_w, signed_x), ones);
                acc = _mm256_fmadd_ps(
                    _mm256_cvtepi32_ps(dot),
                    _mm256_set1_ps(wb.scale * xb.d),
                    acc,
                );
            }
            hsum(acc)
        }
    }

    /// One row of four activation blocks, multiplied by one unpacked weight block.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn step4(
        wq: __m256i,
        scale: f32,
        xs: [&ActBlock; 4],
        acc: &mut [__m256; 4],
        signed_w: bool,
    ) {
        // SAFETY: block loads read exactly one 32-byte code array.
        unsafe {
            let ones = _mm256_set1_epi16(1);
            let unsigned_w = if signed_w {
                _mm256_sign_epi8(wq, wq)
            } else {
                wq
            };
            for (a, xb) in acc.iter_mut().zip(xs) {
                let mut xq = _mm256_loadu_si256(xb.qs.as_ptr() as *const __m256i);
                if signed_w {
                    xq = _mm256_sign_epi8(xq, wq);
                }
                let dot = _mm256_madd_epi16(_mm256_maddubs_epi16(unsigned_w, xq), ones);
                *a = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_set1_ps(scale * xb.d), *a);
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn q4_x4(w: &[Q4Block], x: [&[ActBlock]; 4]) -> [f32; 4] {
        let n = w.len();
        let (x0, x1, x2, x3) = (&x[0][..n], &x[1][..n], &x[2][..n], &x[3][..n]);
        let mask = _mm_set1_epi8(0x0F);
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut mins = [0f32; 4];
        for b in 0..n {
            let wb = &w[b];
            // SAFETY: reads the block's 16 code bytes; AVX2 is present (callers check).
            let wq = unsafe {
                let packed = _mm_loadu_si128(wb.qs.as_ptr() as *const __m128i);
                let lo = _mm_and_si128(packed, mask);
                let hi = _mm_and_si128(_mm_srli_epi16(packed, 4), mask);
                _mm256_set_m128i(hi, lo)
            };
            let xs = [&x0[b], &x1[b], &x2[b], &x3[b]];
            // SAFETY: as above.
            unsafe { step4(wq, wb.scale, xs, &mut acc, false) };
            for (m, xb) in mins.iter_mut().zip(xs) {
                *m += wb.min * xb.sum;
            }
        }
        [
            hsum(acc[0]) + mins[0],
            hsum(acc[1]) + mins[1],
            hsum(acc[2]) + mins[2],
            hsum(acc[3]) + mins[3],
        ]
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn q8_x4(w: &[Q8Block], x: [&[ActBlock]; 4]) -> [f32; 4] {
        let n = w.len();
        let (x0, x1, x2, x3) = (&x[0][..n], &x[1][..n], &x[2][..n], &x[3][..n]);
        let mut acc = [_mm256_setzero_ps(); 4];
        for b in 0..n {
            let wb = &w[b];
            // SAFETY: reads the block's 32 code bytes; AVX2 is present (callers check).
            let wq = unsafe { _mm256_loadu_si256(wb.qs.as_ptr() as *const __m256i) };
            // SAFETY: as above.
            unsafe {
                step4(
                    wq,
                    wb.scale,
                    [&x0[b], &x1[b], &x2[b], &x3[b]],
                    &mut acc,
                    true,
                )
            };
        }
        [hsum(acc[0]), hsum(acc[1]), hsum(acc[2]), hsum(acc[3])]
    }
}
