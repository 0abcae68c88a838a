//! Finding the stretches of a text that a Unicode normalisation would change.
//!
//! Both the deny-word folding (NFKC + lowercase) and the `normalize` rule's
//! NFC option must know, for every changed stretch, which bytes of the input
//! it came from, so that hits can be mapped back to the input. Normalising a
//! whole text with `unicode-normalization` loses that link, so this module
//! cuts the text into *chunks* that normalise independently: a chunk starts
//! at a character that does not combine with what precedes it and runs over
//! every following character that does (a combining mark, a character whose
//! quick check is "Maybe", or one decomposing into such). Only chunks that
//! may change are reported; the caller normalises each on its own.
//!
//! Speed matters here (the deny-word scan runs over every output), so ASCII
//! and the big blocks of CJK ideographs, kana and Hangul syllables, which
//! are stable under all three transforms, are skipped with a cheap range
//! test and never reach the normalisation tables.

use unicode_normalization::char::canonical_combining_class;
use unicode_normalization::{is_nfc_quick, is_nfkc_quick, IsNormalized, UnicodeNormalization};

/// Which transform a chunk scan is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Form {
    /// Canonical composition (the `normalize` rule's `nfc` option).
    Nfc,
    /// Compatibility composition followed by lowercasing (deny-word folding).
    Fold,
}

/// True for non-ASCII characters in blocks that NFC, NFKC and lowercasing
/// all leave unchanged and that never combine with a preceding character.
/// (A following combining mark may still combine with them; the chunk scan
/// handles that by backing up.) The claim is checked exhaustively in tests.
#[inline]
pub(crate) fn is_fast_stable(c: char) -> bool {
    matches!(c as u32,
        0x3001..=0x3002        // 、。
        | 0x300C..=0x300F      // 「」『』
        | 0x3041..=0x3096      // hiragana
        | 0x30A1..=0x30FA      // katakana
        | 0x3400..=0x9FFF      // CJK ext. A, Yijing hexagrams, CJK unified
        | 0xAC00..=0xD7A3      // Hangul syllables
    )
}

fn quick_check(c: char, form: Form) -> IsNormalized {
    match form {
        Form::Nfc => is_nfc_quick(std::iter::once(c)),
        Form::Fold => is_nfkc_quick(std::iter::once(c)),
    }
}

/// True when `c` may combine with the character before it under `form`:
/// a combining mark, a character that composes with a preceding one
/// (quick check "Maybe"), or one whose decomposition starts like that.
pub(crate) fn combines_backward(c: char, form: Form) -> bool {
    if canonical_combining_class(c) != 0 {
        return true;
    }
    match quick_check(c, form) {
        IsNormalized::Yes => false,
        IsNormalized::Maybe => true,
        IsNormalized::No => {
            let mut first = None;
            let mut take_first = |d: char| {
                first.get_or_insert(d);
            };
            match form {
                Form::Nfc => unicode_normalization::char::decompose_canonical(c, &mut take_first),
                Form::Fold => unicode_normalization::char::decompose_compatible(c, &mut take_first),
            }
            first.is_some_and(|d| {
                d != c
                    && (canonical_combining_class(d) != 0
                        || quick_check(d, form) == IsNormalized::Maybe)
            })
        }
    }
}

/// True when `c` on its own is unchanged by `form`.
fn is_self_stable(c: char, form: Form) -> bool {
    if canonical_combining_class(c) != 0 || quick_check(c, form) != IsNormalized::Yes {
        return false;
    }
    match form {
        Form::Nfc => true,
        Form::Fold => {
            let mut lower = c.to_lowercase();
            lower.next() == Some(c) && lower.next().is_none()
        }
    }
}

