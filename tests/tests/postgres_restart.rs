//! RELIABILITY.md #10: Postgres restarts (`-m immediate`) under load. Its own test binary, since
//! the restart would disturb tests running beside it. Workers retry the whole transaction, never
//! ack before a commit, and their pools recover without a restart.

use std::time::{Duration, Instant};

use beamline_tests::*;

#[tokio::test]
async fn postgres_restart_mid_run_loses_nothing() {
    let setup = Setup::new(Backend::Cluster, "pgrestart");
    let lines: Vec<String> = (0..300)
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
    let version = std::fs::read_dir("/etc/postgresql")
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .file_name();
    let status = std::process::Command::new("pg_ctlcluster")
        .args([
            "--skip-systemctl-redirect",
            version.to_str().unwrap(),
            "main",
            "restart",
            "-m",
            "immediate",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let out = worker.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    setup.run_worker("echo", &["--batch-size", "8"]);
    let rows = assert_exactly_once(&setup, batch).await;
    assert_eq!(rows.iter().filter(|r| r.status == "succeeded").count(), 300);
}
