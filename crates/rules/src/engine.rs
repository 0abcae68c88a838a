//! Running compiled rules, in file order, over one text.
//!
//! The engine owns the *working text* and its [`OffsetMap`] back to the
//! input. Transform rules change the working text; check rules look at it
//! and record hits, whose spans are mapped to input character offsets right
//! away. A rejecting rule does not stop the run: every rule runs, so a
//! verdict lists everything that is wrong (and metrics count every hit).

use std::borrow::Cow;

use crate::checks::{self, Failure};
use crate::edits::{self, Edit};
use crate::fold::Folded;
use crate::offsets::{CharCounter, OffsetMap};
use crate::rule::{Action, Op, Rule};
use crate::truncate::cut_point;
use crate::verdict::Hit;

/// What running the rules produced (the verdict without the set's identity).
pub(crate) struct Outcome {
    pub(crate) passed: bool,
    pub(crate) text: String,
    pub(crate) reasoning: Option<String>,
    pub(crate) hits: Vec<Hit>,
}

/// A byte span of the working text with an optional message.
struct ByteSpan {
    start: usize,
    end: usize,
    message: Option<String>,
}

struct Working<'a> {
    text: Cow<'a, str>,
    /// The working text folded for deny words, shared by every deny-word
    /// rule and carried across edits where that is cheaper than folding
    /// again (see [`Folded::after_edits`]).
    folded: Option<Folded>,
    /// Some later rule is a deny-word rule (so the fold is worth keeping).
    fold_wanted: bool,
    /// The working text's length in characters, once counted.
    char_len: Option<usize>,
    map: OffsetMap,
    reasoning: Option<String>,
    hits: Vec<Hit>,
    passed: bool,
}

/// Runs `rules` over `input`.
pub(crate) fn run(rules: &[Rule], input: &str, token_count: Option<usize>) -> Outcome {
    let mut w = Working {
        text: Cow::Borrowed(input),
        folded: None,
        fold_wanted: false,
        char_len: None,
        map: OffsetMap::identity(),
        reasoning: None,
        hits: Vec::new(),
        passed: true,
    };
    let last_deny = rules.iter().rposition(|r| matches!(r.op, Op::DenyWords(_)));
    for (i, rule) in rules.iter().enumerate() {
        w.fold_wanted = last_deny.is_some_and(|last| i < last);
        w.apply_rule(rule, token_count);
    }
    Outcome {
        passed: w.passed,
        text: w.text.into_owned(),
        reasoning: w.reasoning,
        hits: w.hits,
    }
}

