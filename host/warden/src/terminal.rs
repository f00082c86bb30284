//! Showing guest-controlled text on a terminal.
//!
//! A terminal acts on the control characters in what it is given: escape
//! sequences move the cursor, rewrite earlier lines, change the window title
//! or, on some terminals, answer back as if typed. A plugin's output, logs and
//! errors are the plugin author's text, so before they reach a terminal every
//! control character except newline and tab is shown escaped instead: `\r`
//! for a carriage return, `\xNN` for other C0 controls, DEL and bytes that
//! are not UTF-8, `\u{NN}` for C1 controls. Text written to a pipe or a file,
//! and JSON, is left unchanged.
//!
//! Unicode's bidirectional formatting characters (the `Bidi_Control`
//! property: U+061C, U+200E, U+200F, U+202A to U+202E, U+2066 to U+2069) are
//! escaped as `\u{NNNN}` too: a terminal that lays out text
//! bidirectionally lets an override such as U+202E show the rest of the line,
//! Warden's own report included, in an order that is not the order of its
//! characters (the "Trojan Source" trick). Zero-width characters are left
//! alone: they move nothing, and text needs them (U+200D joins emoji,
//! U+200C shapes Persian).

use std::borrow::Cow;

/// `bytes` with every control character except `\n` and `\t`, and every
/// bidirectional formatting character, escaped, as they may be shown on a
/// terminal. Borrows when there is nothing to escape.
///
/// ```
/// use warden::terminal::escape_controls;
///
/// assert_eq!(&*escape_controls(b"\x1b[2Jgone\r\n"), b"\\x1b[2Jgone\\r\n");
/// assert_eq!(&*escape_controls("tab\tand ünïcode\n".as_bytes()), "tab\tand ünïcode\n".as_bytes());
/// ```
pub fn escape_controls(bytes: &[u8]) -> Cow<'_, [u8]> {
    let needs_escaping = bytes
        .utf8_chunks()
        .any(|chunk| !chunk.invalid().is_empty() || chunk.valid().chars().any(is_escaped));
    if !needs_escaping {
        return Cow::Borrowed(bytes);
    }
    let mut escaped = Vec::with_capacity(bytes.len() + 16);
    escape_into(bytes, &mut escaped);
    Cow::Owned(escaped)
}

/// Escapes a stream written in pieces: a UTF-8 sequence split between two
/// writes is held back until it is complete, rather than escaped as bytes
/// that are not UTF-8.
#[derive(Debug, Default)]
pub(crate) struct StreamEscaper {
    /// The start of a UTF-8 sequence the last write ended in.
    pending: Vec<u8>,
}

impl StreamEscaper {
    /// The escaped form of everything up to the last complete character of
    /// what was held back plus `data`.
    pub(crate) fn escape(&mut self, data: &[u8]) -> Vec<u8> {
        let mut input = std::mem::take(&mut self.pending);
        input.extend_from_slice(data);
        self.pending = input.split_off(complete_prefix_len(&input));
        let mut escaped = Vec::with_capacity(input.len());
        escape_into(&input, &mut escaped);
        escaped
    }

    /// The escaped form of what is still held back, when the stream ends.
    pub(crate) fn finish(&mut self) -> Vec<u8> {
        let mut escaped = Vec::new();
        escape_into(&std::mem::take(&mut self.pending), &mut escaped);
        escaped
    }
}

/// Whether a character is shown escaped: the Unicode control characters (C0,
/// DEL and C1), except newline and tab, and the bidirectional formatting
/// characters.
fn is_escaped(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t') || is_bidi_control(c)
}

/// Whether a character has Unicode's `Bidi_Control` property: the marks,
/// embeddings, overrides and isolates that reorder how text is shown.
///
/// ```
/// assert!(warden::terminal::is_bidi_control('\u{202e}'));
/// assert!(!warden::terminal::is_bidi_control('\u{200d}'));
/// ```
pub fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
    )
}

fn escape_into(bytes: &[u8], out: &mut Vec<u8>) {
    use std::io::Write;
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            // Writing into a `Vec` cannot fail.
            let _ = match c {
                '\r' => out.write_all(b"\\r"),
                c if is_escaped(c) && u32::from(c) < 0x80 => write!(out, "\\x{:02x}", u32::from(c)),
                c if is_escaped(c) => write!(out, "\\u{{{:x}}}", u32::from(c)),
                c => out.write_all(c.encode_utf8(&mut [0; 4]).as_bytes()),
            };
        }
        for byte in chunk.invalid() {
            let _ = write!(out, "\\x{byte:02x}");
        }
    }
}

