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
//!
//! On CPUs with AVX-512 VNNI (AMD Zen 4 and 5, Intel from Ice Lake) the same scheme runs on
//! 64-byte vectors, `tile512`: 16 weight rows a vector, and `vpdpwssd` multiplies and adds in
//! one instruction. AVX-512 without VNNI keeps the AVX2 tile.

mod activations;
mod decode;
mod decode512;
mod tile;
mod tile512;

use std::cell::RefCell;

use super::blocks::BlockMatrix;
use super::pool::{self, SharedOut};
use activations::Activations;

/// Weight rows per 32-byte vector (its eight 32-bit lanes).
const LANES: usize = 8;
/// Weight vectors (strips of one vector's rows) per register tile.
const STRIPS: usize = 2;
/// Activation rows per group, the AVX2 tile's rows (the AVX-512 tile takes two groups).
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

/// One 32-byte vector's 8 lanes, aligned so that loading or storing it touches one cache line.
#[derive(Clone, Copy, Default)]
#[repr(C, align(32))]
struct Vector([i32; LANES]);

/// One cache line: a 64-byte vector, or two 32-byte ones.
#[derive(Clone, Copy, Default)]
#[repr(C, align(64))]
struct Line([Vector; 2]);

/// Lines seen as the 32-byte vectors they hold.
fn vectors(lines: &mut [Line]) -> &mut [Vector] {
    // SAFETY: a `Line` is two `Vector`s, `repr(C)`, without padding.
    unsafe { std::slice::from_raw_parts_mut(lines.as_mut_ptr().cast(), lines.len() * 2) }
}

/// The vector width the kernel runs at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Width {
    /// 32-byte vectors, `vpmaddwd` and `vpaddd` (`tile`).
    Avx2,
    /// 64-byte vectors, `vpdpwssd` (`tile512`).
    Avx512,
}

impl Width {
    /// The widest this CPU runs (under the `BEAMLINE_CPU_ISA` cap).
    fn here() -> Width {
        if wide_available() {
            Width::Avx512
        } else {
            Width::Avx2
        }
    }

    /// 32-byte halves per vector.
    fn halves(self) -> usize {
        match self {
            Width::Avx2 => 1,
            Width::Avx512 => 2,
        }
    }

    /// Weight rows decoded at a time: two strips of a vector's lanes.
    fn sub_panel_rows(self) -> usize {
        STRIPS * LANES * self.halves()
    }

    /// Activation groups per register tile.
    fn tile_groups(self) -> usize {
        match self {
            Width::Avx2 => 1,
            Width::Avx512 => tile512::TILE_GROUPS,
        }
    }

    /// 32-byte vectors a decoded sub-panel of `blocks` blocks takes.
    fn panel_vectors(self, blocks: usize) -> usize {
        blocks * STRIPS * STRIP_BLOCK * self.halves()
    }
}

