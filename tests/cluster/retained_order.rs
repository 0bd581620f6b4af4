//! Every node's retained index converges on the bucket whatever order its changes arrive in.
//!
//! A QoS 1 retained publish is acknowledged once its message stream and the retained bucket
//! both stored it. When the bucket answers at once and the stream late (its leader stopped),
//! another node's newer retained value for the same topic can reach every index meanwhile; the
//! late acknowledgement must not put the older value back on the publisher's node (it would
//! stay there, the other nodes serving the newer one, until the topic changed again).
//! And a retained message published at QoS 0 is there for a SUBSCRIBE on the same
//! connection right after it.

use std::time::Duration;

use ferromq::protocol::{Packet, QoS};

use super::chaos::rig::faults::make_leader;
use super::rig::{next_publish_within, puback_of, retained, v5_ok, Rig, FAST};

/// [`FAST`] with a `storeTimeout` long enough to outlast the stopped stream leader, so the
/// late store is acknowledged rather than refused.
fn patient() -> String {
    FAST.replace(r#"storeTimeout="1s""#, r#"storeTimeout="20s""#)
}

/// [`retained_now`] until `topic` alone holds `payload` on `addr` (30 s bound). A CONNECT
/// the node does not answer (its NATS connection is being made again around the stopped
/// server) is tried again.
async fn settles_on(addr: std::net::SocketAddr, topic: &str, payload: &[u8]) {
    let want = [(topic.to_owned(), payload.to_vec())];
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let got = tokio::spawn(retained_now(addr, "ro/#")).await;
        if got.as_ref().is_ok_and(|got| got == &want) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "retained on {addr}: {got:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The retained messages a SUBSCRIBE to `filter` on `addr` gets, as (topic, payload); a
/// message delivered live meanwhile (v1 reaching its subscribers late) is not one of them.
async fn retained_now(addr: std::net::SocketAddr, filter: &str) -> Vec<(String, Vec<u8>)> {
    let (mut c, _) = v5_ok(addr, "ro-reader", true, None).await;
    c.subscribe(1, &[(filter, QoS::AtMostOnce)]).await;
    let mut got = Vec::new();
    while let Some(p) = next_publish_within(&mut c, Duration::from_millis(400)).await {
        if p.retain {
            got.push((p.topic.to_string(), p.payload.to_vec()));
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_acknowledgement_does_not_put_an_older_retained_value_back() {
    let Some(mut rig) = Rig::start(0, FAST).await else {
        return;
    };
    let attributes = patient();
    // A on server 0, B on server 1; the topic's message stream led by server 2, which is
    // then stopped.
    let a = rig.node_on("node-a", 0, &attributes);
    let b = rig.node_on("node-b", 1, &attributes);
    let (a_addr, b_addr) = (a.mqtt_addr(), b.mqtt_addr());
    rig.nodes.push(a);
    rig.nodes.push(b);
    let admin = async_nats::connect(rig.nats.server(0).client_url())
        .await
        .expect("admin connection");
    let topic = "ro/t";
    let stream = ferromq::cluster::shard_stream(ferromq::cluster::shard_of(topic, 2));
    let (first, third) = (
        rig.nats.server(0).name.clone(),
        rig.nats.server(2).name.clone(),
    );
    // Every bucket led by server 0, so that only the message stream waits.
    for bucket in ["KV_FMQ_RETAIN", "KV_FMQ_SESS", "KV_FMQ_NODES"] {
        make_leader(&admin, bucket, &first)
            .await
            .unwrap_or_else(|e| panic!("{bucket} led by server 0: {e}"));
    }
    make_leader(&admin, &stream, &third)
        .await
        .expect("message stream led by server 2");

    let (mut on_a, _) = v5_ok(a_addr, "ro-a", true, None).await;
    on_a.send(retained(topic, b"v0", QoS::AtLeastOnce, Some(1)))
        .await;
    assert_eq!(puback_of(&mut on_a, 1).await, 0, "v0 stored");
    settles_on(b_addr, topic, b"v0").await;

    let (mut on_b, _) = v5_ok(b_addr, "ro-b", true, None).await;
    // The stream's leader stops: v1's stream store waits, its bucket store does not.
    rig.nats.pause(2);
    on_a.send(retained(topic, b"v1", QoS::AtLeastOnce, Some(2)))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // B replaces it (QoS 0: the bucket only), and A's index follows the bucket.
    on_b.send(retained(topic, b"v2", QoS::AtMostOnce, None))
        .await;
    settles_on(b_addr, topic, b"v2").await;
    settles_on(a_addr, topic, b"v2").await;

    // The stream answers again: v1 is acknowledged, late.
    rig.nats.resume(2);
    let acknowledged = on_a
        .recv_within(Duration::from_secs(30))
        .await
        .expect("v1 acknowledged once its stream answers (connection closed or 30 s)");
    assert!(
        matches!(&acknowledged, Packet::PubAck(ack) if ack.packet_id == 2 && ack.reason == 0),
        "v1's answer: {acknowledged:?}"
    );
    // The bucket holds v2 (newer revision); so must every index, for good.
    for _ in 0..3 {
        for addr in [a_addr, b_addr] {
            settles_on(addr, topic, b"v2").await;
        }
    }
    let stored = async_nats::jetstream::new(admin)
        .get_key_value("FMQ_RETAIN")
        .await
        .expect("retained bucket")
        .get(ferromq::cluster::subject::retained_key(topic))
        .await
        .expect("bucket read")
        .expect("the topic's value");
    let stored = ferromq::cluster::codec::decode_message(stored).expect("a message frame");
    assert_eq!(&stored.message.payload[..], b"v2", "the bucket's value");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qos0_retained_message_is_there_for_a_subscribe_right_after_it() {
    let Some(rig) = Rig::start(1, FAST).await else {
        return;
    };
    let (mut client, _) = v5_ok(rig.addr(0), "ro-own", true, None).await;
    for round in 0..20u8 {
        let topic = format!("ro/own/{round}");
        let payload = [b'r', round];
        client
            .send(retained(&topic, &payload, QoS::AtMostOnce, None))
            .await;
        let granted = client
            .subscribe(u16::from(round) + 1, &[(&topic, QoS::AtMostOnce)])
            .await;
        assert_eq!(granted, [0]);
        let got = super::rig::next_publish(&mut client).await;
        assert!(got.retain, "round {round}: the retained copy, RETAIN set");
        assert_eq!(&got.payload[..], &payload, "round {round}");
    }
}
