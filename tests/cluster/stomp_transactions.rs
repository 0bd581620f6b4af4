//! A STOMP transaction of queue work on a cluster node, with real nats-servers and ferromq
//! processes and a raw STOMP client: its SENDs are stored in NATS as one atomic batch and its
//! ACKs applied once that batch is kept (docs/stomp.md, "What a COMMIT keeps, and when").
//! A batch the stream refuses keeps none of its messages and none of its acknowledgements;
//! a node SIGKILLed while its producer commits leaves every transaction whole or absent; a
//! queue stream made by an older node is given atomic batches.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use futures_util::StreamExt;

use super::stomp_queues::subscribe;
use super::stomp_queues::{collect, connected, receipt, send_ok, stomp_client, stomp_rig};
use stomp_client::StompClient;

/// The cluster's queue stream (`src/cluster/queues.rs`).
const QUEUE_STREAM: &str = "FMQ_QUEUES";

async fn js(urls: Vec<String>) -> jetstream::Context {
    let client = async_nats::connect(urls).await.expect("NATS client");
    jetstream::new(client)
}

/// The queue stream as a node from before atomic batches made it.
async fn make_old_queue_stream(js: &jetstream::Context) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let made = js
            .create_stream(stream::Config {
                name: QUEUE_STREAM.into(),
                subjects: vec!["fmq.q.>".into()],
                retention: stream::RetentionPolicy::WorkQueue,
                storage: stream::StorageType::File,
                num_replicas: 3,
                duplicate_window: Duration::from_secs(20),
                ..Default::default()
            })
            .await;
        match made {
            Ok(_) => return,
            // Placing three replicas needs every server current in the meta group.
            Err(e) if Instant::now() < deadline => {
                eprintln!("queue stream not made yet: {e}");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Err(e) => panic!("queue stream: {e}"),
        }
    }
}

async fn stream_config(js: &jetstream::Context) -> stream::Config {
    let mut s = js.get_stream(QUEUE_STREAM).await.expect("queue stream");
    s.info().await.expect("stream info").config.clone()
}

