//! QoS 2 exactly once across nodes, with real clients: rumqttc's MQTT 5 client publishing
//! and subscribing at QoS 2 on different nodes; the raw client for exact packets: a PUBLISH
//! re-sent (DUP) on another node after the connection dropped before PUBREL, a PUBREL sent
//! to another node than its PUBLISH, a packet id reused after PUBCOMP and by a new session
//! (clean start), an outbound exchange resumed on another node (PUBREL re-sent, not the
//! PUBLISH; or the PUBLISH with DUP), a subscriber moving between nodes right after its
//! PUBRECs while a publisher goes on, and the SIGKILL of the node serving both ends in the
//! middle of a flow: every message delivered exactly once.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferromq::protocol::{Ack, Disconnect, Packet, Publish, QoS};

use super::rig::{next_publish, no_publish, publish, v3_ok, v5_ok, Rig, FAST};
use crate::support::client::RawClient;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos2_exactly_once_across_nodes() {
    let Some(mut rig) = Rig::start(3, FAST).await else {
        return;
    };
    advertised_and_granted(&rig).await;
    rumqttc_v5_publishes_and_subscribes_at_qos2_on_different_nodes(&rig).await;
    a_publish_resent_on_another_node_is_delivered_once(&rig).await;
    a_pubrel_on_another_node_releases_the_message_once(&rig).await;
    a_packet_id_reused_after_pubcomp_or_by_a_new_session_is_a_new_message(&rig).await;
    a_packet_id_reused_right_after_its_pubrel_keeps_both_messages(&rig).await;
    an_outbound_exchange_resumes_on_another_node_by_its_state(&rig).await;
    a_subscriber_hopping_between_nodes_mid_flow_gets_each_message_once(&rig).await;
    a_shared_subscription_gets_a_qos2_message_once_at_qos1(&rig).await;
    // Last: it kills node 0.
    a_node_killed_mid_flow_delivers_every_message_once(&mut rig).await;
}

fn pubrec(id: u16) -> Packet {
    Packet::PubRec(Ack::new(id))
}
fn pubrel(id: u16) -> Packet {
    Packet::PubRel(Ack::new(id))
}
fn pubcomp(id: u16) -> Packet {
    Packet::PubComp(Ack::new(id))
}

fn dup(packet: Packet) -> Packet {
    match packet {
        Packet::Publish(p) => Packet::Publish(Publish { dup: true, ..p }),
        other => other,
    }
}

/// The next packet that is not a PUBLISH or PINGRESP... : the acknowledgement `want`
/// (PUBREC / PUBCOMP / PUBREL) of `id`, within 10 s; PUBLISHes met meanwhile are returned.
async fn expect_ack(client: &mut RawClient, want: &str, id: u16) -> (u8, Vec<Publish>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut skipped = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match client.recv_within(left).await {
            Some(Packet::PubRec(a)) if want == "PUBREC" && a.packet_id == id => {
                return (a.reason, skipped)
            }
            Some(Packet::PubComp(a)) if want == "PUBCOMP" && a.packet_id == id => {
                return (a.reason, skipped)
            }
            Some(Packet::PubRel(a)) if want == "PUBREL" && a.packet_id == id => {
                return (a.reason, skipped)
            }
            Some(Packet::Publish(p)) => skipped.push(p),
            Some(Packet::PingResp) => {}
            Some(other) => panic!("expected {want} {id}, got {other:?}"),
            None => panic!("no {want} for {id}"),
        }
    }
}

fn disconnect() -> Packet {
    Packet::Disconnect(Disconnect {
        reason: 0,
        properties: None,
    })
}

/// A QoS 2 subscriber on `addr` (a clean session) that got its SUBACK.
async fn subscriber(addr: SocketAddr, id: &str, filter: &str) -> RawClient {
    let (mut sub, _) = v5_ok(addr, id, true, None).await;
    assert_eq!(sub.subscribe(1, &[(filter, QoS::ExactlyOnce)]).await, [2]);
    sub
}

/// Receive one QoS 2 message completely (PUBREC, PUBREL, PUBCOMP); its payload.
async fn receive_qos2(sub: &mut RawClient) -> Vec<u8> {
    let p = next_publish(sub).await;
    assert_eq!(p.qos, QoS::ExactlyOnce);
    let id = p.packet_id.expect("QoS 2 has a packet id");
    sub.send(pubrec(id)).await;
    expect_ack(sub, "PUBREL", id).await;
    sub.send(pubcomp(id)).await;
    p.payload.to_vec()
}

