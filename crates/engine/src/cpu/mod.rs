//! Quantized matrix multiplication for the CPU, for AVX2 machines and up (AVX-512, AVX-512 BF16
//! and AMX where the CPU has them).
//!
//! libtorch's CPU kernels for packed int4 and int8 weights are vectorised for AVX-512 and
//! bfloat16 only; on an AVX2 machine with float32 activations they fall back to scalar loops
//! and run slower than dense float32. Here weights stay in 32-wide blocks (4-bit affine or 8-bit
//! symmetric, the GGUF blocks themselves) and are expanded to floats in registers, block by
//! block, against float32 activations. On CPUs with AMX tile units, or AVX-512 BF16 on AMD,
//! products of several rows round activations and weights to bfloat16 (on by default,
//! `EngineOptions::bf16`), except for the narrower products (2 to 4 rows with the tile unit,
//! 2 to 12 on AMD), where 16-bit activations on 64-byte vectors (`vpdpwssd`, AVX-512 VNNI)
//! are as fast or faster and more exact. Those run every product of several rows on AVX-512
//! CPUs with VNNI but without a faster bfloat16 kernel (Intel's without the tile unit, whose
//! `vdpbf16ps` runs at half the float32 FMA rate), and everywhere with bfloat16 off; float32
//! (`fma512`) is left to AVX-512 CPUs without VNNI and to `--int16 off`. On AVX2 CPUs without AVX-512,
//! products of several rows round the activations to 16 bits per 32-input block by default
//! (`int16`, `EngineOptions::int16`): `vpmaddwd` multiplies pairs of 16-bit codes at the FMA's
//! rate but does two products per lane, so the GEMM runs about 1.4x the float32 one on a Zen 3
//! while a relative step of 2^-15 keeps SmolLM2's greedy tokens identical to float32's.
//! Rounding them to 8 bits, llama.cpp's way, is opt-in there (`int8`, `EngineOptions::int8`):
//! no faster than 16 bits on a Zen 3, and SmolLM2's greedy agreement with the float model
//! falls from 100% to 48% (bfloat16: 83-95%). Rows are split across the threads of `pool`.
//!
//! # Layout
//! - `blocks`: the block formats, and reading them back as floats.
//! - `block_build`: building block matrices from codes, floats or a GGUF file's bytes; row
//!   order and stacking.
//! - `half`: half-float conversions for the 4-bit blocks' scales.
//! - `isa`: the `BEAMLINE_CPU_ISA` cap that keeps the kernels to AVX2 on wider CPUs; the
//!   vendor check.
//! - `dot`: one weight row · one float activation row: AVX-512 (the codes index a table of the
//!   block's sixteen weights), AVX2 and portable versions.
//! - `matmul`: `y = x W^T` over a few activation rows, in parallel.
//! - `expand`: block rows expanded to floats, for the GEMM's panels.
//! - `pool`: the fork-join pool the kernels split their rows over (spins between calls).
//! - `gemm`: wide batches: panels of expanded rows times every activation row, register-tiled.
//! - `pairs`: the bfloat16 operands both bfloat16 kernels multiply (activation pair tiles,
//!   block columns expanded to bfloat16).
//! - `amx`: wide batches on CPUs with AMX tile units: bfloat16 panels on the tile unit.
//! - `dpbf16`: wide batches on AMD CPUs with AVX-512 BF16 (`vdpbf16ps`).
//! - `fma512`: wide batches in float32 on AVX-512 CPUs where neither bfloat16 nor 16-bit
//!   activations may run them (no VNNI, or both turned off).
//! - `int16`: wide batches with 16-bit activations: on AVX2 CPUs without AVX-512
//!   (`vpmaddwd`), and on 64-byte vectors (`vpdpwssd`) on AVX-512 CPUs with VNNI, where
//!   bfloat16 is off or slower (Intel's without the tile unit) or the batch narrow.
//! - `int8`: the same CPUs, opt-in: 8-bit activations (`vpmaddubsw`).
//! - `attention`: a decoding step's rope, cache writes and attention for a few sequences.
//! - `elementwise`: RMSNorm, SiLU·up, bias and residual adds between the products.

pub mod amx;
pub mod attention;
mod block_build;
mod blocks;
mod dot;
pub mod dpbf16;
pub mod elementwise;
mod expand;
pub mod fma512;
mod gemm;
mod half;
pub mod int16;
pub mod int8;
pub mod isa;
mod matmul;
mod pairs;
pub(crate) mod pool;
#[cfg(target_arch = "x86_64")]
mod transpose;

/// What the kernels' tests share.
#[cfg(test)]
pub(crate) mod testing {
    use super::BlockMatrix;

