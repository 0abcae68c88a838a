//! `producer check`: validates job files line by line, as `submit` will before publishing:
//! every bad line is reported with its file, line number, job and reason, and the good ones
//! are counted; memory stays bounded whatever the file size.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde_json::json;

/// Returns whether every line was valid.
pub fn run(files: &[PathBuf], json: bool) -> Result<bool> {
    let (mut accepted, mut errors) = (0usize, Vec::new());
    for path in files {
        let file =
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (index, line) in BufReader::new(file).split(b'\n').enumerate() {
            let line_no = index + 1;
            let bytes = line.with_context(|| format!("reading {}", path.display()))?;
            let Ok(text) = std::str::from_utf8(&bytes) else {
                errors.push(json!({"file": path, "line": line_no, "field": "json", "error": "invalid UTF-8"}));
                continue;
            };
            if text.trim().is_empty() {
                continue;
            }
            match beamline_jobs::parse_line(text, line_no) {
                Ok(job) => match seen.insert(job.custom_id.clone(), line_no) {
                    Some(first) => errors.push(json!({"file": path, "line": line_no, "custom_id": job.custom_id, "field": "custom_id",
                        "error": format!("duplicates line {first}")})),
                    None => accepted += 1,
                },
                Err(e) => errors.push(json!({"file": path, "line": e.line, "custom_id": e.custom_id, "field": e.field, "error": e.reason})),
            }
        }
    }
    if json {
        println!(
            "{}",
            json!({"accepted": accepted, "rejected": errors.len(), "errors": errors})
        );
    } else {
        for e in &errors {
            eprintln!(
                "{}:{}: {}: {}",
                e["file"].as_str().unwrap_or(""),
                e["line"],
                e["field"].as_str().unwrap_or(""),
                e["error"].as_str().unwrap_or("")
            );
        }
        println!("{accepted} accepted, {} rejected", errors.len());
    }
    Ok(errors.is_empty())
}
