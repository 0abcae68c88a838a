//! A GPU prefills the prompts admitted together in one right-padded pass
//! (`Decoder::prefill_batch`); each prompt must get what a pass of its own gives it. Checked
//! here on the CPU with the float32 SmolLM2, since the CPU batcher prefills one prompt at a time.

mod common;

use tch::Tensor;

fn max_abs(t: &Tensor) -> f64 {
    t.abs().max().double_value(&[])
}

#[test]
fn padded_prefill_matches_one_prompt_at_a_time() {
    let engine = common::lock(common::engine_f32());
    let decoder = engine.decoder();
    let _guard = tch::no_grad_guard();
    let prompts: [&[u32]; 3] = [
        &[1, 4093, 198, 28120, 905, 2, 198],
        &[17, 42],
        &[
            1, 504, 2365, 6354, 16438, 27003, 690, 260, 23790, 2767, 30, 378, 504,
        ],
    ];
    let (last, batched) = decoder.prefill_batch(&prompts);
    assert_eq!(last.size(), [3, engine.config().hidden_size as i64]);
    for (i, prompt) in prompts.iter().enumerate() {
        let ids: Vec<i64> = prompt.iter().map(|&t| t as i64).collect();
        let (hidden, alone) = decoder.prefill(&Tensor::from_slice(&ids).unsqueeze(0));
        let want = hidden.get(0).get(prompt.len() as i64 - 1);
        let diff = max_abs(&(&want - last.get(i as i64)));
        assert!(
            diff <= 1e-4 * max_abs(&want),
            "prompt {i}: last hidden state differs by {diff}"
        );
        assert_eq!(batched.lens[i], prompt.len());
        let own = |all: &[Tensor], layer: usize| {
            all[layer]
                .narrow(0, i as i64, 1)
                .narrow(2, 0, prompt.len() as i64)
        };
        for (layer, (k, v)) in alone.keys.iter().zip(&alone.values).enumerate() {
            let (bk, bv) = (own(&batched.keys, layer), own(&batched.values, layer));
            assert_eq!(bk.size(), k.size(), "prompt {i} layer {layer}");
            let dk = max_abs(&(k - bk));
            let dv = max_abs(&(v - bv));
            assert!(
                dk <= 1e-4 * max_abs(k) && dv <= 1e-4 * max_abs(v),
                "prompt {i} layer {layer}: keys differ by {dk}, values by {dv}"
            );
        }
    }
}
