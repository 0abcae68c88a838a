//! The AVX2 kernel's products: laid-out activation rows times a laid-out weight panel, in
//! register tiles of 4 activation rows by 2 weight rows.

#[cfg(target_arch = "x86_64")]
pub use x86::*;

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::super::super::dot::avx2::hsum;
    use super::super::layout::{Group, VECTOR};

    /// Activation rows per register tile.
    const MR: usize = 4;
    /// Weight rows per register tile.
    const NR: usize = 2;
    /// Activation rows multiplied by the whole panel before the next ones (32 rows of 576
    /// inputs lay out to 24 KiB).
    const ACTIVATION_BLOCK: usize = 32;

    /// `tile[i * width + j] = x_i · w_j` for `m` laid-out activation rows and `width` laid-out
    /// weight rows (`row_bytes` each).
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA; both operands are laid out by `groups`.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn multiply(
        acts: &[u8],
        m: usize,
        panel: &[u8],
        width: usize,
        groups: &[Group],
        row_bytes: usize,
        signed: bool,
        tile: &mut [f32],
    ) {
        assert!(acts.len() >= m * row_bytes && panel.len() >= width * row_bytes);
        assert_eq!(tile.len(), m * width);
        // Activation rows a block at a time, so that a prefill's thousands of rows are not
        // streamed from memory once per pair of weight rows.
        for block in (0..m).step_by(ACTIVATION_BLOCK) {
            for j0 in (0..width).step_by(NR) {
                let c = NR.min(width - j0);
                for i0 in (block..m.min(block + ACTIVATION_BLOCK)).step_by(MR) {
                    let r = MR.min(m - i0);
                    let x = |i: usize| acts[(i0 + i) * row_bytes..].as_ptr();
                    let w = |j: usize| panel[(j0 + j) * row_bytes..].as_ptr();
                    let mut put = |i: usize, j: usize, v: f32| tile[(i0 + i) * width + j0 + j] = v;
                    macro_rules! run {
                        ($r:literal, $c:literal) => {{
                            let xs: [*const u8; $r] = std::array::from_fn(x);
                            let ws: [*const u8; $c] = std::array::from_fn(w);
                            // SAFETY: every pointer starts a laid-out row (asserted sizes).
                            let sums = unsafe {
                                if signed {
                                    kernel::<$r, $c, true>(xs, ws, groups)
                                } else {
                                    kernel::<$r, $c, false>(xs, ws, groups)
                                }
                            };
                            for (i, row) in sums.iter().enumerate() {
                                for (j, &v) in row.iter().enumerate() {
                                    put(i, j, v);
                                }
                            }
                        }};
                    }
                    match (r, c) {
                        (4, 2) => run!(4, 2),
                        (3, 2) => run!(3, 2),
                        (2, 2) => run!(2, 2),
                        (1, 2) => run!(1, 2),
                        (4, 1) => run!(4, 1),
                        (3, 1) => run!(3, 1),
                        (2, 1) => run!(2, 1),
                        _ => run!(1, 1),
                    }
                }
            }
        }
    }

    /// Dot products of `R` laid-out activation rows with `C` laid-out weight rows.
    /// `SIGNED`: 8-bit weights (`vpmaddubsw` takes an unsigned operand, so their magnitudes
    /// multiply the activations with the weights' signs, and sums widen to 32 bits every
    /// vector); otherwise 4-bit codes, whose 16-bit sums hold a whole group.
    #[inline(always)]
    unsafe fn kernel<const R: usize, const C: usize, const SIGNED: bool>(
        x: [*const u8; R],
        w: [*const u8; C],
        groups: &[Group],
    ) -> [[f32; C]; R] {
        // SAFETY: the caller's pointers start laid-out rows covering `groups`.
        unsafe {
            let ones = _mm256_set1_epi16(1);
            let mut acc = [[_mm256_setzero_ps(); C]; R];
            for g in groups {
                let mut sums = [[_mm256_setzero_si256(); C]; R];
                for v in 0..g.blocks {
                    let at = g.offset + v * VECTOR;
                    let wv: [__m256i; C] =
                        std::array::from_fn(|j| _mm256_loadu_si256(w[j].add(at).cast()));
                    let magnitude: [__m256i; C] = std::array::from_fn(|j| {
                        if SIGNED {
                            _mm256_sign_epi8(wv[j], wv[j])
                        } else {
                            wv[j]
                        }
                    });
                    for (i, row) in sums.iter_mut().enumerate() {
                        let xv = _mm256_loadu_si256(x[i].add(at).cast());
                        for (j, s) in row.iter_mut().enumerate() {
                            if SIGNED {
                                let product =
                                    _mm256_maddubs_epi16(magnitude[j], _mm256_sign_epi8(xv, wv[j]));
                                *s = _mm256_add_epi32(*s, _mm256_madd_epi16(product, ones));
                            } else {
                                *s = _mm256_add_epi16(*s, _mm256_maddubs_epi16(wv[j], xv));
                            }
                        }
                    }
                }
                let meta = g.meta_offset();
                let w_scale: [__m256; C] =
                    std::array::from_fn(|j| _mm256_loadu_ps(w[j].add(meta).cast()));
                let w_aux: [__m256; C] =
                    std::array::from_fn(|j| _mm256_loadu_ps(w[j].add(meta + 32).cast()));
                for (i, (row, acc_row)) in sums.iter().zip(acc.iter_mut()).enumerate() {
                    let x_scale = _mm256_loadu_ps(x[i].add(meta).cast());
                    let x_aux = _mm256_loadu_ps(x[i].add(meta + 32).cast());
                    for (j, (s, a)) in row.iter().zip(acc_row.iter_mut()).enumerate() {
                        let wide = if SIGNED {
                            *s
                        } else {
                            _mm256_madd_epi16(*s, ones)
                        };
                        let scale = _mm256_mul_ps(w_scale[j], x_scale);
                        *a = _mm256_fmadd_ps(_mm256_cvtepi32_ps(wide), scale, *a);
                        if !SIGNED {
                            *a = _mm256_fmadd_ps(w_aux[j], x_aux, *a);
                        }
                    }
                }
            }
            let mut out = [[0f32; C]; R];
            for (o, a) in out.iter_mut().zip(&acc) {
                for (v, s) in o.iter_mut().zip(a) {
                    *v = hsum(*s);
                }
            }
            out
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
pub use elsewhere::*;

/// Off x86-64 `int8::available()` is false and none of this is called.
#[cfg(not(target_arch = "x86_64"))]
mod elsewhere {
    use super::super::layout::Group;

    #[allow(clippy::too_many_arguments)]
    pub unsafe fn multiply(
        _: &[u8],
        _: usize,
        _: &[u8],
        _: usize,
        _: &[Group],
        _: usize,
        _: bool,
        _: &mut [f32],
    ) {
        unreachable!("the 8-bit kernel runs on x86-64 only")
    }
}
