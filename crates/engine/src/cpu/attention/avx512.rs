//! AVX-512 versions of the two halves of a group's attention, for head sizes that are a
//! multiple of 64 (SmolLM2, Llama and Qwen2 use 64 or 128). Scores are formed sixteen
//! positions at a time: one vector of partial sums per position, reduced together by a
//! transpose-and-add tree (a horizontal sum per score would cost more than its products). The
//! weighted sum of values keeps up to four heads' outputs in registers over all positions.

use std::arch::x86_64::*;

use super::{prefetch_rows, KvElement, MAX_GROUP};

pub fn suits(d: usize) -> bool {
    d.is_multiple_of(64) && super::super::dot::avx512::available()
}

/// `scores[h * n + p] = scale * queries[h] · keys[p]` for every head `h` of the group and
/// position `p` of the segment. `values` are the same positions' values: each block of
/// positions prefetches its values (read after the softmax) and the next block's keys, since
/// a step reads every slot's cache from memory once and these runs are too short for the
/// hardware prefetchers to pick up (batch 16, SmolLM2: about 37 MB a step at 100 positions,
/// against 98 MB of weights).
///
/// # Safety
/// The CPU has AVX-512F; `d` is a multiple of 16; the segment holds whole rows of `d`
/// within positions `0..n`; `values` as many as the keys; `scores` holds `group * n` floats.
#[target_feature(enable = "avx512f")]
pub unsafe fn scores<T: KvElement>(
    queries: &[f32],
    keys: super::Segment<T>,
    values: &[T],
    n: usize,
    d: usize,
    scale: f32,
    scores: &mut [f32],
) {
    let group = queries.len() / d;
    let count_all = keys.rows.len() / d;
    assert!(d.is_multiple_of(16) && count_all > 0 && keys.first + count_all <= n);
    assert!(scores.len() >= group * n && values.len() == keys.rows.len());
    let scale = _mm512_set1_ps(scale);
    prefetch_rows(keys.rows, 0..16, d);
    for p0 in (0..count_all).step_by(16) {
        let count = (count_all - p0).min(16);
        prefetch_rows(values, p0..p0 + count, d);
        prefetch_rows(keys.rows, p0 + count..p0 + 32, d);
        for h in 0..group {
            let q = queries[h * d..][..d].as_ptr();
            // Past the last position, the last key again (its sums are not stored).
            let mut partial = [_mm512_setzero_ps(); 16];
            for (i, acc) in partial.iter_mut().enumerate() {
                let k = keys.rows[(p0 + i.min(count - 1)) * d..][..d].as_ptr();
                // SAFETY: `q` and `k` point at `d` floats, `d` a multiple of 16.
                unsafe {
                    *acc = _mm512_mul_ps(_mm512_loadu_ps(q), T::load16(k));
                    for c in (16..d).step_by(16) {
                        *acc =
                            _mm512_fmadd_ps(_mm512_loadu_ps(q.add(c)), T::load16(k.add(c)), *acc);
                    }
                }
            }
            let sums = _mm512_mul_ps(sum_each(partial), scale);
            let mask = (u32::MAX >> (32 - count)) as __mmask16;
            let at = h * n + keys.first + p0;
            // SAFETY: positions `first + p0..first + p0 + count` of head `h`'s row
            // (asserted above).
            unsafe { _mm512_mask_storeu_ps(scores.as_mut_ptr().add(at), mask, sums) };
        }
    }
}

