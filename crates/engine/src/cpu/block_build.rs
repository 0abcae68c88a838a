//! Building a [`BlockMatrix`]: from 4-bit or 8-bit codes, from floats, straight from a GGUF
//! file's bytes, and reshaping one along its rows (llama.cpp's rope order undone, fused
//! projections stacked). The loader builds every quantized weight through here.

use super::blocks::{BlockMatrix, Q4Block, Q8Block, BLOCK};
use super::half::{f16_to_f32, f32_to_f16};

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

impl BlockMatrix {
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
        // Sized up front: growing by doubling would copy the parts already stacked and hold
        // the old and new buffers at once, and keep up to half again as much spare capacity.
        let count = rows * (cols / BLOCK);
        if parts.iter().all(|p| matches!(p, BlockMatrix::Q4 { .. })) {
            let mut all = Vec::with_capacity(count);
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
        let mut all = Vec::with_capacity(count);
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
}
