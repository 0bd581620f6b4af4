//! MQTT 5 shared subscriptions across nodes with real clients on 3 nodes: members on
//! different nodes share a group's messages, each QoS 1 and QoS 0 message delivered to exactly
//! one member and none stranded (a direct subscriber still gets every one), one JetStream
//! consumer for the group whatever its members and nodes; a member whose
//! session ends with unacknowledged messages, or whose node is SIGKILLed, has them delivered
//! to a member on another node; a persistent member that is offline on a live node keeps its
//! unacknowledged copy and gets it again when it comes back (MQTT 5 4.8.2).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use ferromq::protocol::{Ack, Packet, Publish, QoS};

use super::rig::{next_publish_within, publish, publish_acked, v3_ok, v5_ok, Rig, FAST};
use crate::support::client::RawClient;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_subscriptions_across_nodes() {
    let Some(mut rig) = Rig::start(3, FAST).await else {
        return;
    };
    members_on_every_node_share_each_message_once(&rig).await;
    a_member_whose_session_ends_hands_its_messages_to_another_node(&rig).await;
    an_offline_persistent_member_keeps_its_copy_until_it_returns(&rig).await;
    a_killed_nodes_unacknowledged_messages_go_to_another_member(&mut rig).await;
}

/// The payload's number (payloads are `n` as text).
fn number(p: &Publish) -> u32 {
    std::str::from_utf8(&p.payload)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a numbered payload: {:?}", p.payload))
}

/// Read what `clients` receive (acknowledging QoS 1 when `ack[i]`) until `done` says so of
/// the numbers each got, or `within` passes; the numbers per client, in arrival order.
async fn collect(
    clients: &mut [&mut RawClient],
    ack: &[bool],
    within: Duration,
    done: impl Fn(&[Vec<u32>]) -> bool,
) -> Vec<Vec<u32>> {
    let deadline = Instant::now() + within;
    let mut got = vec![Vec::new(); clients.len()];
    while !done(&got) && Instant::now() < deadline {
        for (i, client) in clients.iter_mut().enumerate() {
            while let Some(p) = next_publish_within(client, Duration::from_millis(20)).await {
                if let (Some(id), true) = (p.packet_id, ack[i]) {
                    client.send(Packet::PubAck(Ack::new(id))).await;
                }
                got[i].push(number(&p));
            }
        }
    }
    got
}

fn total(got: &[Vec<u32>]) -> usize {
    got.iter().map(Vec::len).sum()
}

/// Every number of `expected` exactly once across all members.
fn exactly_once(got: &[Vec<u32>], expected: impl Iterator<Item = u32>) {
    let mut seen: BTreeMap<u32, usize> = BTreeMap::new();
    for n in got.iter().flatten() {
        *seen.entry(*n).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, c)| **c > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    let expected: BTreeSet<u32> = expected.collect();
    let delivered: BTreeSet<u32> = seen.keys().copied().collect();
    let missing: Vec<_> = expected.difference(&delivered).collect();
    assert!(missing.is_empty(), "never delivered: {missing:?}");
    assert_eq!(delivered, expected);
}

