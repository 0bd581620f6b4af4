//! Queues (`/queue/x`) with the redb store, through the broker's queue engine on a real
//! broker restarted on the same store directory: persistent messages are kept until
//! acknowledged and come back in order (delivered-but-unacknowledged ones included),
//! non-persistent ones do not; a dead-letter move is kept once; queues created by use or
//! declared in `<destinations>` exist after a restart; a long queue comes back paged and its
//! payloads are read back on delivery.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferromq::broker::message::{Message, SampleStamp};
use ferromq::broker::queues::{ConsumerSpec, QueueConsumer, QueueDelivery, Queues};
use ferromq::protocol::QoS;
use tokio::sync::Notify;

use crate::support::{BrokerXml, TestBroker};

async fn start(dir: &Path, children: &str) -> TestBroker {
    let xml = BrokerXml::new()
        .kahadb(dir)
        .child(children)
        .mqtt(0, &[])
        .build();
    TestBroker::from_xml(&xml).await
}

fn queues(broker: &TestBroker) -> Arc<Queues> {
    broker.handle.core().queues.clone()
}

fn message(payload: &str, persistent: bool) -> Message {
    Message {
        stamp: SampleStamp::NONE,
        topic: Arc::from("q"),
        payload: Bytes::copy_from_slice(payload.as_bytes()),
        qos: if persistent {
            QoS::AtLeastOnce
        } else {
            QoS::AtMostOnce
        },
        retain: false,
        v5: None,
    }
}

async fn send(queues: &Queues, name: &str, payload: &str, persistent: bool) {
    queues
        .send(name, message(payload, persistent))
        .expect("accepted")
        .wait()
        .await
        .expect("kept");
}

fn consumer(queues: &Queues, name: &str, prefetch: usize) -> QueueConsumer {
    consumer_woken_on(queues, name, prefetch, Arc::new(Notify::new()))
}

fn consumer_woken_on(
    queues: &Queues,
    name: &str,
    prefetch: usize,
    wake: Arc<Notify>,
) -> QueueConsumer {
    queues.subscribe(
        name,
        ConsumerSpec {
            prefetch: Some(prefetch),
            exclusive: false,
            priority: 0,
            filter: None,
            wake,
        },
    )
}

fn payloads(deliveries: &[QueueDelivery]) -> Vec<String> {
    deliveries
        .iter()
        .map(|d| String::from_utf8_lossy(&d.message.payload).into_owned())
        .collect()
}

#[tokio::test]
async fn persistent_queue_messages_are_kept_until_acknowledged_across_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start(dir.path(), "").await;
    let q = queues(&broker);
    for (payload, persistent) in [("1", true), ("np", false), ("2", true), ("3", true)] {
        send(&q, "orders", payload, persistent).await;
    }
    let c = consumer(&q, "orders", 2);
    let held = c.take(10).expect("taken");
    assert_eq!(payloads(&held), ["1", "np"]);
    c.ack(held[0].seq).expect("ack").wait().await.expect("kept");
    // "np" is held unacknowledged: not persistent, gone with the broker.
    drop((c, q));
    broker.shutdown().await;

    let broker = start(dir.path(), "").await;
    let q = queues(&broker);
    assert_eq!(q.stats("orders").expect("recovered").depth, 2);
    let c = consumer(&q, "orders", 10);
    let back = c.take(10).expect("taken");
    assert_eq!(payloads(&back), ["2", "3"]);
    assert!(back.iter().all(|d| d.persistent));
    for d in &back {
        c.ack(d.seq).expect("ack").wait().await.expect("kept");
    }
    drop((c, q));
    broker.shutdown().await;

    let broker = start(dir.path(), "").await;
    let stats = queues(&broker)
        .stats("orders")
        .expect("the queue still exists");
    assert_eq!(stats.depth, 0, "acknowledged messages stay gone");
    broker.shutdown().await;
}

#[tokio::test]
async fn a_message_delivered_but_not_acknowledged_comes_back_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start(dir.path(), "").await;
    let q = queues(&broker);
    send(&q, "work", "job", true).await;
    let c = consumer(&q, "work", 1);
    assert_eq!(payloads(&c.take(1).expect("taken")), ["job"]);
    drop((c, q));
    broker.shutdown().await;

    let broker = start(dir.path(), "").await;
    let q = queues(&broker);
    let c = consumer(&q, "work", 1);
    assert_eq!(payloads(&c.take(1).expect("taken")), ["job"]);
    drop((c, q));
    broker.shutdown().await;
}

