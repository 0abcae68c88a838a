//! `producer status`, `results`, `cancel` and `list`: reading a batch back.

use std::io::Write;

use anyhow::{Context as _, Result};
use beamline_store::{parse_uuid, BatchRow, Database, ExportRow, ObjectStore, Progress};
use serde_json::{json, Value};

use crate::cli::ResultFormat;

pub async fn find(db: &Database, batch: &str) -> Result<BatchRow> {
    db.find_batch(batch)
        .await?
        .with_context(|| format!("no batch with id or name {batch:?}"))
}

pub fn progress_json(batch: &BatchRow, p: &Progress, rejected: usize) -> Value {
    json!({
        "batch_id": batch.id, "name": batch.name, "status": batch.status, "model": batch.model,
        "total": p.total, "queued": p.queued, "running": p.running, "succeeded": p.succeeded,
        "failed": p.failed, "filtered": p.filtered, "cancelled": p.cancelled, "rejected": rejected,
        "created_at": batch.created_at, "finished_at": batch.finished_at,
    })
}

pub async fn status(db: &Database, batch: &str, as_json: bool) -> Result<()> {
    let b = find(db, batch).await?;
    let id = parse_uuid(&b.id)?;
    let p = db.progress(id).await?.unwrap_or_default();
    let rejected = db.rejected(id).await?.len();
    if as_json {
        println!("{}", progress_json(&b, &p, rejected));
    } else {
        println!("batch     {} ({})", b.id, b.name);
        println!("status    {}   model {}", b.status, b.model);
        println!(
            "jobs      {} total: {} queued, {} running, {} succeeded, {} failed, {} filtered, {} cancelled",
            p.total, p.queued, p.running, p.succeeded, p.failed, p.filtered, p.cancelled
        );
        println!("rejected  {rejected} lines at submit");
    }
    Ok(())
}

pub async fn results(
    db: &Database,
    batch: &str,
    format: ResultFormat,
    out: Option<&std::path::Path>,
) -> Result<usize> {
    let b = find(db, batch).await?;
    let id = parse_uuid(&b.id)?;
    let mut sink: Box<dyn Write> = match out {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let (mut after, mut written) = (0i64, 0usize);
    loop {
        let page = db.export(id, after, 2000).await?;
        let Some((last, _)) = page.last() else { break };
        after = *last;
        for (_, row) in &page {
            let line = match format {
                ResultFormat::Native => Some(native(row)),
                ResultFormat::Openai => openai(row, &b),
            };
            if let Some(line) = line {
                writeln!(sink, "{line}")?;
                written += 1;
            }
        }
    }
    sink.flush()?;
    Ok(written)
}

fn parse(text: &Option<String>) -> Value {
    text.as_deref()
        .and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or(Value::Null)
}

fn native(r: &ExportRow) -> Value {
    json!({
        "custom_id": r.custom_id, "job_id": r.job_id, "status": r.status, "text": r.output_text,
        "reasoning": r.reasoning, "error": r.error, "finish_reason": r.finish_reason,
        "prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens,
        "candidates": parse(&r.candidates), "rule_report": parse(&r.rule_report),
        "model": r.model, "latency_ms": r.latency_ms, "object_uri": r.object_uri,
    })
}

/// OpenAI's batch output line; jobs not yet final are left out, as OpenAI's file would.
fn openai(r: &ExportRow, b: &BatchRow) -> Option<Value> {
    let error = |code: &str, message: &str| {
        json!({"id": format!("batch_req_{}", r.job_id), "custom_id": r.custom_id, "response": null,
               "error": {"code": code, "message": message}})
    };
    match r.status.as_str() {
        "succeeded" => {
            let prompt = r.prompt_tokens.unwrap_or(0);
            let completion = r.completion_tokens.unwrap_or(0);
            Some(json!({
                "id": format!("batch_req_{}", r.job_id),
                "custom_id": r.custom_id,
                "response": {"status_code": 200, "request_id": r.job_id, "body": {
                    "id": format!("chatcmpl-{}", r.job_id), "object": "chat.completion",
                    "model": r.model.clone().unwrap_or_else(|| b.model.clone()),
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": r.output_text},
                                 "finish_reason": r.finish_reason}],
                    "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                              "total_tokens": prompt + completion},
                }},
                "error": null,
            }))
        }
        "filtered" => Some(error(
            "content_filter",
            "every candidate was rejected by the rule set",
        )),
        "failed" => Some(error("failed", r.error.as_deref().unwrap_or("failed"))),
        "cancelled" => Some(error("cancelled", "the batch was cancelled")),
        _ => None,
    }
}

pub async fn cancel(db: &Database, objects: &ObjectStore, batch: &str) -> Result<u64> {
    let b = find(db, batch).await?;
    let id = parse_uuid(&b.id)?;
    let n = db.cancel(id).await?;
    beamline_store::finish_batch(db, objects, id).await?;
    Ok(n)
}

pub async fn list(db: &Database, as_json: bool) -> Result<()> {
    let rows = db.list().await?;
    if as_json {
        for (b, p) in &rows {
            println!("{}", progress_json(b, p, 0));
        }
        return Ok(());
    }
    println!(
        "{:<36}  {:<24}  {:<9}  {:>7}  {:>7}  {:>7}  {:>7}  {:>7}",
        "batch", "name", "status", "total", "done", "ok", "failed", "filtered"
    );
    for (b, p) in &rows {
        println!(
            "{:<36}  {:<24}  {:<9}  {:>7}  {:>7}  {:>7}  {:>7}  {:>7}",
            b.id,
            truncate(&b.name, 24),
            b.status,
            p.total,
            p.done(),
            p.succeeded,
            p.failed,
            p.filtered
        );
    }
    Ok(())
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        s.chars().take(n - 1).collect::<String>() + "…"
    }
}
