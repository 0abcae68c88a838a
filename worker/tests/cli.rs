//! The worker's command line as users script it: JSON shapes, per-line errors, exit codes.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn model() -> String {
    std::env::var("BEAMLINE_TEST_MODEL").unwrap_or_else(|_| {
        root()
            .join("models/SmolLM2-135M-Instruct.Q4_1.gguf")
            .display()
            .to_string()
    })
}

fn worker(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_worker"))
        .args(args)
        .current_dir(root())
        .env("RUST_LOG", "warn")
        .output()
        .expect("run worker")
}

/// Runs the worker, requires success and returns its JSON lines.
fn worker_json(args: &[&str]) -> Vec<Value> {
    let out = worker(args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    json_lines(&out)
}

fn json_lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

#[test]
fn generate_input_reports_bad_lines_and_runs_the_rest() {
    let lines = worker_json(&[
        "generate",
        "--model",
        &model(),
        "--input",
        "examples/prompts.jsonl",
        "--max-new-tokens",
        "8",
        "--json",
    ]);
    assert_eq!(lines.len(), 10, "one object per non-empty line, in order");
    let by_id = |id: &str| {
        lines
            .iter()
            .find(|l| l["custom_id"] == id && l.get("error").is_none())
            .cloned()
    };
    let capital = by_id("capital").expect("first capital line ran");
    assert!(
        capital["text"].as_str().unwrap().contains("Paris"),
        "{capital}"
    );
    assert_eq!(capital["finish_reason"], "stop");
    let beam = by_id("beam-summary").unwrap();
    assert_eq!(beam["candidates"].as_array().unwrap().len(), 2);
    let errors: Vec<&Value> = lines.iter().filter(|l| l.get("error").is_some()).collect();
    assert_eq!(errors.len(), 4, "{errors:?}");
    let error_of = |line: u64| {
        errors
            .iter()
            .find(|e| e["line"] == line)
            .map(|e| e["error"].as_str().unwrap().to_string())
            .unwrap()
    };
    assert!(error_of(7).contains("params.top_p"), "{}", error_of(7));
    assert!(error_of(8).contains("prompt"), "{}", error_of(8));
    assert!(
        error_of(9).contains("json") || error_of(9).contains("EOF"),
        "{}",
        error_of(9)
    );
    assert!(
        error_of(10).contains("duplicates line 1"),
        "{}",
        error_of(10)
    );
}

#[test]
fn tokenize_and_score_print_json() {
    let out = worker(&[
        "tokenize",
        "--model",
        &model(),
        "--text",
        "Hello world",
        "--json",
    ]);
    assert!(out.status.success());
    assert_eq!(json_lines(&out)[0]["ids"], serde_json::json!([19556, 905]));
    let out = worker(&[
        "score",
        "--model",
        &model(),
        "--text",
        "The capital of France is Paris.",
        "--json",
    ]);
    assert!(out.status.success());
    let score = &json_lines(&out)[0];
    // 7 tokens, the first not scored.
    assert_eq!(score["tokens"], 6);
    let (nll, ppl) = (
        score["nll"].as_f64().unwrap(),
        score["perplexity"].as_f64().unwrap(),
    );
    assert!(nll > 0.0 && (ppl - (nll / 6.0).exp()).abs() < 1e-9 * ppl);
}

#[test]
fn a_bad_model_file_exits_non_zero_naming_it() {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("not-a-model.gguf");
    std::fs::write(&path, b"GGUF but then nothing").unwrap();
    let out = worker(&[
        "generate",
        "--model",
        path.to_str().unwrap(),
        "--prompt",
        "hi",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not-a-model.gguf") && stderr.starts_with("error:"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    let out = worker(&["generate", "--model", "no-such-model", "--prompt", "hi"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-model"));
}

#[test]
fn prompt_longer_than_the_context_fails_that_prompt_only() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let long = "word ".repeat(9000);
    let jobs = format!(
        "{}\n{}\n",
        serde_json::json!({"custom_id": "too-long", "prompt": long, "params": {"max_new_tokens": 4}}),
        serde_json::json!({"custom_id": "fine", "prompt": "Hello", "params": {"max_new_tokens": 4}})
    );
    let input = dir.join("long.jsonl");
    std::fs::write(&input, jobs).unwrap();
    let out = worker(&[
        "generate",
        "--model",
        &model(),
        "--input",
        input.to_str().unwrap(),
        "--json",
    ]);
    assert!(out.status.success());
    let lines = json_lines(&out);
    assert!(
        lines[0]["error"]
            .as_str()
            .unwrap()
            .contains("context is 8192 tokens"),
        "{}",
        lines[0]
    );
    assert_eq!(lines[1]["completion_tokens"], 4);
}

#[test]
fn banned_phrase_is_steered_around_during_decoding() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("rules-ban");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("no-paris.toml"),
        "[[rule]]\nname = \"no-paris\"\nkind = \"deny_words\"\nwords = [\"Paris\"]\naction = \"reject\"\nban_during_decoding = true\n",
    )
    .unwrap();
    let ask = [
        "generate",
        "--model",
        &model(),
        "--prompt",
        "What is the capital of France?",
        "--chat",
        "--max-new-tokens",
        "24",
        "--json",
    ];
    let plain = json_lines(&worker(&ask))[0].clone();
    assert!(
        plain["text"].as_str().unwrap().contains("Paris"),
        "greedy says Paris without the rule: {plain}"
    );
    let mut with_rules = ask.to_vec();
    with_rules.extend(["--rules", "no-paris", "--rules-dir", dir.to_str().unwrap()]);
    let out = worker(&with_rules);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let steered = json_lines(&out)[0].clone();
    let text = steered["text"].as_str().expect("a passing answer");
    assert!(!text.contains("Paris"), "{text}");
    assert_eq!(steered["status"], "succeeded");
    // Still the model's own fluent words: several words, and the beginning is unchanged.
    assert!(text.split_whitespace().count() >= 4, "{text}");
    assert!(text.starts_with("The capital of France is"), "{text}");
}

#[test]
fn rules_check_reports_hits_with_offsets() {
    let input = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("texts.jsonl");
    std::fs::write(
        &input,
        "{\"custom_id\": \"a\", \"text\": \"Mail me at someone@example.com please.\"}\nnot json\n",
    )
    .unwrap();
    let lines = worker_json(&[
        "rules",
        "check",
        "--rules",
        "default",
        "--input",
        input.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["custom_id"], "a");
    assert!(lines[1]["error"].is_string());
}
