//! Resumed sessions share a node's catch-up readers fairly: sessions whose clients do not
//! take what they are fed (slow, or stuck, connections) give their readers back, so another
//! session resuming on the same node gets its backlog at once instead of after them, and
//! theirs follows, whole and once, when they read.

use std::time::{Duration, Instant};

use ferromq::protocol::{Ack, Disconnect, Packet, QoS};

use super::rig::{next_publish_within, publish_acked, v3_ok, Rig, FAST};
use crate::support::client::RawClient;

/// Sessions whose clients never read: together they have a catch-up on every shard for more
/// than the node's readers (8 per node, 2 shards in `FAST`).
const STUCK_SESSIONS: usize = 8;
/// Queued for each stuck session: past its in-flight window (100) and its pending limit on
/// each of its shards, so that both of its catch-ups wait for it.
const BACKLOG: usize = 250;
/// The pending-message limit the node runs with (the point where a catch-up waits).
const PENDING_LIMIT: u32 = 10;
/// Topics per session, so that its backlog lies on every shard.
const TOPICS: usize = 8;

fn pending_limit() -> String {
    format!(
        "<destinationPolicy><policyMap><policyEntries><policyEntry topic=\">\">\
         <pendingMessageLimitStrategy><constantPendingMessageLimitStrategy limit=\"{PENDING_LIMIT}\"/>\
         </pendingMessageLimitStrategy></policyEntry></policyEntries></policyMap>\
         </destinationPolicy>"
    )
}

/// A persistent MQTT 3.1.1 session subscribed to `filter` on `node`, then offline.
async fn offline_session(rig: &Rig, node: usize, id: &str, filter: &str) {
    let (mut client, _) = v3_ok(rig.addr(node), id, false).await;
    client.subscribe(1, &[(filter, QoS::AtLeastOnce)]).await;
    client
        .send(Packet::Disconnect(Disconnect {
            reason: 0,
            properties: None,
        }))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_resuming_behind_stuck_clients_gets_its_backlog_at_once() {
    let Some(rig) = Rig::start_with(2, FAST, &pending_limit()).await else {
        return;
    };
    for s in 0..STUCK_SESSIONS {
        offline_session(&rig, 0, &format!("stuck-{s}"), &format!("stuck/{s}/#")).await;
    }
    offline_session(&rig, 0, "quick", "quick/#").await;

    let (mut publisher, _) = v3_ok(rig.addr(0), "catch-up-publisher", true).await;
    let mut packet_id = 0u16;
    let mut next_id = || {
        packet_id = packet_id % u16::MAX + 1;
        packet_id
    };
    for n in 0..BACKLOG {
        for s in 0..STUCK_SESSIONS {
            let topic = format!("stuck/{s}/t{}", n % TOPICS);
            let id = next_id();
            let payload = format!("{s}-{n}");
            assert_eq!(
                publish_acked(&mut publisher, &topic, payload.as_bytes(), id).await,
                0
            );
        }
    }
    for n in 0..TOPICS {
        let id = next_id();
        let payload = format!("q{n}");
        assert_eq!(
            publish_acked(
                &mut publisher,
                &format!("quick/t{n}"),
                payload.as_bytes(),
                id
            )
            .await,
            0
        );
    }

    // The stuck clients resume on the other node and never read: their catch-ups fill them
    // to their limit and wait for them.
    let mut stuck: Vec<RawClient> = Vec::new();
    for s in 0..STUCK_SESSIONS {
        let (client, ack) = v3_ok(rig.addr(1), &format!("stuck-{s}"), false).await;
        assert!(ack.session_present, "stuck-{s}");
        stuck.push(client);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    let started = Instant::now();
    let (mut quick, ack) = v3_ok(rig.addr(1), "quick", false).await;
    assert!(ack.session_present);
    let mut got = Vec::new();
    while got.len() < TOPICS {
        let Some(p) = next_publish_within(&mut quick, Duration::from_secs(15)).await else {
            panic!(
                "after {:?}, the resumed session got {got:?} of its {TOPICS} messages: its \
                 catch-up waits behind sessions whose clients do not read",
                started.elapsed()
            );
        };
        if let Some(id) = p.packet_id {
            quick.send(Packet::PubAck(Ack::new(id))).await;
        }
        got.push(String::from_utf8_lossy(&p.payload).into_owned());
    }
    got.sort();
    let expected: Vec<String> = (0..TOPICS).map(|n| format!("q{n}")).collect();
    assert_eq!(got, expected);

    // Once their clients read, the waiting sessions get every message of their backlog, once
    // (their catch-ups read again from where they stopped).
    for (s, client) in stuck.iter_mut().enumerate() {
        let mut seen = std::collections::BTreeSet::new();
        while seen.len() < BACKLOG {
            let Some(p) = next_publish_within(client, Duration::from_secs(15)).await else {
                panic!("stuck-{s} got {} of its {BACKLOG} messages", seen.len());
            };
            if let Some(id) = p.packet_id {
                client.send(Packet::PubAck(Ack::new(id))).await;
            }
            let payload = String::from_utf8_lossy(&p.payload).into_owned();
            assert!(
                payload.starts_with(&format!("{s}-")),
                "stuck-{s} got {payload}"
            );
            assert!(
                seen.insert(payload.clone()) || p.dup,
                "stuck-{s} got {payload} twice as a new message"
            );
        }
    }
}
