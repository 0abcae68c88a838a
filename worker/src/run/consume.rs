//! Stage 1: deliveries from the queue → job rows marked `running` → work for the engine.
//! A redelivered job whose row is already final (or cancelled) is acked without running; a
//! message that cannot be read is dead-lettered. While the database is down the consumer waits
//! (holding what it has) instead of burning through the delivery limit.

use std::sync::atomic::Ordering;
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use beamline_jobs::JobMessage;
use beamline_queue::{Consumer, Delivery, JobQueue, QueueOptions};
use uuid::Uuid;

use super::{Held, Shared};

/// How long the database may stay unavailable before held deliveries are handed back.
const DATABASE_PATIENCE: Duration = Duration::from_secs(600);

pub struct Work {
    pub key: u64,
    pub message: JobMessage,
}

/// Returns why it stopped: `"idle"` (with `exit_when_idle`) or `"stopping"`.
pub async fn run(
    shared: Arc<Shared>,
    mut consumer: Consumer,
    work: SyncSender<Work>,
    exit_when_idle: bool,
) -> Result<&'static str> {
    let w = &shared.settings.worker;
    let (batch_size, linger) = (w.batch_size, Duration::from_millis(w.linger_ms));
    let hold_at_most = 2 * batch_size;
    let idle_exit = Duration::from_secs(w.idle_exit_s);
    let mut idle_since = Instant::now();
    let mut next_key: u64 = 0;
    loop {
        if shared.stopping.load(Ordering::SeqCst) {
            consumer.stop().await;
            close_later(consumer, shared.clone());
            return Ok("stopping");
        }
        let held = shared.inflight.lock().expect("inflight lock").len();
        if held >= hold_at_most {
            idle_since = Instant::now();
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        }
        let room = (hold_at_most - held).min(batch_size);
        let deliveries = consumer
            .next_batch(room, Duration::from_millis(250), linger)
            .await;
        if deliveries.is_empty() {
            let busy = !shared.inflight.lock().expect("inflight lock").is_empty();
            if busy {
                idle_since = Instant::now();
            } else if exit_when_idle && idle_since.elapsed() >= idle_exit {
                consumer.stop().await;
                close_later(consumer, shared.clone());
                return Ok("idle");
            }
            continue;
        }
        idle_since = Instant::now();
        start(&shared, deliveries, &work, &mut next_key).await;
    }
}

/// Marks the deliveries' jobs running and hands the runnable ones to the engine.
async fn start(
    shared: &Shared,
    deliveries: Vec<Delivery>,
    work: &SyncSender<Work>,
    next_key: &mut u64,
) {
    let mut readable: Vec<(Delivery, JobMessage, Uuid)> = Vec::new();
    for d in deliveries {
        match d.message.clone().and_then(|m| {
            m.job_id
                .parse::<Uuid>()
                .map(|id| (m, id))
                .map_err(|e| e.to_string())
        }) {
            Ok((m, id)) => readable.push((d, m, id)),
            Err(reason) => {
                tracing::error!(reason, "Unreadable message dead-lettered.");
                d.dead_letter(&format!("unreadable message: {reason}"))
                    .await;
            }
        }
    }
    let ids: Vec<Uuid> = readable.iter().map(|(_, _, id)| *id).collect();
    let started = match shared
        .db
        .retry(DATABASE_PATIENCE, || shared.db.start_jobs(&ids))
        .await
    {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, jobs = ids.len(), "Cannot mark jobs running; handing them back.");
            for (d, _, _) in readable {
                d.requeue().await;
            }
            return;
        }
    };
    let attempts: std::collections::HashMap<Uuid, i32> =
        started.into_iter().map(|s| (s.id, s.attempts)).collect();
    let mut running: std::collections::HashSet<Uuid> = shared
        .inflight
        .lock()
        .expect("inflight lock")
        .values()
        .filter_map(|h| h.message.job_id.parse().ok())
        .collect();
    running.extend(shared.writing.lock().expect("writing lock").iter().copied());
    for (delivery, message, id) in readable {
        if !running.insert(id) {
            // A second copy of a job this worker is running (a replayed publish): the first
            // copy writes the result, and if it fails its own delivery comes back.
            metrics::counter!(beamline_telemetry::REDELIVERIES_TOTAL, "outcome" => "duplicate_in_flight").increment(1);
            delivery.ack().await;
            continue;
        }
        let Some(&attempts) = attempts.get(&id) else {
            // Final already (a redelivery after a commit, or a cancelled job): nothing to run.
            metrics::counter!(beamline_telemetry::REDELIVERIES_TOTAL, "outcome" => "skipped_final")
                .increment(1);
            tracing::debug!(job_id = %id, "Job already final; acking without running.");
            delivery.ack().await;
            continue;
        };
        if delivery.redelivered {
            metrics::counter!(beamline_telemetry::REDELIVERIES_TOTAL, "outcome" => "ran_again")
                .increment(1);
        }
        let key = *next_key;
        *next_key += 1;
        let for_engine = message.clone();
        shared.inflight.lock().expect("inflight lock").insert(
            key,
            Held {
                delivery,
                message,
                attempts,
            },
        );
        if work
            .send(Work {
                key,
                message: for_engine,
            })
            .is_err()
        {
            tracing::error!("The engine thread is gone.");
            return;
        }
    }
}

/// Closes the consumer's connection once every delivery it handed out is settled (closing
/// earlier would return them to the queue while their results are being written).
fn close_later(mut consumer: Consumer, shared: Arc<Shared>) {
    tokio::spawn(async move {
        let deadline =
            Instant::now() + Duration::from_secs(shared.settings.worker.grace_period_s + 10);
        while !shared.inflight.lock().expect("inflight lock").is_empty()
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        consumer.close().await;
    });
}

/// Publishes `beamline_queue_depth{queue}` every few seconds from its own connection, until
/// the worker stops.
pub async fn report_depth(options: QueueOptions, shared: Arc<Shared>, model: String) {
    let Ok(mut queue) = JobQueue::connect(&shared.settings.queue_url, options).await else {
        return;
    };
    while !shared.stopping.load(Ordering::SeqCst) {
        if let Ok(depth) = queue.depth(&model).await {
            metrics::gauge!(beamline_telemetry::QUEUE_DEPTH, "queue" => beamline_queue::queue_name(&model, false))
                .set(depth as f64);
        }
        for _ in 0..50 {
            if shared.stopping.load(Ordering::SeqCst) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    queue.close().await;
}