async fn members_on_every_node_share_each_message_once(rig: &Rig) {
    const N: u32 = 90;
    let (mut a, ack) = v5_ok(rig.addr(0), "sh-a", true, None).await;
    let props = ack.properties.expect("CONNACK properties");
    assert_eq!(props.shared_subscription_available, Some(1));
    let (mut b, _) = v5_ok(rig.addr(1), "sh-b", true, None).await;
    let (mut c, _) = v3_ok(rig.addr(2), "sh-c", true).await;
    let (mut direct, _) = v5_ok(rig.addr(1), "sh-direct", true, None).await;
    // A second group with a single member at QoS 0: every QoS 1 message at QoS 0, once.
    let (mut zero, _) = v5_ok(rig.addr(0), "sh-zero", true, None).await;
    assert_eq!(
        zero.subscribe(1, &[("$share/zero/sh/q1", QoS::AtMostOnce)])
            .await,
        [0]
    );
    for member in [&mut a, &mut b, &mut c] {
        assert_eq!(
            member
                .subscribe(1, &[("$share/work/sh/+", QoS::AtLeastOnce)])
                .await,
            [1]
        );
    }
    assert_eq!(
        direct.subscribe(1, &[("sh/#", QoS::AtLeastOnce)]).await,
        [1]
    );
    let (mut publisher, _) = v5_ok(rig.addr(2), "sh-pub", true, None).await;

    // QoS 1: each acknowledged message to exactly one member, and members on every node
    // take part.
    for n in 1..=N {
        let code = publish_acked(&mut publisher, "sh/q1", n.to_string().as_bytes(), 1).await;
        assert_eq!(code, 0, "PUBACK of {n}");
    }
    let mut members = [&mut a, &mut b, &mut c];
    let got = collect(&mut members, &[true; 3], Duration::from_secs(15), |g| {
        total(g) >= N as usize
    })
    .await;
    exactly_once(&got, 1..=N);
    for (i, numbers) in got.iter().enumerate() {
        assert!(
            !numbers.is_empty(),
            "member {i} (on node {i}) got none of {N}: {got:?}"
        );
    }
    // One consumer per group, whatever its members and nodes (O(shards + groups)).
    assert_eq!(group_consumers(rig).await, 2);
    let zero_got = collect(&mut [&mut zero], &[true], Duration::from_secs(10), |g| {
        total(g) >= N as usize
    })
    .await;
    exactly_once(&zero_got, 1..=N);
    // Acknowledged when queued (a QoS 0 delivery has no PUBACK): never delivered again.
    let late = collect(&mut [&mut zero], &[true], Duration::from_secs(3), |_| false).await;
    assert_eq!(total(&late), 0, "QoS 0 member got copies again: {late:?}");
    // A direct subscription to the same topics still gets every message once.
    let direct_got = collect(&mut [&mut direct], &[true], Duration::from_secs(10), |g| {
        total(g) >= N as usize
    })
    .await;
    exactly_once(&direct_got, 1..=N);
    // Nothing more for anybody (no late duplicate).
    let late = collect(&mut members, &[true; 3], Duration::from_millis(500), |_| {
        false
    })
    .await;
    assert_eq!(total(&late), 0, "late copies: {late:?}");

    // QoS 0: through the group's queue subscriptions, one member each (published until the
    // interest reached the publisher's server, as QoS 0 may be missed before).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "QoS 0 never reached the group");
        publisher
            .send(publish("sh/probe", b"0", QoS::AtMostOnce, None))
            .await;
        let probe = collect(&mut members, &[true; 3], Duration::from_millis(100), |g| {
            total(g) > 0
        })
        .await;
        if total(&probe) > 0 {
            break;
        }
    }
    let _ = collect(&mut members, &[true; 3], Duration::from_millis(300), |_| {
        false
    })
    .await;
    for n in 1..=N {
        publisher
            .send(publish(
                "sh/q0",
                n.to_string().as_bytes(),
                QoS::AtMostOnce,
                None,
            ))
            .await;
    }
    let got = collect(&mut members, &[true; 3], Duration::from_secs(10), |g| {
        total(g) >= N as usize
    })
    .await;
    exactly_once(&got, 1..=N);
    let late = collect(&mut members, &[true; 3], Duration::from_millis(500), |_| {
        false
    })
    .await;
    assert_eq!(total(&late), 0, "late QoS 0 copies: {late:?}");
    let _ = collect(
        &mut [&mut direct],
        &[true],
        Duration::from_millis(300),
        |_| false,
    )
    .await;
}

/// The durable consumers of the groups' stream.
async fn group_consumers(rig: &Rig) -> usize {
    use futures_util::TryStreamExt;
    let client = async_nats::connect(rig.nats.client_urls())
        .await
        .expect("NATS client");
    let js = async_nats::jetstream::new(client);
    let stream = js
        .get_stream("FMQ_SHARED")
        .await
        .expect("the groups' stream");
    let names: Vec<String> = stream
        .consumer_names()
        .try_collect()
        .await
        .expect("consumer names");
    names.len()
}

/// `member` receives `n` messages and acknowledges none of them.
async fn held_unacknowledged(member: &mut RawClient, n: usize) -> Vec<u32> {
    let got = collect(&mut [member], &[false], Duration::from_secs(10), |g| {
        total(g) >= n
    })
    .await;
    assert_eq!(got[0].len(), n, "held {got:?}");
    got.into_iter().next().unwrap_or_default()
}

/// Publish `range` as QoS 1 on `topic`, each acknowledged.
async fn publish_range(
    publisher: &mut RawClient,
    topic: &str,
    range: std::ops::RangeInclusive<u32>,
) {
    for n in range {
        assert_eq!(
            publish_acked(publisher, topic, n.to_string().as_bytes(), 1).await,
            0,
            "PUBACK of {n}"
        );
    }
}

