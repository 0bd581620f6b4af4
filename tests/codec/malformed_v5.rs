//! Malformations of subscription options, MQTT 5 properties, packet lengths and reason codes,
//! and the wording of errors.

use ferromq::protocol::ProtocolVersion::{V31, V311, V5};
use ferromq::protocol::*;

use crate::frames::*;

#[test]
fn subscription_options() {
    for bits in [0x04, 0x08, 0x40, 0x80, 0x03] {
        rejects!(
            Some(V311),
            subscribe(V311, b"a", bits),
            DecodeError::Malformed { .. }
        );
        rejects!(
            Some(V31),
            subscribe(V31, b"a", bits),
            DecodeError::Malformed { .. }
        );
    }
    rejects!(
        Some(V5),
        subscribe(V5, b"a", 0x40),
        DecodeError::Malformed { .. }
    );
    rejects!(
        Some(V5),
        subscribe(V5, b"a", 0x80),
        DecodeError::Malformed { .. }
    );
    // Maximum QoS 3: a Protocol Error (3.8.3.1).
    rejects!(
        Some(V5),
        subscribe(V5, b"a", 0x03),
        DecodeError::ProtocolError { .. }
    );
    rejects!(
        Some(V5),
        subscribe(V5, b"a", 0x30),
        DecodeError::ProtocolError { .. }
    );
    rejects!(
        Some(V5),
        subscribe(V5, b"$share/g/a", 0x04),
        DecodeError::ProtocolError { .. }
    );
    let Packet::Subscribe(sub) = accepts(Some(V5), &subscribe(V5, b"a", 0x2E)) else {
        panic!("not a SUBSCRIBE");
    };
    let options = &sub.filters[0].1;
    assert_eq!(
        (
            options.qos,
            options.no_local,
            options.retain_as_published,
            options.retain_handling
        ),
        (QoS::ExactlyOnce, true, true, RetainHandling::DoNotSend)
    );
}

