//! Wills: published on abnormal close and protocol errors (with the retain flag honoured),
//! never after DISCONNECT; published when the broker shuts down.

use std::time::Duration;

use crate::support::{connect_packet, Client, RawClient, TestBroker};
use ferromq::protocol::{Disconnect, Packet, QoS};
use rumqttc::QoS as Q;

fn with_will(
    id: &str,
    topic: &str,
    payload: &'static [u8],
    retain: bool,
) -> ferromq::protocol::Connect {
    let mut c = connect_packet(id, true, 0);
    c.will = Some(crate::support::will(
        topic,
        payload,
        QoS::AtLeastOnce,
        retain,
    ));
    c
}

#[tokio::test]
async fn will_on_abnormal_close_with_rumqttc() {
    let broker = TestBroker::default().await;
    let mut watcher = Client::connect(broker.addr, "watcher").await;
    watcher.subscribe("status/#", Q::AtLeastOnce).await;
    let mut o = crate::support::options(broker.addr, "dying");
    o.set_last_will(rumqttc::LastWill::new(
        "status/dying",
        "offline",
        Q::AtLeastOnce,
        false,
    ));
    let dying = Client::connect_with(o).await;
    dying.kill();
    let will = watcher.next_publish().await;
    assert_eq!(
        (will.topic.as_str(), &will.payload[..]),
        ("status/dying", &b"offline"[..])
    );
    assert!(!will.retain);
    assert_eq!(broker.handle.counters().wills_published, 1);
    broker.shutdown().await;
}

#[tokio::test]
async fn no_will_after_disconnect() {
    let broker = TestBroker::default().await;
    let mut watcher = Client::connect(broker.addr, "watcher").await;
    watcher.subscribe("status/#", Q::AtLeastOnce).await;
    let (mut polite, _) = RawClient::connect(
        broker.addr,
        with_will("polite", "status/polite", b"x", false),
    )
    .await;
    polite
        .send(Packet::Disconnect(Disconnect {
            reason: 0,
            properties: None,
        }))
        .await;
    polite.expect_closed().await;
    watcher.no_publish_within(Duration::from_millis(300)).await;
    assert_eq!(broker.handle.counters().wills_published, 0);
    broker.shutdown().await;
}

#[tokio::test]
async fn will_on_protocol_error_with_retain_honoured() {
    let broker = TestBroker::default().await;
    let (mut bad, _) =
        RawClient::connect(broker.addr, with_will("bad", "status/bad", b"broken", true)).await;
    // A reserved packet type (0) is a protocol error: the broker closes and publishes the will.
    bad.send_raw(&[0x00, 0x00]).await;
    bad.expect_closed().await;
    // Retained: a later subscriber gets it with retain=1.
    let mut late = Client::connect(broker.addr, "late").await;
    late.subscribe("status/bad", Q::AtLeastOnce).await;
    let will = late.next_publish().await;
    assert_eq!(&will.payload[..], b"broken");
    assert!(will.retain);
    broker.shutdown().await;
}

#[tokio::test]
async fn wills_are_published_at_shutdown_and_clients_are_closed() {
    let broker = TestBroker::default().await;
    let (mut watcher, _) = RawClient::connected(broker.addr, "watcher", true).await;
    watcher.subscribe(1, &[("status/#", QoS::AtMostOnce)]).await;
    let (mut c, _) = RawClient::connect(
        broker.addr,
        with_will("c", "status/c", b"server gone", true),
    )
    .await;
    let core = broker.handle.core().clone();
    broker.shutdown().await;
    c.expect_closed().await;
    watcher.expect_closed().await;
    assert!(
        core.retained_matching("status/c")
            .iter()
            .any(|m| &m.payload[..] == b"server gone"),
        "the will was published (and retained) during shutdown"
    );
    assert_eq!(core.counters.snapshot().connections_current, 0);
}
