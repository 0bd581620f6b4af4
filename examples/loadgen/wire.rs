//! Hand-rolled MQTT 3.1.1 / 5 encoding of the few packets the load generator sends, and an
//! incremental decoder for what brokers send back.
//!
//! Deliberately independent of ferromq's own codec: the load generator must measure any broker
//! (mosquitto, ActiveMQ, ferromq), and a bug in ferromq's codec must not hide behind the same bug
//! in the tool that measures it. Encoding writes straight into a caller-owned buffer so that many
//! packets can be batched into one socket write.

use bytes::{BufMut, BytesMut};

/// Protocol level sent in CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// MQTT 3.1.1, protocol level 4.
    V311,
    /// MQTT 5.0, protocol level 5: adds a (here always empty) property section to most packets.
    V5,
}

/// Control packet types (the high nibble of the first byte).
pub mod kind {
    pub const CONNACK: u8 = 2;
    pub const PUBLISH: u8 = 3;
    pub const PUBACK: u8 = 4;
    pub const PUBREC: u8 = 5;
    pub const PUBREL: u8 = 6;
    pub const PUBCOMP: u8 = 7;
    pub const SUBACK: u8 = 9;
    pub const PINGRESP: u8 = 13;
    pub const DISCONNECT: u8 = 14;
}

/// What is wrong with bytes a broker sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    /// Remaining length used more than 4 bytes.
    BadRemainingLength,
    /// A packet body ended before a field it must contain.
    Truncated(&'static str),
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::BadRemainingLength => write!(f, "remaining length longer than 4 bytes"),
            WireError::Truncated(what) => write!(f, "packet too short: missing {what}"),
        }
    }
}

