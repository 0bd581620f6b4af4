//! Every dead letter is persistent, as ActiveMQ makes it (`RegionBroker.sendToDeadLetterQueue`):
//! a non-persistent message dead-lettered because of `processNonPersistent="true"` comes out
//! of the dead-letter queue with `persistent:true` and `originalDeliveryMode:NON_PERSISTENT`,
//! and is still there after a graceful restart, from a queue and from a durable topic
//! subscription. Raw frames, a broker with a store in a temporary directory.

use std::time::Duration;

use crate::client::{Received, StompClient};
use crate::support::{BrokerXml, TestBroker};

const PROCESS_NON_PERSISTENT: &str = "<destinationPolicy><policyMap><policyEntries>\
     <policyEntry queue=\">\"><deadLetterStrategy>\
     <individualDeadLetterStrategy processNonPersistent=\"true\"/></deadLetterStrategy>\
     </policyEntry>\
     <policyEntry topic=\">\"><deadLetterStrategy>\
     <individualDeadLetterStrategy processNonPersistent=\"true\"/></deadLetterStrategy>\
     </policyEntry>\
     </policyEntries></policyMap></destinationPolicy>";

async fn broker(dir: &std::path::Path) -> TestBroker {
    let xml = BrokerXml::new()
        .name("stomp")
        .kahadb(dir)
        .child(PROCESS_NON_PERSISTENT)
        .connector("stomp", "stomp://127.0.0.1:0")
        .build();
    TestBroker::from_xml(&xml).await
}

fn stomp_addr(broker: &TestBroker) -> std::net::SocketAddr {
    broker
        .handle
        .listener_addrs()
        .iter()
        .find(|(n, _)| n == "stomp")
        .map(|(_, a)| *a)
        .expect("stomp listener")
}

async fn connected(addr: std::net::SocketAddr, headers: &[(&str, &str)]) -> StompClient {
    let mut c = StompClient::tcp(addr).await;
    c.connect(headers).await;
    c
}

async fn receipted(c: &mut StompClient, command: &str, headers: &[(&str, &str)]) {
    let receipt = format!("{command}-{}", headers.len());
    let mut all = headers.to_vec();
    all.push(("receipt", &receipt));
    c.send(command, &all, "np").await;
    let f = c.recv().await;
    assert_eq!(
        (f.command.as_str(), f.header("receipt-id")),
        ("RECEIPT", Some(receipt.as_str())),
        "{f:?}"
    );
}

async fn nack_next(c: &mut StompClient) {
    let m = c.recv().await;
    assert_eq!(m.command, "MESSAGE", "{m:?}");
    assert_ne!(m.header("persistent"), Some("true"), "sent non-persistent");
    let ack = m.header("ack").expect("ack header").to_owned();
    receipted(c, "NACK", &[("id", &ack)]).await;
}

async fn dead_letter_in(addr: std::net::SocketAddr, queue: &str) -> Received {
    let mut c = connected(addr, &[]).await;
    receipted(&mut c, "SUBSCRIBE", &[("destination", queue), ("id", "d")]).await;
    let m = c.recv().await;
    assert_eq!(m.command, "MESSAGE", "{m:?}");
    assert!(
        c.recv_within(Duration::from_millis(300)).await.is_none(),
        "one dead letter only"
    );
    m
}

fn assert_made_persistent(m: &Received) {
    assert_eq!(m.body_text(), "np");
    assert_eq!(m.header("persistent"), Some("true"), "{m:?}");
    assert_eq!(
        m.header("originalDeliveryMode"),
        Some("NON_PERSISTENT"),
        "{m:?}"
    );
}

#[tokio::test]
async fn a_non_persistent_queue_dead_letter_is_persistent_and_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = broker(dir.path()).await;
    let addr = stomp_addr(&b);
    let mut consumer = connected(addr, &[]).await;
    receipted(
        &mut consumer,
        "SUBSCRIBE",
        &[
            ("destination", "/queue/ind.np"),
            ("id", "s"),
            ("ack", "client-individual"),
        ],
    )
    .await;
    let mut producer = connected(addr, &[]).await;
    receipted(&mut producer, "SEND", &[("destination", "/queue/ind.np")]).await;
    nack_next(&mut consumer).await;
    drop((consumer, producer));
    b.shutdown().await;
    let b = broker(dir.path()).await;
    let m = dead_letter_in(stomp_addr(&b), "/queue/ActiveMQ.DLQ.Queue.ind.np").await;
    assert_made_persistent(&m);
    assert_eq!(m.header("original-destination"), Some("/queue/ind.np"));
}

#[tokio::test]
async fn a_non_persistent_topic_dead_letter_is_persistent_and_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = broker(dir.path()).await;
    let addr = stomp_addr(&b);
    let mut consumer = connected(addr, &[("client-id", "app")]).await;
    receipted(
        &mut consumer,
        "SUBSCRIBE",
        &[
            ("destination", "/topic/ind.np"),
            ("id", "s"),
            ("ack", "client-individual"),
            ("activemq.subscriptionName", "dur"),
        ],
    )
    .await;
    let mut producer = connected(addr, &[]).await;
    receipted(&mut producer, "SEND", &[("destination", "/topic/ind.np")]).await;
    nack_next(&mut consumer).await;
    drop((consumer, producer));
    b.shutdown().await;
    let b = broker(dir.path()).await;
    let m = dead_letter_in(stomp_addr(&b), "/queue/ActiveMQ.DLQ.Topic.ind.np").await;
    assert_made_persistent(&m);
    assert_eq!(m.header("original-destination"), Some("/topic/ind.np"));
}