async fn advertised_and_granted(rig: &Rig) {
    for node in 0..3 {
        let (mut v5, ack) = v5_ok(rig.addr(node), "q2-adv", true, None).await;
        let props = ack.properties.expect("CONNACK properties");
        assert_eq!(
            props.maximum_qos, None,
            "node {node}: Maximum QoS absent = 2"
        );
        assert_eq!(v5.subscribe(1, &[("q2/adv", QoS::ExactlyOnce)]).await, [2]);
        let (mut v3, _) = v3_ok(rig.addr(node), "q2-adv-3", true).await;
        assert_eq!(v3.subscribe(1, &[("q2/adv", QoS::ExactlyOnce)]).await, [2]);
    }
    // An MQTT 5 will at QoS 2 is accepted and published at QoS 2 on another node.
    let mut sub = subscriber(rig.addr(1), "q2-will-sub", "q2/will").await;
    let mut connect = crate::support::client::connect_v5("q2-will", true, None);
    connect.will = Some(crate::support::client::will(
        "q2/will",
        b"gone",
        QoS::ExactlyOnce,
        false,
    ));
    let (mut with_will, ack) = RawClient::connect(rig.addr(0), connect).await;
    assert_eq!(ack.reason, ferromq::protocol::ConnectReason::Success);
    with_will
        .send(Packet::Disconnect(Disconnect {
            reason: 0x04, // Disconnect with Will Message
            properties: None,
        }))
        .await;
    assert_eq!(receive_qos2(&mut sub).await, b"gone");
}

async fn rumqttc_v5_publishes_and_subscribes_at_qos2_on_different_nodes(rig: &Rig) {
    use rumqttc::v5::mqttbytes::v5::Packet as V5Packet;
    use rumqttc::v5::mqttbytes::QoS as V5QoS;
    use rumqttc::v5::Event;
    const N: usize = 20;
    let (sub, mut sub_events) = rumqttc_v5(rig.addr(0), "q2-rq-sub");
    sub.subscribe("q2/rq/#", V5QoS::ExactlyOnce)
        .await
        .expect("subscribe");
    // Wait for the SUBACK before publishing.
    loop {
        match sub_events.recv().await.expect("subscriber events") {
            Event::Incoming(V5Packet::SubAck(ack)) => {
                assert_eq!(
                    format!("{:?}", ack.return_codes),
                    "[Success(ExactlyOnce)]",
                    "granted QoS 2"
                );
                break;
            }
            _ => continue,
        }
    }
    let (publisher, mut pub_events) = rumqttc_v5(rig.addr(1), "q2-rq-pub");
    for n in 0..N {
        publisher
            .publish(
                "q2/rq/t",
                V5QoS::ExactlyOnce,
                false,
                format!("rq{n:02}").into_bytes(),
            )
            .await
            .expect("publish");
    }
    let mut completed = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while completed < N {
        match tokio::time::timeout_at(deadline, pub_events.recv()).await {
            Ok(Some(Event::Incoming(V5Packet::PubComp(_)))) => completed += 1,
            Ok(Some(_)) => {}
            other => panic!("PUBCOMP {completed} of {N}: {other:?}"),
        }
    }
    let mut got = Vec::new();
    let end = tokio::time::Instant::now() + Duration::from_secs(20);
    // Every message, then nothing more for 1 s.
    loop {
        let wait = if got.len() < N {
            end
        } else {
            tokio::time::Instant::now() + Duration::from_secs(1)
        };
        match tokio::time::timeout_at(wait, sub_events.recv()).await {
            Ok(Some(Event::Incoming(V5Packet::Publish(p)))) => {
                assert_eq!(p.qos, V5QoS::ExactlyOnce);
                got.push(String::from_utf8_lossy(&p.payload).into_owned());
            }
            Ok(Some(_)) => {}
            Ok(None) => panic!("subscriber event loop ended"),
            Err(_) if got.len() >= N => break,
            Err(_) => panic!("got {} of {N}: {got:?}", got.len()),
        }
    }
    let want: Vec<String> = (0..N).map(|n| format!("rq{n:02}")).collect();
    assert_eq!(got, want, "each once, in order");
}

/// A rumqttc MQTT 5 client whose events arrive on a channel (the loop stops at an error).
fn rumqttc_v5(
    addr: SocketAddr,
    id: &str,
) -> (
    rumqttc::v5::AsyncClient,
    tokio::sync::mpsc::UnboundedReceiver<rumqttc::v5::Event>,
) {
    let options = rumqttc::v5::MqttOptions::new(id, addr.ip().to_string(), addr.port());
    let (client, mut eventloop) = rumqttc::v5::AsyncClient::new(options, 100);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(event) = eventloop.poll().await {
            if tx.send(event).is_err() {
                break;
            }
        }
    });
    (client, rx)
}

