//! Block formats. A block covers 32 consecutive inputs of one output row. Building a
//! [`BlockMatrix`] (from codes, floats or a GGUF file's bytes) and reshaping one (row order,
//! stacking) is `block_build`'s.

use super::half::{f16_to_f32, f32_to_f16};

/// 4-bit affine block: `w[i] = scale * q[i] + min`, GGUF's Q4_1 block byte for byte: the scale
/// and min as IEEE half floats, then byte `j` holds `q[j]` in its low nibble and `q[j + 16]` in
/// its high nibble. 20 bytes per 32 weights: float32 scale and min took 24, and a decoding step
/// at batch 1 reads every weight byte once, so the block's size is its speed there. GGUF's
/// Q4_0 and Q4_1 scales are half floats already; Q4_K's (a super-block's half-float scale times
/// a 6-bit factor) and `--quant int4`'s are rounded to the nearest half float, a relative
/// change of at most 2^-11.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct Q4Block {
    /// IEEE binary16 bits.
    pub scale: u16,
    /// IEEE binary16 bits.
    pub min: u16,
    pub qs: [u8; 16],
}

impl Q4Block {
    /// A block from float scale and min (rounded to half floats) and its packed codes.
    pub fn new(scale: f32, min: f32, qs: [u8; 16]) -> Q4Block {
        Q4Block {
            scale: f32_to_f16(scale),
            min: f32_to_f16(min),
            qs,
        }
    }

    /// A block from 32 codes (values 0..=15, one per byte) and its scale and min.
    pub fn from_codes(codes: &[u8], scale: f32, min: f32) -> Q4Block {
        assert_eq!(codes.len(), BLOCK, "a block's codes");
        let qs = std::array::from_fn(|j| (codes[j] & 0x0F) | ((codes[j + 16] & 0x0F) << 4));
        Q4Block::new(scale, min, qs)
    }

    pub fn scale(&self) -> f32 {
        f16_to_f32(self.scale)
    }

    pub fn min(&self) -> f32 {
        f16_to_f32(self.min)
    }

    /// The block's 32 weights.
    pub fn values(&self) -> [f32; BLOCK] {
        let (scale, min) = (self.scale(), self.min());
        std::array::from_fn(|i| {
            let q = if i < 16 {
                self.qs[i] & 0x0F
            } else {
                self.qs[i - 16] >> 4
            };
            q as f32 * scale + min
        })
    }

    /// Scale and min as one word, scale in the low half: the layout `vcvtph2ps` converts into
    /// a scale lane followed by a min lane.
    #[inline]
    pub fn scale_min_bits(&self) -> u32 {
        self.scale as u32 | (self.min as u32) << 16
    }

    /// Scale and min in lanes 0 and 1 (the vector kernels' conversion, one instruction).
    ///
    /// # Safety
    /// The CPU has F16C.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "f16c")]
    #[inline]
    pub unsafe fn scale_min(&self) -> std::arch::x86_64::__m128 {
        use std::arch::x86_64::*;
        _mm_cvtph_ps(_mm_cvtsi32_si128(self.scale_min_bits() as i32))
    }
}

/// 8-bit symmetric block: `w[i] = scale * q[i]` (GGUF's Q8_0).
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct Q8Block {
    pub scale: f32,
    pub qs: [i8; 32],
}

impl Q8Block {
    /// Quantizes 32 floats symmetrically: `scale = max|w| / 127`, codes rounded to nearest.
    pub fn quantize(values: &[f32]) -> Q8Block {
        assert_eq!(values.len(), BLOCK, "a block's values");
        let amax = values.iter().fold(0f32, |m, v| m.max(v.abs()));
        let scale = amax / 127.0;
        let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
        let qs = std::array::from_fn(|i| round_to_code(values[i] * inv));
        Q8Block { scale, qs }
    }
}

/// `x.round().clamp(-127.0, 127.0)` (halves away from zero) as a code, without the libm call
/// that `round` is on baseline x86-64 (a fifth of a Q4_K_M model's load): `x - trunc(x)` is
/// exact, so comparing it with one half decides as `round` does.
#[inline]
fn round_to_code(x: f32) -> i8 {
    let x = x.clamp(-127.0, 127.0);
    let t = x as i32;
    let frac = x - t as f32;
    // Comparisons as integers, not branches: which way a weight rounds is a coin toss.
    (t + (frac >= 0.5) as i32 - (frac <= -0.5) as i32) as i8
}

pub const BLOCK: usize = 32;

/// A weight matrix `[rows, cols]` stored as blocks, row after row.
pub enum BlockMatrix {
    Q4 {
        rows: usize,
        cols: usize,
        blocks: Vec<Q4Block>,
    },
    Q8 {
        rows: usize,
        cols: usize,
        blocks: Vec<Q8Block>,
    },
}

impl BlockMatrix {
    /// Bytes of one row's blocks.
    pub fn row_bytes(&self) -> usize {
        match self {
            BlockMatrix::Q4 { cols, .. } => cols / BLOCK * std::mem::size_of::<Q4Block>(),
            BlockMatrix::Q8 { cols, .. } => cols / BLOCK * std::mem::size_of::<Q8Block>(),
        }
    }

