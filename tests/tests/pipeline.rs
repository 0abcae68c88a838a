//! The pipeline end to end with the echo engine (the queue and storage path, fast), on both
//! backends: mixed jobs, bad lines, rules, cancel, re-submit, poison jobs and priorities.

use beamline_tests::*;
use serde_json::json;

fn mixed_jobs(setup: &Setup) -> std::path::PathBuf {
    let lane = &setup.lane;
    setup.write_jobs(
        "mixed.jsonl",
        &[
            prompt_line("ok-1", "Hello there."),
            json!({"custom_id": "chat-1", "messages": [{"role": "user", "content": "Hi!"}], "params": {"max_new_tokens": 8}}).to_string(),
            json!({"custom_id": "openai-1", "method": "POST", "url": "/v1/chat/completions",
                   "body": {"model": lane, "messages": [{"role": "user", "content": "From OpenAI"}], "max_tokens": 8}}).to_string(),
            r#"{"custom_id": "broken", "prompt": "x"#.to_string(),
            json!({"custom_id": "no-prompt", "params": {}}).to_string(),
            prompt_line("ok-1", "A duplicate id."),
            json!({"custom_id": "unknown-model", "prompt": "x", "params": {"model": "nope"}}).to_string(),
            json!({"custom_id": "x'); DROP TABLE results;--", "prompt": "../../other/key"}).to_string(),
            String::new(),
        ],
    )
}

