//! Loading: every invalid rule file fails with file, line and reason.

use super::{load_error, rules_in, temp_dir, write};
use crate::{RuleSet, RulesError};

#[test]
fn invalid_toml_reports_line_and_column() {
    let err = load_error("version = \"1\"\n[[rule]]\nname = \"x\nkind = \"json\"\n");
    assert!(err.starts_with("test.toml:3:"), "{err}");
}

#[test]
fn unknown_key_in_rule_is_rejected_with_its_line() {
    let err = load_error("[[rule]]\nname = \"x\"\nkind = \"json\"\nacton = \"reject\"\n");
    assert!(
        err.starts_with("test.toml:4:1: unknown field `acton`"),
        "{err}"
    );
}

#[test]
fn unknown_top_level_key_is_rejected() {
    let err = load_error("verison = \"1\"\n");
    assert!(
        err.starts_with("test.toml:1:1: unknown field `verison`"),
        "{err}"
    );
}

#[test]
fn unknown_kind_and_action() {
    let err = load_error("[[rule]]\nname = \"x\"\nkind = \"magic\"\n");
    assert!(
        err.starts_with("test.toml:3:8: unknown variant `magic`"),
        "{err}"
    );
    let err = load_error("[[rule]]\nname = \"x\"\nkind = \"json\"\naction = \"explode\"\n");
    assert!(
        err.starts_with("test.toml:4:10: unknown variant `explode`"),
        "{err}"
    );
}

#[test]
fn negative_number_is_rejected() {
    let err = load_error("[[rule]]\nname = \"x\"\nkind = \"min_chars\"\nmin = -1\n");
    assert!(err.starts_with("test.toml:4:7: "), "{err}");
}

#[test]
fn bad_regex_names_rule_and_line() {
    let err = load_error(
        "[[rule]]\nname = \"ok\"\nkind = \"json\"\n\n[[rule]]\nname = \"bad\"\nkind = \"regex\"\npattern = \"(unclosed\"\n",
    );
    assert!(
        err.starts_with("test.toml:5: rule `bad`: invalid regex: "),
        "{err}"
    );
}

#[test]
fn hostile_regex_fails_on_size_limit() {
    let err =
        load_error("[[rule]]\nname = \"huge\"\nkind = \"regex\"\npattern = \"a{1000}{1000}\"\n");
    assert!(
        err.starts_with("test.toml:1: rule `huge`: invalid regex: "),
        "{err}"
    );
    assert!(err.contains("size limit"), "{err}");
}

#[test]
fn action_must_fit_kind() {
    let err = load_error(
        "[[rule]]\nname = \"r\"\nkind = \"regex\"\npattern = \"x\"\naction = \"truncate\"\n",
    );
    assert_eq!(
        err,
        "test.toml:1: rule `r`: action `truncate` does not apply to kind `regex` (use one of: reject, redact, flag)"
    );
    let err = load_error(
        "[[rule]]\nname = \"n\"\nkind = \"normalize\"\ntrim = true\naction = \"reject\"\n",
    );
    assert!(
        err.contains("key `action` does not apply to kind `normalize`"),
        "{err}"
    );
}

#[test]
fn keys_must_fit_kind() {
    let err = load_error("[[rule]]\nname = \"j\"\nkind = \"json\"\nwords = [\"a\"]\n");
    assert_eq!(
        err,
        "test.toml:1: rule `j`: key `words` does not apply to kind `json`"
    );
    let err = load_error(
        "[[rule]]\nname = \"w\"\nkind = \"deny_words\"\nwords = [\"a\"]\nreplacement = \"x\"\n",
    );
    assert_eq!(
        err,
        "test.toml:1: rule `w`: `replacement` only applies with action = \"redact\""
    );
}

#[test]
fn missing_required_keys() {
    let err = load_error("[[rule]]\nname = \"m\"\nkind = \"max_chars\"\n");
    assert_eq!(err, "test.toml:1: rule `m`: kind `max_chars` needs `max`");
    let err = load_error("[[rule]]\nname = \"d\"\nkind = \"deny_words\"\n");
    assert_eq!(
        err,
        "test.toml:1: rule `d`: kind `deny_words` needs `words` or `words_file`"
    );
    let err = load_error("[[rule]]\nname = \"n\"\nkind = \"normalize\"\n");
    assert!(err.contains("needs at least one of"), "{err}");
    let err = load_error("[[rule]]\nname = \"e\"\nkind = \"deny_words\"\nwords = [\"\"]\n");
    assert_eq!(err, "test.toml:1: rule `e`: empty deny word \"\"");
}

#[test]
fn duplicate_rule_names() {
    let err = load_error(
        "[[rule]]\nname = \"a\"\nkind = \"json\"\n[[rule]]\nname = \"a\"\nkind = \"balanced\"\n",
    );
    assert_eq!(err, "test.toml:4: rule `a`: another rule has the same name");
}

#[test]
fn bad_schema_names_rule() {
    let err =
        load_error("[[rule]]\nname = \"s\"\nkind = \"json_schema\"\nschema = { type = 12 }\n");
    assert!(
        err.starts_with("test.toml:1: rule `s`: invalid JSON Schema: "),
        "{err}"
    );
    let err = load_error(
        "[[rule]]\nname = \"s\"\nkind = \"json_schema\"\nschema_file = \"nope/missing.json\"\n",
    );
    assert!(
        err.starts_with("test.toml:1: rule `s`: cannot read schema_file `nope/missing.json`"),
        "{err}"
    );
}

#[test]
fn referenced_files_are_relative_and_hashed() {
    let dir = temp_dir("files");
    let toml = "[[rule]]\nname = \"w\"\nkind = \"deny_words\"\nwords_file = \"words/w.txt\"\n";
    write(&dir, "rules.toml", toml);
    write(
        &dir,
        "words/w.txt",
        "\u{feff}# comment\nalpha\n\n  beta  \r\n",
    );
    let set = match RuleSet::load(dir.join("rules.toml")) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(set.name(), "rules");
    assert!(set.check("x alpha", None).hits.len() == 1);
    assert!(set.check("BETA", None).hits.len() == 1);
    assert!(set.check("comment", None).hits.is_empty());
    let v1 = set.version().to_string();
    assert!(v1.starts_with("sha256:") && v1.len() == 7 + 64, "{v1}");
    // Same rule file, different words file: different version.
    write(&dir, "words/w.txt", "alpha\n");
    let set2 = rules_in(toml, &dir);
    assert_ne!(set2.version(), v1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn missing_file_is_a_read_error() {
    match RuleSet::load("/nonexistent/beamline/rules.toml") {
        Err(RulesError::Read { path, .. }) => {
            assert_eq!(path.to_string_lossy(), "/nonexistent/beamline/rules.toml");
        }
        other => panic!("expected a read error, got {other:?}"),
    }
}
