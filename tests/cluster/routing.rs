//! Messages between nodes with real clients: QoS 0 and 1 published on one node reach the
//! matching subscribers of every node in publisher order (exact, `+` and `#` filters; a topic
//! with spaces, dots and UTF-8), MQTT 5 properties intact, No Local honoured and nothing
//! delivered twice; retained messages set, read and cleared from any node and present on a
//! node started later; a second node with a live node's brokerName refuses to start, a node
//! restarted after SIGKILL with its own id starts. One NATS cluster and 3 nodes serve all.

use std::time::{Duration, Instant};

use ferromq::protocol::{Packet, Properties, QoS};

use super::rig::{
    eventually_retained, next_publish, next_publish_within, no_publish, prime_live, publish,
    publish_acked, publish_with, retained, retained_at, take_acked, v3_ok, v5_ok, Rig, FAST,
};
use crate::support::cluster_nodes::{ferromq_binary, FerromqNode};
use crate::support::free_port;
use crate::support::sub_options::{subscribe, Filter};

/// Spaces, dots and UTF-8 in a level: the subject codec must carry them both ways.
const ODD_TOPIC: &str = "route/é dot.s ü/x";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_and_retained_cross_every_node() {
    let Some(mut rig) = Rig::start(3, FAST).await else {
        return;
    };
    live_and_stored_messages_reach_every_node(&rig).await;
    publishers_on_every_node_keep_their_order_everywhere(&rig).await;
    mqtt5_properties_survive_the_trip(&rig).await;
    no_local_across_nodes_and_no_duplicates(&rig).await;
    wills_and_downgrades_across_nodes(&rig).await;
    retained_set_read_and_cleared_anywhere(&mut rig).await;
    node_ids_are_unique_but_a_killed_node_comes_back(&mut rig).await;
}

/// Numbers as payloads: `n` as text.
fn numbers(publishes: &[ferromq::protocol::Publish], qos: QoS) -> Vec<u32> {
    publishes
        .iter()
        .filter(|p| p.qos == qos)
        .map(|p| {
            std::str::from_utf8(&p.payload)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("a numbered payload: {:?}", p.payload))
        })
        .collect()
}

async fn live_and_stored_messages_reach_every_node(rig: &Rig) {
    const N: u32 = 25;
    // Exact on node 0 (the publisher's node), `+` on node 1, `#` on node 2 (MQTT 3.1.1), all
    // QoS 1 subscriptions.
    let (mut exact, _) = v5_ok(rig.addr(0), "rt-exact", true, None).await;
    let (mut plus, _) = v5_ok(rig.addr(1), "rt-plus", true, None).await;
    let (mut hash, _) = v3_ok(rig.addr(2), "rt-hash", true).await;
    assert_eq!(
        exact.subscribe(1, &[(ODD_TOPIC, QoS::AtLeastOnce)]).await,
        [1]
    );
    assert_eq!(
        plus.subscribe(1, &[("route/+/x", QoS::AtLeastOnce)]).await,
        [1]
    );
    assert_eq!(
        hash.subscribe(1, &[("route/#", QoS::AtLeastOnce)]).await,
        [1]
    );
    let (mut publisher, _) = v5_ok(rig.addr(0), "rt-pub", true, None).await;
    prime_live(
        &mut publisher,
        ODD_TOPIC,
        &mut [&mut exact, &mut plus, &mut hash],
    )
    .await;

    // QoS 0 and QoS 1 interleaved: each level keeps the publisher's order.
    for n in 0..N {
        let text = n.to_string();
        publisher
            .send(publish(ODD_TOPIC, text.as_bytes(), QoS::AtMostOnce, None))
            .await;
        assert_eq!(
            publish_acked(&mut publisher, ODD_TOPIC, text.as_bytes(), (n + 1) as u16).await,
            0
        );
    }
    let expected: Vec<u32> = (0..N).collect();
    for (name, sub) in [
        ("exact", &mut exact),
        ("plus", &mut plus),
        ("hash", &mut hash),
    ] {
        let got = take_acked(sub, 2 * N as usize).await;
        assert!(
            got.iter().all(|p| p.topic.as_ref() as &str == ODD_TOPIC),
            "{name}"
        );
        assert_eq!(
            numbers(&got, QoS::AtMostOnce),
            expected,
            "{name}: QoS 0 order"
        );
        assert_eq!(
            numbers(&got, QoS::AtLeastOnce),
            expected,
            "{name}: QoS 1 order"
        );
        no_publish(sub, Duration::from_millis(300)).await;
    }
    // A topic no filter matches reaches nobody.
    publish_acked(&mut publisher, "route/other/y", b"x", 900).await;
    for sub in [&mut exact, &mut plus] {
        no_publish(sub, Duration::from_millis(300)).await;
    }
    let got = take_acked(&mut hash, 1).await;
    assert_eq!(got[0].topic.as_ref() as &str, "route/other/y");
}

