//! AVX2 dot products and `y += w x`, for head sizes that are a multiple of 8.

use std::arch::x86_64::*;

use super::super::dot::avx2::hsum;

#[target_feature(enable = "avx2,fma")]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    assert!(a.len() == b.len() && a.len().is_multiple_of(8));
    let (mut even, mut odd) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let mut i = 0;
    // SAFETY: `i + 8 <= len` for every load (lengths asserted above).
    unsafe {
        while i + 16 <= a.len() {
            let (pa, pb) = (a.as_ptr().add(i), b.as_ptr().add(i));
            even = _mm256_fmadd_ps(_mm256_loadu_ps(pa), _mm256_loadu_ps(pb), even);
            odd = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(8)), _mm256_loadu_ps(pb.add(8)), odd);
            i += 16;
        }
        if i < a.len() {
            let (pa, pb) = (a.as_ptr().add(i), b.as_ptr().add(i));
            even = _mm256_fmadd_ps(_mm256_loadu_ps(pa), _mm256_loadu_ps(pb), even);
        }
    }
    hsum(_mm256_add_ps(even, odd))
}

#[target_feature(enable = "avx2,fma")]
pub fn axpy(w: f32, x: &[f32], y: &mut [f32]) {
    assert!(x.len() == y.len() && x.len().is_multiple_of(8));
    let w = _mm256_set1_ps(w);
    for i in (0..x.len()).step_by(8) {
        // SAFETY: `i + 8 <= len` (asserted above).
        unsafe {
            let py = y.as_mut_ptr().add(i);
            let v = _mm256_fmadd_ps(w, _mm256_loadu_ps(x.as_ptr().add(i)), _mm256_loadu_ps(py));
            _mm256_storeu_ps(py, v);
        }
    }
}
