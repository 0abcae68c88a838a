//! Conformance against HuggingFace transformers on the same SmolLM2 weights. The reference
//! outputs are in `fixtures/smollm2_reference.json`, made by `fixtures/make_reference.py`.

mod common;

use beamline_engine::{Decoding, EarlyStopping, Engine, GenerationParams, Message};
use common::{
    engine_f32, engine_q4, engine_q4_float32, engine_q4_int16, engine_q4_int8, ids, lock, reference,
};

#[test]
fn tokenizer_ids_equal_the_models_own() {
    let engine = lock(engine_f32());
    let tok = engine.tokenizer();
    let cases = reference()["tokenizer"]["cases"].as_array().unwrap();
    assert!(cases.len() >= 20);
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let name = case["name"].as_str().unwrap();
        // transformers' GGUF conversion ignores `tokenizer.ggml.pre = smollm`, which splits
        // digits off the whitespace before them (as llama.cpp and the original SmolLM2
        // tokenizer do); beamline follows the model, so those cases compare with the
        // digit-split ids the script also records.
        let want = if case["digit_split_differs"].as_bool().unwrap() {
            ids(&case["ids_no_special_digit_split"])
        } else {
            ids(&case["ids"])
        };
        assert_eq!(
            tok.encode(text, true).unwrap(),
            want,
            "case {name}: {text:?}"
        );
        assert_eq!(
            tok.encode(text, false).unwrap(),
            want,
            "case {name} without special tokens"
        );
        let decoded = tok.decode(&ids(&case["ids"]), false).unwrap();
        assert_eq!(
            decoded,
            case["decoded"].as_str().unwrap(),
            "decode of case {name}"
        );
        let skipped = tok.decode(&ids(&case["ids"]), true).unwrap();
        assert_eq!(
            skipped,
            case["decoded_skip_special"].as_str().unwrap(),
            "decode (skip special) of case {name}"
        );
    }
}

#[test]
fn chat_template_renders_like_transformers() {
    let engine = lock(engine_f32());
    for conv in reference()["chat"]["conversations"].as_array().unwrap() {
        let messages: Vec<Message> = serde_json::from_value(conv["messages"].clone()).unwrap();
        let text = engine.render_chat(&messages).unwrap();
        assert_eq!(
            text,
            conv["text"].as_str().unwrap(),
            "conversation {}",
            conv["name"]
        );
        let prompt = beamline_engine::Prompt::Chat(messages);
        assert_eq!(
            engine.prompt_ids(&prompt).unwrap(),
            ids(&conv["ids"]),
            "ids of {}",
            conv["name"]
        );
    }
}

fn greedy(max_new_tokens: usize) -> GenerationParams {
    GenerationParams {
        max_new_tokens,
        ..GenerationParams::default()
    }
}

#[test]
fn greedy_float32_is_identical_batched() {
    let engine = lock(engine_f32());
    let prompts = reference()["greedy"]["prompts"].as_array().unwrap();
    assert!(prompts.len() >= 10);
    let requests = prompts
        .iter()
        .map(|p| engine.request(ids(&p["prompt_ids"]), greedy(32)).unwrap())
        .collect();
    let (outputs, _) = engine.generate(requests).unwrap();
    for (p, out) in prompts.iter().zip(&outputs) {
        assert_eq!(
            out.best().token_ids,
            ids(&p["generated_ids"]),
            "prompt {}",
            p["name"]
        );
        assert_eq!(
            out.best().text.trim_end(),
            p["text"]
                .as_str()
                .unwrap()
                .trim_end_matches("<|im_end|>")
                .trim_end(),
            "text of {}",
            p["name"]
        );
    }
}

/// Share of the reference's greedy tokens (float32 weights and activations) that `engine`
/// reproduces before each prompt's first divergence, all prompts decoded in one batch.
fn greedy_agreement(engine: &Engine, label: &str) -> f64 {
    let prompts = reference()["greedy"]["prompts"].as_array().unwrap();
    let requests = prompts
        .iter()
        .map(|p| engine.request(ids(&p["prompt_ids"]), greedy(32)).unwrap())
        .collect();
    let (outputs, _) = engine.generate(requests).unwrap();
    let (mut same, mut total) = (0usize, 0usize);
    for (p, out) in prompts.iter().zip(&outputs) {
        let want = ids(&p["generated_ids"]);
        let prefix = want
            .iter()
            .zip(&out.best().token_ids)
            .take_while(|(a, b)| a == b)
            .count();
        eprintln!(
            "{label} {:>16}: first {prefix:>2} of {} tokens agree",
            p["name"].as_str().unwrap(),
            want.len()
        );
        same += prefix;
        total += want.len();
    }
    let agreement = same as f64 / total as f64;
    eprintln!(
        "{label}: {:.1}% of greedy tokens before the first divergence",
        100.0 * agreement
    );
    agreement
}