async fn a_publish_resent_on_another_node_is_delivered_once(rig: &Rig) {
    let mut sub = subscriber(rig.addr(2), "q2-dup-sub", "q2/dup").await;
    let message = publish("q2/dup", b"once", QoS::ExactlyOnce, Some(7));
    let (mut first, _) = v5_ok(rig.addr(0), "q2-dup-pub", false, Some(300)).await;
    first.send(message.clone()).await;
    assert_eq!(expect_ack(&mut first, "PUBREC", 7).await.0, 0);
    // Held, not delivered before its PUBREL (method A).
    no_publish(&mut sub, Duration::from_millis(500)).await;
    // Dropped before PUBREL; the client did not see the PUBREC, re-sends on node 1.
    drop(first);
    let (mut again, ack) = v5_ok(rig.addr(1), "q2-dup-pub", false, Some(300)).await;
    assert!(ack.session_present);
    again.send(dup(message)).await;
    assert_eq!(expect_ack(&mut again, "PUBREC", 7).await.0, 0);
    again.send(pubrel(7)).await;
    assert_eq!(expect_ack(&mut again, "PUBCOMP", 7).await.0, 0);
    assert_eq!(receive_qos2(&mut sub).await, b"once");
    // The PUBCOMP lost as well: the PUBREL re-sent on node 2 completes, nothing delivered.
    drop(again);
    let (mut third, ack) = v5_ok(rig.addr(2), "q2-dup-pub", false, Some(300)).await;
    assert!(ack.session_present);
    third.send(pubrel(7)).await;
    expect_ack(&mut third, "PUBCOMP", 7).await;
    no_publish(&mut sub, Duration::from_secs(1)).await;
    third.send(disconnect()).await;
}

/// 20 rounds: a closed connection's late hold of round N's message once replaced round N+1's
/// held copy of the same packet id in about 1 run of 4 (loss and a duplicate).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_resent_at_once_on_the_same_node_is_delivered_once_every_time() {
    let Some(rig) = Rig::start(3, FAST).await else {
        return;
    };
    a_burst_resent_at_once_on_the_same_node_is_delivered_once(&rig).await;
}

/// A publisher sends a burst, drops its connection without reading, reconnects to the same
/// node at once and sends the burst again (DUP), completing every exchange: each message,
/// acknowledged with a PUBCOMP, is delivered once. The re-sent PUBLISHes come while the
/// first ones' holds are still on their way to the store; a PUBREC from the packet id
/// alone, then a PUBCOMP for a PUBREL that found nothing held yet, lost messages.
async fn a_burst_resent_at_once_on_the_same_node_is_delivered_once(rig: &Rig) {
    const BURST: u16 = 20;
    const ROUNDS: usize = 20;
    let mut sub = subscriber(rig.addr(1), "q2-burst-sub", "q2/burst").await;
    let (mut client, _) = v5_ok(rig.addr(0), "q2-burst", false, Some(300)).await;
    let mut sent = Vec::new();
    for round in 0..ROUNDS {
        let burst: Vec<(u16, Packet)> = (1..=BURST)
            .map(|id| {
                let payload = format!("r{round}-{id}");
                sent.push(payload.clone().into_bytes());
                let message = publish("q2/burst", payload.as_bytes(), QoS::ExactlyOnce, Some(id));
                (id, message)
            })
            .collect();
        for (_, message) in &burst {
            client.send(message.clone()).await;
        }
        drop(client);
        let (mut again, ack) = v5_ok(rig.addr(0), "q2-burst", false, Some(300)).await;
        assert!(ack.session_present, "round {round}");
        for (_, message) in &burst {
            again.send(dup(message.clone())).await;
        }
        let mut open: BTreeSet<u16> = burst.iter().map(|(id, _)| *id).collect();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !open.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            match again.recv_within(left).await {
                Some(Packet::PubRec(a)) => {
                    assert_eq!(a.reason, 0, "round {round}: PUBREC {}", a.packet_id);
                    again.send(pubrel(a.packet_id)).await;
                }
                Some(Packet::PubComp(a)) => {
                    assert_eq!(a.reason, 0, "round {round}: PUBCOMP {}", a.packet_id);
                    open.remove(&a.packet_id);
                }
                Some(Packet::PingResp) => {}
                other => panic!("round {round}: exchanges {open:?} open, then {other:?}"),
            }
        }
        client = again;
    }
    let mut got = receive_qos2_messages(&mut sub, sent.len()).await;
    no_publish(&mut sub, Duration::from_secs(1)).await;
    got.sort();
    sent.sort();
    assert_eq!(got, sent, "every completed message once");
    client.send(disconnect()).await;
}

