//! STOMP codec tests: wire bytes from the STOMP 1.0/1.1/1.2 specs (escaping tables, CRLF,
//! `content-length` bodies holding NUL, heart-beats), ActiveMQ 5.17's limits, and proptests
//! (generated frames round trip in every version, any split of a stream decodes as one read,
//! arbitrary and mutated bytes never panic).

use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;

use ferromq::protocol::stomp::*;

const VERSIONS: [Version; 3] = [Version::V1_0, Version::V1_1, Version::V1_2];

const COMMANDS: [Command; 15] = [
    Command::Connect,
    Command::Stomp,
    Command::Send,
    Command::Subscribe,
    Command::Unsubscribe,
    Command::Ack,
    Command::Nack,
    Command::Begin,
    Command::Commit,
    Command::Abort,
    Command::Disconnect,
    Command::Connected,
    Command::Message,
    Command::Receipt,
    Command::Error,
];

fn decoder(version: Version) -> Decoder {
    let mut decoder = Decoder::default();
    decoder.set_version(version);
    decoder
}

fn wire(frame: &Frame, version: Version) -> BytesMut {
    let mut buf = BytesMut::new();
    encode(frame, version, &mut buf);
    buf
}

/// Everything `bytes` decodes to in one read, or the first error.
fn decode_all(decoder: &mut Decoder, bytes: &[u8]) -> Result<Vec<Decoded>, StompError> {
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    while let Some(item) = decoder.decode(&mut buf)? {
        out.push(item);
    }
    Ok(out)
}

fn frames(items: Vec<Decoded>) -> Vec<Frame> {
    items
        .into_iter()
        .filter_map(|item| match item {
            Decoded::Frame(frame) => Some(frame),
            Decoded::HeartBeat => None,
        })
        .collect()
}

fn only_frame(version: Version, bytes: &[u8]) -> Frame {
    let items = decode_all(&mut decoder(version), bytes).expect("valid");
    match &items[..] {
        [Decoded::Frame(frame)] => frame.clone(),
        other => panic!("expected one frame, got {other:?}"),
    }
}

fn send(headers: &[(&str, &str)], body: &'static [u8]) -> Frame {
    Frame {
        command: Command::Send,
        headers: headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
        body: Bytes::from_static(body),
    }
}

#[test]
fn spec_escaping_table_1_2() {
    let frame = only_frame(Version::V1_2, b"MESSAGE\nk\\ce\\ny:a\\r\\n\\c\\\\b\n\n\0");
    assert_eq!(frame.headers, vec![("k:e\ny".into(), "a\r\n:\\b".into())]);
    let back = wire(&frame, Version::V1_2);
    assert_eq!(&back[..], b"MESSAGE\nk\\ce\\ny:a\\r\\n\\c\\\\b\n\n\0");
}

#[test]
fn spec_escaping_table_1_1() {
    let frame = only_frame(Version::V1_1, b"MESSAGE\nk:a\\n\\c\\\\b\n\n\0");
    assert_eq!(frame.header("k"), Some("a\n:\\b"));
    assert_eq!(
        decode_all(&mut decoder(Version::V1_1), b"MESSAGE\nk:\\r\n\n\0"),
        Err(StompError::UndefinedEscape('r'))
    );
    for version in [Version::V1_1, Version::V1_2] {
        assert_eq!(
            decode_all(&mut decoder(version), b"SEND\nk:\\t\n\n\0"),
            Err(StompError::UndefinedEscape('t')),
            "{version:?}"
        );
    }
}

#[test]
fn connect_and_connected_are_never_escaped() {
    for version in VERSIONS {
        let frame = only_frame(version, b"CONNECT\nlogin:a\\nb\npasscode:x:y\n\n\0");
        assert_eq!(frame.header("login"), Some("a\\nb"), "{version:?}");
        assert_eq!(frame.header("passcode"), Some("x:y"), "{version:?}");
        let connected = Frame::new(Command::Connected).with_header("session", "a\\b:c");
        assert_eq!(
            &wire(&connected, version)[..],
            b"CONNECTED\nsession:a\\b:c\n\n\0"
        );
    }
}

