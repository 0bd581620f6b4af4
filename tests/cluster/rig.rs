//! What the behaviour tests share: a 3-server NATS cluster with ferromq nodes over it (short
//! heartbeat and quorum timings so a test does not wait for defaults), and MQTT clients on
//! any node: the raw client (exact packets and reason codes, MQTT 3.1.1 or 5) and rumqttc.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferromq::protocol::{ConnAck, Connect, Packet, Properties, ProtocolVersion, Publish, QoS};

use crate::support::client::{connect_packet, connect_v5, RawClient};
use crate::support::cluster_nodes::{node_xml_with, FerromqNode};
use crate::support::nats::{nats_server_or_skip, NatsCluster};
use crate::support::{free_port, STEP};

/// Timings for tests: a heartbeat every 200 ms, the quorum lost after 1.5 s without one,
/// a node dead after 2 s, a store ack awaited 1 s; two message shards.
pub const FAST: &str = r#"replicas="3" messageShards="2" heartbeatInterval="200ms" quorumLossTimeout="1500ms" nodeTimeout="2s" storeTimeout="1s""#;

/// A NATS cluster of 3 and ferromq nodes `node-0`.. over it.
pub struct Rig {
    pub nats: NatsCluster,
    pub nodes: Vec<FerromqNode>,
    pub dir: tempfile::TempDir,
    attributes: String,
}

impl Rig {
    /// 3 nats-servers and `nodes` ferromq nodes (started together, each waited for until it
    /// serves MQTT), with `<ferromq:jetStream>` attributes `attributes` (e.g. [`FAST`]).
    /// `None` (after a SKIP line) without nats-server.
    pub async fn start(nodes: usize, attributes: &str) -> Option<Rig> {
        Rig::start_with(nodes, attributes, "").await
    }

    /// [`Rig::start`] with `broker_children` (`<plugins>` ...) in every node's `<broker>`.
    pub async fn start_with(nodes: usize, attributes: &str, broker_children: &str) -> Option<Rig> {
        nats_server_or_skip()?;
        let nats = NatsCluster::start(3).await;
        let mut rig = Rig {
            nats,
            nodes: Vec::new(),
            dir: tempfile::tempdir().expect("tempdir"),
            attributes: attributes.to_owned(),
        };
        let files: Vec<PathBuf> = (0..nodes)
            .map(|i| rig.write_node(&format!("node-{i}"), free_port(), broker_children))
            .collect();
        let mut started: Vec<FerromqNode> = files.iter().map(|f| FerromqNode::start(f)).collect();
        tokio::task::block_in_place(|| started.iter_mut().for_each(FerromqNode::wait_serving));
        rig.nodes = started;
        Some(rig)
    }

    /// Write the configuration of node `name` on MQTT port `port` (its own data directory),
    /// with `broker_children` (plugins ...) inside `<broker>`; returns its path.
    pub fn write_node(&self, name: &str, port: u16, broker_children: &str) -> PathBuf {
        let data = self.dir.path().join(format!("{name}-{port}"));
        std::fs::create_dir_all(&data).expect("node data dir");
        let mut xml = node_xml_with(
            name,
            port,
            &self.nats.client_urls(),
            &data,
            &self.attributes,
        );
        if !broker_children.is_empty() {
            xml = xml.replacen(
                "    <persistenceAdapter>",
                &format!("{broker_children}\n    <persistenceAdapter>"),
                1,
            );
        }
        let file = data.join("activemq.xml");
        std::fs::write(&file, xml).expect("write node config");
        file
    }

    /// [`Self::write_node`] with a STOMP connector on `stomp` beside the MQTT one.
    pub fn write_stomp_node(
        &self,
        name: &str,
        port: u16,
        broker_children: &str,
        stomp: SocketAddr,
    ) -> PathBuf {
        let file = self.write_node(name, port, broker_children);
        let xml = std::fs::read_to_string(&file).expect("node config");
        let xml = xml.replacen(
            "    </transportConnectors>",
            &format!(
                "      <transportConnector name=\"stomp\" uri=\"stomp://{stomp}\"/>\n    </transportConnectors>"
            ),
            1,
        );
        std::fs::write(&file, xml).expect("write node config");
        file
    }

