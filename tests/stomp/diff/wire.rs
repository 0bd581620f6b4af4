//! A second, test-side STOMP frame reader and writer, independent of ferromq's codec: the
//! differential compares two brokers, so the bytes must be read by something neither of them
//! wrote.
//!
//! Header names and values are kept exactly as they are on the wire (escaped or not, per the
//! version the broker chose), so the transcripts compare escaping too. A body is read by its
//! `content-length` header when there is one (it may hold NUL bytes), otherwise up to the NUL
//! (STOMP 1.2, "Body"). End-of-line heart-beats between frames are skipped.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One frame as it came off the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireFrame {
    pub command: String,
    /// (name, value) in wire order, undecoded.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl WireFrame {
    /// The first value of header `name` (STOMP 1.2: the first occurrence wins).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What reading a frame ended with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    Frame(WireFrame),
    /// The broker closed the connection (or reset it).
    Closed,
    /// Nothing complete within the time given.
    Timeout,
    /// Bytes that are not a STOMP frame (shown escaped).
    Garbage(String),
}

/// A raw STOMP connection.
pub struct WireConn {
    stream: TcpStream,
    buf: Vec<u8>,
    closed: bool,
}

impl WireConn {
    pub async fn open(addr: SocketAddr) -> WireConn {
        let stream = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("connect to STOMP at {addr}: {e}"));
        let _ = stream.set_nodelay(true);
        WireConn {
            stream,
            buf: Vec::new(),
            closed: false,
        }
    }

    /// Write `command`, `headers` as given (no escaping: the caller writes what the version
    /// wants), a blank line, `body` and the NUL.
    pub async fn send(&mut self, command: &str, headers: &[(&str, &str)], body: &[u8]) {
        let mut bytes = Vec::with_capacity(64 + body.len());
        bytes.extend_from_slice(command.as_bytes());
        bytes.push(b'\n');
        for (name, value) in headers {
            bytes.extend_from_slice(name.as_bytes());
            bytes.push(b':');
            bytes.extend_from_slice(value.as_bytes());
            bytes.push(b'\n');
        }
        bytes.push(b'\n');
        bytes.extend_from_slice(body);
        bytes.push(0);
        self.send_raw(&bytes).await;
    }

    /// Write bytes as they are. A write to a connection the broker closed is not an error here:
    /// the next read reports [`Read::Closed`].
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        if self.stream.write_all(bytes).await.is_err() {
            self.closed = true;
        }
    }

    /// The next frame within `within`.
    pub async fn read(&mut self, within: Duration) -> Read {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match parse(&self.buf) {
                Parsed::Frame(frame, used) => {
                    self.buf.drain(..used);
                    return Read::Frame(frame);
                }
                Parsed::Garbage(what) => {
                    // Resynchronise after the NUL that ends the broken frame.
                    match self.buf.iter().position(|b| *b == 0) {
                        Some(nul) => drop(self.buf.drain(..=nul)),
                        None => self.buf.clear(),
                    }
                    return Read::Garbage(what);
                }
                Parsed::Incomplete(skip) => {
                    self.buf.drain(..skip);
                }
            }
            if self.closed {
                return Read::Closed;
            }
            let mut chunk = [0u8; 16 * 1024];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => return Read::Timeout,
                Ok(Ok(0)) | Ok(Err(_)) => self.closed = true,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

enum Parsed {
    Frame(WireFrame, usize),
    /// Not a frame yet; the number of leading heart-beat EOLs that can be dropped.
    Incomplete(usize),
    Garbage(String),
}

/// Parse one frame from the start of `buf`.
fn parse(buf: &[u8]) -> Parsed {
    let mut start = 0;
    while start < buf.len() && (buf[start] == b'\n' || buf[start] == b'\r') {
        start += 1;
    }
    let rest = &buf[start..];
    let Some(head_end) = find(rest, b"\n\n")
        .map(|i| (i, 2))
        .into_iter()
        .chain(find(rest, b"\r\n\r\n").map(|i| (i, 4)))
        .min_by_key(|(i, _)| *i)
    else {
        return Parsed::Incomplete(start);
    };
    let (head_len, sep) = head_end;
    let Ok(head) = std::str::from_utf8(&rest[..head_len]) else {
        return Parsed::Garbage(show_bytes(&rest[..head_len]));
    };
    let mut lines = head.lines();
    let command = lines.next().unwrap_or_default().to_owned();
    if command.is_empty() || !command.bytes().all(|b| b.is_ascii_uppercase()) {
        return Parsed::Garbage(show_bytes(&rest[..head_len]));
    }
    let mut headers = Vec::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Parsed::Garbage(format!("header line without a colon: {line:?}"));
        };
        headers.push((name.to_owned(), value.to_owned()));
    }
    let body_start = head_len + sep;
    let length = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.trim().parse::<usize>().ok());
    let (body, end) = match length {
        Some(len) => {
            if rest.len() < body_start + len + 1 {
                return Parsed::Incomplete(start);
            }
            if rest[body_start + len] != 0 {
                return Parsed::Garbage(format!(
                    "{command}: no NUL after content-length {len} bytes"
                ));
            }
            (
                rest[body_start..body_start + len].to_vec(),
                body_start + len + 1,
            )
        }
        None => match rest[body_start..].iter().position(|b| *b == 0) {
            Some(nul) => (
                rest[body_start..body_start + nul].to_vec(),
                body_start + nul + 1,
            ),
            None => return Parsed::Incomplete(start),
        },
    };
    Parsed::Frame(
        WireFrame {
            command,
            headers,
            body,
        },
        start + end,
    )
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Bytes as text with anything not printable escaped.
pub fn show_bytes(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_frames_with_and_without_content_length() {
        let bytes = b"\n\nMESSAGE\na:b\\c\ncontent-length:3\n\nx\0y\0\nRECEIPT\nreceipt-id:1\n\n\0";
        let Parsed::Frame(first, used) = parse(bytes) else {
            panic!("a frame")
        };
        assert_eq!(first.command, "MESSAGE");
        assert_eq!(first.header("a"), Some("b\\c"));
        assert_eq!(first.body, b"x\0y");
        let Parsed::Frame(second, _) = parse(&bytes[used..]) else {
            panic!("a second frame")
        };
        assert_eq!(second.header("receipt-id"), Some("1"));
        assert!(matches!(
            parse(b"MESSAGE\na:b\n\nno nul"),
            Parsed::Incomplete(0)
        ));
        assert!(matches!(parse(b"hello world\n\n\0"), Parsed::Garbage(_)));
    }
}
