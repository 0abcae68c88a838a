//! SentencePiece vocabularies in GGUF files (`tokenizer.ggml.model = "llama"`: Llama 2,
//! Mistral, TinyLlama and most other pre-Llama-3 models), rebuilt as transformers rebuilds them
//! (`transformers.integrations.gguf`): a BPE model with byte fallback whose merges are recovered
//! from the vocabulary and its scores, a `Metaspace` pre-tokenizer that prepends `▁` to the
//! first word, and BOS added unless the file says not to.

use serde_json::{json, Value};

/// The BPE merges a scored vocabulary implies (transformers' `generate_merges` with scores):
/// every split of a token into two tokens of the vocabulary, best score first; equal scores
/// keep the longer left part, then the longer right part, then vocabulary order.
pub fn merges_from_scores(tokens: &[&str], scores: &[f64]) -> Vec<String> {
    // As a Python dict built from the lists: a repeated token keeps its last index and score,
    // and its first position.
    let mut index: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    let mut score: std::collections::HashMap<&str, f64> = std::collections::HashMap::new();
    let mut order: Vec<&str> = Vec::new();
    for (i, &token) in tokens.iter().enumerate() {
        if index.insert(token, i).is_none() {
            order.push(token);
        }
        score.insert(token, scores.get(i).copied().unwrap_or(0.0));
    }
    struct Merge<'a> {
        left: &'a str,
        right: &'a str,
        score: f64,
        left_chars: usize,
        right_chars: usize,
    }
    let mut merges: Vec<Merge> = Vec::new();
    for &token in &order {
        let mut local: Vec<Merge> = token
            .char_indices()
            .skip(1)
            .filter_map(|(at, _)| {
                let (left, right) = token.split_at(at);
                (index.contains_key(left) && index.contains_key(right)).then(|| Merge {
                    left,
                    right,
                    score: score[token],
                    left_chars: left.chars().count(),
                    right_chars: right.chars().count(),
                })
            })
            .collect();
        local.sort_by_key(|m| (index[m.left], index[m.right]));
        merges.extend(local);
    }
    // Stable, descending: ties keep their order, as Python's `sorted(..., reverse=True)`.
    merges.sort_by(|a, b| {
        (b.score, b.left_chars, b.right_chars)
            .partial_cmp(&(a.score, a.left_chars, a.right_chars))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    merges
        .into_iter()
        .map(|m| format!("{} {}", m.left, m.right))
        .collect()
}

/// The `tokenizer.json` parts of a SentencePiece vocabulary: model, pre-tokenizer, decoder.
/// The file's own merges are used when it has them; else they are recovered from the scores.
pub fn spec_parts(
    tokens: &[&str],
    scores: &[f64],
    merges: Option<Vec<&str>>,
) -> (Value, Value, Value) {
    let merges = match merges {
        Some(merges) => json!(merges),
        None => json!(merges_from_scores(tokens, scores)),
    };
    let model = json!({
        "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
        "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
        "vocab": super::vocab_json(tokens), "merges": merges,
    });
    let pre_tokenizer = json!({"type": "Metaspace", "replacement": "\u{2581}", "prepend_scheme": "first", "split": false});
    let decoder = json!({"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "},
        {"type": "ByteFallback"},
        {"type": "Fuse"},
        {"type": "Strip", "content": " ", "start": 1, "stop": 0},
    ]});
    (model, pre_tokenizer, decoder)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_come_best_score_first_from_every_split() {
        let tokens = ["a", "b", "c", "ab", "bc", "abc", "▁", "▁a"];
        let scores = [0.0, 0.0, 0.0, -1.0, -2.0, -3.0, 0.0, -0.5];
        assert_eq!(
            merges_from_scores(&tokens, &scores),
            vec!["▁ a", "a b", "b c", "ab c", "a bc"]
        );
    }
}
