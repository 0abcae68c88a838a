//! Block formats. A block covers 32 consecutive inputs of one output row.

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

    /// Scale and min in lanes 0 and 1 (the vector kernels' conversion, one instruction).
    ///
    /// # Safety
    /// The CPU has F16C.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "f16c")]
    #[inline]
    pub unsafe fn scale_min(&self) -> std::arch::x86_64::__m128 {
        use std::arch::x86_64::*;
        let bits = self.scale as u32 | (self.min as u32) << 16;
        _mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32))
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

/// The GGUF block formats a [`BlockMatrix`] holds as they are stored.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GgufBlocks {
    Q4_0,
    Q4_1,
    Q8_0,
}

impl GgufBlocks {
    /// Bytes of one 32-weight block in the file.
    pub fn block_bytes(self) -> usize {
        match self {
            GgufBlocks::Q4_0 => 18,
            GgufBlocks::Q4_1 => 20,
            GgufBlocks::Q8_0 => 34,
        }
    }
}

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

    /// From 4-bit codes (`rows * cols`, one per byte, values 0..=15) with one scale and min per
    /// 32 columns.
    pub fn from_q4_codes(
        rows: usize,
        cols: usize,
        codes: &[u8],
        scales: &[f32],
        mins: &[f32],
    ) -> Self {
        let blocks = codes
            .chunks_exact(BLOCK)
            .zip(scales.iter().zip(mins))
            .map(|(c, (&scale, &min))| Q4Block::from_codes(c, scale, min))
            .collect();
        BlockMatrix::Q4 { rows, cols, blocks }
    }

    /// From a GGUF tensor's own bytes, for the formats whose blocks these are (Q4_1 byte for
    /// byte; Q4_0 with `min = -8 scale`; Q8_0 with its scale widened): a load then makes no
    /// unpacked copy of the codes. `bytes` must be the tensor's `rows * cols / 32` blocks.
    pub fn from_gguf_blocks(format: GgufBlocks, rows: usize, cols: usize, bytes: &[u8]) -> Self {
        let count = rows * cols / BLOCK;
        assert_eq!(
            bytes.len(),
            count * format.block_bytes(),
            "{format:?} blocks"
        );
        let half = |b: &[u8], at: usize| u16::from_le_bytes([b[at], b[at + 1]]);
        let chunks = bytes.chunks_exact(format.block_bytes());
        match format {
            GgufBlocks::Q4_1 => BlockMatrix::Q4 {
                rows,
                cols,
                blocks: chunks
                    .map(|b| Q4Block {
                        scale: half(b, 0),
                        min: half(b, 2),
                        qs: b[4..20].try_into().expect("16 code bytes"),
                    })
                    .collect(),
            },
            GgufBlocks::Q4_0 => BlockMatrix::Q4 {
                rows,
                cols,
                blocks: chunks
                    .map(|b| {
                        let scale = half(b, 0);
                        Q4Block {
                            scale,
                            // Exact: a power-of-two multiple of a half float.
                            min: f32_to_f16(-8.0 * f16_to_f32(scale)),
                            qs: b[2..18].try_into().expect("16 code bytes"),
                        }
                    })
                    .collect(),
            },
            GgufBlocks::Q8_0 => BlockMatrix::Q8 {
                rows,
                cols,
                blocks: chunks
                    .map(|b| Q8Block {
                        scale: f16_to_f32(half(b, 0)),
                        qs: std::array::from_fn(|i| b[2 + i] as i8),
                    })
                    .collect(),
            },
        }
    }

    /// The matrix with its rows in `order` (row `i` of the result is row `order[i]`).
    pub fn permute_rows(self, order: &[usize]) -> Self {
        assert_eq!(order.len(), self.rows());
        let per_row = self.cols() / BLOCK;
        fn reorder<B: Copy>(blocks: &[B], order: &[usize], per_row: usize) -> Vec<B> {
            order
                .iter()
                .flat_map(|&r| &blocks[r * per_row..(r + 1) * per_row])
                .copied()
                .collect()
        }
        match self {
            BlockMatrix::Q4 { rows, cols, blocks } => BlockMatrix::Q4 {
                rows,
                cols,
                blocks: reorder(&blocks, order, per_row),
            },
            BlockMatrix::Q8 { rows, cols, blocks } => BlockMatrix::Q8 {
                rows,
                cols,
                blocks: reorder(&blocks, order, per_row),
            },
        }
    }

    /// Matrices of one width stacked along the rows (fused q/k/v, gate/up); `None` when their
    /// widths differ. When their formats differ (a Q4_K_M file's Q6_K v beside Q4_K q and k),
    /// the 4-bit parts are rounded to 8-bit blocks ([`BlockMatrix::to_q8`]) rather than the 8-bit
    /// parts to 4 bits: the file kept those parts wider for their accuracy.
    pub fn stack_rows(parts: Vec<BlockMatrix>) -> Option<Self> {
        let cols = parts.first()?.cols();
        if parts.iter().any(|p| p.cols() != cols) {
            return None;
        }
        let rows = parts.iter().map(|p| p.rows()).sum();
        if parts.iter().all(|p| matches!(p, BlockMatrix::Q4 { .. })) {
            let mut all = Vec::new();
            for part in parts {
                if let BlockMatrix::Q4 { blocks, .. } = part {
                    all.extend_from_slice(&blocks);
                }
            }
            return Some(BlockMatrix::Q4 {
                rows,
                cols,
                blocks: all,
            });
        }
        let mut all = Vec::new();
        for part in parts {
            if let BlockMatrix::Q8 { blocks, .. } = part.to_q8() {
                all.extend_from_slice(&blocks);
            }
        }
        Some(BlockMatrix::Q8 {
            rows,
            cols,
            blocks: all,
        })
    }

    /// The matrix as 8-bit blocks: 4-bit blocks are dequantized and rounded (an error of at
    /// most half an 8-bit step, `max|w| / 254`), 8-bit ones kept.
    pub fn to_q8(self) -> Self {
        match self {
            BlockMatrix::Q4 { rows, cols, blocks } => BlockMatrix::Q8 {
                rows,
                cols,
                blocks: blocks
                    .iter()
                    .map(|b| Q8Block::quantize(&b.values()))
                    .collect(),
            },
            q8 => q8,
        }
    }

    /// From 8-bit codes with one scale per 32 columns.
    pub fn from_q8_codes(rows: usize, cols: usize, codes: &[i8], scales: &[f32]) -> Self {
        let per_row = cols / BLOCK;
        let mut blocks = Vec::with_capacity(rows * per_row);
        for b in 0..rows * per_row {
            let mut qs = [0i8; 32];
            qs.copy_from_slice(&codes[b * BLOCK..(b + 1) * BLOCK]);
            blocks.push(Q8Block {
                scale: scales[b],
                qs,
            });
        }
        BlockMatrix::Q8 { rows, cols, blocks }
    }

    /// Quantizes floats to 8-bit symmetric blocks (`scale = max|w| / 127`).
    pub fn q8_from_floats(rows: usize, cols: usize, w: &[f32]) -> Self {
        let blocks = w.chunks(BLOCK).map(Q8Block::quantize).collect();
        BlockMatrix::Q8 { rows, cols, blocks }
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

    fn q4(rows: usize, seed: u64) -> BlockMatrix {
        let mut seed = seed;
        let codes: Vec<u8> = (0..rows * 64)
            .map(|_| ((lcg(&mut seed) + 0.5) * 16.0) as u8)
            .collect();
        let scales: Vec<f32> = (0..rows * 2)
            .map(|_| 0.01 + lcg(&mut seed).abs() * 0.02)
            .collect();
        let mins: Vec<f32> = (0..rows * 2).map(|_| -0.1 * lcg(&mut seed).abs()).collect();
        BlockMatrix::from_q4_codes(rows, 64, &codes, &scales, &mins)
    }

    /// Stacking a 4-bit and an 8-bit part gives 8-bit blocks: the 8-bit rows exactly as they
    /// were, the 4-bit rows within half an 8-bit step of their values.
    #[test]
    fn mixed_formats_stack_as_8_bit_blocks() {
        let mut seed = 5;
        let floats: Vec<f32> = (0..2 * 64).map(|_| lcg(&mut seed)).collect();
        let (a, b) = (q4(3, 1), BlockMatrix::q8_from_floats(2, 64, &floats));
        let (a_values, b_values) = (a.to_f32(), b.to_f32());
        let stacked = BlockMatrix::stack_rows(vec![a, b]).expect("same width");
        assert!(matches!(
            stacked,
            BlockMatrix::Q8 {
                rows: 5,
                cols: 64,
                ..
            }
        ));
        let got = stacked.to_f32();
        assert_eq!(&got[3 * 64..], &b_values[..], "the 8-bit part changed");
        for (block, (want, got)) in a_values.chunks(BLOCK).zip(got.chunks(BLOCK)).enumerate() {
            let amax = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            for (w, g) in want.iter().zip(got) {
                assert!(
                    (w - g).abs() <= amax / 254.0 * 1.001,
                    "block {block}: {w} vs {g}"
                );
            }
        }
        // One format stays as it is; different widths do not stack.
        let same = BlockMatrix::stack_rows(vec![q4(1, 2), q4(2, 3)]).expect("same width");
        assert!(matches!(same, BlockMatrix::Q4 { rows: 3, .. }));
        let narrow = BlockMatrix::q8_from_floats(1, 32, &floats[..32]);
        assert!(BlockMatrix::stack_rows(vec![q4(1, 4), narrow]).is_none());
    }

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
