//! A job's answer from its candidates: the best one, or with a rule set the highest-scoring one
//! that passes (its text after redaction and normalisation); `filtered` when none passes. Used
//! by `worker generate` and `worker run` alike, so both store the same verdicts.

use beamline_engine::GenerationOutput;
use beamline_jobs::JobStatus;
use beamline_rules::{choose_candidate, RuleSet};
use serde_json::{json, Value};

pub struct Evaluated {
    pub status: JobStatus,
    pub text: Option<String>,
    pub reasoning: Option<String>,
    /// Index of the chosen candidate (the best one when filtered).
    pub chosen: usize,
    /// Every candidate with its score, finish reason and verdict.
    pub candidates: Value,
    /// The rule set, its version and the chosen candidate's hits; `None` without rules.
    pub rule_report: Option<Value>,
    /// `(rule, action)` of every hit over all candidates, for metrics.
    pub hits: Vec<(String, String)>,
}

pub fn evaluate(output: &GenerationOutput, rules: Option<&RuleSet>) -> Evaluated {
    let choice = rules.map(|r| {
        let candidates: Vec<(String, f64)> = output
            .candidates
            .iter()
            .map(|c| (c.text.clone(), c.score))
            .collect();
        let tokens: Vec<usize> = output
            .candidates
            .iter()
            .map(|c| c.token_ids.len())
            .collect();
        choose_candidate(r, &candidates, Some(&tokens))
    });
    let best = output.candidates.first().map(|c| c.text.clone());
    let (status, text, reasoning, winner) = match &choice {
        None => (JobStatus::Succeeded, best, None, Some(0)),
        Some(c) => match c.winning_verdict() {
            Some(v) => (
                JobStatus::Succeeded,
                Some(v.text.clone()),
                v.reasoning.clone(),
                c.winner,
            ),
            None => (JobStatus::Filtered, None, None, None),
        },
    };
    let candidates = output
        .candidates
        .iter()
        .enumerate()
        .map(|(i, c)| {
            json!({
                "text": c.text, "token_ids": c.token_ids, "score": c.score,
                "finish_reason": c.finish_reason,
                "verdict": choice.as_ref().map(|ch| &ch.verdicts[i]),
            })
        })
        .collect::<Vec<_>>();
    let hits = choice
        .as_ref()
        .map(|c| {
            c.verdicts
                .iter()
                .flat_map(|v| v.hits.iter())
                .map(|h| (h.rule.clone(), format!("{:?}", h.action).to_lowercase()))
                .collect()
        })
        .unwrap_or_default();
    let rule_report = choice.as_ref().map(|c| {
        let shown = &c.verdicts[winner.unwrap_or(0)];
        json!({
            "rule_set": shown.rule_set, "rule_set_version": shown.rule_set_version,
            "passed": winner.is_some(), "winner": winner, "hits": shown.hits,
        })
    });
    Evaluated {
        status,
        text,
        reasoning,
        chosen: winner.unwrap_or(0),
        candidates: Value::Array(candidates),
        rule_report,
        hits,
    }
}
