//! RELIABILITY.md #12: the S3 server stalls (`kill -STOP`) mid-run and resumes. Its own test
//! binary, since the stall would disturb tests beside it. Writers wait or retry; no result row
//! exists without its shard line, and nothing is lost.

use std::time::{Duration, Instant};

use beamline_tests::*;

fn signal_garage(signal: &str) {
    let cache = std::env::var("BEAMLINE_CACHE").unwrap_or_else(|_| {
        format!(
            "{}/.cache/beamline",
            std::env::var("HOME").unwrap_or("/root".into())
        )
    });
    let pid =
        std::fs::read_to_string(format!("{cache}/garage-data/garage.pid")).expect("garage.pid");
    let status = std::process::Command::new("kill")
        .args([signal, pid.trim()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {signal} garage");
}

#[tokio::test]
async fn s3_stall_mid_run_loses_nothing() {
    let setup = Setup::new(Backend::Cluster, "s3stall");
    let lines: Vec<String> = (0..200)
        .map(|i| prompt_line(&format!("j{i}"), "x"))
        .collect();
    let report = setup.submit(&setup.write_jobs("jobs.jsonl", &lines), &[]);
    let batch = batch_id(&report);
    let worker = setup.spawn_worker("echo", &["--batch-size", "8"], Some("slow_ms=10"));
    {
        let db = setup.db().await;
        let started = Instant::now();
        while db.progress(batch).await.unwrap().unwrap().done() < 30 {
            assert!(started.elapsed() < Duration::from_secs(60));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    signal_garage("-STOP");
    tokio::time::sleep(Duration::from_secs(8)).await;
    signal_garage("-CONT");
    let out = worker.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    setup.run_worker("echo", &["--batch-size", "8"]);
    let rows = assert_exactly_once(&setup, batch).await;
    assert_eq!(rows.iter().filter(|r| r.status == "succeeded").count(), 200);
}
