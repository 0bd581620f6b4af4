//! Shared subscriptions across a restart of a durable broker (store in a tempdir): a persistent
//! member's `$share/...` subscription comes back as a group membership (each message still goes
//! to one member, not to every member as a plain subscription would), and the copies queued
//! for offline members are delivered once each after the restart. One MQTT 5 and one MQTT 3.1.1
//! member, raw clients.

use std::collections::BTreeSet;
use std::path::Path;

use ferromq::protocol::{Ack, Disconnect, Packet, QoS};

use crate::support::{
    connect_packet, connect_v5, publish_packet, BrokerXml, RawClient, TestBroker,
};

async fn start_durable(dir: &Path) -> TestBroker {
    TestBroker::from_xml(&BrokerXml::new().kahadb(dir).mqtt(0, &[]).build()).await
}

/// The two persistent members: an MQTT 5 one (session expiry 1 h) and an MQTT 3.1.1 one
/// (clean session 0), connected with clean start 0 (`first`: whether the session is new).
async fn members(broker: &TestBroker, first: bool) -> [RawClient; 2] {
    let (v5, ack) = RawClient::connect_ok(broker.addr, connect_v5("m5", false, Some(3600))).await;
    assert_eq!(ack.session_present, !first);
    let (v3, ack) = RawClient::connect_ok(broker.addr, connect_packet("m3", false, 0)).await;
    assert_eq!(ack.session_present, !first);
    [v5, v3]
}

async fn leave(mut client: RawClient) {
    client
        .send(Packet::Disconnect(Disconnect {
            reason: 0,
            properties: None,
        }))
        .await;
    client.expect_closed().await;
}

async fn publish(client: &mut RawClient, payload: &str, id: u16) {
    client
        .send(publish_packet(
            if payload == "end" { "end" } else { "s/t" },
            payload.as_bytes(),
            QoS::AtLeastOnce,
            Some(id),
            false,
        ))
        .await;
    match client.recv().await {
        Packet::PubAck(a) => assert_eq!(a.packet_id, id),
        other => panic!("expected PUBACK, got {other:?}"),
    }
}

/// Payloads received (and acknowledged) up to `end`, which every member subscribes directly.
async fn until_end(client: &mut RawClient) -> Vec<String> {
    let mut got = Vec::new();
    loop {
        let p = client.recv_publish().await;
        if let Some(id) = p.packet_id {
            client.send(Packet::PubAck(Ack::new(id))).await;
        }
        let payload = String::from_utf8_lossy(&p.payload).into_owned();
        if payload == "end" {
            return got;
        }
        got.push(payload);
    }
}

#[tokio::test]
async fn a_persistent_members_shared_subscription_and_queued_copies_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start_durable(dir.path()).await;
    for mut member in members(&broker, true).await {
        let filters = [
            ("$share/g/s/t", QoS::AtLeastOnce),
            ("end", QoS::AtLeastOnce),
        ];
        assert_eq!(member.subscribe(1, &filters).await, [1, 1]);
        leave(member).await;
    }
    let (mut publisher, _) = RawClient::connected(broker.addr, "pub", true).await;
    for (i, payload) in ["a", "b", "c", "d"].into_iter().enumerate() {
        publish(&mut publisher, payload, i as u16 + 1).await;
    }
    broker.shutdown().await;

    let broker = start_durable(dir.path()).await;
    let (mut publisher, _) = RawClient::connected(broker.addr, "pub", true).await;
    // Routed after the restart to the restored group (both members offline and kept).
    for (i, payload) in ["e", "f", "end"].into_iter().enumerate() {
        publish(&mut publisher, payload, i as u16 + 1).await;
    }
    let [mut v5, mut v3] = members(&broker, false).await;
    let (got5, got3) = (until_end(&mut v5).await, until_end(&mut v3).await);
    assert_eq!(
        (got5.len(), got3.len()),
        (3, 3),
        "one copy per message, in turn: {got5:?} {got3:?}"
    );
    let all: BTreeSet<String> = got5.iter().chain(&got3).cloned().collect();
    let expected: BTreeSet<String> = ["a", "b", "c", "d", "e", "f"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(all, expected, "every message once");
    broker.shutdown().await;
}
