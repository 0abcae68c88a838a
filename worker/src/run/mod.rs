//! `worker run`: the pipeline's worker. A job passes these stages, one module each:
//!
//! `consume` (queue → job rows marked running) → `infer` (the engine on its own thread, fed
//! continuously) → `write` (rules, result shard, database commit, then ack).
//!
//! The commit order (RELIABILITY.md): the shard object first, then the rows in one
//! transaction, then the acks of exactly those deliveries. A crash anywhere before the ack
//! redelivers the job; a redelivered job whose row is final is acked without running.
//!
//! Shutdown: SIGTERM (or SIGINT, or `--exit-when-idle` once the queue stayed empty) stops the
//! consumer; in-flight jobs get `grace_period_s` to finish, and what is still held after that
//! is handed back to the queue before the process exits 0.

mod consume;
mod faults;
mod infer;
mod write;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result};
use beamline_config::Settings;
use beamline_jobs::JobMessage;
use beamline_queue::{Delivery, JobQueue, QueueOptions};
use beamline_store::{Database, ObjectStore};

pub use faults::Faults;

/// A delivery the worker holds, from the queue until it is settled.
pub struct Held {
    pub delivery: Delivery,
    pub message: JobMessage,
    /// Deliveries of this job that started running, this one included.
    pub attempts: i32,
}

/// Deliveries in flight, by the key the engine knows them by.
pub type InFlight = Arc<Mutex<HashMap<u64, Held>>>;

/// Why a job produced no output.
#[derive(Debug, Clone)]
pub enum JobError {
    /// The input cannot run (too long, bad params, an image job on a text model): fails now.
    Permanent(String),
    /// The engine failed (out of memory, a libtorch error): retried up to the delivery limit.
    Transient(String),
}

pub struct Finished {
    pub key: u64,
    pub result: std::result::Result<beamline_engine::GenerationOutput, JobError>,
}

/// What the stages share.
pub struct Shared {
    pub settings: Settings,
    pub worker: String,
    pub db: Database,
    pub objects: ObjectStore,
    pub rules: beamline_rules::RuleCatalog,
    pub inflight: InFlight,
    /// Jobs the writer holds (out of `inflight`, not yet settled).
    pub writing: Mutex<std::collections::HashSet<uuid::Uuid>>,
    pub stopping: AtomicBool,
    pub faults: Faults,
}

pub struct RunOptions {
    pub exit_when_idle: bool,
}

