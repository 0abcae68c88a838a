//! Beam search with the semantics of transformers' `_beam_search` (5.x): each step takes the
//! log-softmax of every beam's raw logits, applies the processors to those log-probabilities,
//! and keeps the best `2 * num_beams` continuations of all beams by summed log-probability
//! (float32 sums, as torch). An end-of-sequence continuation ranked within the first
//! `num_beams` becomes a finished hypothesis scored `sum_logprobs / generated_len ^
//! length_penalty` (generated_len counts the end token, never the prompt); the others refill the
//! beams. `early_stopping` decides when no running beam can still win; at `max_new_tokens` the
//! best `num_beams` continuations of the last step are all scored as finished.

use super::logits;
use super::params::{EarlyStopping, GenerationParams};
use super::scores::SlotScores;
use super::sequence::final_text;
use super::{Candidate, FinishReason};
use crate::tokenizer::Tokenizer;

struct Beam {
    tokens: Vec<u32>,
    score: f32,
}

struct Hypothesis {
    tokens: Vec<u32>,
    score: f64,
    finish: FinishReason,
}

pub struct BeamSearch {
    prompt: Vec<u32>,
    params: GenerationParams,
    beams: Vec<Beam>,
    hypotheses: Vec<Hypothesis>,
    generated: usize,
    done: bool,
}

/// What one step decided: the token each slot feeds next, and which old slot each slot's cache
/// comes from.
pub struct BeamStep {
    pub feed: Vec<u32>,
    pub sources: Vec<usize>,
}

impl BeamSearch {
    pub fn new(prompt: Vec<u32>, params: GenerationParams) -> Self {
        let beams = (0..params.num_beams)
            .map(|_| Beam {
                tokens: Vec::new(),
                score: 0.0,
            })
            .collect();
        BeamSearch {
            prompt,
            params,
            beams,
            hypotheses: Vec::new(),
            generated: 0,
            done: false,
        }
    }

    pub fn done(&self) -> bool {
        self.done
    }

