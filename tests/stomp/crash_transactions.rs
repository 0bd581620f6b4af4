//! A STOMP transaction is all or nothing across a crash: the `ferromq` binary, with a store, is
//! killed with SIGKILL at a random moment after a COMMIT (within the time a COMMIT takes to be
//! receipted, measured first), restarted on the same store, and what the transaction did is
//! counted:
//!
//! - SEND rounds: a transaction of persistent SENDs, half to a queue and half to a topic with
//!   an offline durable subscription; after the restart the queue and the subscription hold
//!   none of them or all of them;
//! - ACK rounds: a transaction acknowledging messages of a queue and of a durable topic
//!   subscription (`client-individual`); after the restart all of them are left or none.
//!
//! A COMMIT whose RECEIPT left before the kill must have kept everything.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use rand::Rng;

use crate::client::StompClient;
use crate::support::wire::spawn_broker;
use crate::support::{free_port, BrokerXml};

/// Frames one transaction carries.
const FRAMES: usize = 1000;
/// Rounds of each kind.
const ROUNDS: usize = 20;
/// A marker sent after the restart: what is before it in a queue or subscription is what the
/// crash left.
const MARKER: &str = "marker";
/// The durable subscriber's client-id.
const SUBSCRIBER: &str = "tx-crash-sub";