async fn a_pubrel_on_another_node_releases_the_message_once(rig: &Rig) {
    let mut sub = subscriber(rig.addr(0), "q2-rel-sub", "q2/rel/+").await;
    // MQTT 3.1.1 and 5: the PUBREC received, the PUBREL goes to another node.
    let (mut v3, _) = v3_ok(rig.addr(1), "q2-rel-3", false).await;
    v3.send(publish("q2/rel/3", b"three", QoS::ExactlyOnce, Some(1)))
        .await;
    expect_ack(&mut v3, "PUBREC", 1).await;
    drop(v3);
    let (mut v3, ack) = v3_ok(rig.addr(2), "q2-rel-3", false).await;
    assert!(ack.session_present);
    v3.send(pubrel(1)).await;
    expect_ack(&mut v3, "PUBCOMP", 1).await;
    assert_eq!(receive_qos2(&mut sub).await, b"three");

    let (mut v5, _) = v5_ok(rig.addr(2), "q2-rel-5", false, Some(300)).await;
    v5.send(publish("q2/rel/5", b"five", QoS::ExactlyOnce, Some(9)))
        .await;
    expect_ack(&mut v5, "PUBREC", 9).await;
    drop(v5);
    let (mut v5, ack) = v5_ok(rig.addr(0), "q2-rel-5", false, Some(300)).await;
    assert!(ack.session_present);
    v5.send(pubrel(9)).await;
    assert_eq!(expect_ack(&mut v5, "PUBCOMP", 9).await.0, 0);
    assert_eq!(receive_qos2(&mut sub).await, b"five");
    no_publish(&mut sub, Duration::from_secs(1)).await;
    v5.send(disconnect()).await;
}

async fn a_packet_id_reused_after_pubcomp_or_by_a_new_session_is_a_new_message(rig: &Rig) {
    let mut sub = subscriber(rig.addr(1), "q2-reuse-sub", "q2/reuse").await;
    let (mut p, _) = v5_ok(rig.addr(0), "q2-reuse", false, Some(300)).await;
    for payload in [&b"first"[..], b"second"] {
        p.send(publish("q2/reuse", payload, QoS::ExactlyOnce, Some(3)))
            .await;
        expect_ack(&mut p, "PUBREC", 3).await;
        p.send(pubrel(3)).await;
        expect_ack(&mut p, "PUBCOMP", 3).await;
        assert_eq!(receive_qos2(&mut sub).await, payload);
    }
    // Held and never released; then a new session (clean start) sends the same message
    // with the same packet id: a new message, not a re-send of the old session's.
    p.send(publish("q2/reuse", b"third", QoS::ExactlyOnce, Some(3)))
        .await;
    expect_ack(&mut p, "PUBREC", 3).await;
    drop(p);
    let (mut fresh, ack) = v5_ok(rig.addr(2), "q2-reuse", true, Some(300)).await;
    assert!(!ack.session_present);
    fresh
        .send(publish("q2/reuse", b"third", QoS::ExactlyOnce, Some(3)))
        .await;
    expect_ack(&mut fresh, "PUBREC", 3).await;
    fresh.send(pubrel(3)).await;
    expect_ack(&mut fresh, "PUBCOMP", 3).await;
    assert_eq!(receive_qos2(&mut sub).await, b"third");
    no_publish(&mut sub, Duration::from_secs(1)).await;
    fresh.send(disconnect()).await;
}

/// Receive `n` QoS 2 messages completely, whether their exchanges interleave or not; their
/// payloads in the order of their PUBLISHes.
async fn receive_qos2_messages(sub: &mut RawClient, n: usize) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let mut open = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.len() < n || !open.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        match sub.recv_within(left).await {
            Some(Packet::Publish(p)) => {
                assert_eq!(p.qos, QoS::ExactlyOnce);
                let id = p.packet_id.expect("QoS 2 has a packet id");
                assert!(open.insert(id), "packet id {id} reused before its PUBCOMP");
                got.push(p.payload.to_vec());
                sub.send(pubrec(id)).await;
            }
            Some(Packet::PubRel(a)) => {
                open.remove(&a.packet_id);
                sub.send(pubcomp(a.packet_id)).await;
            }
            Some(Packet::PingResp) => {}
            other => panic!("{} of {n} QoS 2 messages, then {other:?}", got.len()),
        }
    }
    got
}

