//! Wide products in float32 on AVX-512 CPUs: the dequantized model's own arithmetic, at the
//! full rate of the two 512-bit FMA units. It runs them where neither bfloat16 nor 16-bit
//! activations may: on CPUs without AVX-512 VNNI (Skylake-SP), and with `--int16 off`
//! (16-bit activations on 64-byte vectors, `int16`, are 1.4-1.8x faster on an Emerald
//! Rapids Xeon and a Zen 5).
//!
//! On Intel cores without an exposed tile unit (Sapphire and Emerald Rapids in VMs that hide
//! AMX, Ice Lake, Skylake-SP) it is faster than bfloat16: `vdpbf16ps` retires one
//! instruction every other cycle there (16 multiply-adds a cycle; measured on an Emerald Rapids
//! Xeon: 1.35 instructions a nanosecond against 5.5 float32 FMAs), so bfloat16 halves the rate
//! of float32 instead of doubling it, and rounds the factors on top. The older `gemm` kernel
//! multiplies rows dot-product fashion (lanes along the inputs, a horizontal sum per output)
//! and waits on loads; here the lanes are weight rows instead, and nothing is summed across
//! lanes.
//!
//! Each task decodes 48 weight rows at a time into floats, input-major (three vectors per
//! input, whose lanes are the rows), then multiplies them by every group of 8 activation rows
//! in a 48 x 8 register tile: 24 accumulators, one per (activation row, 16 weight rows), whose
//! lanes are 16 columns of an output row, stored as they are. A step loads one input's three
//! weight vectors and multiplies each by the 8 activation rows' values of that input,
//! broadcast by the FMA's own memory operand from the activations, laid out input-major per
//! group once per call: 24 FMAs for 11 loads and no address arithmetic, which two FMA units
//! take in 12 cycles (a 16 x 16 tile, 16 FMAs for 17 loads, ran at two thirds of that, bound
//! by its loads). `kernel_bench` on an Emerald Rapids Xeon: 4.0 FMAs a nanosecond per core in
//! the products, three quarters of the register-only peak.
//!
//! The decoding needs no transposes: of 16 rows' blocks, one 32-bit word of codes per row is
//! gathered into a vector by two `vpermt2d` (a word holds 4 codes of 4-bit blocks in its low
//! nibbles and the 4 codes 16 inputs on in its high ones; 4 codes of 8-bit blocks), so a shift
//! and a mask give one input's codes for all 16 rows, and one FMA with the rows' scales and
//! mins (a vector each) their weights, the floats `expand` gives the other kernels. The next 48
//! rows' bytes are prefetched a share per block column while these are decoded. The panel is
//! aligned to cache lines: unaligned, every vector load and store split in two and the
//! decoding took twice as long.

use std::cell::RefCell;

use super::blocks::BlockMatrix;
use super::pool::{self, SharedOut};

/// Weight rows per vector (its lanes).
const LANES: usize = 16;
/// Weight vectors per register tile, so weight rows per sub-panel: `WIDTH * LANES`.
const WIDTH: usize = 3;
/// Weight rows decoded at a time.
const SUB_PANEL_ROWS: usize = WIDTH * LANES;
/// Activation rows per register tile and per group of the activations' layout.
const GROUP: usize = 8;

thread_local! {
    /// The caller's activations, input-major per group of 8 rows, reused across calls.
    static ACTIVATIONS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// A task's 48 decoded weight rows, input-major, reused across tasks and calls.
    static SUB_PANEL: RefCell<Vec<Lanes>> = const { RefCell::new(Vec::new()) };
}

/// One vector's 16 floats, aligned so that loading or storing it touches one cache line.
#[derive(Clone, Copy, Default)]
#[repr(C, align(64))]
struct Lanes([f32; LANES]);

