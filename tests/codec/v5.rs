//! Hand-written MQTT 5 round trips with exact wire bytes: every property place, the short
//! forms of acks, DISCONNECT and AUTH, subscription options.

use bytes::{Bytes, BytesMut};
use ferromq::protocol::*;

use crate::{boxed, connect, encoded, options, publish, round_trip, MAX};

#[test]
fn v5_connect_with_every_connect_and_will_property() {
    let mut c = connect(ProtocolVersion::V5);
    c.clean_start = false;
    c.properties = boxed(Properties {
        session_expiry_interval: Some(3600),
        authentication_method: Some("SCRAM-SHA-1".into()),
        authentication_data: Some(Bytes::from_static(b"\x00\x01")),
        request_problem_information: Some(0),
        request_response_information: Some(1),
        receive_maximum: Some(20),
        topic_alias_maximum: Some(10),
        maximum_packet_size: Some(65_536),
        user_properties: vec![("k".into(), "v".into()), ("k".into(), "v2".into())],
        ..Properties::default()
    });
    c.will = Some(LastWill {
        topic: "last/will".into(),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::ExactlyOnce,
        retain: false,
        properties: boxed(Properties {
            will_delay_interval: Some(5),
            payload_format_indicator: Some(1),
            message_expiry_interval: Some(60),
            content_type: Some("text/plain".into()),
            response_topic: Some("reply/here".into()),
            correlation_data: Some(Bytes::from_static(b"id-1")),
            ..Properties::default()
        }),
    });
    // MQTT 5 allows a password without a user name.
    c.password = Some(Bytes::from_static(b"token"));
    let wire = round_trip(&Packet::Connect(Box::new(c)), ProtocolVersion::V5);
    // The remaining length takes two bytes here.
    assert_eq!(
        &wire[3..12],
        &[0, 4, b'M', b'Q', b'T', b'T', 5, 0b0101_0100, 0]
    );
}

#[test]
fn v5_connack_with_every_connack_property() {
    let connack = ConnAck {
        session_present: true,
        reason: ConnectReason::Success,
        properties: boxed(Properties {
            session_expiry_interval: Some(0),
            assigned_client_identifier: Some("auto-1".into()),
            server_keep_alive: Some(30),
            authentication_method: Some("m".into()),
            authentication_data: Some(Bytes::from_static(b"d")),
            response_information: Some("resp".into()),
            server_reference: Some("other:1883".into()),
            reason_string: Some("welcome".into()),
            receive_maximum: Some(100),
            topic_alias_maximum: Some(0),
            maximum_qos: Some(1),
            retain_available: Some(0),
            user_properties: vec![("a".into(), "b".into())],
            maximum_packet_size: Some(1024),
            wildcard_subscription_available: Some(1),
            subscription_identifier_available: Some(1),
            shared_subscription_available: Some(0),
            ..Properties::default()
        }),
    };
    round_trip(&Packet::ConnAck(connack), ProtocolVersion::V5);
    let refused = ConnAck {
        session_present: false,
        reason: ConnectReason::Banned,
        properties: None,
    };
    let wire = round_trip(&Packet::ConnAck(refused), ProtocolVersion::V5);
    assert_eq!(&wire[..], &[0x20, 3, 0, 0x8A, 0]);
}

#[test]
fn v5_publish_properties_alias_and_subscription_identifiers() {
    let mut p = publish(QoS::AtLeastOnce, Some(3), "", b"payload");
    p.properties = boxed(Properties {
        topic_alias: Some(1),
        subscription_identifiers: vec![1, 268_435_455],
        user_properties: vec![("x".into(), "y".into())],
        ..Properties::default()
    });
    round_trip(&Packet::Publish(p), ProtocolVersion::V5);
    let plain = publish(QoS::AtMostOnce, None, "t", b"x");
    let wire = round_trip(&Packet::Publish(plain), ProtocolVersion::V5);
    assert_eq!(&wire[..], &[0x30, 5, 0, 1, b't', 0, b'x']);
}

