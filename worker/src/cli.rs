//! The worker's command line (the contract in ARCHITECTURE.md). Every flag can also be set by a
//! `BEAMLINE_*` environment variable.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::model_args::ModelArgs;

#[derive(Parser)]
#[command(
    name = "worker",
    version,
    about = "beamline worker: runs generation jobs on a quantized model"
)]
pub struct Cli {
    /// Log as JSON lines.
    #[arg(long, global = true, env = "BEAMLINE_LOG_JSON")]
    pub log_json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Generate text for one prompt or a JSONL file of jobs.
    Generate(GenerateArgs),
    /// Negative log-likelihood and perplexity of a text.
    Score(ScoreArgs),
    /// Token ids of a text.
    Tokenize(TokenizeArgs),
    /// Throughput and memory of the engine on synthetic prompts.
    Bench(BenchArgs),
    /// Rule sets: try one on stored texts.
    #[command(subcommand)]
    Rules(RulesCommand),
    /// Consume jobs from the queue and write their results, until stopped (SIGTERM drains).
    Run(RunArgs),
}

#[derive(Args)]
pub struct RunArgs {
    /// A TOML settings file (configs/local.toml, configs/cluster.toml).
    #[arg(long, env = "BEAMLINE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Exit 0 once the queue has stayed empty for worker.idle_exit_s and nothing is in flight.
    #[arg(long)]
    pub exit_when_idle: bool,
    /// `model` (default) or `echo`, a diagnostic engine that returns the prompt.
    #[arg(long)]
    pub engine: Option<String>,
    /// The model lane to serve (a catalog name; default: the catalog's default).
    #[arg(long)]
    pub model: Option<String>,
    /// Jobs decoded together; also the queue prefetch.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// SIGTERM: seconds in-flight jobs may take before they are handed back.
    #[arg(long)]
    pub grace_period: Option<u64>,
    #[arg(long)]
    pub database_url: Option<String>,
    #[arg(long)]
    pub queue_url: Option<String>,
    #[arg(long)]
    pub object_store: Option<String>,
    /// Serve Prometheus metrics here (loopback by default when set).
    #[arg(long)]
    pub metrics_addr: Option<String>,
    /// Name in result rows and shard keys (default: host-pid).
    #[arg(long)]
    pub name: Option<String>,
}

#[derive(Subcommand)]
pub enum RulesCommand {
    /// Apply a rule set to `{"custom_id", "text"}` lines; one verdict line each.
    Check(RulesCheckArgs),
}

#[derive(Args)]
pub struct RulesCheckArgs {
    /// Re-apply the rule set to the stored results of this batch (id or name) and update their
    /// verdicts, instead of reading --input.
    #[arg(long, conflicts_with = "input")]
    pub batch: Option<String>,
    /// Settings file, for --batch (the database to update).
    #[arg(long, env = "BEAMLINE_CONFIG")]
    pub config: Option<PathBuf>,
    /// A rule-set name in the rules folder, or a path to a .toml file.
    #[arg(long, env = "BEAMLINE_RULES", default_value = "default")]
    pub rules: String,
    #[arg(long, required_unless_present = "batch")]
    pub input: Option<PathBuf>,
    /// Folder of rule sets.
    #[arg(long, env = "BEAMLINE_RULES_DIR", default_value = "configs/rules")]
    pub rules_dir: PathBuf,
    /// JSON lines (the only output form; accepted for symmetry with the other commands).
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct DecodingArgs {
    /// Tokens to generate at most.
    #[arg(long, env = "BEAMLINE_MAX_NEW_TOKENS", default_value_t = 256)]
    pub max_new_tokens: usize,
    /// greedy, sample or beam.
    #[arg(long, default_value = "greedy")]
    pub decoding: String,
    #[arg(long, default_value_t = 4)]
    pub num_beams: usize,
    #[arg(long, default_value_t = 1)]
    pub num_return_sequences: usize,
    #[arg(long, default_value_t = 1.0)]
    pub length_penalty: f64,
    /// true, false or never.
    #[arg(long, default_value = "false")]
    pub early_stopping: String,
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    #[arg(long, default_value_t = 50)]
    pub top_k: usize,
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f64,
    #[arg(long, default_value_t = 1.0)]
    pub repetition_penalty: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop when this text appears (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
}

#[derive(Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// One prompt.
    #[arg(long, conflicts_with = "input")]
    pub prompt: Option<String>,
    /// A JSONL file of native job lines (`custom_id`, `prompt` or `messages`, `params`).
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// Apply the model's chat template to `--prompt` as one user message.
    #[arg(long)]
    pub chat: bool,
    #[command(flatten)]
    pub decoding: DecodingArgs,
    /// Print JSON (one object per prompt). Without it, `--prompt` prints the text only.
    #[arg(long)]
    pub json: bool,
    /// Rule set every candidate must pass (a job's `params.rules` overrides it); its banned
    /// phrases are steered around during decoding.
    #[arg(long, env = "BEAMLINE_RULES")]
    pub rules: Option<String>,
    /// Folder of rule sets.
    #[arg(long, env = "BEAMLINE_RULES_DIR", default_value = "configs/rules")]
    pub rules_dir: PathBuf,
}

#[derive(Args)]
pub struct ScoreArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[arg(long, conflicts_with = "input")]
    pub text: Option<String>,
    /// A text file scored as one text.
    #[arg(long)]
    pub input: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct TokenizeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[arg(long)]
    pub text: String,
    /// Leave out the special tokens the tokenizer would add (BOS).
    #[arg(long)]
    pub no_special_tokens: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Prompts run together.
    #[arg(long, default_value_t = 1)]
    pub batch_size: usize,
    #[arg(long, default_value = "greedy")]
    pub decoding: String,
    #[arg(long, default_value_t = 4)]
    pub num_beams: usize,
    #[arg(long, default_value_t = 64)]
    pub prompt_tokens: usize,
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
    /// Untimed runs before the measured one.
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    #[arg(long)]
    pub json: bool,
}
