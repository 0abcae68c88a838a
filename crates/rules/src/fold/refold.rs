//! Keeping a folded text in step with edits to the text it folds.
//!
//! When a rule redacts a span, the working text changes and the next
//! deny-word rule would have to fold it again from scratch, although only
//! the redacted spans changed. [`Folded::after_edits`] instead copies the old
//! fold around the edits and folds only the replacements. It gives up
//! (`None`, fold afresh) whenever an edit could change how its neighbours
//! fold: an edit end inside a folded chunk, or a combining character on
//! either side of an edit boundary. Tests check the result equals a fresh
//! fold.

use super::{FoldEdit, Folded};
use crate::edits::Edit;
use crate::unicode::{combines_backward, Form};

impl Folded {
    /// The fold of `crate::edits::apply(old, edits).0`, built from `self`,
    /// the fold of `old`; `None` when it must be folded afresh.
    pub(crate) fn after_edits(&self, old: &str, edits: &[Edit]) -> Option<Folded> {
        let folded_old = self.text(old);
        let mut out = Refold {
            text: String::with_capacity(folded_old.len() + 16),
            edits: Vec::with_capacity(self.edits.len()),
            src_len: 0,
        };
        let mut pos = 0;
        for edit in edits {
            let valid = edit.start >= pos
                && edit.end >= edit.start
                && edit.end <= old.len()
                && old.is_char_boundary(edit.start)
                && old.is_char_boundary(edit.end);
            let starts_combining = edit
                .replacement
                .chars()
                .next()
                .is_some_and(|c| combines_backward(c, Form::Fold));
            if !valid
                || starts_combining
                || !self.is_safe_cut(old, edit.start)
                || !self.is_safe_cut(old, edit.end)
            {
                return None;
            }
            self.copy(old, folded_old, pos, edit.start, &mut out);
            let replacement = Folded::new(&edit.replacement);
            out.append(
                &replacement,
                replacement.text(&edit.replacement),
                edit.replacement.len(),
            );
            pos = edit.end;
        }
        self.copy(old, folded_old, pos, old.len(), &mut out);
        Some(Folded {
            text: Some(out.text),
            edits: out.edits,
        })
    }

    /// True when cutting `old` at byte `p` cannot change how the text on
    /// either side folds.
    fn is_safe_cut(&self, old: &str, p: usize) -> bool {
        let inside_chunk = self
            .edits
            .get(self.edits.partition_point(|e| e.src_end <= p))
            .is_some_and(|e| e.src_start < p);
        let next_combines = old
            .get(p..)
            .and_then(|rest| rest.chars().next())
            .is_some_and(|c| combines_backward(c, Form::Fold));
        !inside_chunk && !next_combines
    }

    /// Folded offset of input offset `p`, which is not inside a chunk.
    fn dst_of(&self, p: usize) -> usize {
        let idx = self.edits.partition_point(|e| e.src_end <= p);
        match idx.checked_sub(1).and_then(|i| self.edits.get(i)) {
            Some(e) => e.dst_end + (p - e.src_end),
            None => p,
        }
    }

    /// Appends input bytes `from..to` of `old` (their fold and chunks).
    fn copy(&self, old: &str, folded_old: &str, from: usize, to: usize, out: &mut Refold) {
        if to <= from {
            return;
        }
        let (dst_from, dst_to) = (self.dst_of(from), self.dst_of(to));
        let src_base = out.src_len;
        let dst_base = out.text.len();
        out.text
            .push_str(folded_old.get(dst_from..dst_to).unwrap_or(""));
        let first = self.edits.partition_point(|e| e.src_start < from);
        for e in self.edits.get(first..).unwrap_or(&[]) {
            if e.src_start >= to {
                break;
            }
            out.edits.push(FoldEdit {
                src_start: e.src_start - from + src_base,
                src_end: e.src_end - from + src_base,
                dst_start: e.dst_start - dst_from + dst_base,
                dst_end: e.dst_end - dst_from + dst_base,
            });
        }
        out.src_len += old.get(from..to).map_or(0, str::len);
    }
}

/// The fold being built.
struct Refold {
    text: String,
    edits: Vec<FoldEdit>,
    /// Bytes of the new (unfolded) text covered so far.
    src_len: usize,
}

impl Refold {
    /// Appends a freshly folded piece of `src_len` input bytes.
    fn append(&mut self, piece: &Folded, folded: &str, src_len: usize) {
        let src_base = self.src_len;
        let dst_base = self.text.len();
        self.text.push_str(folded);
        self.edits.extend(piece.edits.iter().map(|e| FoldEdit {
            src_start: e.src_start + src_base,
            src_end: e.src_end + src_base,
            dst_start: e.dst_start + dst_base,
            dst_end: e.dst_end + dst_base,
        }));
        self.src_len += src_len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edits::apply;

    /// Incremental and fresh folds agree (or the incremental one declines).
    fn check(old: &str, edits: &[Edit]) -> bool {
        let before = Folded::new(old);
        let (new, _) = apply(old, edits);
        let fresh = Folded::new(&new);
        match before.after_edits(old, edits) {
            Some(inc) => {
                assert_eq!(inc.text(&new), fresh.text(&new), "{old:?} {edits:?}");
                assert_eq!(inc.edits, fresh.edits, "{old:?} {edits:?}");
                true
            }
            None => false,
        }
    }

    fn redact(start: usize, end: usize, with: &str) -> Edit {
        Edit {
            start,
            end,
            replacement: with.to_string(),
        }
    }

    #[test]
    fn redactions_reuse_the_fold() {
        let old = "Mail ＡＢ a@b.com，机密 ＣＤ x@y.org！End";
        let a = old.find("a@b.com").unwrap_or(0);
        let x = old.find("x@y.org").unwrap_or(0);
        assert!(check(
            old,
            &[redact(a, a + 7, "[EMAIL]"), redact(x, x + 7, "［Ｒ］")]
        ));
        assert!(check(
            old,
            &[redact(0, 4, ""), redact(old.len() - 3, old.len(), "ｚ")]
        ));
        assert!(check("", &[]));
    }

    #[test]
    fn declines_when_neighbours_could_change() {
        let old = "xe\u{301}y ＡＢ";
        // Cutting between "e" and its combining accent.
        assert!(!check(old, &[redact(1, 2, "E")]));
        // Cutting inside the folded chunk "e\u{301}".
        assert!(!check(old, &[redact(2, 4, "")]));
        // A replacement starting with a combining mark.
        assert!(!check(old, &[redact(0, 1, "\u{301}")]));
        // Cutting inside "ＡＢ" between its two chunks is fine.
        assert!(check(old, &[redact(9, 12, "q")]));
    }

    #[test]
    fn generated_edits_agree_with_fresh_folds() {
        let pieces = [
            "ab", "Ｃ", "机", "，", " ", "E", "ﬁ", "é", "e\u{301}", "😀", "Ä",
        ];
        let mut seed = 7u64;
        let mut next = |n: usize| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (seed >> 33) as usize % n
        };
        let mut reused = 0;
        for _ in 0..500 {
            let text: String = (0..12).map(|_| pieces[next(pieces.len())]).collect();
            let bounds: Vec<usize> = (0..=text.len())
                .filter(|&i| text.is_char_boundary(i))
                .collect();
            let mut cuts = [bounds[next(bounds.len())], bounds[next(bounds.len())]];
            cuts.sort_unstable();
            let edit = redact(cuts[0], cuts[1], pieces[next(pieces.len())]);
            reused += usize::from(check(&text, &[edit]));
        }
        assert!(reused > 100, "only {reused} of 500 reused");
    }
}