#[test]
fn v1_0_is_not_unescaped_and_values_are_trimmed_like_activemq() {
    let frame = only_frame(Version::V1_0, b"SEND\n key :  a\\nb  \n\n\0");
    assert_eq!(frame.headers, vec![(" key ".into(), "a\\nb".into())]);
}

#[test]
fn v1_1_and_v1_2_keep_spaces_around_the_colon() {
    for version in [Version::V1_1, Version::V1_2] {
        let frame = only_frame(version, b"SEND\n key :  a \n\n\0");
        assert_eq!(frame.headers, vec![(" key ".into(), "  a ".into())]);
    }
}

#[test]
fn crlf_line_ends_in_every_version() {
    for version in VERSIONS {
        let frame = only_frame(
            version,
            b"SEND\r\ndestination:/queue/a\r\nreceipt:7\r\n\r\nbody\0",
        );
        assert_eq!(frame.header("destination"), Some("/queue/a"));
        assert_eq!(frame.header("receipt"), Some("7"));
        assert_eq!(&frame.body[..], b"body");
    }
}

#[test]
fn repeated_headers_stay_in_order_and_the_first_wins() {
    let frame = only_frame(Version::V1_2, b"MESSAGE\nfoo:World\nfoo:Hello\n\n\0");
    assert_eq!(frame.header("foo"), Some("World"));
    assert_eq!(
        frame.headers,
        vec![
            ("foo".into(), "World".into()),
            ("foo".into(), "Hello".into())
        ]
    );
    assert_eq!(
        &wire(&frame, Version::V1_2)[..],
        b"MESSAGE\nfoo:World\nfoo:Hello\n\n\0"
    );
}

#[test]
fn bodies_with_nul_need_content_length_and_survive_a_round_trip() {
    let frame = send(&[("destination", "/queue/a")], b"\0a\0\0b\0");
    for version in VERSIONS {
        let bytes = wire(&frame, version);
        assert!(bytes.windows(17).any(|w| w == b"content-length:6\n"));
        assert_eq!(only_frame(version, &bytes), {
            let mut expected = frame.clone();
            expected.headers.push(("content-length".into(), "6".into()));
            expected
        });
    }
    // Without content-length the body ends at the first NUL; what follows is the next frame.
    let items = decode_all(&mut Decoder::default(), b"SEND\n\nab\0\nSEND\n\ncd\0").expect("valid");
    assert_eq!(items.len(), 3);
    assert_eq!(items[1], Decoded::HeartBeat);
    let bodies: Vec<_> = frames(items).into_iter().map(|f| f.body).collect();
    assert_eq!(
        bodies,
        vec![Bytes::from_static(b"ab"), Bytes::from_static(b"cd")]
    );
}

#[test]
fn content_length_must_be_a_number_followed_by_nul() {
    assert_eq!(
        decode_all(&mut Decoder::default(), b"SEND\ncontent-length:-1\n\n\0"),
        Err(StompError::InvalidContentLength)
    );
    assert_eq!(
        decode_all(&mut Decoder::default(), b"SEND\ncontent-length:2\n\nabc\0"),
        Err(StompError::MissingNul)
    );
    // The first content-length wins, like every repeated header.
    let frame = only_frame(
        Version::V1_2,
        b"SEND\ncontent-length:1\ncontent-length:3\n\n\0\0",
    );
    assert_eq!(&frame.body[..], b"\0");
}

#[test]
fn heart_beats_between_frames() {
    let items = decode_all(
        &mut Decoder::default(),
        b"\n\r\n\nDISCONNECT\nreceipt:1\n\n\0\r\n",
    )
    .expect("valid");
    assert_eq!(items.len(), 5);
    assert!(items[..3].iter().all(|i| *i == Decoded::HeartBeat));
    assert!(matches!(&items[3], Decoded::Frame(f) if f.command == Command::Disconnect));
    assert_eq!(items[4], Decoded::HeartBeat);
    assert_eq!(HEART_BEAT, b"\n");
}

#[test]
fn commands_are_case_sensitive() {
    assert_eq!(
        decode_all(&mut Decoder::default(), b"Send\n\n\0"),
        Err(StompError::UnknownCommand("Send".into()))
    );
    let message = StompError::UnknownCommand("X".into()).to_string();
    assert_eq!(message, "Unknown STOMP action: X");
}

