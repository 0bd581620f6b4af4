//! The broker's DISCONNECT to an MQTT 5 client before it closes the connection, with the
//! reason code (real broker on 127.0.0.1 port 0, exact packets): session taken over (0x8E),
//! keep-alive timeout (0x8D), malformed packet (0x81), server shutting down (0x8B). MQTT 3
//! clients are just closed, as before. And the client's DISCONNECT: reason 0x04 publishes the
//! will, its Session Expiry Interval updates the session's.

use std::time::Duration;

use crate::support::{connect_v5, RawClient, TestBroker};
use ferromq::protocol::{Disconnect, Packet, Properties, QoS};

async fn v5_client(broker: &TestBroker, id: &str, keep_alive_secs: u16) -> RawClient {
    let mut connect = connect_v5(id, true, None);
    connect.keep_alive_secs = keep_alive_secs;
    RawClient::connect_ok(broker.addr, connect).await.0
}

/// The reason code of the DISCONNECT `client` receives, then its connection is closed.
async fn disconnect_code(client: &mut RawClient) -> u8 {
    match client.recv_within(Duration::from_secs(5)).await {
        Some(Packet::Disconnect(d)) => {
            client.expect_closed().await;
            d.reason
        }
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
}

#[tokio::test]
async fn a_taken_over_v5_client_is_told_0x8e() {
    let broker = TestBroker::default().await;
    let mut first = v5_client(&broker, "same", 0).await;
    let _second = v5_client(&broker, "same", 0).await;
    assert_eq!(disconnect_code(&mut first).await, 0x8E);
    // MQTT 3.1.1: closed without a packet.
    let (mut old, _) = RawClient::connected(broker.addr, "same3", true).await;
    let _new = RawClient::connected(broker.addr, "same3", true).await;
    assert_eq!(old.recv_within(Duration::from_secs(2)).await, None);
    broker.shutdown().await;
}

#[tokio::test]
async fn keep_alive_timeout_and_malformed_packets_get_their_codes() {
    let broker = TestBroker::default().await;
    let mut silent = v5_client(&broker, "silent", 1).await;
    assert_eq!(disconnect_code(&mut silent).await, 0x8D);
    let mut broken = v5_client(&broker, "broken", 0).await;
    // PUBLISH with both QoS bits set: malformed.
    broken.send_raw(&[0x36, 0x04, 0, 1, b't', 0]).await;
    assert_eq!(disconnect_code(&mut broken).await, 0x81);
    broker.shutdown().await;
}

#[tokio::test]
async fn shutdown_tells_v5_clients_0x8b() {
    let broker = TestBroker::default().await;
    let mut client = v5_client(&broker, "c", 0).await;
    let shutdown = tokio::spawn(broker.shutdown());
    assert_eq!(disconnect_code(&mut client).await, 0x8B);
    shutdown.await.expect("shutdown task");
}

fn disconnect_packet(reason: u8, session_expiry_interval: Option<u32>) -> Packet {
    Packet::Disconnect(Disconnect {
        reason,
        properties: session_expiry_interval.map(|secs| {
            Box::new(Properties {
                session_expiry_interval: Some(secs),
                ..Properties::default()
            })
        }),
    })
}

#[tokio::test]
async fn disconnect_0x04_publishes_the_will_and_0x00_does_not() {
    let broker = TestBroker::default().await;
    let mut watcher = v5_client(&broker, "watcher", 0).await;
    watcher.subscribe(1, &[("will/#", QoS::AtMostOnce)]).await;
    for (id, reason) in [("quiet", 0x00), ("loud", 0x04)] {
        let mut connect = connect_v5(id, true, None);
        connect.will = Some(crate::support::will(
            &format!("will/{id}"),
            b"gone",
            QoS::AtMostOnce,
            false,
        ));
        let (mut client, _) = RawClient::connect(broker.addr, connect).await;
        client.send(disconnect_packet(reason, None)).await;
        client.expect_closed().await;
    }
    let will = watcher.recv_publish().await;
    assert_eq!(
        will.topic, "will/loud",
        "only the 0x04 DISCONNECT publishes"
    );
    assert_eq!(watcher.recv_within(Duration::from_millis(300)).await, None);
    broker.shutdown().await;
}

#[tokio::test]
async fn disconnect_may_shorten_the_session_expiry_but_not_raise_it_from_zero() {
    let broker = TestBroker::default().await;
    let (mut kept, _) = RawClient::connect(broker.addr, connect_v5("k", true, Some(60))).await;
    kept.send(disconnect_packet(0, Some(0))).await;
    kept.expect_closed().await;
    let (_again, ack) = RawClient::connect(broker.addr, connect_v5("k", false, Some(60))).await;
    assert!(!ack.session_present, "DISCONNECT set the expiry to 0");

    let mut zero = v5_client(&broker, "z", 0).await;
    zero.send(disconnect_packet(0, Some(30))).await;
    assert_eq!(disconnect_code(&mut zero).await, 0x82);
    broker.shutdown().await;
}