pub async fn run(settings: Settings, options: RunOptions) -> Result<()> {
    let faults = Faults::from_env();
    let db = Database::connect(&settings.database_url)
        .await
        .with_context(|| {
            format!(
                "connecting to {}",
                beamline_config::redact_url(&settings.database_url)
            )
        })?;
    let objects = ObjectStore::open(&settings.object_store).await?;
    let catalog = beamline_config::ModelCatalog::load(&settings.models_config)?;
    let model = match &settings.worker.model {
        Some(m) => m.clone(),
        None => catalog
            .default_name()
            .context("the model catalog names no default model; set worker.model")?
            .to_string(),
    };
    let rules = beamline_rules::RuleCatalog::new(&settings.rules_dir);
    if let Some(name) = &settings.worker.rules {
        rules
            .get(name)
            .with_context(|| format!("loading the default rule set {name:?}"))?;
    }
    let queue_options = QueueOptions {
        delivery_limit: settings.worker.delivery_limit,
        visibility_timeout: Duration::from_secs(settings.worker.visibility_timeout_s),
        max_unconfirmed: settings.producer.max_unconfirmed,
    };
    let queue = JobQueue::connect(&settings.queue_url, queue_options.clone())
        .await
        .with_context(|| {
            format!(
                "connecting to {}",
                beamline_config::redact_url(&settings.queue_url)
            )
        })?;
    let worker = worker_name(&settings);
    let batch_size = settings.worker.batch_size;
    // Inference: the model (or echo) on its own thread, fed by a bounded channel.
    let (work_tx, work_rx) = std::sync::mpsc::sync_channel(2 * batch_size);
    let (done_tx, done_rx) = tokio::sync::mpsc::unbounded_channel();
    let engine_thread = match settings.worker.engine.as_str() {
        "echo" => infer::spawn_echo(work_rx, done_tx, faults.clone()),
        _ => {
            let path = catalog
                .path_of(&model)
                .with_context(|| format!("model {model:?} is not in the catalog"))?;
            infer::spawn_model(&settings, &path, work_rx, done_tx)?
        }
    };
    let shared = Arc::new(Shared {
        worker: worker.clone(),
        db,
        objects,
        rules,
        inflight: Arc::new(Mutex::new(HashMap::new())),
        writing: Mutex::new(Default::default()),
        stopping: AtomicBool::new(false),
        faults,
        settings,
    });
    tracing::info!(
        worker,
        model,
        batch_size,
        engine = shared.settings.worker.engine,
        "Worker started."
    );
    metrics::gauge!(beamline_telemetry::WORKERS, "pool" => model.clone(), "state" => "running")
        .set(1.0);
    let depth = tokio::spawn(consume::report_depth(
        queue_options,
        shared.clone(),
        model.clone(),
    ));
    let consumer = queue
        .consumer(&model, (2 * batch_size).min(u16::MAX as usize) as u16)
        .await?;
    let writer = tokio::spawn(write::run(shared.clone(), done_rx));
    let consume = consume::run(shared.clone(), consumer, work_tx, options.exit_when_idle);
    let mut queue = queue;
    let mut consume = std::pin::pin!(consume);
    let finished = tokio::select! {
        r = &mut consume => Some(r?),
        _ = shutdown_signal() => None,
    };
    shared.stopping.store(true, Ordering::SeqCst);
    let reason = match finished {
        Some(reason) => reason,
        None => {
            // The consumer returns at its next poll; wait so it closes the engine's channel.
            let _ = tokio::time::timeout(Duration::from_secs(5), &mut consume).await;
            "signal"
        }
    };
    drain(&shared, reason).await;
    let _ = tokio::time::timeout(Duration::from_secs(6), depth).await;
    queue.close().await;
    // Let the writer finish the group it holds (its acks), then exit without waiting for the
    // engine thread, which may be mid-step on work already handed back.
    let _ = tokio::time::timeout(Duration::from_secs(10), writer).await;
    drop(engine_thread);
    metrics::gauge!(beamline_telemetry::WORKERS, "pool" => model, "state" => "running").set(0.0);
    tracing::info!(reason, "Worker stopped.");
    Ok(())
}

/// Waits for in-flight jobs up to the grace period, then hands the rest back.
async fn drain(shared: &Shared, reason: &str) {
    let grace = Duration::from_secs(shared.settings.worker.grace_period_s);
    let held = shared.inflight.lock().expect("inflight lock").len();
    tracing::info!(
        reason,
        in_flight = held,
        grace_s = grace.as_secs(),
        "Draining."
    );
    let deadline = tokio::time::Instant::now() + grace;
    while tokio::time::Instant::now() < deadline {
        if shared.inflight.lock().expect("inflight lock").is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rest: Vec<Held> = shared
        .inflight
        .lock()
        .expect("inflight lock")
        .drain()
        .map(|(_, h)| h)
        .collect();
    tracing::warn!(
        handed_back = rest.len(),
        "Grace period over; handing jobs back."
    );
    let ids: Vec<uuid::Uuid> = rest
        .iter()
        .filter_map(|h| h.message.job_id.parse().ok())
        .collect();
    let outcomes: Vec<beamline_store::Outcome> = ids
        .into_iter()
        .map(|job_id| beamline_store::Outcome::Retry {
            job_id,
            error: "handed back at shutdown".into(),
        })
        .collect();
    let _ = shared.db.record(&outcomes).await;
    for h in rest {
        h.delivery.requeue().await;
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received."),
        _ = int.recv() => tracing::info!("SIGINT received."),
    }
}

/// The configured name, else `<host>-<pid>`; only `[A-Za-z0-9._-]`, since it is part of keys.
fn worker_name(settings: &Settings) -> String {
    let raw = settings.worker.name.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/etc/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "worker".into());
        format!("{host}-{}", std::process::id())
    });
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}