/// A client that sends new PUBLISHes under the packet ids of the PUBRELs it just sent, before
/// their PUBCOMPs (rumqttc 0.24 does after a reconnect: its PUBRELs again, then new messages
/// on the same ids), here on the node its session moved to: every message a PUBREL releases
/// was acknowledged with a PUBREC and is delivered; each new one is held after that release,
/// not over it.
async fn a_packet_id_reused_right_after_its_pubrel_keeps_both_messages(rig: &Rig) {
    const EXCHANGES: u16 = 20;
    let mut sub = subscriber(rig.addr(2), "q2-rel-reuse-sub", "q2/relreuse").await;
    let (mut p, _) = v5_ok(rig.addr(0), "q2-rel-reuse", false, Some(300)).await;
    let message = |prefix: char, id: u16| {
        let payload = format!("{prefix}{id}");
        publish(
            "q2/relreuse",
            payload.as_bytes(),
            QoS::ExactlyOnce,
            Some(id),
        )
    };
    for id in 1..=EXCHANGES {
        p.send(message('a', id)).await;
        expect_ack(&mut p, "PUBREC", id).await;
    }
    drop(p);
    let (mut p, ack) = v5_ok(rig.addr(1), "q2-rel-reuse", false, Some(300)).await;
    assert!(ack.session_present);
    for id in 1..=EXCHANGES {
        p.send(pubrel(id)).await;
    }
    for id in 1..=EXCHANGES {
        p.send(message('b', id)).await;
    }
    // A PUBCOMP and a PUBREC per packet id, in any order; then the new exchanges end.
    let mut acks = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while acks.len() < 2 * usize::from(EXCHANGES) {
        let left = deadline.saturating_duration_since(Instant::now());
        match p.recv_within(left).await {
            Some(Packet::PubComp(a)) => assert!(acks.insert(("PUBCOMP", a.packet_id))),
            Some(Packet::PubRec(a)) => assert!(acks.insert(("PUBREC", a.packet_id))),
            Some(Packet::PingResp) => {}
            other => panic!("{} acknowledgements, then {other:?}", acks.len()),
        }
    }
    for id in 1..=EXCHANGES {
        p.send(pubrel(id)).await;
        expect_ack(&mut p, "PUBCOMP", id).await;
    }
    let mut got = receive_qos2_messages(&mut sub, 2 * usize::from(EXCHANGES)).await;
    got.sort();
    let mut want: Vec<Vec<u8>> = (1..=EXCHANGES)
        .flat_map(|id| [format!("a{id}").into_bytes(), format!("b{id}").into_bytes()])
        .collect();
    want.sort();
    assert_eq!(got, want, "every released message and every new one, once");
    no_publish(&mut sub, Duration::from_secs(1)).await;
    p.send(disconnect()).await;
}

async fn an_outbound_exchange_resumes_on_another_node_by_its_state(rig: &Rig) {
    let (mut sub, _) = v5_ok(rig.addr(0), "q2-out", false, Some(300)).await;
    assert_eq!(sub.subscribe(1, &[("q2/out", QoS::ExactlyOnce)]).await, [2]);
    let (mut publisher, _) = v5_ok(rig.addr(1), "q2-out-pub", true, None).await;
    for (n, payload) in [&b"released"[..], b"unanswered"].into_iter().enumerate() {
        let id = n as u16 + 1;
        publisher
            .send(publish("q2/out", payload, QoS::ExactlyOnce, Some(id)))
            .await;
        expect_ack(&mut publisher, "PUBREC", id).await;
        publisher.send(pubrel(id)).await;
        expect_ack(&mut publisher, "PUBCOMP", id).await;
    }
    // The first: PUBREC sent, PUBREL received, no PUBCOMP. The second: not answered.
    let first = next_publish(&mut sub).await;
    assert_eq!(&first.payload[..], b"released");
    let first_id = first.packet_id.expect("id");
    sub.send(pubrec(first_id)).await;
    let (_, meanwhile) = expect_ack(&mut sub, "PUBREL", first_id).await;
    let second = match meanwhile.into_iter().next() {
        Some(p) => p,
        None => next_publish(&mut sub).await,
    };
    assert_eq!(&second.payload[..], b"unanswered");
    let second_id = second.packet_id.expect("id");
    drop(sub);

    // On node 2: the PUBREL of the first (not its PUBLISH), the PUBLISH of the second, DUP.
    let (mut resumed, ack) = v5_ok(rig.addr(2), "q2-out", false, Some(300)).await;
    assert!(ack.session_present);
    match resumed.recv().await {
        Packet::PubRel(a) => assert_eq!(a.packet_id, first_id),
        other => panic!("expected the PUBREL re-sent first, got {other:?}"),
    }
    let again = next_publish(&mut resumed).await;
    assert_eq!(
        (&again.payload[..], again.packet_id, again.dup),
        (&b"unanswered"[..], Some(second_id), true)
    );
    resumed.send(pubcomp(first_id)).await;
    resumed.send(pubrec(second_id)).await;
    expect_ack(&mut resumed, "PUBREL", second_id).await;
    resumed.send(pubcomp(second_id)).await;
    no_publish(&mut resumed, Duration::from_secs(1)).await;
    resumed.send(disconnect()).await;
}

