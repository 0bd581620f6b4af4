//! What a cluster does not serve yet is not advertised and is refused with the reason codes
//! of MQTT 5, what it serves is advertised and granted (QoS 2: PUBLISH, SUBSCRIBE and will;
//! shared subscriptions, served across nodes: `shared.rs`, granted at most QoS 1), and
//! authorization works on every node as on one: each node reads the same `<plugins>` from
//! its own activemq.xml.

use std::time::Duration;

use bytes::Bytes;
use ferromq::protocol::{ConnectReason, Packet, ProtocolVersion, QoS};

use super::rig::{next_publish, no_publish, publish, publish_acked, v3_ok, Rig, FAST};
use crate::support::client::{connect_packet, connect_v5, will, RawClient};
use crate::support::cluster_nodes::{read_log, FerromqNode};
use crate::support::nats::{nats_server_or_skip, NatsCluster};
use crate::support::sub_options::disconnect_code;

const SECURITY: &str = r#"    <plugins>
      <simpleAuthenticationPlugin>
        <users>
          <authenticationUser username="writer" password="w" groups="writers"/>
          <authenticationUser username="reader" password="r" groups="readers"/>
        </users>
      </simpleAuthenticationPlugin>
      <authorizationPlugin><map><authorizationMap><authorizationEntries>
        <authorizationEntry topic="auth.>" read="readers,writers" write="writers" admin="readers,writers"/>
        <authorizationEntry topic="open.>" read="readers,writers" write="readers,writers" admin="readers,writers"/>
      </authorizationEntries></authorizationMap></map></authorizationPlugin>
    </plugins>"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_and_authorization_on_every_node() {
    let Some(rig) = Rig::start_with(3, FAST, SECURITY).await else {
        return;
    };
    for node in 0..3 {
        not_advertised_and_refused(&rig, node).await;
    }
    topics_too_long_for_nats_are_refused_and_the_node_keeps_serving(&rig).await;
    authorization_as_on_one_node(&rig).await;
}

/// A CONNECT of `version` logged in as `user`.
fn login(version: ProtocolVersion, id: &str, user: &str) -> ferromq::protocol::Connect {
    let mut connect = match version {
        ProtocolVersion::V5 => connect_v5(id, true, None),
        _ => connect_packet(id, true, 0),
    };
    connect.username = Some(user.into());
    connect.password = Some(Bytes::copy_from_slice(&user.as_bytes()[..1]));
    connect
}

async fn connected(
    rig: &Rig,
    node: usize,
    version: ProtocolVersion,
    id: &str,
    user: &str,
) -> RawClient {
    RawClient::connect_ok(rig.addr(node), login(version, id, user))
        .await
        .0
}

async fn not_advertised_and_refused(rig: &Rig, node: usize) {
    let addr = rig.addr(node);
    // CONNACK: Maximum QoS absent (2), Shared Subscription Available 1.
    let (mut v5, ack) =
        RawClient::connect_ok(addr, login(ProtocolVersion::V5, "ref-5", "writer")).await;
    let props = ack.properties.expect("CONNACK properties");
    assert_eq!(props.maximum_qos, None, "node {node}");
    assert_eq!(props.shared_subscription_available, Some(1), "node {node}");
    // SUBSCRIBE QoS 2 is granted 2; a shared subscription at QoS 2 is granted 1.
    assert_eq!(
        v5.subscribe_skipping(1, &[("open/q2", QoS::ExactlyOnce)])
            .await,
        [2]
    );
    assert_eq!(
        v5.subscribe_skipping(2, &[("$share/g/open/t", QoS::ExactlyOnce)])
            .await,
        [1]
    );
    // PUBLISH QoS 2: PUBREC.
    v5.send(publish("open/q2", b"x", QoS::ExactlyOnce, Some(3)))
        .await;
    assert_eq!(pubrec_of(&mut v5, 3).await, 0, "node {node}");

    let mut v3 = connected(rig, node, ProtocolVersion::V311, "ref-3", "writer").await;
    assert_eq!(
        v3.subscribe_skipping(1, &[("open/q2", QoS::ExactlyOnce)])
            .await,
        [2]
    );
    assert_eq!(
        v3.subscribe_skipping(2, &[("$share/g/open/t", QoS::AtLeastOnce)])
            .await,
        [1]
    );
    v3.send(publish("open/q2", b"x", QoS::ExactlyOnce, Some(3)))
        .await;
    assert_eq!(pubrec_of(&mut v3, 3).await, 0, "node {node}");

    // An MQTT 5 will at QoS 2: accepted.
    let mut connect = login(ProtocolVersion::V5, "ref-will", "writer");
    connect.will = Some(will("open/will", b"gone", QoS::ExactlyOnce, false));
    let (_accepted, ack) = RawClient::connect(addr, connect).await;
    assert_eq!(ack.reason, ConnectReason::Success, "node {node}");
}

