//! Publish/subscribe through a real broker with rumqttc: each QoS, QoS downgrade, overlapping
//! subscriptions, unsubscribe, `$` topics.

use std::time::Duration;

use crate::support::{Client, RawClient, TestBroker};
use ferromq::protocol::{Packet, QoS};
use rumqttc::QoS as Q;

#[tokio::test]
async fn basic_pub_sub_at_each_qos() {
    let broker = TestBroker::default().await;
    let mut sub = Client::connect(broker.addr, "sub").await;
    let mut publ = Client::connect(broker.addr, "pub").await;
    for (i, qos) in [Q::AtMostOnce, Q::AtLeastOnce, Q::ExactlyOnce]
        .into_iter()
        .enumerate()
    {
        let topic = format!("qos/{i}");
        sub.subscribe(&topic, qos).await;
        publ.publish(&topic, qos, false, format!("m{i}").as_bytes())
            .await;
        let got = sub.next_publish().await;
        assert_eq!(got.topic, topic);
        assert_eq!(&got.payload[..], format!("m{i}").as_bytes());
        assert_eq!(got.qos, qos);
        assert!(!got.retain);
    }
    let counters = broker.handle.counters();
    assert_eq!(counters.messages_in, 3);
    assert_eq!(counters.messages_out, 3);
    sub.disconnect().await;
    publ.disconnect().await;
    broker.shutdown().await;
}

#[tokio::test]
async fn outbound_qos_is_the_minimum_of_publish_and_subscription() {
    let broker = TestBroker::default().await;
    let mut sub = Client::connect(broker.addr, "sub").await;
    let mut publ = Client::connect(broker.addr, "pub").await;
    sub.subscribe("down/1", Q::AtLeastOnce).await;
    sub.subscribe("down/0", Q::AtMostOnce).await;
    publ.publish("down/1", Q::ExactlyOnce, false, b"a").await;
    assert_eq!(sub.next_publish().await.qos, Q::AtLeastOnce);
    publ.publish("down/0", Q::ExactlyOnce, false, b"b").await;
    assert_eq!(sub.next_publish().await.qos, Q::AtMostOnce);
    publ.publish("down/1", Q::AtMostOnce, false, b"c").await;
    assert_eq!(sub.next_publish().await.qos, Q::AtMostOnce);
    broker.shutdown().await;
}

#[tokio::test]
async fn overlapping_subscriptions_deliver_one_copy_at_the_highest_qos() {
    let broker = TestBroker::default().await;
    let mut sub = Client::connect(broker.addr, "sub").await;
    let mut publ = Client::connect(broker.addr, "pub").await;
    sub.subscribe("a/+/c", Q::AtMostOnce).await;
    sub.subscribe("a/#", Q::ExactlyOnce).await;
    sub.subscribe("a/b/c", Q::AtLeastOnce).await;
    publ.publish("a/b/c", Q::ExactlyOnce, false, b"once").await;
    let got = sub.next_publish().await;
    assert_eq!(got.qos, Q::ExactlyOnce);
    sub.no_publish_within(Duration::from_millis(300)).await;
    broker.shutdown().await;
}

#[tokio::test]
async fn unsubscribe_stops_delivery() {
    let broker = TestBroker::default().await;
    let mut sub = Client::connect(broker.addr, "sub").await;
    let mut publ = Client::connect(broker.addr, "pub").await;
    sub.subscribe("u/t", Q::AtLeastOnce).await;
    publ.publish("u/t", Q::AtLeastOnce, false, b"1").await;
    assert_eq!(&sub.next_publish().await.payload[..], b"1");
    sub.unsubscribe("u/t").await;
    publ.publish("u/t", Q::AtLeastOnce, false, b"2").await;
    sub.no_publish_within(Duration::from_millis(300)).await;
    assert_eq!(broker.handle.core().subscriptions.read().len(), 0);
    broker.shutdown().await;
}

#[tokio::test]
async fn wildcards_follow_the_spec_rules() {
    let broker = TestBroker::default().await;
    let mut sub = Client::connect(broker.addr, "sub").await;
    let mut publ = Client::connect(broker.addr, "pub").await;
    sub.subscribe("sport/tennis/#", Q::AtLeastOnce).await;
    sub.subscribe("+/x", Q::AtLeastOnce).await;
    for topic in ["sport/tennis", "sport/tennis/p1/score", "/x", "a/x"] {
        publ.publish(topic, Q::AtLeastOnce, false, topic.as_bytes())
            .await;
        assert_eq!(sub.next_publish().await.topic, topic);
    }
    for topic in ["sport", "sport/tennisball", "a/b/x", "x"] {
        publ.publish(topic, Q::AtLeastOnce, false, b"no").await;
    }
    sub.no_publish_within(Duration::from_millis(300)).await;
    broker.shutdown().await;
}