#[test]
fn activemq_default_limits() {
    let limits = StompLimits::default();
    assert_eq!(limits.max_command_length, 1024);
    assert_eq!(limits.max_header_length, 10240);
    assert_eq!(limits.max_headers, 1000);
    assert_eq!(limits.max_data_length, 104_857_600);
    assert_eq!(limits.max_frame_size, usize::MAX);
}

fn small_limits() -> StompLimits {
    StompLimits {
        max_command_length: 16,
        max_header_length: 20,
        max_headers: 3,
        max_data_length: 10,
        max_frame_size: 100,
    }
}

fn decode_with(limits: StompLimits, bytes: &[u8]) -> Result<Vec<Decoded>, StompError> {
    decode_all(&mut Decoder::new(limits), bytes)
}

#[test]
fn each_limit_is_enforced_at_its_value() {
    let limits = small_limits();
    let header = |len: usize| format!("SEND\n{}:\n\n\0", "h".repeat(len - 1));
    assert!(decode_with(limits, header(20).as_bytes()).is_ok());
    assert_eq!(
        decode_with(limits, header(21).as_bytes()),
        Err(StompError::HeaderTooLong { max: 20 })
    );
    assert!(decode_with(limits, b"SEND\na:\nb:\nc:\n\n\0").is_ok());
    assert_eq!(
        decode_with(limits, b"SEND\na:\nb:\nc:\nd:\n\n\0"),
        Err(StompError::TooManyHeaders { max: 3 })
    );
    assert!(decode_with(limits, b"SEND\n\n0123456789\0").is_ok());
    assert_eq!(
        decode_with(limits, b"SEND\n\n0123456789a\0"),
        Err(StompError::DataTooLong { max: 10 })
    );
    assert!(decode_with(limits, b"SEND\ncontent-length:10\n\n0123456789\0").is_ok());
    assert_eq!(
        decode_with(limits, b"SEND\ncontent-length:11\n\n"),
        Err(StompError::DataTooLong { max: 10 }),
        "refused from the header alone"
    );
    let long_lines = StompLimits {
        max_header_length: 100,
        ..limits
    };
    assert_eq!(
        decode_with(
            long_lines,
            b"SEND\ncontent-length:99999999999999999999999\n\n"
        ),
        Err(StompError::DataTooLong { max: 10 })
    );
    let command = format!("{}SEND\n\n\0", " ".repeat(13));
    assert_eq!(
        decode_with(limits, command.as_bytes()),
        Err(StompError::CommandTooLong { max: 16 })
    );
    let mut big = String::from("SEND\n");
    for _ in 0..3 {
        big.push_str(&format!("{}:\n", "h".repeat(19)));
    }
    big.push_str("\n0123456789\0");
    assert!(decode_with(limits, big.as_bytes()).is_ok());
    let small_frames = StompLimits {
        max_frame_size: 60,
        ..limits
    };
    assert_eq!(
        decode_with(small_frames, big.as_bytes()),
        Err(StompError::FrameTooLarge { max: 60 })
    );
    let body_over_frame = StompLimits {
        max_frame_size: 12,
        ..limits
    };
    assert_eq!(
        decode_with(body_over_frame, b"SEND\n\n0123456\0"),
        Err(StompError::FrameTooLarge { max: 12 })
    );
    assert_eq!(
        decode_with(body_over_frame, b"SEND\ncontent-length:7\n\n"),
        Err(StompError::FrameTooLarge { max: 12 })
    );
    let message = StompError::DataTooLong { max: 10 }.to_string();
    assert!(message.contains("maxDataLength"), "{message}");
}

#[test]
fn unlimited_limits_do_not_overflow() {
    let unlimited = StompLimits {
        max_command_length: usize::MAX,
        max_header_length: usize::MAX,
        max_headers: usize::MAX,
        max_data_length: usize::MAX,
        max_frame_size: usize::MAX,
    };
    let mut decoder = Decoder::new(unlimited);
    let mut buf = BytesMut::from(&b"SEND\ncontent-length:18446744073709551615\n\nabc"[..]);
    assert_eq!(decoder.decode(&mut buf), Ok(None));
    assert_eq!(
        decode_with(unlimited, b"SEND\n\nabc"),
        Ok(Vec::new()),
        "waits for the NUL"
    );
}

