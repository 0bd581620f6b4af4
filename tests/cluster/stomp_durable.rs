//! STOMP durable topic subscriptions (`activemq.subscriptionName` + CONNECT `client-id`)
//! across nodes, with real nats-servers, ferromq processes and a raw STOMP client: a
//! subscription resumed on another node gets what was published meanwhile, in order, once;
//! what its consumer had not acknowledged comes back first with `redelivered:true`; the node
//! holding it SIGKILLed loses nothing persisted after the last ACK; UNSUBSCRIBE with the name
//! removes it wherever it is held; a second consumer while the first is connected gets
//! ActiveMQ's ERROR; without the store's quorum the holder is sent away and a SUBSCRIBE gets an
//! ERROR, no RECEIPT.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::rig::Rig;
use super::stomp_queues::stomp_client::{Received, StompClient};
use super::stomp_queues::{ack, send_ok, send_receipted, stomp_rig, subscribe};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stomp_durable_subscriptions_across_nodes() {
    let Some((mut rig, stomp)) = stomp_rig(3).await else {
        return;
    };
    resumed_on_another_node_in_order_once(&stomp).await;
    unacknowledged_come_back_redelivered_on_another_node(&stomp).await;
    unsubscribe_removes_it_wherever_it_is_held(&stomp).await;
    a_second_consumer_is_refused_while_the_first_is_connected(&stomp).await;
    the_holding_node_killed_loses_nothing_after_the_last_ack(&mut rig, &stomp).await;
    no_subscription_without_the_store(&mut rig, &stomp).await;
}

/// A connection with CONNECT `client-id`.
pub(super) async fn client(addr: SocketAddr, client_id: &str) -> StompClient {
    let mut c = StompClient::tcp(addr).await;
    c.connect(&[("client-id", client_id)]).await;
    c
}

/// A durable SUBSCRIBE (`id` "s") with a RECEIPT, expected.
pub(super) async fn subscribe_durable(c: &mut StompClient, topic: &str, name: &str, ack: &str) {
    subscribe(
        c,
        topic,
        "s",
        &[("activemq.subscriptionName", name), ("ack", ack)],
    )
    .await;
}

/// DISCONNECT with a RECEIPT, and the close.
pub(super) async fn disconnect(mut c: StompClient) {
    c.send("DISCONNECT", &[("receipt", "bye")], "").await;
    let f = c.recv().await;
    assert_eq!(f.command, "RECEIPT", "{f:?}");
    c.expect_closed_within(Duration::from_secs(5)).await;
}

/// MESSAGE frames within `within`, stopping once `expected` came; `acknowledge`: each ACKed.
pub(super) async fn messages(
    c: &mut StompClient,
    expected: usize,
    within: Duration,
    acknowledge: bool,
) -> Vec<Received> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    while got.len() < expected {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(f) = c.recv_within(left).await else {
            break;
        };
        assert_eq!(f.command, "MESSAGE", "{f:?}");
        if acknowledge {
            ack(c, &f).await;
        }
        got.push(f);
    }
    got
}

pub(super) fn bodies(frames: &[Received]) -> Vec<String> {
    frames.iter().map(Received::body_text).collect()
}

/// An ERROR (and no RECEIPT) for a frame; its `message` header.
async fn error_of(c: &mut StompClient) -> String {
    let f = c.recv().await;
    assert_eq!(f.command, "ERROR", "{f:?}");
    f.header("message").unwrap_or_default().to_owned()
}

async fn resumed_on_another_node_in_order_once(stomp: &[SocketAddr]) {
    let topic = "/topic/dur.one";
    let mut a = client(stomp[0], "dur-1").await;
    subscribe_durable(&mut a, topic, "one", "auto").await;
    let mut producer = client(stomp[1], "producer-1").await;
    send_ok(&mut producer, topic, "one-first").await;
    let first = messages(&mut a, 1, Duration::from_secs(10), false).await;
    assert_eq!(bodies(&first), ["one-first"]);
    disconnect(a).await;
    // Published on node 1 while the subscriber is away (persistent SENDs, each RECEIPTed).
    let expected: Vec<String> = (0..20).map(|n| format!("one-{n}")).collect();
    for body in &expected {
        send_ok(&mut producer, topic, body).await;
    }
    let mut c = client(stomp[2], "dur-1").await;
    subscribe_durable(&mut c, topic, "one", "auto").await;
    let got = messages(&mut c, expected.len(), Duration::from_secs(15), false).await;
    let more = messages(&mut c, usize::MAX, Duration::from_secs(1), false).await;
    assert_eq!(bodies(&got), expected, "all of them, in order");
    assert!(more.is_empty(), "none twice: {:?}", bodies(&more));
    assert!(got.iter().all(|f| f.header("redelivered").is_none()));
    disconnect(c).await;
}

