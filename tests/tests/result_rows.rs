//! The result upsert answers "is the stored row this write's?", not "did this statement insert
//! it?". A worker that retries its transaction after a commit whose answer was lost (Postgres
//! restarting during `COMMIT`, RELIABILITY.md #10) finds its rows already there and must keep
//! the shard they point at; a duplicate execution, whose rows lost to another worker's, must
//! drop its lines. (Counting only fresh inserts once deleted a committed row's shard.)

use std::collections::BTreeSet;

use beamline_store::{JobStatus, NewJob, Outcome, ResultRow};
use beamline_tests::*;
use serde_json::json;
use uuid::Uuid;

async fn a_retried_commit_keeps_its_rows_and_a_duplicate_does_not(backend: Backend) {
    let setup = Setup::new(backend, "resultrows");
    let db = setup.db().await;
    let (batch, _) = db.create_batch(&setup.lane, "echo").await.unwrap();
    let jobs: Vec<NewJob> = (0..3)
        .map(|i| NewJob {
            id: Uuid::new_v4(),
            custom_id: format!("r{i}"),
            kind: "text",
            priority: 0,
            input: json!({"prompt": "x"}),
            params: json!({}),
            seq: i + 1,
        })
        .collect();
    db.insert_jobs(batch, &jobs).await.unwrap();
    let outcomes = |shard: &str| -> Vec<Outcome> {
        jobs.iter()
            .map(|j| {
                Outcome::Done(ResultRow {
                    job_id: j.id,
                    batch_id: batch,
                    custom_id: j.custom_id.clone(),
                    status: JobStatus::Succeeded,
                    output_text: Some("x".into()),
                    reasoning: None,
                    candidates: json!([]),
                    rule_report: None,
                    prompt_tokens: 1,
                    completion_tokens: 1,
                    finish_reason: Some("stop".into()),
                    model: "echo".into(),
                    worker: "w".into(),
                    latency_ms: 1,
                    object_uri: Some(shard.into()),
                })
            })
            .collect()
    };
    let set = |ids: Vec<Uuid>| ids.into_iter().collect::<BTreeSet<_>>();
    let all: BTreeSet<Uuid> = jobs.iter().map(|j| j.id).collect();
    let ours = "s3://beamline/results/b/w-000001.jsonl";
    let first = outcomes(ours);
    assert_eq!(set(db.record(&first).await.unwrap()), all);
    // The same write again, as after a lost commit answer: the rows are still this write's,
    // also with a job given twice in one write.
    assert_eq!(set(db.record(&first).await.unwrap()), all);
    let twice: Vec<Outcome> = first.iter().chain(&first[..1]).cloned().collect();
    assert_eq!(set(db.record(&twice).await.unwrap()), all);
    // Another execution of the same jobs, pointing at its own shard: none of them is its.
    let duplicate = outcomes("s3://beamline/results/b/v-000007.jsonl");
    assert!(db.record(&duplicate).await.unwrap().is_empty());
    let rows = db.export(batch, 0, 10).await.unwrap();
    assert_eq!(rows.len(), 3);
    for (_, row) in rows {
        assert_eq!(row.object_uri.as_deref(), Some(ours), "{}", row.custom_id);
        assert_eq!(row.status, "succeeded");
    }
}

#[tokio::test]
async fn postgres_keeps_a_retried_commit_and_drops_a_duplicate() {
    a_retried_commit_keeps_its_rows_and_a_duplicate_does_not(Backend::Cluster).await;
}

#[tokio::test]
async fn sqlite_keeps_a_retried_commit_and_drops_a_duplicate() {
    a_retried_commit_keeps_its_rows_and_a_duplicate_does_not(Backend::Embedded).await;
}
