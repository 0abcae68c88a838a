//! Every rule kind and action through `RuleSet::check`, with exact results.

use super::{chars, rules, spans};

fn hit(rule: &str, action: &str, start: usize, end: usize) -> (String, String, usize, usize) {
    (rule.to_string(), action.to_string(), start, end)
}

#[test]
fn deny_words_reject_cjk_without_spaces() {
    let set = rules("[[rule]]\nname = \"secret\"\nkind = \"deny_words\"\nwords = [\"机密\"]\n");
    let text = "这是一份机密文件，请勿外传。";
    let v = set.check(text, None);
    assert!(!v.passed);
    assert_eq!(spans(&v), vec![hit("secret", "reject", 4, 6)]);
    assert_eq!(chars(text, 4, 6), "机密");
    assert_eq!(v.hits[0].message.as_deref(), Some("matched \"机密\""));
    assert_eq!(v.text, text);
    assert!(set.check("这是一份公开文件。", None).passed);
}

#[test]
fn deny_words_fullwidth_case_and_emoji() {
    let set =
        rules("[[rule]]\nname = \"io\"\nkind = \"deny_words\"\nwords = [\"internal only\"]\n");
    let text = "📄ＩＮＴＥＲＮＡＬ ｏｎｌｙ📄";
    let v = set.check(text, None);
    assert_eq!(spans(&v), vec![hit("io", "reject", 1, 14)]);
    assert_eq!(chars(text, 1, 14), "ＩＮＴＥＲＮＡＬ ｏｎｌｙ");
    let v = set.check("Mark: Internal ONLY!", None);
    assert_eq!(spans(&v), vec![hit("io", "reject", 6, 19)]);
}

#[test]
fn deny_words_overlapping_matches() {
    let set = rules("[[rule]]\nname = \"o\"\nkind = \"deny_words\"\nwords = [\"abc\", \"bcd\"]\naction = \"flag\"\n");
    let v = set.check("abcd bcd", None);
    assert!(v.passed, "flag does not reject");
    assert_eq!(
        spans(&v),
        vec![hit("o", "flag", 0, 3), hit("o", "flag", 5, 8)]
    );
}

#[test]
fn deny_words_redact_keeps_utf8_intact() {
    let set = rules(
        "[[rule]]\nname = \"r\"\nkind = \"deny_words\"\nwords = [\"机密\", \"secret\"]\naction = \"redact\"\n",
    );
    let text = "😀机密😀 and SECRET机密";
    let v = set.check(text, None);
    assert!(v.passed);
    assert_eq!(v.text, "😀[REDACTED]😀 and [REDACTED][REDACTED]");
    assert_eq!(
        spans(&v),
        vec![
            hit("r", "redact", 1, 3),
            hit("r", "redact", 9, 15),
            hit("r", "redact", 15, 17)
        ]
    );
}

#[test]
fn regex_redact_with_replacement() {
    let set = rules(
        "[[rule]]\nname = \"emails\"\nkind = \"regex\"\npattern = '[\\w.+-]+@[\\w-]+\\.[\\w.]+'\naction = \"redact\"\nreplacement = \"[EMAIL]\"\n",
    );
    let text = "联系 bob@example.com 或 ann@x.org。";
    let v = set.check(text, None);
    assert!(v.passed);
    assert_eq!(v.text, "联系 [EMAIL] 或 [EMAIL]。");
    assert_eq!(
        spans(&v),
        vec![
            hit("emails", "redact", 3, 18),
            hit("emails", "redact", 21, 30)
        ]
    );
    assert_eq!(chars(text, 21, 30), "ann@x.org");
}

#[test]
fn regex_reject_case_insensitive_and_scan_cap() {
    let set = rules(
        "[[rule]]\nname = \"k\"\nkind = \"regex\"\npattern = \"api[_-]?key\"\ncase_insensitive = true\nmax_scan_bytes = 10\n",
    );
    let v = set.check("my API_KEY", None);
    assert!(!v.passed);
    assert_eq!(spans(&v), vec![hit("k", "reject", 3, 10)]);
    // Beyond the cap nothing is scanned, and that is flagged.
    let v = set.check("0123456789 api_key", None);
    assert!(v.passed);
    assert_eq!(spans(&v), vec![hit("k", "flag", 10, 18)]);
}

#[test]
fn min_and_max_chars() {
    let set = rules(
        "[[rule]]\nname = \"min\"\nkind = \"min_chars\"\nmin = 3\n[[rule]]\nname = \"max\"\nkind = \"max_chars\"\nmax = 4\naction = \"flag\"\n",
    );
    let v = set.check("机密", None);
    assert!(!v.passed);
    assert_eq!(spans(&v), vec![hit("min", "reject", 0, 2)]);
    assert_eq!(
        v.hits[0].message.as_deref(),
        Some("2 characters, fewer than the minimum of 3")
    );
    let v = set.check("机密机密机", None);
    assert!(v.passed);
    assert_eq!(spans(&v), vec![hit("max", "flag", 0, 5)]);
    assert!(set.check("机密机密", None).hits.is_empty());
}

