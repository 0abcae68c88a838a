//! Continuous batching. The cache has a fixed number of slots; each waiting request is prefilled
//! (on the CPU on its own, exact causal attention with no padding; on a GPU together with the
//! requests admitted beside it, in one right-padded pass) and its keys and values copied into
//! free slots; then every step decodes one token for all slots at once. When a request finishes, its
//! slots go to the next waiting request, so short and long jobs share a batch without the short
//! ones waiting for the long.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::admission::{admit, GPU_PREFILL_TOKENS, HOST_PREFILL_TOKENS};
use super::beam::BeamSearch;
use super::params::Decoding;
use super::scores::{host_floats, SlotScores, StepScores};
use super::sequence::Sequences;
use super::{GenerationOutput, GenerationRequest};
use crate::kv_cache::{KvCache, SlotMoves};
use crate::models::decoder::{Decoder, Logits};
use crate::models::step_buffers::StepBuffers;
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
        crate::memory::release_free_memory();
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
    crate::memory::release_library_pages();
    let c = &model.config;
    // Room for the waiting prompts from the start, so the first prefills do not grow the
    // cache (a growth briefly holds the old and the new tensors).
    let longest_prompt = waiting.iter().map(|(_, r)| r.prompt_ids.len()).max();
    let mut cache = KvCache::new(
        c.num_layers,
        capacity,
        c.num_kv_heads as i64,
        c.head_dim as i64,
        longest_prompt.unwrap_or(0) + 1,
        model.cache_kind(),
        device,
    );
    let mut running: Vec<Running> = Vec::new();
    let mut free: Vec<usize> = (0..capacity).rev().collect();
    let mut feed = vec![0u32; capacity];
    let mut live = vec![false; capacity];
    // What each slot's decoding reads of its logits (see `scores`); free slots need nothing.
    let mut needs: Vec<Option<usize>> = vec![Some(0); capacity];
    let reduce_on_device = device != tch::Device::Cpu;
    let mut moves = SlotMoves::default();
    let prefill_tokens = if reduce_on_device {
        GPU_PREFILL_TOKENS
    } else if model.prefills_on_host() {
        HOST_PREFILL_TOKENS
    } else {
        0
    };
    let vocab = c.vocab_size;
    // Activations and logits, reused by every pass of the session (`step_buffers`).
    let mut buffers = StepBuffers::default();

    loop {
        // Admit waiting requests while their slots fit, pulling more from the source.
        let mut prefilled = false;
        loop {
            let group = admit(waiting, source, &mut free, prefill_tokens);
            if group.is_empty() {
                break;
            }
            prefilled = true;
            let started = Instant::now();
            let prompts: Vec<&[u32]> = group.iter().map(|a| a.1.prompt_ids.as_slice()).collect();
            let firsts: Vec<usize> = group.iter().map(|a| a.2[0]).collect();
            let first_rows = match model.prefill_into(&prompts, &firsts, &mut cache, &mut buffers) {
                Logits::Tensor(logits) => host_floats(&logits),
                Logits::Host(rows) => rows,
            };
            // A request of several slots (beams, samples) starts with its prompt in each: read
            // from the first slot where the cache allows (a host cache), else copied.
            let (mut dsts, mut srcs) = (Vec::new(), Vec::new());
            for (_, _, slots) in &group {
                dsts.extend_from_slice(&slots[1..]);
                srcs.extend(std::iter::repeat_n(slots[0], slots.len() - 1));
            }
            if cache.shares_prefixes() {
                for (&slot, &home) in dsts.iter().zip(&srcs) {
                    cache.share_prefix(slot, home);
                }
            } else {
                cache.gather(&dsts, &srcs);
            }
            stats.prefill_time += started.elapsed();
            for ((index, req, slots), row) in group.into_iter().zip(first_rows.chunks(vocab)) {
                stats.prompt_tokens += req.prompt_ids.len();
                let mut rows: Vec<Vec<f32>> = vec![row.to_vec(); slots.len()];
                let mut views: Vec<SlotScores> = rows
                    .iter_mut()
                    .map(|r| SlotScores::Logits(r.as_mut_slice()))
                    .collect();
                for &s in &slots {
                    needs[s] = req.params.best_needed();
                }
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
                    &mut run, &mut views, tokenizer, &mut moves, &mut feed, &mut live,
                );
                running.push(run);
            }
            moves.apply(&mut cache);
        }
        if prefilled {
            // The prefill passes sized the buffers by their prompt tokens; decoding steps use a
            // row a slot.
            buffers.release_pass_pages();
        }
        // Retire finished requests and free their slots.
        let mut i = 0;
        while i < running.len() {
            if is_done(&running[i]) {
                let run = running.swap_remove(i);
                for &s in &run.slots {
                    live[s] = false;
                    needs[s] = Some(0);
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
        let mut scores = match model.decode(&feed, &mut cache, &live, &mut buffers) {
            Logits::Tensor(logits) => StepScores::read(&logits, &needs, reduce_on_device),
            Logits::Host(rows) => StepScores::from_host_rows(rows, vocab),
        };
        stats.kv_cache_bytes = stats.kv_cache_bytes.max(cache.bytes());
        stats.decode_steps += 1;
        let mut by_slot = scores.by_slot();
        for run in running.iter_mut() {
            let mut views: Vec<SlotScores> = run
                .slots
                .iter()
                .filter_map(|&s| by_slot[s].take())
                .collect();
            advance(run, &mut views, tokenizer, &mut moves, &mut feed, &mut live);
        }
        drop(by_slot);
        if let Some(rows) = scores.into_host_rows() {
            buffers.logits = rows;
        }
        // All beam requests' cache reorderings in one gather per layer tensor.
        moves.apply(&mut cache);
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
    rows: &mut [SlotScores<'_>],
    tokenizer: &Tokenizer,
    moves: &mut SlotMoves,
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
            // Every beam starts from the prompt's keys and values, which never move.
            moves.add(&dsts, &sources, run.prompt_tokens);
            for (i, &slot) in run.slots.iter().enumerate() {
                feed[slot] = step.feed.get(i).copied().unwrap_or(0);
                live[slot] = !b.done() && i < step.feed.len();
            }
        }
    }
}
