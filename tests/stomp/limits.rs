//! Producer flow control for STOMP: a SEND that `memoryUsage` stops is held (no RECEIPT, the
//! connection stops reading) until there is room, or refused with ActiveMQ's ERROR under
//! `sendFailIfNoSpace`; never a RECEIPT for a message that is then dropped. The memory is
//! filled by an offline MQTT persistent session that does not read.

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

fn kilobyte(n: u32) -> String {
    format!("{n:06}{}", "x".repeat(1018))
}

/// Persistent 1 KB SENDs with receipts to `/topic/d.x` until one gets no RECEIPT within a
/// second (held) or an ERROR; returns how many were receipted and that last frame (`None`:
/// held).
async fn send_until_stopped(p: &mut StompClient) -> (u32, Option<crate::client::Received>) {
    for n in 0..200u32 {
        let receipt = format!("r{n}");
        p.send(
            "SEND",
            &[
                ("destination", "/topic/d.x"),
                ("persistent", "true"),
                ("receipt", &receipt),
            ],
            &kilobyte(n),
        )
        .await;
        match p.recv_within(Duration::from_secs(1)).await {
            Some(f) if f.command == "RECEIPT" => {
                assert_eq!(f.header("receipt-id"), Some(receipt.as_str()))
            }
            other => return (n, other),
        }
    }
    panic!("the memory limit never stopped the producer");
}

/// Reconnect "sub" and take QoS 1 messages (acknowledging each) until none comes for
/// `quiet`; returns the numbers of the persistent ones and the other payloads.
async fn drain(env: &crate::Env, quiet: Duration) -> (Vec<u32>, Vec<String>, RawClient) {
    let (mut sub, connack) = RawClient::connected(env.mqtt(), "sub", false).await;
    assert!(connack.session_present);
    let mut numbers = Vec::new();
    let mut others = Vec::new();
    while let Some(packet) = sub.recv_within(quiet).await {
        let Packet::Publish(p) = packet else {
            panic!("unexpected {packet:?}");
        };
        if let Some(id) = p.packet_id {
            sub.send(Packet::PubAck(ack(id))).await;
        }
        let text = String::from_utf8_lossy(&p.payload).into_owned();
        match text.get(..6).and_then(|n| n.parse().ok()) {
            Some(n) if p.payload.len() == 1024 => numbers.push(n),
            _ => others.push(text),
        }
    }
    (numbers, others, sub)
}

#[tokio::test]
async fn a_held_persistent_send_gets_its_receipt_only_once_the_memory_drains() {
    let env = crate::broker_with(&tiny_memory("")).await;
    offline_subscriber(&env).await;
    let mut p = env.connected(&[]).await;
    let (receipted, last) = send_until_stopped(&mut p).await;
    assert!(last.is_none(), "held, not refused: {last:?}");
    assert!(receipted > 0, "some messages fit before the limit");
    // The connection is not reading: a DISCONNECT with a receipt is not answered either.
    p.send("DISCONNECT", &[("receipt", "bye")], "").await;
    assert!(p.recv_within(Duration::from_millis(300)).await.is_none());
    let (numbers, _, _sub) = drain(&env, Duration::from_secs(2)).await;
    let held = p.recv().await;
    assert_eq!(held.command, "RECEIPT");
    assert_eq!(
        held.header("receipt-id"),
        Some(format!("r{receipted}").as_str())
    );
    assert_eq!(p.recv().await.header("receipt-id"), Some("bye"));
    // Everything receipted, then the held one, arrived: nothing lost, in order.
    assert_eq!(numbers, (0..=receipted).collect::<Vec<_>>());
    assert!(env.broker.handle.counters().refused_memory_full > 0);
    env.broker.shutdown().await;
}

#[tokio::test]
async fn send_fail_if_no_space_refuses_with_activemqs_error_and_keeps_nothing() {
    let env = crate::broker_with(&tiny_memory(r#"sendFailIfNoSpace="true""#)).await;
    offline_subscriber(&env).await;
    let mut p = env.connected(&[]).await;
    let (receipted, last) = send_until_stopped(&mut p).await;
    let error = last.expect("an ERROR, not a held SEND");
    assert_eq!(error.command, "ERROR");
    let message = error.header("message").unwrap_or_default();
    assert!(
        message.starts_with(
            "Usage Manager memory limit (8192) reached. Rejecting send for producer ("
        ) && message.contains("to prevent flooding topic://d.x."),
        "{message}"
    );
    assert_eq!(
        error.header("receipt-id"),
        Some(format!("r{receipted}").as_str()),
        "the ERROR names the refused SEND"
    );
    p.expect_closed_within(Duration::from_secs(2)).await;
    let (numbers, _, _sub) = drain(&env, Duration::from_millis(500)).await;
    assert_eq!(
        numbers,
        (0..receipted).collect::<Vec<_>>(),
        "every receipted message arrived; the refused one was not kept"
    );
    env.broker.shutdown().await;
}

#[tokio::test]
async fn send_fail_if_no_space_after_timeout_refuses_after_blocking() {
    let env = crate::broker_with(&tiny_memory(r#"sendFailIfNoSpaceAfterTimeout="300""#)).await;
    offline_subscriber(&env).await;
    let mut p = env.connected(&[]).await;
    let (_, last) = send_until_stopped(&mut p).await;
    let error = last.expect("an ERROR after the timeout");
    let message = error.header("message").unwrap_or_default();
    assert!(
        message.starts_with("Usage Manager Memory Usage limit reached. Stopping producer ("),
        "{message}"
    );
    env.broker.shutdown().await;
}

#[tokio::test]
async fn a_non_persistent_send_under_a_full_memory_is_held_too() {
    let env = crate::broker_with(&tiny_memory("")).await;
    offline_subscriber(&env).await;
    let mut filler = env.connected(&[]).await;
    let (_, last) = send_until_stopped(&mut filler).await;
    assert!(last.is_none());
    let mut p = env.connected(&[]).await;
    p.send(
        "SEND",
        &[("destination", "/topic/d.np"), ("receipt", "np")],
        "non-persistent",
    )
    .await;
    assert!(
        p.recv_within(Duration::from_millis(500)).await.is_none(),
        "no RECEIPT while the memory is full"
    );
    // "sub" online again: the held message is routed to it once the memory drains.
    let (_, others, _sub) = drain(&env, Duration::from_secs(2)).await;
    assert_eq!(p.recv().await.header("receipt-id"), Some("np"));
    assert_eq!(others, vec!["non-persistent".to_string()]);
    env.broker.shutdown().await;
}
