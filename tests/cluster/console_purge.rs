//! A queue's purge from a cluster node's web console: every message of it stored in NATS is
//! removed, every node drops the copies it pulled and has not delivered, a consumer keeps
//! what it was delivered (its ACK succeeds) but what it leaves with comes back to no one,
//! other queues (one whose name a wildcard or an unescaped dot would reach included) keep
//! theirs, and what is sent after the purge is delivered. A consumer acknowledging while the
//! purge runs gets each message at most once; a node killed before the purge is named as
//! silent and its copies do not come back.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::rig::{Rig, FAST};
use super::stomp_queues::stomp_client::{Received, StompClient};
use super::stomp_queues::{ack, send_ok, send_receipted, subscribe};
use crate::console_http::{act, get, request};
use crate::support::cluster_nodes::FerromqNode;
use crate::support::free_port;

const REALM: &str = "admin: adminpw, admin\nviewer: viewerpw, user\n";
const ADMIN: (&str, &str) = ("admin", "adminpw");
const VIEWER: (&str, &str) = ("viewer", "viewerpw");

const Q: &str = "/queue/purge.me";
/// Queues the purge of `purge.me` must not touch: one its name is a prefix of, and one whose
/// subject an unescaped dot in `purge.me` would be.
const KEPT: [&str; 2] = ["/queue/purge.me.keep", "/queue/purge/me"];

/// A node of the rig: STOMP and console addresses.
struct Node {
    stomp: SocketAddr,
    console: SocketAddr,
}

/// 3 nats-servers and 3 nodes, each with a STOMP connector and a web console.
async fn purge_rig() -> Option<(Rig, Vec<Node>)> {
    let mut rig = Rig::start(0, FAST).await?;
    let realm = rig.dir.path().join("jetty-realm.properties");
    std::fs::write(&realm, REALM).expect("realm");
    let mut nodes = Vec::new();
    let mut started = Vec::new();
    for i in 0..3 {
        let console: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let element = format!(
            r#"<console xmlns="urn:ferromq" host="127.0.0.1" port="{}" realm="{}"/>"#,
            console.port(),
            realm.display()
        );
        let stomp: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let file = rig.write_stomp_node(&format!("node-{i}"), free_port(), &element, stomp);
        started.push(FerromqNode::start(&file));
        nodes.push(Node { stomp, console });
    }
    tokio::task::block_in_place(|| started.iter_mut().for_each(FerromqNode::wait_serving));
    rig.nodes = started;
    Some((rig, nodes))
}

async fn connected(addr: SocketAddr) -> StompClient {
    let mut c = StompClient::tcp(addr).await;
    c.connect(&[]).await;
    c
}

/// MESSAGE frames `c` receives within `within` (until `expected`), acknowledged when `acked`.
async fn receive(
    c: &mut StompClient,
    expected: usize,
    within: Duration,
    acked: bool,
) -> Vec<Received> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    while got.len() < expected && Instant::now() < deadline {
        if let Some(f) = c.recv_within(Duration::from_millis(50)).await {
            assert_eq!(f.command, "MESSAGE", "{f:?}");
            if acked {
                ack(c, &f).await;
            }
            got.push(f);
        }
    }
    got
}

fn bodies(frames: &[Received]) -> Vec<String> {
    frames.iter().map(Received::body_text).collect()
}

/// A purge of `name` from `console`, in the query string.
async fn purge(console: SocketAddr, name: &str) -> (u16, Value) {
    let path = format!("/api/queues/purge?name={}", percent(name));
    let answer = act(console, &path, ADMIN).await;
    let json = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
    (answer.status, json)
}

