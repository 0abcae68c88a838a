//! Mapping character offsets of the working text back to the input text.
//!
//! Rules run on a *working text* that earlier rules may have changed
//! (normalised, split off the reasoning, redacted, truncated), but every
//! [`Hit`](crate::Hit) must name character offsets into the text the caller
//! passed in. An [`OffsetMap`] records, for the working text, which input
//! characters each stretch came from:
//!
//! - an *exact* segment was copied unchanged, so offsets inside it map one
//!   to one;
//! - an *inexact* segment replaced some input characters (a normalised
//!   chunk, a redaction marker), so any offset inside it maps to the whole
//!   replaced input range: a span starting inside maps to its start, a span
//!   ending inside maps to its end.
//!
//! Text deleted from the working text (trimmed whitespace, a stripped control
//! character, the reasoning) has no segment; a span never covers it unless
//! it covers characters on both sides of it.

/// Converts monotonically increasing byte offsets of one text into character
/// offsets in a single pass.
pub(crate) struct CharCounter<'a> {
    text: &'a str,
    byte: usize,
    chars: usize,
}

impl<'a> CharCounter<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        CharCounter {
            text,
            byte: 0,
            chars: 0,
        }
    }

    /// Character offset of byte offset `byte`, which must be a char boundary.
    /// Calls should not go backwards; if they do, counting restarts.
    pub(crate) fn at(&mut self, byte: usize) -> usize {
        if byte < self.byte {
            self.byte = 0;
            self.chars = 0;
        }
        let stretch = self.text.get(self.byte..byte).unwrap_or("");
        self.chars += stretch.chars().count();
        self.byte = byte;
        self.chars
    }
}

/// A stretch of the working text, in characters, and the input characters it
/// stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Seg {
    pub(crate) new_start: usize,
    pub(crate) new_end: usize,
    pub(crate) old_start: usize,
    pub(crate) old_end: usize,
    /// Copied unchanged (then both ranges have the same length).
    pub(crate) exact: bool,
}

/// Working-text character offsets → input character offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OffsetMap {
    /// `None` while the working text is still the input.
    segs: Option<Vec<Seg>>,
    /// Input offset of the working text's end (used for empty spans at the
    /// end and for an empty working text).
    end: usize,
}

impl OffsetMap {
    /// The map of a text that is still the input.
    pub(crate) fn identity() -> Self {
        OffsetMap { segs: None, end: 0 }
    }

    /// A map from explicit segments, which must be sorted, non-empty and
    /// contiguous from 0; `end` is the old offset of the new text's end.
    pub(crate) fn from_segs(segs: Vec<Seg>, end: usize) -> Self {
        OffsetMap {
            segs: Some(segs),
            end,
        }
    }

    /// Input offset for a span starting at working offset `p`.
    pub(crate) fn start(&self, p: usize) -> usize {
        let Some(segs) = &self.segs else { return p };
        let idx = segs.partition_point(|s| s.new_start <= p);
        match idx.checked_sub(1).and_then(|i| segs.get(i)) {
            Some(s) if p < s.new_end => {
                if s.exact {
                    s.old_start + (p - s.new_start)
                } else {
                    s.old_start
                }
            }
            _ => segs.get(idx).map_or(self.end, |s| s.old_start),
        }
    }

    /// Input offset for a span ending (exclusively) at working offset `p`.
    pub(crate) fn end(&self, p: usize) -> usize {
        let Some(segs) = &self.segs else { return p };
        let idx = segs.partition_point(|s| s.new_start < p);
        match idx.checked_sub(1).and_then(|i| segs.get(i)) {
            Some(s) if p <= s.new_end => {
                if s.exact {
                    s.old_start + (p - s.new_start)
                } else {
                    s.old_end
                }
            }
            Some(_) => self.end,
            None => self.start(p),
        }
    }

    /// Input span for the working span `start..end`.
    pub(crate) fn span(&self, start: usize, end: usize) -> (usize, usize) {
        if end <= start {
            let p = self.start(start);
            return (p, p);
        }
        (self.start(start), self.end(end))
    }

