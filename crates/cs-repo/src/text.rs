//! Physical lines of a file with their exact line ends, so that printing gives the input back.

use crate::{Error, Result};

/// One physical line: its content and the line end that followed it (`\n`, `\r\n` or nothing
/// for a last line without one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Line<'a> {
    /// Byte offset of the line in the whole text.
    pub(crate) start: usize,
    /// The content, without the line end.
    pub(crate) text: &'a str,
    /// The line end as written.
    pub(crate) eol: &'a str,
    /// 1-based line number.
    pub(crate) number: usize,
}

/// Splits `text` into lines, keeping line ends. A byte-order mark stays in the first line's
/// content; callers skip it with [`content`].
pub(crate) fn lines(text: &str) -> Vec<Line<'_>> {
    let mut out = Vec::new();
    let mut start = 0;
    let bytes = text.as_bytes();
    while start < text.len() {
        let nl = bytes[start..].iter().position(|&b| b == b'\n');
        let (end, next) = match nl {
            Some(i) => (start + i, start + i + 1),
            None => (text.len(), text.len()),
        };
        let (content_end, eol_start) = if nl.is_some() && end > start && bytes[end - 1] == b'\r' {
            (end - 1, end - 1)
        } else {
            (end, end)
        };
        out.push(Line {
            start,
            text: &text[start..content_end],
            eol: &text[eol_start..next],
            number: out.len() + 1,
        });
        start = next;
    }
    out
}

/// Prints lines back (the inverse of [`lines`]).
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn print(lines: &[Line<'_>]) -> String {
    let mut s = String::new();
    for l in lines {
        s.push_str(l.text);
        s.push_str(l.eol);
    }
    s
}

/// The part of a line that parsers look at: the first line's byte-order mark is skipped.
/// Returns the text and its offset inside the line.
pub(crate) fn content<'a>(line: &Line<'a>) -> (&'a str, usize) {
    if line.number == 1
        && let Some(rest) = line.text.strip_prefix('\u{feff}')
    {
        return (rest, '\u{feff}'.len_utf8());
    }
    (line.text, 0)
}

/// Refuses control characters other than tab, carriage return and form feed (binary data),
/// naming the line.
pub(crate) fn refuse_binary(lines: &[Line<'_>]) -> Result<()> {
    for l in lines {
        if let Some(c) = l
            .text
            .chars()
            .find(|c| c.is_control() && !matches!(c, '\t' | '\r' | '\x0c'))
        {
            return Err(Error::Syntax {
                line: l.number,
                message: format!(
                    "binary data (control character U+{:04X}); not a repository file",
                    u32::from(c)
                ),
            });
        }
    }
    Ok(())
}

/// Whitespace-separated words of `s` with their byte offsets in `s`.
pub(crate) fn words(s: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in s.char_indices() {
        if c.is_whitespace() {
            if let Some(st) = start.take() {
                out.push((st, &s[st..i]));
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(st) = start {
        out.push((st, &s[st..]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_crlf_lf_and_a_missing_final_newline() {
        let text = "a\r\nb\n\nc";
        let ls = lines(text);
        assert_eq!(ls.len(), 4);
        assert_eq!((ls[0].text, ls[0].eol), ("a", "\r\n"));
        assert_eq!((ls[1].text, ls[1].eol), ("b", "\n"));
        assert_eq!((ls[2].text, ls[2].eol), ("", "\n"));
        assert_eq!((ls[3].text, ls[3].eol, ls[3].number), ("c", "", 4));
        assert_eq!(print(&ls), text);
    }

    #[test]
    fn a_lone_carriage_return_stays_in_the_content() {
        let ls = lines("a\rb\n\r");
        assert_eq!(ls[0].text, "a\rb");
        assert_eq!(ls[1].text, "\r");
        assert_eq!(print(&ls), "a\rb\n\r");
    }

    #[test]
    fn binary_data_is_refused_with_its_line() {
        let text = "ok\nbad\0x\n";
        let e = refuse_binary(&lines(text)).unwrap_err();
        assert_eq!(e.line(), Some(2));
    }

    #[test]
    fn words_carry_offsets() {
        assert_eq!(words(" a  bc\td"), [(1, "a"), (4, "bc"), (7, "d")]);
    }
}
