//! Regular expressions from rule files, compiled with hard limits.
//!
//! Rule files are user input, and a regex like `a{1000}{1000}` would compile
//! into an enormous automaton; patterns are therefore compiled with a size
//! limit on the compiled program and on the lazy DFA's cache, so a hostile
//! pattern fails at load time with a clear error instead of eating memory
//! in every worker. The `regex` crate already guarantees linear-time
//! matching; the scan cap additionally bounds the work per text.

use regex::{Regex, RegexBuilder};

/// Largest compiled program accepted, in bytes.
pub(crate) const SIZE_LIMIT: usize = 4 << 20;
/// Largest lazy-DFA cache per regex, in bytes.
pub(crate) const DFA_SIZE_LIMIT: usize = 8 << 20;
/// Default for `max_scan_bytes`: how much of a text a regex looks at.
pub(crate) const DEFAULT_MAX_SCAN_BYTES: usize = 4 << 20;

/// A compiled regex and how much of a text it may scan.
#[derive(Debug)]
pub(crate) struct ScanRegex {
    regex: Regex,
    max_scan_bytes: usize,
}

/// Which part of a text a regex scanned.
pub(crate) struct Scanned<'t> {
    /// The prefix that was scanned (all of the text when not `capped`).
    pub(crate) text: &'t str,
    /// True when the text was longer than the cap.
    pub(crate) capped: bool,
}

impl ScanRegex {
    /// Compiles `pattern` for searching (`whole = false`) or for matching
    /// the entire text (`whole = true`).
    pub(crate) fn new(
        pattern: &str,
        case_insensitive: bool,
        whole: bool,
        max_scan_bytes: usize,
    ) -> Result<Self, String> {
        if pattern.is_empty() {
            return Err("empty `pattern`".into());
        }
        let source = if whole {
            format!(r"\A(?:{pattern})\z")
        } else {
            pattern.to_string()
        };
        let regex = RegexBuilder::new(&source)
            .case_insensitive(case_insensitive)
            .size_limit(SIZE_LIMIT)
            .dfa_size_limit(DFA_SIZE_LIMIT)
            .build()
            .map_err(|e| format!("invalid regex: {e}"))?;
        Ok(ScanRegex {
            regex,
            max_scan_bytes,
        })
    }

    /// The cap in bytes.
    pub(crate) fn max_scan_bytes(&self) -> usize {
        self.max_scan_bytes
    }

    /// The prefix of `text` this regex scans: at most the cap, cut at a
    /// char boundary.
    pub(crate) fn scanned<'t>(&self, text: &'t str) -> Scanned<'t> {
        if text.len() <= self.max_scan_bytes {
            return Scanned {
                text,
                capped: false,
            };
        }
        let mut cut = self.max_scan_bytes;
        while cut > 0 && !text.is_char_boundary(cut) {
            cut -= 1;
        }
        Scanned {
            text: text.get(..cut).unwrap_or(""),
            capped: true,
        }
    }

    /// Non-empty matches in the scanned part of `text`, as byte ranges.
    pub(crate) fn find_all(&self, text: &str) -> Vec<(usize, usize)> {
        self.regex
            .find_iter(text)
            .filter(|m| !m.is_empty())
            .map(|m| (m.start(), m.end()))
            .collect()
    }

    /// True when the regex matches `text` (for whole-text patterns: all of it).
    pub(crate) fn is_match(&self, text: &str) -> bool {
        self.regex.is_match(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(p: &str, whole: bool) -> ScanRegex {
        match ScanRegex::new(p, false, whole, DEFAULT_MAX_SCAN_BYTES) {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn hostile_pattern_hits_size_limit() {
        let err = ScanRegex::new("a{1000}{1000}", false, false, 100)
            .err()
            .unwrap_or_default();
        assert!(err.contains("size limit"), "{err}");
    }

    #[test]
    fn email_pattern_finds_spans() {
        let r = compile(r"[\w.+-]+@[\w-]+\.[\w.]+", false);
        let text = "mail bob.x@example.com or 李@例子.中国 now";
        assert_eq!(r.find_all(text), vec![(5, 22), (26, 43)]);
    }

    #[test]
    fn whole_text_pattern() {
        let r = compile(r"\d+", true);
        assert!(r.is_match("12345"));
        assert!(!r.is_match("123a"));
        assert!(!r.is_match("a123"));
    }

    #[test]
    fn scan_cap_cuts_at_char_boundary() {
        let r = match ScanRegex::new("x", false, false, 4) {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        };
        let s = r.scanned("a机密");
        assert!(s.capped);
        assert_eq!(s.text, "a机");
        assert!(!r.scanned("abcd").capped);
    }
}