    /// Composes `self` (working → input) with `next` (new working → current
    /// working) into new working → input.
    pub(crate) fn then(&self, next: OffsetMap) -> OffsetMap {
        let Some(old) = &self.segs else { return next };
        let Some(new_segs) = next.segs else {
            return self.clone();
        };
        let mut out = Vec::with_capacity(new_segs.len() + old.len());
        for n in new_segs {
            if !n.exact {
                let (old_start, old_end) = self.span(n.old_start, n.old_end);
                out.push(Seg {
                    old_start,
                    old_end,
                    ..n
                });
                continue;
            }
            // Split an exact segment along the old segments it crosses.
            let first = old.partition_point(|o| o.new_end <= n.old_start);
            for o in old.get(first..).unwrap_or(&[]) {
                if o.new_start >= n.old_end {
                    break;
                }
                let a = o.new_start.max(n.old_start);
                let b = o.new_end.min(n.old_end);
                let new_start = n.new_start + (a - n.old_start);
                let new_end = new_start + (b - a);
                let (old_start, old_end) = if o.exact {
                    let s = o.old_start + (a - o.new_start);
                    (s, s + (b - a))
                } else {
                    (o.old_start, o.old_end)
                };
                out.push(Seg {
                    new_start,
                    new_end,
                    old_start,
                    old_end,
                    exact: o.exact,
                });
            }
        }
        let end = self.start(next.end);
        OffsetMap::from_segs(out, end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(ns: usize, ne: usize, os: usize, oe: usize, exact: bool) -> Seg {
        Seg {
            new_start: ns,
            new_end: ne,
            old_start: os,
            old_end: oe,
            exact,
        }
    }

    #[test]
    fn counter_counts_chars() {
        let text = "a机b密c";
        let mut c = CharCounter::new(text);
        assert_eq!(c.at(1), 1);
        assert_eq!(c.at(4), 2);
        assert_eq!(c.at(8), 4);
        assert_eq!(c.at(1), 1);
    }

    #[test]
    fn exact_and_inexact_segments() {
        // "ab[X]cd" where "[X]" (3 chars) replaced input chars 2..6.
        let m = OffsetMap::from_segs(
            vec![
                seg(0, 2, 0, 2, true),
                seg(2, 5, 2, 6, false),
                seg(5, 7, 6, 8, true),
            ],
            8,
        );
        assert_eq!(m.span(0, 1), (0, 1));
        assert_eq!(m.span(3, 4), (2, 6));
        assert_eq!(m.span(1, 6), (1, 7));
        assert_eq!(m.span(7, 7), (8, 8));
        assert_eq!(m.span(0, 7), (0, 8));
    }

    #[test]
    fn deleted_text_is_skipped() {
        // Input "  ab  " trimmed to "ab".
        let m = OffsetMap::from_segs(vec![seg(0, 2, 2, 4, true)], 4);
        assert_eq!(m.span(0, 2), (2, 4));
        assert_eq!(m.span(2, 2), (4, 4));
    }

    #[test]
    fn composition_splits_exact_segments() {
        // Step 1: input "xxabcd" → "abcd" (drop 2 leading chars).
        let first = OffsetMap::from_segs(vec![seg(0, 4, 2, 6, true)], 6);
        // Step 2: "abcd" → "a#d" ("bc" replaced by "#").
        let second = OffsetMap::from_segs(
            vec![
                seg(0, 1, 0, 1, true),
                seg(1, 2, 1, 3, false),
                seg(2, 3, 3, 4, true),
            ],
            4,
        );
        let m = first.then(second);
        assert_eq!(m.span(0, 1), (2, 3));
        assert_eq!(m.span(1, 2), (3, 5));
        assert_eq!(m.span(2, 3), (5, 6));
        assert_eq!(m.span(3, 3), (6, 6));
        assert_eq!(OffsetMap::identity().then(m.clone()), m);
    }
}