#[test]
fn greedy_q4_1_with_float32_activations_agrees_with_the_float_reference() {
    let engine = lock(engine_q4_float32());
    let agreement = greedy_agreement(&engine, "Q4_1, float32 activations");
    // The Q4_1 weights are used as stored and activations stay float32, so only summation
    // order differs from the reference: every prompt should agree but for near-ties.
    assert!(agreement > 0.9, "agreement {agreement}");
}

#[test]
fn greedy_q4_1_with_bfloat16_products_stays_close_to_the_float_reference() {
    let engine = lock(engine_q4());
    if !(engine.uses_bf16() && beamline_engine::cpu::bf16_products_available()) {
        eprintln!("no bfloat16 kernel faster than float32 here (AMX; AVX-512 BF16 on AMD): the default path is the float32 one");
        return;
    }
    let agreement = greedy_agreement(&engine, "Q4_1, bfloat16 products");
    // Activations and weights rounded to bfloat16 (8 significant bits) turn a few near-ties;
    // measured 83% on SmolLM2 (float32 activations: over 90%).
    assert!(agreement > 0.7, "agreement {agreement}");
}

#[test]
fn greedy_q4_1_with_16_bit_activations_stays_close_to_the_float_reference() {
    let engine = lock(engine_q4_int16());
    if !engine.uses_int16() {
        eprintln!("no 16-bit path here: AVX2 CPUs, and AVX-512 ones with VNNI");
        return;
    }
    let agreement = greedy_agreement(&engine, "Q4_1, 16-bit activations");
    // A relative step of 2^-15 per block turns only the nearest ties (float32 activations:
    // over 90%).
    assert!(agreement > 0.85, "agreement {agreement}");
}

#[test]
fn greedy_q4_1_with_8_bit_activations_keeps_part_of_the_float_reference() {
    let engine = lock(engine_q4_int8());
    if !engine.uses_int8() {
        eprintln!("no 8-bit path here: it runs on AVX2 CPUs without AVX-512");
        return;
    }
    let agreement = greedy_agreement(&engine, "Q4_1, 8-bit activations");
    // The opt-in path's fidelity: 48% of greedy tokens before the first divergence on a Zen 3,
    // 29% on an AMX Xeon, whose other kernels (AVX-512) sum in another order and so turn other
    // near-ties (float32 activations: 100%, bfloat16: 83-95%). This guards against a broken
    // kernel, which gives gibberish from the first token; the perplexity test below bounds the
    // path's quality.
    assert!(agreement > 0.2, "agreement {agreement}");
}

/// Perplexity of the reference texts with `rounded` against float32 activations: within
/// `tolerance`, and not identical (the rounded kernels ran).
fn perplexity_stays_close(rounded: &Engine, label: &str, tolerance: f64) {
    let float32 = lock(engine_q4_float32());
    for text in reference()["perplexity"]["texts"].as_array().unwrap() {
        let text = text["text"].as_str().unwrap();
        let (a, b) = (rounded.score(text).unwrap(), float32.score(text).unwrap());
        eprintln!(
            "perplexity {label} {:.4}, float32 activations {:.4}",
            a.perplexity, b.perplexity
        );
        assert!(
            (a.perplexity / b.perplexity - 1.0).abs() < tolerance,
            "{text:?}: {} vs {}",
            a.perplexity,
            b.perplexity
        );
        assert_ne!(a.nll, b.nll, "the {label} kernels were not used");
    }
}

#[test]
fn q4_1_perplexity_with_bfloat16_products_is_within_one_percent_of_float32_activations() {
    let bf16 = lock(engine_q4());
    if !(bf16.uses_bf16() && beamline_engine::cpu::bf16_products_available()) {
        eprintln!("no bfloat16 kernel faster than float32 here: nothing to compare");
        return;
    }
    perplexity_stays_close(&bf16, "bfloat16 products", 0.01);
}

#[test]
fn q4_1_perplexity_with_16_bit_activations_is_within_a_tenth_of_a_percent_of_float32_activations() {
    let int16 = lock(engine_q4_int16());
    if !int16.uses_int16() {
        eprintln!("no 16-bit path here: AVX2 CPUs, and AVX-512 ones with VNNI");
        return;
    }
    perplexity_stays_close(&int16, "16-bit activations", 0.001);
}

#[test]
fn q4_1_perplexity_with_8_bit_activations_is_within_five_percent_of_float32_activations() {
    let int8 = lock(engine_q4_int8());
    if !int8.uses_int8() {
        eprintln!("no 8-bit path here: it runs on AVX2 CPUs without AVX-512");
        return;
    }
    // Measured on a Zen 3: +0.27%, +0.34% and +3.1% on the three texts.
    perplexity_stays_close(&int8, "8-bit activations", 0.05);
}