/// BEGIN `tx`, then each of `frames` (SEND bodies to `queue`, or `("ACK", id)`), in it.
async fn in_transaction(c: &mut StompClient, tx: &str, queue: &str, frames: &[(&str, String)]) {
    c.send("BEGIN", &[("transaction", tx)], "").await;
    for (command, value) in frames {
        if *command == "ACK" {
            c.send("ACK", &[("id", value), ("transaction", tx)], "")
                .await;
        } else {
            c.send(
                "SEND",
                &[
                    ("destination", queue),
                    ("persistent", "true"),
                    ("transaction", tx),
                ],
                value,
            )
            .await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_transaction_is_kept_whole_or_not_at_all() {
    let Some((rig, stomp)) = stomp_rig(2).await else {
        return;
    };
    let js = js(rig.nats.client_urls()).await;
    make_old_queue_stream(&js).await;
    assert!(!stream_config(&js).await.allow_atomic_publish);

    // A message consumed (not acknowledged) by a client that then commits a transaction.
    let q = "/queue/tx.whole";
    let mut producer = connected(stomp[0]).await;
    send_ok(&mut producer, q, "held").await;
    assert!(
        stream_config(&js).await.allow_atomic_publish,
        "the node gave the older queue stream atomic batches"
    );
    let mut worker = connected(stomp[1]).await;
    subscribe(&mut worker, q, "w", &[("ack", "client-individual")]).await;
    let got = collect(&mut [&mut worker], false, 1, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 1);
    let held_ack = got[0].1.header("ack").expect("an ack header").to_owned();

    // Kept: three SENDs to two queues, one RECEIPT, every message delivered once.
    let other = "/queue/tx.other";
    let sends: Vec<(&str, String)> = (0..3).map(|n| ("SEND", format!("kept-{n}"))).collect();
    in_transaction(&mut producer, "kept", q, &sends).await;
    producer
        .send(
            "SEND",
            &[
                ("destination", other),
                ("persistent", "true"),
                ("transaction", "kept"),
            ],
            "kept-other",
        )
        .await;
    producer
        .send(
            "COMMIT",
            &[("transaction", "kept"), ("receipt", "kept")],
            "",
        )
        .await;
    receipt(&mut producer, "kept").await;
    let got = collect(&mut [&mut worker], true, 3, Duration::from_secs(10)).await;
    let bodies: Vec<String> = got.iter().map(|(_, f)| f.body_text()).collect();
    assert_eq!(bodies, ["kept-0", "kept-1", "kept-2"]);
    let mut reader = connected(stomp[0]).await;
    subscribe(&mut reader, other, "o", &[]).await;
    let got = collect(&mut [&mut reader], false, 1, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1.body_text(), "kept-other");

    // Refused: the stream takes no message above 4 KiB, and the transaction's third SEND is
    // 8 KiB. Frame by frame, its first two SENDs and its ACK would be applied; as one
    // batch, none of it is: an ERROR, and a new consumer gets the acknowledged message again.
    let mut config = stream_config(&js).await;
    config.max_message_size = 4096;
    js.update_stream(&config).await.expect("stream update");
    let frames = vec![
        ("ACK", held_ack),
        ("SEND", "refused-0".to_owned()),
        ("SEND", "refused-1".to_owned()),
        ("SEND", "x".repeat(8192)),
        ("SEND", "refused-3".to_owned()),
    ];
    in_transaction(&mut worker, "refused", q, &frames).await;
    worker
        .send(
            "COMMIT",
            &[("transaction", "refused"), ("receipt", "refused")],
            "",
        )
        .await;
    let answer = worker.recv_within(Duration::from_secs(10)).await;
    let answer = answer.expect("an answer to the COMMIT");
    assert_eq!(answer.command, "ERROR", "{answer:?}");
    assert_eq!(answer.header("receipt-id"), Some("refused"), "{answer:?}");
    let text = format!(
        "{} {}",
        answer.header("message").unwrap_or_default(),
        answer.body_text()
    );
    assert!(
        text.contains("not confirmed") && text.contains("refused"),
        "{text}"
    );
    worker.expect_closed_within(Duration::from_secs(5)).await;
    config.max_message_size = -1;
    js.update_stream(&config).await.expect("stream update");

    let mut after = connected(stomp[0]).await;
    subscribe(&mut after, q, "after", &[("ack", "client-individual")]).await;
    let got = collect(&mut [&mut after], false, 5, Duration::from_secs(8)).await;
    let bodies: Vec<String> = got.iter().map(|(_, f)| f.body_text()).collect();
    assert_eq!(bodies, ["held"], "only the message the refused ACK named");
    assert_eq!(got[0].1.header("redelivered"), Some("true"));

    // Kept with an ACK: the acknowledged message leaves with the batch, and the redo record
    // that carried the ACK is gone once the node applied it.
    let held_ack = got[0].1.header("ack").expect("an ack header").to_owned();
    let frames = vec![("ACK", held_ack), ("SEND", "with-ack".to_owned())];
    in_transaction(&mut after, "with-ack", other, &frames).await;
    after
        .send(
            "COMMIT",
            &[("transaction", "with-ack"), ("receipt", "with-ack")],
            "",
        )
        .await;
    receipt(&mut after, "with-ack").await;
    after.send("DISCONNECT", &[("receipt", "bye")], "").await;
    receipt(&mut after, "bye").await;
    let got = collect(&mut [&mut reader], false, 1, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1.body_text(), "with-ack");
    let mut last = connected(stomp[1]).await;
    subscribe(&mut last, q, "last", &[]).await;
    let got = collect(&mut [&mut last], false, 1, Duration::from_secs(3)).await;
    assert!(
        got.is_empty(),
        "acknowledged in the committed transaction: {got:?}"
    );
    no_redo_record_within(&js, Duration::from_secs(5)).await;
}

/// A message ACKed in a transaction whose subscription is UNSUBSCRIBEd before the COMMIT
/// stays with the transaction, as on one broker (and in ActiveMQ): the COMMIT is kept, the
/// message is not delivered again, the subscription's other message is. Played for a
/// COMMIT of queue work (one batch), for one with a SEND to a temporary topic (applied frame
/// by frame), and for an ABORT (the message goes back to the cluster, not only to the node).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transacted_ack_outlives_its_subscription_until_the_commit() {
    let Some((rig, stomp)) = stomp_rig(2).await else {
        return;
    };
    let js = js(rig.nats.client_urls()).await;
    for (round, with_temporary, end) in [
        ("batch", false, "COMMIT"),
        ("frames", true, "COMMIT"),
        ("abort", false, "ABORT"),
    ] {
        let q = format!("/queue/txunsub.{round}");
        let out = format!("/queue/txunsub.{round}.out");
        let mut producer = connected(stomp[0]).await;
        send_ok(&mut producer, &q, "m1").await;
        send_ok(&mut producer, &q, "m2").await;
        let mut worker = connected(stomp[1]).await;
        subscribe(&mut worker, &q, "w", &[("ack", "client-individual")]).await;
        let got = collect(&mut [&mut worker], false, 2, Duration::from_secs(10)).await;
        assert_eq!(got.len(), 2, "{round}");
        let m1 = got.iter().find(|(_, f)| f.body_text() == "m1").expect("m1");
        let ack = m1.1.header("ack").expect("an ack header").to_owned();
        in_transaction(
            &mut worker,
            "t",
            &out,
            &[("ACK", ack), ("SEND", "out".to_owned())],
        )
        .await;
        if with_temporary {
            worker
                .send(
                    "SEND",
                    &[("destination", "/temp-topic/txunsub"), ("transaction", "t")],
                    "to a temporary topic",
                )
                .await;
        }
        worker
            .send("UNSUBSCRIBE", &[("id", "w"), ("receipt", "unsub")], "")
            .await;
        receipt(&mut worker, "unsub").await;
        // The batch's redo record, as it is published (the node deletes it once applied).
        let (_watchers, mut records) = watch_records(&rig.nats.client_urls()).await;
        if end == "ABORT" {
            // Long enough for the node to stop pulling the queue it has no consumer of.
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        worker
            .send(end, &[("transaction", "t"), ("receipt", "commit")], "")
            .await;
        receipt(&mut worker, "commit").await;
        if end == "ABORT" {
            // Given back, with no consumer left on the worker's node: the other node's
            // consumer gets both (they were stranded on the worker's node before).
            let mut next = connected(stomp[0]).await;
            subscribe(&mut next, &q, "n", &[]).await;
            let got = collect(&mut [&mut next], false, 2, Duration::from_secs(10)).await;
            let mut bodies: Vec<String> = got.iter().map(|(_, f)| f.body_text()).collect();
            bodies.sort();
            assert_eq!(bodies, ["m1", "m2"], "{round}");
            for c in [&mut worker, &mut next, &mut producer] {
                c.send("DISCONNECT", &[("receipt", "bye")], "").await;
                receipt(c, "bye").await;
            }
            continue;
        }
        if !with_temporary {
            let record = tokio::time::timeout(Duration::from_secs(5), records.next())
                .await
                .expect("the COMMIT's redo record")
                .expect("a record");
            let record: serde_json::Value =
                serde_json::from_slice(&record.payload).expect("a JSON record");
            let replies = record["replies"].as_array().cloned().unwrap_or_default();
            assert_eq!(
                replies.len(),
                record["acks"].as_array().map_or(0, Vec::len),
                "every acknowledged delivery's subject: {record}"
            );
            assert!(
                !replies.is_empty()
                    && replies
                        .iter()
                        .all(|r| r.as_str().is_some_and(|r| r.starts_with("$JS.ACK."))),
                "{record}"
            );
        }
        // Past the ack wait (`nodeTimeout`, 2 s on the rig): m1 stays acknowledged.
        let mut next = connected(stomp[0]).await;
        subscribe(&mut next, &q, "n", &[]).await;
        subscribe(&mut next, &out, "o", &[]).await;
        let got = collect(&mut [&mut next], false, 3, Duration::from_secs(5)).await;
        let mut bodies: Vec<String> = got.iter().map(|(_, f)| f.body_text()).collect();
        bodies.sort();
        assert_eq!(bodies, ["m2", "out"], "{round}");
        for c in [&mut worker, &mut next, &mut producer] {
            c.send("DISCONNECT", &[("receipt", "bye")], "").await;
            receipt(c, "bye").await;
        }
    }
    no_redo_record_within(&js, Duration::from_secs(5)).await;
}

/// A COMMIT of SENDs to topics and a queue on a cluster node is one unit
/// (`src/cluster/topic_redo.rs`): nothing reaches the topic's subscriber on another node
/// before the COMMIT, then the persistent topic messages in order, each once (also past the
/// records' sweep), the non-persistent one and the queue message; no record is left behind.
/// A persistent SEND after the COMMIT comes after the transaction's persistent messages. A transaction whose
/// batch the stream refuses delivers none of its topic messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_sends_of_a_transaction_are_kept_with_its_queue_work() {
    let Some((rig, stomp)) = stomp_rig(2).await else {
        return;
    };
    let js = js(rig.nats.client_urls()).await;
    let topic = "/topic/txtopic.unit";
    let q = "/queue/txtopic.unit";
    let mut subscriber = connected(stomp[1]).await;
    subscribe(&mut subscriber, topic, "s", &[]).await;
    let mut producer = connected(stomp[0]).await;
    producer.send("BEGIN", &[("transaction", "t")], "").await;
    for n in 0..3 {
        producer
            .send(
                "SEND",
                &[
                    ("destination", topic),
                    ("persistent", "true"),
                    ("transaction", "t"),
                ],
                &format!("persistent-{n}"),
            )
            .await;
    }
    producer
        .send(
            "SEND",
            &[("destination", topic), ("transaction", "t")],
            "non-persistent",
        )
        .await;
    producer
        .send(
            "SEND",
            &[
                ("destination", q),
                ("persistent", "true"),
                ("transaction", "t"),
            ],
            "to the queue",
        )
        .await;
    let early = collect(&mut [&mut subscriber], false, 1, Duration::from_secs(2)).await;
    assert!(early.is_empty(), "delivered before the COMMIT: {early:?}");
    // The batch's records, as they are stored.
    let (_watchers, mut records) = watch_records(&rig.nats.client_urls()).await;
    producer
        .send("COMMIT", &[("transaction", "t"), ("receipt", "commit")], "")
        .await;
    // Pipelined behind the COMMIT, without waiting for its RECEIPT.
    producer
        .send(
            "SEND",
            &[("destination", topic), ("persistent", "true")],
            "after the commit",
        )
        .await;
    receipt(&mut producer, "commit").await;
    let got = collect(&mut [&mut subscriber], false, 5, Duration::from_secs(10)).await;
    let bodies: Vec<String> = got.iter().map(|(_, f)| f.body_text()).collect();
    // Persistent messages in order (a non-persistent one goes its own way between nodes:
    // JMS does not order messages of different delivery modes either).
    let persistent: Vec<&String> = bodies.iter().filter(|b| *b != "non-persistent").collect();
    assert_eq!(
        persistent,
        [
            "persistent-0",
            "persistent-1",
            "persistent-2",
            "after the commit"
        ],
        "{bodies:?}"
    );
    assert!(bodies.contains(&"non-persistent".to_owned()), "{bodies:?}");
    let mut reader = connected(stomp[1]).await;
    subscribe(&mut reader, q, "q", &[]).await;
    let queued = collect(&mut [&mut reader], false, 1, Duration::from_secs(10)).await;
    assert_eq!(queued.len(), 1);
    // Each record comes once from each server.
    let mut topic_records = std::collections::HashSet::new();
    while let Ok(Some(record)) =
        tokio::time::timeout(Duration::from_millis(500), records.next()).await
    {
        if record.subject.ends_with(".t") {
            topic_records.insert(record.payload);
        }
    }
    assert_eq!(
        topic_records.len(),
        1,
        "one record of the persistent topic SENDs in the batch"
    );
    // Past the sweep's grace and a sweep: no second copy.
    no_redo_record_within(&js, Duration::from_secs(5)).await;
    let again = collect(&mut [&mut subscriber], false, 1, Duration::from_secs(3)).await;
    assert!(again.is_empty(), "delivered twice: {again:?}");

    // Refused: the queue stream takes no message above 4 KiB, and the transaction's queue
    // SEND is 8 KiB. Frame by frame, its topic SEND before it would be stored and delivered;
    // in the batch, nothing of it is.
    let mut config = stream_config(&js).await;
    config.max_message_size = 4096;
    js.update_stream(&config).await.expect("stream update");
    producer.send("BEGIN", &[("transaction", "r")], "").await;
    producer
        .send(
            "SEND",
            &[
                ("destination", topic),
                ("persistent", "true"),
                ("transaction", "r"),
            ],
            "refused with its transaction",
        )
        .await;
    producer
        .send(
            "SEND",
            &[
                ("destination", q),
                ("persistent", "true"),
                ("transaction", "r"),
            ],
            &"x".repeat(8192),
        )
        .await;
    producer
        .send("COMMIT", &[("transaction", "r"), ("receipt", "r")], "")
        .await;
    let answer = producer.recv_within(Duration::from_secs(10)).await;
    let answer = answer.expect("an answer to the COMMIT");
    assert_eq!(answer.command, "ERROR", "{answer:?}");
    assert_eq!(answer.header("receipt-id"), Some("r"), "{answer:?}");
    config.max_message_size = -1;
    js.update_stream(&config).await.expect("stream update");
    let refused = collect(&mut [&mut subscriber], false, 1, Duration::from_secs(3)).await;
    assert!(
        refused.is_empty(),
        "a refused transaction's topic SEND: {refused:?}"
    );
}

/// The records of topic SENDs a node left in a kept batch (it died before storing them in
/// their shard streams) are stored by another node's sweep under their message ids: a copy
/// of a message the shard stream holds is dropped there, a message it does not hold reaches
/// the topic's subscribers once. Played by records written as such a node leaves them, with
/// the stored form of a real message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_sends_a_dead_node_left_in_records_are_stored_once() {
    let Some((rig, stomp)) = stomp_rig(2).await else {
        return;
    };
    let js = js(rig.nats.client_urls()).await;
    let topic = "/topic/txrecordtemplate";
    // The stored form of a message, as a record carries it: stored before anyone subscribes.
    let mut producer = connected(stomp[0]).await;
    // The queue stream is made at a queue's first use.
    send_ok(
        &mut producer,
        "/queue/txrecord.stream",
        "makes the queue stream",
    )
    .await;
    producer
        .send(
            "SEND",
            &[
                ("destination", topic),
                ("persistent", "true"),
                ("receipt", "template"),
            ],
            "template",
        )
        .await;
    receipt(&mut producer, "template").await;
    let mut stored = None;
    for k in 0..2 {
        let stream = js
            .get_stream(format!("FMQ_MSG_{k}"))
            .await
            .expect("shard stream");
        let subject = format!("fmq.m.{k}.txrecordtemplate");
        if let Ok(raw) = stream.get_last_raw_message_by_subject(&subject).await {
            stored = Some((subject, raw));
        }
    }
    let (subject, raw) = stored.expect("the template in a shard stream");
    let id = raw
        .headers
        .get("Nats-Msg-Id")
        .map(|v| v.to_string())
        .expect("a message id");
    let mut subscriber = connected(stomp[1]).await;
    subscribe(&mut subscriber, topic, "s", &[]).await;
    // Committed long ago by a node gone since (the sweep waits for a record's grace).
    let at_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
        - 10_000;
    // docs/cluster.md, "Transactions": a version byte, the time, then each message.
    let record = |id: &str| {
        let mut out = vec![1u8];
        out.extend_from_slice(&at_ms.to_be_bytes());
        for field in [subject.as_str(), id] {
            out.extend_from_slice(&(field.len() as u16).to_be_bytes());
            out.extend_from_slice(field.as_bytes());
        }
        out.extend_from_slice(&(raw.payload.len() as u32).to_be_bytes());
        out.extend_from_slice(&raw.payload);
        bytes::Bytes::from(out)
    };
    // The node stored this one before it died: the shard stream drops the sweep's copy.
    js.publish("fmq.q.$tx.dead.t", record(&id))
        .await
        .expect("record")
        .await
        .expect("record stored");
    no_redo_record_within(&js, Duration::from_secs(10)).await;
    let copies = collect(&mut [&mut subscriber], false, 1, Duration::from_secs(2)).await;
    assert!(
        copies.is_empty(),
        "a stored message stored again: {copies:?}"
    );
    // This one it did not store: the sweep does, once.
    js.publish("fmq.q.$tx.dead.t", record("dead-m1"))
        .await
        .expect("record")
        .await
        .expect("record stored");
    no_redo_record_within(&js, Duration::from_secs(10)).await;
    let got = collect(&mut [&mut subscriber], false, 2, Duration::from_secs(4)).await;
    let bodies: Vec<String> = got.iter().map(|(_, f)| f.body_text()).collect();
    assert_eq!(bodies, ["template"]);
}

/// Wait until the queue stream holds no redo record (at most `within`).
async fn no_redo_record_within(js: &jetstream::Context, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let records = redo_records(js).await;
        if records == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "{records} redo records stayed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The redo records of COMMITs (`fmq.q.$tx.>`) as they are published, watched on every
/// server of `urls` (so that the committing node's own server has the interest already); the
/// clients, to keep while watching.
async fn watch_records(
    urls: &[String],
) -> (
    Vec<async_nats::Client>,
    futures_util::stream::SelectAll<async_nats::Subscriber>,
) {
    let mut watchers = Vec::new();
    let mut subscriptions = Vec::new();
    for url in urls {
        let client = async_nats::connect(url.as_str())
            .await
            .expect("NATS client");
        let sub = client
            .subscribe("fmq.q.$tx.>")
            .await
            .expect("record subscription");
        client.flush().await.expect("flush");
        subscriptions.push(sub);
        watchers.push(client);
    }
    (watchers, futures_util::stream::select_all(subscriptions))
}

/// Redo records in the queue stream.
async fn redo_records(js: &jetstream::Context) -> usize {
    messages_on(js, "fmq.q.$tx.>").await
}

/// Messages the queue stream holds on subjects matching `filter`.
async fn messages_on(js: &jetstream::Context, filter: &str) -> usize {
    let stream = js.get_stream(QUEUE_STREAM).await.expect("queue stream");
    let mut subjects = stream
        .info_with_subjects(filter)
        .await
        .expect("stream subjects");
    let mut held = 0;
    while let Some(next) = subjects.next().await {
        held += next.expect("a subject").1;
    }
    held
}

/// Messages per transaction in the kill test.
const PER_TRANSACTION: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_while_its_producer_commits_leaves_each_transaction_whole_or_absent() {
    killed_while_committing(None).await;
}

/// [`a_node_killed_while_its_producer_commits_leaves_each_transaction_whole_or_absent`] with
/// every other SEND to a topic (persistent), whose subscriber is on the other node: the topic
/// messages of a transaction are kept with its queue messages (`src/cluster/topic_redo.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_while_its_producer_commits_topic_sends_leaves_each_whole_or_absent() {
    killed_while_committing(Some("/topic/tx.killed")).await;
}

/// Transactions of [`PER_TRANSACTION`] persistent SENDs to a queue (every other one to
/// `topic` when given) committed on node 0 one after another, node 0 SIGKILLed at a random
/// point: every transaction with a RECEIPT is delivered whole, any other whole or not at all.
async fn killed_while_committing(topic: Option<&'static str>) {
    let Some((mut rig, stomp)) = stomp_rig(2).await else {
        return;
    };
    let q = "/queue/tx.killed";
    let mut producer = connected(stomp[0]).await;
    send_ok(&mut producer, q, "first").await;
    // The topic's subscriber reads throughout (a full window would pause the producer).
    let topic_reader = match topic {
        Some(topic) => {
            let mut subscriber = connected(stomp[1]).await;
            subscribe(&mut subscriber, topic, "t", &[]).await;
            Some(tokio::spawn(async move {
                let mut bodies = Vec::new();
                let mut quiet_since = Instant::now();
                while quiet_since.elapsed() < Duration::from_secs(8) {
                    if let Some(f) = subscriber.recv_within(Duration::from_millis(200)).await {
                        quiet_since = Instant::now();
                        bodies.push(f.body_text());
                    }
                }
                bodies
            }))
        }
        None => None,
    };
    // Transactions one after another until the node is gone; the kill lands at a random
    // point of one of them (reading, admitting, storing, or between two).
    let committer = tokio::spawn(async move {
        let mut receipted = Vec::new();
        // A write the kill cuts off ends the run, as a missing RECEIPT does.
        'transactions: for t in 0..10_000 {
            let tx = format!("t{t}");
            if producer
                .try_send("BEGIN", &[("transaction", &tx)], "")
                .await
                .is_err()
            {
                break;
            }
            for n in 0..PER_TRANSACTION {
                let destination = match topic {
                    Some(topic) if n % 2 == 1 => topic,
                    _ => q,
                };
                let sent = producer
                    .try_send(
                        "SEND",
                        &[
                            ("destination", destination),
                            ("persistent", "true"),
                            ("transaction", &tx),
                        ],
                        &format!("{tx}/{n}/{}", "p".repeat(200)),
                    )
                    .await;
                if sent.is_err() {
                    break 'transactions;
                }
            }
            if producer
                .try_send("COMMIT", &[("transaction", &tx), ("receipt", &tx)], "")
                .await
                .is_err()
            {
                break;
            }
            match producer.recv_within(Duration::from_secs(5)).await {
                Some(f) if f.command == "RECEIPT" => receipted.push(t),
                _ => break,
            }
        }
        receipted
    });
    tokio::time::sleep(Duration::from_millis(1500 + rand::random::<u64>() % 1000)).await;
    rig.nodes[0].kill();
    let receipted = committer.await.expect("committer");
    assert!(receipted.len() >= 2, "too few transactions: {receipted:?}");

    let mut consumer = connected(stomp[1]).await;
    subscribe(&mut consumer, q, "c", &[("activemq.prefetchSize", "1000")]).await;
    let mut bodies = Vec::new();
    let mut quiet_since = Instant::now();
    while quiet_since.elapsed() < Duration::from_secs(4) {
        let Some(f) = consumer.recv_within(Duration::from_millis(200)).await else {
            continue;
        };
        quiet_since = Instant::now();
        bodies.push(f.body_text());
    }
    if let Some(reader) = topic_reader {
        bodies.extend(reader.await.expect("topic reader"));
    }
    let mut per_tx: BTreeMap<usize, usize> = BTreeMap::new();
    for body in bodies {
        if body == "first" {
            continue;
        }
        let t: usize = body
            .strip_prefix('t')
            .and_then(|b| b.split('/').next())
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("unexpected message {body:?}"));
        *per_tx.entry(t).or_default() += 1;
    }
    for t in &receipted {
        assert_eq!(
            per_tx.get(t),
            Some(&PER_TRANSACTION),
            "transaction {t} had its RECEIPT: all of it, each once"
        );
    }
    let partial: Vec<(&usize, &usize)> = per_tx
        .iter()
        .filter(|(_, n)| **n != PER_TRANSACTION)
        .collect();
    assert!(partial.is_empty(), "transactions kept in part: {partial:?}");
    eprintln!(
        "{} transactions receipted, {} kept (the one the kill met: {})",
        receipted.len(),
        per_tx.len(),
        if per_tx.len() > receipted.len() {
            "kept whole"
        } else {
            "not kept"
        }
    );
}

