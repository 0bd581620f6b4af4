//! Graceful drain and "Use another server": a SIGTERMed node holds new deliveries, waits for
//! the acknowledgement of what is in flight, releases its sessions and sends MQTT 5 clients
//! DISCONNECT 0x9C with a Server Reference naming a live node (MQTT 3.1.1 clients: a closed
//! socket); they resume there with session present and get nothing they acknowledged again.
//! A node that loses its quorum names a node it last heard from, in its DISCONNECT 0x9C and
//! in the CONNACK 0x9C refusing a new persistent session.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ferromq::protocol::{Ack, ConnectReason, Packet, Properties, QoS};

use super::rig::{
    next_publish, no_publish, publish_acked, take_acked, v3_ok, v5, v5_ok, Rig, FAST,
};
use crate::support::cluster_nodes::{read_log, FerromqNode};
use crate::support::STEP;

/// The Server Reference of a DISCONNECT or CONNACK's properties.
fn reference_of(properties: Option<&Properties>) -> Option<String> {
    properties.and_then(|p| p.server_reference.clone())
}

/// Waits until `addr` refuses a new CONNECT with 0x9C naming `live` (the node began its
/// drain: it takes no new session); returns how long that took.
async fn wait_draining(addr: SocketAddr, live: SocketAddr) -> Duration {
    let start = Instant::now();
    loop {
        let (_, ack) = v5(addr, "drain-probe", true, None).await;
        if ack.reason == ConnectReason::UseAnotherServer {
            assert_eq!(
                reference_of(ack.properties.as_deref()),
                Some(live.to_string()),
                "CONNACK's Server Reference"
            );
            return start.elapsed();
        }
        // Before the drain: Success. During it, 0x88 while this node cannot name a live node
        // yet (on a loaded machine the other node's heartbeat can look stale for a moment); a
        // client retries, and so does this probe.
        assert!(
            matches!(
                ack.reason,
                ConnectReason::Success | ConnectReason::ServerUnavailable
            ),
            "{:?}",
            ack.reason
        );
        assert!(start.elapsed() < STEP, "{addr} never began draining");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_sends_clients_to_a_live_node_where_they_resume_without_duplicates() {
    let Some(mut rig) = Rig::start(2, FAST).await else {
        return;
    };
    let (draining, live) = (rig.addr(0), rig.addr(1));
    let (mut sub5, _) = v5_ok(draining, "drain-sub-5", false, Some(300)).await;
    sub5.subscribe(1, &[("dr/#", QoS::AtLeastOnce)]).await;
    let (mut sub3, _) = v3_ok(draining, "drain-sub-3", false).await;
    sub3.subscribe(1, &[("dr/#", QoS::AtLeastOnce)]).await;
    let (mut publisher, _) = v5_ok(live, "drain-pub", true, None).await;
    for i in 1..=5u16 {
        let topic = format!("dr/{i}");
        assert_eq!(publish_acked(&mut publisher, &topic, b"x", i).await, 0);
    }
    take_acked(&mut sub5, 5).await;
    take_acked(&mut sub3, 5).await;
    // One more, received and not acknowledged yet by the MQTT 5 subscriber: in flight.
    assert_eq!(publish_acked(&mut publisher, "dr/6", b"x", 6).await, 0);
    let in_flight = next_publish(&mut sub5).await;
    assert_eq!(&in_flight.topic[..], "dr/6");
    take_acked(&mut sub3, 1).await;

    rig.nodes[0].send_term();
    let began = wait_draining(draining, live).await;
    eprintln!("new sessions refused (0x9C) {began:?} after the SIGTERM");
    // Published while node 0 drains: held there (never sent by it), delivered after the
    // resume.
    assert_eq!(publish_acked(&mut publisher, "dr/7", b"x", 7).await, 0);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let acked_at = Instant::now();
    sub5.send(Packet::PubAck(Ack::new(in_flight.packet_id.unwrap_or(0))))
        .await;

    let disconnect = loop {
        match sub5.recv_within(STEP).await {
            Some(Packet::Disconnect(d)) => break d,
            Some(Packet::Publish(p)) => panic!("a draining node sent a PUBLISH: {p:?}"),
            Some(_) => {}
            None => panic!("no DISCONNECT from the draining node"),
        }
    };
    eprintln!(
        "DISCONNECT {:#04x} {:?} after the last acknowledgement",
        disconnect.reason,
        acked_at.elapsed()
    );
    assert_eq!(disconnect.reason, 0x9C, "Use another server");
    let reference = reference_of(disconnect.properties.as_deref());
    assert_eq!(reference, Some(live.to_string()), "Server Reference");
    sub5.expect_closed().await;
    loop {
        match sub3.recv_within(STEP).await {
            None => break,
            Some(Packet::Publish(p)) => panic!("a draining node sent a PUBLISH: {p:?}"),
            Some(_) => {}
        }
    }
    assert!(
        sub3.closed_within(STEP).await.is_some(),
        "MQTT 3.1.1 closed"
    );

    // Both resume where the reference says, with their sessions: dr/7 once, and nothing
    // they acknowledged (dr/1..6) again.
    let to: SocketAddr = reference
        .as_deref()
        .and_then(|r| r.parse().ok())
        .expect("host:port");
    let resumed_at = Instant::now();
    let (mut again5, ack) = v5_ok(to, "drain-sub-5", false, Some(300)).await;
    eprintln!("resumed in {:?}", resumed_at.elapsed());
    assert!(ack.session_present, "MQTT 5 session present");
    let (mut again3, ack) = v3_ok(to, "drain-sub-3", false).await;
    assert!(ack.session_present, "MQTT 3.1.1 session present");
    for client in [&mut again5, &mut again3] {
        let got = take_acked(client, 1).await;
        assert_eq!(&got[0].topic[..], "dr/7", "{:?}", got[0]);
        assert!(!got[0].dup, "never sent before: {:?}", got[0]);
        no_publish(client, Duration::from_secs(1)).await;
    }
    let status = tokio::task::block_in_place(|| rig.nodes[0].wait_exit(STEP));
    assert!(
        status.is_some_and(|s| s.success()),
        "clean exit: {status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_quorum_names_a_node_it_last_heard_from() {
    let Some(mut rig) = Rig::start(2, FAST).await else {
        return;
    };
    let (lost, other) = (rig.addr(0), rig.addr(1));
    let (mut holder, _) = v5_ok(lost, "ql-holder", false, Some(300)).await;
    holder.subscribe(1, &[("ql/#", QoS::AtLeastOnce)]).await;
    rig.nats.kill(1);
    rig.nats.kill(2);
    match holder.recv_within(STEP * 2).await {
        Some(Packet::Disconnect(d)) => {
            assert_eq!(d.reason, 0x9C, "Use another server");
            assert_eq!(
                reference_of(d.properties.as_deref()),
                Some(other.to_string()),
                "Server Reference"
            );
        }
        other => panic!("expected DISCONNECT 0x9C, got {other:?}"),
    }
    let (_, ack) = v5(lost, "ql-new", false, Some(300)).await;
    assert_eq!(ack.reason, ConnectReason::UseAnotherServer, "CONNACK 0x9C");
    assert_eq!(
        reference_of(ack.properties.as_deref()),
        Some(other.to_string())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_clients_will_without_delay_is_published_once() {
    let Some(rig) = Rig::start(2, FAST).await else {
        return;
    };
    let (draining, live) = (rig.addr(0), rig.addr(1));
    let (mut watcher, _) = v5_ok(live, "dw-watcher", true, None).await;
    watcher.subscribe(1, &[("dw/#", QoS::AtLeastOnce)]).await;
    let mut connect = crate::support::client::connect_v5("dw-holder", false, Some(300));
    connect.will = Some(crate::support::client::will(
        "dw/will",
        b"gone",
        QoS::AtLeastOnce,
        false,
    ));
    let (mut holder, _) = crate::support::client::RawClient::connect_ok(draining, connect).await;
    rig.nodes[0].send_term();
    // 0x9C naming the live node, or 0x8B when the draining node has not heard the other one
    // yet (both just started): the will is the same either way.
    match holder.recv_within(STEP).await {
        Some(Packet::Disconnect(d)) => assert!(matches!(d.reason, 0x9C | 0x8B), "{d:?}"),
        other => panic!("expected DISCONNECT 0x9C or 0x8B, got {other:?}"),
    }
    let got = take_acked(&mut watcher, 1).await;
    assert_eq!(
        (&got[0].topic[..], &got[0].payload[..]),
        ("dw/will", &b"gone"[..])
    );
    // The resume elsewhere finds no will left to publish, and nobody publishes it again.
    let (_again, ack) = v5_ok(live, "dw-holder", false, Some(300)).await;
    assert!(ack.session_present);
    no_publish(&mut watcher, Duration::from_secs(2)).await;
}

/// A connector's `<publishedAddressPolicy>` (ActiveMQ's host strategy, `hostMapping`,
/// `portMapping`) is what other nodes name in their Server References: here the address a
/// NAT in front of node 1 would expose.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_reference_is_the_connectors_published_address() {
    let Some(mut rig) = Rig::start(1, FAST).await else {
        return;
    };
    let port = crate::support::free_port();
    let file = rig.write_node("node-1", port, "");
    let xml = std::fs::read_to_string(&file).expect("node config");
    let connector = format!(r#"uri="mqtt://127.0.0.1:{port}"/>"#);
    let with_policy = format!(
        r#"uri="mqtt://127.0.0.1:{port}">
        <publishedAddressPolicy><publishedAddressPolicy publishedHostStrategy="IPADDRESS">
          <hostMapping><map xmlns="http://www.springframework.org/schema/beans">
            <entry key="127.0.0.1" value="broker1.example.com"/></map></hostMapping>
          <portMapping><map xmlns="http://www.springframework.org/schema/beans">
            <entry key="{port}" value="31883"/></map></portMapping>
        </publishedAddressPolicy></publishedAddressPolicy>
      </transportConnector>"#
    );
    assert!(xml.contains(&connector), "{xml}");
    std::fs::write(&file, xml.replacen(&connector, &with_policy, 1)).expect("rewrite config");
    let mut node = crate::support::cluster_nodes::FerromqNode::start(&file);
    tokio::task::block_in_place(|| node.wait_serving());
    rig.nodes.push(node);

    let (mut client, _) = v5_ok(rig.addr(0), "published-address", true, None).await;
    // Node 0 has heard node 1's announcement once a drain would name it.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    rig.nodes[0].send_term();
    let disconnect = loop {
        match client.recv_within(STEP).await {
            Some(Packet::Disconnect(d)) => break d,
            Some(_) => {}
            None => panic!("no DISCONNECT from the draining node"),
        }
    };
    assert_eq!(disconnect.reason, 0x9C, "Use another server");
    assert_eq!(
        reference_of(disconnect.properties.as_deref()).as_deref(),
        Some("broker1.example.com:31883"),
        "Server Reference"
    );
}

/// A SIGTERMed node that cannot reach any nats-server hands nothing over and exits within
/// its reconnect grace and close wait: it does not wait `storeTimeout` for each record,
/// heartbeat and last flush that cannot be written (three times the default 5 s before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_nats_servers_are_gone_exits_promptly_on_sigterm() {
    // Default storeTimeout (5 s), so that a wait on a store write shows.
    let attributes = r#"replicas="3" messageShards="2" heartbeatInterval="200ms" quorumLossTimeout="1500ms" nodeTimeout="2s""#;
    let Some(mut rig) = Rig::start(1, attributes).await else {
        return;
    };
    let (mut holder, _) = v5_ok(rig.addr(0), "gone-holder", false, Some(300)).await;
    holder.subscribe(1, &[("gone/#", QoS::AtLeastOnce)]).await;
    for i in 0..3 {
        rig.nats.kill(i);
    }
    let termed = Instant::now();
    rig.nodes[0].send_term();
    let status = tokio::task::block_in_place(|| rig.nodes[0].wait_exit(STEP * 2));
    let took = termed.elapsed();
    eprintln!("exited {took:?} after the SIGTERM: {status:?}");
    assert!(
        status.is_some_and(|s| s.success()),
        "clean exit: {status:?}"
    );
    assert!(
        took < Duration::from_secs(6),
        "a drain with nothing to write to took {took:?}"
    );
    // No other node to name: "server shutting down" (0x8B), not "use another server"
    // (0x9C) naming none.
    match holder.recv_within(STEP).await {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason, 0x8B, "{d:?}"),
        other => panic!("expected DISCONNECT 0x8B, got {other:?}"),
    }
    assert!(
        holder.closed_within(STEP).await.is_some(),
        "the client's connection closed"
    );
}

/// A SIGTERMed node whose nats-servers hang (SIGSTOP: the sockets stay open, nothing
/// answers) learns it from the first writes of the drain: when not one session release is
/// answered within `storeTimeout`, it skips the last heartbeat and the final flush (each of
/// which would wait out the rest of the drain's bound) and exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_nats_servers_hang_exits_after_one_unanswered_round_on_sigterm() {
    let attributes = r#"replicas="3" messageShards="2" heartbeatInterval="200ms" quorumLossTimeout="10s" nodeTimeout="2s" storeTimeout="2s""#;
    let Some(mut rig) = Rig::start(1, attributes).await else {
        return;
    };
    let (mut holder, _) = v5_ok(rig.addr(0), "hung-holder", false, Some(300)).await;
    holder.subscribe(1, &[("hung/#", QoS::AtLeastOnce)]).await;
    for i in 0..3 {
        rig.nats.pause(i);
    }
    let termed = Instant::now();
    rig.nodes[0].send_term();
    let status = tokio::task::block_in_place(|| rig.nodes[0].wait_exit(STEP * 3));
    let took = termed.elapsed();
    for i in 0..3 {
        rig.nats.resume(i);
    }
    eprintln!("exited {took:?} after the SIGTERM: {status:?}");
    assert!(
        status.is_some_and(|s| s.success()),
        "clean exit: {status:?}"
    );
    // storeTimeout (2 s) for the releases, then the close: about 3 s. Before, the rest of
    // the bound went to the last heartbeat and the final flush: about 6 s.
    assert!(
        took < Duration::from_millis(4_500),
        "a drain that no write answered took {took:?}"
    );
}

/// A SIGTERMed node whose nats-servers hang logs its unanswered session releases as one WARN
/// line (how many, the first client ids), not one per session; each session's own line is at
/// debug.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_session_releases_are_one_warn_line() {
    let attributes = r#"replicas="3" messageShards="2" heartbeatInterval="200ms" quorumLossTimeout="10s" nodeTimeout="2s" storeTimeout="2s""#;
    let Some(rig) = Rig::start(0, attributes).await else {
        return;
    };
    let file = rig.write_node("node-0", crate::support::free_port(), "");
    let log = rig.dir.path().join("node-0.log");
    let mut node = FerromqNode::start_logging(&file, "info", &log);
    tokio::task::block_in_place(|| node.wait_serving());
    const SESSIONS: usize = 8;
    let mut holders = Vec::new();
    for i in 0..SESSIONS {
        let (mut holder, _) = v5_ok(node.mqtt_addr(), &format!("hung-{i}"), false, Some(300)).await;
        holder.subscribe(1, &[("hung/#", QoS::AtLeastOnce)]).await;
        holders.push(holder);
    }
    for i in 0..3 {
        rig.nats.pause(i);
    }
    node.send_term();
    let status = tokio::task::block_in_place(|| node.wait_exit(STEP * 3));
    for i in 0..3 {
        rig.nats.resume(i);
    }
    let said = read_log(&log);
    assert!(status.is_some(), "the node exited:\n{said}");
    let release_warnings: Vec<&str> = said
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("releas"))
        .collect();
    assert_eq!(release_warnings.len(), 1, "one line:\n{said}");
    let line = release_warnings[0];
    assert!(
        line.contains(&format!("{SESSIONS} unanswered")) && line.contains("and 3 more"),
        "{line}"
    );
    let named = (0..SESSIONS)
        .filter(|i| line.contains(&format!("hung-{i}")))
        .count();
    assert_eq!(named, 5, "the first five client ids: {line}");
}
