//! Activation rows rounded to 16 bits per 32-input block and laid out for the tile: for each
//! block and each group of 4 rows, the 4 rows' 16 input pairs `(j, j + 16)` (one 32-bit word
//! each, input `j` in the low half), and apart per row the block's scale and its sum of
//! inputs. Block-major, because the tile walks the groups within a block: the walk is then
//! sequential (group-major, it strode a row's length and ran a fifth slower at batch 64).
//! The AVX-512 tile takes two groups at a time (8 rows), which lie next to each other: the
//! groups are then padded to an even count. Rows past the last are zeros.

use super::super::blocks::BLOCK;
use super::{GROUP, PAIRS};

/// The laid-out activations of one call.
#[derive(Default)]
pub struct Activations {
    /// `codes[((b * groups + g) * GROUP + c) * PAIRS + j]`: pair `j` of block `b` of row
    /// `g * GROUP + c`.
    codes: Vec<i32>,
    /// `scales[(b * groups + g) * GROUP + c]`: the block's step `max |x| / 32767`.
    scales: Vec<f32>,
    /// Laid out as `scales`: the block's sum of inputs (unrounded), for 4-bit blocks' mins.
    sums: Vec<f32>,
    blocks: usize,
    groups: usize,
}

impl Activations {
    /// Rounds and lays out the `m` rows of `x` (`cols` inputs each), in a whole number of
    /// tiles of `tile_groups` groups.
    pub fn lay_out(&mut self, x: &[f32], m: usize, cols: usize, tile_groups: usize) {
        assert!(
            cols.is_multiple_of(BLOCK),
            "{cols} inputs are not whole blocks"
        );
        assert_eq!(x.len(), m * cols);
        let blocks = cols / BLOCK;
        let groups = m.div_ceil(GROUP * tile_groups) * tile_groups;
        let words = groups * GROUP * blocks;
        self.blocks = blocks;
        self.groups = groups;
        self.codes.resize(words * PAIRS, 0);
        self.scales.resize(words, 0.0);
        self.sums.resize(words, 0.0);
        for (i, row) in x.chunks_exact(cols).enumerate() {
            for (b, block) in row.chunks_exact(BLOCK).enumerate() {
                let at = self.index(i / GROUP, b) + i % GROUP;
                let codes = &mut self.codes[at * PAIRS..(at + 1) * PAIRS];
                let (scale, sum) = round_block(block, codes);
                self.scales[at] = scale;
                self.sums[at] = sum;
            }
        }
        // The padding rows of the last tile: zeros, whatever an earlier call left.
        for i in m..groups * GROUP {
            for b in 0..blocks {
                let at = self.index(i / GROUP, b) + i % GROUP;
                self.codes[at * PAIRS..(at + 1) * PAIRS].fill(0);
                self.scales[at] = 0.0;
                self.sums[at] = 0.0;
            }
        }
    }

    /// Blocks per row.
    pub fn blocks(&self) -> usize {
        self.blocks
    }

    /// Where group `g`'s block `b` starts, counted in rows' blocks (`GROUP` per group).
    fn index(&self, g: usize, b: usize) -> usize {
        (b * self.groups + g) * GROUP
    }

    /// Block `b` of `count` groups from group `g` on: their rows' pairs (`PAIRS` words a row),
    /// scales and sums.
    pub fn groups_block(&self, g: usize, count: usize, b: usize) -> (&[i32], &[f32], &[f32]) {
        let at = self.index(g, b);
        let rows = count * GROUP;
        (
            &self.codes[at * PAIRS..(at + rows) * PAIRS],
            &self.scales[at..at + rows],
            &self.sums[at..at + rows],
        )
    }
}

