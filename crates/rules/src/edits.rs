//! Applying a list of replacements to the working text, keeping the map.
//!
//! Every rule that changes the text (normalisation, reasoning split,
//! redaction, truncation) expresses the change as byte-range [`Edit`]s on
//! the current working text; [`apply`] builds the new text and the
//! [`OffsetMap`] from it back to the old one, which the engine composes with
//! the map it already has. Keeping this in one place means no rule has to
//! reason about offsets.

use crate::offsets::{CharCounter, OffsetMap, Seg};

/// Replace bytes `start..end` of the working text by `replacement`. Both
/// ends must be char boundaries; edits passed to [`apply`] must be sorted
/// and must not overlap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Edit {
    pub(crate) start: usize,
    pub(crate) end: usize,
    pub(crate) replacement: String,
}

impl Edit {
    /// Deletes bytes `start..end`.
    pub(crate) fn delete(start: usize, end: usize) -> Self {
        Edit {
            start,
            end,
            replacement: String::new(),
        }
    }
}

/// Applies `edits` to `text`; returns the new text and its map to `text`
/// (character offsets). Edits that are out of order, overlap, or do not
/// fall on char boundaries are skipped rather than trusted.
pub(crate) fn apply(text: &str, edits: &[Edit]) -> (String, OffsetMap) {
    let mut out = String::with_capacity(text.len());
    let mut segs: Vec<Seg> = Vec::with_capacity(edits.len() * 2 + 1);
    let mut counter = CharCounter::new(text);
    let mut pos = 0; // bytes of `text` consumed
    let mut new_chars = 0;
    let mut first_edit_old: Option<usize> = None;
    for edit in edits {
        let valid = edit.start >= pos
            && edit.end >= edit.start
            && text.is_char_boundary(edit.start)
            && text.is_char_boundary(edit.end)
            && edit.end <= text.len();
        if !valid {
            continue;
        }
        let old_pos = counter.at(pos);
        let old_start = counter.at(edit.start);
        if old_start > old_pos {
            let n = old_start - old_pos;
            segs.push(Seg {
                new_start: new_chars,
                new_end: new_chars + n,
                old_start: old_pos,
                old_end: old_start,
                exact: true,
            });
            new_chars += n;
            out.push_str(&text[pos..edit.start]);
        }
        let old_end = counter.at(edit.end);
        first_edit_old.get_or_insert(old_start);
        let n = edit.replacement.chars().count();
        if n > 0 {
            segs.push(Seg {
                new_start: new_chars,
                new_end: new_chars + n,
                old_start,
                old_end,
                exact: false,
            });
            new_chars += n;
            out.push_str(&edit.replacement);
        }
        pos = edit.end;
    }
    let old_pos = counter.at(pos);
    if pos < text.len() {
        let old_len = counter.at(text.len());
        segs.push(Seg {
            new_start: new_chars,
            new_end: new_chars + (old_len - old_pos),
            old_start: old_pos,
            old_end: old_len,
            exact: true,
        });
        out.push_str(&text[pos..]);
    }
    let end = segs
        .last()
        .map_or(first_edit_old.unwrap_or(0), |s| s.old_end);
    (out, OffsetMap::from_segs(segs, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_delete_and_map() {
        let text = "机密 is 机密!";
        // Redact both "机密" (bytes 0..6 and 10..16), delete "!".
        let edits = [
            Edit {
                start: 0,
                end: 6,
                replacement: "[R]".into(),
            },
            Edit {
                start: 10,
                end: 16,
                replacement: "[R]".into(),
            },
            Edit::delete(16, 17),
        ];
        let (out, map) = apply(text, &edits);
        assert_eq!(out, "[R] is [R]");
        assert_eq!(map.span(0, 3), (0, 2));
        assert_eq!(map.span(3, 7), (2, 6));
        assert_eq!(map.span(7, 10), (6, 8));
        assert_eq!(map.span(10, 10), (8, 8));
    }

    #[test]
    fn bad_edits_are_skipped() {
        let text = "机密";
        // Byte 1 is inside "机".
        let (out, _) = apply(text, &[Edit::delete(1, 3)]);
        assert_eq!(out, "机密");
        let (out, map) = apply(text, &[Edit::delete(0, 6)]);
        assert_eq!(out, "");
        assert_eq!(map.span(0, 0), (0, 0));
    }
}
