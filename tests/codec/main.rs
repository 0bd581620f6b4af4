//! Codec tests: round trips of every packet type in MQTT 3.1, 3.1.1 and 5.0 (hand-written with
//! exact wire bytes, and generated), byte-by-byte feeding, the size limit, zero-copy payloads,
//! MQTT 5 specifics (`codec/v5.rs`), encoder mappings to v3 (`codec/encoding.rs`) and every
//! malformation class (`codec/malformed*.rs`), and the STOMP codec (`codec/stomp.rs`).

#[macro_use]
mod frames;
mod chunks;
mod encoding;
mod malformed;
mod malformed_v5;
mod stomp;
mod strategies;
mod v5;

use bytes::{Bytes, BytesMut};
use ferromq::protocol::*;
use proptest::prelude::*;

pub const MAX: usize = 1 << 20;

/// The version `decode` expects for `packet`: CONNECT is decoded before any version is known.
pub fn decode_version(packet: &Packet, version: ProtocolVersion) -> Option<ProtocolVersion> {
    match packet {
        Packet::Connect(_) => None,
        _ => Some(version),
    }
}

pub fn encoded(packet: &Packet, version: ProtocolVersion) -> BytesMut {
    let mut buf = BytesMut::new();
    encode(packet, version, &mut buf).expect("encode");
    buf
}

/// Encodes `packet`, decodes it back, checks equality and that exactly the packet was consumed.
/// Returns the wire bytes.
pub fn round_trip(packet: &Packet, version: ProtocolVersion) -> BytesMut {
    let wire = encoded(packet, version);
    let mut buf = wire.clone();
    let decoded = decode(&mut buf, decode_version(packet, version), MAX)
        .expect("decode")
        .expect("complete");
    assert_eq!(&decoded, packet, "round trip in {version:?}");
    assert!(buf.is_empty(), "decode consumed the whole packet");
    wire
}

pub fn connect(protocol: ProtocolVersion) -> Connect {
    Connect {
        protocol,
        clean_start: true,
        keep_alive_secs: 60,
        client_id: "client-1".into(),
        will: None,
        username: None,
        password: None,
        properties: None,
    }
}

pub fn publish(qos: QoS, packet_id: Option<u16>, topic: &str, payload: &'static [u8]) -> Publish {
    Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic.into(),
        packet_id,
        payload: Bytes::from_static(payload),
        properties: None,
    }
}

pub fn options(qos: QoS) -> SubscriptionOptions {
    SubscriptionOptions {
        qos,
        no_local: false,
        retain_as_published: false,
        retain_handling: RetainHandling::SendAtSubscribe,
    }
}

pub fn boxed(properties: Properties) -> Option<Box<Properties>> {
    Some(Box::new(properties))
}

#[test]
fn v311_connect_has_the_spec_layout() {
    let mut c = connect(ProtocolVersion::V311);
    c.username = Some("u".into());
    c.password = Some(Bytes::from_static(b"p"));
    c.will = Some(LastWill {
        topic: "w".into(),
        payload: Bytes::from_static(b"bye"),
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: None,
    });
    let wire = round_trip(&Packet::Connect(Box::new(c)), ProtocolVersion::V311);
    let mut expected = vec![0x10, 0];
    expected.extend_from_slice(&[0, 4, b'M', b'Q', b'T', b'T', 4, 0b1110_1110, 0, 60]);
    expected.extend_from_slice(&[0, 8]);
    expected.extend_from_slice(b"client-1");
    expected.extend_from_slice(&[0, 1, b'w', 0, 3, b'b', b'y', b'e', 0, 1, b'u', 0, 1, b'p']);
    expected[1] = (expected.len() - 2) as u8;
    assert_eq!(&wire[..], &expected[..]);
}

#[test]
fn v31_connect_uses_mqisdp() {
    let wire = round_trip(
        &Packet::Connect(Box::new(connect(ProtocolVersion::V31))),
        ProtocolVersion::V31,
    );
    assert_eq!(
        &wire[2..12],
        &[0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3, 0x02]
    );
}

