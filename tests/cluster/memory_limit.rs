//! A node's memory for messages read from the streams (published on any node): charged to
//! its `memoryUsage` like its own publishes; a persistent session at its pending limit is fed
//! from the stream by a catch-up reader instead of from memory (a single broker pages such a
//! queue out to its store); and a node at its limit reads no further until deliveries free
//! memory (the messages wait in their streams, stored and acknowledged already). A STOMP
//! queue's messages taken from the stream are charged too.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferromq::protocol::{Ack, Packet, QoS};

use crate::rig::{next_publish_within, publish, v3_ok, Rig, FAST};
use crate::stomp_queues::stomp_client::StompClient;
use crate::stomp_queues::{ack, stomp_rig_with, subscribe};
use crate::support::client::RawClient;
use crate::support::pending_limit_policy;

/// Every node's `memoryUsage` and pending limit, and the test's messages.
const MEMORY_LIMIT_BYTES: u64 = 512 * 1024;
const PENDING_LIMIT: usize = 100;
/// What a session holds at most besides its queue: its in-flight window (the default
/// `transport.activeMQSubscriptionPrefetch`).
const INFLIGHT_WINDOW: usize = 100;
const PAYLOAD_BYTES: usize = 1024;
const MESSAGES: u16 = 1_000;
const TOPIC: &str = "mem/t";

/// What one message is charged (topic, payload and `broker::routing::memory`'s overhead).
const MESSAGE_CHARGE: u64 = (PAYLOAD_BYTES + TOPIC.len()) as u64 + 128;

/// The most a persistent session at its pending limit may hold in its node's memory: its
/// window and its queue, and the publisher's 20 in flight on the way (well under the limit).
const SESSION_BOUND_BYTES: u64 = (INFLIGHT_WINDOW + PENDING_LIMIT + 20) as u64 * MESSAGE_CHARGE;

/// A clean session is not tracked by the cluster and takes every message of its
/// subscription live: a stuck one fills its node's memory to the limit, where the node's
/// readers pause; nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_at_its_memory_limit_pauses_its_readers_and_loses_nothing() {
    let Some(rig) = start().await else {
        return;
    };
    let highest = watch_memory(rig.addr(1)).await;
    let mut stuck = subscriber(rig.addr(1), "mem-stuck", true).await;

    // Published on node 0: all acknowledged there (node 1's memory is not node 0's).
    let (mut publisher, _) = v3_ok(rig.addr(0), "mem-pub", true).await;
    publish_all(&mut publisher).await;

    // Node 1's readers fill its memory as fast as the machine lets them (slower on a loaded
    // CI runner): the figure is taken once it reached half the limit, or after 10 s.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    tokio::time::sleep(Duration::from_secs(2)).await;
    while highest.load(Ordering::Relaxed) < MEMORY_LIMIT_BYTES / 2
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let held = highest.load(Ordering::Relaxed);
    assert!(
        held <= MEMORY_LIMIT_BYTES + 4 * MESSAGE_CHARGE,
        "node 1 held {held} B of messages with a limit of {MEMORY_LIMIT_BYTES} B"
    );
    assert!(
        held >= MEMORY_LIMIT_BYTES / 2,
        "node 1 filled its memory ({held} B seen): the subscriber was not stuck"
    );
    receive_all(&mut stuck, "mem-stuck").await;
}

/// A stuck persistent subscriber holds at most its window and pending limit in its node's
/// memory, so the node never reaches its limit (its 1,000 messages would be twice it), and
/// the node's other subscribers are fed meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_persistent_subscriber_is_fed_from_the_stream_and_holds_no_one_up() {
    let Some(rig) = start().await else {
        return;
    };
    let highest = watch_memory(rig.addr(1)).await;
    let mut stuck = subscriber(rig.addr(1), "mem-stuck", false).await;
    let mut fast = subscriber(rig.addr(1), "mem-fast", true).await;

    let (mut publisher, _) = v3_ok(rig.addr(0), "mem-pub", true).await;
    let started = Instant::now();
    let publishing = tokio::spawn(async move { publish_all(&mut publisher).await });
    receive_all(&mut fast, "mem-fast").await;
    publishing.await.expect("all acknowledged");
    eprintln!(
        "the other subscriber had all {MESSAGES} after {:?}",
        started.elapsed()
    );

    tokio::time::sleep(Duration::from_secs(1)).await;
    // About SESSION_BOUND_BYTES; the other (clean) subscriber's lag on a loaded machine adds
    // to it, so the bound is the node's limit, which its readers would have waited at.
    let held = highest.load(Ordering::Relaxed);
    assert!(
        held < MEMORY_LIMIT_BYTES - 4 * MESSAGE_CHARGE,
        "node 1 held {held} B (limit {MEMORY_LIMIT_BYTES} B) for a subscriber with a pending \
         limit of {PENDING_LIMIT} (about {SESSION_BOUND_BYTES} B)"
    );
    receive_all(&mut stuck, "mem-stuck").await;
}

