//! A reconnect storm of one client id on one node (a client that gives up on its CONNACK and
//! connects again, its older connection still open on the node): each CONNECT takes the
//! session over from the one before (MQTT 3.1.4-3). The node answers their claims from its
//! own recent confirmation that it owns the session, and does not write a record that holds
//! the session as it is already: far fewer reads and writes of the record than CONNECTs
//! (`$SYS/broker/cluster/...`), and the session keeps its subscription and its queued QoS 1
//! messages, on this node and on the next. CONNECTs whose clients left while they waited
//! behind another CONNECT of the same client id are not claimed at all.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ferromq::protocol::{ConnectReason, Packet, QoS};

use super::rig::{next_publish_within, v3, v3_ok, Rig, FAST};
use crate::support::client::{connect_packet, RawClient};

/// CONNECTs of the storm.
const STORM: usize = 50;
/// QoS 1 messages queued for the session before the storm.
const QUEUED: usize = 20;
const TOPIC: &str = "storm/t";

/// The latest `$SYS/broker/cluster/...` figures of the node at `addr`, as its `$SYS`
/// publisher sends them (a clean watcher, connected for the whole test).
async fn watch_figures(addr: SocketAddr) -> Arc<parking_lot::Mutex<HashMap<String, u64>>> {
    let figures = Arc::new(parking_lot::Mutex::new(HashMap::new()));
    let (mut watcher, _) = v3_ok(addr, "storm-watch", true).await;
    watcher
        .subscribe(1, &[("$SYS/broker/cluster/#", QoS::AtMostOnce)])
        .await;
    let seen = figures.clone();
    // Ends with the watcher's connection, when the rig's nodes are killed.
    tokio::spawn(async move {
        while let Some(p) = next_publish_within(&mut watcher, Duration::from_secs(120)).await {
            let value = std::str::from_utf8(&p.payload)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok());
            if let Some(value) = value {
                seen.lock().insert(p.topic.to_string(), value);
            }
        }
    });
    figures
}

/// The figure `name` (`claims`, `records/read` ...) after the next rounds of `$SYS`.
async fn figure(figures: &parking_lot::Mutex<HashMap<String, u64>>, name: &str) -> u64 {
    // Published every 100 ms when changed.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let topic = format!("$SYS/broker/cluster/{name}");
    figures
        .lock()
        .get(&topic)
        .copied()
        .unwrap_or_else(|| panic!("{topic} not published"))
}

fn persistent(addr: SocketAddr) -> rumqttc::MqttOptions {
    let mut options = crate::support::options(addr, "storm-sub");
    options.set_clean_session(false);
    options
}

