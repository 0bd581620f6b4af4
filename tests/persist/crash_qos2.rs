//! Exactly-once across crashes: a QoS 2 publisher with a persistent session streams numbered
//! messages to a persistent subscriber's offline session while the `ferromq` binary is killed
//! with SIGKILL at random moments and restarted. Then the subscriber drains its session while the
//! broker is killed again. Both clients resume their sessions after every restart the way MQTT
//! 3.1.1 4.4 requires (PUBLISH again with DUP what got no PUBREC, PUBREL again what got no
//! PUBCOMP; a receiver remembers the packet ids it PUBREC'd until their PUBREL). At the end every
//! message reached the subscriber exactly once: no loss, no duplicate.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use ferromq::protocol::{Ack, Packet, Publish, QoS};

use crate::support::wire::{payload_number, CrashRig, Wire};

const MESSAGES: u32 = 3_000;
const PUBLISH_KILLS: u32 = 6;
const DRAIN_KILLS: u32 = 3;
/// QoS 2 exchanges the publisher keeps open (pipelining, so kills hit mid-batch).
const WINDOW: usize = 64;
const TOPIC: &str = "crash/q2";
/// Bounds the whole test (it normally takes a few seconds).
const DEADLINE: Duration = Duration::from_secs(90);

/// The publishing client's session state, kept across its connections like a real client's.
#[derive(Default)]
struct Publisher {
    next_number: u32,
    last_id: u16,
    /// Sent, no PUBREC yet: PUBLISH again (DUP) after a reconnect. In sending order.
    awaiting_rec: BTreeMap<u64, (u16, u32)>,
    /// PUBREC received (the broker owns the message), no PUBCOMP yet: PUBREL again.
    awaiting_comp: BTreeMap<u16, u32>,
    /// Messages the broker acknowledged with PUBREC.
    received_by_broker: BTreeSet<u32>,
    sent_order: u64,
}

impl Publisher {
    fn done(&self) -> bool {
        self.next_number == MESSAGES
            && self.awaiting_rec.is_empty()
            && self.awaiting_comp.is_empty()
    }

    fn free_id(&mut self) -> u16 {
        loop {
            self.last_id = self.last_id.checked_add(1).unwrap_or(1);
            let id = self.last_id;
            let in_use = self.awaiting_comp.contains_key(&id)
                || self.awaiting_rec.values().any(|(i, _)| *i == id);
            if !in_use {
                return id;
            }
        }
    }

    /// One connection's run: resume the session, then keep `WINDOW` exchanges open until every
    /// message is complete or the connection dies.
    async fn run(&mut self, wire: &mut Wire, progress: &AtomicUsize) -> std::io::Result<()> {
        let resend: Vec<(u16, u32)> = self.awaiting_rec.values().copied().collect();
        for (id, number) in resend {
            wire.send(&qos2_publish(number, id, true)).await?;
        }
        let releases: Vec<u16> = self.awaiting_comp.keys().copied().collect();
        for id in releases {
            wire.send(&Packet::PubRel(Ack::new(id))).await?;
        }
        loop {
            while self.awaiting_rec.len() + self.awaiting_comp.len() < WINDOW
                && self.next_number < MESSAGES
            {
                let (number, id) = (self.next_number, self.free_id());
                wire.send(&qos2_publish(number, id, false)).await?;
                self.sent_order += 1;
                self.awaiting_rec.insert(self.sent_order, (id, number));
                self.next_number += 1;
            }
            if self.done() {
                return Ok(());
            }
            match wire.recv(Duration::from_secs(5)).await? {
                Some(Packet::PubRec(a)) => {
                    let key = self
                        .awaiting_rec
                        .iter()
                        .find(|(_, (id, _))| *id == a.packet_id)
                        .map(|(k, _)| *k);
                    if let Some((id, number)) = key.and_then(|k| self.awaiting_rec.remove(&k)) {
                        self.awaiting_comp.insert(id, number);
                        self.received_by_broker.insert(number);
                        progress.store(self.received_by_broker.len(), Ordering::Relaxed);
                    }
                    wire.send(&Packet::PubRel(Ack::new(a.packet_id))).await?;
                }
                Some(Packet::PubComp(a)) => {
                    self.awaiting_comp.remove(&a.packet_id);
                }
                Some(other) => panic!("unexpected packet to the publisher: {other:?}"),
                None => return Err(std::io::ErrorKind::TimedOut.into()),
            }
        }
    }
}