fn varint_len(n: usize) -> usize {
    match n {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

fn put_varint(buf: &mut BytesMut, mut n: usize) {
    loop {
        let mut byte = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        buf.put_u8(byte);
        if n == 0 {
            break;
        }
    }
}

fn put_str(buf: &mut BytesMut, s: &[u8]) {
    // Callers pass topic names and client ids the load generator made itself (short ASCII).
    buf.put_u16(s.len() as u16);
    buf.put_slice(s);
}

/// CONNECT with no user name, password or will.
pub fn connect(
    buf: &mut BytesMut,
    version: Version,
    client_id: &str,
    clean: bool,
    keep_alive_secs: u16,
) {
    let props = usize::from(version == Version::V5);
    let remaining = 6 + 1 + 1 + 2 + props + 2 + client_id.len();
    buf.put_u8(0x10);
    put_varint(buf, remaining);
    put_str(buf, b"MQTT");
    buf.put_u8(match version {
        Version::V311 => 4,
        Version::V5 => 5,
    });
    buf.put_u8(if clean { 0x02 } else { 0x00 });
    buf.put_u16(keep_alive_secs);
    if version == Version::V5 {
        buf.put_u8(0); // no properties
    }
    put_str(buf, client_id.as_bytes());
}

/// SUBSCRIBE to one filter at `qos`.
pub fn subscribe(buf: &mut BytesMut, version: Version, packet_id: u16, filter: &str, qos: u8) {
    let props = usize::from(version == Version::V5);
    let remaining = 2 + props + 2 + filter.len() + 1;
    buf.put_u8(0x82);
    put_varint(buf, remaining);
    buf.put_u16(packet_id);
    if version == Version::V5 {
        buf.put_u8(0);
    }
    put_str(buf, filter.as_bytes());
    buf.put_u8(qos & 0x03);
}

/// PUBLISH (never retained, never DUP). `packet_id` is ignored at QoS 0.
pub fn publish(
    buf: &mut BytesMut,
    version: Version,
    topic: &[u8],
    qos: u8,
    packet_id: u16,
    payload: &[u8],
) {
    let id_len = if qos > 0 { 2 } else { 0 };
    let props = usize::from(version == Version::V5);
    let remaining = 2 + topic.len() + id_len + props + payload.len();
    buf.reserve(1 + varint_len(remaining) + remaining);
    buf.put_u8(0x30 | ((qos & 0x03) << 1));
    put_varint(buf, remaining);
    put_str(buf, topic);
    if qos > 0 {
        buf.put_u16(packet_id);
    }
    if version == Version::V5 {
        buf.put_u8(0);
    }
    buf.put_slice(payload);
}

/// PUBACK, PUBREC, PUBREL or PUBCOMP in their short form (packet id only; in MQTT 5 a missing
/// reason code means success).
pub fn ack(buf: &mut BytesMut, packet_kind: u8, packet_id: u16) {
    let flags = if packet_kind == kind::PUBREL {
        0x02
    } else {
        0x00
    };
    buf.put_u8((packet_kind << 4) | flags);
    buf.put_u8(2);
    buf.put_u16(packet_id);
}

pub fn pingreq(buf: &mut BytesMut) {
    buf.put_slice(&[0xC0, 0x00]);
}

pub fn disconnect(buf: &mut BytesMut) {
    buf.put_slice(&[0xE0, 0x00]);
}

/// One complete packet borrowed from the read buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub kind: u8,
    pub flags: u8,
    pub body: &'a [u8],
}

/// Parses the packet at the start of `buf`. `Ok(None)` means "need more bytes"; otherwise
/// returns the frame and how many bytes it occupied.
pub fn parse_frame(buf: &[u8]) -> Result<Option<(Frame<'_>, usize)>, WireError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let mut remaining = 0usize;
    let mut multiplier = 1usize;
    let mut header_len = 1;
    loop {
        if header_len > 4 {
            return Err(WireError::BadRemainingLength);
        }
        let Some(&byte) = buf.get(header_len) else {
            return Ok(None);
        };
        remaining += usize::from(byte & 0x7F) * multiplier;
        multiplier *= 128;
        header_len += 1;
        if byte & 0x80 == 0 {
            break;
        }
    }
    let total = header_len + remaining;
    match buf.get(header_len..total) {
        Some(body) => Ok(Some((
            Frame {
                kind: first >> 4,
                flags: first & 0x0F,
                body,
            },
            total,
        ))),
        None => Ok(None),
    }
}

fn read_u16(body: &[u8], at: usize, what: &'static str) -> Result<u16, WireError> {
    match body.get(at..at + 2) {
        Some(&[hi, lo]) => Ok(u16::from_be_bytes([hi, lo])),
        _ => Err(WireError::Truncated(what)),
    }
}

/// Reads an MQTT 5 variable byte integer at `at`; returns (value, bytes used).
fn read_varint(body: &[u8], at: usize) -> Result<(usize, usize), WireError> {
    let mut value = 0usize;
    let mut multiplier = 1usize;
    for used in 1..=4 {
        let byte = *body
            .get(at + used - 1)
            .ok_or(WireError::Truncated("property length"))?;
        value += usize::from(byte & 0x7F) * multiplier;
        multiplier *= 128;
        if byte & 0x80 == 0 {
            return Ok((value, used));
        }
    }
    Err(WireError::BadRemainingLength)
}

/// The packet id at the start of an ack (PUBACK/PUBREC/PUBREL/PUBCOMP/SUBACK) body.
pub fn packet_id(body: &[u8]) -> Result<u16, WireError> {
    read_u16(body, 0, "packet id")
}

/// CONNACK: (session present, return/reason code).
pub fn connack(body: &[u8]) -> Result<(bool, u8), WireError> {
    match body {
        [flags, code, ..] => Ok((flags & 0x01 == 1, *code)),
        _ => Err(WireError::Truncated("CONNACK flags and code")),
    }
}

/// SUBACK: (packet id, return/reason codes).
pub fn suback(version: Version, body: &[u8]) -> Result<(u16, &[u8]), WireError> {
    let id = read_u16(body, 0, "SUBACK packet id")?;
    let mut at = 2;
    if version == Version::V5 {
        let (len, used) = read_varint(body, at)?;
        at += used + len;
    }
    let codes = body
        .get(at..)
        .ok_or(WireError::Truncated("SUBACK properties"))?;
    Ok((id, codes))
}

/// An incoming PUBLISH borrowed from the read buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Publish<'a> {
    pub qos: u8,
    pub packet_id: u16,
    pub topic: &'a [u8],
    pub payload: &'a [u8],
}

