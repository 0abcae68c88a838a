//! `y = x W^T` for a few activation rows. Output rows of `W` are split into chunks across the
//! kernel pool's threads; within a chunk each weight row is reused for every activation row
//! while it sits in L1.

use super::blocks::{BlockMatrix, BLOCK};
use super::dot;
use super::pool;

/// Rows of `W` per parallel task: enough work to amortise scheduling, small enough to balance.
const ROWS_PER_TASK: usize = 64;

/// How far ahead of the row being multiplied its successors are prefetched. The rows are read
/// once per step from memory; the hardware prefetcher alone left a third of the bandwidth
/// unused (measured with `examples/kernel_bench`, batch 1: 22 against 16–17 CPU-ms per step
/// with 4 KiB; 2 and 16 KiB were in between).
const PREFETCH_BYTES: usize = 4096;

/// `x` is `[m, cols]` row-major; writes `out` as `[m, rows]` row-major.
pub fn matmul(w: &BlockMatrix, x: &[f32], m: usize, out: &mut [f32]) {
    let (rows, cols) = (w.rows(), w.cols());
    debug_assert_eq!(x.len(), m * cols);
    debug_assert_eq!(out.len(), m * rows);
    let per_row = cols / BLOCK;
    let sums = dot::block_sums(x);
    pool::by_row_chunks(rows, ROWS_PER_TASK, m, out, |start, end| {
        let width = end - start;
        let mut tile = vec![0f32; m * width];
        let x_row = |i: usize| &x[i * cols..(i + 1) * cols];
        let sum_row = |i: usize| &sums[i * per_row..(i + 1) * per_row];
        let ahead = PREFETCH_BYTES.div_ceil(w.row_bytes());
        for r in start..end {
            let span = r * per_row..(r + 1) * per_row;
            if r + ahead < rows {
                w.prefetch_row(r + ahead);
            }
            let mut i = 0;
            // Four activation rows at a time share each expanded weight block.
            while i + 4 <= m {
                let xs = [x_row(i), x_row(i + 1), x_row(i + 2), x_row(i + 3)];
                let four = match w {
                    BlockMatrix::Q4 { blocks, .. } => {
                        let ss = [sum_row(i), sum_row(i + 1), sum_row(i + 2), sum_row(i + 3)];
                        dot::q4_x4(&blocks[span.clone()], xs, ss)
                    }
                    BlockMatrix::Q8 { blocks, .. } => dot::q8_x4(&blocks[span.clone()], xs),
                };
                for (j, v) in four.into_iter().enumerate() {
                    tile[(i + j) * width + (r - start)] = v;
                }
                i += 4;
            }
            for i in i..m {
                tile[i * width + (r - start)] = match w {
                    BlockMatrix::Q4 { blocks, .. } => {
                        dot::q4(&blocks[span.clone()], x_row(i), sum_row(i))
                    }
                    BlockMatrix::Q8 { blocks, .. } => dot::q8(&blocks[span.clone()], x_row(i)),
                };
            }
        }
        tile
    });
}

#[cfg(test)]
mod tests {
    use super::super::blocks::{BlockMatrix, Q4Block};
    use super::super::dot::portable;
    use super::*;
    use crate::cpu::testing::lcg;

    fn reference(w: &[f32], x: &[f32], rows: usize, cols: usize, m: usize) -> Vec<f32> {
        let mut out = vec![0f32; m * rows];
        for i in 0..m {
            for r in 0..rows {
                out[i * rows + r] = (0..cols).map(|c| x[i * cols + c] * w[r * cols + c]).sum();
            }
        }
        out
    }

    fn check(w: &BlockMatrix, m: usize, seed: &mut u64) {
        let (rows, cols) = (w.rows(), w.cols());
        let x: Vec<f32> = (0..m * cols).map(|_| lcg(seed)).collect();
        let want = reference(&w.to_f32(), &x, rows, cols, m);
        let mut got = vec![0f32; m * rows];
        matmul(w, &x, m, &mut got);
        let scale = want.iter().fold(0f32, |a, v| a.max(v.abs()));
        let err = got
            .iter()
            .zip(&want)
            .map(|(g, w)| (g - w).abs())
            .fold(0f32, f32::max);
        // Float32 activations: only summation order differs.
        assert!(err < 1e-4 * scale, "max error {err} vs scale {scale}");
    }

    #[test]
    fn q4_and_q8_match_float_reference() {
        let mut seed = 42;
        let (rows, cols) = (130, 96);
        let codes: Vec<u8> = (0..rows * cols).map(|i| (i * 7 % 16) as u8).collect();
        let scales: Vec<f32> = (0..rows * cols / 32)
            .map(|_| lcg(&mut seed).abs() * 0.1 + 0.01)
            .collect();
        let mins: Vec<f32> = (0..rows * cols / 32)
            .map(|_| lcg(&mut seed) * 0.2)
            .collect();
        let q4 = BlockMatrix::from_q4_codes(rows, cols, &codes, &scales, &mins);
        let floats: Vec<f32> = (0..rows * cols).map(|_| lcg(&mut seed)).collect();
        let q8 = BlockMatrix::q8_from_floats(rows, cols, &floats);
        for m in [1, 3, 17] {
            check(&q4, m, &mut seed);
            check(&q8, m, &mut seed);
        }
    }

    #[test]
    fn simd_equals_portable() {
        let mut seed = 7;
        let blocks: Vec<Q4Block> = (0..8)
            .map(|_| {
                Q4Block::new(
                    lcg(&mut seed),
                    lcg(&mut seed),
                    std::array::from_fn(|_| (lcg(&mut seed) * 500.0) as i32 as u8),
                )
            })
            .collect();
        let x: Vec<f32> = (0..256).map(|_| lcg(&mut seed) * 100.0).collect();
        let sums = dot::block_sums(&x);
        let fast = dot::q4(&blocks, &x, &sums);
        let slow = portable::q4(&blocks, &x, &sums);
        assert!(
            (fast - slow).abs() <= 1e-4 * slow.abs().max(1.0),
            "{fast} vs {slow}"
        );
        // The AVX2 kernel too, where `dot::q4` took the AVX-512 one.
        #[cfg(target_arch = "x86_64")]
        if crate::cpu::available() {
            // SAFETY: the CPU has AVX2, FMA and F16C (checked above).
            let avx2 = unsafe { dot::avx2::q4(&blocks, &x, &sums) };
            assert!(
                (avx2 - slow).abs() <= 1e-4 * slow.abs().max(1.0),
                "{avx2} vs {slow}"
            );
        }
        let four = dot::q4_x4(&blocks, [&x, &x, &x, &x], [&sums, &sums, &sums, &sums]);
        assert!(
            four.iter()
                .all(|v| (v - slow).abs() <= 1e-4 * slow.abs().max(1.0)),
            "{four:?} vs {slow}"
        );
    }
}