async fn unacknowledged_come_back_redelivered_on_another_node(stomp: &[SocketAddr]) {
    let topic = "/topic/dur.two";
    let mut a = client(stomp[1], "dur-2").await;
    subscribe_durable(&mut a, topic, "two", "client-individual").await;
    let mut producer = client(stomp[0], "producer-2").await;
    for n in 0..5 {
        send_ok(&mut producer, topic, &format!("two-{n}")).await;
    }
    let held = messages(&mut a, 5, Duration::from_secs(10), false).await;
    assert_eq!(held.len(), 5);
    for f in &held[..2] {
        ack(&mut a, f).await;
    }
    disconnect(a).await;
    let mut c = client(stomp[2], "dur-2").await;
    subscribe_durable(&mut c, topic, "two", "client-individual").await;
    let again = messages(&mut c, 3, Duration::from_secs(10), true).await;
    assert_eq!(bodies(&again), ["two-2", "two-3", "two-4"]);
    for f in &again {
        assert_eq!(f.header("redelivered"), Some("true"), "{f:?}");
    }
    send_ok(&mut producer, topic, "two-5").await;
    let new = messages(&mut c, 1, Duration::from_secs(10), true).await;
    assert_eq!(bodies(&new), ["two-5"]);
    assert_eq!(new[0].header("redelivered"), None, "{:?}", new[0]);
    let more = messages(&mut c, usize::MAX, Duration::from_secs(1), true).await;
    assert!(
        more.is_empty(),
        "acknowledged ones not again: {:?}",
        bodies(&more)
    );
    disconnect(c).await;
}

/// UNSUBSCRIBE `id` "s" with the subscription's name, RECEIPT expected.
async fn unsubscribe_durable(c: &mut StompClient, name: &str) {
    c.send(
        "UNSUBSCRIBE",
        &[
            ("id", "s"),
            ("activemq.subscriptionName", name),
            ("receipt", "unsub"),
        ],
        "",
    )
    .await;
    let f = c.recv().await;
    assert_eq!(
        (f.command.as_str(), f.header("receipt-id")),
        ("RECEIPT", Some("unsub")),
        "{f:?}"
    );
}

async fn unsubscribe_removes_it_wherever_it_is_held(stomp: &[SocketAddr]) {
    let topic = "/topic/dur.four";
    let mut producer = client(stomp[1], "producer-4").await;
    // Held by this connection: UNSUBSCRIBE ends it.
    let mut a = client(stomp[0], "dur-4").await;
    subscribe_durable(&mut a, topic, "four", "auto").await;
    send_ok(&mut producer, topic, "four-a").await;
    assert_eq!(
        bodies(&messages(&mut a, 1, Duration::from_secs(10), false).await),
        ["four-a"]
    );
    unsubscribe_durable(&mut a, "four").await;
    disconnect(a).await;
    for n in 0..3 {
        send_ok(&mut producer, topic, &format!("four-gone-{n}")).await;
    }
    let mut c = client(stomp[2], "dur-4").await;
    subscribe_durable(&mut c, topic, "four", "auto").await;
    let stale = messages(&mut c, usize::MAX, Duration::from_secs(2), false).await;
    assert!(stale.is_empty(), "a new subscription: {:?}", bodies(&stale));
    send_ok(&mut producer, topic, "four-new").await;
    assert_eq!(
        bodies(&messages(&mut c, 1, Duration::from_secs(10), false).await),
        ["four-new"]
    );
    // Offline on node 2: removed from node 1 without being subscribed there.
    disconnect(c).await;
    let mut x = client(stomp[1], "dur-4").await;
    unsubscribe_durable(&mut x, "four").await;
    // Removing it again: ActiveMQ's error.
    x.send(
        "UNSUBSCRIBE",
        &[("id", "s"), ("activemq.subscriptionName", "four")],
        "",
    )
    .await;
    let message = error_of(&mut x).await;
    assert!(
        message.contains("No durable subscription exists for clientID: dur-4"),
        "{message}"
    );
    for n in 0..3 {
        send_ok(&mut producer, topic, &format!("four-offline-{n}")).await;
    }
    let mut y = client(stomp[0], "dur-4").await;
    subscribe_durable(&mut y, topic, "four", "auto").await;
    let stale = messages(&mut y, usize::MAX, Duration::from_secs(2), false).await;
    assert!(
        stale.is_empty(),
        "removed while offline: {:?}",
        bodies(&stale)
    );
    disconnect(y).await;
}

