//! Expanding block rows into floats (`w = scale * q + min`, or `scale * q` for 8-bit blocks):
//! the panels the GEMM multiplies. The floats are the dequantized model's own weights, so the
//! product is the float model's product up to summation order.

use super::blocks::{BlockMatrix, Q4Block, Q8Block, BLOCK};

/// Writes rows `start..end` of `w` into `out` (`(end - start) * cols` floats, row-major).
pub fn expand_rows(w: &BlockMatrix, start: usize, end: usize, out: &mut [f32]) {
    let per_row = w.cols() / BLOCK;
    let span = start * per_row..end * per_row;
    debug_assert_eq!(out.len(), span.len() * BLOCK);
    match w {
        BlockMatrix::Q4 { blocks, .. } => q4(&blocks[span], out),
        BlockMatrix::Q8 { blocks, .. } => q8(&blocks[span], out),
    }
}

fn q4(blocks: &[Q4Block], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if super::available() {
        // SAFETY: the CPU has AVX2 and FMA (checked above); `out` holds 32 floats per block.
        return unsafe { avx2::q4(blocks, out) };
    }
    for (b, o) in blocks.iter().zip(out.chunks_exact_mut(BLOCK)) {
        let (scale, min) = (b.scale(), b.min());
        for j in 0..16 {
            o[j] = (b.qs[j] & 0x0F) as f32 * scale + min;
            o[j + 16] = (b.qs[j] >> 4) as f32 * scale + min;
        }
    }
}

fn q8(blocks: &[Q8Block], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if super::available() {
        // SAFETY: as `q4`.
        return unsafe { avx2::q8(blocks, out) };
    }
    for (b, o) in blocks.iter().zip(out.chunks_exact_mut(BLOCK)) {
        for (v, &q) in o.iter_mut().zip(&b.qs) {
            *v = q as f32 * b.scale;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::super::blocks::{Q4Block, Q8Block, BLOCK};
    use super::super::dot::avx2::{q4_floats, q8_floats};

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn q4(blocks: &[Q4Block], out: &mut [f32]) {
        assert!(out.len() >= blocks.len() * BLOCK);
        for (b, block) in blocks.iter().enumerate() {
            // SAFETY: `out` holds 32 floats for block `b` (asserted above).
            unsafe {
                let q = q4_floats(block);
                let scale_min = block.scale_min();
                let scale = _mm256_broadcastss_ps(scale_min);
                let min = _mm256_broadcastss_ps(_mm_movehdup_ps(scale_min));
                let p = out.as_mut_ptr().add(b * BLOCK);
                for (k, v) in q.iter().enumerate() {
                    _mm256_storeu_ps(p.add(8 * k), _mm256_fmadd_ps(*v, scale, min));
                }
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn q8(blocks: &[Q8Block], out: &mut [f32]) {
        assert!(out.len() >= blocks.len() * BLOCK);
        for (b, block) in blocks.iter().enumerate() {
            // SAFETY: as `q4`.
            unsafe {
                let q = q8_floats(block);
                let scale = _mm256_set1_ps(block.scale);
                let p = out.as_mut_ptr().add(b * BLOCK);
                for (k, v) in q.iter().enumerate() {
                    _mm256_storeu_ps(p.add(8 * k), _mm256_mul_ps(*v, scale));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expansion_equals_to_f32() {
        let (rows, cols) = (5, 64);
        let codes: Vec<u8> = (0..rows * cols).map(|i| (i * 5 % 16) as u8).collect();
        let scales: Vec<f32> = (0..rows * 2).map(|i| 0.01 + i as f32 * 0.003).collect();
        let mins: Vec<f32> = (0..rows * 2).map(|i| -0.05 + i as f32 * 0.01).collect();
        let q4m = BlockMatrix::from_q4_codes(rows, cols, &codes, &scales, &mins);
        let floats: Vec<f32> = (0..rows * cols).map(|i| (i as f32 * 0.37).sin()).collect();
        let q8m = BlockMatrix::q8_from_floats(rows, cols, &floats);
        for w in [q4m, q8m] {
            let all = w.to_f32();
            let mut out = vec![0f32; 3 * cols];
            expand_rows(&w, 1, 4, &mut out);
            for (got, want) in out.iter().zip(&all[cols..4 * cols]) {
                assert!(
                    (got - want).abs() <= 1e-6 * want.abs().max(1.0),
                    "{got} {want}"
                );
            }
        }
    }
}
