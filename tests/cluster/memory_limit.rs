//! A node's memory for messages read from the streams (published on any node): charged to
//! its `memoryUsage` like its own publishes; a persistent session at its pending limit is fed
//! from the stream by a catch-up reader instead of from memory (a single broker pages such a
//! queue out to its store); and a node at its limit reads no further until deliveries free
//! memory (the messages wait in their streams, stored and acknowledged already).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferromq::protocol::{Ack, Packet, QoS};

use crate::rig::{next_publish_within, publish, v3_ok, Rig, FAST};
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

    tokio::time::sleep(Duration::from_secs(2)).await;
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

/// Two nodes with [`MEMORY_LIMIT_BYTES`] and [`PENDING_LIMIT`], `$SYS` topics every 100 ms.
async fn start() -> Option<Rig> {
    let children = format!(
        r#"<ferromq:systemTopics interval="100"/>
    <systemUsage><systemUsage><memoryUsage><memoryUsage limit="512 kb"/></memoryUsage></systemUsage></systemUsage>
    {}"#,
        pending_limit_policy(">", PENDING_LIMIT)
    );
    Rig::start_with(2, FAST, &children).await
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
