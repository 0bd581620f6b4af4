//! STOMP transactions are all or nothing: a frame inside one that is refused fails when it
//! arrives (the connection closes, the transaction is dropped whole); a COMMIT is admitted
//! against `memoryUsage` whole, held or refused whole, its RECEIPT after every message it
//! carried; a SEND's RECEIPT inside a transaction leaves at once; a NACK cannot be transacted.

use std::time::Duration;

use ferromq::protocol::{Packet, QoS};

use crate::client::StompClient;
use crate::support::{ack, RawClient};

/// `memoryUsage` of 8 kb, with `systemUsage` attributes `attrs`.
fn tiny_memory(attrs: &str) -> String {
    format!(
        r#"<systemUsage><systemUsage {attrs}>
             <memoryUsage><memoryUsage limit="8 kb"/></memoryUsage>
           </systemUsage></systemUsage>"#
    )
}

/// A persistent MQTT session "sub" on `d/#` at QoS 1, offline: what reaches it stays in memory.
async fn offline_subscriber(env: &crate::Env) {
    let (mut sub, _) = RawClient::connected(env.mqtt(), "sub", false).await;
    sub.subscribe(1, &[("d/#", QoS::AtLeastOnce)]).await;
    sub.send(Packet::Disconnect(ferromq::protocol::Disconnect {
        reason: 0,
        properties: None,
    }))
    .await;
    sub.expect_closed().await;
}

/// Reconnect "sub" and take its messages (acknowledging each) until none comes for `quiet`.
async fn drain(env: &crate::Env, quiet: Duration) -> (Vec<String>, RawClient) {
    let (mut sub, _) = RawClient::connected(env.mqtt(), "sub", false).await;
    let mut payloads = Vec::new();
    while let Some(packet) = sub.recv_within(quiet).await {
        let Packet::Publish(p) = packet else {
            panic!("unexpected {packet:?}");
        };
        if let Some(id) = p.packet_id {
            sub.send(Packet::PubAck(ack(id))).await;
        }
        payloads.push(String::from_utf8_lossy(&p.payload).into_owned());
    }
    (payloads, sub)
}

/// BEGIN `tx`, then persistent SENDs of `bodies` to `/topic/d.tx` inside it.
async fn begin_and_send(p: &mut StompClient, tx: &str, bodies: &[String]) {
    p.send("BEGIN", &[("transaction", tx)], "").await;
    for body in bodies {
        p.send(
            "SEND",
            &[
                ("destination", "/topic/d.tx"),
                ("persistent", "true"),
                ("transaction", tx),
            ],
            body,
        )
        .await;
    }
}

/// Fill `memoryUsage` with 1 KB persistent messages to the offline "sub" until a SEND is not
/// receipted within half a second (held) or refused.
async fn fill_memory(env: &crate::Env) -> StompClient {
    let mut filler = env.connected(&[]).await;
    for n in 0..100 {
        let receipt = format!("f{n}");
        filler
            .send(
                "SEND",
                &[
                    ("destination", "/topic/d.fill"),
                    ("persistent", "true"),
                    ("receipt", &receipt),
                ],
                &"f".repeat(1024),
            )
            .await;
        match filler.recv_within(Duration::from_millis(500)).await {
            Some(f) if f.command == "RECEIPT" => {}
            _ => return filler,
        }
    }
    panic!("the memory limit never stopped the filler");
}