#[tokio::test]
async fn dollar_topics_are_dropped_unless_publish_dollar_topics() {
    // Default (publishDollarTopics=false): the publish is acknowledged and dropped.
    let broker = TestBroker::default().await;
    let mut sub = Client::connect(broker.addr, "sub").await;
    let mut publ = Client::connect(broker.addr, "pub").await;
    sub.subscribe("$app/#", Q::AtLeastOnce).await;
    publ.publish("$app/x", Q::AtLeastOnce, false, b"dropped")
        .await;
    sub.no_publish_within(Duration::from_millis(300)).await;
    assert_eq!(broker.handle.counters().dropped_dollar_topic, 1);
    broker.shutdown().await;

    // publishDollarTopics=true: delivered to `$` filters, but never to a leading wildcard.
    let broker = TestBroker::with_uri_options(&["transport.publishDollarTopics=true"]).await;
    let mut dollar = Client::connect(broker.addr, "dollar").await;
    let mut all = Client::connect(broker.addr, "all").await;
    let mut publ = Client::connect(broker.addr, "pub").await;
    dollar.subscribe("$app/#", Q::AtLeastOnce).await;
    all.subscribe("#", Q::AtLeastOnce).await;
    all.subscribe("+/x", Q::AtLeastOnce).await;
    publ.publish("$app/x", Q::AtLeastOnce, false, b"kept").await;
    assert_eq!(&dollar.next_publish().await.payload[..], b"kept");
    all.no_publish_within(Duration::from_millis(300)).await;
    broker.shutdown().await;
}

#[tokio::test]
async fn mqtt_31_clients_are_served() {
    let broker = TestBroker::default().await;
    let mut connect = crate::support::connect_packet("old", true, 0);
    connect.protocol = ferromq::protocol::ProtocolVersion::V31;
    let (mut old, ack) = RawClient::connect(broker.addr, connect).await;
    assert_eq!(ack.reason, ferromq::protocol::ConnectReason::Success);
    assert_eq!(
        old.subscribe(1, &[("v31/#", QoS::AtLeastOnce)]).await,
        vec![1]
    );
    let mut publ = Client::connect(broker.addr, "pub").await;
    publ.publish("v31/a", Q::AtLeastOnce, false, b"hi").await;
    let p = old.recv_publish().await;
    assert_eq!((p.topic.as_str(), &p.payload[..]), ("v31/a", &b"hi"[..]));
    old.send(Packet::PubAck(crate::support::ack(
        p.packet_id.expect("QoS 1 id"),
    )))
    .await;
    old.send(Packet::PingReq).await;
    assert_eq!(old.recv().await, Packet::PingResp);
    broker.shutdown().await;
}

/// A publisher streams to one topic (its route is resolved once and then reused) while a
/// subscriber unsubscribes and subscribes again: nothing published after the UNSUBACK reaches
/// it, everything published after the SUBACK does. A second subscriber stays throughout and
/// tells when the publisher's messages were routed.
#[tokio::test]
async fn a_streaming_publisher_follows_subscription_changes_at_once() {
    let broker = TestBroker::default().await;
    let mut publ = Client::connect(broker.addr, "pub").await;
    let mut steady = Client::connect(broker.addr, "steady").await;
    let mut toggled = Client::connect(broker.addr, "toggled").await;
    steady.subscribe("stream/t", Q::AtMostOnce).await;
    toggled.subscribe("stream/+", Q::AtMostOnce).await;
    const BURST: usize = 5;
    for round in 0..30 {
        for i in 0..BURST {
            let payload = format!("on-{round}-{i}");
            publ.publish("stream/t", Q::AtMostOnce, false, payload.as_bytes())
                .await;
        }
        for i in 0..BURST {
            let expected = format!("on-{round}-{i}");
            assert_eq!(steady.next_publish().await.payload, expected.as_bytes());
            // In order, with nothing from an "off" phase before it.
            assert_eq!(toggled.next_publish().await.payload, expected.as_bytes());
        }
        toggled.unsubscribe("stream/+").await;
        for i in 0..BURST {
            let payload = format!("off-{round}-{i}");
            publ.publish("stream/t", Q::AtMostOnce, false, payload.as_bytes())
                .await;
        }
        // Routed (the steady subscriber has them) before the toggled one subscribes again.
        for i in 0..BURST {
            let expected = format!("off-{round}-{i}");
            assert_eq!(steady.next_publish().await.payload, expected.as_bytes());
        }
        toggled.subscribe("stream/+", Q::AtMostOnce).await;
    }
    toggled.no_publish_within(Duration::from_millis(100)).await;
    broker.shutdown().await;
}