/// Whether this kernel can run here (AVX-512F, and F16C for the 4-bit blocks' scales).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        super::dot::avx512::available()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `y = x W^T`: `x` is `[m, cols]` row-major, `out` `[m, rows]`. Only call when [`available`].
pub fn gemm(w: &BlockMatrix, x: &[f32], m: usize, out: &mut [f32]) {
    let (rows, cols) = (w.rows(), w.cols());
    assert!(available(), "the float32 tile kernel needs AVX-512");
    assert_eq!(x.len(), m * cols);
    assert_eq!(out.len(), m * rows);
    let groups = m.div_ceil(GROUP);
    let per_task = pool::rows_per_task(rows, SUB_PANEL_ROWS);
    ACTIVATIONS.with_borrow_mut(|acts| {
        // Rows past `m` in the last group keep whatever an earlier call left there: their
        // products land in accumulators that are never stored.
        if acts.len() < groups * GROUP * cols {
            acts.resize(groups * GROUP * cols, 0.0);
        }
        lay_out(x, m, cols, acts);
        let acts = &acts[..groups * GROUP * cols];
        let base = SharedOut(out.as_mut_ptr());
        pool::run(rows.div_ceil(per_task), &|task| {
            let start = task * per_task;
            let end = (start + per_task).min(rows);
            SUB_PANEL.with_borrow_mut(|panel| {
                if panel.len() < WIDTH * cols {
                    panel.resize(WIDTH * cols, Lanes::default());
                }
                // SAFETY: `Lanes` is 16 floats without padding.
                let panel = unsafe {
                    std::slice::from_raw_parts_mut(
                        panel.as_mut_ptr().cast::<f32>(),
                        panel.len() * LANES,
                    )
                };
                for r0 in (start..end).step_by(SUB_PANEL_ROWS) {
                    let count = (end - r0).min(SUB_PANEL_ROWS);
                    let next = (r0 + count)..(r0 + count + SUB_PANEL_ROWS).min(rows);
                    // SAFETY: `available()` checked the CPU; rows `r0..r0 + count` and `next`
                    // exist and `panel` holds 48 floats per input.
                    unsafe { x86::decode_sub_panel(w, r0, count, next, panel) };
                    // SAFETY: `available()` checked the CPU; `panel` holds 48 weight rows of
                    // `cols` inputs, input-major; `acts` holds `groups` groups; this task
                    // alone writes output columns `r0..r0 + count`, which lie inside every one
                    // of the `m` rows of `out`.
                    unsafe {
                        x86::sub_panel_product(
                            panel,
                            count,
                            acts,
                            m,
                            cols,
                            base.get().add(r0),
                            rows,
                        )
                    };
                }
            });
        });
    });
}

