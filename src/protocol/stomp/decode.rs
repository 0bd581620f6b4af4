//! Streaming STOMP decoder: frames out of a growing byte buffer, one call per frame.

use bytes::{Buf, Bytes, BytesMut};

use super::error::{StompError, StompLimits};
use super::escape::{unescape, Escaping};
use super::frame::{Command, Frame, Version};

/// One item of the incoming stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// A complete frame.
    Frame(Frame),
    /// An EOL (LF or CRLF) between frames: STOMP 1.1+ "Heart-beating" (any traffic counts as
    /// a sign of life, and 1.0 peers may send them too).
    HeartBeat,
}

/// A frame whose headers are read and whose body is still arriving (see
/// [`Decoder::body_in_progress`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyInProgress<'a> {
    pub command: Command,
    pub headers: &'a [(String, String)],
    /// Its `content-length` header, when it has one.
    pub content_length: Option<usize>,
    /// How many bytes of its body are buffered so far.
    pub received: usize,
}

/// Where the decoder is inside the frame at the front of the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Between frames: NULs are skipped, EOLs are heart-beats.
    Between,
    /// Reading the command line, which starts at offset 0.
    Command,
    /// Reading header lines; the current one starts at `line_start`.
    Headers,
    /// Reading the body, which starts at `body_start`.
    Body,
}

/// The STOMP 1.0/1.1/1.2 decoder of one connection (<https://stomp.github.io/>).
///
/// It is IO-free: the caller appends received bytes to a `BytesMut` and calls
/// [`Decoder::decode`] until it returns `Ok(None)`. A frame stays in the buffer until it is
/// complete (the decoder remembers how far it has looked, so bytes arriving in small pieces are
/// scanned once); the caller must only append to the buffer between calls. What a partial frame
/// may hold is bounded by [`StompLimits`]: a peer that never sends the terminating NUL gets an
/// error, not unbounded buffering.
///
/// Header values are decoded per STOMP 1.2 "Value Encoding": CONNECT, STOMP and CONNECTED are
/// never unescaped, nor any 1.0 frame; 1.1 unescapes `\n` `\c` `\\`, 1.2 also `\r`, and any
/// other escape is an error. Header lines end in LF or CRLF. In 1.0 (which includes a CONNECT
/// before negotiation) values are trimmed of surrounding whitespace as ActiveMQ 5.17 does; 1.1
/// and 1.2 keep spaces around `:` as part of names and values.
#[derive(Debug, Clone)]
pub struct Decoder {
    version: Version,
    limits: StompLimits,
    phase: Phase,
    /// Bytes of the buffer already examined for the current line or body.
    scanned: usize,
    line_start: usize,
    body_start: usize,
    command: Command,
    headers: Vec<(String, String)>,
    content_length: Option<usize>,
    /// The command line named no command: the frame is still read whole (as ActiveMQ does)
    /// so that the ERROR can carry its `receipt-id`, then refused.
    unknown_command: Option<String>,
    /// The `receipt` header of the last frame refused: read whole (an unknown command), or
    /// refused once its headers were (partly) read.
    failed_receipt: Option<String>,
}

impl Default for Decoder {
    fn default() -> Decoder {
        Decoder::new(StompLimits::default())
    }
}

impl Decoder {
    /// A decoder for a new connection: version 1.0 until [`Decoder::set_version`] (so the
    /// CONNECT frame is read as ActiveMQ reads it, unescaped and trimmed).
    pub fn new(limits: StompLimits) -> Decoder {
        Decoder {
            version: Version::V1_0,
            limits,
            phase: Phase::Between,
            scanned: 0,
            line_start: 0,
            body_start: 0,
            command: Command::Send,
            headers: Vec::new(),
            content_length: None,
            unknown_command: None,
            failed_receipt: None,
        }
    }

    /// The version negotiated at CONNECT: it decides how later frames' headers are unescaped.
    pub fn set_version(&mut self, version: Version) {
        self.version = version;
    }

    /// The version frames are currently decoded with.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The limits this decoder enforces.
    pub fn limits(&self) -> &StompLimits {
        &self.limits
    }