async fn a_member_whose_session_ends_hands_its_messages_to_another_node(rig: &Rig) {
    // The first member alone gets 10 and acknowledges none; then a second member joins on
    // another node, and the first one's connection (a clean session: it ends) drops.
    let (mut first, _) = v5_ok(rig.addr(0), "end-1", true, None).await;
    assert_eq!(
        first
            .subscribe(1, &[("$share/ends/end/t", QoS::AtLeastOnce)])
            .await,
        [1]
    );
    let (mut publisher, _) = v5_ok(rig.addr(2), "end-pub", true, None).await;
    publish_range(&mut publisher, "end/t", 1..=10).await;
    let held = held_unacknowledged(&mut first, 10).await;
    let (mut second, _) = v5_ok(rig.addr(1), "end-2", true, None).await;
    assert_eq!(
        second
            .subscribe(1, &[("$share/ends/end/t", QoS::AtLeastOnce)])
            .await,
        [1]
    );
    drop(first);
    publish_range(&mut publisher, "end/t", 11..=20).await;
    let got = collect(&mut [&mut second], &[true], Duration::from_secs(10), |g| {
        g[0].iter().collect::<BTreeSet<_>>().len() >= 20
    })
    .await;
    let got: BTreeSet<u32> = got[0].iter().copied().collect();
    assert_eq!(
        got,
        (1..=20).collect(),
        "held by the first member: {held:?}"
    );
}

async fn an_offline_persistent_member_keeps_its_copy_until_it_returns(rig: &Rig) {
    // A persistent member goes offline holding 5 unacknowledged copies: they stay its own
    // (MQTT 5 4.8.2: the server may wait for it) while its node lives, and come back to it,
    // with DUP, when it reconnects; the other member (other node) gets the rest only.
    let (mut kept, _) = v5_ok(rig.addr(0), "keep-1", true, Some(300)).await;
    assert_eq!(
        kept.subscribe(1, &[("$share/keeps/keep/t", QoS::AtLeastOnce)])
            .await,
        [1]
    );
    let (mut publisher, _) = v5_ok(rig.addr(2), "keep-pub", true, None).await;
    publish_range(&mut publisher, "keep/t", 1..=5).await;
    let held = held_unacknowledged(&mut kept, 5).await;
    let (mut other, _) = v5_ok(rig.addr(1), "keep-2", true, None).await;
    assert_eq!(
        other
            .subscribe(1, &[("$share/keeps/keep/t", QoS::AtLeastOnce)])
            .await,
        [1]
    );
    // A normal DISCONNECT: the session stays (expiry 300 s); the closed socket says the node
    // has detached it.
    kept.send(Packet::Disconnect(ferromq::protocol::Disconnect {
        reason: 0,
        properties: None,
    }))
    .await;
    kept.expect_closed().await;
    publish_range(&mut publisher, "keep/t", 6..=10).await;
    // Longer than the ack wait (nodeTimeout 2 s): the copies are still the member's.
    let others = collect(&mut [&mut other], &[true], Duration::from_secs(4), |_| {
        false
    })
    .await;
    let others: BTreeSet<u32> = others[0].iter().copied().collect();
    assert_eq!(
        others,
        (6..=10).collect(),
        "held by the offline member: {held:?}"
    );
    let (mut back, ack) = v5_ok(rig.addr(0), "keep-1", false, Some(300)).await;
    assert!(ack.session_present);
    let again = collect(&mut [&mut back], &[true], Duration::from_secs(10), |g| {
        g[0].len() >= 5
    })
    .await;
    assert_eq!(again[0], held, "re-sent in order to the returning member");
}

async fn a_killed_nodes_unacknowledged_messages_go_to_another_member(rig: &mut Rig) {
    // A persistent member on node 2 holds 10 unacknowledged copies; node 2 is SIGKILLed: they
    // go to the member on node 0 once the ack wait (nodeTimeout, 2 s) runs out, with what is
    // published after.
    let (mut doomed, _) = v5_ok(rig.addr(2), "kill-1", true, Some(300)).await;
    assert_eq!(
        doomed
            .subscribe(1, &[("$share/kills/kill/t", QoS::AtLeastOnce)])
            .await,
        [1]
    );
    let (mut publisher, _) = v5_ok(rig.addr(1), "kill-pub", true, None).await;
    publish_range(&mut publisher, "kill/t", 1..=10).await;
    let held = held_unacknowledged(&mut doomed, 10).await;
    let (mut survivor, _) = v5_ok(rig.addr(0), "kill-2", true, None).await;
    assert_eq!(
        survivor
            .subscribe(1, &[("$share/kills/kill/t", QoS::AtLeastOnce)])
            .await,
        [1]
    );
    let killed_at = Instant::now();
    tokio::task::block_in_place(|| rig.nodes[2].kill());
    publish_range(&mut publisher, "kill/t", 11..=20).await;
    let got = collect(
        &mut [&mut survivor],
        &[true],
        Duration::from_secs(15),
        |g| g[0].iter().collect::<BTreeSet<_>>().len() >= 20,
    )
    .await;
    let distinct: BTreeSet<u32> = got[0].iter().copied().collect();
    assert_eq!(
        distinct,
        (1..=20).collect(),
        "held on the killed node: {held:?}"
    );
    eprintln!(
        "shared: the killed node's 10 copies redelivered within {:?}",
        killed_at.elapsed()
    );
}
