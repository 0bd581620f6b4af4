//! Raw packet builders and assertions for the malformation tests.

use bytes::BytesMut;
use ferromq::protocol::ProtocolVersion::{V31, V311, V5};
use ferromq::protocol::*;

/// A packet: first byte, remaining length (1 or 2 bytes), body.
pub fn frame(first_byte: u8, body: &[u8]) -> Vec<u8> {
    assert!(body.len() < 128 * 128, "test frames are small");
    let mut out = vec![first_byte];
    if body.len() < 128 {
        out.push(body.len() as u8);
    } else {
        out.extend_from_slice(&[(body.len() % 128) as u8 | 0x80, (body.len() / 128) as u8]);
    }
    out.extend_from_slice(body);
    out
}

/// A length-prefixed string or binary field.
pub fn s(data: &[u8]) -> Vec<u8> {
    let mut out = (data.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(data);
    out
}

/// An MQTT 5 property block from the properties' bytes (shorter than 128 bytes).
pub fn props(content: &[u8]) -> Vec<u8> {
    let mut out = vec![content.len() as u8];
    out.extend_from_slice(content);
    out
}

pub fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// CONNECT with protocol `name`/`level`, `flags`, keep alive 60, and `rest` after keep alive.
pub fn connect(name: &[u8], level: u8, flags: u8, rest: &[u8]) -> Vec<u8> {
    frame(0x10, &cat(&[&s(name), &[level, flags, 0, 60], rest]))
}

/// A v3 CONNECT with `flags` and payload `rest` (client id first).
pub fn connect_v311(flags: u8, rest: &[u8]) -> Vec<u8> {
    connect(b"MQTT", 4, flags, rest)
}

/// A v5 CONNECT with `flags`, the property block `properties` and payload `rest`.
pub fn connect_v5(flags: u8, properties: &[u8], rest: &[u8]) -> Vec<u8> {
    connect(b"MQTT", 5, flags, &cat(&[&props(properties), rest]))
}

pub fn decode_bytes(
    version: Option<ProtocolVersion>,
    bytes: &[u8],
) -> Result<Option<Packet>, DecodeError> {
    decode(&mut BytesMut::from(bytes), version, 1 << 20)
}

pub fn accepts(version: Option<ProtocolVersion>, bytes: &[u8]) -> Packet {
    match decode_bytes(version, bytes) {
        Ok(Some(packet)) => packet,
        other => panic!("{bytes:02x?} in {version:?} should decode, got {other:?}"),
    }
}

/// Asserts that `bytes` decoded in `version` fails with an error matching `pattern`.
macro_rules! rejects {
    ($version:expr, $bytes:expr, $pattern:pat $(if $guard:expr)?) => {{
        let bytes: &[u8] = &$bytes;
        let version: Option<ProtocolVersion> = $version;
        match decode_bytes(version, bytes) {
            Err(error) => assert!(
                matches!(error, $pattern $(if $guard)?),
                "{bytes:02x?} in {version:?}: expected {}, got {error:?}",
                stringify!($pattern)
            ),
            Ok(packet) => panic!("{bytes:02x?} in {version:?} was accepted as {packet:?}"),
        }
    }};
}

pub const STRICT: [ProtocolVersion; 2] = [V311, V5];
pub const ALL: [ProtocolVersion; 3] = [V31, V311, V5];

pub fn subscribe(version: ProtocolVersion, filter: &[u8], options: u8) -> Vec<u8> {
    let properties = if version == V5 { props(&[]) } else { vec![] };
    frame(0x82, &cat(&[&[0, 1], &properties, &s(filter), &[options]]))
}

pub fn unsubscribe(version: ProtocolVersion, filter: &[u8]) -> Vec<u8> {
    let properties = if version == V5 { props(&[]) } else { vec![] };
    frame(0xA2, &cat(&[&[0, 1], &properties, &s(filter)]))
}

/// A v5 CONNECT whose only difference is the property block.
pub fn connect_with(properties: &[u8]) -> Vec<u8> {
    connect_v5(0x02, properties, &s(b"c"))
}
