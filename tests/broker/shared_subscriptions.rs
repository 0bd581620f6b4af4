//! Shared subscriptions (`$share/{group}/{filter}`, MQTT 5.0 4.8.2; MQTT 3.1.1 clients use them
//! the same way) against the real broker: each message goes to one member of every matching
//! group, online members first, each member at its own granted QoS.
//!
//! How a test knows a member got everything it will get, without waiting: every member also
//! subscribes to `end` directly, and the publisher (which waits for each PUBACK, so each message
//! is routed before the next) publishes `end` last. A session's queue is in order, so once a
//! member sees `end` it has seen every earlier message routed to it.

use std::collections::BTreeSet;

use bytes::Bytes;
use ferromq::protocol::{
    Ack, Disconnect, Packet, Properties, ProtocolVersion, QoS, RetainHandling, Subscribe,
    SubscriptionOptions, Unsubscribe,
};

use crate::support::live::LiveBroker;
use crate::support::{activemq_xml, connect_packet, connect_v5, Client, RawClient, TestBroker};

/// The last message of every test, subscribed to directly by every member.
const END: &str = "end";

/// One message as a member received it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Got {
    topic: String,
    payload: Bytes,
    qos: QoS,
}

/// A member: a raw client (MQTT 5 or 3.1.1) that acknowledges what it receives.
struct Member {
    client: RawClient,
}

impl Member {
    /// An MQTT 5 client with a session that ends at disconnect.
    async fn v5(addr: std::net::SocketAddr, id: &str) -> Member {
        let (client, _) = RawClient::connect_ok(addr, connect_v5(id, true, None)).await;
        Member { client }
    }

    /// An MQTT 5 client whose session is kept for `expiry_secs` after it leaves.
    async fn v5_kept(addr: std::net::SocketAddr, id: &str, expiry_secs: u32) -> (Member, bool) {
        let (client, ack) =
            RawClient::connect_ok(addr, connect_v5(id, false, Some(expiry_secs))).await;
        (Member { client }, ack.session_present)
    }

    /// An MQTT 3.1.1 client (clean session).
    async fn v3(addr: std::net::SocketAddr, id: &str) -> Member {
        let (client, _) = RawClient::connect_ok(addr, connect_packet(id, true, 0)).await;
        Member { client }
    }

    /// SUBSCRIBE `filters` and `end` (QoS 1); returns the SUBACK codes of `filters`.
    async fn join(&mut self, filters: &[(&str, QoS)]) -> Vec<u8> {
        let mut all = filters.to_vec();
        all.push((END, QoS::AtLeastOnce));
        let mut codes = self.client.subscribe(1, &all).await;
        assert_eq!(codes.pop(), Some(1), "{END} granted");
        codes
    }

    async fn unsubscribe(&mut self, filter: &str) -> u8 {
        self.client
            .send(Packet::Unsubscribe(Unsubscribe {
                packet_id: 2,
                filters: vec![filter.into()],
                properties: None,
            }))
            .await;
        match self.client.recv().await {
            Packet::UnsubAck(ack) => ack.reason_codes.first().copied().unwrap_or(0),
            other => panic!("expected UNSUBACK, got {other:?}"),
        }
    }