fn number(payload: &[u8]) -> usize {
    std::str::from_utf8(payload)
        .ok()
        .and_then(|s| s.strip_prefix('m'))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected payload {payload:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_storm_of_one_client_reads_and_writes_its_record_far_less_than_once_per_connect(
) {
    let Some(rig) = Rig::start_with(2, FAST, r#"<ferromq:systemTopics interval="100"/>"#).await
    else {
        return;
    };
    let figures = watch_figures(rig.addr(0)).await;

    let mut first = crate::support::Client::connect_with(persistent(rig.addr(0))).await;
    assert!(!first.session_present);
    first.subscribe("storm/#", rumqttc::QoS::AtLeastOnce).await;
    first.disconnect().await;
    let mut publisher = crate::support::Client::connect(rig.addr(0), "storm-pub").await;
    for n in 0..QUEUED {
        publisher
            .publish(
                TOPIC,
                rumqttc::QoS::AtLeastOnce,
                false,
                format!("m{n:03}").as_bytes(),
            )
            .await;
    }

    let before = [
        figure(&figures, "claims").await,
        figure(&figures, "claims/confirmed").await,
        figure(&figures, "records/read").await,
        figure(&figures, "records/written").await,
        figure(&figures, "records/unchanged").await,
    ];
    // Each CONNECT takes the one before over; none acknowledges what it is sent.
    let started = std::time::Instant::now();
    let mut storm = Vec::new();
    for i in 0..STORM {
        let mut options = persistent(rig.addr(0));
        options.set_manual_acks(true);
        let client = crate::support::Client::connect_with(options).await;
        assert!(client.session_present, "CONNECT {i} of the storm resumes");
        storm.push(client);
    }
    let took = started.elapsed();
    drop(storm);
    let claimed = figure(&figures, "claims").await - before[0];
    let confirmed = figure(&figures, "claims/confirmed").await - before[1];
    let read = figure(&figures, "records/read").await - before[2];
    let written = figure(&figures, "records/written").await - before[3];
    let unchanged = figure(&figures, "records/unchanged").await - before[4];
    eprintln!(
        "storm of {STORM} CONNECTs in {took:?}: claims {claimed} (confirmed {confirmed}), \
         record reads {read}, record writes {written} (saves unchanged {unchanged})"
    );
    assert!(claimed >= STORM as u64, "every CONNECT claims: {claimed}");
    // A confirmation answers claims for 1 s: at most a read a second (a slow machine takes
    // longer over the storm), and far fewer than one per CONNECT.
    assert!(
        read <= (STORM / 2) as u64 && read <= 2 + took.as_secs(),
        "record reads: {read} in {took:?}"
    );
    assert!(written <= (STORM / 5) as u64, "record writes: {written}");

    // The session, on the other node: its subscription and every queued message.
    let mut resumed = crate::support::Client::connect_with(persistent(rig.addr(1))).await;
    assert!(resumed.session_present, "resumed on the other node");
    let mut got = BTreeSet::new();
    while got.len() < QUEUED {
        got.insert(number(&resumed.next_publish().await.payload));
    }
    assert_eq!(got, (0..QUEUED).collect::<BTreeSet<_>>());
    publisher
        .publish(TOPIC, rumqttc::QoS::AtLeastOnce, false, b"m999")
        .await;
    loop {
        // Copies of the queued ones may come again (QoS 1); the new one comes after them.
        if number(&resumed.next_publish().await.payload) == 999 {
            break;
        }
    }
}

/// CONNECTs of one client id queued behind a slow claim (the owner node paused: its kick waits
/// out its bound), whose clients closed their connections meanwhile without sending anything
/// more, are not claimed: each would take the session over for a connection that is gone.
/// The one that waited is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connects_whose_clients_left_while_queued_are_not_claimed() {
    const GONE: usize = 20;
    let Some(rig) = Rig::start_with(2, FAST, r#"<ferromq:systemTopics interval="100"/>"#).await
    else {
        return;
    };
    let figures = watch_figures(rig.addr(0)).await;
    let (_holder, _) = v3_ok(rig.addr(1), "queued-sub", false).await;
    let before = figure(&figures, "claims").await;
    rig.nodes[1].pause();
    let node0 = rig.addr(0);
    let waiting = tokio::spawn(async move { v3(node0, "queued-sub", false).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..GONE {
        let mut gone = RawClient::tcp(node0).await;
        gone.send(Packet::Connect(Box::new(connect_packet(
            "queued-sub",
            false,
            0,
        ))))
        .await;
        drop(gone);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    rig.nodes[1].resume();
    let (_client, ack) = waiting.await.expect("the waiting CONNECT");
    assert_eq!(ack.reason, ConnectReason::Success, "{ack:?}");
    let claimed = figure(&figures, "claims").await - before;
    assert!(
        claimed <= 2,
        "{claimed} claims for 1 CONNECT that waited and {GONE} whose clients left"
    );

    // A client that sends its packets right after its CONNECT and closes (fire and forget) is
    // served all the same: its PUBLISH reaches a subscriber.
    let (mut watcher, _) = v3_ok(node0, "queued-watch", true).await;
    watcher.subscribe(1, &[("ff/t", QoS::AtMostOnce)]).await;
    let (_holder, _) = v3_ok(rig.addr(1), "queued-ff", false).await;
    rig.nodes[1].pause();
    let waiting = tokio::spawn(async move { v3(node0, "queued-ff", false).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut fire_and_forget = RawClient::tcp(node0).await;
    fire_and_forget
        .send(Packet::Connect(Box::new(connect_packet(
            "queued-ff",
            false,
            0,
        ))))
        .await;
    fire_and_forget
        .send(super::rig::publish(
            "ff/t",
            b"sent before the CONNACK",
            QoS::AtMostOnce,
            None,
        ))
        .await;
    fire_and_forget
        .send(Packet::Disconnect(ferromq::protocol::Disconnect {
            reason: 0,
            properties: None,
        }))
        .await;
    drop(fire_and_forget);
    tokio::time::sleep(Duration::from_millis(300)).await;
    rig.nodes[1].resume();
    let _ = waiting.await;
    let got = super::rig::next_publish(&mut watcher).await;
    assert_eq!(&got.payload[..], b"sent before the CONNACK");
}