/// An offline persistent session keeps at most its pending limit in its node's memory (the
/// rest waits in the stream, and the node's publishers are never held for it), and gets
/// everything, in order, when it resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_session_keeps_its_pending_limit_in_memory_and_the_rest_in_the_stream() {
    let Some(rig) = start().await else {
        return;
    };
    let highest = watch_memory(rig.addr(0)).await;
    let away = subscriber(rig.addr(0), "mem-away", false).await;
    drop(away);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let (mut publisher, _) = v3_ok(rig.addr(0), "mem-pub", true).await;
    publish_all(&mut publisher).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let held = highest.load(Ordering::Relaxed);
    assert!(
        held <= SESSION_BOUND_BYTES,
        "node 0 held {held} B for an offline session with a pending limit of {PENDING_LIMIT}"
    );

    let (mut back, connack) = v3_ok(rig.addr(0), "mem-away", false).await;
    assert!(connack.session_present, "the session was kept");
    receive_all(&mut back, "mem-away").await;
}

/// A STOMP queue consumer that acknowledges nothing, with a prefetch of twice what the limit
/// holds: its node takes the queue's messages from the stream until they fill its memory
/// (charged like any other message), then leaves the rest in the stream; acknowledged, they
/// all come, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stomp_queue_consumer_that_acknowledges_nothing_holds_its_node_at_the_limit() {
    let Some((rig, stomp)) = stomp_rig_with(2, &children()).await else {
        return;
    };
    let highest = watch_memory(rig.addr(1)).await;
    let queue = "/queue/mem.q";
    let mut consumer = StompClient::tcp(stomp[1]).await;
    consumer.connect(&[]).await;
    let prefetch = MESSAGES.to_string();
    let options = [
        ("ack", "client-individual"),
        ("activemq.prefetchSize", prefetch.as_str()),
    ];
    subscribe(&mut consumer, queue, "stuck", &options).await;

    let mut producer = StompClient::tcp(stomp[0]).await;
    producer.connect(&[]).await;
    for n in 0..MESSAGES {
        // The cluster's first queue use makes the queue stream (its raft group forms first).
        let within = Duration::from_secs(if n == 0 { 40 } else { 5 });
        send_numbered(&mut producer, queue, n, within).await;
    }
    let mut bodies = Vec::new();
    let mut held = Vec::new();
    while let Some(m) = consumer.recv_within(Duration::from_secs(2)).await {
        assert_eq!(m.command, "MESSAGE", "{m:?}");
        bodies.push(m.body_text()[..4].to_owned());
        held.push(m);
    }
    let most = highest.load(Ordering::Relaxed);
    eprintln!(
        "a STOMP consumer acknowledging nothing: {} of {MESSAGES} delivered, node 1 held at \
         most {most} B (limit {MEMORY_LIMIT_BYTES} B)",
        held.len()
    );
    assert!(
        held.len() < usize::from(MESSAGES),
        "node 1 took all {MESSAGES} ({most} B seen): its limit did not hold it"
    );
    // What one pull may bring beyond the limit.
    let pull_bytes = 16 * QUEUE_MESSAGE_CHARGE;
    assert!(
        (MEMORY_LIMIT_BYTES / 2..=MEMORY_LIMIT_BYTES + pull_bytes).contains(&most),
        "node 1 held {most} B of a queue's messages ({} delivered) with a limit of \
         {MEMORY_LIMIT_BYTES} B",
        held.len()
    );
    for m in &held {
        ack(&mut consumer, m).await;
    }
    while bodies.len() < usize::from(MESSAGES) {
        let Some(m) = consumer.recv_within(Duration::from_secs(10)).await else {
            panic!("{} of {MESSAGES} messages arrived", bodies.len());
        };
        assert_eq!(m.command, "MESSAGE", "{m:?}");
        ack(&mut consumer, &m).await;
        bodies.push(m.body_text()[..4].to_owned());
    }
    bodies.sort();
    let want: Vec<String> = (0..MESSAGES).map(|n| format!("{n:04}")).collect();
    assert_eq!(bodies, want, "each message once");
}

/// What a message of [`queue_body`] on the queue of the STOMP test is charged (its
/// destination, as its topic, is shorter than the body's slack).
const QUEUE_MESSAGE_CHARGE: u64 = PAYLOAD_BYTES as u64 + 64 + 128;