#[test]
fn beam_search_matches_sequences_and_scores() {
    let engine = lock(engine_f32());
    let beam = &reference()["beam"];
    let max_new_tokens = beam["max_new_tokens"].as_u64().unwrap() as usize;
    for prompt in beam["prompts"].as_array().unwrap() {
        for run in prompt["runs"].as_array().unwrap() {
            let s = &run["settings"];
            let early_stopping = match &s["early_stopping"] {
                serde_json::Value::Bool(true) => EarlyStopping::True,
                serde_json::Value::Bool(false) => EarlyStopping::False,
                _ => EarlyStopping::Never,
            };
            let params = GenerationParams {
                max_new_tokens,
                decoding: Decoding::Beam,
                num_beams: s["num_beams"].as_u64().unwrap() as usize,
                num_return_sequences: s["num_return_sequences"].as_u64().unwrap() as usize,
                length_penalty: s["length_penalty"].as_f64().unwrap(),
                early_stopping,
                ..GenerationParams::default()
            };
            let request = engine.request(ids(&prompt["prompt_ids"]), params).unwrap();
            let (outputs, _) = engine.generate(vec![request]).unwrap();
            let got = &outputs[0].candidates;
            let want = run["sequences"].as_array().unwrap();
            assert_eq!(got.len(), want.len(), "{} {s}", prompt["name"]);
            for (g, w) in got.iter().zip(want) {
                assert_eq!(
                    g.token_ids,
                    ids(&w["generated_ids"]),
                    "{} {s}",
                    prompt["name"]
                );
                let ws = w["sequences_score"].as_f64().unwrap();
                assert!(
                    (g.score - ws).abs() <= 1e-4 * ws.abs().max(1.0),
                    "{} {s}: score {} vs {ws}",
                    prompt["name"],
                    g.score
                );
            }
        }
    }
}

#[test]
fn perplexity_within_one_percent() {
    let engine = lock(engine_f32());
    for text in reference()["perplexity"]["texts"].as_array().unwrap() {
        let score = engine.score(text["text"].as_str().unwrap()).unwrap();
        let want_ppl = text["perplexity"].as_f64().unwrap();
        assert_eq!(
            score.tokens as u64,
            text["tokens"].as_u64().unwrap(),
            "{}",
            text["name"]
        );
        assert!(
            (score.perplexity / want_ppl - 1.0).abs() < 0.01,
            "{}: {} vs {want_ppl}",
            text["name"],
            score.perplexity
        );
        assert!(
            (score.nll - text["nll_sum"].as_f64().unwrap()).abs() < 1e-3 * score.nll,
            "{}",
            text["name"]
        );
    }
}

#[test]
fn last_position_logits_match() {
    let engine = lock(engine_f32());
    for probe in reference()["logits_probe"]["prompts"].as_array().unwrap() {
        let logits = engine.prompt_logits(&ids(&probe["ids"])).unwrap();
        let last = logits.last().unwrap();
        for pair in probe["top"].as_array().unwrap() {
            let (id, value) = (
                pair[0].as_u64().unwrap() as usize,
                pair[1].as_f64().unwrap(),
            );
            assert!(
                (last[id] as f64 - value).abs() < 1e-3 * value.abs().max(1.0),
                "{}: logit {id}: {} vs {value}",
                probe["name"],
                last[id]
            );
        }
        let sum: f64 = last.iter().map(|&v| v as f64).sum();
        let want = probe["sum"].as_f64().unwrap();
        assert!(
            (sum - want).abs() < 1e-4 * want.abs(),
            "{}: sum {sum} vs {want}",
            probe["name"]
        );
    }
}

/// SmolLM2's output layer is its token table (tied, Q8_0 in the file). Held as CPU blocks, it is
/// held once: the lookups read the output layer's blocks, and the tokens embed as the file's
/// own table does (the greedy tests above run through those lookups).
#[test]
fn the_tied_token_table_is_held_once() {
    let engine = lock(engine_q4());
    let decoder = engine.decoder();
    if !matches!(
        decoder.lm_head,
        beamline_engine::quant::Linear::Blocks { .. }
    ) {
        eprintln!("no AVX2 on this CPU: the output layer is not held as blocks");
        return;
    }
    assert!(decoder.embed.shares_storage_with(&decoder.lm_head));
    // 49,152 x 576 codes with a 4-byte scale per 32: the table once, not twice.
    let table = 49_152 * 576 / 32 * 36;
    let layers: usize = engine.weight_bytes() - decoder.lm_head.weight_bytes();
    assert_eq!(decoder.lm_head.weight_bytes(), table);
    assert!(layers < table * 3, "layers {layers} bytes");
}
