//! What a cluster node cannot carry over NATS refused to STOMP clients at once with an
//! ERROR, as to MQTT clients: a destination whose NATS subject would pass the servers'
//! control line (SUBSCRIBE and SEND, topics and queues; nothing reaches NATS, the node's
//! connection stays up), and a SEND above NATS's `max_payload` less the frame around a
//! message (persistent or not, topic or queue: no RECEIPT, no local delivery, no store
//! attempt held for `storeTimeout`), refused by its `content-length` or the body read so far
//! before the body is read. A queue or a durable topic subscription whose dead-letter queue's
//! name would pass the subjects' bound is refused too.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::stomp_queues::stomp_client::{Received, StompClient};
use super::stomp_queues::{stomp_rig, stomp_rig_with, subscribe};

/// Sooner than `storeTimeout` (5 s), which a store attempt would have waited.
const AT_ONCE: Duration = Duration::from_secs(2);

async fn connected(addr: SocketAddr) -> StompClient {
    let mut c = StompClient::tcp(addr).await;
    c.connect(&[]).await;
    c
}

/// `command` to `destination` (headers `extra`, a receipt) on a new connection: the ERROR
/// that comes at once, no RECEIPT.
async fn refused_at_once(
    addr: SocketAddr,
    command: &str,
    destination: &str,
    extra: &[(&str, &str)],
    body: &str,
) -> Received {
    let mut c = connected(addr).await;
    let mut headers = vec![("destination", destination), ("receipt", "r")];
    if command == "SUBSCRIBE" {
        headers.push(("id", "s"));
    }
    headers.extend_from_slice(extra);
    let started = Instant::now();
    c.send(command, &headers, body).await;
    let f = c.recv_within(AT_ONCE).await;
    let f = f.unwrap_or_else(|| panic!("no answer to {command} within {AT_ONCE:?}"));
    assert_eq!(f.command, "ERROR", "{command} {extra:?}: {f:?}");
    assert!(started.elapsed() < AT_ONCE, "{:?}", started.elapsed());
    f
}

/// Non-persistent `ping` SENDs from `from` until `to` (subscribed to `destination`) gets
/// one: the interest crossed the cluster.
async fn cross(from: &mut StompClient, to: &mut StompClient, destination: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        from.send("SEND", &[("destination", destination)], "ping")
            .await;
        if let Some(f) = to.recv_within(Duration::from_millis(300)).await {
            assert_eq!(f.command, "MESSAGE", "{f:?}");
            return;
        }
    }
    panic!("no message to {destination} crossed the cluster");
}

