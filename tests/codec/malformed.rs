//! Malformations of the fixed header, packet identifiers, CONNECT, strings, topic names and
//! filters, with the error class (and so the MQTT 5 reason code) each must produce.

use ferromq::protocol::ProtocolVersion::{V31, V311, V5};
use ferromq::protocol::*;

use crate::frames::*;

#[test]
fn fixed_header_errors() {
    for v in ALL {
        let five_length_bytes = [0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01];
        rejects!(
            Some(v),
            five_length_bytes,
            DecodeError::Malformed {
                packet: "fixed header",
                ..
            }
        );
        rejects!(Some(v), [0x00, 0], DecodeError::Malformed { .. });
        rejects!(
            Some(v),
            connect_v311(0x02, &s(b"c")),
            DecodeError::ProtocolError { .. }
        );
    }
    rejects!(Some(V311), [0xF0, 0], DecodeError::Malformed { .. });
    rejects!(Some(V31), [0xF0, 0], DecodeError::Malformed { .. });
    assert!(matches!(accepts(Some(V5), &[0xF0, 0]), Packet::Auth(_)));
    // Before CONNECT, nothing else is accepted; the first byte alone is enough to say so, so
    // a client speaking HTTP is turned away at once.
    rejects!(None, [0x30, 0], DecodeError::ProtocolError { .. });
    rejects!(None, [0xC0, 0], DecodeError::ProtocolError { .. });
    rejects!(None, *b"G", DecodeError::ProtocolError { .. });
    rejects!(None, frame(0x12, &[]), DecodeError::Malformed { .. });
}

#[test]
fn fixed_header_flags() {
    for v in STRICT {
        for bytes in [
            vec![0x60, 2, 0, 1],                           // PUBREL with flags 0
            vec![0x6A, 2, 0, 1],                           // PUBREL with DUP
            frame(0x80, &cat(&[&[0, 1], &s(b"a"), &[0]])), // SUBSCRIBE with flags 0
            frame(0xA0, &cat(&[&[0, 1], &s(b"a")])),       // UNSUBSCRIBE with flags 0
            vec![0x41, 2, 0, 1],                           // PUBACK with a flag
            vec![0x72, 2, 0, 1],                           // PUBCOMP with a flag
            vec![0xC1, 0],                                 // PINGREQ
            vec![0xD8, 0],                                 // PINGRESP
            vec![0xE2, 0],                                 // DISCONNECT
            vec![0x21, 2, 0, 0],                           // CONNACK
        ] {
            rejects!(
                Some(v),
                bytes,
                DecodeError::Malformed {
                    packet: "fixed header",
                    ..
                }
            );
        }
    }
    // MQTT 3.1 reserved no flags: its clients send PUBREL/SUBSCRIBE with QoS 1 and DUP.
    assert!(matches!(
        accepts(Some(V31), &[0x6A, 2, 0, 1]),
        Packet::PubRel(_)
    ));
    let subscribe = frame(0x8A, &cat(&[&[0, 1], &s(b"a"), &[1]]));
    assert!(matches!(
        accepts(Some(V31), &subscribe),
        Packet::Subscribe(_)
    ));
    for v in ALL {
        let properties = if v == V5 { props(&[]) } else { vec![] };
        let body = cat(&[&s(b"t"), &[0, 1], &properties]);
        rejects!(Some(v), frame(0x36, &body), DecodeError::Malformed { .. }); // QoS 3
        rejects!(
            Some(v),
            frame(0x38, &s(b"t")),
            DecodeError::Malformed { .. }
        ); // DUP, QoS 0
        assert!(matches!(
            accepts(Some(v), &frame(0x3B, &body)),
            Packet::Publish(_)
        ));
    }
}

#[test]
fn packet_identifier_zero() {
    for v in ALL {
        for bytes in [
            frame(0x32, &cat(&[&s(b"t"), &[0, 0]])),
            vec![0x40, 2, 0, 0],
            vec![0x50, 2, 0, 0],
            vec![0x62, 2, 0, 0],
            vec![0x70, 2, 0, 0],
            frame(0x82, &cat(&[&[0, 0], &s(b"a"), &[0]])),
            frame(0xA2, &cat(&[&[0, 0], &s(b"a")])),
            vec![0x90, 3, 0, 0, 0],
        ] {
            rejects!(
                Some(v),
                bytes,
                DecodeError::Malformed { reason: r, .. } if r.starts_with("the packet identifier is 0")
            );
        }
    }
}

