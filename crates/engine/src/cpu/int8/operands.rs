//! The AVX2 kernel's operands: weight rows laid out from their blocks (4-bit codes unpacked,
//! block pairs transposed within 128-bit halves) and activation rows rounded to 8 bits and laid
//! out the same way (see `layout`).

#[cfg(target_arch = "x86_64")]
pub use x86::*;

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::super::super::blocks::{Q4Block, Q8Block, BLOCK};
    use super::super::super::dot::avx2::hsum;
    use super::super::layout::{first_lane_of_block, lane_block, Group, LANES, VECTOR};

    /// 16 bytes at `first` and 16 at `second` in the low and high 128 bits of a register.
    #[inline(always)]
    unsafe fn pair(first: *const u8, second: *const u8) -> __m256i {
        // SAFETY: the caller's pointers are valid for 16 bytes.
        unsafe {
            _mm256_set_m128i(
                _mm_loadu_si128(second.cast()),
                _mm_loadu_si128(first.cast()),
            )
        }
    }

    /// Transposes the dwords of four registers within each 128-bit half.
    #[inline(always)]
    fn transpose_halves(p: [__m256i; 4]) -> [__m256i; 4] {
        // SAFETY: register-only AVX2 operations (the callers enable AVX2).
        unsafe {
            let t0 = _mm256_unpacklo_epi32(p[0], p[1]);
            let t1 = _mm256_unpacklo_epi32(p[2], p[3]);
            let t2 = _mm256_unpackhi_epi32(p[0], p[1]);
            let t3 = _mm256_unpackhi_epi32(p[2], p[3]);
            [
                _mm256_unpacklo_epi64(t0, t1),
                _mm256_unpackhi_epi64(t0, t1),
                _mm256_unpacklo_epi64(t2, t3),
                _mm256_unpackhi_epi64(t2, t3),
            ]
        }
    }

    /// Writes a group's code vectors from `halves(h, u)`: half `h` of block pair `u` (blocks
    /// `2u`, `2u + 1` of the group), or of the group's one block when it has one.
    #[inline(always)]
    unsafe fn write_codes(
        group: &Group,
        out: *mut u8,
        halves: impl Fn(usize, usize) -> __m256i,
        whole: impl Fn() -> __m256i,
    ) {
        // SAFETY: `out` is valid for the group's code bytes (the caller's contract).
        unsafe {
            let store = |v: usize, value: __m256i| {
                _mm256_storeu_si256(out.add(group.offset + v * VECTOR).cast(), value)
            };
            match group.blocks {
                8 => {
                    for h in 0..2 {
                        let rows = transpose_halves(std::array::from_fn(|u| halves(h, u)));
                        for (s, value) in rows.into_iter().enumerate() {
                            store(4 * h + s, value);
                        }
                    }
                }
                2 => {
                    store(0, halves(0, 0));
                    store(1, halves(1, 0));
                }
                _ => store(0, whole()),
            }
        }
    }

    /// Writes a group's per-lane scales and auxiliary terms (`aux_on_first_lane`: on each
    /// block's first lane only, zero on its other lanes).
    #[inline(always)]
    unsafe fn write_meta(
        group: &Group,
        out: *mut u8,
        scale: impl Fn(usize) -> f32,
        aux: impl Fn(usize) -> f32,
        aux_on_first_lane: bool,
    ) {
        let lane = |l: usize| lane_block(group.blocks, l);
        let aux = |l: usize| {
            if aux_on_first_lane && !first_lane_of_block(group.blocks, l) {
                0.0
            } else {
                aux(lane(l))
            }
        };
        // SAFETY: `out` is valid for the group's two meta vectors (the caller's contract).
        unsafe {
            let at = out.add(group.meta_offset());
            let scales = _mm256_setr_ps(
                scale(lane(0)),
                scale(lane(1)),
                scale(lane(2)),
                scale(lane(3)),
                scale(lane(4)),
                scale(lane(5)),
                scale(lane(6)),
                scale(lane(7)),
            );
            let auxes = _mm256_setr_ps(
                aux(0),
                aux(1),
                aux(2),
                aux(3),
                aux(4),
                aux(5),
                aux(6),
                aux(7),
            );
            _mm256_storeu_ps(at.cast(), scales);
            _mm256_storeu_ps(at.add(LANES * 4).cast(), auxes);
        }
    }

    /// Lays out one row of 4-bit blocks.
    ///
    /// # Safety
    /// The CPU has AVX2; `blocks` is the row (as many blocks as `groups` cover) and `out` holds
    /// the laid-out row.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn lay_out_q4(blocks: &[Q4Block], groups: &[Group], out: &mut [u8]) {
        let last = groups.last().expect("a row has a group");
        assert!(blocks.len() >= last.first_block + last.blocks);
        assert!(out.len() >= last.meta_offset() + 2 * LANES * 4);
        let low = _mm256_set1_epi8(0x0F);
        for group in groups {
            let b = &blocks[group.first_block..group.first_block + group.blocks];
            let qs = |i: usize| b[i].qs.as_ptr();
            // SAFETY: the blocks are in range (asserted); `out` holds the row.
            unsafe {
                let nibbles = |h: usize, v: __m256i| {
                    let v = if h == 0 { v } else { _mm256_srli_epi16::<4>(v) };
                    _mm256_and_si256(v, low)
                };
                write_codes(
                    group,
                    out.as_mut_ptr(),
                    |h, u| nibbles(h, pair(qs(2 * u), qs(2 * u + 1))),
                    || {
                        let v = pair(qs(0), qs(0));
                        let shifted = _mm256_srli_epi16::<4>(v);
                        // Low nibbles in the low half, high nibbles in the high half.
                        _mm256_and_si256(_mm256_blend_epi32::<0xF0>(v, shifted), low)
                    },
                );
                write_meta(
                    group,
                    out.as_mut_ptr(),
                    |l| b[l].scale(),
                    |l| b[l].min(),
                    false,
                );
            }
        }
    }

    /// Lays out one row of 8-bit weight blocks (codes as their bytes).
    ///
    /// # Safety
    /// As [`lay_out_q4`].
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn lay_out_q8(blocks: &[Q8Block], groups: &[Group], out: &mut [u8]) {
        // SAFETY: the caller's contract.
        unsafe { lay_out_bytes(blocks, groups, out, |_| 0.0, false) }
    }

    /// Rounds one activation row to 8 bits per block (`round(x / d)`, `d = max |x| / 127`,
    /// ties to even) and lays it out, with each block's float sum as its auxiliary term;
    /// `blocks` is scratch for the row's rounded blocks.
    ///
    /// # Safety
    /// The CPU has AVX2; `x` is whole blocks and `out` holds its laid-out row.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn quantize_row(
        x: &[f32],
        groups: &[Group],
        blocks: &mut Vec<Q8Block>,
        sums: &mut Vec<f32>,
        out: &mut [u8],
    ) {
        let count = x.len() / BLOCK;
        blocks.clear();
        sums.clear();
        let magnitude = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFF_FFFF));
        let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        for b in 0..count {
            // SAFETY: block `b` lies within `x` (`count` whole blocks).
            unsafe {
                let p = x.as_ptr().add(b * BLOCK);
                let v: [__m256; 4] = std::array::from_fn(|i| _mm256_loadu_ps(p.add(8 * i)));
                let abs = |v: __m256| _mm256_and_ps(v, magnitude);
                let max = hmax(_mm256_max_ps(
                    _mm256_max_ps(abs(v[0]), abs(v[1])),
                    _mm256_max_ps(abs(v[2]), abs(v[3])),
                ));
                sums.push(hsum(_mm256_add_ps(
                    _mm256_add_ps(v[0], v[1]),
                    _mm256_add_ps(v[2], v[3]),
                )));
                let inverse = _mm256_set1_ps(if max > 0.0 { 127.0 / max } else { 0.0 });
                let q: [__m256i; 4] = std::array::from_fn(|i| {
                    let scaled = _mm256_mul_ps(v[i], inverse);
                    _mm256_cvtps_epi32(_mm256_round_ps::<
                        { _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC },
                    >(scaled))
                });
                let words = [
                    _mm256_packs_epi32(q[0], q[1]),
                    _mm256_packs_epi32(q[2], q[3]),
                ];
                let bytes =
                    _mm256_permutevar8x32_epi32(_mm256_packs_epi16(words[0], words[1]), order);
                let mut block = Q8Block {
                    scale: max / 127.0,
                    qs: [0; BLOCK],
                };
                _mm256_storeu_si256(block.qs.as_mut_ptr().cast(), bytes);
                blocks.push(block);
            }
        }
        // SAFETY: `blocks` holds the row's blocks; `out` the laid-out row (the caller's contract).
        unsafe { lay_out_bytes(blocks, groups, out, |b| sums[b], true) }
    }

    /// The largest of a register's eight floats.
    #[inline(always)]
    fn hmax(v: __m256) -> f32 {
        // SAFETY: register-only AVX operations (the callers enable AVX2).
        unsafe {
            let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
            let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
            let m = _mm_max_ss(m, _mm_movehdup_ps(m));
            _mm_cvtss_f32(m)
        }
    }

    /// Lays out one row of 32-byte blocks (codes as their bytes), with `aux(b)` per block.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn lay_out_bytes(
        blocks: &[Q8Block],
        groups: &[Group],
        out: &mut [u8],
        aux: impl Fn(usize) -> f32,
        aux_on_first_lane: bool,
    ) {
        let last = groups.last().expect("a row has a group");
        assert!(blocks.len() >= last.first_block + last.blocks);
        assert!(out.len() >= last.meta_offset() + 2 * LANES * 4);
        for group in groups {
            let b = &blocks[group.first_block..group.first_block + group.blocks];
            let half = |i: usize, h: usize| b[i].qs.as_ptr().cast::<u8>().wrapping_add(16 * h);
            // SAFETY: as in `lay_out_q4`.
            unsafe {
                write_codes(
                    group,
                    out.as_mut_ptr(),
                    |h, u| pair(half(2 * u, h), half(2 * u + 1, h)),
                    || _mm256_loadu_si256(b[0].qs.as_ptr().cast()),
                );
                write_meta(
                    group,
                    out.as_mut_ptr(),
                    |l| b[l].scale,
                    |l| aux(group.first_block + l),
                    aux_on_first_lane,
                );
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
pub use elsewhere::*;

/// Off x86-64 `int8::available()` is false and none of this is called.
#[cfg(not(target_arch = "x86_64"))]
mod elsewhere {
    use super::super::super::blocks::{Q4Block, Q8Block};
    use super::super::layout::Group;

    pub unsafe fn lay_out_q4(_: &[Q4Block], _: &[Group], _: &mut [u8]) {
        unreachable!("the 8-bit kernel runs on x86-64 only")
    }

    pub unsafe fn lay_out_q8(_: &[Q8Block], _: &[Group], _: &mut [u8]) {
        unreachable!("the 8-bit kernel runs on x86-64 only")
    }

    pub unsafe fn quantize_row(
        _: &[f32],
        _: &[Group],
        _: &mut Vec<Q8Block>,
        _: &mut Vec<f32>,
        _: &mut [u8],
    ) {
        unreachable!("the 8-bit kernel runs on x86-64 only")
    }
}
