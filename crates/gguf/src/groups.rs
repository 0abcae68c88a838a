//! Grouped integer weights: quantized tensors re-laid as plain arrays of
//! codes plus per-group scales, the form the engine's int4/int8 matmul
//! kernels take.
//!
//! Unlike ggml's interleaved blocks, these arrays are row-major with one
//! code per byte, so the engine can upload them to the device as ordinary
//! tensors and pack them however its kernels want.

use crate::dequant::int4::Int4Format;
use crate::dequant::int8::Int8Format;

/// Weights as 4-bit codes with one affine (scale, min) pair per group of
/// `group_size` consecutive columns: `w = scale * q + min`, `q` in `0..=15`.
///
/// Q4_0: `q` is the stored nibble, `scale = d`, `min = -8 d`.
/// Q4_1: `scale = d`, `min = m`.
/// Q4_K: groups of 32, `scale = d * sc_j`, `min = -dmin * m_j` (the 6-bit
/// sub-block scales and mins unpacked).
#[derive(Debug, Clone, PartialEq)]
pub struct Int4Groups {
    pub rows: usize,
    pub cols: usize,
    pub group_size: usize,
    /// `rows * cols` codes, one per byte, row-major.
    pub codes: Vec<u8>,
    /// `rows * (cols / group_size)`, row-major.
    pub scales: Vec<f32>,
    /// Same layout as `scales`.
    pub mins: Vec<f32>,
}

/// Weights as signed 8-bit codes with one scale per group: `w = scale * q`.
///
/// Q8_0: group 32, `scale = d`. Q5_0: group 32, `q = 5-bit value - 16`, `scale = d`.
/// Q6_K: group 16, `q = 6-bit value - 32`,
/// `scale = d * sc_j` (the int8 sub-block scale).
#[derive(Debug, Clone, PartialEq)]
pub struct Int8Groups {
    pub rows: usize,
    pub cols: usize,
    pub group_size: usize,
    /// `rows * cols` codes, row-major.
    pub codes: Vec<i8>,
    /// `rows * (cols / group_size)`, row-major.
    pub scales: Vec<f32>,
}

impl Int4Groups {
    /// The weight at (`row`, `col`), `scale * q + min`.
    ///
    /// # Panics
    /// If `row` or `col` is out of range.
    pub fn weight(&self, row: usize, col: usize) -> f32 {
        let g = row * (self.cols / self.group_size) + col / self.group_size;
        self.scales[g] * f32::from(self.codes[row * self.cols + col]) + self.mins[g]
    }

    /// All weights, row-major.
    pub fn to_f32(&self) -> Vec<f32> {
        let per_group = self.group_size.max(1);
        self.codes
            .chunks(per_group)
            .zip(self.scales.iter().zip(&self.mins))
            .flat_map(|(q, (&s, &m))| q.iter().map(move |&q| s * f32::from(q) + m))
            .collect()
    }
}

impl Int8Groups {
    /// The weight at (`row`, `col`), `scale * q`.
    ///
    /// # Panics
    /// If `row` or `col` is out of range.
    pub fn weight(&self, row: usize, col: usize) -> f32 {
        let g = row * (self.cols / self.group_size) + col / self.group_size;
        self.scales[g] * f32::from(self.codes[row * self.cols + col])
    }

    /// All weights, row-major.
    pub fn to_f32(&self) -> Vec<f32> {
        let per_group = self.group_size.max(1);
        self.codes
            .chunks(per_group)
            .zip(&self.scales)
            .flat_map(|(q, &s)| q.iter().map(move |&q| s * f32::from(q)))
            .collect()
    }
}

/// Decodes whole blocks of `src`. `rows * cols` must equal the element
/// count of `src` and `cols` must be a multiple of the block size (both
/// checked when the file was opened), so blocks never straddle rows and the
/// block order is the row-major order.
pub(crate) fn int4_groups(f: &Int4Format, src: &[u8], rows: usize, cols: usize) -> Int4Groups {
    let n = rows * cols;
    let n_groups = n / f.group;
    let per_block = f.block_elems / f.group;
    let mut codes = vec![0u8; n];
    let mut scales = vec![0f32; n_groups];
    let mut mins = vec![0f32; n_groups];
    for (((block, c), s), m) in src
        .chunks_exact(f.block_bytes)
        .zip(codes.chunks_exact_mut(f.block_elems))
        .zip(scales.chunks_exact_mut(per_block))
        .zip(mins.chunks_exact_mut(per_block))
    {
        (f.decode)(block, c, s, m);
    }
    Int4Groups {
        rows,
        cols,
        group_size: f.group,
        codes,
        scales,
        mins,
    }
}

/// As [`int4_groups`], for the 8-bit-code formats.
pub(crate) fn int8_groups(f: &Int8Format, src: &[u8], rows: usize, cols: usize) -> Int8Groups {
    let n = rows * cols;
    let per_block = f.block_elems / f.group;
    let mut codes = vec![0i8; n];
    let mut scales = vec![0f32; n / f.group];
    for ((block, c), s) in src
        .chunks_exact(f.block_bytes)
        .zip(codes.chunks_exact_mut(f.block_elems))
        .zip(scales.chunks_exact_mut(per_block))
    {
        (f.decode)(block, c, s);
    }
    Int8Groups {
        rows,
        cols,
        group_size: f.group,
        codes,
        scales,
    }
}

/// Calls `visit` with every group of `src` in row-major order: its codes (one per byte) and its
/// affine pair, decoding one block at a time instead of the whole tensor's codes.
pub(crate) fn visit_int4_groups(
    f: &Int4Format,
    src: &[u8],
    mut visit: impl FnMut(&[u8], f32, f32),
) {
    let per_block = f.block_elems / f.group;
    let (mut codes, mut scales, mut mins) = ([0u8; 256], [0f32; 8], [0f32; 8]);
    let (codes, scales, mins) = (
        &mut codes[..f.block_elems],
        &mut scales[..per_block],
        &mut mins[..per_block],
    );
    for block in src.chunks_exact(f.block_bytes) {
        (f.decode)(block, codes, scales, mins);
        for (g, c) in codes.chunks_exact(f.group).enumerate() {
            visit(c, scales[g], mins[g]);
        }
    }
}

/// As [`visit_int4_groups`], for the 8-bit-code formats.
pub(crate) fn visit_int8_groups(f: &Int8Format, src: &[u8], mut visit: impl FnMut(&[i8], f32)) {
    let per_block = f.block_elems / f.group;
    let (mut codes, mut scales) = ([0i8; 256], [0f32; 16]);
    let (codes, scales) = (&mut codes[..f.block_elems], &mut scales[..per_block]);
    for block in src.chunks_exact(f.block_bytes) {
        (f.decode)(block, codes, scales);
        for (g, c) in codes.chunks_exact(f.group).enumerate() {
            visit(c, scales[g]);
        }
    }
}
