//! Weight rows laid out for the tile: a sub-panel of 16 rows is two strips of 8, and for each
//! block a strip holds 18 vectors: 16 of codes (vector `j`, lane `l`: row `l`'s codes of inputs
//! `j` and `j + 16` as the low and high 16-bit halves), the 8 rows' scales and their mins
//! (zero for 8-bit blocks), as float bits. Lanes past the last row repeat it.
//!
//! For 4-bit blocks byte `j` holds exactly those two codes, so the layout is a transpose of
//! the 8 rows' 16 code bytes, then a split of each byte's nibbles into 16-bit halves; 8-bit
//! blocks transpose their two halves the same way and interleave them.

use super::super::blocks::{BlockMatrix, BLOCK};
use super::{Vector, Width, STRIPS, STRIP_BLOCK};

/// Lays out rows `r0..r0 + count` (`count <= 16`) of `w` in `panel`: block `b`, strip `s` at
/// vectors `(b * STRIPS + s) * STRIP_BLOCK..`. Prefetches the `next` rows' bytes on the way, a
/// share per block column: a block column reads 16 rows' blocks, 16 streams that the
/// hardware prefetcher does not follow (without it the decoding waited on memory, three
/// quarters of its time at batch 2).
///
/// # Safety
/// The CPU has AVX2 and F16C; rows `next` exist.
pub unsafe fn sub_panel(
    w: &BlockMatrix,
    r0: usize,
    count: usize,
    next: std::ops::Range<usize>,
    panel: &mut [Vector],
) {
    let blocks = w.cols() / BLOCK;
    assert!(count > 0 && count <= Width::Avx2.sub_panel_rows() && r0 + count <= w.rows());
    assert!(panel.len() >= blocks * STRIPS * STRIP_BLOCK);
    let last = r0 + count - 1;
    for b in 0..blocks {
        w.prefetch_share(next.clone(), b, blocks);
        for s in 0..STRIPS {
            // Lane `l`'s block: row `r0 + 8 s + l`, the last row for lanes past `count`.
            let at = |l: usize| (r0 + s * 8 + l).min(last) * blocks + b;
            let dst = &mut panel[(b * STRIPS + s) * STRIP_BLOCK..][..STRIP_BLOCK];
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the caller's contract; `dst` holds one strip's block.
            unsafe {
                match w {
                    BlockMatrix::Q4 { blocks, .. } => x86::q4_strip(|l| &blocks[at(l)], dst),
                    BlockMatrix::Q8 { blocks, .. } => x86::q8_strip(|l| &blocks[at(l)], dst),
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            {
                let _ = (at, dst);
                unreachable!("the 16-bit kernel runs on x86-64 only");
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::super::super::blocks::{Q4Block, Q8Block};
    use super::super::{Vector, PAIRS};

    /// Transposes the bytes of 8 rows of 16: result `k` holds byte `2k` of rows 0..8 in its
    /// low 8 bytes and byte `2k + 1` of rows 0..8 in its high 8.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn transpose_bytes(rows: [__m128i; 8]) -> [__m128i; 8] {
        let mut out = [_mm_setzero_si128(); 8];
        for (half, dst) in out.chunks_exact_mut(4).enumerate() {
            // Row pairs' bytes interleaved: word j = (row 2k's byte j, row 2k + 1's).
            let a: [__m128i; 4] = std::array::from_fn(|k| {
                if half == 0 {
                    _mm_unpacklo_epi8(rows[2 * k], rows[2 * k + 1])
                } else {
                    _mm_unpackhi_epi8(rows[2 * k], rows[2 * k + 1])
                }
            });
            // Dword j of rows 0..4 (from a[0], a[1]) and of rows 4..8 (a[2], a[3]).
            let b0 = _mm_unpacklo_epi16(a[0], a[1]);
            let b1 = _mm_unpackhi_epi16(a[0], a[1]);
            let b2 = _mm_unpacklo_epi16(a[2], a[3]);
            let b3 = _mm_unpackhi_epi16(a[2], a[3]);
            dst[0] = _mm_unpacklo_epi32(b0, b2);
            dst[1] = _mm_unpackhi_epi32(b0, b2);
            dst[2] = _mm_unpacklo_epi32(b1, b3);
            dst[3] = _mm_unpackhi_epi32(b1, b3);
        }
        out
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn store(dst: &mut Vector, v: __m256i) {
        // SAFETY: a `Vector` is 32 bytes.
        unsafe { _mm256_store_si256((dst as *mut Vector).cast(), v) }
    }

    /// One 4-bit block of 8 rows (lane `l`: `block(l)`) into `dst`'s 18 vectors.
    ///
    /// # Safety
    /// The CPU has AVX2 and F16C; `dst` holds 18 vectors.
    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    pub unsafe fn q4_strip<'a>(block: impl Fn(usize) -> &'a Q4Block, dst: &mut [Vector]) {
        assert!(dst.len() >= PAIRS + 2);
        // SAFETY: every block holds 16 code bytes.
        let rows: [__m128i; 8] =
            std::array::from_fn(|l| unsafe { _mm_loadu_si128(block(l).qs.as_ptr().cast()) });
        let bytes = transpose_bytes(rows);
        let nibble = _mm_set1_epi8(0x0F);
        for (k, t) in bytes.iter().enumerate() {
            let low = _mm_and_si128(*t, nibble);
            let high = _mm_and_si128(_mm_srli_epi16::<4>(*t), nibble);
            store(
                &mut dst[2 * k],
                _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(low, high)),
            );
            store(
                &mut dst[2 * k + 1],
                _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(low, high)),
            );
        }
        let words: [u32; 8] = std::array::from_fn(|l| block(l).scale_min_bits());
        // SAFETY: a load of `words`.
        let words = unsafe { _mm256_loadu_si256(words.as_ptr().cast()) };
        // Scales (low halves) and mins (high halves) packed to 16 bits, each set in one half.
        let packed = _mm256_packus_epi32(
            _mm256_and_si256(words, _mm256_set1_epi32(0xFFFF)),
            _mm256_srli_epi32::<16>(words),
        );
        let packed = _mm256_permute4x64_epi64::<0b11_01_10_00>(packed);
        let scales = _mm256_cvtph_ps(_mm256_castsi256_si128(packed));
        let mins = _mm256_cvtph_ps(_mm256_extracti128_si256::<1>(packed));
        store(&mut dst[PAIRS], _mm256_castps_si256(scales));
        store(&mut dst[PAIRS + 1], _mm256_castps_si256(mins));
    }

    /// One 8-bit block of 8 rows, as `q4_strip` (mins zero).
    ///
    /// # Safety
    /// As `q4_strip`.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub unsafe fn q8_strip<'a>(block: impl Fn(usize) -> &'a Q8Block, dst: &mut [Vector]) {
        assert!(dst.len() >= PAIRS + 2);
        // SAFETY: every block holds 32 code bytes.
        let half = |h: usize| -> [__m128i; 8] {
            std::array::from_fn(|l| unsafe {
                _mm_loadu_si128(block(l).qs.as_ptr().add(16 * h).cast())
            })
        };
        let (first, second) = (transpose_bytes(half(0)), transpose_bytes(half(1)));
        for k in 0..8 {
            let low = _mm_unpacklo_epi8(first[k], second[k]);
            let high = _mm_unpackhi_epi8(first[k], second[k]);
            store(&mut dst[2 * k], _mm256_cvtepi8_epi16(low));
            store(&mut dst[2 * k + 1], _mm256_cvtepi8_epi16(high));
        }
        let scales: [f32; 8] = std::array::from_fn(|l| block(l).scale);
        // SAFETY: a load of `scales`.
        let scales = unsafe { _mm256_loadu_ps(scales.as_ptr()) };
        store(&mut dst[PAIRS], _mm256_castps_si256(scales));
        store(&mut dst[PAIRS + 1], _mm256_setzero_si256());
    }
}