#[tokio::test]
async fn a_dead_lettered_message_is_in_the_dead_letter_queue_once_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start(dir.path(), "").await;
    let q = queues(&broker);
    send(&q, "orders", "poison", true).await;
    send(&q, "orders", "fine", true).await;
    let c = consumer(&q, "orders", 1);
    let held = c.take(1).expect("taken");
    c.nack(held[0].seq)
        .expect("nack")
        .wait()
        .await
        .expect("kept");
    drop((c, q));
    broker.shutdown().await;

    let broker = start(dir.path(), "").await;
    let q = queues(&broker);
    let dlq = consumer(&q, "ActiveMQ.DLQ", 10);
    let dead = dlq.take(10).expect("taken");
    assert_eq!(payloads(&dead), ["poison"]);
    let props = &dead[0]
        .message
        .v5
        .as_ref()
        .expect("kept with its origin")
        .properties;
    assert!(props
        .user_properties
        .contains(&("original-destination".into(), "/queue/orders".into())));
    let orders = consumer(&q, "orders", 10);
    assert_eq!(payloads(&orders.take(10).expect("taken")), ["fine"]);
    drop((dlq, orders, q));
    broker.shutdown().await;
}

#[tokio::test]
async fn created_and_declared_queues_exist_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let declared = r#"<destinations><queue physicalName="configured"/></destinations>"#;
    let broker = start(dir.path(), declared).await;
    let q = queues(&broker);
    assert!(q.exists("configured"));
    drop(consumer(&q, "used", 1));
    drop(q);
    broker.shutdown().await;

    let broker = start(dir.path(), "").await;
    let names = queues(&broker).names();
    assert!(names.iter().any(|n| &**n == "configured"), "{names:?}");
    assert!(names.iter().any(|n| &**n == "used"), "{names:?}");
    broker.shutdown().await;
}

#[tokio::test]
async fn a_long_queue_comes_back_paged_and_is_read_back_on_delivery() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start(dir.path(), "").await;
    let q = queues(&broker);
    // More than the entries recovered in memory (1000): the rest come back paged.
    let total = 1100;
    let commits: Vec<_> = (0..total)
        .map(|i| {
            q.send("long", message(&format!("m{i}"), true))
                .expect("accepted")
        })
        .collect();
    for commit in commits {
        commit.wait().await.expect("kept");
    }
    drop(q);
    broker.shutdown().await;

    let broker = start(dir.path(), "").await;
    let q = queues(&broker);
    assert_eq!(q.stats("long").expect("recovered").depth, total);
    let paged = q
        .browse("long", total)
        .iter()
        .filter(|d| d.message.payload.is_empty())
        .count();
    assert_eq!(
        paged,
        total - 1000,
        "beyond 1000 only the envelopes are in memory"
    );
    let wake = Arc::new(Notify::new());
    let c = consumer_woken_on(&q, "long", total, wake.clone());
    let mut got = Vec::new();
    while got.len() < total {
        let batch = c.take(200).expect("taken");
        if batch.is_empty() {
            // The next message's payload is being read back: its consumer is woken then.
            tokio::time::timeout(Duration::from_secs(10), wake.notified())
                .await
                .expect("paged payloads read back");
            continue;
        }
        for d in &batch {
            c.ack(d.seq).expect("ack");
        }
        got.extend(payloads(&batch));
    }
    let expected: Vec<String> = (0..total).map(|i| format!("m{i}")).collect();
    assert_eq!(got, expected, "in order, payloads read back");
    drop((c, q));
    broker.shutdown().await;
}

/// Takes every message of `consumer` until `count` arrived, waiting on `wake` while payloads
/// are read back; acknowledges each.
async fn take_all(consumer: &QueueConsumer, wake: &Notify, count: usize) -> Vec<String> {
    let mut got = Vec::new();
    while got.len() < count {
        let batch = consumer.take(200).expect("taken");
        if batch.is_empty() {
            tokio::time::timeout(Duration::from_secs(10), wake.notified())
                .await
                .expect("paged payloads read back");
            continue;
        }
        for d in &batch {
            consumer.ack(d.seq).expect("ack");
        }
        got.extend(payloads(&batch));
    }
    got
}

