//! The offline checker behind `worker rules check --input FILE.jsonl --json`.
//!
//! Lets a user try a rule set on saved outputs before a run: each input
//! line `{"custom_id": ..., "text": ...}` gives one output line with the
//! verdict. A bad line (not JSON, no `text`) gives an error line and the
//! rest go on, so one broken record does not hide the results of the others.

use std::io::{BufRead, Write};

use serde::Serialize;
use serde_json::Value;

use crate::error::RulesError;
use crate::ruleset::RuleSet;
use crate::verdict::Hit;

/// Counts over one [`check_jsonl`] run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CheckSummary {
    /// Records checked (lines that were not blank and not errors).
    pub checked: usize,
    /// Records that passed.
    pub passed: usize,
    /// Records that failed.
    pub failed: usize,
    /// Lines that could not be read as a record.
    pub errors: usize,
    /// Hits over all records.
    pub hits: usize,
}

#[derive(Serialize)]
struct Checked<'a> {
    custom_id: &'a Value,
    passed: bool,
    text: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning: Option<&'a str>,
    hits: &'a [Hit],
}

#[derive(Serialize)]
struct BadLine<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    custom_id: Option<&'a Value>,
    line: usize,
    error: String,
}

/// Checks every record of `input` with `rules`, writing one JSON line per
/// record to `out`. Blank lines are skipped. Fails only when reading the
/// input or writing the output fails.
pub fn check_jsonl(
    rules: &RuleSet,
    mut input: impl BufRead,
    mut out: impl Write,
) -> Result<CheckSummary, RulesError> {
    let mut summary = CheckSummary::default();
    let mut buf = Vec::new();
    let mut line_no = 0;
    loop {
        buf.clear();
        if input.read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        line_no += 1;
        let line = match std::str::from_utf8(&buf) {
            Ok(line) => line,
            Err(e) => {
                summary.errors += 1;
                write_bad(&mut out, None, line_no, format!("line is not UTF-8: {e}"))?;
                continue;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        let record: Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => {
                summary.errors += 1;
                write_bad(&mut out, None, line_no, format!("not valid JSON: {e}"))?;
                continue;
            }
        };
        let custom_id = record.get("custom_id");
        let text = match record.get("text") {
            Some(Value::String(text)) => text,
            Some(_) => {
                summary.errors += 1;
                write_bad(
                    &mut out,
                    custom_id,
                    line_no,
                    "`text` is not a string".into(),
                )?;
                continue;
            }
            None => {
                summary.errors += 1;
                let error = if record.is_object() {
                    "missing `text`"
                } else {
                    "line is not a JSON object"
                };
                write_bad(&mut out, custom_id, line_no, error.into())?;
                continue;
            }
        };
        let verdict = rules.check(text, None);
        summary.checked += 1;
        summary.hits += verdict.hits.len();
        if verdict.passed {
            summary.passed += 1;
        } else {
            summary.failed += 1;
        }
        let checked = Checked {
            custom_id: custom_id.unwrap_or(&Value::Null),
            passed: verdict.passed,
            text: &verdict.text,
            reasoning: verdict.reasoning.as_deref(),
            hits: &verdict.hits,
        };
        write_line(&mut out, &checked)?;
    }
    out.flush()?;
    Ok(summary)
}

fn write_bad(
    out: &mut impl Write,
    custom_id: Option<&Value>,
    line: usize,
    error: String,
) -> Result<(), RulesError> {
    write_line(
        out,
        &BadLine {
            custom_id,
            line,
            error,
        },
    )
}

fn write_line(out: &mut impl Write, value: &impl Serialize) -> Result<(), RulesError> {
    serde_json::to_writer(&mut *out, value).map_err(std::io::Error::from)?;
    out.write_all(b"\n")?;
    Ok(())
}
