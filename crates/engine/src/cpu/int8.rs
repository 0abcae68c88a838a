//! Wide products on AVX2 CPUs without a bfloat16 unit (AMD before Zen 4, Intel before Cooper
//! Lake): activations rounded to 8 bits with a scale per 32-input block (llama.cpp's Q8
//! activations), weights kept as their integer codes, multiplied by `vpmaddubsw`, which does
//! 32 byte multiplies per instruction where a float32 FMA does 8.
//!
//! Rounding: a block's inputs become `round(x / d)` with `d = max |x| / 127`; the weights are
//! exact (their codes and the block's scale and min), and every sum is exact in integers until a
//! group's lane is scaled by `d_w · d_x` in float32. The `min` of 4-bit affine blocks multiplies
//! the float sum of the block's inputs, unrounded. The path is opt-in (`EngineOptions::int8`):
//! on SmolLM2 the rounding costs half the greedy tokens' agreement with the float model (48%
//! before the first divergence, bfloat16 83-95%) and up to 3% perplexity, for about 1.3x the
//! float32 GEMM's speed on a Zen 3 (`examples/kernel_bench`: batch 16, 34 against 47-54 ms per
//! step's products; batch 64, 106-112 against 137-157).
//!
//! How the lanes stay one block each is `layout`'s business; `operands` builds both operands
//! that way and `tile` multiplies them. Each task lays out a panel of weight rows (unpacking the 4-bit codes and transposing within 128-bit halves), then
//! multiplies it by every activation row with a register tile of 4 activation rows by 2 weight
//! rows; 4-bit codes times 8-bit inputs fit 16 bits for a whole group of 8 blocks, so the
//! widening to 32 bits and the float scaling happen once per group, not per block.

mod layout;
mod operands;
#[cfg(test)]
mod portable;
mod tile;

use std::cell::RefCell;

use super::blocks::{BlockMatrix, BLOCK};
use super::pool;
use layout::Group;

/// Weight rows per task: 64 rows of 576 inputs lay out to 48 KiB (of 1,536 inputs, 120 KiB),
/// within L2.
const PANEL_ROWS: usize = 64;

