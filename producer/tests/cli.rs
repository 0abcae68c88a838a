//! The producer binary on its own: `check` over a file with good and bad lines (the pipeline
//! tests in `tests/` cover `submit` and the rest against the real services).

use std::process::Command;

#[test]
fn check_reports_bad_lines_with_their_numbers() {
    let dir = std::env::temp_dir().join(format!("beamline-producer-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("jobs.jsonl");
    std::fs::write(&file, "{\"custom_id\": \"a\", \"prompt\": \"x\"}\r\n\n{\"custom_id\": \"a\", \"prompt\": \"y\"}\n{oops\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_producer"))
        .args(["check", file.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["accepted"], 1);
    assert_eq!(report["errors"][0]["line"], 3);
    assert_eq!(report["errors"][1]["line"], 4);
}
