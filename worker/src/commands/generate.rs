//! `worker generate`: one prompt (`--prompt`) or a file of native job lines (`--input`), printed
//! as one JSON object per prompt in input order. A bad line gets an object with its `custom_id`
//! and `error`; the other lines still run, all in one continuously refilled batch.

use std::io::{BufRead, BufReader, Write};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use beamline_engine::{Engine, GenerationOutput, GenerationRequest, Message, Prompt};
use beamline_jobs::{parse_line, JobInput};
use beamline_rules::{RuleCatalog, RuleSet};
use serde_json::{json, Value};

use crate::cli::GenerateArgs;
use crate::params;

/// One prompt's place in the output: a request to run, or an error already known.
enum Slot {
    Run {
        custom_id: Option<String>,
        request: usize,
        rules: Option<Arc<RuleSet>>,
    },
    Failed {
        custom_id: Option<String>,
        line: Option<usize>,
        error: String,
    },
}

pub fn run(args: GenerateArgs) -> Result<()> {
    let defaults = params::from_flags(&args.decoding)?;
    let engine = args.model.load()?;
    let catalog = RuleCatalog::new(&args.rules_dir);
    // The command's rule set must load; a job's own choice fails that job alone.
    if let Some(name) = &args.rules {
        catalog.get(name)?;
    }
    let mut slots = Vec::new();
    let mut requests: Vec<GenerationRequest> = Vec::new();
    let mut add = |custom_id: Option<String>,
                   line: Option<usize>,
                   built: Result<(GenerationRequest, Option<Arc<RuleSet>>), String>,
                   requests: &mut Vec<GenerationRequest>| match built {
        Ok((r, rules)) => {
            requests.push(r);
            slots.push(Slot::Run {
                custom_id,
                request: requests.len() - 1,
                rules,
            });
        }
        Err(error) => slots.push(Slot::Failed {
            custom_id,
            line,
            error,
        }),
    };
    match (&args.prompt, &args.input) {
        (Some(text), None) => {
            let prompt = if args.chat {
                Prompt::Chat(vec![Message {
                    role: "user".into(),
                    content: text.clone(),
                }])
            } else {
                Prompt::Text(text.clone())
            };
            let built = build(
                &engine,
                &catalog,
                args.rules.as_deref(),
                &prompt,
                defaults.clone(),
            )
            .map_err(anyhow::Error::msg)?;
            add(None, None, Ok(built), &mut requests);
        }
        (None, Some(path)) => {
            let file =
                std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
            let mut seen = std::collections::HashMap::new();
            for (index, line) in BufReader::new(file).lines().enumerate() {
                let line_no = index + 1;
                let text = match line {
                    Ok(t) => t,
                    Err(e) => {
                        add(
                            None,
                            Some(line_no),
                            Err(format!("line {line_no}: unreadable: {e}")),
                            &mut requests,
                        );
                        continue;
                    }
                };
                if text.trim().is_empty() {
                    continue;
                }
                let job = match parse_line(&text, line_no) {
                    Ok(job) => job,
                    Err(e) => {
                        add(
                            e.custom_id.clone(),
                            Some(line_no),
                            Err(e.to_string()),
                            &mut requests,
                        );
                        continue;
                    }
                };
                if let Some(first) = seen.insert(job.custom_id.clone(), line_no) {
                    let error = format!(
                        "line {line_no}: custom_id {:?} duplicates line {first}",
                        job.custom_id
                    );
                    add(
                        Some(job.custom_id),
                        Some(line_no),
                        Err(error),
                        &mut requests,
                    );
                    continue;
                }
                let prompt = match job.input {
                    JobInput::Prompt(p) => Prompt::Text(p),
                    JobInput::Messages(m) => Prompt::Chat(
                        m.into_iter()
                            .map(|m| Message {
                                role: m.role,
                                content: m.content,
                            })
                            .collect(),
                    ),
                    JobInput::Image { .. } => {
                        add(
                            Some(job.custom_id),
                            Some(line_no),
                            Err(format!("line {line_no}: image jobs need an image model")),
                            &mut requests,
                        );
                        continue;
                    }
                };
                let rules = job.params.rules.as_deref().or(args.rules.as_deref());
                let built = build(
                    &engine,
                    &catalog,
                    rules,
                    &prompt,
                    params::from_job(&job.params, &defaults),
                )
                .map_err(|e| format!("line {line_no} (custom_id {:?}): {e}", job.custom_id));
                add(Some(job.custom_id), Some(line_no), built, &mut requests);
            }
        }
        _ => bail!("give --prompt or --input"),
    }

    let started = std::time::Instant::now();
    let (outputs, stats) = engine.generate(requests)?;
    tracing::info!(
        prompts = outputs.len(),
        prompt_tokens = stats.prompt_tokens,
        generated_tokens = stats.generated_tokens,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "Generation finished."
    );
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for slot in slots {
        let value = match slot {
            Slot::Run {
                custom_id,
                request,
                rules,
            } => output_json(custom_id, &outputs[request], rules.as_deref()),
            Slot::Failed {
                custom_id,
                line,
                error,
            } => json!({ "custom_id": custom_id, "line": line, "error": error }),
        };
        if args.json || args.input.is_some() {
            writeln!(out, "{value}")?;
        } else {
            writeln!(out, "{}", value["text"].as_str().unwrap_or_default())?;
        }
    }
    Ok(())
}

/// Tokenizes the prompt, loads the job's rule set and bans its phrases during decoding.
fn build(
    engine: &Engine,
    catalog: &RuleCatalog,
    rules: Option<&str>,
    prompt: &Prompt,
    mut params: beamline_engine::GenerationParams,
) -> Result<(GenerationRequest, Option<Arc<RuleSet>>), String> {
    let rules = match rules {
        Some(name) => Some(
            catalog
                .get(name)
                .map_err(|e| format!("params.rules: {e}"))?,
        ),
        None => None,
    };
    if let Some(r) = &rules {
        params.banned_sequences = engine
            .banned_sequences(&r.banned_phrases())
            .map_err(|e| e.to_string())?;
    }
    let ids = engine.prompt_ids(prompt).map_err(|e| e.to_string())?;
    Ok((
        engine.request(ids, params).map_err(|e| e.to_string())?,
        rules,
    ))
}

/// The job's answer as one JSON object (see `evaluate`).
fn output_json(
    custom_id: Option<String>,
    output: &GenerationOutput,
    rules: Option<&RuleSet>,
) -> Value {
    let e = crate::evaluate::evaluate(output, rules);
    let chosen = &output.candidates[e.chosen.min(output.candidates.len().saturating_sub(1))];
    let mut value = json!({
        "status": e.status,
        "text": e.text,
        "reasoning": e.reasoning,
        "token_ids": chosen.token_ids,
        "finish_reason": chosen.finish_reason,
        "prompt_tokens": output.prompt_tokens,
        "completion_tokens": output.completion_tokens(),
        "candidates": e.candidates,
    });
    if let Some(id) = custom_id {
        value["custom_id"] = json!(id);
    }
    value
}
