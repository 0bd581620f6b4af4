//! A cluster queue's give-backs are no deliveries: a node whose only consumer's selector
//! refuses every message pulls them and gives them back, again and again, and still another
//! node's consumer gets each message first with no `redelivered` header, then (after its NACK)
//! redelivered once, as the redelivery plugin's `maximumRedeliveries="1"` allows, and only then
//! is it dead-lettered. The console's `depth` is what the stream holds (the same on every
//! node), `held` what the node pulled, and a node's `enqueued` counts what was sent through
//! it, not its pulls. A node started after the give-backs learns them from the others.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::rig::{Rig, FAST};
use super::stomp_queues::stomp_client::{Received, StompClient};
use super::stomp_queues::{send_ok, send_receipted, subscribe};
use crate::console_http::get;
use crate::support::cluster_nodes::FerromqNode;
use crate::support::free_port;

const REALM: &str = "viewer: viewerpw, user\n";
const VIEWER: (&str, &str) = ("viewer", "viewerpw");
/// One redelivery for queues `gb.>`, then the dead-letter queue.
const PLUGIN: &str = "<plugins><redeliveryPlugin><redeliveryPolicyMap><redeliveryPolicyMap>\
     <redeliveryPolicyEntries><redeliveryPolicy queue=\"gb.>\" maximumRedeliveries=\"1\" \
     initialRedeliveryDelay=\"100\" redeliveryDelay=\"100\"/></redeliveryPolicyEntries>\
     </redeliveryPolicyMap></redeliveryPolicyMap></redeliveryPlugin></plugins>";
const Q: &str = "/queue/gb.work";
const NAME: &str = "gb.work";
const N: usize = 20;

struct Node {
    stomp: SocketAddr,
    console: SocketAddr,
}

/// 3 nats-servers and `count` nodes, each with a STOMP connector, a web console and the plugin.
async fn rig(count: usize) -> Option<(Rig, Vec<Node>)> {
    let mut rig = Rig::start_with(0, FAST, PLUGIN).await?;
    let realm = rig.dir.path().join("jetty-realm.properties");
    std::fs::write(&realm, REALM).expect("realm");
    let mut nodes = Vec::new();
    let mut started = Vec::new();
    for i in 0..count {
        let (node, process) = start_node(&rig, i);
        started.push(process);
        nodes.push(node);
    }
    tokio::task::block_in_place(|| started.iter_mut().for_each(FerromqNode::wait_serving));
    rig.nodes = started;
    Some((rig, nodes))
}

/// Node `i` of `rig` started (not yet serving).
fn start_node(rig: &Rig, i: usize) -> (Node, FerromqNode) {
    let realm = rig.dir.path().join("jetty-realm.properties");
    let console: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let children = format!(
        r#"{PLUGIN}<console xmlns="urn:ferromq" host="127.0.0.1" port="{}" realm="{}"/>"#,
        console.port(),
        realm.display()
    );
    let stomp: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let file = rig.write_stomp_node(&format!("node-{i}"), free_port(), &children, stomp);
    (Node { stomp, console }, FerromqNode::start(&file))
}

async fn connected(addr: SocketAddr) -> StompClient {
    let mut c = StompClient::tcp(addr).await;
    c.connect(&[]).await;
    c
}

async fn nack(c: &mut StompClient, m: &Received) {
    let id = m.header("ack").expect("an ack header");
    c.send("NACK", &[("id", id)], "").await;
}