impl Working<'_> {
    fn apply_rule(&mut self, rule: &Rule, token_count: Option<usize>) {
        match &rule.op {
            Op::Normalize(options) => {
                for pass in options.passes() {
                    if let Some(edits) = pass(&self.text) {
                        self.edit(&edits);
                    }
                }
            }
            Op::ReasoningSplit(tags) => {
                if self.reasoning.is_some() {
                    return;
                }
                if let Some(split) = tags.split(&self.text) {
                    self.reasoning = Some(split.reasoning);
                    self.edit(&[split.edit]);
                }
            }
            Op::DenyWords(matcher) => {
                let folded = self.folded.get_or_insert_with(|| Folded::new(&self.text));
                let spans = matcher
                    .find_folded(&self.text, folded)
                    .into_iter()
                    .map(|m| ByteSpan {
                        start: m.start,
                        end: m.end,
                        message: Some(format!("matched \"{}\"", matcher.word(m.word))),
                    })
                    .collect();
                self.record_spans(rule, spans);
            }
            Op::Regex(regex) => {
                let scanned = regex.scanned(&self.text);
                let capped = scanned.capped.then_some(scanned.text.len());
                let spans = regex
                    .find_all(scanned.text)
                    .into_iter()
                    .map(|(start, end)| ByteSpan {
                        start,
                        end,
                        message: None,
                    })
                    .collect();
                self.record_spans(rule, spans);
                if let Some(scanned_len) = capped {
                    self.flag_unscanned(rule, scanned_len, regex.max_scan_bytes());
                }
            }
            Op::MinChars(min) => {
                let n = self.char_len();
                if n < *min {
                    let message = format!("{n} characters, fewer than the minimum of {min}");
                    self.record_failure(rule, whole(n, message));
                }
            }
            Op::MaxChars(max) => self.max_chars(rule, *max),
            Op::MaxTokens(max) => {
                if let Some(tokens) = token_count.filter(|t| t > max) {
                    let n = self.char_len();
                    let message = format!("{tokens} tokens, more than the maximum of {max}");
                    self.record_failure(rule, whole(n, message));
                }
            }
            Op::Json => {
                if let Some(failure) = checks::json(&self.text) {
                    self.record_failure(rule, failure);
                }
            }
            Op::JsonSchema(schema) => {
                if let Err(message) = schema.check(&self.text) {
                    let n = self.char_len();
                    self.record_failure(rule, whole(n, message));
                }
            }
            Op::Pattern(regex) => {
                let n = self.char_len();
                if regex.scanned(&self.text).capped {
                    let message = format!(
                        "text is longer than max_scan_bytes ({}), not checked against the pattern",
                        regex.max_scan_bytes()
                    );
                    self.record_failure(rule, whole(n, message));
                } else if !regex.is_match(&self.text) {
                    let message = "text does not match the pattern".to_string();
                    self.record_failure(rule, whole(n, message));
                }
            }
            Op::Balanced => {
                if let Some(failure) = checks::balanced(&self.text) {
                    self.record_failure(rule, failure);
                }
            }
            Op::CompleteSentence => {
                if let Some(failure) = checks::complete_sentence(&self.text) {
                    self.record_failure(rule, failure);
                }
            }
        }
    }

    /// Replaces the working text by `edits` applied to it.
    fn edit(&mut self, edits: &[Edit]) {
        let folded = match self.folded.take() {
            Some(f) if self.fold_wanted => f.after_edits(&self.text, edits),
            _ => None,
        };
        let (text, map) = edits::apply(&self.text, edits);
        self.map = self.map.then(map);
        self.text = Cow::Owned(text);
        self.folded = folded;
        self.char_len = None;
    }

    fn char_len(&mut self) -> usize {
        *self
            .char_len
            .get_or_insert_with(|| self.text.chars().count())
    }

    fn action(rule: &Rule) -> Action {
        rule.action.unwrap_or(Action::Flag)
    }

    fn push_hit(
        &mut self,
        rule: &Rule,
        action: Action,
        span: (usize, usize),
        message: Option<String>,
    ) {
        if action == Action::Reject {
            self.passed = false;
        }
        let (start, end) = self.map.span(span.0, span.1);
        self.hits.push(Hit {
            rule: rule.name.clone(),
            kind: rule.kind,
            action,
            start,
            end,
            message,
        });
    }

    /// Records hits for sorted, non-overlapping byte spans of the working
    /// text, and redacts them when the rule says so.
    fn record_spans(&mut self, rule: &Rule, spans: Vec<ByteSpan>) {
        if spans.is_empty() {
            return;
        }
        let action = Self::action(rule);
        let mut char_spans = Vec::with_capacity(spans.len());
        {
            let mut counter = CharCounter::new(&self.text);
            for s in &spans {
                char_spans.push((counter.at(s.start), counter.at(s.end)));
            }
        }
        let mut edits = Vec::new();
        for (s, chars) in spans.into_iter().zip(char_spans) {
            if action == Action::Redact {
                edits.push(Edit {
                    start: s.start,
                    end: s.end,
                    replacement: rule.replacement.clone(),
                });
            }
            self.push_hit(rule, action, chars, s.message);
        }
        if !edits.is_empty() {
            self.edit(&edits);
        }
    }

    fn record_failure(&mut self, rule: &Rule, failure: Failure) {
        let action = Self::action(rule);
        self.push_hit(
            rule,
            action,
            (failure.start, failure.end),
            Some(failure.message),
        );
    }

    /// A regex only scanned a prefix: say so, as a flag, over the rest.
    fn flag_unscanned(&mut self, rule: &Rule, scanned_len: usize, cap: usize) {
        let mut counter = CharCounter::new(&self.text);
        let start = counter.at(scanned_len);
        let end = counter.at(self.text.len());
        let message = format!("only the first {cap} bytes were scanned (max_scan_bytes)");
        self.push_hit(rule, Action::Flag, (start, end), Some(message));
    }

    fn max_chars(&mut self, rule: &Rule, max: usize) {
        let n = self.char_len();
        if n <= max {
            return;
        }
        let action = Self::action(rule);
        if action != Action::Truncate {
            let message = format!("{n} characters, more than the maximum of {max}");
            self.record_failure(rule, whole(n, message));
            return;
        }
        let Some(cut) = cut_point(&self.text, max) else {
            return;
        };
        let start = CharCounter::new(&self.text).at(cut);
        let message = format!("truncated from {n} to {start} characters (maximum {max})");
        self.push_hit(rule, action, (start, n), Some(message));
        let len = self.text.len();
        self.edit(&[Edit::delete(cut, len)]);
    }
}

/// A failure spanning all `n` characters of the working text.
fn whole(n: usize, message: String) -> Failure {
    Failure {
        start: 0,
        end: n,
        message,
    }
}
