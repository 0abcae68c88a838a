//! Picking the output of a job from several candidates (beams, samples).
//!
//! Every candidate is checked (so every verdict can be stored and counted);
//! the highest-scoring candidate that passed wins, ties going to the earlier
//! candidate; when none passed the job is *filtered*.

use crate::ruleset::RuleSet;
use crate::verdict::Verdict;

/// The outcome of [`choose_candidate`].
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    /// Index of the winning candidate, `None` when no candidate passed.
    pub winner: Option<usize>,
    /// One verdict per candidate, in the candidates' order.
    pub verdicts: Vec<Verdict>,
}

impl Choice {
    /// True when no candidate passed (the job's status is `filtered`).
    pub fn is_filtered(&self) -> bool {
        self.winner.is_none()
    }

    /// The winner's verdict (its `text` is what to store).
    pub fn winning_verdict(&self) -> Option<&Verdict> {
        self.winner.and_then(|i| self.verdicts.get(i))
    }
}

/// Checks every `(text, score)` candidate with `rules` and picks the
/// highest-scoring one that passed. `token_counts[i]`, when present, is
/// candidate `i`'s token count for `max_tokens` rules. A NaN score ranks
/// below every number.
pub fn choose_candidate(
    rules: &RuleSet,
    candidates: &[(String, f64)],
    token_counts: Option<&[usize]>,
) -> Choice {
    let verdicts: Vec<Verdict> = candidates
        .iter()
        .enumerate()
        .map(|(i, (text, _))| {
            let tokens = token_counts.and_then(|t| t.get(i).copied());
            rules.check(text, tokens)
        })
        .collect();
    let mut winner: Option<(usize, f64)> = None;
    for (i, ((_, score), verdict)) in candidates.iter().zip(&verdicts).enumerate() {
        if !verdict.passed {
            continue;
        }
        let score = if score.is_nan() {
            f64::NEG_INFINITY
        } else {
            *score
        };
        if winner.is_none_or(|(_, best)| score > best) {
            winner = Some((i, score));
        }
    }
    Choice {
        winner: winner.map(|(i, _)| i),
        verdicts,
    }
}