/// The PUBREC of `packet_id` (PUBLISHes to the same client skipped); its reason code.
async fn pubrec_of(client: &mut RawClient, packet_id: u16) -> u8 {
    loop {
        match client.recv().await {
            Packet::PubRec(a) if a.packet_id == packet_id => return a.reason,
            Packet::Publish(_) | Packet::PingResp => {}
            other => panic!("expected PUBREC {packet_id}, got {other:?}"),
        }
    }
}

/// A topic whose NATS subject would pass nats-server's control line (4 KiB; a space is
/// escaped to three bytes) is refused for that client alone: the node's NATS connection, and
/// so every other client of the node, is untouched.
async fn topics_too_long_for_nats_are_refused_and_the_node_keeps_serving(rig: &Rig) {
    let long = format!("open/{}", "a".repeat(4_100));
    let spaced = format!("open/{}", " ".repeat(1_500));
    let mut sub = connected(rig, 0, ProtocolVersion::V5, "long-sub", "writer").await;
    assert_eq!(
        sub.subscribe(1, &[("open/after", QoS::AtLeastOnce)]).await,
        [1]
    );
    // SUBSCRIBE: 0x8F (MQTT 5), 0x80 (3.1.1), beside a filter that is served.
    assert_eq!(
        sub.subscribe(
            2,
            &[
                (long.as_str(), QoS::AtMostOnce),
                ("open/ok", QoS::AtMostOnce)
            ]
        )
        .await,
        [0x8F, 0]
    );
    let mut v3 = connected(rig, 0, ProtocolVersion::V311, "long-sub-3", "writer").await;
    assert_eq!(
        v3.subscribe(1, &[(spaced.as_str(), QoS::AtLeastOnce)])
            .await,
        [0x80]
    );
    // PUBLISH: DISCONNECT 0x90 (MQTT 5), closed (3.1.1), never acknowledged.
    let mut v5 = connected(rig, 0, ProtocolVersion::V5, "long-pub", "writer").await;
    v5.send(publish(&long, b"x", QoS::AtLeastOnce, Some(1)))
        .await;
    assert_eq!(disconnect_code(&mut v5).await, 0x90);
    let mut v3 = connected(rig, 0, ProtocolVersion::V311, "long-pub-3", "writer").await;
    v3.send(publish(&spaced, b"x", QoS::AtLeastOnce, Some(1)))
        .await;
    v3.expect_closed().await;
    // The node still stores and delivers, across nodes too.
    let mut publisher = connected(rig, 1, ProtocolVersion::V5, "long-after", "writer").await;
    assert_eq!(
        publish_acked(&mut publisher, "open/after", b"still here", 1).await,
        0
    );
    assert_eq!(&next_publish(&mut sub).await.payload[..], b"still here");
    let mut publisher = connected(rig, 0, ProtocolVersion::V5, "long-after-0", "writer").await;
    assert_eq!(
        publish_acked(&mut publisher, "open/after", b"and here", 1).await,
        0
    );
    assert_eq!(&next_publish(&mut sub).await.payload[..], b"and here");
}

