//! Pending wills (MQTT 5 Will Delay Interval) across broker restarts on one durable store: a
//! pending will keeps its deadline as wall-clock time, so it goes out at its deadline after a
//! restart, at startup when the deadline passed while the broker was down, and never when its
//! client resumed the session first (also after a further restart).
//!
//! Real broker on 127.0.0.1 with kahaDB in a tempdir, raw MQTT 5 clients, real time (the
//! deadlines are wall-clock).

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferromq::protocol::{LastWill, Packet, Properties, QoS};

use crate::support::{connect_v5, BrokerXml, RawClient, TestBroker, STEP};

const WILL_TOPIC: &str = "wd/t";

async fn start_durable(dir: &Path) -> TestBroker {
    TestBroker::from_xml(&BrokerXml::new().kahadb(dir).mqtt(0, &[]).build()).await
}

fn delayed_will(delay_secs: u32) -> LastWill {
    LastWill {
        topic: WILL_TOPIC.into(),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Some(Box::new(Properties {
            will_delay_interval: Some(delay_secs),
            content_type: Some("text/plain".into()),
            ..Properties::default()
        })),
    }
}

/// Client `x` (Session Expiry 600 s) connected with a will delayed `delay_secs`.
async fn client_with_will(broker: &TestBroker, delay_secs: u32) -> RawClient {
    client_with_will_at(broker.addr, delay_secs).await
}

/// The persistent watcher session (QoS 1 on the will topic): its queue keeps a will published
/// while it is offline, e.g. at a broker's startup.
async fn watcher(broker: &TestBroker, clean_start: bool) -> RawClient {
    let (mut w, ack) =
        RawClient::connect_ok(broker.addr, connect_v5("watcher", clean_start, Some(600))).await;
    if clean_start {
        w.subscribe(1, &[("wd/#", QoS::AtLeastOnce)]).await;
    } else {
        assert!(ack.session_present, "the watcher's session was kept");
    }
    w
}