async fn mixed_batch_end_to_end(backend: Backend) {
    let setup = Setup::new(backend, "mixed");
    let file = mixed_jobs(&setup);
    let report = setup.submit(&file, &["--name", &format!("mixed-{}", setup.lane)]);
    assert_eq!(
        (report["accepted"].as_u64(), report["rejected"].as_u64()),
        (Some(4), Some(4)),
        "{report}"
    );
    let errors: Vec<(u64, String)> = report["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["line"].as_u64().unwrap(),
                e["field"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        errors,
        vec![
            (4, "json".into()),
            (5, "prompt".into()),
            (6, "custom_id".into()),
            (7, "params.model".into())
        ]
    );
    assert!(report["errors"][2]["error"]
        .as_str()
        .unwrap()
        .contains("line 1"));
    setup.run_worker("echo", &[]);
    let batch = batch_id(&report);
    let rows = assert_exactly_once(&setup, batch).await;
    let got: Vec<(&str, &str, Option<&str>)> = rows
        .iter()
        .map(|r| {
            (
                r.custom_id.as_str(),
                r.status.as_str(),
                r.output_text.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("ok-1", "succeeded", Some("Hello there.")),
            ("chat-1", "succeeded", Some("Hi!")),
            ("openai-1", "succeeded", Some("From OpenAI")),
            (
                "x'); DROP TABLE results;--",
                "succeeded",
                Some("../../other/key")
            ),
        ]
    );
    // Rejected lines are kept where users look, with file, line and reason.
    let db = setup.db().await;
    let rejected = db.rejected(batch).await.unwrap();
    assert_eq!(rejected.len(), 4);
    let progress = db.progress(batch).await.unwrap().unwrap();
    assert_eq!(
        (progress.total, progress.succeeded, progress.status.as_str()),
        (4, 4, "finished")
    );
    // Results in OpenAI's batch output format.
    let out = setup.producer(&["results", &batch.to_string(), "--format", "openai"]);
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(
        lines[2]["response"]["body"]["choices"][0]["message"]["content"],
        "From OpenAI"
    );
}

#[tokio::test]
async fn embedded_mixed_batch_end_to_end() {
    mixed_batch_end_to_end(Backend::Embedded).await;
}

#[tokio::test]
async fn cluster_mixed_batch_end_to_end() {
    mixed_batch_end_to_end(Backend::Cluster).await;
}

/// Issue #4's end-to-end check: jobs that hit each action land in Postgres with the expected
/// statuses, outputs and reports (echo makes each output its prompt, so the hits are known).
#[tokio::test]
async fn rule_verdicts_land_in_postgres() {
    let mut setup = Setup::new(Backend::Cluster, "rules");
    let rules_dir = setup.dir.join("rules");
    std::fs::create_dir_all(&rules_dir).unwrap();
    std::fs::copy(
        repo().join("configs/rules/default.toml"),
        rules_dir.join("default.toml"),
    )
    .unwrap();
    std::fs::write(
        rules_dir.join("house.toml"),
        r#"
[[rule]]
name = "reasoning"
kind = "reasoning_split"
[[rule]]
name = "secrets"
kind = "deny_words"
words = ["internal only"]
action = "reject"
[[rule]]
name = "emails"
kind = "regex"
pattern = '[\w.+-]+@[\w-]+\.[\w.]+'
action = "redact"
replacement = "[EMAIL]"
[[rule]]
name = "brand"
kind = "deny_words"
words = ["beamline"]
action = "flag"
[[rule]]
name = "short"
kind = "max_chars"
max = 40
action = "truncate"
"#,
    )
    .unwrap();
    setup.var("BEAMLINE_RULES_DIR", rules_dir.to_str().unwrap());
    let job = |id: &str, text: &str| {
        json!({"custom_id": id, "prompt": text, "params": {"rules": "house"}}).to_string()
    };
    let file = setup.write_jobs(
        "rules.jsonl",
        &[
            job("clean", "All good here."),
            job("secret", "This memo is internal only."),
            job("email", "Write to bob@example.com soon."),
            job("flag", "We use beamline daily."),
            job(
                "long",
                "This sentence is much longer than forty characters in total.",
            ),
            job("think", "<think>Let me see.</think>The answer is 4."),
        ],
    );
    let report = setup.submit(&file, &[]);
    setup.run_worker("echo", &[]);
    let batch = batch_id(&report);
    let rows = assert_exactly_once(&setup, batch).await;
    let by_id = |id: &str| rows.iter().find(|r| r.custom_id == id).unwrap();
    let hits = |id: &str| -> Vec<(String, String)> {
        let report: serde_json::Value =
            serde_json::from_str(by_id(id).rule_report.as_deref().unwrap()).unwrap();
        report["hits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| {
                (
                    h["rule"].as_str().unwrap().to_string(),
                    h["action"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    assert_eq!(by_id("clean").status, "succeeded");
    assert_eq!(
        by_id("clean").output_text.as_deref(),
        Some("All good here.")
    );
    assert_eq!(by_id("secret").status, "filtered");
    assert_eq!(by_id("secret").output_text, None);
    assert_eq!(
        hits("secret"),
        vec![("secrets".to_string(), "reject".to_string())]
    );
    assert_eq!(
        by_id("email").output_text.as_deref(),
        Some("Write to [EMAIL] soon.")
    );
    assert_eq!(
        hits("email"),
        vec![("emails".to_string(), "redact".to_string())]
    );
    assert_eq!(by_id("flag").status, "succeeded");
    assert_eq!(
        hits("flag"),
        vec![("brand".to_string(), "flag".to_string())]
    );
    // Truncation stops at the last word that fits.
    assert_eq!(
        by_id("long").output_text.as_deref(),
        Some("This sentence is much longer than forty")
    );
    assert!(hits("long").contains(&("short".to_string(), "truncate".to_string())));
    assert_eq!(
        by_id("think").output_text.as_deref(),
        Some("The answer is 4.")
    );
    assert_eq!(by_id("think").reasoning.as_deref(), Some("Let me see."));
    let report: serde_json::Value =
        serde_json::from_str(by_id("email").rule_report.as_deref().unwrap()).unwrap();
    assert!(report["rule_set_version"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));

    // Re-running a stricter rule set over the stored results updates the verdicts in place.
    std::fs::write(
        rules_dir.join("stricter.toml"),
        "[[rule]]\nname = \"no-good\"\nkind = \"deny_words\"\nwords = [\"good\"]\naction = \"reject\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(bin("worker"))
        .current_dir(&setup.dir)
        .envs([
            (
                "BEAMLINE_DATABASE_URL",
                setup.value("BEAMLINE_DATABASE_URL").unwrap(),
            ),
            ("BEAMLINE_RULES_DIR", rules_dir.display().to_string()),
        ])
        .args([
            "rules",
            "check",
            "--rules",
            "stricter",
            "--batch",
            &batch.to_string(),
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let db = setup.db().await;
    let after = beamline_tests::rows(&db, batch).await;
    assert_eq!(
        after
            .iter()
            .find(|r| r.custom_id == "clean")
            .unwrap()
            .status,
        "filtered"
    );
    assert_eq!(
        after.iter().find(|r| r.custom_id == "flag").unwrap().status,
        "succeeded"
    );
}

#[tokio::test]
async fn resubmitting_under_the_same_name_adds_nothing() {
    let setup = Setup::new(Backend::Cluster, "resubmit");
    let lines: Vec<String> = (0..50)
        .map(|i| prompt_line(&format!("j{i}"), &format!("job {i}")))
        .collect();
    let file = setup.write_jobs("jobs.jsonl", &lines);
    let name = format!("resubmit-{}", setup.lane);
    let first = setup.submit(&file, &["--name", &name]);
    let second = setup.submit(&file, &["--name", &name]);
    assert_eq!(first["batch_id"], second["batch_id"]);
    assert_eq!(first["published"], 50);
    // Still queued, so published again (a crashed submit's leftovers); the worker runs each once.
    setup.run_worker("echo", &[]);
    let third = setup.submit(&file, &["--name", &name]);
    assert_eq!(
        third["published"], 0,
        "final jobs are never published again"
    );
    let rows = assert_exactly_once(&setup, batch_id(&first)).await;
    assert_eq!(rows.len(), 50);
    assert!(rows.iter().all(|r| r.status == "succeeded"));
}

#[tokio::test]
async fn cancel_skips_queued_jobs() {
    let setup = Setup::new(Backend::Embedded, "cancel");
    let lines: Vec<String> = (0..40)
        .map(|i| prompt_line(&format!("j{i}"), "x"))
        .collect();
    let report = setup.submit(&setup.write_jobs("jobs.jsonl", &lines), &[]);
    let batch = batch_id(&report).to_string();
    let out = setup.producer(&["cancel", &batch]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "cancelled 40 queued jobs"
    );
    setup.run_worker("echo", &[]);
    let db = setup.db().await;
    let p = db.progress(batch_id(&report)).await.unwrap().unwrap();
    assert_eq!(
        (p.cancelled, p.succeeded, p.status.as_str()),
        (40, 0, "cancelled")
    );
}

/// A job that fails every time is retried up to the delivery limit, then marked failed and
/// dead-lettered; its batch mates are not affected.
#[tokio::test]
async fn poison_jobs_fail_alone_after_the_delivery_limit() {
    for backend in [Backend::Embedded, Backend::Cluster] {
        let mut setup = Setup::new(backend, "poison");
        setup.var("BEAMLINE_WORKER_DELIVERY_LIMIT", "3");
        let mut lines: Vec<String> = (0..20)
            .map(|i| prompt_line(&format!("j{i}"), "fine"))
            .collect();
        lines.insert(7, prompt_line("poison", "this one is POISON"));
        let report = setup.submit(&setup.write_jobs("jobs.jsonl", &lines), &[]);
        let worker = setup.spawn_worker("echo", &[], Some("poison=POISON"));
        assert!(worker.finish().status.success());
        let rows = assert_exactly_once(&setup, batch_id(&report)).await;
        let poison = rows.iter().find(|r| r.custom_id == "poison").unwrap();
        assert_eq!(poison.status, "failed", "{backend:?}");
        assert!(
            poison
                .error
                .as_deref()
                .unwrap()
                .contains("gave up after 3 attempts"),
            "{:?}",
            poison.error
        );
        assert_eq!(rows.iter().filter(|r| r.status == "succeeded").count(), 20);
    }
}

/// A high-priority batch submitted after a large normal one is served first.
#[tokio::test]
async fn high_priority_batches_go_first() {
    for backend in [Backend::Embedded, Backend::Cluster] {
        let setup = Setup::new(backend, "priority");
        let normal: Vec<String> = (0..300)
            .map(|i| prompt_line(&format!("n{i}"), "normal"))
            .collect();
        let urgent: Vec<String> = (0..5)
            .map(|i| prompt_line(&format!("u{i}"), "urgent"))
            .collect();
        let normal = setup.submit(&setup.write_jobs("normal.jsonl", &normal), &[]);
        let urgent = setup.submit(
            &setup.write_jobs("urgent.jsonl", &urgent),
            &["--priority", "5"],
        );
        setup.run_worker("echo", &["--batch-size", "4"]);
        let db = setup.db().await;
        let normal_rows = assert_exactly_once(&setup, batch_id(&normal)).await;
        let urgent_rows = assert_exactly_once(&setup, batch_id(&urgent)).await;
        let order = finish_order(&db, &[batch_id(&normal), batch_id(&urgent)]).await;
        let last_urgent = urgent_rows.iter().map(|r| order[&r.job_id]).max().unwrap();
        let normal_before = normal_rows
            .iter()
            .filter(|r| order[&r.job_id] < last_urgent)
            .count();
        assert!(
            normal_before <= 16,
            "{backend:?}: {normal_before} normal jobs finished before the last urgent one"
        );
    }
}

/// Position of each job in the order jobs finished (by `finished_at`, then id).
async fn finish_order(
    db: &beamline_store::Database,
    batches: &[uuid::Uuid],
) -> std::collections::HashMap<String, usize> {
    let mut all: Vec<(String, String)> = Vec::new();
    for &id in batches {
        for (job, finished) in db.finish_times(id).await.unwrap() {
            all.push((finished, job));
        }
    }
    all.sort();
    all.into_iter()
        .enumerate()
        .map(|(i, (_, job))| (job, i))
        .collect()
}