/// One QoS 1 publisher per node, all at once on one topic: every subscriber (one per node)
/// gets every message once, each publisher's in its order.
async fn publishers_on_every_node_keep_their_order_everywhere(rig: &Rig) {
    const N: usize = 40;
    let mut subscribers = Vec::new();
    for node in 0..3 {
        let (mut s, _) = v5_ok(rig.addr(node), &format!("mp-sub-{node}"), true, None).await;
        s.subscribe(1, &[("many/+", QoS::AtLeastOnce)]).await;
        subscribers.push(s);
    }
    let publishers: Vec<_> = (0..3)
        .map(|node| {
            let addr = rig.addr(node);
            tokio::spawn(async move {
                let (mut p, _) = v5_ok(addr, &format!("mp-pub-{node}"), true, None).await;
                for n in 0..N {
                    let text = format!("{node}:{n}");
                    let id = u16::try_from(n + 1).expect("small");
                    assert_eq!(
                        publish_acked(&mut p, "many/t", text.as_bytes(), id).await,
                        0
                    );
                }
            })
        })
        .collect();
    for p in publishers {
        p.await.expect("publisher");
    }
    for (node, s) in subscribers.iter_mut().enumerate() {
        let got = take_acked(s, 3 * N).await;
        let mut per_publisher = vec![Vec::new(); 3];
        for p in &got {
            let text = std::str::from_utf8(&p.payload).expect("utf-8");
            let (from, n) = text.split_once(':').expect("from:n");
            let from: usize = from.parse().expect("node");
            per_publisher[from].push(n.parse::<usize>().expect("n"));
        }
        for (from, numbers) in per_publisher.iter().enumerate() {
            assert_eq!(
                *numbers,
                (0..N).collect::<Vec<_>>(),
                "node {node} from {from}"
            );
        }
        no_publish(s, Duration::from_millis(200)).await;
    }
}

fn rich_properties() -> Properties {
    Properties {
        payload_format_indicator: Some(1),
        message_expiry_interval: Some(300),
        content_type: Some("text/plain; charset=utf-8".into()),
        response_topic: Some("reply/é".into()),
        correlation_data: Some(bytes::Bytes::from_static(b"\x00corr\xff")),
        user_properties: vec![
            ("k".into(), "v1".into()),
            ("k".into(), "v2".into()),
            ("ü".into(), "".into()),
        ],
        ..Properties::default()
    }
}

async fn mqtt5_properties_survive_the_trip(rig: &Rig) {
    let (mut on1, _) = v5_ok(rig.addr(1), "pr-1", true, None).await;
    let (mut on2, _) = v5_ok(rig.addr(2), "pr-2", true, None).await;
    on1.subscribe(1, &[("props/#", QoS::AtLeastOnce)]).await;
    on2.subscribe(1, &[("props/#", QoS::AtLeastOnce)]).await;
    let (mut publisher, _) = v5_ok(rig.addr(0), "pr-pub", true, None).await;
    prime_live(&mut publisher, "props/probe", &mut [&mut on1, &mut on2]).await;

    for (qos, id) in [(QoS::AtMostOnce, None), (QoS::AtLeastOnce, Some(7))] {
        publisher
            .send(publish_with(
                "props/a",
                b"{}",
                qos,
                id,
                Some(rich_properties()),
            ))
            .await;
        for sub in [&mut on1, &mut on2] {
            let got = take_acked(sub, 1).await.remove(0);
            assert_eq!(got.qos, qos);
            let p = got.properties.expect("properties");
            let want = rich_properties();
            assert_eq!(p.payload_format_indicator, want.payload_format_indicator);
            assert_eq!(p.content_type, want.content_type);
            assert_eq!(p.response_topic, want.response_topic);
            assert_eq!(p.correlation_data, want.correlation_data);
            assert_eq!(
                p.user_properties, want.user_properties,
                "order and repeats kept"
            );
            let expiry = p.message_expiry_interval.expect("expiry forwarded");
            assert!((298..=300).contains(&expiry), "remaining expiry {expiry}");
        }
    }
    // The real-client view: rumqttc's MQTT 5 client publishes, rumqttc 3.1.1 on another
    // node gets the payload (3.1.1 has no properties).
    let mut v3 = crate::support::Client::connect(rig.addr(2), "pr-rumqttc-v3").await;
    v3.subscribe("props/rumqttc", rumqttc::QoS::AtLeastOnce)
        .await;
    let (client, events) = rumqttc_v5(rig.addr(1), "pr-rumqttc-v5");
    let properties = rumqttc::v5::mqttbytes::v5::PublishProperties {
        content_type: Some("application/json".into()),
        user_properties: vec![("from".into(), "rumqttc".into())],
        correlation_data: Some(bytes::Bytes::from_static(b"id-1")),
        response_topic: Some("props/answer".into()),
        ..Default::default()
    };
    client
        .publish_with_properties(
            "props/rumqttc",
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            false,
            "json",
            properties,
        )
        .await
        .expect("publish");
    let got = v3.next_publish().await;
    assert_eq!(&got.payload[..], b"json");
    let raw = take_acked(&mut on1, 1).await.remove(0);
    let p = raw.properties.expect("properties from rumqttc");
    assert_eq!(p.content_type.as_deref(), Some("application/json"));
    assert_eq!(p.user_properties, vec![("from".into(), "rumqttc".into())]);
    assert_eq!(p.response_topic.as_deref(), Some("props/answer"));
    assert_eq!(p.correlation_data.as_deref(), Some(&b"id-1"[..]));
    events.abort();
    v3.disconnect().await;
}

