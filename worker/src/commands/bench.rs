//! `worker bench`: prompt and generation throughput and memory on synthetic prompts. Generation
//! ignores EOS and runs to `max_new_tokens`, so runs compare; the same prompts feed
//! `scripts/bench_engine.py`, which runs transformers beside it and prints the ratios.

use anyhow::{anyhow, Result};
use beamline_engine::{Decoding, GenerationParams, GenerationRequest};
use serde_json::json;

use crate::cli::BenchArgs;

/// Text the synthetic prompts are cut from (each prompt starts at a different offset).
const SOURCE_TEXT: &str = include_str!("bench_text.txt");

pub fn run(args: BenchArgs) -> Result<()> {
    let decoding: Decoding = args
        .decoding
        .parse()
        .map_err(|e: String| anyhow!("--decoding: {e}"))?;
    // The process before loading, without the start-up pages the engine hands back as it loads.
    beamline_engine::memory::release_mapped_file_pages();
    let baseline_rss = memory::current_rss();
    let mut model = args.model.clone();
    let slots_per_prompt = if decoding == Decoding::Beam {
        args.num_beams
    } else {
        1
    };
    model.max_batch = args.batch_size * slots_per_prompt;
    let engine = model.load()?;
    let load_peak = memory::peak_rss();

    let source = engine.tokenizer().encode(SOURCE_TEXT, false)?;
    let params = GenerationParams {
        max_new_tokens: args.max_new_tokens,
        decoding,
        num_beams: slots_per_prompt,
        num_return_sequences: 1,
        top_k: 50,
        seed: 1,
        ignore_eos: true,
        ..GenerationParams::default()
    };
    let prompts = synthetic_prompts(&source, args.batch_size, args.prompt_tokens);
    let requests = || -> Result<Vec<GenerationRequest>> {
        prompts
            .iter()
            .map(|p| {
                engine
                    .request(p.clone(), params.clone())
                    .map_err(anyhow::Error::from)
            })
            .collect()
    };
    for _ in 0..args.warmup {
        engine.generate(requests()?)?;
    }
    memory::reset_peak();
    let started = std::time::Instant::now();
    let (_outputs, stats) = engine.generate(requests()?)?;
    let wall = started.elapsed().as_secs_f64();
    let peak = memory::peak_rss();
    let report = json!({
        "prompt_tokens_per_s": stats.prompt_tokens as f64 / stats.prefill_time.as_secs_f64().max(1e-9),
        "generated_tokens_per_s": stats.generated_tokens as f64 / wall,
        "decode_tokens_per_s": stats.generated_tokens as f64 / stats.decode_time.as_secs_f64().max(1e-9),
        "prompt_tokens": stats.prompt_tokens,
        "generated_tokens": stats.generated_tokens,
        "wall_s": wall,
        "prefill_s": stats.prefill_time.as_secs_f64(),
        "decode_s": stats.decode_time.as_secs_f64(),
        "decode_steps": stats.decode_steps,
        "peak_rss_bytes": peak,
        "load_peak_rss_bytes": load_peak,
        "baseline_rss_bytes": baseline_rss,
        "weights_bytes": engine.weight_bytes(),
        "kv_cache_bytes": stats.kv_cache_bytes,
        "device_peak_bytes": serde_json::Value::Null,
        "settings": {
            "model": engine.path().display().to_string(),
            "device": beamline_engine::device::name(engine.device()),
            "quant": engine.quant().name(),
            "bf16": engine.uses_bf16(),
            "int8": engine.uses_int8(),
            "int16": engine.uses_int16(),
            "cpu_isa": beamline_engine::cpu::isa::cap().name(),
            "storage": engine.storage_summary(),
            "batch_size": args.batch_size,
            "decoding": args.decoding,
            "num_beams": slots_per_prompt,
            "prompt_tokens": args.prompt_tokens,
            "max_new_tokens": args.max_new_tokens,
            "threads": tch::get_num_threads(),
        },
    });
    if args.json {
        println!("{report}");
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}

/// `count` prompts of `len` tokens, each cut from `source` at its own offset.
pub fn synthetic_prompts(source: &[u32], count: usize, len: usize) -> Vec<Vec<u32>> {
    (0..count)
        .map(|i| {
            (0..len)
                .map(|j| source[(i * 97 + j) % source.len()])
                .collect()
        })
        .collect()
}

/// Resident memory from `/proc/self` (Linux).
mod memory {
    fn status_kib(field: &str) -> Option<u64> {
        let text = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = text.lines().find(|l| l.starts_with(field))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    pub fn current_rss() -> u64 {
        status_kib("VmRSS:").unwrap_or(0) * 1024
    }

    pub fn peak_rss() -> u64 {
        status_kib("VmHWM:").unwrap_or(0) * 1024
    }

    /// Restarts the peak count, so a run's peak excludes loading.
    pub fn reset_peak() {
        let _ = std::fs::write("/proc/self/clear_refs", "5");
    }
}
