//! Header escaping (STOMP 1.2 "Value Encoding"; 1.1 "Value Encoding" without `\r`).

use bytes::{BufMut, BytesMut};

use super::error::StompError;
use super::frame::{Command, Version};

/// How a frame's header names and values are written on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Escaping {
    /// As is: CONNECT, STOMP and CONNECTED in every version, and every 1.0 frame.
    Raw,
    /// `\n` `\c` `\\` (1.1).
    V1_1,
    /// `\r` `\n` `\c` `\\` (1.2).
    V1_2,
}

impl Escaping {
    pub(crate) fn of(command: Command, version: Version) -> Escaping {
        match (command, version) {
            (Command::Connect | Command::Stomp | Command::Connected, _) => Escaping::Raw,
            (_, Version::V1_0) => Escaping::Raw,
            (_, Version::V1_1) => Escaping::V1_1,
            (_, Version::V1_2) => Escaping::V1_2,
        }
    }
}

/// Decodes one header name or value. `Err`: an undefined or cut escape, or not UTF-8.
pub(crate) fn unescape(bytes: &[u8], escaping: Escaping) -> Result<String, StompError> {
    if escaping == Escaping::Raw || !bytes.contains(&b'\\') {
        return utf8(bytes.to_vec());
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut rest = bytes.iter();
    while let Some(&b) = rest.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match rest.next() {
            Some(b'n') => out.push(b'\n'),
            Some(b'c') => out.push(b':'),
            Some(b'\\') => out.push(b'\\'),
            Some(b'r') if escaping == Escaping::V1_2 => out.push(b'\r'),
            Some(&other) => return Err(StompError::UndefinedEscape(char::from(other))),
            None => return Err(StompError::IncompleteEscape),
        }
    }
    utf8(out)
}

fn utf8(bytes: Vec<u8>) -> Result<String, StompError> {
    String::from_utf8(bytes).map_err(|_| StompError::InvalidUtf8)
}

/// The escape sequence for `b` under `escaping`, `None` when `b` is written as is. A byte
/// that would break the frame or line structure and has no escape in the version is replaced
/// by a space: NUL always (it ends a frame), CR and LF in `Raw` mode (1.0 and CONNECTED), CR
/// in 1.1 (which has no `\r`), `:` in a name in `Raw` mode.
fn escape_of(b: u8, escaping: Escaping, in_name: bool) -> Option<&'static [u8]> {
    match (escaping, b) {
        (_, 0) => Some(b" "),
        (Escaping::Raw, b'\n' | b'\r') => Some(b" "),
        (Escaping::Raw, b':') if in_name => Some(b" "),
        (Escaping::Raw, _) => None,
        (_, b'\n') => Some(b"\\n"),
        (_, b':') => Some(b"\\c"),
        (_, b'\\') => Some(b"\\\\"),
        (Escaping::V1_2, b'\r') => Some(b"\\r"),
        (_, b'\r') => Some(b" "),
        _ => None,
    }
}

/// The encoded length of `s`.
pub(crate) fn escaped_len(s: &str, escaping: Escaping, in_name: bool) -> usize {
    s.bytes()
        .map(|b| escape_of(b, escaping, in_name).map_or(1, <[u8]>::len))
        .sum()
}

/// Appends `s` encoded. Text without anything to escape is copied in one piece.
pub(crate) fn put_escaped(buf: &mut BytesMut, s: &str, escaping: Escaping, in_name: bool) {
    let bytes = s.as_bytes();
    if !bytes
        .iter()
        .any(|&b| escape_of(b, escaping, in_name).is_some())
    {
        buf.put_slice(bytes);
        return;
    }
    for &b in bytes {
        match escape_of(b, escaping, in_name) {
            Some(sequence) => buf.put_slice(sequence),
            None => buf.put_u8(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(s: &str, escaping: Escaping, in_name: bool) -> String {
        let mut buf = BytesMut::new();
        put_escaped(&mut buf, s, escaping, in_name);
        assert_eq!(buf.len(), escaped_len(s, escaping, in_name));
        String::from_utf8(buf.to_vec()).expect("utf-8")
    }

    #[test]
    fn the_spec_tables() {
        let all = "a\r\n:\\b";
        assert_eq!(escaped(all, Escaping::V1_2, false), "a\\r\\n\\c\\\\b");
        assert_eq!(escaped(all, Escaping::V1_1, false), "a \\n\\c\\\\b");
        assert_eq!(escaped("a\0b", Escaping::V1_2, false), "a b");
        assert_eq!(escaped("a\0b", Escaping::Raw, false), "a b");
        assert_eq!(escaped(all, Escaping::Raw, false), "a  :\\b");
        assert_eq!(escaped(all, Escaping::Raw, true), "a   \\b");
        assert_eq!(
            unescape(b"a\\r\\n\\c\\\\b", Escaping::V1_2).as_deref(),
            Ok("a\r\n:\\b")
        );
        assert_eq!(
            unescape(b"a\\r", Escaping::V1_1),
            Err(StompError::UndefinedEscape('r'))
        );
        assert_eq!(
            unescape(b"\\t", Escaping::V1_2),
            Err(StompError::UndefinedEscape('t'))
        );
        assert_eq!(
            unescape(b"a\\", Escaping::V1_2),
            Err(StompError::IncompleteEscape)
        );
        assert_eq!(unescape(b"a\\t", Escaping::Raw).as_deref(), Ok("a\\t"));
        assert_eq!(
            unescape(&[0xff], Escaping::Raw),
            Err(StompError::InvalidUtf8)
        );
    }
}
