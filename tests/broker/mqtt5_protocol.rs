//! MQTT 5 protocol edges against the real broker, with exact packets from a raw client on our
//! codec: a refusing PUBREC ends a QoS 2 delivery, our Receive Maximum enforced with DISCONNECT
//! 0x93 (acknowledgements the broker defers included), Server Keep Alive
//! (`transport.maxKeepAlive`, `transport.defaultKeepAlive`), topic aliases towards the client,
//! Request Problem Information, Request Response Information, and the CONNACK of unsupported
//! protocol levels.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ferromq::protocol::{
    encode, Ack, ConnAck, Connect, ConnectReason, Packet, Properties, ProtocolVersion, Publish, QoS,
};

use crate::support::{
    ack, activemq_xml, connect_packet, connect_v5, publish_packet, RawClient, TestBroker,
};

/// How long "nothing arrives" is watched for.
const QUIET: Duration = Duration::from_millis(300);
/// The broker's Receive Maximum (its in-flight window, announced in CONNACK).
const RECEIVE_MAXIMUM: u16 = 32;

/// An MQTT 5 CONNECT for `id` with `properties` (clean start, keep-alive off).
fn connect_with(id: &str, properties: Properties) -> Connect {
    let mut connect = connect_v5(id, true, None);
    connect.properties = Some(Box::new(properties));
    connect
}

async fn v5_client(broker: &TestBroker, id: &str, properties: Properties) -> (RawClient, ConnAck) {
    RawClient::connect_ok(broker.addr, connect_with(id, properties)).await
}

fn expect_disconnect(packet: Option<Packet>, code: u8) {
    match packet {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason, code, "{d:?}"),
        other => panic!("expected DISCONNECT {code:#x}, got {other:?}"),
    }
}

// --- QoS 2 towards a subscriber: PUBREC >= 0x80 -------------------------------------------

#[tokio::test]
async fn a_refusing_pubrec_ends_the_delivery_frees_the_slot_and_discards_the_message() {
    let broker = TestBroker::default().await;
    let narrow = Properties {
        receive_maximum: Some(1),
        session_expiry_interval: Some(600),
        ..Properties::default()
    };
    let (mut sub, _) = v5_client(&broker, "refuser", narrow.clone()).await;
    sub.subscribe(1, &[("q2", QoS::ExactlyOnce)]).await;
    let (mut publisher, _) = v5_client(&broker, "pub", Properties::default()).await;
    for (id, payload) in [(1u16, &b"refused"[..]), (2, b"accepted")] {
        publisher
            .send(publish_packet(
                "q2",
                payload,
                QoS::ExactlyOnce,
                Some(id),
                false,
            ))
            .await;
        assert!(matches!(publisher.recv().await, Packet::PubRec(a) if a.reason == 0));
        publisher.send(Packet::PubRel(ack(id))).await;
        assert!(matches!(publisher.recv().await, Packet::PubComp(_)));
    }

    // Receive Maximum 1: the second message waits for the first exchange to end.
    let first = sub.recv_publish().await;
    assert_eq!(&first.payload[..], b"refused");
    assert!(sub.recv_within(QUIET).await.is_none(), "window of one");
    let first_id = first.packet_id.expect("QoS 2 id");
    sub.send(Packet::PubRec(Ack {
        packet_id: first_id,
        reason: 0x80,
        properties: None,
    }))
    .await;
    // No PUBREL: the next message comes instead, in the slot the refusal freed.
    let second = sub.recv_publish().await;
    assert_eq!(&second.payload[..], b"accepted");
    let second_id = second.packet_id.expect("QoS 2 id");
    sub.send(Packet::PubRec(ack(second_id))).await;
    assert_eq!(sub.recv().await, Packet::PubRel(ack(second_id)));
    sub.send(Packet::PubComp(ack(second_id))).await;
    assert!(sub.recv_within(QUIET).await.is_none());
    drop(sub);

    // The refused message is gone from the session: a resume re-sends nothing.
    let mut resume = connect_with("refuser", narrow);
    resume.clean_start = false;
    let (mut sub, connack) = RawClient::connect_ok(broker.addr, resume).await;
    assert!(connack.session_present);
    assert!(
        sub.recv_within(QUIET).await.is_none(),
        "nothing is re-sent after a refusing PUBREC"
    );
    broker.shutdown().await;
}

