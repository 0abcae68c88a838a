//! The deny-word matcher: Aho-Corasick over all folded words.
//!
//! A word list can hold tens of thousands of entries and every output is
//! scanned, so the words are compiled once and each text is scanned once,
//! whatever the number of words. Words and texts are folded the same way
//! (see [`crate::fold`]), so matching ignores case and width and needs no
//! word boundaries, which is what Chinese and Japanese text requires.
//!
//! Two strategies, same results (leftmost-longest, non-overlapping):
//!
//! - up to [`SCAN_MAX_WORDS`] words: one unanchored leftmost-longest scan;
//!   the automaton is small and the crate's literal prefilters skip most of
//!   the text;
//! - more: the [`StartFilter`] picks the character starts where a word may
//!   begin and an anchored leftmost-longest search runs only there (a big
//!   unanchored automaton would walk, and miss the cache, on every byte).

use aho_corasick::{AhoCorasick, Anchored, Input, MatchKind, StartKind};

use crate::fold::{fold_word, Folded};
use crate::prefilter::StartFilter;

/// Word lists up to this size use a plain unanchored scan.
pub(crate) const SCAN_MAX_WORDS: usize = 64;

/// A compiled deny-word list.
#[derive(Debug)]
pub(crate) struct WordMatcher {
    automaton: AhoCorasick,
    /// Present for large lists: search anchored at filtered positions.
    filter: Option<StartFilter>,
    /// The words as written, indexed by pattern id.
    words: Vec<String>,
}

/// One match: byte range of the scanned text and the index of the word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WordMatch {
    pub(crate) start: usize,
    pub(crate) end: usize,
    pub(crate) word: usize,
}

impl WordMatcher {
    /// Builds the matcher; fails with a message naming the first word that
    /// is empty once folded (it would match everywhere).
    pub(crate) fn new(words: Vec<String>) -> Result<Self, String> {
        Self::with_threshold(words, SCAN_MAX_WORDS)
    }

    /// [`new`](Self::new) with an explicit strategy threshold (for tests).
    pub(crate) fn with_threshold(words: Vec<String>, scan_max: usize) -> Result<Self, String> {
        let mut folded = Vec::with_capacity(words.len());
        for word in &words {
            let f = fold_word(word);
            if f.trim().is_empty() {
                return Err(format!("empty deny word {word:?}"));
            }
            folded.push(f);
        }
        if folded.is_empty() {
            return Err("no deny words (give `words` or a non-empty `words_file`)".into());
        }
        let filtered = folded.len() > scan_max;
        let mut builder = AhoCorasick::builder();
        builder.match_kind(MatchKind::LeftmostLongest);
        if filtered {
            builder
                .start_kind(StartKind::Anchored)
                .kind(Some(aho_corasick::AhoCorasickKind::ContiguousNFA));
        }
        let automaton = builder
            .build(&folded)
            .map_err(|e| format!("cannot build the word automaton: {e}"))?;
        let filter = filtered.then(|| StartFilter::new(&folded));
        Ok(WordMatcher {
            automaton,
            filter,
            words,
        })
    }

    /// The words as written in the rule file, in order.
    pub(crate) fn words(&self) -> &[String] {
        &self.words
    }

    /// The word with index `idx` (as in [`WordMatch::word`]).
    pub(crate) fn word(&self, idx: usize) -> &str {
        self.words.get(idx).map_or("", String::as_str)
    }

    /// All non-overlapping leftmost-longest matches in `text`, as byte
    /// ranges of `text` covering whole characters.
    #[cfg(test)]
    pub(crate) fn find(&self, text: &str) -> Vec<WordMatch> {
        self.find_folded(text, &Folded::new(text))
    }

