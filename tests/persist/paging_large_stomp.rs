//! Paging with large STOMP messages, as [`super::paging_large`] does for an MQTT session: a
//! producer sends five times `memoryUsage` in persistent messages of 2 MiB, with receipts
//! and no consumer, to a queue or to a durable topic subscription; the broker is killed (-9)
//! and restarted, and a consumer drains it, every message once and in order. Ingest,
//! recovery and the drain stay within `memoryUsage` plus the store's cache, the process
//! margin and what is in transit: a queue pages its waiting messages once `memoryUsage` is
//! half full, its pages read back are sized by bytes, and no page is read for a consumer
//! while `memoryUsage` is full and that consumer holds messages not acknowledged.
//!
//! And the producer flow control of a queue with large non-persistent messages (which are
//! never paged): the SEND that finds `memoryUsage` full is held, without an ERROR, and goes
//! on as a consumer drains; nothing is refused or lost.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::paging::{anon_rss_mb, kill_and_restart, MEMORY_LIMIT_MB};
use super::paging_large::{config, BOUND_MB, MESSAGES, PAYLOAD_BYTES};
use crate::stomp_client::StompClient;
use crate::support::free_port;
use crate::support::wire::{spawn_broker, KillOnDrop};

/// SENDs written ahead of their receipts.
const SEND_WINDOW: u32 = 4;
/// Digits of the message number at the start of each body.
const NUMBER_DIGITS: usize = 10;

/// Where the producer sends and how the consumer gets it back.
#[derive(Clone, Copy)]
enum Target {
    Queue,
    /// A durable subscription (`activemq.subscriptionName`) of client `big`, offline while
    /// the messages are sent.
    DurableTopic,
}

