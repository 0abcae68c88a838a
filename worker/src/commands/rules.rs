//! `worker rules check`: a rule set applied offline to stored texts, so users can try a rule set
//! before a batch runs with it.

use std::io::BufReader;

use anyhow::{Context, Result};
use beamline_rules::RuleCatalog;

use crate::cli::RulesCheckArgs;

pub fn check(args: RulesCheckArgs) -> Result<()> {
    let catalog = RuleCatalog::new(&args.rules_dir);
    let rules = catalog.get(&args.rules)?;
    if let Some(batch) = &args.batch {
        let settings = beamline_config::load(args.config.as_deref(), std::env::vars())?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        return runtime.block_on(recheck_batch(&settings, batch, &rules));
    }
    let input = args.input.as_ref().context("give --input or --batch")?;
    let file =
        std::fs::File::open(input).with_context(|| format!("opening {}", input.display()))?;
    let stdout = std::io::stdout();
    let summary = beamline_rules::check_jsonl(&rules, BufReader::new(file), stdout.lock())?;
    tracing::info!(
        rules = rules.name(),
        version = rules.version(),
        checked = summary.checked,
        passed = summary.passed,
        failed = summary.failed,
        errors = summary.errors,
        "Rules checked."
    );
    Ok(())
}

/// Re-applies `rules` to the stored candidates of a batch's results and updates each verdict
/// (status, output text, reasoning, candidates' verdicts, report) without regenerating.
async fn recheck_batch(
    settings: &beamline_config::Settings,
    batch: &str,
    rules: &beamline_rules::RuleSet,
) -> Result<()> {
    use beamline_engine::{Candidate, FinishReason, GenerationOutput};
    use std::io::Write;
    let db = beamline_store::Database::connect(&settings.database_url).await?;
    let b = db
        .find_batch(batch)
        .await?
        .with_context(|| format!("no batch with id or name {batch:?}"))?;
    let batch_id = beamline_store::parse_uuid(&b.id)?;
    let (mut after, mut updated) = (0i64, 0usize);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    loop {
        let page = db.export(batch_id, after, 1000).await?;
        let Some((last, _)) = page.last() else { break };
        after = *last;
        for (_, row) in page {
            let Some(stored) = row
                .candidates
                .as_deref()
                .and_then(|c| serde_json::from_str::<Vec<serde_json::Value>>(c).ok())
            else {
                continue;
            };
            let candidates: Vec<Candidate> = stored
                .iter()
                .map(|c| Candidate {
                    text: c["text"].as_str().unwrap_or_default().to_string(),
                    token_ids: serde_json::from_value(c["token_ids"].clone()).unwrap_or_default(),
                    score: c["score"].as_f64().unwrap_or(f64::NEG_INFINITY),
                    finish_reason: if c["finish_reason"] == "length" {
                        FinishReason::Length
                    } else {
                        FinishReason::Stop
                    },
                })
                .collect();
            if candidates.is_empty() {
                continue;
            }
            let output = GenerationOutput {
                prompt_tokens: row.prompt_tokens.unwrap_or(0) as usize,
                candidates,
            };
            let e = crate::evaluate::evaluate(&output, Some(rules));
            let report = e.rule_report.clone().unwrap_or(serde_json::Value::Null);
            let job_id = beamline_store::parse_uuid(&row.job_id)?;
            db.update_verdict(
                job_id,
                e.status,
                e.text.as_deref(),
                e.reasoning.as_deref(),
                &e.candidates,
                &report,
            )
            .await?;
            updated += 1;
            writeln!(
                out,
                "{}",
                serde_json::json!({"custom_id": row.custom_id, "passed": e.status == beamline_jobs::JobStatus::Succeeded,
                                   "text": e.text, "reasoning": e.reasoning, "hits": report["hits"]})
            )?;
        }
    }
    tracing::info!(batch_id = %batch_id, updated, rules = rules.name(), "Verdicts updated.");
    Ok(())
}