    /// [`find`](Self::find) with `text` already folded into `folded`.
    pub(crate) fn find_folded(&self, text: &str, folded: &Folded) -> Vec<WordMatch> {
        let mut found: Vec<WordMatch> = Vec::new();
        let mut push = |start: usize, end: usize, word: usize| {
            let start = folded.src_start(start);
            let end = folded.src_end(end);
            // Two matches inside one expanded character map to the same
            // input character; keep the first.
            if found.last().is_some_and(|prev| start < prev.end) {
                return;
            }
            found.push(WordMatch { start, end, word });
        };
        match &self.filter {
            None => {
                for m in self.automaton.find_iter(folded.text(text)) {
                    push(m.start(), m.end(), m.pattern().as_usize());
                }
            }
            Some(filter) => {
                let hay = folded.text(text).as_bytes();
                let mut from = 0;
                while let Some(at) = filter.next_candidate(hay, from) {
                    let input = Input::new(hay).range(at..).anchored(Anchored::Yes);
                    match self.automaton.find(input) {
                        Some(m) => {
                            push(m.start(), m.end(), m.pattern().as_usize());
                            from = m.end().max(at + 1);
                        }
                        None => from = at + 1,
                    }
                }
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both strategies, to be checked against each other.
    struct Both(WordMatcher, WordMatcher);

    fn matcher(words: &[&str]) -> Both {
        let words: Vec<String> = words.iter().map(|w| (*w).to_string()).collect();
        let build = |max| match WordMatcher::with_threshold(words.clone(), max) {
            Ok(m) => m,
            Err(e) => panic!("{e}"),
        };
        let both = Both(build(usize::MAX), build(0));
        assert!(both.0.filter.is_none() && both.1.filter.is_some());
        both
    }

    fn spans(m: &Both, text: &str) -> Vec<(usize, usize, usize)> {
        let get = |m: &WordMatcher| -> Vec<(usize, usize, usize)> {
            m.find(text)
                .into_iter()
                .map(|w| (w.start, w.end, w.word))
                .collect()
        };
        let scanned = get(&m.0);
        assert_eq!(scanned, get(&m.1), "strategies disagree on {text:?}");
        scanned
    }

    #[test]
    fn chinese_without_spaces() {
        let m = matcher(&["机密"]);
        let text = "这是机密文件";
        assert_eq!(spans(&m, text), vec![(6, 12, 0)]);
        assert_eq!(&text[6..12], "机密");
    }

    #[test]
    fn fullwidth_and_case() {
        let m = matcher(&["internal only"]);
        let text = "ＩＮＴＥＲＮＡＬ ｏｎｌｙ!";
        assert_eq!(spans(&m, text), vec![(0, 37, 0)]);
        assert_eq!(spans(&m, "This is INTERNAL Only."), vec![(8, 21, 0)]);
        let m = matcher(&["ＳＥＣＲＥＴ"]);
        assert_eq!(spans(&m, "a secret"), vec![(2, 8, 0)]);
    }

    #[test]
    fn overlapping_words_leftmost_longest() {
        let m = matcher(&["abc", "bcd"]);
        assert_eq!(spans(&m, "abcd"), vec![(0, 3, 0)]);
        let m = matcher(&["ab", "abcd", "cde"]);
        assert_eq!(
            spans(&m, "abcde abc cde"),
            vec![(0, 4, 1), (6, 8, 0), (10, 13, 2)]
        );
    }

    #[test]
    fn emoji_next_to_match() {
        let m = matcher(&["secret"]);
        let text = "😀secret😀";
        assert_eq!(spans(&m, text), vec![(4, 10, 0)]);
    }

    #[test]
    fn strategies_agree_on_generated_text() {
        let words: Vec<String> = (0..300)
            .map(|i| match i % 3 {
                0 => format!("w{i}x"),
                1 => format!("机{}", char::from_u32(0x4E00 + i).unwrap_or('密')),
                _ => format!("{}", char::from_u32(0x4E00 + i).unwrap_or('密')),
            })
            .collect();
        let refs: Vec<&str> = words.iter().map(String::as_str).collect();
        let m = matcher(&refs);
        let mut text = String::new();
        for i in 0..2000u32 {
            text.push(char::from_u32(0x4E00 + (i * 7919) % 400).unwrap_or('a'));
            if i % 5 == 0 {
                text.push_str(&format!("W{}X ", i % 400));
            }
            if i % 11 == 0 {
                text.push('，');
            }
        }
        assert!(spans(&m, &text).len() > 100);
    }

    #[test]
    fn empty_word_rejected() {
        assert!(WordMatcher::new(vec!["ok".into(), " ".into()]).is_err());
        assert!(WordMatcher::new(Vec::new()).is_err());
    }
}
