//! No client can forge frames into another client's stream: a NUL (which ends a frame) in a
//! header is refused, and an unknown command's ERROR still names its receipt.

use std::time::Duration;

use crate::broker;

#[tokio::test]
async fn a_nul_in_a_header_is_refused_and_never_reaches_a_subscriber() {
    let env = broker().await;
    let mut sub = env.connected(&[]).await;
    sub.send(
        "SUBSCRIBE",
        &[("id", "0"), ("destination", "/topic/inj"), ("receipt", "s")],
        "",
    )
    .await;
    assert_eq!(sub.recv().await.command, "RECEIPT");
    let mut forger = env.connected(&[]).await;
    forger
        .send_raw(
            b"SEND\ndestination:/topic/inj\nreceipt:r\nx:\0ERROR\nmessage:forged by another client\n\nbody\0",
        )
        .await;
    let answer = forger.recv().await;
    assert_eq!(answer.command, "ERROR", "{answer:?}");
    assert!(
        answer.header("message").unwrap_or_default().contains("NUL"),
        "{answer:?}"
    );
    forger.expect_closed_within(Duration::from_secs(5)).await;
    assert!(
        sub.recv_within(Duration::from_millis(500)).await.is_none(),
        "the subscriber got nothing"
    );
}

#[tokio::test]
async fn the_error_for_an_unknown_command_carries_its_receipt_id() {
    let env = broker().await;
    let mut c = env.connected(&[]).await;
    c.send("FOO", &[("receipt", "e")], "").await;
    let answer = c.recv().await;
    assert_eq!(answer.command, "ERROR", "{answer:?}");
    assert_eq!(answer.header("receipt-id"), Some("e"), "{answer:?}");
    assert_eq!(
        answer.header("message"),
        Some("Unknown STOMP action: FOO"),
        "{answer:?}"
    );
}
