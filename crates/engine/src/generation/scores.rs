//! What a decoding step reads of each slot's logits. On the CPU the logits are in host memory
//! already and every slot sees its whole row. On a GPU, copying `[slots, vocab]` float32 logits
//! to the host and scanning them there would cost more than the step itself (64 slots of a
//! 152k vocabulary are 39 MB a step), so a slot whose decoding needs only its best few tokens
//! (greedy, beam search, top-k sampling, without a repetition penalty or banned sequences: see
//! `GenerationParams::best_needed`) gets those, reduced on the device, with the row's
//! log-normaliser. Only the slots that must see the whole row are copied in full.

use tch::{Device, Kind, Tensor};

/// One slot's next-token scores, as a decoding strategy reads them.
pub enum SlotScores<'a> {
    /// The whole row of raw logits, for the processors to change.
    Logits(&'a mut [f32]),
    /// The row's best tokens, reduced on the device.
    Best(BestTokens<'a>),
}

/// A slot's best `(token, raw logit)` pairs, best first, and what else a step may need.
pub struct BestTokens<'a> {
    pub best: &'a [(u32, f32)],
    /// `logsumexp` of the row: a token's log-probability is `logit - log_norm`.
    pub log_norm: f32,
    logits: &'a Tensor,
    slot: i64,
}

impl BestTokens<'_> {
    /// The whole row after all, for the rare step the best tokens do not settle (a tie at a
    /// sampling cut that runs past them).
    pub fn whole_row(&self) -> Vec<f32> {
        host_floats(&self.logits.get(self.slot))
    }
}

/// One step's scores for all slots, in host memory.
pub struct StepScores {
    vocab: usize,
    /// The step's logits where they were computed, for `BestTokens::whole_row` (none when they
    /// were computed in host memory, where every slot has its whole row).
    logits: Option<Tensor>,
    /// Whole rows of the slots that need them, in slot order.
    rows: Vec<f32>,
    /// Per slot: whether it has a whole row.
    whole: Vec<bool>,
    /// `best_count` pairs per slot (all slots), when any slot is reduced.
    best: Vec<(u32, f32)>,
    best_count: usize,
    log_norms: Vec<f32>,
}

impl StepScores {
    /// Reads logits `[slots, vocab]`. `needs[s]` is what slot `s` needs (`best_needed`).
    /// Without `reduce` (the CPU), every slot gets its whole row.
    pub fn read(logits: &Tensor, needs: &[Option<usize>], reduce: bool) -> StepScores {
        let (slots, vocab) = (logits.size()[0] as usize, logits.size()[1] as usize);
        let whole: Vec<bool> = (0..slots).map(|s| !reduce || needs[s].is_none()).collect();
        let whole_slots: Vec<i64> = (0..slots as i64).filter(|&s| whole[s as usize]).collect();
        let rows = match whole_slots.len() {
            0 => Vec::new(),
            n if n == slots => host_floats(logits),
            _ => {
                let index = Tensor::from_slice(&whole_slots).to_device(logits.device());
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
        let (best, log_norms) = if best_count > 0 {
            let logits = logits.to_kind(Kind::Float);
            let (values, indices) = logits.topk(best_count as i64, -1, true, true);
            let values = host_floats(&values);
            let indices = Vec::<i64>::try_from(&indices.to_device(Device::Cpu).reshape([-1]))
                .expect("topk indices are int64");
            let best = indices
                .into_iter()
                .zip(values)
                .map(|(t, v)| (t as u32, v))
                .collect();
            (best, host_floats(&logits.logsumexp([-1], false)))
        } else {
            (Vec::new(), Vec::new())
        };
        StepScores {
            vocab,
            logits: Some(logits.shallow_clone()),
            rows,
            whole,
            best,
            best_count,
            log_norms,
        }
    }

    /// Scores from logits already in host memory, `vocab` floats a slot: every slot reads its
    /// whole row in place. `into_host_rows` gives the buffer back.
    pub fn from_host_rows(rows: Vec<f32>, vocab: usize) -> StepScores {
        let slots = rows.len() / vocab.max(1);
        StepScores {
            vocab,
            logits: None,
            rows,
            whole: vec![true; slots],
            best: Vec::new(),
            best_count: 0,
            log_norms: Vec::new(),
        }
    }

    /// The buffer of whole rows, for the next step to write into, when the rows were computed
    /// in host memory (`from_host_rows`); `None` when they were copied from a tensor.
    pub fn into_host_rows(self) -> Option<Vec<f32>> {
        self.logits.is_none().then_some(self.rows)
    }

    /// Each slot's scores, by slot.
    pub fn by_slot(&mut self) -> Vec<Option<SlotScores<'_>>> {
        let mut rows = self.rows.chunks_mut(self.vocab.max(1));
        let mut best = self.best.chunks(self.best_count.max(1));
        let logits = self.logits.as_ref();
        let log_norms = &self.log_norms;
        self.whole
            .iter()
            .enumerate()
            .map(|(slot, &whole)| {
                let reduced = if self.best_count > 0 {
                    best.next()
                } else {
                    None
                };
                if whole {
                    rows.next().map(SlotScores::Logits)
                } else {
                    reduced.zip(logits).map(|(best, logits)| {
                        SlotScores::Best(BestTokens {
                            best,
                            log_norm: log_norms[slot],
                            logits,
                            slot: slot as i64,
                        })
                    })
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
        assert!(matches!(&slots[0], Some(SlotScores::Logits(row)) if row[..] == [1.0, 3.0, 2.0]));
        assert!(matches!(&slots[1], Some(SlotScores::Logits(row)) if row[..] == [0.0, -1.0, 5.0]));
    }

    #[test]
    fn reduced_slots_get_their_best_tokens_and_log_normaliser() {
        let rows = [
            [1f32, 3.0, 2.0, 0.5],
            [0.0, -1.0, 5.0, 4.0],
            [2.0, 2.5, 0.0, 1.0],
        ];
        let logits = Tensor::from_slice(rows.as_flattened()).view([3, 4]);
        let mut scores = StepScores::read(&logits, &[Some(1), None, Some(2)], true);
        let log_softmax = |row: &[f32]| crate::generation::logits::log_softmax(row);
        let slots = scores.by_slot();
        let Some(SlotScores::Best(first)) = &slots[0] else {
            panic!("slot 0 should be reduced")
        };
        assert_eq!(first.best[0].0, 1);
        assert!((first.best[0].1 - first.log_norm - log_softmax(&rows[0])[1]).abs() < 1e-5);
        assert_eq!(first.whole_row(), rows[0].to_vec());
        assert!(matches!(&slots[1], Some(SlotScores::Logits(row)) if row[..] == rows[1]));
        let Some(SlotScores::Best(third)) = &slots[2] else {
            panic!("slot 2 should be reduced")
        };
        let tokens: Vec<u32> = third.best.iter().map(|b| b.0).collect();
        assert_eq!(tokens, vec![1, 0]);
        assert!((third.best[1].1 - third.log_norm - log_softmax(&rows[2])[0]).abs() < 1e-5);
    }
}
