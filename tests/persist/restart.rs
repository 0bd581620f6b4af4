//! Durable state across broker restarts: a real broker on 127.0.0.1 with its store in a
//! tempdir, shut down and started again on the same directory; raw MQTT 3.1.1 clients (socket +
//! ferromq's codec) so DUP flags and packet ids are visible.

use std::path::Path;
use std::time::Duration;

use crate::support::{ack, publish_packet, BrokerXml, RawClient, TestBroker};
use ferromq::protocol::{Disconnect, Packet, QoS};

/// A durable broker (kahaDB in `dir`) with one MQTT connector on 127.0.0.1 port 0.
fn durable_xml(dir: &Path) -> String {
    BrokerXml::new().kahadb(dir).mqtt(0, &[]).build()
}

async fn start_durable(dir: &Path) -> TestBroker {
    TestBroker::from_xml(&durable_xml(dir)).await
}

/// A persistent subscriber session `client_id` on `filter`, left offline.
async fn offline_subscriber(broker: &TestBroker, client_id: &str, filter: &str, qos: QoS) {
    let (mut sub, _) = RawClient::connected(broker.addr, client_id, false).await;
    assert_eq!(sub.subscribe(1, &[(filter, qos)]).await, vec![qos as u8]);
    sub.send(Packet::Disconnect(Disconnect {
        reason: 0,
        properties: None,
    }))
    .await;
    sub.expect_closed().await;
}

async fn publish_qos1(client: &mut RawClient, topic: &str, payload: &[u8], id: u16, retain: bool) {
    client
        .send(publish_packet(
            topic,
            payload,
            QoS::AtLeastOnce,
            Some(id),
            retain,
        ))
        .await;
    match client.recv().await {
        Packet::PubAck(a) => assert_eq!(a.packet_id, id),
        other => panic!("expected PUBACK, got {other:?}"),
    }
}

async fn publish_qos2(client: &mut RawClient, topic: &str, payload: &[u8], id: u16) {
    client
        .send(publish_packet(
            topic,
            payload,
            QoS::ExactlyOnce,
            Some(id),
            false,
        ))
        .await;
    match client.recv().await {
        Packet::PubRec(a) => assert_eq!(a.packet_id, id),
        other => panic!("expected PUBREC, got {other:?}"),
    }
    client.send(Packet::PubRel(ack(id))).await;
    match client.recv().await {
        Packet::PubComp(a) => assert_eq!(a.packet_id, id),
        other => panic!("expected PUBCOMP, got {other:?}"),
    }
}

