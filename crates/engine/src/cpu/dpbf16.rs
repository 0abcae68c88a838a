//! Wide products on AMD CPUs with AVX-512 BF16 (from Zen 4): the same bfloat16 operands as
//! `amx` (see `pairs`), multiplied by `vdpbf16ps`, which does two bfloat16 multiply-adds per
//! float32 lane, twice a float32 FMA's work per instruction there. Intel cores without an
//! exposed tile unit run `fma512` instead (see [`faster_than_float32`]).
//!
//! Each task expands 32 weight rows, block column by block column, then multiplies them by
//! every group of 16 activation rows. The register tile is 16 weight rows by one group: one
//! accumulator per weight row, whose lanes are the 16 activation rows; a step loads one row of
//! an activation tile (16 rows' pair of inputs) and multiplies it by each weight row's pair,
//! broadcast from the expanded panel. The weights need no re-layout (an expanded row is read as
//! 16 pairs) and the 16 accumulators leave room for the operands in the 32 vector registers.
//! The products come out transposed (a register per weight row) and are turned into output
//! rows on the way out.
//!
//! Rounding as on the tile unit: activations and expanded weights are bfloat16, the sums
//! float32. The engine option that turns the tile unit off turns this path off too.

use std::sync::OnceLock;

use super::blocks::BlockMatrix;
use super::pairs::{self, TILE};
use super::pool::{self, SharedOut};

/// Weight rows expanded at a time (one `Tiles` per block column).
const SUB_PANEL_ROWS: usize = 2 * TILE;

/// Whether this kernel can run here.
pub fn available() -> bool {
    pairs::available()
}

/// Whether this kernel out-runs the float32 one (`fma512`) here: on AMD cores (Zen 4 and 5)
/// `vdpbf16ps` does twice a float32 FMA's multiply-adds; Intel cores retire one every other
/// cycle, half the float32 rate (an Emerald Rapids Xeon: 1.35 instructions a nanosecond
/// against 5.5 FMAs; one step's products at batch 16 35.8 ms here against 26.7 in float32).
pub fn faster_than_float32() -> bool {
    static FASTER: OnceLock<bool> = OnceLock::new();
    *FASTER.get_or_init(|| available() && !super::isa::intel())
}

