//! Stage 3: finished jobs → rules → result shard → database → acks, in that order, for a
//! group of jobs at a time (up to `worker.write_batch`, gathered for a few milliseconds).
//!
//! - The shard (`results/<batch_id>/<worker>-<seq>.jsonl`, one line per result) is written
//!   first; if that fails the group is handed back untouched: no success row without its object.
//! - Then one transaction records every outcome; transient database errors are retried (a
//!   Postgres restart), and if the database stays away the group is handed back, never acked.
//! - Then each delivery is settled: acked (succeeded, filtered, failed), requeued (a transient
//!   engine failure under the delivery limit) or dead-lettered (at the limit).
//! - Finally each batch the group touched is finished if it has nothing left to run.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use beamline_jobs::JobStatus;
use beamline_store::{Outcome, ResultRow};
use tokio::sync::mpsc::UnboundedReceiver;
use uuid::Uuid;

use super::{Finished, Held, JobError, Shared};
use crate::evaluate::evaluate;

const GATHER: Duration = Duration::from_millis(20);
const DATABASE_PATIENCE: Duration = Duration::from_secs(600);

/// What to do with a delivery once the group's rows are committed.
enum Settle {
    Ack,
    Requeue,
    DeadLetter(String),
}

pub async fn run(shared: Arc<Shared>, mut done: UnboundedReceiver<Finished>) {
    let mut seq: u64 = 0;
    let max = shared.settings.worker.write_batch;
    while let Some(first) = done.recv().await {
        let mut group = vec![first];
        let deadline = tokio::time::Instant::now() + GATHER;
        while group.len() < max {
            match tokio::time::timeout_at(deadline, done.recv()).await {
                Ok(Some(f)) => group.push(f),
                _ => break,
            }
        }
        seq += 1;
        write_group(&shared, group, seq).await;
    }
}

async fn write_group(shared: &Shared, group: Vec<Finished>, seq: u64) {
    let size = group.len();
    // Take the deliveries out of the in-flight map: from here this task settles them.
    let items: Vec<(
        Held,
        std::result::Result<beamline_engine::GenerationOutput, JobError>,
    )> = {
        let mut map = shared.inflight.lock().expect("inflight lock");
        let mut writing = shared.writing.lock().expect("writing lock");
        group
            .into_iter()
            .filter_map(|f| map.remove(&f.key).map(|h| (h, f.result)))
            .inspect(|(h, _)| {
                if let Ok(id) = h.message.job_id.parse() {
                    writing.insert(id);
                }
            })
            .collect()
    };
    let limit = shared.settings.worker.delivery_limit as i32;
    let mut outcomes = Vec::with_capacity(items.len());
    let mut settles = Vec::with_capacity(items.len());
    let mut tokens = 0u64;
    for (held, result) in &items {
        let job_id: Uuid = held.message.job_id.parse().unwrap_or_default();
        let latency_ms = held.delivery.received.elapsed().as_millis() as i64;
        match result {
            Ok(output) => {
                let row = result_row(shared, held, output, job_id, latency_ms);
                tokens += row.completion_tokens as u64;
                outcomes.push(Outcome::Done(row));
                settles.push(Settle::Ack);
            }
            Err(JobError::Permanent(error)) => {
                outcomes.push(Outcome::Failed {
                    job_id,
                    error: error.clone(),
                });
                settles.push(Settle::Ack);
            }
            Err(JobError::Transient(error)) if held.attempts >= limit => {
                let error = format!("{error} (gave up after {} attempts)", held.attempts);
                outcomes.push(Outcome::Failed {
                    job_id,
                    error: error.clone(),
                });
                settles.push(Settle::DeadLetter(error));
            }
            Err(JobError::Transient(error)) => {
                outcomes.push(Outcome::Retry {
                    job_id,
                    error: error.clone(),
                });
                settles.push(Settle::Requeue);
            }
        }
    }
    // 1. The shards, one per batch in the group.
    let mut by_batch: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, o) in outcomes.iter().enumerate() {
        if let Outcome::Done(r) = o {
            by_batch.entry(r.batch_id.to_string()).or_default().push(i);
        }
    }
    let mut shards: Vec<(String, Vec<(Uuid, String)>)> = Vec::new();
    for (batch, indexes) in &by_batch {
        let key = format!(
            "{}/{}-{seq:06}.jsonl",
            beamline_store::shard_prefix(batch.parse().unwrap_or_default()),
            shared.worker
        );
        let uri = shared.objects.uri(&key);
        let mut lines = Vec::new();
        for &i in indexes {
            if let Outcome::Done(r) = &mut outcomes[i] {
                r.object_uri = Some(uri.clone());
                lines.push((
                    r.job_id,
                    serde_json::to_string(&*r).expect("rows serialize"),
                ));
            }
        }
        if let Err(e) = put_with_retry(shared, &key, shard_body(&lines)).await {
            tracing::error!(error = %e, jobs = items.len(), "Result shard not written; handing the group back.");
            hand_back(shared, items).await;
            return;
        }
        shards.push((key, lines));
    }
    shared.faults.crash_if(
        shared.faults.crash_after_object_write && !by_batch.is_empty(),
        "crash_after_object_write",
    );
    // 2. The rows, in one transaction. A retry after a commit whose answer was lost finds its
    // own rows already there; `record` counts those as ours (they point at our shards).
    let ours: HashSet<Uuid> = match shared
        .db
        .retry(DATABASE_PATIENCE, || shared.db.record(&outcomes))
        .await
    {
        Ok(ids) => ids.into_iter().collect(),
        Err(e) => {
            tracing::error!(error = %e, jobs = items.len(), "Results not committed; handing the group back.");
            hand_back(shared, items).await;
            return;
        }
    };
    // A job that another execution committed first keeps that result: drop our lines for it,
    // so the shards hold one line per result row.
    for (key, lines) in &shards {
        let kept: Vec<(Uuid, String)> = lines
            .iter()
            .filter(|(id, _)| ours.contains(id))
            .cloned()
            .collect();
        if kept.len() < lines.len() {
            metrics::counter!(beamline_telemetry::REDELIVERIES_TOTAL, "outcome" => "duplicate_execution")
                .increment((lines.len() - kept.len()) as u64);
            let done = if kept.is_empty() {
                shared.objects.delete(key).await
            } else {
                shared
                    .objects
                    .put(key, shard_body(&kept), "application/jsonl")
                    .await
            };
            if let Err(e) = done {
                tracing::warn!(error = %e, key, "Could not drop duplicate lines; the manifest will.");
            }
        }
    }
    metrics::histogram!(beamline_telemetry::BATCH_SIZE).record(size as f64);
    shared
        .faults
        .crash_if(shared.faults.crash_after_commit, "crash_after_commit");
    // 3. The acks, each delivery once.
    let mut batches: HashSet<Uuid> = HashSet::new();
    for ((held, _), (outcome, settle)) in items.into_iter().zip(outcomes.iter().zip(settles)) {
        if let Ok(b) = held.message.batch_id.parse() {
            batches.insert(b);
        }
        let status = match outcome {
            Outcome::Done(r) => r.status.as_str(),
            Outcome::Failed { .. } => JobStatus::Failed.as_str(),
            Outcome::Retry { .. } => "retried",
        };
        metrics::counter!(beamline_telemetry::JOBS_TOTAL, "status" => status).increment(1);
        metrics::histogram!(beamline_telemetry::JOB_LATENCY_SECONDS)
            .record(held.delivery.received.elapsed().as_secs_f64());
        forget(shared, &held);
        tracing::debug!(
            batch_id = %held.message.batch_id,
            job_id = %held.message.job_id,
            custom_id = %held.message.custom_id,
            status,
            "Job settled."
        );
        match settle {
            Settle::Ack => held.delivery.ack().await,
            Settle::Requeue => held.delivery.requeue().await,
            Settle::DeadLetter(reason) => held.delivery.dead_letter(&reason).await,
        };
    }
    let ids: Vec<String> = batches.iter().map(Uuid::to_string).collect();
    tracing::info!(batch_ids = ?ids, jobs = size, tokens, "Results written.");
    metrics::counter!(beamline_telemetry::TOKENS_GENERATED_TOTAL).increment(tokens);
    // 4. Batches that have nothing left to run end here, with their manifests.
    for batch in batches {
        if let Err(e) = beamline_store::finish_batch(&shared.db, &shared.objects, batch).await {
            tracing::error!(error = %e, batch_id = %batch, "Could not finish the batch.");
        }
    }
}

