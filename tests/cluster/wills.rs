//! Wills and session expiry across nodes (the will reaper): a node SIGKILLed with clients
//! that have wills, real processes and raw MQTT clients. The wills of its clients reach a
//! subscriber on another node exactly once, within `nodeTimeout` and a bound; a Will Delay
//! Interval is honoured across the kill, and capped by the session's expiry; a client that
//! resumes on another node within its delay cancels its will; its expired offline sessions'
//! records are deleted; and a pending will's deadline survives a restart of every node.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferromq::protocol::{Disconnect, LastWill, Packet, Properties, QoS};

use super::rig::{Rig, FAST};
use crate::support::client::{connect_v5, RawClient};
use crate::support::cluster_nodes::FerromqNode;

/// `nodeTimeout` of [`FAST`].
const NODE_TIMEOUT: Duration = Duration::from_secs(2);
/// What a will may take beyond its due time: the reaper's tick and sweep (the lease, when the
/// dead node held it, is taken on the same silence), the store and the delivery, on a loaded
/// 2-core machine.
const BOUND: Duration = Duration::from_secs(3);

fn will(topic: &str, delay_secs: Option<u32>) -> LastWill {
    LastWill {
        topic: topic.into(),
        payload: Bytes::from(format!("gone:{topic}")),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: delay_secs.map(|secs| {
            Box::new(Properties {
                will_delay_interval: Some(secs),
                ..Properties::default()
            })
        }),
    }
}

/// An MQTT 5 client `id` on `addr` with `will`; `expiry`: Session Expiry Interval (None:
/// a clean session).
async fn with_will(
    addr: std::net::SocketAddr,
    id: &str,
    expiry: Option<u32>,
    will_: LastWill,
) -> RawClient {
    let mut connect = connect_v5(id, true, expiry);
    connect.will = Some(will_);
    let (c, ack) = RawClient::connect(addr, connect).await;
    assert_eq!(
        ack.reason,
        ferromq::protocol::ConnectReason::Success,
        "{id}"
    );
    c
}

/// The record of `client_id` in `FMQ_SESS` (`None`: none, or deleted).
async fn record(rig: &Rig, client_id: &str) -> Option<serde_json::Value> {
    let client = async_nats::connect(rig.nats.client_urls()[0].clone())
        .await
        .expect("NATS");
    let kv = async_nats::jetstream::new(client)
        .get_key_value("FMQ_SESS")
        .await
        .expect("FMQ_SESS");
    let key = ferromq::cluster::subject::client_key(client_id);
    let entry = kv.entry(key).await.expect("read")?;
    if entry.operation != async_nats::jetstream::kv::Operation::Put {
        return None;
    }
    serde_json::from_slice(&entry.value).ok()
}

/// How many clean-session will records `client_id` has in `FMQ_SESS`.
async fn clean_will_records(rig: &Rig, client_id: &str) -> usize {
    use futures_util::StreamExt;
    let client = async_nats::connect(rig.nats.client_urls()[0].clone())
        .await
        .expect("NATS");
    let kv = async_nats::jetstream::new(client)
        .get_key_value("FMQ_SESS")
        .await
        .expect("FMQ_SESS");
    let prefix = format!("w.{}.", ferromq::cluster::subject::client_key(client_id));
    let Ok(keys) = kv.keys().await else {
        return 0;
    };
    keys.filter_map(|k| async move { k.ok() })
        .filter(|k| std::future::ready(k.starts_with(&prefix)))
        .count()
        .await
}

