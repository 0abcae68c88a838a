//! Batched products with block matrices: tiles of weight rows expanded to float32 and handed to
//! libtorch's GEMM on rayon's threads (libtorch itself runs single-threaded beside the kernels).

use rayon::prelude::*;
use tch::Tensor;

use super::BlockMatrix;

/// From this many activation rows on (prefill, wide decode batches), a block matrix is
/// multiplied tile by tile: each tile of rows is expanded to float32 and handed to libtorch's
/// GEMM, which reuses every weight across the rows far better than a dot-product kernel. The
/// float tile is transient; the weights stay quantized in memory.
pub const DENSE_TILE_MIN_ROWS: usize = 8;

/// Weight rows per float32 tile (4096 x 576 floats is 9 MiB).
const DENSE_TILE_ROWS: usize = 4096;

pub fn dense_tiles(matrix: &BlockMatrix, x: &Tensor) -> Tensor {
    let rows = matrix.rows();
    let cols = matrix.cols() as i64;
    // Half the rows per core at least, so both cores work; tiles at most DENSE_TILE_ROWS.
    let tile = rows
        .div_ceil(rayon::current_num_threads().max(1))
        .clamp(16, DENSE_TILE_ROWS);
    let jobs: Vec<(usize, usize, Tensor)> = (0..rows)
        .step_by(tile)
        .map(|start| (start, (start + tile).min(rows), x.shallow_clone()))
        .collect();
    let parts: Vec<Tensor> = jobs
        .into_par_iter()
        .map(|(start, end, x)| {
            let _guard = tch::no_grad_guard();
            let w = Tensor::from_slice(&matrix.dequantize_rows(start, end))
                .view([(end - start) as i64, cols]);
            x.matmul(&w.tr())
        })
        .collect();
    Tensor::cat(&parts, 1)
}