#[test]
fn connect_protocol_name_and_level() {
    for (name, level) in [
        (&b"MQTT"[..], 3),
        (b"MQIsdp", 4),
        (b"MQIsdp", 5),
        (b"MQTT", 6),
        (b"MQTT", 0),
        (b"HTTP", 4),
    ] {
        let bytes = connect(name, level, 0x02, &s(b"c"));
        match decode_bytes(None, &bytes) {
            Err(error @ DecodeError::UnsupportedProtocolVersion { level: got, .. }) => {
                assert_eq!(got, level);
                assert!(
                    error
                        .to_string()
                        .contains(&format!("{:?}", String::from_utf8_lossy(name))),
                    "the error names the protocol name: {error}"
                );
                assert_eq!(error.reason_code(), 0x84);
            }
            other => panic!("{name:?}/{level}: {other:?}"),
        }
    }
    for (name, level, version) in [(&b"MQIsdp"[..], 3, V31), (b"MQTT", 4, V311)] {
        let Packet::Connect(c) = accepts(None, &connect(name, level, 0x02, &s(b"c"))) else {
            panic!("not a CONNECT");
        };
        assert_eq!(c.protocol, version);
    }
    let Packet::Connect(c) = accepts(None, &connect_v5(0x02, &[], &s(b""))) else {
        panic!("not a CONNECT");
    };
    assert_eq!((c.protocol, c.client_id.as_str()), (V5, ""));
}

#[test]
fn connect_flags() {
    let client_only = s(b"c");
    let with_will = cat(&[&s(b"c"), &s(b"w"), &s(b"m")]);
    let v5_with_will = cat(&[&s(b"c"), &props(&[]), &s(b"w"), &s(b"m")]);
    // Each payload matches what the other flags promise, so only the flag under test is wrong.
    for (flags, has_will, reason) in [
        (0x01, false, "the reserved connect flag (bit 0) is set"),
        (0x03, false, "the reserved connect flag (bit 0) is set"),
        (
            0x08,
            false,
            "the will QoS or will retain flag is set without the will flag",
        ),
        (
            0x10,
            false,
            "the will QoS or will retain flag is set without the will flag",
        ),
        (
            0x20,
            false,
            "the will QoS or will retain flag is set without the will flag",
        ),
        (0x1C, true, "the will QoS is 3 (it must be 0, 1 or 2)"),
    ] {
        let (v3_payload, v5_payload) = if has_will {
            (&with_will, &v5_with_will)
        } else {
            (&client_only, &client_only)
        };
        rejects!(
            None,
            connect_v311(flags, v3_payload),
            DecodeError::Malformed { packet: "CONNECT", reason: r } if r == reason
        );
        rejects!(
            None,
            connect_v5(flags, &[], v5_payload),
            DecodeError::Malformed { packet: "CONNECT", reason: r } if r == reason
        );
    }
    accepts(None, &connect_v311(0x02, &client_only));
    accepts(None, &connect_v311(0x36, &with_will));
    // Password without user name: refused in 3.x, allowed in 5.0.
    let password = cat(&[&s(b"c"), &s(b"secret")]);
    let no_user = "the password flag is set without the user name flag";
    rejects!(None, connect_v311(0x42, &password), DecodeError::Malformed { reason: r, .. } if r == no_user);
    rejects!(None, connect(b"MQIsdp", 3, 0x42, &password), DecodeError::Malformed { reason: r, .. } if r == no_user);
    let Packet::Connect(c) = accepts(None, &connect_v5(0x42, &[], &password)) else {
        panic!("not a CONNECT");
    };
    assert_eq!(c.password.as_deref(), Some(&b"secret"[..]));
    assert_eq!(c.username, None);
    // Flags that promise fields the payload does not have.
    rejects!(
        None,
        connect_v311(0x82, &s(b"c")),
        DecodeError::Truncated {
            field: "user name",
            ..
        }
    );
    rejects!(
        None,
        connect_v311(0x06, &s(b"c")),
        DecodeError::Truncated { .. }
    );
}

#[test]
fn strings_must_be_well_formed_utf8_without_nul() {
    for bad in [
        &b"\xFF"[..],
        b"a\0b",
        b"\xED\xA0\x80",
        b"\xC0\xAF",
        b"\xE2\x82",
    ] {
        rejects!(
            Some(V311),
            frame(0x30, &s(bad)),
            DecodeError::InvalidUtf8 {
                packet: "PUBLISH",
                field: "topic name"
            }
        );
        rejects!(
            None,
            connect_v311(0x02, &s(bad)),
            DecodeError::InvalidUtf8 {
                field: "client identifier",
                ..
            }
        );
        rejects!(
            None,
            connect_v311(0x82, &cat(&[&s(b"c"), &s(bad)])),
            DecodeError::InvalidUtf8 {
                field: "user name",
                ..
            }
        );
        let user_property = cat(&[&[0x26], &s(b"k"), &s(bad)]);
        rejects!(
            Some(V5),
            frame(0x30, &cat(&[&s(b"t"), &props(&user_property)])),
            DecodeError::InvalidUtf8 {
                field: "user property value",
                ..
            }
        );
        let error = decode_bytes(Some(V311), &frame(0x30, &s(bad))).expect_err("bad utf-8");
        assert_eq!(error.reason_code(), 0x81);
    }
    // Four-byte sequences and a password that is not UTF-8 (it is binary data) are fine.
    let emoji = "t/\u{1F600}".as_bytes();
    let Packet::Publish(p) = accepts(Some(V311), &frame(0x30, &s(emoji))) else {
        panic!("not a PUBLISH");
    };
    assert_eq!(p.topic, "t/\u{1F600}");
    accepts(
        None,
        &connect_v311(0xC2, &cat(&[&s(b"c"), &s(b"u"), &s(b"\xFF\x00")])),
    );
}

