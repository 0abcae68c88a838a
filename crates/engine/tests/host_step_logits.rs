//! On the CPU a block-quantized model runs its whole step on host buffers (`host_step`): the
//! embeddings are read from the quantized table, and the final norm and the output layer write
//! the logits straight into a buffer the session reuses (`StepBuffers`). Checked here against
//! the libtorch pass (`prefill_batch`: the same product kernels, libtorch's attention, norms
//! and embedding lookup), for prompts prefilled together and for a decoding step after them.

mod common;

use beamline_engine::kv_cache::KvCache;
use beamline_engine::models::decoder::{Decoder, Logits};
use beamline_engine::models::step_buffers::StepBuffers;
use tch::Device;

fn host_rows(logits: Logits) -> Vec<f32> {
    match logits {
        Logits::Host(rows) => rows,
        Logits::Tensor(_) => {
            panic!("a block-quantized model on the CPU computes logits on the host")
        }
    }
}

/// The logits of each prompt's last token by the libtorch pass.
fn reference(decoder: &Decoder, prompts: &[&[u32]]) -> Vec<f32> {
    let (last, _) = decoder.prefill_batch(prompts);
    Vec::<f32>::try_from(&decoder.logits(&last).reshape([-1])).expect("float32 logits")
}

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let diff = got
        .iter()
        .zip(want)
        .fold(0f32, |m, (g, w)| m.max((g - w).abs()));
    assert!(
        diff <= 2e-3 * scale,
        "{what}: logits differ by {diff} (largest {scale})"
    );
}

fn argmax(row: &[f32]) -> usize {
    (0..row.len()).fold(0, |best, i| if row[i] > row[best] { i } else { best })
}

#[test]
fn host_step_logits_match_the_libtorch_pass() {
    let engine = common::lock(common::engine_q4_float32());
    let decoder = engine.decoder();
    let _guard = tch::no_grad_guard();
    let c = &decoder.config;
    let vocab = c.vocab_size;
    let prompts: [&[u32]; 2] = [
        &[1, 4093, 198, 28120, 905, 2, 198, 17, 42],
        &[1, 504, 2365, 6354, 16438, 27003],
    ];
    let mut cache = KvCache::new(
        c.num_layers,
        prompts.len(),
        c.num_kv_heads as i64,
        c.head_dim as i64,
        16,
        decoder.cache_kind(),
        Device::Cpu,
    );
    let mut buffers = StepBuffers::default();

    let first = host_rows(decoder.prefill_into(&prompts, &[0, 1], &mut cache, &mut buffers));
    assert_close(&first, &reference(decoder, &prompts), "prefill");

    let next: Vec<u32> = first.chunks(vocab).map(|row| argmax(row) as u32).collect();
    let step = host_rows(decoder.decode(&next, &mut cache, &[true, true], &mut buffers));
    let extended: Vec<Vec<u32>> = prompts
        .iter()
        .zip(&next)
        .map(|(p, &t)| p.iter().copied().chain([t]).collect())
        .collect();
    let extended: Vec<&[u32]> = extended.iter().map(Vec::as_slice).collect();
    assert_close(&step, &reference(decoder, &extended), "decoding step");

    // The step's rows are the session's buffer: given back, the next step writes into it.
    let address = step.as_ptr();
    buffers.logits = step;
    let again = host_rows(decoder.decode(&next, &mut cache, &[true, true], &mut buffers));
    assert_eq!(
        again.as_ptr(),
        address,
        "the logits buffer is reused, not reallocated"
    );
}
