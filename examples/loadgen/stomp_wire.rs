//! STOMP 1.2 frames as the load generator writes and reads them: its own small encoder and
//! decoder, written from the STOMP 1.2 specification ("Frames and Headers", "Value Encoding",
//! "Heart-beating") and deliberately independent of ferromq's codec, for the same reason as
//! `wire.rs`: the load generator measures any broker, and a bug in ferromq's codec must not
//! hide behind the same bug in the tool that measures it.
//!
//! Only what a load run needs: CONNECT, SEND, SUBSCRIBE, ACK, DISCONNECT out; CONNECTED,
//! RECEIPT, MESSAGE and ERROR in. Bodies are read by `content-length` when present, else up
//! to the NUL (STOMP 1.2: "Frames ... with a content-length header ... MUST read exactly
//! that many bytes").

use bytes::{Buf, Bytes, BytesMut};

/// The frame commands a load run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Connect,
    Connected,
    Send,
    Subscribe,
    Ack,
    Disconnect,
    Message,
    Receipt,
    Error,
    /// A command this tool does not use (kept so an error message can name it).
    Other,
}

impl Command {
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Connect => "CONNECT",
            Command::Connected => "CONNECTED",
            Command::Send => "SEND",
            Command::Subscribe => "SUBSCRIBE",
            Command::Ack => "ACK",
            Command::Disconnect => "DISCONNECT",
            Command::Message => "MESSAGE",
            Command::Receipt => "RECEIPT",
            Command::Error => "ERROR",
            Command::Other => "(other)",
        }
    }

    fn parse(line: &[u8]) -> Command {
        match line {
            b"CONNECT" | b"STOMP" => Command::Connect,
            b"CONNECTED" => Command::Connected,
            b"SEND" => Command::Send,
            b"SUBSCRIBE" => Command::Subscribe,
            b"ACK" => Command::Ack,
            b"DISCONNECT" => Command::Disconnect,
            b"MESSAGE" => Command::Message,
            b"RECEIPT" => Command::Receipt,
            b"ERROR" => Command::Error,
            _ => Command::Other,
        }
    }
}

/// One frame: command, headers in order (the first of a repeated header wins, STOMP 1.2
/// "Repeated Header Entries"), body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub command: Command,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Frame {
    pub fn new(command: Command) -> Frame {
        Frame {
            command,
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Frame {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Appends `frame` to `out`: headers escaped as STOMP 1.2 "Value Encoding" says (except in
/// CONNECT and CONNECTED frames), a `content-length` for a SEND with a body, then the NUL.
pub fn encode(frame: &Frame, out: &mut BytesMut) {
    let escape = !matches!(frame.command, Command::Connect | Command::Connected);
    out.extend_from_slice(frame.command.as_str().as_bytes());
    out.extend_from_slice(b"\n");
    for (name, value) in &frame.headers {
        put_value(name, escape, out);
        out.extend_from_slice(b":");
        put_value(value, escape, out);
        out.extend_from_slice(b"\n");
    }
    if !frame.body.is_empty() {
        out.extend_from_slice(format!("content-length:{}\n", frame.body.len()).as_bytes());
    }
    out.extend_from_slice(b"\n");
    out.extend_from_slice(&frame.body);
    out.extend_from_slice(b"\0");
}

fn put_value(value: &str, escape: bool, out: &mut BytesMut) {
    if !escape {
        out.extend_from_slice(value.as_bytes());
        return;
    }
    for b in value.bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b':' => out.extend_from_slice(b"\\c"),
            other => out.extend_from_slice(&[other]),
        }
    }
}

fn unescape(raw: &[u8], escape: bool) -> Result<String, String> {
    let text = std::str::from_utf8(raw).map_err(|_| "a header is not UTF-8".to_owned())?;
    if !escape || !text.contains('\\') {
        return Ok(text.to_owned());
    }
    let mut value = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            value.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => value.push('\\'),
            Some('n') => value.push('\n'),
            Some('r') => value.push('\r'),
            Some('c') => value.push(':'),
            other => return Err(format!("undefined escape \\{other:?} in a header")),
        }
    }
    Ok(value)
}