/// The acknowledgements of a committed transaction travel in its batch as a redo record
/// (`src/cluster/queue_redo.rs`); a node that dies before applying them leaves the record,
/// and any node's sweep applies it. Played here by a record written as such a node leaves
/// it (old, its acknowledgement not applied) for a message a consumer holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledgements_a_dead_node_left_in_a_redo_record_are_applied() {
    let Some((rig, stomp)) = stomp_rig(2).await else {
        return;
    };
    let js = js(rig.nats.client_urls()).await;
    let q = "/queue/txredo";
    let mut producer = connected(stomp[0]).await;
    // One acknowledged before the node died: gone from the stream already.
    send_ok(&mut producer, q, "acknowledged-already").await;
    let stream = js.get_stream(QUEUE_STREAM).await.expect("queue stream");
    let gone = stream
        .get_last_raw_message_by_subject("fmq.q.txredo")
        .await
        .expect("the first message")
        .sequence;
    let mut first = connected(stomp[1]).await;
    subscribe(&mut first, q, "f", &[]).await;
    assert_eq!(
        collect(&mut [&mut first], false, 1, Duration::from_secs(10))
            .await
            .len(),
        1
    );
    first.send("DISCONNECT", &[("receipt", "bye")], "").await;
    receipt(&mut first, "bye").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while stream.get_raw_message(gone).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "the first message was not acknowledged"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    send_ok(&mut producer, q, "acknowledged-by-a-dead-node").await;
    let mut holder = connected(stomp[1]).await;
    subscribe(&mut holder, q, "h", &[("ack", "client-individual")]).await;
    let got = collect(&mut [&mut holder], false, 1, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 1);

    let seq = stream
        .get_last_raw_message_by_subject("fmq.q.txredo")
        .await
        .expect("the held message")
        .sequence;
    // Committed long ago by a node gone since (the sweep waits for a record's grace).
    let at_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis();
    js.publish(
        "fmq.q.$tx.dead",
        format!(r#"{{"at_ms":{at_ms},"acks":[{gone},{seq}]}}"#).into(),
    )
    .await
    .expect("record")
    .await
    .expect("record stored");
    assert!(
        redo_records(&js).await == 1 || stream.get_raw_message(seq).await.is_err(),
        "the record is seen until a sweep applies it"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while stream.get_raw_message(seq).await.is_ok() {
        assert!(Instant::now() < deadline, "the record was not applied");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while stream
        .get_last_raw_message_by_subject("fmq.q.$tx.dead")
        .await
        .is_ok()
    {
        assert!(Instant::now() < deadline, "the record stayed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The holder leaves without acknowledging: the message is not delivered again.
    drop(holder);
    let mut after = connected(stomp[0]).await;
    subscribe(&mut after, q, "after", &[]).await;
    let got = collect(&mut [&mut after], false, 1, Duration::from_secs(4)).await;
    assert!(got.is_empty(), "acknowledged by the record: {got:?}");
}

/// Messages the large redo record lists.
const LISTED: usize = 2_000;

/// A dead node's record of a large transaction is applied whole: every message it lists
/// leaves the stream, then the record. Played twice, on queues no node consumes: a record of
/// stream sequences only (as a node before acknowledgement subjects wrote it: each message
/// deleted, 64 at a time), and one carrying the subjects of the deliveries a consumer of the
/// test holds (acknowledged through them, as the dead node would have). How long each took
/// is printed (the rig, 2,000 messages: deletions 2.6-3.9 s, the servers' replication
/// bounds them; acknowledgements 0.14 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_redo_record_is_applied_whole() {
    let Some((rig, stomp)) = stomp_rig(2).await else {
        return;
    };
    let js = js(rig.nats.client_urls()).await;
    // The first queue message makes the queue stream.
    let mut producer = connected(stomp[0]).await;
    send_ok(&mut producer, "/queue/txbulk.seed", "seed").await;
    let mut took = Vec::new();
    for with_replies in [false, true] {
        took.push(apply_large_record(&js, with_replies).await);
        eprintln!(
            "{LISTED} listed messages removed in {:?} (with replies: {with_replies})",
            took[took.len() - 1]
        );
    }
    // Acknowledgements are the consumer's changes, applied in bulk (25x faster on the rig):
    // a record whose subjects were not used would take as long as deletions.
    assert!(
        took[1] * 4 < took[0],
        "acknowledging through the subjects took {:?}, deleting {:?}",
        took[1],
        took[0]
    );
}

/// [`a_large_redo_record_is_applied_whole`]'s round: from the first removal to the last.
async fn apply_large_record(js: &jetstream::Context, with_replies: bool) -> Duration {
    let subject = format!("fmq.q.txbulk{with_replies}");
    let seqs: Vec<u64> = futures_util::future::join_all((0..LISTED).map(|i| {
        let js = js.clone();
        let subject = subject.clone();
        async move {
            js.publish(subject, format!("m{i}").into())
                .await
                .expect("publish")
                .await
                .expect("stored")
                .sequence
        }
    }))
    .await;
    assert_eq!(messages_on(js, &subject).await, LISTED);
    let mut replies = Vec::new();
    if with_replies {
        // The deliveries of a consumer that then dies (the test's, never acknowledged).
        let stream = js.get_stream(QUEUE_STREAM).await.expect("queue stream");
        let consumer = stream
            .create_consumer(jetstream::consumer::pull::Config {
                durable_name: Some("TXBULK".into()),
                filter_subject: subject.clone(),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(60),
                max_ack_pending: 10_000,
                ..Default::default()
            })
            .await
            .expect("consumer");
        let mut by_seq = BTreeMap::new();
        while by_seq.len() < LISTED {
            let mut batch = consumer
                .fetch()
                .max_messages(LISTED - by_seq.len())
                .expires(Duration::from_secs(5))
                .messages()
                .await
                .expect("fetch");
            while let Some(m) = batch.next().await {
                let m = m.expect("a delivery");
                let seq = m.info().expect("delivery info").stream_sequence;
                let reply = m.reply.clone().expect("a reply subject").to_string();
                by_seq.insert(seq, reply);
            }
        }
        replies = seqs.iter().map(|s| by_seq[s].clone()).collect();
    }
    let old_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis()
        - 10_000;
    let listed: Vec<String> = seqs.iter().map(u64::to_string).collect();
    let quoted: Vec<String> = replies.iter().map(|r| format!("\"{r}\"")).collect();
    js.publish(
        format!("fmq.q.$tx.deadbulk{with_replies}"),
        format!(
            r#"{{"at_ms":{old_ms},"acks":[{}],"replies":[{}]}}"#,
            listed.join(","),
            quoted.join(",")
        )
        .into(),
    )
    .await
    .expect("record")
    .await
    .expect("record stored");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut held = messages_on(js, &subject).await;
    while held == LISTED {
        assert!(Instant::now() < deadline, "the record was not applied");
        tokio::time::sleep(Duration::from_millis(20)).await;
        held = messages_on(js, &subject).await;
    }
    let started = Instant::now();
    while held > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{held} of {LISTED} still held 30 s after the sweep began applying the record"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        held = messages_on(js, &subject).await;
    }
    let took = started.elapsed();
    no_redo_record_within(js, Duration::from_secs(5)).await;
    took
}

/// A mover (take a message, ACK it and SEND it on, in one transaction per batch) whose node is
/// SIGKILLed right after a COMMIT's RECEIPT: every message it moved in a receipted transaction
/// is in the target queue and gone from the source (the transaction's redo record applied by
/// the other node), none in both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_movers_node_killed_after_its_receipt_leaves_no_message_in_both_queues() {
    let Some((mut rig, stomp)) = stomp_rig(2).await else {
        return;
    };
    const MESSAGES: usize = 800;
    const BATCH: usize = 200;
    let (src, dst) = ("/queue/move.src", "/queue/move.dst");
    let mut p = connected(stomp[1]).await;
    for n in 0..MESSAGES {
        let body = format!("m{n}");
        let mut headers = vec![("destination", src), ("persistent", "true")];
        if n == MESSAGES - 1 {
            headers.push(("receipt", "filled"));
        }
        p.send("SEND", &headers, &body).await;
    }
    receipt(&mut p, "filled").await;
    let mut mover = connected(stomp[0]).await;
    subscribe(
        &mut mover,
        src,
        "m",
        &[
            ("ack", "client-individual"),
            ("activemq.prefetchSize", &BATCH.to_string()),
        ],
    )
    .await;
    let mut moved = Vec::new();
    // MESSAGE frames read while waiting for a RECEIPT (the next batch's first ones).
    let mut early = Vec::new();
    for t in 0..2 {
        let want = BATCH - early.len();
        let mut got: Vec<_> = std::mem::take(&mut early);
        got.extend(
            collect(&mut [&mut mover], false, want, Duration::from_secs(10))
                .await
                .into_iter()
                .map(|(_, m)| m),
        );
        assert_eq!(got.len(), BATCH);
        let tx = format!("t{t}");
        mover.send("BEGIN", &[("transaction", &tx)], "").await;
        for m in &got {
            let id = m.header("ack").expect("an ack header");
            mover
                .send("ACK", &[("id", id), ("transaction", &tx)], "")
                .await;
            mover
                .send(
                    "SEND",
                    &[
                        ("destination", dst),
                        ("persistent", "true"),
                        ("transaction", &tx),
                    ],
                    &m.body_text(),
                )
                .await;
        }
        mover
            .send("COMMIT", &[("transaction", &tx), ("receipt", &tx)], "")
            .await;
        loop {
            let f = mover
                .recv_within(Duration::from_secs(10))
                .await
                .expect("the COMMIT's RECEIPT");
            if f.command == "RECEIPT" {
                assert_eq!(f.header("receipt-id"), Some(tx.as_str()));
                break;
            }
            assert_eq!(f.command, "MESSAGE", "{f:?}");
            early.push(f);
        }
        moved.extend(got.iter().map(|m| m.body_text()));
    }
    // A third transaction in flight when its node dies: its batch may or may not be kept.
    let want = BATCH - early.len();
    let mut last: Vec<_> = std::mem::take(&mut early);
    last.extend(
        collect(&mut [&mut mover], false, want, Duration::from_secs(10))
            .await
            .into_iter()
            .map(|(_, m)| m),
    );
    mover.send("BEGIN", &[("transaction", "t2")], "").await;
    for m in &last {
        let id = m.header("ack").expect("an ack header");
        mover
            .send("ACK", &[("id", id), ("transaction", "t2")], "")
            .await;
        mover
            .send(
                "SEND",
                &[
                    ("destination", dst),
                    ("persistent", "true"),
                    ("transaction", "t2"),
                ],
                &m.body_text(),
            )
            .await;
    }
    mover
        .send("COMMIT", &[("transaction", "t2"), ("receipt", "t2")], "")
        .await;
    let wait: u64 = std::env::var("TX_KILL_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| rand::random::<u64>() % 80);
    tokio::time::sleep(Duration::from_millis(wait)).await;
    rig.nodes[0].kill();

    let mut reader = connected(stomp[1]).await;
    subscribe(&mut reader, src, "s", &[]).await;
    subscribe(&mut reader, dst, "d", &[]).await;
    let mut in_src = std::collections::BTreeSet::new();
    let mut in_dst = std::collections::BTreeSet::new();
    let mut quiet_since = Instant::now();
    // Past nodeTimeout (2 s on the rig): the dead node's held messages come back by then.
    while quiet_since.elapsed() < Duration::from_secs(6) {
        let Some(f) = reader.recv_within(Duration::from_millis(200)).await else {
            continue;
        };
        quiet_since = Instant::now();
        if f.header("subscription") == Some("s") {
            in_src.insert(f.body_text());
        } else {
            in_dst.insert(f.body_text());
        }
    }
    // Receipted: in the target, not in the source. (The transaction in flight at the kill
    // may have some of its messages delivered once more if the sweep of its redo record
    // comes after the rig's 2 s ack wait: at least once; printed below.)
    let both: Vec<&String> = moved.iter().filter(|m| in_src.contains(*m)).collect();
    assert!(
        both.is_empty(),
        "{} receipted messages in both queues: {both:?}",
        both.len()
    );
    let missing: Vec<&String> = moved.iter().filter(|m| !in_dst.contains(*m)).collect();
    assert!(
        missing.is_empty(),
        "moved and not in the target: {missing:?}"
    );
    assert_eq!(
        in_src.len() + in_dst.len(),
        MESSAGES,
        "every message in one queue"
    );
    let in_flight: Vec<String> = last.iter().map(|m| m.body_text()).collect();
    let kept = in_flight.iter().filter(|m| in_dst.contains(*m)).count();
    let again = in_flight
        .iter()
        .filter(|m| in_dst.contains(*m) && in_src.contains(*m))
        .count();
    eprintln!(
        "in flight: {kept} of {} kept, {again} delivered once more",
        in_flight.len()
    );
    assert!(
        kept == 0 || kept == in_flight.len(),
        "the transaction in flight kept in part: {kept} of {}",
        in_flight.len()
    );
    // No redo record is left behind.
    let js = js(rig.nats.client_urls()).await;
    no_redo_record_within(&js, Duration::from_secs(15)).await;
}
