//! Wide products on AVX2 CPUs without AVX-512 (AMD before Zen 4, Intel client cores):
//! activations rounded to 16 bits with a scale per 32-input block, weights kept as their
//! integer codes, multiplied by `vpmaddwd`, which does 16 multiplies (and adds them in pairs)
//! where a float32 FMA does 8, at the same rate on these cores (a Zen 3: 6.4 of either a
//! nanosecond, register operands).
//!
//! Rounding: a block's inputs become `round(x / d)` with `d = max |x| / 32767`, a relative
//! step of 2^-15 of the block's largest input (bfloat16 keeps 2^-8 of each value, the opt-in
//! 8-bit path 2^-7 of the block's largest); the weights are exact (their codes, and the
//! block's scale and min in float32), every block's sum is exact in 32-bit integers (4-bit
//! codes times 16-bit inputs, 32 of them: below 2^24; 8-bit codes: below 2^28), and the sums
//! are scaled by `d_w · d_x` in float32. The `min` of 4-bit affine blocks multiplies the float
//! sum of the block's inputs, unrounded. So the product is the float model's to about five
//! significant digits, which is why this kernel, unlike the 8-bit one, runs by default.
//!
//! Layout: the lanes are weight rows, so nothing is summed across lanes and a register holds 8
//! outputs of one activation row, stored as they are. A block's inputs are taken in pairs
//! `(j, j + 16)`, the two nibbles of byte `j` of a 4-bit block: a weight vector holds, for 8
//! rows, the pair of codes of one input pair as two 16-bit halves of a lane, and an activation
//! row's pair is broadcast to every lane. `decode` lays out 8 rows' blocks that way (a byte
//! transpose of the 8 rows' 16 code bytes, no arithmetic on the weights), `activations`
//! rounds and lays out the activation rows once per call, `tile` multiplies a sub-panel of 16
//! weight rows by groups of 4 activation rows.

mod activations;
mod decode;
mod tile;

use std::cell::RefCell;

use super::blocks::BlockMatrix;
use super::pool::{self, SharedOut};
use activations::Activations;

/// Weight rows per vector (its eight 32-bit lanes).
const LANES: usize = 8;
/// Weight vectors (strips of 8 rows) per register tile.
const STRIPS: usize = 2;
/// Weight rows decoded at a time.
const SUB_PANEL_ROWS: usize = STRIPS * LANES;
/// Activation rows per register tile.
const GROUP: usize = 4;
/// Input pairs per 32-input block.
const PAIRS: usize = 16;
/// Vectors per decoded block of a strip: 16 code vectors, the rows' scales, the rows' mins.
const STRIP_BLOCK: usize = PAIRS + 2;
/// Activation rows whose float sums a task keeps across a sub-panel's blocks (4 KiB, in L1).
/// A decoded sub-panel multiplies every activation row, chunk after chunk, before the next is
/// decoded: a prefill's thousand rows then decode the weights once instead of once a chunk
/// (3-5% faster at 256 and 1,024 rows on a Zen 4 kept to AVX2), the activations streaming
/// from L2 and L3 at 8 multiply-adds a byte.
const CHUNK_ROWS: usize = 64;

/// One vector's 8 lanes, aligned so that loading or storing it touches one cache line.
#[derive(Clone, Copy, Default)]
#[repr(C, align(32))]
struct Vector([i32; LANES]);

/// A task's scratch: the decoded sub-panel and the float sums of one chunk of activation rows.
#[derive(Default)]
struct Scratch {
    panel: Vec<Vector>,
    sums: Vec<Vector>,
}

