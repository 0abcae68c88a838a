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

    pub fn scale(&self) -> f32 {
        f16_to_f32(self.scale)
    }

    pub fn min(&self) -> f32 {
        f16_to_f32(self.min)
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
        let per_row = cols / BLOCK;
        let mut blocks = Vec::with_capacity(rows * per_row);
        for b in 0..rows * per_row {
            let c = &codes[b * BLOCK..(b + 1) * BLOCK];
            let mut qs = [0u8; 16];
            for j in 0..16 {
                qs[j] = (c[j] & 0x0F) | ((c[j + 16] & 0x0F) << 4);
            }
            blocks.push(Q4Block::new(scales[b], mins[b], qs));
        }
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

    /// Matrices of one format and width stacked along the rows (fused q/k/v, gate/up); `None`
    /// when their formats or widths differ.
    pub fn stack_rows(parts: Vec<BlockMatrix>) -> Option<Self> {
        let cols = parts.first()?.cols();
        if parts.iter().any(|p| p.cols() != cols) {
            return None;
        }
        let rows = parts.iter().map(|p| p.rows()).sum();
        /// Every part's blocks, one after the other, when `blocks` finds them in each part.
        fn stacked<B: Copy>(
            parts: Vec<BlockMatrix>,
            blocks: impl Fn(BlockMatrix) -> Option<Vec<B>>,
        ) -> Option<Vec<B>> {
            let mut all = Vec::new();
            for part in parts {
                all.extend_from_slice(&blocks(part)?);
            }
            Some(all)
        }
        Some(match parts[0] {
            BlockMatrix::Q4 { .. } => BlockMatrix::Q4 {
                rows,
                cols,
                blocks: stacked(parts, |p| match p {
                    BlockMatrix::Q4 { blocks, .. } => Some(blocks),
                    BlockMatrix::Q8 { .. } => None,
                })?,
            },
            BlockMatrix::Q8 { .. } => BlockMatrix::Q8 {
                rows,
                cols,
                blocks: stacked(parts, |p| match p {
                    BlockMatrix::Q8 { blocks, .. } => Some(blocks),
                    BlockMatrix::Q4 { .. } => None,
                })?,
            },
        })
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
        let blocks = w
            .chunks(BLOCK)
            .map(|chunk| {
                let amax = chunk.iter().fold(0f32, |m, v| m.max(v.abs()));
                let scale = amax / 127.0;
                let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
                let mut qs = [0i8; 32];
                for (q, &v) in qs.iter_mut().zip(chunk) {
                    *q = (v * inv).round().clamp(-127.0, 127.0) as i8;
                }
                Q8Block { scale, qs }
            })
            .collect();
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
            BlockMatrix::Q4 { blocks, .. } => blocks
                .iter()
                .flat_map(|b| {
                    let (scale, min) = (b.scale(), b.min());
                    let lo = b.qs.map(|q| (q & 0x0F) as f32 * scale + min);
                    let hi = b.qs.map(|q| (q >> 4) as f32 * scale + min);
                    lo.into_iter().chain(hi)
                })
                .collect(),
            BlockMatrix::Q8 { blocks, .. } => blocks
                .iter()
                .flat_map(|b| b.qs.map(|q| q as f32 * b.scale))
                .collect(),
        }
    }
}
