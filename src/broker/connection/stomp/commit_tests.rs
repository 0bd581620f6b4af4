//! A STOMP transaction's COMMIT on the recording durability engine, over in-process byte
//! streams: one store commit for all of it, nothing visible before that commit is kept, the
//! RECEIPT after it, nothing applied when it fails, nothing at ABORT or when the connection
//! ends with the transaction open; and what a plain SEND whose store failed is told.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio_util::sync::CancellationToken;

use super::{serve, Framing};
use crate::broker::connection::{ConnectionParams, ListenerSettings};
use crate::broker::durability::{Change, DurabilityError, QueueOwner, Recording};
use crate::broker::runtime::BrokerCore;
use crate::protocol::stomp::{Decoded, Decoder, Frame, StompLimits};

/// A STOMP client on one end of an in-process stream whose other end a connection task
/// serves.
struct Client {
    stream: DuplexStream,
    buf: BytesMut,
    decoder: Decoder,
}

impl Client {
    /// Connected (STOMP 1.2) with `headers`, its CONNECTED read.
    async fn connect(
        core: &Arc<BrokerCore>,
        listener: &Arc<ListenerSettings>,
        headers: &[(&str, &str)],
    ) -> Client {
        let (ours, theirs) = tokio::io::duplex(1 << 20);
        let params = ConnectionParams {
            core: core.clone(),
            listener: listener.clone(),
            peer: "127.0.0.1:1".parse().expect("addr"),
            tls: false,
            peer_cert_subject: None,
            shutdown: CancellationToken::new(),
        };
        tokio::spawn(serve(theirs, params, Framing::Stream));
        let mut client = Client {
            stream: ours,
            buf: BytesMut::new(),
            decoder: Decoder::new(StompLimits::default()),
        };
        let mut all = vec![("accept-version", "1.2"), ("host", "x")];
        all.extend_from_slice(headers);
        client.send("CONNECT", &all, "").await;
        assert_eq!(client.next().await.command.as_str(), "CONNECTED");
        client
    }

    async fn send(&mut self, command: &str, headers: &[(&str, &str)], body: &str) {
        let mut text = format!("{command}\n");
        for (name, value) in headers {
            text.push_str(&format!("{name}:{value}\n"));
        }
        text.push('\n');
        text.push_str(body);
        text.push('\0');
        self.stream.write_all(text.as_bytes()).await.expect("write");
    }

    /// The next frame, or `None` when none arrives within `wait` or the connection closed.
    async fn next_within(&mut self, wait: Duration) -> Option<Frame> {
        loop {
            match self.decoder.decode(&mut self.buf) {
                Ok(Some(Decoded::Frame(frame))) => return Some(frame),
                Ok(Some(Decoded::HeartBeat)) => continue,
                Ok(None) => {}
                Err(e) => panic!("undecodable frame: {e}"),
            }
            match tokio::time::timeout(wait, self.stream.read_buf(&mut self.buf)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return None,
            }
        }
    }

    async fn next(&mut self) -> Frame {
        self.next_within(Duration::from_secs(5))
            .await
            .expect("a frame within 5 s")
    }