/// Rounds one block of 32 inputs into its 16 pair words; returns the block's step and sum. A
/// non-finite input makes the step NaN, so that it shows in every output it reaches.
fn round_block(block: &[f32], codes: &mut [i32]) -> (f32, f32) {
    #[cfg(target_arch = "x86_64")]
    if super::available() {
        // SAFETY: `available()` checked the CPU; the block holds 32 inputs and `codes` 16 words.
        return unsafe { x86::round_block(block, codes) };
    }
    let sum: f32 = block.iter().sum();
    let amax = block.iter().fold(0f32, |a, v| a.max(v.abs()));
    if !sum.is_finite() {
        codes.fill(0);
        return (f32::NAN, sum);
    }
    let scale = amax / 32767.0;
    let inv = if amax > 0.0 { 32767.0 / amax } else { 0.0 };
    let code = |v: f32| ((v * inv).round_ties_even() as i32).clamp(-32767, 32767);
    for (j, word) in codes.iter_mut().enumerate() {
        *word = (code(block[j]) & 0xFFFF) | (code(block[j + PAIRS]) << 16);
    }
    (scale, sum)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::super::super::dot::avx2::hsum;

    /// # Safety
    /// The CPU has AVX2 and FMA; `block` holds 32 floats and `codes` 16 words.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn round_block(block: &[f32], codes: &mut [i32]) -> (f32, f32) {
        assert!(block.len() >= 32 && codes.len() >= 16);
        // SAFETY: 32 floats read, 16 words written (asserted).
        unsafe {
            let v: [__m256; 4] =
                std::array::from_fn(|q| _mm256_loadu_ps(block.as_ptr().add(8 * q)));
            let sum = hsum(_mm256_add_ps(
                _mm256_add_ps(v[0], v[1]),
                _mm256_add_ps(v[2], v[3]),
            ));
            if !sum.is_finite() {
                codes.fill(0);
                return (f32::NAN, sum);
            }
            let sign = _mm256_set1_ps(-0.0);
            let abs = |x: __m256| _mm256_andnot_ps(sign, x);
            let most = _mm256_max_ps(
                _mm256_max_ps(abs(v[0]), abs(v[1])),
                _mm256_max_ps(abs(v[2]), abs(v[3])),
            );
            let most = _mm_max_ps(_mm256_castps256_ps128(most), _mm256_extractf128_ps(most, 1));
            let most = _mm_max_ps(most, _mm_movehl_ps(most, most));
            let amax = _mm_cvtss_f32(_mm_max_ss(most, _mm_shuffle_ps(most, most, 1)));
            let inv = _mm256_set1_ps(if amax > 0.0 { 32767.0 / amax } else { 0.0 });
            let (low, high) = (_mm256_set1_epi32(-32767), _mm256_set1_epi32(32767));
            // Rounded to nearest, ties to even (the default rounding mode), then clamped.
            let code = |x: __m256| {
                _mm256_min_epi32(
                    _mm256_max_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(x, inv)), low),
                    high,
                )
            };
            let c: [__m256i; 4] = std::array::from_fn(|q| code(v[q]));
            // Word j: input j in the low half, input j + 16 in the high half.
            let first = _mm256_blend_epi16::<0xAA>(c[0], _mm256_slli_epi32::<16>(c[2]));
            let second = _mm256_blend_epi16::<0xAA>(c[1], _mm256_slli_epi32::<16>(c[3]));
            _mm256_storeu_si256(codes.as_mut_ptr().cast(), first);
            _mm256_storeu_si256(codes.as_mut_ptr().add(8).cast(), second);
            (amax / 32767.0, sum)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The AVX2 rounding is the portable definition, word for word.
    #[test]
    fn lays_out_pairs_of_rounded_inputs() {
        let mut seed = 7;
        let x: Vec<f32> = (0..32 * 3)
            .map(|_| crate::cpu::testing::lcg(&mut seed) * 10.0)
            .collect();
        let mut acts = Activations::default();
        acts.lay_out(&x, 1, 96, 1);
        let (codes, scales, sums) = acts.groups_block(0, 1, 1);
        let block = &x[32..64];
        let amax = block.iter().fold(0f32, |a, v| a.max(v.abs()));
        assert_eq!(scales[0], amax / 32767.0);
        assert!((sums[0] - block.iter().sum::<f32>()).abs() < 1e-4);
        for j in 0..16 {
            let low = codes[j] as i16 as f32 * scales[0];
            let high = (codes[j] >> 16) as f32 * scales[0];
            assert!((low - block[j]).abs() <= 0.5 * scales[0] * 1.001, "{j}");
            assert!(
                (high - block[j + 16]).abs() <= 0.5 * scales[0] * 1.001,
                "{j}"
            );
        }
        // Rows 1..4 of the group are padding: zeros.
        assert!(codes[16..].iter().all(|&c| c == 0));
        assert!(scales[1..].iter().chain(&sums[1..]).all(|&v| v == 0.0));
    }

    /// Tiles of two groups pad the groups to an even count, with zeros, and the two groups of
    /// a tile lie next to each other in every block.
    #[test]
    fn pads_to_whole_tiles() {
        let cols = 64;
        let x = vec![1.0f32; 5 * cols];
        let mut acts = Activations::default();
        acts.lay_out(&vec![7.0; 9 * cols], 9, cols, 2);
        acts.lay_out(&x, 5, cols, 2);
        assert_eq!(acts.groups, 2);
        for b in 0..2 {
            let (codes, scales, sums) = acts.groups_block(0, 2, b);
            assert_eq!(scales.len(), 8);
            assert!(scales[..5].iter().all(|&s| s == 1.0 / 32767.0));
            assert!(sums[..5].iter().all(|&s| s == 32.0));
            assert!(scales[5..].iter().chain(&sums[5..]).all(|&v| v == 0.0));
            assert!(codes[5 * PAIRS..].iter().all(|&c| c == 0));
        }
    }
}