impl Target {
    fn destination(self) -> &'static str {
        match self {
            Target::Queue => "/queue/big",
            Target::DurableTopic => "/topic/big",
        }
    }

    fn connect_headers(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Target::Queue => &[],
            Target::DurableTopic => &[("client-id", "big")],
        }
    }

    /// The consumer, subscribed with `client-individual` acknowledgements.
    async fn consumer(self, addr: SocketAddr) -> StompClient {
        let mut c = StompClient::connected_when_up(addr, self.connect_headers()).await;
        let mut headers = vec![
            ("destination", self.destination()),
            ("id", "drain"),
            ("ack", "client-individual"),
            ("receipt", "subscribed"),
        ];
        if let Target::DurableTopic = self {
            headers.push(("activemq.subscriptionName", "big"));
        }
        c.send("SUBSCRIBE", &headers, "").await;
        let receipt = c.recv().await;
        assert_eq!(
            receipt.header("receipt-id"),
            Some("subscribed"),
            "{receipt:?}"
        );
        c
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_queue_messages_ingested_recovered_and_drained_stay_within_memory_usage() {
    fill_restart_drain(Target::Queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_messages_of_a_durable_topic_subscription_stay_within_memory_usage() {
    fill_restart_drain(Target::DurableTopic).await;
}

async fn fill_restart_drain(target: Target) {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = config(dir.path(), &format!("stomp://127.0.0.1:{port}"), None);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let broker = Arc::new(parking_lot::Mutex::new(spawn_broker(&config)));
    let _kill = KillOnDrop(broker.clone());
    let pid = broker.lock().id();

    if let Target::DurableTopic = target {
        let mut offline = target.consumer(addr).await;
        offline.send("DISCONNECT", &[("receipt", "bye")], "").await;
        assert_eq!(offline.recv().await.header("receipt-id"), Some("bye"));
    }
    let mut producer = StompClient::connected_when_up(addr, &[]).await;
    let receipts = AtomicU32::new(0);
    let ingest = send_all(
        &mut producer,
        target.destination(),
        true,
        pid,
        &receipts,
        MESSAGES,
    )
    .await;
    println!(
        "{MESSAGES} x {PAYLOAD_BYTES} B sent: peak anonymous RSS {ingest} MiB (bound {BOUND_MB})"
    );
    assert!(
        ingest <= BOUND_MB,
        "anonymous RSS {ingest} MiB while sending"
    );
    drop(producer);

    let pid = kill_and_restart(&broker, &config);
    let mut consumer = target.consumer(addr).await;
    let recovered = anon_rss_mb(pid);
    println!("recovered: anonymous RSS {recovered} MiB (bound {BOUND_MB})");
    assert!(
        recovered <= BOUND_MB,
        "anonymous RSS {recovered} MiB after recovery"
    );
    let drain = drain(&mut consumer, pid, MESSAGES).await;
    println!("drained: peak anonymous RSS {drain} MiB (bound {BOUND_MB})");
    assert!(
        drain <= BOUND_MB,
        "anonymous RSS {drain} MiB while draining"
    );
}

/// Non-persistent messages are never paged: past `memoryUsage` the producer is held, not
/// refused, until the consumer drains the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_of_large_messages_is_held_while_memory_usage_is_full_and_resumes() {
    /// Twice what `memoryUsage` holds.
    const SENT: u32 = (2 * MEMORY_LIMIT_MB * 1024 * 1024 / PAYLOAD_BYTES as u64) as u32;
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = config(dir.path(), &format!("stomp://127.0.0.1:{port}"), None);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let broker = Arc::new(parking_lot::Mutex::new(spawn_broker(&config)));
    let _kill = KillOnDrop(broker.clone());
    let pid = broker.lock().id();

    let receipts = Arc::new(AtomicU32::new(0));
    let counted = receipts.clone();
    let producing = tokio::spawn(async move {
        let mut producer = StompClient::connected_when_up(addr, &[]).await;
        send_all(&mut producer, "/queue/big", false, pid, &counted, SENT).await
    });
    let held_at = stalled(&receipts).await;
    println!("producer held after {held_at} of {SENT} receipts");
    assert!(held_at < SENT, "the producer was never held");

    let mut consumer = Target::Queue.consumer(addr).await;
    let drained = drain(&mut consumer, pid, SENT).await;
    let ingest = producing.await.expect("producer");
    println!(
        "held and resumed: peak anonymous RSS {} MiB (bound {BOUND_MB})",
        ingest.max(drained)
    );
    assert!(ingest.max(drained) <= BOUND_MB);
}

/// The receipt count once it has not moved for a second.
async fn stalled(receipts: &AtomicU32) -> u32 {
    let mut last = u32::MAX;
    loop {
        let now = receipts.load(Ordering::SeqCst);
        if now == last && now > 0 {
            return now;
        }
        last = now;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Send `count` numbered messages of [`PAYLOAD_BYTES`] to `destination`, each with a receipt,
/// [`SEND_WINDOW`] ahead; every frame back must be its RECEIPT, in order (an ERROR fails).
/// Counts the receipts in `receipts`; returns the peak anonymous RSS of `pid` meanwhile.
async fn send_all(
    producer: &mut StompClient,
    destination: &str,
    persistent: bool,
    pid: u32,
    receipts: &AtomicU32,
    count: u32,
) -> u64 {
    let (mut sent, mut peak) = (0u32, 0u64);
    while receipts.load(Ordering::SeqCst) < count {
        let received = receipts.load(Ordering::SeqCst);
        while sent < count && sent - received < SEND_WINDOW {
            // A held SEND stops the broker reading: bounded, so a producer held for good
            // fails the test instead of hanging it.
            let frame = send_frame(destination, persistent, sent);
            tokio::time::timeout(Duration::from_secs(60), producer.send_raw(&frame))
                .await
                .unwrap_or_else(|_| panic!("SEND {sent} not read within 60 s"));
            sent += 1;
        }
        let Some(frame) = producer.recv_within(Duration::from_secs(60)).await else {
            panic!("no RECEIPT for message {received} within 60 s");
        };
        assert_eq!(
            frame.header("receipt-id"),
            Some(received.to_string().as_str()),
            "{} {:?}",
            frame.command,
            frame.headers
        );
        receipts.fetch_add(1, Ordering::SeqCst);
        peak = peak.max(anon_rss_mb(pid));
    }
    peak
}

/// A persistent (or not) SEND of message `number`: its number, then filler, by length.
fn send_frame(destination: &str, persistent: bool, number: u32) -> Vec<u8> {
    let mut frame = format!(
        "SEND\ndestination:{destination}\npersistent:{persistent}\nreceipt:{number}\n\
         content-length:{PAYLOAD_BYTES}\n\n{number:0width$}",
        width = NUMBER_DIGITS
    )
    .into_bytes();
    frame.resize(frame.len() + PAYLOAD_BYTES - NUMBER_DIGITS, b'b');
    frame.push(0);
    frame
}

/// Receive and acknowledge `count` messages, which must be 0, 1, ... in order, whole, and
/// then nothing more; the peak anonymous RSS of `pid` meanwhile.
async fn drain(consumer: &mut StompClient, pid: u32, count: u32) -> u64 {
    let mut peak = 0;
    for expected in 0..count {
        let Some(message) = consumer.recv_within(Duration::from_secs(30)).await else {
            panic!("message {expected} not delivered within 30 s");
        };
        assert_eq!(message.command, "MESSAGE", "{:?}", message.headers);
        assert_eq!(message.body.len(), PAYLOAD_BYTES, "payload read back whole");
        let number = std::str::from_utf8(&message.body[..NUMBER_DIGITS])
            .ok()
            .and_then(|n| n.parse::<u32>().ok());
        assert_eq!(number, Some(expected), "every message once, in order");
        peak = peak.max(anon_rss_mb(pid));
        let ack = message.header("ack").expect("ack header").to_owned();
        consumer.send("ACK", &[("id", &ack)], "").await;
    }
    let extra = consumer.recv_within(Duration::from_millis(500)).await;
    assert!(extra.is_none(), "delivered twice: {extra:?}");
    peak
}