#[tokio::test]
async fn offline_qos1_and_qos2_messages_are_delivered_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start_durable(dir.path()).await;
    offline_subscriber(&broker, "sub", "t/#", QoS::ExactlyOnce).await;
    let (mut publisher, _) = RawClient::connected(broker.addr, "pub", true).await;
    publish_qos1(&mut publisher, "t/1", b"one", 1, false).await;
    publish_qos2(&mut publisher, "t/2", b"two", 2).await;
    broker.shutdown().await;

    let broker = start_durable(dir.path()).await;
    let (mut sub, connack) = RawClient::connected(broker.addr, "sub", false).await;
    assert!(connack.session_present, "the session survived the restart");
    let first = sub.recv_publish().await;
    assert_eq!(
        (first.topic.as_str(), &first.payload[..], first.qos),
        ("t/1", &b"one"[..], QoS::AtLeastOnce)
    );
    let second = sub.recv_publish().await;
    assert_eq!(
        (second.topic.as_str(), &second.payload[..], second.qos),
        ("t/2", &b"two"[..], QoS::ExactlyOnce)
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn retained_messages_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start_durable(dir.path()).await;
    let (mut publisher, _) = RawClient::connected(broker.addr, "pub", true).await;
    publish_qos1(&mut publisher, "r/kept", b"kept", 1, true).await;
    publish_qos1(&mut publisher, "r/cleared", b"gone", 2, true).await;
    publish_qos1(&mut publisher, "r/cleared", b"", 3, true).await;
    broker.shutdown().await;

    let broker = start_durable(dir.path()).await;
    let (mut sub, _) = RawClient::connected(broker.addr, "reader", true).await;
    sub.subscribe(1, &[("r/#", QoS::AtLeastOnce)]).await;
    let retained = sub.recv_publish().await;
    assert_eq!(
        (
            retained.topic.as_str(),
            &retained.payload[..],
            retained.retain
        ),
        ("r/kept", &b"kept"[..], true)
    );
    assert!(
        sub.recv_within(Duration::from_millis(300)).await.is_none(),
        "the cleared retained message stays cleared"
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn in_flight_messages_are_resent_with_dup_and_pubrel_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start_durable(dir.path()).await;
    let (mut sub, _) = RawClient::connected(broker.addr, "sub", false).await;
    sub.subscribe(1, &[("q1", QoS::AtLeastOnce), ("q2", QoS::ExactlyOnce)])
        .await;
    let (mut publisher, _) = RawClient::connected(broker.addr, "pub", true).await;
    publish_qos1(&mut publisher, "q1", b"unacked", 1, false).await;
    let sent_qos1 = sub.recv_publish().await;
    assert!(!sent_qos1.dup);
    publish_qos2(&mut publisher, "q2", b"recd", 2).await;
    let sent_qos2 = sub.recv_publish().await;
    let qos2_id = sent_qos2.packet_id.expect("QoS 2 has an id");
    sub.send(Packet::PubRec(ack(qos2_id))).await;
    match sub.recv().await {
        Packet::PubRel(a) => assert_eq!(a.packet_id, qos2_id),
        other => panic!("expected PUBREL, got {other:?}"),
    }
    // Neither PUBACK nor PUBCOMP: both exchanges are unfinished when the broker stops.
    crate::support::settle().await;
    broker.shutdown().await;

    let broker = start_durable(dir.path()).await;
    let (mut sub, connack) = RawClient::connected(broker.addr, "sub", false).await;
    assert!(connack.session_present);
    let resent = sub.recv_publish().await;
    assert!(resent.dup, "re-sent PUBLISH carries DUP=1");
    assert_eq!(resent.packet_id, sent_qos1.packet_id);
    assert_eq!(&resent.payload[..], b"unacked");
    match sub.recv().await {
        Packet::PubRel(a) => assert_eq!(a.packet_id, qos2_id),
        other => panic!("expected PUBREL re-sent, got {other:?}"),
    }
    sub.send(Packet::PubAck(ack(resent.packet_id.expect("id"))))
        .await;
    sub.send(Packet::PubComp(ack(qos2_id))).await;
    crate::support::settle().await;
    broker.shutdown().await;

    let broker = start_durable(dir.path()).await;
    let (mut sub, _) = RawClient::connected(broker.addr, "sub", false).await;
    assert!(
        sub.recv_within(Duration::from_millis(300)).await.is_none(),
        "acknowledged exchanges are gone for good"
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn inbound_qos2_is_exactly_once_across_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start_durable(dir.path()).await;
    offline_subscriber(&broker, "sub", "x", QoS::ExactlyOnce).await;
    let (mut publisher, _) = RawClient::connected(broker.addr, "pub", false).await;
    publisher
        .send(publish_packet(
            "x",
            b"once",
            QoS::ExactlyOnce,
            Some(7),
            false,
        ))
        .await;
    assert!(matches!(publisher.recv().await, Packet::PubRec(a) if a.packet_id == 7));
    broker.shutdown().await;

    let broker = start_durable(dir.path()).await;
    let (mut publisher, connack) = RawClient::connected(broker.addr, "pub", false).await;
    assert!(connack.session_present);
    // The publisher did not see PUBCOMP, so it sends the PUBLISH again (DUP=1), then PUBREL.
    let Packet::Publish(mut again) = publish_packet("x", b"once", QoS::ExactlyOnce, Some(7), false)
    else {
        unreachable!("publish_packet builds a PUBLISH")
    };
    again.dup = true;
    publisher.send(Packet::Publish(again)).await;
    assert!(matches!(publisher.recv().await, Packet::PubRec(a) if a.packet_id == 7));
    publisher.send(Packet::PubRel(ack(7))).await;
    assert!(matches!(publisher.recv().await, Packet::PubComp(a) if a.packet_id == 7));

    let (mut sub, _) = RawClient::connected(broker.addr, "sub", false).await;
    let got = sub.recv_publish().await;
    assert_eq!(&got.payload[..], b"once");
    assert!(
        sub.recv_within(Duration::from_millis(500)).await.is_none(),
        "the re-sent PUBLISH was not routed a second time"
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn a_second_broker_on_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = start_durable(dir.path()).await;
    let second = ferromq::broker::start(crate::support::load_xml(&durable_xml(dir.path()))).await;
    let error = match second {
        Ok(_) => panic!("a second broker started on a store in use"),
        Err(e) => format!("{e:#}"),
    };
    assert!(error.contains("already in use"), "{error}");
    first.shutdown().await;
}

#[tokio::test]
async fn a_memory_broker_keeps_nothing_across_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let memory_xml = BrokerXml::new()
        .kahadb(dir.path())
        .persistent(Some(false))
        .mqtt(0, &[])
        .build();
    let broker = TestBroker::from_xml(&memory_xml).await;
    offline_subscriber(&broker, "sub", "m", QoS::AtLeastOnce).await;
    let (mut publisher, _) = RawClient::connected(broker.addr, "pub", true).await;
    publish_qos1(&mut publisher, "m", b"lost", 1, true).await;
    broker.shutdown().await;
    assert!(
        std::fs::read_dir(dir.path()).expect("dir").next().is_none(),
        "nothing written to disk"
    );

    let broker = TestBroker::from_xml(&memory_xml).await;
    let (mut sub, connack) = RawClient::connected(broker.addr, "sub", false).await;
    assert!(!connack.session_present);
    sub.subscribe(1, &[("m", QoS::AtLeastOnce)]).await;
    assert!(sub.recv_within(Duration::from_millis(300)).await.is_none());
    broker.shutdown().await;
}

#[tokio::test]
async fn pipelined_publishes_are_acknowledged_and_delivered_in_order() {
    const COUNT: u16 = 300;
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start_durable(dir.path()).await;
    let (mut sub, _) = RawClient::connected(broker.addr, "sub", false).await;
    sub.subscribe(1, &[("order", QoS::AtLeastOnce)]).await;
    let (mut publisher, _) = RawClient::connected(broker.addr, "pub", true).await;
    // Every other message is QoS 0: it must not overtake the QoS 1 ones waiting for the store.
    for n in 0..COUNT {
        let (qos, id) = if n % 2 == 0 {
            (QoS::AtLeastOnce, Some(n + 1))
        } else {
            (QoS::AtMostOnce, None)
        };
        publisher
            .send(publish_packet("order", &n.to_be_bytes(), qos, id, false))
            .await;
    }
    for n in (0..COUNT).step_by(2) {
        match publisher.recv().await {
            Packet::PubAck(a) => assert_eq!(a.packet_id, n + 1, "PUBACKs in PUBLISH order"),
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }
    for n in 0..COUNT {
        let p = sub.recv_publish().await;
        assert_eq!(&p.payload[..], &n.to_be_bytes()[..], "delivery order");
        if let Some(id) = p.packet_id {
            sub.send(Packet::PubAck(ack(id))).await;
        }
    }
    broker.shutdown().await;
}
