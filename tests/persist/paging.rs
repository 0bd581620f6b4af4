//! A long queue does not live in RAM when the broker has a store: an offline persistent
//! session gets three times `memoryUsage` of QoS 1 payload, every message is acknowledged
//! (no producer flow control needed: beyond the pending limit payloads stay in the store), the
//! broker's resident (anonymous) memory stays within `memoryUsage` plus a stated margin, before and after a
//! restart, and the session then receives every message.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::support::free_port;
use crate::support::wire::{spawn_broker, subscribe, KillOnDrop, Wire};
use bytes::Bytes;
use ferromq::protocol::{Ack, Packet, Publish, QoS};

pub(crate) const MEMORY_LIMIT_MB: u64 = 16;
/// The store's page cache: 64 MiB at most.
pub(crate) const STORE_CACHE_MB: u64 = 64;
/// The process itself: runtime, buffers, allocator slack (measured 2 MiB at the start and
/// 5-6 MiB above the accounted figures at the end of a drain, the allocator's arenas of the
/// connections' threads holding pages freed by the store's).
pub(crate) const PROCESS_MARGIN_MB: u64 = 12;
/// What the broker may allocate beyond `memoryUsage`, measured as anonymous memory
/// ([`anon_rss_mb`]): the binary's code pages, file-backed, are not the broker's allocations
/// and depend on the build (a debug build's are 22-24 MiB); counting them left the bound at
/// the mercy of a 1 MiB difference in how many pages a run touched ...
pub(crate) const RSS_MARGIN_MB: u64 = STORE_CACHE_MB + PROCESS_MARGIN_MB;
/// ... plus the envelope of each paged-out message (topic, QoS, sequence: measured about 134
/// bytes with a 6-byte topic; 8x `memoryUsage` queued took 11 MiB more than 3x).
const ENVELOPE_BYTES: u64 = 160;
const PAYLOAD_BYTES: usize = 1024;
/// Three times `memoryUsage` of payload.
const MESSAGES: u32 = (3 * MEMORY_LIMIT_MB * 1024 * 1024 / PAYLOAD_BYTES as u64) as u32;

pub(crate) fn config(dir: &Path, port: u16) -> std::path::PathBuf {
    let xml = format!(
        r#"<beans xmlns="http://www.springframework.org/schema/beans">
  <broker xmlns="http://activemq.apache.org/schema/core" brokerName="paging" persistent="true">
    <persistenceAdapter><kahaDB directory="{}"/></persistenceAdapter>
    <systemUsage><systemUsage>
      <memoryUsage><memoryUsage limit="{MEMORY_LIMIT_MB} mb"/></memoryUsage>
    </systemUsage></systemUsage>
    <transportConnectors>
      <transportConnector name="mqtt" uri="mqtt://127.0.0.1:{port}"/>
    </transportConnectors>
  </broker>
</beans>
"#,
        dir.join("kahadb").display()
    );
    let path = dir.join("activemq.xml");
    std::fs::write(&path, xml).expect("write config");
    path
}

/// Anonymous resident memory of process `pid` in MiB (`RssAnon` of Linux `/proc`): what it
/// allocated and touched, without its file-backed code pages.
pub(crate) fn anon_rss_mb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("RssAnon");
    kb / 1024
}

/// The broker's memory once a queue was drained: within `bound` at once, and within
/// `memoryUsage` plus the process margin once idle (what the drain read back, and the store's
/// cache the recovery filled, was freed; the allocator gives it back to the system).
pub(crate) async fn assert_drained_memory(pid: u32, bound: u64) {
    let drained = anon_rss_mb(pid);
    println!("drained: anonymous RSS {drained} MiB");
    assert!(
        drained <= bound,
        "anonymous RSS {drained} MiB while draining"
    );
    let idle_bound = MEMORY_LIMIT_MB + PROCESS_MARGIN_MB;
    let idle = settled_anon_rss_mb(pid, idle_bound).await;
    println!("idle after the drain: anonymous RSS {idle} MiB (bound {idle_bound})");
    assert!(
        idle <= idle_bound,
        "anonymous RSS {idle} MiB idle after the drain"
    );
}

