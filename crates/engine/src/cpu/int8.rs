//! Decoding rows with 8-bit activations, llama.cpp's way: each 32-wide block of an activation
//! row is rounded to `int8` with its own scale (`amax / 127`), and a weight block times an
//! activation block is one integer multiply-add (`maddubs`) instead of expanding the weights to
//! floats. About twice as fast per row as the float kernels; the price is the rounding of the
//! activations (a relative error of at most 1/254 of each block's largest value). The 4-bit
//! blocks' `min` term still uses the exact float sums of the activations.

use super::blocks::{BlockMatrix, Q4Block, Q8Block, BLOCK};
use super::dot::block_sums;
use super::pool;

/// Rows of `W` per parallel task.
const ROWS_PER_TASK: usize = 64;

/// Activation rows rounded to 8 bits, block by block.
pub struct QuantizedRows {
    pub codes: Vec<i8>,
    pub scales: Vec<f32>,
    pub sums: Vec<f32>,
}

pub fn quantize_rows(x: &[f32]) -> QuantizedRows {
    let mut codes = vec![0i8; x.len()];
    let mut scales = Vec::with_capacity(x.len() / BLOCK);
    for (chunk, out) in x.chunks(BLOCK).zip(codes.chunks_mut(BLOCK)) {
        let amax = chunk.iter().fold(0f32, |m, v| m.max(v.abs()));
        let scale = amax / 127.0;
        let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
        for (q, v) in out.iter_mut().zip(chunk) {
            *q = (v * inv).round() as i8;
        }
        scales.push(scale);
    }
    QuantizedRows {
        codes,
        scales,
        sums: block_sums(x),
    }
}

/// `x` is `[m, cols]` row-major (m small: decoding); writes `out` as `[m, rows]` row-major.
pub fn matmul_i8(w: &BlockMatrix, x: &[f32], m: usize, out: &mut [f32]) {
    let (rows, cols) = (w.rows(), w.cols());
    assert_eq!(x.len(), m * cols);
    assert_eq!(out.len(), m * rows);
    let per_row = cols / BLOCK;
    let q = quantize_rows(x);
    pool::by_row_chunks(rows, ROWS_PER_TASK, m, out, |start, end| {
        let width = end - start;
        let mut tile = vec![0f32; m * width];
        for r in start..end {
            let span = r * per_row..(r + 1) * per_row;
            for i in 0..m {
                let row = Row {
                    codes: &q.codes[i * cols..(i + 1) * cols],
                    scales: &q.scales[i * per_row..(i + 1) * per_row],
                    sums: &q.sums[i * per_row..(i + 1) * per_row],
                };
                tile[i * width + (r - start)] = match w {
                    BlockMatrix::Q4 { blocks, .. } => q4(&blocks[span.clone()], &row),
                    BlockMatrix::Q8 { blocks, .. } => q8(&blocks[span.clone()], &row),
                };
            }
        }
        tile
    });
}

/// One quantized activation row.
pub struct Row<'a> {
    pub codes: &'a [i8],
    pub scales: &'a [f32],
    pub sums: &'a [f32],
}

pub fn q4(w: &[Q4Block], x: &Row) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if super::available() {
        // SAFETY: the CPU has AVX2 and FMA (checked above).
        return unsafe { avx2::q4(w, x) };
    }
    portable::q4(w, x)
}

pub fn q8(w: &[Q8Block], x: &Row) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if super::available() {
        // SAFETY: as above.
        return unsafe { avx2::q8(w, x) };
    }
    portable::q8(w, x)
}

pub mod portable {
    use super::super::blocks::{Q4Block, Q8Block, BLOCK};
    use super::Row;

    pub fn q4(w: &[Q4Block], x: &Row) -> f32 {
        let mut total = 0f32;
        for (b, wb) in w.iter().enumerate() {
            let xs = &x.codes[b * BLOCK..(b + 1) * BLOCK];
            let mut dot = 0i32;
            for j in 0..16 {
                dot += (wb.qs[j] & 0x0F) as i32 * xs[j] as i32
                    + (wb.qs[j] >> 4) as i32 * xs[j + 16] as i32;
            }
            total += wb.scale * x.scales[b] * dot as f32 + wb.min * x.sums[b];
        }
        total
    }

