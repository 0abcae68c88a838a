//! RELIABILITY.md #6: the broker restarts under load. Its own test binary, since stopping
//! RabbitMQ would disturb other tests running beside it.

use std::time::{Duration, Instant};

use beamline_tests::*;

fn rabbitmqctl(args: &[&str]) {
    let status = std::process::Command::new("rabbitmqctl")
        .args(args)
        .status()
        .expect("rabbitmqctl");
    assert!(status.success(), "rabbitmqctl {args:?}");
}

#[tokio::test]
async fn broker_restart_mid_run_loses_nothing() {
    let setup = Setup::new(Backend::Cluster, "broker");
    let lines: Vec<String> = (0..300)
        .map(|i| prompt_line(&format!("j{i}"), "x"))
        .collect();
    let report = setup.submit(&setup.write_jobs("jobs.jsonl", &lines), &[]);
    let batch = batch_id(&report);
    let worker = setup.spawn_worker("echo", &["--batch-size", "8"], Some("slow_ms=10"));
    let db = setup.db().await;
    let started = Instant::now();
    while db.progress(batch).await.unwrap().unwrap().done() < 30 {
        assert!(started.elapsed() < Duration::from_secs(60));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    rabbitmqctl(&["stop_app"]);
    tokio::time::sleep(Duration::from_secs(5)).await;
    rabbitmqctl(&["start_app"]);
    rabbitmqctl(&["await_startup"]);
    let out = worker.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The worker may have gone idle while the broker was away; a second run finishes the rest.
    setup.run_worker("echo", &["--batch-size", "8"]);
    let rows = assert_exactly_once(&setup, batch).await;
    assert_eq!(rows.iter().filter(|r| r.status == "succeeded").count(), 300);
}
