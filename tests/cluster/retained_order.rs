//! Every node's retained index converges on the bucket whatever order its changes arrive in.
//!
//! A QoS 1 retained publish is acknowledged once its message stream and the retained bucket
//! both stored it. When the bucket answers at once and the stream late (its leader stopped),
//! another node's newer retained value for the same topic can reach every index meanwhile; the
//! late acknowledgement must not put the older value back on the publisher's node (it would
//! stay there, the other nodes serving the newer one, until the topic changed again).
//! And a retained message published at QoS 0 is there for a SUBSCRIBE on the same
//! connection right after it.

use std::net::SocketAddr;
use std::time::Duration;

use ferromq::protocol::{Ack, Packet, QoS};

use super::chaos::rig::faults::make_leader;
use super::rig::{next_publish_within, puback_of, retained, v5_ok, Rig, FAST};
use crate::support::client::{subscribe_packet, RawClient};

/// [`FAST`] with a `storeTimeout` long enough to outlast the stopped stream leader, so the
/// late store is acknowledged rather than refused.
fn patient() -> String {
    FAST.replace(r#"storeTimeout="1s""#, r#"storeTimeout="20s""#)
}

/// One node's retained set as a client sees it: one connection, re-subscribing to read
/// (Retain Handling 0 sends the retained messages at every SUBSCRIBE, 3.3.1.3), made again
/// when the node closes it. Stopping a nats-server can cost the nodes on the other servers
/// their NATS connection for a while (its routes stall), and a new CONNECT then waits for the
/// session bucket; a connection made before the stop only needs the node's own index.
struct Reader {
    addr: SocketAddr,
    name: String,
    client: Option<RawClient>,
    packet_id: u16,
}

impl Reader {
    async fn connect(addr: SocketAddr, name: &str) -> Reader {
        let (client, _) = v5_ok(addr, name, true, None).await;
        Reader {
            addr,
            name: name.to_owned(),
            client: Some(client),
            packet_id: 0,
        }
    }

    /// The retained messages of `ro/#` as (topic, payload); `None` when the node did not
    /// answer (the connection is made again at the next read).
    async fn read(&mut self) -> Option<Vec<(String, Vec<u8>)>> {
        let client = match self.client.take() {
            Some(client) => client,
            None => {
                let (addr, name) = (self.addr, self.name.clone());
                // A panic (no CONNACK in time) is a read that failed, not the test's.
                tokio::spawn(async move { v5_ok(addr, &name, true, None).await.0 })
                    .await
                    .ok()?
            }
        };
        self.packet_id = self.packet_id.wrapping_add(1).max(1);
        let id = self.packet_id;
        let (client, got) = tokio::spawn(async move {
            let mut client = client;
            let got = subscribe_for_retained(&mut client, id).await;
            (client, got)
        })
        .await
        .ok()?;
        if got.is_some() {
            self.client = Some(client);
        }
        got
    }

    /// [`Reader::read`] until `topic` alone holds `payload` (60 s bound).
    async fn settles_on(&mut self, topic: &str, payload: &[u8]) {
        let want = vec![(topic.to_owned(), payload.to_vec())];
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let got = self.read().await;
            if got.as_ref() == Some(&want) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "retained on {} ({}): {got:?}, want {want:?}",
                self.name,
                self.addr
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// SUBSCRIBE `ro/#` (packet id `id`) and collect the retained messages that follow its
/// SUBACK; a message delivered live meanwhile (v1 reaching its subscribers late) is not one.
async fn subscribe_for_retained(client: &mut RawClient, id: u16) -> Option<Vec<(String, Vec<u8>)>> {
    client
        .send(subscribe_packet(id, &[("ro/#", QoS::AtMostOnce)]))
        .await;
    loop {
        match client.recv_within(Duration::from_secs(10)).await? {
            Packet::SubAck(ack) if ack.packet_id == id => break,
            _ => continue,
        }
    }
    let mut got = Vec::new();
    while let Some(p) = next_publish_within(client, Duration::from_millis(400)).await {
        if p.retain {
            got.push((p.topic.to_string(), p.payload.to_vec()));
        }
    }
    Some(got)
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
    let mut on_a_read = Reader::connect(a_addr, "ro-reader-a").await;
    let mut on_b_read = Reader::connect(b_addr, "ro-reader-b").await;
    on_b_read.settles_on(topic, b"v0").await;

    let (mut on_b, _) = v5_ok(b_addr, "ro-b", true, None).await;
    // The stream's leader stops: v1's stream store waits, its bucket store does not.
    rig.nats.pause(2);
    on_a.send(retained(topic, b"v1", QoS::AtLeastOnce, Some(2)))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // B replaces it (QoS 0: the bucket only), and A's index follows the bucket.
    on_b.send(retained(topic, b"v2", QoS::AtMostOnce, None))
        .await;
    on_b_read.settles_on(topic, b"v2").await;
    on_a_read.settles_on(topic, b"v2").await;

    // The stream answers again: v1 is acknowledged, late.
    rig.nats.resume(2);
    let acknowledged = on_a
        .recv_within(Duration::from_secs(60))
        .await
        .expect("v1 acknowledged once its stream answers (connection closed or 60 s)");
    assert!(
        matches!(&acknowledged, Packet::PubAck(ack) if ack.packet_id == 2 && ack.reason == 0),
        "v1's answer: {acknowledged:?}"
    );
    // The bucket holds v2 (newer revision); so must every index, for good.
    for _ in 0..3 {
        on_a_read.settles_on(topic, b"v2").await;
        on_b_read.settles_on(topic, b"v2").await;
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

/// A retained QoS 0 message is there for a SUBSCRIBE right after it on the same connection,
/// and no live copy follows the retained one (the node delivers its own QoS 0 messages at
/// their publish, not when NATS echoes them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qos0_retained_message_is_there_for_a_subscribe_right_after_it() {
    publish_retained_then_subscribe(QoS::AtMostOnce).await;
}

/// A QoS 1 retained message acknowledged before a SUBSCRIBE on the same node reaches the new
/// subscription once, as its retained copy: the node's reader, which may read the message
/// from its stream after the SUBSCRIBE, does not add a live copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qos1_retained_message_acknowledged_before_a_subscribe_comes_once() {
    publish_retained_then_subscribe(QoS::AtLeastOnce).await;
}

/// 20 rounds on one connection to a one-node cluster: publish a retained message at `qos`
/// (acknowledged first at QoS 1), subscribe to its topic at `qos`, and get its retained copy;
/// at the end, nothing else arrives.
async fn publish_retained_then_subscribe(qos: QoS) {
    let Some(rig) = Rig::start(1, FAST).await else {
        return;
    };
    let (mut client, _) = v5_ok(rig.addr(0), "ro-own", true, None).await;
    for round in 0..20u8 {
        let topic = format!("ro/own/{round}");
        let payload = [b'r', round];
        let packet_id = u16::from(round) + 1;
        let acknowledged = qos != QoS::AtMostOnce;
        client
            .send(retained(
                &topic,
                &payload,
                qos,
                acknowledged.then_some(packet_id),
            ))
            .await;
        if acknowledged {
            assert_eq!(puback_of(&mut client, packet_id).await, 0, "round {round}");
        }
        let granted = client.subscribe(packet_id, &[(&topic, qos)]).await;
        assert_eq!(granted, [qos as u8]);
        let got = super::rig::next_publish(&mut client).await;
        assert!(got.retain, "round {round}: the retained copy, RETAIN set");
        assert_eq!(&got.payload[..], &payload, "round {round}");
        if let Some(id) = got.packet_id {
            client.send(Packet::PubAck(Ack::new(id))).await;
        }
    }
    super::rig::no_publish(&mut client, Duration::from_millis(500)).await;
}