/// `y = x W^T`: `x` is `[m, cols]` row-major, `out` `[m, rows]`. Only call when [`available`].
pub fn gemm(w: &BlockMatrix, x: &[f32], m: usize, out: &mut [f32]) {
    let (rows, cols) = (w.rows(), w.cols());
    assert!(available(), "the bfloat16 kernel needs AVX-512 BF16");
    assert_eq!(x.len(), m * cols);
    assert_eq!(out.len(), m * rows);
    let per_task = pool::rows_per_task(rows, SUB_PANEL_ROWS);
    pairs::with_activation_tiles(x, m, cols, |acts| {
        let base = SharedOut(out.as_mut_ptr());
        pool::run(rows.div_ceil(per_task), &|task| {
            let start = task * per_task;
            let end = (start + per_task).min(rows);
            // SAFETY: `available()` checked the CPU; `acts` holds the tiles of `m` rows of
            // `cols` inputs; `out` holds `m * rows` floats and this task alone writes its
            // columns `start..end`.
            unsafe { x86::panel_product(w, start, end, acts, m, base.get().add(start), rows) };
        });
    });
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::super::blocks::{BlockMatrix, BLOCK};
    use super::super::pairs::{expand_column, with_sub_panel, Tiles, TILE, TILE_BYTES};
    use super::super::transpose::transpose_out;
    use super::SUB_PANEL_ROWS;

    /// `out[i * stride + j] = x[i] · w[start + j]` for weight rows `start..end` and the `m`
    /// activation rows given as tiles.
    ///
    /// # Safety
    /// The CPU has AVX-512F/BW/BF16; `acts` holds `ceil(m / 16) * cols / 32` tiles; `out` is
    /// valid for writes at `i * stride + j` for `i < m`, `j < end - start`, and nobody else
    /// accesses those floats meanwhile.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub unsafe fn panel_product(
        w: &BlockMatrix,
        start: usize,
        end: usize,
        acts: &[u8],
        m: usize,
        out: *mut f32,
        stride: usize,
    ) {
        let kblocks = w.cols() / BLOCK;
        let groups = m.div_ceil(TILE);
        let width = end - start;
        assert!(end <= w.rows() && width <= stride);
        assert!(acts.len() >= groups * kblocks * TILE_BYTES);
        for r0 in (start..end).step_by(SUB_PANEL_ROWS) {
            let count = (end - r0).min(SUB_PANEL_ROWS);
            // The next sub-panel: its bytes are prefetched while this one is multiplied, so that
            // its expansion finds them in cache (the multiplication reads no memory). Past the
            // task's end that is the next task's first, which this thread or the other is
            // about to take (lines in a neighbour core's cache still come faster than memory).
            let next = (r0 + count)..(r0 + count + SUB_PANEL_ROWS).min(w.rows());
            let (ahead, ahead_bytes) = w.row_span(next);
            with_sub_panel(kblocks, |panel| {
                for (kb, pair) in panel.iter_mut().enumerate() {
                    // SAFETY: rows `r0..r0 + count` exist; `kb` is a block column.
                    unsafe { expand_column(w, r0, count, &(r0..r0), kb, pair) };
                }
                let halves = count.div_ceil(TILE);
                let calls = halves * groups;
                for half in 0..halves {
                    let j0 = r0 - start + half * TILE;
                    let columns = (count - half * TILE).min(TILE);
                    for group in 0..groups {
                        let tiles = acts[group * kblocks * TILE_BYTES..].as_ptr();
                        let call = half * groups + group;
                        let share =
                            (call * ahead_bytes / calls)..((call + 1) * ahead_bytes / calls);
                        // SAFETY: `panel` holds `kblocks` expanded columns; `tiles` covers
                        // `kblocks` tiles of this group; `share` lies inside the next rows.
                        let products = unsafe { tile_product(panel, half, tiles, ahead, share) };
                        let lanes = (m - group * TILE).min(TILE);
                        // SAFETY: rows `group * 16 + lane < m`, columns `j0 + j < width`:
                        // the caller's contract on `out`.
                        unsafe {
                            transpose_out(
                                &products,
                                lanes,
                                columns,
                                out.add(group * TILE * stride + j0),
                                stride,
                            )
                        };
                    }
                }
            });
        }
    }

    /// Lane `i` of register `r` of the result = weight row `16 half + r` of the sub-panel ·
    /// activation row `i` of the group whose tiles start at `tiles`. Prefetches bytes `share` from `ahead` into L2
    /// on the way, spread over the block columns.
    ///
    /// # Safety
    /// The CPU has AVX-512F/BW/BF16; `tiles` points at `panel.len()` activation tiles.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn tile_product(
        panel: &[Tiles],
        half: usize,
        tiles: *const u8,
        ahead: *const u8,
        share: std::ops::Range<usize>,
    ) -> [__m512; TILE] {
        let mut acc = [_mm512_setzero_ps(); TILE];
        let kblocks = panel.len();
        let lines = share.len().div_ceil(64);
        for (kb, pair) in panel.iter().enumerate() {
            for line in kb * lines / kblocks..(kb + 1) * lines / kblocks {
                // A hint only: the address lies in the matrix's blocks.
                _mm_prefetch::<_MM_HINT_T1>(ahead.wrapping_add(share.start + line * 64).cast());
            }
            // Weight row `r`'s pair `p` is the 32-bit word `r * 16 + p` of this half.
            let weights = pair.0[half * TILE * BLOCK..].as_ptr().cast::<i32>();
            // SAFETY: tile `kb` of the group has 16 rows of 64 bytes; the half holds 16 rows of
            // 16 pairs.
            unsafe {
                let tile = tiles.add(kb * TILE_BYTES);
                for p in 0..TILE {
                    let a: __m512bh =
                        std::mem::transmute(_mm512_loadu_si512(tile.add(p * 64).cast()));
                    for (r, sum) in acc.iter_mut().enumerate() {
                        let w: __m512bh =
                            std::mem::transmute(_mm512_set1_epi32(*weights.add(r * TILE + p)));
                        *sum = _mm512_dpbf16_ps(*sum, a, w);
                    }
                }
            }
        }
        acc
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod x86 {
    pub unsafe fn panel_product(
        _: &super::BlockMatrix,
        _: usize,
        _: usize,
        _: &[u8],
        _: usize,
        _: *mut f32,
        _: usize,
    ) {
        unreachable!("AVX-512 BF16 is x86-only")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::testing::lcg;

    /// Every edge of the tiling, against the float product within bfloat16 rounding
    /// (`testing::check_against_the_float_product`).
    #[test]
    fn matches_the_float_product_within_bfloat16_rounding() {
        if !available() {
            eprintln!("skipped: no AVX-512 BF16 on this CPU");
            return;
        }
        crate::cpu::testing::check_against_the_float_product(gemm, 9, 1.0 / 128.0);
    }

    /// The vector kernel and the tile unit multiply the same rounded operands: where both run,
    /// they agree to float32 summation order.
    #[test]
    fn agrees_with_the_tile_unit() {
        if !(available() && super::super::amx::available()) {
            eprintln!("skipped: no AMX tile unit on this CPU");
            return;
        }
        let mut seed = 3;
        let (rows, cols, m) = (96, 128, 20);
        let floats: Vec<f32> = (0..rows * cols).map(|_| lcg(&mut seed)).collect();
        let w = BlockMatrix::q8_from_floats(rows, cols, &floats);
        let x: Vec<f32> = (0..m * cols).map(|_| lcg(&mut seed)).collect();
        let (mut vector, mut tiles) = (vec![0f32; m * rows], vec![0f32; m * rows]);
        gemm(&w, &x, m, &mut vector);
        super::super::amx::gemm(&w, &x, m, &mut tiles);
        for (v, t) in vector.iter().zip(&tiles) {
            assert!((v - t).abs() <= 1e-5 * t.abs().max(1.0), "{v} vs {t}");
        }
    }
}