/// Takes the next frame out of `buf`: `Ok(None)` until a whole one is there. End-of-line
/// bytes between frames (heart-beats) are skipped. The decoder keeps no state between calls:
/// a partial frame is parsed again when more bytes arrive, which costs little for the small
/// frames of a load run.
pub fn decode(buf: &mut BytesMut) -> Result<Option<Frame>, String> {
    let skip = buf
        .iter()
        .take_while(|&&b| b == b'\n' || b == b'\r')
        .count();
    buf.advance(skip);
    let Some((head_len, blank_len)) = end_of_headers(buf) else {
        return Ok(None);
    };
    let head = &buf[..head_len];
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let command = Command::parse(lines.next().unwrap_or_default());
    let escape = !matches!(command, Command::Connect | Command::Connected);
    let mut headers = Vec::new();
    for line in lines {
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or_else(|| "a header line without ':'".to_owned())?;
        headers.push((
            unescape(&line[..colon], escape)?,
            unescape(&line[colon + 1..], escape)?,
        ));
    }
    let body_start = head_len + blank_len;
    let length = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map(|(_, v)| v.parse::<usize>())
        .transpose()
        .map_err(|_| "content-length is not a number".to_owned())?;
    let body_end = match length {
        Some(n) if buf.len() < body_start + n + 1 => return Ok(None),
        Some(n) if buf[body_start + n] != 0 => {
            return Err("no NUL after content-length bytes of body".to_owned())
        }
        Some(n) => body_start + n,
        None => match buf[body_start..].iter().position(|&b| b == 0) {
            Some(i) => body_start + i,
            None => return Ok(None),
        },
    };
    let mut frame_bytes = buf.split_to(body_end + 1);
    frame_bytes.truncate(body_end);
    let body = frame_bytes.split_off(body_start).freeze();
    Ok(Some(Frame {
        command,
        headers,
        body,
    }))
}

/// Where the headers end: the index of the end-of-line before the blank line, and how many
/// bytes the end-of-line plus the blank line take (2 for `\n\n`, 3 for `\n\r\n`).
/// One pass over the bytes, stopping at the first blank line.
fn end_of_headers(buf: &[u8]) -> Option<(usize, usize)> {
    let mut at = 0;
    while let Some(i) = buf.get(at..)?.iter().position(|&b| b == b'\n') {
        let eol = at + i;
        match (buf.get(eol + 1), buf.get(eol + 2)) {
            (Some(b'\n'), _) => return Some((eol, 2)),
            (Some(b'\r'), Some(b'\n')) => return Some((eol, 3)),
            (None, _) | (Some(b'\r'), None) => return None,
            _ => at = eol + 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_round_trips_with_escaped_headers_and_a_binary_body() {
        let frame = Frame::new(Command::Message)
            .with_header("destination", "/queue/a:b\nc\\d")
            .with_header("ack", "7");
        let frame = Frame {
            body: Bytes::from_static(b"x\0y"),
            ..frame
        };
        let mut out = BytesMut::new();
        encode(&frame, &mut out);
        out.extend_from_slice(b"\n\n");
        let mut decoded = decode(&mut out).unwrap().unwrap();
        assert_eq!(
            decoded.headers.pop(),
            Some(("content-length".to_owned(), "3".to_owned()))
        );
        assert_eq!(decoded, frame);
        assert_eq!(decode(&mut out).unwrap(), None);
        assert!(out.is_empty(), "heart-beats are skipped");
    }

    #[test]
    fn a_partial_frame_waits_and_a_frame_without_length_ends_at_its_nul() {
        let whole = b"RECEIPT\r\nreceipt-id:12\r\n\r\n\0MESSAGE\nack:1\n\nhi\0";
        for cut in 0..whole.len() {
            let mut buf = BytesMut::from(&whole[..cut]);
            let first = decode(&mut buf).unwrap();
            if cut < 27 {
                assert_eq!(first, None, "cut at {cut}");
            } else {
                assert_eq!(first.unwrap().header("receipt-id"), Some("12"));
            }
        }
        let mut buf = BytesMut::from(&whole[..]);
        assert_eq!(decode(&mut buf).unwrap().unwrap().command, Command::Receipt);
        let message = decode(&mut buf).unwrap().unwrap();
        assert_eq!(
            (message.command, &message.body[..]),
            (Command::Message, &b"hi"[..])
        );
    }

    #[test]
    fn malformed_frames_are_errors_not_panics() {
        for bad in [
            &b"MESSAGE\nno-colon\n\n\0"[..],
            b"MESSAGE\ncontent-length:x\n\n\0",
            b"MESSAGE\ncontent-length:1\n\nab\0",
            b"MESSAGE\nbad:\\q\n\n\0",
        ] {
            assert!(decode(&mut BytesMut::from(bad)).is_err(), "{bad:?}");
        }
    }
}
