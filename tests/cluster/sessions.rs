//! Sessions across nodes with real clients: a persistent session left on one node resumes on
//! another with session present and its offline messages in order (MQTT 3.1.1 with rumqttc,
//! MQTT 5 with clean start 0 and an expiry); unacknowledged QoS 1 messages are re-sent first
//! on the new node, DUP set, in their order, under their packet ids; the same client id on a
//! second node takes the session over and the first connection is closed (MQTT 5:
//! DISCONNECT 0x8E, Session taken over), for clean sessions too.

use std::time::Duration;

use ferromq::protocol::{Ack, Disconnect, Packet, ProtocolVersion, QoS};

use super::rig::{
    connect_of, next_publish, no_publish, publish_acked, take_acked, v3_ok, v5_ok, Rig, FAST,
};
use crate::support::client::RawClient;
use crate::support::sub_options::disconnect_code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_move_between_nodes() {
    let Some(mut rig) = Rig::start(3, FAST).await else {
        return;
    };
    offline_messages_follow_a_v311_session_to_another_node(&rig).await;
    offline_messages_follow_a_v5_session_to_another_node(&rig).await;
    in_flight_messages_are_resent_first_on_the_new_node(&rig, ProtocolVersion::V311).await;
    in_flight_messages_are_resent_first_on_the_new_node(&rig, ProtocolVersion::V5).await;
    takeover_across_nodes_closes_the_old_connection(&rig).await;
    subscription_changes_follow_the_session(&rig).await;
    a_session_comes_back_to_a_node_it_left(&rig).await;
    a_takeover_moves_the_unacknowledged_messages(&rig).await;
    expired_messages_are_not_delivered_on_resume(&rig).await;
    an_expired_session_is_not_resumed_elsewhere(&rig).await;
    a_new_session_is_found_on_another_node_right_after_its_connack(&rig).await;
    // Last: it kills node 0.
    sessions_of_a_killed_node_resume_elsewhere_with_nothing_lost(&mut rig).await;
}

/// A new persistent session's CONNACK promises a session its client may resume anywhere:
/// dropped at once and connected to the next node, the client finds it (session present 1).
/// Its record was written in the background after the CONNACK, so a client that came back
/// within a millisecond or so got a new session there instead.
async fn a_new_session_is_found_on_another_node_right_after_its_connack(rig: &Rig) {
    for round in 0..30 {
        let id = format!("fresh-{round}");
        let (first, ack) = v5_ok(rig.addr(round % 3), &id, false, Some(300)).await;
        assert!(!ack.session_present, "{id}: a new session");
        drop(first);
        let (mut second, ack) = v5_ok(rig.addr((round + 1) % 3), &id, false, Some(300)).await;
        assert!(ack.session_present, "{id}: resumed on the next node");
        second
            .send(Packet::Disconnect(Disconnect {
                reason: 0,
                properties: None,
            }))
            .await;
    }
}

fn text(n: usize) -> Vec<u8> {
    format!("m{n:03}").into_bytes()
}

/// Publish `count` QoS 1 messages `m000`.. on `topic` through node `node`, each acknowledged.
async fn publish_numbered(rig: &Rig, node: usize, topic: &str, from: usize, count: usize) {
    let (mut publisher, _) = v5_ok(rig.addr(node), &format!("pub-{topic}"), true, None).await;
    for n in from..from + count {
        let id = u16::try_from(n + 1).expect("small");
        assert_eq!(
            publish_acked(&mut publisher, topic, &text(n), id).await,
            0,
            "{n}"
        );
    }
    publisher
        .send(Packet::Disconnect(Disconnect {
            reason: 0,
            properties: None,
        }))
        .await;
}

