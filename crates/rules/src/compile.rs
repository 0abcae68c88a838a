//! Turning a parsed rule file into runnable rules, or a precise error.
//!
//! This is where user input is judged: per-kind keys and actions, regexes
//! compiled with their limits, word lists and schemas read (relative to the
//! rule file) and built. Every error names the file, the line where the
//! rule's table starts and the rule. The bytes of every referenced file are
//! kept so that the rule set's version hash covers them too.

use std::collections::HashSet;
use std::path::Path;

use serde_json::Value;

use crate::config::{actions_allowed, keys_allowed, line_col, RawRule, RawRuleSet};
use crate::error::RulesError;
use crate::normalize::NormalizeOptions;
use crate::pattern::{ScanRegex, DEFAULT_MAX_SCAN_BYTES};
use crate::reasoning::ThinkTags;
use crate::rule::{Op, Rule, RuleKind};
use crate::schema::SchemaCheck;
use crate::words::WordMatcher;

/// Replacement text of a `redact` rule without `replacement`.
pub(crate) const DEFAULT_REPLACEMENT: &str = "[REDACTED]";

/// A compiled rule file.
pub(crate) struct Compiled {
    pub(crate) rules: Vec<Rule>,
    pub(crate) declared_version: Option<String>,
    /// Referenced files in the order read: path as written, content.
    pub(crate) files: Vec<(String, Vec<u8>)>,
}

/// Compiles the rule file `text`; `file` labels errors, `base_dir` resolves
/// `words_file` and `schema_file`.
pub(crate) fn compile(text: &str, base_dir: &Path, file: &str) -> Result<Compiled, RulesError> {
    let raw: RawRuleSet = toml::from_str(text).map_err(|e| {
        let (line, column) = e.span().map_or((0, 0), |s| line_col(text, s.start));
        RulesError::Syntax {
            file: file.to_string(),
            line,
            column,
            message: e.message().trim_end().to_string(),
        }
    })?;
    let mut rules = Vec::with_capacity(raw.rules.len());
    let mut files = Vec::new();
    let mut names = HashSet::new();
    for spanned in raw.rules {
        let line = line_col(text, spanned.span().start).0;
        let raw_rule = spanned.into_inner();
        let name = raw_rule.name.clone();
        let fail = |message: String| RulesError::Rule {
            file: file.to_string(),
            line,
            rule: name.clone(),
            message,
        };
        if name.trim().is_empty() {
            return Err(fail("`name` is empty".into()));
        }
        if !names.insert(name.clone()) {
            return Err(fail("another rule has the same name".into()));
        }
        let rule = compile_rule(raw_rule, base_dir, &mut files).map_err(fail)?;
        rules.push(rule);
    }
    Ok(Compiled {
        rules,
        declared_version: raw.version,
        files,
    })
}

