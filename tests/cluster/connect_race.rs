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
    let mut client = RawClient::tcp(addr).await;
    client.version = ferromq::protocol::ProtocolVersion::V5;
    client
        .send(Packet::Connect(Box::new(connect_v5(ID, false, Some(600)))))
        .await;
    let first = client.recv_within(Duration::from_secs(10)).await;
    let until = tokio::time::Instant::now() + HOLD;
    while let Ok(Some(_)) = tokio::time::timeout_at(until, client.recv_within(HOLD)).await {}
    first
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
