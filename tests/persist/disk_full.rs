//! A durable broker whose store directory is on a small filesystem (an 8 MiB tmpfs mounted by
//! the test): QoS 1 publishes stop being acknowledged before the disk is full, the broker stays
//! up and serving, publishing resumes by itself once space is freed, every acknowledged message
//! reaches the offline persistent subscriber, and the store opens cleanly afterwards.
//!
//! Needs root (mount). Skipped with a message otherwise, unless `CI` is set: then it fails.
//! Holds whether a refused publish is simply not acknowledged (MQTT 3.1.1 today) or retried
//! by the broker later: only PUBACKs received are counted, whenever they come.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::tmpfs::SmallFs;
use crate::support::{ack, pending_limit_policy, publish_packet, RawClient, TestBroker};
use ferromq::protocol::{Disconnect, Packet, QoS};

const FS_KIB: u64 = 8 * 1024;
const PAYLOAD_BYTES: usize = 4096;
/// Kept on the filesystem from the start and removed with the filler, so that freeing space
/// gives the store more than it had when it stopped.
const BALLAST_BYTES: usize = 2 * 1024 * 1024;
/// How long a publish may wait for its PUBACK before it counts as refused.
const ACK_WAIT: Duration = Duration::from_millis(1000);

fn broker_xml(store_dir: &Path) -> String {
    format!(
        r#"<beans xmlns="http://www.springframework.org/schema/beans">
  <broker xmlns="http://activemq.apache.org/schema/core" brokerName="disk-full">
    {}
    <persistenceAdapter><kahaDB directory="{}"/></persistenceAdapter>
    <transportConnectors>
      <transportConnector name="mqtt" uri="mqtt://127.0.0.1:0"/>
    </transportConnectors>
  </broker>
</beans>
"#,
        pending_limit_policy("d.>", 1_000_000),
        store_dir.display()
    )
}

/// A QoS 1 publisher that remembers which numbered message each packet id carried and counts
/// every PUBACK, whenever it arrives.
struct Publisher {
    client: RawClient,
    next_id: u16,
    in_flight: HashMap<u16, u32>,
    acked: BTreeMap<u32, u16>,
    payload: Vec<u8>,
}

impl Publisher {
    async fn connect(addr: std::net::SocketAddr) -> Publisher {
        let (client, _) = RawClient::connected(addr, "publisher", true).await;
        Publisher {
            client,
            next_id: 1,
            in_flight: HashMap::new(),
            acked: BTreeMap::new(),
            payload: vec![b'p'; PAYLOAD_BYTES],
        }
    }

    /// Sends message `number`; true if its PUBACK came within [`ACK_WAIT`].
    async fn publish(&mut self, number: u32) -> bool {
        let id = self.next_id;
        self.next_id = self
            .next_id
            .checked_add(1)
            .expect("fewer than 65535 publishes");
        self.payload[..4].copy_from_slice(&number.to_be_bytes());
        self.in_flight.insert(id, number);
        self.client
            .send(publish_packet(
                "d/x",
                &self.payload,
                QoS::AtLeastOnce,
                Some(id),
                false,
            ))
            .await;
        let deadline = Instant::now() + ACK_WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.client.recv_within(left).await {
                Some(Packet::PubAck(a)) => {
                    // MQTT 5 would carry a reason; 3.1.1 acknowledges only what it kept.
                    if let Some(acked) = self.in_flight.remove(&a.packet_id) {
                        self.acked.insert(acked, a.packet_id);
                    }
                    if a.packet_id == id {
                        return true;
                    }
                }
                None => return false,
                Some(other) => panic!("unexpected packet for the publisher: {other:?}"),
            }
        }
    }

    /// Collects late PUBACKs (a broker that retries refused publishes) for `within`.
    async fn drain_acks(&mut self, within: Duration) {
        while let Some(p) = self.client.recv_within(within).await {
            if let Packet::PubAck(a) = p {
                if let Some(acked) = self.in_flight.remove(&a.packet_id) {
                    self.acked.insert(acked, a.packet_id);
                }
            }
        }
    }
}

/// The broker is up and serving: a new connection gets CONNACK and a QoS 0 message goes
/// from a publisher to a subscriber.
async fn assert_serving(addr: std::net::SocketAddr) {
    let (mut probe_sub, _) = RawClient::connected(addr, "probe-sub", true).await;
    probe_sub
        .subscribe(1, &[("probe/#", QoS::AtMostOnce)])
        .await;
    let (mut probe_pub, _) = RawClient::connected(addr, "probe-pub", true).await;
    probe_pub
        .send(publish_packet(
            "probe/x",
            b"alive",
            QoS::AtMostOnce,
            None,
            false,
        ))
        .await;
    let got = probe_sub.recv_publish().await;
    assert_eq!(&got.payload[..], b"alive");
}

async fn disconnect(mut client: RawClient) {
    client
        .send(Packet::Disconnect(Disconnect {
            reason: 0,
            properties: None,
        }))
        .await;
    client.expect_closed().await;
}

