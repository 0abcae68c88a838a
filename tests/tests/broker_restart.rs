//! RELIABILITY.md #6: the broker restarts under load. Its own test binary, since stopping
//! RabbitMQ would disturb other tests running beside it.

use beamline_tests::*;

/// `rabbitmqctl` under a deadline, tried up to three times: it talks to the broker's Erlang
/// node, and a call that does not answer (seen once in CI) must be retried or fail the test,
/// never hang it. All three commands used here are idempotent.
fn rabbitmqctl(args: &[&str]) {
    let mut last = String::new();
    for _ in 0..3 {
        let mut command = std::process::Command::new("timeout");
        command.arg("60").arg("rabbitmqctl").args(args);
        let out = Process::start(command, "rabbitmqctl").finish();
        if out.status.success() {
            return;
        }
        last = format!(
            "exit {:?}: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("rabbitmqctl {args:?} failed ({last}); trying again");
    }
    panic!("rabbitmqctl {args:?}: {last}");
}

/// Starts the broker's application again however the test ends, so a failure here does not
/// leave RabbitMQ stopped for the tests that run after it.
struct RestartOnDrop;

impl Drop for RestartOnDrop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("timeout")
            .args(["90", "rabbitmqctl", "start_app"])
            .status();
    }
}

#[tokio::test]
async fn broker_restart_mid_run_loses_nothing() {
    let setup = Setup::new(Backend::Cluster, "broker");
    let _restart = RestartOnDrop;
    survives_disruption(&setup, 300, async {
        rabbitmqctl(&["stop_app"]);
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        rabbitmqctl(&["start_app"]);
        rabbitmqctl(&["await_startup"]);
    })
    .await;
}
