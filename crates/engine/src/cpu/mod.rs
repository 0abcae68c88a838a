//! Quantized matrix multiplication for the CPU, written for AVX2 machines.
//!
//! libtorch's CPU kernels for packed int4 and int8 weights are vectorised for AVX-512 and
//! bfloat16 only; on an AVX2 machine with float32 activations they fall back to scalar loops
//! and run slower than dense float32. Here weights stay in 32-wide blocks (4-bit affine or 8-bit
//! symmetric, the GGUF blocks themselves) and are expanded to floats in registers, block by
//! block, against float32 activations. Activations are not quantized (an 8-bit activation
//! kernel, llama.cpp's way, was tried first: SmolLM2's greedy agreement with the float model fell
//! from 74% to 59%). Rows are split across rayon's threads.
//!
//! # Layout
//! - `blocks`: the block formats and building them from codes or floats.
//! - `dot`: one weight row · one float activation row, AVX2 and portable versions.
//! - `matmul`: `y = x W^T` over a few activation rows, in parallel.
//! - `tiles`: wide batches, through float32 tiles and libtorch's GEMM.

mod blocks;
mod dot;
mod matmul;
mod tiles;

pub use blocks::{BlockMatrix, Q4Block, Q8Block};
pub use matmul::matmul;
pub use tiles::{dense_tiles, DENSE_TILE_MIN_ROWS};

/// Whether the fast path can run here.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        true
    }
}
