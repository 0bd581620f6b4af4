//! Encoder behaviour beyond round trips: mapping to MQTT 3.x (CONNACK codes, SUBACK codes,
//! dropped v5 fields) and refusal of contradictory packets.

use bytes::{Bytes, BytesMut};
use ferromq::protocol::*;

use crate::{boxed, connect, encoded, publish};

#[test]
fn v3_connack_maps_v5_only_reasons_to_the_closest_code() {
    use ConnectReason::*;
    let expected = [
        (Success, 0),
        (UnsupportedProtocolVersion, 1),
        (ClientIdentifierNotValid, 2),
        (ServerUnavailable, 3),
        (BadUserNameOrPassword, 4),
        (NotAuthorized, 5),
        (Banned, 5),
        (BadAuthenticationMethod, 5),
        (ServerBusy, 3),
        (QuotaExceeded, 3),
        (UnspecifiedError, 3),
        (ConnectionRateExceeded, 3),
        (UseAnotherServer, 3),
    ];
    for (reason, code) in expected {
        let connack = Packet::ConnAck(ConnAck {
            session_present: false,
            reason,
            properties: boxed(Properties {
                reason_string: Some("dropped in v3".into()),
                ..Properties::default()
            }),
        });
        for version in [ProtocolVersion::V31, ProtocolVersion::V311] {
            assert_eq!(
                &encoded(&connack, version)[..],
                &[0x20, 2, 0, code],
                "{reason:?}"
            );
        }
    }
    // MQTT 3.1 has no session-present flag.
    let resumed = Packet::ConnAck(ConnAck {
        session_present: true,
        reason: Success,
        properties: None,
    });
    assert_eq!(
        &encoded(&resumed, ProtocolVersion::V31)[..],
        &[0x20, 2, 0, 0]
    );
    assert_eq!(
        &encoded(&resumed, ProtocolVersion::V311)[..],
        &[0x20, 2, 1, 0]
    );
}

#[test]
fn v3_encoding_drops_what_only_v5_carries() {
    let v = ProtocolVersion::V311;
    let suback = Packet::SubAck(SubAck {
        packet_id: 1,
        return_codes: vec![1, 0x87, 0x80],
        properties: boxed(Properties {
            reason_string: Some("x".into()),
            ..Properties::default()
        }),
    });
    assert_eq!(&encoded(&suback, v)[..], &[0x90, 5, 0, 1, 1, 0x80, 0x80]);
    let unsuback = Packet::UnsubAck(UnsubAck {
        packet_id: 1,
        reason_codes: vec![0, 0x11],
        properties: None,
    });
    assert_eq!(&encoded(&unsuback, v)[..], &[0xB0, 2, 0, 1]);
    let mut ack = Ack::new(3);
    ack.reason = 0x10;
    assert_eq!(&encoded(&Packet::PubAck(ack), v)[..], &[0x40, 2, 0, 3]);
    let mut p = publish(QoS::AtMostOnce, None, "t", b"");
    p.properties = boxed(Properties {
        message_expiry_interval: Some(1),
        ..Properties::default()
    });
    assert_eq!(&encoded(&Packet::Publish(p), v)[..], &[0x30, 3, 0, 1, b't']);
    let disconnect = Packet::Disconnect(Disconnect {
        reason: 0x8E,
        properties: None,
    });
    assert_eq!(&encoded(&disconnect, v)[..], &[0xE0, 0]);
}

#[test]
fn encode_refuses_contradictions_and_appends_nothing() {
    let too_long = "x".repeat(65_536);
    let auth = Packet::Auth(Auth {
        reason: 0,
        properties: None,
    });
    let mut wrong_place = Ack::new(1);
    wrong_place.properties = boxed(Properties {
        topic_alias: Some(1),
        ..Properties::default()
    });
    let mut password_only = connect(ProtocolVersion::V311);
    password_only.password = Some(Bytes::from_static(b"p"));
    let cases: Vec<(Packet, ProtocolVersion)> = vec![
        (
            Packet::Publish(publish(QoS::AtLeastOnce, None, "t", b"")),
            ProtocolVersion::V311,
        ),
        (
            Packet::Publish(publish(QoS::AtMostOnce, Some(1), "t", b"")),
            ProtocolVersion::V311,
        ),
        (
            Packet::Publish(publish(QoS::AtLeastOnce, Some(0), "t", b"")),
            ProtocolVersion::V311,
        ),
        (
            Packet::Publish(publish(QoS::AtMostOnce, None, &too_long, b"")),
            ProtocolVersion::V311,
        ),
        (Packet::PubAck(Ack::new(0)), ProtocolVersion::V311),
        (Packet::PubAck(wrong_place), ProtocolVersion::V5),
        (auth, ProtocolVersion::V311),
        (
            Packet::Connect(Box::new(password_only)),
            ProtocolVersion::V311,
        ),
        (
            Packet::Connect(Box::new(connect(ProtocolVersion::V5))),
            ProtocolVersion::V311,
        ),
        (
            Packet::Subscribe(Subscribe {
                packet_id: 1,
                filters: vec![],
                properties: None,
            }),
            ProtocolVersion::V311,
        ),
        (
            Packet::ConnAck(ConnAck {
                session_present: true,
                reason: ConnectReason::NotAuthorized,
                properties: None,
            }),
            ProtocolVersion::V311,
        ),
    ];
    for (packet, version) in cases {
        let mut buf = BytesMut::from(&b"keep"[..]);
        let result = encode(&packet, version, &mut buf);
        assert!(
            result.is_err(),
            "{packet:?} in {version:?} should not encode"
        );
        assert_eq!(&buf[..], b"keep", "a failed encode appended bytes");
    }
    let mut buf = BytesMut::new();
    let error = encode(
        &Packet::Publish(publish(QoS::AtMostOnce, None, &too_long, b"")),
        ProtocolVersion::V311,
        &mut buf,
    )
    .expect_err("too long");
    assert_eq!(
        error,
        EncodeError::FieldTooLong {
            packet: "PUBLISH",
            field: "topic name",
            len: 65_536
        }
    );
}