/// A rumqttc MQTT 5 client whose event loop runs (and is dropped with the handle).
fn rumqttc_v5(
    addr: std::net::SocketAddr,
    id: &str,
) -> (rumqttc::v5::AsyncClient, tokio::task::JoinHandle<()>) {
    let options = rumqttc::v5::MqttOptions::new(id, addr.ip().to_string(), addr.port());
    let (client, mut eventloop) = rumqttc::v5::AsyncClient::new(options, 100);
    let task = tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    (client, task)
}

async fn no_local_across_nodes_and_no_duplicates(rig: &Rig) {
    // `me` on node 0 asks for No Local; `plain` on node 0 and `far` on node 1 do not.
    let (mut me, _) = v5_ok(rig.addr(0), "nl-me", true, None).await;
    let (mut plain, _) = v5_ok(rig.addr(0), "nl-plain", true, None).await;
    let (mut far, _) = v5_ok(rig.addr(1), "nl-far", true, None).await;
    let own = [Filter::new("nl/#", QoS::AtLeastOnce).no_local()];
    assert_eq!(subscribe(&mut me, 1, &own, None).await, [1]);
    plain.subscribe(1, &[("nl/#", QoS::AtLeastOnce)]).await;
    far.subscribe(1, &[("nl/#", QoS::AtLeastOnce)]).await;
    prime_live(&mut me, "nl/probe", &mut [&mut plain, &mut far]).await;

    me.send(publish("nl/a", b"q0", QoS::AtMostOnce, None)).await;
    assert_eq!(publish_acked(&mut me, "nl/a", b"q1", 3).await, 0);
    for sub in [&mut plain, &mut far] {
        let got = take_acked(sub, 2).await;
        let mut payloads: Vec<&[u8]> = got.iter().map(|p| &p.payload[..]).collect();
        payloads.sort();
        assert_eq!(payloads, [&b"q0"[..], b"q1"]);
        // The node's own copy and the one back from NATS are one delivery.
        no_publish(sub, Duration::from_millis(500)).await;
    }
    no_publish(&mut me, Duration::from_millis(300)).await;
}

async fn retained_set_read_and_cleared_anywhere(rig: &mut Rig) {
    let (mut a, _) = v5_ok(rig.addr(0), "ret-a", true, None).await;
    a.send(retained(ODD_TOPIC, b"kept", QoS::AtLeastOnce, Some(1)))
        .await;
    assert_eq!(super::rig::puback_of(&mut a, 1).await, 0);
    let started = Instant::now();
    eventually_retained(rig.addr(2), "route/#", &[(ODD_TOPIC, b"kept")]).await;
    eprintln!(
        "retained visible on node 2 {:?} after the PUBACK on node 0",
        started.elapsed()
    );
    eventually_retained(rig.addr(0), "route/#", &[(ODD_TOPIC, b"kept")]).await;

    // Cleared on node 1 (3.1.1, QoS 0, empty payload): gone on 0 and 2.
    let (mut b, _) = v3_ok(rig.addr(1), "ret-b", true).await;
    b.send(retained(ODD_TOPIC, b"", QoS::AtMostOnce, None))
        .await;
    eventually_retained(rig.addr(0), "route/#", &[]).await;
    eventually_retained(rig.addr(2), "route/#", &[]).await;

    // Set again; a node started afterwards has it at once.
    a.send(retained(
        "route/late",
        b"for the newcomer",
        QoS::AtLeastOnce,
        Some(2),
    ))
    .await;
    assert_eq!(super::rig::puback_of(&mut a, 2).await, 0);
    let file = rig.write_node("node-3", free_port(), "");
    let late = tokio::task::block_in_place(|| FerromqNode::spawn(&file));
    assert_eq!(
        retained_at(late.mqtt_addr(), "route/#").await,
        vec![("route/late".to_owned(), b"for the newcomer".to_vec())]
    );
    rig.nodes.push(late);
}

