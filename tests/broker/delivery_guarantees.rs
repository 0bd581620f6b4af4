//! A PUBACK/PUBREC is a promise: a message the broker acknowledged is never lost. Offline
//! persistent sessions are bounded by the broker-wide limits, not by a message count; a full
//! memory or store pauses the publisher (producer flow control) instead of acknowledging
//! what it cannot keep; a taken-over connection's will is published as MQTT says.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use crate::support::{
    ack, activemq_xml, connect_packet, connect_v5, publish_packet, will, RawClient, TestBroker,
    STEP,
};
use bytes::Bytes;
use ferromq::protocol::{Disconnect, LastWill, Packet, Properties, QoS};

/// Messages sent to an offline session: five times the default pending-message limit.
const OFFLINE_MESSAGES: u32 = 5000;

fn durable_xml(store: &std::path::Path, broker_children: &str) -> String {
    activemq_xml(&[], broker_children).replace(
        r#"persistent="false">"#,
        &format!(
            r#"persistent="true"><persistenceAdapter><kahaDB directory="{}"/></persistenceAdapter>"#,
            store.display()
        ),
    )
}

async fn disconnect(client: &mut RawClient) {
    client
        .send(Packet::Disconnect(Disconnect {
            reason: 0,
            properties: None,
        }))
        .await;
    client.expect_closed().await;
}

/// A persistent subscriber to `filter` at QoS 1, offline again.
async fn offline_subscriber(addr: SocketAddr, id: &str, filter: &str) {
    let (mut sub, _) = RawClient::connected(addr, id, false).await;
    sub.subscribe(1, &[(filter, QoS::AtLeastOnce)]).await;
    disconnect(&mut sub).await;
}

/// Publish `count` numbered QoS 1 messages on `topic`, up to `window` unacknowledged; every
/// one must be acknowledged.
async fn publish_numbered(client: &mut RawClient, topic: &str, count: u32, window: u32) {
    let mut acked = 0;
    let mut sent = 0;
    while acked < count {
        while sent < count && sent - acked < window {
            let id = (sent % 60_000 + 1) as u16;
            let payload = sent.to_be_bytes();
            client
                .send(publish_packet(
                    topic,
                    &payload,
                    QoS::AtLeastOnce,
                    Some(id),
                    false,
                ))
                .await;
            sent += 1;
        }
        match client.recv().await {
            Packet::PubAck(_) => acked += 1,
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }
}

/// Reconnect persistent session `id` and take `count` QoS 1 messages, acknowledging each;
/// returns their numbers.
async fn drain(addr: SocketAddr, id: &str, count: u32) -> BTreeSet<u32> {
    let (mut sub, connack) = RawClient::connected(addr, id, false).await;
    assert!(connack.session_present);
    let mut seen = BTreeSet::new();
    for _ in 0..count {
        let p = sub.recv_publish().await;
        let number = u32::from_be_bytes(p.payload[..4].try_into().expect("numbered payload"));
        seen.insert(number);
        sub.send(Packet::PubAck(ack(p.packet_id.expect("QoS 1 id"))))
            .await;
    }
    assert!(
        sub.recv_within(Duration::from_millis(200)).await.is_none(),
        "nothing beyond what was published"
    );
    seen
}

async fn offline_session_keeps_every_acknowledged_message(broker: TestBroker) {
    offline_subscriber(broker.addr, "sub", "d/#").await;
    let (mut publisher, _) = RawClient::connected(broker.addr, "pub", true).await;
    publish_numbered(&mut publisher, "d/x", OFFLINE_MESSAGES, 100).await;
    let seen = drain(broker.addr, "sub", OFFLINE_MESSAGES).await;
    assert_eq!(seen, (0..OFFLINE_MESSAGES).collect());
    assert_eq!(broker.handle.counters().dropped_queue_full, 0);
    broker.shutdown().await;
}

#[tokio::test]
async fn offline_session_gets_all_5000_messages_without_a_store() {
    let broker = TestBroker::from_xml(&activemq_xml(&[], "")).await;
    offline_session_keeps_every_acknowledged_message(broker).await;
}

#[tokio::test]
async fn offline_session_gets_all_5000_messages_with_a_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = TestBroker::from_xml(&durable_xml(&dir.path().join("kahadb"), "")).await;
    offline_session_keeps_every_acknowledged_message(broker).await;
}

