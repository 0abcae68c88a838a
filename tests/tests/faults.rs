//! Faults the pipeline must survive (RELIABILITY.md #1–#4): a worker killed mid-batch, crashes
//! between the object write and the commit and between the commit and the ack, and SIGTERM.
//! Each ends with the same promise: every job exactly one final row, one shard line per result.

use std::time::{Duration, Instant};

use beamline_tests::*;

fn jobs(setup: &Setup, n: usize) -> std::path::PathBuf {
    let lines: Vec<String> = (0..n)
        .map(|i| prompt_line(&format!("j{i}"), &format!("job number {i}")))
        .collect();
    setup.write_jobs("jobs.jsonl", &lines)
}

async fn wait_for_done(setup: &Setup, batch: uuid::Uuid, at_least: i64) {
    let db = setup.db().await;
    let started = Instant::now();
    loop {
        let p = db.progress(batch).await.unwrap().unwrap();
        if p.done() >= at_least {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no progress: {p:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn kill_mid_batch_and_restart(backend: Backend) {
    let mut setup = Setup::new(backend, "kill9");
    setup.var("BEAMLINE_WORKER_VISIBILITY_TIMEOUT_S", "2");
    // A dead worker's leases (embedded queue) come back after the visibility timeout.
    setup.var("BEAMLINE_WORKER_IDLE_EXIT_S", "4");
    let report = setup.submit(&jobs(&setup, 300), &[]);
    let batch = batch_id(&report);
    for _ in 0..2 {
        let mut worker = setup.spawn_worker("echo", &["--batch-size", "16"], Some("slow_ms=5"));
        let before = setup
            .db()
            .await
            .progress(batch)
            .await
            .unwrap()
            .unwrap()
            .done();
        wait_for_done(&setup, batch, before + 60).await;
        worker.kill(); // SIGKILL, mid-batch
        worker.finish();
    }
    setup.run_worker("echo", &["--batch-size", "16"]);
    let rows = assert_exactly_once(&setup, batch).await;
    assert_eq!(rows.len(), 300);
    assert!(rows.iter().all(|r| r.status == "succeeded"), "{backend:?}");
    let redelivered = rows.iter().filter(|r| r.latency_ms.is_some()).count();
    assert_eq!(redelivered, 300);
}

#[tokio::test]
async fn cluster_worker_killed_mid_batch_loses_and_duplicates_nothing() {
    kill_mid_batch_and_restart(Backend::Cluster).await;
}

#[tokio::test]
async fn embedded_worker_killed_mid_batch_loses_and_duplicates_nothing() {
    kill_mid_batch_and_restart(Backend::Embedded).await;
}

/// RELIABILITY.md #2 and #3: the worker dies right after writing the shard (no row yet), or
/// right after the commit (no ack yet). The redelivered jobs end with one row and one line.
#[tokio::test]
async fn crashes_between_object_commit_and_ack_are_recovered() {
    for fault in ["crash_after_object_write", "crash_after_commit"] {
        for backend in [Backend::Cluster, Backend::Embedded] {
            let mut setup = Setup::new(backend, fault);
            setup.var("BEAMLINE_WORKER_VISIBILITY_TIMEOUT_S", "2");
            setup.var("BEAMLINE_WORKER_IDLE_EXIT_S", "4");
            // A dead worker's leases (embedded queue) come back after the visibility timeout.
            setup.var("BEAMLINE_WORKER_IDLE_EXIT_S", "4");
            let report = setup.submit(&jobs(&setup, 40), &[]);
            let crashing = setup.spawn_worker("echo", &["--batch-size", "8"], Some(fault));
            let status = crashing.finish().status;
            eprintln!("case {fault} {backend:?}");
            assert!(
                !status.success(),
                "{fault}: the fault point should abort the worker"
            );
            setup.run_worker("echo", &["--batch-size", "8"]);
            let rows = assert_exactly_once(&setup, batch_id(&report)).await;
            assert!(
                rows.iter().all(|r| r.status == "succeeded"),
                "{fault} {backend:?}"
            );
        }
    }
}

/// RELIABILITY.md #4: SIGTERM stops the intake, hands back what cannot finish within the
/// grace period and exits 0; a new worker finishes the batch.
#[tokio::test]
async fn sigterm_drains_within_the_grace_period() {
    let setup = Setup::new(Backend::Cluster, "sigterm");
    let report = setup.submit(&jobs(&setup, 200), &[]);
    let batch = batch_id(&report);
    let worker = setup.spawn_worker(
        "echo",
        &["--batch-size", "16", "--grace-period", "1"],
        Some("slow_ms=30"),
    );
    wait_for_done(&setup, batch, 20).await;
    let sent = Instant::now();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &worker.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = worker.finish();
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        sent.elapsed() < Duration::from_secs(5),
        "took {:?} to stop",
        sent.elapsed()
    );
    let p = setup.db().await.progress(batch).await.unwrap().unwrap();
    assert!(p.done() < 200, "the drain should have left work: {p:?}");
    assert_eq!(p.running, 0, "handed-back jobs are queued again: {p:?}");
    setup.run_worker("echo", &["--batch-size", "16"]);
    let rows = assert_exactly_once(&setup, batch).await;
    assert!(rows.iter().all(|r| r.status == "succeeded"));
}
