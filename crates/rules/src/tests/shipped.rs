//! The rule sets shipped in `configs/rules/` load and behave as documented.

use std::path::PathBuf;

use crate::{RuleCatalog, RuleSet};

fn configs() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../configs/rules")
}

fn load(name: &str) -> std::sync::Arc<RuleSet> {
    match RuleCatalog::new(configs()).get(name) {
        Ok(set) => set,
        Err(e) => panic!("{name}: {e}"),
    }
}

#[test]
fn default_set() {
    let set = load("default");
    assert_eq!(set.name(), "default");
    assert_eq!(set.declared_version(), Some("2026-11-29"));
    let v = set.check(
        "<think>plan</think>\n\nWrite to bob@example.com now. ",
        None,
    );
    assert!(v.passed);
    assert_eq!(v.text, "Write to [EMAIL] now.");
    assert_eq!(v.reasoning.as_deref(), Some("plan"));
    assert!(!set.check("这份文件是机密的。", None).passed);
    assert!(!set.check("  \n ", None).passed, "empty after trim");
    assert!(set.banned_phrases().contains(&"机密".to_string()));
}

#[test]
fn strict_json_set() {
    let set = load("strict-json");
    let ok = r#"{"answer": {"label": "positive", "score": 0.9}}"#;
    assert!(set.check(ok, None).passed);
    let v = set.check(
        r#"{"answer": {"label": "positive", "score": "high"}}"#,
        None,
    );
    assert!(!v.passed);
    assert_eq!(
        v.hits[0].message.as_deref(),
        Some(r#"/answer/score: "high" is not of type "number""#)
    );
    let v = set.check("<think>…</think>```json\n{}\n```", None);
    assert!(!v.passed);
}

#[test]
fn chinese_sensitive_set() {
    let set = load("chinese-sensitive");
    let v = set.check("您的密码是１２３，请拨打13812345678。", None);
    assert!(v.passed);
    assert_eq!(v.text, "您的＊＊是１２３，请拨打[电话]。");
    let v = set.check("这是ＩＮＴＥＲＮＡＬ ＯＮＬＹ文件。", None);
    assert!(!v.passed);
    assert!(set.banned_phrases().contains(&"客户名单".to_string()));
    let v = set.check("（未完", None);
    assert!(!v.passed, "unbalanced");
}

#[test]
fn every_shipped_file_loads() {
    let Ok(entries) = std::fs::read_dir(configs()) else {
        panic!("no configs/rules folder");
    };
    let mut n = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "toml") {
            if let Err(e) = RuleSet::load(&path) {
                panic!("{e}");
            }
            n += 1;
        }
    }
    assert!(n >= 3, "{n} rule files");
}
