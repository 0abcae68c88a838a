//! How a command names and loads its model: a `.gguf` file, a HuggingFace folder, or a name from
//! the model catalog (`configs/models.toml`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use beamline_engine::{DeviceChoice, Engine, EngineOptions, QuantMode};
use clap::Args;

#[derive(Args, Clone)]
pub struct ModelArgs {
    /// A .gguf file, a HuggingFace model folder, or a catalog name from configs/models.toml.
    #[arg(long, env = "BEAMLINE_MODEL", default_value = "smollm2")]
    pub model: String,
    /// auto keeps the file's quantization; none, int8 or int4 re-quantize at load.
    #[arg(long, env = "BEAMLINE_QUANT", default_value = "auto")]
    pub quant: QuantMode,
    /// auto, cpu or cuda.
    #[arg(long, env = "BEAMLINE_DEVICE", default_value = "auto")]
    pub device: DeviceChoice,
    /// Sequences decoded together.
    #[arg(long = "max-batch", env = "BEAMLINE_MAX_BATCH", default_value_t = 32)]
    pub max_batch: usize,
    /// on: batched products in bfloat16 where that is faster (AMX tile units; AVX-512 BF16 on
    /// AMD; bfloat16 factors, float32 sums), and a bfloat16 KV cache with AVX-512 BF16; off:
    /// float32 everywhere.
    #[arg(long, alias = "amx", env = "BEAMLINE_BF16", default_value = "on", value_parser = parse_switch, action = clap::ArgAction::Set)]
    pub bf16: bool,
    /// on: on AVX2 CPUs without AVX-512 or bfloat16, batched products with activations rounded
    /// to 8 bits per 32-input block (integer sums, the weights exact; about 1.3x faster, but
    /// further from the float model); off: float32 activations there.
    #[arg(long, env = "BEAMLINE_INT8", default_value = "off", value_parser = parse_switch, action = clap::ArgAction::Set)]
    pub int8: bool,
    /// on: on AVX2 CPUs and AVX-512 ones with VNNI (when --int8 is off), the batched products
    /// no faster bfloat16 kernel takes, with activations rounded to 16 bits per 32-input block
    /// (integer sums, the weights exact; the float model's arithmetic to about five
    /// significant digits); off: float32 activations there.
    #[arg(long, env = "BEAMLINE_INT16", default_value = "on", value_parser = parse_switch, action = clap::ArgAction::Set)]
    pub int16: bool,
    /// The model catalog.
    #[arg(
        long,
        env = "BEAMLINE_MODELS_CONFIG",
        default_value = "configs/models.toml"
    )]
    pub models_config: PathBuf,
}

impl ModelArgs {
    /// The model's file or folder: the argument itself when it exists, else a catalog entry
    /// (relative paths in the catalog are relative to the folder holding `configs/`).
    pub fn resolve_path(&self) -> Result<PathBuf> {
        let direct = Path::new(&self.model);
        if direct.exists() {
            return Ok(direct.to_path_buf());
        }
        let catalog =
            beamline_config::ModelCatalog::load(&self.models_config).with_context(|| {
                format!(
                    "'{}' is no file or folder, and the model catalog cannot be read",
                    self.model
                )
            })?;
        let Some(path) = catalog.path_of(&self.model) else {
            bail!(
                "model '{}' is no file or folder and not in {} (known: {:?})",
                self.model,
                self.models_config.display(),
                catalog.names()
            );
        };
        if !path.exists() {
            bail!(
                "model '{}' points at {}, which does not exist (run scripts/setup.sh)",
                self.model,
                path.display()
            );
        }
        Ok(path)
    }

    pub fn load(&self) -> Result<Engine> {
        let path = self.resolve_path()?;
        let started = std::time::Instant::now();
        let engine = Engine::load(
            &path,
            EngineOptions {
                quant: self.quant,
                device: self.device,
                max_batch: self.max_batch,
                bf16: self.bf16,
                int8: self.int8,
                int16: self.int16,
            },
        )
        .with_context(|| format!("loading {}", path.display()))?;
        tracing::info!(
            model = %path.display(),
            device = beamline_engine::device::name(engine.device()),
            quant = self.quant.name(),
            bf16 = engine.uses_bf16(),
            int8 = engine.uses_int8(),
            int16 = engine.uses_int16(),
            cpu_isa = beamline_engine::cpu::isa::cap().name(),
            weights_mib = engine.weight_bytes() / (1 << 20),
            load_ms = started.elapsed().as_millis() as u64,
            "Model loaded."
        );
        Ok(engine)
    }
}

/// `on`/`off` (also `true`/`false`, `1`/`0`).
fn parse_switch(value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "on" | "true" | "1" => Ok(true),
        "off" | "false" | "0" => Ok(false),
        other => Err(format!("'{other}': expected on or off")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        model: ModelArgs,
    }

    #[test]
    fn bf16_and_int16_are_on_and_int8_off_unless_switched() {
        let parse = |args: &[&str]| Cli::try_parse_from(args).map(|c| c.model.bf16);
        assert!(parse(&["worker"]).unwrap());
        assert!(!parse(&["worker", "--bf16", "off"]).unwrap());
        // The flag's earlier name still works.
        assert!(!parse(&["worker", "--amx", "off"]).unwrap());
        assert!(parse(&["worker", "--bf16", "ON"]).unwrap());
        let int8 = |args: &[&str]| Cli::try_parse_from(args).map(|c| c.model.int8);
        assert!(!int8(&["worker"]).unwrap());
        assert!(int8(&["worker", "--int8", "on"]).unwrap());
        let int16 = |args: &[&str]| Cli::try_parse_from(args).map(|c| c.model.int16);
        assert!(int16(&["worker"]).unwrap());
        assert!(!int16(&["worker", "--int16", "off"]).unwrap());
        let err = parse(&["worker", "--bf16", "maybe"])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("expected on or off"), "{err}");
    }
}
