//! Turning prompts into tokens: the decoding strategies (greedy, sampling, beam search), the
//! logits processors they share, and the continuous batcher that runs many requests through one
//! KV cache, giving a finished request's slots to the next waiting prompt.
//!
//! # Layout
//! - `params`: what a request asks for, and its validation.
//! - `logits`: repetition penalty, banned token sequences, temperature, top-k, top-p.
//! - `sequence`: greedy and sampled sequences (one or more per prompt).
//! - `beam`: beam search with transformers' scoring.
//! - `scores`: what a step reads of each slot's logits (whole rows, or the best few reduced
//!   on the GPU).
//! - `admission`: which waiting requests join the batch, and which are prefilled together.
//! - `batcher`: slots, prefill, batched decode steps.

mod admission;
mod batcher;
mod beam;
mod logits;
mod params;
mod scores;
mod sequence;

pub use batcher::{run_batch, run_stream, BatchStats, RequestSource};
pub use params::{Decoding, EarlyStopping, GenerationParams};

use serde::Serialize;

/// Why a sequence ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// An end-of-sequence token or a stop string.
    Stop,
    /// `max_new_tokens` was reached.
    Length,
}

/// One finished sequence: a beam, a sample, or the greedy answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Candidate {
    pub text: String,
    pub token_ids: Vec<u32>,
    /// Beam search: the length-normalised score transformers reports as `sequences_scores`.
    /// Greedy and sampling: the summed log-probability of the generated tokens.
    pub score: f64,
    pub finish_reason: FinishReason,
}

/// What one prompt produced, best candidate first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GenerationOutput {
    pub prompt_tokens: usize,
    pub candidates: Vec<Candidate>,
}

impl GenerationOutput {
    pub fn best(&self) -> &Candidate {
        &self.candidates[0]
    }

    /// Tokens generated across all returned candidates.
    pub fn completion_tokens(&self) -> usize {
        self.candidates.iter().map(|c| c.token_ids.len()).sum()
    }
}

/// A prompt ready for the batcher.
#[derive(Debug, Clone)]
pub struct GenerationRequest {
    pub prompt_ids: Vec<u32>,
    pub params: GenerationParams,
}