fn compile_rule(
    raw: RawRule,
    base_dir: &Path,
    files: &mut Vec<(String, Vec<u8>)>,
) -> Result<Rule, String> {
    let kind = raw.kind;
    let allowed = keys_allowed(kind);
    if let Some(key) = raw.keys_set().into_iter().find(|k| !allowed.contains(k)) {
        return Err(format!("key `{key}` does not apply to kind `{kind}`"));
    }
    let actions = actions_allowed(kind);
    let action = match (raw.action, actions.first()) {
        (Some(a), _) if actions.contains(&a) => Some(a),
        (Some(a), _) => {
            let list: Vec<&str> = actions.iter().map(|a| a.as_str()).collect();
            return Err(format!(
                "action `{a}` does not apply to kind `{kind}` (use one of: {})",
                list.join(", ")
            ));
        }
        (None, default) => default.copied(),
    };
    if raw.replacement.is_some() && action != Some(crate::Action::Redact) {
        return Err("`replacement` only applies with action = \"redact\"".into());
    }
    let max_scan = raw.max_scan_bytes.unwrap_or(DEFAULT_MAX_SCAN_BYTES);
    if max_scan == 0 {
        return Err("`max_scan_bytes` must be at least 1".into());
    }
    let need =
        |v: Option<usize>, key: &str| v.ok_or_else(|| format!("kind `{kind}` needs `{key}`"));
    let op = match kind {
        RuleKind::DenyWords => Op::DenyWords(Box::new(word_matcher(&raw, base_dir, files)?)),
        RuleKind::Regex | RuleKind::Pattern => {
            let pattern = raw
                .pattern
                .as_deref()
                .ok_or_else(|| format!("kind `{kind}` needs `pattern`"))?;
            let ci = raw.case_insensitive.unwrap_or(false);
            let regex = ScanRegex::new(pattern, ci, kind == RuleKind::Pattern, max_scan)?;
            if kind == RuleKind::Regex {
                Op::Regex(regex)
            } else {
                Op::Pattern(regex)
            }
        }
        RuleKind::MinChars => Op::MinChars(need(raw.min, "min")?),
        RuleKind::MaxChars => Op::MaxChars(need(raw.max, "max")?),
        RuleKind::MaxTokens => Op::MaxTokens(need(raw.max, "max")?),
        RuleKind::Json => Op::Json,
        RuleKind::JsonSchema => Op::JsonSchema(Box::new(schema(&raw, base_dir, files)?)),
        RuleKind::Balanced => Op::Balanced,
        RuleKind::CompleteSentence => Op::CompleteSentence,
        RuleKind::Normalize => {
            if raw.keys_set().is_empty() {
                return Err("kind `normalize` needs at least one of `trim`, `collapse_whitespace`, `nfc`, `strip_control`".into());
            }
            Op::Normalize(NormalizeOptions {
                trim: raw.trim.unwrap_or(false),
                collapse_whitespace: raw.collapse_whitespace.unwrap_or(false),
                nfc: raw.nfc.unwrap_or(false),
                strip_control: raw.strip_control.unwrap_or(false),
            })
        }
        RuleKind::ReasoningSplit => {
            let defaults = ThinkTags::default();
            let tags = ThinkTags {
                open: raw.open_tag.clone().unwrap_or(defaults.open),
                close: raw.close_tag.clone().unwrap_or(defaults.close),
            };
            if tags.open.is_empty() || tags.close.is_empty() {
                return Err("`open_tag` and `close_tag` must not be empty".into());
            }
            Op::ReasoningSplit(tags)
        }
    };
    let replacement = raw
        .replacement
        .unwrap_or_else(|| DEFAULT_REPLACEMENT.to_string());
    Ok(Rule {
        name: raw.name,
        kind,
        action,
        replacement,
        ban_during_decoding: raw.ban_during_decoding.unwrap_or(false),
        op,
    })
}

/// Reads a file named in a rule, relative to the rule file's folder.
fn read_referenced(
    key: &str,
    rel: &str,
    base_dir: &Path,
    files: &mut Vec<(String, Vec<u8>)>,
) -> Result<Vec<u8>, String> {
    let path = base_dir.join(rel);
    let bytes = std::fs::read(&path)
        .map_err(|e| format!("cannot read {key} `{rel}` ({}): {e}", path.display()))?;
    files.push((rel.to_string(), bytes.clone()));
    Ok(bytes)
}

fn word_matcher(
    raw: &RawRule,
    base_dir: &Path,
    files: &mut Vec<(String, Vec<u8>)>,
) -> Result<WordMatcher, String> {
    let mut words: Vec<String> = raw.words.clone().unwrap_or_default();
    if let Some(rel) = &raw.words_file {
        let bytes = read_referenced("words_file", rel, base_dir, files)?;
        let text = String::from_utf8(bytes)
            .map_err(|e| format!("words_file `{rel}` is not UTF-8: {e}"))?;
        words.extend(parse_word_lines(&text));
    }
    if raw.words.is_none() && raw.words_file.is_none() {
        return Err("kind `deny_words` needs `words` or `words_file`".into());
    }
    WordMatcher::new(words)
}

/// One word per line; surrounding whitespace is trimmed, empty lines and
/// lines starting with `#` are skipped, a leading byte-order mark is ignored.
pub(crate) fn parse_word_lines(text: &str) -> impl Iterator<Item = String> + '_ {
    text.trim_start_matches('\u{feff}')
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
}

fn schema(
    raw: &RawRule,
    base_dir: &Path,
    files: &mut Vec<(String, Vec<u8>)>,
) -> Result<SchemaCheck, String> {
    let value: Value = match (&raw.schema, &raw.schema_file) {
        (Some(_), Some(_)) => return Err("give `schema` or `schema_file`, not both".into()),
        (None, None) => return Err("kind `json_schema` needs `schema` or `schema_file`".into()),
        (Some(inline), None) => serde_json::to_value(inline)
            .map_err(|e| format!("`schema` cannot be turned into JSON: {e}"))?,
        (None, Some(rel)) => {
            let bytes = read_referenced("schema_file", rel, base_dir, files)?;
            serde_json::from_slice(&bytes)
                .map_err(|e| format!("schema_file `{rel}` is not valid JSON: {e}"))?
        }
    };
    SchemaCheck::compile(&value)
}
