//! The bytes <-> frames step of the STOMP connection: a streaming decoder over the read
//! buffer and an encoder for server frames.
//!
//! Escaping follows STOMP 1.2 "Value Encoding": CONNECT/STOMP and CONNECTED are never escaped,
//! 1.0 frames are not, 1.1 uses `\n` `\c` `\\`, 1.2 also `\r`.

use bytes::{Buf, BufMut, BytesMut};

use crate::protocol::stomp::{Command, Frame, Version};

/// What one decode step found.
#[derive(Debug)]
pub enum Decoded {
    Frame(Frame),
    /// An EOL between frames (a heart-beat).
    HeartBeat,
}

/// Why the bytes are not a STOMP frame (the text goes into the ERROR frame's `message`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("unknown STOMP command {0:?}")]
    UnknownCommand(String),
    #[error("malformed header line {0:?}")]
    MalformedHeader(String),
    #[error("frame is not UTF-8 in its command or headers")]
    NotUtf8,
    #[error("invalid escape sequence in a header")]
    BadEscape,
    #[error("content-length {0:?} is not a number")]
    BadContentLength(String),
    #[error("frame larger than the connector's maxFrameSize ({0} bytes)")]
    TooLarge(usize),
    #[error("the body of a frame with content-length is not followed by NUL")]
    MissingNul,
}

/// A streaming decoder; the version decides header unescaping.
#[derive(Debug)]
pub struct Decoder {
    version: Version,
    max_frame_bytes: usize,
}

impl Decoder {
    pub fn new(max_frame_bytes: usize) -> Decoder {
        Decoder {
            version: Version::V1_0,
            max_frame_bytes,
        }
    }

    pub fn set_version(&mut self, version: Version) {
        self.version = version;
    }

    /// The next frame or heart-beat in `buf` (consumed), `None` when more bytes are needed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Decoded>, WireError> {
        match buf.first() {
            None => return Ok(None),
            Some(b'\n') => {
                buf.advance(1);
                return Ok(Some(Decoded::HeartBeat));
            }
            Some(b'\r') => {
                return match buf.get(1) {
                    None => Ok(None),
                    Some(b'\n') => {
                        buf.advance(2);
                        Ok(Some(Decoded::HeartBeat))
                    }
                    Some(_) => Err(WireError::UnknownCommand("\r".into())),
                };
            }
            Some(_) => {}
        }
        // End of the headers: the first empty line.
        let Some(head_end) = find_blank_line(buf) else {
            return self.need_more(buf);
        };
        let (head, body_start) = head_end;
        let head_bytes = &buf[..head];
        let text = std::str::from_utf8(head_bytes).map_err(|_| WireError::NotUtf8)?;
        let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
        let command_text = lines.next().unwrap_or_default();
        let command = Command::parse(command_text.as_bytes())
            .ok_or_else(|| WireError::UnknownCommand(command_text.chars().take(64).collect()))?;
        let escaped = self.version != Version::V1_0
            && !matches!(
                command,
                Command::Connect | Command::Stomp | Command::Connected
            );
        let mut headers = Vec::new();
        for line in lines {
            if line.is_empty() {
                continue;
            }
            let Some((name, value)) = line.split_once(':') else {
                return Err(WireError::MalformedHeader(line.chars().take(64).collect()));
            };
            let (name, value) = if escaped {
                (
                    unescape(name, self.version)?,
                    unescape(value, self.version)?,
                )
            } else if self.version == Version::V1_0 {
                (name.trim().to_owned(), value.trim().to_owned())
            } else {
                (name.to_owned(), value.to_owned())
            };
            headers.push((name, value));
        }
        let content_length = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .map(|(_, v)| {
                v.trim()
                    .parse::<usize>()
                    .map_err(|_| WireError::BadContentLength(v.clone()))
            })
            .transpose()?;
        let body_end = match content_length {
            Some(len) => {
                let end = body_start.saturating_add(len);
                if end > self.max_frame_bytes {
                    return Err(WireError::TooLarge(self.max_frame_bytes));
                }
                if buf.len() <= end {
                    return Ok(None);
                }
                if buf[end] != 0 {
                    return Err(WireError::MissingNul);
                }
                end
            }
            None => match buf[body_start..].iter().position(|&b| b == 0) {
                Some(at) => body_start + at,
                None => return self.need_more(buf),
            },
        };
        let mut frame_bytes = buf.split_to(body_end + 1);
        frame_bytes.truncate(body_end);
        let body = frame_bytes.split_off(body_start).freeze();
        Ok(Some(Decoded::Frame(Frame {
            command,
            headers,
            body,
        })))
    }

    fn need_more(&self, buf: &BytesMut) -> Result<Option<Decoded>, WireError> {
        if buf.len() > self.max_frame_bytes {
            return Err(WireError::TooLarge(self.max_frame_bytes));
        }
        Ok(None)
    }
}

/// (end of the header block, start of the body) when the blank line is in `buf`.
fn find_blank_line(buf: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while let Some(at) = buf[i..].iter().position(|&b| b == b'\n') {
        let nl = i + at;
        let next = nl + 1;
        match buf.get(next) {
            Some(b'\n') => return Some((nl, next + 1)),
            Some(b'\r') if buf.get(next + 1) == Some(&b'\n') => return Some((nl, next + 2)),
            None => return None,
            _ => i = next,
        }
    }
    None
}

fn unescape(s: &str, version: Version) -> Result<String, WireError> {
    if !s.contains('\\') {
        return Ok(s.to_owned());
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('c') => out.push(':'),
            Some('\\') => out.push('\\'),
            Some('r') if version == Version::V1_2 => out.push('\r'),
            _ => return Err(WireError::BadEscape),
        }
    }
    Ok(out)
}

fn escape_into(s: &str, version: Version, out: &mut BytesMut) {
    for c in s.chars() {
        match c {
            '\n' => out.put_slice(b"\\n"),
            ':' => out.put_slice(b"\\c"),
            '\\' => out.put_slice(b"\\\\"),
            '\r' if version == Version::V1_2 => out.put_slice(b"\\r"),
            c => {
                let mut tmp = [0u8; 4];
                out.put_slice(c.encode_utf8(&mut tmp).as_bytes());
            }
        }
    }
}

/// Append `frame` to `out`, escaped for `version`, with `content-length` for a non-empty body.
pub fn encode(frame: &Frame, version: Version, out: &mut BytesMut) {
    let escaped = version != Version::V1_0
        && !matches!(
            frame.command,
            Command::Connect | Command::Stomp | Command::Connected
        );
    out.put_slice(frame.command.as_str().as_bytes());
    out.put_u8(b'\n');
    for (name, value) in &frame.headers {
        if name == "content-length" {
            continue;
        }
        if escaped {
            escape_into(name, version, out);
            out.put_u8(b':');
            escape_into(value, version, out);
        } else {
            // 1.0 cannot carry a line break in a value.
            out.put_slice(name.replace(['\n', '\r'], " ").as_bytes());
            out.put_u8(b':');
            out.put_slice(value.replace(['\n', '\r'], " ").as_bytes());
        }
        out.put_u8(b'\n');
    }
    if !frame.body.is_empty() {
        out.put_slice(format!("content-length:{}\n", frame.body.len()).as_bytes());
    }
    out.put_u8(b'\n');
    out.put_slice(&frame.body);
    out.put_u8(0);
}
