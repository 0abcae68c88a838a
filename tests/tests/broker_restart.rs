//! RELIABILITY.md #6: the broker restarts under load. Its own test binary, since stopping
//! RabbitMQ would disturb other tests running beside it.

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
    survives_disruption(&setup, 300, async {
        rabbitmqctl(&["stop_app"]);
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        rabbitmqctl(&["start_app"]);
        rabbitmqctl(&["await_startup"]);
    })
    .await;
}
