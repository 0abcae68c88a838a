//! The database: Postgres through sqlx for fleets, SQLite for one machine. Both backends offer
//! the same operations with the same meaning; their SQL differs only where the dialects do
//! (arrays and `UNNEST` in Postgres, multi-row `VALUES` in SQLite).
//!
//! Every write is idempotent: jobs are keyed by (`batch_id`, `custom_id`) with ids derived from
//! them, results by `job_id`, and a job's status only moves out of `queued`/`running` once. So
//! a replayed submit or a redelivered job never adds a row.

mod postgres;
mod sqlite;

/// Row → struct mappings shared by both backends (their row types differ, the columns do not).
macro_rules! from_columns {
    (BatchRow, $r:expr, $at:expr) => {
        BatchRow {
            id: $r.get($at),
            name: $r.get($at + 1),
            status: $r.get($at + 2),
            model: $r.get($at + 3),
            total: $r.get($at + 4),
            created_at: $r.get($at + 5),
            finished_at: $r.get($at + 6),
        }
    };
    (Progress, $r:expr, $at:expr) => {
        Progress {
            batch_id: $r.get($at),
            name: $r.get($at + 1),
            status: $r.get($at + 2),
            total: $r.get($at + 3),
            queued: $r.get($at + 4),
            running: $r.get($at + 5),
            succeeded: $r.get($at + 6),
            failed: $r.get($at + 7),
            filtered: $r.get($at + 8),
            cancelled: $r.get($at + 9),
        }
    };
    (ExportRow, $r:expr) => {
        ExportRow {
            job_id: $r.get(1),
            custom_id: $r.get(2),
            status: $r.get(3),
            error: $r.get(4),
            output_text: $r.get(5),
            reasoning: $r.get(6),
            candidates: $r.get(7),
            rule_report: $r.get(8),
            prompt_tokens: $r.get(9),
            completion_tokens: $r.get(10),
            finish_reason: $r.get(11),
            model: $r.get(12),
            latency_ms: $r.get(13),
            object_uri: $r.get(14),
        }
    };
    (RejectedLine, $r:expr) => {
        RejectedLine {
            file: $r.get(0),
            line: $r.get(1),
            custom_id: $r.get(2),
            field: $r.get(3),
            error: $r.get(4),
        }
    };
}
pub(crate) use from_columns;

use std::time::Duration;

use serde::Serialize;
use uuid::Uuid;

/// Why a database operation failed; never carries SQL text or credentials.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{0}")]
    Invalid(String),
}

impl StoreError {
    /// Worth retrying the whole transaction: the connection dropped, the server restarted or
    /// shut down, the pool ran dry, or a serialization conflict.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Database(e) => match e {
                sqlx::Error::Io(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed
                | sqlx::Error::Protocol(_) => true,
                sqlx::Error::Database(db) => {
                    let code = db.code().unwrap_or_default();
                    code.starts_with("08")
                        || code.starts_with("57P")
                        || code == "40001"
                        || code == "40P01"
                        || code == "5" // SQLITE_BUSY
                        || code == "6" // SQLITE_LOCKED
                        || code == "517"
                }
                _ => false,
            },
            _ => false,
        }
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// The job id for a `custom_id` of a batch: the same line submitted twice gets the same id.
pub fn job_id(batch_id: Uuid, custom_id: &str) -> Uuid {
    Uuid::new_v5(&batch_id, custom_id.as_bytes())
}

/// A job to insert.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: Uuid,
    pub custom_id: String,
    pub kind: &'static str,
    pub priority: i32,
    pub input: serde_json::Value,
    pub params: serde_json::Value,
    pub seq: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BatchRow {
    pub id: String,
    pub name: String,
    pub status: String,
    pub model: String,
    pub total: i64,
    pub created_at: String,
    pub finished_at: Option<String>,
}

/// One row of `batch_progress`.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Progress {
    pub batch_id: String,
    pub name: String,
    pub status: String,
    pub total: i64,
    pub queued: i64,
    pub running: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub filtered: i64,
    pub cancelled: i64,
}

impl Progress {
    /// Jobs that reached a final status.
    pub fn done(&self) -> i64 {
        self.succeeded + self.failed + self.filtered + self.cancelled
    }
}

/// A job the worker may run, with its delivery count so far (this one included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartedJob {
    pub id: Uuid,
    pub attempts: i32,
}

