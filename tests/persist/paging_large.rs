//! Paging with large messages: an offline persistent session gets five times `memoryUsage`
//! in messages of 2 MiB, the broker is killed (-9) and restarted, and the session drains it.
//! Recovery and the drain stay within `memoryUsage` plus the store's cache and the process
//! margin, as with small messages ([`super::paging`]): recovery holds queued payloads up to
//! half of `memoryUsage` (not a count of them), a page read back is sized to `memoryUsage`,
//! no page is read while `memoryUsage` is full and deliveries are in flight, and blocks of
//! this size are returned to the system when freed.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use ferromq::protocol::{Ack, Packet, Publish, QoS};

use super::paging::{
    anon_rss_mb, kill_and_restart, MEMORY_LIMIT_MB, PROCESS_MARGIN_MB, STORE_CACHE_MB,
};
use crate::support::free_port;
use crate::support::wire::{spawn_broker, subscribe, KillOnDrop, Wire};

pub(crate) const PAYLOAD_BYTES: usize = 2 << 20;
/// Five times `memoryUsage`.
pub(crate) const MESSAGES: u32 = (5 * MEMORY_LIMIT_MB * 1024 * 1024 / PAYLOAD_BYTES as u64) as u32;
/// Beyond `memoryUsage`: a page read back while it is full (one message), and the packet
/// being written to the socket.
const IN_TRANSIT_MB: u64 = 2 * (PAYLOAD_BYTES as u64 >> 20);
/// What the broker may hold: `memoryUsage`, the store's cache, the process, in transit.
pub(crate) const BOUND_MB: u64 =
    MEMORY_LIMIT_MB + STORE_CACHE_MB + PROCESS_MARGIN_MB + IN_TRANSIT_MB;
/// A small pending limit: past it, messages queued to the offline session are paged out as
/// they arrive (four hold half of `memoryUsage`).
const PENDING_LIMIT: usize = 4;

/// The broker's configuration in `dir`, serving `connector` (`mqtt://127.0.0.1:PORT`).
/// `pending_limit` None: ActiveMQ's default (1000), which these messages never reach; paging
/// then starts when `memoryUsage` is half full (without that, eight of them fill it and the
/// publisher is paused until the subscriber comes back).
pub(crate) fn config(dir: &Path, connector: &str, pending_limit: Option<usize>) -> PathBuf {
    let policy = pending_limit.map_or(String::new(), |limit| {
        format!(
            r#"<destinationPolicy><policyMap><policyEntries>
      <policyEntry topic=">"><pendingMessageLimitStrategy>
        <constantPendingMessageLimitStrategy limit="{limit}"/>
      </pendingMessageLimitStrategy></policyEntry>
    </policyEntries></policyMap></destinationPolicy>"#
        )
    });
    let xml = format!(
        r#"<beans xmlns="http://www.springframework.org/schema/beans">
  <broker xmlns="http://activemq.apache.org/schema/core" brokerName="paging" persistent="true">
    {policy}
    <persistenceAdapter><kahaDB directory="{}"/></persistenceAdapter>
    <systemUsage><systemUsage>
      <memoryUsage><memoryUsage limit="{MEMORY_LIMIT_MB} mb"/></memoryUsage>
    </systemUsage></systemUsage>
    <transportConnectors>
      <transportConnector name="only" uri="{connector}"/>
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_messages_recovered_and_drained_stay_within_memory_usage() {
    fill_restart_drain(Some(PENDING_LIMIT)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_messages_are_paged_by_memory_usage_under_the_default_pending_limit() {
    fill_restart_drain(None).await;
}

async fn fill_restart_drain(pending_limit: Option<usize>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = config(
        dir.path(),
        &format!("mqtt://127.0.0.1:{port}"),
        pending_limit,
    );
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let broker = std::sync::Arc::new(parking_lot::Mutex::new(spawn_broker(&config)));
    let _kill = KillOnDrop(broker.clone());

    let mut sub = Wire::connect(addr, "big-sub", false).await;
    subscribe(&mut sub, "big/#", QoS::AtLeastOnce).await;
    drop(sub);

    let mut publisher = Wire::connect(addr, "big-pub", true).await;
    let mut payload = vec![b'b'; PAYLOAD_BYTES];
    let (mut sent, mut acked) = (0u32, 0u32);
    while acked < MESSAGES {
        while sent < MESSAGES && sent - acked < 4 {
            payload[..4].copy_from_slice(&sent.to_be_bytes());
            let packet = Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtLeastOnce,
                retain: false,
                topic: "big/x".into(),
                packet_id: Some((sent + 1) as u16),
                payload: Bytes::copy_from_slice(&payload),
                properties: None,
            });
            publisher.send(&packet).await.expect("send");
            sent += 1;
        }
        match publisher.recv(Duration::from_secs(10)).await {
            Ok(Some(Packet::PubAck(_))) => acked += 1,
            other => panic!("expected PUBACK {acked}: {other:?}"),
        }
    }
    drop(publisher);

    let bound = BOUND_MB;
    let pid = kill_and_restart(&broker, &config);
    let mut sub = Wire::connect(addr, "big-sub", false).await;
    let recovered = anon_rss_mb(pid);
    println!(
        "{MESSAGES} x {PAYLOAD_BYTES} B recovered: anonymous RSS {recovered} MiB (bound {bound})"
    );
    assert!(
        recovered <= bound,
        "anonymous RSS {recovered} MiB after recovery"
    );

    let mut seen = BTreeSet::new();
    let mut peak = 0;
    while seen.len() < MESSAGES as usize {
        match sub.recv(Duration::from_secs(10)).await {
            Ok(Some(Packet::Publish(p))) => {
                assert_eq!(p.payload.len(), PAYLOAD_BYTES, "payload read back whole");
                seen.insert(u32::from_be_bytes(p.payload[..4].try_into().expect("n")));
                peak = peak.max(anon_rss_mb(pid));
                let id = p.packet_id.expect("QoS 1");
                sub.send(&Packet::PubAck(Ack::new(id))).await.expect("ack");
            }
            other => panic!("after {} messages: {other:?}", seen.len()),
        }
    }
    assert_eq!(seen, (0..MESSAGES).collect());
    println!("drained: peak anonymous RSS {peak} MiB (bound {bound})");
    assert!(peak <= bound, "anonymous RSS {peak} MiB while draining");
}
