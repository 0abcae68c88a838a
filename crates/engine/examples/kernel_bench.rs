//! Times the CPU block kernels on SmolLM2-135M's matrix shapes (one decoding step's worth of
//! matmuls) for a few batch sizes, side by side: the per-row dot kernels (`matmul`) and the
//! register-tiled GEMM on expanded panels (`gemm`), and where the CPU has them the float32
//! AVX-512 tiles (`fma512`), the bfloat16 kernels (the AMX tile unit, `amx`; AVX-512 BF16,
//! `dpbf16`) and the 16- and 8-bit ones (`int16`, `int8`). Prints wall and CPU milliseconds per step
//! (CPU time still means something on a busy machine). `cargo run --release -p beamline-engine --example kernel_bench [M ...]`.

use std::time::Instant;

use beamline_engine::cpu::{amx, dpbf16, fma512, gemm, int16, int8, matmul, BlockMatrix};

/// CPU seconds this process has used (all threads), from `/proc/self/stat`: on a busy machine
/// it counts the kernels' own work where wall time would count the neighbours' too.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = fields.get(11..13).map_or(0.0, |f| {
        f.iter().filter_map(|v| v.parse::<f64>().ok()).sum()
    });
    ticks / 100.0
}

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
    let mut kernels = vec!["matmul", "gemm"];
    if amx::available() {
        kernels.push("amx");
    }
    if dpbf16::available() {
        kernels.push("dpbf16");
    }
    if fma512::available() {
        kernels.push("fma512");
    }
    if int8::available() {
        kernels.push("int8");
    }
    if int16::available() {
        kernels.push("int16");
    }
    // `KERNELS=int8,gemm` times only those.
    if let Ok(only) = std::env::var("KERNELS") {
        kernels.retain(|k| only.split(',').any(|o| o == *k));
    }
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![1, 2, 4, 8, 16, 32, 64]
    } else {
        sizes
    };
    let widest = shapes.iter().map(|&(r, c)| r.max(c)).max().unwrap_or(0);
    for m in sizes {
        let mut line = format!("batch {m:>3}:");
        // Inputs and outputs allocated once per batch size, outside the timing: a fresh
        // multi-megabyte output per call is fresh pages from the kernel, whose faults would be
        // timed too (on a Zen 4 VM they made a batch-16 step read 24 ms instead of 16).
        let x = vec![0.5f32; m * widest];
        let mut out = vec![0f32; m * widest];
        for &kernel in &kernels {
            let mut out_all = Vec::new();
            let reps = if m <= 4 { 30 } else { 6 };
            // One untimed pass first: the first calls of a process ran a quarter slower.
            let mut started = Instant::now();
            let mut cpu_started = cpu_seconds();
            for rep in 0..=reps {
                if rep == 1 {
                    started = Instant::now();
                    cpu_started = cpu_seconds();
                }
                for (w, &(r, c)) in mats.iter().zip(&shapes) {
                    let (x, out) = (&x[..m * c], &mut out[..m * r]);
                    match kernel {
                        "matmul" => matmul(w, x, m, out),
                        "gemm" => gemm(w, x, m, out),
                        "amx" => amx::gemm(w, x, m, out),
                        "int8" => int8::gemm(w, x, m, out),
                        "int16" => int16::gemm(w, x, m, out),
                        "fma512" => fma512::gemm(w, x, m, out),
                        _ => dpbf16::gemm(w, x, m, out),
                    }
                    out_all.push(out[0]);
                }
            }
            let per_step = started.elapsed().as_secs_f64() / reps as f64;
            let cpu_per_step = (cpu_seconds() - cpu_started) / reps as f64;
            line += &format!(
                "  {kernel} {:6.1} ms ({:5.1} cpu-ms, {:5.0} tok/s)",
                per_step * 1e3,
                cpu_per_step * 1e3,
                m as f64 / per_step
            );
            std::hint::black_box(out_all);
        }
        println!("{line}");
    }
}
