//! What a decoding step reads of each slot's logits. On the CPU the logits are in host memory
//! already and every slot sees its whole row. On a GPU, copying `[slots, vocab]` float32 logits
//! to the host and scanning them there would cost more than the step itself (64 slots of a
//! 152k vocabulary are 39 MB a step), so a slot whose decoding needs only its best few tokens
//! (greedy, or beam search, without a repetition penalty or banned sequences: see
//! `GenerationParams::best_needed`) gets its best log-probabilities, reduced on the device. Only
//! the slots that must see the whole row (sampling, processors) are copied in full.

use tch::{Device, Kind, Tensor};

/// One slot's next-token scores, as a decoding strategy reads them.
pub enum SlotScores<'a> {
    /// The whole row of raw logits, for the processors to change.
    Logits(&'a mut [f32]),
    /// The best `(token, log-probability)` pairs, best first.
    Best(&'a [(u32, f32)]),
}

/// One step's scores for all slots, in host memory.
pub struct StepScores {
    vocab: usize,
    /// Whole rows of the slots that need them, in slot order.
    rows: Vec<f32>,
    /// Per slot: its index among `rows`, if it has a whole row.
    row_of: Vec<Option<usize>>,
    /// `best_count` pairs per slot (all slots), when any slot is reduced.
    best: Vec<(u32, f32)>,
    best_count: usize,
}

impl StepScores {
    /// Reads logits `[slots, vocab]`. `needs[s]` is what slot `s` needs (`best_needed`).
    /// Without `reduce` (the CPU), every slot gets its whole row.
    pub fn read(logits: &Tensor, needs: &[Option<usize>], reduce: bool) -> StepScores {
        let (slots, vocab) = (logits.size()[0] as usize, logits.size()[1] as usize);
        let whole: Vec<usize> = (0..slots)
            .filter(|&s| !reduce || needs[s].is_none())
            .collect();
        let mut row_of = vec![None; slots];
        for (i, &s) in whole.iter().enumerate() {
            row_of[s] = Some(i);
        }
        let rows = match whole.len() {
            0 => Vec::new(),
            n if n == slots => host_floats(logits),
            _ => {
                let index: Vec<i64> = whole.iter().map(|&s| s as i64).collect();
                let index = Tensor::from_slice(&index).to_device(logits.device());
                host_floats(&logits.index_select(0, &index))
            }
        };
        let best_count = if reduce {
            needs
                .iter()
                .flatten()
                .copied()
                .max()
                .unwrap_or(0)
                .min(vocab)
        } else {
            0
        };
        let best = if best_count > 0 {
            let logp = logits.log_softmax(-1, Kind::Float);
            let (values, indices) = logp.topk(best_count as i64, -1, true, true);
            let values = host_floats(&values);
            let indices = Vec::<i64>::try_from(&indices.to_device(Device::Cpu).reshape([-1]))
                .expect("topk indices are int64");
            indices
                .into_iter()
                .zip(values)
                .map(|(t, v)| (t as u32, v))
                .collect()
        } else {
            Vec::new()
        };
        StepScores {
            vocab,
            rows,
            row_of,
            best,
            best_count,
        }
    }

    /// Each slot's scores, by slot.
    pub fn by_slot(&mut self) -> Vec<Option<SlotScores<'_>>> {
        let mut rows = self.rows.chunks_mut(self.vocab.max(1));
        let mut best = self.best.chunks(self.best_count.max(1));
        self.row_of
            .iter()
            .map(|row| {
                let reduced = if self.best_count > 0 {
                    best.next()
                } else {
                    None
                };
                match row {
                    Some(_) => rows.next().map(SlotScores::Logits),
                    None => reduced.map(SlotScores::Best),
                }
            })
            .collect()
    }
}

/// Copies a float tensor to a host `Vec<f32>` (row-major).
pub fn host_floats(t: &Tensor) -> Vec<f32> {
    let t = t.to_kind(Kind::Float).to_device(Device::Cpu).contiguous();
    let mut out = vec![0f32; t.numel()];
    t.copy_data(&mut out, t.numel());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_slots_see_whole_rows() {
        let logits = Tensor::from_slice(&[1f32, 3.0, 2.0, 0.0, -1.0, 5.0]).view([2, 3]);
        let mut scores = StepScores::read(&logits, &[Some(1), None], false);
        let slots = scores.by_slot();
        match &slots[0] {
            Some(SlotScores::Logits(row)) => assert_eq!(&row[..], &[1.0, 3.0, 2.0]),
            _ => panic!("slot 0 should have its row"),
        }
        match &slots[1] {
            Some(SlotScores::Logits(row)) => assert_eq!(&row[..], &[0.0, -1.0, 5.0]),
            _ => panic!("slot 1 should have its row"),
        }
    }

    #[test]
    fn reduced_slots_get_their_best_log_probabilities() {
        let rows = [
            [1f32, 3.0, 2.0, 0.5],
            [0.0, -1.0, 5.0, 4.0],
            [2.0, 2.5, 0.0, 1.0],
        ];
        let logits = Tensor::from_slice(rows.as_flattened()).view([3, 4]);
        let mut scores = StepScores::read(&logits, &[Some(1), None, Some(2)], true);
        let log_softmax = |row: &[f32]| crate::generation::logits::log_softmax(row);
        let slots = scores.by_slot();
        match &slots[0] {
            Some(SlotScores::Best(best)) => {
                assert_eq!(best[0].0, 1);
                assert!((best[0].1 - log_softmax(&rows[0])[1]).abs() < 1e-5);
            }
            _ => panic!("slot 0 should be reduced"),
        }
        assert!(matches!(&slots[1], Some(SlotScores::Logits(row)) if row[..] == rows[1]));
        match &slots[2] {
            Some(SlotScores::Best(best)) => {
                let tokens: Vec<u32> = best.iter().map(|b| b.0).collect();
                assert_eq!(tokens, vec![1, 0]);
                assert!((best[1].1 - log_softmax(&rows[2])[0]).abs() < 1e-5);
            }
            _ => panic!("slot 2 should be reduced"),
        }
    }
}
