//! Malformed packets of every type and protocol violations: the offending connection is
//! closed, the broker keeps serving everyone else. Plus version refusals and frame limits.

use std::time::Duration;

use crate::support::{connect_packet, Client, RawClient, TestBroker};
use ferromq::protocol::{ConnectReason, Packet, QoS};
use rumqttc::QoS as Q;
use tokio::io::AsyncWriteExt;

/// Byte sequences that must close an established 3.1.1 connection, one per packet type and
/// malformation class.
const MALFORMED_AFTER_CONNECT: &[(&str, &[u8])] = &[
    ("reserved packet type 0", &[0x00, 0x00]),
    ("reserved packet type 15", &[0xF0, 0x00]),
    (
        "second CONNECT",
        &[0x10, 0x0C, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 0, 0, 0],
    ),
    ("CONNACK from a client", &[0x20, 0x02, 0, 0]),
    ("PUBLISH with QoS 3", &[0x36, 0x05, 0, 1, b'a', 0, 1]),
    ("PUBLISH QoS 0 with DUP", &[0x38, 0x03, 0, 1, b'a']),
    (
        "PUBLISH QoS 1 with packet id 0",
        &[0x32, 0x05, 0, 1, b'a', 0, 0],
    ),
    (
        "PUBLISH with a wildcard topic",
        &[0x30, 0x05, 0, 3, b'a', b'/', b'#'],
    ),
    (
        "PUBLISH with invalid UTF-8 topic",
        &[0x30, 0x04, 0, 2, 0xC3, 0x28],
    ),
    (
        "PUBLISH topic longer than the packet",
        &[0x30, 0x03, 0, 9, b'a'],
    ),
    ("PUBACK with flags", &[0x41, 0x02, 0, 1]),
    ("PUBACK too short", &[0x40, 0x01, 0]),
    ("PUBREC with trailing bytes", &[0x50, 0x03, 0, 1, 0]),
    ("PUBREL with wrong flags", &[0x60, 0x02, 0, 1]),
    ("PUBCOMP with flags", &[0x72, 0x02, 0, 1]),
    (
        "SUBSCRIBE with wrong flags",
        &[0x80, 0x06, 0, 1, 0, 1, b'a', 0],
    ),
    ("SUBSCRIBE without filters", &[0x82, 0x02, 0, 1]),
    ("SUBSCRIBE with QoS 3", &[0x82, 0x06, 0, 1, 0, 1, b'a', 3]),
    (
        "SUBSCRIBE with invalid filter a/#/b",
        &[0x82, 0x0A, 0, 1, 0, 5, b'a', b'/', b'#', b'/', b'b', 0],
    ),
    ("SUBACK from a client", &[0x90, 0x03, 0, 1, 0]),
    (
        "UNSUBSCRIBE with wrong flags",
        &[0xA0, 0x05, 0, 1, 0, 1, b'a'],
    ),
    ("UNSUBSCRIBE without filters", &[0xA2, 0x02, 0, 1]),
    ("UNSUBACK from a client", &[0xB0, 0x02, 0, 1]),
    ("PINGREQ with a body", &[0xC0, 0x01, 0]),
    ("PINGRESP from a client", &[0xD0, 0x00]),
    ("DISCONNECT with flags", &[0xE1, 0x00]),
    (
        "remaining length over 4 bytes",
        &[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
    ),
];

#[tokio::test]
async fn malformed_packets_close_only_the_offending_connection() {
    let broker = TestBroker::default().await;
    let mut bystander = Client::connect(broker.addr, "bystander").await;
    bystander.subscribe("alive", Q::AtLeastOnce).await;
    let mut publ = Client::connect(broker.addr, "pub").await;
    for (i, (what, bytes)) in MALFORMED_AFTER_CONNECT.iter().enumerate() {
        let (mut c, _) = RawClient::connected(broker.addr, &format!("bad{i}"), true).await;
        c.send_raw(bytes).await;
        assert!(
            c.closed_within(Duration::from_secs(2)).await.is_some(),
            "{what}: connection should be closed"
        );
        publ.publish("alive", Q::AtLeastOnce, false, what.as_bytes())
            .await;
        assert_eq!(&bystander.next_publish().await.payload[..], what.as_bytes());
    }
    assert!(broker.handle.counters().protocol_errors >= MALFORMED_AFTER_CONNECT.len() as u64);
    broker.shutdown().await;
}

#[tokio::test]
async fn malformed_or_missing_connect_closes() {
    let broker = TestBroker::default().await;
    let cases: &[(&str, &[u8])] = &[
        ("first packet not CONNECT", &[0xC0, 0x00]),
        (
            "bad protocol name",
            &[0x10, 0x0C, 0, 4, b'M', b'Q', b'X', b'X', 4, 2, 0, 0, 0, 0],
        ),
        (
            "reserved connect flag",
            &[0x10, 0x0C, 0, 4, b'M', b'Q', b'T', b'T', 4, 3, 0, 0, 0, 0],
        ),
        (
            "password without user name",
            &[
                0x10, 0x0E, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x42, 0, 0, 0, 0, 0, 0,
            ],
        ),
        ("truncated CONNECT body", &[0x10, 0x04, 0, 4, b'M', b'Q']),
    ];
    for (what, bytes) in cases {
        let mut c = RawClient::tcp(broker.addr).await;
        c.send_raw(bytes).await;
        if *what == "truncated CONNECT body" {
            // Incomplete: the broker waits for more; closing our side ends it.
            c.stream.shutdown().await.ok();
        }
        assert!(
            c.closed_within(Duration::from_secs(2)).await.is_some(),
            "{what}"
        );
    }
    let (_ok, ack) = RawClient::connect(broker.addr, connect_packet("ok", true, 0)).await;
    assert_eq!(ack.reason, ConnectReason::Success);
    broker.shutdown().await;
}

#[tokio::test]
async fn mqtt5_is_served_and_unknown_levels_get_connack_1() {
    let broker = TestBroker::default().await;
    // MQTT 5 CONNECT (level 5, empty properties): a v5 CONNACK accepting it.
    let mut v5 = RawClient::tcp(broker.addr).await;
    v5.version = ferromq::protocol::ProtocolVersion::V5;
    v5.send_raw(&[
        0x10, 0x0F, 0, 4, b'M', b'Q', b'T', b'T', 5, 2, 0, 0, 0, 0, 2, b'v', b'5',
    ])
    .await;
    match v5.recv().await {
        Packet::ConnAck(a) => assert_eq!(a.reason, ConnectReason::Success, "{a:?}"),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    // Level 3 under the name MQTT (3.1 is `MQIsdp`): refused in MQTT 3 form. Levels above 5
    // get the MQTT 5 form (`mqtt5_protocol::newer_protocol_levels_get_connack_0x84_in_v5_form`).
    let mut v9 = RawClient::tcp(broker.addr).await;
    v9.send_raw(&[0x10, 0x0C, 0, 4, b'M', b'Q', b'T', b'T', 3, 2, 0, 0, 0, 0])
        .await;
    match v9.recv().await {
        Packet::ConnAck(a) => assert_eq!(a.reason, ConnectReason::UnsupportedProtocolVersion),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    v9.expect_closed().await;
    broker.shutdown().await;
}

#[tokio::test]
async fn frames_over_max_frame_size_close_the_connection() {
    let broker = TestBroker::with_uri_options(&["wireFormat.maxFrameSize=64"]).await;
    let (mut small, _) = RawClient::connected(broker.addr, "small", true).await;
    small
        .send(crate::support::publish_packet(
            "t",
            &[7u8; 32],
            QoS::AtMostOnce,
            None,
            false,
        ))
        .await;
    small.send(ferromq::protocol::Packet::PingReq).await;
    assert_eq!(small.recv().await, Packet::PingResp);
    let (mut big, _) = RawClient::connected(broker.addr, "big", true).await;
    // Only the fixed header of a 1 MiB PUBLISH: refused before the body arrives.
    big.send_raw(&[0x30, 0x80, 0x80, 0x40]).await;
    big.expect_closed().await;
    broker.shutdown().await;
}