/// Calls `f(start, end)` with the byte range of every chunk of `text` that
/// `form` may change (a chunk: a character that changes or that a following
/// character combines with, plus all following characters that combine
/// backward), in order and without overlap. Chunks not reported are
/// guaranteed unchanged by [`transform_chunk`].
pub(crate) fn for_each_unstable_chunk(text: &str, form: Form, mut f: impl FnMut(usize, usize)) {
    let bytes = text.as_bytes();
    let len = bytes.len();
    let mut i = 0;
    // Start of the previous character, when it was skipped as stable and
    // could still combine with a following combining mark.
    let mut prev_start: Option<usize> = None;
    while i < len {
        let b = bytes[i];
        if b < 0x80 {
            // Skip the ASCII run, 16 bytes at a time where possible.
            let mut j = i + 1;
            while let Some(block) = bytes.get(j..j + 16) {
                if block.iter().fold(0, |acc, &b| acc | b) >= 0x80 {
                    break;
                }
                j += 16;
            }
            while j < len && bytes[j] < 0x80 {
                j += 1;
            }
            prev_start = Some(j - 1);
            i = j;
            continue;
        }
        if (0xE4..=0xE9).contains(&b) {
            // U+4000..U+9FFF, all stable (see `is_fast_stable`): skip the
            // run of such characters without decoding them.
            let mut j = i + 3;
            while j < len && (0xE4..=0xE9).contains(&bytes[j]) {
                j += 3;
            }
            prev_start = Some(j - 3);
            i = j;
            continue;
        }
        if let Some(c) = decode_three(bytes, i) {
            if is_fast_stable(c) {
                prev_start = Some(i);
                i += 3;
                continue;
            }
        }
        let Some(c) = text[i..].chars().next() else {
            break;
        };
        let clen = c.len_utf8();
        let fullwidth = is_fullwidth_ascii(c);
        let stable = is_fast_stable(c)
            || match form {
                // NFC leaves full-width forms alone; folding always maps them.
                Form::Nfc => fullwidth || is_self_stable(c, form),
                Form::Fold => !fullwidth && is_self_stable(c, form),
            };
        if stable {
            prev_start = Some(i);
            i += clen;
            continue;
        }
        // `c` may change or combine: the chunk starts at `c`, or at the
        // character before it when `c` combines backwards.
        let start = match prev_start {
            Some(p) if !fullwidth && combines_backward(c, form) => p,
            _ => i,
        };
        let mut end = i + clen;
        while end < len {
            let Some(d) = text[end..].chars().next() else {
                break;
            };
            let starter = d.is_ascii()
                || is_fast_stable(d)
                || is_fullwidth_ascii(d)
                || !combines_backward(d, form);
            if starter {
                break;
            }
            end += d.len_utf8();
        }
        f(start, end);
        prev_start = None;
        i = end;
    }
}

/// Decodes the three-byte character at `i` when its lead byte puts it in
/// U+3000..U+DFFF (where the CJK fast ranges are); `bytes` must be valid
/// UTF-8 and `i` a char boundary.
#[inline]
fn decode_three(bytes: &[u8], i: usize) -> Option<char> {
    let [b0, b1, b2] = *bytes.get(i..i + 3)? else {
        return None;
    };
    if !(0xE3..=0xED).contains(&b0) {
        return None;
    }
    let cp = (u32::from(b0 & 0x0F) << 12) | (u32::from(b1 & 0x3F) << 6) | u32::from(b2 & 0x3F);
    char::from_u32(cp)
}

/// Writes `form` applied to `chunk` into `out` (cleared first).
pub(crate) fn transform_chunk(chunk: &str, form: Form, out: &mut String) {
    out.clear();
    if form == Form::Fold {
        if let Some(c) = fullwidth_ascii(chunk) {
            out.push(c.to_ascii_lowercase());
            return;
        }
    }
    match form {
        Form::Nfc => out.extend(chunk.nfc()),
        Form::Fold => {
            for c in chunk.nfkc() {
                out.extend(c.to_lowercase());
            }
        }
    }
}

/// Full-width forms of ASCII (U+FF01..U+FF5E, e.g. `，`, `Ａ`, `１`): the
/// commonest thing to fold in CJK text. Their NFKC form is the ASCII
/// character 0xFEE0 below; they are NFC-stable and combine with nothing
/// before them.
#[inline]
fn is_fullwidth_ascii(c: char) -> bool {
    ('\u{FF01}'..='\u{FF5E}').contains(&c)
}