/// Anonymous RSS of `pid` once the broker has been idle: polled for up to 5 s until it is
/// at most `bound` (the allocator's free pages go back to the system within about two
/// seconds, `broker/allocator.rs`); the last figure.
async fn settled_anon_rss_mb(pid: u32, bound: u64) -> u64 {
    let give_up = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let now = anon_rss_mb(pid);
        if now <= bound || tokio::time::Instant::now() >= give_up {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Kill -9 the broker and start it again on `config`; the new process id.
pub(crate) fn kill_and_restart(
    broker: &parking_lot::Mutex<std::process::Child>,
    config: &Path,
) -> u32 {
    let mut child = broker.lock();
    child.kill().expect("kill");
    child.wait().expect("wait");
    *child = spawn_broker(config);
    child.id()
}

async fn publish_all(addr: SocketAddr, pid: u32) -> u64 {
    let mut publisher = Wire::connect(addr, "pub", true).await;
    let mut peak = 0;
    let (mut sent, mut acked) = (0u32, 0u32);
    let mut payload = vec![b'p'; PAYLOAD_BYTES];
    while acked < MESSAGES {
        while sent < MESSAGES && sent - acked < 200 {
            payload[..4].copy_from_slice(&sent.to_be_bytes());
            let packet = Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtLeastOnce,
                retain: false,
                topic: "page/x".into(),
                packet_id: Some((sent % 60_000 + 1) as u16),
                payload: Bytes::copy_from_slice(&payload),
                properties: None,
            });
            publisher.send(&packet).await.expect("send");
            sent += 1;
        }
        match publisher.recv(Duration::from_secs(10)).await {
            Ok(Some(Packet::PubAck(_))) => acked += 1,
            other => panic!("expected PUBACK {acked}: {other:?} (the publisher was stopped?)"),
        }
        if acked % 4096 == 0 {
            peak = peak.max(anon_rss_mb(pid));
        }
    }
    peak.max(anon_rss_mb(pid))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_times_memory_usage_queued_offline_stays_within_memory_usage() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = config(dir.path(), port);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let broker = std::sync::Arc::new(parking_lot::Mutex::new(spawn_broker(&config)));
    let _kill = KillOnDrop(broker.clone());
    let pid = broker.lock().id();

    let mut sub = Wire::connect(addr, "sub", false).await;
    subscribe(&mut sub, "page/#", QoS::AtLeastOnce).await;
    drop(sub);

    let peak = publish_all(addr, pid).await;
    let bound = MEMORY_LIMIT_MB + RSS_MARGIN_MB + u64::from(MESSAGES) * ENVELOPE_BYTES / (1 << 20);
    println!("{MESSAGES} x {PAYLOAD_BYTES} B queued offline: peak anonymous RSS {peak} MiB (bound {bound})");
    assert!(
        peak <= bound,
        "anonymous RSS {peak} MiB > {bound} MiB while publishing"
    );

    // A restart reads the queue back paged too.
    let pid = kill_and_restart(&broker, &config);
    let mut sub = Wire::connect(addr, "sub", false).await;
    let after_restart = anon_rss_mb(pid);
    println!("after a restart: anonymous RSS {after_restart} MiB");
    assert!(
        after_restart <= bound,
        "anonymous RSS {after_restart} MiB after restart"
    );

    let mut seen = BTreeSet::new();
    while seen.len() < MESSAGES as usize {
        match sub.recv(Duration::from_secs(10)).await {
            Ok(Some(Packet::Publish(p))) => {
                seen.insert(u32::from_be_bytes(p.payload[..4].try_into().expect("n")));
                assert_eq!(p.payload.len(), PAYLOAD_BYTES, "payload read back whole");
                let id = p.packet_id.expect("QoS 1");
                sub.send(&Packet::PubAck(Ack::new(id))).await.expect("ack");
            }
            other => panic!("after {} messages: {other:?}", seen.len()),
        }
    }
    assert_eq!(seen, (0..MESSAGES).collect());
    assert_drained_memory(pid, bound).await;
}
