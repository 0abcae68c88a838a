//! Greedy and sampled decoding: each returned sequence is independent and owns one cache slot.
//! A sampled sequence draws from its own RNG, seeded from the request's seed and the sequence's
//! index, so a job's output does not depend on what else is in the batch.

use rand::rngs::StdRng;
use rand::SeedableRng;

use super::logits;
use super::params::{Decoding, GenerationParams};
use super::scores::SlotScores;
use super::{Candidate, FinishReason};
use crate::tokenizer::Tokenizer;

struct Sequence {
    tokens: Vec<u32>,
    logprob: f64,
    finished: Option<FinishReason>,
    rng: StdRng,
}

pub struct Sequences {
    prompt: Vec<u32>,
    params: GenerationParams,
    seqs: Vec<Sequence>,
}

impl Sequences {
    pub fn new(prompt: Vec<u32>, params: GenerationParams) -> Self {
        let seqs = (0..params.slots())
            .map(|i| Sequence {
                tokens: Vec::new(),
                logprob: 0.0,
                finished: None,
                rng: StdRng::seed_from_u64(
                    params
                        .seed
                        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                        .wrapping_add(i as u64),
                ),
            })
            .collect();
        Sequences {
            prompt,
            params,
            seqs,
        }
    }

    pub fn done(&self) -> bool {
        self.seqs.iter().all(|s| s.finished.is_some())
    }

    /// Picks the next token of every unfinished sequence from its row of logits. Returns the
    /// token to feed per slot and whether the slot is still live.
    pub fn step(
        &mut self,
        rows: &mut [SlotScores<'_>],
        tokenizer: &Tokenizer,
    ) -> (Vec<u32>, Vec<bool>) {
        let p = &self.params;
        let mut feed = Vec::with_capacity(self.seqs.len());
        let mut live = Vec::with_capacity(self.seqs.len());
        for (seq, scores) in self.seqs.iter_mut().zip(rows.iter_mut()) {
            if seq.finished.is_some() {
                feed.push(0);
                live.push(false);
                continue;
            }
            let (token, logprob) = match scores {
                SlotScores::Logits(row) => {
                    let history: Vec<u32> =
                        self.prompt.iter().chain(&seq.tokens).copied().collect();
                    logits::repetition_penalty(row, &history, p.repetition_penalty);
                    logits::ban_sequences(row, &history, &p.banned_sequences);
                    choose(row, p, &mut seq.rng)
                }
                // Reduced on the device: no processor needs the row (`best_needed`).
                SlotScores::Best(b) => match p.decoding {
                    Decoding::Sample => {
                        match logits::sample_from_best(
                            b.best,
                            p.temperature,
                            p.top_k,
                            p.top_p,
                            &mut seq.rng,
                        ) {
                            Some(token) => {
                                let logit = b.best.iter().find(|x| x.0 == token).map(|x| x.1);
                                (token, logit.unwrap_or(f32::NEG_INFINITY) - b.log_norm)
                            }
                            None => choose(&b.whole_row(), p, &mut seq.rng),
                        }
                    }
                    _ => (b.best[0].0, b.best[0].1 - b.log_norm),
                },
            };
            seq.logprob += logprob as f64;
            seq.tokens.push(token);
            let at_eos = !p.ignore_eos && tokenizer.is_eos(token);
            let at_stop = || {
                !p.stop.is_empty() && stop_index(&decode(tokenizer, &seq.tokens), &p.stop).is_some()
            };
            if at_eos || at_stop() {
                seq.finished = Some(FinishReason::Stop);
            } else if seq.tokens.len() >= p.max_new_tokens {
                seq.finished = Some(FinishReason::Length);
            }
            feed.push(token);
            live.push(seq.finished.is_none());
        }
        (feed, live)
    }

    pub fn finish(self, tokenizer: &Tokenizer) -> Vec<Candidate> {
        let stop = self.params.stop;
        self.seqs
            .into_iter()
            .map(|s| Candidate {
                text: final_text(tokenizer, &s.tokens, &stop),
                token_ids: s.tokens,
                score: s.logprob,
                finish_reason: s.finished.unwrap_or(FinishReason::Length),
            })
            .collect()
    }
}

/// The next token from a whole row of (processed) logits, and its log-probability.
fn choose(row: &[f32], p: &GenerationParams, rng: &mut StdRng) -> (u32, f32) {
    let token = match p.decoding {
        Decoding::Sample => logits::sample(row, p.temperature, p.top_k, p.top_p, rng),
        _ => logits::argmax(row),
    };
    (token as u32, logits::log_prob(row, token))
}

fn decode(tokenizer: &Tokenizer, tokens: &[u32]) -> String {
    tokenizer.decode(tokens, true).unwrap_or_default()
}

/// Byte index of the earliest stop string in `text`.
pub fn stop_index(text: &str, stop: &[String]) -> Option<usize> {
    stop.iter().filter_map(|s| text.find(s.as_str())).min()
}

/// The generated text without special tokens, cut before the first stop string.
pub fn final_text(tokenizer: &Tokenizer, tokens: &[u32], stop: &[String]) -> String {
    let mut text = decode(tokenizer, tokens);
    if let Some(i) = stop_index(&text, stop) {
        text.truncate(i);
    }
    text
}
