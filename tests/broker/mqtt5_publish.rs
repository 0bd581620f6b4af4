//! MQTT 5 PUBLISH properties carried from publisher to subscribers (real broker on 127.0.0.1
//! port 0, exact packets): forwarded to v5 subscribers, left out for v3 ones, the Message
//! Expiry Interval counted down while the message waits and expired messages not delivered;
//! Retain Handling on SUBSCRIBE.

use std::time::Duration;

use crate::support::{RawClient, TestBroker};
use bytes::Bytes;
use ferromq::protocol::{
    Packet, Properties, Publish, QoS, RetainHandling, Subscribe, SubscriptionOptions,
};

const QUIET: Duration = Duration::from_millis(300);

fn publish_with(topic: &str, retain: bool, properties: Properties) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain,
        topic: topic.into(),
        packet_id: None,
        payload: Bytes::from_static(b"{}"),
        properties: Some(Box::new(properties)),
    })
}

#[tokio::test]
async fn publish_properties_reach_v5_subscribers_and_not_v3_ones() {
    let broker = TestBroker::default().await;
    let mut sub5 = RawClient::connected_v5(broker.addr, "sub5").await;
    sub5.subscribe(1, &[("req/#", QoS::AtMostOnce)]).await;
    let (mut sub3, _) = RawClient::connected(broker.addr, "sub3", true).await;
    sub3.subscribe(1, &[("req/#", QoS::AtMostOnce)]).await;

    let sent = Properties {
        payload_format_indicator: Some(1),
        content_type: Some("application/json".into()),
        response_topic: Some("resp/1".into()),
        correlation_data: Some(Bytes::from_static(b"\x01\x02")),
        user_properties: vec![("a".into(), "1".into()), ("a".into(), "2".into())],
        ..Properties::default()
    };
    let mut publisher = RawClient::connected_v5(broker.addr, "pub").await;
    publisher
        .send(publish_with("req/x", false, sent.clone()))
        .await;

    let got = sub5.recv_publish().await;
    assert_eq!(got.properties.as_deref(), Some(&sent));
    let plain = sub3.recv_publish().await;
    assert_eq!(plain.properties, None);
    assert_eq!(&plain.payload[..], b"{}");
    broker.shutdown().await;
}

#[tokio::test]
async fn message_expiry_counts_down_and_expired_messages_are_not_delivered() {
    let broker = TestBroker::default().await;
    let mut publisher = RawClient::connected_v5(broker.addr, "pub").await;
    publisher
        .send(publish_with(
            "exp/retained",
            true,
            Properties {
                message_expiry_interval: Some(2),
                content_type: Some("text/plain".into()),
                ..Properties::default()
            },
        ))
        .await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let mut early = RawClient::connected_v5(broker.addr, "early").await;
    early.subscribe(1, &[("exp/#", QoS::AtMostOnce)]).await;
    let got = early.recv_publish().await;
    let props = got.properties.expect("properties");
    assert_eq!(
        props.message_expiry_interval,
        Some(1),
        "2 s minus 1.2 s, rounded up"
    );
    assert_eq!(props.content_type.as_deref(), Some("text/plain"));

    tokio::time::sleep(Duration::from_millis(1000)).await;
    let mut late = RawClient::connected_v5(broker.addr, "late").await;
    late.subscribe(1, &[("exp/#", QoS::AtMostOnce)]).await;
    assert!(late.recv_within(QUIET).await.is_none(), "expired");
    assert_eq!(broker.handle.counters().dropped_expired, 1);
    broker.shutdown().await;
}

/// SUBSCRIBE to `filter` at QoS 0 with `retain_handling`; returns the SUBACK codes.
async fn subscribe_with(
    client: &mut RawClient,
    packet_id: u16,
    filter: &str,
    retain_handling: RetainHandling,
) -> Vec<u8> {
    client
        .send(Packet::Subscribe(Subscribe {
            packet_id,
            filters: vec![(
                filter.into(),
                SubscriptionOptions {
                    qos: QoS::AtMostOnce,
                    no_local: false,
                    retain_as_published: false,
                    retain_handling,
                },
            )],
            properties: None,
        }))
        .await;
    match client.recv().await {
        Packet::SubAck(s) => s.return_codes,
        other => panic!("expected SUBACK, got {other:?}"),
    }
}

#[tokio::test]
async fn retain_handling_decides_whether_retained_messages_are_sent() {
    let broker = TestBroker::default().await;
    let mut publisher = RawClient::connected_v5(broker.addr, "pub").await;
    publisher
        .send(publish_with("rh/t", true, Properties::default()))
        .await;
    let mut sub = RawClient::connected_v5(broker.addr, "sub").await;
    assert_eq!(
        subscribe_with(&mut sub, 1, "rh/#", RetainHandling::DoNotSend).await,
        [0]
    );
    assert!(sub.recv_within(QUIET).await.is_none(), "2: never sent");
    assert_eq!(
        subscribe_with(&mut sub, 2, "rh/t", RetainHandling::SendAtSubscribeIfNew).await,
        [0]
    );
    assert!(sub.recv_publish().await.retain, "1: new subscription");
    assert_eq!(
        subscribe_with(&mut sub, 3, "rh/t", RetainHandling::SendAtSubscribeIfNew).await,
        [0]
    );
    assert!(sub.recv_within(QUIET).await.is_none(), "1: it existed");
    assert_eq!(
        subscribe_with(&mut sub, 4, "rh/t", RetainHandling::SendAtSubscribe).await,
        [0]
    );
    assert!(sub.recv_publish().await.retain, "0: always");
    broker.shutdown().await;
}

fn aliased(topic: &str, alias: u16, payload: &'static [u8]) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: topic.into(),
        packet_id: None,
        payload: Bytes::from_static(payload),
        properties: Some(Box::new(Properties {
            topic_alias: Some(alias),
            ..Properties::default()
        })),
    })
}

/// The reason code of the server's DISCONNECT, then the connection closes.
async fn server_disconnect(client: &mut RawClient) -> u8 {
    match client.recv().await {
        Packet::Disconnect(d) => {
            client.expect_closed().await;
            d.reason
        }
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
}

#[tokio::test]
async fn topic_aliases_from_the_client_are_set_used_and_checked() {
    let broker = TestBroker::default().await;
    let mut sub = RawClient::connected_v5(broker.addr, "sub").await;
    sub.subscribe(1, &[("al/#", QoS::AtMostOnce)]).await;
    let mut publisher = RawClient::connected_v5(broker.addr, "pub").await;
    for packet in [
        aliased("al/x", 3, b"1"),
        aliased("", 3, b"2"),
        aliased("al/y", 3, b"3"),
        aliased("", 3, b"4"),
    ] {
        publisher.send(packet).await;
    }
    for (topic, payload) in [
        ("al/x", b"1"),
        ("al/x", b"2"),
        ("al/y", b"3"),
        ("al/y", b"4"),
    ] {
        let got = sub.recv_publish().await;
        assert_eq!(
            (got.topic.as_str(), &got.payload[..]),
            (topic, &payload[..])
        );
        assert_eq!(got.properties, None, "the alias is not forwarded");
    }
    publisher.send(aliased("al/z", 17, b"5")).await;
    assert_eq!(
        server_disconnect(&mut publisher).await,
        0x94,
        "above the maximum"
    );
    let mut unknown = RawClient::connected_v5(broker.addr, "unknown").await;
    unknown.send(aliased("", 5, b"6")).await;
    assert_eq!(server_disconnect(&mut unknown).await, 0x82, "never set");
    broker.shutdown().await;
}
