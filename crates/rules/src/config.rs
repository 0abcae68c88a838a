//! The rule-file format as TOML sees it, before validation.
//!
//! These structs are the user-facing contract of `configs/rules/*.toml`.
//! Every table denies unknown keys, so a typo (`acton = "reject"`) fails the
//! load with its line instead of being silently ignored; which keys a kind
//! accepts is checked afterwards by [`compile`](crate::compile), where the
//! rule's name is known.

use serde::Deserialize;
use toml::Spanned;

use crate::rule::{Action, RuleKind};

/// A whole rule file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRuleSet {
    /// Free-form version label; the content hash is recorded either way.
    pub(crate) version: Option<String>,
    /// What the set is for.
    #[allow(dead_code)] // documentation for people reading the file
    pub(crate) description: Option<String>,
    /// The rules, in the order they run.
    #[serde(default, rename = "rule")]
    pub(crate) rules: Vec<Spanned<RawRule>>,
}

/// One `[[rule]]` table. Which keys apply depends on `kind`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRule {
    pub(crate) name: String,
    pub(crate) kind: RuleKind,
    #[allow(dead_code)] // documentation for people reading the file
    pub(crate) description: Option<String>,
    pub(crate) action: Option<Action>,
    pub(crate) replacement: Option<String>,
    // deny_words
    pub(crate) words: Option<Vec<String>>,
    pub(crate) words_file: Option<String>,
    pub(crate) ban_during_decoding: Option<bool>,
    // regex, pattern
    pub(crate) pattern: Option<String>,
    pub(crate) case_insensitive: Option<bool>,
    pub(crate) max_scan_bytes: Option<usize>,
    // min_chars, max_chars, max_tokens
    pub(crate) min: Option<usize>,
    pub(crate) max: Option<usize>,
    // json_schema
    pub(crate) schema: Option<toml::Value>,
    pub(crate) schema_file: Option<String>,
    // normalize
    pub(crate) trim: Option<bool>,
    pub(crate) collapse_whitespace: Option<bool>,
    pub(crate) nfc: Option<bool>,
    pub(crate) strip_control: Option<bool>,
    // reasoning_split
    pub(crate) open_tag: Option<String>,
    pub(crate) close_tag: Option<String>,
}

impl RawRule {
    /// The kind-specific keys this table sets (not `name`, `kind`,
    /// `description`, which every kind has).
    pub(crate) fn keys_set(&self) -> Vec<&'static str> {
        let present = [
            ("action", self.action.is_some()),
            ("replacement", self.replacement.is_some()),
            ("words", self.words.is_some()),
            ("words_file", self.words_file.is_some()),
            ("ban_during_decoding", self.ban_during_decoding.is_some()),
            ("pattern", self.pattern.is_some()),
            ("case_insensitive", self.case_insensitive.is_some()),
            ("max_scan_bytes", self.max_scan_bytes.is_some()),
            ("min", self.min.is_some()),
            ("max", self.max.is_some()),
            ("schema", self.schema.is_some()),
            ("schema_file", self.schema_file.is_some()),
            ("trim", self.trim.is_some()),
            ("collapse_whitespace", self.collapse_whitespace.is_some()),
            ("nfc", self.nfc.is_some()),
            ("strip_control", self.strip_control.is_some()),
            ("open_tag", self.open_tag.is_some()),
            ("close_tag", self.close_tag.is_some()),
        ];
        present
            .into_iter()
            .filter_map(|(key, set)| set.then_some(key))
            .collect()
    }
}

/// The kind-specific keys each kind accepts.
pub(crate) fn keys_allowed(kind: RuleKind) -> &'static [&'static str] {
    match kind {
        RuleKind::DenyWords => &[
            "action",
            "replacement",
            "words",
            "words_file",
            "ban_during_decoding",
        ],
        RuleKind::Regex => &[
            "action",
            "replacement",
            "pattern",
            "case_insensitive",
            "max_scan_bytes",
        ],
        RuleKind::Pattern => &["action", "pattern", "case_insensitive", "max_scan_bytes"],
        RuleKind::MinChars => &["action", "min"],
        RuleKind::MaxChars | RuleKind::MaxTokens => &["action", "max"],
        RuleKind::JsonSchema => &["action", "schema", "schema_file"],
        RuleKind::Json | RuleKind::Balanced | RuleKind::CompleteSentence => &["action"],
        RuleKind::Normalize => &["trim", "collapse_whitespace", "nfc", "strip_control"],
        RuleKind::ReasoningSplit => &["open_tag", "close_tag"],
    }
}

/// The actions each kind accepts; the first is the default.
pub(crate) fn actions_allowed(kind: RuleKind) -> &'static [Action] {
    match kind {
        RuleKind::DenyWords | RuleKind::Regex => &[Action::Reject, Action::Redact, Action::Flag],
        RuleKind::MaxChars => &[Action::Reject, Action::Flag, Action::Truncate],
        RuleKind::Normalize | RuleKind::ReasoningSplit => &[],
        _ => &[Action::Reject, Action::Flag],
    }
}

/// 1-based line and column (in characters) of byte offset `at` in `text`.
pub(crate) fn line_col(text: &str, at: usize) -> (usize, usize) {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column() {
        let text = "a = 1\n机密 = 2\nc";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 6), (2, 1));
        assert_eq!(line_col(text, 13), (2, 4));
        assert_eq!(line_col(text, 100), (3, 2));
    }
}