/// A resumed session's unfinished deliveries are re-sent within the client's new Receive
/// Maximum, even when it is lower than when they were sent (3.3.4-9): the rest follow one per
/// ended exchange, then new messages.
#[tokio::test]
async fn resent_deliveries_respect_a_lowered_receive_maximum() {
    let broker = TestBroker::default().await;
    let window = |receive_maximum| Properties {
        receive_maximum: Some(receive_maximum),
        session_expiry_interval: Some(600),
        ..Properties::default()
    };
    let (mut sub, _) = v5_client(&broker, "lowering", window(3)).await;
    sub.subscribe(1, &[("rs", QoS::AtLeastOnce)]).await;
    let (mut publisher, _) = v5_client(&broker, "pub", Properties::default()).await;
    for id in 1..=4u16 {
        publisher
            .send(publish_packet(
                "rs",
                &[id as u8],
                QoS::AtLeastOnce,
                Some(id),
                false,
            ))
            .await;
        assert_eq!(publisher.recv().await, Packet::PubAck(ack(id)));
    }
    for _ in 0..3 {
        sub.recv_publish().await; // not acknowledged
    }
    drop(sub);

    let mut resume = connect_with("lowering", window(1));
    resume.clean_start = false;
    let (mut sub, connack) = RawClient::connect_ok(broker.addr, resume).await;
    assert!(connack.session_present);
    let mut payloads = Vec::new();
    for _ in 0..4 {
        let p = sub.recv_publish().await;
        assert!(
            sub.recv_within(QUIET).await.is_none(),
            "a second message while one is unacknowledged"
        );
        payloads.push((p.payload[0], p.dup));
        sub.send(Packet::PubAck(ack(p.packet_id.expect("QoS 1 id"))))
            .await;
    }
    // Three re-sent (DUP), then the fourth, sent for the first time.
    assert_eq!(payloads, [(1, true), (2, true), (3, true), (4, false)]);
    broker.shutdown().await;
}

// --- Flow control: our Receive Maximum ------------------------------------------------------

