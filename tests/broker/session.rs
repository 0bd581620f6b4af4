//! Sessions: client-id rules, offline queueing and session present, takeover, redelivery with
//! DUP on reconnect, inbound QoS 2 exactly-once, persistence through a session store.

use std::sync::Arc;
use std::time::Duration;

use crate::support::{connect_packet, publish_packet, Client, RawClient, TestBroker, STEP};
use ferromq::broker::MemorySessionStore;
use ferromq::protocol::{Ack, ConnectReason, Packet, QoS};
use rumqttc::QoS as Q;

#[tokio::test]
async fn zero_length_client_id() {
    let broker = TestBroker::default().await;
    // clean session 1: accepted with a generated id, and fully usable.
    let (mut anon, ack) = RawClient::connect(broker.addr, connect_packet("", true, 0)).await;
    assert_eq!(ack.reason, ConnectReason::Success);
    assert!(!ack.session_present);
    assert_eq!(anon.subscribe(1, &[("z", QoS::AtMostOnce)]).await, vec![0]);
    // A second anonymous client gets a different id (no takeover of the first).
    let (mut anon2, _) = RawClient::connect(broker.addr, connect_packet("", true, 0)).await;
    anon2
        .send(publish_packet("z", b"x", QoS::AtMostOnce, None, false))
        .await;
    assert_eq!(&anon.recv_publish().await.payload[..], b"x");
    // clean session 0: identifier rejected (CONNACK 2), then closed.
    let (mut refused, ack) = RawClient::connect(broker.addr, connect_packet("", false, 0)).await;
    assert_eq!(ack.reason, ConnectReason::ClientIdentifierNotValid);
    refused.expect_closed().await;
    broker.shutdown().await;
}

#[tokio::test]
async fn offline_queueing_and_session_present() {
    let broker = TestBroker::default().await;
    let mut o = crate::support::options(broker.addr, "durable");
    o.set_clean_session(false);
    let mut sub = Client::connect_with(o.clone()).await;
    assert!(!sub.session_present, "new session");
    sub.subscribe("q/#", Q::AtLeastOnce).await;
    sub.disconnect().await;

    let mut publ = Client::connect(broker.addr, "pub").await;
    for i in 0..3u8 {
        publ.publish("q/1", Q::AtLeastOnce, false, &[i]).await;
    }
    publ.publish("q/0", Q::AtMostOnce, false, b"qos0 is not kept offline")
        .await;
    publ.publish("q/2", Q::ExactlyOnce, false, &[3]).await;

    let mut back = Client::connect_with(o).await;
    assert!(back.session_present, "session present on return");
    for i in 0..4u8 {
        let p = back.next_publish().await;
        assert_eq!(&p.payload[..], &[i]);
        assert_eq!(
            p.qos,
            Q::AtLeastOnce,
            "min(publish QoS, subscription QoS 1)"
        );
    }
    back.no_publish_within(Duration::from_millis(300)).await;
    assert_eq!(broker.handle.counters().dropped_offline_qos0, 1);
    back.disconnect().await;

    // A clean-session connect discards the stored session.
    let mut clean = crate::support::options(broker.addr, "durable");
    clean.set_clean_session(true);
    let c = Client::connect_with(clean).await;
    assert!(!c.session_present);
    c.disconnect().await;
    broker.shutdown().await;
}

#[tokio::test]
async fn takeover_closes_the_old_connection_and_publishes_its_will() {
    let broker = TestBroker::default().await;
    let mut watcher = Client::connect(broker.addr, "watcher").await;
    watcher.subscribe("will/#", Q::AtLeastOnce).await;

    let mut first = connect_packet("twin", true, 0);
    first.will = Some(crate::support::will(
        "will/twin",
        b"gone",
        QoS::AtLeastOnce,
        false,
    ));
    let (mut old, _) = RawClient::connect(broker.addr, first).await;
    let (mut new, ack) = RawClient::connect(broker.addr, connect_packet("twin", true, 0)).await;
    assert_eq!(ack.reason, ConnectReason::Success);
    old.expect_closed().await;
    // The old network connection closed without DISCONNECT (MQTT 3.1.1 3.1.4-2, 3.1.2-8).
    let will = watcher.next_publish().await;
    assert_eq!(
        (will.topic.as_str(), &will.payload[..]),
        ("will/twin", &b"gone"[..])
    );
    // The new connection works.
    new.send(Packet::PingReq).await;
    assert_eq!(new.recv().await, Packet::PingResp);
    broker.shutdown().await;
}

#[tokio::test]
async fn takeover_refused_when_link_stealing_is_off() {
    let broker = TestBroker::with_uri_options(&["allowLinkStealing=false"]).await;
    let (mut first, _) = RawClient::connected(broker.addr, "solo", true).await;
    let (mut second, ack) = RawClient::connect(broker.addr, connect_packet("solo", true, 0)).await;
    assert_eq!(ack.reason, ConnectReason::ClientIdentifierNotValid);
    second.expect_closed().await;
    first.send(Packet::PingReq).await;
    assert_eq!(
        first.recv().await,
        Packet::PingResp,
        "the first connection is untouched"
    );
    // Once the first is gone, the id is free again.
    first
        .send(Packet::Disconnect(ferromq::protocol::Disconnect {
            reason: 0,
            properties: None,
        }))
        .await;
    first.expect_closed().await;
    let (_third, ack) = RawClient::connect(broker.addr, connect_packet("solo", true, 0)).await;
    assert_eq!(ack.reason, ConnectReason::Success);
    broker.shutdown().await;
}