async fn offline_messages_follow_a_v311_session_to_another_node(rig: &Rig) {
    const N: usize = 30;
    let mut options = crate::support::options(rig.addr(0), "sess-v3");
    options.set_clean_session(false);
    let mut first = crate::support::Client::connect_with(options.clone()).await;
    assert!(!first.session_present);
    first
        .subscribe("sess/v3/#", rumqttc::QoS::AtLeastOnce)
        .await;
    first.disconnect().await;

    publish_numbered(rig, 1, "sess/v3/t", 0, N).await;

    let mut options = crate::support::options(rig.addr(2), "sess-v3");
    options.set_clean_session(false);
    let mut resumed = crate::support::Client::connect_with(options).await;
    assert!(
        resumed.session_present,
        "the session was found on another node"
    );
    for n in 0..N {
        let p = resumed.next_publish().await;
        assert_eq!(
            (p.topic.as_str(), &p.payload[..]),
            ("sess/v3/t", &text(n)[..])
        );
        assert_eq!(p.qos, rumqttc::QoS::AtLeastOnce);
    }
    resumed.no_publish_within(Duration::from_millis(300)).await;
    resumed.disconnect().await;
}

async fn offline_messages_follow_a_v5_session_to_another_node(rig: &Rig) {
    const N: usize = 30;
    let (mut first, ack) = v5_ok(rig.addr(1), "sess-v5", false, Some(300)).await;
    assert!(!ack.session_present);
    first.subscribe(1, &[("sess/v5/+", QoS::AtLeastOnce)]).await;
    first
        .send(Packet::Disconnect(Disconnect {
            reason: 0,
            properties: None,
        }))
        .await;
    first.expect_closed().await;

    publish_numbered(rig, 2, "sess/v5/t", 0, N).await;

    let (mut resumed, ack) = v5_ok(rig.addr(0), "sess-v5", false, Some(300)).await;
    assert!(ack.session_present, "the session was found on another node");
    let got = take_acked(&mut resumed, N).await;
    let payloads: Vec<Vec<u8>> = got.iter().map(|p| p.payload.to_vec()).collect();
    assert_eq!(
        payloads,
        (0..N).map(text).collect::<Vec<_>>(),
        "all, in order"
    );
    assert!(got.iter().all(|p| p.qos == QoS::AtLeastOnce && !p.dup));
    no_publish(&mut resumed, Duration::from_millis(300)).await;
    // Clean start ends it everywhere: a later resume finds nothing.
    resumed
        .send(Packet::Disconnect(Disconnect {
            reason: 0,
            properties: None,
        }))
        .await;
    let (clean, ack) = v5_ok(rig.addr(2), "sess-v5", true, None).await;
    assert!(!ack.session_present);
    drop(clean);
}

async fn in_flight_messages_are_resent_first_on_the_new_node(rig: &Rig, version: ProtocolVersion) {
    const N: usize = 10;
    const ACKED: usize = 4;
    let id = format!("inflight-{version:?}");
    let topic = format!("inflight/{version:?}");
    let (mut sub, _) = RawClient::connect_ok(rig.addr(0), connect_of(version, &id, false)).await;
    assert_eq!(sub.subscribe(1, &[(&topic, QoS::AtLeastOnce)]).await, [1]);

    publish_numbered(rig, 1, &topic, 0, N).await;
    let mut ids = Vec::new();
    for n in 0..N {
        let p = next_publish(&mut sub).await;
        assert_eq!(&p.payload[..], &text(n)[..]);
        ids.push(p.packet_id.expect("QoS 1"));
        if n < ACKED {
            sub.send(Packet::PubAck(Ack::new(ids[n]))).await;
        }
    }
    // The node has taken the 4 PUBACKs once it answers a PINGREQ sent after them: a takeover
    // of a connection that has not read them yet re-sends those messages too (QoS 1 allows
    // it; this test checks the in-flight window, not that race).
    sub.send(Packet::PingReq).await;
    assert_eq!(sub.recv().await, Packet::PingResp, "{version:?}: PINGRESP");
    // Gone without DISCONNECT, 6 messages unacknowledged.
    drop(sub);

    let (mut resumed, ack) =
        RawClient::connect_ok(rig.addr(2), connect_of(version, &id, false)).await;
    assert!(ack.session_present, "{version:?}");
    for (n, want_id) in ids.iter().enumerate().skip(ACKED) {
        let p = next_publish(&mut resumed).await;
        assert_eq!(
            &p.payload[..],
            &text(n)[..],
            "{version:?}: re-sent in order"
        );
        assert!(p.dup, "{version:?}: a re-sent message has DUP set");
        assert_eq!(
            p.packet_id,
            Some(*want_id),
            "{version:?}: its packet id kept"
        );
        resumed.send(Packet::PubAck(Ack::new(*want_id))).await;
    }
    // Then the new ones, after the re-sent.
    publish_numbered(rig, 0, &topic, N, 2).await;
    let got = take_acked(&mut resumed, 2).await;
    assert_eq!(&got[0].payload[..], &text(N)[..]);
    assert_eq!(&got[1].payload[..], &text(N + 1)[..]);
    assert!(!got[0].dup && !got[1].dup);
    no_publish(&mut resumed, Duration::from_millis(300)).await;
    resumed
        .send(Packet::Disconnect(Disconnect {
            reason: 0,
            properties: None,
        }))
        .await;
}

