//! Block formats. A block covers 32 consecutive inputs of one output row.

/// 4-bit affine block: `w[i] = scale * q[i] + min`. Byte `j` holds `q[j]` in its low nibble and
/// `q[j + 16]` in its high nibble (GGUF's Q4_0/Q4_1 order).
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct Q4Block {
    pub scale: f32,
    pub min: f32,
    pub qs: [u8; 16],
}

/// 8-bit symmetric block: `w[i] = scale * q[i]` (GGUF's Q8_0).
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct Q8Block {
    pub scale: f32,
    pub qs: [i8; 32],
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
            blocks.push(Q4Block {
                scale: scales[b],
                min: mins[b],
                qs,
            });
        }
        BlockMatrix::Q4 { rows, cols, blocks }
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
                    out.extend(b.qs.iter().map(|&q| (q & 0x0F) as f32 * b.scale + b.min));
                    out.extend(b.qs.iter().map(|&q| (q >> 4) as f32 * b.scale + b.min));
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
                    let lo = b.qs.map(|q| (q & 0x0F) as f32 * b.scale + b.min);
                    let hi = b.qs.map(|q| (q >> 4) as f32 * b.scale + b.min);
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
