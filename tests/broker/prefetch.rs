//! The outbound in-flight window of MQTT subscribers: `transport.activeMQSubscriptionPrefetch`
//! on the connector (ActiveMQ's prefetch of the consumer behind an MQTT subscription), 100 by
//! default; messages past it wait in the session's queue until the client acknowledges.

use std::time::Duration;

use crate::support::{ack, publish_packet, RawClient, TestBroker};
use ferromq::protocol::{Packet, Publish, QoS};

const QUIET: Duration = Duration::from_millis(300);

/// Publishes `count` QoS 1 messages on `topic` and waits for their PUBACKs.
async fn publish_qos1(broker: &TestBroker, topic: &str, count: u16) {
    let (mut publisher, _) = RawClient::connected(broker.addr, "prefetch-pub", true).await;
    for id in 1..=count {
        publisher
            .send(publish_packet(
                topic,
                b"m",
                QoS::AtLeastOnce,
                Some(id),
                false,
            ))
            .await;
    }
    let mut acked = 0;
    while acked < count {
        match publisher.recv_within(Duration::from_secs(5)).await {
            Some(Packet::PubAck(_)) => acked += 1,
            other => panic!("expected PUBACK {acked}, got {other:?}"),
        }
    }
}

/// Reads PUBLISHes until none comes within [`QUIET`], without acknowledging any.
async fn unacknowledged_deliveries(sub: &mut RawClient) -> Vec<Publish> {
    let mut got = Vec::new();
    while let Some(packet) = sub.recv_within(QUIET).await {
        match packet {
            Packet::Publish(p) => got.push(p),
            other => panic!("unexpected {other:?}"),
        }
    }
    got
}

#[tokio::test]
async fn the_connector_prefetch_caps_unacknowledged_deliveries_and_acks_release_more() {
    let broker = TestBroker::with_uri_options(&["transport.activeMQSubscriptionPrefetch=3"]).await;
    let (mut sub, _) = RawClient::connected(broker.addr, "prefetch-sub", true).await;
    sub.subscribe(1, &[("pf/a", QoS::AtLeastOnce)]).await;
    publish_qos1(&broker, "pf/a", 10).await;

    let first = unacknowledged_deliveries(&mut sub).await;
    assert_eq!(first.len(), 3, "three in flight, the rest queued");
    for p in &first[..2] {
        sub.send(Packet::PubAck(ack(p.packet_id.expect("QoS 1 id"))))
            .await;
    }
    let next = unacknowledged_deliveries(&mut sub).await;
    assert_eq!(next.len(), 2, "two acknowledged, two more sent");
    // In order, each message once.
    let payload_ids: Vec<u16> = first
        .iter()
        .chain(&next)
        .map(|p| p.packet_id.expect("QoS 1 id"))
        .collect();
    let mut unique = payload_ids.clone();
    unique.dedup();
    assert_eq!(unique.len(), 5, "{payload_ids:?}");
    broker.shutdown().await;
}

#[tokio::test]
async fn without_the_option_a_subscriber_gets_100_messages_in_flight() {
    let broker = TestBroker::default().await;
    let (mut sub, _) = RawClient::connected(broker.addr, "prefetch-default", true).await;
    sub.subscribe(1, &[("pf/b", QoS::AtLeastOnce)]).await;
    publish_qos1(&broker, "pf/b", 130).await;
    assert_eq!(unacknowledged_deliveries(&mut sub).await.len(), 100);
    broker.shutdown().await;
}

#[tokio::test]
async fn a_real_client_receives_everything_through_a_small_prefetch() {
    let broker = TestBroker::with_uri_options(&["transport.activeMQSubscriptionPrefetch=1"]).await;
    let mut options =
        rumqttc::MqttOptions::new("prefetch-rumqttc", "127.0.0.1", broker.addr.port());
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut events) = rumqttc::AsyncClient::new(options, 64);
    client
        .subscribe("pf/c", rumqttc::QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    let (subscribed_tx, subscribed) = tokio::sync::oneshot::channel();
    let received = tokio::spawn(async move {
        let mut subscribed_tx = Some(subscribed_tx);
        let mut payloads = Vec::new();
        while payloads.len() < 50 {
            match events.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                    payloads.push(p.payload.to_vec())
                }
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                    if let Some(tx) = subscribed_tx.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(_) => {}
                Err(e) => panic!("subscriber: {e}"),
            }
        }
        payloads
    });
    tokio::time::timeout(Duration::from_secs(5), subscribed)
        .await
        .expect("SUBACK within 5 s")
        .expect("subscriber task alive");
    let (mut publisher, _) = RawClient::connected(broker.addr, "prefetch-pub-c", true).await;
    for i in 0..50u16 {
        publisher
            .send(publish_packet(
                "pf/c",
                &i.to_be_bytes(),
                QoS::AtLeastOnce,
                Some(i + 1),
                false,
            ))
            .await;
    }
    let payloads = tokio::time::timeout(Duration::from_secs(10), received)
        .await
        .expect("50 messages within 10 s through a window of 1")
        .expect("subscriber task");
    let expected: Vec<Vec<u8>> = (0..50u16).map(|i| i.to_be_bytes().to_vec()).collect();
    assert_eq!(payloads, expected, "every message once, in order");
    broker.shutdown().await;
}
