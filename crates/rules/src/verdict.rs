//! What checking one text produces: a [`Verdict`] with its [`Hit`]s.
//!
//! The verdict is everything the worker stores and counts: whether the
//! candidate passed, the text to store (after redaction and normalisation),
//! the split-off reasoning, each hit (rule, kind, action, where, why; the
//! worker turns these into `beamline_rule_hits_total{rule,action}`), and the
//! rule set's name and content hash so a stored result says which rules
//! judged it.

use serde::{Deserialize, Serialize};

use crate::rule::{Action, RuleKind};

/// One rule firing on one text.
///
/// `start` and `end` are **character** (Unicode scalar value) offsets into
/// the text that was passed to [`RuleSet::check`](crate::RuleSet::check),
/// whatever earlier rules did to the working text:
///
/// - text copied unchanged maps one to one;
/// - a hit on text that an earlier rule *replaced* (a normalised character,
///   a redaction marker, a collapsed whitespace run) covers the whole input
///   range that was replaced, so it may be wider than what matched;
/// - text an earlier rule *removed* (trimmed whitespace, control
///   characters, the reasoning section) is never pointed at by itself: a
///   span is only stretched across it when it covers text on both sides;
/// - a whole-text check (`json`, `min_chars`, ...) spans the working text
///   it judged, e.g. only the answer after a reasoning split;
/// - for `truncate`, the span is the part that was cut off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hit {
    /// The rule's `name`.
    pub rule: String,
    /// The rule's `kind`.
    pub kind: RuleKind,
    /// What was done.
    pub action: Action,
    /// First character of the span in the input text.
    pub start: usize,
    /// One past the last character of the span in the input text.
    pub end: usize,
    /// Why, in words (the matched word, the schema violation, ...).
    pub message: Option<String>,
}

/// The result of applying a rule set to one candidate text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// False when any `reject` rule hit.
    pub passed: bool,
    /// The text after normalisation, reasoning split, redaction and
    /// truncation: what should be stored.
    pub text: String,
    /// The reasoning section, when a `reasoning_split` rule found one.
    pub reasoning: Option<String>,
    /// Every hit, in rule order, then in text order.
    pub hits: Vec<Hit>,
    /// The rule set's name.
    pub rule_set: String,
    /// `sha256:<hex>` of the rule file and the files it references.
    pub rule_set_version: String,
}

impl Verdict {
    /// The hits of rules that rejected the text.
    pub fn rejections(&self) -> impl Iterator<Item = &Hit> {
        self.hits.iter().filter(|h| h.action == Action::Reject)
    }
}