#[test]
fn v5_acks_use_the_short_forms() {
    let v = ProtocolVersion::V5;
    assert_eq!(
        &round_trip(&Packet::PubAck(Ack::new(5)), v)[..],
        &[0x40, 2, 0, 5]
    );
    let mut ack = Ack::new(5);
    ack.reason = 0x10;
    assert_eq!(
        &round_trip(&Packet::PubAck(ack.clone()), v)[..],
        &[0x40, 3, 0, 5, 0x10]
    );
    ack.properties = boxed(Properties {
        reason_string: Some("r".into()),
        ..Properties::default()
    });
    let wire = round_trip(&Packet::PubRec(ack), v);
    assert_eq!(&wire[..], &[0x50, 8, 0, 5, 0x10, 4, 0x1F, 0, 1, b'r']);
    // Empty properties are written as no properties at all.
    let mut empty = Ack::new(5);
    empty.properties = boxed(Properties::default());
    assert_eq!(&encoded(&Packet::PubComp(empty), v)[..], &[0x70, 2, 0, 5]);
    // And a 4-byte form with an empty property block is accepted.
    let mut buf = BytesMut::from(&[0x62, 4, 0, 5, 0x92, 0][..]);
    let decoded = decode(&mut buf, Some(v), MAX)
        .expect("decode")
        .expect("complete");
    let mut expected = Ack::new(5);
    expected.reason = 0x92;
    assert_eq!(decoded, Packet::PubRel(expected));
}

#[test]
fn v5_subscribe_options_suback_unsuback_disconnect_auth() {
    let v = ProtocolVersion::V5;
    let subscribe = Subscribe {
        packet_id: 10,
        filters: vec![
            (
                "a/#".into(),
                SubscriptionOptions {
                    qos: QoS::ExactlyOnce,
                    no_local: true,
                    retain_as_published: true,
                    retain_handling: RetainHandling::DoNotSend,
                },
            ),
            ("$share/g/b/+".into(), options(QoS::AtMostOnce)),
        ],
        properties: boxed(Properties {
            subscription_identifiers: vec![42],
            ..Properties::default()
        }),
    };
    let wire = round_trip(&Packet::Subscribe(subscribe), v);
    assert_eq!(&wire[2..7], &[0, 10, 2, 0x0B, 42]);
    assert_eq!(wire[12], 0b0010_1110);
    let suback = SubAck {
        packet_id: 10,
        return_codes: vec![2, 0x87, 0x9E],
        properties: None,
    };
    assert_eq!(
        &round_trip(&Packet::SubAck(suback), v)[..],
        &[0x90, 6, 0, 10, 0, 2, 0x87, 0x9E]
    );
    let unsuback = UnsubAck {
        packet_id: 11,
        reason_codes: vec![0, 0x11],
        properties: None,
    };
    assert_eq!(
        &round_trip(&Packet::UnsubAck(unsuback), v)[..],
        &[0xB0, 5, 0, 11, 0, 0, 0x11]
    );
    let normal = Disconnect {
        reason: 0,
        properties: None,
    };
    assert_eq!(&round_trip(&Packet::Disconnect(normal), v)[..], &[0xE0, 0]);
    let with_will = Disconnect {
        reason: 0x04,
        properties: None,
    };
    assert_eq!(
        &round_trip(&Packet::Disconnect(with_will), v)[..],
        &[0xE0, 1, 0x04]
    );
    let expiry = Disconnect {
        reason: 0,
        properties: boxed(Properties {
            session_expiry_interval: Some(0),
            ..Properties::default()
        }),
    };
    assert_eq!(
        &round_trip(&Packet::Disconnect(expiry), v)[..],
        &[0xE0, 7, 0, 5, 0x11, 0, 0, 0, 0]
    );
    let auth_ok = Auth {
        reason: 0,
        properties: None,
    };
    assert_eq!(&round_trip(&Packet::Auth(auth_ok), v)[..], &[0xF0, 0]);
    let auth_continue = Auth {
        reason: 0x18,
        properties: boxed(Properties {
            authentication_method: Some("m".into()),
            authentication_data: Some(Bytes::from_static(b"d")),
            ..Properties::default()
        }),
    };
    round_trip(&Packet::Auth(auth_continue), v);
}
