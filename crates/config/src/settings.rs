//! The settings tree. Defaults describe the embedded set-up: SQLite for the database and the
//! queue, a local folder for objects, all under `./beamline-data/`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// `postgres://…` or `sqlite://path.db`.
    pub database_url: String,
    /// `amqp://…` (RabbitMQ) or `sqlite://path.db` (the embedded queue).
    pub queue_url: String,
    /// `s3://bucket/prefix` or `file:///dir` (`file://relative/dir` is relative to the cwd).
    pub object_store: String,
    /// The model catalog.
    pub models_config: PathBuf,
    /// Folder of rule sets (`<name>.toml`).
    pub rules_dir: PathBuf,
    /// Where `/metrics` is served; loopback unless an operator opens it.
    pub metrics_addr: Option<String>,
    /// JSON log lines instead of text.
    pub log_json: bool,
    pub worker: WorkerSettings,
    pub producer: ProducerSettings,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerSettings {
    /// Jobs decoded together (continuous batching slots) and the queue prefetch.
    pub batch_size: usize,
    /// How long to wait for a batch to fill before starting a partial one, ms.
    pub linger_ms: u64,
    /// Results written per shard and database transaction, at most.
    pub write_batch: usize,
    /// SIGTERM: how long in-flight work may take to finish before it is handed back, s.
    pub grace_period_s: u64,
    /// `--exit-when-idle`: how long the queue must stay empty, s.
    pub idle_exit_s: u64,
    /// Embedded queue: a lease not renewed for this long returns the job to the queue, s.
    pub visibility_timeout_s: u64,
    /// Deliveries before a job is dead-lettered.
    pub delivery_limit: u32,
    /// `model` (the real engine) or `echo` (returns the prompt; a diagnostic).
    pub engine: String,
    /// The model lane to serve (a catalog name); the catalog default when unset.
    pub model: Option<String>,
    /// Engine settings: `auto|none|int8|int4`, `auto|cpu|cuda`.
    pub quant: String,
    pub device: String,
    /// Batched products in bfloat16 where that is faster (AMX tile units; AVX-512 BF16 on AMD;
    /// bfloat16 factors, float32 sums); false keeps float32 activations everywhere. (Formerly
    /// `amx`.)
    #[serde(alias = "amx")]
    pub bf16: bool,
    /// On AVX2 CPUs without AVX-512 or bfloat16, batched products with activations rounded to
    /// 8 bits per 32-input block (about 1.3x faster, further from the float model); off by
    /// default.
    pub int8: bool,
    /// On AVX2 CPUs and AVX-512 ones with VNNI (when `int8` is off), the batched products no
    /// faster bfloat16 kernel takes, with activations rounded to 16 bits per 32-input block
    /// (the float model's arithmetic to about five significant digits); on by default, false
    /// keeps float32 activations there.
    pub int16: bool,
    /// Name in result rows, shard keys and logs; host name and pid when unset.
    pub name: Option<String>,
    /// Rule set for jobs that name none (`params.rules`); every output passes one.
    pub rules: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProducerSettings {
    /// Lines inserted and published per round trip.
    pub chunk: usize,
    /// Publishes awaiting a broker confirm, at most.
    pub max_unconfirmed: usize,
    /// Largest line accepted, bytes; longer lines are rejected without being held in memory.
    pub max_line_bytes: usize,
}

/// Which implementation a URL selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    Postgres(String),
    Amqp(String),
    Sqlite(PathBuf),
    S3 { bucket: String, prefix: String },
    LocalDir(PathBuf),
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            database_url: "sqlite://beamline-data/beamline.db".into(),
            queue_url: "sqlite://beamline-data/queue.db".into(),
            object_store: "file://beamline-data/objects".into(),
            models_config: "configs/models.toml".into(),
            rules_dir: "configs/rules".into(),
            metrics_addr: None,
            log_json: false,
            worker: WorkerSettings::default(),
            producer: ProducerSettings::default(),
        }
    }
}

impl Default for WorkerSettings {
    fn default() -> Self {
        WorkerSettings {
            batch_size: 16,
            linger_ms: 50,
            write_batch: 64,
            grace_period_s: 30,
            idle_exit_s: 3,
            visibility_timeout_s: 300,
            delivery_limit: 5,
            engine: "model".into(),
            model: None,
            quant: "auto".into(),
            device: "auto".into(),
            bf16: true,
            int8: false,
            int16: true,
            name: None,
            rules: Some("default".into()),
        }
    }
}