/// MESSAGE frames `c` gets within `within`.
async fn drain(c: &mut StompClient, within: Duration) -> Vec<Received> {
    let mut got = Vec::new();
    while let Some(f) = c.recv_within(within).await {
        got.push(f);
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stomp_refuses_what_nats_cannot_carry() {
    let Some((_rig, stomp)) = stomp_rig(2).await else {
        return;
    };
    destinations_too_long_for_nats_subjects(&stomp).await;
    messages_above_the_cluster_cap(&stomp).await;
    bodies_above_the_cluster_cap_refused_before_they_are_read(&stomp).await;
}

async fn destinations_too_long_for_nats_subjects(stomp: &[SocketAddr]) {
    let spaces = " ".repeat(2000);
    let queue = format!("/queue/long{spaces}");
    let topic = format!("/topic/{spaces}");
    for destination in [&queue, &topic] {
        for command in ["SUBSCRIBE", "SEND"] {
            let f = refused_at_once(stomp[0], command, destination, &[], "x").await;
            let message = f.header("message").unwrap_or_default();
            // The ERROR names the limit and why spaces count three times.
            assert!(
                message.contains("too long for the cluster's NATS subjects")
                    && message.contains("above the 3584 bytes a subject may take")
                    && message.contains("takes three"),
                "{command} {}: {f:?}",
                &destination[..10]
            );
        }
    }
    // A queue name that just fits, with ActiveMQ's shared `ActiveMQ.DLQ`: served.
    let just_fits = format!("/queue/dlq{}", " ".repeat(1_190));
    let mut c = connected(stomp[0]).await;
    c.send(
        "SEND",
        &[("destination", just_fits.as_str()), ("receipt", "fits")],
        "kept",
    )
    .await;
    let f = c.recv_within(Duration::from_secs(10)).await;
    assert_eq!(f.map(|f| f.command), Some("RECEIPT".to_owned()));
    // The node goes on: its NATS connection carries a message from the other node.
    let mut sub = connected(stomp[0]).await;
    subscribe(&mut sub, "/topic/after.long", "a", &[]).await;
    let mut producer = connected(stomp[1]).await;
    cross(&mut producer, &mut sub, "/topic/after.long").await;
}

async fn messages_above_the_cluster_cap(stomp: &[SocketAddr]) {
    // nats-server's default max_payload (1 MiB) is the cap, well under maxDataLength.
    let big = "b".repeat((1 << 20) + 1);
    let destination = "/topic/big";
    let mut local = connected(stomp[0]).await;
    subscribe(&mut local, destination, "l", &[]).await;
    let mut remote = connected(stomp[1]).await;
    subscribe(&mut remote, destination, "r", &[]).await;
    let mut producer = connected(stomp[0]).await;
    cross(&mut producer, &mut remote, destination).await;
    drain(&mut local, Duration::from_millis(300)).await;
    for persistent in ["true", "false"] {
        let f = refused_at_once(
            stomp[0],
            "SEND",
            destination,
            &[("persistent", persistent)],
            &big,
        )
        .await;
        let message = f.header("message").unwrap_or_default();
        assert!(message.contains("max_payload"), "{f:?}");
    }
    let f = refused_at_once(stomp[0], "SEND", "/queue/big", &[], &big).await;
    assert!(f.header("message").is_some(), "{f:?}");
    // Not delivered here either (no partial delivery).
    let got = drain(&mut local, Duration::from_millis(500)).await;
    assert!(
        got.iter().all(|f| f.body.len() < 1 << 20),
        "a refused SEND was delivered"
    );
    // And a message after them goes through as before.
    producer
        .send(
            "SEND",
            &[
                ("destination", destination),
                ("persistent", "true"),
                ("receipt", "ok"),
            ],
            "after",
        )
        .await;
    let f = producer.recv_within(Duration::from_secs(10)).await;
    assert_eq!(f.map(|f| f.command), Some("RECEIPT".to_owned()));
    let got = drain(&mut remote, Duration::from_secs(2)).await;
    assert!(
        got.iter().any(|f| f.body_text() == "after"),
        "{:?}",
        got.iter().map(Received::body_text).collect::<Vec<_>>()
    );
}

/// Every queue's dead letters to a queue of its own (`ActiveMQ.DLQ.Queue.` + its name).
const INDIVIDUAL_DLQ: &str = "<destinationPolicy><policyMap><policyEntries>\
     <policyEntry queue=\">\"><deadLetterStrategy><individualDeadLetterStrategy/>\
     </deadLetterStrategy></policyEntry></policyEntries></policyMap></destinationPolicy>";

/// A queue whose own name fits NATS subjects but whose dead-letter queue's name
/// (`individualDeadLetterStrategy`: `ActiveMQ.DLQ.Queue.` + the name, 25 bytes more as a
/// subject) would not is refused at SEND and SUBSCRIBE with an ERROR that says why: a message
/// NACKed there could never be dead-lettered. A queue 30 bytes shorter is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stomp_refuses_a_queue_whose_dead_letter_queue_is_too_long() {
    let Some((_rig, stomp)) = stomp_rig_with(1, INDIVIDUAL_DLQ).await else {
        return;
    };
    // As a subject: 9 bytes of prefix, "dlq", 3 bytes per space: 3,582 of 3,584 bytes.
    let just_fits = format!("/queue/dlq{}", " ".repeat(1_190));
    for command in ["SEND", "SUBSCRIBE"] {
        let f = refused_at_once(stomp[0], command, &just_fits, &[], "x").await;
        let message = f.header("message").unwrap_or_default();
        assert!(
            message.contains("dead-letter queue")
                && message.contains("above the 3584 bytes a subject may take"),
            "{command}: {f:?}"
        );
    }
    // Ten spaces fewer: the dead-letter queue fits too.
    let shorter = format!("/queue/dlq{}", " ".repeat(1_180));
    let mut c = connected(stomp[0]).await;
    c.send(
        "SEND",
        &[
            ("destination", shorter.as_str()),
            ("persistent", "true"),
            ("receipt", "ok"),
        ],
        "kept",
    )
    .await;
    let f = c.recv_within(Duration::from_secs(10)).await;
    assert_eq!(f.map(|f| f.command), Some("RECEIPT".to_owned()));
}

/// Every topic's dead letters to a queue of its own per durable subscriber
/// (`ActiveMQ.DLQ.Topic.` + the topic + `.` + `client-id:subscriptionName`).
const PER_SUBSCRIBER_DLQ: &str = "<destinationPolicy><policyMap><policyEntries>\
     <policyEntry topic=\">\"><deadLetterStrategy><individualDeadLetterStrategy \
     destinationPerDurableSubscriber=\"true\"/></deadLetterStrategy></policyEntry>\
     </policyEntries></policyMap></destinationPolicy>";

/// A durable topic SUBSCRIBE whose topic fits NATS subjects but whose dead-letter queue's name
/// (the topic, and with `destinationPerDurableSubscriber` the client id and subscription name
/// too) would not is refused with an ERROR that says why, as a queue's is: a message NACKed
/// there could never be dead-lettered. The same topic with a short subscription name is
/// served, and a NACK there is dead-lettered to its queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stomp_refuses_a_durable_subscription_whose_dead_letter_queue_is_too_long() {
    let Some((_rig, stomp)) = stomp_rig_with(1, PER_SUBSCRIBER_DLQ).await else {
        return;
    };
    let durable = |name: &'static str| [("activemq.subscriptionName", name), ("ack", "client")];
    // As a subject: 9 bytes of prefix, "dlq", 3 bytes per space: 3,582 of 3,584 bytes; its
    // dead-letter queue 25 bytes more for the prefix alone.
    let long_topic = format!("/topic/dlq{}", " ".repeat(1_190));
    // A short topic, and a subscription name of 1,200 spaces: 3,600 bytes as a subject.
    let long_name: &'static str = " ".repeat(1_200).leak();
    for (topic, name) in [(long_topic.as_str(), "s"), ("/topic/dlq", long_name)] {
        let mut c = StompClient::tcp(stomp[0]).await;
        c.connect(&[("client-id", "c")]).await;
        let started = Instant::now();
        c.send(
            "SUBSCRIBE",
            &[
                &[("destination", topic), ("id", "s"), ("receipt", "r")][..],
                &durable(name)[..],
            ]
            .concat(),
            "",
        )
        .await;
        let f = c.recv_within(AT_ONCE).await;
        let f = f.unwrap_or_else(|| panic!("no answer to the SUBSCRIBE within {AT_ONCE:?}"));
        assert!(started.elapsed() < AT_ONCE, "{:?}", started.elapsed());
        let message = f.header("message").unwrap_or_default();
        assert!(
            f.command == "ERROR"
                && f.header("receipt-id") == Some("r")
                && message.contains("dead-letter queue of this durable subscription")
                && message.contains("above the 3584 bytes a subject may take"),
            "topic of {} bytes, name of {} bytes: {f:?}",
            topic.len(),
            name.len()
        );
    }
    // A short name: served, and its NACKed message reaches its dead-letter queue.
    let mut sub = StompClient::tcp(stomp[0]).await;
    sub.connect(&[("client-id", "c")]).await;
    subscribe(&mut sub, "/topic/dlq", "s", &durable("ok")).await;
    let mut producer = connected(stomp[0]).await;
    producer
        .send(
            "SEND",
            &[
                ("destination", "/topic/dlq"),
                ("persistent", "true"),
                ("receipt", "sent"),
            ],
            "dead",
        )
        .await;
    let f = producer.recv_within(Duration::from_secs(10)).await;
    assert_eq!(f.map(|f| f.command), Some("RECEIPT".to_owned()));
    let m = sub.recv_within(Duration::from_secs(10)).await;
    let m = m.expect("the durable subscriber's message");
    assert_eq!(m.command, "MESSAGE", "{m:?}");
    let ack = m.header("ack").unwrap_or_default().to_owned();
    sub.send("NACK", &[("id", ack.as_str()), ("receipt", "nacked")], "")
        .await;
    let f = sub.recv_within(Duration::from_secs(10)).await;
    assert_eq!(f.map(|f| f.command), Some("RECEIPT".to_owned()));
    let mut dlq = connected(stomp[0]).await;
    subscribe(&mut dlq, "/queue/ActiveMQ.DLQ.Topic.dlq.c:ok", "d", &[]).await;
    let m = dlq.recv_within(Duration::from_secs(10)).await;
    assert_eq!(m.map(|m| m.body_text()), Some("dead".to_owned()));
    a_wildcard_subscriptions_nack_whose_dead_letter_queue_is_too_long(&stomp).await;
}