/// A persistent subscriber that leaves its node right after a PUBREC, every few messages,
/// and resumes on the next one while a publisher goes on: each node re-sends the PUBRELs it
/// finds in the session's record, the client completes them before the node's catch-up has
/// read that far, and leaves again. Every message reaches it once: none is sent again as a
/// new message on a later node (the record says which messages above its floors are done).
async fn a_subscriber_hopping_between_nodes_mid_flow_gets_each_message_once(rig: &Rig) {
    const MESSAGES: usize = 600;
    const PUBRECS_PER_VISIT: usize = 20;
    const HOPS: usize = 18;
    let connect = |node: usize| v5_ok(rig.addr(node), "q2-hop", false, Some(300));
    let (mut sub, _) = connect(1).await;
    assert_eq!(
        sub.subscribe(1, &[("q2/hop/#", QoS::ExactlyOnce)]).await,
        [2]
    );
    let (mut publisher, _) = v5_ok(rig.addr(0), "q2-hop-pub", true, None).await;
    let publishing = tokio::spawn(async move {
        for n in 0..MESSAGES {
            let id = (n % 1000) as u16 + 1;
            let topic = format!("q2/hop/t{}", n % 4);
            let payload = format!("hop{n:04}");
            publisher
                .send(publish(
                    &topic,
                    payload.as_bytes(),
                    QoS::ExactlyOnce,
                    Some(id),
                ))
                .await;
            expect_ack(&mut publisher, "PUBREC", id).await;
            publisher.send(pubrel(id)).await;
            expect_ack(&mut publisher, "PUBCOMP", id).await;
        }
        publisher.send(disconnect()).await;
    });
    let mut copies: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
    // Packet ids PUBRECed and not yet released: a PUBLISH on one of them is a re-send.
    let mut open = BTreeSet::new();
    let (mut hops, mut pubrecs) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let quiet = copies.len() == MESSAGES && open.is_empty() && publishing.is_finished();
        let wait = if quiet {
            Duration::from_secs(2)
        } else {
            deadline.saturating_duration_since(Instant::now())
        };
        match sub.recv_within(wait).await {
            Some(Packet::Publish(p)) => {
                let id = p.packet_id.expect("QoS 2 has a packet id");
                if open.insert(id) {
                    *copies.entry(p.payload.to_vec()).or_default() += 1;
                }
                sub.send(pubrec(id)).await;
                pubrecs += 1;
                if hops < HOPS && pubrecs == PUBRECS_PER_VISIT {
                    drop(sub);
                    hops += 1;
                    pubrecs = 0;
                    let (resumed, ack) = connect((1 + hops) % 3).await;
                    assert!(ack.session_present, "hop {hops}: session present");
                    sub = resumed;
                }
            }
            Some(Packet::PubRel(a)) => {
                open.remove(&a.packet_id);
                sub.send(pubcomp(a.packet_id)).await;
            }
            Some(Packet::PingResp) => {}
            Some(other) => panic!("unexpected {other:?}"),
            None if quiet => break,
            None => panic!(
                "{} of {MESSAGES} messages after {hops} hops, {} exchanges open",
                copies.len(),
                open.len()
            ),
        }
    }
    publishing.await.expect("publisher");
    let twice: Vec<_> = copies
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(payload, n)| (String::from_utf8_lossy(payload).into_owned(), *n))
        .collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    assert_eq!(copies.len(), MESSAGES, "every message");
    assert_eq!(hops, HOPS);
    sub.send(disconnect()).await;
}

/// A shared subscription at QoS 2 is granted QoS 1, and its group reads the shards (where a
/// QoS 2 message is held before its PUBREL): the message reaches it once, released.
async fn a_shared_subscription_gets_a_qos2_message_once_at_qos1(rig: &Rig) {
    let (mut member, _) = v5_ok(rig.addr(1), "q2-shared", true, None).await;
    assert_eq!(
        member
            .subscribe(1, &[("$share/q2g/q2/shared/#", QoS::ExactlyOnce)])
            .await,
        [1]
    );
    let (mut publisher, _) = v5_ok(rig.addr(0), "q2-shared-pub", false, Some(300)).await;
    publisher
        .send(publish("q2/shared/t", b"shared", QoS::ExactlyOnce, Some(5)))
        .await;
    expect_ack(&mut publisher, "PUBREC", 5).await;
    // Held: not delivered before the PUBREL.
    no_publish(&mut member, Duration::from_millis(500)).await;
    publisher.send(pubrel(5)).await;
    expect_ack(&mut publisher, "PUBCOMP", 5).await;
    let p = next_publish(&mut member).await;
    assert_eq!((&p.payload[..], p.qos), (&b"shared"[..], QoS::AtLeastOnce));
    member
        .send(Packet::PubAck(Ack::new(p.packet_id.expect("QoS 1"))))
        .await;
    no_publish(&mut member, Duration::from_secs(1)).await;

    // A group whose filter has as many levels as an exchange subject has tokens past the
    // shard (NATS refuses a consumer whose filter subjects overlap): released messages too.
    let (mut deep, _) = v5_ok(rig.addr(2), "q2-shared-deep", true, None).await;
    assert_eq!(
        deep.subscribe(1, &[("$share/q2deep/+/+/+/+/+", QoS::ExactlyOnce)])
            .await,
        [1]
    );
    publisher
        .send(publish("q2/d/e/e/p", b"deep", QoS::ExactlyOnce, Some(6)))
        .await;
    expect_ack(&mut publisher, "PUBREC", 6).await;
    publisher.send(pubrel(6)).await;
    expect_ack(&mut publisher, "PUBCOMP", 6).await;
    let p = next_publish(&mut deep).await;
    assert_eq!(&p.payload[..], b"deep");
    publisher.send(disconnect()).await;
}

