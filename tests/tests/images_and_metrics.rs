//! The edges of the pipeline: image jobs at submit, and the worker's Prometheus endpoint.

use std::io::{Read, Write};

use beamline_tests::*;
use serde_json::json;

/// `--metrics-addr` serves the Prometheus metrics of ARCHITECTURE.md while the worker runs.
#[tokio::test]
async fn worker_serves_prometheus_metrics() {
    let mut setup = Setup::new(Backend::Embedded, "metrics");
    setup.var("BEAMLINE_WORKER_IDLE_EXIT_S", "30");
    let lines = vec![
        prompt_line("a", "Mail me at ann@example.com."),
        prompt_line("b", "Plain text."),
    ];
    let report = setup.submit(&setup.write_jobs("jobs.jsonl", &lines), &[]);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut worker = setup.spawn_worker("echo", &["--metrics-addr", &addr], None);
    let db = setup.db().await;
    let started = std::time::Instant::now();
    while db
        .progress(batch_id(&report))
        .await
        .unwrap()
        .unwrap()
        .done()
        < 2
    {
        assert!(started.elapsed() < std::time::Duration::from_secs(30));
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // The rows are committed before the worker settles the deliveries and counts them, so
    // scrape until the counters have caught up (or the deadline passes).
    let expected = [
        "beamline_jobs_total{status=\"succeeded\"} 2",
        "beamline_rule_hits_total{rule=\"emails\",action=\"redact\"} 1",
        "beamline_job_latency_seconds_bucket",
        "beamline_batch_size",
    ];
    let mut body = String::new();
    for _ in 0..100 {
        body = scrape(&addr);
        if expected.iter().all(|e| body.contains(e)) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    worker.kill();
    worker.finish();
    for e in expected {
        assert!(body.contains(e), "{e} missing from:\n{body}");
    }
}

fn scrape(addr: &str) -> String {
    let mut body = String::new();
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    stream.read_to_string(&mut body).unwrap();
    body
}

/// Image jobs: the producer uploads local images under a content hash (format from the bytes)
/// and rejects what is not an image; a text model's worker fails the job with a clear error.
#[tokio::test]
async fn images_are_uploaded_by_content_and_checked() {
    let setup = Setup::new(Backend::Embedded, "images");
    // A 1x1 PNG named .jpg: the extension comes from the bytes.
    let png: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89\0\0\0\rIDATx\x9cc\xf8\x0f\0\0\x01\x01\0\x05\x18\xd8N\0\0\0\0IEND\xaeB`\x82";
    std::fs::write(setup.dir.join("cat.jpg"), png).unwrap();
    std::fs::write(setup.dir.join("notes.png"), b"not an image").unwrap();
    let file = setup.write_jobs(
        "images.jsonl",
        &[
            json!({"custom_id": "cat", "image": "cat.jpg", "task": "caption"}).to_string(),
            json!({"custom_id": "fake", "image": "notes.png"}).to_string(),
            json!({"custom_id": "missing", "image": "nowhere.png"}).to_string(),
        ],
    );
    let report = setup.submit(&file, &[]);
    assert_eq!(report["accepted"], 1, "{report}");
    let reasons: Vec<&str> = report["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["error"].as_str().unwrap())
        .collect();
    assert!(
        reasons[0].contains("not a PNG, JPEG, GIF or WebP"),
        "{reasons:?}"
    );
    assert!(reasons[1].contains("cannot read"), "{reasons:?}");
    let batch = batch_id(&report);
    let objects = setup.objects().await;
    let inputs = objects.list(&format!("inputs/{batch}")).await.unwrap();
    assert_eq!(inputs.len(), 1);
    assert!(inputs[0].ends_with(".png"), "{inputs:?}");
    setup.run_worker("model", &[]);
    let rows = assert_exactly_once(&setup, batch).await;
    assert_eq!(rows[0].status, "failed");
    assert!(
        rows[0].error.as_deref().unwrap().contains("text only"),
        "{:?}",
        rows[0].error
    );
}