    /// Send with `receipt:r` and read up to its RECEIPT: the frames that came before it.
    async fn receipted(
        &mut self,
        command: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Vec<Frame> {
        let mut all = headers.to_vec();
        all.push(("receipt", "r"));
        self.send(command, &all, body).await;
        let mut before = Vec::new();
        loop {
            let f = self.next().await;
            assert_ne!(f.command.as_str(), "ERROR", "{f:?}");
            if f.header("receipt-id") == Some("r") {
                return before;
            }
            before.push(f);
        }
    }
}

fn broker(recording: &Arc<Recording>) -> (Arc<BrokerCore>, Arc<ListenerSettings>) {
    crate::broker::runtime::test_core(recording.clone())
}

/// Whether one commit holds `count` changes that `matches`.
fn one_batch(recording: &Recording, matches: fn(&Change) -> bool, count: usize) -> bool {
    recording
        .batches()
        .iter()
        .any(|batch| batch.iter().filter(|c| matches(c)).count() == count)
}

fn is_message(change: &Change) -> bool {
    matches!(change, Change::Message { .. })
}

fn is_for_a_session(change: &Change) -> bool {
    matches!(change, Change::Message { queued_for, .. }
        if queued_for.iter().any(|q| matches!(q.owner, QueueOwner::Session(_))))
}

fn is_queue_removal(change: &Change) -> bool {
    matches!(
        change,
        Change::Removed {
            owner: QueueOwner::Queue(_),
            ..
        }
    )
}

fn is_session_removal(change: &Change) -> bool {
    matches!(
        change,
        Change::Removed {
            owner: QueueOwner::Session(_),
            ..
        }
    )
}

/// Durable subscription `d` of client `sub` on `/topic/t`, left offline.
async fn offline_durable_subscription(core: &Arc<BrokerCore>, listener: &Arc<ListenerSettings>) {
    let mut c = Client::connect(core, listener, &[("client-id", "sub")]).await;
    c.receipted(
        "SUBSCRIBE",
        &[
            ("destination", "/topic/t"),
            ("id", "1"),
            ("activemq.subscriptionName", "d"),
        ],
        "",
    )
    .await;
    c.receipted("DISCONNECT", &[], "").await;
}

/// BEGIN `t`, two persistent SENDs to `/queue/q` and one to `/topic/t`.
async fn begin_and_send(c: &mut Client) {
    c.send("BEGIN", &[("transaction", "t")], "").await;
    for (destination, body) in [("/queue/q", "1"), ("/topic/t", "2"), ("/queue/q", "3")] {
        c.send(
            "SEND",
            &[
                ("destination", destination),
                ("persistent", "true"),
                ("transaction", "t"),
            ],
            body,
        )
        .await;
    }
}

fn depth(core: &BrokerCore, queue: &str) -> usize {
    core.queues.stats(queue).map_or(0, |s| s.depth)
}

#[tokio::test]
async fn a_commit_is_one_store_commit_and_visible_only_once_kept() {
    let recording = Recording::new();
    let (core, listener) = broker(&recording);
    offline_durable_subscription(&core, &listener).await;
    let mut c = Client::connect(&core, &listener, &[]).await;
    begin_and_send(&mut c).await;
    recording.hold_when(is_message);
    c.send("COMMIT", &[("transaction", "t"), ("receipt", "c")], "")
        .await;
    assert!(
        c.next_within(Duration::from_millis(200)).await.is_none(),
        "no RECEIPT before the commit is kept"
    );
    assert!(
        one_batch(&recording, is_message, 3),
        "both queue messages and the durable subscription's copy in one commit: {:?}",
        recording.batches()
    );
    assert_eq!(
        depth(&core, "q"),
        0,
        "nothing in the queue before it is kept"
    );
    recording.release();
    let receipt = c.next().await;
    assert_eq!(receipt.header("receipt-id"), Some("c"), "{receipt:?}");
    assert_eq!(depth(&core, "q"), 2);
}

#[tokio::test]
async fn a_failed_commit_applies_nothing_and_answers_an_error() {
    let recording = Recording::new();
    let (core, listener) = broker(&recording);
    offline_durable_subscription(&core, &listener).await;
    let mut c = Client::connect(&core, &listener, &[]).await;
    begin_and_send(&mut c).await;
    // Only what carries the durable subscription's copy is refused: frame by frame, the
    // first queue message would be kept and delivered before the refusal.
    recording.refuse_when(
        is_for_a_session,
        Some(DurabilityError::Unavailable("write failed".into())),
    );
    c.send("COMMIT", &[("transaction", "t"), ("receipt", "c")], "")
        .await;
    let error = c.next().await;
    assert_eq!(error.command.as_str(), "ERROR", "{error:?}");
    assert_eq!(error.header("receipt-id"), Some("c"));
    assert!(
        c.next_within(Duration::from_secs(2)).await.is_none(),
        "closed"
    );
    recording.refuse_when(is_for_a_session, None);
    assert_eq!(depth(&core, "q"), 0);
    // The durable subscription got nothing either.
    let mut sub = Client::connect(&core, &listener, &[("client-id", "sub")]).await;
    sub.receipted(
        "SUBSCRIBE",
        &[
            ("destination", "/topic/t"),
            ("id", "1"),
            ("activemq.subscriptionName", "d"),
        ],
        "",
    )
    .await;
    assert!(sub.next_within(Duration::from_millis(200)).await.is_none());
}

/// Two persistent messages of `/queue/q` and two of durable subscription `d` delivered to a
/// `client-individual` consumer: the consumer and the four `ack` values (queue first).
async fn four_delivered(
    core: &Arc<BrokerCore>,
    listener: &Arc<ListenerSettings>,
) -> (Client, Vec<String>) {
    offline_durable_subscription(core, listener).await;
    let mut producer = Client::connect(core, listener, &[]).await;
    for (destination, body) in [
        ("/queue/q", "1"),
        ("/queue/q", "2"),
        ("/topic/t", "3"),
        ("/topic/t", "4"),
    ] {
        producer
            .receipted(
                "SEND",
                &[("destination", destination), ("persistent", "true")],
                body,
            )
            .await;
    }
    let mut c = Client::connect(core, listener, &[("client-id", "sub")]).await;
    let mut frames = Vec::new();
    for (id, destination) in [("q", "/queue/q"), ("d", "/topic/t")] {
        frames.extend(
            c.receipted(
                "SUBSCRIBE",
                &[
                    ("destination", destination),
                    ("id", id),
                    ("ack", "client-individual"),
                    ("activemq.subscriptionName", "d"),
                ],
                "",
            )
            .await,
        );
    }
    while frames.len() < 4 {
        frames.push(c.next().await);
    }
    let acks = frames
        .iter()
        .map(|f| {
            assert_eq!(f.command.as_str(), "MESSAGE", "{f:?}");
            f.header("ack").expect("ack header").to_owned()
        })
        .collect();
    (c, acks)
}

#[tokio::test]
async fn transacted_acks_are_one_store_commit_and_count_once_kept() {
    let recording = Recording::new();
    let (core, listener) = broker(&recording);
    let (mut c, acks) = four_delivered(&core, &listener).await;
    c.send("BEGIN", &[("transaction", "t")], "").await;
    for ack in &acks {
        c.send("ACK", &[("id", ack), ("transaction", "t")], "")
            .await;
    }
    recording.hold_when(is_queue_removal);
    c.send("COMMIT", &[("transaction", "t"), ("receipt", "c")], "")
        .await;
    assert!(c.next_within(Duration::from_millis(200)).await.is_none());
    let batches = recording.batches();
    let commit = batches
        .iter()
        .find(|b| b.iter().any(is_queue_removal))
        .expect("the transaction's commit");
    let count = |matches: fn(&Change) -> bool| commit.iter().filter(|c| matches(c)).count();
    assert_eq!(
        (count(is_queue_removal), count(is_session_removal)),
        (2, 2),
        "the queue's and the durable subscription's acknowledgements in one commit: {commit:?}"
    );
    let stats = core.queues.stats("q").expect("queue");
    assert_eq!(
        stats.counts.dequeued, 0,
        "not acknowledged before it is kept"
    );
    recording.release();
    assert_eq!(c.next().await.header("receipt-id"), Some("c"));
    assert_eq!(core.queues.stats("q").expect("queue").counts.dequeued, 2);
}

#[tokio::test]
async fn acks_whose_commit_fails_leave_the_messages_unacknowledged() {
    let recording = Recording::new();
    let (core, listener) = broker(&recording);
    let (mut c, acks) = four_delivered(&core, &listener).await;
    c.send("BEGIN", &[("transaction", "t")], "").await;
    for ack in &acks {
        c.send("ACK", &[("id", ack), ("transaction", "t")], "")
            .await;
    }
    recording.hold_when(is_queue_removal);
    c.send("COMMIT", &[("transaction", "t"), ("receipt", "c")], "")
        .await;
    assert!(c.next_within(Duration::from_millis(200)).await.is_none());
    recording.fail_held();
    let error = c.next().await;
    assert_eq!(error.command.as_str(), "ERROR", "{error:?}");
    assert!(
        c.next_within(Duration::from_secs(2)).await.is_none(),
        "closed"
    );
    // Both queue messages are back, redelivered; the durable subscription resends its two.
    let stats = core.queues.stats("q").expect("queue");
    assert_eq!((stats.depth, stats.counts.dequeued), (2, 0), "{stats:?}");
    let mut again = Client::connect(&core, &listener, &[("client-id", "sub")]).await;
    let mut redelivered = 0;
    for (id, destination) in [("q", "/queue/q"), ("d", "/topic/t")] {
        again
            .send(
                "SUBSCRIBE",
                &[
                    ("destination", destination),
                    ("id", id),
                    ("activemq.subscriptionName", "d"),
                ],
                "",
            )
            .await;
    }
    while let Some(f) = again.next_within(Duration::from_millis(500)).await {
        if f.command.as_str() == "MESSAGE" && f.header("redelivered") == Some("true") {
            redelivered += 1;
        }
    }
    assert_eq!(redelivered, 4);
}

#[tokio::test]
async fn an_ack_covered_by_an_earlier_cumulative_ack_of_the_transaction_changes_nothing() {
    let recording = Recording::new();
    let (core, listener) = broker(&recording);
    let mut producer = Client::connect(&core, &listener, &[]).await;
    for body in ["1", "2"] {
        producer
            .receipted(
                "SEND",
                &[("destination", "/queue/q"), ("persistent", "true")],
                body,
            )
            .await;
    }
    let mut c = Client::connect(&core, &listener, &[]).await;
    c.receipted(
        "SUBSCRIBE",
        &[("destination", "/queue/q"), ("id", "q"), ("ack", "client")],
        "",
    )
    .await;
    let first = c.next().await.header("ack").expect("ack").to_owned();
    let second = c.next().await.header("ack").expect("ack").to_owned();
    c.send("BEGIN", &[("transaction", "t")], "").await;
    c.send("ACK", &[("id", &second), ("transaction", "t")], "")
        .await;
    c.send("ACK", &[("id", &first), ("transaction", "t")], "")
        .await;
    c.receipted("COMMIT", &[("transaction", "t")], "").await;
    assert_eq!(core.queues.stats("q").expect("queue").counts.dequeued, 2);
}

#[tokio::test]
async fn abort_and_a_connection_ending_with_an_open_transaction_apply_nothing() {
    let recording = Recording::new();
    let (core, listener) = broker(&recording);
    let mut c = Client::connect(&core, &listener, &[]).await;
    begin_and_send(&mut c).await;
    c.receipted("ABORT", &[("transaction", "t")], "").await;
    begin_and_send(&mut c).await;
    c.receipted("DISCONNECT", &[], "").await;
    let mut d = Client::connect(&core, &listener, &[]).await;
    begin_and_send(&mut d).await;
    // Read in order behind the transaction's frames: they are all held once it is answered.
    d.receipted("BEGIN", &[("transaction", "other")], "").await;
    drop(d);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!recording.changes().iter().any(is_message));
    assert_eq!(depth(&core, "q"), 0);
}