async fn authorization_as_on_one_node(rig: &Rig) {
    // Readers on every node; a writer's messages on node 0 reach them all.
    let mut readers = Vec::new();
    for node in 0..3 {
        let mut r = connected(
            rig,
            node,
            ProtocolVersion::V5,
            &format!("rd-{node}"),
            "reader",
        )
        .await;
        assert_eq!(r.subscribe(1, &[("auth/#", QoS::AtLeastOnce)]).await, [1]);
        readers.push(r);
    }
    let mut writer = connected(rig, 1, ProtocolVersion::V5, "wr", "writer").await;
    assert_eq!(publish_acked(&mut writer, "auth/t", b"allowed", 1).await, 0);
    for r in &mut readers {
        let p = next_publish(r).await;
        assert_eq!(&p.payload[..], b"allowed");
        if let Some(id) = p.packet_id {
            r.send(Packet::PubAck(ferromq::protocol::Ack::new(id)))
                .await;
        }
    }
    // The reader may not write auth/...: MQTT 5 PUBACK 0x87 on every node, MQTT 3.1.1
    // acknowledged and dropped; nobody gets it.
    for node in 0..3 {
        let mut forger = connected(rig, node, ProtocolVersion::V5, "forge-5", "reader").await;
        assert_eq!(
            publish_acked(&mut forger, "auth/t", b"forged", 1).await,
            0x87,
            "node {node}"
        );
        let mut forger = connected(rig, node, ProtocolVersion::V311, "forge-3", "reader").await;
        assert_eq!(
            publish_acked(&mut forger, "auth/t", b"forged", 1).await,
            0,
            "node {node}"
        );
        forger
            .send(publish("auth/t", b"forged", QoS::AtMostOnce, None))
            .await;
    }
    for r in &mut readers {
        no_publish(r, Duration::from_millis(300)).await;
    }
    // A subscription the user may not read is refused on every node (MQTT 5 0x87).
    for node in 0..3 {
        let mut c = connected(rig, node, ProtocolVersion::V5, "no-read", "reader").await;
        assert_eq!(
            c.subscribe(1, &[("secret/t", QoS::AtLeastOnce)]).await,
            [0x87],
            "node {node}"
        );
    }
    // A wrong password is refused on every node (MQTT 5 0x86).
    for node in 0..3 {
        let mut connect = login(ProtocolVersion::V5, "bad", "writer");
        connect.password = Some(Bytes::from_static(b"nope"));
        let (_, ack) = RawClient::connect(rig.addr(node), connect).await;
        assert_eq!(
            ack.reason,
            ConnectReason::BadUserNameOrPassword,
            "node {node}"
        );
    }
}

/// An MQTT 3.1.1 client whose PUBLISH topic is too long for NATS subjects sees only a closed
/// connection: the node's log says why (the topic's length, as a subject, the limit, the
/// hint), once for the connection, without the topic or the payload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_3_1_1_publish_too_long_for_nats_is_logged_with_why() {
    if nats_server_or_skip().is_none() {
        return;
    }
    let nats = NatsCluster::start(1).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = super::start::write_node(dir.path(), &nats.client_urls());
    let log = dir.path().join("node.log");
    let mut node = FerromqNode::start_logging(&file, "info", &log);
    tokio::task::block_in_place(|| node.wait_serving());
    // 1,505 bytes; 1,500 spaces are 4,500 bytes escaped.
    let spaced = format!("open/{}", " ".repeat(1_500));
    let (mut v3, _) = v3_ok(node.mqtt_addr(), "long-pub-3", true).await;
    v3.send(publish(
        &spaced,
        b"payload-not-logged",
        QoS::AtLeastOnce,
        Some(1),
    ))
    .await;
    v3.expect_closed().await;
    let said = eventually_logged(&log, "PUBLISH refused").await;
    let lines: Vec<&str> = said
        .lines()
        .filter(|l| l.contains("PUBLISH refused"))
        .collect();
    assert_eq!(lines.len(), 1, "once for the connection:\n{said}");
    let line = lines[0];
    for part in [
        "a topic of 1505 bytes is 4514 bytes as the cluster's NATS subject",
        "above the 3584 bytes",
        "hint: publish to a shorter topic",
        "long-pub-3",
    ] {
        assert!(line.contains(part), "{part:?} missing from {line}");
    }
    assert!(
        !said.contains("payload-not-logged") && !said.contains("open/ "),
        "neither payload nor topic is logged:\n{said}"
    );
    assert!(node.terminate().is_some());
}

/// The node's log once it holds `needle` (within 5 s).
async fn eventually_logged(log: &std::path::Path, needle: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let said = read_log(log);
        if said.contains(needle) || std::time::Instant::now() > deadline {
            return said;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