/// The body is copied out of the input buffer: a kept message (queued, retained) holding a
/// slice would keep the connection's whole read buffer, 8 KiB or more, for a few bytes.
#[test]
fn the_body_is_a_copy_not_a_slice_of_the_input_buffer() {
    let mut buf = BytesMut::with_capacity(4096);
    buf.extend_from_slice(b"SEND\ncontent-length:64\n\n");
    buf.extend_from_slice(&[7; 64]);
    buf.extend_from_slice(b"\0SEND\n");
    let region = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.capacity();
    let Ok(Some(Decoded::Frame(frame))) = Decoder::default().decode(&mut buf) else {
        panic!("expected a frame");
    };
    assert_eq!(&frame.body[..], &[7; 64][..]);
    assert!(
        !region.contains(&(frame.body.as_ptr() as usize)),
        "the body is a slice of the input buffer"
    );
    assert_eq!(&buf[..], b"SEND\n", "the next frame is left in the buffer");
}

/// A peer that never ends a line or a body gets an error as soon as the buffered bytes can no
/// longer fit the limit, not after the buffer has grown without bound.
#[test]
fn partial_frames_never_buffer_beyond_the_limits() {
    let limits = small_limits();
    let cases: [(&[u8], u8, StompError); 3] = [
        (b"", b'S', StompError::CommandTooLong { max: 16 }),
        (b"SEND\n", b'h', StompError::HeaderTooLong { max: 20 }),
        (b"SEND\n\n", b'x', StompError::DataTooLong { max: 10 }),
    ];
    for (prefix, filler, expected) in cases {
        let mut decoder = Decoder::new(limits);
        let mut buf = BytesMut::from(prefix);
        let mut result = decoder.decode(&mut buf);
        while result == Ok(None) {
            assert!(buf.len() <= prefix.len() + 21, "buffered {}", buf.len());
            buf.extend_from_slice(&[filler]);
            result = decoder.decode(&mut buf);
        }
        assert_eq!(result, Err(expected));
    }
}

// ---- generated frames ----

/// Header text drawn from characters that exercise escaping, multi-byte UTF-8 and spaces.
fn header_text() -> impl Strategy<Value = String> {
    "[a-z:\\\\\r\n é€\t-]{0,8}"
}

/// What `version`'s wire form can carry of a header, restated from the spec: unescaped forms
/// (1.0, CONNECT, STOMP, CONNECTED) have no CR, LF, or `:` in names; 1.0 values are read
/// trimmed; 1.1 has no escape for CR (the encoder writes a space for it: a raw CR ending a
/// line would read as part of a CRLF).
fn representable(
    command: Command,
    version: Version,
    (mut name, mut value): (String, String),
) -> (String, String) {
    let raw = matches!(
        command,
        Command::Connect | Command::Stomp | Command::Connected
    ) || version == Version::V1_0;
    if raw {
        name.retain(|c| !matches!(c, ':' | '\r' | '\n'));
        value.retain(|c| !matches!(c, '\r' | '\n'));
    } else if version == Version::V1_1 {
        name = name.replace('\r', " ");
        value = value.replace('\r', " ");
    }
    if version == Version::V1_0 {
        value = value.trim_matches(|c: char| c <= ' ').to_string();
    }
    if name == "content-length" {
        name.push('x');
    }
    (name, value)
}

fn frame_in(version: Version) -> impl Strategy<Value = Frame> {
    (
        select(COMMANDS.to_vec()),
        vec((header_text(), header_text()), 0..5),
        vec(any::<u8>(), 0..40),
    )
        .prop_map(move |(command, headers, body)| Frame {
            command,
            headers: headers
                .into_iter()
                .map(|header| representable(command, version, header))
                .collect(),
            body: Bytes::from(body),
        })
}

fn versioned_frames() -> impl Strategy<Value = (Version, Vec<Frame>)> {
    select(VERSIONS.to_vec()).prop_flat_map(|version| (Just(version), vec(frame_in(version), 1..4)))
}

