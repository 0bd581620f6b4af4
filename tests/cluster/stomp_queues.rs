//! STOMP queues across nodes, with real nats-servers and ferromq processes and a raw STOMP
//! client: each message of a queue to exactly one consumer wherever the producer and the
//! consumers are; a message sent with no consumer waits for one on another node; a consumer
//! that leaves without acknowledging, or whose node is SIGKILLed, has its messages redelivered
//! to another node's consumer (`redelivered:true`); NACK and the redelivery plugin's limit
//! dead-letter once; a SEND's RECEIPT only once NATS stored it (quorum stopped: an ERROR, no
//! RECEIPT); temporary queues refused. S1 for queues (a node SIGKILLed under load) is
//! `s1_queues_kill_a_node_under_load` (ignored: run with `--ignored --nocapture`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::rig::{Rig, FAST};
use crate::support::cluster_nodes::FerromqNode;
use crate::support::free_port;

#[path = "../stomp/client.rs"]
#[allow(dead_code)]
pub(super) mod stomp_client;

use stomp_client::{Received, StompClient};

/// Redelivery for queues `retry.>`: twice, 100 ms apart, then the dead-letter queue.
const PLUGIN: &str = "<plugins><redeliveryPlugin><redeliveryPolicyMap><redeliveryPolicyMap>\
     <redeliveryPolicyEntries><redeliveryPolicy queue=\"retry.>\" maximumRedeliveries=\"2\" \
     initialRedeliveryDelay=\"100\" redeliveryDelay=\"100\"/></redeliveryPolicyEntries>\
     </redeliveryPolicyMap></redeliveryPolicyMap></redeliveryPlugin></plugins>";

/// A rig of `nodes` ferromq nodes, each with a STOMP connector too; their STOMP addresses.
pub(super) async fn stomp_rig(nodes: usize) -> Option<(Rig, Vec<SocketAddr>)> {
    stomp_rig_with(nodes, PLUGIN).await
}

/// [`stomp_rig`] with `broker_children` in each node's `<broker>` instead of the redelivery
/// plugin.
pub(super) async fn stomp_rig_with(
    nodes: usize,
    broker_children: &str,
) -> Option<(Rig, Vec<SocketAddr>)> {
    let mut rig = Rig::start_with(0, FAST, broker_children).await?;
    let mut stomp = Vec::new();
    let mut started = Vec::new();
    for i in 0..nodes {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let file = rig.write_stomp_node(&format!("node-{i}"), free_port(), broker_children, addr);
        started.push(FerromqNode::start(&file));
        stomp.push(addr);
    }
    tokio::task::block_in_place(|| started.iter_mut().for_each(FerromqNode::wait_serving));
    rig.nodes = started;
    Some((rig, stomp))
}

pub(super) async fn connected(addr: SocketAddr) -> StompClient {
    let mut c = StompClient::tcp(addr).await;
    c.connect(&[]).await;
    c
}

/// SUBSCRIBE with a receipt, expected.
pub(super) async fn subscribe(
    c: &mut StompClient,
    destination: &str,
    id: &str,
    extra: &[(&str, &str)],
) {
    let receipt = format!("sub-{id}");
    let mut headers = vec![
        ("destination", destination),
        ("id", id),
        ("receipt", receipt.as_str()),
    ];
    headers.extend_from_slice(extra);
    c.send("SUBSCRIBE", &headers, "").await;
    let f = c.recv().await;
    assert_eq!(
        (f.command.as_str(), f.header("receipt-id")),
        ("RECEIPT", Some(receipt.as_str())),
        "{f:?}"
    );
}

/// A persistent SEND with a receipt: `true` when the RECEIPT came (within `within`).
pub(super) async fn send_receipted(
    c: &mut StompClient,
    destination: &str,
    body: &str,
    within: Duration,
) -> bool {
    let receipt = format!("r-{body}");
    c.send(
        "SEND",
        &[
            ("destination", destination),
            ("persistent", "true"),
            ("receipt", receipt.as_str()),
        ],
        body,
    )
    .await;
    match c.recv_within(within).await {
        Some(f) if f.command == "RECEIPT" => {
            assert_eq!(f.header("receipt-id"), Some(receipt.as_str()), "{f:?}");
            true
        }
        other => {
            eprintln!("SEND {body} to {destination}: {other:?}");
            false
        }
    }
}

pub(super) async fn send_ok(c: &mut StompClient, destination: &str, body: &str) {
    assert!(
        send_receipted(c, destination, body, Duration::from_secs(5)).await,
        "no RECEIPT for {body} to {destination}"
    );
}

