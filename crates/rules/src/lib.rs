//! Output rule sets for beamline: every generated output passes a rule set
//! before it is stored.
//!
//! A rule set is a TOML file in `configs/rules/` (see `default.toml` there
//! for the format). Its rules run in file order over a *working text*:
//! transforms (`normalize`, `reasoning_split`) change it, checks
//! (`deny_words`, `regex`, `min_chars`, `max_chars`, `max_tokens`, `json`,
//! `json_schema`, `pattern`, `balanced`, `complete_sentence`) record
//! [`Hit`]s with an [`Action`]: `reject` fails the candidate, `redact`
//! replaces the span, `flag` only records, `truncate` cuts a too-long text.
//! Hits always give character offsets into the text the caller passed in,
//! however the working text was changed before.
//!
//! ```no_run
//! use beamline_rules::{RuleCatalog, choose_candidate};
//!
//! let catalog = RuleCatalog::new("configs/rules");
//! let rules = catalog.get("default")?;
//! let verdict = rules.check("<think>hm</think>The answer is 4.", None);
//! assert!(verdict.passed);
//! let banned = rules.banned_phrases(); // for beam search
//! let choice = choose_candidate(&rules, &[("a".into(), -1.0), ("b".into(), -0.5)], None);
//! # let _ = (banned, choice);
//! # Ok::<(), beamline_rules::RulesError>(())
//! ```
//!
//! # Layout
//!
//! - [`ruleset`] — [`RuleSet`]: load, check, banned phrases, version hash.
//! - [`catalog`] — [`RuleCatalog`]: name → `configs/rules/<name>.toml`, cached.
//! - [`choose`] — [`choose_candidate`]: best passing candidate of a job.
//! - [`jsonl`] — [`check_jsonl`]: the offline checker for the CLI.
//! - [`verdict`] — [`Verdict`] and [`Hit`], what a check produces.
//! - [`rule`] — [`RuleKind`], [`Action`] and the compiled rule.
//! - [`error`] — [`RulesError`].
//! - `config` — the TOML format as parsed; `compile` — validation and
//!   building of rules.
//! - `engine` — runs the rules and keeps the working text and its offsets.
//! - `offsets`, `edits` — the working-text → input offset map and the
//!   edits that change the working text.
//! - `unicode`, `fold` (with `fold::refold`), `words`, `prefilter` —
//!   chunked Unicode normalisation; case and width folding, kept in step
//!   with redactions; the Aho-Corasick deny-word matcher and the Bloom-filter
//!   start-position filter that keeps large word lists fast.
//! - `pattern`, `schema`, `checks`, `truncate`, `normalize`, `reasoning` —
//!   one module per family of rule kinds.
//!
//! Checking never panics on any input text and never fails: a failed check
//! is a verdict. Only loading a rule file returns errors, each naming the
//! file, the line and (for rule errors) the rule.

pub mod catalog;
mod checks;
pub mod choose;
mod compile;
mod config;
mod edits;
mod engine;
pub mod error;
mod fold;
pub mod jsonl;
mod normalize;
mod offsets;
mod pattern;
mod prefilter;
mod reasoning;
pub mod rule;
pub mod ruleset;
mod schema;
mod truncate;
mod unicode;
pub mod verdict;
mod words;

#[cfg(test)]
mod tests;

pub use catalog::RuleCatalog;
pub use choose::{choose_candidate, Choice};
pub use error::RulesError;
pub use jsonl::{check_jsonl, CheckSummary};
pub use rule::{Action, RuleInfo, RuleKind};
pub use ruleset::RuleSet;
pub use verdict::{Hit, Verdict};