/// A QoS 2 receiver as a client must be: a PUBLISH whose packet id awaits its PUBREL is a
/// re-send (PUBREC again, not a new message).
#[derive(Default)]
struct Receiver {
    awaiting_release: BTreeSet<u16>,
    delivered: Vec<Bytes>,
}

impl Receiver {
    async fn handle(&mut self, client: &mut RawClient, packet: Packet) {
        match packet {
            Packet::Publish(p) => {
                let id = p.packet_id.expect("QoS 2");
                if self.awaiting_release.insert(id) {
                    self.delivered.push(p.payload);
                }
                client.send(pubrec(id)).await;
            }
            Packet::PubRel(a) => {
                self.awaiting_release.remove(&a.packet_id);
                client.send(pubcomp(a.packet_id)).await;
            }
            _ => {}
        }
    }
}

/// Where a publisher's exchange stands, as the client keeps it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Sent {
    Publish,
    Release,
}

async fn a_node_killed_mid_flow_delivers_every_message_once(rig: &mut Rig) {
    const N: u16 = 30;
    let topic = "q2/kill";
    let (mut sub, _) = v5_ok(rig.addr(0), "q2-kill-sub", false, Some(300)).await;
    assert_eq!(sub.subscribe(1, &[(topic, QoS::ExactlyOnce)]).await, [2]);
    let (killed_tx, mut killed_rx) = tokio::sync::watch::channel(false);
    let resume_at = rig.addr(2);
    let receiving = tokio::spawn(async move {
        let mut receiver = Receiver::default();
        let deadline = Instant::now() + Duration::from_secs(40);
        let mut moved = false;
        // Until every message and 1 s of nothing more.
        let mut quiet_since = Instant::now();
        while Instant::now() < deadline {
            match sub.recv_within(Duration::from_millis(200)).await {
                Some(packet) => {
                    receiver.handle(&mut sub, packet).await;
                    quiet_since = Instant::now();
                }
                None if *killed_rx.borrow_and_update() && !moved => {
                    let (resumed, ack) = v5_ok(resume_at, "q2-kill-sub", false, Some(300)).await;
                    assert!(ack.session_present, "the subscriber's session resumed");
                    sub = resumed;
                    moved = true;
                }
                None => {}
            }
            if receiver.delivered.len() >= usize::from(N)
                && quiet_since.elapsed() > Duration::from_secs(1)
            {
                break;
            }
        }
        receiver.delivered
    });

    let (mut publisher, _) = v5_ok(rig.addr(0), "q2-kill-pub", false, Some(300)).await;
    let mut exchanges: BTreeMap<u16, Sent> = BTreeMap::new();
    let message = |id: u16| {
        publish(
            topic,
            format!("k{id:02}").as_bytes(),
            QoS::ExactlyOnce,
            Some(id),
        )
    };
    for id in 1..=N {
        publisher.send(message(id)).await;
        exchanges.insert(id, Sent::Publish);
    }
    // Half the PUBRECs in, their PUBRELs sent: node 0 dies with the rest in the air.
    let mut recs = 0;
    while recs < N / 2 {
        match publisher.recv().await {
            Packet::PubRec(a) => {
                recs += 1;
                exchanges.insert(a.packet_id, Sent::Release);
                publisher.send(pubrel(a.packet_id)).await;
            }
            Packet::PubComp(a) => {
                exchanges.remove(&a.packet_id);
            }
            _ => {}
        }
    }
    rig.nodes[0].kill();
    let _ = killed_tx.send(true);
    drop(publisher);

    // The publisher resumes on node 1 and re-sends by its own state (MQTT 5 4.4).
    let (mut publisher, ack) = v5_ok(rig.addr(1), "q2-kill-pub", false, Some(300)).await;
    assert!(ack.session_present, "the publisher's session resumed");
    for (&id, sent) in &exchanges {
        match sent {
            Sent::Publish => publisher.send(dup(message(id))).await,
            Sent::Release => publisher.send(pubrel(id)).await,
        }
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while !exchanges.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        match publisher.recv_within(left).await {
            Some(Packet::PubRec(a)) => {
                assert_eq!(a.reason, 0);
                exchanges.insert(a.packet_id, Sent::Release);
                publisher.send(pubrel(a.packet_id)).await;
            }
            Some(Packet::PubComp(a)) => {
                exchanges.remove(&a.packet_id);
            }
            Some(_) => {}
            None => panic!("exchanges left: {exchanges:?}"),
        }
    }
    let delivered = receiving.await.expect("receiver");
    let mut counts: BTreeMap<Bytes, usize> = BTreeMap::new();
    for payload in &delivered {
        *counts.entry(payload.clone()).or_default() += 1;
    }
    let want: BTreeSet<Bytes> = (1..=N).map(|id| Bytes::from(format!("k{id:02}"))).collect();
    let lost: Vec<_> = want.iter().filter(|w| !counts.contains_key(*w)).collect();
    let twice: Vec<_> = counts.iter().filter(|(_, c)| **c > 1).collect();
    assert!(lost.is_empty(), "lost: {lost:?}");
    assert!(twice.is_empty(), "duplicates: {twice:?}");
    assert_eq!(delivered.len(), usize::from(N));
    publisher.send(disconnect()).await;
}