/// The result of a job that ran: `succeeded` (with `output_text`) or `filtered`.
#[derive(Debug, Clone, Serialize)]
pub struct ResultRow {
    pub job_id: Uuid,
    pub batch_id: Uuid,
    pub custom_id: String,
    pub status: beamline_jobs::JobStatus,
    pub output_text: Option<String>,
    pub reasoning: Option<String>,
    pub candidates: serde_json::Value,
    pub rule_report: Option<serde_json::Value>,
    pub prompt_tokens: i32,
    pub completion_tokens: i32,
    pub finish_reason: Option<String>,
    pub model: String,
    pub worker: String,
    pub latency_ms: i64,
    pub object_uri: Option<String>,
}

/// How a job's run ended, as the worker records it.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // built once per job and consumed at once; boxing buys nothing
pub enum Outcome {
    Done(ResultRow),
    /// A permanent failure (bad input, too long for the context, the delivery limit reached).
    Failed {
        job_id: Uuid,
        error: String,
    },
    /// A transient failure: the job goes back to `queued` and its message is requeued.
    Retry {
        job_id: Uuid,
        error: String,
    },
}

impl Outcome {
    pub fn job_id(&self) -> Uuid {
        match self {
            Outcome::Done(r) => r.job_id,
            Outcome::Failed { job_id, .. } | Outcome::Retry { job_id, .. } => *job_id,
        }
    }
}

/// A line the producer rejected.
#[derive(Debug, Clone, Serialize)]
pub struct RejectedLine {
    pub file: String,
    pub line: i64,
    pub custom_id: Option<String>,
    pub field: String,
    pub error: String,
}

/// A job and its result, for `producer results`, in submission order.
#[derive(Debug, Clone, Serialize)]
pub struct ExportRow {
    pub job_id: String,
    pub custom_id: String,
    pub status: String,
    pub error: Option<String>,
    pub output_text: Option<String>,
    pub reasoning: Option<String>,
    pub candidates: Option<String>,
    pub rule_report: Option<String>,
    pub prompt_tokens: Option<i64>,
    pub completion_tokens: Option<i64>,
    pub finish_reason: Option<String>,
    pub model: Option<String>,
    pub latency_ms: Option<i64>,
    pub object_uri: Option<String>,
}

/// A connection pool to one of the two backends.
#[derive(Clone, Debug)]
pub enum Database {
    Postgres(sqlx::PgPool),
    Sqlite(sqlx::SqlitePool),
}

macro_rules! dispatch {
    ($self:ident, $f:ident ( $($arg:expr),* )) => {
        match $self {
            Database::Postgres(pool) => postgres::$f(pool $(, $arg)*).await,
            Database::Sqlite(pool) => sqlite::$f(pool $(, $arg)*).await,
        }
    };
}

