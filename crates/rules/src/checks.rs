//! Format checks that only look at the text: JSON syntax, balanced
//! brackets, complete sentence.
//!
//! Each check returns `None` when the text passes or a [`Failure`] saying
//! where (character offsets of the working text; the engine maps them to the
//! input) and why, so that a user reading a hit can find the problem.

/// A failed check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    /// Character offsets in the checked text.
    pub(crate) start: usize,
    pub(crate) end: usize,
    pub(crate) message: String,
}

impl Failure {
    fn whole(text: &str, message: String) -> Self {
        Failure {
            start: 0,
            end: text.chars().count(),
            message,
        }
    }
}

/// The text must parse as one JSON value (surrounding whitespace allowed).
pub(crate) fn json(text: &str) -> Option<Failure> {
    match serde_json::from_str::<serde::de::IgnoredAny>(text) {
        Ok(_) => None,
        Err(e) => Some(Failure::whole(text, format!("not valid JSON: {e}"))),
    }
}

/// Opening bracket → closing bracket. ASCII pairs plus the full-width and
/// CJK pairs that Chinese and Japanese text use the same way.
const PAIRS: &[(char, char)] = &[
    ('(', ')'),
    ('[', ']'),
    ('{', '}'),
    ('（', '）'),
    ('［', '］'),
    ('｛', '｝'),
    ('【', '】'),
    ('「', '」'),
    ('『', '』'),
    ('《', '》'),
    ('〈', '〉'),
    ('“', '”'),
];

/// Brackets must nest and close; text between ASCII double quotes is
/// skipped (so `"a :) b"` is fine), a backslash escapes the next character
/// inside quotes, and the quotes themselves must close.
pub(crate) fn balanced(text: &str) -> Option<Failure> {
    let mut stack: Vec<(char, usize)> = Vec::new();
    let mut quote_open: Option<usize> = None;
    let mut escaped = false;
    for (pos, c) in text.chars().enumerate() {
        if quote_open.is_some() {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                quote_open = None;
            }
            continue;
        }
        if c == '"' {
            quote_open = Some(pos);
        } else if PAIRS.iter().any(|&(open, _)| open == c) {
            stack.push((c, pos));
        } else if let Some(&(open, _)) = PAIRS.iter().find(|&&(_, close)| close == c) {
            match stack.pop() {
                Some((top, _)) if top == open => {}
                Some((top, top_at)) => {
                    return Some(Failure {
                        start: pos,
                        end: pos + 1,
                        message: format!(
                            "`{c}` does not close `{top}` opened at character {top_at}"
                        ),
                    });
                }
                None => {
                    return Some(Failure {
                        start: pos,
                        end: pos + 1,
                        message: format!("`{c}` closes nothing"),
                    });
                }
            }
        }
    }
    if let Some(at) = quote_open {
        return Some(Failure {
            start: at,
            end: at + 1,
            message: "`\"` is never closed".into(),
        });
    }
    stack.pop().map(|(open, at)| Failure {
        start: at,
        end: at + 1,
        message: format!("`{open}` is never closed"),
    })
}

/// Sentence-ending punctuation.
const TERMINALS: &[char] = &['.', '!', '?', '。', '！', '？', '…'];
/// Closing quotes and brackets that may follow the terminal punctuation.
const CLOSERS: &[char] = &[
    '"', '\'', '”', '’', ')', ']', '}', '」', '』', '）', '》', '】', '»',
];

/// The text, ignoring trailing whitespace, must end with sentence-ending
/// punctuation, possibly followed by closing quotes or brackets.
pub(crate) fn complete_sentence(text: &str) -> Option<Failure> {
    let trimmed = text.trim_end();
    let core = trimmed.trim_end_matches(CLOSERS);
    if core.ends_with(TERMINALS) {
        return None;
    }
    let n = trimmed.chars().count();
    let (start, message) = match trimmed.chars().next_back() {
        Some(last) => (
            n - 1,
            format!("text ends with `{last}`, not with sentence-ending punctuation"),
        ),
        None => (0, "text is empty, not a complete sentence".to_string()),
    };
    Some(Failure {
        start,
        end: n,
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_syntax() {
        assert_eq!(json(" {\"a\": [1, 2]}\n"), None);
        let f = json("{\"a\": }").map(|f| (f.start, f.end));
        assert_eq!(f, Some((0, 7)));
        assert!(json("{} {}").is_some());
    }

    #[test]
    fn balanced_brackets_and_quotes() {
        assert_eq!(balanced("f(a[1], {b: \"x)\"}) （好）"), None);
        assert_eq!(balanced(r#"say "a \" :) b" ok"#), None);
        let f = balanced("(a]").map(|f| (f.start, f.message));
        assert_eq!(
            f,
            Some((2, "`]` does not close `(` opened at character 0".into()))
        );
        let f = balanced("a)").map(|f| (f.start, f.end, f.message));
        assert_eq!(f, Some((1, 2, "`)` closes nothing".into())));
        let f = balanced("【标题 (x)").map(|f| (f.start, f.message));
        assert_eq!(f, Some((0, "`【` is never closed".into())));
        let f = balanced("say \"hi").map(|f| (f.start, f.message));
        assert_eq!(f, Some((4, "`\"` is never closed".into())));
    }

    #[test]
    fn sentences() {
        assert_eq!(complete_sentence("Done.  \n"), None);
        assert_eq!(complete_sentence("好的。"), None);
        assert_eq!(complete_sentence("真的吗？"), None);
        assert_eq!(complete_sentence("He said \"stop!\""), None);
        assert_eq!(complete_sentence("（完。）"), None);
        let f = complete_sentence("and then").map(|f| (f.start, f.end, f.message));
        assert_eq!(
            f,
            Some((
                7,
                8,
                "text ends with `n`, not with sentence-ending punctuation".into()
            ))
        );
        assert!(complete_sentence("   ").is_some());
        assert!(complete_sentence("list:").is_some());
    }
}
