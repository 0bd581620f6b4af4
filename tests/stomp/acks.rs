//! Acknowledgement modes: client-individual and client (cumulative) within the prefetch
//! window of `activemq.prefetchSize`.

use std::time::Duration;

use crate::client::{Received, StompClient};

async fn subscribed(env: &crate::Env, ack: &str, prefetch: &str) -> StompClient {
    let mut c = env.connected(&[]).await;
    c.send(
        "SUBSCRIBE",
        &[
            ("destination", "/topic/work"),
            ("id", "s"),
            ("ack", ack),
            ("activemq.prefetchSize", prefetch),
            ("receipt", "r"),
        ],
        "",
    )
    .await;
    assert_eq!(c.recv().await.command, "RECEIPT");
    c
}

async fn send_all(env: &crate::Env, bodies: &[&str]) {
    let mut p = env.connected(&[]).await;
    for b in bodies {
        p.send("SEND", &[("destination", "/topic/work")], b).await;
    }
    p.send("DISCONNECT", &[("receipt", "bye")], "").await;
    assert_eq!(p.recv().await.header("receipt-id"), Some("bye"));
}

async fn ack(c: &mut StompClient, m: &Received) {
    let id = m.header("ack").expect("ack header in 1.2");
    c.send("ACK", &[("id", id), ("receipt", id)], "").await;
    assert_eq!(c.recv().await.header("receipt-id"), Some(id));
}

#[tokio::test]
async fn client_individual_acks_open_the_prefetch_window_one_by_one() {
    let env = crate::broker().await;
    let mut c = subscribed(&env, "client-individual", "2").await;
    send_all(&env, &["1", "2", "3", "4"]).await;
    let first = c.recv().await;
    let second = c.recv().await;
    assert_eq!(
        (first.body_text(), second.body_text()),
        ("1".into(), "2".into())
    );
    assert!(
        c.recv_within(Duration::from_millis(200)).await.is_none(),
        "window of 2 full"
    );
    ack(&mut c, &second).await;
    assert_eq!(c.recv().await.body_text(), "3");
    assert!(c.recv_within(Duration::from_millis(200)).await.is_none());
    ack(&mut c, &first).await;
    assert_eq!(c.recv().await.body_text(), "4");

    // An unknown id is an error.
    c.send("ACK", &[("id", "nope")], "").await;
    assert_eq!(c.recv().await.command, "ERROR");
}

#[tokio::test]
async fn client_acks_are_cumulative() {
    let env = crate::broker().await;
    let mut c = subscribed(&env, "client", "2").await;
    send_all(&env, &["1", "2", "3", "4"]).await;
    let _first = c.recv().await;
    let second = c.recv().await;
    ack(&mut c, &second).await;
    // Both acknowledged: two more come.
    assert_eq!(c.recv().await.body_text(), "3");
    assert_eq!(c.recv().await.body_text(), "4");
}
