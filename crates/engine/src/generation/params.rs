//! Generation parameters with transformers' names and defaults, checked before a request runs so
//! a bad value fails that request alone.

use crate::error::RequestError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Decoding {
    #[default]
    Greedy,
    Sample,
    Beam,
}

impl std::str::FromStr for Decoding {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "greedy" => Ok(Self::Greedy),
            "sample" | "sampling" => Ok(Self::Sample),
            "beam" | "beam_search" => Ok(Self::Beam),
            other => Err(format!(
                "unknown decoding '{other}' (expected greedy, sample or beam)"
            )),
        }
    }
}

/// transformers' `early_stopping`: `true` stops a beam search as soon as `num_beams` hypotheses
/// are finished; `false` stops when no running beam can beat the worst finished one (estimated
/// at the current length); `never` only when none can, at the maximum length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EarlyStopping {
    True,
    #[default]
    False,
    Never,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GenerationParams {
    pub max_new_tokens: usize,
    pub decoding: Decoding,
    pub num_beams: usize,
    pub num_return_sequences: usize,
    pub length_penalty: f64,
    pub early_stopping: EarlyStopping,
    pub temperature: f64,
    pub top_k: usize,
    pub top_p: f64,
    pub repetition_penalty: f64,
    pub seed: u64,
    pub stop: Vec<String>,
    /// Token sequences that must not be generated (transformers' `bad_words_ids`).
    pub banned_sequences: Vec<Vec<u32>>,
    /// Generate exactly `max_new_tokens` (benchmarks).
    pub ignore_eos: bool,
}

impl Default for GenerationParams {
    fn default() -> Self {
        Self {
            max_new_tokens: 256,
            decoding: Decoding::Greedy,
            num_beams: 1,
            num_return_sequences: 1,
            length_penalty: 1.0,
            early_stopping: EarlyStopping::False,
            temperature: 1.0,
            top_k: 50,
            top_p: 1.0,
            repetition_penalty: 1.0,
            seed: 0,
            stop: Vec::new(),
            banned_sequences: Vec::new(),
            ignore_eos: false,
        }
    }
}

impl GenerationParams {
    pub fn validate(&self) -> Result<(), RequestError> {
        let bad =
            |field: &'static str, reason: String| Err(RequestError::InvalidParam { field, reason });
        if self.max_new_tokens == 0 {
            return bad("max_new_tokens", "must be at least 1".into());
        }
        if self.num_return_sequences == 0 {
            return bad("num_return_sequences", "must be at least 1".into());
        }
        match self.decoding {
            Decoding::Greedy if self.num_return_sequences > 1 => {
                return bad(
                    "num_return_sequences",
                    "greedy decoding returns one sequence; use sample or beam".into(),
                )
            }
            Decoding::Beam if self.num_beams < 2 => {
                return bad("num_beams", "beam search needs at least 2 beams".into())
            }
            Decoding::Beam if self.num_return_sequences > self.num_beams => {
                return bad(
                    "num_return_sequences",
                    format!(
                        "{} is more than num_beams ({})",
                        self.num_return_sequences, self.num_beams
                    ),
                )
            }
            _ => {}
        }
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return bad(
                "temperature",
                format!("{} is not a positive number", self.temperature),
            );
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad("top_p", format!("{} is not in (0, 1]", self.top_p));
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            return bad(
                "repetition_penalty",
                format!("{} is not a positive number", self.repetition_penalty),
            );
        }
        if !self.length_penalty.is_finite() {
            return bad("length_penalty", "must be finite".into());
        }
        if self.stop.iter().any(String::is_empty) {
            return bad("stop", "stop strings must not be empty".into());
        }
        Ok(())
    }

    /// How many of a slot's best tokens a decoding step needs, when it needs no more: 1 for
    /// greedy, `2 * num_beams` for beam search, `top_k` and a margin for ties at the cut for
    /// top-k sampling. `None` when it must see the whole row of logits: sampling without
    /// top-k, a repetition penalty or banned sequences.
    pub fn best_needed(&self) -> Option<usize> {
        /// Tokens past the top-k cut fetched in case of ties at it.
        const TIE_MARGIN: usize = 16;
        if self.repetition_penalty != 1.0 || !self.banned_sequences.is_empty() {
            return None;
        }
        match self.decoding {
            Decoding::Greedy => Some(1),
            Decoding::Beam => Some(2 * self.num_beams),
            Decoding::Sample if self.top_k > 0 => Some(self.top_k + TIE_MARGIN),
            Decoding::Sample => None,
        }
    }

    /// KV-cache slots the request occupies while it runs.
    pub fn slots(&self) -> usize {
        match self.decoding {
            Decoding::Beam => self.num_beams,
            Decoding::Sample => self.num_return_sequences,
            Decoding::Greedy => 1,
        }
    }
}