/// `/api/queues`' answer on `console` and its entry for [`NAME`].
async fn queue_figures(console: SocketAddr) -> (Value, Value) {
    let answer = get(console, "/api/queues", Some(VIEWER)).await.json();
    let entry = answer["queues"]
        .as_array()
        .and_then(|q| q.iter().find(|q| q["name"] == NAME).cloned())
        .unwrap_or(Value::Null);
    (answer, entry)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn give_backs_are_not_deliveries() {
    let Some((_rig, nodes)) = rig(3).await else {
        return;
    };
    let mut producer = connected(nodes[2].stomp).await;
    // The cluster's first queue use makes the queue stream (its raft group forms first).
    assert!(
        send_receipted(&mut producer, Q, "m0", Duration::from_secs(40)).await,
        "no RECEIPT for the first SEND"
    );

    // Node 0's only consumer selects nothing: node 0 pulls what it has room for and gives it
    // back, every 250-500 ms.
    let mut picky = connected(nodes[0].stomp).await;
    let picky_opts = [
        ("activemq.prefetchSize", "10"),
        ("selector", "nothing = 'x'"),
    ];
    subscribe(&mut picky, Q, "p", &picky_opts).await;
    for n in 1..N {
        send_ok(&mut producer, Q, &format!("m{n}")).await;
    }
    // Long enough for each message to be pulled and given back by node 0 a few times.
    let mut held = false;
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        let (_, entry) = queue_figures(nodes[0].console).await;
        held |= entry["held"].as_u64() > Some(0);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Checked after the deliveries (those tell the most when they fail).
    let mut figures = Vec::new();
    for node in &nodes {
        figures.push(queue_figures(node.console).await);
    }

    // Node 1's consumer gets every message twice: first not redelivered, then (after a NACK)
    // redelivered; the second NACK dead-letters it, as maximumRedeliveries="1" says.
    let mut dlq = connected(nodes[2].stomp).await;
    subscribe(&mut dlq, "/queue/ActiveMQ.DLQ", "d", &[]).await;
    let mut worker = connected(nodes[1].stomp).await;
    let worker_opts = [("ack", "client-individual"), ("activemq.prefetchSize", "5")];
    subscribe(&mut worker, Q, "w", &worker_opts).await;
    let mut deliveries: BTreeMap<String, Vec<bool>> = BTreeMap::new();
    let mut dead: BTreeMap<String, usize> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while dead.values().sum::<usize>() < N && Instant::now() < deadline {
        while let Some(f) = worker.recv_within(Duration::from_millis(20)).await {
            assert_eq!(f.command, "MESSAGE", "{f:?}");
            let redelivered = f.header("redelivered") == Some("true");
            deliveries
                .entry(f.body_text())
                .or_default()
                .push(redelivered);
            nack(&mut worker, &f).await;
        }
        while let Some(f) = dlq.recv_within(Duration::from_millis(20)).await {
            assert_eq!(f.command, "MESSAGE", "{f:?}");
            assert_eq!(f.header("original-destination"), Some(Q), "{f:?}");
            *dead.entry(f.body_text()).or_default() += 1;
        }
    }
    // Nothing more comes, to the worker or the dead-letter queue.
    let quiet = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < quiet {
        if let Some(f) = worker.recv_within(Duration::from_millis(20)).await {
            deliveries
                .entry(f.body_text())
                .or_default()
                .push(f.header("redelivered") == Some("true"));
        }
        if let Some(f) = dlq.recv_within(Duration::from_millis(20)).await {
            *dead.entry(f.body_text()).or_default() += 1;
        }
    }
    let early: Vec<(&String, &Vec<bool>)> = deliveries
        .iter()
        .filter(|(_, d)| d.as_slice() != [false, true])
        .collect();
    assert!(
        early.is_empty(),
        "each message delivered once, then redelivered once; not so for {} of {N}: {early:?}",
        early.len()
    );
    assert_eq!(deliveries.len(), N, "{deliveries:?}");
    assert_eq!(dead.len(), N, "each dead-lettered: {dead:?}");
    assert!(dead.values().all(|c| *c == 1), "once: {dead:?}");

    // The console: the stream's depth on every node, each node's own sends and holdings.
    assert!(held, "node 0 pulled for its consumer");
    for (i, (answer, entry)) in figures.iter().enumerate() {
        if i == 1 {
            // Node 1 had not used the queue yet.
            assert_eq!(*entry, Value::Null, "{answer}");
            continue;
        }
        assert_eq!(answer.get("depth_error"), None, "{answer}");
        assert_eq!(
            entry["depth"], N,
            "node {i}: the stream holds all: {answer}"
        );
        assert!(entry["held"].as_u64() <= Some(10), "node {i}: {answer}");
        let sent = if i == 2 { N } else { 0 };
        assert_eq!(
            entry["enqueued"], sent,
            "node {i}: what was sent through it, not what it pulled: {answer}"
        );
    }
    let (answer, entry) = queue_figures(nodes[0].console).await;
    assert_eq!(entry["depth"], 0, "the stream holds none: {answer}");
    assert_eq!(entry["enqueued"], 0, "{answer}");
}

/// A node started after the give-backs asks the others for their notes: its consumer gets
/// every message as a first delivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_started_later_learns_the_give_backs() {
    let Some((mut rig, mut nodes)) = rig(1).await else {
        return;
    };
    let mut producer = connected(nodes[0].stomp).await;
    assert!(
        send_receipted(&mut producer, Q, "m0", Duration::from_secs(40)).await,
        "no RECEIPT for the first SEND"
    );
    let mut picky = connected(nodes[0].stomp).await;
    let picky_opts = [
        ("activemq.prefetchSize", "10"),
        ("selector", "nothing = 'x'"),
    ];
    subscribe(&mut picky, Q, "p", &picky_opts).await;
    const LATE: usize = 10;
    for n in 1..LATE {
        send_ok(&mut producer, Q, &format!("m{n}")).await;
    }
    // Each message pulled and given back by node 0 a few times.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let (node, mut process) = start_node(&rig, 1);
    tokio::task::block_in_place(|| process.wait_serving());
    rig.nodes.push(process);
    nodes.push(node);
    let mut worker = connected(nodes[1].stomp).await;
    subscribe(&mut worker, Q, "w", &[]).await;
    let mut got: BTreeMap<String, Vec<bool>> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.len() < LATE && Instant::now() < deadline {
        if let Some(f) = worker.recv_within(Duration::from_millis(50)).await {
            assert_eq!(f.command, "MESSAGE", "{f:?}");
            got.entry(f.body_text())
                .or_default()
                .push(f.header("redelivered") == Some("true"));
        }
    }
    let redelivered: Vec<&String> = got
        .iter()
        .filter(|(_, d)| d.as_slice() != [false])
        .map(|(body, _)| body)
        .collect();
    assert!(
        redelivered.is_empty(),
        "{} of {LATE} not a single first delivery: {got:?}",
        redelivered.len()
    );
    assert_eq!(got.len(), LATE, "{got:?}");
}