thread_local! {
    /// The caller's activations, rounded and laid out, reused across calls.
    static ACTIVATIONS: RefCell<Activations> = RefCell::new(Activations::default());
    /// A task's scratch, reused across tasks and calls.
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Whether this kernel can run here (AVX2, FMA and F16C).
pub fn available() -> bool {
    super::available() && cfg!(target_arch = "x86_64")
}

/// `y = x W^T` with 16-bit activations: `x` is `[m, cols]` row-major, `out` `[m, rows]`. Only
/// call when [`available`].
pub fn gemm(w: &BlockMatrix, x: &[f32], m: usize, out: &mut [f32]) {
    let (rows, cols) = (w.rows(), w.cols());
    assert!(available(), "the 16-bit kernel needs AVX2");
    assert_eq!(x.len(), m * cols);
    assert_eq!(out.len(), m * rows);
    if m == 0 || rows == 0 {
        return;
    }
    let per_task = pool::rows_per_task(rows, SUB_PANEL_ROWS);
    let signed = matches!(w, BlockMatrix::Q8 { .. });
    ACTIVATIONS.with_borrow_mut(|acts| {
        acts.lay_out(x, m, cols);
        let acts = &*acts;
        let base = SharedOut(out.as_mut_ptr());
        pool::run(rows.div_ceil(per_task), &|task| {
            let start = task * per_task;
            let end = (start + per_task).min(rows);
            SCRATCH.with_borrow_mut(|scratch| {
                let panel_len = acts.blocks() * STRIPS * STRIP_BLOCK;
                if scratch.panel.len() < panel_len {
                    scratch.panel.resize(panel_len, Vector::default());
                }
                let sums_len = CHUNK_ROWS.div_ceil(GROUP) * STRIPS * GROUP;
                if scratch.sums.len() < sums_len {
                    scratch.sums.resize(sums_len, Vector::default());
                }
                for r0 in (start..end).step_by(SUB_PANEL_ROWS) {
                    let count = (end - r0).min(SUB_PANEL_ROWS);
                    let next = (r0 + count)..(r0 + count + SUB_PANEL_ROWS).min(rows);
                    // SAFETY: `available()` was asserted; rows `r0..r0 + count` and `next`
                    // exist and the panel holds a sub-panel of `cols` inputs.
                    unsafe { decode::sub_panel(w, r0, count, next, &mut scratch.panel) };
                    for chunk in (0..m).step_by(CHUNK_ROWS) {
                        let chunk_end = (chunk + CHUNK_ROWS).min(m);
                        // SAFETY: as above; this task alone writes output columns
                        // `r0..r0 + count` of rows `chunk..chunk_end`, inside `out`.
                        unsafe {
                            tile::sub_panel_product(
                                &scratch.panel,
                                acts,
                                chunk..chunk_end,
                                signed,
                                &mut scratch.sums,
                                base.get().add(r0),
                                rows,
                                count,
                            )
                        };
                    }
                }
            });
        });
    });
}

#[cfg(test)]
mod tests {
    use super::super::blocks::{Q4Block, Q8Block, BLOCK};
    use super::*;
    use crate::cpu::testing::{check_against_the_float_product, lcg};

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

    /// Every tile edge (ragged strips and sub-panels, activation rows from one to past two
    /// groups) against the float product, within the rounding's 2^-15 relative step.
    #[test]
    fn matches_the_float_product_for_every_edge() {
        if !available() {
            return;
        }
        check_against_the_float_product(gemm, 21, 1e-3);
    }

    /// Against the float product of the dequantized weights the only error is the
    /// activations' rounding: at most half a step of each block's scale per input, times the
    /// weight. Covers several chunks of activation rows and tasks of many sub-panels.
    #[test]
    fn stays_within_the_activations_rounding_of_the_float_product() {
        if !available() {
            return;
        }
        let mut seed = 9;
        let (rows, cols) = (100, 576);
        for m in [4, 16, 70, 131] {
            for w in [
                q4_matrix(rows, cols, &mut seed),
                q8_matrix(rows, cols, &mut seed),
            ] {
                let wf = w.to_f32();
                let x: Vec<f32> = (0..m * cols).map(|_| lcg(&mut seed) * 3.0).collect();
                let mut got = vec![f32::NAN; m * rows];
                gemm(&w, &x, m, &mut got);
                for i in 0..m {
                    let xi = &x[i * cols..(i + 1) * cols];
                    for r in 0..rows {
                        let wr = &wf[r * cols..(r + 1) * cols];
                        let want: f64 = xi.iter().zip(wr).map(|(a, b)| (a * b) as f64).sum();
                        let bound: f32 = xi
                            .chunks(BLOCK)
                            .zip(wr.chunks(BLOCK))
                            .map(|(xb, wb)| {
                                let step = xb.iter().fold(0f32, |a, v| a.max(v.abs())) / 32767.0;
                                0.5 * step * wb.iter().map(|v| v.abs()).sum::<f32>()
                            })
                            .sum();
                        let g = got[i * rows + r];
                        assert!(
                            (g as f64 - want).abs() <= bound as f64 * 1.01 + 1e-4,
                            "m {m} [{i}, {r}]: {g} vs {want} (bound {bound})"
                        );
                    }
                }
            }
        }
    }

    /// Codes at their extremes against inputs at the rounding's limit: no saturation, the min
    /// term included (the integer sums are exact; only the float scaling rounds).
    #[test]
    fn extreme_codes_give_exact_sums() {
        if !available() {
            return;
        }
        let cols = 256;
        let q4 = BlockMatrix::Q4 {
            rows: 1,
            cols,
            blocks: vec![Q4Block::new(1.0, -2.0, [0xFF; 16]); cols / BLOCK],
        };
        let q8 = BlockMatrix::Q8 {
            rows: 1,
            cols,
            blocks: vec![
                Q8Block {
                    scale: 1.0,
                    qs: [-128; 32],
                };
                cols / BLOCK
            ],
        };
        for sign in [1.0f32, -1.0] {
            let x = vec![sign; cols];
            let mut got = [0f32];
            let close = |got: f32, want: f32| (got - want).abs() <= 1e-6 * want.abs();
            gemm(&q4, &x, 1, &mut got);
            assert!(close(got[0], sign * 13.0 * cols as f32), "{}", got[0]);
            gemm(&q8, &x, 1, &mut got);
            assert!(close(got[0], -sign * 128.0 * cols as f32), "{}", got[0]);
        }
    }

    /// A block of zeros (scale zero) and a row with a non-finite input: zeros stay exact, and
    /// the non-finite input makes its outputs non-finite instead of a silent number.
    #[test]
    fn zero_blocks_are_exact_and_non_finite_inputs_show() {
        if !available() {
            return;
        }
        let mut seed = 4;
        let (rows, cols) = (24, 64);
        let w = q4_matrix(rows, cols, &mut seed);
        let mut x = vec![0f32; 2 * cols];
        x[cols + 5] = f32::NAN;
        let mut got = vec![1f32; 2 * rows];
        gemm(&w, &x, 2, &mut got);
        assert!(got[..rows].iter().all(|&v| v == 0.0));
        assert!(got[rows..].iter().all(|v| !v.is_finite()));
    }
}
