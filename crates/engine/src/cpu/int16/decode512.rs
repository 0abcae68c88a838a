//! Weight rows laid out for the AVX-512 tile: `decode`'s layout on 64-byte vectors (a strip
//! is 16 rows), built with gathers instead of byte transposes. One `vpgatherdd` reads the
//! same 4 code bytes of 16 rows' blocks, which is a strip's 4 input pairs already in lanes;
//! each pair is then a shift and a masked merge of the byte's two nibbles into the lane's two
//! 16-bit halves. On a Zen 5 this decodes a sub-panel in less than half the time the two
//! 8-row transposes took (`examples/kernel_bench`, batch 1: one step's products 7.4 ms
//! against 4.9).

use super::super::blocks::{BlockMatrix, BLOCK};
use super::{Line, STRIPS, STRIP_BLOCK};

/// Weight rows per strip (a 64-byte vector's 32-bit lanes).
const LANES: usize = 16;

/// Lays out rows `r0..r0 + count` (`count <= 32`) of `w` in `panel`: block `b`, strip `s` at
/// lines `(b * STRIPS + s) * STRIP_BLOCK..`; prefetches the `next` rows as `decode` does.
///
/// # Safety
/// The CPU has AVX-512 F and F16C; rows `next` exist.
pub unsafe fn sub_panel(
    w: &BlockMatrix,
    r0: usize,
    count: usize,
    next: std::ops::Range<usize>,
    panel: &mut [Line],
) {
    let blocks = w.cols() / BLOCK;
    assert!(count > 0 && count <= STRIPS * LANES && r0 + count <= w.rows());
    assert!(panel.len() >= blocks * STRIPS * STRIP_BLOCK);
    let block_bytes = w.row_bytes() / blocks;
    // A strip's lanes, as byte offsets from row `r0`'s block: lanes past `count` repeat the
    // last row.
    let offsets: [[i32; LANES]; STRIPS] = std::array::from_fn(|s| {
        std::array::from_fn(|l| {
            let row = (s * LANES + l).min(count - 1);
            i32::try_from(row * blocks * block_bytes).expect("a sub-panel spans under 2 GiB")
        })
    });
    let (first, _) = w.row_span(r0..r0 + count);
    for b in 0..blocks {
        w.prefetch_share(next.clone(), b, blocks);
        let block = first.wrapping_add(b * block_bytes);
        for (s, offsets) in offsets.iter().enumerate() {
            let dst = &mut panel[(b * STRIPS + s) * STRIP_BLOCK..][..STRIP_BLOCK];
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the caller's contract; every lane's offset from `block` is block `b` of
            // one of the rows `r0..r0 + count`.
            unsafe {
                match w {
                    BlockMatrix::Q4 { .. } => x86::q4_strip(block, offsets, dst),
                    BlockMatrix::Q8 { .. } => x86::q8_strip(block, offsets, dst),
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            {
                let _ = (block, offsets, dst);
                unreachable!("the 16-bit kernel runs on x86-64 only");
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::super::{Line, PAIRS};
    use super::LANES;

    /// The 32-bit words at byte `at` of the 16 lanes' blocks.
    ///
    /// # Safety
    /// The CPU has AVX-512 F; `block + offsets[l] + at` holds 4 readable bytes for every lane.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn words(block: *const u8, offsets: __m512i, at: usize) -> __m512i {
        // SAFETY: the caller's contract.
        unsafe { _mm512_i32gather_epi32::<1>(offsets, block.add(at).cast()) }
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    fn store(dst: &mut Line, v: __m512i) {
        // SAFETY: a `Line` is 64 bytes, aligned to 64.
        unsafe { _mm512_store_si512((dst as *mut Line).cast(), v) }
    }

    /// One 4-bit block of 16 rows into `dst`'s 18 lines.
    ///
    /// # Safety
    /// The CPU has AVX-512 F and F16C; `block + offsets[l]` is a `Q4Block` for every lane.
    #[inline]
    #[target_feature(enable = "avx512f,f16c")]
    pub unsafe fn q4_strip(block: *const u8, offsets: &[i32; LANES], dst: &mut [Line]) {
        assert!(dst.len() >= PAIRS + 2);
        // SAFETY: a load of `offsets`; the gathers read inside the lanes' blocks (20 bytes:
        // scale and min, then 16 code bytes).
        unsafe {
            let offsets = _mm512_loadu_si512(offsets.as_ptr().cast());
            // Each lane: byte `p` alone (to the top, then back down), then its low nibble in
            // the low half and its high one in the high half: (t | t << 12) & 0x000F000F.
            let nibbles = _mm512_set1_epi32(0x000F_000F);
            for k in 0..4 {
                let codes = words(block, offsets, 4 + 4 * k);
                for p in 0..4 {
                    let up = _mm512_set1_epi32(24 - 8 * p as i32);
                    let t = _mm512_srli_epi32::<24>(_mm512_sllv_epi32(codes, up));
                    let lanes =
                        _mm512_ternarylogic_epi32::<0xA8>(t, _mm512_slli_epi32::<12>(t), nibbles);
                    store(&mut dst[4 * k + p], lanes);
                }
            }
            let scale_min = words(block, offsets, 0);
            let scales = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(scale_min));
            let mins = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32::<16>(scale_min)));
            store(&mut dst[PAIRS], _mm512_castps_si512(scales));
            store(&mut dst[PAIRS + 1], _mm512_castps_si512(mins));
        }
    }

    /// One 8-bit block of 16 rows, as `q4_strip` (mins zero).
    ///
    /// # Safety
    /// As `q4_strip`, with `Q8Block`s (36 bytes: the float scale, then 32 codes).
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub unsafe fn q8_strip(block: *const u8, offsets: &[i32; LANES], dst: &mut [Line]) {
        assert!(dst.len() >= PAIRS + 2);
        // SAFETY: as `q4_strip`.
        unsafe {
            let offsets = _mm512_loadu_si512(offsets.as_ptr().cast());
            let high_half = _mm512_set1_epi32(0xFFFF_0000u32 as i32);
            for k in 0..4 {
                let first = words(block, offsets, 4 + 4 * k);
                let second = words(block, offsets, 4 + 16 + 4 * k);
                for p in 0..4 {
                    // Byte `p` to the top, then arithmetic shifts sign-extend it: into the low
                    // half (input 4k + p) and into the high half (input 16 + 4k + p).
                    let up = _mm512_set1_epi32(24 - 8 * p as i32);
                    let low = _mm512_srai_epi32::<24>(_mm512_sllv_epi32(first, up));
                    let high = _mm512_srai_epi32::<8>(_mm512_sllv_epi32(second, up));
                    let lanes = _mm512_ternarylogic_epi32::<0xE4>(high, low, high_half);
                    store(&mut dst[4 * k + p], lanes);
                }
            }
            let scales = words(block, offsets, 0);
            store(&mut dst[PAIRS], scales);
            store(&mut dst[PAIRS + 1], _mm512_setzero_si512());
        }
    }
}