impl Database {
    /// Connects and applies the migrations. `url` is `postgres://…` or `sqlite://path`.
    pub async fn connect(url: &str) -> Result<Database> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Database::Postgres(postgres::connect(url).await?))
        } else if let Some(path) = url.strip_prefix("sqlite://") {
            Ok(Database::Sqlite(sqlite::connect(path).await?))
        } else {
            Err(StoreError::Invalid(
                "database_url must start with postgres:// or sqlite://".into(),
            ))
        }
    }

    /// The batch named `name`, created if new; `true` when it was created now.
    pub async fn create_batch(&self, name: &str, model: &str) -> Result<(Uuid, bool)> {
        dispatch!(self, create_batch(name, model))
    }

    /// Inserts jobs (existing ones are left as they are) and returns every given job's id and
    /// current status, so a re-submit publishes only what is still queued.
    pub async fn insert_jobs(
        &self,
        batch_id: Uuid,
        jobs: &[NewJob],
    ) -> Result<Vec<(Uuid, beamline_jobs::JobStatus)>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        dispatch!(self, insert_jobs(batch_id, jobs))
    }

    /// Records rejected lines (a re-submit keeps the first record of a line).
    pub async fn insert_rejected(&self, batch_id: Uuid, lines: &[RejectedLine]) -> Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        dispatch!(self, insert_rejected(batch_id, lines))
    }

    /// The rejected lines of a batch, in file and line order.
    pub async fn rejected(&self, batch_id: Uuid) -> Result<Vec<RejectedLine>> {
        dispatch!(self, rejected(batch_id))
    }

    /// Sets `batches.total` to the number of its jobs.
    pub async fn update_total(&self, batch_id: Uuid) -> Result<i64> {
        dispatch!(self, update_total(batch_id))
    }

    /// Marks delivered jobs `running` and counts the attempt. Jobs already final (or cancelled,
    /// or unknown) are not returned: their deliveries are acked without running.
    pub async fn start_jobs(&self, ids: &[Uuid]) -> Result<Vec<StartedJob>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        dispatch!(self, start_jobs(ids))
    }

    /// Records outcomes in one transaction: result rows (upserts that keep the first), job
    /// statuses (moved only out of `queued`/`running`), requeued jobs back to `queued`. Returns
    /// the jobs whose stored result row is this call's: inserted now, or already there with the
    /// same `object_uri` (the same call retried after a commit whose answer was lost, as when
    /// Postgres restarts during `COMMIT`). A duplicate execution's rows, which point at another
    /// shard, are not returned.
    pub async fn record(&self, outcomes: &[Outcome]) -> Result<Vec<Uuid>> {
        if outcomes.is_empty() {
            return Ok(Vec::new());
        }
        dispatch!(self, record(outcomes))
    }

    /// Ends the batch when none of its jobs is queued or running; returns it when this call
    /// ended it (exactly one caller does).
    pub async fn finish_if_done(&self, batch_id: Uuid) -> Result<Option<BatchRow>> {
        dispatch!(self, finish_if_done(batch_id))
    }

    /// Cancels the queued jobs of a batch (running ones finish); returns how many.
    pub async fn cancel(&self, batch_id: Uuid) -> Result<u64> {
        dispatch!(self, cancel(batch_id))
    }

    pub async fn progress(&self, batch_id: Uuid) -> Result<Option<Progress>> {
        dispatch!(self, progress(batch_id))
    }

    pub async fn list(&self) -> Result<Vec<(BatchRow, Progress)>> {
        dispatch!(self, list())
    }

    /// A batch by id or, failing that, by name.
    pub async fn find_batch(&self, id_or_name: &str) -> Result<Option<BatchRow>> {
        dispatch!(self, find_batch(id_or_name))
    }

    /// Jobs and results of a batch in submission order, `limit` rows after `after_seq`.
    pub async fn export(
        &self,
        batch_id: Uuid,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<(i64, ExportRow)>> {
        dispatch!(self, export(batch_id, after_seq, limit))
    }

    /// `(job_id, finished_at)` of a batch's finished jobs, `finished_at` as sortable text.
    pub async fn finish_times(&self, batch_id: Uuid) -> Result<Vec<(String, String)>> {
        dispatch!(self, finish_times(batch_id))
    }

    /// `(job_id, object_uri)` of every result of a batch, for the manifest.
    pub async fn result_uris(&self, batch_id: Uuid) -> Result<Vec<(Uuid, Option<String>)>> {
        dispatch!(self, result_uris(batch_id))
    }

    /// Rewrites a result's verdict after a rule set is re-applied (`worker rules check --batch`).
    pub async fn update_verdict(
        &self,
        job_id: Uuid,
        status: beamline_jobs::JobStatus,
        output_text: Option<&str>,
        reasoning: Option<&str>,
        candidates: &serde_json::Value,
        rule_report: &serde_json::Value,
    ) -> Result<()> {
        dispatch!(
            self,
            update_verdict(
                job_id,
                status,
                output_text,
                reasoning,
                candidates,
                rule_report
            )
        )
    }

    /// Retries `op` while it fails transiently (a Postgres restart, a dropped connection),
    /// waiting a little longer each time, up to `patience`.
    pub async fn retry<T, F, Fut>(&self, patience: Duration, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let started = tokio::time::Instant::now();
        let mut wait = Duration::from_millis(100);
        loop {
            match op().await {
                Err(e) if e.is_transient() && started.elapsed() < patience => {
                    tracing::warn!(error = %e, wait_ms = wait.as_millis() as u64, "Database unavailable; retrying.");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
                other => return other,
            }
        }
    }
}

/// Parses a uuid stored as text (SQLite) or sent by a client.
pub fn parse_uuid(text: &str) -> Result<Uuid> {
    Uuid::parse_str(text)
        .map_err(|_| StoreError::Invalid(format!("{text:?} is not a batch or job id")))
}
