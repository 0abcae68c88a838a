//! The products: a decoded sub-panel (16 weight rows) times a chunk of laid-out activation
//! rows, in register tiles of 2 weight vectors by 4 activation rows. Block by block, so that
//! the sub-panel's block (1,152 bytes) stays in L1 while every group of the chunk passes: 16
//! input pairs of `vpmaddwd` and `vpaddd` into eight 32-bit accumulators, then each is
//! converted and scaled into the float sums, which live in `sums` (L1) across blocks.

use std::ops::Range;

use super::activations::Activations;
use super::Vector;

/// Writes `out[i * stride + c] = x_i · w_c` for the chunk's rows `i` and the sub-panel's
/// first `count` rows `c` (`out` points at the sub-panel's first output column).
///
/// # Safety
/// The CPU has AVX2 and FMA; `panel` holds a decoded sub-panel of `acts.blocks()` blocks;
/// `sums` holds `STRIPS * GROUP` vectors per group of the chunk; `out + i * stride + c` is
/// writable for those `i` and `c`.
#[allow(clippy::too_many_arguments)]
pub unsafe fn sub_panel_product(
    panel: &[Vector],
    acts: &Activations,
    chunk: Range<usize>,
    signed: bool,
    sums: &mut [Vector],
    out: *mut f32,
    stride: usize,
    count: usize,
) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the caller's contract.
    unsafe {
        if signed {
            x86::product::<false>(panel, acts, chunk, sums, out, stride, count)
        } else {
            x86::product::<true>(panel, acts, chunk, sums, out, stride, count)
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
    use super::super::{Vector, GROUP, LANES, PAIRS, STRIPS, STRIP_BLOCK};

    /// `MINS`: 4-bit affine blocks, whose mins multiply the activations' block sums.
    ///
    /// # Safety
    /// As `sub_panel_product`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn product<const MINS: bool>(
        panel: &[Vector],
        acts: &Activations,
        chunk: Range<usize>,
        sums: &mut [Vector],
        out: *mut f32,
        stride: usize,
        count: usize,
    ) {
        let blocks = acts.blocks();
        let groups = chunk.start / GROUP..chunk.end.div_ceil(GROUP);
        assert!(chunk.start.is_multiple_of(GROUP));
        assert!(panel.len() >= blocks * STRIPS * STRIP_BLOCK);
        assert!(sums.len() >= groups.len() * STRIPS * GROUP);
        let sums = sums.as_mut_ptr().cast::<__m256>();
        // SAFETY: every pointer below stays inside `panel`, `sums` or the group's activation
        // block (asserted lengths), and `out` as the caller promised.
        unsafe {
            for v in 0..groups.len() * STRIPS * GROUP {
                _mm256_store_ps(sums.add(v).cast(), _mm256_setzero_ps());
            }
            for b in 0..blocks {
                let strip = |s: usize| {
                    panel
                        .as_ptr()
                        .add((b * STRIPS + s) * STRIP_BLOCK)
                        .cast::<__m256i>()
                };
                let strips: [*const __m256i; STRIPS] = std::array::from_fn(strip);
                let scales: [__m256; STRIPS] =
                    std::array::from_fn(|s| _mm256_load_ps(strips[s].add(PAIRS).cast()));
                let mins: [__m256; STRIPS] =
                    std::array::from_fn(|s| _mm256_load_ps(strips[s].add(PAIRS + 1).cast()));
                for (n, g) in groups.clone().enumerate() {
                    let (codes, x_scales, x_sums) = acts.groups_block(g, 1, b);
                    let codes = codes.as_ptr();
                    // acc[c][s]: activation row c of the group times strip s.
                    let mut acc = [[_mm256_setzero_si256(); STRIPS]; GROUP];
                    for j in 0..PAIRS {
                        let w: [__m256i; STRIPS] =
                            std::array::from_fn(|s| _mm256_load_si256(strips[s].add(j)));
                        for (c, row) in acc.iter_mut().enumerate() {
                            let x = _mm256_set1_epi32(*codes.add(c * PAIRS + j));
                            for (a, w) in row.iter_mut().zip(w) {
                                *a = _mm256_add_epi32(*a, _mm256_madd_epi16(w, x));
                            }
                        }
                    }
                    let tile = sums.add(n * STRIPS * GROUP);
                    for c in 0..GROUP {
                        let x_scale = _mm256_set1_ps(x_scales[c]);
                        let x_sum = _mm256_set1_ps(x_sums[c]);
                        for s in 0..STRIPS {
                            let at = tile.add(s * GROUP + c);
                            let mut sum = _mm256_fmadd_ps(
                                _mm256_cvtepi32_ps(acc[c][s]),
                                _mm256_mul_ps(scales[s], x_scale),
                                *at,
                            );
                            if MINS {
                                sum = _mm256_fmadd_ps(mins[s], x_sum, sum);
                            }
                            *at = sum;
                        }
                    }
                }
            }
            for (n, g) in groups.enumerate() {
                for c in 0..GROUP {
                    let i = g * GROUP + c;
                    if i >= chunk.end {
                        break;
                    }
                    for s in 0..STRIPS {
                        let width = count.saturating_sub(s * LANES).min(LANES);
                        if width == 0 {
                            break;
                        }
                        let sum = *sums.add((n * STRIPS + s) * GROUP + c);
                        let dst = out.add(i * stride + s * LANES);
                        if width == LANES {
                            _mm256_storeu_ps(dst, sum);
                        } else {
                            let mut lanes = [0f32; LANES];
                            _mm256_storeu_ps(lanes.as_mut_ptr(), sum);
                            std::ptr::copy_nonoverlapping(lanes.as_ptr(), dst, width);
                        }
                    }
                }
            }
        }
    }
}
