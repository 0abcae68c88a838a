//! Hit offsets always point into the input, through every transform.

use super::{chars, rules, spans};

fn hit(rule: &str, action: &str, start: usize, end: usize) -> (String, String, usize, usize) {
    (rule.to_string(), action.to_string(), start, end)
}

#[test]
fn after_trim_and_collapse() {
    let set = rules(
        "[[rule]]\nname = \"n\"\nkind = \"normalize\"\ntrim = true\ncollapse_whitespace = true\n\
         [[rule]]\nname = \"w\"\nkind = \"deny_words\"\nwords = [\"secret world\"]\n",
    );
    let text = "   hello   SECRET  \t world  ";
    let v = set.check(text, None);
    assert_eq!(v.text, "hello SECRET world");
    // The match crosses a collapsed run: the span covers the whole run.
    assert_eq!(spans(&v), vec![hit("w", "reject", 11, 26)]);
    assert_eq!(chars(text, 11, 26), "SECRET  \t world");
}

#[test]
fn after_nfc_composition() {
    let set = rules(
        "[[rule]]\nname = \"n\"\nkind = \"normalize\"\nnfc = true\n\
         [[rule]]\nname = \"w\"\nkind = \"deny_words\"\nwords = [\"café\", \"secret\"]\naction = \"flag\"\n",
    );
    let text = "Cafe\u{301} secret";
    let v = set.check(text, None);
    assert_eq!(v.text, "Café secret");
    // "Café" came from 5 input characters; "secret" is shifted by one.
    assert_eq!(
        spans(&v),
        vec![hit("w", "flag", 0, 5), hit("w", "flag", 6, 12)]
    );
}

#[test]
fn decomposed_input_matches_precomposed_word_without_nfc() {
    let set = rules("[[rule]]\nname = \"w\"\nkind = \"deny_words\"\nwords = [\"café\"]\n");
    let text = "un CAFE\u{301}!";
    let v = set.check(text, None);
    assert_eq!(spans(&v), vec![hit("w", "reject", 3, 8)]);
}

#[test]
fn hits_on_replaced_text_cover_the_replaced_input() {
    let set = rules(
        "[[rule]]\nname = \"r\"\nkind = \"deny_words\"\nwords = [\"机密\"]\naction = \"redact\"\nreplacement = \"XX\"\n\
         [[rule]]\nname = \"x\"\nkind = \"regex\"\npattern = \"X\"\naction = \"flag\"\n",
    );
    let v = set.check("a机密b", None);
    assert_eq!(v.text, "aXXb");
    assert_eq!(
        spans(&v),
        vec![
            hit("r", "redact", 1, 3),
            hit("x", "flag", 1, 3),
            hit("x", "flag", 1, 3)
        ]
    );
}

#[test]
fn through_reasoning_strip_and_redaction() {
    let set = rules(
        "[[rule]]\nname = \"r\"\nkind = \"reasoning_split\"\n\
         [[rule]]\nname = \"n\"\nkind = \"normalize\"\nstrip_control = true\ntrim = true\n\
         [[rule]]\nname = \"e\"\nkind = \"regex\"\npattern = '\\w+@\\w+\\.com'\naction = \"redact\"\n\
         [[rule]]\nname = \"w\"\nkind = \"deny_words\"\nwords = [\"ＳＥＣＲＥＴ\"]\naction = \"flag\"\n",
    );
    let text = "<think>思考</think>\n\n \u{7}mail a@b.com: 🙂secret\u{0}! ";
    let v = set.check(text, None);
    assert_eq!(v.reasoning.as_deref(), Some("思考"));
    assert_eq!(v.text, "mail [REDACTED]: 🙂secret!");
    assert_eq!(
        spans(&v),
        vec![hit("e", "redact", 26, 33), hit("w", "flag", 36, 42)]
    );
    assert_eq!(chars(text, 26, 33), "a@b.com");
    assert_eq!(chars(text, 36, 42), "secret");
}

#[test]
fn whole_text_checks_span_the_answer() {
    let set = rules(
        "[[rule]]\nname = \"r\"\nkind = \"reasoning_split\"\n[[rule]]\nname = \"j\"\nkind = \"json\"\n",
    );
    let text = "<think>hmm</think> not json";
    let v = set.check(text, None);
    assert_eq!(spans(&v), vec![hit("j", "reject", 19, 27)]);
    assert_eq!(chars(text, 19, 27), "not json");
    // Empty answer: an empty span where the answer would be.
    let set = rules(
        "[[rule]]\nname = \"r\"\nkind = \"reasoning_split\"\n[[rule]]\nname = \"m\"\nkind = \"min_chars\"\nmin = 1\n",
    );
    let v = set.check("x</think>", None);
    assert_eq!(v.text, "");
    assert_eq!(spans(&v), vec![hit("m", "reject", 0, 0)]);
}

#[test]
fn truncation_span_after_redaction() {
    let set = rules(
        "[[rule]]\nname = \"w\"\nkind = \"deny_words\"\nwords = [\"机密\"]\naction = \"redact\"\nreplacement = \"*\"\n\
         [[rule]]\nname = \"t\"\nkind = \"max_chars\"\nmax = 4\naction = \"truncate\"\n",
    );
    let v = set.check("ab 机密 cd ef", None);
    // Working text "ab * cd ef" (10 chars → cut to "ab *"), input offsets.
    assert_eq!(v.text, "ab *");
    assert_eq!(
        spans(&v),
        vec![hit("w", "redact", 3, 5), hit("t", "truncate", 5, 11)]
    );
}

#[test]
fn large_word_list_after_redaction() {
    // Over 64 words: the filtered matcher; the regex redaction before it
    // makes the engine carry the fold across the edit.
    let mut words: Vec<String> = (0..100).map(|i| format!("\"filler{i:03}\"")).collect();
    words.push("\"internal only\"".into());
    words.push("\"机密\"".into());
    let toml = format!(
        "[[rule]]\nname = \"w0\"\nkind = \"deny_words\"\nwords = [\"zzz\"]\n\
         [[rule]]\nname = \"r\"\nkind = \"regex\"\npattern = 'x+@y'\naction = \"redact\"\n\
         [[rule]]\nname = \"w\"\nkind = \"deny_words\"\nwords = [{}]\naction = \"flag\"\n",
        words.join(", ")
    );
    let set = rules(&toml);
    let text = "ＩＮＴＥＲＮＡＬ ｏｎｌｙ xx@y，机密 Filler007😀";
    let v = set.check(text, None);
    assert_eq!(
        v.text,
        "ＩＮＴＥＲＮＡＬ ｏｎｌｙ [REDACTED]，机密 Filler007😀"
    );
    assert_eq!(
        spans(&v),
        vec![
            hit("r", "redact", 14, 18),
            hit("w", "flag", 0, 13),
            hit("w", "flag", 19, 21),
            hit("w", "flag", 22, 31),
        ]
    );
    assert_eq!(chars(text, 22, 31), "Filler007");
}