pub fn parse_publish(version: Version, flags: u8, body: &[u8]) -> Result<Publish<'_>, WireError> {
    let qos = (flags >> 1) & 0x03;
    let topic_len = usize::from(read_u16(body, 0, "topic length")?);
    let topic = body
        .get(2..2 + topic_len)
        .ok_or(WireError::Truncated("topic"))?;
    let mut at = 2 + topic_len;
    let mut packet_id = 0;
    if qos > 0 {
        packet_id = read_u16(body, at, "PUBLISH packet id")?;
        at += 2;
    }
    if version == Version::V5 {
        let (len, used) = read_varint(body, at)?;
        at += used + len;
    }
    let payload = body
        .get(at..)
        .ok_or(WireError::Truncated("PUBLISH properties"))?;
    Ok(Publish {
        qos,
        packet_id,
        topic,
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_frame(buf: &[u8]) -> (Frame<'_>, usize) {
        parse_frame(buf).expect("valid").expect("complete")
    }

    #[test]
    fn connect_v311_matches_the_spec_example_layout() {
        let mut buf = BytesMut::new();
        connect(&mut buf, Version::V311, "ab", true, 60);
        assert_eq!(
            &buf[..],
            &[0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 2, b'a', b'b']
        );
    }

    #[test]
    fn connect_v5_has_an_empty_property_section() {
        let mut buf = BytesMut::new();
        connect(&mut buf, Version::V5, "c", false, 10);
        assert_eq!(
            &buf[..],
            &[0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x00, 0, 10, 0, 0, 1, b'c']
        );
    }

    #[test]
    fn publish_round_trips_at_every_qos_and_version() {
        for version in [Version::V311, Version::V5] {
            for qos in 0..=2u8 {
                let payload = vec![7u8; 300]; // forces a 2-byte remaining length
                let mut buf = BytesMut::new();
                publish(&mut buf, version, b"a/b", qos, 513, &payload);
                let (frame, used) = one_frame(&buf);
                assert_eq!(used, buf.len());
                assert_eq!(frame.kind, kind::PUBLISH);
                let p = parse_publish(version, frame.flags, frame.body).expect("publish");
                assert_eq!(p.qos, qos);
                assert_eq!(p.topic, b"a/b");
                assert_eq!(p.payload, &payload[..]);
                assert_eq!(p.packet_id, if qos > 0 { 513 } else { 0 });
            }
        }
    }

    #[test]
    fn incomplete_input_asks_for_more_bytes() {
        let mut buf = BytesMut::new();
        publish(&mut buf, Version::V311, b"t", 1, 1, &[0u8; 200]);
        for cut in 0..buf.len() {
            assert_eq!(parse_frame(&buf[..cut]), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn five_byte_remaining_length_is_rejected() {
        assert_eq!(
            parse_frame(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]),
            Err(WireError::BadRemainingLength)
        );
    }

    #[test]
    fn acks_carry_their_packet_id_and_pubrel_has_flag_bit_1() {
        let mut buf = BytesMut::new();
        ack(&mut buf, kind::PUBREL, 0x1234);
        assert_eq!(&buf[..], &[0x62, 2, 0x12, 0x34]);
        let (frame, _) = one_frame(&buf);
        assert_eq!(packet_id(frame.body), Ok(0x1234));
        assert_eq!(packet_id(&[1]), Err(WireError::Truncated("packet id")));
    }

    #[test]
    fn suback_v5_skips_properties() {
        // packet id 9, property length 3 (a reason string "ok": id 0x1F is 1 byte + ...)
        let body = [0, 9, 3, 0x1F, 0, 0, 1];
        assert_eq!(suback(Version::V5, &body), Ok((9, &[1u8][..])));
        assert_eq!(suback(Version::V311, &[0, 9, 0x80]), Ok((9, &[0x80u8][..])));
    }

    #[test]
    fn truncated_publish_is_an_error_not_a_panic() {
        assert!(parse_publish(Version::V311, 0x02, &[0, 5, b'a']).is_err());
        assert!(parse_publish(Version::V5, 0x00, &[0, 1, b'a']).is_err());
        assert_eq!(
            connack(&[0]),
            Err(WireError::Truncated("CONNACK flags and code"))
        );
    }

    #[test]
    fn subscribe_encodes_qos_in_the_options_byte() {
        let mut buf = BytesMut::new();
        subscribe(&mut buf, Version::V311, 1, "a/+", 2);
        assert_eq!(&buf[..], &[0x82, 8, 0, 1, 0, 3, b'a', b'/', b'+', 2]);
    }
}