    /// Every message up to `end` (acknowledged as it arrives), `end` excluded.
    async fn until_end(&mut self) -> Vec<Got> {
        let mut got = Vec::new();
        loop {
            match self.client.recv().await {
                Packet::Publish(p) => {
                    if let Some(id) = p.packet_id {
                        let ack = match p.qos {
                            QoS::ExactlyOnce => Packet::PubRec(Ack::new(id)),
                            _ => Packet::PubAck(Ack::new(id)),
                        };
                        self.client.send(ack).await;
                    }
                    if &*p.topic == END {
                        return got;
                    }
                    got.push(Got {
                        topic: p.topic.to_string(),
                        payload: p.payload,
                        qos: p.qos,
                    });
                }
                Packet::PubRel(rel) => {
                    self.client
                        .send(Packet::PubComp(Ack::new(rel.packet_id)))
                        .await;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    /// DISCONNECT (reason 0) and wait for the close.
    async fn leave(mut self) {
        self.client
            .send(Packet::Disconnect(Disconnect {
                reason: 0,
                properties: None,
            }))
            .await;
        self.client.expect_closed().await;
    }
}

/// A QoS 1 publisher (rumqttc, MQTT 3.1.1) that waits for every PUBACK.
async fn publisher(addr: std::net::SocketAddr) -> Client {
    Client::connect(addr, "publisher").await
}

/// Publish `n` QoS 1 messages `0..n` on `topic`, then `end`.
async fn publish_then_end(publisher: &mut Client, topic: &str, n: usize) {
    for i in 0..n {
        publisher
            .publish(
                topic,
                rumqttc::QoS::AtLeastOnce,
                false,
                i.to_string().as_bytes(),
            )
            .await;
    }
    publisher
        .publish(END, rumqttc::QoS::AtLeastOnce, false, b"")
        .await;
}

fn payloads(got: &[Got]) -> BTreeSet<String> {
    got.iter()
        .map(|g| String::from_utf8_lossy(&g.payload).into_owned())
        .collect()
}

fn numbers(n: usize) -> BTreeSet<String> {
    (0..n).map(|i| i.to_string()).collect()
}

#[tokio::test]
async fn six_messages_over_two_members_go_to_exactly_one_each_in_turn() {
    let broker = TestBroker::default().await;
    let mut a = Member::v5(broker.addr, "a").await;
    let mut b = Member::v5(broker.addr, "b").await;
    assert_eq!(a.join(&[("$share/g/s/t", QoS::AtLeastOnce)]).await, [1]);
    assert_eq!(b.join(&[("$share/g/s/t", QoS::AtLeastOnce)]).await, [1]);
    let mut publisher = publisher(broker.addr).await;
    publish_then_end(&mut publisher, "s/t", 6).await;
    let (got_a, got_b) = (a.until_end().await, b.until_end().await);
    assert_eq!(got_a.len(), 3, "round robin: half each, a got {got_a:?}");
    assert_eq!(got_b.len(), 3, "round robin: half each, b got {got_b:?}");
    let (pa, pb) = (payloads(&got_a), payloads(&got_b));
    assert!(pa.is_disjoint(&pb), "no message twice: {pa:?} {pb:?}");
    assert_eq!(&pa | &pb, numbers(6));
    assert!(got_a.iter().chain(&got_b).all(|g| g.topic == "s/t"));
    broker.shutdown().await;
}

#[tokio::test]
async fn a_member_with_a_plain_subscription_too_gets_both_copies() {
    let broker = TestBroker::default().await;
    let mut a = Member::v5(broker.addr, "a").await;
    let mut b = Member::v5(broker.addr, "b").await;
    a.join(&[
        ("s/t", QoS::AtLeastOnce),
        ("$share/g/s/+", QoS::AtLeastOnce),
    ])
    .await;
    b.join(&[("$share/g/s/+", QoS::AtLeastOnce)]).await;
    let mut publisher = publisher(broker.addr).await;
    publish_then_end(&mut publisher, "s/t", 4).await;
    let (got_a, got_b) = (a.until_end().await, b.until_end().await);
    // a: four plain copies and its turns in the group (two); b: its two turns.
    assert_eq!(got_a.len(), 6, "{got_a:?}");
    assert_eq!(got_b.len(), 2, "{got_b:?}");
    assert_eq!(payloads(&got_a), numbers(4));
    broker.shutdown().await;
}

#[tokio::test]
async fn every_matching_group_gets_its_own_copy() {
    let broker = TestBroker::default().await;
    let mut a = Member::v5(broker.addr, "a").await;
    let mut b = Member::v5(broker.addr, "b").await;
    let mut c = Member::v5(broker.addr, "c").await;
    a.join(&[("$share/one/s/t", QoS::AtLeastOnce)]).await;
    b.join(&[("$share/one/s/t", QoS::AtLeastOnce)]).await;
    // Another group on another filter that matches too.
    c.join(&[("$share/two/s/#", QoS::AtLeastOnce)]).await;
    let mut publisher = publisher(broker.addr).await;
    publish_then_end(&mut publisher, "s/t", 4).await;
    let (got_a, got_b, got_c) = (
        a.until_end().await,
        b.until_end().await,
        c.until_end().await,
    );
    assert_eq!(payloads(&got_c), numbers(4), "group two: all four");
    assert_eq!(got_c.len(), 4);
    assert_eq!(got_a.len() + got_b.len(), 4, "group one: each once");
    assert_eq!(&payloads(&got_a) | &payloads(&got_b), numbers(4));
    broker.shutdown().await;
}

#[tokio::test]
async fn a_member_that_unsubscribes_leaves_the_group() {
    let broker = TestBroker::default().await;
    let mut a = Member::v5(broker.addr, "a").await;
    let mut b = Member::v5(broker.addr, "b").await;
    a.join(&[("$share/g/s/t", QoS::AtLeastOnce)]).await;
    b.join(&[("$share/g/s/t", QoS::AtLeastOnce)]).await;
    assert_eq!(a.unsubscribe("$share/g/s/t").await, 0x00);
    assert_eq!(a.unsubscribe("$share/g/s/t").await, 0x11, "no longer there");
    assert_eq!(
        a.unsubscribe("$share/other/s/t").await,
        0x11,
        "never in that group"
    );
    let mut publisher = publisher(broker.addr).await;
    publish_then_end(&mut publisher, "s/t", 4).await;
    assert_eq!(a.until_end().await, []);
    assert_eq!(payloads(&b.until_end().await), numbers(4));
    broker.shutdown().await;
}

#[tokio::test]
async fn each_member_receives_at_its_own_granted_qos() {
    let broker = TestBroker::default().await;
    let mut a = Member::v5(broker.addr, "a").await;
    let mut b = Member::v5(broker.addr, "b").await;
    assert_eq!(a.join(&[("$share/g/s/t", QoS::AtMostOnce)]).await, [0]);
    assert_eq!(b.join(&[("$share/g/s/t", QoS::ExactlyOnce)]).await, [2]);
    let mut publisher = publisher(broker.addr).await;
    // QoS 2 publishes: a gets them at 0, b at 2.
    for i in 0..4 {
        publisher
            .publish(
                "s/t",
                rumqttc::QoS::ExactlyOnce,
                false,
                i.to_string().as_bytes(),
            )
            .await;
    }
    publisher
        .publish(END, rumqttc::QoS::AtLeastOnce, false, b"")
        .await;
    let (got_a, got_b) = (a.until_end().await, b.until_end().await);
    assert_eq!(got_a.len() + got_b.len(), 4);
    assert!(got_a.iter().all(|g| g.qos == QoS::AtMostOnce), "{got_a:?}");
    assert!(got_b.iter().all(|g| g.qos == QoS::ExactlyOnce), "{got_b:?}");
    assert!(!got_a.is_empty() && !got_b.is_empty());
    broker.shutdown().await;
}

#[tokio::test]
async fn online_members_get_everything_and_an_all_offline_group_queues_for_a_kept_member() {
    let broker = TestBroker::default().await;
    let (mut kept, _) = Member::v5_kept(broker.addr, "kept", 300).await;
    let mut online = Member::v5(broker.addr, "online").await;
    kept.join(&[("$share/g/s/t", QoS::AtLeastOnce)]).await;
    online.join(&[("$share/g/s/t", QoS::AtLeastOnce)]).await;
    kept.leave().await;
    let mut publisher = publisher(broker.addr).await;
    publish_then_end(&mut publisher, "s/t", 4).await;
    assert_eq!(
        payloads(&online.until_end().await),
        numbers(4),
        "the offline member's turns go to the online one"
    );
    // The online member's session ends with it; the kept one is the only member left.
    online.leave().await;
    publish_then_end(&mut publisher, "s/t", 3).await;
    let (mut kept, present) = Member::v5_kept(broker.addr, "kept", 300).await;
    assert!(present);
    assert_eq!(
        kept.until_end().await,
        [],
        "nothing of the first round, while the other member was online (only its `end`)"
    );
    assert_eq!(
        payloads(&kept.until_end().await),
        numbers(3),
        "queued for the kept member while the group was offline"
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn retained_messages_are_not_sent_on_a_shared_subscription() {
    let broker = TestBroker::default().await;
    let mut publisher = publisher(broker.addr).await;
    publisher
        .publish("s/t", rumqttc::QoS::AtLeastOnce, true, b"retained")
        .await;
    let mut a = Member::v5(broker.addr, "a").await;
    a.join(&[("$share/g/s/t", QoS::AtLeastOnce)]).await;
    let mut plain = Member::v5(broker.addr, "plain").await;
    plain.join(&[("s/t", QoS::AtLeastOnce)]).await;
    publisher
        .publish(END, rumqttc::QoS::AtLeastOnce, false, b"")
        .await;
    assert_eq!(a.until_end().await, [], "no retained message on $share");
    let got = plain.until_end().await;
    assert_eq!(payloads(&got), ["retained".to_owned()].into(), "control");
    broker.shutdown().await;
}

/// A SUBSCRIBE with one filter and explicit options, answered with SUBACK codes.
fn subscribe_with(filter: &str, qos: QoS, no_local: bool) -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id: 7,
        filters: vec![(
            filter.into(),
            SubscriptionOptions {
                qos,
                no_local,
                retain_as_published: false,
                retain_handling: RetainHandling::SendAtSubscribe,
            },
        )],
        properties: None,
    })
}

#[tokio::test]
async fn no_local_on_a_shared_subscription_is_a_protocol_error() {
    let broker = TestBroker::default().await;
    let mut a = Member::v5(broker.addr, "a").await;
    a.client
        .send(subscribe_with("$share/g/s/t", QoS::AtLeastOnce, true))
        .await;
    match a.client.recv().await {
        Packet::Disconnect(d) => assert_eq!(d.reason, 0x82, "protocol error (3.8.3-4)"),
        other => panic!("expected DISCONNECT 0x82, got {other:?}"),
    }
    a.client.expect_closed().await;
    broker.shutdown().await;
}

#[tokio::test]
async fn malformed_share_names_are_refused_with_topic_filter_invalid() {
    let broker = TestBroker::default().await;
    for bad in ["$share/g", "$share//s/t", "$share/g/", "$share/g+/s/t"] {
        // MQTT 5: the whole SUBSCRIBE is malformed (4.8.2-1/-2): DISCONNECT 0x8F.
        let mut v5 = Member::v5(broker.addr, "v5").await;
        v5.client
            .send(subscribe_with(bad, QoS::AtLeastOnce, false))
            .await;
        match v5.client.recv().await {
            Packet::Disconnect(d) => assert_eq!(d.reason, 0x8F, "{bad}"),
            other => panic!("{bad}: expected DISCONNECT 0x8F, got {other:?}"),
        }
        v5.client.expect_closed().await;
    }
    // MQTT 3.1.1: that filter fails (0x80), the others of the packet are granted.
    let mut v3 = Member::v3(broker.addr, "v3").await;
    assert_eq!(v3.client.version, ProtocolVersion::V311);
    let filters = [
        ("$share/g", QoS::AtLeastOnce),
        ("$share//s/t", QoS::AtLeastOnce),
        ("$share/g/", QoS::AtLeastOnce),
        ("$share/g/s/t", QoS::AtLeastOnce),
    ];
    assert_eq!(
        v3.client.subscribe(1, &filters).await,
        [0x80, 0x80, 0x80, 1]
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn mqtt_3_1_1_members_share_like_mqtt_5_ones() {
    let broker = TestBroker::default().await;
    let mut a = Member::v3(broker.addr, "a").await;
    let mut b = Member::v5(broker.addr, "b").await;
    a.join(&[("$share/g/s/t", QoS::AtLeastOnce)]).await;
    b.join(&[("$share/g/s/t", QoS::AtLeastOnce)]).await;
    let mut publisher = publisher(broker.addr).await;
    publish_then_end(&mut publisher, "s/t", 6).await;
    let (got_a, got_b) = (a.until_end().await, b.until_end().await);
    assert_eq!((got_a.len(), got_b.len()), (3, 3));
    assert_eq!(&payloads(&got_a) | &payloads(&got_b), numbers(6));
    broker.shutdown().await;
}

#[tokio::test]
async fn rumqttc_clients_share_a_subscription() {
    let broker = TestBroker::default().await;
    let mut a = Client::connect(broker.addr, "rumqttc-a").await;
    let mut b = Client::connect(broker.addr, "rumqttc-b").await;
    for member in [&mut a, &mut b] {
        let codes = member
            .subscribe("$share/g/s/t", rumqttc::QoS::AtLeastOnce)
            .await;
        assert_eq!(
            codes,
            [rumqttc::SubscribeReasonCode::Success(
                rumqttc::QoS::AtLeastOnce
            )]
        );
        member.subscribe(END, rumqttc::QoS::AtLeastOnce).await;
    }
    let mut publisher = publisher(broker.addr).await;
    publish_then_end(&mut publisher, "s/t", 4).await;
    let mut counts = Vec::new();
    for member in [&mut a, &mut b] {
        let mut n = 0;
        while member.next_publish().await.topic != END {
            n += 1;
        }
        counts.push(n);
    }
    assert_eq!(counts, [2, 2]);
    broker.shutdown().await;
}

/// A broker whose shared subscriptions use `strategy`.
async fn broker_with_strategy(strategy: &str) -> TestBroker {
    TestBroker::from_xml(&xml_with_strategy(strategy)).await
}

#[tokio::test]
async fn the_sticky_strategy_keeps_one_member_and_hash_keeps_one_per_publisher() {
    for strategy in ["sticky", "hash-client-id"] {
        let broker = broker_with_strategy(strategy).await;
        let mut a = Member::v5(broker.addr, "a").await;
        let mut b = Member::v5(broker.addr, "b").await;
        a.join(&[("$share/g/s/t", QoS::AtLeastOnce)]).await;
        b.join(&[("$share/g/s/t", QoS::AtLeastOnce)]).await;
        let mut publisher = publisher(broker.addr).await;
        publish_then_end(&mut publisher, "s/t", 6).await;
        let mut counts = [a.until_end().await.len(), b.until_end().await.len()];
        counts.sort_unstable();
        assert_eq!(counts, [0, 6], "{strategy}: one member gets them all");
        broker.shutdown().await;
    }
}

fn in_order(got: &[Got]) -> Vec<String> {
    got.iter()
        .map(|g| String::from_utf8_lossy(&g.payload).into_owned())
        .collect()
}

/// Members a, b, c (sessions created in that order); a has the turn (round robin: it got the
/// first message; sticky: it got them all) and leaves: the next message goes to b, the next
/// member in turn, not c (the turn was a position that shifted when a left).
#[tokio::test]
async fn when_the_current_member_leaves_the_next_member_in_turn_gets_the_next_message() {
    let cases: [(&str, usize, &[&str], &[&str]); 2] = [
        ("round-robin", 1, &["0", "2"], &["1"]),
        ("sticky", 3, &["0", "1", "2"], &[]),
    ];
    for (strategy, before, to_b, to_c) in cases {
        let broker = broker_with_strategy(strategy).await;
        let mut a = Member::v5(broker.addr, "a").await;
        let mut b = Member::v5(broker.addr, "b").await;
        let mut c = Member::v5(broker.addr, "c").await;
        for member in [&mut a, &mut b, &mut c] {
            member.join(&[("$share/g/s/t", QoS::AtLeastOnce)]).await;
        }
        let mut publisher = publisher(broker.addr).await;
        publish_then_end(&mut publisher, "s/t", before).await;
        assert_eq!(
            payloads(&a.until_end().await),
            numbers(before),
            "{strategy}"
        );
        assert_eq!(b.until_end().await, [], "{strategy}");
        assert_eq!(c.until_end().await, [], "{strategy}");
        a.leave().await;
        publish_then_end(&mut publisher, "s/t", 3).await;
        assert_eq!(
            in_order(&b.until_end().await),
            to_b,
            "{strategy}: b is next"
        );
        assert_eq!(in_order(&c.until_end().await), to_c, "{strategy}");
        broker.shutdown().await;
    }
}

#[tokio::test]
async fn the_random_strategy_sends_each_message_to_one_member() {
    let broker = broker_with_strategy("random").await;
    let mut a = Member::v5(broker.addr, "a").await;
    let mut b = Member::v5(broker.addr, "b").await;
    a.join(&[("$share/g/s/t", QoS::AtLeastOnce)]).await;
    b.join(&[("$share/g/s/t", QoS::AtLeastOnce)]).await;
    let mut publisher = publisher(broker.addr).await;
    publish_then_end(&mut publisher, "s/t", 20).await;
    let (got_a, got_b) = (a.until_end().await, b.until_end().await);
    assert_eq!(got_a.len() + got_b.len(), 20);
    assert_eq!(&payloads(&got_a) | &payloads(&got_b), numbers(20));
    broker.shutdown().await;
}

#[tokio::test]
async fn a_negative_acknowledgement_discards_the_message() {
    let broker = TestBroker::default().await;
    let mut a = Member::v5(broker.addr, "a").await;
    let mut b = Member::v5(broker.addr, "b").await;
    a.join(&[("$share/g/s/t", QoS::AtLeastOnce)]).await;
    b.join(&[("$share/g/s/t", QoS::AtLeastOnce)]).await;
    let mut publisher = publisher(broker.addr).await;
    publisher
        .publish("s/t", rumqttc::QoS::AtLeastOnce, false, b"refused")
        .await;
    // Round robin starts with the member whose session is oldest: a. It refuses the message
    // (PUBACK 0x80, 4.8.2-6), then leaves, ending its session.
    let p = a.client.recv_publish().await;
    assert_eq!(p.payload, Bytes::from_static(b"refused"));
    a.client
        .send(Packet::PubAck(Ack {
            reason: 0x80,
            ..Ack::new(p.packet_id.expect("QoS 1"))
        }))
        .await;
    let (mut refuser, mut other) = (a, b);
    // Answered in order: once `end` arrives the refusal has been read.
    publisher
        .publish(END, rumqttc::QoS::AtLeastOnce, false, b"")
        .await;
    assert_eq!(refuser.until_end().await, []);
    refuser.leave().await;
    publisher
        .publish(END, rumqttc::QoS::AtLeastOnce, false, b"")
        .await;
    assert_eq!(other.until_end().await, [], "not sent to another member");
    broker.shutdown().await;
}

#[tokio::test]
async fn a_shared_delivery_carries_the_members_subscription_identifier_and_options() {
    let broker = TestBroker::default().await;
    let mut a = Member::v5(broker.addr, "a").await;
    let Packet::Subscribe(mut subscribe) = subscribe_with("$share/g/s/t", QoS::AtLeastOnce, false)
    else {
        unreachable!()
    };
    subscribe.filters[0].1.retain_as_published = true;
    subscribe.properties = Some(Box::new(Properties {
        subscription_identifiers: vec![42],
        ..Properties::default()
    }));
    a.client.send(Packet::Subscribe(subscribe)).await;
    match a.client.recv().await {
        Packet::SubAck(ack) => assert_eq!(ack.return_codes, [1]),
        other => panic!("expected SUBACK, got {other:?}"),
    }
    let mut publisher = publisher(broker.addr).await;
    publisher
        .publish("s/t", rumqttc::QoS::AtLeastOnce, true, b"kept")
        .await;
    let p = a.client.recv_publish().await;
    assert_eq!(p.payload, Bytes::from_static(b"kept"));
    let ids = p.properties.map(|props| props.subscription_identifiers);
    assert_eq!(ids, Some(vec![42]), "the member's identifier (3.3.4-3)");
    assert!(p.retain, "Retain As Published applies to the member's copy");
    broker.shutdown().await;
}

/// An MQTT 5 member (session ends at disconnect) that takes one unacknowledged QoS 1/2
/// message at a time (Receive Maximum 1), so later ones wait in its queue.
async fn narrow_member(addr: std::net::SocketAddr, id: &str) -> Member {
    let mut connect = connect_v5(id, true, None);
    connect.properties = Some(Box::new(Properties {
        receive_maximum: Some(1),
        ..Properties::default()
    }));
    let (client, _) = RawClient::connect_ok(addr, connect).await;
    Member { client }
}

#[tokio::test]
async fn copies_unfinished_by_a_member_whose_session_ends_go_to_another_member() {
    let broker = TestBroker::default().await;
    let mut a = narrow_member(broker.addr, "a").await;
    a.join(&[("$share/g/s/t", QoS::AtLeastOnce)]).await;
    let mut publisher = publisher(broker.addr).await;
    publish_then_end(&mut publisher, "s/t", 3).await;
    // a is alone in the group: "0" in flight (never acknowledged), "1", "2" and `end` queued.
    let first = a.client.recv_publish().await;
    assert_eq!(first.payload, Bytes::from_static(b"0"));
    let mut b = Member::v5(broker.addr, "b").await;
    b.join(&[("$share/g/s/t", QoS::AtLeastOnce)]).await;
    // a leaves cleanly: its session ends, with one copy in flight and two queued.
    a.leave().await;
    publisher
        .publish(END, rumqttc::QoS::AtLeastOnce, false, b"")
        .await;
    assert_eq!(
        payloads(&b.until_end().await),
        numbers(3),
        "handed to b (4.8.2: SHOULD send to another member)"
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn a_takeover_with_clean_start_hands_the_old_sessions_copies_over() {
    let broker = TestBroker::default().await;
    let (mut a, _) = Member::v5_kept(broker.addr, "a", 300).await;
    a.join(&[("$share/g/s/t", QoS::AtLeastOnce)]).await;
    let mut b = Member::v5(broker.addr, "b").await;
    b.join(&[("$share/g/s/t", QoS::AtLeastOnce)]).await;
    let mut publisher = publisher(broker.addr).await;
    publisher
        .publish("s/t", rumqttc::QoS::AtLeastOnce, false, b"first")
        .await;
    // Round robin starts with a (the older session): it leaves it unacknowledged.
    assert_eq!(
        a.client.recv_publish().await.payload,
        Bytes::from_static(b"first")
    );
    // The same client id comes back with clean start: the old session ends (3.1.2-4).
    let (_a2, ack) = RawClient::connect_ok(broker.addr, connect_v5("a", true, None)).await;
    assert!(!ack.session_present);
    a.client.expect_closed().await;
    publisher
        .publish(END, rumqttc::QoS::AtLeastOnce, false, b"")
        .await;
    assert_eq!(payloads(&b.until_end().await), ["first".to_owned()].into());
    broker.shutdown().await;
}

#[tokio::test]
async fn a_qos_2_copy_already_sent_is_not_handed_to_another_member() {
    let broker = TestBroker::default().await;
    let mut a = Member::v5(broker.addr, "a").await;
    a.join(&[("$share/g/s/t", QoS::ExactlyOnce)]).await;
    let mut b = Member::v5(broker.addr, "b").await;
    b.join(&[("$share/g/s/t", QoS::ExactlyOnce)]).await;
    let mut publisher = publisher(broker.addr).await;
    publisher
        .publish("s/t", rumqttc::QoS::ExactlyOnce, false, b"once")
        .await;
    let p = a.client.recv_publish().await;
    assert_eq!(p.qos, QoS::ExactlyOnce);
    // a ends its session before PUBREC: the delivery may only complete on a's session
    // (4.8.2-5), which is gone, so nobody gets it.
    a.leave().await;
    publisher
        .publish(END, rumqttc::QoS::AtLeastOnce, false, b"")
        .await;
    assert_eq!(b.until_end().await, []);
    broker.shutdown().await;
}

/// Readers may read `sensors.>` only; devices write it (ActiveMQ's wildcard syntax).
const SECURITY: &str = r#"
    <plugins>
      <simpleAuthenticationPlugin>
        <users>
          <authenticationUser username="sensor" password="s3nsor" groups="devices"/>
          <authenticationUser username="reader" password="r3ad" groups="readers"/>
        </users>
      </simpleAuthenticationPlugin>
      <authorizationPlugin><map><authorizationMap><authorizationEntries>
        <authorizationEntry topic="sensors.>" read="readers" write="devices" admin="devices"/>
      </authorizationEntries></authorizationMap></map></authorizationPlugin>
    </plugins>"#;

#[tokio::test]
async fn authorization_applies_to_the_filter_inside_the_share() {
    let broker = TestBroker::from_xml(&activemq_xml(&[], SECURITY)).await;
    let mut login = connect_v5("reader5", true, None);
    login.username = Some("reader".into());
    login.password = Some(Bytes::from_static(b"r3ad"));
    let (mut v5, _) = RawClient::connect_ok(broker.addr, login).await;
    let filters = [
        ("$share/g/sensors/#", QoS::AtLeastOnce),
        ("$share/g/admin/x", QoS::AtLeastOnce),
        // The share name does not grant anything either.
        ("$share/sensors/admin/x", QoS::AtLeastOnce),
    ];
    assert_eq!(v5.subscribe(1, &filters).await, [1, 0x87, 0x87]);
    let mut v3 = Client::login(broker.addr, "reader3", "reader", "r3ad").await;
    assert_eq!(
        v3.subscribe("$share/g/sensors/#", rumqttc::QoS::AtLeastOnce)
            .await,
        [rumqttc::SubscribeReasonCode::Success(
            rumqttc::QoS::AtLeastOnce
        )]
    );
    assert_eq!(
        v3.subscribe("$share/g/admin/x", rumqttc::QoS::AtLeastOnce)
            .await,
        [rumqttc::SubscribeReasonCode::Failure]
    );
    let mut sensor = Client::login(broker.addr, "sensor", "sensor", "s3nsor").await;
    for reading in [b"1", b"2"] {
        sensor
            .publish("sensors/t", rumqttc::QoS::AtLeastOnce, false, reading)
            .await;
    }
    // One group with two members: one reading each.
    assert_eq!(&v5.recv_publish().await.payload[..], b"1");
    assert_eq!(&v3.next_publish().await.payload[..], b"2");
    broker.shutdown().await;
}

/// A memory broker (one connector on port 0) with `strategy`.
fn xml_with_strategy(strategy: &str) -> String {
    activemq_xml(
        &[],
        &format!(
            r#"<ferromq:sharedSubscriptions xmlns:ferromq="urn:ferromq" strategy="{strategy}"/>"#
        ),
    )
}

#[tokio::test]
async fn a_reloaded_strategy_applies_to_the_next_messages() {
    let mut live = LiveBroker::start(&xml_with_strategy("sticky"), true).await;
    let addr = live.addr("mqtt").await.expect("mqtt listening");
    let mut a = Member::v5(addr, "a").await;
    let mut b = Member::v5(addr, "b").await;
    a.join(&[("$share/g/s/t", QoS::AtLeastOnce)]).await;
    b.join(&[("$share/g/s/t", QoS::AtLeastOnce)]).await;
    let mut publisher = publisher(addr).await;
    publish_then_end(&mut publisher, "s/t", 4).await;
    let mut counts = [a.until_end().await.len(), b.until_end().await.len()];
    counts.sort_unstable();
    assert_eq!(counts, [0, 4], "sticky");

    let stats = live.edit(&xml_with_strategy("round-robin")).await;
    assert_eq!(
        (stats.reloads_ok, stats.reloads_failed),
        (1, 0),
        "{stats:?}"
    );
    publish_then_end(&mut publisher, "s/t", 4).await;
    let counts = [a.until_end().await.len(), b.until_end().await.len()];
    assert_eq!(counts, [2, 2], "round robin from the reload on");
    live.shutdown().await;
}

/// `reader` may read `sensors.>` and `end` when `reader_reads_sensors`; `boss` reads and
/// writes everything; `extra` users are added as admins.
fn secured_xml(reader_reads_sensors: bool, extra: &str) -> String {
    let sensors_readers = if reader_reads_sensors {
        "admins,readers"
    } else {
        "admins"
    };
    activemq_xml(
        &[],
        &format!(
            r#"<plugins>
      <simpleAuthenticationPlugin><users>
        <authenticationUser username="boss" password="b" groups="admins"/>
        <authenticationUser username="reader" password="r" groups="readers"/>{extra}
      </users></simpleAuthenticationPlugin>
      <authorizationPlugin><map><authorizationMap><authorizationEntries>
        <authorizationEntry topic=">" read="admins" write="admins" admin="admins"/>
        <authorizationEntry topic="sensors.>" read="{sensors_readers}" write="admins" admin="admins"/>
        <authorizationEntry topic="end" read="admins,readers" write="admins" admin="admins,readers"/>
      </authorizationEntries></authorizationMap></map></authorizationPlugin>
    </plugins>"#
        ),
    )
}

/// An MQTT 5 member logged in as `user`.
async fn member_as(addr: std::net::SocketAddr, id: &str, user: &str, password: &str) -> Member {
    let mut connect = connect_v5(id, true, None);
    connect.username = Some(user.into());
    connect.password = Some(Bytes::copy_from_slice(password.as_bytes()));
    let (client, _) = RawClient::connect_ok(addr, connect).await;
    Member { client }
}

#[tokio::test]
async fn a_reload_keeps_shared_subscriptions_it_allows_and_removes_those_it_denies() {
    let mut live = LiveBroker::start(&secured_xml(true, ""), true).await;
    let addr = live.addr("mqtt").await.expect("mqtt listening");
    let mut reader = member_as(addr, "reader", "reader", "r").await;
    let mut boss = member_as(addr, "boss", "boss", "b").await;
    assert_eq!(
        reader
            .join(&[("$share/g/sensors/#", QoS::AtLeastOnce)])
            .await,
        [1]
    );
    assert_eq!(
        boss.join(&[("$share/g/sensors/#", QoS::AtLeastOnce)]).await,
        [1]
    );
    let mut publisher = Client::login(addr, "pub", "boss", "b").await;

    // A reload that changes the security model but still lets the reader read sensors/#:
    // its shared subscription stays (judged by the filter inside the share).
    let user = r#"<authenticationUser username="new" password="n" groups="admins"/>"#;
    let stats = live.edit(&secured_xml(true, user)).await;
    assert_eq!(
        (stats.reloads_ok, stats.reloads_failed),
        (1, 0),
        "{stats:?}"
    );
    publish_then_end(&mut publisher, "sensors/t", 4).await;
    assert_eq!(reader.until_end().await.len(), 2, "still in the group");
    assert_eq!(boss.until_end().await.len(), 2);

    // A reload that denies it: the reader's shared subscription goes.
    let stats = live.edit(&secured_xml(false, user)).await;
    assert_eq!(
        (stats.reloads_ok, stats.reloads_failed),
        (2, 0),
        "{stats:?}"
    );
    publish_then_end(&mut publisher, "sensors/t", 4).await;
    assert_eq!(reader.until_end().await, [], "denied now");
    publisher.disconnect().await;
    live.shutdown().await;
}