#[test]
fn v5_properties() {
    // Unknown identifiers (including a two-byte one).
    rejects!(
        None,
        connect_with(&[0x05, 0]),
        DecodeError::Malformed { .. }
    );
    rejects!(
        None,
        connect_with(&[0x80, 0x01, 0]),
        DecodeError::Malformed { .. }
    );
    // Known, but not allowed on this packet.
    rejects!(
        None,
        connect_with(&[0x23, 0, 1]),
        DecodeError::ProtocolError { .. }
    );
    rejects!(
        None,
        connect_with(&[0x18, 0, 0, 0, 1]),
        DecodeError::ProtocolError { .. }
    );
    let publish_session_expiry = frame(0x30, &cat(&[&s(b"t"), &props(&[0x11, 0, 0, 0, 1])]));
    rejects!(
        Some(V5),
        publish_session_expiry,
        DecodeError::ProtocolError { .. }
    );
    let ack_with_topic_alias = [0x40, 7, 0, 1, 0, 3, 0x23, 0, 1];
    rejects!(
        Some(V5),
        ack_with_topic_alias,
        DecodeError::ProtocolError { .. }
    );
    // Repeated where only one is allowed.
    let twice = [0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 2];
    rejects!(
        None,
        connect_with(&twice),
        DecodeError::ProtocolError { .. }
    );
    let sub_ids = [0x0B, 1, 0x0B, 2];
    let subscribe = frame(0x82, &cat(&[&[0, 1], &props(&sub_ids), &s(b"a"), &[0]]));
    rejects!(Some(V5), subscribe, DecodeError::ProtocolError { .. });
    // ...but user properties may repeat everywhere, and a PUBLISH carries one subscription
    // identifier per matching subscription.
    let users = cat(&[&[0x26], &s(b"k"), &s(b"1"), &[0x26], &s(b"k"), &s(b"2")]);
    let Packet::Connect(c) = accepts(None, &connect_with(&users)) else {
        panic!("not a CONNECT");
    };
    assert_eq!(c.properties.expect("properties").user_properties.len(), 2);
    let Packet::Publish(p) = accepts(Some(V5), &frame(0x30, &cat(&[&s(b"t"), &props(&sub_ids)])))
    else {
        panic!("not a PUBLISH");
    };
    assert_eq!(
        p.properties.expect("properties").subscription_identifiers,
        vec![1, 2]
    );
    // Values out of range.
    for bad in [
        &[0x21, 0, 0][..],   // receive maximum 0
        &[0x27, 0, 0, 0, 0], // maximum packet size 0
        &[0x17, 2],          // request problem information 2
        &[0x19, 2],          // request response information 2
        &[0x16, 0, 1, 9],    // authentication data without a method
    ] {
        rejects!(None, connect_with(bad), DecodeError::ProtocolError { .. });
    }
    for bad in [&[0x23, 0, 0][..], &[0x0B, 0], &[0x01, 2]] {
        let publish = frame(0x30, &cat(&[&s(b"t"), &props(bad)]));
        rejects!(Some(V5), publish, DecodeError::ProtocolError { .. });
    }
    let connack_max_qos_2 = frame(0x20, &cat(&[&[0, 0], &props(&[0x24, 2])]));
    rejects!(
        Some(V5),
        connack_max_qos_2,
        DecodeError::ProtocolError { .. }
    );
    // Lengths that do not add up.
    let block_too_long = connect(b"MQTT", 5, 0x02, &cat(&[&[20, 0x11, 0, 0, 0, 1], &s(b"c")]));
    rejects!(None, block_too_long, DecodeError::Truncated { .. });
    let value_past_block = connect(b"MQTT", 5, 0x02, &cat(&[&[3, 0x11, 0, 0], &s(b"c")]));
    rejects!(None, value_past_block, DecodeError::Truncated { .. });
    let five_byte_length = [0x40, 8, 0, 1, 0, 0x80, 0x80, 0x80, 0x80, 0x01];
    rejects!(Some(V5), five_byte_length, DecodeError::Malformed { .. });
}

#[test]
fn bytes_beyond_the_declared_content() {
    for v in ALL {
        rejects!(
            Some(v),
            [0xC0, 1, 0],
            DecodeError::Malformed {
                packet: "PINGREQ",
                ..
            }
        );
        rejects!(
            Some(v),
            [0xD0, 1, 0],
            DecodeError::Malformed {
                packet: "PINGRESP",
                ..
            }
        );
    }
    for v in [V31, V311] {
        rejects!(
            Some(v),
            [0x40, 3, 0, 1, 0],
            DecodeError::Malformed {
                packet: "PUBACK",
                ..
            }
        );
        rejects!(
            Some(v),
            [0xE0, 1, 0],
            DecodeError::Malformed {
                packet: "DISCONNECT",
                ..
            }
        );
        rejects!(
            Some(v),
            [0xB0, 3, 0, 1, 0],
            DecodeError::Malformed {
                packet: "UNSUBACK",
                ..
            }
        );
        rejects!(
            Some(v),
            [0x20, 3, 0, 0, 0],
            DecodeError::Malformed {
                packet: "CONNACK",
                ..
            }
        );
    }
    rejects!(
        None,
        connect_v311(0x02, &cat(&[&s(b"c"), &[0]])),
        DecodeError::Malformed { .. }
    );
    rejects!(
        Some(V5),
        [0x40, 5, 0, 1, 0, 0, 9],
        DecodeError::Malformed { .. }
    );
    rejects!(Some(V5), [0xE0, 3, 0, 0, 9], DecodeError::Malformed { .. });
    rejects!(Some(V5), [0xF0, 3, 0, 0, 9], DecodeError::Malformed { .. });
}