    /// Takes the next frame or heart-beat from the front of `buf`.
    ///
    /// `Ok(None)`: more bytes are needed (what is buffered is kept, or NULs between frames are
    /// dropped). `Err`: the stream is malformed or exceeds a limit; the connection must end
    /// (the decoder is reset, but the buffer's content is undefined).
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Decoded>, StompError> {
        let result = self.step(buf);
        if result.is_err() {
            // A frame refused once some of its headers were read (a `content-length` above
            // `maxDataLength`, a body without its NUL) relates to that frame: its ERROR carries
            // the `receipt-id` of its `receipt` (STOMP 1.2 "ERROR"), as other refusals do.
            if let Some((_, receipt)) = self.headers.iter().find(|(name, _)| name == "receipt") {
                self.failed_receipt = Some(receipt.clone());
            }
            self.reset();
        }
        result
    }

    fn reset(&mut self) {
        self.phase = Phase::Between;
        self.scanned = 0;
        self.line_start = 0;
        self.body_start = 0;
        self.headers = Vec::new();
        self.content_length = None;
        self.unknown_command = None;
    }

    /// The frame at the front of `buf` (the buffer [`Decoder::decode`] last returned
    /// `Ok(None)` for) once its headers are read and until its body is complete: the caller
    /// may refuse it by the size it announces or has sent so far without waiting for the
    /// rest. `None` between frames, while headers are read, and for an unknown command
    /// (read whole, then refused).
    pub fn body_in_progress<'a>(&'a self, buf: &[u8]) -> Option<BodyInProgress<'a>> {
        if self.phase != Phase::Body || self.unknown_command.is_some() {
            return None;
        }
        Some(BodyInProgress {
            command: self.command,
            headers: &self.headers,
            content_length: self.content_length,
            received: buf.len().saturating_sub(self.body_start),
        })
    }

    /// The `receipt` header of the frame the last error refused (an unknown command, read whole
    /// first; or a frame refused after a `receipt` header of it was read), for the ERROR
    /// frame's `receipt-id` (STOMP 1.2 "ERROR"). `None` when the refused frame had none.
    pub fn failed_receipt(&self) -> Option<&str> {
        self.failed_receipt.as_deref()
    }

    fn step(&mut self, buf: &mut BytesMut) -> Result<Option<Decoded>, StompError> {
        if self.scanned > buf.len() {
            // The caller replaced the buffer: start over rather than index past its end.
            self.reset();
        }
        loop {
            match self.phase {
                Phase::Between => {
                    let nuls = buf.iter().take_while(|&&b| b == 0).count();
                    buf.advance(nuls);
                    match (buf.first(), buf.get(1)) {
                        (None, _) | (Some(b'\r'), None) => return Ok(None),
                        (Some(b'\n'), _) => {
                            buf.advance(1);
                            return Ok(Some(Decoded::HeartBeat));
                        }
                        (Some(b'\r'), Some(b'\n')) => {
                            buf.advance(2);
                            return Ok(Some(Decoded::HeartBeat));
                        }
                        _ => {
                            self.phase = Phase::Command;
                            self.scanned = 0;
                        }
                    }
                }
                Phase::Command => {
                    let max = self.limits.max_command_length;
                    let found = self.find(buf, b'\n');
                    let line_so_far = &buf[..found.unwrap_or(buf.len()).min(max.saturating_add(2))];
                    if let Some(&b) = line_so_far.iter().find(|&&b| is_binary(b)) {
                        return Err(StompError::NotStomp(b));
                    }
                    let Some(lf) = found else {
                        return self.wait_for_line(buf, max, StompError::CommandTooLong { max });
                    };
                    let line = line_at(buf, 0, lf);
                    if line.len() > max {
                        return Err(StompError::CommandTooLong { max });
                    }
                    let name = trim(line);
                    self.failed_receipt = None;
                    match Command::parse(name) {
                        Some(command) => self.command = command,
                        None => {
                            let shown = &name[..name.len().min(64)];
                            self.unknown_command =
                                Some(String::from_utf8_lossy(shown).into_owned());
                            // Read on as an escaped frame would be.
                            self.command = Command::Send;
                        }
                    }
                    self.next_line(lf)?;
                    self.phase = Phase::Headers;
                }
                Phase::Headers => {
                    let max = self.limits.max_header_length;
                    let Some(lf) = self.find(buf, b'\n') else {
                        return self.wait_for_line(buf, max, StompError::HeaderTooLong { max });
                    };
                    let line = line_at(buf, self.line_start, lf);
                    if line.is_empty() {
                        self.start_body(lf + 1)?;
                        continue;
                    }
                    if line.len() > max {
                        return Err(StompError::HeaderTooLong { max });
                    }
                    if self.headers.len() >= self.limits.max_headers {
                        return Err(StompError::TooManyHeaders {
                            max: self.limits.max_headers,
                        });
                    }
                    let header = self.parse_header(line)?;
                    self.headers.push(header);
                    self.next_line(lf)?;
                }
                Phase::Body => return self.body(buf),
            }
        }
    }

    /// The offset of the first `byte` at or after `scanned`; remembers how far it looked.
    fn find(&mut self, buf: &[u8], byte: u8) -> Option<usize> {
        let rest = buf.get(self.scanned..)?;
        match rest.iter().position(|&b| b == byte) {
            Some(at) => Some(self.scanned + at),
            None => {
                self.scanned = buf.len();
                None
            }
        }
    }

    /// No LF yet: wait, unless the line so far can no longer fit its limit (one more byte is
    /// allowed for the CR of a CRLF) or the frame its size limit.
    fn wait_for_line(
        &self,
        buf: &[u8],
        max: usize,
        too_long: StompError,
    ) -> Result<Option<Decoded>, StompError> {
        if buf.len() - self.line_start > max.saturating_add(1) {
            return Err(too_long);
        }
        self.check_frame_size(buf.len())?;
        Ok(None)
    }

    fn check_frame_size(&self, size: usize) -> Result<(), StompError> {
        if size > self.limits.max_frame_size {
            return Err(StompError::FrameTooLarge {
                max: self.limits.max_frame_size,
            });
        }
        Ok(())
    }

    fn next_line(&mut self, lf: usize) -> Result<(), StompError> {
        self.check_frame_size(lf)?;
        self.line_start = lf + 1;
        self.scanned = lf + 1;
        Ok(())
    }

    fn parse_header(&self, line: &[u8]) -> Result<(String, String), StompError> {
        // A NUL ends a frame: one inside a header line would end the frame early for every
        // receiver it were forwarded to (a header value could carry a forged frame).
        if line.contains(&0) {
            return Err(StompError::NulInHeader);
        }
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or(StompError::MissingColon)?;
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        let escaping = Escaping::of(self.command, self.version);
        let value = if self.version == Version::V1_0 {
            trim(value)
        } else {
            value
        };
        Ok((unescape(name, escaping)?, unescape(value, escaping)?))
    }

    /// The blank line ended the headers at `body_start`: find out how the body ends.
    fn start_body(&mut self, body_start: usize) -> Result<(), StompError> {
        self.check_frame_size(body_start - 1)?;
        let announced = self
            .headers
            .iter()
            .find(|(name, _)| name == "content-length")
            .map(|(_, value)| parse_content_length(value))
            .transpose()?;
        let max_data = self.limits.max_data_length;
        if let Some(length) = announced {
            if length > max_data {
                return Err(StompError::DataTooLong { max: max_data });
            }
            self.check_frame_size(body_start.saturating_add(length))?;
        }
        self.content_length = announced;
        self.body_start = body_start;
        self.scanned = body_start;
        self.phase = Phase::Body;
        Ok(())
    }

    fn body(&mut self, buf: &mut BytesMut) -> Result<Option<Decoded>, StompError> {
        let end = match self.content_length {
            Some(length) => {
                // Limits may be configured as large as usize::MAX: no overflow.
                let end = self.body_start.saturating_add(length);
                match buf.get(end) {
                    None => return Ok(None),
                    Some(0) => end,
                    Some(_) => return Err(StompError::MissingNul),
                }
            }
            None => match self.find(buf, 0) {
                Some(end) => end,
                None => {
                    let max = self.limits.max_data_length;
                    if buf.len() - self.body_start > max {
                        return Err(StompError::DataTooLong { max });
                    }
                    self.check_frame_size(buf.len())?;
                    return Ok(None);
                }
            },
        };
        if end - self.body_start > self.limits.max_data_length {
            return Err(StompError::DataTooLong {
                max: self.limits.max_data_length,
            });
        }
        self.check_frame_size(end)?;
        buf.advance(self.body_start);
        // A copy, not a slice of `buf`: a message kept (queued, retained) would keep the
        // connection's whole read buffer, 8 KiB or more, for a body of a few bytes (4.5 KiB
        // of resident memory per queued 64-byte SEND, against 0.7 KiB for MQTT's reads).
        let body = Bytes::copy_from_slice(&buf[..end - self.body_start]);
        buf.advance(end - self.body_start + 1); // and the NUL
        let frame = Frame {
            command: self.command,
            headers: std::mem::take(&mut self.headers),
            body,
        };
        let unknown = self.unknown_command.take();
        self.reset();
        if let Some(name) = unknown {
            self.failed_receipt = frame.header("receipt").map(str::to_owned);
            return Err(StompError::UnknownCommand(name));
        }
        Ok(Some(Decoded::Frame(frame)))
    }
}

