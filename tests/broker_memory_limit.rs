//! The `memoryUsage` limit: with a tiny limit and an offline persistent subscriber, QoS 1
//! publishes are accepted until the messages held reach the limit, then the publisher is paused
//! (its publish held, not acknowledged, counted, logged with the limit and the usage; its other
//! packets still answered) and QoS 0 publishes of other clients dropped; once the subscriber
//! reconnects and drains its queue, the held publish is kept and acknowledged.
//!
//! Its own test binary: it captures the log, and tracing caches per-callsite interest
//! process-wide (see security_auth_logging.rs).

mod support;

use support::logs::Logs;

use std::time::Duration;

use ferromq::broker::routing::memory::MESSAGE_OVERHEAD_BYTES;
use ferromq::protocol::{Disconnect, Packet, QoS};
use support::{ack, activemq_xml, publish_packet, RawClient, TestBroker};

const PAYLOAD_BYTES: usize = 400;
const TOPIC: &str = "mem";

async fn publish_qos1(client: &mut RawClient, id: u16, payload: &[u8]) -> bool {
    client
        .send(publish_packet(
            TOPIC,
            payload,
            QoS::AtLeastOnce,
            Some(id),
            false,
        ))
        .await;
    match client.recv_within(Duration::from_millis(400)).await {
        Some(Packet::PubAck(a)) => {
            assert_eq!(a.packet_id, id);
            true
        }
        None => false,
        Some(other) => panic!("unexpected {other:?}"),
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_full_memory_refuses_publishes_until_the_subscriber_drains() {
    let (captured, _guard) = Logs::capture_at(tracing::Level::INFO);

    let limit_bytes = 2048u64;
    let broker = TestBroker::from_xml(&activemq_xml(
        &[],
        r#"<systemUsage><systemUsage>
             <memoryUsage><memoryUsage limit="2 kb"/></memoryUsage>
           </systemUsage></systemUsage>"#,
    ))
    .await;
    let (mut sub, _) = RawClient::connected(broker.addr, "sub", false).await;
    sub.subscribe(1, &[(TOPIC, QoS::AtLeastOnce)]).await;
    sub.send(Packet::Disconnect(Disconnect {
        reason: 0,
        properties: None,
    }))
    .await;
    sub.expect_closed().await;

    let (mut publisher, _) = RawClient::connected(broker.addr, "pub", true).await;
    let payload = vec![b'x'; PAYLOAD_BYTES];
    let per_message = (TOPIC.len() + PAYLOAD_BYTES) as u64 + MESSAGE_OVERHEAD_BYTES;
    let fit = limit_bytes.div_ceil(per_message) as u16;
    for id in 1..=fit {
        assert!(
            publish_qos1(&mut publisher, id, &payload).await,
            "message {id} fits"
        );
    }
    assert!(
        !publish_qos1(&mut publisher, 100, &payload).await,
        "the limit is reached"
    );
    let counters = broker.handle.counters();
    assert_eq!(counters.refused_memory_full, 1);
    publisher.send(Packet::PingReq).await;
    assert!(
        matches!(publisher.recv().await, Packet::PingResp),
        "paused, not cut off"
    );
    // Another client's QoS 0 publish is dropped while memory is full.
    let (mut qos0, _) = RawClient::connected(broker.addr, "qos0", true).await;
    qos0.send(publish_packet(
        TOPIC,
        &payload,
        QoS::AtMostOnce,
        None,
        false,
    ))
    .await;
    qos0.send(Packet::PingReq).await;
    assert!(matches!(qos0.recv().await, Packet::PingResp));
    assert_eq!(broker.handle.counters().dropped_memory_full, 1);

    let logs = captured.text();
    assert!(logs.contains("WARN"), "{logs}");
    assert!(logs.contains("memoryUsage limit"), "{logs}");
    assert!(
        logs.contains(&format!("limit_bytes={limit_bytes}")),
        "{logs}"
    );
    assert!(logs.contains("used_bytes="), "{logs}");

    // Drain: the subscriber takes and acknowledges what was held; then the held publish is
    // admitted, acknowledged and delivered; the dropped QoS 0 message never comes.
    let (mut sub, _) = RawClient::connected(broker.addr, "sub", false).await;
    for _ in 0..=fit {
        let p = sub.recv_publish().await;
        assert_eq!(p.qos, QoS::AtLeastOnce);
        sub.send(Packet::PubAck(ack(p.packet_id.expect("QoS 1 id"))))
            .await;
    }
    assert!(
        matches!(publisher.recv().await, Packet::PubAck(a) if a.packet_id == 100),
        "the held publish is acknowledged once there is room"
    );
    assert!(
        sub.recv_within(Duration::from_millis(300)).await.is_none(),
        "the dropped QoS 0 message was not delivered"
    );
    support::settle().await;
    assert!(
        publish_qos1(&mut publisher, 200, &payload).await,
        "accepted again once drained"
    );
    assert_eq!(&sub.recv_publish().await.payload[..], &payload[..]);
    broker.shutdown().await;
}