async fn takeover_across_nodes_closes_the_old_connection(rig: &Rig) {
    // MQTT 5, persistent: DISCONNECT 0x8E to the old one, session present to the new one.
    let (mut old, _) = v5_ok(rig.addr(0), "take-5", false, Some(300)).await;
    old.subscribe(1, &[("take/5", QoS::AtLeastOnce)]).await;
    let (mut new, ack) = v5_ok(rig.addr(1), "take-5", false, Some(300)).await;
    assert!(ack.session_present);
    assert_eq!(disconnect_code(&mut old).await, 0x8E, "Session taken over");
    // The subscription moved with it.
    publish_numbered(rig, 2, "take/5", 0, 1).await;
    assert_eq!(&take_acked(&mut new, 1).await[0].payload[..], &text(0)[..]);

    // MQTT 3.1.1, persistent: the old connection is closed.
    let (mut old, _) = v3_ok(rig.addr(2), "take-3", false).await;
    old.subscribe(1, &[("take/3", QoS::AtLeastOnce)]).await;
    let (mut new, ack) = v3_ok(rig.addr(0), "take-3", false).await;
    assert!(ack.session_present);
    old.expect_closed().await;
    publish_numbered(rig, 1, "take/3", 0, 1).await;
    assert_eq!(&take_acked(&mut new, 1).await[0].payload[..], &text(0)[..]);

    // Clean sessions: a clean connect on node 1 kicks the clean one on node 0 too.
    let (mut old, _) = v3_ok(rig.addr(0), "take-clean", true).await;
    let (_new, ack) = v3_ok(rig.addr(1), "take-clean", true).await;
    assert!(!ack.session_present);
    old.expect_closed().await;
    let (mut old, _) = v5_ok(rig.addr(2), "take-clean-5", true, None).await;
    let (_new, _) = v5_ok(rig.addr(0), "take-clean-5", true, None).await;
    assert_eq!(disconnect_code(&mut old).await, 0x8E);
}

/// Subscribed on node 0, a second filter added on node 1 and the first removed: a resume on
/// node 2 has exactly the second.
async fn subscription_changes_follow_the_session(rig: &Rig) {
    let (mut c, _) = v5_ok(rig.addr(0), "subs-move", false, Some(300)).await;
    c.subscribe(1, &[("subs/one", QoS::AtLeastOnce)]).await;
    drop(c);
    let (mut c, ack) = v5_ok(rig.addr(1), "subs-move", false, Some(300)).await;
    assert!(ack.session_present);
    c.subscribe(2, &[("subs/two", QoS::AtLeastOnce)]).await;
    c.send(Packet::Unsubscribe(ferromq::protocol::Unsubscribe {
        packet_id: 3,
        filters: vec!["subs/one".into()],
        properties: None,
    }))
    .await;
    match c.recv().await {
        Packet::UnsubAck(a) => assert_eq!(a.reason_codes, [0]),
        other => panic!("expected UNSUBACK, got {other:?}"),
    }
    c.send(Packet::Disconnect(Disconnect {
        reason: 0,
        properties: None,
    }))
    .await;
    c.expect_closed().await;

    publish_numbered(rig, 0, "subs/one", 0, 1).await;
    publish_numbered(rig, 0, "subs/two", 1, 1).await;
    let (mut c, ack) = v5_ok(rig.addr(2), "subs-move", false, Some(300)).await;
    assert!(ack.session_present);
    let got = take_acked(&mut c, 1).await;
    assert_eq!(
        (&got[0].topic[..], &got[0].payload[..]),
        ("subs/two", &text(1)[..])
    );
    no_publish(&mut c, Duration::from_millis(300)).await;
}