/// Lane `i` of the result is the sum of the sixteen lanes of `v[i]`.
#[target_feature(enable = "avx512f")]
fn sum_each(v: [__m512; 16]) -> __m512 {
    // Each stage adds halves of pairs of vectors: 16 vectors of 16 partial sums, then 8 of
    // 2 x 8, 4 of 4 x 4, 2 of 8 x 2, 1 of 16 x 1.
    let mut halves = [_mm512_setzero_ps(); 8];
    for (j, h) in halves.iter_mut().enumerate() {
        let (a, b) = (v[2 * j], v[2 * j + 1]);
        *h = _mm512_add_ps(
            _mm512_shuffle_f32x4::<0b01_00_01_00>(a, b),
            _mm512_shuffle_f32x4::<0b11_10_11_10>(a, b),
        );
    }
    let mut quarters = [_mm512_setzero_ps(); 4];
    for (j, q) in quarters.iter_mut().enumerate() {
        let (a, b) = (halves[2 * j], halves[2 * j + 1]);
        *q = _mm512_add_ps(
            _mm512_shuffle_f32x4::<0b10_00_10_00>(a, b),
            _mm512_shuffle_f32x4::<0b11_01_11_01>(a, b),
        );
    }
    let mut eighths = [_mm512_setzero_ps(); 2];
    for (j, e) in eighths.iter_mut().enumerate() {
        let (a, b) = (quarters[2 * j], quarters[2 * j + 1]);
        *e = _mm512_add_ps(
            _mm512_shuffle_ps::<0b01_00_01_00>(a, b),
            _mm512_shuffle_ps::<0b11_10_11_10>(a, b),
        );
    }
    let (a, b) = (eighths[0], eighths[1]);
    let sums = _mm512_add_ps(
        _mm512_shuffle_ps::<0b10_00_10_00>(a, b),
        _mm512_shuffle_ps::<0b11_01_11_01>(a, b),
    );
    // Lane 4k + m now holds the sum of v[4m + k].
    let order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    _mm512_permutexvar_ps(order, sums)
}

/// `out[h] = Σ_p weights[h * n + p] values[p] / totals[h]` for every head of the group,
/// over the positions of the segments.
///
/// # Safety
/// The CPU has AVX-512F; `d` is a multiple of 64; the segments hold whole rows of `d`
/// within positions `0..n`; `weights` holds `group * n` floats, `out` `group * d`.
#[target_feature(enable = "avx512f")]
pub unsafe fn weighted_sum<T: KvElement>(
    weights: &[f32],
    values: &[super::Segment<T>],
    n: usize,
    d: usize,
    totals: &[f32; MAX_GROUP],
    out: &mut [f32],
) {
    let group = out.len() / d;
    assert!(d.is_multiple_of(64) && weights.len() >= group * n);
    assert!(values.iter().all(|s| s.first + s.rows.len() / d <= n));
    for c0 in (0..d).step_by(64) {
        for h0 in (0..group).step_by(4) {
            // SAFETY: the caller's contract.
            unsafe {
                match group - h0 {
                    1 => heads::<T, 1>(weights, values, n, d, c0, h0, totals, out),
                    2 => heads::<T, 2>(weights, values, n, d, c0, h0, totals, out),
                    3 => heads::<T, 3>(weights, values, n, d, c0, h0, totals, out),
                    _ => heads::<T, 4>(weights, values, n, d, c0, h0, totals, out),
                }
            }
        }
    }
}

/// `weighted_sum` for heads `h0..h0 + H` and columns `c0..c0 + 64`, in 4H registers.
#[allow(clippy::too_many_arguments)]
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn heads<T: KvElement, const H: usize>(
    weights: &[f32],
    values: &[super::Segment<T>],
    n: usize,
    d: usize,
    c0: usize,
    h0: usize,
    totals: &[f32; MAX_GROUP],
    out: &mut [f32],
) {
    let mut acc = [[_mm512_setzero_ps(); 4]; H];
    for segment in values {
        for (i, row) in segment.rows.chunks_exact(d).enumerate() {
            let p = segment.first + i;
            let v = row[c0..][..64].as_ptr();
            let mut rows = [_mm512_setzero_ps(); 4];
            for (c, r) in rows.iter_mut().enumerate() {
                // SAFETY: 64 floats at `v`.
                *r = unsafe { T::load16(v.add(16 * c)) };
            }
            for (h, acc) in acc.iter_mut().enumerate() {
                let w = _mm512_set1_ps(weights[(h0 + h) * n + p]);
                for (a, r) in acc.iter_mut().zip(&rows) {
                    *a = _mm512_fmadd_ps(w, *r, *a);
                }
            }
        }
    }
    for (h, acc) in acc.iter().enumerate() {
        let inverse = _mm512_set1_ps(1.0 / totals[h0 + h]);
        let o = out[(h0 + h) * d + c0..][..64].as_mut_ptr();
        for (c, a) in acc.iter().enumerate() {
            // SAFETY: 64 floats at `o`.
            unsafe { _mm512_storeu_ps(o.add(16 * c), _mm512_mul_ps(*a, inverse)) };
        }
    }
}
