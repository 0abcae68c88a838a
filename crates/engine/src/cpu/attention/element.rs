//! How the cache stores keys and values: float32, or bfloat16 where the products are bfloat16
//! already (`--bf16`). A decoding step reads every cached key and value once, about as many
//! bytes as the quantized weights at batch 16, and that read is bound by memory bandwidth;
//! bfloat16 halves it. Queries, scores and sums stay float32: an element is widened as it is
//! loaded.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// A cached key or value component.
pub trait KvElement: Copy + Send + Sync + 'static {
    /// Writes `row` at `to`.
    ///
    /// # Safety
    /// `to` is valid for `row.len()` writes.
    unsafe fn store(row: &[f32], to: *mut Self);

    /// `row` as float32: itself, or widened into `buffer` (at least `row.len()` long).
    fn widen<'a>(row: &'a [Self], buffer: &'a mut [f32]) -> &'a [f32];

    /// Sixteen consecutive elements at `at`, widened.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `at` is valid for 16 reads. Only inlined into functions compiled
    /// for AVX-512.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load16(at: *const Self) -> __m512;
}

impl KvElement for f32 {
    #[inline(always)]
    unsafe fn store(row: &[f32], to: *mut f32) {
        // SAFETY: the caller's contract.
        unsafe { std::ptr::copy_nonoverlapping(row.as_ptr(), to, row.len()) }
    }

    #[inline(always)]
    fn widen<'a>(row: &'a [f32], _: &'a mut [f32]) -> &'a [f32] {
        row
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load16(at: *const f32) -> __m512 {
        // SAFETY: the caller's contract.
        unsafe { _mm512_loadu_ps(at) }
    }
}

/// A bfloat16 value: the upper half of a float32.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(transparent)]
pub struct Bf16(pub u16);

impl Bf16 {
    /// Rounded to nearest, ties to even (as the vector conversions round).
    pub fn from_f32(v: f32) -> Bf16 {
        let bits = v.to_bits();
        if v.is_nan() {
            return Bf16((bits >> 16) as u16 | 0x40);
        }
        let rounded = bits.wrapping_add(0x7FFF + ((bits >> 16) & 1));
        Bf16((rounded >> 16) as u16)
    }

    pub fn to_f32(self) -> f32 {
        f32::from_bits((self.0 as u32) << 16)
    }
}

impl KvElement for Bf16 {
    #[inline(always)]
    unsafe fn store(row: &[f32], to: *mut Bf16) {
        for (i, &v) in row.iter().enumerate() {
            // SAFETY: the caller's contract.
            unsafe { to.add(i).write(Bf16::from_f32(v)) };
        }
    }

    #[inline(always)]
    fn widen<'a>(row: &'a [Bf16], buffer: &'a mut [f32]) -> &'a [f32] {
        for (b, v) in buffer.iter_mut().zip(row) {
            *b = v.to_f32();
        }
        &buffer[..row.len()]
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load16(at: *const Bf16) -> __m512 {
        // SAFETY: the caller's contract; a bfloat16 is the upper half of its float32.
        unsafe {
            let halves = _mm512_cvtepu16_epi32(_mm256_loadu_si256(at.cast()));
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(halves))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_to_nearest_even_like_libtorch() {
        let values: Vec<f32> = (0..2000)
            .map(|i| ((i as f32) * 0.731).sin() * 10f32.powi(i % 7 - 3))
            // Ties: halfway between two bfloat16 values, rounded to the even one.
            .chain([0.0, -0.0, 1.0, -2.5])
            .chain([1.0 + 2f32.powi(-8), 1.0 + 3.0 * 2f32.powi(-8)])
            .collect();
        let torch = tch::Tensor::from_slice(&values).to_kind(tch::Kind::BFloat16);
        let back: Vec<f32> = Vec::try_from(torch.to_kind(tch::Kind::Float)).unwrap();
        for (v, want) in values.iter().zip(back) {
            assert_eq!(Bf16::from_f32(*v).to_f32().to_bits(), want.to_bits(), "{v}");
        }
    }
}
