//! The embedded default with the real SmolLM2 model: chat, plain and beam-search jobs run
//! through the engine, a job too long for the context fails alone with a clear error.

use beamline_tests::*;
use serde_json::json;

#[tokio::test]
async fn embedded_default_runs_the_real_model() {
    let setup = Setup::new(Backend::Embedded, "model");
    let file = setup.write_jobs(
        "jobs.jsonl",
        &[
            json!({"custom_id": "capital", "messages": [{"role": "user", "content": "What is the capital of France?"}],
                   "params": {"max_new_tokens": 12}}).to_string(),
            json!({"custom_id": "beam", "prompt": "The three primary colors are",
                   "params": {"max_new_tokens": 8, "decoding": "beam", "num_beams": 3, "num_return_sequences": 2}}).to_string(),
            json!({"custom_id": "too-long", "prompt": "Hello", "params": {"max_new_tokens": 100000}}).to_string(),
        ],
    );
    let report = setup.submit(&file, &[]);
    setup.run_worker("model", &["--batch-size", "4"]);
    let rows = assert_exactly_once(&setup, batch_id(&report)).await;
    let by_id = |id: &str| rows.iter().find(|r| r.custom_id == id).unwrap();
    assert_eq!(by_id("capital").status, "succeeded");
    assert!(
        by_id("capital")
            .output_text
            .as_deref()
            .unwrap()
            .contains("Paris"),
        "{:?}",
        by_id("capital")
    );
    let beam = by_id("beam");
    assert_eq!(beam.status, "succeeded");
    let candidates: Vec<serde_json::Value> =
        serde_json::from_str(beam.candidates.as_deref().unwrap()).unwrap();
    assert_eq!(candidates.len(), 2);
    assert!(candidates[0]["score"].as_f64().unwrap() >= candidates[1]["score"].as_f64().unwrap());
    assert_eq!(beam.completion_tokens, Some(16));
    let long = by_id("too-long");
    assert_eq!(long.status, "failed");
    assert!(
        long.error.as_deref().unwrap().contains("context"),
        "{:?}",
        long.error
    );
}