#[test]
fn v311_publish_subscribe_acks_ping_disconnect() {
    let v = ProtocolVersion::V311;
    let wire = round_trip(
        &Packet::Publish(publish(QoS::AtMostOnce, None, "a/b", b"hi")),
        v,
    );
    assert_eq!(&wire[..], &[0x30, 7, 0, 3, b'a', b'/', b'b', b'h', b'i']);
    let wire = round_trip(
        &Packet::Publish(publish(QoS::ExactlyOnce, Some(7), "a", b"")),
        v,
    );
    assert_eq!(&wire[..], &[0x34, 5, 0, 1, b'a', 0, 7]);
    let subscribe = Subscribe {
        packet_id: 1,
        filters: vec![("a/+/#".into(), options(QoS::AtLeastOnce))],
        properties: None,
    };
    let wire = round_trip(&Packet::Subscribe(subscribe), v);
    assert_eq!(
        &wire[..],
        &[0x82, 10, 0, 1, 0, 5, b'a', b'/', b'+', b'/', b'#', 1]
    );
    let unsubscribe = Unsubscribe {
        packet_id: 2,
        filters: vec!["a".into(), "b/#".into()],
        properties: None,
    };
    let wire = round_trip(&Packet::Unsubscribe(unsubscribe), v);
    assert_eq!(
        &wire[..],
        &[0xA2, 10, 0, 2, 0, 1, b'a', 0, 3, b'b', b'/', b'#']
    );
    let suback = SubAck {
        packet_id: 1,
        return_codes: vec![0, 1, 2, 0x80],
        properties: None,
    };
    assert_eq!(
        &round_trip(&Packet::SubAck(suback), v)[..],
        &[0x90, 6, 0, 1, 0, 1, 2, 0x80]
    );
    let unsuback = UnsubAck {
        packet_id: 2,
        reason_codes: vec![],
        properties: None,
    };
    assert_eq!(
        &round_trip(&Packet::UnsubAck(unsuback), v)[..],
        &[0xB0, 2, 0, 2]
    );
    for (packet, first_byte) in [
        (Packet::PubAck(Ack::new(9)), 0x40),
        (Packet::PubRec(Ack::new(9)), 0x50),
        (Packet::PubRel(Ack::new(9)), 0x62),
        (Packet::PubComp(Ack::new(9)), 0x70),
    ] {
        assert_eq!(&round_trip(&packet, v)[..], &[first_byte, 2, 0, 9]);
    }
    assert_eq!(&round_trip(&Packet::PingReq, v)[..], &[0xC0, 0]);
    assert_eq!(&round_trip(&Packet::PingResp, v)[..], &[0xD0, 0]);
    let disconnect = Packet::Disconnect(Disconnect {
        reason: 0,
        properties: None,
    });
    assert_eq!(&round_trip(&disconnect, v)[..], &[0xE0, 0]);
    let connack = ConnAck {
        session_present: true,
        reason: ConnectReason::Success,
        properties: None,
    };
    assert_eq!(
        &round_trip(&Packet::ConnAck(connack), v)[..],
        &[0x20, 2, 1, 0]
    );
}

#[test]
fn payload_is_a_slice_of_the_input_buffer_not_a_copy() {
    let wire = encoded(
        &Packet::Publish(publish(QoS::AtLeastOnce, Some(1), "t", &[7; 64])),
        ProtocolVersion::V311,
    );
    let mut buf = BytesMut::with_capacity(4096);
    buf.extend_from_slice(&wire);
    let region = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.capacity();
    let Some(Packet::Publish(p)) = decode(&mut buf, Some(ProtocolVersion::V311), MAX).expect("ok")
    else {
        panic!("expected a PUBLISH");
    };
    assert_eq!(p.payload.len(), 64);
    assert!(
        region.contains(&(p.payload.as_ptr() as usize)),
        "payload was copied"
    );
}

#[test]
fn too_large_is_refused_from_the_fixed_header_alone() {
    // PUBLISH announcing 2,097,152 bytes; only the fixed header has arrived.
    let mut buf = BytesMut::from(&[0x30, 0x80, 0x80, 0x80, 0x01][..]);
    let error = decode(&mut buf, Some(ProtocolVersion::V311), 1_000_000).expect_err("too large");
    assert_eq!(
        error,
        DecodeError::TooLarge {
            size: 2_097_152,
            max: 1_000_000
        }
    );
    assert_eq!(error.reason_code(), 0x95);
    // A length still being received is not judged yet.
    let mut partial = BytesMut::from(&[0x30, 0x80, 0x80][..]);
    assert_eq!(
        decode(&mut partial, Some(ProtocolVersion::V311), 10),
        Ok(None)
    );
    assert_eq!(partial.len(), 3);
    // The limit applies to the remaining length: exactly max is fine.
    let mut at_limit = encoded(
        &Packet::Publish(publish(QoS::AtMostOnce, None, "t", b"12345")),
        ProtocolVersion::V311,
    );
    assert!(decode(&mut at_limit.clone(), Some(ProtocolVersion::V311), 8).is_ok());
    assert!(matches!(
        decode(&mut at_limit, Some(ProtocolVersion::V311), 7),
        Err(DecodeError::TooLarge { size: 8, max: 7 })
    ));
}

