//! Job parameters (the `params` of a job line, or the command-line flags) → the engine's
//! generation parameters, with transformers' defaults for what is left out.

use anyhow::{anyhow, Result};
use beamline_engine::{Decoding, EarlyStopping, GenerationParams};
use beamline_jobs::JobParams;

use crate::cli::DecodingArgs;

/// Beams a beam-search job gets when it names none.
pub const DEFAULT_BEAMS: usize = 4;

pub fn from_job(p: &JobParams, defaults: &GenerationParams) -> GenerationParams {
    let decoding = match p.decoding {
        Some(beamline_jobs::Decoding::Greedy) => Decoding::Greedy,
        Some(beamline_jobs::Decoding::Sample) => Decoding::Sample,
        Some(beamline_jobs::Decoding::Beam) => Decoding::Beam,
        None => defaults.decoding,
    };
    let early_stopping = match p.early_stopping {
        Some(beamline_jobs::EarlyStopping::Bool(true)) => EarlyStopping::True,
        Some(beamline_jobs::EarlyStopping::Bool(false)) => EarlyStopping::False,
        Some(beamline_jobs::EarlyStopping::Never(_)) => EarlyStopping::Never,
        None => defaults.early_stopping,
    };
    GenerationParams {
        max_new_tokens: p.max_new_tokens.unwrap_or(defaults.max_new_tokens),
        decoding,
        num_beams: p.num_beams.unwrap_or(if decoding == Decoding::Beam {
            DEFAULT_BEAMS.max(defaults.num_beams)
        } else {
            1
        }),
        num_return_sequences: p
            .num_return_sequences
            .unwrap_or(if decoding == Decoding::Greedy {
                1
            } else {
                defaults.num_return_sequences
            }),
        length_penalty: p.length_penalty.unwrap_or(defaults.length_penalty),
        early_stopping,
        temperature: p.temperature.unwrap_or(defaults.temperature),
        top_k: p.top_k.unwrap_or(defaults.top_k),
        top_p: p.top_p.unwrap_or(defaults.top_p),
        repetition_penalty: p.repetition_penalty.unwrap_or(defaults.repetition_penalty),
        seed: p.seed.unwrap_or(defaults.seed),
        stop: p
            .stop
            .clone()
            .map(|s| s.into_vec())
            .unwrap_or_else(|| defaults.stop.clone()),
        banned_sequences: defaults.banned_sequences.clone(),
        ignore_eos: false,
    }
}

pub fn from_flags(a: &DecodingArgs) -> Result<GenerationParams> {
    let decoding: Decoding = a
        .decoding
        .parse()
        .map_err(|e: String| anyhow!("--decoding: {e}"))?;
    let early_stopping = match a.early_stopping.as_str() {
        "true" => EarlyStopping::True,
        "false" => EarlyStopping::False,
        "never" => EarlyStopping::Never,
        other => {
            return Err(anyhow!(
                "--early-stopping: '{other}' is not true, false or never"
            ))
        }
    };
    Ok(GenerationParams {
        max_new_tokens: a.max_new_tokens,
        decoding,
        num_beams: if decoding == Decoding::Beam {
            a.num_beams
        } else {
            1
        },
        num_return_sequences: a.num_return_sequences,
        length_penalty: a.length_penalty,
        early_stopping,
        temperature: a.temperature,
        top_k: a.top_k,
        top_p: a.top_p,
        repetition_penalty: a.repetition_penalty,
        seed: a.seed,
        stop: a.stop.clone(),
        banned_sequences: Vec::new(),
        ignore_eos: false,
    })
}

/// Defaults for queued jobs: ARCHITECTURE.md's (`max_new_tokens` 256, greedy) and transformers'.
pub fn job_defaults() -> GenerationParams {
    GenerationParams::default()
}