/// A wildcard durable subscription passes its SUBSCRIBE (checked as written), but a message on
/// a topic long enough that its dead-letter queue would not fit NATS subjects (the topic itself
/// fits) is refused at its NACK with an ERROR, nothing sent to NATS.
async fn a_wildcard_subscriptions_nack_whose_dead_letter_queue_is_too_long(stomp: &[SocketAddr]) {
    let mut sub = StompClient::tcp(stomp[0]).await;
    sub.connect(&[("client-id", "w")]).await;
    let durable = [("activemq.subscriptionName", "ok"), ("ack", "client")];
    subscribe(&mut sub, "/topic/wild.>", "s", &durable).await;
    // As a subject, the topic takes 3,569 of 3,584 bytes; its dead-letter queue 36 more.
    let topic = format!("/topic/wild.{}", " ".repeat(1_185));
    let mut producer = connected(stomp[0]).await;
    producer
        .send(
            "SEND",
            &[
                ("destination", topic.as_str()),
                ("persistent", "true"),
                ("receipt", "sent"),
            ],
            "long",
        )
        .await;
    let f = producer.recv_within(Duration::from_secs(10)).await;
    assert_eq!(f.map(|f| f.command), Some("RECEIPT".to_owned()));
    let m = sub.recv_within(Duration::from_secs(10)).await;
    let m = m.expect("the wildcard subscriber's message");
    let ack = m.header("ack").unwrap_or_default().to_owned();
    sub.send("NACK", &[("id", ack.as_str()), ("receipt", "nacked")], "")
        .await;
    let f = sub.recv_within(AT_ONCE).await;
    let f = f.unwrap_or_else(|| panic!("no answer to the NACK within {AT_ONCE:?}"));
    let message = f.header("message").unwrap_or_default();
    assert!(
        f.command == "ERROR"
            && message.contains("could not be dead-lettered")
            && message.contains("above the 3584 bytes a subject may take"),
        "{f:?}"
    );
}

