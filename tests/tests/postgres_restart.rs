//! RELIABILITY.md #10: Postgres restarts (`-m immediate`) under load. Its own test binary, since
//! the restart would disturb tests running beside it. Workers retry the whole transaction, never
//! ack before a commit, and their pools recover without a restart.

use beamline_tests::*;

#[tokio::test]
async fn postgres_restart_mid_run_loses_nothing() {
    let setup = Setup::new(Backend::Cluster, "pgrestart");
    survives_disruption(&setup, 300, async {
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
    })
    .await;
}
