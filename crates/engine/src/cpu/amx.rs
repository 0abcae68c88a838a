//! Wide products on CPUs with AMX tile units (Intel Xeon from Sapphire Rapids on). Each task
//! expands a panel of weight rows to bfloat16 (one block of 32 inputs is exactly one 64-byte
//! tile row) and multiplies it by the activations, converted once per call to bfloat16 in the
//! tile unit's pair-interleaved layout, 16x16 outputs at a time with float32 accumulation.
//!
//! Why: the float32 GEMM is bound by the vector units' multiply-adds at batch 16 and up; the
//! tile unit does sixteen times as many per cycle, so what is left is expanding the blocks,
//! which the float32 GEMM pays too. The cost is that activations and the expanded weights are
//! rounded to bfloat16 (8 significant bits) before an exact float32 accumulation: measured on
//! SmolLM2 Q4_1, see the README. The engine option `bf16` (`--bf16 off`) turns this path off.
//!
//! The tile registers are not known to the compiler: each task loads the one configuration all
//! eight tiles share, uses the tiles only inside this module's functions, and releases them.

use std::sync::OnceLock;

use super::blocks::BlockMatrix;
use super::pairs;
use super::pool::{self, SharedOut};

/// Weight rows expanded at a time (two tiles). A task takes a run of sub-panels, a few tasks
/// per thread (`pool::rows_per_task`): each sub-panel prefetches the next one's bytes while it
/// is expanded, so only a task's first waits on memory. Tasks of 64 rows each (every other
/// sub-panel cold) decoded batch 16 at 1,104-1,131 tokens/s on a Xeon with AMX, against
/// 1,162-1,254 this way.
const PANEL_ROWS: usize = 32;

/// Whether the tile unit can be used: the CPU has AMX-BF16 and AVX-512 BF16, and the kernel
/// grants this process the tile state.
pub fn available() -> bool {
    static USABLE: OnceLock<bool> = OnceLock::new();
    *USABLE.get_or_init(detect)
}