    /// Asks the CPU to bring row `r`'s blocks into cache ahead of use.
    #[inline]
    pub fn prefetch_row(&self, r: usize) {
        assert!(r < self.rows());
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            let base: *const i8 = match self {
                BlockMatrix::Q4 { blocks, .. } => blocks.as_ptr().cast(),
                BlockMatrix::Q8 { blocks, .. } => blocks.as_ptr().cast(),
            };
            let bytes = self.row_bytes();
            for at in (r * bytes..(r + 1) * bytes).step_by(64) {
                // SAFETY: a prefetch hint for an address inside row `r` (rows are stored one
                // after another, `row_bytes` each).
                unsafe { _mm_prefetch::<_MM_HINT_T0>(base.add(at)) };
            }
        }
    }

    /// Asks the CPU to bring share `part` of `parts` of rows `rows`' bytes into cache: the
    /// panel kernels spread the next panel's prefetches over the block columns of the
    /// current one, since a block column reads as many streams as the panel has rows, which
    /// the hardware prefetcher does not follow.
    #[inline]
    pub fn prefetch_share(&self, rows: std::ops::Range<usize>, part: usize, parts: usize) {
        let (ahead, bytes) = self.row_span(rows);
        let lines = bytes.div_ceil(64);
        #[cfg(target_arch = "x86_64")]
        for line in part * lines / parts..(part + 1) * lines / parts {
            // SAFETY: prefetching has no memory effects; the address lies in the blocks.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                    ahead.wrapping_add(line * 64).cast(),
                )
            };
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (ahead, lines, part, parts);
    }

    /// Where rows `rows`' blocks lie: their first byte and their length in bytes (rows are
    /// stored one after another), for prefetching.
    pub fn row_span(&self, rows: std::ops::Range<usize>) -> (*const u8, usize) {
        assert!(rows.start <= rows.end && rows.end <= self.rows());
        let bytes = self.row_bytes();
        let base: *const u8 = match self {
            BlockMatrix::Q4 { blocks, .. } => blocks.as_ptr().cast(),
            BlockMatrix::Q8 { blocks, .. } => blocks.as_ptr().cast(),
        };
        // The offset stays inside (or one past) the blocks' allocation.
        (base.wrapping_add(rows.start * bytes), rows.len() * bytes)
    }

    pub fn rows(&self) -> usize {
        match self {
            BlockMatrix::Q4 { rows, .. } | BlockMatrix::Q8 { rows, .. } => *rows,
        }
    }

    pub fn cols(&self) -> usize {
        match self {
            BlockMatrix::Q4 { cols, .. } | BlockMatrix::Q8 { cols, .. } => *cols,
        }
    }

    pub fn bytes(&self) -> usize {
        match self {
            BlockMatrix::Q4 { blocks, .. } => blocks.len() * std::mem::size_of::<Q4Block>(),
            BlockMatrix::Q8 { blocks, .. } => blocks.len() * std::mem::size_of::<Q8Block>(),
        }
    }

    /// Rows `start..end` as floats, row-major: the transient tile a batched matmul multiplies
    /// with a dense GEMM.
    pub fn dequantize_rows(&self, start: usize, end: usize) -> Vec<f32> {
        let per_row = self.cols() / BLOCK;
        let mut out = Vec::with_capacity((end - start) * self.cols());
        match self {
            BlockMatrix::Q4 { blocks, .. } => {
                for b in &blocks[start * per_row..end * per_row] {
                    let (scale, min) = (b.scale(), b.min());
                    out.extend(b.qs.iter().map(|&q| (q & 0x0F) as f32 * scale + min));
                    out.extend(b.qs.iter().map(|&q| (q >> 4) as f32 * scale + min));
                }
            }
            BlockMatrix::Q8 { blocks, .. } => {
                for b in &blocks[start * per_row..end * per_row] {
                    out.extend(b.qs.iter().map(|&q| q as f32 * b.scale));
                }
            }
        }
        out
    }

    /// The weights as floats, row-major (tests, and re-quantization).
    pub fn to_f32(&self) -> Vec<f32> {
        match self {
            BlockMatrix::Q4 { blocks, .. } => blocks.iter().flat_map(Q4Block::values).collect(),
            BlockMatrix::Q8 { blocks, .. } => blocks
                .iter()
                .flat_map(|b| b.qs.map(|q| q as f32 * b.scale))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::testing::lcg;

    /// The branch-free rounding equals `round` (halves away from zero) then the clamp, on
    /// halves, their neighbours and out-of-range values.
    #[test]
    fn codes_round_like_round() {
        let mut seed = 9;
        let mut xs: Vec<f32> = (0..100_000).map(|_| lcg(&mut seed) * 300.0).collect();
        for k in -130..=130 {
            let half = k as f32 + 0.5;
            xs.extend([half, half.next_up(), half.next_down(), k as f32, -half]);
        }
        xs.extend([0.49999997, -0.49999997, f32::MAX, f32::MIN, 0.0, -0.0]);
        for x in xs {
            let want = x.round().clamp(-127.0, 127.0) as i8;
            assert_eq!(round_to_code(x), want, "{x}");
        }
    }

    /// A block's values are its codes times its scale plus its min, low nibbles first.
    #[test]
    fn q4_block_values_follow_the_nibble_order() {
        let codes: Vec<u8> = (0..32).map(|i| (i % 16) as u8).collect();
        let block = Q4Block::from_codes(&codes, 0.5, -1.0);
        let values = block.values();
        for (i, &v) in values.iter().enumerate() {
            assert_eq!(v, codes[i] as f32 * 0.5 - 1.0, "weight {i}");
        }
    }
}