/// A will of a client dropped on node 0 reaches a subscriber on node 2; a QoS 1 message is
/// delivered at QoS 0 to a QoS 0 subscription on another node; a retained message keeps its
/// MQTT 5 properties through the bucket.
async fn wills_and_downgrades_across_nodes(rig: &Rig) {
    let (mut watcher, _) = v5_ok(rig.addr(2), "will-watch", true, None).await;
    watcher.subscribe(1, &[("wills/#", QoS::AtLeastOnce)]).await;
    let mut connect = crate::support::client::connect_packet("will-v3", true, 0);
    connect.will = Some(crate::support::client::will(
        "wills/v3",
        b"gone",
        QoS::AtLeastOnce,
        false,
    ));
    let (dying, ack) = crate::support::client::RawClient::connect(rig.addr(0), connect).await;
    assert_eq!(ack.reason, ferromq::protocol::ConnectReason::Success);
    drop(dying);
    let got = take_acked(&mut watcher, 1).await;
    assert_eq!(
        (&got[0].topic[..], &got[0].payload[..]),
        ("wills/v3", &b"gone"[..])
    );
    assert_eq!(got[0].qos, QoS::AtLeastOnce);

    let (mut low, _) = v3_ok(rig.addr(1), "qos0-sub", true).await;
    assert_eq!(low.subscribe(1, &[("down/t", QoS::AtMostOnce)]).await, [0]);
    let (mut publisher, _) = v5_ok(rig.addr(0), "down-pub", true, None).await;
    assert_eq!(publish_acked(&mut publisher, "down/t", b"q1", 1).await, 0);
    let got = next_publish(&mut low).await;
    assert_eq!(
        (got.qos, got.packet_id, &got.payload[..]),
        (QoS::AtMostOnce, None, &b"q1"[..])
    );

    let mut props = rich_properties();
    props.message_expiry_interval = None;
    let retained_with_properties = match publish_with(
        "retprops/t",
        b"r",
        QoS::AtLeastOnce,
        Some(2),
        Some(props.clone()),
    ) {
        Packet::Publish(p) => Packet::Publish(ferromq::protocol::Publish { retain: true, ..p }),
        other => other,
    };
    publisher.send(retained_with_properties).await;
    assert_eq!(super::rig::puback_of(&mut publisher, 2).await, 0);
    let deadline = Instant::now() + Duration::from_secs(5);
    let got = loop {
        let (mut reader, _) = v5_ok(rig.addr(2), "retprops-reader", true, None).await;
        reader
            .subscribe(1, &[("retprops/#", QoS::AtLeastOnce)])
            .await;
        if let Some(p) = next_publish_within(&mut reader, Duration::from_millis(400)).await {
            break p;
        }
        assert!(
            Instant::now() < deadline,
            "the retained message never reached node 2"
        );
    };
    let p = got.properties.expect("retained properties");
    assert_eq!(p.user_properties, props.user_properties);
    assert_eq!(p.content_type, props.content_type);
    assert_eq!(p.correlation_data, props.correlation_data);
    assert_eq!(p.response_topic, props.response_topic);
    publisher
        .send(retained("retprops/t", b"", QoS::AtMostOnce, None))
        .await;
}

async fn node_ids_are_unique_but_a_killed_node_comes_back(rig: &mut Rig) {
    // A second process calling itself node-0 while node-0 lives.
    let file = rig.write_node("node-0", free_port(), "");
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(ferromq_binary())
            .args(["run", "--config"])
            .arg(&file)
            .args(["--log-level", "warn"])
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run ferromq")
    });
    let output = tokio::time::timeout(Duration::from_secs(30), output)
        .await
        .expect("the duplicate node exits by itself")
        .expect("join");
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "a duplicate node id must not start: {text}"
    );
    assert!(
        text.contains("node-0"),
        "the message names the brokerName: {text}"
    );

    // node-2 SIGKILLed (its heartbeat is still fresh) and started again with its own id.
    let config = rig.nodes[2].config.clone();
    rig.nodes[2].kill();
    let started = Instant::now();
    rig.nodes[2] = tokio::task::block_in_place(|| FerromqNode::spawn(&config));
    eprintln!(
        "node-2 serves again {:?} after its SIGKILL",
        started.elapsed()
    );
    // And it routes: a QoS 1 message from node 0 reaches a subscriber on it.
    let (mut sub, _) = v5_ok(rig.addr(2), "back-sub", true, None).await;
    sub.subscribe(1, &[("back/t", QoS::AtLeastOnce)]).await;
    let (mut publisher, _) = v5_ok(rig.addr(0), "back-pub", true, None).await;
    assert_eq!(
        publish_acked(&mut publisher, "back/t", b"hello", 1).await,
        0
    );
    assert_eq!(&next_publish(&mut sub).await.payload[..], b"hello");
}