    /// The check every wide kernel passes: every edge of its tiling (ragged weight rows: a
    /// partial tile, a partial panel; activation rows from one to past two groups of 16), 4-bit
    /// and 8-bit blocks, against the float product of the expanded weights, within
    /// `tolerance` of the sum of the products' magnitudes (bfloat16 keeps 8 significant bits of
    /// each factor: 1/128; float32 differs only in summation order).
    pub fn check_against_the_float_product(
        gemm: fn(&BlockMatrix, &[f32], usize, &mut [f32]),
        mut seed: u64,
        tolerance: f32,
    ) {
        let mut next = || lcg(&mut seed);
        let (rows, cols) = (150, 96);
        let codes: Vec<u8> = (0..rows * cols).map(|i| (i * 7 % 16) as u8).collect();
        let scales: Vec<f32> = (0..rows * cols / 32)
            .map(|_| next().abs() * 0.1 + 0.01)
            .collect();
        let mins: Vec<f32> = (0..rows * cols / 32).map(|_| next() * 0.2).collect();
        let floats: Vec<f32> = (0..rows * cols).map(|_| next()).collect();
        for w in [
            BlockMatrix::from_q4_codes(rows, cols, &codes, &scales, &mins),
            BlockMatrix::q8_from_floats(rows, cols, &floats),
        ] {
            let wf = w.to_f32();
            for m in [1, 2, 4, 5, 8, 9, 12, 13, 15, 16, 17, 33, 40] {
                let x: Vec<f32> = (0..m * cols).map(|_| next()).collect();
                let mut got = vec![f32::NAN; m * rows];
                gemm(&w, &x, m, &mut got);
                for i in 0..m {
                    for r in 0..rows {
                        let (xs, ws) = (&x[i * cols..][..cols], &wf[r * cols..][..cols]);
                        let want: f32 = xs.iter().zip(ws).map(|(a, b)| a * b).sum();
                        let bound: f32 = xs.iter().zip(ws).map(|(a, b)| (a * b).abs()).sum();
                        let g = got[i * rows + r];
                        assert!(
                            (g - want).abs() <= tolerance * bound.max(1e-3),
                            "m {m} [{i}, {r}]: {g} vs {want} (bound {bound})"
                        );
                    }
                }
            }
        }
    }

    /// Pseudo-random numbers in [-0.5, 0.5) from a linear congruential generator: the same
    /// inputs on every run.
    pub fn lcg(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 33) as f32 / (1u64 << 31) as f32) - 0.5
    }
}

pub use block_build::GgufBlocks;
pub use blocks::{BlockMatrix, Q4Block, Q8Block, BLOCK};
pub use gemm::gemm;
pub use matmul::matmul;

/// From this many activation rows on, [`gemm`] beats the per-row dot kernels of [`matmul`].
pub const GEMM_MIN_ROWS: usize = 8;

/// From this many activation rows on, the tile unit ([`amx::gemm`]) runs the product where the
/// CPU has one.
pub const AMX_MIN_ROWS: usize = 2;

/// From this many activation rows on, the AVX-512 BF16 kernel ([`dpbf16::gemm`]) runs the
/// product where the CPU has no tile unit (it pads to 16 rows; `examples/kernel_bench` on a
/// Zen 4: one step's products 13.0 ms by rows against 15.1 at 4 rows, 20.8 against 15.1 at 6).
pub const DPBF16_MIN_ROWS: usize = 5;

/// From this many activation rows on, the float32 AVX-512 kernel ([`fma512::gemm`]) runs the
/// products no bfloat16 or 16-bit kernel takes (`examples/kernel_bench` on an Emerald Rapids Xeon: one
/// step's products 21.0 ms against 23.3 by rows at 4 rows, 22.6 against 20.3 at 3).
pub const FMA512_MIN_ROWS: usize = 4;

/// From this many activation rows on, the 8-bit kernel ([`int8::gemm`]) runs the product on
/// AVX2 CPUs without AVX-512 or a bfloat16 unit.
pub const INT8_MIN_ROWS: usize = 4;

/// From this many activation rows on, the 16-bit kernel ([`int16::gemm`]) runs the product on
/// AVX2 CPUs without AVX-512.
pub const INT16_MIN_ROWS: usize = 4;

/// From this many activation rows on, the 16-bit kernel runs the product on AVX-512 cores
/// with VNNI, on 64-byte vectors (`examples/kernel_bench`, one step's products: a Zen 5
/// 5.5-5.7 ms against 6.0-6.2 by rows at 2 rows, 5.5 against 3.8-4.0 at 1; an Emerald Rapids
/// Xeon 10.6-12.0 against 13.7-15.1 at 2, 10.8-11.2 against 7.9-8.3 at 1).
pub const INT16_WIDE_MIN_ROWS: usize = 2;

