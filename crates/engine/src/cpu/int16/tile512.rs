//! The AVX-512 products: `tile`'s scheme on 64-byte vectors (16 weight rows a vector, a
//! sub-panel of 32) with `vpdpwssd` (AVX-512 VNNI), which multiplies the 16-bit pairs and adds
//! them into the 32-bit accumulator in one instruction, taking the activation pair broadcast
//! from memory. Tiles of 2 weight vectors by 8 activation rows: 16 accumulators, enough to
//! cover the instruction's latency at two a cycle, and 10 loads for 32 multiply-add vectors;
//! a last tile of at most 4 rows runs as 2 by 4.

use std::ops::Range;

use super::activations::Activations;
use super::{Line, Vector, GROUP};

/// Activation rows per register tile: two of the activations' groups.
pub const TILE_GROUPS: usize = 2;

/// Writes `out[i * stride + c] = x_i · w_c` for the chunk's rows `i` and the sub-panel's
/// first `count` rows `c` (`out` points at the sub-panel's first output column).
///
/// # Safety
/// The CPU has AVX-512 F, BW and VNNI; `panel` holds a decoded sub-panel of `acts.blocks()`
/// blocks at 64-byte vectors, laid out in tiles of [`TILE_GROUPS`] groups; `sums` holds
/// `STRIPS` lines per row of the chunk, rounded up to a tile; `out + i * stride + c` is
/// writable for those `i` and `c`.
#[allow(clippy::too_many_arguments)]
pub unsafe fn sub_panel_product(
    panel: &[Vector],
    acts: &Activations,
    chunk: Range<usize>,
    signed: bool,
    sums: &mut [Line],
    out: *mut f32,
    stride: usize,
    count: usize,
) {
    #[cfg(target_arch = "x86_64")]
    {
        // Tiles of 8 rows; a last tile of at most 4 rows runs as one group, rather than
        // padded to 8 (a Zen 5, one step's products at 4 rows: 5.5 ms against 8.4 padded).
        let rows = GROUP * TILE_GROUPS;
        let whole = chunk.start + chunk.len() / rows * rows;
        let (wide, narrow) = if chunk.end - whole <= GROUP && whole < chunk.end {
            (chunk.start..whole, whole..chunk.end)
        } else {
            (chunk.clone(), chunk.end..chunk.end)
        };
        let run = |rows: Range<usize>, sums: &mut [Line], narrow: bool| {
            // SAFETY: the caller's contract, for a part of its chunk that starts on a tile.
            unsafe {
                match (signed, narrow) {
                    (false, false) => {
                        x86::product::<true, 8>(panel, acts, rows, sums, out, stride, count)
                    }
                    (true, false) => {
                        x86::product::<false, 8>(panel, acts, rows, sums, out, stride, count)
                    }
                    (false, true) => {
                        x86::product::<true, 4>(panel, acts, rows, sums, out, stride, count)
                    }
                    (true, true) => {
                        x86::product::<false, 4>(panel, acts, rows, sums, out, stride, count)
                    }
                }
            }
        };
        if !wide.is_empty() {
            run(wide, sums, false);
        }
        if !narrow.is_empty() {
            run(narrow, sums, true);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (panel, acts, chunk, signed, sums, out, stride, count);
        unreachable!("the 16-bit kernel runs on x86-64 only");
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;
    use std::ops::Range;

    use super::super::activations::Activations;
    use super::super::{Line, Vector, GROUP, PAIRS, STRIPS, STRIP_BLOCK};

    /// Weight rows per 64-byte vector.
    const LANES: usize = 16;

    /// `MINS`: 4-bit affine blocks, whose mins multiply the activations' block sums. `ROWS`:
    /// activation rows per tile, whole groups (4 or 8).
    ///
    /// # Safety
    /// As `sub_panel_product`; `chunk` starts on a tile of `ROWS` rows.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub unsafe fn product<const MINS: bool, const ROWS: usize>(
        panel: &[Vector],
        acts: &Activations,
        chunk: Range<usize>,
        sums: &mut [Line],
        out: *mut f32,
        stride: usize,
        count: usize,
    ) {
        let blocks = acts.blocks();
        assert!(ROWS.is_multiple_of(GROUP));
        let tiles = chunk.start / ROWS..chunk.end.div_ceil(ROWS);
        assert!(chunk.start.is_multiple_of(ROWS));
        assert!(panel.len() >= blocks * STRIPS * STRIP_BLOCK * 2);
        assert!(panel.as_ptr().cast::<Line>().is_aligned());
        assert!(sums.len() >= tiles.len() * STRIPS * ROWS);
        let sums = sums.as_mut_ptr().cast::<__m512>();
        // SAFETY: every pointer below stays inside `panel`, `sums` or the tile's activation
        // block (asserted lengths), and `out` as the caller promised.
        unsafe {
            for v in 0..tiles.len() * STRIPS * ROWS {
                _mm512_store_ps(sums.add(v).cast(), _mm512_setzero_ps());
            }
            for b in 0..blocks {
                let strip = |s: usize| {
                    panel
                        .as_ptr()
                        .add((b * STRIPS + s) * STRIP_BLOCK * 2)
                        .cast::<__m512i>()
                };
                let strips: [*const __m512i; STRIPS] = std::array::from_fn(strip);
                let scales: [__m512; STRIPS] =
                    std::array::from_fn(|s| _mm512_load_ps(strips[s].add(PAIRS).cast()));
                let mins: [__m512; STRIPS] =
                    std::array::from_fn(|s| _mm512_load_ps(strips[s].add(PAIRS + 1).cast()));
                for (n, t) in tiles.clone().enumerate() {
                    let (codes, x_scales, x_sums) =
                        acts.groups_block(t * ROWS / GROUP, ROWS / GROUP, b);
                    let codes = codes.as_ptr();
                    // acc[c][s]: activation row c of the tile times strip s.
                    let mut acc = [[_mm512_setzero_si512(); STRIPS]; ROWS];
                    for j in 0..PAIRS {
                        let w: [__m512i; STRIPS] =
                            std::array::from_fn(|s| _mm512_load_si512(strips[s].add(j)));
                        for (c, row) in acc.iter_mut().enumerate() {
                            let x = _mm512_set1_epi32(*codes.add(c * PAIRS + j));
                            for (a, w) in row.iter_mut().zip(w) {
                                *a = _mm512_dpwssd_epi32(*a, w, x);
                            }
                        }
                    }
                    let tile = sums.add(n * STRIPS * ROWS);
                    for c in 0..ROWS {
                        let x_scale = _mm512_set1_ps(x_scales[c]);
                        let x_sum = _mm512_set1_ps(x_sums[c]);
                        for s in 0..STRIPS {
                            let at = tile.add(s * ROWS + c);
                            let mut sum = _mm512_fmadd_ps(
                                _mm512_cvtepi32_ps(acc[c][s]),
                                _mm512_mul_ps(scales[s], x_scale),
                                *at,
                            );
                            if MINS {
                                sum = _mm512_fmadd_ps(mins[s], x_sum, sum);
                            }
                            *at = sum;
                        }
                    }
                }
            }
            for (n, t) in tiles.enumerate() {
                for c in 0..ROWS {
                    let i = t * ROWS + c;
                    if i >= chunk.end {
                        break;
                    }
                    for s in 0..STRIPS {
                        let width = count.saturating_sub(s * LANES).min(LANES);
                        if width == 0 {
                            break;
                        }
                        let sum = *sums.add((n * STRIPS + s) * ROWS + c);
                        let mask = (((1u32 << width) - 1) & 0xFFFF) as __mmask16;
                        _mm512_mask_storeu_ps(out.add(i * stride + s * LANES), mask, sum);
                    }
                }
            }
        }
    }
}