fn result_row(
    shared: &Shared,
    held: &Held,
    output: &beamline_engine::GenerationOutput,
    job_id: Uuid,
    latency_ms: i64,
) -> ResultRow {
    let m = &held.message;
    let rules = m
        .params
        .rules
        .as_ref()
        .or(shared.settings.worker.rules.as_ref())
        .and_then(|name| match shared.rules.get(name) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::error!(error = %e, job_id = %job_id, "Rule set unavailable.");
                None
            }
        });
    let e = evaluate(output, rules.as_deref());
    for (rule, action) in &e.hits {
        metrics::counter!(beamline_telemetry::RULE_HITS_TOTAL, "rule" => rule.clone(), "action" => action.clone())
            .increment(1);
    }
    let chosen = output.candidates.get(e.chosen);
    ResultRow {
        job_id,
        batch_id: m.batch_id.parse().unwrap_or_default(),
        custom_id: m.custom_id.clone(),
        status: e.status,
        output_text: e.text,
        reasoning: e.reasoning,
        candidates: e.candidates,
        rule_report: e.rule_report,
        prompt_tokens: output.prompt_tokens as i32,
        completion_tokens: output.completion_tokens() as i32,
        finish_reason: chosen.map(|c| {
            serde_json::to_value(c.finish_reason)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default()
        }),
        model: m.model.clone(),
        worker: shared.worker.clone(),
        latency_ms,
        object_uri: None,
    }
}

async fn put_with_retry(
    shared: &Shared,
    key: &str,
    body: Vec<u8>,
) -> Result<(), beamline_store::ObjectError> {
    let mut wait = Duration::from_millis(200);
    let mut attempt = 0;
    loop {
        attempt += 1;
        match shared
            .objects
            .put(key, body.clone(), "application/jsonl")
            .await
        {
            Ok(()) => return Ok(()),
            Err(e) if attempt < 5 => {
                tracing::warn!(error = %e, attempt, "Result shard write failed; retrying.");
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn hand_back(
    shared: &Shared,
    items: Vec<(
        Held,
        std::result::Result<beamline_engine::GenerationOutput, JobError>,
    )>,
) {
    for (held, _) in items {
        forget(shared, &held);
        held.delivery.requeue().await;
    }
}

fn shard_body(lines: &[(Uuid, String)]) -> Vec<u8> {
    let mut body = String::new();
    for (_, line) in lines {
        body.push_str(line);
        body.push('\n');
    }
    body.into_bytes()
}

/// The job is settled: the consumer may run a later copy of it again.
fn forget(shared: &Shared, held: &Held) {
    if let Ok(id) = held.message.job_id.parse::<Uuid>() {
        shared.writing.lock().expect("writing lock").remove(&id);
    }
}
