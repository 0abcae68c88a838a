//! The 16 x 16 register transpose of float vectors (AVX-512): the bfloat16 kernels' products
//! come out with a register per weight row and a lane per activation row, and the activation
//! tiles need the opposite; 64 shuffles turn one into the other without going through memory.

use std::arch::x86_64::*;

use super::pairs::TILE;

/// Writes `out[i * stride + j] = lane i of products[j]` for `i < lanes`, `j < columns`:
/// the 16 x 16 block transposed in registers, then one masked store per output row.
///
/// # Safety
/// The CPU has AVX-512F; `out` is valid for those writes.
#[target_feature(enable = "avx512f")]
pub unsafe fn transpose_out(
    products: &[__m512; TILE],
    lanes: usize,
    columns: usize,
    out: *mut f32,
    stride: usize,
) {
    let mask: __mmask16 = ((1u32 << columns) - 1) as __mmask16;
    let rows = transpose(products);
    for (lane, row) in rows.iter().enumerate().take(lanes) {
        // SAFETY: the caller's columns of row `lane`.
        unsafe { _mm512_mask_storeu_ps(out.add(lane * stride), mask, *row) };
    }
}

/// The 16 x 16 transpose of `m` (register `i` of the result holds lane `i` of every input
/// register): interleaving pairs of single floats, then of pairs, then 128-bit quarters
/// twice, 64 shuffles in all.
#[inline]
#[target_feature(enable = "avx512f")]
pub fn transpose(m: &[__m512; TILE]) -> [__m512; TILE] {
    let mut a = [_mm512_setzero_ps(); TILE];
    for i in 0..8 {
        a[2 * i] = _mm512_unpacklo_ps(m[2 * i], m[2 * i + 1]);
        a[2 * i + 1] = _mm512_unpackhi_ps(m[2 * i], m[2 * i + 1]);
    }
    let mut b = [_mm512_setzero_ps(); TILE];
    for i in 0..4 {
        let pd = |v: __m512| _mm512_castps_pd(v);
        let (t0, t1, t2, t3) = (a[4 * i], a[4 * i + 1], a[4 * i + 2], a[4 * i + 3]);
        b[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(pd(t0), pd(t2)));
        b[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(pd(t0), pd(t2)));
        b[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(pd(t1), pd(t3)));
        b[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(pd(t1), pd(t3)));
    }
    let mut c = [_mm512_setzero_ps(); TILE];
    for half in 0..2 {
        for j in 0..4 {
            let (x, y) = (b[8 * half + j], b[8 * half + 4 + j]);
            c[8 * half + j] = _mm512_shuffle_f32x4::<0x88>(x, y);
            c[8 * half + 4 + j] = _mm512_shuffle_f32x4::<0xdd>(x, y);
        }
    }
    let mut t = [_mm512_setzero_ps(); TILE];
    for j in 0..8 {
        t[j] = _mm512_shuffle_f32x4::<0x88>(c[j], c[8 + j]);
        t[8 + j] = _mm512_shuffle_f32x4::<0xdd>(c[j], c[8 + j]);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The register transpose that turns a tile's products into output rows (and activation
    /// rows into tile rows).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn transpose_swaps_lanes_and_registers() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            return;
        }
        use std::arch::x86_64::*;
        let m: [__m512; 16] = std::array::from_fn(|r| {
            let row: [f32; 16] = std::array::from_fn(|i| (r * 16 + i) as f32);
            // SAFETY: 16 floats.
            unsafe { _mm512_loadu_ps(row.as_ptr()) }
        });
        // SAFETY: the CPU has AVX-512F (checked above).
        let t = unsafe { transpose(&m) };
        for (i, v) in t.iter().enumerate() {
            let mut lanes = [0f32; 16];
            // SAFETY: 16 floats.
            unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), *v) };
            let want: [f32; 16] = std::array::from_fn(|r| (r * 16 + i) as f32);
            assert_eq!(lanes, want, "register {i}");
        }
    }
}