/// From this many activation rows on, the tile unit runs the product rather than the 16-bit
/// kernel where both may (16-bit activations allowed): below, the 16-bit kernel is faster, and
/// more exact (`examples/kernel_bench` on an Emerald Rapids Xeon, one step's products, six
/// alternating runs on a slow stretch of the host: 14.1-16.4 ms against 15.4-18.6 on the tile
/// unit at 2 rows, 12.7-17.1 against 13.1-19.5 at 4, 16.4-22.1 against 15.5-19.0 at 6,
/// 16.2-22.0 against 15.7-20.4 at 8; its 5 to 8 rows run as a whole tile of 8).
pub const AMX_OVER_INT16_ROWS: usize = 5;

/// From this many activation rows on, the AVX-512 BF16 kernel runs the product rather than
/// the 16-bit one where both may (AMD's AVX-512 cores, both allowed): below, the 16-bit
/// kernel is as fast or faster, and more exact (`examples/kernel_bench` on a Zen 5, one
/// step's products: 5.5 ms against 8.0-8.4 at 4 rows, 6.9 against 7.8-8.1 at 8, 8.2 against
/// 8.0-8.4 at 12, 9.4-10.0 against 8.0-8.4 at 13).
pub const DPBF16_OVER_INT16_ROWS: usize = 13;

/// Whether this CPU has bfloat16 arithmetic (the tile unit or AVX-512 BF16): with `--bf16` on,
/// the KV cache is held in bfloat16 there (half the bytes), and products of several rows run
/// in bfloat16 where that is faster ([`bf16_products_available`]).
pub fn bf16_available() -> bool {
    amx::available() || dpbf16::available()
}

/// Whether products of several rows run faster in bfloat16 here: on the tile unit, or with
/// AVX-512 BF16 on AMD (Intel cores without the tile unit are faster in float32, `fma512`).
pub fn bf16_products_available() -> bool {
    amx::available() || dpbf16::faster_than_float32()
}

/// Which rounded kernels products of several rows may use. bfloat16 is on by default where
/// the CPU has it ([`bf16_available`]; it keeps 83-95% of greedy tokens). 16-bit activations
/// (a relative step of 2^-15 per block; 100% of greedy tokens) are on by default: on AVX2 CPUs
/// without AVX-512 and on AVX-512 ones with VNNI, where they run the products too narrow for
/// bfloat16 to be the faster, and all of them where bfloat16 is off or slower than
/// float32; 8-bit ones are opt-in (SmolLM2's greedy agreement with
/// the float model falls to about half). Off, the products are float32 (the dequantized
/// model's arithmetic up to summation order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Products {
    /// bfloat16 factors, float32 sums (AMX tile unit, AVX-512 BF16).
    pub bf16: bool,
    /// Activations rounded to 8 bits per 32-input block, integer sums (AVX2 without bfloat16).
    pub int8: bool,
    /// Activations rounded to 16 bits per 32-input block, integer sums (AVX2, AVX-512 VNNI),
    /// where 8-bit ones are not asked for.
    pub int16: bool,
}

impl Products {
    /// The default: bfloat16 where the CPU has it, 16-bit activations where that is narrower
    /// or not faster (AVX2 without AVX-512; AVX-512 with VNNI).
    pub const DEFAULT: Products = Products {
        bf16: true,
        int8: false,
        int16: true,
    };
    /// Float32 activations everywhere.
    pub const FLOAT32: Products = Products {
        bf16: false,
        int8: false,
        int16: false,
    };

    /// Whether bfloat16 rounding happens on this CPU: the KV cache's, and the wide products'
    /// where bfloat16 is the faster ([`bf16_products_available`]).
    pub fn uses_bf16(self) -> bool {
        self.bf16 && bf16_available()
    }

    /// Whether wide products run with 8-bit activations on this CPU (where neither a
    /// bfloat16 kernel nor the float32 AVX-512 one runs them).
    pub fn uses_int8(self) -> bool {
        self.int8 && !self.uses_bf16() && !fma512::available() && int8::available()
    }

    /// Whether some wide products run with 16-bit activations on this CPU: where it has no
    /// AVX-512, or runs them on 64-byte vectors ([`int16::wide_available`], which out-runs
    /// the float32 AVX-512 kernel), unless 8-bit activations take them all.
    pub fn uses_int16(self) -> bool {
        self.int16
            && !self.uses_int8()
            && int16::available()
            && (!fma512::available() || int16::wide_available())
    }
}

