//! [`RuleSet`]: a loaded rule file, its identity, and the entry points.
//!
//! A rule set is loaded once (by a job's worker, through the
//! [`RuleCatalog`](crate::RuleCatalog)) and then checks every candidate of
//! every job that names it, from any thread. Its version is the SHA-256 of
//! the rule file and of every file it references, so a stored verdict says
//! exactly which rules judged it even when the `version` key was not bumped.

use std::path::Path;

use sha2::{Digest, Sha256};

use crate::compile::{compile, Compiled};
use crate::engine;
use crate::error::RulesError;
use crate::rule::{Op, Rule, RuleInfo};
use crate::verdict::Verdict;

/// A compiled rule set.
#[derive(Debug)]
pub struct RuleSet {
    name: String,
    version: String,
    declared_version: Option<String>,
    rules: Vec<Rule>,
}

impl RuleSet {
    /// Loads the rule file at `path`; the set is named after the file stem
    /// (`configs/rules/strict-json.toml` → `strict-json`), and `words_file`
    /// / `schema_file` paths are relative to the file's folder.
    pub fn load(path: impl AsRef<Path>) -> Result<RuleSet, RulesError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| RulesError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let name = path
            .file_stem()
            .map_or_else(|| "rules".to_string(), |s| s.to_string_lossy().into_owned());
        let base_dir = path.parent().unwrap_or_else(|| Path::new("."));
        let label = path.display().to_string();
        Self::build(&text, base_dir, &name, &label)
    }

    /// Compiles a rule file given as text; errors are labelled with `name`,
    /// referenced files are read relative to `base_dir`.
    pub fn from_toml_str(
        text: &str,
        base_dir: impl AsRef<Path>,
        name: &str,
    ) -> Result<RuleSet, RulesError> {
        Self::build(text, base_dir.as_ref(), name, name)
    }

    fn build(text: &str, base_dir: &Path, name: &str, label: &str) -> Result<RuleSet, RulesError> {
        let Compiled {
            rules,
            declared_version,
            files,
        } = compile(text, base_dir, label)?;
        let mut hasher = Sha256::new();
        hasher.update(text.as_bytes());
        for (rel, bytes) in &files {
            hasher.update([0u8]);
            hasher.update(rel.as_bytes());
            hasher.update([0u8]);
            hasher.update(bytes);
        }
        let version = format!("sha256:{}", hex(&hasher.finalize()));
        Ok(RuleSet {
            name: name.to_string(),
            version,
            declared_version,
            rules,
        })
    }

    /// Checks one candidate. `token_count` is the candidate's length in
    /// tokens as the caller counted it (for `max_tokens`; those rules are
    /// skipped when it is `None`).
    pub fn check(&self, text: &str, token_count: Option<usize>) -> Verdict {
        let outcome = engine::run(&self.rules, text, token_count);
        Verdict {
            passed: outcome.passed,
            text: outcome.text,
            reasoning: outcome.reasoning,
            hits: outcome.hits,
            rule_set: self.name.clone(),
            rule_set_version: self.version.clone(),
        }
    }

    /// The words of every `deny_words` rule with `ban_during_decoding =
    /// true`, as written (not folded), without duplicates, in file order:
    /// what the decoder should never produce.
    pub fn banned_phrases(&self) -> Vec<String> {
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for rule in &self.rules {
            if let Op::DenyWords(matcher) = &rule.op {
                if !rule.ban_during_decoding {
                    continue;
                }
                for word in matcher.words() {
                    if seen.insert(word.as_str()) {
                        out.push(word.clone());
                    }
                }
            }
        }
        out
    }

    /// The set's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `sha256:<hex>` of the rule file's bytes and, for each referenced file
    /// in the order the rules name them, a NUL, its path as written, a NUL
    /// and its bytes.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The file's own `version` key, if it has one.
    pub fn declared_version(&self) -> Option<&str> {
        self.declared_version.as_deref()
    }

    /// The rules, in order (e.g. to pre-register metrics labels).
    pub fn rules(&self) -> Vec<RuleInfo> {
        self.rules
            .iter()
            .map(|r| RuleInfo {
                name: r.name.clone(),
                kind: r.kind,
                action: r.action,
            })
            .collect()
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}
