//! Batch sizing: how many sequences of a given length fit in a device's memory next to the
//! model's weights, computed from the model file alone (no libtorch), with the same storage
//! rules the engine applies (`--quant auto` keeps 4-bit groups as int4 with a (scale, zero) pair
//! per 32 weights, 8-bit groups as int8 with a scale per row; `none` holds bfloat16 on CUDA).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use beamline_gguf::{GgmlType, GgufFile};
use clap::Args;
use serde::Serialize;

#[derive(Args)]
pub struct PlanArgs {
    /// A .gguf model file.
    #[arg(long, env = "BEAMLINE_MODEL")]
    model: PathBuf,
    /// Device memory: bytes or a size such as 80GiB, 24GB, 512MiB.
    #[arg(long)]
    device_memory: String,
    #[arg(long, default_value_t = 512)]
    prompt_tokens: u64,
    #[arg(long, default_value_t = 256)]
    max_new_tokens: u64,
    #[arg(long, default_value_t = 1)]
    num_beams: u64,
    /// auto, none, int8 or int4.
    #[arg(long, default_value = "auto")]
    quant: String,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct Plan {
    pub max_batch_size: u64,
    pub weights_bytes: u64,
    pub kv_bytes_per_sequence: u64,
    pub reserved_bytes: u64,
    pub device_memory_bytes: u64,
}

/// Memory kept free for the CUDA context, activations, logits and the allocator's slack.
fn reserved(device_memory: u64) -> u64 {
    (512 << 20) + device_memory / 20
}

pub fn run(args: PlanArgs) -> Result<()> {
    let memory = parse_size(&args.device_memory)?;
    let file = GgufFile::open(&args.model)?;
    let plan = plan(&file, memory, &args)?;
    if args.json {
        println!("{}", serde_json::to_string(&plan)?);
    } else {
        println!(
            "max batch {} sequences  (weights {} MiB, {} KiB of KV cache per sequence, {} MiB reserved)",
            plan.max_batch_size,
            plan.weights_bytes >> 20,
            plan.kv_bytes_per_sequence >> 10,
            plan.reserved_bytes >> 20
        );
    }
    Ok(())
}

fn plan(file: &GgufFile, memory: u64, args: &PlanArgs) -> Result<Plan> {
    let arch = file.architecture()?.to_string();
    let key = |k: &str| format!("{arch}.{k}");
    let layers = file.get_u64(&key("block_count"))?;
    let heads = file.get_u64(&key("attention.head_count"))?;
    let kv_heads = file
        .get_u64(&key("attention.head_count_kv"))
        .unwrap_or(heads);
    let hidden = file.get_u64(&key("embedding_length"))?;
    let head_dim = file
        .get_u64(&key("attention.key_length"))
        .unwrap_or(hidden / heads.max(1));
    let tied = file.tensor("output.weight").is_err();

    let mut weights = 0u64;
    for t in file.tensors() {
        let bytes = stored_bytes(
            t.ggml_type,
            t.n_elements() as u64,
            t.shape().len(),
            &args.quant,
        )?;
        weights += bytes;
        if tied && t.name == "token_embd.weight" {
            weights += stored_bytes(t.ggml_type, t.n_elements() as u64, 2, &args.quant)?;
            // the lm_head copy
        }
    }
    // bfloat16 keys and values for every position of every beam.
    let tokens = args.prompt_tokens + args.max_new_tokens;
    let kv_per_sequence = 2 * layers * kv_heads * head_dim * 2 * tokens * args.num_beams.max(1);
    let reserved_bytes = reserved(memory);
    let free = memory.saturating_sub(weights + reserved_bytes);
    Ok(Plan {
        max_batch_size: free / kv_per_sequence.max(1),
        weights_bytes: weights,
        kv_bytes_per_sequence: kv_per_sequence,
        reserved_bytes,
        device_memory_bytes: memory,
    })
}

/// Bytes a tensor takes on a CUDA device under `quant`.
fn stored_bytes(ty: GgmlType, n: u64, dims: usize, quant: &str) -> Result<u64> {
    if dims < 2 {
        return Ok(n * 2); // norms and biases in bfloat16
    }
    let int4 = n / 2 + n / 32 * 4; // packed nibbles + bf16 (scale, zero) per 32
    let int8 = n + n / 64; // codes + a scale per row (rows are long)
    Ok(match quant {
        "none" => n * 2,
        "int8" => int8,
        "int4" => int4,
        "auto" => match ty {
            GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q4_K => int4,
            GgmlType::Q8_0 | GgmlType::Q6_K => int8,
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => n * 2,
            _ => n * 2,
        },
        other => bail!("--quant: '{other}' is not auto, none, int8 or int4"),
    })
}

/// `80GiB`, `24GB`, `512MiB`, `1.5TiB` or plain bytes.
pub fn parse_size(text: &str) -> Result<u64> {
    let t = text.trim();
    let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number
        .trim()
        .parse()
        .with_context(|| format!("'{text}' is not a size"))?;
    let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        "kib" | "k" => 1024.0,
        "mib" | "m" => 1024.0 * 1024.0,
        "gib" | "g" => 1024.0 * 1024.0 * 1024.0,
        "tib" | "t" => 1024.0f64.powi(4),
        other => bail!("'{text}': unknown unit '{other}'"),
    };
    if !(value >= 0.0 && value.is_finite()) {
        bail!("'{text}' is not a size");
    }
    Ok((value * scale) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("80GiB").unwrap(), 80 << 30);
        assert_eq!(parse_size("24GB").unwrap(), 24_000_000_000);
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert_eq!(parse_size("1.5 MiB").unwrap(), 1_572_864);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("3 parsecs").is_err());
    }

    #[test]
    fn smollm2_plan_is_consistent() {
        let model = std::env::var("BEAMLINE_TEST_MODEL").unwrap_or_else(|_| {
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../models/SmolLM2-135M-Instruct.Q4_1.gguf"
            )
            .to_string()
        });
        let file = GgufFile::open(std::path::Path::new(&model))
            .expect("run scripts/setup.sh to fetch the test model");
        let args = PlanArgs {
            model: model.into(),
            device_memory: "80GiB".into(),
            prompt_tokens: 512,
            max_new_tokens: 256,
            num_beams: 1,
            quant: "auto".into(),
            json: true,
        };
        let p = plan(&file, 80 << 30, &args).unwrap();
        // 30 layers x 3 kv heads x 64 dims x 2 (k, v) x 2 bytes x 768 tokens
        assert_eq!(p.kv_bytes_per_sequence, 30 * 3 * 64 * 2 * 2 * 768);
        // ~105M Q4_1 weights as int4 plus the 28M-entry Q8_0 embedding twice (tied lm_head)
        assert!(
            p.weights_bytes > 100 << 20 && p.weights_bytes < 140 << 20,
            "{}",
            p.weights_bytes
        );
        assert_eq!(
            p.max_batch_size,
            (p.device_memory_bytes - p.weights_bytes - p.reserved_bytes) / p.kv_bytes_per_sequence
        );
        let beams = plan(
            &file,
            80 << 30,
            &PlanArgs {
                num_beams: 4,
                ..args
            },
        )
        .unwrap();
        assert_eq!(beams.kv_bytes_per_sequence, 4 * p.kv_bytes_per_sequence);
    }
}