    /// Node `i`'s MQTT address.
    pub fn addr(&self, i: usize) -> SocketAddr {
        self.nodes[i].mqtt_addr()
    }

    /// Start node `name` on its own MQTT port, connected to nats-server `server` only, with
    /// `attributes` (waited for until it serves MQTT; not added to `nodes`).
    pub fn node_on(&self, name: &str, server: usize, attributes: &str) -> FerromqNode {
        let port = free_port();
        let data = self.dir.path().join(format!("{name}-{port}"));
        std::fs::create_dir_all(&data).expect("node data dir");
        let xml = node_xml_with(
            name,
            port,
            &[self.nats.server(server).client_url()],
            &data,
            attributes,
        );
        let file = data.join("activemq.xml");
        std::fs::write(&file, xml).expect("write node config");
        let mut node = FerromqNode::start(&file);
        tokio::task::block_in_place(|| node.wait_serving());
        node
    }
}

/// An MQTT 5 CONNECT on `addr`: clean start `clean`, Session Expiry Interval `expiry`.
pub async fn v5(
    addr: SocketAddr,
    id: &str,
    clean: bool,
    expiry: Option<u32>,
) -> (RawClient, ConnAck) {
    RawClient::connect(addr, connect_v5(id, clean, expiry)).await
}

/// An MQTT 5 client that must be accepted.
pub async fn v5_ok(
    addr: SocketAddr,
    id: &str,
    clean: bool,
    expiry: Option<u32>,
) -> (RawClient, ConnAck) {
    let (c, ack) = v5(addr, id, clean, expiry).await;
    assert_eq!(
        ack.reason,
        ferromq::protocol::ConnectReason::Success,
        "{id}: {ack:?}"
    );
    (c, ack)
}

/// An MQTT 3.1.1 CONNECT on `addr`.
pub async fn v3(addr: SocketAddr, id: &str, clean: bool) -> (RawClient, ConnAck) {
    RawClient::connect(addr, connect_packet(id, clean, 0)).await
}

/// An MQTT 3.1.1 client that must be accepted.
pub async fn v3_ok(addr: SocketAddr, id: &str, clean: bool) -> (RawClient, ConnAck) {
    let (c, ack) = v3(addr, id, clean).await;
    assert_eq!(
        ack.reason,
        ferromq::protocol::ConnectReason::Success,
        "{id}: {ack:?}"
    );
    (c, ack)
}

/// A CONNECT of `version` (3.1.1 or 5 with expiry 300 when not clean).
pub fn connect_of(version: ProtocolVersion, id: &str, clean: bool) -> Connect {
    match version {
        ProtocolVersion::V5 => connect_v5(id, clean, (!clean).then_some(300)),
        _ => connect_packet(id, clean, 0),
    }
}

/// A PUBLISH of `payload` on `topic`.
pub fn publish(topic: &str, payload: &[u8], qos: QoS, packet_id: Option<u16>) -> Packet {
    publish_with(topic, payload, qos, packet_id, None)
}

/// A PUBLISH with MQTT 5 properties.
pub fn publish_with(
    topic: &str,
    payload: &[u8],
    qos: QoS,
    packet_id: Option<u16>,
    properties: Option<Properties>,
) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic.into(),
        packet_id,
        payload: Bytes::copy_from_slice(payload),
        properties: properties.map(Box::new),
    })
}

/// QoS 1 PUBLISH and wait for its PUBACK (its reason code is returned; 0 = success).
/// Anything else arriving first (PUBLISH to the same client) is skipped.
pub async fn publish_acked(
    client: &mut RawClient,
    topic: &str,
    payload: &[u8],
    packet_id: u16,
) -> u8 {
    client
        .send(publish(topic, payload, QoS::AtLeastOnce, Some(packet_id)))
        .await;
    puback_of(client, packet_id).await
}

/// Wait for the PUBACK of `packet_id`; its reason code.
pub async fn puback_of(client: &mut RawClient, packet_id: u16) -> u8 {
    let deadline = Instant::now() + STEP * 2;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match client.recv_within(left).await {
            Some(Packet::PubAck(a)) if a.packet_id == packet_id => return a.reason,
            Some(_) => {}
            None => panic!("no PUBACK for {packet_id}"),
        }
    }
}

