//! The producer's command line (ARCHITECTURE.md). Settings come from `--config`, then
//! `BEAMLINE_*` variables, then these flags.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "producer",
    version,
    about = "beamline producer: submits job files and follows their batches"
)]
pub struct Cli {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Clone)]
pub struct CommonArgs {
    /// A TOML settings file (configs/local.toml, configs/cluster.toml).
    #[arg(long, global = true, env = "BEAMLINE_CONFIG")]
    pub config: Option<PathBuf>,
    /// postgres://… or sqlite://path.db (overrides BEAMLINE_DATABASE_URL).
    #[arg(long, global = true)]
    pub database_url: Option<String>,
    /// amqp://… or sqlite://path.db (overrides BEAMLINE_QUEUE_URL).
    #[arg(long, global = true)]
    pub queue_url: Option<String>,
    /// s3://bucket/prefix or file:///dir (overrides BEAMLINE_OBJECT_STORE).
    #[arg(long, global = true)]
    pub object_store: Option<String>,
    /// The model catalog (overrides BEAMLINE_MODELS_CONFIG).
    #[arg(long, global = true)]
    pub models_config: Option<PathBuf>,
    /// Serve Prometheus metrics here, e.g. 127.0.0.1:9465.
    #[arg(long, global = true)]
    pub metrics_addr: Option<String>,
    /// Log JSON lines instead of text.
    #[arg(long, global = true)]
    pub log_json: bool,
}

#[derive(Subcommand)]
pub enum Command {
    /// Validate job files without submitting them.
    Check {
        files: Vec<PathBuf>,
        /// One JSON object: accepted, rejected and the per-line errors.
        #[arg(long)]
        json: bool,
    },
    /// Submit job files as one batch; prints the batch id.
    Submit(SubmitArgs),
    /// Counts per status of a batch (by id or name).
    Status {
        batch: String,
        #[arg(long)]
        json: bool,
    },
    /// The results of a batch, one JSON line per job in submission order.
    Results {
        batch: String,
        #[arg(long, value_enum, default_value_t = ResultFormat::Native)]
        format: ResultFormat,
        /// Write to this file instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Cancel a batch: queued jobs are skipped, running ones finish.
    Cancel { batch: String },
    /// Every batch with its counts, newest first.
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
pub struct SubmitArgs {
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// The batch name; submitting again under the same name adds nothing twice.
    #[arg(long)]
    pub name: Option<String>,
    /// Catalog model for lines that name none (default: the catalog's default).
    #[arg(long)]
    pub model: Option<String>,
    /// Priority for lines that set none; above 0 is served before normal batches.
    #[arg(long, default_value_t = 0)]
    pub priority: i32,
    /// Follow the batch until it ends.
    #[arg(long)]
    pub wait: bool,
    /// One JSON object: batch_id, accepted, rejected and the per-line errors.
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum ResultFormat {
    Native,
    Openai,
}
