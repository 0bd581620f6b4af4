//! Composite destinations (ActiveMQ's `/queue/a,b`, `/queue/a,/topic/t`) are not served: SEND
//! and SUBSCRIBE get an ERROR naming the destination, and nothing reaches a queue named `a,b`
//! nor either part.

use std::time::Duration;

use crate::client::StompClient;

async fn refused(addr: std::net::SocketAddr, command: &str, destination: &str) {
    let mut c = StompClient::tcp(addr).await;
    c.connect(&[]).await;
    c.send(
        command,
        &[("destination", destination), ("id", "s"), ("receipt", "r")],
        "both",
    )
    .await;
    let f = c.recv().await;
    assert_eq!(f.command, "ERROR", "{f:?}");
    assert!(
        f.header("message").unwrap_or("").contains("composite"),
        "{f:?}"
    );
}

async fn empty(addr: std::net::SocketAddr, queue: &str) -> bool {
    let mut c = StompClient::tcp(addr).await;
    c.connect(&[]).await;
    c.send(
        "SUBSCRIBE",
        &[("destination", queue), ("id", "e"), ("receipt", "e")],
        "",
    )
    .await;
    assert_eq!(c.recv().await.command, "RECEIPT");
    c.recv_within(Duration::from_millis(300)).await.is_none()
}

#[tokio::test]
async fn composite_destinations_are_refused_not_misrouted() {
    let env = crate::broker().await;
    let addr = env.addr("stomp");
    for destination in ["/queue/a,b", "/queue/a,/topic/t", "/topic/x,y"] {
        refused(addr, "SEND", destination).await;
        refused(addr, "SUBSCRIBE", destination).await;
    }
    for queue in ["/queue/a", "/queue/b"] {
        assert!(empty(addr, queue).await, "{queue}");
    }
}