/// A frame as it decodes: with the `content-length` the encoder adds for a non-empty body.
fn as_decoded(frame: &Frame) -> Frame {
    let mut expected = frame.clone();
    if !frame.body.is_empty() {
        expected
            .headers
            .push(("content-length".into(), frame.body.len().to_string()));
    }
    expected
}

/// Frames with a heart-beat after each, as one stream.
fn stream(version: Version, frames: &[Frame]) -> BytesMut {
    let mut buf = BytesMut::new();
    for frame in frames {
        encode(frame, version, &mut buf);
        buf.extend_from_slice(HEART_BEAT);
    }
    buf
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn generated_frames_round_trip((version, frames) in versioned_frames()) {
        for frame in &frames {
            let mut buf = wire(frame, version);
            // The encoder grows the buffer once, by the frame's size (a Vec never allocates
            // fewer than 8 bytes).
            if buf.len() >= 8 {
                prop_assert_eq!(buf.capacity(), buf.len());
            }
            let decoded = decoder(version).decode(&mut buf);
            prop_assert_eq!(decoded, Ok(Some(Decoded::Frame(as_decoded(frame)))));
            prop_assert!(buf.is_empty());
        }
    }

    /// Any split of a stream into two reads, and byte-by-byte feeding, decode to exactly what
    /// one read gives.
    #[test]
    fn every_split_decodes_like_one_read((version, frames) in versioned_frames()) {
        let bytes = stream(version, &frames);
        let whole = decode_all(&mut decoder(version), &bytes);
        let expected: Vec<Decoded> = frames
            .iter()
            .flat_map(|f| [Decoded::Frame(as_decoded(f)), Decoded::HeartBeat])
            .collect();
        prop_assert_eq!(whole.as_ref(), Ok(&expected));
        for split in 0..=bytes.len() {
            let mut decoder = decoder(version);
            let mut buf = BytesMut::from(&bytes[..split]);
            let mut got = Vec::new();
            while let Some(item) = decoder.decode(&mut buf).map_err(|e| TestCaseError::fail(e.to_string()))? {
                got.push(item);
            }
            buf.extend_from_slice(&bytes[split..]);
            while let Some(item) = decoder.decode(&mut buf).map_err(|e| TestCaseError::fail(e.to_string()))? {
                got.push(item);
            }
            prop_assert_eq!(&got, &expected, "split at {}", split);
        }
        let mut decoder = decoder(version);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for &byte in bytes.iter() {
            buf.extend_from_slice(&[byte]);
            while let Some(item) = decoder.decode(&mut buf).map_err(|e| TestCaseError::fail(e.to_string()))? {
                got.push(item);
            }
        }
        prop_assert_eq!(got, expected);
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in vec(any::<u8>(), 0..300),
        version in select(VERSIONS.to_vec()),
        small in any::<bool>(),
    ) {
        let limits = if small { small_limits() } else { StompLimits::default() };
        let mut decoder = Decoder::new(limits);
        decoder.set_version(version);
        let _ = decode_all(&mut decoder, &bytes);
    }

    /// Valid streams with bytes changed or cut never panic, and every frame the decoder accepts
    /// encodes back to a frame that decodes the same.
    #[test]
    fn mutated_frames_never_panic_and_accepted_ones_re_encode(
        (version, frames) in versioned_frames(),
        edits in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
        do_cut in any::<bool>(),
    ) {
        let mut bytes = stream(version, &frames).to_vec();
        for (index, value) in edits {
            let position = index.index(bytes.len());
            bytes[position] = value;
        }
        if do_cut {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        let mut decoder = decoder(version);
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(item)) = decoder.decode(&mut buf) {
            let Decoded::Frame(frame) = item else { continue };
            let again = wire(&frame, version);
            let redecoded = decode_all(&mut self::decoder(version), &again)
                .map_err(|e| TestCaseError::fail(format!("{e}: {frame:?}")))?;
            prop_assert_eq!(redecoded.len(), 1);
            let Some(Decoded::Frame(back)) = redecoded.into_iter().next() else {
                return Err(TestCaseError::fail("not a frame"));
            };
            prop_assert_eq!(back.command, frame.command);
            prop_assert_eq!(&back.body, &frame.body);
        }
    }
}
