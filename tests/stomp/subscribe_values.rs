//! SUBSCRIBE header values read as ActiveMQ 5.17 reads them: `ack` other than `client` /
//! `client-individual` (`CLIENT`, empty) is `auto`; `activemq.*` values that do not convert
//! (`activemq.prefetchSize:abc`, `activemq.priority:200`) are ignored; `activemq.exclusive:TRUE`
//! is Java's `true`. Raw frames on a queue.

use std::time::Duration;

use crate::client::StompClient;

async fn connected(addr: std::net::SocketAddr) -> StompClient {
    let mut c = StompClient::tcp(addr).await;
    c.connect(&[]).await;
    c
}

async fn subscribed(
    addr: std::net::SocketAddr,
    queue: &str,
    extra: &[(&str, &str)],
) -> StompClient {
    let mut c = connected(addr).await;
    let mut headers = vec![("destination", queue), ("id", "s"), ("receipt", "sub")];
    headers.extend_from_slice(extra);
    c.send("SUBSCRIBE", &headers, "").await;
    let f = c.recv().await;
    assert_eq!(f.command, "RECEIPT", "{extra:?}: {f:?}");
    c
}

async fn send(addr: std::net::SocketAddr, queue: &str, bodies: &[&str]) {
    let mut p = connected(addr).await;
    for body in bodies {
        p.send("SEND", &[("destination", queue), ("receipt", body)], body)
            .await;
        assert_eq!(p.recv().await.command, "RECEIPT");
    }
}

#[tokio::test]
async fn unconvertible_subscribe_values_are_ignored_as_activemq_ignores_them() {
    let env = crate::broker().await;
    let addr = env.addr("stomp");
    for (i, extra) in [
        ("activemq.prefetchSize", "abc"),
        ("activemq.prefetchSize", " 5"),
        ("activemq.priority", "200"),
        ("activemq.exclusive", "yes"),
    ]
    .into_iter()
    .enumerate()
    {
        let queue = format!("/queue/values.{i}");
        let mut c = subscribed(addr, &queue, &[extra]).await;
        send(addr, &queue, &["a", "b"]).await;
        assert_eq!(c.recv().await.body_text(), "a", "{extra:?}");
        assert_eq!(c.recv().await.body_text(), "b", "{extra:?}");
    }
}

#[tokio::test]
async fn an_ack_mode_activemq_does_not_know_is_auto() {
    let env = crate::broker().await;
    let addr = env.addr("stomp");
    let mut c = subscribed(addr, "/queue/acks", &[("ack", "CLIENT")]).await;
    send(addr, "/queue/acks", &["one"]).await;
    let m = c.recv().await;
    assert_eq!(m.body_text(), "one");
    assert_eq!(m.header("ack"), None, "auto: nothing to acknowledge");
    drop(c);
    // Auto-acknowledged: not redelivered to the next consumer.
    let mut next = subscribed(addr, "/queue/acks", &[]).await;
    assert!(next.recv_within(Duration::from_millis(300)).await.is_none());
}

#[tokio::test]
async fn exclusive_true_in_any_case_makes_an_exclusive_consumer() {
    let env = crate::broker().await;
    let addr = env.addr("stomp");
    let mut first = subscribed(addr, "/queue/excl", &[("activemq.exclusive", "TRUE")]).await;
    let mut second = subscribed(addr, "/queue/excl", &[]).await;
    send(addr, "/queue/excl", &["1", "2", "3"]).await;
    for body in ["1", "2", "3"] {
        assert_eq!(first.recv().await.body_text(), body);
    }
    assert!(second
        .recv_within(Duration::from_millis(300))
        .await
        .is_none());
}