thread_local! {
    /// The quantized activation rows of the current call (on the calling thread).
    static ACTIVATIONS: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// A task's laid-out weight panel.
    static PANEL: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Whether this kernel can run here (AVX2 and FMA).
pub fn available() -> bool {
    super::available() && cfg!(target_arch = "x86_64")
}

/// `y = x W^T` with 8-bit activations: `x` is `[m, cols]` row-major, `out` `[m, rows]`. Only
/// call when [`available`].
pub fn gemm(w: &BlockMatrix, x: &[f32], m: usize, out: &mut [f32]) {
    let (rows, cols) = (w.rows(), w.cols());
    assert!(available(), "the 8-bit kernel needs AVX2");
    assert_eq!(x.len(), m * cols);
    assert_eq!(out.len(), m * rows);
    let (groups, row_bytes) = layout::groups(cols);
    ACTIVATIONS.with_borrow_mut(|acts| {
        acts.resize(m * row_bytes, 0);
        let (mut blocks, mut sums) = (Vec::new(), Vec::new());
        for (row, laid) in x.chunks_exact(cols).zip(acts.chunks_exact_mut(row_bytes)) {
            // SAFETY: `available()` was asserted; `laid` holds the row's layout.
            unsafe { operands::quantize_row(row, &groups, &mut blocks, &mut sums, laid) };
        }
        let acts = &acts[..];
        pool::by_row_chunks(rows, PANEL_ROWS, m, out, |start, end| {
            let width = end - start;
            let mut tile = vec![0f32; m * width];
            PANEL.with_borrow_mut(|panel| {
                panel.resize(width * row_bytes, 0);
                expand_rows(w, start, end, &groups, row_bytes, panel);
                // SAFETY: `available()` was asserted; both operands are laid out by `groups`.
                unsafe {
                    tile::multiply(
                        acts,
                        m,
                        panel,
                        width,
                        &groups,
                        row_bytes,
                        is_signed(w),
                        &mut tile,
                    )
                };
            });
            tile
        });
    });
}

/// Whether the weights' codes are signed (8-bit blocks) rather than 4-bit codes 0..=15.
fn is_signed(w: &BlockMatrix) -> bool {
    matches!(w, BlockMatrix::Q8 { .. })
}

/// Lays out weight rows `start..end` into `panel` (`row_bytes` each).
fn expand_rows(
    w: &BlockMatrix,
    start: usize,
    end: usize,
    groups: &[Group],
    row_bytes: usize,
    panel: &mut [u8],
) {
    let per_row = w.cols() / BLOCK;
    for (r, laid) in (start..end).zip(panel.chunks_exact_mut(row_bytes)) {
        let span = r * per_row..(r + 1) * per_row;
        match w {
            // SAFETY: `gemm` asserted `available()`; the row holds `per_row` blocks.
            BlockMatrix::Q4 { blocks, .. } => unsafe {
                operands::lay_out_q4(&blocks[span], groups, laid)
            },
            // SAFETY: as above.
            BlockMatrix::Q8 { blocks, .. } => unsafe {
                operands::lay_out_q8(&blocks[span], groups, laid)
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::blocks::{Q4Block, Q8Block};
    use super::*;
    use crate::cpu::testing::lcg;

    fn q4_matrix(rows: usize, cols: usize, seed: &mut u64) -> BlockMatrix {
        let codes: Vec<u8> = (0..rows * cols)
            .map(|_| ((lcg(seed) + 0.5) * 16.0) as u8 % 16)
            .collect();
        let scales: Vec<f32> = (0..rows * cols / 32)
            .map(|_| lcg(seed).abs() * 0.1 + 0.01)
            .collect();
        let mins: Vec<f32> = (0..rows * cols / 32).map(|_| lcg(seed) * 0.2).collect();
        BlockMatrix::from_q4_codes(rows, cols, &codes, &scales, &mins)
    }

    fn q8_matrix(rows: usize, cols: usize, seed: &mut u64) -> BlockMatrix {
        let floats: Vec<f32> = (0..rows * cols).map(|_| lcg(seed)).collect();
        BlockMatrix::q8_from_floats(rows, cols, &floats)
    }

    /// The AVX2 layout of weight rows is the portable one, byte for byte.
    #[test]
    fn the_avx2_expansion_lays_out_weights_as_defined() {
        if !available() {
            return;
        }
        let mut seed = 3;
        for cols in [32, 64, 96, 352, 576, 1536] {
            let (groups, row_bytes) = layout::groups(cols);
            for w in [q4_matrix(3, cols, &mut seed), q8_matrix(3, cols, &mut seed)] {
                let mut fast = vec![0u8; 3 * row_bytes];
                expand_rows(&w, 0, 3, &groups, row_bytes, &mut fast);
                let slow = portable::lay_out(&w, 0, 3, &groups, row_bytes);
                assert_eq!(fast, slow, "{cols} inputs, signed {}", is_signed(&w));
            }
        }
    }

    /// The AVX2 kernel computes the portable definition (up to float summation order), for
    /// every tile edge and group size.
    #[test]
    fn the_avx2_kernel_computes_the_defined_sums() {
        if !available() {
            return;
        }
        let mut seed = 5;
        for cols in [32, 64, 352, 576] {
            for w in [q4_matrix(7, cols, &mut seed), q8_matrix(7, cols, &mut seed)] {
                for m in 1..=9 {
                    let x: Vec<f32> = (0..m * cols).map(|_| lcg(&mut seed) * 4.0).collect();
                    let mut got = vec![0f32; m * 7];
                    gemm(&w, &x, m, &mut got);
                    let want = portable::gemm(&w, &x, m);
                    for (i, (g, e)) in got.iter().zip(&want).enumerate() {
                        assert!(
                            (g - e).abs() <= 1e-5 * e.abs().max(1.0),
                            "{cols} inputs, m {m}, [{i}]: {g} vs {e}"
                        );
                    }
                }
            }
        }
    }

    /// Against the float product of the dequantized weights: the only error is the
    /// activations' rounding, at most half a step of each block's scale per input.
    #[test]
    fn stays_within_the_activations_rounding_of_the_float_product() {
        if !available() {
            return;
        }
        let mut seed = 9;
        let (rows, cols, m) = (70, 576, 16);
        for w in [
            q4_matrix(rows, cols, &mut seed),
            q8_matrix(rows, cols, &mut seed),
        ] {
            let wf = w.to_f32();
            let x: Vec<f32> = (0..m * cols).map(|_| lcg(&mut seed) * 3.0).collect();
            let mut got = vec![0f32; m * rows];
            gemm(&w, &x, m, &mut got);
            for i in 0..m {
                let xi = &x[i * cols..(i + 1) * cols];
                for r in 0..rows {
                    let wr = &wf[r * cols..(r + 1) * cols];
                    let want: f32 = xi.iter().zip(wr).map(|(a, b)| a * b).sum();
                    // Half a rounding step per input, times the weight's magnitude.
                    let bound: f32 = xi
                        .chunks(BLOCK)
                        .zip(wr.chunks(BLOCK))
                        .map(|(xb, wb)| {
                            let step = xb.iter().fold(0f32, |a, v| a.max(v.abs())) / 127.0;
                            0.5 * step * wb.iter().map(|v| v.abs()).sum::<f32>()
                        })
                        .sum();
                    let g = got[i * rows + r];
                    assert!(
                        (g - want).abs() <= bound * 1.01 + 1e-4,
                        "[{i}, {r}]: {g} vs {want} (bound {bound})"
                    );
                }
            }
        }
    }

    #[test]
    fn extreme_codes_do_not_saturate() {
        if !available() {
            return;
        }
        // All codes at 15 (4-bit) or -128/127 (8-bit) against inputs at the rounding's limits:
        // the 16-bit sums of a group of 8 blocks reach 8 · 2 · 15 · 127 = 30,480 < 32,767.
        let cols = 256;
        let q4 = BlockMatrix::Q4 {
            rows: 1,
            cols,
            blocks: vec![Q4Block::new(1.0, 0.0, [0xFF; 16]); cols / 32],
        };
        let q8 = BlockMatrix::Q8 {
            rows: 1,
            cols,
            blocks: vec![
                Q8Block {
                    scale: 1.0,
                    qs: [-128; 32],
                };
                cols / 32
            ],
        };
        for sign in [1.0f32, -1.0] {
            let x = vec![sign; cols];
            let mut got = [0f32];
            gemm(&q4, &x, 1, &mut got);
            assert_eq!(got[0], sign * 15.0 * cols as f32);
            gemm(&q8, &x, 1, &mut got);
            assert_eq!(got[0], -sign * 128.0 * cols as f32);
        }
    }
}
