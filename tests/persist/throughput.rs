//! Persistent QoS 1 fan-in throughput: several publishers into one persistent (offline)
//! subscriber's session, with the durable store (fsync per group commit) against the in-memory
//! broker and against mosquitto (which does not fsync per message) in the same run.
//!
//! A measurement, not a check: `#[ignore]`d, run it with
//! `cargo test --test persist throughput -- --ignored --nocapture` (numbers are printed; a debug
//! build measures ferromq unoptimized).

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferromq::protocol::{Packet, QoS};

use crate::support::load_xml;
use crate::support::wire::{broker_xml, numbered_publish, subscribe, Wire};

const PUBLISHERS: u32 = 8;
/// Enough for a run of a few seconds on the durable store (shorter runs were too noisy).
const MESSAGES_PER_PUBLISHER: u32 = 5000;
const WINDOW: u32 = 32;
const TOPIC: &str = "fanin/t";

async fn persistent_subscriber(addr: SocketAddr) {
    let mut sub = Wire::connect(addr, "fanin-sub", false).await;
    subscribe(&mut sub, TOPIC, QoS::AtLeastOnce).await;
}

/// Messages per second acknowledged, all publishers together.
async fn fan_in(addr: SocketAddr) -> f64 {
    persistent_subscriber(addr).await;
    let started = Instant::now();
    let mut publishers = Vec::new();
    for p in 0..PUBLISHERS {
        publishers.push(tokio::spawn(async move {
            let mut wire = Wire::connect(addr, &format!("fanin-pub-{p}"), true).await;
            let (mut sent, mut acked) = (0u32, 0u32);
            while acked < MESSAGES_PER_PUBLISHER {
                while sent < MESSAGES_PER_PUBLISHER && sent - acked < WINDOW {
                    let id = u16::try_from(sent % 60_000 + 1).expect("fits");
                    wire.send(&numbered_publish(TOPIC, sent, id))
                        .await
                        .expect("publish");
                    sent += 1;
                }
                match wire
                    .recv(Duration::from_secs(10))
                    .await
                    .expect("connection")
                {
                    Some(Packet::PubAck(_)) => acked += 1,
                    Some(other) => panic!("unexpected {other:?}"),
                    None => panic!("no PUBACK within 10 s"),
                }
            }
        }));
    }
    for p in publishers {
        p.await.expect("publisher");
    }
    f64::from(PUBLISHERS * MESSAGES_PER_PUBLISHER) / started.elapsed().as_secs_f64()
}

async fn ferromq_rate(
    persistent: bool,
) -> (f64, Option<ferromq::broker::durability::DurabilityStats>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = load_xml(&broker_xml(dir.path(), 0, persistent, "fanin.>", 1_000_000));
    let handle = ferromq::broker::start(config).await.expect("broker starts");
    let rate = fan_in(handle.listener_addrs()[0].1).await;
    let stats = Some(handle.core().durability().stats());
    tokio::time::timeout(Duration::from_secs(15), handle.shutdown())
        .await
        .expect("shutdown");
    (rate, stats)
}

async fn mosquitto_rate() -> Option<f64> {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = crate::support::free_port();
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 1000000\n"),
    )
    .expect("write mosquitto.conf");
    let mut child = Command::new("mosquitto")
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let rate = fan_in(([127, 0, 0, 1], port).into()).await;
    let _ = child.kill();
    let _ = child.wait();
    Some(rate)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run with --ignored --nocapture"]
async fn persistent_qos1_fan_in_throughput() {
    let total = PUBLISHERS * MESSAGES_PER_PUBLISHER;
    let (durable, stats) = ferromq_rate(true).await;
    let (memory, _) = ferromq_rate(false).await;
    let mosquitto = mosquitto_rate().await;
    println!("fan-in: {PUBLISHERS} publishers x {MESSAGES_PER_PUBLISHER} QoS 1 (window {WINDOW}) -> 1 offline persistent session, {total} msgs");
    println!("ferromq durable (fsync): {durable:.0} msg/s; store {stats:?}");
    if let Some(s) = stats.filter(|s| s.group_commits > 0) {
        println!(
            "  {:.0} batches per fsync (group commit)",
            s.batches_committed as f64 / s.group_commits as f64
        );
    }
    println!(
        "ferromq memory:          {memory:.0} msg/s; durable/memory = {:.2}",
        durable / memory
    );
    match mosquitto {
        Some(m) => println!(
            "mosquitto (no fsync per message): {m:.0} msg/s; durable/mosquitto = {:.2}",
            durable / m
        ),
        None => println!("mosquitto: not runnable here"),
    }
}
