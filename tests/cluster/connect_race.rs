//! Two CONNECTs of one persistent MQTT 5 session on two nodes at once, again and again, while
//! messages flow to it: every connection's first packet is a CONNACK (MQTT 3.14.0-1: no
//! DISCONNECT before it), success or a refusal the client can retry (0x88), never another
//! code, and the session keeps its subscription (session present on every success after the
//! first). A connection that lost the race between its claim and its attach is refused at
//! its CONNACK; one taken over after its CONNACK gets DISCONNECT 0x8E. After the races the
//! session still has its subscription.

use std::time::Duration;

use ferromq::protocol::{ConnectReason, Packet, QoS};

use super::rig::{next_publish_within, publish, publish_acked, v5_ok, Rig, FAST};
use crate::support::client::{connect_v5, RawClient};

/// Pairs of CONNECTs.
const PAIRS: usize = 30;
/// How long each connection is held open, taking deliveries (unacknowledged).
const HOLD: Duration = Duration::from_millis(800);
const ID: &str = "race-c";

/// Send CONNECT on a fresh socket to `addr`, hold the connection for [`HOLD`] taking
/// deliveries without acknowledging them, and return the first packet the node sent.
async fn first_packet(addr: std::net::SocketAddr) -> Option<Packet> {
    let mut client = sent_connect(addr, ID).await;
    let first = client.recv_within(Duration::from_secs(10)).await;
    let until = tokio::time::Instant::now() + HOLD;
    while let Ok(Some(_)) = tokio::time::timeout_at(until, client.recv_within(HOLD)).await {}
    first
}

/// A fresh socket to `addr` that has sent the CONNECT of `client_id`'s persistent MQTT 5
/// session (Session Expiry Interval 600 s), nothing read yet.
async fn sent_connect(addr: std::net::SocketAddr, client_id: &str) -> RawClient {
    let mut client = RawClient::tcp(addr).await;
    client.version = ferromq::protocol::ProtocolVersion::V5;
    client
        .send(Packet::Connect(Box::new(connect_v5(
            client_id,
            false,
            Some(600),
        ))))
        .await;
    client
}