/// A persistent SEND (topic with an offline durable subscription, and queue) whose store
/// failed: refused when the store kept nothing, "not confirmed" when it may still keep it
/// (a cluster store that did not answer in time), so a client does not take a message that
/// may be delivered for one that is gone.
#[tokio::test]
async fn a_send_whose_store_did_not_answer_is_not_confirmed_not_refused() {
    for (error, says) in [
        (
            DurabilityError::Unavailable("write failed".into()),
            &["message not stored", "refused"][..],
        ),
        (
            DurabilityError::Unconfirmed("no answer in time".into()),
            &["message not confirmed"][..],
        ),
    ] {
        for destination in ["/topic/t", "/queue/q"] {
            let recording = Recording::new();
            let (core, listener) = broker(&recording);
            offline_durable_subscription(&core, &listener).await;
            let mut c = Client::connect(&core, &listener, &[]).await;
            recording.refuse_when(is_message, Some(error.clone()));
            c.send(
                "SEND",
                &[
                    ("destination", destination),
                    ("persistent", "true"),
                    ("receipt", "s"),
                ],
                "m",
            )
            .await;
            let answer = c.next().await;
            assert_eq!(answer.command.as_str(), "ERROR", "{answer:?}");
            assert_eq!(answer.header("receipt-id"), Some("s"), "{answer:?}");
            let text = answer.header("message").unwrap_or_default().to_owned();
            assert!(
                says.iter().any(|s| text.contains(s)) && text.contains(&error.to_string()),
                "{destination}: {text}"
            );
            assert_eq!(
                text.contains("may still be kept"),
                error.outcome_unknown(),
                "{text}"
            );
        }
    }
}