/// A release the store refuses (no NATS quorum for a while, longer than `storeTimeout`) is
/// tried again until it is stored: the PUBCOMP comes, and the message is delivered, on the
/// same open connection (a client re-sends a PUBREL only when it reconnects).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pubrel_refused_by_the_store_is_released_once_the_store_is_back() {
    const PATIENT: &str = r#"replicas="3" messageShards="2" heartbeatInterval="200ms" quorumLossTimeout="60s" nodeTimeout="60s" storeTimeout="1s""#;
    let Some(rig) = Rig::start(1, PATIENT).await else {
        return;
    };
    let (mut sub, _) = v3_ok(rig.addr(0), "rr-sub", true).await;
    assert_eq!(sub.subscribe(1, &[("rr/#", QoS::AtLeastOnce)]).await, [1]);
    let (mut publisher, _) = v3_ok(rig.addr(0), "rr-pub", false).await;
    publisher
        .send(publish("rr/a", b"released-late", QoS::ExactlyOnce, Some(5)))
        .await;
    expect_ack(&mut publisher, "PUBREC", 5).await;
    // Two of the three nats-servers stop answering: no stream has a quorum.
    rig.nats.pause(0);
    rig.nats.pause(1);
    publisher.send(pubrel(5)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    rig.nats.resume(0);
    rig.nats.resume(1);
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut completed = false;
    let mut delivered = false;
    while !(completed && delivered) && Instant::now() < deadline {
        if !completed {
            if let Some(packet) = publisher.recv_within(Duration::from_millis(200)).await {
                match packet {
                    Packet::PubComp(a) if a.packet_id == 5 => completed = true,
                    Packet::PingResp => {}
                    other => panic!("publisher: expected PUBCOMP 5, got {other:?}"),
                }
            }
        }
        if !delivered {
            if let Some(p) =
                super::rig::next_publish_within(&mut sub, Duration::from_millis(200)).await
            {
                assert_eq!(&p.payload[..], b"released-late");
                delivered = true;
            }
        }
    }
    assert!(completed, "PUBCOMP 5 after the store came back");
    assert!(delivered, "the released message delivered");
}

/// A clean session's QoS 2 PUBLISH whose store gets no answer in time (no NATS quorum for
/// longer than `storeTimeout` and the MQTT 5 refusal wait): the store may still land and the
/// message be delivered, so no PUBREC 0x97 ("not accepted", which a client answers by
/// publishing it again: a second copy) is sent; the connection closes without a PUBREC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_sessions_qos2_publish_of_unknown_outcome_is_not_refused_but_closed() {
    const PATIENT: &str = r#"replicas="3" messageShards="2" heartbeatInterval="200ms" quorumLossTimeout="60s" nodeTimeout="60s" storeTimeout="1s""#;
    let Some(rig) = Rig::start(1, PATIENT).await else {
        return;
    };
    let (mut publisher, _) = v5_ok(rig.addr(0), "uo-pub", true, None).await;
    rig.nats.pause(0);
    rig.nats.pause(1);
    publisher
        .send(publish(
            "uo/a",
            b"outcome-unknown",
            QoS::ExactlyOnce,
            Some(3),
        ))
        .await;
    // Past storeTimeout (1 s) and the refusal wait (5 s).
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut answer = None;
    while Instant::now() < deadline {
        match publisher.recv_within(Duration::from_millis(500)).await {
            Some(Packet::PingResp) => {}
            Some(Packet::Disconnect(d)) => {
                answer = Some(format!("DISCONNECT {:#x}", d.reason));
                break;
            }
            Some(other) => panic!("no PUBREC for a publish of unknown outcome, got {other:?}"),
            None if publisher
                .closed_within(Duration::from_millis(1))
                .await
                .is_some() =>
            {
                answer = Some("closed".into());
                break;
            }
            None => {}
        }
    }
    rig.nats.resume(0);
    rig.nats.resume(1);
    let answer = answer.expect("the connection closed without a PUBREC");
    assert!(
        answer == "DISCONNECT 0x9c" || answer == "closed",
        "{answer}"
    );
}