#[test]
fn topic_names() {
    for v in ALL {
        for (topic, why) in [
            (&b"a/+"[..], TopicError::WildcardInName),
            (b"#", TopicError::WildcardInName),
            (b"a/b#", TopicError::WildcardInName),
        ] {
            let body = if v == V5 {
                cat(&[&s(topic), &props(&[])])
            } else {
                s(topic)
            };
            rejects!(
                Some(v),
                frame(0x30, &body),
                DecodeError::InvalidTopicName { packet: "PUBLISH", error } if error == why
            );
        }
        let will = if v == V5 {
            connect_v5(
                0x06,
                &[],
                &cat(&[&s(b"c"), &props(&[]), &s(b"w/#"), &s(b"")]),
            )
        } else if v == V31 {
            connect(b"MQIsdp", 3, 0x06, &cat(&[&s(b"c"), &s(b"w/#"), &s(b"")]))
        } else {
            connect_v311(0x06, &cat(&[&s(b"c"), &s(b"w/#"), &s(b"")]))
        };
        rejects!(
            None,
            will,
            DecodeError::InvalidTopicName {
                packet: "CONNECT",
                ..
            }
        );
    }
    rejects!(
        Some(V311),
        frame(0x30, &s(b"")),
        DecodeError::InvalidTopicName {
            error: TopicError::Empty,
            ..
        }
    );
    // MQTT 5: an empty topic needs a topic alias.
    rejects!(
        Some(V5),
        frame(0x30, &cat(&[&s(b""), &props(&[])])),
        DecodeError::ProtocolError { .. }
    );
    let aliased = frame(0x30, &cat(&[&s(b""), &props(&[0x23, 0, 4])]));
    assert!(matches!(accepts(Some(V5), &aliased), Packet::Publish(_)));
    let response_topic = cat(&[&[0x08], &s(b"reply/+")]);
    let error = decode_bytes(
        Some(V5),
        &frame(0x30, &cat(&[&s(b"t"), &props(&response_topic)])),
    )
    .expect_err("wildcard response topic");
    assert!(
        matches!(error, DecodeError::InvalidTopicName { .. }),
        "{error:?}"
    );
    assert_eq!(error.reason_code(), 0x90);
}

#[test]
fn topic_filters() {
    for v in ALL {
        for (filter, why) in [
            (&b"a/#/b"[..], TopicError::MisplacedMultiLevelWildcard),
            (b"a#", TopicError::MisplacedMultiLevelWildcard),
            (b"a+", TopicError::MisplacedSingleLevelWildcard),
            (b"+a/b", TopicError::MisplacedSingleLevelWildcard),
            (b"", TopicError::Empty),
        ] {
            rejects!(
                Some(v),
                subscribe(v, filter, 0),
                DecodeError::InvalidTopicFilter { packet: "SUBSCRIBE", error } if error == why
            );
            rejects!(
                Some(v),
                unsubscribe(v, filter),
                DecodeError::InvalidTopicFilter { packet: "UNSUBSCRIBE", error } if error == why
            );
        }
        let properties = if v == V5 { props(&[]) } else { vec![] };
        let empty_subscribe = frame(0x82, &cat(&[&[0, 1], &properties]));
        rejects!(
            Some(v),
            empty_subscribe,
            DecodeError::ProtocolError {
                packet: "SUBSCRIBE",
                ..
            }
        );
        let empty_unsubscribe = frame(0xA2, &cat(&[&[0, 1], &properties]));
        rejects!(
            Some(v),
            empty_unsubscribe,
            DecodeError::ProtocolError { .. }
        );
        let no_options = frame(0x82, &cat(&[&[0, 1], &properties, &s(b"a")]));
        rejects!(
            Some(v),
            no_options,
            DecodeError::Truncated {
                field: "subscription options",
                ..
            }
        );
    }
    // `$share/...` is an ordinary filter in 3.x, and must be well-formed in 5.0.
    accepts(Some(V311), &subscribe(V311, b"$share//a", 0));
    rejects!(
        Some(V5),
        subscribe(V5, b"$share//a", 0),
        DecodeError::InvalidTopicFilter {
            error: TopicError::InvalidSharedSubscription,
            ..
        }
    );
    let error = decode_bytes(Some(V5), &unsubscribe(V5, b"$share/g")).expect_err("no filter");
    assert_eq!(error.reason_code(), 0x8F);
    // A requested QoS of 3: malformed in 3.1.1 (3.8.3-4), a Protocol Error in 5.0 (3.8.3.1).
    for (v, code) in [(V311, 0x81), (V5, 0x82)] {
        let error = decode_bytes(Some(v), &subscribe(v, b"a/b", 3)).expect_err("QoS 3");
        assert_eq!(error.reason_code(), code, "{v:?}: {error}");
    }
}