/// `y = x W^T` by whichever kernel suits `m` rows and the allowed `products`: the fastest
/// this CPU has, and of two about as fast the more exact. With bfloat16 allowed that is the
/// tile unit, or AVX-512 BF16 where it out-runs float32 (not on Intel cores:
/// [`dpbf16::faster_than_float32`]), with 16-bit activations allowed too only from
/// [`AMX_OVER_INT16_ROWS`] / [`DPBF16_OVER_INT16_ROWS`] rows on; then 16-bit activations;
/// then float32 on AVX-512; on AVX2 alone, 8-bit activations if asked, before the float32
/// GEMM.
pub fn multiply(w: &BlockMatrix, x: &[f32], m: usize, out: &mut [f32], products: Products) {
    let bf16 = products.bf16;
    let wide_int16 = int16::wide_available();
    let int16_rows = if wide_int16 {
        INT16_WIDE_MIN_ROWS
    } else {
        INT16_MIN_ROWS
    };
    let int16 = m >= int16_rows && products.uses_int16();
    let (amx_rows, dpbf16_rows) = if int16 {
        (AMX_OVER_INT16_ROWS, DPBF16_OVER_INT16_ROWS)
    } else {
        (AMX_MIN_ROWS, DPBF16_MIN_ROWS)
    };
    if bf16 && m >= amx_rows && amx::available() {
        amx::gemm(w, x, m, out)
    } else if bf16 && m >= dpbf16_rows && dpbf16::faster_than_float32() {
        dpbf16::gemm(w, x, m, out)
    } else if int16 {
        int16::gemm(w, x, m, out)
    } else if m >= FMA512_MIN_ROWS && fma512::available() {
        fma512::gemm(w, x, m, out)
    } else if m >= INT8_MIN_ROWS && products.uses_int8() {
        int8::gemm(w, x, m, out)
    } else if m >= GEMM_MIN_ROWS {
        gemm(w, x, m, out)
    } else {
        matmul(w, x, m, out)
    }
}

/// Rows `rows` of `w` as floats, one after the other in `out` (`rows.len() * cols`): token
/// embeddings looked up in a table held as blocks.
pub fn gather_rows(w: &BlockMatrix, rows: &[usize], out: &mut [f32]) {
    let cols = w.cols();
    assert_eq!(out.len(), rows.len() * cols);
    for (&row, dst) in rows.iter().zip(out.chunks_exact_mut(cols)) {
        expand::expand_rows(w, row, row + 1, dst);
    }
}

/// Whether the fast path can run here.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::blocks::BLOCK;
    use super::*;

    /// Every row count gives the product, whichever kernel `multiply` picks for it (the
    /// switches between kernels lie at 2 to 13 rows), with the default rounding (bfloat16 at
    /// worst) and with float32 activations.
    #[test]
    fn multiply_gives_the_product_at_every_row_count() {
        testing::check_against_the_float_product(
            |w, x, m, out| multiply(w, x, m, out, Products::DEFAULT),
            31,
            1.0 / 128.0,
        );
        testing::check_against_the_float_product(
            |w, x, m, out| multiply(w, x, m, out, Products::FLOAT32),
            32,
            1e-5,
        );
    }

    /// Looked-up rows are the table's own rows, for both block formats, in the order asked.
    #[test]
    fn gather_rows_expands_the_rows_asked_for() {
        let (rows, cols) = (7, 64);
        let mut seed = 11;
        let w: Vec<f32> = (0..rows * cols).map(|_| testing::lcg(&mut seed)).collect();
        let codes: Vec<u8> = (0..rows * cols).map(|i| (i * 7 % 16) as u8).collect();
        let scales: Vec<f32> = (0..rows * cols / BLOCK)
            .map(|i| 0.01 + i as f32 * 1e-3)
            .collect();
        let mins: Vec<f32> = scales.iter().map(|s| -8.0 * s).collect();
        for matrix in [
            BlockMatrix::q8_from_floats(rows, cols, &w),
            BlockMatrix::from_q4_codes(rows, cols, &codes, &scales, &mins),
        ] {
            let all = matrix.to_f32();
            let asked = [3, 0, 6, 3];
            let mut out = vec![0f32; asked.len() * cols];
            gather_rows(&matrix, &asked, &mut out);
            for (k, &r) in asked.iter().enumerate() {
                let want = &all[r * cols..(r + 1) * cols];
                let got = &out[k * cols..(k + 1) * cols];
                for (g, e) in got.iter().zip(want) {
                    assert!(
                        (g - e).abs() <= 1e-6 * e.abs().max(1.0),
                        "row {r}: {g} vs {e}"
                    );
                }
            }
        }
    }
}