async fn will_watcher(addr: SocketAddr) -> RawClient {
    let (mut watcher, _) = RawClient::connected(addr, "watcher", true).await;
    watcher.subscribe(1, &[("w/t", QoS::AtMostOnce)]).await;
    watcher
}

/// Whether the watcher gets the will "gone" within `within`.
async fn will_arrives(watcher: &mut RawClient, within: Duration) -> bool {
    match watcher.recv_within(within).await {
        Some(Packet::Publish(p)) => {
            assert_eq!(&p.payload[..], b"gone");
            true
        }
        None => false,
        Some(other) => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn mqtt311_takeover_publishes_the_old_connections_will() {
    let broker = TestBroker::from_xml(&activemq_xml(&[], "")).await;
    let mut watcher = will_watcher(broker.addr).await;
    let mut first = connect_packet("X", true, 0);
    first.will = Some(will("w/t", b"gone", QoS::AtMostOnce, false));
    let (mut a, _) = RawClient::connect(broker.addr, first).await;
    let (_b, _) = RawClient::connected(broker.addr, "X", true).await;
    a.expect_closed().await;
    assert!(
        will_arrives(&mut watcher, STEP).await,
        "will after takeover"
    );
    broker.shutdown().await;
}

fn v5_will(delay_secs: u32) -> LastWill {
    LastWill {
        topic: "w/t".into(),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: (delay_secs > 0).then(|| {
            Box::new(Properties {
                will_delay_interval: Some(delay_secs),
                ..Properties::default()
            })
        }),
    }
}

/// MQTT 5 takeover of `X` (session expiry 60 s, will delayed `delay_secs`) by a connection
/// with `clean_start`: whether the will is published now.
async fn v5_takeover_publishes_will(delay_secs: u32, clean_start: bool) -> bool {
    let broker = TestBroker::from_xml(&activemq_xml(&[], "")).await;
    let mut watcher = will_watcher(broker.addr).await;
    let mut first = connect_v5("X", true, Some(60));
    first.will = Some(v5_will(delay_secs));
    let (mut a, _) = RawClient::connect(broker.addr, first).await;
    let (_b, _) = RawClient::connect(broker.addr, connect_v5("X", clean_start, Some(60))).await;
    // The old connection is told why (DISCONNECT 0x8E) and closed.
    match a.recv().await {
        Packet::Disconnect(d) => assert_eq!(d.reason, 0x8E),
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
    let published = will_arrives(&mut watcher, Duration::from_millis(700)).await;
    broker.shutdown().await;
    published
}

#[tokio::test]
async fn mqtt5_takeover_will_rules() {
    assert!(
        v5_takeover_publishes_will(0, false).await,
        "no will delay: published at the takeover"
    );
    assert!(
        !v5_takeover_publishes_will(30, false).await,
        "will delay and the session continues: not published (MQTT 5 3.1.3-9)"
    );
    assert!(
        v5_takeover_publishes_will(30, true).await,
        "will delay but Clean Start 1: the old session ended, published now"
    );
}

/// PUBACK of `id` within `within`, or `None`. Panics on anything but a PUBACK or a PINGRESP.
async fn puback_within(client: &mut RawClient, within: Duration) -> Option<u8> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match client.recv_within(left).await {
            Some(Packet::PubAck(a)) => return Some(a.reason),
            Some(Packet::PingResp) => {}
            None => return None,
            Some(other) => panic!("unexpected {other:?}"),
        }
    }
}

/// Publish numbered 1 KiB QoS 1 messages on `topic`, each awaiting its PUBACK for `wait`,
/// until one is not acknowledged (held by a broker-wide limit); how many were.
async fn publish_until_held(client: &mut RawClient, topic: &str, wait: Duration) -> u32 {
    let payload = vec![b'x'; 1024];
    let mut acked = 0u32;
    loop {
        let mut numbered = acked.to_be_bytes().to_vec();
        numbered.extend_from_slice(&payload);
        let id = (acked % 60_000 + 1) as u16;
        client
            .send(publish_packet(
                topic,
                &numbered,
                QoS::AtLeastOnce,
                Some(id),
                false,
            ))
            .await;
        if puback_within(client, wait).await.is_none() {
            return acked;
        }
        acked += 1;
        assert!(acked < 1000, "the limit never held a publish");
    }
}

const STORE_LIMIT: &str = r#"<systemUsage><systemUsage>
    <storeUsage><storeUsage limit="64 kb"/></storeUsage>
  </systemUsage></systemUsage>"#;

#[tokio::test]
async fn a_full_store_pauses_an_mqtt311_publisher_until_the_subscriber_drains() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = TestBroker::from_xml(&durable_xml(&dir.path().join("kahadb"), STORE_LIMIT)).await;
    offline_subscriber(broker.addr, "sub", "d/#").await;
    let (mut publisher, _) = RawClient::connected(broker.addr, "pub", true).await;
    let acked = publish_until_held(&mut publisher, "d/x", Duration::from_millis(500)).await;
    assert!(acked > 10, "only {acked} messages fit in 64 kb");
    assert!(broker.handle.counters().refused_store_full >= 1);
    // Paused, not cut off: its other packets are still answered, its keep-alive holds.
    publisher.send(Packet::PingReq).await;
    assert!(matches!(publisher.recv().await, Packet::PingResp));
    assert_eq!(
        puback_within(&mut publisher, Duration::from_millis(300)).await,
        None,
        "not acknowledged while the store is full"
    );

    // The subscriber drains: the held message is kept and acknowledged, and delivered.
    let (mut sub, _) = RawClient::connected(broker.addr, "sub", false).await;
    let mut seen = BTreeSet::new();
    let mut held_acked = false;
    while seen.len() < acked as usize + 1 {
        tokio::select! {
            p = sub.recv_within(STEP) => {
                let Some(Packet::Publish(p)) = p else { panic!("delivery expected, got {p:?}") };
                seen.insert(u32::from_be_bytes(p.payload[..4].try_into().expect("numbered")));
                sub.send(Packet::PubAck(ack(p.packet_id.expect("id")))).await;
            }
            a = puback_within(&mut publisher, STEP), if !held_acked => {
                assert_eq!(a, Some(0), "the held publish is acknowledged once there is room");
                held_acked = true;
            }
        }
    }
    if !held_acked {
        assert_eq!(puback_within(&mut publisher, STEP).await, Some(0));
    }
    assert_eq!(seen, (0..=acked).collect());
    broker.shutdown().await;
}