impl Default for ProducerSettings {
    fn default() -> Self {
        ProducerSettings {
            chunk: 2000,
            max_unconfirmed: 10_000,
            max_line_bytes: 4 << 20,
        }
    }
}

impl Settings {
    pub fn database(&self) -> Result<Backend, crate::ConfigError> {
        match parse_url(&self.database_url)? {
            b @ (Backend::Postgres(_) | Backend::Sqlite(_)) => Ok(b),
            _ => Err(invalid(
                "database_url",
                &self.database_url,
                "postgres:// or sqlite://",
            )),
        }
    }

    pub fn queue(&self) -> Result<Backend, crate::ConfigError> {
        match parse_url(&self.queue_url)? {
            b @ (Backend::Amqp(_) | Backend::Sqlite(_)) => Ok(b),
            _ => Err(invalid(
                "queue_url",
                &self.queue_url,
                "amqp:// or sqlite://",
            )),
        }
    }

    pub fn objects(&self) -> Result<Backend, crate::ConfigError> {
        match parse_url(&self.object_store)? {
            b @ (Backend::S3 { .. } | Backend::LocalDir(_)) => Ok(b),
            _ => Err(invalid(
                "object_store",
                &self.object_store,
                "s3:// or file://",
            )),
        }
    }

    /// Cross-field checks, done once at start so a bad setting fails before any work.
    pub fn validate(&self) -> Result<(), crate::ConfigError> {
        self.database()?;
        self.queue()?;
        self.objects()?;
        let w = &self.worker;
        if w.batch_size == 0 || w.write_batch == 0 || w.delivery_limit == 0 {
            return Err(crate::ConfigError::Invalid(
                "worker.batch_size, worker.write_batch and worker.delivery_limit must be at least 1"
                    .into(),
            ));
        }
        if !matches!(w.engine.as_str(), "model" | "echo") {
            return Err(invalid("worker.engine", &w.engine, "model or echo"));
        }
        if self.producer.chunk == 0 {
            return Err(crate::ConfigError::Invalid(
                "producer.chunk must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

fn invalid(key: &str, value: &str, expected: &str) -> crate::ConfigError {
    crate::ConfigError::Invalid(format!(
        "{key}: {:?} is not one of {expected}",
        redact_url(value)
    ))
}

/// A URL without its password, for messages and logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}://{user}:***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

fn parse_url(url: &str) -> Result<Backend, crate::ConfigError> {
    let (scheme, rest) = url.split_once("://").ok_or_else(|| {
        crate::ConfigError::Invalid(format!("{:?} is not a URL", redact_url(url)))
    })?;
    Ok(match scheme {
        "postgres" | "postgresql" => Backend::Postgres(url.to_string()),
        "amqp" | "amqps" => Backend::Amqp(url.to_string()),
        "sqlite" => Backend::Sqlite(PathBuf::from(rest.split('?').next().unwrap_or(rest))),
        "file" => Backend::LocalDir(PathBuf::from(rest)),
        "s3" => {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(crate::ConfigError::Invalid(format!(
                    "{url:?} names no bucket"
                )));
            }
            Backend::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.trim_matches('/').to_string(),
            }
        }
        other => {
            return Err(crate::ConfigError::Invalid(format!(
                "unknown URL scheme {other:?} in {:?}",
                redact_url(url)
            )))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_pick_backends() {
        let mut s = Settings::default();
        assert_eq!(
            s.database().unwrap(),
            Backend::Sqlite("beamline-data/beamline.db".into())
        );
        assert_eq!(
            s.objects().unwrap(),
            Backend::LocalDir("beamline-data/objects".into())
        );
        s.object_store = "s3://bucket/some/prefix/".into();
        assert_eq!(
            s.objects().unwrap(),
            Backend::S3 {
                bucket: "bucket".into(),
                prefix: "some/prefix".into()
            }
        );
        s.queue_url = "postgres://x".into();
        assert!(s.validate().is_err());
    }

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redact_url("amqp://guest:secret@host:5672/%2f"),
            "amqp://guest:***@host:5672/%2f"
        );
        assert_eq!(redact_url("sqlite://a.db"), "sqlite://a.db");
        let s = Settings {
            database_url: "mysql://u:hunter2@h/db".into(),
            ..Settings::default()
        };
        assert!(!s.validate().unwrap_err().to_string().contains("hunter2"));
    }
}
