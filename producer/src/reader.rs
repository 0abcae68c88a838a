//! Reads a job file line by line with bounded memory: a line longer than the cap is skipped to
//! its newline without being held (RELIABILITY.md #16: a 1 GB line with no newline), and
//! invalid UTF-8, CRLF endings and blank lines are handled per line.

use std::io::{BufRead, ErrorKind};

pub enum Line {
    Text(String),
    Blank,
    TooLong(usize),
    NotUtf8,
}

/// Yields `(line_no, Line)`; `line_no` is 1-based.
pub struct BoundedLines<R> {
    reader: R,
    cap: usize,
    line_no: usize,
    buf: Vec<u8>,
}

impl<R: BufRead> BoundedLines<R> {
    pub fn new(reader: R, cap: usize) -> Self {
        BoundedLines {
            reader,
            cap,
            line_no: 0,
            buf: Vec::new(),
        }
    }

    pub fn next_line(&mut self) -> std::io::Result<Option<(usize, Line)>> {
        self.buf.clear();
        let mut seen = 0usize;
        let mut any = false;
        loop {
            let available = match self.reader.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if available.is_empty() {
                if !any {
                    return Ok(None);
                }
                break;
            }
            any = true;
            let (chunk, found_newline) = match available.iter().position(|&b| b == b'\n') {
                Some(i) => (&available[..i], true),
                None => (available, false),
            };
            seen += chunk.len();
            if seen <= self.cap {
                self.buf.extend_from_slice(chunk);
            }
            let consumed = chunk.len() + usize::from(found_newline);
            self.reader.consume(consumed);
            if found_newline {
                break;
            }
        }
        self.line_no += 1;
        let line = if seen > self.cap {
            Line::TooLong(seen)
        } else {
            if self.buf.last() == Some(&b'\r') {
                self.buf.pop();
            }
            match std::str::from_utf8(&self.buf) {
                Ok(t) if t.trim().is_empty() => Line::Blank,
                Ok(t) => Line::Text(t.to_string()),
                Err(_) => Line::NotUtf8,
            }
        };
        Ok(Some((self.line_no, line)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8], cap: usize) -> Vec<(usize, String)> {
        let mut r = BoundedLines::new(std::io::BufReader::with_capacity(4, input), cap);
        let mut out = Vec::new();
        while let Some((n, l)) = r.next_line().unwrap() {
            out.push((
                n,
                match l {
                    Line::Text(t) => t,
                    Line::Blank => "<blank>".into(),
                    Line::TooLong(n) => format!("<too long {n}>"),
                    Line::NotUtf8 => "<not utf-8>".into(),
                },
            ));
        }
        out
    }

    #[test]
    fn splits_crlf_blank_long_and_bad_lines() {
        let got = lines(
            b"{\"a\":1}\r\n\n  \nxxxxxxxxxxxxxxxxxxxx\n\xff\xfe\nlast",
            10,
        );
        assert_eq!(
            got,
            vec![
                (1, "{\"a\":1}".to_string()),
                (2, "<blank>".into()),
                (3, "<blank>".into()),
                (4, "<too long 20>".into()),
                (5, "<not utf-8>".into()),
                (6, "last".into()),
            ]
        );
    }
}