/// Eclipse Paho's flow-control test: publish Receive Maximum + 1 QoS 2 messages at once, then
/// read, answering each PUBREC with PUBREL, until the DISCONNECT. The broker's close lingers
/// on the read side, so these late PUBRELs do not reset the connection (a reset would fail the
/// client's write and drop the unread DISCONNECT).
#[tokio::test]
async fn a_client_acknowledging_after_its_disconnect_0x93_still_reads_it() {
    let broker = TestBroker::default().await;
    let (mut client, _) = v5_client(&broker, "burst", Properties::default()).await;
    for id in 1..=RECEIVE_MAXIMUM + 1 {
        client
            .send(publish_packet(
                "fc",
                b"x",
                QoS::ExactlyOnce,
                Some(id),
                false,
            ))
            .await;
    }
    let mut pubrecs = 0;
    loop {
        match client.recv_within(Duration::from_secs(5)).await {
            Some(Packet::PubRec(a)) => {
                pubrecs += 1;
                client.send(Packet::PubRel(ack(a.packet_id))).await;
            }
            other => {
                expect_disconnect(other, 0x93);
                break;
            }
        }
    }
    assert_eq!(
        pubrecs, RECEIVE_MAXIMUM,
        "the publish over the limit is not acknowledged"
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn more_unanswered_qos2_publishes_than_receive_maximum_get_disconnect_0x93() {
    let broker = TestBroker::default().await;
    let (mut client, connack) = v5_client(&broker, "flood", Properties::default()).await;
    let announced = connack.properties.and_then(|p| p.receive_maximum);
    assert_eq!(announced, Some(RECEIVE_MAXIMUM));
    // Receive Maximum QoS 2 exchanges open (PUBREC'd, never PUBREL'd): allowed.
    for id in 1..=RECEIVE_MAXIMUM {
        client
            .send(publish_packet(
                "fc",
                b"x",
                QoS::ExactlyOnce,
                Some(id),
                false,
            ))
            .await;
        assert!(matches!(client.recv().await, Packet::PubRec(a) if a.packet_id == id));
    }
    // Completing one returns its quota: one more is allowed.
    client.send(Packet::PubRel(ack(1))).await;
    assert_eq!(client.recv().await, Packet::PubComp(ack(1)));
    client
        .send(publish_packet("fc", b"x", QoS::ExactlyOnce, Some(1), false))
        .await;
    assert!(matches!(client.recv().await, Packet::PubRec(a) if a.packet_id == 1));
    // A re-sent PUBLISH (DUP) of an open exchange is the same exchange, not one more.
    let Packet::Publish(mut again) = publish_packet("fc", b"x", QoS::ExactlyOnce, Some(2), false)
    else {
        unreachable!()
    };
    again.dup = true;
    client.send(Packet::Publish(again)).await;
    assert!(matches!(client.recv().await, Packet::PubRec(a) if a.packet_id == 2));
    // One more new exchange: Receive Maximum + 1 unanswered.
    client
        .send(publish_packet(
            "fc",
            b"x",
            QoS::ExactlyOnce,
            Some(RECEIVE_MAXIMUM + 1),
            false,
        ))
        .await;
    expect_disconnect(client.recv_within(Duration::from_secs(5)).await, 0x93);
    client.expect_closed().await;
    broker.shutdown().await;
}

#[tokio::test]
async fn a_negative_pubrec_returns_quota_and_v3_clients_are_not_counted() {
    let broker =
        TestBroker::from_xml(&activemq_xml(&["transport.publishDollarTopics=false"], "")).await;
    let (mut client, _) = v5_client(&broker, "refused", Properties::default()).await;
    // Every one is refused (0x90, a `$` topic) and so answered at once: never outstanding.
    for id in 1..=(RECEIVE_MAXIMUM * 2) {
        client
            .send(publish_packet(
                "$x",
                b"x",
                QoS::ExactlyOnce,
                Some(id),
                false,
            ))
            .await;
        assert!(matches!(client.recv().await, Packet::PubRec(a) if a.reason == 0x90));
    }
    client.send(Packet::PingReq).await;
    assert_eq!(client.recv().await, Packet::PingResp);

    let (mut v3, _) = RawClient::connected(broker.addr, "v3", true).await;
    for id in 1..=(RECEIVE_MAXIMUM * 2) {
        v3.send(publish_packet(
            "fc3",
            b"x",
            QoS::ExactlyOnce,
            Some(id),
            false,
        ))
        .await;
        assert!(matches!(v3.recv().await, Packet::PubRec(_)));
    }
    v3.send(Packet::PingReq).await;
    assert_eq!(v3.recv().await, Packet::PingResp);
    broker.shutdown().await;
}

/// Acknowledgements the broker holds back (a publish held by producer flow control, the ones
/// read behind it) count as unanswered, as the client sees them; it is at fault only with one
/// more than Receive Maximum.
#[tokio::test]
async fn publishes_held_by_flow_control_count_until_answered() {
    let broker = TestBroker::from_xml(&activemq_xml(
        &[],
        r#"<systemUsage><systemUsage sendFailIfNoSpaceAfterTimeout="60000">
             <memoryUsage><memoryUsage limit="2 kb"/></memoryUsage>
           </systemUsage></systemUsage>"#,
    ))
    .await;
    // A persistent subscriber that acknowledges nothing keeps what is published, online or
    // offline: memory fills up.
    let (mut holder, _) =
        RawClient::connect(broker.addr, connect_v5("holder", true, Some(600))).await;
    holder.subscribe(1, &[("held", QoS::AtLeastOnce)]).await;
    drop(holder);

    let (mut publisher, _) = v5_client(&broker, "pub", Properties::default()).await;
    let payload = vec![b'x'; 400];
    let publish = |id: u16| publish_packet("held", &payload, QoS::AtLeastOnce, Some(id), false);
    let mut burst = BytesMut::new();
    for id in 1..=RECEIVE_MAXIMUM {
        encode(&publish(id), ProtocolVersion::V5, &mut burst).expect("encode");
    }
    publisher.send_raw(&burst).await;
    let mut answered = 0u16;
    while let Some(packet) = publisher.recv_within(QUIET).await {
        assert!(
            matches!(&packet, Packet::PubAck(a) if a.reason == 0),
            "{packet:?}"
        );
        answered += 1;
    }
    assert!(
        answered > 0 && answered < RECEIVE_MAXIMUM,
        "some admitted, then one held: {answered}"
    );
    // Topping the unanswered ones up to exactly Receive Maximum is allowed ...
    for id in RECEIVE_MAXIMUM + 1..=RECEIVE_MAXIMUM + answered {
        publisher.send(publish(id)).await;
    }
    assert!(
        publisher.recv_within(QUIET).await.is_none(),
        "still held, and not disconnected"
    );
    // ... one more is not.
    publisher
        .send(publish(RECEIVE_MAXIMUM + answered + 1))
        .await;
    expect_disconnect(publisher.recv_within(Duration::from_secs(5)).await, 0x93);
    broker.shutdown().await;
}

/// Acknowledgements waiting for the store's commit count until they leave, and return their
/// quota when they do.
#[tokio::test]
async fn acknowledgements_waiting_for_the_store_return_quota_when_sent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = TestBroker::from_xml(
        &activemq_xml(
            &[],
            &format!(
                r#"<persistenceAdapter><kahaDB directory="{}"/></persistenceAdapter>"#,
                dir.path().display()
            ),
        )
        .replace(r#"persistent="false""#, ""),
    )
    .await;
    let (mut holder, _) =
        RawClient::connect(broker.addr, connect_v5("keeper", true, Some(600))).await;
    holder.subscribe(1, &[("kept", QoS::AtLeastOnce)]).await;
    drop(holder);
    let (mut publisher, _) = v5_client(&broker, "durable-pub", Properties::default()).await;
    // Three rounds of exactly Receive Maximum pipelined in one write: each round's PUBACKs
    // return the quota for the next.
    for round in 0..3u16 {
        let mut burst = BytesMut::new();
        for n in 1..=RECEIVE_MAXIMUM {
            let id = round * RECEIVE_MAXIMUM + n;
            let packet = publish_packet("kept", b"x", QoS::AtLeastOnce, Some(id), false);
            encode(&packet, ProtocolVersion::V5, &mut burst).expect("encode");
        }
        publisher.send_raw(&burst).await;
        for _ in 0..RECEIVE_MAXIMUM {
            let packet = publisher.recv().await;
            assert!(
                matches!(&packet, Packet::PubAck(a) if a.reason == 0),
                "{packet:?}"
            );
        }
    }
    broker.shutdown().await;
}

// --- Server Keep Alive ------------------------------------------------------------------------

fn with_keep_alive(mut connect: Connect, secs: u16) -> Connect {
    connect.keep_alive_secs = secs;
    connect
}

fn server_keep_alive(connack: &ConnAck) -> Option<u16> {
    connack
        .properties
        .as_ref()
        .and_then(|p| p.server_keep_alive)
}

#[tokio::test]
async fn max_keep_alive_caps_v5_clients_and_is_announced() {
    let broker = TestBroker::with_uri_options(&["transport.maxKeepAlive=60000"]).await;
    for (asked, announced) in [(120, Some(60)), (0, Some(60)), (60, None), (30, None)] {
        let connect = with_keep_alive(connect_v5("ka", true, None), asked);
        let (_c, connack) = RawClient::connect_ok(broker.addr, connect).await;
        assert_eq!(
            server_keep_alive(&connack),
            announced,
            "client asked {asked}"
        );
    }
    broker.shutdown().await;
}

/// Paused time over an in-process pipe: the close times are exact.
#[tokio::test(start_paused = true)]
async fn the_announced_keep_alive_is_enforced() {
    let broker = TestBroker::with_uri_options(&[
        "transport.maxKeepAlive=2000",
        "transport.defaultKeepAlive=1000",
    ])
    .await;
    for (asked, announced, closed_after_ms) in [(120, 2, 3000), (0, 1, 1500)] {
        let connect = with_keep_alive(connect_v5("kav5", true, None), asked);
        let (mut c, connack) = RawClient::handshake(broker.duplex(), connect).await;
        assert_eq!(server_keep_alive(&connack), Some(announced));
        let start = tokio::time::Instant::now();
        expect_disconnect(c.recv_within(Duration::from_secs(10)).await, 0x8D);
        let elapsed = start.elapsed();
        let expected = Duration::from_millis(closed_after_ms);
        assert!(
            elapsed + Duration::from_millis(10) >= expected
                && elapsed <= expected + Duration::from_millis(10),
            "asked {asked}: closed after {elapsed:?}, expected {expected:?}"
        );
    }
    // An MQTT 3.1.1 client cannot be told: its own keep-alive stands (documented).
    let (mut v3, _) =
        RawClient::handshake(broker.duplex(), connect_packet("kav3", true, 120)).await;
    assert_eq!(v3.closed_within(Duration::from_secs(10)).await, None);
    broker.shutdown().await;
}

// --- Topic aliases towards the client ---------------------------------------------------------

/// Publish one message at `qos` (packet id 1) and complete the publisher's side.
async fn publish_acked(publisher: &mut RawClient, topic: &str, qos: QoS) {
    let id = (qos != QoS::AtMostOnce).then_some(1);
    publisher
        .send(publish_packet(topic, b"m", qos, id, false))
        .await;
    match qos {
        QoS::AtMostOnce => {}
        QoS::AtLeastOnce => assert_eq!(publisher.recv().await, Packet::PubAck(ack(1))),
        QoS::ExactlyOnce => {
            assert_eq!(publisher.recv().await, Packet::PubRec(ack(1)));
            publisher.send(Packet::PubRel(ack(1))).await;
            assert_eq!(publisher.recv().await, Packet::PubComp(ack(1)));
        }
    }
}

fn topic_alias(publish: &Publish) -> Option<u16> {
    publish.properties.as_ref().and_then(|p| p.topic_alias)
}

#[tokio::test]
async fn the_first_topics_get_aliases_that_end_with_the_connection() {
    let broker = TestBroker::default().await;
    let allows_one = Properties {
        topic_alias_maximum: Some(1),
        session_expiry_interval: Some(600),
        ..Properties::default()
    };
    let (mut sub, _) = v5_client(&broker, "aliased", allows_one.clone()).await;
    sub.subscribe(1, &[("al/#", QoS::ExactlyOnce)]).await;
    let (mut publisher, _) = v5_client(&broker, "pub", Properties::default()).await;
    // As paho's test_server_topic_alias: one topic at QoS 0, 1 and 2.
    for (n, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
        .into_iter()
        .enumerate()
    {
        publish_acked(&mut publisher, "al/a", qos).await;
        let got = sub.recv_publish().await;
        assert_eq!(topic_alias(&got), Some(1), "{got:?}");
        let expected_topic = if n == 0 { "al/a" } else { "" };
        assert_eq!(got.topic, expected_topic, "message {n}");
        match (got.qos, got.packet_id) {
            (QoS::AtLeastOnce, Some(id)) => sub.send(Packet::PubAck(ack(id))).await,
            (QoS::ExactlyOnce, Some(id)) => {
                sub.send(Packet::PubRec(ack(id))).await;
                assert_eq!(sub.recv().await, Packet::PubRel(ack(id)));
                sub.send(Packet::PubComp(ack(id))).await;
            }
            _ => {}
        }
    }
    // The only alias is taken: another topic goes out in full, without one.
    publish_acked(&mut publisher, "al/b", QoS::AtMostOnce).await;
    let other = sub.recv_publish().await;
    assert_eq!((other.topic.as_str(), topic_alias(&other)), ("al/b", None));
    drop(sub);

    // A new connection of the same session starts without aliases (MQTT 5 3.3.2-7).
    let mut resume = connect_with("aliased", allows_one);
    resume.clean_start = false;
    let (mut sub, connack) = RawClient::connect_ok(broker.addr, resume).await;
    assert!(connack.session_present);
    publish_acked(&mut publisher, "al/a", QoS::AtMostOnce).await;
    let fresh = sub.recv_publish().await;
    assert_eq!(
        (fresh.topic.as_str(), topic_alias(&fresh)),
        ("al/a", Some(1))
    );

    // A client that allows none gets none.
    let (mut plain, _) = v5_client(&broker, "plain", Properties::default()).await;
    plain.subscribe(1, &[("al/#", QoS::AtMostOnce)]).await;
    for _ in 0..2 {
        publish_acked(&mut publisher, "al/a", QoS::AtMostOnce).await;
        let got = plain.recv_publish().await;
        assert_eq!((got.topic.as_str(), topic_alias(&got)), ("al/a", None));
    }
    broker.shutdown().await;
}

/// The size compared with the client's Maximum Packet Size is the size of the PUBLISH as it is
/// sent, alias property included.
#[tokio::test]
async fn maximum_packet_size_counts_the_alias() {
    let broker = TestBroker::default().await;
    let payload = [b'p'; 20];
    let mut exact = BytesMut::new();
    let first_with_alias = Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: "size/t".into(),
        packet_id: None,
        payload: Bytes::copy_from_slice(&payload),
        properties: Some(Box::new(Properties {
            topic_alias: Some(1),
            ..Properties::default()
        })),
    });
    encode(&first_with_alias, ProtocolVersion::V5, &mut exact).expect("encode");
    let size = u32::try_from(exact.len()).expect("small");
    let (mut publisher, _) = v5_client(&broker, "pub", Properties::default()).await;
    for (id, maximum, delivered) in [("one-short", size - 1, false), ("exact", size, true)] {
        let limits = Properties {
            topic_alias_maximum: Some(4),
            maximum_packet_size: Some(maximum),
            ..Properties::default()
        };
        let (mut sub, _) = v5_client(&broker, id, limits).await;
        sub.subscribe(1, &[("size/t", QoS::AtMostOnce)]).await;
        publisher
            .send(publish_packet(
                "size/t",
                &payload,
                QoS::AtMostOnce,
                None,
                false,
            ))
            .await;
        let got = sub.recv_within(QUIET).await;
        assert_eq!(got.is_some(), delivered, "{id}: {got:?}");
        drop(sub);
    }
    broker.shutdown().await;
}

// --- Request Problem Information / Request Response Information ------------------------------

const SECURITY: &str = r#"
    <plugins>
      <simpleAuthenticationPlugin>
        <users>
          <authenticationUser username="dev" password="pw" groups="devices"/>
          <authenticationUser username="ops" password="pw" groups="operators"/>
        </users>
      </simpleAuthenticationPlugin>
      <authorizationPlugin><map><authorizationMap><authorizationEntries>
        <authorizationEntry topic="open.>" read="devices,operators" write="devices,operators" admin="devices,operators"/>
        <authorizationEntry topic="closed.>" read="admins" write="admins" admin="admins"/>
        <authorizationEntry topic="reply.>" read="operators" write="operators,devices" admin="operators"/>
      </authorizationEntries></authorizationMap></map></authorizationPlugin>
    </plugins>"#;

fn login(id: &str, user: &str, properties: Properties) -> Connect {
    let mut connect = connect_with(id, properties);
    connect.username = Some(user.into());
    connect.password = Some(Bytes::from_static(b"pw"));
    connect
}

#[tokio::test]
async fn request_problem_information_0_removes_reason_strings() {
    let broker = TestBroker::from_xml(&activemq_xml(&[], SECURITY)).await;
    for (id, asked, maximum_packet_size, reason_string) in [
        // Sent only on an explicit request (see docs/mqtt5-protocol.md).
        ("default", None, None, false),
        ("asked", Some(1), None, true),
        ("quiet", Some(0), None, false),
        // Asked, but the string would not fit the client's Maximum Packet Size (3.1.2-24).
        ("small", Some(1), Some(16), false),
    ] {
        let properties = Properties {
            request_problem_information: asked,
            maximum_packet_size,
            ..Properties::default()
        };
        let (mut client, _) =
            RawClient::connect_ok(broker.addr, login(id, "dev", properties)).await;
        client
            .send(publish_packet(
                "closed/x",
                b"x",
                QoS::AtLeastOnce,
                Some(1),
                false,
            ))
            .await;
        let Packet::PubAck(refusal) = client.recv().await else {
            panic!("expected PUBACK")
        };
        assert_eq!(refusal.reason, 0x87);
        let text = refusal.properties.and_then(|p| p.reason_string);
        assert_eq!(text.is_some(), reason_string, "{id}: {text:?}");
        // The packets allowed to carry it are untouched; success acks carry nothing anyway.
        client
            .send(publish_packet(
                "open/x",
                b"x",
                QoS::AtLeastOnce,
                Some(2),
                false,
            ))
            .await;
        assert_eq!(client.recv().await, Packet::PubAck(ack(2)));
    }
    broker.shutdown().await;
}

fn response_information(connack: &ConnAck) -> Option<&str> {
    connack
        .properties
        .as_ref()
        .and_then(|p| p.response_information.as_deref())
}

#[tokio::test]
async fn response_information_is_a_reply_prefix_the_client_may_read() {
    let broker = TestBroker::from_xml(&activemq_xml(&[], SECURITY)).await;
    let asks = || Properties {
        request_response_information: Some(1),
        ..Properties::default()
    };
    // Allowed to read reply.>: told its prefix, and can use it.
    let (mut ops, connack) = RawClient::connect_ok(broker.addr, login("op1", "ops", asks())).await;
    assert_eq!(response_information(&connack), Some("reply/op1/"));
    assert_eq!(
        ops.subscribe(1, &[("reply/op1/#", QoS::AtLeastOnce)]).await,
        [1]
    );
    // Not asked: not given.
    let (_quiet, connack) =
        RawClient::connect_ok(broker.addr, login("op2", "ops", Properties::default())).await;
    assert_eq!(response_information(&connack), None);
    // Asked, but the policy does not let it read there: not given (a promise it could not use).
    let (_dev, connack) = RawClient::connect_ok(broker.addr, login("dev1", "dev", asks())).await;
    assert_eq!(response_information(&connack), None);
    // A client id that is no valid topic level: not given.
    let (_odd, connack) = RawClient::connect_ok(broker.addr, login("a+b", "ops", asks())).await;
    assert_eq!(response_information(&connack), None);
    broker.shutdown().await;

    // Without authorization every client may read it.
    let open = TestBroker::default().await;
    let (_c, connack) = v5_client(&open, "anyone", asks()).await;
    assert_eq!(response_information(&connack), Some("reply/anyone/"));
    open.shutdown().await;
}

// --- Unsupported protocol levels --------------------------------------------------------------

/// A CONNECT with protocol `name` and `level`, clean start, no payload but an empty client id.
fn raw_connect(name: &[u8], level: u8) -> Vec<u8> {
    let mut body = vec![0, name.len() as u8];
    body.extend_from_slice(name);
    body.extend_from_slice(&[level, 2, 0, 0, 0, 0]);
    let mut frame = vec![0x10, body.len() as u8];
    frame.extend(body);
    frame
}

/// Everything the broker sends before it closes the connection.
async fn answer_to(broker: &TestBroker, connect: &[u8]) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut client = RawClient::tcp(broker.addr).await;
    client.send_raw(connect).await;
    let mut answer = Vec::new();
    tokio::time::timeout(
        Duration::from_secs(5),
        client.stream.read_to_end(&mut answer),
    )
    .await
    .expect("the broker closes the connection")
    .expect("read");
    answer
}