#[tokio::test]
async fn a_full_store_refuses_an_mqtt5_publish_with_quota_exceeded_after_the_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let limits = STORE_LIMIT.replace(
        "<systemUsage><systemUsage>",
        r#"<systemUsage><systemUsage sendFailIfNoSpaceAfterTimeout="300">"#,
    );
    let broker = TestBroker::from_xml(&durable_xml(&dir.path().join("kahadb"), &limits)).await;
    offline_subscriber(broker.addr, "sub", "d/#").await;
    let (mut publisher, _) = RawClient::connect(broker.addr, connect_v5("pub5", true, None)).await;
    let payload = vec![b'x'; 1024];
    for id in 1..=1000u16 {
        publisher
            .send(publish_packet(
                "d/x",
                &payload,
                QoS::AtLeastOnce,
                Some(id),
                false,
            ))
            .await;
        match puback_within(&mut publisher, STEP).await {
            Some(0) => {}
            Some(0x97) => {
                broker.shutdown().await;
                return;
            }
            other => panic!("PUBACK {id}: {other:?}"),
        }
    }
    panic!("the store limit never refused a publish");
}

#[tokio::test]
async fn a_client_that_publishes_to_itself_while_paused_does_not_deadlock() {
    const MESSAGES: u32 = 1500;
    let broker = TestBroker::from_xml(&activemq_xml(
        &[],
        r#"<systemUsage><systemUsage>
             <memoryUsage><memoryUsage limit="16 kb"/></memoryUsage>
           </systemUsage></systemUsage>"#,
    ))
    .await;
    let (mut client, _) = RawClient::connected(broker.addr, "self", false).await;
    client.subscribe(1, &[("self/#", QoS::AtLeastOnce)]).await;
    let payload = vec![b'y'; 1024];
    let mut sent = 0u32;
    let mut acked = 0u32;
    let mut received = BTreeSet::new();
    tokio::time::timeout(Duration::from_secs(60), async {
        while acked < MESSAGES || (received.len() as u32) < MESSAGES {
            while sent < MESSAGES && sent - acked < 40 {
                let mut numbered = sent.to_be_bytes().to_vec();
                numbered.extend_from_slice(&payload);
                let id = (sent % 30_000 + 1) as u16;
                client
                    .send(publish_packet(
                        "self/x",
                        &numbered,
                        QoS::AtLeastOnce,
                        Some(id),
                        false,
                    ))
                    .await;
                sent += 1;
            }
            match client.recv().await {
                Packet::PubAck(_) => acked += 1,
                Packet::Publish(p) => {
                    received.insert(u32::from_be_bytes(p.payload[..4].try_into().expect("n")));
                    client
                        .send(Packet::PubAck(ack(p.packet_id.expect("id"))))
                        .await;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await
    .expect("publishing to itself under a full memory must not deadlock");
    assert_eq!(received, (0..MESSAGES).collect());
    assert!(
        broker.handle.counters().refused_memory_full > 0,
        "the memory limit was never reached: the test proves nothing"
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn send_fail_if_no_space_closes_an_mqtt311_publisher_with_its_will() {
    let broker = TestBroker::from_xml(&activemq_xml(
        &[],
        r#"<systemUsage><systemUsage sendFailIfNoSpace="true">
             <memoryUsage><memoryUsage limit="8 kb"/></memoryUsage>
           </systemUsage></systemUsage>"#,
    ))
    .await;
    offline_subscriber(broker.addr, "sub", "d/#").await;
    let mut watcher = will_watcher(broker.addr).await;
    let mut connect = connect_packet("pub", true, 0);
    connect.will = Some(will("w/t", b"gone", QoS::AtMostOnce, false));
    let (mut publisher, _) = RawClient::connect(broker.addr, connect).await;
    let payload = vec![b'z'; 1024];
    let mut closed = false;
    for id in 1..=100u16 {
        publisher
            .send(publish_packet(
                "d/x",
                &payload,
                QoS::AtLeastOnce,
                Some(id),
                false,
            ))
            .await;
        match publisher.recv_within(STEP).await {
            Some(Packet::PubAck(a)) => assert_eq!(a.packet_id, id),
            None => {
                closed = true;
                break;
            }
            Some(other) => panic!("unexpected {other:?}"),
        }
    }
    assert!(closed, "the memory limit never closed the publisher");
    assert!(
        will_arrives(&mut watcher, STEP).await,
        "its will is published"
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn a_held_qos2_publish_resent_after_a_reconnect_is_routed_not_taken_for_a_duplicate() {
    let broker = TestBroker::from_xml(&activemq_xml(
        &[],
        r#"<systemUsage><systemUsage>
             <memoryUsage><memoryUsage limit="8 kb"/></memoryUsage>
           </systemUsage></systemUsage>"#,
    ))
    .await;
    offline_subscriber(broker.addr, "sub", "d/#").await;
    // Fill memory with messages for the offline subscriber until a publish is held.
    let (mut filler, _) = RawClient::connected(broker.addr, "filler", true).await;
    let filled = publish_until_held(&mut filler, "d/fill", Duration::from_millis(300)).await;
    drop(filler);

    // A QoS 2 publish from a persistent session is held; its client goes away unanswered.
    let (mut q2, _) = RawClient::connected(broker.addr, "q2", false).await;
    q2.send(publish_packet(
        "d/q2",
        b"exactly-once",
        QoS::ExactlyOnce,
        Some(9),
        false,
    ))
    .await;
    assert!(
        q2.recv_within(Duration::from_millis(300)).await.is_none(),
        "held: no PUBREC"
    );
    drop(q2);

    // The subscriber drains, which frees the memory.
    let (mut sub, _) = RawClient::connected(broker.addr, "sub", false).await;
    for _ in 0..filled {
        let p = sub.recv_publish().await;
        sub.send(Packet::PubAck(ack(p.packet_id.expect("id"))))
            .await;
    }
    // The client re-sends its unacknowledged PUBLISH (DUP) after reconnecting (MQTT 4.4): it is
    // routed, not acknowledged as a duplicate of a message the broker never kept.
    let (mut q2, ack_q2) = RawClient::connected(broker.addr, "q2", false).await;
    assert!(ack_q2.session_present);
    let mut resent = publish_packet("d/q2", b"exactly-once", QoS::ExactlyOnce, Some(9), false);
    if let Packet::Publish(p) = &mut resent {
        p.dup = true;
    }
    q2.send(resent).await;
    assert!(matches!(q2.recv().await, Packet::PubRec(a) if a.packet_id == 9));
    q2.send(Packet::PubRel(ack(9))).await;
    assert!(matches!(q2.recv().await, Packet::PubComp(a) if a.packet_id == 9));
    let delivered = sub.recv_publish().await;
    assert_eq!(&delivered.payload[..], b"exactly-once");
    broker.shutdown().await;
}
