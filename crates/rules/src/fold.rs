//! Case and width folding of a text for deny-word matching, with a way back.
//!
//! Deny words must match regardless of case and of full-width/half-width or
//! other compatibility forms ("ＩＮＴＥＲＮＡＬ ｏｎｌｙ" is "internal only").
//! The text is folded (NFKC, then lowercase) chunk by chunk; every chunk that
//! changed is remembered as an edit so that a match found in the folded text
//! maps back to whole characters of the unfolded one.
//!
//! ASCII letters are lowercased too (in one pass over the whole text), so
//! the word automaton can be case-sensitive, which keeps its fast literal
//! prefilters. A text with no uppercase ASCII and nothing to fold (Chinese,
//! Japanese, Korean, lowercase ASCII) is matched in place, without a copy.
//! A [`Folded`] does not borrow its input, so the engine can keep it for
//! every deny-word rule until the working text changes.

use crate::unicode::{for_each_unstable_chunk, transform_chunk, Form};

mod refold;

/// One changed chunk: `src` bytes of the input became `dst` bytes of the
/// folded text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FoldEdit {
    src_start: usize,
    src_end: usize,
    dst_start: usize,
    dst_end: usize,
}

/// A folded text and the map from its byte offsets back to the input's.
#[derive(Debug)]
pub(crate) struct Folded {
    /// `None` when the folded text is the input itself.
    text: Option<String>,
    edits: Vec<FoldEdit>,
}

impl Folded {
    /// Folds `input`; keeps no copy when nothing needs folding.
    pub(crate) fn new(input: &str) -> Self {
        let mut out: Option<String> = None;
        let mut edits = Vec::new();
        let mut copied = 0;
        let mut scratch = String::new();
        for_each_unstable_chunk(input, Form::Fold, |start, end| {
            let chunk = &input[start..end];
            transform_chunk(chunk, Form::Fold, &mut scratch);
            if scratch == chunk {
                return;
            }
            let out = out.get_or_insert_with(|| String::with_capacity(input.len() + 16));
            out.push_str(&input[copied..start]);
            let dst_start = out.len();
            out.push_str(&scratch);
            edits.push(FoldEdit {
                src_start: start,
                src_end: end,
                dst_start,
                dst_end: out.len(),
            });
            copied = end;
        });
        let text = match out {
            Some(mut out) => {
                out.push_str(&input[copied..]);
                out.make_ascii_lowercase();
                Some(out)
            }
            None if input.bytes().any(|b| b.is_ascii_uppercase()) => {
                Some(input.to_ascii_lowercase())
            }
            None => None,
        };
        Folded { text, edits }
    }

    /// The folded text of `input`, which must be the text this was made from.
    pub(crate) fn text<'s>(&'s self, input: &'s str) -> &'s str {
        self.text.as_deref().unwrap_or(input)
    }

    /// Maps a match start in the folded text to a byte offset of the input
    /// (the start of the input character it falls in).
    pub(crate) fn src_start(&self, dst: usize) -> usize {
        let idx = self.edits.partition_point(|e| e.dst_start <= dst);
        let Some(e) = idx.checked_sub(1).and_then(|i| self.edits.get(i)) else {
            return dst;
        };
        if dst < e.dst_end {
            e.src_start
        } else {
            e.src_end + (dst - e.dst_end)
        }
    }

    /// Maps an exclusive match end in the folded text to a byte offset of the
    /// input (the end of the input character it falls in).
    pub(crate) fn src_end(&self, dst: usize) -> usize {
        let idx = self.edits.partition_point(|e| e.dst_start < dst);
        let Some(e) = idx.checked_sub(1).and_then(|i| self.edits.get(i)) else {
            return dst;
        };
        if dst <= e.dst_end {
            e.src_end
        } else {
            e.src_end + (dst - e.dst_end)
        }
    }
}

/// Folds one deny word exactly the way texts are folded.
pub(crate) fn fold_word(word: &str) -> String {
    Folded::new(word).text.unwrap_or_else(|| word.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed() {
        let f = Folded::new("internal only 机密");
        assert!(f.text.is_none());
        assert_eq!(
            Folded::new("Internal ONLY").text("Internal ONLY"),
            "internal only"
        );
        assert_eq!(f.src_start(3), 3);
        assert_eq!(f.src_end(5), 5);
    }

    #[test]
    fn fullwidth_folds_and_maps_back() {
        let input = "XＩＮy";
        let f = Folded::new(input);
        assert_eq!(f.text(input), "xiny");
        // "in" is folded bytes 1..3; input bytes 1..7 (two 3-byte chars).
        assert_eq!(f.src_start(1), 1);
        assert_eq!(f.src_end(3), 7);
        assert_eq!(f.src_start(3), 7);
        assert_eq!(f.src_end(4), 8);
        // A match inside one expanded character maps to the whole character.
        let g = Folded::new("aﬁb");
        assert_eq!(g.text("aﬁb"), "afib");
        assert_eq!(g.src_start(2), 1);
        assert_eq!(g.src_end(2), 4);
    }

    #[test]
    fn words_fold_like_texts() {
        assert_eq!(fold_word("ＩＮＴＥＲＮＡＬ ｏｎｌｙ"), "internal only");
        assert_eq!(fold_word("Straße"), "straße");
        assert_eq!(fold_word("机密"), "机密");
    }
}
