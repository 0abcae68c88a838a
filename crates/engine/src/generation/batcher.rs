//! Continuous batching. The cache has a fixed number of slots; each waiting request is prefilled
//! on its own (exact causal attention, no padding) and its keys and values copied into free
//! slots; then every step decodes one token for all slots at once. When a request finishes, its
//! slots go to the next waiting request, so short and long jobs share a batch without the short
//! ones waiting for the long.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use tch::{Kind, Tensor};

use super::beam::BeamSearch;
use super::params::Decoding;
use super::sequence::Sequences;
use super::{GenerationOutput, GenerationRequest};
use crate::kv_cache::KvCache;
use crate::models::decoder::Decoder;
use crate::tokenizer::Tokenizer;

/// Where the time went, for benchmarks and the worker's metrics.
#[derive(Debug, Clone, Default)]
pub struct BatchStats {
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    pub prefill_time: Duration,
    pub decode_time: Duration,
    pub decode_steps: usize,
    /// Largest cache size reached, bytes.
    pub kv_cache_bytes: usize,
}

enum State {
    Sequences(Sequences),
    Beam(BeamSearch),
}

struct Running {
    index: u64,
    slots: Vec<usize>,
    state: State,
    prompt_tokens: usize,
}

/// Where a streaming run gets its requests and sends its outputs: the worker feeds jobs as
/// they arrive from the queue and writes each result as soon as its job finishes.
pub trait RequestSource {
    /// The next request, keyed by the caller. With `wait` (nothing is running) block until one
    /// arrives, and `None` means the source is closed; without it, `None` means none is ready.
    fn next(&mut self, wait: bool) -> Option<(u64, GenerationRequest)>;
    /// A request finished.
    fn finished(&mut self, key: u64, output: GenerationOutput);
}

/// Runs every request to completion with at most `max_slots` sequences decoding together.
/// Outputs come back in request order.
pub fn run_batch(
    model: &Decoder,
    tokenizer: &Tokenizer,
    requests: Vec<GenerationRequest>,
    max_slots: usize,
) -> (Vec<GenerationOutput>, BatchStats) {
    struct Fixed {
        waiting: VecDeque<(u64, GenerationRequest)>,
        outputs: Vec<Option<GenerationOutput>>,
    }
    impl RequestSource for Fixed {
        fn next(&mut self, _wait: bool) -> Option<(u64, GenerationRequest)> {
            self.waiting.pop_front()
        }
        fn finished(&mut self, key: u64, output: GenerationOutput) {
            self.outputs[key as usize] = Some(output);
        }
    }
    // One session sized to the whole set, as a fixed batch wants.
    let max_slots = max_slots.min(
        requests
            .iter()
            .map(|r| r.params.slots())
            .sum::<usize>()
            .max(1),
    );
    let mut source = Fixed {
        outputs: vec![None; requests.len()],
        waiting: requests
            .into_iter()
            .enumerate()
            .map(|(i, r)| (i as u64, r))
            .collect(),
    };
    let stats = run_stream(model, tokenizer, max_slots, &mut source);
    let outputs = source
        .outputs
        .into_iter()
        .map(|o| o.unwrap_or_else(empty_output))
        .collect();
    (outputs, stats)
}

/// Runs requests from `source` until it closes. Each busy period ("session") sizes the cache to
/// the work ready when it starts (at most `max_slots` slots, at least the widest request), so
/// a trickle of jobs does not pay for a full batch of idle slots; within a session, a finished
/// request's slots go to the next request from the source.
pub fn run_stream(
    model: &Decoder,
    tokenizer: &Tokenizer,
    max_slots: usize,
    source: &mut dyn RequestSource,
) -> BatchStats {
    let _guard = tch::no_grad_guard();
    let mut stats = BatchStats::default();
    let mut waiting: VecDeque<(u64, GenerationRequest)> = VecDeque::new();
    loop {
        if waiting.is_empty() {
            match source.next(true) {
                Some(first) => waiting.push_back(first),
                None => return stats,
            }
        }
        let mut ready: usize = waiting.iter().map(|(_, r)| r.params.slots()).sum();
        while ready < max_slots {
            match source.next(false) {
                Some(r) => {
                    ready += r.1.params.slots();
                    waiting.push_back(r);
                }
                None => break,
            }
        }
        let widest = waiting
            .iter()
            .map(|(_, r)| r.params.slots())
            .max()
            .unwrap_or(1);
        let capacity = max_slots.min(ready).max(widest);
        run_session(model, tokenizer, capacity, &mut waiting, source, &mut stats);
    }
}

