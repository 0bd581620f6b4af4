//! STOMP frame encoder: server frames for the broker, client frames for tests and load tools.

use bytes::{BufMut, BytesMut};

use super::escape::{escaped_len, put_escaped, Escaping};
use super::frame::{Frame, Version};

/// The wire form of one heart-beat (STOMP 1.1+ "Heart-beating"): a single EOL.
pub const HEART_BEAT: &[u8] = b"\n";

const CONTENT_LENGTH: &str = "content-length";

/// Appends `frame` in the wire form of `version` (STOMP 1.2 "Frames and Headers"): command,
/// headers in order, a blank line, the body, NUL.
///
/// Header names and values are escaped per the version (STOMP 1.2 "Value Encoding": 1.1
/// `\n` `\c` `\\`, 1.2 also `\r`); CONNECT, STOMP, CONNECTED and every 1.0 frame are written
/// unescaped, and there a CR or LF (or a `:` in a name), which those forms cannot carry, becomes
/// a space. Any `content-length` header of `frame` is dropped and the real one written after
/// the other headers when the body is not empty, so bodies holding NUL survive. The buffer
/// grows once, by exactly the frame's size.
pub fn encode(frame: &Frame, version: Version, buf: &mut BytesMut) {
    let escaping = Escaping::of(frame.command, version);
    let command = frame.command.as_str();
    let headers = frame
        .headers
        .iter()
        .filter(|(name, _)| name != CONTENT_LENGTH);
    let length_line = (!frame.body.is_empty()).then(|| frame.body.len().to_string());

    let mut size = command.len() + 1 + 1 + frame.body.len() + 1;
    for (name, value) in headers.clone() {
        size += escaped_len(name, escaping, true) + 1 + escaped_len(value, escaping, false) + 1;
    }
    if let Some(length) = &length_line {
        size += CONTENT_LENGTH.len() + 1 + length.len() + 1;
    }
    buf.reserve(size);

    buf.put_slice(command.as_bytes());
    buf.put_u8(b'\n');
    for (name, value) in headers {
        put_escaped(buf, name, escaping, true);
        buf.put_u8(b':');
        put_escaped(buf, value, escaping, false);
        buf.put_u8(b'\n');
    }
    if let Some(length) = &length_line {
        buf.put_slice(CONTENT_LENGTH.as_bytes());
        buf.put_u8(b':');
        buf.put_slice(length.as_bytes());
        buf.put_u8(b'\n');
    }
    buf.put_u8(b'\n');
    buf.put_slice(&frame.body);
    buf.put_u8(0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::stomp::Command;
    use bytes::Bytes;

    fn wire(frame: &Frame, version: Version) -> Vec<u8> {
        let mut buf = BytesMut::new();
        encode(frame, version, &mut buf);
        assert_eq!(
            buf.capacity(),
            buf.len(),
            "reserved exactly the frame's size"
        );
        buf.to_vec()
    }

    #[test]
    fn message_is_escaped_and_gets_content_length() {
        let mut frame = Frame::new(Command::Message)
            .with_header("destination", "/topic/a:b")
            .with_header("content-length", "99");
        frame.body = Bytes::from_static(b"x\0y");
        assert_eq!(
            wire(&frame, Version::V1_2),
            b"MESSAGE\ndestination:/topic/a\\cb\ncontent-length:3\n\nx\0y\0"
        );
    }

    #[test]
    fn connected_and_1_0_frames_are_not_escaped() {
        let frame = Frame::new(Command::Connected).with_header("server", "a:b\\c");
        assert_eq!(
            wire(&frame, Version::V1_2),
            b"CONNECTED\nserver:a:b\\c\n\n\0"
        );
        let frame = Frame::new(Command::Receipt).with_header("receipt-id", "x\ny:z");
        assert_eq!(
            wire(&frame, Version::V1_0),
            b"RECEIPT\nreceipt-id:x y:z\n\n\0"
        );
    }

    #[test]
    fn empty_body_has_no_content_length() {
        let frame = Frame::new(Command::Receipt).with_header("receipt-id", "7");
        assert_eq!(wire(&frame, Version::V1_1), b"RECEIPT\nreceipt-id:7\n\n\0");
    }
}