/// Poll until `client_id` has `n` clean will records, at most `within`.
async fn clean_will_records_become(rig: &Rig, client_id: &str, n: usize, within: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < within {
        if clean_will_records(rig, client_id).await == n {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Poll `client_id`'s record until `done` holds of it, at most `within`.
async fn record_becomes(
    rig: &Rig,
    client_id: &str,
    within: Duration,
    done: impl Fn(Option<&serde_json::Value>) -> bool,
) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < within {
        if done(record(rig, client_id).await.as_ref()) {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// Every PUBLISH `sub` receives within `window`, acknowledged: topic -> times since `from`.
async fn collect(
    sub: &mut RawClient,
    from: Instant,
    window: Duration,
) -> BTreeMap<String, Vec<Duration>> {
    let mut got: BTreeMap<String, Vec<Duration>> = BTreeMap::new();
    let end = Instant::now() + window;
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        let Some(packet) = sub.recv_within(left).await else {
            break;
        };
        if let Packet::Publish(p) = packet {
            if let Some(pid) = p.packet_id {
                sub.send(Packet::PubAck(ferromq::protocol::Ack::new(pid)))
                    .await;
            }
            got.entry(p.topic.to_string())
                .or_default()
                .push(from.elapsed());
        }
    }
    got
}

fn disconnect() -> Packet {
    Packet::Disconnect(Disconnect {
        reason: 0,
        properties: None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wills_and_expiry_of_a_dead_node() {
    let Some(mut rig) = Rig::start(3, FAST).await else {
        return;
    };
    let (mut sub, _) = super::rig::v5_ok(rig.addr(1), "will-watcher", true, None).await;
    assert_eq!(sub.subscribe(1, &[("will/#", QoS::AtLeastOnce)]).await, [1]);

    // On node 0: a clean session (MQTT 3.1.1) and a persistent one (MQTT 5) with wills, no
    // delay; one with a Will Delay of 3 s; one with 30 s capped by its 3 s session expiry;
    // one with 5 s that resumes on node 2 after the kill; two short sessions, one offline.
    let mut clean3 = {
        let mut connect = crate::support::client::connect_packet("w-clean", true, 0);
        connect.will = Some(will("will/clean", None));
        RawClient::connect_ok(rig.addr(0), connect).await.0
    };
    let retained = {
        let mut w = will("will/retained", None);
        w.retain = true;
        with_will(rig.addr(0), "w-retained", None, w).await
    };
    let persistent = with_will(
        rig.addr(0),
        "w-persistent",
        Some(300),
        will("will/persistent", None),
    )
    .await;
    let delayed = with_will(
        rig.addr(0),
        "w-delayed",
        Some(300),
        will("will/delayed", Some(3)),
    )
    .await;
    let capped = with_will(
        rig.addr(0),
        "w-capped",
        Some(3),
        will("will/capped", Some(30)),
    )
    .await;
    let resumed = with_will(
        rig.addr(0),
        "w-resumed",
        Some(300),
        will("will/resumed", Some(5)),
    )
    .await;
    let (mut offline, _) =
        super::rig::v5_ok(rig.addr(0), "w-expires-offline", false, Some(2)).await;
    assert_eq!(
        offline
            .subscribe(1, &[("x/offline", QoS::AtLeastOnce)])
            .await,
        [1]
    );
    offline.send(disconnect()).await;
    offline.expect_closed().await;
    let (mut online, _) = super::rig::v5_ok(rig.addr(0), "w-expires-online", false, Some(2)).await;
    assert_eq!(
        online.subscribe(1, &[("x/online", QoS::AtLeastOnce)]).await,
        [1]
    );
    // The persistent wills are in their records (written with the attach).
    for id in ["w-persistent", "w-delayed", "w-capped", "w-resumed"] {
        assert!(
            record_becomes(&rig, id, Duration::from_secs(5), |r| r
                .is_some_and(|r| r.get("will").is_some()))
            .await
            .is_some(),
            "{id}: will not in its record"
        );
    }
    // The offline one waited offline (its expiry runs from its DISCONNECT), a clean session's
    // will goes nowhere before the kill.
    clean3.send(Packet::PingReq).await;
    assert!(matches!(clean3.recv().await, Packet::PingResp));

    // Nodes alive: a clean session's will record lives as long as its connection; a normal
    // DISCONNECT discards the will, a lost connection publishes it (once, by its node).
    for (id, lost) in [("w-bye", false), ("w-lost", true)] {
        let topic = format!("will/{id}");
        let mut c = with_will(rig.addr(1), id, None, will(&topic, None)).await;
        assert_eq!(
            clean_will_records(&rig, id).await,
            1,
            "{id}: written before the CONNACK"
        );
        if !lost {
            c.send(disconnect()).await;
            c.expect_closed().await;
        }
        drop(c);
        assert!(
            clean_will_records_become(&rig, id, 0, Duration::from_secs(5)).await,
            "{id}: will record left"
        );
    }

    // Nodes alive: a client whose connection on node 1 is taken over from node 2 within its
    // Will Delay keeps its session without its will (MQTT 5 3.1.3-9), and one that starts
    // a new session there ends the old one, whose will goes out once.
    for (id, clean) in [("w-live-resume", false), ("w-live-clean", true)] {
        let topic = format!("will/{id}");
        let mut old = with_will(rig.addr(1), id, Some(300), will(&topic, Some(5))).await;
        // A new session's record (with its will) is written as its CONNACK leaves.
        assert!(
            record_becomes(&rig, id, Duration::from_secs(5), |r| r
                .is_some_and(|r| r.get("will").is_some()))
            .await
            .is_some(),
            "{id}: no record"
        );
        let (mut new, ack) =
            RawClient::connect(rig.addr(2), connect_v5(id, clean, Some(300))).await;
        assert_eq!(
            ack.reason,
            ferromq::protocol::ConnectReason::Success,
            "{id}"
        );
        assert_eq!(ack.session_present, !clean, "{id}");
        old.expect_closed().await;
        new.send(disconnect()).await;
        new.expect_closed().await;
    }

    let killed = Instant::now();
    rig.nodes[0].kill();
    drop((
        persistent, delayed, capped, resumed, online, clean3, retained,
    ));

    // The resuming client comes back on node 2 (its claim waits for node 0's kick to time
    // out), within its delay.
    let mut back = {
        let mut connect = connect_v5("w-resumed", false, Some(300));
        connect.will = Some(will("will/back", None));
        let (c, ack) = RawClient::connect(rig.addr(2), connect).await;
        assert!(ack.session_present, "resumed");
        c
    };
    eprintln!("w-resumed resumed {:?} after the kill", killed.elapsed());
    // Its new will is in its record from the claim on, before the CONNACK.
    let now = record(&rig, "w-resumed").await.expect("resumed record");
    assert_eq!(now["will"]["topic"], "will/back", "{now}");

    let got = collect(
        &mut sub,
        killed,
        NODE_TIMEOUT + Duration::from_secs(3) + BOUND + Duration::from_secs(2),
    )
    .await;
    eprintln!("wills after node 0's SIGKILL: {got:?}");
    let once = |topic: &str| -> Duration {
        let times = got
            .get(topic)
            .unwrap_or_else(|| panic!("{topic}: no will ({got:?})"));
        assert_eq!(times.len(), 1, "{topic}: published {} times", times.len());
        times[0]
    };
    for topic in ["will/clean", "will/persistent", "will/retained"] {
        let at = once(topic);
        assert!(at <= NODE_TIMEOUT + BOUND, "{topic}: {at:?} after the kill");
    }
    for topic in ["will/delayed", "will/capped"] {
        let at = once(topic);
        assert!(
            at >= Duration::from_secs(3),
            "{topic}: before its delay: {at:?}"
        );
        assert!(
            at <= NODE_TIMEOUT + Duration::from_secs(3) + BOUND,
            "{topic}: {at:?} after the kill"
        );
    }
    assert!(
        !got.contains_key("will/resumed"),
        "a resumed session's will: {got:?}"
    );
    assert!(!got.contains_key("will/w-bye"), "{got:?}");
    assert!(!got.contains_key("will/back"), "{got:?}");
    assert_eq!(got.get("will/w-lost").map(Vec::len), Some(1), "{got:?}");
    assert!(
        !got.contains_key("will/w-live-resume"),
        "a session resumed from a live node: its will: {got:?}"
    );
    assert_eq!(
        got.get("will/w-live-clean").map(Vec::len),
        Some(1),
        "a session ended by a clean start on another node: its will once: {got:?}"
    );

    // A retained will is the topic's retained message on every node.
    let (mut late, _) = super::rig::v5_ok(rig.addr(2), "w-late", true, None).await;
    assert_eq!(
        late.subscribe(1, &[("will/retained", QoS::AtMostOnce)])
            .await,
        [0]
    );
    let p = late.recv_publish().await;
    assert!(p.retain, "{p:?}");
    assert_eq!(&p.payload[..], b"gone:will/retained");

    // The short sessions' records go once expired; the capped one's too (its will went).
    for id in ["w-expires-offline", "w-expires-online", "w-capped"] {
        let gone = record_becomes(&rig, id, Duration::from_secs(10), |r| r.is_none()).await;
        assert!(gone.is_some(), "{id}: record still there");
    }
    // The resumed session's is node 2's, without the old will.
    let resumed = record(&rig, "w-resumed").await.expect("resumed record");
    assert_eq!(resumed["owner"], "node-2", "{resumed}");
    back.send(disconnect()).await;
    back.expect_closed().await;

    // A pending will's deadline survives a restart of every node: a connection lost with a
    // Will Delay of 10 s on node 1, then every node SIGKILLed and started again.
    let config = rig.nodes[0].config.clone();
    rig.nodes[0] = FerromqNode::start(&config);
    tokio::task::block_in_place(|| rig.nodes[0].wait_serving());
    let lost = with_will(
        rig.addr(1),
        "w-restart",
        Some(300),
        will("will/restart", Some(10)),
    )
    .await;
    drop(lost);
    let lost_at = Instant::now();
    let pending = record_becomes(&rig, "w-restart", Duration::from_secs(5), |r| {
        r.and_then(|r| r.get("will"))
            .and_then(|w| w.get("deadline_ms"))
            .is_some()
    })
    .await;
    assert!(
        pending.is_some(),
        "the pending will's deadline is in the record"
    );
    for node in &mut rig.nodes {
        node.kill();
    }
    let configs: Vec<_> = rig.nodes.iter().map(|n| n.config.clone()).collect();
    for (i, config) in configs.iter().enumerate() {
        rig.nodes[i] = FerromqNode::start(config);
    }
    tokio::task::block_in_place(|| rig.nodes.iter_mut().for_each(FerromqNode::wait_serving));
    eprintln!(
        "every node restarted {:?} after the connection was lost",
        lost_at.elapsed()
    );
    let (mut sub, _) = super::rig::v5_ok(rig.addr(2), "will-watcher-2", true, None).await;
    assert_eq!(sub.subscribe(1, &[("will/#", QoS::AtLeastOnce)]).await, [1]);
    let until = (lost_at + Duration::from_secs(10) + BOUND + Duration::from_secs(1))
        .saturating_duration_since(Instant::now());
    let got = collect(&mut sub, lost_at, until).await;
    eprintln!("after the restart: {got:?}");
    let times = got
        .get("will/restart")
        .expect("the pending will, after the restart");
    assert_eq!(times.len(), 1, "{got:?}");
    assert!(
        times[0] >= Duration::from_secs(10),
        "before its deadline: {:?}",
        times[0]
    );
    assert!(
        times[0] <= Duration::from_secs(10) + BOUND,
        "late: {:?}",
        times[0]
    );
    assert!(
        record_becomes(&rig, "w-restart", Duration::from_secs(2), |r| r
            .is_some_and(|r| r.get("will").is_none()))
        .await
        .is_some(),
        "the published will is gone from the record"
    );

    // A node stopped gracefully publishes its clients' wills itself, and the reaper does
    // not publish them again once the node's heartbeat stops.
    let (mut sub, _) = super::rig::v5_ok(rig.addr(0), "will-watcher-3", true, None).await;
    assert_eq!(sub.subscribe(1, &[("will/#", QoS::AtLeastOnce)]).await, [1]);
    let term = with_will(rig.addr(2), "w-term", None, will("will/term", None)).await;
    let stopped = Instant::now();
    let status = tokio::task::block_in_place(|| rig.nodes[2].terminate());
    assert!(status.is_some(), "node 2 stops on SIGTERM");
    drop(term);
    let got = collect(
        &mut sub,
        stopped,
        NODE_TIMEOUT + BOUND + Duration::from_secs(1),
    )
    .await;
    eprintln!("after node 2's SIGTERM: {got:?}");
    assert_eq!(got.get("will/term").map(Vec::len), Some(1), "{got:?}");
}