/// A durable `ferromq` process on a store of its own, killed when dropped.
struct Broker {
    child: Child,
    config: PathBuf,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Broker {
    async fn start() -> Broker {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let config = dir.path().join("activemq.xml");
        BrokerXml::new()
            .name("tx-crash")
            .kahadb(&dir.path().join("kahadb"))
            .connector("stomp", &format!("stomp://127.0.0.1:{port}"))
            .write(&config);
        let broker = Broker {
            child: spawn_broker(&config),
            config,
            addr: ([127, 0, 0, 1], port).into(),
            _dir: dir,
        };
        broker.wait_up().await;
        broker
    }

    async fn wait_up(&self) {
        let give_up = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(self.addr).await.is_err() {
            assert!(Instant::now() < give_up, "broker did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn kill_and_restart(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
        self.child = spawn_broker(&self.config);
        self.wait_up().await;
    }

    async fn client(&self, headers: &[(&str, &str)]) -> StompClient {
        let mut c = StompClient::tcp(self.addr).await;
        c.connect(headers).await;
        c
    }
}

/// Send `frame` with a `receipt` and wait for its RECEIPT (frames before it are returned).
async fn receipted(
    c: &mut StompClient,
    command: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Vec<crate::client::Received> {
    let mut all = headers.to_vec();
    all.push(("receipt", "r"));
    c.send(command, &all, body).await;
    let mut before = Vec::new();
    loop {
        let f = c.recv().await;
        if f.command == "RECEIPT" && f.header("receipt-id") == Some("r") {
            return before;
        }
        assert_ne!(f.command, "ERROR", "{f:?}");
        before.push(f);
    }
}

/// Make durable subscription `name` on `topic` (offline once this returns).
async fn durable_subscription(broker: &Broker, topic: &str, name: &str) {
    let mut c = broker.client(&[("client-id", SUBSCRIBER)]).await;
    receipted(
        &mut c,
        "SUBSCRIBE",
        &[
            ("destination", topic),
            ("id", "d"),
            ("ack", "client-individual"),
            ("activemq.subscriptionName", name),
        ],
        "",
    )
    .await;
    receipted(&mut c, "DISCONNECT", &[], "").await;
}

/// How many messages queue `queue` and durable subscription `name` on `topic` hold: a marker
/// is sent to each after the messages already there, and everything before it is counted.
async fn held(broker: &Broker, queue: &str, topic: &str, name: &str) -> (usize, usize) {
    let mut c = broker.client(&[("client-id", SUBSCRIBER)]).await;
    let mut frames = receipted(
        &mut c,
        "SUBSCRIBE",
        &[("destination", queue), ("id", "q")],
        "",
    )
    .await;
    frames.extend(
        receipted(
            &mut c,
            "SUBSCRIBE",
            &[
                ("destination", topic),
                ("id", "d"),
                ("activemq.subscriptionName", name),
            ],
            "",
        )
        .await,
    );
    for destination in [queue, topic] {
        frames.extend(
            receipted(
                &mut c,
                "SEND",
                &[("destination", destination), ("persistent", "true")],
                MARKER,
            )
            .await,
        );
    }
    let (mut in_queue, mut in_subscription, mut markers) = (0, 0, 0);
    let mut frames = frames.into_iter();
    while markers < 2 {
        let f = match frames.next() {
            Some(f) => f,
            None => c
                .recv_within(Duration::from_secs(10))
                .await
                .expect("the markers arrive"),
        };
        if f.command != "MESSAGE" {
            continue;
        }
        if f.body_text() == MARKER {
            markers += 1;
        } else if f.header("subscription") == Some("q") {
            in_queue += 1;
        } else {
            in_subscription += 1;
        }
    }
    receipted(&mut c, "DISCONNECT", &[], "").await;
    (in_queue, in_subscription)
}

/// Whether a RECEIPT for the COMMIT reached the client before the broker died (what it sent
/// before it died is still readable).
async fn commit_receipted(c: &mut StompClient) -> bool {
    while let Some(f) = c.recv_within(Duration::from_millis(300)).await {
        if f.command == "RECEIPT" && f.header("receipt-id") == Some("commit") {
            return true;
        }
    }
    false
}

/// BEGIN and `FRAMES` persistent SENDs alternately to `queue` and `topic`, held by the broker
/// once this returns (the last one's RECEIPT came: a transacted frame is receipted when it
/// arrives).
async fn send_transaction(c: &mut StompClient, queue: &str, topic: &str) {
    c.send("BEGIN", &[("transaction", "t")], "").await;
    for i in 0..FRAMES - 1 {
        let destination = if i % 2 == 0 { queue } else { topic };
        c.send(
            "SEND",
            &[
                ("destination", destination),
                ("persistent", "true"),
                ("transaction", "t"),
            ],
            &format!("{i}"),
        )
        .await;
    }
    let last = if FRAMES % 2 == 1 { queue } else { topic };
    receipted(
        c,
        "SEND",
        &[
            ("destination", last),
            ("persistent", "true"),
            ("transaction", "t"),
        ],
        "last",
    )
    .await;
}

/// COMMIT transaction `t` (receipt `commit`), returning when it was sent.
async fn commit(c: &mut StompClient) -> Instant {
    c.send("COMMIT", &[("transaction", "t"), ("receipt", "commit")], "")
        .await;
    Instant::now()
}

/// Wait for the COMMIT's RECEIPT: how long after `sent` it came.
async fn commit_receipt(c: &mut StompClient, sent: Instant) -> Duration {
    loop {
        let f = c.recv().await;
        assert_ne!(f.command, "ERROR", "{f:?}");
        if f.header("receipt-id") == Some("commit") {
            return sent.elapsed();
        }
    }
}

/// A kill `window` x 1.5 at most after the COMMIT (past the end of the window too: a RECEIPT
/// must then mean everything was kept).
fn kill_delay(window: Duration) -> Duration {
    let us = u64::try_from(window.as_micros()).unwrap_or(u64::MAX).max(1);
    Duration::from_micros(rand::rng().random_range(0..us + us / 2))
}

/// Kill the broker `delay` after `sent` (none: wait for the COMMIT's RECEIPT and return how long
/// it took), restart it; whether the COMMIT was receipted, and the time it took when measured.
async fn crash_after_commit(
    broker: &mut Broker,
    c: &mut StompClient,
    sent: Instant,
    delay: Option<Duration>,
) -> (bool, Option<Duration>) {
    let Some(delay) = delay else {
        return (true, Some(commit_receipt(c, sent).await));
    };
    tokio::time::sleep_until((sent + delay).into()).await;
    broker.kill_and_restart().await;
    (commit_receipted(c).await, None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_transaction_of_sends_survives_a_crash_whole_or_not_at_all() {
    let mut broker = Broker::start().await;
    // Round 0 is not killed: it measures how long a COMMIT takes here.
    let mut window = None;
    let mut partial = Vec::new();
    for round in 0..=ROUNDS {
        let (queue, topic, name) = (
            format!("/queue/tx.send.{round}"),
            format!("/topic/tx.send.{round}"),
            format!("send{round}"),
        );
        durable_subscription(&broker, &topic, &name).await;
        let mut c = broker.client(&[]).await;
        send_transaction(&mut c, &queue, &topic).await;
        let delay = window.map(kill_delay);
        let sent = commit(&mut c).await;
        let (receipted, measured) = crash_after_commit(&mut broker, &mut c, sent, delay).await;
        window = window.or(measured);
        drop(c);
        let (in_queue, in_subscription) = held(&broker, &queue, &topic, &name).await;
        let kept = in_queue + in_subscription;
        eprintln!(
            "SEND round {round}: killed {delay:?} after COMMIT (window {window:?}), RECEIPT \
             {receipted}: {in_queue} in the queue + {in_subscription} in the subscription of \
             {FRAMES}"
        );
        // All of it, or none of it and no RECEIPT.
        if !(kept == FRAMES || kept == 0 && !receipted) {
            partial.push((round, in_queue, in_subscription, receipted));
        }
    }
    assert!(
        partial.is_empty(),
        "transactions kept in part (round, queue, subscription, receipted): {partial:?}"
    );
}

/// `FRAMES` persistent messages, alternately to `queue` and `topic`, kept once this returns.
async fn fill(broker: &Broker, queue: &str, topic: &str) {
    let mut producer = broker.client(&[]).await;
    for i in 0..FRAMES {
        let destination = if i % 2 == 0 { queue } else { topic };
        producer
            .send(
                "SEND",
                &[("destination", destination), ("persistent", "true")],
                &format!("{i}"),
            )
            .await;
    }
    // In order behind the SENDs: once it is receipted, they are all kept.
    receipted(&mut producer, "DISCONNECT", &[], "").await;
}

/// Subscribe to `queue` and durable subscription `name` on `topic` (`client-individual`) and
/// take `FRAMES` messages: their `ack` values.
async fn delivered(c: &mut StompClient, queue: &str, topic: &str, name: &str) -> Vec<String> {
    let prefetch = (FRAMES + 10).to_string();
    for (id, destination, durable) in [("q", queue, None), ("d", topic, Some(name))] {
        let mut headers = vec![
            ("destination", destination),
            ("id", id),
            ("ack", "client-individual"),
            ("activemq.prefetchSize", prefetch.as_str()),
        ];
        if let Some(name) = durable {
            headers.push(("activemq.subscriptionName", name));
        }
        c.send("SUBSCRIBE", &headers, "").await;
    }
    let mut acks = Vec::new();
    while acks.len() < FRAMES {
        let f = c.recv().await;
        assert_eq!(f.command, "MESSAGE", "{f:?}");
        acks.push(f.header("ack").expect("an ack header").to_owned());
    }
    acks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_transaction_of_acks_survives_a_crash_whole_or_not_at_all() {
    let mut broker = Broker::start().await;
    // Round 0 is not killed: it measures how long a COMMIT takes here.
    let mut window = None;
    let mut partial = Vec::new();
    for round in 0..=ROUNDS {
        let (queue, topic, name) = (
            format!("/queue/tx.ack.{round}"),
            format!("/topic/tx.ack.{round}"),
            format!("ack{round}"),
        );
        durable_subscription(&broker, &topic, &name).await;
        fill(&broker, &queue, &topic).await;
        let mut c = broker.client(&[("client-id", SUBSCRIBER)]).await;
        let acks = delivered(&mut c, &queue, &topic, &name).await;
        c.send("BEGIN", &[("transaction", "t")], "").await;
        let (last, rest) = acks.split_last().expect("acks");
        for ack in rest {
            c.send("ACK", &[("id", ack), ("transaction", "t")], "")
                .await;
        }
        receipted(&mut c, "ACK", &[("id", last), ("transaction", "t")], "").await;
        let delay = window.map(kill_delay);
        let sent = commit(&mut c).await;
        let (receipted, measured) = crash_after_commit(&mut broker, &mut c, sent, delay).await;
        window = window.or(measured);
        if delay.is_none() {
            receipted_disconnect(&mut c).await;
        }
        drop(c);
        let (in_queue, in_subscription) = held(&broker, &queue, &topic, &name).await;
        let left = in_queue + in_subscription;
        eprintln!(
            "ACK round {round}: killed {delay:?} after COMMIT (window {window:?}), RECEIPT \
             {receipted}: {in_queue} left in the queue + {in_subscription} in the subscription \
             of {FRAMES}"
        );
        // All acknowledged, or none of them and no RECEIPT.
        if !(left == 0 || left == FRAMES && !receipted) {
            partial.push((round, in_queue, in_subscription, receipted));
        }
    }
    assert!(
        partial.is_empty(),
        "acknowledgements kept in part (round, queue, subscription, receipted): {partial:?}"
    );
}

async fn receipted_disconnect(c: &mut StompClient) {
    receipted(c, "DISCONNECT", &[], "").await;
}
