//! RELIABILITY.md #12: the S3 server stalls (`kill -STOP`) mid-run and resumes. Its own test
//! binary, since the stall would disturb tests beside it. Writers wait or retry; no result row
//! exists without its shard line, and nothing is lost.

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
    survives_disruption(&setup, 200, async {
        signal_garage("-STOP");
        tokio::time::sleep(std::time::Duration::from_secs(8)).await;
        signal_garage("-CONT");
    })
    .await;
}
