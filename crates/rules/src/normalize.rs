//! The `normalize` rule: cleaning the text that later rules and storage see.
//!
//! Each option is a separate pass that returns [`Edit`]s (or `None` when it
//! would change nothing, the common case, which then costs one scan and no
//! copy). The engine applies the passes in a fixed order — strip control
//! characters, NFC, collapse whitespace, trim — composing the offset maps,
//! so hits found after normalisation still point into the input.

use crate::edits::Edit;
use crate::unicode::{for_each_unstable_chunk, transform_chunk, Form};

/// The options of one `normalize` rule.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct NormalizeOptions {
    /// Remove leading and trailing whitespace.
    pub(crate) trim: bool,
    /// Replace each run of whitespace by one space, or by one or two line
    /// breaks when the run holds one or more line breaks (paragraphs stay).
    pub(crate) collapse_whitespace: bool,
    /// Unicode canonical composition (NFC).
    pub(crate) nfc: bool,
    /// Remove control characters except `\n` and `\t` (so `\r\n` → `\n`).
    pub(crate) strip_control: bool,
}

/// A normalisation pass: edits for `text`, or `None` when nothing changes.
pub(crate) type Pass = fn(&str) -> Option<Vec<Edit>>;

impl NormalizeOptions {
    /// The passes these options enable, in the order they run.
    pub(crate) fn passes(&self) -> Vec<Pass> {
        let mut passes: Vec<Pass> = Vec::new();
        if self.strip_control {
            passes.push(strip_control);
        }
        if self.nfc {
            passes.push(nfc);
        }
        if self.collapse_whitespace {
            passes.push(collapse_whitespace);
        }
        if self.trim {
            passes.push(trim);
        }
        passes
    }
}

fn non_empty(edits: Vec<Edit>) -> Option<Vec<Edit>> {
    (!edits.is_empty()).then_some(edits)
}

/// Deletes C0 controls (except `\n`, `\t`), DEL and C1 controls.
pub(crate) fn strip_control(text: &str) -> Option<Vec<Edit>> {
    let bytes = text.as_bytes();
    // A byte that may start a control character: below 0x20, DEL, or the
    // lead byte of U+0080..U+00BF.
    let suspect = |b: u8| b < 0x20 || b == 0x7f || b == 0xC2;
    let mut edits: Vec<Edit> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        // Skip clean blocks 16 bytes at a time (no early exit: vectorises).
        if let Some(block) = bytes.get(i..i + 16) {
            if !block.iter().fold(false, |acc, &b| acc | suspect(b)) {
                i += 16;
                continue;
            }
        }
        let b = bytes[i];
        let len = if (b < 0x20 && b != b'\n' && b != b'\t') || b == 0x7f {
            1
        } else if b == 0xC2 && bytes.get(i + 1).is_some_and(|n| (0x80..=0x9F).contains(n)) {
            2
        } else {
            i += 1;
            continue;
        };
        match edits.last_mut() {
            Some(last) if last.end == i => last.end = i + len,
            _ => edits.push(Edit::delete(i, i + len)),
        }
        i += len;
    }
    non_empty(edits)
}

/// Composes canonically equivalent sequences (NFC), chunk by chunk.
pub(crate) fn nfc(text: &str) -> Option<Vec<Edit>> {
    let mut edits = Vec::new();
    let mut scratch = String::new();
    for_each_unstable_chunk(text, Form::Nfc, |start, end| {
        let chunk = &text[start..end];
        transform_chunk(chunk, Form::Nfc, &mut scratch);
        if scratch != chunk {
            edits.push(Edit {
                start,
                end,
                replacement: scratch.clone(),
            });
        }
    });
    non_empty(edits)
}

/// Replaces whitespace runs that are not already in their collapsed form.
pub(crate) fn collapse_whitespace(text: &str) -> Option<Vec<Edit>> {
    let mut edits = Vec::new();
    let mut run_start: Option<usize> = None;
    let mut newlines = 0;
    let flush = |start: usize, end: usize, newlines: usize, edits: &mut Vec<Edit>| {
        let want = match newlines {
            0 => " ",
            1 => "\n",
            _ => "\n\n",
        };
        if &text[start..end] != want {
            edits.push(Edit {
                start,
                end,
                replacement: want.to_string(),
            });
        }
    };
    for (i, c) in text.char_indices() {
        if c.is_whitespace() {
            if run_start.is_none() {
                run_start = Some(i);
                newlines = 0;
            }
            if c == '\n' {
                newlines += 1;
            }
        } else if let Some(start) = run_start.take() {
            flush(start, i, newlines, &mut edits);
        }
    }
    if let Some(start) = run_start {
        flush(start, text.len(), newlines, &mut edits);
    }
    non_empty(edits)
}

/// Deletes leading and trailing whitespace.
pub(crate) fn trim(text: &str) -> Option<Vec<Edit>> {
    let start = text.len() - text.trim_start().len();
    if start == text.len() {
        return (start > 0).then(|| vec![Edit::delete(0, start)]);
    }
    let end = text.trim_end().len();
    let mut edits = Vec::new();
    if start > 0 {
        edits.push(Edit::delete(0, start));
    }
    if end < text.len() {
        edits.push(Edit::delete(end, text.len()));
    }
    non_empty(edits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edits::apply;

    fn run(pass: Pass, text: &str) -> String {
        match pass(text) {
            Some(edits) => apply(text, &edits).0,
            None => text.to_string(),
        }
    }

    #[test]
    fn strip_keeps_newline_and_tab() {
        assert_eq!(
            run(strip_control, "a\r\nb\tc\u{0}\u{7f}d\u{85}e"),
            "a\nb\tcde"
        );
        assert!(strip_control("plain\ntext\t机密").is_none());
    }

    #[test]
    fn nfc_composes() {
        assert_eq!(run(nfc, "Cafe\u{301} 机密"), "Café 机密");
        assert!(nfc("Café").is_none());
    }

    #[test]
    fn collapse_keeps_paragraphs() {
        assert_eq!(
            run(collapse_whitespace, "a  b\t c\n \n\n d\ne"),
            "a b c\n\nd\ne"
        );
        assert!(collapse_whitespace("a b\nc").is_none());
    }

    #[test]
    fn trim_both_ends() {
        assert_eq!(run(trim, "  a b \n"), "a b");
        assert_eq!(run(trim, " \n "), "");
        assert!(trim("a").is_none());
        assert!(trim("").is_none());
    }
}