/// A SEND whose `content-length` passes the cap gets its ERROR at once, before its body is
/// sent (the node does not buffer up to `transport.maxDataLength`, 100 MiB); one without
/// `content-length` as soon as the body read so far passes it, without waiting for its NUL. A
/// local temporary queue's messages never cross NATS: not capped.
async fn bodies_above_the_cluster_cap_refused_before_they_are_read(stomp: &[SocketAddr]) {
    for destination in ["/queue/big", "/topic/big"] {
        let mut c = connected(stomp[0]).await;
        let started = Instant::now();
        // 50 MiB announced, 3 bytes sent.
        let head =
            format!("SEND\ndestination:{destination}\ncontent-length:52428800\nreceipt:r\n\nabc");
        c.send_raw(head.as_bytes()).await;
        let f = c.recv_within(AT_ONCE).await;
        let f = f.unwrap_or_else(|| panic!("{destination}: no ERROR within {AT_ONCE:?}"));
        assert!(started.elapsed() < AT_ONCE, "{:?}", started.elapsed());
        let message = f.header("message").unwrap_or_default();
        assert!(
            f.command == "ERROR"
                && f.header("receipt-id") == Some("r")
                && message.contains("52428800 bytes (its content-length)")
                && message.contains("max_payload"),
            "{destination}: {f:?}"
        );
        c.expect_closed_within(AT_ONCE).await;
    }
    // No content-length: 1 MiB of body and no NUL yet.
    let mut c = connected(stomp[0]).await;
    c.send_raw(b"SEND\ndestination:/queue/big\n\n").await;
    c.send_raw(&vec![b'b'; 1 << 20]).await;
    let f = c.recv_within(AT_ONCE).await;
    let f = f.unwrap_or_else(|| panic!("no ERROR within {AT_ONCE:?} of a body without its NUL"));
    let message = f.header("message").unwrap_or_default();
    assert!(
        f.command == "ERROR"
            && message.contains("(read so far)")
            && message.contains("max_payload"),
        "{f:?}"
    );
    // This connection's own temporary queue keeps a message above the cap.
    let mut c = connected(stomp[0]).await;
    let big = "t".repeat((1 << 20) + 1);
    c.send(
        "SEND",
        &[("destination", "/temp-queue/big"), ("receipt", "temp")],
        &big,
    )
    .await;
    let f = c.recv_within(Duration::from_secs(10)).await;
    assert_eq!(f.map(|f| f.command), Some("RECEIPT".to_owned()));
}