/// The next PUBLISH (PINGRESP and acknowledgements skipped), or `None` after `within`.
pub async fn next_publish_within(client: &mut RawClient, within: Duration) -> Option<Publish> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match client.recv_within(left).await? {
            Packet::Publish(p) => return Some(p),
            _ => continue,
        }
    }
}

/// The next PUBLISH, which must come within [`STEP`].
pub async fn next_publish(client: &mut RawClient) -> Publish {
    next_publish_within(client, STEP)
        .await
        .expect("a PUBLISH in time")
}

/// Receive `n` PUBLISHes, acknowledging the QoS 1 ones; their payloads in arrival order.
pub async fn take_acked(client: &mut RawClient, n: usize) -> Vec<Publish> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        let p = next_publish(client).await;
        if let Some(id) = p.packet_id {
            client
                .send(Packet::PubAck(ferromq::protocol::Ack::new(id)))
                .await;
        }
        got.push(p);
    }
    got
}

/// Nothing but PINGRESPs arrives for `within`.
pub async fn no_publish(client: &mut RawClient, within: Duration) {
    if let Some(p) = next_publish_within(client, within).await {
        panic!("unexpected PUBLISH on {}: {:?}", p.topic, p.payload);
    }
}

/// Publish QoS 0 `probe` messages on `topic` from `publisher` until every one of
/// `subscribers` got one (core NATS interest spreads between servers asynchronously after
/// a SUBACK, so the first live messages may find no route yet), then drain what is left of
/// them. Panics after 10 s.
pub async fn prime_live(
    publisher: &mut RawClient,
    topic: &str,
    subscribers: &mut [&mut RawClient],
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut reached = vec![false; subscribers.len()];
    while reached.iter().any(|r| !r) {
        assert!(
            Instant::now() < deadline,
            "live interest on {topic} never reached every node"
        );
        publisher
            .send(publish(topic, b"probe", QoS::AtMostOnce, None))
            .await;
        for (i, s) in subscribers.iter_mut().enumerate() {
            if !reached[i]
                && next_publish_within(s, Duration::from_millis(100))
                    .await
                    .is_some()
            {
                reached[i] = true;
            }
        }
    }
    for s in subscribers.iter_mut() {
        while next_publish_within(s, Duration::from_millis(200))
            .await
            .is_some()
        {}
    }
}

/// A PUBLISH with RETAIN set.
pub fn retained(topic: &str, payload: &[u8], qos: QoS, packet_id: Option<u16>) -> Packet {
    match publish(topic, payload, qos, packet_id) {
        Packet::Publish(p) => Packet::Publish(Publish { retain: true, ..p }),
        other => other,
    }
}

/// Subscribe `filter` on a fresh connection to `addr`: the retained messages (RETAIN set)
/// that arrive within 400 ms, as (topic, payload).
///
/// A live message is left out: a retained PUBLISH sent meanwhile (a clearing one too) also
/// reaches the new subscription as a normal message, RETAIN 0 (MQTT 5 3.3.1.3). A retained
/// message wrongly sent without RETAIN is then missing from the result, which the callers
/// compare with what they want.
pub async fn retained_at(addr: SocketAddr, filter: &str) -> Vec<(String, Vec<u8>)> {
    let (mut c, _) = v5_ok(addr, "rt-reader", true, None).await;
    c.subscribe(1, &[(filter, QoS::AtLeastOnce)]).await;
    let mut got = Vec::new();
    while let Some(p) = next_publish_within(&mut c, Duration::from_millis(400)).await {
        if let Some(id) = p.packet_id {
            c.send(Packet::PubAck(ferromq::protocol::Ack::new(id)))
                .await;
        }
        if p.retain {
            got.push((p.topic.to_string(), p.payload.to_vec()));
        }
    }
    got
}

/// [`retained_at`] until it equals `want` (each node's index follows the bucket through a
/// watch: a moment after the publisher's PUBACK); panics after 5 s with what it saw.
pub async fn eventually_retained(addr: SocketAddr, filter: &str, want: &[(&str, &[u8])]) {
    let want: Vec<(String, Vec<u8>)> = want
        .iter()
        .map(|(t, p)| (t.to_string(), p.to_vec()))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = retained_at(addr, filter).await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "retained on {addr} {filter}: {got:?}, want {want:?}"
        );
    }
}
