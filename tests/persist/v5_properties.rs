//! MQTT 5 PUBLISH properties kept with the message across a restart on one durable store:
//! payload format indicator, content type, response topic, correlation data, user properties
//! in order, and the Message Expiry Interval as wall-clock time (what is left counts the
//! downtime; a message that expired meanwhile is not delivered). For an offline persistent
//! session's queue and for retained messages.
//!
//! Real broker on 127.0.0.1 with kahaDB in a tempdir, raw MQTT 5 clients, real time.

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferromq::protocol::{Disconnect, Packet, Properties, Publish, QoS};

use crate::support::{connect_v5, BrokerXml, RawClient, TestBroker, STEP};

async fn start_durable(dir: &Path) -> TestBroker {
    TestBroker::from_xml(&BrokerXml::new().kahadb(dir).mqtt(0, &[]).build()).await
}

/// Every property a PUBLISH forwards, with a Message Expiry Interval of `expiry_secs`.
fn all_properties(expiry_secs: u32) -> Properties {
    Properties {
        payload_format_indicator: Some(1),
        message_expiry_interval: Some(expiry_secs),
        content_type: Some("application/json".into()),
        response_topic: Some("reply/to/me".into()),
        correlation_data: Some(Bytes::from_static(b"\x00\x01corr")),
        user_properties: vec![
            ("z".into(), "first".into()),
            ("a".into(), "second".into()),
            ("z".into(), "third".into()),
        ],
        ..Properties::default()
    }
}

/// Publish at QoS 1 with `properties`, awaiting the PUBACK.
async fn publish(
    client: &mut RawClient,
    topic: &str,
    payload: &[u8],
    id: u16,
    retain: bool,
    properties: Properties,
) {
    client
        .send(Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain,
            topic: topic.into(),
            packet_id: Some(id),
            payload: Bytes::copy_from_slice(payload),
            properties: Some(Box::new(properties)),
        }))
        .await;
    match client.recv().await {
        Packet::PubAck(a) => assert_eq!((a.packet_id, a.reason), (id, 0)),
        other => panic!("expected PUBACK, got {other:?}"),
    }
}

/// The forwarded properties match what was published, except the expiry, returned.
fn expiry_of(p: &Publish) -> u32 {
    let props = p.properties.as_ref().expect("properties arrive");
    let expected = all_properties(0);
    assert_eq!(
        props.payload_format_indicator,
        expected.payload_format_indicator
    );
    assert_eq!(props.content_type, expected.content_type);
    assert_eq!(props.response_topic, expected.response_topic);
    assert_eq!(props.correlation_data, expected.correlation_data);
    assert_eq!(props.user_properties, expected.user_properties, "in order");
    props.message_expiry_interval.expect("the expiry arrives")
}

async fn leave(mut client: RawClient) {
    client
        .send(Packet::Disconnect(Disconnect {
            reason: 0,
            properties: None,
        }))
        .await;
    client.expect_closed().await;
}

#[tokio::test]
async fn properties_and_counted_down_expiry_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start_durable(dir.path()).await;
    let (mut sub, _) = RawClient::connect_ok(broker.addr, connect_v5("sub", true, Some(600))).await;
    sub.subscribe(1, &[("p/#", QoS::AtLeastOnce)]).await;
    leave(sub).await;
    let mut publisher = RawClient::connected_v5(broker.addr, "pub").await;
    let published = Instant::now();
    publish(
        &mut publisher,
        "p/short",
        b"expires",
        1,
        false,
        all_properties(1),
    )
    .await;
    publish(
        &mut publisher,
        "p/long",
        b"kept",
        2,
        false,
        all_properties(60),
    )
    .await;
    publish(
        &mut publisher,
        "r/kept",
        b"retained",
        3,
        true,
        all_properties(60),
    )
    .await;
    leave(publisher).await;
    broker.shutdown().await;
    // Down for longer than the short message's expiry (and two whole seconds).
    tokio::time::sleep(Duration::from_millis(2100)).await;

    let broker = start_durable(dir.path()).await;
    let (mut sub, ack) =
        RawClient::connect_ok(broker.addr, connect_v5("sub", false, Some(600))).await;
    assert!(ack.session_present);
    let p = match sub.recv().await {
        Packet::Publish(p) => p,
        other => panic!("expected PUBLISH, got {other:?}"),
    };
    assert_eq!(
        (&*p.topic, &p.payload[..]),
        ("p/long", &b"kept"[..]),
        "the expired message is not delivered"
    );
    let left = expiry_of(&p);
    let elapsed = published.elapsed().as_secs() as u32;
    assert!(
        left <= 58 && left >= 60 - elapsed - 1,
        "{left} s left after {elapsed} s (the downtime counts)"
    );
    if let Some(id) = p.packet_id {
        sub.send(Packet::PubAck(crate::support::ack(id))).await;
    }
    assert_eq!(sub.recv_within(Duration::from_millis(500)).await, None);
    assert_eq!(broker.handle.counters().dropped_expired, 1);

    // The retained message, from the restored retained index.
    let mut late = RawClient::connected_v5(broker.addr, "late").await;
    late.subscribe(1, &[("r/#", QoS::AtLeastOnce)]).await;
    let r = match late.recv_within(STEP).await {
        Some(Packet::Publish(p)) => p,
        other => panic!("expected the retained PUBLISH, got {other:?}"),
    };
    assert!(r.retain);
    assert_eq!(&r.payload[..], b"retained");
    let left = expiry_of(&r);
    assert!(left <= 58, "{left} s left: the downtime counts");
    broker.shutdown().await;
}

#[tokio::test]
async fn an_mqtt3_message_and_one_without_properties_stay_without() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start_durable(dir.path()).await;
    let (mut sub, _) = RawClient::connect_ok(broker.addr, connect_v5("sub", true, Some(600))).await;
    sub.subscribe(1, &[("p/#", QoS::AtLeastOnce)]).await;
    leave(sub).await;
    let (mut v3, _) = RawClient::connected(broker.addr, "v3pub", true).await;
    v3.send(crate::support::publish_packet(
        "p/v3",
        b"plain",
        QoS::AtLeastOnce,
        Some(1),
        false,
    ))
    .await;
    assert!(matches!(v3.recv().await, Packet::PubAck(_)));
    broker.shutdown().await;

    let broker = start_durable(dir.path()).await;
    let (mut sub, _) =
        RawClient::connect_ok(broker.addr, connect_v5("sub", false, Some(600))).await;
    match sub.recv().await {
        Packet::Publish(p) => {
            assert_eq!(&p.payload[..], b"plain");
            assert_eq!(p.properties, None);
        }
        other => panic!("expected PUBLISH, got {other:?}"),
    }
    broker.shutdown().await;
}