/// A message stored for an offline session with a Message Expiry Interval of 1 s is not
/// delivered when the session resumes on another node 2 s later; one without expiry is, with
/// the remaining interval of one that has time left.
async fn expired_messages_are_not_delivered_on_resume(rig: &Rig) {
    use ferromq::protocol::Properties;
    let (mut c, _) = v5_ok(rig.addr(0), "expiry", false, Some(300)).await;
    c.subscribe(1, &[("exp/t", QoS::AtLeastOnce)]).await;
    drop(c);
    let (mut p, _) = v5_ok(rig.addr(1), "expiry-pub", true, None).await;
    for (id, payload, expiry) in [
        (1, "short", Some(1)),
        (2, "long", Some(600)),
        (3, "none", None),
    ] {
        let properties = expiry.map(|secs| Properties {
            message_expiry_interval: Some(secs),
            ..Properties::default()
        });
        p.send(super::rig::publish_with(
            "exp/t",
            payload.as_bytes(),
            QoS::AtLeastOnce,
            Some(id),
            properties,
        ))
        .await;
        assert_eq!(super::rig::puback_of(&mut p, id).await, 0);
    }
    // Message expiry is a matter of time: let the first one's second pass.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (mut c, ack) = v5_ok(rig.addr(2), "expiry", false, Some(300)).await;
    assert!(ack.session_present);
    let got = take_acked(&mut c, 2).await;
    assert_eq!(&got[0].payload[..], b"long");
    let left = got[0]
        .properties
        .as_ref()
        .and_then(|p| p.message_expiry_interval)
        .expect("the remaining expiry");
    assert!((590..=598).contains(&left), "remaining {left}");
    assert_eq!(&got[1].payload[..], b"none");
    no_publish(&mut c, Duration::from_millis(300)).await;
}

/// Node 0 -> node 1 (messages taken and acknowledged there) -> node 0 again: node 0 serves
/// what the record says now, not what it remembered: only the newer messages, once.
async fn a_session_comes_back_to_a_node_it_left(rig: &Rig) {
    let (mut c, _) = v3_ok(rig.addr(0), "boomerang", false).await;
    c.subscribe(1, &[("boom/t", QoS::AtLeastOnce)]).await;
    drop(c);
    publish_numbered(rig, 2, "boom/t", 0, 5).await;
    let (mut c, ack) = v3_ok(rig.addr(1), "boomerang", false).await;
    assert!(ack.session_present);
    let got = take_acked(&mut c, 5).await;
    assert_eq!(&got[4].payload[..], &text(4)[..]);
    c.send(Packet::Disconnect(Disconnect {
        reason: 0,
        properties: None,
    }))
    .await;
    c.expect_closed().await;
    publish_numbered(rig, 2, "boom/t", 5, 3).await;
    let (mut c, ack) = v3_ok(rig.addr(0), "boomerang", false).await;
    assert!(ack.session_present);
    let got = take_acked(&mut c, 3).await;
    let payloads: Vec<Vec<u8>> = got.iter().map(|p| p.payload.to_vec()).collect();
    assert_eq!(payloads, (5..8).map(text).collect::<Vec<_>>());
    no_publish(&mut c, Duration::from_millis(300)).await;
}

/// A connection on node 0 holding unacknowledged messages is taken over from node 2: the
/// new connection gets them again first (DUP set, their packet ids), then the rest.
async fn a_takeover_moves_the_unacknowledged_messages(rig: &Rig) {
    let (mut old, _) = v5_ok(rig.addr(0), "take-inflight", false, Some(300)).await;
    old.subscribe(1, &[("tif/t", QoS::AtLeastOnce)]).await;
    publish_numbered(rig, 1, "tif/t", 0, 3).await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let p = next_publish(&mut old).await;
        assert_eq!(&p.payload[..], &text(n)[..]);
        ids.push(p.packet_id.expect("QoS 1"));
    }
    let (mut new, ack) = v5_ok(rig.addr(2), "take-inflight", false, Some(300)).await;
    assert!(ack.session_present);
    assert_eq!(disconnect_code(&mut old).await, 0x8E);
    for (n, id) in ids.iter().enumerate() {
        let p = next_publish(&mut new).await;
        assert_eq!(&p.payload[..], &text(n)[..], "re-sent in order");
        assert!(p.dup);
        assert_eq!(p.packet_id, Some(*id));
        new.send(Packet::PubAck(Ack::new(*id))).await;
    }
    publish_numbered(rig, 1, "tif/t", 3, 1).await;
    let got = take_acked(&mut new, 1).await;
    assert_eq!(&got[0].payload[..], &text(3)[..]);
    no_publish(&mut new, Duration::from_millis(300)).await;
}