#[test]
fn several_packets_in_one_buffer_decode_one_at_a_time() {
    let v = ProtocolVersion::V311;
    let mut buf = encoded(&Packet::PingReq, v);
    buf.extend_from_slice(&encoded(
        &Packet::Publish(publish(QoS::AtMostOnce, None, "a", b"1")),
        v,
    ));
    buf.extend_from_slice(&[0x40, 2, 0]); // half a PUBACK
    assert_eq!(decode(&mut buf, Some(v), MAX), Ok(Some(Packet::PingReq)));
    assert!(matches!(
        decode(&mut buf, Some(v), MAX),
        Ok(Some(Packet::Publish(_)))
    ));
    assert_eq!(decode(&mut buf, Some(v), MAX), Ok(None));
    assert_eq!(&buf[..], &[0x40, 2, 0]);
    buf.extend_from_slice(&[1]);
    assert_eq!(
        decode(&mut buf, Some(v), MAX),
        Ok(Some(Packet::PubAck(Ack::new(1))))
    );
    assert_eq!(decode(&mut buf, Some(v), MAX), Ok(None));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Every generated packet survives encode -> decode, and the encoder reserved exactly the
    /// packet's size (a wrong size computation would grow the buffer a second time).
    #[test]
    fn generated_packets_round_trip((version, packet) in strategies::versioned_packet()) {
        let wire = encoded(&packet, version);
        if wire.len() >= 8 {
            prop_assert_eq!(wire.capacity(), wire.len());
        }
        let mut buf = wire.clone();
        let decoded = decode(&mut buf, decode_version(&packet, version), MAX);
        prop_assert_eq!(decoded, Ok(Some(packet)));
        prop_assert!(buf.is_empty());
    }

    /// Fed one byte at a time, the decoder waits without consuming anything, then yields the
    /// packet exactly when its last byte arrives.
    #[test]
    fn byte_by_byte_feeding((version, packet) in strategies::versioned_packet()) {
        let wire = encoded(&packet, version);
        let version_for_decode = decode_version(&packet, version);
        let mut buf = BytesMut::new();
        for (index, &byte) in wire.iter().enumerate() {
            buf.extend_from_slice(&[byte]);
            let result = decode(&mut buf, version_for_decode, MAX);
            if index + 1 < wire.len() {
                prop_assert_eq!(result, Ok(None));
                prop_assert_eq!(buf.len(), index + 1);
            } else {
                prop_assert_eq!(result, Ok(Some(packet.clone())));
                prop_assert!(buf.is_empty());
            }
        }
    }

    /// Arbitrary bytes never panic, whatever the state and limit.
    #[test]
    fn random_bytes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..200),
        version in proptest::option::of(strategies::version()),
        max_size in prop_oneof![Just(MAX), 0usize..64],
    ) {
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(_)) = decode(&mut buf, version, max_size) {}
    }

    /// Valid packets with bytes changed or cut never panic, and whatever the decoder accepts the
    /// encoder writes back to an equal packet.
    #[test]
    fn mutated_packets_never_panic_and_accepted_ones_re_encode(
        (version, packet) in strategies::versioned_packet(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
        do_cut in any::<bool>(),
    ) {
        let mut wire = encoded(&packet, version).to_vec();
        for (index, value) in edits {
            let position = index.index(wire.len());
            wire[position] = value;
        }
        if do_cut {
            wire.truncate(cut.index(wire.len() + 1));
        }
        let decode_as = decode_version(&packet, version);
        let mut buf = BytesMut::from(&wire[..]);
        if let Ok(Some(decoded)) = decode(&mut buf, decode_as, MAX) {
            let encode_as = match &decoded {
                Packet::Connect(connect) => connect.protocol,
                _ => version,
            };
            let mut again = encoded(&decoded, encode_as);
            prop_assert_eq!(decode(&mut again, decode_as, MAX), Ok(Some(decoded)));
        }
    }
}
