//! Logits processors, applied to one row of logits (one sequence's next-token scores) on the
//! host, in transformers' order: repetition penalty, banned sequences, then for sampling
//! temperature, top-k and top-p. Working on host rows keeps every request's processing
//! independent of its batch mates, so a seeded sample is reproducible whatever runs beside it.

use rand::Rng;

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

/// Natural-log softmax of a row.
pub fn log_softmax(row: &[f32]) -> Vec<f32> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return vec![f32::NEG_INFINITY; row.len()];
    }
    let sum: f64 = row.iter().map(|&v| ((v - max) as f64).exp()).sum();
    let log_sum = sum.ln() as f32;
    row.iter().map(|&v| v - max - log_sum).collect()
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
    let mut scores: Vec<f32> = row.iter().map(|&v| v / t).collect();
    if top_k > 0 && top_k < scores.len() {
        let mut sorted = scores.clone();
        let (_, kth, _) = sorted.select_nth_unstable_by(top_k - 1, |a, b| b.total_cmp(a));
        let threshold = *kth;
        for v in scores.iter_mut() {
            if *v < threshold {
                *v = f32::NEG_INFINITY;
            }
        }
    }
    let probs = softmax(&scores);
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
            return i;
        }
    }
    order.last().copied().unwrap_or_else(|| argmax(row))
}

fn softmax(scores: &[f32]) -> Vec<f64> {
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f64> = scores.iter().map(|&v| ((v - max) as f64).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
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
    fn top_p_keeps_the_nucleus() {
        // probabilities ~ [0.64, 0.24, 0.09, 0.03]: top_p 0.7 keeps the first two.
        let row = vec![3.0, 2.0, 1.0, 0.0];
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for _ in 0..200 {
            assert!(sample(&row, 1.0, 0, 0.7, &mut rng) < 2);
        }
    }
}
