//! Where to cut a text that is too long (`max_chars` with `truncate`).
//!
//! A hard cut at exactly `max` characters leaves half a word or half a
//! sentence; a reader prefers the text to stop at the last sentence end, or
//! failing that at the last space, as long as that does not throw away more
//! than half of what was allowed. The cut is always at a char boundary.

/// Sentence-ending punctuation that ends a sentence by itself (CJK) or
/// when followed by whitespace or the end of the text (ASCII).
const CJK_TERMINALS: &[char] = &['。', '！', '？', '…'];
const ASCII_TERMINALS: &[char] = &['.', '!', '?'];
const CLOSERS: &[char] = &[
    '"', '\'', '”', '’', ')', ']', '}', '」', '』', '）', '》', '】', '»',
];

/// The byte offset at which to cut `text` so that at most `max` characters
/// stay, or `None` when it already fits. Trailing whitespace before the cut
/// is dropped too.
pub(crate) fn cut_point(text: &str, max: usize) -> Option<usize> {
    let window_end = match text.char_indices().nth(max) {
        Some((byte, _)) => byte,
        None => return None,
    };
    let window = &text[..window_end];
    let min_keep = max / 2;
    let rest = &text[window_end..];
    let cut = sentence_end(window, rest, min_keep)
        .or_else(|| word_end(window, rest, min_keep))
        .unwrap_or(window_end);
    Some(text[..cut].trim_end().len())
}

/// Byte offset just after the last sentence end in `window` that keeps at
/// least `min_keep` characters.
fn sentence_end(window: &str, rest: &str, min_keep: usize) -> Option<usize> {
    let chars: Vec<(usize, char)> = window.char_indices().collect();
    let next_after = |i: usize| -> Option<char> {
        chars
            .get(i + 1)
            .map(|&(_, c)| c)
            .or_else(|| rest.chars().next())
    };
    for i in (0..chars.len()).rev() {
        // Cutting after character `i` keeps `i + 1` characters.
        if i < min_keep {
            break;
        }
        let (byte, c) = chars[i];
        let is_end = CJK_TERMINALS.contains(&c)
            || (ASCII_TERMINALS.contains(&c) && next_after(i).is_none_or(is_break_after_ascii));
        if !is_end {
            continue;
        }
        // Keep closing quotes/brackets that follow inside the window.
        let mut end = byte + c.len_utf8();
        for &(b, d) in &chars[i + 1..] {
            if !CLOSERS.contains(&d) {
                break;
            }
            end = b + d.len_utf8();
        }
        return Some(end);
    }
    None
}

fn is_break_after_ascii(c: char) -> bool {
    c.is_whitespace() || CLOSERS.contains(&c)
}

/// Byte offset of the last whitespace in `window` that keeps at least
/// `min_keep` characters before it (the window's end itself when the text
/// goes on with whitespace).
fn word_end(window: &str, rest: &str, min_keep: usize) -> Option<usize> {
    if rest.starts_with(char::is_whitespace) {
        return Some(window.len());
    }
    let (chars_before, byte) = window
        .char_indices()
        .enumerate()
        .filter(|(_, (_, c))| c.is_whitespace())
        .map(|(n, (b, _))| (n, b))
        .last()?;
    (chars_before >= min_keep).then_some(byte)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fits_is_none() {
        assert_eq!(cut_point("short", 5), None);
        assert_eq!(cut_point("机密", 2), None);
    }

    #[test]
    fn prefers_sentence_end() {
        let text = "One two. Three four five six";
        // max 14 → window "One two. Three"; the sentence ends after "two.".
        assert_eq!(cut_point(text, 14), Some(8));
        // max 20: keeping 8 of 20 is too little, so the last space wins.
        assert_eq!(cut_point(text, 20), Some(19));
        // The window ends where a word ends.
        let long = "One two. Three four five six seven eight nine ten eleven";
        assert_eq!(
            &long[..cut_point(long, 40).unwrap_or(0)],
            "One two. Three four five six seven eight"
        );
    }

    #[test]
    fn decimal_point_is_not_a_sentence_end() {
        let text = "Pi is 3.14159 and more words here";
        assert_eq!(&text[..cut_point(text, 16).unwrap_or(0)], "Pi is 3.14159");
    }

    #[test]
    fn cjk_cut_keeps_char_boundaries() {
        let text = "第一句。第二句很长很长很长";
        let cut = cut_point(text, 6).unwrap_or(0);
        assert_eq!(&text[..cut], "第一句。");
        // No boundary at all: hard cut after 3 characters.
        let text = "机密机密机密";
        assert_eq!(&text[..cut_point(text, 3).unwrap_or(0)], "机密机");
    }

    #[test]
    fn closing_quote_stays_with_sentence() {
        let text = "He said \"stop.\" Then more text follows here";
        assert_eq!(
            &text[..cut_point(text, 24).unwrap_or(0)],
            "He said \"stop.\""
        );
    }
}
