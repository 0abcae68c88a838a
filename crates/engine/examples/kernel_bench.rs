//! Times the CPU block kernels on SmolLM2-135M's matrix shapes (one decoding step's worth of
//! matmuls) for a few batch sizes: `cargo run --release -p beamline-engine --example kernel_bench`.

use std::time::Instant;

use beamline_engine::cpu::{matmul, BlockMatrix};

fn main() {
    // (rows, cols) of one layer's fused qkv, o, fused gate/up, down; 30 layers; then the lm_head.
    let layer = [(960usize, 576usize), (576, 576), (3072, 576), (576, 1536)];
    let mut shapes: Vec<(usize, usize)> = (0..30).flat_map(|_| layer).collect();
    shapes.push((49152, 576));
    let mats: Vec<BlockMatrix> = shapes
        .iter()
        .enumerate()
        .map(|(i, &(r, c))| {
            let codes: Vec<u8> = (0..r * c).map(|j| ((j * 7 + i) % 16) as u8).collect();
            let scales = vec![0.01f32; r * c / 32];
            let mins = vec![-0.08f32; r * c / 32];
            if i == shapes.len() - 1 {
                let w: Vec<f32> = codes.iter().map(|&q| q as f32 * 0.01 - 0.08).collect();
                BlockMatrix::q8_from_floats(r, c, &w)
            } else {
                BlockMatrix::from_q4_codes(r, c, &codes, &scales, &mins)
            }
        })
        .collect();
    for m in [1usize, 16, 64] {
        let mut out_all = Vec::new();
        let started = Instant::now();
        let reps = if m == 1 { 20 } else { 3 };
        for _ in 0..reps {
            for (w, &(r, c)) in mats.iter().zip(&shapes) {
                let x = vec![0.5f32; m * c];
                let mut out = vec![0f32; m * r];
                matmul(w, &x, m, &mut out);
                out_all.push(out[0]);
            }
        }
        let per_step = started.elapsed().as_secs_f64() / reps as f64;
        println!(
            "batch {m:>3}: {:.1} ms per step, {:.0} tokens/s from matmuls alone",
            per_step * 1e3,
            m as f64 / per_step
        );
        std::hint::black_box(out_all);
    }
}
