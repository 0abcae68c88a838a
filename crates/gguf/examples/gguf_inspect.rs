//! Prints a summary of a GGUF file (metadata, tensor types, sizes) and, with
//! `--dequant-all`, times the dequantization of every tensor.
//!
//! `cargo run --release -p beamline-gguf --example gguf_inspect -- MODEL.gguf [--dequant-all]`

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use beamline_gguf::{GgufFile, Value};

fn short(v: &Value) -> String {
    match v {
        Value::Array(_) => format!("[{}]", v.kind()),
        Value::String(s) if s.len() > 60 => format!(
            "{:?}... ({} bytes)",
            s.chars().take(60).collect::<String>(),
            s.len()
        ),
        other => format!("{other:?}"),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = PathBuf::from(
        args.next()
            .ok_or("usage: gguf_inspect FILE [--dequant-all]")?,
    );
    let dequant_all = args.any(|a| a == "--dequant-all");

    let t0 = Instant::now();
    let f = GgufFile::open(&path)?;
    println!(
        "{}: GGUF v{}, {} keys, {} tensors, opened in {:.1} ms",
        path.display(),
        f.version(),
        f.metadata().len(),
        f.tensors().len(),
        t0.elapsed().as_secs_f64() * 1e3
    );
    for (k, v) in f.metadata() {
        println!("  {k} = {}", short(v));
    }
    let mut by_type: BTreeMap<String, (usize, usize, usize)> = BTreeMap::new();
    for t in f.tensors() {
        let e = by_type.entry(t.ggml_type.name()).or_default();
        *e = (e.0 + 1, e.1 + t.n_elements(), e.2 + t.byte_len());
    }
    for (ty, (n, elems, bytes)) in &by_type {
        println!("  {ty}: {n} tensors, {elems} elements, {bytes} bytes");
    }

    if dequant_all {
        let t0 = Instant::now();
        let mut total = 0usize;
        for t in f.tensors() {
            total += f.dequantize(&t.name)?.len();
        }
        println!(
            "dequantized {total} elements in {:.1} ms",
            t0.elapsed().as_secs_f64() * 1e3
        );
    }
    Ok(())
}