/// A body of [`PAYLOAD_BYTES`] starting with `n` in four digits.
fn queue_body(n: u16) -> String {
    format!("{n:04}{}", "x".repeat(PAYLOAD_BYTES - 4))
}

/// SEND message `n` (persistent, [`queue_body`]) to `queue`, and wait for its RECEIPT.
async fn send_numbered(c: &mut StompClient, queue: &str, n: u16, within: Duration) {
    let receipt = format!("r-{n}");
    let headers = [
        ("destination", queue),
        ("persistent", "true"),
        ("receipt", receipt.as_str()),
    ];
    c.send("SEND", &headers, &queue_body(n)).await;
    match c.recv_within(within).await {
        Some(f) if f.command == "RECEIPT" => {
            assert_eq!(f.header("receipt-id"), Some(receipt.as_str()), "{f:?}")
        }
        other => panic!("no RECEIPT for message {n}: {other:?}"),
    }
}

/// Every node's `<broker>` children: `memoryUsage` of [`MEMORY_LIMIT_BYTES`], a pending limit
/// of [`PENDING_LIMIT`], `$SYS` topics every 100 ms.
fn children() -> String {
    format!(
        r#"<ferromq:systemTopics interval="100"/>
    <systemUsage><systemUsage><memoryUsage><memoryUsage limit="512 kb"/></memoryUsage></systemUsage></systemUsage>
    {}"#,
        pending_limit_policy(">", PENDING_LIMIT)
    )
}

/// Two nodes with [`children`].
async fn start() -> Option<Rig> {
    Rig::start_with(2, FAST, &children()).await
}

/// A client on `addr` subscribed to [`TOPIC`] at QoS 1 (`clean`: a clean session).
async fn subscriber(addr: SocketAddr, client_id: &str, clean: bool) -> RawClient {
    let (mut client, _) = v3_ok(addr, client_id, clean).await;
    assert_eq!(client.subscribe(1, &[(TOPIC, QoS::AtLeastOnce)]).await, [1]);
    client
}

/// The highest memory use the node at `addr` reports on `$SYS` from now on.
async fn watch_memory(addr: SocketAddr) -> Arc<AtomicU64> {
    let highest = Arc::new(AtomicU64::new(0));
    let (mut watcher, _) = v3_ok(addr, "mem-watch", true).await;
    watcher
        .subscribe(1, &[("$SYS/broker/memory/used", QoS::AtMostOnce)])
        .await;
    let seen = highest.clone();
    // Ends with the watcher's connection, when the rig's nodes are killed.
    tokio::spawn(async move {
        while let Some(p) = next_publish_within(&mut watcher, Duration::from_secs(60)).await {
            if let Some(used) = std::str::from_utf8(&p.payload)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
            {
                seen.fetch_max(used, Ordering::Relaxed);
            }
        }
    });
    highest
}

/// Publish [`MESSAGES`] QoS 1 messages on [`TOPIC`], 20 in flight, each numbered in its first
/// two bytes; every one must be acknowledged with 0.
async fn publish_all(publisher: &mut RawClient) {
    let mut sent = 0u16;
    while sent < MESSAGES {
        let batch = (MESSAGES - sent).min(20);
        for i in sent..sent + batch {
            let mut payload = vec![0u8; PAYLOAD_BYTES];
            payload[..2].copy_from_slice(&i.to_be_bytes());
            publisher
                .send(publish(TOPIC, &payload, QoS::AtLeastOnce, Some(i + 1)))
                .await;
        }
        let mut acked = 0;
        while acked < batch {
            match publisher.recv_within(Duration::from_secs(10)).await {
                Some(Packet::PubAck(a)) => {
                    assert_eq!(a.reason, 0, "PUBACK {}", a.packet_id);
                    acked += 1;
                }
                Some(_) => {}
                None => panic!("PUBACKs missing after {sent} messages"),
            }
        }
        sent += batch;
    }
}

/// Read and acknowledge [`MESSAGES`], which must come in publishing order.
async fn receive_all(subscriber: &mut RawClient, who: &str) {
    let mut next = 0u16;
    while next < MESSAGES {
        let Some(p) = next_publish_within(subscriber, Duration::from_secs(10)).await else {
            panic!("{who}: message {next} of {MESSAGES} did not arrive");
        };
        if let Some(id) = p.packet_id {
            subscriber.send(Packet::PubAck(Ack::new(id))).await;
        }
        let seq = u16::from_be_bytes([p.payload[0], p.payload[1]]);
        assert_eq!(seq, next, "{who}: in publishing order");
        next += 1;
    }
}