/// `acts[(g * cols + k) * 8 + i] = x[(g * 8 + i) * cols + k]` for the `m` rows.
fn lay_out(x: &[f32], m: usize, cols: usize, acts: &mut [f32]) {
    for (i, row) in x.chunks_exact(cols).take(m).enumerate() {
        let (group, lane) = (i / GROUP, i % GROUP);
        let dst = &mut acts[group * GROUP * cols..(group + 1) * GROUP * cols];
        for (k, &v) in row.iter().enumerate() {
            dst[k * GROUP + lane] = v;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::super::blocks::{BlockMatrix, Q4Block, Q8Block, BLOCK};
    use super::{GROUP, LANES, SUB_PANEL_ROWS, WIDTH};

    /// Decodes weight rows `r0..r0 + count` (`count <= 48`) to floats, input-major:
    /// `panel[k * 48 + r]` is input `k` of row `r0 + r` (rows past `count` repeat the last
    /// row). Prefetches the `next` rows' bytes on the way, a share per block column, so that
    /// they arrive while these rows are multiplied.
    ///
    /// # Safety
    /// The CPU has AVX-512F and F16C; rows `r0..r0 + count` and `next` exist; `panel` holds
    /// `48 * cols` floats.
    #[target_feature(enable = "avx512f,f16c")]
    pub unsafe fn decode_sub_panel(
        w: &BlockMatrix,
        r0: usize,
        count: usize,
        next: std::ops::Range<usize>,
        panel: &mut [f32],
    ) {
        let kblocks = w.cols() / BLOCK;
        assert!(count > 0 && count <= SUB_PANEL_ROWS && r0 + count <= w.rows());
        assert!(panel.len() >= SUB_PANEL_ROWS * w.cols());
        for kb in 0..kblocks {
            w.prefetch_share(next.clone(), kb, kblocks);
            let column =
                panel[kb * BLOCK * SUB_PANEL_ROWS..][..BLOCK * SUB_PANEL_ROWS].as_mut_ptr();
            for j in 0..count.div_ceil(LANES) {
                let last = count - 1 - j * LANES;
                // Lane `r`'s block: row `r0 + 16 j + r`, the last row for lanes past `count`.
                let at = |r: usize| (r0 + j * LANES + r.min(last)) * kblocks + kb;
                // SAFETY: the 16 lanes of vector `j` of each of the column's 32 inputs lie
                // inside it; `at(r)` is a block of rows `r0..r0 + count`.
                unsafe {
                    let dst = column.add(j * LANES);
                    match w {
                        BlockMatrix::Q4 { blocks, .. } => q4_lanes(|r| &blocks[at(r)], dst),
                        BlockMatrix::Q8 { blocks, .. } => q8_lanes(|r| &blocks[at(r)], dst),
                    }
                }
            }
        }
    }

    /// Word `d` of every lane: lane `r` of the result is 32-bit word `d` of 16-byte row `r`,
    /// where `quads[t]` holds rows `4t..4t + 4`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn word(quads: &[__m512i; 4], d: i32) -> __m512i {
        // Lane r: rows 0..8 from quads 0 and 1, rows 8..16 from quads 2 and 3; bit 4 of an
        // index picks the second source.
        let index = _mm512_add_epi32(
            _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 0, 4, 8, 12, 16, 20, 24, 28),
            _mm512_set1_epi32(d),
        );
        let low = _mm512_permutex2var_epi32(quads[0], index, quads[1]);
        let high = _mm512_permutex2var_epi32(quads[2], index, quads[3]);
        _mm512_mask_blend_epi32(0xFF00, low, high)
    }

    /// The 16 bytes at `row(r)` for `r < 16`, four rows to a vector.
    ///
    /// # Safety
    /// Each `row(r)` points at 16 readable bytes.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn quads(row: impl Fn(usize) -> *const u8) -> [__m512i; 4] {
        // A plain loop, not `array::from_fn`: LLVM once left that closure out of line, three
        // calls per block in the decoding's inner loop (8% slower at batch 1).
        let mut quads = [_mm512_setzero_si512(); 4];
        for (t, quad) in quads.iter_mut().enumerate() {
            // SAFETY: the caller's contract.
            unsafe {
                let load = |r: usize| _mm_loadu_si128(row(4 * t + r).cast());
                let v = _mm512_castsi128_si512(load(0));
                let v = _mm512_inserti32x4::<1>(v, load(1));
                let v = _mm512_inserti32x4::<2>(v, load(2));
                *quad = _mm512_inserti32x4::<3>(v, load(3));
            }
        }
        quads
    }

    /// One 4-bit block of 16 rows (lane `r`: `block(r)`): input `k`'s 16 lanes go to
    /// `dst + k * 48`.
    ///
    /// # Safety
    /// As `decode_sub_panel`; `dst + k * 48` holds 16 floats for `k < 32`.
    #[inline]
    #[target_feature(enable = "avx512f,f16c")]
    unsafe fn q4_lanes<'a>(block: impl Fn(usize) -> &'a Q4Block, dst: *mut f32) {
        // SAFETY: every block holds 16 code bytes.
        let codes = unsafe { quads(|r| block(r).qs.as_ptr()) };
        let halves: [u32; LANES] = std::array::from_fn(|r| block(r).scale_min_bits());
        // SAFETY: a load of `halves`; stores of 32 vectors at `dst + k * 48`.
        unsafe {
            let halves = _mm512_loadu_si512(halves.as_ptr().cast());
            let scale = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(halves));
            let min = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32::<16>(halves)));
            let nibble = _mm512_set1_epi32(0x0F);
            for d in 0..4 {
                let w = word(&codes, d as i32);
                let put = |k: usize, shifted: __m512i| {
                    let q = _mm512_cvtepi32_ps(_mm512_and_si512(shifted, nibble));
                    let at = dst.add(k * SUB_PANEL_ROWS);
                    _mm512_storeu_ps(at, _mm512_fmadd_ps(q, scale, min));
                };
                // Byte `b` of word `d` holds input `4d + b` in its low nibble and
                // `16 + 4d + b` in its high one.
                put(4 * d, w);
                put(4 * d + 1, _mm512_srli_epi32::<8>(w));
                put(4 * d + 2, _mm512_srli_epi32::<16>(w));
                put(4 * d + 3, _mm512_srli_epi32::<24>(w));
                put(16 + 4 * d, _mm512_srli_epi32::<4>(w));
                put(16 + 4 * d + 1, _mm512_srli_epi32::<12>(w));
                put(16 + 4 * d + 2, _mm512_srli_epi32::<20>(w));
                put(16 + 4 * d + 3, _mm512_srli_epi32::<28>(w));
            }
        }
    }

    /// One 8-bit block of 16 rows, as `q4_lanes`.
    ///
    /// # Safety
    /// As `q4_lanes`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn q8_lanes<'a>(block: impl Fn(usize) -> &'a Q8Block, dst: *mut f32) {
        // SAFETY: every block holds 32 code bytes.
        let halves = unsafe {
            [
                quads(|r| block(r).qs.as_ptr().cast()),
                quads(|r| block(r).qs[16..].as_ptr().cast()),
            ]
        };
        let scales: [f32; LANES] = std::array::from_fn(|r| block(r).scale);
        // SAFETY: a load of `scales`; stores of 32 vectors at `dst + k * 48`.
        unsafe {
            let scale = _mm512_loadu_ps(scales.as_ptr());
            for (half, codes) in halves.iter().enumerate() {
                for d in 0..4 {
                    let w = word(codes, d as i32);
                    let first = 16 * half + 4 * d;
                    // Byte `b` of the word, sign-extended: shifted to the top, then back down.
                    let put = |b: usize, top: __m512i| {
                        let q = _mm512_cvtepi32_ps(_mm512_srai_epi32::<24>(top));
                        let at = dst.add((first + b) * SUB_PANEL_ROWS);
                        _mm512_storeu_ps(at, _mm512_mul_ps(q, scale));
                    };
                    put(0, _mm512_slli_epi32::<24>(w));
                    put(1, _mm512_slli_epi32::<16>(w));
                    put(2, _mm512_slli_epi32::<8>(w));
                    put(3, w);
                }
            }
        }
    }

    /// `out[i * stride + j] = x[i] · w_j` for weight rows `j < count` of the input-major
    /// `panel` and the `m` activation rows laid out in `acts`.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `panel` holds `48 * cols` floats and `acts` `ceil(m / 8)` groups
    /// of `8 * cols`; `out` is valid for writes at `i * stride + j` for `i < m`, `j < count`,
    /// and nobody else accesses those floats meanwhile.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn sub_panel_product(
        panel: &[f32],
        count: usize,
        acts: &[f32],
        m: usize,
        cols: usize,
        out: *mut f32,
        stride: usize,
    ) {
        assert!(panel.len() >= SUB_PANEL_ROWS * cols);
        assert!(acts.len() >= m.div_ceil(GROUP) * GROUP * cols);
        let masks: [__mmask16; WIDTH] = std::array::from_fn(|j| {
            let lanes = count.saturating_sub(j * LANES).min(LANES);
            ((1u32 << lanes) - 1) as __mmask16
        });
        for group in 0..m.div_ceil(GROUP) {
            // SAFETY: the caller's contract, passed on.
            let sums = unsafe {
                group_product(panel.as_ptr(), acts[group * GROUP * cols..].as_ptr(), cols)
            };
            for (i, row) in sums.iter().enumerate().take(m - group * GROUP) {
                for (j, (sum, mask)) in row.iter().zip(masks).enumerate() {
                    // SAFETY: row `group * 8 + i < m`, columns `16 j + lane < count` (the
                    // mask): the caller's contract on `out`.
                    unsafe {
                        let at = out.add((group * GROUP + i) * stride + j * LANES);
                        _mm512_mask_storeu_ps(at, mask, *sum)
                    };
                }
            }
        }
    }

    /// `sums[i][j]` lane `l` = activation row `i` of the group times weight row `16 j + l` of
    /// the panel: 24 accumulators; a step loads 3 weight vectors and broadcasts 8 inputs.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `panel` holds `48 * cols` floats and `acts` `8 * cols`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn group_product(
        panel: *const f32,
        acts: *const f32,
        cols: usize,
    ) -> [[__m512; WIDTH]; GROUP] {
        let mut acc = [[_mm512_setzero_ps(); WIDTH]; GROUP];
        for k in 0..cols {
            // SAFETY: input `k` is 48 floats of the panel and 8 of the activations (the
            // caller's contract).
            unsafe {
                let at = panel.add(k * SUB_PANEL_ROWS);
                let weights: [__m512; WIDTH] =
                    std::array::from_fn(|j| _mm512_loadu_ps(at.add(j * LANES)));
                let inputs = acts.add(k * GROUP);
                for (i, row) in acc.iter_mut().enumerate() {
                    let input = _mm512_set1_ps(*inputs.add(i));
                    for (sum, w) in row.iter_mut().zip(&weights) {
                        *sum = _mm512_fmadd_ps(*w, input, *sum);
                    }
                }
            }
        }
        acc
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod x86 {
    pub unsafe fn decode_sub_panel(
        _: &super::BlockMatrix,
        _: usize,
        _: usize,
        _: std::ops::Range<usize>,
        _: &mut [f32],
    ) {
        unreachable!("AVX-512 is x86-only")
    }
    pub unsafe fn sub_panel_product(
        _: &[f32],
        _: usize,
        _: &[f32],
        _: usize,
        _: usize,
        _: *mut f32,
        _: usize,
    ) {
        unreachable!("AVX-512 is x86-only")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every edge of the tiling (a partial sub-panel, groups of 8 rows full and partial),
    /// against the float product of the expanded weights: the same floats summed in another
    /// order.
    #[test]
    fn matches_the_float_product() {
        if !available() {
            eprintln!("skipped: no AVX-512 on this CPU");
            return;
        }
        crate::cpu::testing::check_against_the_float_product(gemm, 17, 1e-5);
    }
}