/// Node 0 SIGKILLed while a session there holds unacknowledged messages and an offline one
/// has messages waiting: both resume on node 1 with session present and every message
/// acknowledged to its publisher arrives (the unacknowledged first, in order; one already
/// acknowledged by the subscriber may come again, as QoS 1 allows).
async fn sessions_of_a_killed_node_resume_elsewhere_with_nothing_lost(rig: &mut Rig) {
    let (mut online, _) = v5_ok(rig.addr(0), "dies-online", false, Some(300)).await;
    online.subscribe(1, &[("dies/t", QoS::AtLeastOnce)]).await;
    let (mut offline, _) = v3_ok(rig.addr(0), "dies-offline", false).await;
    offline.subscribe(1, &[("dies/t", QoS::AtLeastOnce)]).await;
    offline
        .send(Packet::Disconnect(Disconnect {
            reason: 0,
            properties: None,
        }))
        .await;
    offline.expect_closed().await;
    publish_numbered(rig, 1, "dies/t", 0, 6).await;
    for n in 0..6 {
        let p = next_publish(&mut online).await;
        assert_eq!(&p.payload[..], &text(n)[..]);
        if n < 2 {
            online
                .send(Packet::PubAck(Ack::new(p.packet_id.expect("QoS 1"))))
                .await;
        }
    }
    let killed = std::time::Instant::now();
    rig.nodes[0].kill();
    for (id, version) in [
        ("dies-offline", ProtocolVersion::V311),
        ("dies-online", ProtocolVersion::V5),
    ] {
        let asked = std::time::Instant::now();
        let (mut c, ack) = RawClient::connect_ok(rig.addr(1), connect_of(version, id, false)).await;
        eprintln!(
            "{id} resumed on node 1 in {:?} ({:?} after node 0's SIGKILL)",
            asked.elapsed(),
            killed.elapsed()
        );
        assert!(ack.session_present, "{id}");
        let first_expected = if id == "dies-online" { 2 } else { 0 };
        let mut seen = Vec::new();
        while let Some(p) = super::rig::next_publish_within(&mut c, Duration::from_secs(2)).await {
            if let Some(pid) = p.packet_id {
                c.send(Packet::PubAck(Ack::new(pid))).await;
            }
            let n: usize = std::str::from_utf8(&p.payload[1..])
                .expect("utf-8")
                .parse()
                .expect("n");
            seen.push(n);
        }
        // Duplicates of acknowledged ones allowed before the rest; nothing missing, in order.
        let from_first: Vec<usize> = seen
            .iter()
            .copied()
            .skip_while(|n| *n < first_expected)
            .collect();
        assert_eq!(
            from_first,
            (first_expected..6).collect::<Vec<_>>(),
            "{id}: got {seen:?}"
        );
    }
}

/// A session with a Session Expiry Interval of 1 s, offline for 2 s, is gone on every node:
/// no session present, no subscription left.
async fn an_expired_session_is_not_resumed_elsewhere(rig: &Rig) {
    let (mut c, _) = v5_ok(rig.addr(0), "short-lived", false, Some(1)).await;
    c.subscribe(1, &[("short/t", QoS::AtLeastOnce)]).await;
    c.send(Packet::Disconnect(Disconnect {
        reason: 0,
        properties: None,
    }))
    .await;
    c.expect_closed().await;
    // Session expiry is a matter of time.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (mut c, ack) = v5_ok(rig.addr(1), "short-lived", false, Some(300)).await;
    assert!(!ack.session_present, "expired");
    publish_numbered(rig, 2, "short/t", 0, 1).await;
    no_publish(&mut c, Duration::from_millis(500)).await;
}