#[tokio::test]
async fn a_commit_is_admitted_whole_never_part_routed_then_refused() {
    // 4 KB kept, then three 2 KB messages under an 8 KB limit that refuses at once: the
    // memory has room when the COMMIT comes, so the whole transaction is admitted, not the
    // first messages routed and the last refused. (A transaction larger than the limit
    // itself is refused as it grows: it is held in memory until COMMIT.)
    let env = crate::broker_with(&tiny_memory(r#"sendFailIfNoSpace="true""#)).await;
    offline_subscriber(&env).await;
    let mut p = env.connected(&[]).await;
    p.send(
        "SEND",
        &[
            ("destination", "/topic/d.kept"),
            ("persistent", "true"),
            ("receipt", "k"),
        ],
        &"k".repeat(4000),
    )
    .await;
    assert_eq!(p.recv().await.command, "RECEIPT");
    let bodies: Vec<String> = (0..3).map(|n| format!("{n}{}", "x".repeat(2000))).collect();
    begin_and_send(&mut p, "t", &bodies).await;
    p.send("COMMIT", &[("transaction", "t"), ("receipt", "c")], "")
        .await;
    let answer = p.recv().await;
    assert_eq!(answer.command, "RECEIPT", "{answer:?}");
    assert_eq!(answer.header("receipt-id"), Some("c"));
    let (payloads, _sub) = drain(&env, Duration::from_millis(500)).await;
    assert_eq!(payloads[0].len(), 4000, "the kept message first");
    assert_eq!(
        payloads[1..],
        bodies,
        "every message of the commit, in order"
    );
    env.broker.shutdown().await;
}

#[tokio::test]
async fn a_commit_refused_for_lack_of_room_answers_its_receipt_id_and_applies_nothing() {
    let env = crate::broker_with(&tiny_memory(r#"sendFailIfNoSpace="true""#)).await;
    offline_subscriber(&env).await;
    let _filler = fill_memory(&env).await;
    let mut p = env.connected(&[]).await;
    let bodies: Vec<String> = (0..3).map(|n| format!("tx{n}")).collect();
    begin_and_send(&mut p, "t", &bodies).await;
    p.send("COMMIT", &[("transaction", "t"), ("receipt", "c")], "")
        .await;
    let error = p.recv().await;
    assert_eq!(error.command, "ERROR", "{error:?}");
    assert_eq!(error.header("receipt-id"), Some("c"), "names the COMMIT");
    let message = error.header("message").unwrap_or_default();
    assert!(message.contains("nothing of it applied"), "{message}");
    p.expect_closed_within(Duration::from_secs(2)).await;
    let (payloads, _sub) = drain(&env, Duration::from_millis(500)).await;
    assert!(
        !payloads.iter().any(|p| p.starts_with("tx")),
        "nothing of the refused commit: {:?}",
        payloads.iter().filter(|p| p.len() < 10).collect::<Vec<_>>()
    );
    env.broker.shutdown().await;
}

#[tokio::test]
async fn a_commit_held_by_a_full_memory_is_receipted_once_all_of_it_is_kept() {
    let env = crate::broker_with(&tiny_memory("")).await;
    offline_subscriber(&env).await;
    let _filler = fill_memory(&env).await;
    let mut p = env.connected(&[]).await;
    let bodies: Vec<String> = (0..3).map(|n| format!("tx{n}")).collect();
    begin_and_send(&mut p, "t", &bodies).await;
    p.send("COMMIT", &[("transaction", "t"), ("receipt", "c")], "")
        .await;
    assert!(
        p.recv_within(Duration::from_millis(500)).await.is_none(),
        "no RECEIPT while the memory is full"
    );
    let (payloads, _sub) = drain(&env, Duration::from_secs(2)).await;
    let receipt = p.recv().await;
    assert_eq!(receipt.command, "RECEIPT", "{receipt:?}");
    assert_eq!(receipt.header("receipt-id"), Some("c"));
    let committed: Vec<&String> = payloads.iter().filter(|p| p.starts_with("tx")).collect();
    assert_eq!(committed, bodies.iter().collect::<Vec<_>>(), "all of it");
    env.broker.shutdown().await;
}

/// Each refused frame inside a transaction fails when it arrives: ERROR, closed, and the
/// SEND before it in the same transaction is never delivered.
#[tokio::test]
async fn a_refused_frame_inside_a_transaction_fails_at_once_and_nothing_of_it_is_applied() {
    let env = crate::broker().await;
    let mut mqtt = RawClient::connected_v5(env.mqtt(), "watch").await;
    mqtt.subscribe(1, &[("tx/#", QoS::AtLeastOnce)]).await;
    let refused: [(&str, &[(&str, &str)]); 3] = [
        ("ACK", &[("id", "no-such-message")]),
        ("SEND", &[("destination", "/nowhere/x")]),
        ("SEND", &[("destination", "/topic/tx.*")]),
    ];
    for (command, headers) in refused {
        let mut c = env.connected(&[]).await;
        c.send("BEGIN", &[("transaction", "t")], "").await;
        c.send(
            "SEND",
            &[("destination", "/topic/tx.ok"), ("transaction", "t")],
            "before",
        )
        .await;
        let mut with_tx = headers.to_vec();
        with_tx.push(("transaction", "t"));
        c.send(command, &with_tx, "").await;
        let error = c
            .recv_within(Duration::from_secs(2))
            .await
            .expect("an ERROR before any COMMIT");
        assert_eq!(error.command, "ERROR", "{command} {headers:?}: {error:?}");
        c.expect_closed_within(Duration::from_secs(2)).await;
    }
    assert!(
        mqtt.recv_within(Duration::from_millis(300)).await.is_none(),
        "nothing of a failed transaction is delivered"
    );
    env.broker.shutdown().await;
}

#[tokio::test]
async fn receipts_of_sends_inside_a_transaction_leave_at_once() {
    let env = crate::broker().await;
    let mut mqtt = RawClient::connected_v5(env.mqtt(), "watch").await;
    mqtt.subscribe(1, &[("tx/#", QoS::AtLeastOnce)]).await;
    let mut c = env.connected(&[]).await;
    c.send("BEGIN", &[("transaction", "t")], "").await;
    c.send(
        "SEND",
        &[
            ("destination", "/topic/tx.r"),
            ("transaction", "t"),
            ("receipt", "s1"),
        ],
        "one",
    )
    .await;
    let r = c.recv_within(Duration::from_secs(2)).await;
    assert_eq!(
        r.as_ref().and_then(|r| r.header("receipt-id")),
        Some("s1"),
        "before COMMIT: {r:?}"
    );
    assert!(mqtt.recv_within(Duration::from_millis(200)).await.is_none());
    c.send("COMMIT", &[("transaction", "t"), ("receipt", "c")], "")
        .await;
    assert_eq!(c.recv().await.header("receipt-id"), Some("c"));
    assert_eq!(mqtt.recv_publish().await.payload.as_ref(), b"one");
    env.broker.shutdown().await;
}

#[tokio::test]
async fn a_nack_cannot_be_transacted() {
    let env = crate::broker().await;
    let mut c = env.connected(&[]).await;
    c.send(
        "SUBSCRIBE",
        &[
            ("destination", "/topic/tx.n"),
            ("id", "s"),
            ("ack", "client"),
        ],
        "",
    )
    .await;
    c.send("SEND", &[("destination", "/topic/tx.n")], "m").await;
    let m = c.recv().await;
    let id = m.header("ack").unwrap_or_default().to_owned();
    c.send("BEGIN", &[("transaction", "t")], "").await;
    c.send("NACK", &[("id", &id), ("transaction", "t")], "")
        .await;
    let error = c.recv().await;
    assert_eq!(error.command, "ERROR");
    assert_eq!(
        error.header("message"),
        Some("Poison ack cannot be transacted")
    );
    env.broker.shutdown().await;
}

#[tokio::test]
async fn a_queue_send_refused_by_the_memory_limit_names_its_receipt() {
    let env = crate::broker_with(&tiny_memory(r#"sendFailIfNoSpace="true""#)).await;
    let mut p = env.connected(&[]).await;
    for n in 0..100 {
        let receipt = format!("q{n}");
        p.send(
            "SEND",
            &[("destination", "/queue/d.full"), ("receipt", &receipt)],
            &"q".repeat(1024),
        )
        .await;
        let answer = p.recv().await;
        if answer.command == "ERROR" {
            assert_eq!(answer.header("receipt-id"), Some(receipt.as_str()));
            env.broker.shutdown().await;
            return;
        }
        assert_eq!(answer.header("receipt-id"), Some(receipt.as_str()));
    }
    panic!("the memory limit never refused a queue SEND");
}

#[tokio::test]
async fn receipts_of_acks_inside_a_transaction_leave_at_once() {
    let env = crate::broker().await;
    let mut c = env.connected(&[]).await;
    c.send(
        "SUBSCRIBE",
        &[
            ("destination", "/queue/tx.k"),
            ("id", "s"),
            ("ack", "client"),
        ],
        "",
    )
    .await;
    c.send("SEND", &[("destination", "/queue/tx.k")], "m").await;
    let m = c.recv().await;
    assert_eq!(m.command, "MESSAGE");
    let id = m.header("ack").unwrap_or_default().to_owned();
    c.send("BEGIN", &[("transaction", "t")], "").await;
    c.send(
        "ACK",
        &[("id", &id), ("transaction", "t"), ("receipt", "a1")],
        "",
    )
    .await;
    let r = c.recv_within(Duration::from_secs(2)).await;
    assert_eq!(
        r.as_ref().and_then(|r| r.header("receipt-id")),
        Some("a1"),
        "before COMMIT: {r:?}"
    );
    c.send("COMMIT", &[("transaction", "t"), ("receipt", "c")], "")
        .await;
    assert_eq!(c.recv().await.header("receipt-id"), Some("c"));
    env.broker.shutdown().await;
}

#[tokio::test]
async fn an_open_transaction_is_charged_to_memory_and_one_larger_than_the_limit_is_refused() {
    let env = crate::broker_with(&tiny_memory("")).await;
    let used = || env.broker.handle.core().memory.used_bytes();
    let mut p = env.connected(&[]).await;
    p.send("BEGIN", &[("transaction", "t")], "").await;
    let body = "b".repeat(2000);
    for n in 0..2 {
        let receipt = format!("s{n}");
        p.send(
            "SEND",
            &[
                ("destination", "/topic/d.tx"),
                ("transaction", "t"),
                ("receipt", &receipt),
            ],
            &body,
        )
        .await;
        assert_eq!(p.recv().await.command, "RECEIPT");
    }
    let charged = used();
    assert!(charged >= 4000, "{charged} bytes charged for 4,000 held");
    p.send("ABORT", &[("transaction", "t"), ("receipt", "a")], "")
        .await;
    assert_eq!(p.recv().await.command, "RECEIPT");
    assert_eq!(used(), 0, "released at ABORT");
    // Five of them (10 KB) do not fit an 8 kb limit: refused when the SEND that passes it
    // arrives, nothing applied.
    p.send("BEGIN", &[("transaction", "big")], "").await;
    for _ in 0..5 {
        p.send(
            "SEND",
            &[("destination", "/topic/d.tx"), ("transaction", "big")],
            &body,
        )
        .await;
    }
    let error = p.recv().await;
    assert_eq!(error.command, "ERROR", "{error:?}");
    let message = error.header("message").unwrap_or_default();
    assert!(
        message.contains("larger than the memory limit"),
        "{message}"
    );
    p.expect_closed_within(Duration::from_secs(2)).await;
    assert_eq!(used(), 0, "released with the connection");
    env.broker.shutdown().await;
}

/// A COMMIT whose SEND names a temporary queue deleted meanwhile (its connection closed
/// after the SEND, before the COMMIT) fails whole: the ERROR answers the COMMIT (its
/// `receipt-id`, the transaction named), and the transaction's other SEND is not delivered.
#[tokio::test]
async fn a_commit_failing_at_a_frame_answers_the_commit_and_applies_nothing() {
    let env = crate::broker().await;
    let mut requester = env.connected(&[]).await;
    requester
        .send(
            "SUBSCRIBE",
            &[
                ("destination", "/temp-queue/replies"),
                ("id", "r"),
                ("receipt", "r"),
            ],
            "",
        )
        .await;
    assert_eq!(requester.recv().await.command, "RECEIPT");
    requester
        .send(
            "SEND",
            &[
                ("destination", "/queue/tx.req"),
                ("reply-to", "/temp-queue/replies"),
                ("receipt", "s"),
            ],
            "request",
        )
        .await;
    assert_eq!(requester.recv().await.command, "RECEIPT");
    let mut c = env.connected(&[]).await;
    c.send(
        "SUBSCRIBE",
        &[("destination", "/queue/tx.req"), ("id", "s")],
        "",
    )
    .await;
    let request = c.recv().await;
    let reply_to = request.header("reply-to").unwrap_or_default().to_owned();
    assert!(reply_to.starts_with("/remote-temp-queue/"), "{request:?}");
    c.send("BEGIN", &[("transaction", "t")], "").await;
    c.send(
        "SEND",
        &[("destination", "/queue/tx.out"), ("transaction", "t")],
        "out",
    )
    .await;
    c.send(
        "SEND",
        &[("destination", &reply_to), ("transaction", "t")],
        "reply",
    )
    .await;
    requester
        .send("DISCONNECT", &[("receipt", "bye")], "")
        .await;
    assert_eq!(requester.recv().await.command, "RECEIPT");
    // Once the temporary queue is gone, a SEND to it is refused.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut probe = env.connected(&[]).await;
        probe
            .send(
                "SEND",
                &[("destination", &reply_to), ("receipt", "p")],
                "probe",
            )
            .await;
        if probe.recv().await.command == "ERROR" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the temporary queue stayed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.send("COMMIT", &[("transaction", "t"), ("receipt", "commit")], "")
        .await;
    let error = c.recv().await;
    assert_eq!(error.command, "ERROR", "{error:?}");
    assert_eq!(error.header("receipt-id"), Some("commit"), "{error:?}");
    let message = error.header("message").unwrap_or_default();
    assert!(
        message.starts_with("transaction t not committed, nothing of it applied: "),
        "{message}"
    );
    let mut out = env.connected(&[]).await;
    out.send(
        "SUBSCRIBE",
        &[("destination", "/queue/tx.out"), ("id", "o")],
        "",
    )
    .await;
    assert!(
        out.recv_within(Duration::from_millis(500)).await.is_none(),
        "nothing of the transaction"
    );
    env.broker.shutdown().await;
}

/// Two messages delivered to a `client-individual` subscriber, the first ACKed in a
/// transaction, then the subscription UNSUBSCRIBEd before the transaction ends (`end`:
/// COMMIT or ABORT, with a SEND in it too): what the next consumer of the queue gets, and
/// what reached `/queue/<queue>.out`. ActiveMQ 5.17 keeps the ACK with the transaction
/// (`unsubscribe_in_transaction` in the differential scripts).
async fn unsubscribe_before(end: &str, queue: &str) -> (Vec<(String, bool)>, Vec<String>) {
    let env = crate::broker().await;
    let dest = format!("/queue/{queue}");
    let out_dest = format!("/queue/{queue}.out");
    let mut p = env.connected(&[]).await;
    for body in ["m1", "m2"] {
        p.send(
            "SEND",
            &[
                ("destination", &dest),
                ("persistent", "true"),
                ("receipt", body),
            ],
            body,
        )
        .await;
        assert_eq!(p.recv().await.command, "RECEIPT");
    }
    let mut c = env.connected(&[]).await;
    c.send(
        "SUBSCRIBE",
        &[
            ("destination", &dest),
            ("id", "s"),
            ("ack", "client-individual"),
        ],
        "",
    )
    .await;
    let m1 = c.recv().await;
    assert_eq!(m1.body, b"m1");
    assert_eq!(c.recv().await.body, b"m2");
    let id = m1.header("ack").unwrap_or_default().to_owned();
    c.send("BEGIN", &[("transaction", "t")], "").await;
    c.send("ACK", &[("id", &id), ("transaction", "t")], "")
        .await;
    c.send(
        "SEND",
        &[("destination", &out_dest), ("transaction", "t")],
        "out",
    )
    .await;
    c.send("UNSUBSCRIBE", &[("id", "s"), ("receipt", "unsub")], "")
        .await;
    assert_eq!(c.recv().await.command, "RECEIPT");
    c.send(end, &[("transaction", "t"), ("receipt", "end")], "")
        .await;
    let answer = c.recv().await;
    assert_eq!(answer.command, "RECEIPT", "{answer:?}");
    let mut next = env.connected(&[]).await;
    next.send("SUBSCRIBE", &[("destination", &dest), ("id", "n")], "")
        .await;
    let mut left = Vec::new();
    while let Some(m) = next.recv_within(Duration::from_millis(500)).await {
        let redelivered = m.header("redelivered") == Some("true");
        left.push((String::from_utf8_lossy(&m.body).into_owned(), redelivered));
    }
    next.send("SUBSCRIBE", &[("destination", &out_dest), ("id", "o")], "")
        .await;
    let mut out = Vec::new();
    while let Some(m) = next.recv_within(Duration::from_millis(300)).await {
        out.push(String::from_utf8_lossy(&m.body).into_owned());
    }
    env.broker.shutdown().await;
    (left, out)
}

#[tokio::test]
async fn a_commit_after_unsubscribe_keeps_the_transacted_ack() {
    let (left, out) = unsubscribe_before("COMMIT", "tx.unsub.commit").await;
    assert_eq!(left, [("m2".to_owned(), true)]);
    assert_eq!(out, ["out"]);
}

#[tokio::test]
async fn an_abort_after_unsubscribe_gives_the_transacted_ack_back() {
    let (left, out) = unsubscribe_before("ABORT", "tx.unsub.abort").await;
    assert_eq!(left, [("m1".to_owned(), true), ("m2".to_owned(), true)]);
    assert!(out.is_empty(), "{out:?}");
}

#[tokio::test]
async fn a_disconnect_after_unsubscribe_gives_the_transacted_ack_back() {
    let (left, out) = unsubscribe_before("DISCONNECT", "tx.unsub.gone").await;
    assert_eq!(left, [("m1".to_owned(), true), ("m2".to_owned(), true)]);
    assert!(out.is_empty(), "{out:?}");
}

/// A message kept aside for an open transaction (ACKed in it, its subscription UNSUBSCRIBEd)
/// is the transaction's: an ACK of it outside the transaction is ActiveMQ's `Unexpected ACK`
/// ERROR, and the transaction, ended by the connection's close, gives it back.
#[tokio::test]
async fn a_message_kept_for_a_transaction_cannot_be_acked_outside_it() {
    let env = crate::broker().await;
    let mut p = env.connected(&[]).await;
    p.send(
        "SEND",
        &[("destination", "/queue/tx.kept"), ("receipt", "s")],
        "m1",
    )
    .await;
    assert_eq!(p.recv().await.command, "RECEIPT");
    let mut c = env.connected(&[]).await;
    c.send(
        "SUBSCRIBE",
        &[
            ("destination", "/queue/tx.kept"),
            ("id", "s"),
            ("ack", "client"),
        ],
        "",
    )
    .await;
    let m1 = c.recv().await;
    let id = m1.header("ack").unwrap_or_default().to_owned();
    c.send("BEGIN", &[("transaction", "t")], "").await;
    c.send("ACK", &[("id", &id), ("transaction", "t")], "")
        .await;
    c.send("UNSUBSCRIBE", &[("id", "s"), ("receipt", "unsub")], "")
        .await;
    assert_eq!(c.recv().await.command, "RECEIPT");
    c.send("ACK", &[("id", &id), ("receipt", "plain")], "")
        .await;
    let error = c.recv().await;
    assert_eq!(error.command, "ERROR", "{error:?}");
    assert_eq!(error.header("receipt-id"), Some("plain"), "{error:?}");
    assert!(
        error
            .header("message")
            .is_some_and(|m| m.starts_with("Unexpected ACK received for message-id")),
        "{error:?}"
    );
    let mut next = env.connected(&[]).await;
    next.send(
        "SUBSCRIBE",
        &[("destination", "/queue/tx.kept"), ("id", "n")],
        "",
    )
    .await;
    let again = next.recv().await;
    assert_eq!(again.body, b"m1");
    assert_eq!(again.header("redelivered"), Some("true"));
    env.broker.shutdown().await;
}