pub(super) async fn ack(c: &mut StompClient, m: &Received) {
    let id = m.header("ack").expect("an ack header");
    c.send("ACK", &[("id", id)], "").await;
}

async fn nack(c: &mut StompClient, m: &Received) {
    let id = m.header("ack").expect("an ack header");
    c.send("NACK", &[("id", id)], "").await;
}

/// MESSAGE frames `clients` receive within `within` (stopping early once `expected` in all),
/// acknowledging each when `acknowledge`; (client index, frame) in arrival order.
pub(super) async fn collect(
    clients: &mut [&mut StompClient],
    acknowledge: bool,
    expected: usize,
    within: Duration,
) -> Vec<(usize, Received)> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    while got.len() < expected && Instant::now() < deadline {
        for (i, c) in clients.iter_mut().enumerate() {
            while let Some(f) = c.recv_within(Duration::from_millis(20)).await {
                assert_eq!(f.command, "MESSAGE", "{f:?}");
                if acknowledge {
                    ack(c, &f).await;
                }
                got.push((i, f));
            }
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stomp_queues_across_nodes() {
    let Some((mut rig, stomp)) = stomp_rig(3).await else {
        return;
    };
    each_message_to_exactly_one_consumer(&stomp).await;
    a_message_waits_for_a_consumer_on_another_node(&stomp).await;
    a_consumer_gone_unacknowledged_hands_its_messages_to_another_node(&stomp).await;
    nack_and_the_redelivery_limit_dead_letter_once(&stomp).await;
    temporary_queues_carry_replies_across_nodes(&stomp).await;
    a_transaction_is_applied_at_commit(&stomp).await;
    a_killed_nodes_unacknowledged_messages_come_back(&mut rig, &stomp).await;
    no_receipt_without_the_store(&mut rig, &stomp).await;
}

async fn each_message_to_exactly_one_consumer(stomp: &[SocketAddr]) {
    let q = "/queue/work.one";
    let mut b = connected(stomp[1]).await;
    let mut c = connected(stomp[2]).await;
    let opts = [
        ("ack", "client-individual"),
        ("activemq.prefetchSize", "10"),
    ];
    subscribe(&mut b, q, "b", &opts).await;
    subscribe(&mut c, q, "c", &opts).await;
    let mut producer = connected(stomp[0]).await;
    // The cluster's first queue use makes the queue stream: its SEND waits for the stream's
    // raft group to form (docs/cluster.md, "STOMP queues across nodes").
    assert!(
        send_receipted(&mut producer, q, "first", Duration::from_secs(40)).await,
        "no RECEIPT for the first SEND"
    );
    let first = collect(&mut [&mut b, &mut c], true, 1, Duration::from_secs(20)).await;
    assert_eq!(
        first.len(),
        1,
        "the first message to one consumer: {first:?}"
    );
    const N: usize = 200;
    for n in 0..N {
        send_ok(&mut producer, q, &n.to_string()).await;
    }
    // Sharing without a race on which node's puller starts first: b takes its prefetch (10)
    // and acknowledges nothing, so what b's node does not hold must reach c on the other node.
    let held_by_b = collect(&mut [&mut b], false, 10, Duration::from_secs(20)).await;
    assert_eq!(held_by_b.len(), 10, "b's prefetch filled");
    // Until c has the rest, or nothing came for 1 s (b's node may hold a few it pulled
    // beyond b's prefetch until b acknowledges).
    let mut to_c = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = Instant::now();
    while to_c.len() < N - held_by_b.len() && Instant::now() < deadline {
        match c.recv_within(Duration::from_millis(200)).await {
            Some(f) => {
                assert_eq!(f.command, "MESSAGE", "{f:?}");
                ack(&mut c, &f).await;
                to_c.push(f);
                last = Instant::now();
            }
            None if !to_c.is_empty() && last.elapsed() > Duration::from_secs(1) => break,
            None => {}
        }
    }
    for (_, m) in &held_by_b {
        ack(&mut b, m).await;
    }
    let rest = collect(
        &mut [&mut b, &mut c],
        true,
        N.saturating_sub(held_by_b.len() + to_c.len()),
        Duration::from_secs(20),
    )
    .await;
    let got: Vec<(usize, Received)> = held_by_b
        .into_iter()
        .chain(to_c.into_iter().map(|m| (1, m)))
        .chain(rest)
        .collect();
    // Nothing more arrives: each message once.
    let more = collect(
        &mut [&mut b, &mut c],
        true,
        usize::MAX,
        Duration::from_secs(1),
    )
    .await;
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut per_consumer = [0usize; 2];
    for (i, f) in got.iter().chain(more.iter()) {
        *seen.entry(f.body_text()).or_default() += 1;
        per_consumer[*i] += 1;
        assert_eq!(f.header("destination"), Some(q), "{f:?}");
    }
    let expected: BTreeSet<String> = (0..N).map(|n| n.to_string()).collect();
    assert_eq!(
        seen.keys().cloned().collect::<BTreeSet<_>>(),
        expected,
        "every message delivered"
    );
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered twice: {twice:?}");
    assert!(
        per_consumer.iter().all(|n| *n > 0),
        "both nodes' consumers share the queue: {per_consumer:?}"
    );
}

async fn a_message_waits_for_a_consumer_on_another_node(stomp: &[SocketAddr]) {
    let q = "/queue/work.later";
    let mut producer = connected(stomp[0]).await;
    for n in 0..5 {
        send_ok(&mut producer, q, &format!("later-{n}")).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut c = connected(stomp[2]).await;
    subscribe(&mut c, q, "c", &[("ack", "client-individual")]).await;
    let got = collect(&mut [&mut c], true, 5, Duration::from_secs(10)).await;
    let bodies: Vec<String> = got.iter().map(|(_, f)| f.body_text()).collect();
    let expected: Vec<String> = (0..5).map(|n| format!("later-{n}")).collect();
    assert_eq!(
        bodies, expected,
        "sent before any consumer, received in order"
    );
    assert!(got.iter().all(|(_, f)| f.header("redelivered").is_none()));
}

async fn a_consumer_gone_unacknowledged_hands_its_messages_to_another_node(stomp: &[SocketAddr]) {
    let q = "/queue/work.handover";
    let mut x = connected(stomp[1]).await;
    subscribe(
        &mut x,
        q,
        "x",
        &[("ack", "client"), ("activemq.prefetchSize", "5")],
    )
    .await;
    let mut producer = connected(stomp[0]).await;
    for n in 0..5 {
        send_ok(&mut producer, q, &format!("h-{n}")).await;
    }
    let held = collect(&mut [&mut x], false, 5, Duration::from_secs(10)).await;
    assert_eq!(held.len(), 5, "the first consumer holds all five");
    let mut y = connected(stomp[2]).await;
    subscribe(&mut y, q, "y", &[("ack", "client-individual")]).await;
    // Held past nodeTimeout (2 s, the ack wait): the holding node extends it, nothing moves.
    let early = collect(&mut [&mut y], true, 1, Duration::from_secs(3)).await;
    assert!(
        early.is_empty(),
        "held messages stay with their consumer: {early:?}"
    );
    drop(x);
    let moved = collect(&mut [&mut y], true, 5, Duration::from_secs(10)).await;
    let bodies: BTreeSet<String> = moved.iter().map(|(_, f)| f.body_text()).collect();
    let expected: BTreeSet<String> = (0..5).map(|n| format!("h-{n}")).collect();
    assert_eq!(bodies, expected, "redelivered on another node");
    assert_eq!(moved.len(), 5, "each once: {moved:?}");
    for (_, f) in &moved {
        assert_eq!(f.header("redelivered"), Some("true"), "{f:?}");
    }
}

async fn nack_and_the_redelivery_limit_dead_letter_once(stomp: &[SocketAddr]) {
    let mut dlq = connected(stomp[2]).await;
    subscribe(
        &mut dlq,
        "/queue/ActiveMQ.DLQ",
        "d",
        &[("ack", "client-individual")],
    )
    .await;
    // No redelivery policy for this queue: a NACK dead-letters at once.
    let mut refuser = connected(stomp[1]).await;
    subscribe(
        &mut refuser,
        "/queue/work.refused",
        "r",
        &[("ack", "client-individual")],
    )
    .await;
    // The plugin's policy: two redeliveries, then the dead-letter queue.
    let mut retrier = connected(stomp[1]).await;
    subscribe(
        &mut retrier,
        "/queue/retry.work",
        "t",
        &[("ack", "client-individual")],
    )
    .await;
    let mut producer = connected(stomp[0]).await;
    send_ok(&mut producer, "/queue/work.refused", "poison").await;
    send_ok(&mut producer, "/queue/retry.work", "flaky").await;
    let m = collect(&mut [&mut refuser], false, 1, Duration::from_secs(10)).await;
    assert_eq!(m.len(), 1, "{m:?}");
    nack(&mut refuser, &m[0].1).await;
    let mut deliveries = 0;
    let deadline = Instant::now() + Duration::from_secs(15);
    while deliveries < 3 && Instant::now() < deadline {
        for (_, f) in collect(&mut [&mut retrier], false, 1, Duration::from_millis(500)).await {
            assert_eq!(f.body_text(), "flaky");
            assert_eq!(
                f.header("redelivered"),
                (deliveries > 0).then_some("true"),
                "delivery {deliveries}: {f:?}"
            );
            deliveries += 1;
            nack(&mut retrier, &f).await;
        }
    }
    assert_eq!(deliveries, 3, "delivered once and redelivered twice");
    let dead = collect(&mut [&mut dlq], true, 2, Duration::from_secs(10)).await;
    let more = collect(
        &mut [&mut dlq, &mut retrier, &mut refuser],
        true,
        usize::MAX,
        Duration::from_secs(2),
    )
    .await;
    assert!(
        more.is_empty(),
        "dead-lettered once, not redelivered again: {more:?}"
    );
    let mut bodies: Vec<(String, Option<String>)> = dead
        .iter()
        .map(|(_, f)| {
            (
                f.body_text(),
                f.header("original-destination").map(str::to_owned),
            )
        })
        .collect();
    bodies.sort();
    assert_eq!(
        bodies,
        vec![
            ("flaky".to_owned(), Some("/queue/retry.work".to_owned())),
            ("poison".to_owned(), Some("/queue/work.refused".to_owned())),
        ]
    );
}

/// Request and reply across nodes: the requester's temporary queue lives on its node; the
/// responder on another node replies to `/remote-temp-queue/...` with a RECEIPT once the
/// requester's node queued it; once the requester is gone, a send to it is refused with
/// ActiveMQ's words; another connection may not consume from it.
async fn temporary_queues_carry_replies_across_nodes(stomp: &[SocketAddr]) {
    let requests = "/queue/work.requests";
    let mut responder = connected(stomp[1]).await;
    subscribe(&mut responder, requests, "req", &[]).await;
    let mut requester = connected(stomp[0]).await;
    subscribe(&mut requester, "/temp-queue/replies", "rep", &[]).await;
    requester
        .send(
            "SEND",
            &[
                ("destination", requests),
                ("reply-to", "/temp-queue/replies"),
                ("correlation-id", "c1"),
                ("receipt", "sent"),
            ],
            "ping",
        )
        .await;
    let receipt = requester.recv().await;
    assert_eq!(receipt.command, "RECEIPT", "{receipt:?}");
    let request = collect(&mut [&mut responder], false, 1, Duration::from_secs(20)).await;
    let reply_to = request
        .first()
        .and_then(|(_, m)| m.header("reply-to"))
        .expect("the request and its reply-to")
        .to_owned();
    assert!(reply_to.starts_with("/remote-temp-queue/ID:"), "{reply_to}");
    responder
        .send(
            "SEND",
            &[
                ("destination", reply_to.as_str()),
                ("correlation-id", "c1"),
                ("receipt", "replied"),
            ],
            "pong",
        )
        .await;
    let answer = responder.recv_within(Duration::from_secs(10)).await;
    assert_eq!(
        answer.as_ref().map(|f| f.command.as_str()),
        Some("RECEIPT"),
        "the reply queued on the requester's node: {answer:?}"
    );
    let reply = collect(&mut [&mut requester], false, 1, Duration::from_secs(10)).await;
    let (_, reply) = reply.first().expect("the reply on the requester's node");
    assert_eq!(reply.body_text(), "pong");
    assert_eq!(reply.header("correlation-id"), Some("c1"));
    assert_eq!(reply.header("destination"), Some("/temp-queue/replies"));

    let mut thief = connected(stomp[2]).await;
    thief
        .send(
            "SUBSCRIBE",
            &[("destination", reply_to.as_str()), ("id", "steal")],
            "",
        )
        .await;
    let refused = thief.recv().await;
    assert_eq!(refused.command, "ERROR", "{refused:?}");

    requester.send("DISCONNECT", &[], "").await;
    drop(requester);
    // The queue goes with its connection (once the requester's node saw it close).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut late = connected(stomp[1]).await;
        late.send(
            "SEND",
            &[("destination", reply_to.as_str()), ("receipt", "late")],
            "too late",
        )
        .await;
        let f = late.recv().await;
        let message = f.header("message").unwrap_or_default();
        // NATS spreads the loss of the queue's subscriber between servers on its own time: a
        // request routed to a server that still had it waits out its answer instead. That SEND
        // is refused too, but the answer the test waits for is the definite one.
        let unanswered = f.command == "ERROR" && message.contains("did not answer");
        if f.command == "ERROR" && !unanswered {
            assert!(
                f.header("message")
                    .is_some_and(|m| m.contains("Cannot publish to a deleted Destination")),
                "{f:?}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still not refused as deleted: {f:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Expect the RECEIPT `id` next on `c`.
pub(super) async fn receipt(c: &mut StompClient, id: &str) {
    let f = c.recv_within(Duration::from_secs(10)).await;
    assert!(
        f.as_ref()
            .is_some_and(|f| f.command == "RECEIPT" && f.header("receipt-id") == Some(id)),
        "RECEIPT {id} expected: {f:?}"
    );
}

/// A STOMP transaction on a cluster node: its SENDs reach another node's consumer only after
/// COMMIT, whose RECEIPT leaves once NATS stored them; its ACKs are kept at COMMIT; ABORT
/// applies nothing. (What is kept as one unit: `stomp_transactions.rs`.)
async fn a_transaction_is_applied_at_commit(stomp: &[SocketAddr]) {
    let q = "/queue/work.tx";
    let mut c = connected(stomp[1]).await;
    subscribe(&mut c, q, "c", &[("ack", "client-individual")]).await;
    let mut p = connected(stomp[0]).await;
    for (tx, end) in [("aborted", "ABORT"), ("committed", "COMMIT")] {
        p.send("BEGIN", &[("transaction", tx)], "").await;
        for n in 0..3 {
            p.send(
                "SEND",
                &[
                    ("destination", q),
                    ("persistent", "true"),
                    ("transaction", tx),
                ],
                &format!("{tx}-{n}"),
            )
            .await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            c.recv_within(Duration::from_millis(200)).await.is_none(),
            "nothing of {tx} before its {end}"
        );
        p.send(end, &[("transaction", tx), ("receipt", tx)], "")
            .await;
        receipt(&mut p, tx).await;
    }
    let got = collect(&mut [&mut c], false, 3, Duration::from_secs(10)).await;
    let bodies: Vec<String> = got.iter().map(|(_, f)| f.body_text()).collect();
    assert_eq!(bodies, ["committed-0", "committed-1", "committed-2"]);
    c.send("BEGIN", &[("transaction", "acks")], "").await;
    for (_, m) in &got {
        let id = m.header("ack").expect("an ack header");
        c.send("ACK", &[("id", id), ("transaction", "acks")], "")
            .await;
    }
    c.send(
        "COMMIT",
        &[("transaction", "acks"), ("receipt", "acks")],
        "",
    )
    .await;
    receipt(&mut c, "acks").await;
    c.send("DISCONNECT", &[("receipt", "bye")], "").await;
    receipt(&mut c, "bye").await;
    let mut after = connected(stomp[2]).await;
    subscribe(&mut after, q, "after", &[]).await;
    let left = collect(&mut [&mut after], false, 1, Duration::from_secs(2)).await;
    assert!(left.is_empty(), "acknowledged at COMMIT: {left:?}");
}

async fn a_killed_nodes_unacknowledged_messages_come_back(rig: &mut Rig, stomp: &[SocketAddr]) {
    let q = "/queue/work.killed";
    let mut x = connected(stomp[1]).await;
    subscribe(
        &mut x,
        q,
        "x",
        &[("ack", "client-individual"), ("activemq.prefetchSize", "4")],
    )
    .await;
    let mut producer = connected(stomp[0]).await;
    for n in 0..4 {
        send_ok(&mut producer, q, &format!("k-{n}")).await;
    }
    let held = collect(&mut [&mut x], false, 4, Duration::from_secs(10)).await;
    assert_eq!(held.len(), 4);
    let mut y = connected(stomp[2]).await;
    subscribe(&mut y, q, "y", &[("ack", "client-individual")]).await;
    rig.nodes[1].kill();
    let killed_at = Instant::now();
    let moved = collect(&mut [&mut y], true, 4, Duration::from_secs(15)).await;
    let bodies: BTreeSet<String> = moved.iter().map(|(_, f)| f.body_text()).collect();
    let expected: BTreeSet<String> = (0..4).map(|n| format!("k-{n}")).collect();
    assert_eq!(bodies, expected, "back from the dead node");
    assert!(moved
        .iter()
        .all(|(_, f)| f.header("redelivered") == Some("true")));
    // Not before the ack wait (nodeTimeout, 2 s) ran out.
    assert!(
        killed_at.elapsed() >= Duration::from_millis(1200),
        "{:?}",
        killed_at.elapsed()
    );
}

async fn no_receipt_without_the_store(rig: &mut Rig, stomp: &[SocketAddr]) {
    let mut producer = connected(stomp[0]).await;
    send_ok(&mut producer, "/queue/work.quorum", "before").await;
    tokio::task::block_in_place(|| {
        rig.nats.stop(1);
        rig.nats.stop(2);
    });
    let receipted = send_receipted(
        &mut producer,
        "/queue/work.quorum",
        "after",
        Duration::from_secs(8),
    )
    .await;
    assert!(!receipted, "a RECEIPT for a message NATS could not store");
}

// ---- S1 for queues: a node SIGKILLed under load ----

/// Messages each producer sends.
const S1_PER_PRODUCER: usize = 600;

type Seen = Arc<parking_lot::Mutex<BTreeMap<String, usize>>>;
/// Per consumer: (deliveries, of them redelivered).
type PerConsumer = Arc<parking_lot::Mutex<Vec<(usize, usize)>>>;

/// A consumer on `addr` acknowledging everything it gets until `stop`.
async fn s1_consumer(
    index: usize,
    addr: SocketAddr,
    seen: Seen,
    counts: PerConsumer,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut c = connected(addr).await;
    subscribe(
        &mut c,
        "/queue/s1.load",
        "s",
        &[
            ("ack", "client-individual"),
            ("activemq.prefetchSize", "20"),
        ],
    )
    .await;
    loop {
        if *stop.borrow_and_update() {
            return;
        }
        let Some(f) = c.recv_within(Duration::from_millis(50)).await else {
            continue;
        };
        if f.command != "MESSAGE" {
            return; // the node is gone (ERROR or closed)
        }
        *seen.lock().entry(f.body_text()).or_default() += 1;
        {
            let mut counts = counts.lock();
            counts[index].0 += 1;
            counts[index].1 += usize::from(f.header("redelivered") == Some("true"));
        }
        ack(&mut c, &f).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "S1 for STOMP queues (about 40 s): run with --ignored --nocapture"]
async fn s1_queues_kill_a_node_under_load() {
    let Some((mut rig, stomp)) = stomp_rig(3).await else {
        return;
    };
    let seen: Seen = Arc::default();
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let counts: PerConsumer = Arc::new(parking_lot::Mutex::new(vec![(0, 0); 6]));
    let mut consumers = Vec::new();
    for (node, addr) in stomp.iter().enumerate() {
        for k in 0..2 {
            consumers.push(tokio::spawn(s1_consumer(
                node * 2 + k,
                *addr,
                seen.clone(),
                counts.clone(),
                stop.clone(),
            )));
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut producers = Vec::new();
    for p in [0usize, 2] {
        let (addr, sent) = (stomp[p], sent.clone());
        producers.push(tokio::spawn(async move {
            let mut c = connected(addr).await;
            let mut receipted = Vec::new();
            for n in 0..S1_PER_PRODUCER {
                let body = format!("p{p}-{n}");
                if send_receipted(&mut c, "/queue/s1.load", &body, Duration::from_secs(10)).await {
                    receipted.push(body);
                }
                sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            receipted
        }));
    }
    while sent.load(std::sync::atomic::Ordering::Relaxed) < 200 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    rig.nodes[1].kill();
    let mut receipted = BTreeSet::new();
    for p in producers {
        receipted.extend(p.await.expect("producer"));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let delivered = seen.lock().len();
        if receipted.iter().all(|b| seen.lock().contains_key(b)) {
            println!("S1 queues: all {delivered} delivered");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Late duplicates still arriving are counted too.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _ = stop_tx.send(true);
    for c in consumers {
        let _ = c.await;
    }
    let seen = seen.lock().clone();
    let lost: Vec<&String> = receipted
        .iter()
        .filter(|b| !seen.contains_key(*b))
        .collect();
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    println!(
        "S1 queues: receipted {}, delivered {}, lost {}, duplicates {duplicates}",
        receipted.len(),
        seen.len(),
        lost.len()
    );
    println!(
        "S1 queues: per consumer (deliveries, redelivered), two per node: {:?}",
        counts.lock()
    );
    assert!(lost.is_empty(), "receipted but never delivered: {lost:?}");
    assert_eq!(receipted.len(), 2 * S1_PER_PRODUCER, "every SEND receipted");
}
