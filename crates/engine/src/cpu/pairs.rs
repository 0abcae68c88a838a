//! The bfloat16 operands of the two bfloat16 kernels (`amx` on the tile unit, `dpbf16` on the
//! AVX-512 vector units): activations converted once per call into "pair" tiles, and weight
//! rows expanded block column by block column. Both kernels multiply the same layouts, so
//! they round the same values the same way and give the same products up to summation order.
//!
//! - An activation tile covers 16 activation rows and one block (32 inputs): its row `p` holds,
//!   for each of the 16 rows, the pair of inputs `2p, 2p + 1` (64 bytes: the layout
//!   `tdpbf16ps` reads its second operand in, and one `vdpbf16ps` operand).
//! - A weight row's block is 32 bfloat16 values (one 64-byte tile row); a [`Tiles`] holds one
//!   block column of 32 weight rows.
//!
//! Within a block both operands hold the inputs in [`BLOCK_ORDER`], not in input order: a
//! product only needs the two sides to agree, and that order lets a Q4 block expand with one
//! shift and one 32-way word lookup (its 16 code bytes, each two codes, shifted by 0, 4, 8 and
//! 12 bits in four 128-bit lanes, index a table of the block's 16 values; see `q4_column`)
//! instead of widening and converting each half of the block separately.

use std::cell::RefCell;
use std::sync::OnceLock;

use super::blocks::{BlockMatrix, BLOCK};
use super::pool;

/// Rows (weight rows, or activation rows) per tile.
pub const TILE: usize = 16;
/// Bytes of one tile: 16 rows of 64 bytes.
pub const TILE_BYTES: usize = 1024;
/// Values in two tiles: one block (32 inputs) of 32 weight rows.
pub const PAIR: usize = 2 * TILE * BLOCK;

/// Which of a block's inputs each position of a tile row holds: the even inputs of the low
/// half, the even inputs of the high half, then the odd ones likewise. (Read as little-endian
/// 16-bit words, a Q4 block's code bytes give code `2i` in bits 0..4 of word `i`, code `2i + 16`
/// in bits 4..8, `2i + 1` in 8..12 and `2i + 17` in 12..16.)
pub const BLOCK_ORDER: [usize; BLOCK] = [
    0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30, //
    1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31,
];

/// One block of 32 weight rows as bfloat16, rows 0..16 then 16..32 (two tiles), aligned for
/// tile loads.
#[repr(C, align(64))]
pub struct Tiles(pub [u16; PAIR]);

impl Default for Tiles {
    fn default() -> Self {
        Tiles([0; PAIR])
    }
}

thread_local! {
    /// One block column per `Tiles` of up to 32 expanded weight rows, reused across tasks and
    /// calls (each kernel task expands its sub-panels here in turn).
    static SUB_PANEL: RefCell<Vec<Tiles>> = const { RefCell::new(Vec::new()) };
}

/// Hands this thread's sub-panel buffer, `kblocks` block columns long, to `use_panel`. Rows past
/// a partial sub-panel's hold whatever an earlier one left there.
pub fn with_sub_panel<R>(kblocks: usize, use_panel: impl FnOnce(&mut [Tiles]) -> R) -> R {
    SUB_PANEL.with_borrow_mut(|panel| {
        panel.resize_with(kblocks, Tiles::default);
        use_panel(&mut panel[..kblocks])
    })
}