/// Wait until the broker holds `n` pending wills (the close of a dropped socket is handled in
/// the connection's task; this is its observable outcome).
async fn until_pending(broker: &TestBroker, n: usize) {
    let deadline = Instant::now() + STEP;
    while broker.handle.core().pending_wills.len() != n {
        assert!(
            Instant::now() < deadline,
            "expected {n} pending wills, have {}",
            broker.handle.core().pending_wills.len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The will, if it reaches `w` within `within` (acknowledged).
async fn will_within(w: &mut RawClient, within: Duration) -> Option<Instant> {
    match w.recv_within(within).await {
        Some(Packet::Publish(p)) => {
            assert_eq!((&*p.topic, &p.payload[..]), (WILL_TOPIC, &b"gone"[..]));
            let props = p.properties.expect("the will's properties");
            assert_eq!(props.content_type.as_deref(), Some("text/plain"));
            assert!(!p.dup, "delivered once");
            if let Some(id) = p.packet_id {
                w.send(Packet::PubAck(crate::support::ack(id))).await;
                // Handled in order: once the ping is answered, the PUBACK was.
                w.send(Packet::PingReq).await;
                assert_eq!(w.recv().await, Packet::PingResp);
            }
            Some(Instant::now())
        }
        None => None,
        Some(other) => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn a_pending_will_keeps_its_deadline_across_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start_durable(dir.path()).await;
    drop(client_with_will(&broker, 3).await);
    let dropped = Instant::now();
    until_pending(&broker, 1).await;
    broker.shutdown().await;

    let broker = start_durable(dir.path()).await;
    let mut w = watcher(&broker, true).await;
    let at = will_within(&mut w, Duration::from_secs(6))
        .await
        .expect("the will goes out after the restart");
    let after = at - dropped;
    assert!(
        after >= Duration::from_millis(2900) && after < Duration::from_millis(4500),
        "published {after:?} after the drop, expected about 3 s"
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn a_client_connected_at_a_clean_shutdown_leaves_its_will_pending() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start_durable(dir.path()).await;
    let _client = client_with_will(&broker, 2).await;
    broker.shutdown().await;
    let stopped = Instant::now();

    let broker = start_durable(dir.path()).await;
    let mut w = watcher(&broker, true).await;
    let at = will_within(&mut w, Duration::from_secs(5))
        .await
        .expect("published after its delay");
    assert!(
        at - stopped >= Duration::from_millis(1900),
        "published {:?} after the shutdown, before its 2 s delay",
        at - stopped
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn a_will_whose_deadline_passed_during_the_downtime_goes_out_at_startup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start_durable(dir.path()).await;
    drop(watcher(&broker, true).await);
    drop(client_with_will(&broker, 1).await);
    until_pending(&broker, 1).await;
    broker.shutdown().await;
    // Down for longer than the delay.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let broker = start_durable(dir.path()).await;
    assert_eq!(
        broker.handle.core().pending_wills.len(),
        0,
        "published at startup, not armed"
    );
    assert_eq!(broker.handle.counters().wills_published, 1);
    let mut w = watcher(&broker, false).await;
    assert!(
        will_within(&mut w, STEP).await.is_some(),
        "queued for the offline watcher at startup"
    );
    broker.shutdown().await;

    // Published once: the record no longer holds it.
    let broker = start_durable(dir.path()).await;
    let mut w = watcher(&broker, false).await;
    assert_eq!(will_within(&mut w, Duration::from_secs(2)).await, None);
    assert_eq!(broker.handle.counters().wills_published, 0);
    broker.shutdown().await;
}

#[tokio::test]
async fn resuming_after_a_restart_cancels_the_pending_will_for_good() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start_durable(dir.path()).await;
    drop(watcher(&broker, true).await);
    drop(client_with_will(&broker, 2).await);
    until_pending(&broker, 1).await;
    broker.shutdown().await;

    let broker = start_durable(dir.path()).await;
    until_pending(&broker, 1).await;
    let (_x, ack) = RawClient::connect_ok(broker.addr, connect_v5("x", false, Some(600))).await;
    assert!(ack.session_present, "resumed");
    assert_eq!(broker.handle.core().pending_wills.len(), 0, "cancelled");
    let mut w = watcher(&broker, false).await;
    assert_eq!(
        will_within(&mut w, Duration::from_secs(3)).await,
        None,
        "a resumed session's will is never published"
    );
    drop(w);
    broker.shutdown().await;

    // The cancel was kept too: the will of the resumed connection (none) replaced it.
    let broker = start_durable(dir.path()).await;
    assert_eq!(broker.handle.core().pending_wills.len(), 0);
    let mut w = watcher(&broker, false).await;
    assert_eq!(will_within(&mut w, Duration::from_secs(3)).await, None);
    assert_eq!(broker.handle.counters().wills_published, 0);
    broker.shutdown().await;
}

/// The memory-only engine hands persistent sessions to the next broker instance as snapshots:
/// a pending will goes with its session and is armed again.
#[tokio::test]
async fn a_pending_will_goes_with_the_memory_engine_s_snapshots() {
    use std::sync::Arc;

    use ferromq::broker::MemorySessionStore;

    let config = || crate::support::load_xml(&crate::support::activemq_xml(&[], ""));
    let store = Arc::new(MemorySessionStore::default());
    let broker = TestBroker::start_with_store(config(), store.clone()).await;
    drop(client_with_will(&broker, 2).await);
    let dropped = Instant::now();
    until_pending(&broker, 1).await;
    broker.shutdown().await;

    let broker = TestBroker::start_with_store(config(), store).await;
    until_pending(&broker, 1).await;
    let mut w = watcher(&broker, true).await;
    let at = will_within(&mut w, Duration::from_secs(5))
        .await
        .expect("published after the restart");
    assert!(
        at - dropped >= Duration::from_millis(1900),
        "published {:?} after the drop, before its 2 s delay",
        at - dropped
    );
    broker.shutdown().await;
}

/// A client with a delayed will connected when the broker is killed (SIGKILL, the real
/// binary): its connection closed at the crash, whose time is not known, so the delay counts
/// from the restart (the client may still come back in time): nothing at startup, the will
/// about one delay later.
#[cfg(unix)]
#[tokio::test]
async fn a_delayed_will_of_a_client_connected_at_a_crash_waits_its_delay_after_the_restart() {
    use crate::support::wire::{
        numbered_publish, spawn_broker, subscribe, write_crash_config, Wire,
    };
    use crate::support::{free_port, ChildGuard};

    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let config = write_crash_config(dir.path(), port, 1000);
    let mut broker = ChildGuard(spawn_broker(&config));
    // A persistent MQTT 3.1.1 watcher, left offline (connecting also waits for the broker).
    let mut watcher = Wire::connect(addr, "watcher", false).await;
    subscribe(&mut watcher, "wd/#", QoS::AtLeastOnce).await;
    drop(watcher);
    let _x = client_with_will_at(addr, 3).await;
    // Session records are written in the background; a PUBACKed QoS 1 publish that changes the
    // store, submitted after them, is durable only once they are (the store applies batches in
    // order). Retained, so that it has something to keep (a publish nobody receives has not).
    let mut sync = Wire::connect(addr, "sync", true).await;
    let mut fence = numbered_publish("sync/t", 1, 1);
    if let Packet::Publish(p) = &mut fence {
        p.retain = true;
    }
    sync.send(&fence).await.expect("PUBLISH");
    assert!(matches!(sync.recv(STEP).await, Ok(Some(Packet::PubAck(_)))));
    broker.kill().expect("SIGKILL");
    broker.wait().expect("reaped");

    let _broker = ChildGuard(spawn_broker(&config));
    let mut watcher = Wire::connect(addr, "watcher", false).await;
    let restarted = Instant::now();
    let will = loop {
        match watcher
            .recv(Duration::from_secs(6))
            .await
            .expect("connected")
        {
            Some(Packet::Publish(p)) => break p,
            Some(_) => {}
            None => panic!("no will within 6 s of the restart"),
        }
    };
    assert_eq!(
        (&*will.topic, &will.payload[..]),
        (WILL_TOPIC, &b"gone"[..])
    );
    // Due 3 s after recovery; the watcher came back right after it (margin for a slow start).
    assert!(
        restarted.elapsed() >= Duration::from_millis(1500),
        "published {:?} after the watcher came back: not at startup",
        restarted.elapsed()
    );
}

/// [`client_with_will`] on the broker at `addr`.
async fn client_with_will_at(addr: std::net::SocketAddr, delay_secs: u32) -> RawClient {
    let mut connect = connect_v5("x", true, Some(600));
    connect.will = Some(delayed_will(delay_secs));
    RawClient::connect_ok(addr, connect).await.0
}

/// A delayed will routed to a shared group that its own (now offline) session is a member of:
/// choosing the group's member looks at every member's session, the will's own included,
/// while the will is being published. The will reaches the online member and the broker keeps
/// serving (it once waited forever on the will's session lock). Real binary, so that a hang is
/// a failed connect rather than a stuck test runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_will_to_a_shared_group_of_its_own_session_is_published_and_the_broker_serves_on()
{
    use crate::support::wire::{spawn_broker, write_crash_config, Wire};
    use crate::support::{free_port, ChildGuard};

    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let _broker = ChildGuard(spawn_broker(&write_crash_config(dir.path(), port, 1000)));
    drop(Wire::connect(addr, "ready", true).await); // waits for the broker to listen
    let share = "$share/g/wd/#";
    let (mut member, _) = RawClient::connect_ok(addr, connect_v5("member", true, Some(600))).await;
    member.subscribe(1, &[(share, QoS::AtLeastOnce)]).await;
    let mut x = client_with_will_at(addr, 1).await;
    x.subscribe(1, &[(share, QoS::AtLeastOnce)]).await;
    drop(x);

    let will = tokio::time::timeout(Duration::from_secs(5), member.recv_publish())
        .await
        .expect("the will reaches the online member within its delay and a margin");
    assert_eq!(
        (&*will.topic, &will.payload[..]),
        (WILL_TOPIC, &b"gone"[..])
    );
    let still_serving = tokio::time::timeout(
        Duration::from_secs(3),
        RawClient::connect(addr, connect_v5("later", true, None)),
    )
    .await;
    assert!(
        still_serving.is_ok(),
        "the broker accepts connections after the will"
    );
}
