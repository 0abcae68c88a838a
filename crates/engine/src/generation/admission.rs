//! Which waiting requests join the running batch, and which of them are prefilled together.

use std::collections::VecDeque;

use super::batcher::RequestSource;
use super::GenerationRequest;

/// Padded prompt tokens one GPU prefill pass may take. A GPU runs a few prompts together in
/// about the time of one; the CPU is busy with one already, and a pass of its own keeps a
/// prompt's float32 results bit-identical to transformers'.
pub const GPU_PREFILL_TOKENS: usize = 16_384;

/// Prompt tokens one prefill pass on host buffers (`Decoder::prefill_into`, block-quantized
/// models on the CPU) may take. Prompts are not padded there, and the products' weights are
/// expanded once per pass, so several prompts share that cost; the pass's buffers take about
/// 30 KiB per token (SmolLM2-135M).
pub const HOST_PREFILL_TOKENS: usize = 512;

/// A request admitted to the cache: its key, itself, and its slots.
pub type Admitted = (u64, GenerationRequest, Vec<usize>);

/// Takes waiting requests, in order, while their slots fit the free ones, into one prefill
/// group of at most `max_tokens` padded tokens (always at least one request that fits).
pub fn admit(
    waiting: &mut VecDeque<(u64, GenerationRequest)>,
    source: &mut dyn RequestSource,
    free: &mut Vec<usize>,
    max_tokens: usize,
) -> Vec<Admitted> {
    let mut group: Vec<Admitted> = Vec::new();
    let mut longest = 0;
    loop {
        if waiting.is_empty() && !free.is_empty() {
            match source.next(false) {
                Some(r) => waiting.push_back(r),
                None => break,
            }
        }
        let Some((_, req)) = waiting.front() else {
            break;
        };
        let widest = longest.max(req.prompt_ids.len());
        if req.params.slots() > free.len()
            || (!group.is_empty() && widest * (group.len() + 1) > max_tokens)
        {
            break;
        }
        let Some((index, req)) = waiting.pop_front() else {
            break;
        };
        longest = widest;
        let slots: Vec<usize> = (0..req.params.slots()).filter_map(|_| free.pop()).collect();
        group.push((index, req, slots));
    }
    group
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generation::{Decoding, GenerationOutput, GenerationParams};

    struct Closed;
    impl RequestSource for Closed {
        fn next(&mut self, _wait: bool) -> Option<(u64, GenerationRequest)> {
            None
        }
        fn finished(&mut self, _key: u64, _output: GenerationOutput) {}
    }

    fn request(key: u64, len: usize, beams: usize) -> (u64, GenerationRequest) {
        let mut params = GenerationParams::default();
        if beams > 1 {
            params.decoding = Decoding::Beam;
            params.num_beams = beams;
        }
        let prompt_ids = vec![7; len];
        (key, GenerationRequest { prompt_ids, params })
    }

    #[test]
    fn a_group_stays_within_its_padded_tokens_and_the_free_slots() {
        let mut waiting: VecDeque<_> = [
            request(0, 10, 1),
            request(1, 30, 1),
            request(2, 5, 4),
            request(3, 5, 1),
        ]
        .into();
        let mut free: Vec<usize> = (0..4).rev().collect();
        // 10 + 30 pad to 2 x 30 = 60 tokens; the 4-beam request needs more slots than are left.
        let group = admit(&mut waiting, &mut Closed, &mut free, 64);
        let keys: Vec<u64> = group.iter().map(|a| a.0).collect();
        assert_eq!(keys, vec![0, 1]);
        assert_eq!(group[0].2, vec![0]);
        assert_eq!(free.len(), 2);

        // Without a budget (the CPU) every group is one request.
        let mut waiting: VecDeque<_> = [request(0, 3, 1), request(1, 3, 1)].into();
        let mut free: Vec<usize> = (0..4).rev().collect();
        assert_eq!(admit(&mut waiting, &mut Closed, &mut free, 0).len(), 1);
        assert_eq!(admit(&mut waiting, &mut Closed, &mut free, 0).len(), 1);
        assert!(admit(&mut waiting, &mut Closed, &mut free, 0).is_empty());
    }
}