/// Opens the store in `dir` once the stopped broker's last handle on it is gone (its tasks may
/// still be finishing when `shutdown` returns).
async fn open_when_released(dir: &Path) -> ferromq::store::Store {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match ferromq::store::Store::open(dir, Default::default()) {
            Ok(store) => return store,
            Err(ferromq::store::StoreError::Locked { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("the store opens again: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_loses_no_acknowledged_message_and_recovers_by_itself() {
    let Some(fs) = SmallFs::mount(FS_KIB) else {
        return;
    };
    let store_dir = fs.path().join("kahadb");
    let xml = broker_xml(&store_dir);
    let ballast = fs.fill("ballast", BALLAST_BYTES);
    assert_eq!(ballast, BALLAST_BYTES);

    let broker = TestBroker::from_xml(&xml).await;
    let (mut sub, _) = RawClient::connected(broker.addr, "sub", false).await;
    sub.subscribe(1, &[("d/#", QoS::AtLeastOnce)]).await;
    disconnect(sub).await;

    // 1. Publish until the broker stops acknowledging.
    let mut publisher = Publisher::connect(broker.addr).await;
    let mut number = 0u32;
    let mut refused_in_a_row = 0;
    while refused_in_a_row < 4 {
        number += 1;
        assert!(number < 5000, "an 8 MiB filesystem cannot take 20 MB");
        if publisher.publish(number).await {
            refused_in_a_row = 0;
        } else {
            refused_in_a_row += 1;
        }
    }
    let acked_when_full = publisher.acked.len();
    eprintln!("disk full after {acked_when_full} acknowledged of {number} sent");
    assert!(
        acked_when_full >= 300,
        "most of the free space was used: {acked_when_full}"
    );
    let df = Command::new("df").arg(fs.path()).output().expect("df");
    eprintln!("{}", String::from_utf8_lossy(&df.stdout));

    // 2. Still alive and serving; the publisher's own connection too.
    assert_serving(broker.addr).await;
    publisher.client.send(Packet::PingReq).await;
    publisher.drain_acks(Duration::from_millis(300)).await;

    // 3. Take the rest of the space: a real ENOSPC if admission had not stopped already.
    let filler = fs.fill("filler", usize::MAX);
    eprintln!("filler took {filler} bytes");
    for _ in 0..5 {
        number += 1;
        publisher.publish(number).await;
    }
    assert_serving(broker.addr).await;

    // 4. Free space: new publishes are acknowledged again within seconds.
    fs.remove("filler");
    fs.remove("ballast");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        number += 1;
        if publisher.publish(number).await {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "publishing did not resume after space was freed"
        );
    }
    let resumed_at = publisher.acked.len();
    for _ in 0..20 {
        number += 1;
        assert!(
            publisher.publish(number).await,
            "acknowledged again after the space was freed"
        );
    }
    publisher.drain_acks(Duration::from_millis(500)).await;
    let acked: HashSet<u32> = publisher.acked.keys().copied().collect();
    eprintln!(
        "acknowledged: {} before full, {} in total ({} sent); resumed at {resumed_at}",
        acked_when_full,
        acked.len(),
        number
    );

    // 5. The subscriber gets every acknowledged message.
    let (mut sub, ack_packet) = RawClient::connected(broker.addr, "sub", false).await;
    assert!(ack_packet.session_present);
    let mut received: HashMap<u32, u32> = HashMap::new();
    while let Some(p) = sub.recv_within(Duration::from_secs(3)).await {
        let Packet::Publish(p) = p else {
            panic!("unexpected packet for the subscriber: {p:?}");
        };
        let n = u32::from_be_bytes(p.payload[..4].try_into().expect("numbered payload"));
        *received.entry(n).or_default() += 1;
        if let Some(id) = p.packet_id {
            sub.send(Packet::PubAck(ack(id))).await;
        }
        if acked.iter().all(|n| received.contains_key(n)) && received.len() >= acked.len() {
            // Everything is in; wait a little for stragglers only.
            if sub.recv_within(Duration::from_millis(300)).await.is_none() {
                break;
            }
        }
    }
    let lost: Vec<u32> = acked
        .iter()
        .copied()
        .filter(|n| !received.contains_key(n))
        .collect();
    let duplicates: u32 = received.values().map(|c| c - 1).sum();
    let unacknowledged_delivered = received.keys().filter(|n| !acked.contains(n)).count();
    eprintln!(
        "received {} distinct, {duplicates} duplicates, {unacknowledged_delivered} never \
         acknowledged to the publisher; lost {}",
        received.len(),
        lost.len()
    );
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
    disconnect(sub).await;
    disconnect(publisher.client).await;
    broker.shutdown().await;

    // 6. The store opens cleanly on the same directory: no damage, nothing left queued.
    {
        let store = open_when_released(&store_dir).await;
        let recovered = store.recover().expect("recover");
        assert!(
            recovered.stats.problems.is_empty(),
            "store damage: {:?}",
            recovered.stats.problems
        );
        let queued: usize = recovered.sessions.iter().map(|s| s.queue.len()).sum();
        assert_eq!(queued, 0, "every delivered message was acknowledged");
    }
    let broker = TestBroker::from_xml(&xml).await;
    let (sub, ack_packet) = RawClient::connected(broker.addr, "sub", false).await;
    assert!(ack_packet.session_present, "the session survived");
    disconnect(sub).await;
    broker.shutdown().await;
}