/// The folded form of a chunk that is one full-width ASCII character.
fn fullwidth_ascii(chunk: &str) -> Option<char> {
    let mut chars = chunk.chars();
    let c = chars.next()?;
    if chars.next().is_some() || !is_fullwidth_ascii(c) {
        return None;
    }
    char::from_u32(c as u32 - 0xFEE0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(text: &str, form: Form) -> Vec<&str> {
        let mut v = Vec::new();
        for_each_unstable_chunk(text, form, |s, e| v.push(&text[s..e]));
        v
    }

    #[test]
    fn fast_ranges_are_really_stable() {
        let ranges = [
            0x3001..=0x3002u32,
            0x300C..=0x300F,
            0x3041..=0x3096,
            0x30A1..=0x30FA,
            0x3400..=0x9FFF,
            0xAC00..=0xD7A3,
        ];
        for range in ranges {
            for cp in range {
                let Some(c) = char::from_u32(cp) else {
                    continue;
                };
                assert!(is_fast_stable(c));
                let s = c.to_string();
                assert_eq!(s.nfc().collect::<String>(), s, "nfc {cp:x}");
                assert_eq!(s.nfkc().collect::<String>(), s, "nfkc {cp:x}");
                assert_eq!(c.to_lowercase().collect::<String>(), s, "lower {cp:x}");
                assert_eq!(canonical_combining_class(c), 0, "ccc {cp:x}");
                assert_eq!(
                    quick_check(c, Form::Nfc),
                    IsNormalized::Yes,
                    "nfc qc {cp:x}"
                );
                assert_eq!(
                    quick_check(c, Form::Fold),
                    IsNormalized::Yes,
                    "nfkc qc {cp:x}"
                );
            }
        }
    }

    #[test]
    fn fullwidth_fast_path_is_nfkc() {
        for cp in 0xFF01..=0xFF5Eu32 {
            let Some(c) = char::from_u32(cp) else {
                continue;
            };
            assert_eq!(canonical_combining_class(c), 0);
            assert_eq!(quick_check(c, Form::Nfc), IsNormalized::Yes);
            assert!(!combines_backward(c, Form::Fold));
            let expected: String = c.to_string().nfkc().flat_map(char::to_lowercase).collect();
            let mut out = String::new();
            transform_chunk(&c.to_string(), Form::Fold, &mut out);
            assert_eq!(out, expected, "{cp:x}");
        }
    }

    #[test]
    fn ascii_and_cjk_have_no_chunks() {
        assert!(chunks("Hello 机密 world。", Form::Fold).is_empty());
        assert_eq!(
            chunks("a long ascii run of text, then Ä", Form::Fold),
            vec!["Ä"]
        );
        assert_eq!(
            chunks("a long ascii run of texte\u{301}", Form::Nfc),
            vec!["e\u{301}"]
        );
        assert!(chunks("Hello 机密 world。", Form::Nfc).is_empty());
    }

    #[test]
    fn fold_reports_fullwidth_and_uppercase() {
        assert_eq!(chunks("aＢcÄ，", Form::Fold), vec!["Ｂ", "Ä", "，"]);
        // NFC leaves all of them alone.
        assert!(chunks("aＢcÄ，", Form::Nfc).is_empty());
    }

    #[test]
    fn combining_mark_backs_up_to_its_base() {
        assert_eq!(chunks("xe\u{301}y", Form::Nfc), vec!["e\u{301}"]);
        assert_eq!(chunks("か\u{3099}", Form::Nfc), vec!["か\u{3099}"]);
        let mut out = String::new();
        transform_chunk("e\u{301}", Form::Nfc, &mut out);
        assert_eq!(out, "é");
        transform_chunk("Ｉ", Form::Fold, &mut out);
        assert_eq!(out, "i");
        transform_chunk("ﬁ", Form::Fold, &mut out);
        assert_eq!(out, "fi");
    }
}