/// The line `start..lf` without the LF and without a CR before it.
/// A byte no command line holds: a control byte other than tab and CR (STOMP 1.2 "Augmented
/// BNF": a command is letters; ActiveMQ trims spaces and tabs around it).
fn is_binary(b: u8) -> bool {
    (b < 0x20 && b != b'\t' && b != b'\r') || b == 0x7f
}

fn line_at(buf: &[u8], start: usize, lf: usize) -> &[u8] {
    let line = buf.get(start..lf).unwrap_or_default();
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Without leading and trailing bytes up to space (what Java's `String.trim` removes, which
/// ActiveMQ applies to the command line and to 1.0 header values).
fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b > b' ').unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|&b| b > b' ')
        .map_or(start, |at| at + 1);
    bytes.get(start..end).unwrap_or_default()
}

/// A `content-length` value: decimal digits, surrounding whitespace allowed. A number too large
/// for memory is refused as too much data, not as a malformed header.
fn parse_content_length(value: &str) -> Result<usize, StompError> {
    let digits = value.trim();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(StompError::InvalidContentLength);
    }
    Ok(digits.parse().unwrap_or(usize::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(decoder: &mut Decoder, bytes: &[u8]) -> Result<Vec<Decoded>, StompError> {
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(item) = decoder.decode(&mut buf)? {
            out.push(item);
        }
        Ok(out)
    }

    fn one_frame(decoder: &mut Decoder, bytes: &[u8]) -> Frame {
        match decode_all(decoder, bytes).as_deref() {
            Ok([Decoded::Frame(frame)]) => frame.clone(),
            other => panic!("expected one frame, got {other:?}"),
        }
    }

    #[test]
    fn send_with_headers_and_body_up_to_nul() {
        let frame = one_frame(
            &mut Decoder::default(),
            b"SEND\ndestination:/queue/a\nreceipt:1\n\nhello\0",
        );
        assert_eq!(frame.command, Command::Send);
        assert_eq!(frame.header("destination"), Some("/queue/a"));
        assert_eq!(frame.header("receipt"), Some("1"));
        assert_eq!(&frame.body[..], b"hello");
    }

    #[test]
    fn eols_between_frames_are_heart_beats_and_nuls_are_skipped() {
        let items =
            decode_all(&mut Decoder::default(), b"\n\r\nDISCONNECT\n\n\0\0\n").expect("valid");
        assert_eq!(items.len(), 4);
        assert_eq!(items[0], Decoded::HeartBeat);
        assert_eq!(items[1], Decoded::HeartBeat);
        assert!(matches!(&items[2], Decoded::Frame(f) if f.command == Command::Disconnect));
        assert_eq!(items[3], Decoded::HeartBeat);
    }

    #[test]
    fn a_lone_cr_waits_for_its_lf() {
        let mut decoder = Decoder::default();
        let mut buf = BytesMut::from(&b"\r"[..]);
        assert_eq!(decoder.decode(&mut buf), Ok(None));
        buf.extend_from_slice(b"\n");
        assert_eq!(decoder.decode(&mut buf), Ok(Some(Decoded::HeartBeat)));
    }

    #[test]
    fn v1_0_trims_values_and_does_not_unescape() {
        let frame = one_frame(&mut Decoder::default(), b"SEND\r\n a : b\\c \r\n\r\n\0");
        assert_eq!(frame.headers, vec![(" a ".into(), "b\\c".into())]);
    }

    #[test]
    fn v1_2_keeps_spaces_and_unescapes_cr() {
        let mut decoder = Decoder::default();
        decoder.set_version(Version::V1_2);
        let frame = one_frame(&mut decoder, b"SEND\n a : b\\r\\n\\c\\\\ \n\n\0");
        assert_eq!(frame.headers, vec![(" a ".into(), " b\r\n:\\ ".into())]);
    }

    #[test]
    fn v1_1_refuses_the_cr_escape_and_connect_is_never_unescaped() {
        let mut decoder = Decoder::default();
        decoder.set_version(Version::V1_1);
        assert_eq!(
            decode_all(&mut decoder, b"SEND\na:\\r\n\n\0"),
            Err(StompError::UndefinedEscape('r'))
        );
        let frame = one_frame(&mut decoder, b"CONNECT\npasscode:a\\b\n\n\0");
        assert_eq!(frame.header("passcode"), Some("a\\b"));
    }

    #[test]
    fn a_body_in_progress_shows_its_headers_and_size_so_far() {
        let mut decoder = Decoder::default();
        let mut buf = BytesMut::from(&b"SEND\ndestination:/queue/a\ncontent-length:50"[..]);
        assert_eq!(decoder.decode(&mut buf), Ok(None));
        assert_eq!(decoder.body_in_progress(&buf), None, "headers not read yet");
        buf.extend_from_slice(b"\n\nabc");
        assert_eq!(decoder.decode(&mut buf), Ok(None));
        let body = decoder.body_in_progress(&buf).expect("a body in progress");
        assert_eq!(body.command, Command::Send);
        assert_eq!(body.content_length, Some(50));
        assert_eq!(body.received, 3);
        assert_eq!(body.headers[0], ("destination".into(), "/queue/a".into()));
        let mut unbounded = Decoder::default();
        let mut buf = BytesMut::from(&b"SEND\n\n12345"[..]);
        assert_eq!(unbounded.decode(&mut buf), Ok(None));
        let body = unbounded
            .body_in_progress(&buf)
            .expect("a body in progress");
        assert_eq!((body.content_length, body.received), (None, 5));
        buf.extend_from_slice(b"\0");
        assert!(matches!(
            unbounded.decode(&mut buf),
            Ok(Some(Decoded::Frame(_)))
        ));
        assert_eq!(unbounded.body_in_progress(&buf), None, "between frames");
        let mut unknown = Decoder::default();
        let mut buf = BytesMut::from(&b"SNED\n\n12345"[..]);
        assert_eq!(unknown.decode(&mut buf), Ok(None));
        assert_eq!(unknown.body_in_progress(&buf), None, "an unknown command");
    }

    #[test]
    fn content_length_body_may_hold_nul() {
        let frame = one_frame(&mut Decoder::default(), b"SEND\ncontent-length:3\n\na\0b\0");
        assert_eq!(&frame.body[..], b"a\0b");
        assert_eq!(
            decode_all(&mut Decoder::default(), b"SEND\ncontent-length:1\n\nab\0"),
            Err(StompError::MissingNul)
        );
        assert_eq!(
            decode_all(&mut Decoder::default(), b"SEND\ncontent-length:x\n\n\0"),
            Err(StompError::InvalidContentLength)
        );
    }

    #[test]
    fn unknown_command_and_missing_colon_are_errors() {
        assert_eq!(
            decode_all(&mut Decoder::default(), b"send\n\n\0"),
            Err(StompError::UnknownCommand("send".into()))
        );
        assert_eq!(
            decode_all(&mut Decoder::default(), b"SEND\nnocolon\n\n\0"),
            Err(StompError::MissingColon)
        );
    }

    #[test]
    fn an_mqtt_connect_is_refused_at_its_first_byte() {
        let mut decoder = Decoder::default();
        // An MQTT 3.1.1 CONNECT's fixed header: no LF ever comes.
        let mut buf = BytesMut::from(&b"\x10\x0c\x00\x04MQTT"[..]);
        assert_eq!(decoder.decode(&mut buf), Err(StompError::NotStomp(0x10)));
        let mut decoder = Decoder::default();
        let mut split = BytesMut::from(&b"CONN"[..]);
        assert_eq!(decoder.decode(&mut split), Ok(None));
        split.extend_from_slice(b"\x01");
        assert_eq!(decoder.decode(&mut split), Err(StompError::NotStomp(0x01)));
        // With every limit unlimited too (the scan's bound must not overflow).
        let mut decoder = Decoder::new(StompLimits {
            max_command_length: usize::MAX,
            max_header_length: usize::MAX,
            max_headers: usize::MAX,
            max_data_length: usize::MAX,
            max_frame_size: usize::MAX,
        });
        let mut buf = BytesMut::from(&b"\x10\x0c"[..]);
        assert_eq!(decoder.decode(&mut buf), Err(StompError::NotStomp(0x10)));
        // Tabs, CR and spaces around a command stay allowed, as ActiveMQ trims them.
        let mut decoder = Decoder::default();
        let mut ok = BytesMut::from(&b"\tDISCONNECT \r\n\n\x00"[..]);
        assert!(matches!(
            decoder.decode(&mut ok),
            Ok(Some(Decoded::Frame(_)))
        ));
    }

    #[test]
    fn a_nul_in_a_header_line_is_an_error() {
        assert_eq!(
            decode_all(
                &mut Decoder::default(),
                b"SEND\ndestination:/topic/a\nx:\0ERROR\nmessage:forged\n\n\0"
            ),
            Err(StompError::NulInHeader)
        );
    }

    #[test]
    fn an_unknown_command_is_read_whole_and_its_receipt_kept() {
        let mut decoder = Decoder::default();
        decoder.set_version(Version::V1_2);
        assert_eq!(
            decode_all(&mut decoder, b"FOO\nreceipt:r\\c1\n\nbody\0"),
            Err(StompError::UnknownCommand("FOO".into()))
        );
        assert_eq!(decoder.failed_receipt(), Some("r:1"));
    }

    #[test]
    fn a_frame_refused_after_its_headers_keeps_its_receipt() {
        // A content-length too large for a number, one above the limit, a body without NUL.
        for bytes in [
            &b"SEND\ndestination:/queue/a\nreceipt:r\\c2\ncontent-length:99999999999999999999999\n\n"[..],
            &b"SEND\ndestination:/queue/a\nreceipt:r\\c2\ncontent-length:104857601\n\n"[..],
            &b"SEND\nreceipt:r\\c2\ncontent-length:1\n\nab\0"[..],
        ] {
            let mut decoder = Decoder::default();
            decoder.set_version(Version::V1_2);
            assert!(decode_all(&mut decoder, bytes).is_err());
            assert_eq!(decoder.failed_receipt(), Some("r:2"), "{bytes:?}");
        }
        // Without a receipt header: none.
        let mut decoder = Decoder::default();
        assert_eq!(
            decode_all(
                &mut decoder,
                b"SEND\ncontent-length:99999999999999999999999\n\n"
            ),
            Err(StompError::DataTooLong {
                max: StompLimits::default().max_data_length
            })
        );
        assert_eq!(decoder.failed_receipt(), None);
    }

    #[test]
    fn trim_matches_java() {
        assert_eq!(trim(b" \t a b \r"), b"a b");
        assert_eq!(trim(b"   "), b"");
        assert_eq!(trim(b""), b"");
    }
}