#[cfg(target_arch = "x86_64")]
fn detect() -> bool {
    use std::arch::x86_64::__cpuid_count;
    if !pairs::available() {
        return false;
    }
    // CPUID leaf 7: EDX bit 22 is AMX-BF16, bit 24 AMX-TILE.
    let leaf7 = __cpuid_count(7, 0);
    if leaf7.edx & (1 << 22) == 0 || leaf7.edx & (1 << 24) == 0 {
        return false;
    }
    // Linux hands out the 8 KiB of tile state only on request (arch_prctl ARCH_REQ_XCOMP_PERM
    // for XFEATURE_XTILEDATA); the permission covers every thread of the process.
    const SYS_ARCH_PRCTL: i64 = 158;
    const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
    const XFEATURE_XTILEDATA: i64 = 18;
    unsafe extern "C" {
        fn syscall(number: i64, ...) -> i64;
    }
    // SAFETY: a plain system call with integer arguments.
    unsafe { syscall(SYS_ARCH_PRCTL, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0 }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> bool {
    false
}

/// `y = x W^T`: `x` is `[m, cols]` row-major, `out` `[m, rows]`. Only call when [`available`].
pub fn gemm(w: &BlockMatrix, x: &[f32], m: usize, out: &mut [f32]) {
    let (rows, cols) = (w.rows(), w.cols());
    assert!(available(), "the AMX kernel needs the tile unit");
    assert_eq!(x.len(), m * cols);
    assert_eq!(out.len(), m * rows);
    pairs::with_activation_tiles(x, m, cols, |acts| {
        let base = SharedOut(out.as_mut_ptr());
        let per_task = pool::rows_per_task(rows, PANEL_ROWS);
        pool::run(rows.div_ceil(per_task), &|task| {
            let start = task * per_task;
            let end = (start + per_task).min(rows);
            // SAFETY: as above; `acts` was sized for `m` rows of `cols` inputs; `out` holds
            // `m * rows` floats and this task alone writes its columns `start..end`.
            unsafe { x86::panel_product(w, start, end, acts, m, base.get().add(start), rows) };
        });
    });
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::asm;
    use std::arch::x86_64::*;

    use super::super::blocks::{BlockMatrix, BLOCK};
    use super::super::pairs::{expand_column, with_sub_panel, TILE, TILE_BYTES};
    use super::super::transpose::transpose_out;

    /// Palette 1; all eight tiles 16 rows of 64 bytes.
    #[repr(C, align(64))]
    struct TileConfig {
        palette: u8,
        start_row: u8,
        reserved: [u8; 14],
        bytes_per_row: [u16; 16],
        rows: [u8; 16],
    }

    static CONFIG: TileConfig = TileConfig {
        palette: 1,
        start_row: 0,
        reserved: [0; 14],
        bytes_per_row: [64, 64, 64, 64, 64, 64, 64, 64, 0, 0, 0, 0, 0, 0, 0, 0],
        rows: [16, 16, 16, 16, 16, 16, 16, 16, 0, 0, 0, 0, 0, 0, 0, 0],
    };

    /// Block columns the expansion runs ahead of the tile unit in a sub-panel's first pass:
    /// the vector units expand column `kb + LEAD` while the tile unit multiplies column `kb`,
    /// and each column is read by the tile unit soon after it was written, still in L1.
    const LEAD: usize = 4;

    /// `out[i * stride + j] = x[i] · w[start + j]` for weight rows `start..end` and the `m`
    /// activation rows given as tiles.
    ///
    /// Weight rows go 32 at a time, multiplied by each pair of activation groups in turn. The
    /// first pair's pass expands the block columns `LEAD` ahead of its tile reads; later pairs
    /// reuse the expanded sub-panel. (Expanding each block column just before its tile reads
    /// measured slower in an earlier version: 36 against 25 ms for a batch-16 step; four
    /// columns ahead measured slightly faster than expanding the sub-panel whole first.)
    ///
    /// # Safety
    /// The process holds the tile permission (`available()`), the CPU has AVX-512 BF16; `acts`
    /// holds `ceil(m / 16) * cols / 32` tiles; `out` is valid for writes at `i * stride + j`
    /// for `i < m`, `j < end - start`, and nobody else accesses those floats meanwhile.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub unsafe fn panel_product(
        w: &BlockMatrix,
        start: usize,
        end: usize,
        acts: &[u8],
        m: usize,
        out: *mut f32,
        stride: usize,
    ) {
        let kblocks = w.cols() / BLOCK;
        let groups = m.div_ceil(TILE);
        let width = end - start;
        assert!(end <= w.rows() && width <= stride);
        assert!(acts.len() >= groups * kblocks * TILE_BYTES);
        let group_tiles = |g: usize| acts[g * kblocks * TILE_BYTES..].as_ptr();
        let mut products = Products([0f32; 4 * TILE * TILE]);
        // The first sub-panel's bytes: later sub-panels are prefetched while the one before
        // them is expanded, this one would otherwise wait out a miss per block.
        for r in start..(start + 2 * TILE).min(end) {
            w.prefetch_row(r);
        }
        // SAFETY: the configuration is a valid palette-1 configuration.
        unsafe { asm!("ldtilecfg [{0}]", in(reg) &CONFIG as *const TileConfig) };
        for r0 in (start..end).step_by(2 * TILE) {
            let count = (end - r0).min(2 * TILE);
            with_sub_panel(kblocks, |panel| {
                if count < 2 * TILE {
                    panel.iter_mut().for_each(|pair| pair.0.fill(0));
                }
                // The task's next 32 rows.
                let next = (r0 + count).min(end)..(r0 + count + 2 * TILE).min(end);
                for (kb, pair) in panel.iter_mut().enumerate().take(LEAD) {
                    // SAFETY: rows `r0..r0 + count` and `next` exist; `kb` is a block column.
                    unsafe { expand_column(w, r0, count, &next, kb, pair) };
                }
                for g0 in (0..groups).step_by(2) {
                    let second = (g0 + 1 < groups).then(|| group_tiles(g0 + 1));
                    // SAFETY: tiles are configured.
                    unsafe {
                        asm!(
                            "tilezero tmm0",
                            "tilezero tmm1",
                            "tilezero tmm2",
                            "tilezero tmm3"
                        );
                    }
                    for kb in 0..kblocks {
                        // The first pass over the columns expands them `LEAD` ahead of the
                        // tile unit's reads.
                        if g0 == 0 && kb + LEAD < kblocks {
                            // SAFETY: as for the first columns.
                            unsafe {
                                expand_column(w, r0, count, &next, kb + LEAD, &mut panel[kb + LEAD])
                            };
                        }
                        // SAFETY: column `kb` is expanded; the tiles cover block `kb` of
                        // these groups.
                        unsafe { step(panel[kb].0.as_ptr().cast(), group_tiles(g0), second, kb) };
                    }
                    // SAFETY: tiles are configured.
                    unsafe { store(&mut products) };
                    let two = second.is_some();
                    // SAFETY: the caller's contract on `out`.
                    unsafe { scatter(&products, r0 - start, g0, two, m, width, out, stride) };
                }
            });
        }
        // SAFETY: releases the tile state this function configured.
        unsafe { asm!("tilerelease") };
    }

    /// One block's products: the two weight tiles at `pair` times block `kb` of one or two
    /// activation groups, accumulated into tmm0 (w0·a0), tmm1 (w0·a1), tmm2 (w1·a0), tmm3
    /// (w1·a1).
    ///
    /// # Safety
    /// Tiles are configured; `pair` holds two tiles; each group pointer covers block `kb`.
    #[inline(always)]
    unsafe fn step(pair: *const u8, first: *const u8, second: Option<*const u8>, kb: usize) {
        // SAFETY: the caller's contract; tile registers are used only inside this module.
        unsafe {
            match second {
                Some(second) => asm!(
                    "tileloadd tmm4, [{w} + {sixty_four} * 1]",
                    "tileloadd tmm5, [{w} + {sixty_four} * 1 + 1024]",
                    "tileloadd tmm6, [{a0} + {sixty_four} * 1]",
                    "tileloadd tmm7, [{a1} + {sixty_four} * 1]",
                    "tdpbf16ps tmm0, tmm4, tmm6",
                    "tdpbf16ps tmm1, tmm4, tmm7",
                    "tdpbf16ps tmm2, tmm5, tmm6",
                    "tdpbf16ps tmm3, tmm5, tmm7",
                    w = in(reg) pair,
                    a0 = in(reg) first.add(kb * TILE_BYTES),
                    a1 = in(reg) second.add(kb * TILE_BYTES),
                    sixty_four = in(reg) 64usize,
                    options(nostack, readonly),
                ),
                None => asm!(
                    "tileloadd tmm4, [{w} + {sixty_four} * 1]",
                    "tileloadd tmm5, [{w} + {sixty_four} * 1 + 1024]",
                    "tileloadd tmm6, [{a0} + {sixty_four} * 1]",
                    "tdpbf16ps tmm0, tmm4, tmm6",
                    "tdpbf16ps tmm2, tmm5, tmm6",
                    w = in(reg) pair,
                    a0 = in(reg) first.add(kb * TILE_BYTES),
                    sixty_four = in(reg) 64usize,
                    options(nostack, readonly),
                ),
            }
        }
    }

    #[repr(C, align(64))]
    struct Products([f32; 4 * TILE * TILE]);

    /// Stores the four accumulators, in order, into `products`.
    ///
    /// # Safety
    /// Tiles are configured.
    #[inline(always)]
    unsafe fn store(products: &mut Products) {
        let out = products.0.as_mut_ptr();
        // SAFETY: `products` holds four 16x16 float tiles.
        unsafe {
            asm!(
                "tilestored [{p} + {sixty_four} * 1], tmm0",
                "tilestored [{p} + {sixty_four} * 1 + 1024], tmm1",
                "tilestored [{p} + {sixty_four} * 1 + 2048], tmm2",
                "tilestored [{p} + {sixty_four} * 1 + 3072], tmm3",
                p = in(reg) out,
                sixty_four = in(reg) 64usize,
                options(nostack),
            )
        }
    }

    /// Writes the products of weight rows `j0..j0 + 32` (columns of `out`, row stride `stride`,
    /// `width` columns) with activation group `g0` (and `g0 + 1` when `two`); a product tile's
    /// row is a weight row.
    ///
    /// # Safety
    /// As `panel_product`'s `out`.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    unsafe fn scatter(
        products: &Products,
        j0: usize,
        g0: usize,
        two: bool,
        m: usize,
        width: usize,
        out: *mut f32,
        stride: usize,
    ) {
        for (t, product) in products.0.chunks_exact(TILE * TILE).enumerate() {
            let (half, group) = (t / 2, g0 + t % 2);
            if t % 2 == 1 && !two {
                continue;
            }
            let j = j0 + half * TILE;
            let columns = width.saturating_sub(j).min(TILE);
            let lanes = m.saturating_sub(group * TILE).min(TILE);
            if columns == 0 || lanes == 0 {
                continue;
            }
            // Row `jr` of the product tile is weight row `j + jr` against the group's 16
            // activation rows: transposed in registers into output rows.
            let mut rows = [_mm512_setzero_ps(); TILE];
            for (jr, row) in rows.iter_mut().enumerate() {
                // SAFETY: row `jr` of the 16 x 16 tile.
                *row = unsafe { _mm512_load_ps(product.as_ptr().add(jr * TILE)) };
            }
            // SAFETY: rows `group * 16 + lane < m`, columns `j..j + columns` with
            // `j + columns <= width` (the caller's contract on `out`).
            unsafe {
                transpose_out(
                    &rows,
                    lanes,
                    columns,
                    out.add(group * TILE * stride + j),
                    stride,
                )
            };
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod x86 {
    pub unsafe fn panel_product(
        _: &super::BlockMatrix,
        _: usize,
        _: usize,
        _: &[u8],
        _: usize,
        _: *mut f32,
        _: usize,
    ) {
        unreachable!("AMX is x86-only")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every edge of the tiling, against the float product within bfloat16 rounding
    /// (`testing::check_against_the_float_product`).
    #[test]
    fn matches_the_float_product_within_bfloat16_rounding() {
        if !available() {
            eprintln!("skipped: no AMX tile unit on this CPU");
            return;
        }
        crate::cpu::testing::check_against_the_float_product(gemm, 5, 1.0 / 128.0);
    }
}