#[test]
fn fields_past_the_end() {
    rejects!(
        Some(V311),
        frame(0x30, &[0, 10, b'a']),
        DecodeError::Truncated {
            field: "topic name",
            ..
        }
    );
    rejects!(
        Some(V311),
        frame(0x32, &s(b"t")),
        DecodeError::Truncated {
            field: "packet identifier",
            ..
        }
    );
    rejects!(
        None,
        frame(0x10, &cat(&[&s(b"MQTT"), &[4, 2]])),
        DecodeError::Truncated {
            field: "keep alive",
            ..
        }
    );
    rejects!(Some(V311), [0x40, 1, 0], DecodeError::Truncated { .. });
    rejects!(
        Some(V311),
        [0x90, 2, 0, 1],
        DecodeError::ProtocolError {
            packet: "SUBACK",
            ..
        }
    );
    rejects!(
        Some(V5),
        [0xB0, 3, 0, 1, 0],
        DecodeError::ProtocolError {
            packet: "UNSUBACK",
            ..
        }
    );
    rejects!(Some(V5), [0xF0, 1, 0x18], DecodeError::Truncated { .. });
}

#[test]
fn reason_and_return_codes() {
    rejects!(
        Some(V5),
        [0x40, 3, 0, 1, 0x01],
        DecodeError::ProtocolError {
            packet: "PUBACK",
            ..
        }
    );
    rejects!(
        Some(V5),
        [0x62, 3, 0, 1, 0x10],
        DecodeError::ProtocolError {
            packet: "PUBREL",
            ..
        }
    );
    rejects!(Some(V5), [0xE0, 1, 0x05], DecodeError::ProtocolError { .. });
    let error = decode_bytes(Some(V5), &[0xE0, 1, 0x05]).expect_err("reason 0x05");
    assert_eq!(error.reason_code(), 0x82);
    rejects!(
        Some(V5),
        [0xF0, 2, 0x01, 0],
        DecodeError::ProtocolError { .. }
    );
    rejects!(
        Some(V5),
        [0x90, 4, 0, 1, 0, 0x03],
        DecodeError::ProtocolError { .. }
    );
    rejects!(
        Some(V311),
        [0x90, 3, 0, 1, 0x87],
        DecodeError::ProtocolError { .. }
    );
    rejects!(
        Some(V5),
        [0x20, 3, 0, 0x05, 0],
        DecodeError::ProtocolError { .. }
    );
    rejects!(Some(V311), [0x20, 2, 0, 6], DecodeError::Malformed { .. });
    rejects!(
        Some(V311),
        [0x20, 2, 0x02, 0],
        DecodeError::Malformed { .. }
    );
    rejects!(
        Some(V311),
        [0x20, 2, 0x01, 5],
        DecodeError::Malformed { .. }
    );
    // In MQTT 3.1 the CONNACK's first byte is unused.
    let Packet::ConnAck(connack) = accepts(Some(V31), &[0x20, 2, 0xFF, 0]) else {
        panic!("not a CONNACK");
    };
    assert!(!connack.session_present);
}

#[test]
fn errors_name_the_packet_and_the_problem() {
    let error = decode_bytes(Some(V311), &subscribe(V311, b"a", 0x04)).expect_err("reserved");
    assert_eq!(
        error.to_string(),
        "malformed SUBSCRIBE: reserved bits (7-2) of the requested QoS are set"
    );
    let error = decode_bytes(Some(V311), &frame(0x30, &s(b"a/+"))).expect_err("wildcard");
    assert!(
        error
            .to_string()
            .starts_with("invalid topic name in PUBLISH: "),
        "{error}"
    );
    let error = decode_bytes(None, &connect(b"MQTT", 7, 2, &s(b"c"))).expect_err("level 7");
    assert!(
        error
            .to_string()
            .contains("unsupported protocol name \"MQTT\" with level 7"),
        "{error}"
    );
    let error = decode_bytes(Some(V311), &[0x30, 0x80, 0x80, 0x80, 0x80, 0x01]).expect_err("len");
    assert_eq!(
        error.to_string(),
        "malformed fixed header: the remaining length is longer than 4 bytes"
    );
}