/// The length of `bytes` without an incomplete UTF-8 sequence at its end.
fn complete_prefix_len(bytes: &[u8]) -> usize {
    let mut start = 0;
    loop {
        match std::str::from_utf8(&bytes[start..]) {
            Ok(_) => return bytes.len(),
            Err(err) => match err.error_len() {
                // The input ends inside a sequence that may yet be completed.
                None => return start + err.valid_up_to(),
                Some(invalid) => start += err.valid_up_to() + invalid,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(bytes: &[u8]) -> String {
        String::from_utf8(escape_controls(bytes).into_owned()).unwrap()
    }

    #[test]
    fn control_characters_are_escaped_except_newline_and_tab() {
        assert_eq!(
            escaped(b"\x1b]0;owned\x07\x1b[2J\rbell\x07 nul\0 del\x7f\n\ttab"),
            "\\x1b]0;owned\\x07\\x1b[2J\\rbell\\x07 nul\\x00 del\\x7f\n\ttab"
        );
    }

    #[test]
    fn c1_controls_and_bytes_that_are_not_utf8_are_escaped() {
        // U+009B is the one-character CSI; 0x9b alone is not UTF-8.
        assert_eq!(escaped("\u{9b}31m".as_bytes()), "\\u{9b}31m");
        assert_eq!(escaped(b"\x9b31m \xff"), "\\x9b31m \\xff");
    }

    #[test]
    fn bidirectional_formatting_characters_are_escaped() {
        // An override that would show the rest of the line reversed, and
        // every other `Bidi_Control` character.
        assert_eq!(
            escaped("ok \u{202e}deliated\u{202c} · in 1 ms".as_bytes()),
            "ok \\u{202e}deliated\\u{202c} · in 1 ms"
        );
        let controls =
            "\u{61c}\u{200e}\u{200f}\u{202a}\u{202b}\u{202d}\u{2066}\u{2067}\u{2068}\u{2069}";
        assert_eq!(
            escaped(controls.as_bytes()),
            r"\u{61c}\u{200e}\u{200f}\u{202a}\u{202b}\u{202d}\u{2066}\u{2067}\u{2068}\u{2069}"
        );
        let mut escaper = StreamEscaper::default();
        let rlo = "\u{202e}".as_bytes();
        let mut shown = escaper.escape(&rlo[..2]);
        shown.extend(escaper.escape(&rlo[2..]));
        assert_eq!(String::from_utf8(shown).unwrap(), r"\u{202e}");
    }

    #[test]
    fn zero_width_joiners_and_right_to_left_text_are_unchanged() {
        let text = "family 👨\u{200d}👩\u{200d}👧, می\u{200c}خواهم, שלום\n".as_bytes();
        assert!(matches!(escape_controls(text), Cow::Borrowed(_)));
    }

    #[test]
    fn printable_text_is_borrowed_unchanged() {
        let text = "plain, ünïcode, emoji 🦀, quotes \"' and \\ backslash\n".as_bytes();
        assert!(matches!(escape_controls(text), Cow::Borrowed(_)));
        assert!(matches!(escape_controls(b""), Cow::Borrowed(_)));
    }

    #[test]
    fn a_character_split_between_writes_is_kept_whole() {
        let crab = "🦀".as_bytes();
        let mut escaper = StreamEscaper::default();
        let mut shown = escaper.escape(&crab[..1]);
        shown.extend(escaper.escape(&crab[1..3]));
        assert!(shown.is_empty(), "held back until complete");
        shown.extend(escaper.escape(&[crab[3], 0x1b]));
        shown.extend(escaper.finish());
        assert_eq!(String::from_utf8(shown).unwrap(), "🦀\\x1b");
    }

    #[test]
    fn an_unfinished_character_at_the_end_is_shown_escaped() {
        let mut escaper = StreamEscaper::default();
        let mut shown = escaper.escape(b"ok \xf0\x9f");
        shown.extend(escaper.finish());
        assert_eq!(String::from_utf8(shown).unwrap(), "ok \\xf0\\x9f");
        assert!(escaper.finish().is_empty());
    }
}