/// Every byte but `[A-Za-z0-9._-]` percent-encoded.
fn percent(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'_' | b'-' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `/api/queues`' entry for `name` on `console`.
async fn local_queue(console: SocketAddr, name: &str) -> Option<Value> {
    let answer = get(console, "/api/queues", Some(VIEWER)).await.json();
    answer["queues"]
        .as_array()
        .and_then(|q| q.iter().find(|q| q["name"] == name).cloned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_console_purges_a_queue_across_the_cluster() {
    let Some((mut rig, nodes)) = purge_rig().await else {
        return;
    };
    let mut producer = connected(nodes[0].stomp).await;
    // The cluster's first queue use makes the queue stream (its raft group forms first).
    assert!(
        send_receipted(&mut producer, Q, "m0", Duration::from_secs(40)).await,
        "no RECEIPT for the first SEND"
    );
    const N: usize = 30;
    for n in 1..N {
        send_ok(&mut producer, Q, &format!("m{n}")).await;
    }
    for kept in KEPT {
        for n in 0..3 {
            send_ok(&mut producer, kept, &format!("{kept}-{n}")).await;
        }
    }

    // Node 1's consumer takes 5 and acknowledges none; node 0's consumer selects nothing, so
    // what node 0 pulls waits there undelivered until given back.
    let mut holder = connected(nodes[1].stomp).await;
    let held_opts = [("ack", "client-individual"), ("activemq.prefetchSize", "5")];
    subscribe(&mut holder, Q, "h", &held_opts).await;
    let held = receive(&mut holder, 5, Duration::from_secs(20), false).await;
    assert_eq!(held.len(), 5, "delivered to node 1's consumer");
    let mut picky = connected(nodes[0].stomp).await;
    let picky_opts = [
        ("activemq.prefetchSize", "10"),
        ("selector", "nothing = 'x'"),
    ];
    subscribe(&mut picky, Q, "p", &picky_opts).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let waiting = local_queue(nodes[0].console, "purge.me").await;
        if waiting
            .as_ref()
            .is_some_and(|q| q["held"].as_u64() > Some(0))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node 0 pulls for its consumer: {waiting:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Only an administrator purges.
    let refused = act(nodes[2].console, "/api/queues/purge?name=purge.me", VIEWER).await;
    assert_eq!(refused.status, 403, "{}", refused.text());
    let no_token = request(
        nodes[2].console,
        "POST",
        "/api/queues/purge?name=purge.me",
        Some(ADMIN),
        &[],
    )
    .await;
    assert_eq!(no_token.status, 403, "{}", no_token.text());

    // Names that a wildcard or an unescaped dot would turn into other queues' subjects name
    // no queue: nothing is removed.
    for name in ["purge.*", "purge.>", ">", "*", "purge.me.>"] {
        let (status, answer) = purge(nodes[2].console, name).await;
        assert_eq!(status, 404, "{name}: {answer}");
    }

    // The purge, from the third node.
    let started = Instant::now();
    let (status, answer) = purge(nodes[2].console, "purge.me").await;
    eprintln!("purge answered in {:?}: {answer}", started.elapsed());
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["ok"], true, "{answer}");
    assert_eq!(answer["name"], "purge.me", "{answer}");
    // Every message the stream held: waiting, pulled by node 0, delivered to node 1.
    assert_eq!(answer["purged"], N, "{answer}");
    assert_eq!(
        answer["nodes"]["answered"],
        serde_json::json!(["node-0", "node-1", "node-2"]),
        "{answer}"
    );
    assert_eq!(answer["nodes"]["silent"], serde_json::json!([]), "{answer}");
    // Node 0 dropped what it had pulled for its consumer.
    let left = local_queue(nodes[0].console, "purge.me").await;
    assert!(
        left.as_ref()
            .is_some_and(|q| q["held"] == 0 && q["depth"] == 0),
        "{left:?}"
    );

    // Node 1's consumer keeps what it was delivered: an ACK of one is answered.
    let first = &held[0];
    let id = first.header("ack").expect("ack header");
    holder
        .send("ACK", &[("id", id), ("receipt", "ack-after-purge")], "")
        .await;
    let receipt = holder.recv_within(Duration::from_secs(5)).await;
    assert!(
        receipt.as_ref().is_some_and(
            |f| f.command == "RECEIPT" && f.header("receipt-id") == Some("ack-after-purge")
        ),
        "{receipt:?}"
    );
    // It gets nothing more of the purged queue, and leaves with 4 unacknowledged.
    let more = receive(&mut holder, 1, Duration::from_secs(1), false).await;
    assert!(more.is_empty(), "after the purge: {:?}", bodies(&more));
    drop(holder);
    drop(picky);

    // Consumers on every node afterwards: nothing of the purged messages, also past the ack
    // wait (nodeTimeout 2 s) of what node 1's consumer left with.
    let mut consumers = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let mut c = connected(node.stomp).await;
        subscribe(
            &mut c,
            Q,
            &format!("after-{i}"),
            &[("ack", "client-individual")],
        )
        .await;
        consumers.push(c);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    for c in &mut consumers {
        let got = receive(c, 1, Duration::from_millis(200), true).await;
        assert!(
            got.is_empty(),
            "purged messages delivered: {:?}",
            bodies(&got)
        );
    }

    // Messages sent after the purge are delivered, each once.
    for n in 0..6 {
        send_ok(&mut producer, Q, &format!("after-{n}")).await;
    }
    let mut after = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while after.len() < 6 && Instant::now() < deadline {
        for c in &mut consumers {
            after.extend(bodies(
                &receive(c, 6, Duration::from_millis(100), true).await,
            ));
        }
    }
    after.sort();
    let expected: Vec<String> = (0..6).map(|n| format!("after-{n}")).collect();
    assert_eq!(after, expected);

    // The other queues kept every message.
    for kept in KEPT {
        let mut c = connected(nodes[2].stomp).await;
        subscribe(&mut c, kept, "kept", &[]).await;
        let mut got = bodies(&receive(&mut c, 3, Duration::from_secs(20), false).await);
        got.sort();
        let expected: Vec<String> = (0..3).map(|n| format!("{kept}-{n}")).collect();
        assert_eq!(got, expected, "{kept}");
    }
    drop(consumers);

    a_purge_while_a_consumer_acknowledges(&nodes).await;
    a_killed_nodes_copies_are_purged_with_the_rest(&mut rig, &nodes).await;
}

/// A consumer acknowledging as fast as it receives while the purge runs: no message twice,
/// and every message either delivered or purged (both for those delivered and not yet
/// acknowledged when the purge came, at most the consumer's prefetch).
async fn a_purge_while_a_consumer_acknowledges(nodes: &[Node]) {
    let q = "/queue/purge.busy";
    let mut producer = connected(nodes[0].stomp).await;
    const N: usize = 1000;
    for n in 0..N {
        send_ok(&mut producer, q, &format!("b{n}")).await;
    }
    let mut busy = connected(nodes[1].stomp).await;
    let prefetch = 10;
    subscribe(
        &mut busy,
        q,
        "busy",
        &[
            ("ack", "client-individual"),
            ("activemq.prefetchSize", "10"),
        ],
    )
    .await;
    // The purge starts once the consumer has had 50.
    let console = nodes[2].console;
    let mut purging: Option<tokio::task::JoinHandle<(u16, Value)>> = None;
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut quiet_since = Instant::now();
    while Instant::now() < deadline {
        match busy.recv_within(Duration::from_millis(100)).await {
            Some(f) => {
                assert_eq!(f.command, "MESSAGE", "{f:?}");
                ack(&mut busy, &f).await;
                *seen.entry(f.body_text()).or_default() += 1;
                quiet_since = Instant::now();
                if seen.len() == 50 && purging.is_none() {
                    purging = Some(tokio::spawn(purge(console, "purge.busy")));
                }
            }
            None if purging.as_ref().is_some_and(|p| p.is_finished())
                && quiet_since.elapsed() > Duration::from_secs(3) =>
            {
                break
            }
            None => {}
        }
    }
    let purge = purging.expect("the consumer received 50");
    let (status, answer) = purge.await.expect("purge task");
    assert_eq!(status, 200, "{answer}");
    let purged = answer["purged"].as_u64().expect("purged") as usize;
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered twice: {twice:?}");
    eprintln!(
        "while acknowledging: {} delivered, {purged} purged",
        seen.len()
    );
    assert!(
        seen.len() + purged >= N && seen.len() + purged <= N + prefetch,
        "{} delivered + {purged} purged of {N}",
        seen.len()
    );
    assert!(purged > 0 && seen.len() < N, "the purge came mid-stream");
}

/// Node 1 SIGKILLed holding delivered copies, the purge right after: node 1 is named silent,
/// its copies are purged in the stream and come back to no one after the ack wait.
async fn a_killed_nodes_copies_are_purged_with_the_rest(rig: &mut Rig, nodes: &[Node]) {
    let q = "/queue/purge.dead";
    let mut producer = connected(nodes[0].stomp).await;
    for n in 0..8 {
        send_ok(&mut producer, q, &format!("d{n}")).await;
    }
    let mut doomed = connected(nodes[1].stomp).await;
    subscribe(
        &mut doomed,
        q,
        "doomed",
        &[("ack", "client-individual"), ("activemq.prefetchSize", "3")],
    )
    .await;
    assert_eq!(
        receive(&mut doomed, 3, Duration::from_secs(20), false)
            .await
            .len(),
        3
    );
    tokio::task::block_in_place(|| rig.nodes[1].kill());
    let (status, answer) = purge(nodes[2].console, "purge.dead").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["purged"], 8, "{answer}");
    assert_eq!(
        answer["nodes"]["silent"],
        serde_json::json!(["node-1"]),
        "{answer}"
    );
    let mut after = connected(nodes[0].stomp).await;
    subscribe(&mut after, q, "after", &[]).await;
    // Past the ack wait (nodeTimeout 2 s) of node 1's copies.
    let got = receive(&mut after, 1, Duration::from_secs(4), false).await;
    assert!(
        got.is_empty(),
        "a dead node's copies came back: {:?}",
        bodies(&got)
    );
}