    pub fn q8(w: &[Q8Block], x: &Row) -> f32 {
        let mut total = 0f32;
        for (b, wb) in w.iter().enumerate() {
            let xs = &x.codes[b * BLOCK..(b + 1) * BLOCK];
            let dot: i32 = wb
                .qs
                .iter()
                .zip(xs)
                .map(|(&q, &v)| q as i32 * v as i32)
                .sum();
            total += wb.scale * x.scales[b] * dot as f32;
        }
        total
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::super::blocks::{Q4Block, Q8Block, BLOCK};
    use super::super::dot::avx2::hsum;
    use super::Row;

    /// Eight i32 sums of `u8 × i8` products, pairwise then quadwise.
    #[target_feature(enable = "avx2,fma")]
    fn dot_u8_i8(w: __m256i, x: __m256i) -> __m256 {
        let pairs = _mm256_maddubs_epi16(w, x);
        _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn q4(w: &[Q4Block], x: &Row) -> f32 {
        assert!(x.codes.len() >= w.len() * BLOCK && x.scales.len() >= w.len());
        let mask = _mm_set1_epi8(0x0F);
        let mut acc = _mm256_setzero_ps();
        let mut mins = 0f32;
        for (b, wb) in w.iter().enumerate() {
            // SAFETY: reads the block's 16 code bytes and the row's 32 codes of block `b`
            // (lengths asserted above).
            unsafe {
                let packed = _mm_loadu_si128(wb.qs.as_ptr() as *const __m128i);
                let lo = _mm_and_si128(packed, mask);
                let hi = _mm_and_si128(_mm_srli_epi16(packed, 4), mask);
                let codes = _mm256_set_m128i(hi, lo);
                let xs = _mm256_loadu_si256(x.codes.as_ptr().add(b * BLOCK) as *const __m256i);
                let scale = _mm256_set1_ps(wb.scale * x.scales.get_unchecked(b));
                acc = _mm256_fmadd_ps(dot_u8_i8(codes, xs), scale, acc);
                mins += wb.min * x.sums.get_unchecked(b);
            }
        }
        hsum(acc) + mins
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn q8(w: &[Q8Block], x: &Row) -> f32 {
        assert!(x.codes.len() >= w.len() * BLOCK && x.scales.len() >= w.len());
        let mut acc = _mm256_setzero_ps();
        for (b, wb) in w.iter().enumerate() {
            // SAFETY: as `q4`.
            unsafe {
                let codes = _mm256_loadu_si256(wb.qs.as_ptr() as *const __m256i);
                let xs = _mm256_loadu_si256(x.codes.as_ptr().add(b * BLOCK) as *const __m256i);
                // maddubs wants its first operand unsigned: move the weights' signs onto x.
                let magnitudes = _mm256_sign_epi8(codes, codes);
                let signed_x = _mm256_sign_epi8(xs, codes);
                let scale = _mm256_set1_ps(wb.scale * x.scales.get_unchecked(b));
                acc = _mm256_fmadd_ps(dot_u8_i8(magnitudes, signed_x), scale, acc);
            }
        }
        hsum(acc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_to_the_float_product_and_simd_equals_portable() {
        let (rows, cols) = (70, 128);
        let codes: Vec<u8> = (0..rows * cols).map(|i| (i * 7 % 16) as u8).collect();
        let scales: Vec<f32> = (0..rows * cols / 32)
            .map(|i| 0.01 + (i % 5) as f32 * 0.01)
            .collect();
        let mins: Vec<f32> = (0..rows * cols / 32)
            .map(|i| -0.1 + (i % 3) as f32 * 0.05)
            .collect();
        let q4m = BlockMatrix::from_q4_codes(rows, cols, &codes, &scales, &mins);
        let floats: Vec<f32> = (0..rows * cols).map(|i| (i as f32 * 0.77).sin()).collect();
        let q8m = BlockMatrix::q8_from_floats(rows, cols, &floats);
        let m = 3;
        let x: Vec<f32> = (0..m * cols).map(|i| (i as f32 * 0.31).cos()).collect();
        for w in [q4m, q8m] {
            let wf = w.to_f32();
            let mut got = vec![0f32; m * rows];
            matmul_i8(&w, &x, m, &mut got);
            let q = quantize_rows(&x);
            for i in 0..m {
                for r in 0..rows {
                    let want: f32 = (0..cols).map(|c| x[i * cols + c] * wf[r * cols + c]).sum();
                    let scale: f32 = (0..cols)
                        .map(|c| (x[i * cols + c] * wf[r * cols + c]).abs())
                        .sum();
                    let g = got[i * rows + r];
                    assert!(
                        (g - want).abs() <= 0.01 * scale,
                        "[{i}, {r}]: {g} vs {want}"
                    );
                    let per_row = cols / BLOCK;
                    let row = Row {
                        codes: &q.codes[i * cols..(i + 1) * cols],
                        scales: &q.scales[i * per_row..(i + 1) * per_row],
                        sums: &q.sums[i * per_row..(i + 1) * per_row],
                    };
                    let span = r * per_row..(r + 1) * per_row;
                    let slow = match &w {
                        BlockMatrix::Q4 { blocks, .. } => portable::q4(&blocks[span], &row),
                        BlockMatrix::Q8 { blocks, .. } => portable::q8(&blocks[span], &row),
                    };
                    assert!(
                        (g - slow).abs() <= 1e-4 * slow.abs().max(1.0),
                        "{g} vs {slow}"
                    );
                }
            }
        }
    }
}
