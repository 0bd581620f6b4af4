//! MQTT 5 subscription options across a restart of a durable broker (store in a tempdir, raw
//! MQTT 5 clients): each subscription's identifier, No Local and Retain As Published, each
//! queued and in-flight copy's identifier and RETAIN flag, and the session's protocol version
//! (a restored MQTT 5 session still gets one copy per matching subscription).

use std::path::Path;

use ferromq::protocol::{Disconnect, Packet, QoS};

use crate::support::sub_options::{ids, publish_acked, subscribe, Filter};
use crate::support::{connect_v5, BrokerXml, RawClient, TestBroker};

async fn start_durable(dir: &Path) -> TestBroker {
    TestBroker::from_xml(&BrokerXml::new().kahadb(dir).mqtt(0, &[]).build()).await
}

/// (payload, identifiers, RETAIN, DUP) of the next `n` PUBLISH packets, acknowledged, sorted.
async fn next_sorted(client: &mut RawClient, n: usize) -> Vec<(Vec<u8>, Vec<u32>, bool, bool)> {
    let mut got = Vec::new();
    for _ in 0..n {
        let p = client.recv_publish().await;
        if let Some(id) = p.packet_id {
            client.send(Packet::PubAck(crate::support::ack(id))).await;
        }
        got.push((p.payload.to_vec(), ids(&p), p.retain, p.dup));
    }
    got.sort();
    got
}

fn copy(payload: &[u8], id: u32, retain: bool, dup: bool) -> (Vec<u8>, Vec<u32>, bool, bool) {
    (payload.to_vec(), vec![id], retain, dup)
}

#[tokio::test]
async fn subscription_options_and_identifiers_of_queued_and_in_flight_copies_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start_durable(dir.path()).await;
    let (mut sub, _) = RawClient::connect_ok(broker.addr, connect_v5("s", true, Some(3600))).await;
    let rap = [Filter::new("p/#", QoS::AtLeastOnce).retain_as_published()];
    assert_eq!(subscribe(&mut sub, 1, &rap, Some(4)).await, [1]);
    let no_local = [Filter::new("p/+", QoS::AtLeastOnce).no_local()];
    assert_eq!(subscribe(&mut sub, 2, &no_local, Some(5)).await, [1]);
    let mut publisher = RawClient::connected_v5(broker.addr, "pub").await;
    publish_acked(&mut publisher, "p/x", b"in flight", 1, true).await;
    // Both copies received and left unacknowledged: in flight at the restart.
    for _ in 0..2 {
        assert_eq!(&sub.recv_publish().await.payload[..], b"in flight");
    }
    sub.send(Packet::Disconnect(Disconnect {
        reason: 0,
        properties: None,
    }))
    .await;
    sub.expect_closed().await;
    publish_acked(&mut publisher, "p/x", b"queued", 2, true).await;
    broker.shutdown().await;

    let broker = start_durable(dir.path()).await;
    // Routed to the restored, offline session: still one copy per subscription.
    let mut publisher = RawClient::connected_v5(broker.addr, "pub").await;
    publish_acked(&mut publisher, "p/y", b"after", 1, false).await;
    let (mut sub, ack) =
        RawClient::connect_ok(broker.addr, connect_v5("s", false, Some(3600))).await;
    assert!(ack.session_present);
    assert_eq!(
        next_sorted(&mut sub, 2).await,
        [
            copy(b"in flight", 4, true, true),
            copy(b"in flight", 5, false, true)
        ],
        "re-sent with DUP, each with its identifier and RETAIN flag"
    );
    assert_eq!(
        next_sorted(&mut sub, 4).await,
        [
            copy(b"after", 4, false, false),
            copy(b"after", 5, false, false),
            copy(b"queued", 4, true, false),
            copy(b"queued", 5, false, false),
        ]
    );
    // No Local kept: the session's own message comes back only through `p/#` (id 4).
    let own = match publish_acked(&mut sub, "p/z", b"own", 1, false)
        .await
        .as_slice()
    {
        [] => next_sorted(&mut sub, 1).await,
        before => before
            .iter()
            .map(|p| (p.payload.to_vec(), ids(p), p.retain, p.dup))
            .collect(),
    };
    assert_eq!(own, [copy(b"own", 4, false, false)]);
    publish_acked(&mut publisher, "p/m/x", b"marker", 2, false).await;
    assert_eq!(
        next_sorted(&mut sub, 1).await,
        [copy(b"marker", 4, false, false)],
        "nothing else came in between"
    );
    broker.shutdown().await;
}
