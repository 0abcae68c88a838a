//! Structured logs and Prometheus metrics for the three binaries. Metric names are defined here
//! once (`beamline_<noun>_<unit>[_total]`, ARCHITECTURE.md) so the binaries, the README's table
//! and dashboards agree; labels are bounded (statuses, rule names, queue names, never job ids).
//!
//! Logs go to stderr, so a command's JSON output on stdout stays clean; `RUST_LOG` filters them.

use std::net::SocketAddr;

use metrics_exporter_prometheus::PrometheusBuilder;
use tracing_subscriber::EnvFilter;

/// `beamline_jobs_total{status}`: jobs that reached a final status.
pub const JOBS_TOTAL: &str = "beamline_jobs_total";
/// `beamline_tokens_generated_total`.
pub const TOKENS_GENERATED_TOTAL: &str = "beamline_tokens_generated_total";
/// `beamline_batch_size` (histogram): jobs per written batch.
pub const BATCH_SIZE: &str = "beamline_batch_size";
/// `beamline_job_latency_seconds` (histogram): delivery to durable result.
pub const JOB_LATENCY_SECONDS: &str = "beamline_job_latency_seconds";
/// `beamline_queue_depth{queue}`: messages waiting.
pub const QUEUE_DEPTH: &str = "beamline_queue_depth";
/// `beamline_device_memory_bytes{kind}`: `weights`, `kv_cache`, `peak_rss`.
pub const DEVICE_MEMORY_BYTES: &str = "beamline_device_memory_bytes";
/// `beamline_rule_hits_total{rule,action}`.
pub const RULE_HITS_TOTAL: &str = "beamline_rule_hits_total";
/// `beamline_workers{pool,state}`.
pub const WORKERS: &str = "beamline_workers";
/// `beamline_spot_interruptions_total`.
pub const SPOT_INTERRUPTIONS_TOTAL: &str = "beamline_spot_interruptions_total";
/// `beamline_jobs_submitted_total{outcome}`: lines the producer accepted or rejected.
pub const JOBS_SUBMITTED_TOTAL: &str = "beamline_jobs_submitted_total";
/// `beamline_redeliveries_total{outcome}`: redelivered jobs, and whether they ran again.
pub const REDELIVERIES_TOTAL: &str = "beamline_redeliveries_total";

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("metrics address {addr:?}: {reason}")]
    Metrics { addr: String, reason: String },
}

/// The default filter. lapin logs its I/O loop's teardown at ERROR even on a clean close, and
/// sqlx logs Postgres notices at INFO; beamline reports every failure it acts on itself, so
/// those are quiet unless `RUST_LOG` asks for them.
const DEFAULT_FILTER: &str = "info,lapin=off,pinky_swear=off,sqlx=warn";

/// Logs to stderr, as text or JSON lines; `RUST_LOG` filters (default: `DEFAULT_FILTER`).
pub fn init_logs(json: bool) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second init (tests run several commands in one process) keeps the first subscriber.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.compact().try_init()
    };
}

/// Serves `/metrics` on `addr` (loopback unless the operator opens it) and describes every
/// metric. Needs a Tokio runtime.
pub fn serve_metrics(addr: &str) -> Result<(), TelemetryError> {
    let err = |reason: String| TelemetryError::Metrics {
        addr: addr.to_string(),
        reason,
    };
    let socket: SocketAddr = addr.parse().map_err(|e| err(format!("{e}")))?;
    PrometheusBuilder::new()
        .with_http_listener(socket)
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full(BATCH_SIZE.into()),
            &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0],
        )
        .and_then(|b| {
            b.set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Full(JOB_LATENCY_SECONDS.into()),
                &[
                    0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
                ],
            )
        })
        .map_err(|e| err(e.to_string()))?
        .install()
        .map_err(|e| err(e.to_string()))?;
    describe();
    Ok(())
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(JOBS_TOTAL, "Jobs that reached a final status, by status.");
    describe_counter!(TOKENS_GENERATED_TOTAL, Unit::Count, "Tokens generated.");
    describe_histogram!(BATCH_SIZE, Unit::Count, "Jobs per written batch.");
    describe_histogram!(
        JOB_LATENCY_SECONDS,
        Unit::Seconds,
        "From delivery to the durable result."
    );
    describe_gauge!(QUEUE_DEPTH, Unit::Count, "Messages waiting, by queue.");
    describe_gauge!(DEVICE_MEMORY_BYTES, Unit::Bytes, "Memory in use, by kind.");
    describe_counter!(RULE_HITS_TOTAL, "Rule hits, by rule and action.");
    describe_gauge!(WORKERS, "Workers, by pool and state.");
    describe_counter!(SPOT_INTERRUPTIONS_TOTAL, "Spot interruption notices.");
    describe_counter!(JOBS_SUBMITTED_TOTAL, "Job lines submitted, by outcome.");
    describe_counter!(REDELIVERIES_TOTAL, "Redelivered jobs, by outcome.");
}