async fn a_second_consumer_is_refused_while_the_first_is_connected(stomp: &[SocketAddr]) {
    let topic = "/topic/dur.five";
    let mut a = client(stomp[0], "dur-5").await;
    subscribe_durable(&mut a, topic, "five", "auto").await;
    let mut b = client(stomp[1], "dur-5").await;
    b.send(
        "SUBSCRIBE",
        &[
            ("destination", topic),
            ("id", "s"),
            ("activemq.subscriptionName", "five"),
            ("receipt", "second"),
        ],
        "",
    )
    .await;
    let message = error_of(&mut b).await;
    assert_eq!(
        message,
        "Durable consumer is in use for client: dur-5 and subscriptionName: five"
    );
    b.expect_closed_within(Duration::from_secs(5)).await;
    // The first consumer keeps it.
    let mut producer = client(stomp[2], "producer-5").await;
    send_ok(&mut producer, topic, "five-1").await;
    assert_eq!(
        bodies(&messages(&mut a, 1, Duration::from_secs(10), false).await),
        ["five-1"]
    );
    // Once it is gone, another node's consumer takes it, with what came meanwhile.
    disconnect(a).await;
    send_ok(&mut producer, topic, "five-2").await;
    let mut c = client(stomp[1], "dur-5").await;
    subscribe_durable(&mut c, topic, "five", "auto").await;
    assert_eq!(
        bodies(&messages(&mut c, 1, Duration::from_secs(10), false).await),
        ["five-2"]
    );
    disconnect(c).await;
}

async fn the_holding_node_killed_loses_nothing_after_the_last_ack(
    rig: &mut Rig,
    stomp: &[SocketAddr],
) {
    let topic = "/topic/dur.three";
    let mut a = client(stomp[0], "dur-3").await;
    subscribe_durable(&mut a, topic, "three", "client-individual").await;
    let mut producer = client(stomp[1], "producer-3").await;
    for n in 0..10 {
        send_ok(&mut producer, topic, &format!("three-{n:02}")).await;
    }
    let acked = messages(&mut a, 10, Duration::from_secs(10), true).await;
    assert_eq!(acked.len(), 10);
    // Delivered and never acknowledged.
    for n in 10..15 {
        send_ok(&mut producer, topic, &format!("three-{n:02}")).await;
    }
    let unacked = messages(&mut a, 5, Duration::from_secs(10), false).await;
    assert_eq!(unacked.len(), 5);
    rig.nodes[0].kill();
    for n in 15..30 {
        send_ok(&mut producer, topic, &format!("three-{n:02}")).await;
    }
    let mut c = client(stomp[2], "dur-3").await;
    subscribe_durable(&mut c, topic, "three", "client-individual").await;
    let got = messages(&mut c, 30, Duration::from_secs(15), true).await;
    let got = bodies(&got);
    let after_last_ack: Vec<String> = (10..30).map(|n| format!("three-{n:02}")).collect();
    let missing: Vec<&String> = after_last_ack.iter().filter(|b| !got.contains(b)).collect();
    assert!(missing.is_empty(), "lost: {missing:?} (got {got:?})");
    let mut sorted = got.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(got, sorted, "in order, none twice");
    let again = got.len() - after_last_ack.len();
    eprintln!(
        "after SIGKILL: {} delivered, {again} acknowledged before it delivered again",
        got.len()
    );
}

async fn no_subscription_without_the_store(rig: &mut Rig, stomp: &[SocketAddr]) {
    let topic = "/topic/dur.six";
    let mut holder = client(stomp[2], "dur-6").await;
    subscribe_durable(&mut holder, topic, "six", "auto").await;
    let mut producer = client(stomp[1], "producer-6").await;
    assert!(send_receipted(&mut producer, topic, "six-0", Duration::from_secs(5)).await);
    tokio::task::block_in_place(|| {
        rig.nats.stop(1);
        rig.nats.stop(2);
    });
    // The holder is sent away once its node sees the quorum lost (quorumLossTimeout 1.5 s).
    let deadline = Instant::now() + Duration::from_secs(15);
    let error = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let f = holder.recv_within(left).await.expect("an ERROR in time");
        if f.command == "ERROR" {
            break f;
        }
        assert_eq!(f.command, "MESSAGE", "{f:?}");
    };
    let message = error.header("message").unwrap_or_default();
    assert!(
        message.contains("dur-6") && message.contains("quorum"),
        "{message}"
    );
    let mut late = client(stomp[1], "dur-7").await;
    late.send(
        "SUBSCRIBE",
        &[
            ("destination", topic),
            ("id", "s"),
            ("activemq.subscriptionName", "seven"),
            ("receipt", "kept?"),
        ],
        "",
    )
    .await;
    let f = late
        .recv_within(Duration::from_secs(10))
        .await
        .expect("an answer");
    assert_eq!(f.command, "ERROR", "no RECEIPT without the store: {f:?}");
}