/// Answers leave in frame order: a SEND whose store failed is answered by the ERROR (with its
/// `receipt-id`), and no frame after it gets a RECEIPT, though its own store went through (a
/// RECEIPT after an unanswered SEND would read as covering it).
#[tokio::test]
async fn no_receipt_follows_a_send_whose_store_failed() {
    // With a DISCONNECT behind the SENDs (the connection closes on it, settling them), and
    // without (it closes on the failure).
    for disconnect in [true, false] {
        let recording = Recording::new();
        let (core, listener) = broker(&recording);
        offline_durable_subscription(&core, &listener).await;
        let mut c = Client::connect(&core, &listener, &[]).await;
        recording.refuse_when(
            is_for_a_session,
            Some(DurabilityError::Unavailable("write failed".into())),
        );
        let mut frames = String::new();
        for (destination, receipt) in [("/topic/t", "a"), ("/queue/q", "b")] {
            frames.push_str(&format!(
                "SEND\ndestination:{destination}\npersistent:true\nreceipt:{receipt}\n\nm\0"
            ));
        }
        if disconnect {
            frames.push_str("DISCONNECT\nreceipt:bye\n\n\0");
        }
        // One write: both SENDs are read before the first one's store answers.
        c.stream.write_all(frames.as_bytes()).await.expect("write");
        let mut answers = Vec::new();
        while let Some(f) = c.next_within(Duration::from_secs(2)).await {
            answers.push((
                f.command.as_str().to_owned(),
                f.header("receipt-id").unwrap_or_default().to_owned(),
            ));
        }
        assert_eq!(
            answers,
            [("ERROR".to_owned(), "a".to_owned())],
            "disconnect: {disconnect}"
        );
    }
}