    pub fn step(&mut self, rows: &mut [SlotScores<'_>], tokenizer: &Tokenizer) -> BeamStep {
        let k = self.params.num_beams;
        // Before the first step all beams hold the same prompt: only the first one counts
        // (transformers starts the other beams at -1e9).
        let live_beams = if self.generated == 0 { 1 } else { k };
        let mut candidates: Vec<(f32, usize, u32)> = Vec::with_capacity(live_beams * 2 * k);
        for (b, scores) in rows.iter_mut().enumerate().take(live_beams) {
            let base = self.beams[b].score;
            let row = match scores {
                SlotScores::Logits(row) => row,
                // Reduced on the device when no processor needs the row (`best_needed`).
                SlotScores::Best(best) => {
                    for &(t, logit) in best.best.iter().take(2 * k) {
                        candidates.push((base + (logit - best.log_norm), b, t));
                    }
                    continue;
                }
            };
            let plain =
                self.params.repetition_penalty == 1.0 && self.params.banned_sequences.is_empty();
            if let (true, Some((max, log_sum))) = (plain, logits::log_normaliser(row)) {
                // Without processors the best log-probabilities are the best logits, shifted
                // by the same normaliser (same arithmetic as `log_softmax`, without the row).
                for (t, logit) in top_n(row, 2 * k) {
                    candidates.push((base + (logit - max - log_sum), b, t as u32));
                }
                continue;
            }
            // transformers takes log_softmax of the raw logits first, then applies the
            // processors to the log-probabilities.
            let history: Vec<u32> = self
                .prompt
                .iter()
                .chain(&self.beams[b].tokens)
                .copied()
                .collect();
            let mut logp = logits::log_softmax(row);
            logits::repetition_penalty(&mut logp, &history, self.params.repetition_penalty);
            logits::ban_sequences(&mut logp, &history, &self.params.banned_sequences);
            for (t, score) in top_n(&logp, 2 * k) {
                candidates.push((base + score, b, t as u32));
            }
        }
        candidates.sort_by(|a, b| b.0.total_cmp(&a.0));
        candidates.truncate(2 * k);

        let cur_len = self.generated + 1;
        self.generated = cur_len;
        if cur_len >= self.params.max_new_tokens {
            // At the length limit every candidate is finished; the best num_beams are scored.
            for &(score, b, t) in candidates.iter().take(k) {
                let mut tokens = self.beams[b].tokens.clone();
                tokens.push(t);
                let finish = if !self.params.ignore_eos && tokenizer.is_eos(t) {
                    FinishReason::Stop
                } else {
                    FinishReason::Length
                };
                self.add_hypothesis(tokens, score, cur_len, finish);
            }
            self.done = true;
            return BeamStep {
                feed: Vec::new(),
                sources: Vec::new(),
            };
        }
        let mut next: Vec<(usize, u32, f32)> = Vec::with_capacity(k);
        for (rank, &(score, b, t)) in candidates.iter().enumerate() {
            if !self.params.ignore_eos && tokenizer.is_eos(t) {
                // Only an end token ranked among the first num_beams finishes a hypothesis.
                if rank < k {
                    let mut tokens = self.beams[b].tokens.clone();
                    tokens.push(t);
                    self.add_hypothesis(tokens, score, cur_len, FinishReason::Stop);
                }
            } else {
                next.push((b, t, score));
            }
            if next.len() == k {
                break;
            }
        }
        let new_beams: Vec<Beam> = next
            .iter()
            .map(|&(b, t, score)| {
                let mut tokens = self.beams[b].tokens.clone();
                tokens.push(t);
                Beam { tokens, score }
            })
            .collect();
        let sources: Vec<usize> = next.iter().map(|n| n.0).collect();
        let feed: Vec<u32> = next.iter().map(|n| n.1).collect();
        self.beams = new_beams;
        let best_running = self
            .beams
            .first()
            .map(|b| b.score)
            .unwrap_or(f32::NEG_INFINITY);
        if self.is_done(best_running, cur_len) {
            self.done = true;
        }
        BeamStep { feed, sources }
    }

    fn add_hypothesis(
        &mut self,
        tokens: Vec<u32>,
        sum_logprobs: f32,
        generated_len: usize,
        finish: FinishReason,
    ) {
        let score = sum_logprobs as f64 / (generated_len as f64).powf(self.params.length_penalty);
        let k = self.params.num_beams;
        if self.hypotheses.len() < k || score > self.worst_score() {
            self.hypotheses.push(Hypothesis {
                tokens,
                score,
                finish,
            });
            if self.hypotheses.len() > k {
                let worst = (0..self.hypotheses.len())
                    .min_by(|&a, &b| {
                        self.hypotheses[a]
                            .score
                            .total_cmp(&self.hypotheses[b].score)
                    })
                    .unwrap_or(0);
                self.hypotheses.remove(worst);
            }
        }
    }

    fn worst_score(&self) -> f64 {
        self.hypotheses
            .iter()
            .map(|h| h.score)
            .fold(f64::INFINITY, f64::min)
    }

    fn is_done(&self, best_sum: f32, cur_len: usize) -> bool {
        if self.hypotheses.len() < self.params.num_beams {
            return false;
        }
        let lp = self.params.length_penalty;
        let highest = match self.params.early_stopping {
            EarlyStopping::True => return true,
            EarlyStopping::False => best_sum as f64 / (cur_len as f64).powf(lp),
            EarlyStopping::Never if lp > 0.0 => {
                best_sum as f64 / (self.params.max_new_tokens as f64).powf(lp)
            }
            EarlyStopping::Never => best_sum as f64 / (cur_len as f64).powf(lp),
        };
        self.worst_score() >= highest
    }

    pub fn finish(mut self, tokenizer: &Tokenizer) -> Vec<Candidate> {
        self.hypotheses.sort_by(|a, b| b.score.total_cmp(&a.score));
        self.hypotheses.truncate(self.params.num_return_sequences);
        let stop = self.params.stop.clone();
        self.hypotheses
            .into_iter()
            .map(|h| Candidate {
                text: final_text(tokenizer, &h.tokens, &stop),
                token_ids: h.tokens,
                score: h.score,
                finish_reason: h.finish,
            })
            .collect()
    }
}

/// The `n` largest values of `row` with their indices, largest first (ties: lower index first),
/// in one pass that keeps the best `n` so far.
fn top_n(row: &[f32], n: usize) -> Vec<(usize, f32)> {
    use std::cmp::Ordering::{Greater, Less};
    let n = n.min(row.len());
    let mut best: Vec<(usize, f32)> = Vec::with_capacity(n + 1);
    if n == 0 {
        return best;
    }
    for (i, &v) in row.iter().enumerate() {
        if best.len() == n {
            // A later index never displaces an equal value.
            if v.total_cmp(&best[n - 1].1) != Greater {
                continue;
            }
            best.pop();
        }
        let at = best.partition_point(|&(_, b)| b.total_cmp(&v) != Less);
        best.insert(at, (i, v));
    }
    best
}

#[cfg(test)]
mod tests {
    use super::top_n;

    #[test]
    fn top_n_orders_and_breaks_ties_by_index() {
        let row = [0.5, 2.0, 2.0, -1.0, 3.0];
        assert_eq!(top_n(&row, 3), vec![(4, 3.0), (1, 2.0), (2, 2.0)]);
        assert_eq!(top_n(&row, 2), vec![(4, 3.0), (1, 2.0)]);
        assert_eq!(top_n(&row, 0), vec![]);
        assert_eq!(top_n(&row, 9).len(), 5);
        assert_eq!(top_n(&[1.0, 1.0, 1.0], 2), vec![(0, 1.0), (1, 1.0)]);
    }
}
