//! [`RuleCatalog`]: finding rule sets by name and loading each once.
//!
//! Jobs name a rule set (`"default"`, `"strict-json"`) or give a path; the
//! worker handles many jobs with the same set, so compiled sets (word
//! automata can be large) are cached and shared behind an `Arc`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::error::RulesError;
use crate::ruleset::RuleSet;

/// Resolves rule-set names to files in one folder and caches loaded sets.
#[derive(Debug)]
pub struct RuleCatalog {
    dir: PathBuf,
    cache: Mutex<HashMap<String, Arc<RuleSet>>>,
}

impl RuleCatalog {
    /// A catalog over `dir` (normally `configs/rules`).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        RuleCatalog {
            dir: dir.into(),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The folder plain names resolve in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file for `name_or_path`: a value ending in `.toml` or containing a
    /// path separator is a path (relative to the current directory); any
    /// other value must be a plain name (letters, digits, `_`, `-`, `.`, not
    /// starting with `.`) and resolves to `<dir>/<name>.toml`.
    pub fn resolve(&self, name_or_path: &str) -> Result<PathBuf, RulesError> {
        let is_path = name_or_path.ends_with(".toml")
            || name_or_path.contains('/')
            || name_or_path.contains('\\');
        if is_path {
            return Ok(PathBuf::from(name_or_path));
        }
        let plain = !name_or_path.is_empty()
            && !name_or_path.starts_with('.')
            && name_or_path
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !plain {
            return Err(RulesError::InvalidName(name_or_path.to_string()));
        }
        Ok(self.dir.join(format!("{name_or_path}.toml")))
    }

    /// The rule set for `name_or_path`, loaded on first use and cached.
    pub fn get(&self, name_or_path: &str) -> Result<Arc<RuleSet>, RulesError> {
        if let Some(set) = self.lock().get(name_or_path) {
            return Ok(Arc::clone(set));
        }
        // Load outside the lock: a big word list must not stall other jobs.
        let set = Arc::new(RuleSet::load(self.resolve(name_or_path)?)?);
        let mut cache = self.lock();
        let entry = cache
            .entry(name_or_path.to_string())
            .or_insert_with(|| Arc::clone(&set));
        Ok(Arc::clone(entry))
    }

    /// Forgets every cached set, so the next [`get`](Self::get) reads the
    /// files again (after the rule files changed).
    pub fn clear(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<RuleSet>>> {
        // A panic elsewhere while holding the lock leaves a valid map.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths() {
        let c = RuleCatalog::new("configs/rules");
        let ok = |s: &str| c.resolve(s).ok();
        assert_eq!(
            ok("default"),
            Some(PathBuf::from("configs/rules/default.toml"))
        );
        assert_eq!(
            ok("strict-json"),
            Some(PathBuf::from("configs/rules/strict-json.toml"))
        );
        assert_eq!(ok("/tmp/x.toml"), Some(PathBuf::from("/tmp/x.toml")));
        assert_eq!(ok("my/rules"), Some(PathBuf::from("my/rules")));
        assert!(c.resolve("..").is_err());
        assert!(c.resolve("").is_err());
        assert!(c.resolve("a b").is_err());
    }
}
