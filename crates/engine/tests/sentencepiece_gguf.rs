//! SentencePiece vocabularies in GGUF files (`tokenizer.ggml.model = "llama"`): the tokenizer
//! rebuilt from the metadata gives transformers' ids (BOS included) and decoded text for tricky
//! strings. The file and the reference are made by `fixtures/make_spm_gguf.py`.

use std::path::PathBuf;

use beamline_engine::tokenizer::Tokenizer;
use beamline_gguf::GgufFile;
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[test]
fn sentencepiece_gguf_tokenizes_as_transformers() {
    let file = GgufFile::open(&fixture("spm_tiny.gguf")).expect("open the fixture");
    let tokenizer = Tokenizer::from_gguf(&file).expect("build the tokenizer");
    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("spm_reference.json")).expect("reference"),
    )
    .expect("reference JSON");
    assert_eq!(tokenizer.bos_id, Some(1));
    assert_eq!(tokenizer.eos_ids, vec![2]);
    let cases = reference["cases"].as_array().expect("cases");
    assert!(cases.len() >= 20);
    let mut failures = Vec::new();
    for case in cases {
        let text = case["text"].as_str().expect("text");
        let want: Vec<u32> = serde_json::from_value(case["ids"].clone()).expect("ids");
        let got = tokenizer.encode(text, true).expect("encode");
        let decoded = tokenizer.decode(&got, true).expect("decode");
        if got != want || decoded != case["decoded"].as_str().expect("decoded") {
            failures.push(format!(
                "{text:?}: ids {got:?} (want {want:?}), decoded {decoded:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
