//! The `reasoning_split` rule: separating a model's thinking from its answer.
//!
//! Reasoning models (DeepSeek-R1 style) write `<think>…</think>` before the
//! answer; the thinking is kept (in [`Verdict::reasoning`](crate::Verdict))
//! but later rules must judge only the answer, and the stored text is the
//! answer. Chat templates often put `<think>` into the prompt, so the output
//! then starts inside the reasoning and only has the closing tag.
//!
//! Only the first section is split. Cases, with `O`/`C` the open/close tags:
//!
//! - `… O reasoning C answer`: the section and the whitespace after `C` are
//!   removed (and whitespace before `O` when nothing else precedes it);
//! - `reasoning C answer` (no `O` before `C`): everything up to `C` is
//!   reasoning;
//! - `O reasoning` with nothing but whitespace before `O` and no `C`: the
//!   output was cut off while thinking; all of it is reasoning, the answer is
//!   empty;
//! - no tags (or an `O` later in the text with no `C`): nothing is split and
//!   `reasoning` stays unset.
//!
//! The reasoning is trimmed of surrounding whitespace.

use crate::edits::Edit;

/// The open and close tags (default `<think>` and `</think>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ThinkTags {
    pub(crate) open: String,
    pub(crate) close: String,
}

impl Default for ThinkTags {
    fn default() -> Self {
        ThinkTags {
            open: "<think>".into(),
            close: "</think>".into(),
        }
    }
}

/// The result of a split: the reasoning and the edit that removes it from
/// the working text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Split {
    pub(crate) reasoning: String,
    pub(crate) edit: Edit,
}

impl ThinkTags {
    /// Splits `text`, or `None` when it has no reasoning section.
    pub(crate) fn split(&self, text: &str) -> Option<Split> {
        // Most outputs have no tags: one search for what both tags end with
        // (`think>`) rules that out without searching for each tag.
        let common = common_suffix(&self.open, &self.close);
        if common.len() >= 3 && !text.contains(common) {
            return None;
        }
        let open = text.find(self.open.as_str());
        let close_from = open.map_or(0, |o| o + self.open.len());
        let close = text
            .get(close_from..)
            .and_then(|rest| rest.find(self.close.as_str()))
            .map(|c| c + close_from);
        let leading_ws_only = |o: usize| text[..o].trim().is_empty();
        match (open, close) {
            (Some(o), Some(c)) => {
                let start = if leading_ws_only(o) { 0 } else { o };
                Some(self.cut(text, start, o + self.open.len(), c))
            }
            (None, Some(c)) => Some(self.cut(text, 0, 0, c)),
            (Some(o), None) if leading_ws_only(o) => Some(Split {
                reasoning: text[o + self.open.len()..].trim().to_string(),
                edit: Edit::delete(0, text.len()),
            }),
            _ => None,
        }
    }

    /// Reasoning is `text[inner_start..close]`; the edit removes
    /// `start..` the close tag and the whitespace after it.
    fn cut(&self, text: &str, start: usize, inner_start: usize, close: usize) -> Split {
        let after_tag = close + self.close.len();
        let rest = &text[after_tag..];
        let end = after_tag + (rest.len() - rest.trim_start().len());
        Split {
            reasoning: text[inner_start..close].trim().to_string(),
            edit: Edit::delete(start, end),
        }
    }
}

/// The longest common suffix of `a` and `b` (on a char boundary of both).
fn common_suffix<'a>(a: &'a str, b: &str) -> &'a str {
    let n = a
        .chars()
        .rev()
        .zip(b.chars().rev())
        .take_while(|(x, y)| x == y)
        .map(|(x, _)| x.len_utf8())
        .sum::<usize>();
    &a[a.len() - n..]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(text: &str) -> Option<(String, usize, usize)> {
        ThinkTags::default()
            .split(text)
            .map(|s| (s.reasoning, s.edit.start, s.edit.end))
    }

    #[test]
    fn closed_section() {
        let text = "<think>\nLet me see.\n</think>\n\nThe answer is 4.";
        assert_eq!(split(text), Some(("Let me see.".into(), 0, 30)));
        assert_eq!(&text[30..], "The answer is 4.");
    }

    #[test]
    fn open_tag_in_prompt() {
        let text = "思考中……</think>答案是四。";
        let s = split(text);
        assert_eq!(s, Some(("思考中……".into(), 0, 23)));
        assert_eq!(&text[23..], "答案是四。");
    }

    #[test]
    fn unclosed_at_start() {
        let text = "  <think>still thinking";
        assert_eq!(split(text), Some(("still thinking".into(), 0, 23)));
    }

    #[test]
    fn none_or_literal_mid_text() {
        assert_eq!(split("just an answer"), None);
        assert_eq!(split("use the <think> tag"), None);
    }

    #[test]
    fn common_suffix_of_tags() {
        assert_eq!(common_suffix("<think>", "</think>"), "think>");
        assert_eq!(common_suffix("<思考>", "</思考>"), "思考>");
        assert_eq!(common_suffix("[a]", "[b]"), "]");
        let custom = ThinkTags {
            open: "<r>".into(),
            close: "</r>".into(),
        };
        assert_eq!(
            custom.split("x</r>y").map(|s| s.reasoning),
            Some("x".to_string())
        );
    }

    #[test]
    fn text_before_section_is_kept() {
        let text = "Sure. <think>hm</think> Yes.";
        assert_eq!(split(text), Some(("hm".into(), 6, 24)));
    }
}
