//! Banned phrases, candidate choice, the catalog and the JSONL checker.

use std::sync::Arc;

use super::{rules, temp_dir, write};
use crate::{check_jsonl, choose_candidate, CheckSummary, RuleCatalog, RuleSet};

#[test]
fn rule_set_is_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<RuleSet>();
    assert_send_sync::<RuleCatalog>();
}

#[test]
fn banned_phrases_only_from_marked_rules() {
    let set = rules(
        "[[rule]]\nname = \"a\"\nkind = \"deny_words\"\nwords = [\"机密\", \"Internal Only\"]\nban_during_decoding = true\n\
         [[rule]]\nname = \"b\"\nkind = \"deny_words\"\nwords = [\"not banned\"]\n\
         [[rule]]\nname = \"c\"\nkind = \"deny_words\"\nwords = [\"机密\", \"绝密\"]\nban_during_decoding = true\n",
    );
    assert_eq!(set.banned_phrases(), vec!["机密", "Internal Only", "绝密"]);
}

#[test]
fn choose_highest_passing_candidate() {
    let set = rules("[[rule]]\nname = \"w\"\nkind = \"deny_words\"\nwords = [\"bad\"]\n");
    let candidates = vec![
        ("good one".to_string(), -2.0),
        ("bad best".to_string(), -0.1),
        ("good two".to_string(), -1.0),
        ("good nan".to_string(), f64::NAN),
    ];
    let choice = choose_candidate(&set, &candidates, None);
    assert_eq!(choice.winner, Some(2));
    assert_eq!(choice.verdicts.len(), 4);
    assert!(!choice.verdicts[1].passed);
    assert_eq!(
        choice.winning_verdict().map(|v| v.text.as_str()),
        Some("good two")
    );
    // Ties go to the earlier candidate.
    let tie = vec![("a".to_string(), 1.0), ("b".to_string(), 1.0)];
    assert_eq!(choose_candidate(&set, &tie, None).winner, Some(0));
    // Nothing passes: filtered.
    let none = vec![("bad".to_string(), 0.0)];
    let choice = choose_candidate(&set, &none, None);
    assert!(choice.is_filtered());
    assert_eq!(choice.verdicts.len(), 1);
}

#[test]
fn choose_passes_token_counts() {
    let set = rules("[[rule]]\nname = \"t\"\nkind = \"max_tokens\"\nmax = 5\n");
    let candidates = vec![("long".to_string(), 0.0), ("short".to_string(), -1.0)];
    let choice = choose_candidate(&set, &candidates, Some(&[9, 3]));
    assert_eq!(choice.winner, Some(1));
}

#[test]
fn catalog_resolves_and_caches() {
    let dir = temp_dir("catalog");
    write(
        &dir,
        "mine.toml",
        "[[rule]]\nname = \"j\"\nkind = \"json\"\n",
    );
    let catalog = RuleCatalog::new(&dir);
    let a = match catalog.get("mine") {
        Ok(a) => a,
        Err(e) => panic!("{e}"),
    };
    let b = match catalog.get("mine") {
        Ok(b) => b,
        Err(e) => panic!("{e}"),
    };
    assert!(Arc::ptr_eq(&a, &b));
    assert_eq!(a.name(), "mine");
    catalog.clear();
    let c = catalog.get("mine").ok();
    assert!(c.is_some_and(|c| !Arc::ptr_eq(&a, &c)));
    assert!(catalog.get("missing").is_err());
    assert!(matches!(
        catalog.get(".hidden"),
        Err(crate::RulesError::InvalidName(_))
    ));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn jsonl_checker_outputs_one_line_per_record() {
    let set = rules(
        "[[rule]]\nname = \"r\"\nkind = \"reasoning_split\"\n\
         [[rule]]\nname = \"w\"\nkind = \"deny_words\"\nwords = [\"机密\"]\naction = \"redact\"\n",
    );
    let input = concat!(
        "{\"custom_id\": \"a\", \"text\": \"<think>x</think>这是机密。\"}\n",
        "\n",
        "not json\n",
        "{\"custom_id\": \"c\"}\n",
        "{\"custom_id\": \"d\", \"text\": \"ok\"}\n",
        "{\"custom_id\": \"e\", \"text\": 5}\n",
    );
    let mut out = Vec::new();
    let summary = match check_jsonl(&set, input.as_bytes(), &mut out) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(
        summary,
        CheckSummary {
            checked: 2,
            passed: 2,
            failed: 0,
            errors: 3,
            hits: 1,
        }
    );
    let out = String::from_utf8(out).unwrap_or_default();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        vec![
            r#"{"custom_id":"a","passed":true,"text":"这是[REDACTED]。","reasoning":"x","hits":[{"rule":"w","kind":"deny_words","action":"redact","start":18,"end":20,"message":"matched \"机密\""}]}"#,
            r#"{"line":3,"error":"not valid JSON: expected ident at line 1 column 2"}"#,
            r#"{"custom_id":"c","line":4,"error":"missing `text`"}"#,
            r#"{"custom_id":"d","passed":true,"text":"ok","hits":[]}"#,
            r#"{"custom_id":"e","line":6,"error":"`text` is not a string"}"#,
        ]
    );
}

#[test]
fn jsonl_checker_survives_invalid_utf8() {
    let set = rules("[[rule]]\nname = \"j\"\nkind = \"json\"\n");
    let input: &[u8] = b"\xff\xfe\n{\"custom_id\":1,\"text\":\"{}\"}";
    let mut out = Vec::new();
    let summary = check_jsonl(&set, input, &mut out).ok();
    assert_eq!(summary.map(|s| (s.checked, s.errors)), Some((1, 1)));
    let out = String::from_utf8(out).unwrap_or_default();
    assert!(
        out.starts_with("{\"line\":1,\"error\":\"line is not UTF-8"),
        "{out}"
    );
    assert!(
        out.ends_with("{\"custom_id\":1,\"passed\":true,\"text\":\"{}\",\"hits\":[]}\n"),
        "{out}"
    );
}