#[tokio::test]
async fn unacknowledged_qos1_and_qos2_are_redelivered_with_dup_on_reconnect() {
    let broker = TestBroker::default().await;
    let (mut sub, _) = RawClient::connected(broker.addr, "redeliver", false).await;
    assert_eq!(
        sub.subscribe(1, &[("rd/1", QoS::AtLeastOnce), ("rd/2", QoS::ExactlyOnce)])
            .await,
        vec![1, 2]
    );
    let mut publ = Client::connect(broker.addr, "pub").await;
    publ.publish("rd/1", Q::AtLeastOnce, false, b"one").await;
    publ.publish("rd/2", Q::ExactlyOnce, false, b"two").await;
    publ.publish("rd/2", Q::ExactlyOnce, false, b"three").await;
    let one = sub.recv_publish().await;
    let two = sub.recv_publish().await;
    let three = sub.recv_publish().await;
    assert!(!one.dup && !two.dup && !three.dup);
    // Acknowledge only the first step of "three": the broker must then re-send PUBREL for it.
    let three_id = three.packet_id.expect("id");
    sub.send(Packet::PubRec(Ack::new(three_id))).await;
    assert_eq!(sub.recv().await, Packet::PubRel(Ack::new(three_id)));
    drop(sub);

    let (mut back, ack) = RawClient::connected(broker.addr, "redeliver", false).await;
    assert!(ack.session_present);
    let again_one = back.recv_publish().await;
    assert!(again_one.dup);
    assert_eq!(
        (again_one.packet_id, &again_one.payload[..]),
        (one.packet_id, &b"one"[..])
    );
    let again_two = back.recv_publish().await;
    assert!(again_two.dup);
    assert_eq!(
        (again_two.packet_id, again_two.qos),
        (two.packet_id, QoS::ExactlyOnce)
    );
    assert_eq!(back.recv().await, Packet::PubRel(Ack::new(three_id)));
    // Finish everything; nothing more is re-sent on the next reconnect.
    back.send(Packet::PubAck(Ack::new(one.packet_id.expect("id"))))
        .await;
    let two_id = two.packet_id.expect("id");
    back.send(Packet::PubRec(Ack::new(two_id))).await;
    assert_eq!(back.recv().await, Packet::PubRel(Ack::new(two_id)));
    back.send(Packet::PubComp(Ack::new(two_id))).await;
    back.send(Packet::PubComp(Ack::new(three_id))).await;
    back.send(Packet::PingReq).await;
    assert_eq!(back.recv().await, Packet::PingResp);
    drop(back);
    let (mut last, ack) = RawClient::connected(broker.addr, "redeliver", false).await;
    assert!(ack.session_present);
    assert_eq!(last.recv_within(Duration::from_millis(300)).await, None);
    broker.shutdown().await;
}

#[tokio::test]
async fn inbound_qos2_resend_before_pubrel_is_not_delivered_twice() {
    let broker = TestBroker::default().await;
    let mut sub = Client::connect(broker.addr, "sub").await;
    sub.subscribe("eo", Q::ExactlyOnce).await;
    let (mut publ, _) = RawClient::connected(broker.addr, "raw-pub", true).await;
    publ.send(publish_packet(
        "eo",
        b"once",
        QoS::ExactlyOnce,
        Some(7),
        false,
    ))
    .await;
    assert_eq!(publ.recv().await, Packet::PubRec(Ack::new(7)));
    let mut dup = publish_packet("eo", b"once", QoS::ExactlyOnce, Some(7), false);
    if let Packet::Publish(p) = &mut dup {
        p.dup = true;
    }
    publ.send(dup).await;
    assert_eq!(publ.recv().await, Packet::PubRec(Ack::new(7)));
    publ.send(Packet::PubRel(Ack::new(7))).await;
    assert_eq!(publ.recv().await, Packet::PubComp(Ack::new(7)));
    assert_eq!(&sub.next_publish().await.payload[..], b"once");
    sub.no_publish_within(Duration::from_millis(300)).await;
    // After PUBREL the id is free: a new message with it is delivered.
    publ.send(publish_packet(
        "eo",
        b"next",
        QoS::ExactlyOnce,
        Some(7),
        false,
    ))
    .await;
    assert_eq!(publ.recv().await, Packet::PubRec(Ack::new(7)));
    assert_eq!(&sub.next_publish().await.payload[..], b"next");
    broker.shutdown().await;
}

#[tokio::test]
async fn persistent_sessions_survive_a_restart_through_the_store() {
    let store = Arc::new(MemorySessionStore::default());
    let broker = TestBroker::start_with_store(
        crate::support::load_xml(&crate::support::activemq_xml(&[], "")),
        store.clone(),
    )
    .await;
    let (mut sub, _) = RawClient::connected(broker.addr, "keeper", false).await;
    sub.subscribe(1, &[("keep/#", QoS::AtLeastOnce)]).await;
    drop(sub);
    let mut publ = Client::connect(broker.addr, "pub").await;
    // The session goes offline asynchronously: wait until the broker saw the close.
    let deadline = tokio::time::Instant::now() + STEP;
    while broker.handle.counters().connections_current > 1 {
        assert!(tokio::time::Instant::now() < deadline, "close not noticed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    publ.publish("keep/it", Q::AtLeastOnce, false, b"across restarts")
        .await;
    publ.disconnect().await;
    broker.shutdown().await;

    let broker = TestBroker::start_with_store(
        crate::support::load_xml(&crate::support::activemq_xml(&[], "")),
        store,
    )
    .await;
    let (mut back, ack) = RawClient::connected(broker.addr, "keeper", false).await;
    assert!(ack.session_present);
    let p = back.recv_publish().await;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..]),
        ("keep/it", &b"across restarts"[..])
    );
    broker.shutdown().await;
}
