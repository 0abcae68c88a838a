//! Sequences longer than the rope tables the model starts with: the tables grow while a
//! generation runs (`Rope::tables`), and what is decoded past the growth must equal what the
//! same request decodes with the grown tables there from the start, log-probabilities included.
//! That catches tables whose first rows change when they grow, and decoding that reads
//! positions a rotation off (a uniform shift of every position would pass unseen: attention
//! sees only relative positions, which is why the first rows are compared as they were).

mod common;

use beamline_engine::{Engine, GenerationParams};

/// A prompt of `len` tokens cut from a long text.
fn long_prompt(engine: &Engine, len: usize) -> Vec<u32> {
    let sentence = "The tide came in over the flats at dusk, and the herons left one by one. ";
    let text = sentence.repeat(len / 8);
    let ids = engine.tokenizer().encode(&text, false).expect("tokenize");
    assert!(ids.len() >= len, "{} tokens", ids.len());
    ids[..len].to_vec()
}

/// The greedy tokens and their summed log-probability.
fn greedy(engine: &Engine, prompt: &[u32], max_new_tokens: usize) -> (Vec<u32>, f64) {
    let params = GenerationParams {
        max_new_tokens,
        ignore_eos: true,
        ..GenerationParams::default()
    };
    let request = engine.request(prompt.to_vec(), params).expect("request");
    let (outputs, _) = engine.generate(vec![request]).expect("generate");
    let best = outputs[0].best();
    (best.token_ids.clone(), best.score)
}

/// Decodes from position 1,000 to 1,047 across the first tables' end (1,024 positions), once
/// while the tables grow and once with them grown.
fn decoding_across_the_growth_equals_decoding_with_grown_tables(engine: &Engine) {
    let rope = &engine.decoder().rope;
    assert_eq!(rope.tables(0).positions(), 1024, "a fresh model's tables");
    let prompt = long_prompt(engine, 1000);
    let growing = greedy(engine, &prompt, 48);
    assert_eq!(growing.0.len(), 48);
    assert_eq!(
        rope.tables(0).positions(),
        2048,
        "the tables grew to the next power of two"
    );
    let grown = greedy(engine, &prompt, 48);
    // The same arithmetic on the same values: equal to the last bit, the log-probabilities
    // included (a rotation off by even one position moves them while the tokens may hold).
    assert_eq!(growing, grown);
}

#[test]
fn q4_decoding_across_the_rope_tables_growth() {
    decoding_across_the_growth_equals_decoding_with_grown_tables(
        &common::lock(common::engine_q4()),
    );
}

#[test]
fn float32_decoding_across_the_rope_tables_growth() {
    decoding_across_the_growth_equals_decoding_with_grown_tables(&common::lock(
        common::engine_f32(),
    ));
}
