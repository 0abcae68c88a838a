//! Logits processors, applied to one row of logits (one sequence's next-token scores) on the
//! host, in transformers' order: repetition penalty, banned sequences, then for sampling
//! temperature, top-k and top-p. Working on host rows keeps every request's processing
//! independent of its batch mates, so a seeded sample is reproducible whatever runs beside it.

use rand::Rng;

use crate::cpu::elementwise;

/// transformers' `RepetitionPenaltyLogitsProcessor`: every token already in the sequence
/// (prompt included) has its logit divided by `penalty` if positive, multiplied if negative.
pub fn repetition_penalty(row: &mut [f32], history: &[u32], penalty: f64) {
    if penalty == 1.0 {
        return;
    }
    let p = penalty as f32;
    let mut seen = vec![false; row.len()];
    for &t in history {
        let t = t as usize;
        if t < row.len() && !seen[t] {
            seen[t] = true;
            let v = row[t];
            row[t] = if v < 0.0 { v * p } else { v / p };
        }
    }
}

/// transformers' `NoBadWordsLogitsProcessor`: a banned sequence's last token is forbidden when
/// the sequence so far ends with the rest of it; single-token sequences are always forbidden.
pub fn ban_sequences(row: &mut [f32], history: &[u32], banned: &[Vec<u32>]) {
    for seq in banned {
        let Some((&last, prefix)) = seq.split_last() else {
            continue;
        };
        if history.ends_with(prefix) && (last as usize) < row.len() {
            row[last as usize] = f32::NEG_INFINITY;
        }
    }
}

/// Index of the largest value (the first one on ties, as `torch.argmax`).
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

/// `(max, ln Σ exp(v - max))` of a row, what turns its logits into log-probabilities
/// (`v - max - log_sum`); `None` when every value is `-inf`.
pub fn log_normaliser(row: &[f32]) -> Option<(f32, f32)> {
    let max = elementwise::max(row);
    if max == f32::NEG_INFINITY {
        return None;
    }
    Some((max, elementwise::sum_exp(row, max).ln() as f32))
}

/// Natural-log softmax of a row.
pub fn log_softmax(row: &[f32]) -> Vec<f32> {
    let Some((max, log_sum)) = log_normaliser(row) else {
        return vec![f32::NEG_INFINITY; row.len()];
    };
    row.iter().map(|&v| v - max - log_sum).collect()
}

/// `log_softmax(row)[token]` without building the whole row (same arithmetic, same bits).
pub fn log_prob(row: &[f32], token: usize) -> f32 {
    match log_normaliser(row) {
        Some((max, log_sum)) => row[token] - max - log_sum,
        None => f32::NEG_INFINITY,
    }
}

/// Temperature, then top-k, then top-p, then a draw from the softmax (transformers' warpers).
pub fn sample(
    row: &[f32],
    temperature: f64,
    top_k: usize,
    top_p: f64,
    rng: &mut impl Rng,
) -> usize {
    let t = temperature as f32;
    let scores: Vec<f32> = row.iter().map(|&v| v / t).collect();
    let threshold = if top_k > 0 && top_k < scores.len() {
        let mut sorted = scores.clone();
        let (_, kth, _) = sorted.select_nth_unstable_by(top_k - 1, |a, b| b.total_cmp(a));
        *kth
    } else {
        f32::NEG_INFINITY
    };
    let survivors: Vec<(u32, f32)> = scores
        .iter()
        .enumerate()
        .filter(|(_, &v)| v >= threshold)
        .map(|(i, &v)| (i as u32, v))
        .collect();
    draw(&survivors, top_p, rng).map_or_else(|| argmax(row), |t| t as usize)
}

/// Top-k sampling from a row's best tokens alone (best first, raw logits), when they hold
/// every token that survives the cut. Gives exactly what `sample` gives on the whole row, or
/// `None` when a tie at the cut may run past the tokens given (then the caller needs the row).
pub fn sample_from_best(
    best: &[(u32, f32)],
    temperature: f64,
    top_k: usize,
    top_p: f64,
    rng: &mut impl Rng,
) -> Option<u32> {
    let t = temperature as f32;
    if top_k == 0 || best.len() < top_k {
        return None;
    }
    let threshold = best[top_k - 1].1 / t;
    let mut survivors: Vec<(u32, f32)> = best
        .iter()
        .map(|&(token, v)| (token, v / t))
        .filter(|&(_, v)| v >= threshold)
        .collect();
    if survivors.len() == best.len() {
        return None;
    }
    // `sample` sees the survivors in vocabulary order.
    survivors.sort_by_key(|s| s.0);
    Some(draw(&survivors, top_p, rng).unwrap_or(best[0].0))
}