/// How long node 0's and node 1's CONNECTs of `pair` wait before they are sent: from node 0
/// leading by 3 ms to node 1 leading by 3 ms, in steps of 200 µs.
fn stagger(pair: usize) -> (Duration, Duration) {
    let node_0_leads_us = 3_000 - (pair as i64 % 31) * 200;
    let wait = |us: i64| Duration::from_micros(us.max(0).unsigned_abs());
    (wait(-node_0_leads_us), wait(node_0_leads_us))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_connects_of_one_session_on_two_nodes_are_each_answered_with_a_connack() {
    let Some(rig) = Rig::start(2, FAST).await else {
        return;
    };
    let (mut first, _) = v5_ok(rig.addr(0), ID, false, Some(600)).await;
    assert_eq!(
        first.subscribe(1, &[("race/#", QoS::AtLeastOnce)]).await,
        [1]
    );
    drop(first);
    // A publisher on node 1 keeps the session's queue moving.
    let (mut publisher, _) = v5_ok(rig.addr(1), "race-pub", true, None).await;
    let flowing = tokio::spawn(async move {
        for n in 0u32.. {
            publisher
                .send(publish(
                    "race/t",
                    &n.to_be_bytes(),
                    QoS::AtLeastOnce,
                    Some((n % 60_000 + 1) as u16),
                ))
                .await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });

    let (mut accepted, mut refused) = (0, 0);
    for pair in 0..PAIRS {
        // Swept across the pairs: the session's owner claims first in some pairs and last
        // in others, and the other node's kick lands at every point of the owner's CONNECT.
        let (wait_0, wait_1) = stagger(pair);
        let (a, b) = tokio::join!(
            async {
                tokio::time::sleep(wait_0).await;
                first_packet(rig.addr(0)).await
            },
            async {
                tokio::time::sleep(wait_1).await;
                first_packet(rig.addr(1)).await
            }
        );
        for (node, answer) in [(0, a), (1, b)] {
            match answer {
                Some(Packet::ConnAck(ack)) if ack.reason == ConnectReason::Success => {
                    assert!(
                        ack.session_present,
                        "pair {pair}, node {node}: the session was started afresh"
                    );
                    accepted += 1;
                }
                Some(Packet::ConnAck(ack)) if ack.reason == ConnectReason::ServerUnavailable => {
                    refused += 1
                }
                other => panic!("pair {pair}, node {node}: first packet {other:?}"),
            }
        }
    }
    flowing.abort();
    eprintln!("{PAIRS} pairs: {accepted} CONNACK 0x00, {refused} CONNACK 0x88");
    // The session kept its subscription through the races: a message published now reaches
    // it, behind what queued meanwhile.
    let (mut resumed, ack) = v5_ok(rig.addr(0), ID, false, Some(600)).await;
    assert!(ack.session_present, "the session survived the races");
    let (mut late, _) = v5_ok(rig.addr(1), "race-late", true, None).await;
    assert_eq!(publish_acked(&mut late, "race/after", b"after", 1).await, 0);
    let mut taken = 0usize;
    loop {
        let p = next_publish_within(&mut resumed, Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("no message on race/after after {taken} others"));
        if let Some(id) = p.packet_id {
            resumed
                .send(Packet::PubAck(ferromq::protocol::Ack::new(id)))
                .await;
        }
        if p.topic == "race/after" {
            break;
        }
        taken += 1;
    }
    // One CONNECT of a pair may lose to the other; a pair in which both lose is rare.
    assert!(
        accepted >= PAIRS / 2,
        "too few CONNECTs served: {accepted} of {}",
        2 * PAIRS
    );
}

/// Pairs of CONNECTs of the QoS 2 subscriber.
const QOS2_PAIRS: usize = 20;

/// What the QoS 2 subscriber holds across its connections (MQTT 5 4.3.3, method B: a packet
/// id stays bound to its message from the PUBREC until the PUBREL).
#[derive(Default)]
struct Receiver {
    held: std::collections::HashMap<u16, u32>,
    got: Vec<u32>,
}

impl Receiver {
    /// Act on `packet` as the one live connection `client` of the session.
    async fn on(&mut self, client: &mut RawClient, packet: Packet) {
        match packet {
            Packet::Publish(p) => {
                let id = p.packet_id.expect("QoS 2 has a packet id");
                let n = u32::from_be_bytes(p.payload[..4].try_into().expect("4-byte payload"));
                match self.held.get(&id) {
                    // A re-send of an exchange the client holds: the same message, with DUP.
                    Some(held) => assert_eq!(
                        (*held, p.dup),
                        (n, true),
                        "packet id {id} re-sent for message {n} while it holds message {held}"
                    ),
                    None => {
                        self.held.insert(id, n);
                        self.got.push(n);
                    }
                }
                try_send(client, Packet::PubRec(ferromq::protocol::Ack::new(id))).await;
            }
            Packet::PubRel(a) => {
                self.held.remove(&a.packet_id);
                try_send(
                    client,
                    Packet::PubComp(ferromq::protocol::Ack::new(a.packet_id)),
                )
                .await;
            }
            _ => {}
        }
    }
}

/// Send `packet`, whatever becomes of it: the broker may have closed the connection since.
async fn try_send(client: &mut RawClient, packet: Packet) {
    use tokio::io::AsyncWriteExt;
    let mut out = bytes::BytesMut::new();
    ferromq::protocol::encode(&packet, client.version, &mut out).expect("encode");
    let _ = client.stream.write_all(&out).await;
}

/// A CONNECT of the QoS 2 subscriber on `addr`: the connection, if it was accepted.
async fn connect_q2(addr: std::net::SocketAddr) -> Option<RawClient> {
    let mut client = sent_connect(addr, Q2_ID).await;
    match client.recv_within(Duration::from_secs(10)).await {
        Some(Packet::ConnAck(ack)) if ack.reason == ConnectReason::Success => {
            assert!(ack.session_present, "the QoS 2 session was started afresh");
            Some(client)
        }
        Some(Packet::ConnAck(ack)) if ack.reason == ConnectReason::ServerUnavailable => None,
        other => panic!("first packet {other:?}"),
    }
}

/// What `client` was sent within `within` (stopping at a pause of 100 ms), and whether the
/// broker closed it (DISCONNECT: taken over by the newer connection).
async fn buffered(client: &mut RawClient, within: Duration) -> (Vec<Packet>, bool) {
    let until = tokio::time::Instant::now() + within;
    let mut packets = Vec::new();
    while let Ok(Some(p)) =
        tokio::time::timeout_at(until, client.recv_within(Duration::from_millis(100))).await
    {
        if matches!(p, Packet::Disconnect(_)) {
            return (packets, true);
        }
        packets.push(p);
    }
    (packets, false)
}

const Q2_ID: &str = "race-q2";

/// Two CONNECTs of one persistent MQTT 5 session at once on two nodes, again and again, while
/// QoS 2 messages flow to it. The client acts only on its live connection: the broker closes
/// the older one (DISCONNECT 0x8E) and re-sends its open exchanges on the newer, while what it
/// wrote on the older before may still sit unread there (a client acting on that too takes
/// a completed exchange for a new one). Every message the publisher completed arrives exactly
/// once, and a packet id the client holds is never given to another message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_connects_of_a_qos2_subscriber_get_every_message_exactly_once() {
    let Some(rig) = Rig::start(2, FAST).await else {
        return;
    };
    let (mut first, _) = v5_ok(rig.addr(0), Q2_ID, false, Some(600)).await;
    assert_eq!(
        first.subscribe(1, &[("race2/#", QoS::ExactlyOnce)]).await,
        [2]
    );
    drop(first);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publishing = {
        let (stop, addr) = (stop.clone(), rig.addr(1));
        tokio::spawn(async move {
            let (mut publisher, _) = v5_ok(addr, "race2-pub", true, None).await;
            let mut completed = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let id = (completed % 60_000 + 1) as u16;
                let payload = completed.to_be_bytes();
                publisher
                    .send(publish("race2/t", &payload, QoS::ExactlyOnce, Some(id)))
                    .await;
                match publisher.recv_within(Duration::from_secs(10)).await {
                    Some(Packet::PubRec(a)) if a.packet_id == id && a.reason == 0 => {}
                    other => panic!("PUBREC {id}: {other:?}"),
                }
                publisher
                    .send(Packet::PubRel(ferromq::protocol::Ack::new(id)))
                    .await;
                match publisher.recv_within(Duration::from_secs(10)).await {
                    Some(Packet::PubComp(a)) if a.packet_id == id => {}
                    other => panic!("PUBCOMP {id}: {other:?}"),
                }
                completed += 1;
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            completed
        })
    };

    let mut receiver = Receiver::default();
    for pair in 0..QOS2_PAIRS {
        let (wait_0, wait_1) = stagger(pair);
        let (a, b) = tokio::join!(
            async {
                tokio::time::sleep(wait_0).await;
                connect_q2(rig.addr(0)).await
            },
            async {
                tokio::time::sleep(wait_1).await;
                connect_q2(rig.addr(1)).await
            }
        );
        let mut live = Vec::new();
        for mut client in [a, b].into_iter().flatten() {
            let (packets, closed) = buffered(&mut client, Duration::from_millis(300)).await;
            if !closed {
                live.push((client, packets));
            }
        }
        assert!(
            live.len() <= 1,
            "pair {pair}: two live connections of one session"
        );
        if let Some((mut client, packets)) = live.pop() {
            for p in packets {
                receiver.on(&mut client, p).await;
            }
            let until = tokio::time::Instant::now() + Duration::from_millis(200);
            while let Ok(Some(p)) =
                tokio::time::timeout_at(until, client.recv_within(Duration::from_millis(200))).await
            {
                receiver.on(&mut client, p).await;
            }
            try_send(&mut client, disconnect_normally()).await;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let completed = publishing.await.expect("the publisher");

    // The last connection takes what is left.
    let mut client = loop {
        if let Some(client) = connect_q2(rig.addr(0)).await {
            break client;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while (receiver.got.len() < completed as usize || !receiver.held.is_empty())
        && tokio::time::Instant::now() < deadline
    {
        if let Some(p) = client.recv_within(Duration::from_secs(1)).await {
            receiver.on(&mut client, p).await;
        }
    }
    let mut got = receiver.got.clone();
    got.sort_unstable();
    let duplicates = got.windows(2).filter(|w| w[0] == w[1]).count();
    got.dedup();
    let missing = (0..completed)
        .filter(|n| got.binary_search(n).is_err())
        .count();
    eprintln!(
        "{QOS2_PAIRS} pairs, {completed} QoS 2 messages: {missing} missing, {duplicates} duplicates, {} exchanges open",
        receiver.held.len()
    );
    assert_eq!((missing, duplicates), (0, 0), "exactly once");
    assert!(
        receiver.held.is_empty(),
        "open at the end: {:?}",
        receiver.held
    );
}

fn disconnect_normally() -> Packet {
    Packet::Disconnect(ferromq::protocol::Disconnect {
        reason: 0,
        properties: None,
    })
}