#[tokio::test]
async fn newer_protocol_levels_get_connack_0x84_in_v5_form() {
    let broker = TestBroker::default().await;
    for level in [6, 99, 255] {
        // CONNACK, remaining length 3: flags 0, reason 0x84, no properties.
        assert_eq!(
            answer_to(&broker, &raw_connect(b"MQTT", level)).await,
            [0x20, 0x03, 0x00, 0x84, 0x00],
            "level {level}"
        );
    }
    // MQTT 3 form (return code 1) for what a 3.x client may send: other levels under the
    // 3.1.1 name below 5, and the 3.1 name with another level.
    for (name, level) in [
        (&b"MQTT"[..], 3),
        (b"MQTT", 2),
        (b"MQIsdp", 4),
        (b"MQIsdp", 6),
    ] {
        assert_eq!(
            answer_to(&broker, &raw_connect(name, level)).await,
            [0x20, 0x02, 0x00, 0x01],
            "{} level {level}",
            String::from_utf8_lossy(name)
        );
    }
    // Served levels still work.
    let (_c, connack) = RawClient::connect_ok(broker.addr, connect_v5("five", true, None)).await;
    assert_eq!(connack.reason, ConnectReason::Success);
    broker.shutdown().await;
}

/// A PUBREL after a refused QoS 2 PUBLISH (PUBREC >= 0x80 ends the exchange, MQTT 5 4.3.3;
/// paho-mqtt 2.2 sends one anyway) is answered PUBCOMP 0x92 Packet Identifier not found,
/// never 0x00: a client reporting its PUBCOMP's reason must not report success for a message
/// nobody gets. The id used again for an accepted PUBLISH completes with 0x00 as usual, and a
/// PUBREL for an id never used keeps its old answer (0x00: a PUBREL repeated after a lost
/// PUBCOMP is not told "failed").
#[tokio::test]
async fn a_pubrel_for_a_refused_qos2_publish_gets_pubcomp_packet_identifier_not_found() {
    let broker =
        TestBroker::from_xml(&activemq_xml(&["transport.publishDollarTopics=false"], "")).await;
    let (mut client, _) = v5_client(&broker, "refused-rel", Properties::default()).await;
    client
        .send(publish_packet("$x", b"x", QoS::ExactlyOnce, Some(7), false))
        .await;
    assert!(matches!(client.recv().await, Packet::PubRec(a) if a.reason == 0x90));
    client.send(Packet::PubRel(Ack::new(7))).await;
    expect_pubcomp(&mut client, 7, 0x92).await;
    // Answered once: the refusal is forgotten with it.
    client.send(Packet::PubRel(Ack::new(7))).await;
    expect_pubcomp(&mut client, 7, 0x00).await;
    // Refused, then used again for an accepted PUBLISH: that exchange completes normally.
    client
        .send(publish_packet("$x", b"x", QoS::ExactlyOnce, Some(8), false))
        .await;
    assert!(matches!(client.recv().await, Packet::PubRec(a) if a.reason == 0x90));
    client
        .send(publish_packet(
            "ok/x",
            b"y",
            QoS::ExactlyOnce,
            Some(8),
            false,
        ))
        .await;
    assert!(matches!(client.recv().await, Packet::PubRec(a) if a.reason == 0x00));
    client.send(Packet::PubRel(Ack::new(8))).await;
    expect_pubcomp(&mut client, 8, 0x00).await;
    broker.shutdown().await;
}

/// The next packet is PUBCOMP for `packet_id` with reason code `reason`.
async fn expect_pubcomp(client: &mut RawClient, packet_id: u16, reason: u8) {
    match client.recv().await {
        Packet::PubComp(a) => assert_eq!((a.packet_id, a.reason), (packet_id, reason)),
        other => panic!("expected PUBCOMP, got {other:?}"),
    }
}