/// Top-p over the survivors of the top-k cut (`(token, scaled logit)` in vocabulary order),
/// then a draw from their softmax. `None` when no token has any probability.
fn draw(survivors: &[(u32, f32)], top_p: f64, rng: &mut impl Rng) -> Option<u32> {
    let max = survivors
        .iter()
        .map(|s| s.1)
        .fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f64> = survivors
        .iter()
        .map(|&(_, v)| ((v - max) as f64).exp())
        .collect();
    let sum: f64 = exps.iter().sum();
    let probs: Vec<f64> = exps.into_iter().map(|e| e / sum).collect();
    // Positions into `survivors`, whose order is the tokens' order.
    let mut order: Vec<usize> = (0..probs.len()).filter(|&i| probs[i] > 0.0).collect();
    if top_p < 1.0 {
        // Drop the least likely tokens whose total mass stays within 1 - top_p; keep at least one.
        order.sort_by(|&a, &b| probs[a].total_cmp(&probs[b]).then(b.cmp(&a)));
        let mut cumulative = 0.0f64;
        let mut cut = 0;
        for (rank, &i) in order.iter().enumerate() {
            cumulative += probs[i];
            if cumulative <= 1.0 - top_p && rank + 1 < order.len() {
                cut = rank + 1;
            } else {
                break;
            }
        }
        order.drain(..cut);
    }
    let total: f64 = order.iter().map(|&i| probs[i]).sum();
    let mut target = rng.random::<f64>() * total;
    for &i in &order {
        target -= probs[i];
        if target <= 0.0 {
            return Some(survivors[i].0);
        }
    }
    order.last().map(|&i| survivors[i].0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn repetition_penalty_divides_positive_multiplies_negative() {
        let mut row = vec![2.0, -2.0, 1.0];
        repetition_penalty(&mut row, &[0, 1, 1], 2.0);
        assert_eq!(row, vec![1.0, -4.0, 1.0]);
    }

    #[test]
    fn bans_multi_token_sequences_only_after_their_prefix() {
        let mut row = vec![0.0; 5];
        ban_sequences(&mut row, &[1, 2], &[vec![2, 3], vec![4], vec![1, 3]]);
        assert_eq!(row[3], f32::NEG_INFINITY);
        assert_eq!(row[4], f32::NEG_INFINITY);
        assert_eq!(row[0], 0.0);
        let mut row = vec![0.0; 5];
        ban_sequences(&mut row, &[2, 1], &[vec![2, 3]]);
        assert_eq!(row[3], 0.0);
    }

    #[test]
    fn log_prob_is_log_softmax_at_the_token() {
        let row = [0.3f32, -1.0, 2.5, 2.5, f32::NEG_INFINITY];
        let all = log_softmax(&row);
        for (t, &want) in all.iter().enumerate() {
            assert_eq!(log_prob(&row, t).to_bits(), want.to_bits());
        }
    }

    #[test]
    fn log_softmax_normalises() {
        let out = log_softmax(&[1.0, 2.0, 3.0]);
        let total: f32 = out.iter().map(|v| v.exp()).sum();
        assert!((total - 1.0).abs() < 1e-6);
        assert_eq!(argmax(&out), 2);
    }

    #[test]
    fn top_k_one_is_greedy_and_seed_reproduces() {
        let row = vec![0.1, 3.0, 0.5, 2.9];
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..20 {
            assert_eq!(sample(&row, 1.0, 1, 1.0, &mut rng), 1);
        }
        let draw = |seed| {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            (0..30)
                .map(|_| sample(&row, 1.0, 0, 1.0, &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(3), draw(3));
        assert!(draw(3).contains(&3));
    }

    #[test]
    fn sampling_from_the_best_tokens_equals_sampling_the_row() {
        let row: Vec<f32> = (0..500).map(|i| ((i * 37 % 101) as f32) / 10.0).collect();
        let mut best: Vec<(u32, f32)> = row
            .iter()
            .enumerate()
            .map(|(i, &v)| (i as u32, v))
            .collect();
        best.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        for (top_k, top_p, temperature) in [(5, 1.0, 1.0), (40, 0.9, 0.7), (50, 0.5, 1.3)] {
            let mut whole = rand::rngs::StdRng::seed_from_u64(11);
            let mut reduced = rand::rngs::StdRng::seed_from_u64(11);
            for _ in 0..50 {
                let want = sample(&row, temperature, top_k, top_p, &mut whole);
                let got =
                    sample_from_best(&best[..top_k + 16], temperature, top_k, top_p, &mut reduced);
                assert_eq!(got, Some(want as u32), "top_k {top_k} top_p {top_p}");
            }
        }
        // A tie at the cut that fills every token given may run past them.
        let flat = [(3u32, 2.0f32), (0, 1.0), (1, 1.0), (2, 1.0)];
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        assert_eq!(sample_from_best(&flat, 1.0, 2, 1.0, &mut rng), None);
        assert!(sample_from_best(&flat, 1.0, 1, 1.0, &mut rng).is_some());
    }

    #[test]
    fn top_p_keeps_the_nucleus() {
        // probabilities ~ [0.64, 0.24, 0.09, 0.03]: top_p 0.7 keeps the first two.
        let row = vec![3.0, 2.0, 1.0, 0.0];
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for _ in 0..200 {
            assert!(sample(&row, 1.0, 0, 0.7, &mut rng) < 2);
        }
    }
}
