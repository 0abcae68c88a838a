//! The vocabulary of a rule set: kinds, actions and the compiled rule.
//!
//! [`RuleKind`] and [`Action`] are public because they appear in every
//! [`Hit`](crate::Hit) (and so in metrics labels and JSON output); their
//! serde names are the strings users write in the TOML files. The compiled
//! `Rule` is private: it is what `compile` turns a TOML
//! table into and what the engine runs.

use serde::{Deserialize, Serialize};

use crate::normalize::NormalizeOptions;
use crate::pattern::ScanRegex;
use crate::reasoning::ThinkTags;
use crate::schema::SchemaCheck;
use crate::words::WordMatcher;

/// What a rule checks or does (the `kind` key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    /// Listed words or phrases must not occur (case- and width-insensitive).
    DenyWords,
    /// A regular expression must not match anywhere.
    Regex,
    /// At least `min` characters.
    MinChars,
    /// At most `max` characters (the `truncate` action cuts the text).
    MaxChars,
    /// At most `max` tokens, as counted by the caller.
    MaxTokens,
    /// The text must parse as JSON.
    Json,
    /// The text must be JSON valid against a JSON Schema.
    JsonSchema,
    /// The whole text must match a regular expression.
    Pattern,
    /// Brackets and double quotes must be balanced.
    Balanced,
    /// The text must end like a complete sentence.
    CompleteSentence,
    /// Transforms the text (trim, collapse whitespace, NFC, strip controls).
    Normalize,
    /// Moves a `<think>…</think>` section out of the text into `reasoning`.
    ReasoningSplit,
}

impl RuleKind {
    /// The name used in rule files and output (`"deny_words"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            RuleKind::DenyWords => "deny_words",
            RuleKind::Regex => "regex",
            RuleKind::MinChars => "min_chars",
            RuleKind::MaxChars => "max_chars",
            RuleKind::MaxTokens => "max_tokens",
            RuleKind::Json => "json",
            RuleKind::JsonSchema => "json_schema",
            RuleKind::Pattern => "pattern",
            RuleKind::Balanced => "balanced",
            RuleKind::CompleteSentence => "complete_sentence",
            RuleKind::Normalize => "normalize",
            RuleKind::ReasoningSplit => "reasoning_split",
        }
    }

    /// True for kinds that only transform the text and never produce hits.
    pub fn is_transform(self) -> bool {
        matches!(self, RuleKind::Normalize | RuleKind::ReasoningSplit)
    }
}

impl std::fmt::Display for RuleKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happens when a rule hits (the `action` key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// The candidate fails.
    Reject,
    /// The matched span is replaced by the rule's `replacement`.
    Redact,
    /// Recorded only.
    Flag,
    /// The text is cut short (`max_chars` only).
    Truncate,
}

impl Action {
    /// The name used in rule files, output and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Reject => "reject",
            Action::Redact => "redact",
            Action::Flag => "flag",
            Action::Truncate => "truncate",
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rule as it runs: validated, with its matchers built.
#[derive(Debug)]
pub(crate) struct Rule {
    pub(crate) name: String,
    pub(crate) kind: RuleKind,
    /// `None` for transforms.
    pub(crate) action: Option<Action>,
    /// Text that replaces a redacted span.
    pub(crate) replacement: String,
    /// `deny_words` only: hand the words to the decoder as banned phrases.
    pub(crate) ban_during_decoding: bool,
    pub(crate) op: Op,
}

/// The kind-specific part of a compiled rule.
#[derive(Debug)]
pub(crate) enum Op {
    DenyWords(Box<WordMatcher>),
    Regex(ScanRegex),
    MinChars(usize),
    MaxChars(usize),
    MaxTokens(usize),
    Json,
    JsonSchema(Box<SchemaCheck>),
    Pattern(ScanRegex),
    Balanced,
    CompleteSentence,
    Normalize(NormalizeOptions),
    ReasoningSplit(ThinkTags),
}

/// A public summary of one rule of a set, for listings and for
/// pre-registering metrics labels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleInfo {
    /// The rule's `name`.
    pub name: String,
    /// Its `kind`.
    pub kind: RuleKind,
    /// Its action; `None` for transforms.
    pub action: Option<Action>,
}
