//! Tests of the public API over whole rule sets (per-module unit tests live
//! next to their modules).

mod api;
mod kinds;
mod load;
mod offsets;
mod shipped;

use std::path::{Path, PathBuf};

use crate::{Hit, RuleSet, Verdict};

/// Compiles `toml`, panicking with the error (tests only).
pub(crate) fn rules(toml: &str) -> RuleSet {
    rules_in(toml, Path::new("."))
}

/// Compiles `toml` with `base` as the folder of referenced files.
pub(crate) fn rules_in(toml: &str, base: &Path) -> RuleSet {
    match RuleSet::from_toml_str(toml, base, "test") {
        Ok(set) => set,
        Err(e) => panic!("rule set does not compile: {e}"),
    }
}

/// The load error of `toml`, as text.
pub(crate) fn load_error(toml: &str) -> String {
    match RuleSet::from_toml_str(toml, Path::new("."), "test.toml") {
        Ok(_) => panic!("rule set compiled but should not"),
        Err(e) => e.to_string(),
    }
}

/// `(rule, action, start, end)` of each hit.
pub(crate) fn spans(v: &Verdict) -> Vec<(String, String, usize, usize)> {
    v.hits
        .iter()
        .map(|h: &Hit| (h.rule.clone(), h.action.to_string(), h.start, h.end))
        .collect()
}

/// The input characters `start..end` of `text`.
pub(crate) fn chars(text: &str, start: usize, end: usize) -> String {
    text.chars().skip(start).take(end - start).collect()
}

/// A fresh empty folder under the system temp dir.
pub(crate) fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("beamline-rules-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        panic!("cannot create {}: {e}", dir.display());
    }
    dir
}

/// Writes `content` to `dir/rel`, creating folders.
pub(crate) fn write(dir: &Path, rel: &str, content: &str) {
    let path = dir.join(rel);
    if let Some(parent) = path.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    if let Err(e) = std::fs::write(&path, content) {
        panic!("cannot write {}: {e}", path.display());
    }
}