fn qos2_publish(number: u32, packet_id: u16, dup: bool) -> Packet {
    Packet::Publish(Publish {
        dup,
        qos: QoS::ExactlyOnce,
        retain: false,
        topic: TOPIC.into(),
        packet_id: Some(packet_id),
        payload: Bytes::from(number.to_be_bytes().to_vec()),
        properties: None,
    })
}

/// The subscribing client's session state: what it delivered to its application, and the
/// packet ids it PUBREC'd and not yet saw released (a PUBLISH re-sent with one of them is the
/// same message: acknowledged again, not delivered again).
#[derive(Default)]
struct Subscriber {
    delivered: Vec<u32>,
    unreleased: HashSet<u16>,
}

impl Subscriber {
    async fn drain(&mut self, wire: &mut Wire, progress: &AtomicUsize) -> std::io::Result<()> {
        loop {
            match wire.recv(Duration::from_secs(3)).await? {
                Some(Packet::Publish(p)) => {
                    assert_eq!(p.qos, QoS::ExactlyOnce, "granted QoS 2");
                    let id = p.packet_id.expect("QoS 2 has a packet id");
                    if self.unreleased.insert(id) {
                        self.delivered.push(payload_number(&p.payload));
                        progress.store(self.delivered.len(), Ordering::Relaxed);
                    } else {
                        assert!(p.dup, "a re-sent PUBLISH must carry DUP");
                    }
                    wire.send(&Packet::PubRec(Ack::new(id))).await?;
                }
                Some(Packet::PubRel(a)) => {
                    self.unreleased.remove(&a.packet_id);
                    wire.send(&Packet::PubComp(Ack::new(a.packet_id))).await?;
                }
                Some(other) => panic!("unexpected packet to the subscriber: {other:?}"),
                None => return Ok(()),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos2_messages_arrive_exactly_once_across_random_sigkills() {
    let started = Instant::now();
    let rig = CrashRig::start(MESSAGES * 2, "crash2-sub", TOPIC, QoS::ExactlyOnce).await;
    let addr = rig.addr;
    let progress = Arc::new(AtomicUsize::new(0));
    let killer = rig.killer(PUBLISH_KILLS, MESSAGES as usize, progress.clone());
    let mut publisher = Publisher::default();
    let mut publisher_connections = 0;
    while !publisher.done() {
        assert!(started.elapsed() < DEADLINE, "publishing took too long");
        let mut wire = Wire::connect(addr, "crash2-pub", false).await;
        publisher_connections += 1;
        let _ = publisher.run(&mut wire, &progress).await;
    }
    let at_publish_kills = killer.await.expect("killer task");

    // Drain, with kills in the middle of the subscriber's exchanges too.
    let progress = Arc::new(AtomicUsize::new(0));
    let killer = rig.killer(DRAIN_KILLS, MESSAGES as usize, progress.clone());
    let mut subscriber = Subscriber::default();
    let mut subscriber_connections = 0;
    while subscriber.delivered.len() < MESSAGES as usize || !killer.is_finished() {
        assert!(started.elapsed() < DEADLINE, "draining took too long");
        let mut wire = Wire::connect(addr, "crash2-sub", false).await;
        subscriber_connections += 1;
        if subscriber.drain(&mut wire, &progress).await.is_ok()
            && subscriber.delivered.len() >= MESSAGES as usize
        {
            break;
        }
    }
    let at_drain_kills = killer.await.expect("killer task");
    // Anything still queued after the last restart would be a duplicate: read for a while more.
    let mut wire = Wire::connect(addr, "crash2-sub", false).await;
    let _ = subscriber.drain(&mut wire, &progress).await;

    let mut counts: BTreeMap<u32, usize> = BTreeMap::new();
    for n in &subscriber.delivered {
        *counts.entry(*n).or_default() += 1;
    }
    let duplicates: usize = counts.values().map(|c| c - 1).sum();
    let losses = (0..MESSAGES).filter(|n| !counts.contains_key(n)).count();
    println!(
        "QoS 2 crash test: N={MESSAGES} kills while publishing={PUBLISH_KILLS} (acknowledged at \
         each: {at_publish_kills:?}) kills while draining={DRAIN_KILLS} (delivered at each: \
         {at_drain_kills:?}) publisher connections={publisher_connections} subscriber \
         connections={subscriber_connections} delivered={} losses={losses} \
         duplicates={duplicates} in {:?}",
        subscriber.delivered.len(),
        started.elapsed()
    );
    assert_eq!(publisher.received_by_broker.len(), MESSAGES as usize);
    assert_eq!(losses, 0, "acknowledged QoS 2 messages lost");
    assert_eq!(duplicates, 0, "QoS 2 messages delivered twice");
}