/// A task's scratch: the decoded sub-panel and the float sums of one chunk of activation rows.
#[derive(Default)]
struct Scratch {
    panel: Vec<Line>,
    sums: Vec<Line>,
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

/// Whether it runs on 64-byte vectors here (AVX-512 F, BW and VNNI, not capped to AVX2). There
/// it out-runs the float32 AVX-512 kernel (`fma512`) from 2 rows on, on AMD's cores and Intel's
/// alike (`examples/kernel_bench`, one step's products: a Zen 5 10.4 ms against 14.1 at batch
/// 16 and 7.6 against 8.9 at batch 4; an Emerald Rapids Xeon 16.7-18.6 against 24.4-27.0 at
/// batch 16 and 10.5-11.7 against 17.7-18.4 at batch 4), so it takes those products wherever
/// 16-bit activations are allowed.
pub fn wide_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        available()
            && super::isa::allows_avx512()
            && std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `y = x W^T` with 16-bit activations: `x` is `[m, cols]` row-major, `out` `[m, rows]`. Only
/// call when [`available`].
pub fn gemm(w: &BlockMatrix, x: &[f32], m: usize, out: &mut [f32]) {
    gemm_at(Width::here(), w, x, m, out)
}

/// [`gemm`] at `width` (AVX-512 only where [`wide_available`]).
fn gemm_at(width: Width, w: &BlockMatrix, x: &[f32], m: usize, out: &mut [f32]) {
    let (rows, cols) = (w.rows(), w.cols());
    assert!(available(), "the 16-bit kernel needs AVX2");
    assert_eq!(x.len(), m * cols);
    assert_eq!(out.len(), m * rows);
    if m == 0 || rows == 0 {
        return;
    }
    assert!(width == Width::Avx2 || wide_available());
    let sub_panel_rows = width.sub_panel_rows();
    let tile_rows = GROUP * width.tile_groups();
    let per_task = pool::rows_per_task(rows, sub_panel_rows);
    let signed = matches!(w, BlockMatrix::Q8 { .. });
    ACTIVATIONS.with_borrow_mut(|acts| {
        acts.lay_out(x, m, cols, width.tile_groups());
        let acts = &*acts;
        let base = SharedOut(out.as_mut_ptr());
        pool::run(rows.div_ceil(per_task), &|task| {
            let start = task * per_task;
            let end = (start + per_task).min(rows);
            SCRATCH.with_borrow_mut(|scratch| {
                let panel_lines = width.panel_vectors(acts.blocks()).div_ceil(2);
                if scratch.panel.len() < panel_lines {
                    scratch.panel.resize(panel_lines, Line::default());
                }
                // A vector per strip and row of the chunk, rounded up to whole tiles.
                let sums_vectors = CHUNK_ROWS.div_ceil(tile_rows) * tile_rows * STRIPS;
                let sums_lines = (sums_vectors * width.halves()).div_ceil(2);
                if scratch.sums.len() < sums_lines {
                    scratch.sums.resize(sums_lines, Line::default());
                }
                for r0 in (start..end).step_by(sub_panel_rows) {
                    let count = (end - r0).min(sub_panel_rows);
                    let next = (r0 + count)..(r0 + count + sub_panel_rows).min(rows);
                    // SAFETY: `available()` (and for AVX-512 `wide_available()`) was
                    // asserted; rows `r0..r0 + count` and `next` exist and the panel holds a
                    // sub-panel of `cols` inputs.
                    unsafe {
                        match width {
                            Width::Avx2 => {
                                decode::sub_panel(w, r0, count, next, vectors(&mut scratch.panel))
                            }
                            Width::Avx512 => {
                                decode512::sub_panel(w, r0, count, next, &mut scratch.panel)
                            }
                        }
                    };
                    let panel = vectors(&mut scratch.panel);
                    for chunk in (0..m).step_by(CHUNK_ROWS) {
                        let rows_done = chunk..(chunk + CHUNK_ROWS).min(m);
                        let at = base.get().wrapping_add(r0);
                        // SAFETY: as above (`wide_available()` for the AVX-512 tile); this
                        // task alone writes output columns `r0..r0 + count` of the chunk's
                        // rows, inside `out`.
                        unsafe {
                            match width {
                                Width::Avx2 => tile::sub_panel_product(
                                    panel,
                                    acts,
                                    rows_done,
                                    signed,
                                    vectors(&mut scratch.sums),
                                    at,
                                    rows,
                                    count,
                                ),
                                Width::Avx512 => tile512::sub_panel_product(
                                    panel,
                                    acts,
                                    rows_done,
                                    signed,
                                    &mut scratch.sums,
                                    at,
                                    rows,
                                    count,
                                ),
                            }
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

    /// The widths this CPU runs: AVX2, and AVX-512 where it has VNNI.
    fn widths() -> Vec<Width> {
        let mut widths = Vec::new();
        if available() {
            widths.push(Width::Avx2);
        }
        if wide_available() {
            widths.push(Width::Avx512);
        }
        widths
    }

    /// `gemm_at` at each width, as the plain function the shared check takes.
    fn gemm_fn(width: Width) -> fn(&BlockMatrix, &[f32], usize, &mut [f32]) {
        match width {
            Width::Avx2 => |w, x, m, out| gemm_at(Width::Avx2, w, x, m, out),
            Width::Avx512 => |w, x, m, out| gemm_at(Width::Avx512, w, x, m, out),
        }
    }

    /// Every tile edge (ragged strips and sub-panels, activation rows from one to past two
    /// tiles) against the float product, within the rounding's 2^-15 relative step.
    #[test]
    fn matches_the_float_product_for_every_edge() {
        for width in widths() {
            check_against_the_float_product(gemm_fn(width), 21, 1e-3);
        }
    }

    /// Both widths compute the same integer sums, scaled the same way: their outputs agree
    /// to float32 rounding, for 4- and 8-bit blocks and row counts around the tiles' edges.
    #[test]
    fn both_widths_agree() {
        if !wide_available() {
            return;
        }
        let mut seed = 5;
        let (rows, cols) = (77, 320);
        for m in [1, 3, 8, 12, 13, 64, 67, 130] {
            for w in [
                q4_matrix(rows, cols, &mut seed),
                q8_matrix(rows, cols, &mut seed),
            ] {
                let x: Vec<f32> = (0..m * cols).map(|_| lcg(&mut seed) * 2.0).collect();
                let mut narrow = vec![f32::NAN; m * rows];
                let mut wide = vec![f32::NAN; m * rows];
                gemm_at(Width::Avx2, &w, &x, m, &mut narrow);
                gemm_at(Width::Avx512, &w, &x, m, &mut wide);
                for (k, (a, b)) in narrow.iter().zip(&wide).enumerate() {
                    assert!(
                        (a - b).abs() <= 1e-5 * a.abs().max(1.0),
                        "m {m} at {k}: {a} vs {b}"
                    );
                }
            }
        }
    }

    /// Against the float product of the dequantized weights the only error is the
    /// activations' rounding: at most half a step of each block's scale per input, times the
    /// weight. Covers several chunks of activation rows and tasks of many sub-panels.
    #[test]
    fn stays_within_the_activations_rounding_of_the_float_product() {
        for width in widths() {
            within_the_rounding(width);
        }
    }

    fn within_the_rounding(width: Width) {
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
                gemm_at(width, &w, &x, m, &mut got);
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
                            "{width:?} m {m} [{i}, {r}]: {g} vs {want} (bound {bound})"
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
        for width in widths() {
            extreme_codes(width);
        }
    }

    fn extreme_codes(width: Width) {
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
            gemm_at(width, &q4, &x, 1, &mut got);
            assert!(close(got[0], sign * 13.0 * cols as f32), "{}", got[0]);
            gemm_at(width, &q8, &x, 1, &mut got);
            assert!(close(got[0], -sign * 128.0 * cols as f32), "{}", got[0]);
        }
    }

    /// A block of zeros (scale zero) and a row with a non-finite input: zeros stay exact, and
    /// the non-finite input makes its outputs non-finite instead of a silent number.
    #[test]
    fn zero_blocks_are_exact_and_non_finite_inputs_show() {
        let mut seed = 4;
        let (rows, cols) = (40, 64);
        let w = q4_matrix(rows, cols, &mut seed);
        let mut x = vec![0f32; 2 * cols];
        x[cols + 5] = f32::NAN;
        for width in widths() {
            let mut got = vec![1f32; 2 * rows];
            gemm_at(width, &w, &x, 2, &mut got);
            assert!(got[..rows].iter().all(|&v| v == 0.0), "{width:?}");
            assert!(got[rows..].iter().all(|v| !v.is_finite()), "{width:?}");
        }
    }
}
