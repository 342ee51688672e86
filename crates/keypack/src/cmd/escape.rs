//! Terminal-safe text from untrusted bytes: names in an archive or an image, strings of a
//! `ventoy.json`, a guest's serial console. A crafted name must not move the cursor, retitle the
//! window or hide a line, so every control character is shown as an escape instead of being
//! sent to the terminal. Printable text, including non-ASCII letters, passes unchanged.
#![forbid(unsafe_code)]

use std::fmt::Write as _;

/// `text` with every control character (C0, DEL, C1, and newline) written as an escape.
pub fn field(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    push_escaped(&mut out, text, false);
    out
}

/// Turns a byte stream (a console log) into terminal-safe text, keeping its line structure:
/// newlines and tabs pass, `\r\n` becomes `\n`, everything else that is a control character or
/// not UTF-8 is escaped. A multi-byte character split across two calls is kept for the next.
#[derive(Debug, Default)]
pub struct StreamEscaper {
    pending: Vec<u8>,
}

impl StreamEscaper {
    /// The escaped text of `bytes`, appended after what earlier calls left incomplete.
    pub fn feed(&mut self, bytes: &[u8]) -> String {
        let mut input = std::mem::take(&mut self.pending);
        input.extend_from_slice(bytes);
        let mut out = String::with_capacity(input.len());
        let mut chunks = input.utf8_chunks().peekable();
        while let Some(chunk) = chunks.next() {
            push_escaped(&mut out, chunk.valid(), true);
            let invalid = chunk.invalid();
            let last = chunks.peek().is_none();
            // An incomplete sequence at the very end may be completed by the next read.
            if last && !invalid.is_empty() && chunk_may_continue(invalid) {
                self.pending.extend_from_slice(invalid);
            } else {
                for b in invalid {
                    let _ = write!(out, "\\x{b:02x}");
                }
            }
        }
        out
    }

    /// What is left when the stream ends: an incomplete sequence, escaped.
    pub fn finish(&mut self) -> String {
        let mut out = String::new();
        for b in std::mem::take(&mut self.pending) {
            let _ = write!(out, "\\x{b:02x}");
        }
        out
    }
}

/// Whether `bytes` (what `utf8_chunks` found invalid at the end) is the start of a character.
fn chunk_may_continue(bytes: &[u8]) -> bool {
    let Some(&lead) = bytes.first() else {
        return false;
    };
    let need = match lead {
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => return false,
    };
    bytes.len() < need && bytes[1..].iter().all(|b| b & 0xc0 == 0x80)
}

fn push_escaped(out: &mut String, text: &str, keep_lines: bool) {
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' | '\t' if keep_lines => out.push(c),
            // Serial consoles end lines with \r\n; a lone \r could overwrite a line.
            '\r' if keep_lines && chars.peek() == Some(&'\n') => {}
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_lose_every_control_character() {
        assert_eq!(field("keys.tar.gz"), "keys.tar.gz");
        assert_eq!(field("é/ü"), "é/ü");
        assert_eq!(field("a\x1b]0;owned\x07b"), "a\\u{1b}]0;owned\\u{7}b");
        assert_eq!(field("x\ny\rz\u{9b}"), "x\\ny\\rz\\u{9b}");
        assert!(!field("\x1b[2J\x7f").chars().any(char::is_control));
    }

    #[test]
    fn streams_keep_lines_and_escape_the_rest() {
        let mut e = StreamEscaper::default();
        assert_eq!(e.feed(b"boot\r\nok\tdone\n"), "boot\nok\tdone\n");
        assert_eq!(
            e.feed(b"\x1b[31mred\x1b[0m\n"),
            "\\u{1b}[31mred\\u{1b}[0m\n"
        );
        assert_eq!(e.feed(b"lone\rcr \xff\n"), "lone\\rcr \\xff\n");
        assert_eq!(e.finish(), "");
    }

    #[test]
    fn a_character_split_across_reads_is_kept_whole() {
        let mut e = StreamEscaper::default();
        let bytes = "ü".as_bytes();
        assert_eq!(e.feed(&bytes[..1]), "");
        assert_eq!(e.feed(&bytes[1..]), "ü");
        assert_eq!(e.feed(b"\xc3"), "");
        assert_eq!(e.finish(), "\\xc3");
    }
}