#[test]
fn max_chars_truncate_at_sentence() {
    let set =
        rules("[[rule]]\nname = \"cut\"\nkind = \"max_chars\"\nmax = 12\naction = \"truncate\"\n");
    let text = "第一句。第二句。第三句很长很长。";
    let v = set.check(text, None);
    assert!(v.passed);
    assert_eq!(v.text, "第一句。第二句。");
    assert_eq!(spans(&v), vec![hit("cut", "truncate", 8, 16)]);
}

#[test]
fn max_tokens_uses_the_callers_count() {
    let set = rules("[[rule]]\nname = \"t\"\nkind = \"max_tokens\"\nmax = 10\n");
    assert!(set.check("abc", Some(10)).passed);
    let v = set.check("abc", Some(11));
    assert!(!v.passed);
    assert_eq!(
        v.hits[0].message.as_deref(),
        Some("11 tokens, more than the maximum of 10")
    );
    assert!(set.check("abc", None).passed, "no count: skipped");
}

#[test]
fn json_and_json_schema() {
    let set = rules(
        "[[rule]]\nname = \"j\"\nkind = \"json\"\n[[rule]]\nname = \"s\"\nkind = \"json_schema\"\naction = \"flag\"\n\
         schema = { type = \"object\", properties = { answer = { type = \"object\", properties = { score = { type = \"number\" } } } } }\n",
    );
    assert!(set
        .check("{\"answer\": {\"score\": 1}}", None)
        .hits
        .is_empty());
    let v = set.check("{\"answer\": {\"score\": \"x\"}}", None);
    assert!(v.passed, "schema rule only flags");
    assert_eq!(v.hits.len(), 1);
    assert_eq!(
        v.hits[0].message.as_deref(),
        Some("/answer/score: \"x\" is not of type \"number\"")
    );
    let v = set.check("{oops", None);
    assert!(!v.passed);
    assert_eq!(v.hits.len(), 2);
    assert_eq!(v.hits[0].rule, "j");
}

#[test]
fn pattern_balanced_complete_sentence() {
    let set = rules("[[rule]]\nname = \"p\"\nkind = \"pattern\"\npattern = '(yes|no)\\.?'\n");
    assert!(set.check("yes.", None).passed);
    assert!(!set.check("yes, maybe", None).passed);

    let set = rules("[[rule]]\nname = \"b\"\nkind = \"balanced\"\n");
    assert!(set.check("(see \"a)\" [1])", None).passed);
    let v = set.check("f(x] 好", None);
    assert_eq!(spans(&v), vec![hit("b", "reject", 3, 4)]);

    let set = rules("[[rule]]\nname = \"c\"\nkind = \"complete_sentence\"\n");
    assert!(set.check("这是答案。", None).passed);
    assert!(set.check("He said \"no!\"  ", None).passed);
    let v = set.check("and then", None);
    assert_eq!(spans(&v), vec![hit("c", "reject", 7, 8)]);
}

#[test]
fn normalize_transforms_text() {
    let set = rules(
        "[[rule]]\nname = \"n\"\nkind = \"normalize\"\ntrim = true\ncollapse_whitespace = true\nnfc = true\nstrip_control = true\n",
    );
    let v = set.check("  Cafe\u{301}\u{0}  au\tlait \r\n", None);
    assert_eq!(v.text, "Café au lait");
    assert!(v.hits.is_empty());
    assert!(v.passed);
}

#[test]
fn reasoning_split_closed_unclosed_none() {
    let toml = "[[rule]]\nname = \"r\"\nkind = \"reasoning_split\"\n[[rule]]\nname = \"w\"\nkind = \"deny_words\"\nwords = [\"secret\"]\n";
    let set = rules(toml);
    // Closed: the secret in the reasoning is not judged.
    let v = set.check("<think>the secret plan</think>\nAnswer: 4", None);
    assert!(v.passed);
    assert_eq!(v.text, "Answer: 4");
    assert_eq!(v.reasoning.as_deref(), Some("the secret plan"));
    // Open tag in the prompt: everything up to </think> is reasoning.
    let v = set.check("secret stuff</think>A secret answer", None);
    assert!(!v.passed);
    assert_eq!(v.text, "A secret answer");
    assert_eq!(v.reasoning.as_deref(), Some("secret stuff"));
    assert_eq!(spans(&v), vec![hit("w", "reject", 22, 28)]);
    // Unclosed at the start: cut off while thinking.
    let v = set.check("<think>still going", None);
    assert_eq!(v.text, "");
    assert_eq!(v.reasoning.as_deref(), Some("still going"));
    // None.
    let v = set.check("plain answer", None);
    assert_eq!(v.reasoning, None);
    assert_eq!(v.text, "plain answer");
}

#[test]
fn every_rule_runs_after_a_rejection() {
    let set = rules(
        "[[rule]]\nname = \"a\"\nkind = \"deny_words\"\nwords = [\"x\"]\n[[rule]]\nname = \"b\"\nkind = \"regex\"\npattern = \"y\"\naction = \"redact\"\n",
    );
    let v = set.check("x y", None);
    assert!(!v.passed);
    assert_eq!(v.text, "x [REDACTED]");
    assert_eq!(
        spans(&v),
        vec![hit("a", "reject", 0, 1), hit("b", "redact", 2, 3)]
    );
}