/// Whether the CPU converts to and multiplies bfloat16 in vector registers (AVX-512 BF16:
/// Intel from Cooper Lake and Sapphire Rapids, AMD from Zen 4).
pub fn available() -> bool {
    static USABLE: OnceLock<bool> = OnceLock::new();
    *USABLE.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            super::isa::allows_avx512()
                && std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512bf16")
                && std::arch::is_x86_feature_detected!("f16c")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// The activations' base pointer, shared by the tasks that fill disjoint groups of tiles.
struct SharedBytes(*mut u8);

impl SharedBytes {
    fn get(&self) -> *mut u8 {
        self.0
    }
}

// SAFETY: each task writes only its own group's bytes.
unsafe impl Sync for SharedBytes {}

thread_local! {
    /// The caller's activations in tile layout, reused across calls.
    static ACTIVATIONS: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Converts `x` (`[m, cols]` row-major) to activation tiles, `ceil(m / 16)` groups of
/// `cols / 32` tiles (the lanes of rows past `m` are zero), and hands them to `use_tiles`. Only
/// call when [`available`].
pub fn with_activation_tiles<R>(
    x: &[f32],
    m: usize,
    cols: usize,
    use_tiles: impl FnOnce(&[u8]) -> R,
) -> R {
    assert!(available(), "bfloat16 operands need AVX-512 BF16");
    assert_eq!(x.len(), m * cols);
    let groups = m.div_ceil(TILE);
    let group_bytes = (cols / BLOCK) * TILE_BYTES;
    ACTIVATIONS.with_borrow_mut(|acts| {
        // Every tile is written whole (the buffer is not cleared between calls).
        let bytes = groups * group_bytes;
        if acts.len() < bytes {
            acts.resize(bytes, 0);
        }
        let acts = &mut acts[..bytes];
        // Each group of 16 rows is converted by a task of its own (a 512-token prefill has 32).
        let tiles = SharedBytes(acts.as_mut_ptr());
        pool::run(groups, &|group| {
            let rows = &x[group * TILE * cols..((group + 1) * TILE).min(m) * cols];
            // SAFETY: `available()` checked the CPU; `acts` holds `group_bytes` per group and
            // this task alone writes group `group`'s.
            unsafe {
                let tiles = std::slice::from_raw_parts_mut(
                    tiles.get().add(group * group_bytes),
                    group_bytes,
                );
                x86::activation_tiles(rows, rows.len() / cols, cols, tiles)
            };
        });
        use_tiles(acts)
    })
}

/// Expands block column `kb` of weight rows `r0..r0 + count` (`count <= 32`) to bfloat16:
/// block `kb` of row `r0 + r` becomes row `r` of `pair`. Also prefetches this column's share
/// of the bytes of the `next` rows, so that their first read from memory is spread over the
/// expansion of these.
///
/// # Safety
/// The CPU has AVX-512F/BW/BF16 ([`available`]); rows `r0..r0 + count` and `next` exist; `kb`
/// is one of the matrix's block columns.
#[inline]
pub unsafe fn expand_column(
    w: &BlockMatrix,
    r0: usize,
    count: usize,
    next: &std::ops::Range<usize>,
    kb: usize,
    pair: &mut Tiles,
) {
    // SAFETY: the caller's contract.
    unsafe { x86::expand_column(w, r0, count, next, kb, pair) }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::super::blocks::{BlockMatrix, Q4Block, Q8Block, BLOCK};
    use super::super::transpose::transpose;
    use super::{Tiles, BLOCK_ORDER, TILE, TILE_BYTES};

    /// [`BLOCK_ORDER`] as `vpermw` indices.
    #[target_feature(enable = "avx512f")]
    fn block_order() -> __m512i {
        let mut words = [0i16; BLOCK];
        for (word, &input) in words.iter_mut().zip(&BLOCK_ORDER) {
            *word = input as i16;
        }
        // SAFETY: 64 bytes.
        unsafe { _mm512_loadu_si512(words.as_ptr().cast()) }
    }

    /// Converts activation rows to bfloat16 tiles (the module's layout): per group and block,
    /// the 16 rows' 32 inputs (16 pairs each) transposed in registers into the tile's 16 rows
    /// of 16 pairs. Lanes of rows past `m` are zero.
    ///
    /// # Safety
    /// The CPU has AVX-512F/BW/BF16; `tiles` holds `ceil(m / 16) * cols / 32` tiles.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub unsafe fn activation_tiles(x: &[f32], m: usize, cols: usize, tiles: &mut [u8]) {
        let kblocks = cols / BLOCK;
        assert!(x.len() >= m * cols && tiles.len() >= m.div_ceil(TILE) * kblocks * TILE_BYTES);
        let order = block_order();
        for group in 0..m.div_ceil(TILE) {
            let lanes = (m - group * TILE).min(TILE);
            for kb in 0..kblocks {
                // Plain loops rather than `array::from_fn`, whose closure LLVM may leave out of
                // line (it did in `fma512`).
                let mut rows = [_mm512_setzero_ps(); TILE];
                for (lane, row) in rows.iter_mut().enumerate().take(lanes) {
                    // SAFETY: `x` holds the row's 32 inputs of block `kb` (asserted above).
                    *row = unsafe {
                        let src = x.as_ptr().add((group * TILE + lane) * cols + kb * BLOCK);
                        let lo = _mm512_loadu_ps(src);
                        let hi = _mm512_loadu_ps(src.add(16));
                        let packed: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
                        _mm512_castsi512_ps(_mm512_permutexvar_epi16(order, packed))
                    };
                }
                let tile = tiles[(group * kblocks + kb) * TILE_BYTES..][..TILE_BYTES].as_mut_ptr();
                for (p, pairs) in transpose(&rows).iter().enumerate() {
                    // SAFETY: row `p` of the tile, 64 bytes.
                    unsafe { _mm512_storeu_ps(tile.add(p * 64).cast(), *pairs) };
                }
            }
        }
    }

    /// See [`super::expand_column`].
    ///
    /// # Safety
    /// As there.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16,f16c")]
    pub unsafe fn expand_column(
        w: &BlockMatrix,
        r0: usize,
        count: usize,
        next: &std::ops::Range<usize>,
        kb: usize,
        pair: &mut Tiles,
    ) {
        let kblocks = w.cols() / BLOCK;
        debug_assert!(count <= 2 * TILE && r0 + count <= w.rows() && next.end <= w.rows());
        let (rows, ahead) = (
            r0 * kblocks..(r0 + count) * kblocks,
            next.start * kblocks..next.end * kblocks,
        );
        // SAFETY (both arms): the caller's contract.
        match w {
            BlockMatrix::Q4 { blocks, .. } => unsafe {
                prefetch_share(&blocks[ahead], kblocks, kb);
                q4_column(&blocks[rows], kblocks, kb, pair)
            },
            BlockMatrix::Q8 { blocks, .. } => unsafe {
                prefetch_share(&blocks[ahead], kblocks, kb);
                let order = block_order();
                let rows = &blocks[rows];
                for r in 0..rows.len() / kblocks {
                    // SAFETY: a pair holds 32 rows of 32 values; `r < count <= 32`.
                    q8_block(
                        &rows[r * kblocks + kb],
                        order,
                        pair.0.as_mut_ptr().add(r * BLOCK),
                    );
                }
            },
        }
    }

    /// Prefetches block column `kb`'s share of `ahead` (whole rows of `kblocks` blocks).
    #[inline(always)]
    fn prefetch_share<B>(ahead: &[B], kblocks: usize, kb: usize) {
        let ahead_bytes = std::mem::size_of_val(ahead);
        let lines = ahead_bytes.div_ceil(64 * kblocks);
        let ahead_ptr = ahead.as_ptr().cast::<i8>();
        for line in kb * lines..(kb + 1) * lines {
            if line * 64 < ahead_bytes {
                // SAFETY: a prefetch of an address inside `ahead`.
                unsafe { _mm_prefetch::<_MM_HINT_T0>(ahead_ptr.add(line * 64)) };
            }
        }
    }

    /// Block column `kb` of Q4 rows (`rows` holds whole rows of `kblocks` blocks) into
    /// `pair`, each block in [`BLOCK_ORDER`]: its 16 values `scale * c + min` computed once and
    /// rounded to bfloat16, then looked up by code.
    ///
    /// # Safety
    /// The CPU has AVX-512F/BW/BF16; `rows` holds at most 32 rows.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn q4_column(rows: &[Q4Block], kblocks: usize, kb: usize, pair: &mut Tiles) {
        let count = rows.len() / kblocks;
        assert!(count <= 2 * TILE);
        // The column's scales and mins, converted 8 blocks at a time: `(scale, min)` of row
        // `r` at `[2r, 2r + 1]`.
        let mut halves = [0u32; 2 * TILE];
        for (r, bits) in halves.iter_mut().enumerate().take(count) {
            *bits = rows[r * kblocks + kb].scale_min_bits();
        }
        let mut scale_min = [0f32; 4 * TILE];
        for c in 0..count.div_ceil(8) {
            // SAFETY: 8 of the 32 words of `halves`, 16 of the 64 floats of `scale_min`.
            unsafe {
                let bits = _mm256_loadu_si256(halves.as_ptr().add(8 * c).cast());
                _mm512_storeu_ps(scale_min.as_mut_ptr().add(16 * c), _mm512_cvtph_ps(bits));
            }
        }
        let steps = _mm512_setr_ps(
            0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0,
        );
        // Word `w` of lane `l` (the code bytes in every lane) shifted right by `4 l` holds code
        // `BLOCK_ORDER[8 l + w]` in its low 4 bits; `vpermw` reads 5 bits, and the table
        // holds the 16 values twice, so the fifth bit does not matter.
        let shifts = _mm512_set_epi64(
            0x000c_000c_000c_000c,
            0x000c_000c_000c_000c,
            0x0008_0008_0008_0008,
            0x0008_0008_0008_0008,
            0x0004_0004_0004_0004,
            0x0004_0004_0004_0004,
            0,
            0,
        );
        for r in 0..count {
            let block = &rows[r * kblocks + kb];
            let values = _mm512_fmadd_ps(
                steps,
                _mm512_set1_ps(scale_min[2 * r]),
                _mm512_set1_ps(scale_min[2 * r + 1]),
            );
            // SAFETY: `block.qs` is 16 bytes; a pair holds 32 rows of 32 values, `r < 32`.
            unsafe {
                let table: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(values, values));
                let codes = _mm512_broadcast_i32x4(_mm_loadu_si128(block.qs.as_ptr().cast()));
                let indices = _mm512_srlv_epi16(codes, shifts);
                let expanded = _mm512_permutexvar_epi16(indices, table);
                _mm512_storeu_si512(pair.0.as_mut_ptr().add(r * BLOCK).cast(), expanded);
            }
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn q8_block(block: &Q8Block, order: __m512i, out: *mut u16) {
        // SAFETY: `block.qs` is 32 bytes; `out` has room for 32 values (the caller's contract).
        unsafe {
            let q = block.qs.as_ptr().cast::<__m128i>();
            let low = _mm512_cvtepi8_epi32(_mm_loadu_si128(q));
            let high = _mm512_cvtepi8_epi32(_mm_loadu_si128(q.add(1)));
            let scale = _mm512_set1_ps(block.scale);
            let low = _mm512_mul_ps(_mm512_cvtepi32_ps(low), scale);
            let high = _mm512_mul_ps(_mm512_cvtepi32_ps(high), scale);
            let packed: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(high, low));
            _mm512_storeu_si512(out.cast(), _mm512_permutexvar_epi16(order, packed));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::testing::lcg;

    /// Round to nearest even bfloat16 (finite inputs), as `vcvtne2ps2bf16` does.
    fn bf16(x: f32) -> u16 {
        let bits = x.to_bits();
        ((bits + 0x7fff + ((bits >> 16) & 1)) >> 16) as u16
    }

    /// Both operands hold each block's inputs in `BLOCK_ORDER`: an expanded weight row and an
    /// activation tile row against the values in input order.
    #[test]
    fn weights_and_activations_share_the_block_order() {
        if !available() {
            eprintln!("skipped: no AVX-512 BF16 on this CPU");
            return;
        }
        let mut seed = 7;
        let (rows, cols) = (40, 96);
        let codes: Vec<u8> = (0..rows * cols).map(|i| (i * 7 % 16) as u8).collect();
        let scales: Vec<f32> = (0..rows * cols / BLOCK)
            .map(|_| lcg(&mut seed) * 0.1)
            .collect();
        let mins: Vec<f32> = (0..rows * cols / BLOCK).map(|_| lcg(&mut seed)).collect();
        let floats: Vec<f32> = (0..rows * cols).map(|_| lcg(&mut seed)).collect();
        for w in [
            BlockMatrix::from_q4_codes(rows, cols, &codes, &scales, &mins),
            BlockMatrix::q8_from_floats(rows, cols, &floats),
        ] {
            let values = w.to_f32();
            for (r0, count, kb) in [(0, 32, 0), (8, 32, 2), (32, 8, 1)] {
                let mut pair = Tiles::default();
                // SAFETY: `available()`; the rows and the column exist.
                unsafe { expand_column(&w, r0, count, &(0..0), kb, &mut pair) };
                for r in 0..count {
                    for (e, &input) in BLOCK_ORDER.iter().enumerate() {
                        let want = bf16(values[(r0 + r) * cols + kb * BLOCK + input]);
                        assert_eq!(pair.0[r * BLOCK + e], want, "row {r}, position {e}");
                    }
                }
            }
        }
        let m = 19;
        let x: Vec<f32> = (0..m * cols).map(|_| lcg(&mut seed)).collect();
        with_activation_tiles(&x, m, cols, |tiles| {
            for i in 0..m {
                for kb in 0..cols / BLOCK {
                    let tile = &tiles[((i / TILE) * (cols / BLOCK) + kb) * TILE_BYTES..];
                    for (e, &input) in BLOCK_ORDER.iter().enumerate() {
                        let at = (e / 2) * 64 + (i % TILE) * 4 + (e % 2) * 2;
                        let got = u16::from_ne_bytes([tile[at], tile[at + 1]]);
                        assert_eq!(got, bf16(x[i * cols + kb * BLOCK + input]), "row {i}");
                    }
                }
            }
        });
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod x86 {
    use super::super::blocks::BlockMatrix;
    use super::Tiles;

    pub unsafe fn activation_tiles(_: &[f32], _: usize, _: usize, _: &mut [u8]) {
        unreachable!("bfloat16 operands are x86-only")
    }
    pub unsafe fn expand_column(
        _: &BlockMatrix,
        _: usize,
        _: usize,
        _: &std::ops::Range<usize>,
        _: usize,
        _: &mut Tiles,
    ) {
        unreachable!("bfloat16 operands are x86-only")
    }
}