#[tokio::test]
async fn a_long_live_queue_keeps_only_envelopes_beyond_1000_waiting_messages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start(dir.path(), "").await;
    let q = queues(&broker);
    let total = 1100;
    for i in 0..total {
        send(&q, "backlog", &format!("m{i}"), true).await;
    }
    let paged = q
        .browse("backlog", total)
        .iter()
        .filter(|d| d.message.payload.is_empty())
        .count();
    assert_eq!(paged, total - 1000);
    let wake = Arc::new(Notify::new());
    let c = consumer_woken_on(&q, "backlog", total, wake.clone());
    let got = take_all(&c, &wake, total).await;
    let expected: Vec<String> = (0..total).map(|i| format!("m{i}")).collect();
    assert_eq!(got, expected, "in order, payloads read back");
    drop((c, q));
    broker.shutdown().await;
}

#[tokio::test]
async fn an_expired_paged_out_message_reaches_the_dead_letter_queue_with_its_payload() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start(dir.path(), "").await;
    let q = queues(&broker);
    for i in 0..1000 {
        send(&q, "old", &format!("m{i}"), true).await;
    }
    let expiring = Message {
        v5: Some(Arc::new(ferromq::broker::message::V5Extras {
            properties: ferromq::protocol::Properties::default(),
            expires_at: Some(std::time::Instant::now() + Duration::from_millis(50)),
        })),
        ..message("expiring", true)
    };
    q.send("old", expiring)
        .expect("accepted")
        .wait()
        .await
        .expect("kept");
    assert!(
        q.browse("old", 1001)[1000].message.payload.is_empty(),
        "paged out"
    );
    let wake = Arc::new(Notify::new());
    let dlq = consumer_woken_on(&q, "ActiveMQ.DLQ", 10, wake.clone());
    tokio::time::sleep(Duration::from_millis(60)).await;
    q.sweep_expired();
    let dead = take_all(&dlq, &wake, 1).await;
    assert_eq!(dead, ["expiring"], "read back before the move");
    assert_eq!(q.stats("old").expect("stats").depth, 1000);
    drop((dlq, q));
    broker.shutdown().await;
}

/// A queue filled with four times `memoryUsage` and no consumer takes every send: once
/// `memoryUsage` is half full its waiting messages keep only their envelopes (before, sends
/// were refused once it was full). A consumer with
/// the default prefetch (1000, the whole backlog) then gets them all in order while what is
/// held stays within `memoryUsage` and one message: its pages are read back by bytes, and
/// not while `memoryUsage` is full and it holds messages not acknowledged.
#[tokio::test]
async fn a_backlog_of_large_messages_stays_within_memory_usage() {
    const LIMIT: u64 = 1 << 20;
    const SIZE: usize = 100 * 1024;
    let total = (4 * LIMIT / SIZE as u64) as usize;
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start(
        dir.path(),
        r#"<systemUsage><systemUsage>
             <memoryUsage><memoryUsage limit="1 mb"/></memoryUsage>
           </systemUsage></systemUsage>"#,
    )
    .await;
    let memory = broker.handle.core().memory.clone();
    let q = queues(&broker);
    let body = |i: usize| format!("{i:08}{}", "b".repeat(SIZE - 8));
    let one_message = SIZE as u64 + 1024;
    for i in 0..total {
        send(&q, "large", &body(i), true).await;
        // Never past the limit, even with the store's writer behind (it frees what a
        // commit wrote after answering it, on its own thread)...
        assert!(
            memory.used_bytes() <= LIMIT,
            "{} bytes held after {i} sends",
            memory.used_bytes()
        );
        // ...and once it caught up: half, the message that crossed it, and the last one.
        let settled = LIMIT / 2 + 2 * one_message;
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while memory.used_bytes() > settled {
            assert!(
                std::time::Instant::now() < deadline,
                "{} bytes still held 5 s after {i} sends",
                memory.used_bytes()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let wake = Arc::new(Notify::new());
    let c = consumer_woken_on(&q, "large", 1000, wake.clone());
    let mut got = Vec::new();
    let mut peak = 0;
    while got.len() < total {
        peak = peak.max(memory.used_bytes());
        let Some(d) = c.take(1).expect("taken").pop() else {
            tokio::time::timeout(Duration::from_secs(10), wake.notified())
                .await
                .expect("paged payloads read back");
            continue;
        };
        c.ack(d.seq).expect("ack");
        got.push(String::from_utf8_lossy(&d.message.payload[..8]).into_owned());
    }
    let expected: Vec<String> = (0..total).map(|i| format!("{i:08}")).collect();
    assert_eq!(got, expected, "every message once, in order");
    assert!(
        peak <= LIMIT + one_message,
        "{peak} bytes held while draining"
    );
    drop((c, q));
    broker.shutdown().await;
}