/// One busy period over a cache of `capacity` slots; returns when nothing runs and nothing that
/// fits is waiting (a request wider than the cache stays in `waiting` for the next session).
fn run_session(
    model: &Decoder,
    tokenizer: &Tokenizer,
    capacity: usize,
    waiting: &mut VecDeque<(u64, GenerationRequest)>,
    source: &mut dyn RequestSource,
    stats: &mut BatchStats,
) {
    let device = model.norm.device();
    let c = &model.config;
    let mut cache = KvCache::new(
        c.num_layers,
        capacity,
        c.num_kv_heads as i64,
        c.head_dim as i64,
        model.kind,
        device,
    );
    let mut running: Vec<Running> = Vec::new();
    let mut free: Vec<usize> = (0..capacity).rev().collect();
    let mut feed = vec![0u32; capacity];
    let mut live = vec![false; capacity];
    let vocab = c.vocab_size;

    loop {
        // Admit waiting requests while their slots fit, pulling more from the source.
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
            if req.params.slots() > free.len() {
                break;
            }
            let Some((index, req)) = waiting.pop_front() else {
                break;
            };
            let slots: Vec<usize> = (0..req.params.slots()).filter_map(|_| free.pop()).collect();
            let started = Instant::now();
            let ids: Vec<i64> = req.prompt_ids.iter().map(|&t| t as i64).collect();
            let ids = Tensor::from_slice(&ids).to_device(device).unsqueeze(0);
            let (hidden, kv) = model.prefill(&ids);
            let last = hidden.narrow(1, kv.len as i64 - 1, 1).squeeze_dim(1);
            let row = host_rows(&model.logits(&last));
            cache.insert(slots[0], &kv);
            cache.copy_slot(slots[0], &slots[1..]);
            stats.prefill_time += started.elapsed();
            stats.prompt_tokens += req.prompt_ids.len();
            let mut rows: Vec<Vec<f32>> = vec![row; slots.len()];
            let mut views: Vec<&mut [f32]> = rows.iter_mut().map(|r| r.as_mut_slice()).collect();
            let prompt_tokens = req.prompt_ids.len();
            let mut run = Running {
                index,
                state: match req.params.decoding {
                    Decoding::Beam => State::Beam(BeamSearch::new(req.prompt_ids, req.params)),
                    _ => State::Sequences(Sequences::new(req.prompt_ids, req.params)),
                },
                slots,
                prompt_tokens,
            };
            advance(
                &mut run, &mut views, tokenizer, &mut cache, &mut feed, &mut live,
            );
            running.push(run);
        }
        // Retire finished requests and free their slots.
        let mut i = 0;
        while i < running.len() {
            if is_done(&running[i]) {
                let run = running.swap_remove(i);
                for &s in &run.slots {
                    live[s] = false;
                    cache.clear(s);
                    free.push(s);
                }
                let candidates = match run.state {
                    State::Sequences(s) => s.finish(tokenizer),
                    State::Beam(b) => b.finish(tokenizer),
                };
                let output = GenerationOutput {
                    prompt_tokens: run.prompt_tokens,
                    candidates,
                };
                stats.generated_tokens += output.completion_tokens();
                source.finished(run.index, output);
            } else {
                i += 1;
            }
        }
        if running.is_empty() {
            // Nothing runs: go on only if what waits fits this cache (else a new session).
            match waiting.front() {
                Some((_, r)) if r.params.slots() <= capacity => continue,
                _ => return,
            }
        }
        // One decoding step for all slots.
        let started = Instant::now();
        let ids: Vec<i64> = feed.iter().map(|&t| t as i64).collect();
        let ids = Tensor::from_slice(&ids).to_device(device);
        let logits = model.decode(&ids, &mut cache, &live);
        let mut host = host_rows(&logits);
        stats.kv_cache_bytes = stats.kv_cache_bytes.max(cache.bytes());
        stats.decode_steps += 1;
        let mut by_slot: Vec<Option<&mut [f32]>> = host.chunks_mut(vocab).map(Some).collect();
        for run in running.iter_mut() {
            let mut views: Vec<&mut [f32]> = run
                .slots
                .iter()
                .filter_map(|&s| by_slot[s].take())
                .collect();
            advance(run, &mut views, tokenizer, &mut cache, &mut feed, &mut live);
        }
        stats.decode_time += started.elapsed();
    }
}

fn empty_output() -> GenerationOutput {
    GenerationOutput {
        prompt_tokens: 0,
        candidates: Vec::new(),
    }
}

fn is_done(run: &Running) -> bool {
    match &run.state {
        State::Sequences(s) => s.done(),
        State::Beam(b) => b.done(),
    }
}

/// Feeds one row of logits per slot to the request's decoder and records what each slot feeds
/// next. Beam search may move caches between the request's slots.
fn advance(
    run: &mut Running,
    rows: &mut [&mut [f32]],
    tokenizer: &Tokenizer,
    cache: &mut KvCache,
    feed: &mut [u32],
    live: &mut [bool],
) {
    match &mut run.state {
        State::Sequences(s) => {
            let (tokens, alive) = s.step(rows, tokenizer);
            for ((&slot, token), on) in run.slots.iter().zip(tokens).zip(alive) {
                feed[slot] = token;
                live[slot] = on;
            }
        }
        State::Beam(b) => {
            let step = b.step(rows, tokenizer);
            let sources: Vec<usize> = step.sources.iter().map(|&i| run.slots[i]).collect();
            let dsts: Vec<usize> = run.slots[..sources.len()].to_vec();
            cache.gather(&dsts, &sources);
            for (i, &slot) in run.slots.iter().enumerate() {
                feed[slot] = step.feed.get(i).copied().unwrap_or(0);
                live[slot] = !b.done() && i < step.feed.len();
            }
        }
    }
}

/// Copies float32 logits `[n, vocab]` to the host.
fn host_rows(logits: &Tensor) -> Vec<f32> {
    let t = logits
        .to_kind(Kind::Float)
        .to_device(tch::Device::Cpu)
        .contiguous();
    let mut out = vec![0f32; t.numel()];
    t.copy_data(&mut out, t.numel());
    out
}
