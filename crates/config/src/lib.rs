//! Settings of the beamline binaries, from lowest to highest precedence: built-in defaults (the
//! embedded set-up under `./beamline-data/`), a TOML file (`--config`, e.g. `configs/local.toml`
//! or `configs/cluster.toml`), `BEAMLINE_*` environment variables, and command-line flags.
//!
//! Every key of the file has a variable: `BEAMLINE_` and the key's path in capitals joined by
//! `_`, so `database_url` is `BEAMLINE_DATABASE_URL` and `[worker] batch_size` is
//! `BEAMLINE_WORKER_BATCH_SIZE`. The mapping is derived from the settings themselves, so a new
//! key gets its variable without anyone writing it down.
//!
//! # Layout
//! - `settings`: the settings tree and its defaults.
//! - `overrides`: the file and `BEAMLINE_*` layers.
//! - `catalog`: the model catalog (`configs/models.toml`).

mod catalog;
mod overrides;
mod settings;

pub use catalog::{ModelCatalog, ModelEntry};
pub use overrides::load;
pub use settings::{redact_url, Backend, ProducerSettings, Settings, WorkerSettings};

/// A setting that cannot be used; names the file or variable and the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error("{variable}: {reason}")]
    Variable { variable: String, reason: String },
    #[error("{0}")]
    Invalid(String),
}
