//! Mixed QoS 1 / QoS 2 traffic across random SIGKILLs, with subscribers that come and go.
//!
//! One durable `ferromq` process is killed with SIGKILL (and restarted) at random moments while
//! 10 publishers with persistent sessions (clean session 0) stream numbered messages: 5 at QoS 1
//! to `mix/q1/<n>`, 5 at QoS 2 to `mix/q2/<n>`, each with a window of open exchanges. Two
//! persistent subscribers (`mix/q1/#` at QoS 1, `mix/q2/#` at QoS 2) are online only part of the
//! time: they connect, receive for a random 100-500 ms, leave (DISCONNECT or a dropped socket)
//! and stay away for a random 100-500 ms, besides being cut by the kills. Every client resumes its
//! session after each reconnect as MQTT 3.1.1 4.4 requires: a publisher re-sends unacknowledged
//! PUBLISHes with DUP and the same packet id, and PUBREL for what got a PUBREC but no PUBCOMP; the
//! QoS 2 subscriber remembers the packet ids it PUBREC'd until their PUBREL (4.3.3 Method B), so
//! a re-sent PUBLISH is acknowledged again, not counted again. For the last 10% of the messages
//! the subscribers stay offline (their queues grow past the pending limit, so payloads page out
//! to the store); when the publishers are done, the subscribers connect and drain their sessions
//! while the broker is killed twice more (at random numbers of messages received), until a quiet
//! period.
//!
//! At the end: every message the broker acknowledged (PUBACK for QoS 1, PUBREC for QoS 2) was
//! received at least once, no QoS 2 message was received twice, and QoS 1 duplicates (allowed)
//! are counted and printed.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Child;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use rand::Rng;
use tokio::sync::oneshot;

use ferromq::protocol::{Ack, Disconnect, Packet, Publish, QoS};

use crate::support::connect_packet;
use crate::support::wire::{random_kill_points, spawn_broker, subscribe, CrashRig, Wire};

/// Publishers per QoS (publisher `p` in `0..5` sends QoS 1 to `mix/q1/p`, `p` in `5..10` sends
/// QoS 2 to `mix/q2/{p-5}`).
const PUBLISHERS_PER_QOS: u32 = 5;
const PUBLISHERS: u32 = 2 * PUBLISHERS_PER_QOS;
/// Numbered messages each publisher sends.
const MESSAGES: u32 = 3_000;
const TOTAL: usize = (PUBLISHERS * MESSAGES) as usize;
/// Messages per second a publisher sends at most (so the publishing phase lasts long enough,
/// about 7.5 s, for the subscribers to come and go many times).
const RATE: f64 = 400.0;
/// Exchanges a publisher keeps open (no PUBACK/PUBREC, or no PUBCOMP yet).
const WINDOW: usize = 24;
/// Kills while the publishers run (at random numbers of acknowledged messages).
const PUBLISH_KILLS: u32 = 6;
/// Kills while the subscribers drain (at random numbers of messages received).
const DRAIN_KILLS: u32 = 2;
/// Pending-message limit on `mix.>` (ActiveMQ's name for `mix/#`): low, so offline queues
/// page their payloads out to the store and online subscribers pause their publishers.
const PENDING_LIMIT: u32 = 200;
/// Once this many messages are acknowledged, the subscribers stay offline until the drain, so
/// that it starts with a backlog (paged out: above `PENDING_LIMIT`) for the drain kills to hit.
const FINAL_STRETCH: usize = TOTAL * 9 / 10;
/// A subscriber's drain ends after this long with nothing received and everything expected in.
const QUIET: Duration = Duration::from_secs(2);
/// ... or after this long with nothing received while something is still missing (a loss).
const GIVE_UP_QUIET: Duration = Duration::from_secs(12);
/// Bounds the whole test (it normally takes well under a minute).
const DEADLINE: Duration = Duration::from_secs(85);

const Q1_SUBSCRIBER: &str = "mix-sub-q1";
const Q2_SUBSCRIBER: &str = "mix-sub-q2";

/// A message: (publisher index, sequence number).
type Key = (u32, u32);

fn is_qos2_publisher(publisher: u32) -> bool {
    publisher >= PUBLISHERS_PER_QOS
}

fn topic_of(publisher: u32) -> String {
    if is_qos2_publisher(publisher) {
        format!("mix/q2/{}", publisher - PUBLISHERS_PER_QOS)
    } else {
        format!("mix/q1/{publisher}")
    }
}

fn payload_of(publisher: u32, seq: u32) -> Bytes {
    let mut bytes = publisher.to_be_bytes().to_vec();
    bytes.extend_from_slice(&seq.to_be_bytes());
    Bytes::from(bytes)
}

fn key_of(payload: &[u8]) -> Option<Key> {
    let bytes: [u8; 8] = payload.try_into().ok()?;
    let publisher = u32::from_be_bytes(bytes[..4].try_into().expect("4-byte publisher index"));
    let seq = u32::from_be_bytes(bytes[4..].try_into().expect("4-byte sequence number"));
    Some((publisher, seq))
}

fn disconnect() -> Packet {
    Packet::Disconnect(Disconnect {
        reason: 0,
        properties: None,
    })
}

fn random_ms(range: std::ops::Range<u64>) -> Duration {
    Duration::from_millis(rand::rng().random_range(range))
}

/// Counters the tasks share with the killers and the summary.
#[derive(Default)]
struct Shared {
    /// Messages acknowledged by the broker (first PUBACK/PUBREC of each), all publishers.
    acked: AtomicUsize,
    /// Distinct messages received, both subscribers.
    received: AtomicUsize,
    /// PUBLISHes the subscribers counted (distinct or duplicate).
    deliveries: AtomicU64,
    /// Open publisher exchanges (no PUBACK/PUBREC, or no PUBCOMP yet), all publishers.
    in_flight: AtomicUsize,
}

/// A publishing client's session state, kept across its connections like a real client's.
struct Publisher {
    index: u32,
    qos: QoS,
    topic: String,
    client_id: String,
    next_seq: u32,
    last_id: u16,
    /// Sent, no PUBACK (QoS 1) / PUBREC (QoS 2) yet: PUBLISH again with DUP after a reconnect.
    /// Keyed by sending order.
    awaiting_ack: BTreeMap<u64, (u16, u32)>,
    /// QoS 2: PUBREC received (the broker owns the message), no PUBCOMP yet: PUBREL again.
    awaiting_comp: BTreeMap<u16, u32>,
    /// Sequence numbers the broker acknowledged (PUBACK / PUBREC).
    acked: BTreeSet<u32>,
    sent_order: u64,
    /// PUBLISH packets written, re-sends included.
    publishes_written: u64,
    /// PUBLISHes re-sent with DUP, PUBRELs re-sent, after a reconnect.
    republished: u64,
    rereleased: u64,
    connections: u32,
    /// When it began sending (the origin of its `RATE` schedule).
    started: Instant,
    /// Its open exchanges as last added to `Shared::in_flight`.
    in_flight_reported: usize,
    /// Reconnects whose CONNACK said the session was not present (it should always be).
    sessions_missing: u32,
    timeouts: u32,
}

impl Publisher {
    fn new(index: u32) -> Publisher {
        Publisher {
            index,
            qos: if is_qos2_publisher(index) {
                QoS::ExactlyOnce
            } else {
                QoS::AtLeastOnce
            },
            topic: topic_of(index),
            client_id: format!("mix-pub-{index}"),
            next_seq: 0,
            last_id: 0,
            awaiting_ack: BTreeMap::new(),
            awaiting_comp: BTreeMap::new(),
            acked: BTreeSet::new(),
            sent_order: 0,
            publishes_written: 0,
            republished: 0,
            rereleased: 0,
            connections: 0,
            started: Instant::now(),
            in_flight_reported: 0,
            sessions_missing: 0,
            timeouts: 0,
        }
    }

    fn done(&self) -> bool {
        self.next_seq == MESSAGES && self.awaiting_ack.is_empty() && self.awaiting_comp.is_empty()
    }

    /// When sequence number `seq` may be sent: the `RATE` schedule, in bursts of `WINDOW`
    /// (so a kill finds whole windows in flight).
    fn slot(&self, seq: u32) -> Instant {
        let burst_start = seq - seq % WINDOW as u32;
        self.started + Duration::from_secs_f64(f64::from(burst_start) / RATE)
    }

    fn free_id(&mut self) -> u16 {
        loop {
            self.last_id = self.last_id.checked_add(1).unwrap_or(1);
            let id = self.last_id;
            let in_use = self.awaiting_comp.contains_key(&id)
                || self.awaiting_ack.values().any(|(i, _)| *i == id);
            if !in_use {
                return id;
            }
        }
    }

    fn publish(&self, seq: u32, packet_id: u16, dup: bool) -> Packet {
        Packet::Publish(Publish {
            dup,
            qos: self.qos,
            retain: false,
            topic: self.topic.clone(),
            packet_id: Some(packet_id),
            payload: payload_of(self.index, seq),
            properties: None,
        })
    }

    fn take_awaiting_ack(&mut self, packet_id: u16) -> Option<(u16, u32)> {
        let key = self
            .awaiting_ack
            .iter()
            .find(|(_, (id, _))| *id == packet_id)
            .map(|(k, _)| *k)?;
        self.awaiting_ack.remove(&key)
    }

    fn report_in_flight(&mut self, shared: &Shared) {
        let now = self.awaiting_ack.len() + self.awaiting_comp.len();
        if now > self.in_flight_reported {
            shared
                .in_flight
                .fetch_add(now - self.in_flight_reported, Ordering::Relaxed);
        } else {
            shared
                .in_flight
                .fetch_sub(self.in_flight_reported - now, Ordering::Relaxed);
        }
        self.in_flight_reported = now;
    }

    fn record_ack(&mut self, seq: u32, shared: &Shared) {
        if self.acked.insert(seq) {
            shared.acked.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// One connection's run: resume the session, then keep `WINDOW` exchanges open until every
    /// message is complete or the connection dies.
    async fn run(&mut self, wire: &mut Wire, shared: &Shared) -> std::io::Result<()> {
        let resend: Vec<(u16, u32)> = self.awaiting_ack.values().copied().collect();
        for (id, seq) in resend {
            wire.send(&self.publish(seq, id, true)).await?;
            self.publishes_written += 1;
            self.republished += 1;
        }
        let releases: Vec<u16> = self.awaiting_comp.keys().copied().collect();
        for id in releases {
            wire.send(&Packet::PubRel(Ack::new(id))).await?;
            self.rereleased += 1;
        }
        loop {
            let room = |p: &Publisher| p.awaiting_ack.len() + p.awaiting_comp.len() < WINDOW;
            while room(self)
                && self.next_seq < MESSAGES
                && self.slot(self.next_seq) <= Instant::now()
            {
                let (seq, id) = (self.next_seq, self.free_id());
                wire.send(&self.publish(seq, id, false)).await?;
                self.publishes_written += 1;
                self.sent_order += 1;
                self.awaiting_ack.insert(self.sent_order, (id, seq));
                self.next_seq += 1;
            }
            self.report_in_flight(shared);
            if self.done() {
                return Ok(());
            }
            // Wait for an acknowledgement, or for the next message's slot if it may go then.
            let paced = room(self) && self.next_seq < MESSAGES;
            let wait = if paced {
                self.slot(self.next_seq)
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1))
            } else {
                Duration::from_secs(10)
            };
            if paced && self.awaiting_ack.is_empty() && self.awaiting_comp.is_empty() {
                tokio::time::sleep(wait).await;
                continue;
            }
            match wire.recv(wait).await? {
                Some(Packet::PubAck(a)) if self.qos == QoS::AtLeastOnce => {
                    if let Some((_, seq)) = self.take_awaiting_ack(a.packet_id) {
                        self.record_ack(seq, shared);
                    }
                }
                Some(Packet::PubRec(a)) if self.qos == QoS::ExactlyOnce => {
                    if let Some((id, seq)) = self.take_awaiting_ack(a.packet_id) {
                        self.awaiting_comp.insert(id, seq);
                        self.record_ack(seq, shared);
                    }
                    wire.send(&Packet::PubRel(Ack::new(a.packet_id))).await?;
                }
                Some(Packet::PubComp(a)) if self.qos == QoS::ExactlyOnce => {
                    self.awaiting_comp.remove(&a.packet_id);
                    self.report_in_flight(shared);
                }
                Some(other) => panic!(
                    "unexpected packet to QoS {:?} publisher {}: {other:?}",
                    self.qos, self.index
                ),
                None if paced => {}
                None => {
                    self.timeouts += 1;
                    return Err(std::io::ErrorKind::TimedOut.into());
                }
            }
        }
    }
}

async fn publisher_task(
    mut publisher: Publisher,
    addr: SocketAddr,
    shared: Arc<Shared>,
    deadline: Instant,
) -> Publisher {
    // Bursts staggered between publishers: a random phase within one burst period.
    let period = Duration::from_secs_f64(WINDOW as f64 / RATE);
    publisher.started = Instant::now() + period.mul_f64(rand::rng().random_range(0.0..1.0));
    while !publisher.done() {
        assert!(
            Instant::now() < deadline,
            "publisher {} took too long",
            publisher.index
        );
        let (mut wire, connack) =
            Wire::connect_acked(addr, connect_packet(&publisher.client_id, false, 0)).await;
        if publisher.connections > 0 && !connack.session_present {
            publisher.sessions_missing += 1;
        }
        publisher.connections += 1;
        // A connection ends when the broker is killed; the next one resumes the session.
        let _ = publisher.run(&mut wire, &shared).await;
    }
    publisher
}

/// A subscribing client's session state, kept across its connections.
struct Subscriber {
    client_id: &'static str,
    qos: QoS,
    /// Times each message was counted as received.
    counts: HashMap<Key, u32>,
    deliveries: u64,
    /// Duplicates (2nd, 3rd... receipt of a message) that carried DUP.
    duplicates_with_dup_flag: u64,
    /// QoS 2: packet ids PUBREC'd and not yet released, with the message each carried.
    unreleased: HashMap<u16, Key>,
    /// QoS 2: PUBLISHes re-sent for an unreleased id (acknowledged again, not counted again).
    resent_unreleased: u64,
    pubrels: u64,
    /// Protocol or routing errors seen (asserted empty).
    violations: Vec<String>,
    connections: u32,
    clean_disconnects: u32,
    dropped_sockets: u32,
    /// Connections that ended in an error (the broker was killed) rather than by the client.
    cut: u32,
}

impl Subscriber {
    fn new(client_id: &'static str, qos: QoS) -> Subscriber {
        Subscriber {
            client_id,
            qos,
            counts: HashMap::new(),
            deliveries: 0,
            duplicates_with_dup_flag: 0,
            unreleased: HashMap::new(),
            resent_unreleased: 0,
            pubrels: 0,
            violations: Vec::new(),
            connections: 0,
            clean_disconnects: 0,
            dropped_sockets: 0,
            cut: 0,
        }
    }

    fn violation(&mut self, what: String) {
        if self.violations.len() < 20 {
            self.violations.push(what);
        }
    }

    async fn connect(&mut self, addr: SocketAddr) -> Wire {
        let (wire, connack) =
            Wire::connect_acked(addr, connect_packet(self.client_id, false, 0)).await;
        self.connections += 1;
        if !connack.session_present {
            self.violation(format!(
                "{}: CONNACK without session present (connection {})",
                self.client_id, self.connections
            ));
        }
        wire
    }

    fn count(&mut self, key: Key, dup: bool, shared: &Shared) {
        self.deliveries += 1;
        shared.deliveries.fetch_add(1, Ordering::Relaxed);
        let n = self.counts.entry(key).or_default();
        *n += 1;
        if *n == 1 {
            shared.received.fetch_add(1, Ordering::Relaxed);
        } else if dup {
            self.duplicates_with_dup_flag += 1;
        }
    }

    /// Handle one packet and answer it.
    async fn handle(
        &mut self,
        wire: &mut Wire,
        packet: Packet,
        shared: &Shared,
    ) -> std::io::Result<()> {
        match packet {
            Packet::Publish(p) => {
                let Some(key) = key_of(&p.payload) else {
                    self.violation(format!("{}: bad payload {:?}", self.client_id, p.payload));
                    return Ok(());
                };
                let want_qos2 = self.qos == QoS::ExactlyOnce;
                if is_qos2_publisher(key.0) != want_qos2 || *p.topic != topic_of(key.0) {
                    self.violation(format!(
                        "{}: message {key:?} on topic {}",
                        self.client_id, p.topic
                    ));
                }
                if p.qos != self.qos {
                    self.violation(format!(
                        "{}: message {key:?} delivered at {:?}",
                        self.client_id, p.qos
                    ));
                }
                let Some(id) = p.packet_id else {
                    self.violation(format!("{}: {key:?} without packet id", self.client_id));
                    return Ok(());
                };
                if want_qos2 {
                    match self.unreleased.get(&id).copied() {
                        None => {
                            self.unreleased.insert(id, key);
                            self.count(key, p.dup, shared);
                        }
                        Some(held) => {
                            // 4.3.3 Method B: the same message again; acknowledge, don't count.
                            self.resent_unreleased += 1;
                            if !p.dup {
                                self.violation(format!(
                                    "{}: PUBLISH for unreleased id {id} without DUP",
                                    self.client_id
                                ));
                            }
                            if held != key {
                                self.violation(format!(
                                    "{}: unreleased id {id} (message {held:?}) reused for {key:?}",
                                    self.client_id
                                ));
                            }
                        }
                    }
                    wire.send(&Packet::PubRec(Ack::new(id))).await
                } else {
                    self.count(key, p.dup, shared);
                    wire.send(&Packet::PubAck(Ack::new(id))).await
                }
            }
            Packet::PubRel(a) if self.qos == QoS::ExactlyOnce => {
                self.pubrels += 1;
                self.unreleased.remove(&a.packet_id);
                wire.send(&Packet::PubComp(Ack::new(a.packet_id))).await
            }
            other => {
                self.violation(format!("{}: unexpected {other:?}", self.client_id));
                Ok(())
            }
        }
    }

    /// Receive and acknowledge until `until`; `Err` when the connection is gone.
    async fn receive_until(
        &mut self,
        wire: &mut Wire,
        until: Instant,
        shared: &Shared,
    ) -> std::io::Result<()> {
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            match wire.recv(left).await? {
                Some(packet) => self.handle(wire, packet, shared).await?,
                None => return Ok(()),
            }
        }
    }

    fn has_all(&self, expected: &HashSet<Key>) -> bool {
        expected.iter().all(|k| self.counts.contains_key(k))
    }

    /// Receive until a quiet period: `QUIET` with everything expected in, or `GIVE_UP_QUIET`
    /// with something still missing. `Err` when the connection is gone.
    async fn drain(
        &mut self,
        wire: &mut Wire,
        expected: &HashSet<Key>,
        shared: &Shared,
    ) -> std::io::Result<()> {
        let mut quiet = Duration::ZERO;
        loop {
            match wire.recv(QUIET).await? {
                Some(packet) => {
                    quiet = Duration::ZERO;
                    self.handle(wire, packet, shared).await?;
                }
                None => {
                    quiet += QUIET;
                    if self.has_all(expected) || quiet >= GIVE_UP_QUIET {
                        return Ok(());
                    }
                }
            }
        }
    }
}

/// Come and go until `FINAL_STRETCH` messages are acknowledged, stay offline until the
/// publishers are done (the expected messages arrive on `drain`), then stay online until the
/// session is drained.
async fn subscriber_task(
    mut sub: Subscriber,
    addr: SocketAddr,
    mut drain: oneshot::Receiver<HashSet<Key>>,
    shared: Arc<Shared>,
    deadline: Instant,
) -> Subscriber {
    let expected = loop {
        match drain.try_recv() {
            Ok(expected) => break expected,
            Err(oneshot::error::TryRecvError::Empty) => {}
            Err(e) => panic!("drain signal: {e}"),
        }
        assert!(Instant::now() < deadline, "{} took too long", sub.client_id);
        if shared.acked.load(Ordering::Relaxed) >= FINAL_STRETCH {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        }
        let mut wire = sub.connect(addr).await;
        let until = Instant::now() + random_ms(100..500);
        match sub.receive_until(&mut wire, until, &shared).await {
            Ok(()) if rand::rng().random_bool(0.5) => {
                sub.clean_disconnects += 1;
                let _ = wire.send(&disconnect()).await;
            }
            Ok(()) => sub.dropped_sockets += 1,
            Err(_) => sub.cut += 1,
        }
        drop(wire);
        tokio::time::sleep(random_ms(100..500)).await;
    };
    loop {
        assert!(
            Instant::now() < deadline,
            "{} took too long draining",
            sub.client_id
        );
        let mut wire = sub.connect(addr).await;
        match sub.drain(&mut wire, &expected, &shared).await {
            Ok(()) => {
                let _ = wire.send(&disconnect()).await;
                return sub;
            }
            Err(_) => sub.cut += 1,
        }
    }
}

fn kill_and_restart(broker: &Mutex<Child>, config: &std::path::Path) {
    let mut child = broker.lock();
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    *child = spawn_broker(config);
}

/// SIGKILL (and restart) the broker each time `progress` reaches the next of `points`, then
/// `busy` holds (or 100 ms passed), then a random 0-3 ms more; until `stop`. Returns the
/// progress at each kill. (Progress stands still while the broker is down, so two close points
/// may kill it again while it recovers or while its clients reconnect: also a case to survive.)
fn spawn_killer(
    broker: Arc<Mutex<Child>>,
    config: PathBuf,
    progress: impl Fn() -> usize + Send + 'static,
    busy: impl Fn() -> bool + Send + 'static,
    points: Vec<usize>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<usize>> {
    tokio::spawn(async move {
        let mut at_kill = Vec::new();
        'points: for point in points {
            while progress() < point {
                if stop.load(Ordering::Relaxed) {
                    break 'points;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let busy_by = Instant::now() + Duration::from_millis(100);
            while !busy() && Instant::now() < busy_by {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let delay_us = rand::rng().random_range(0..3000);
            tokio::time::sleep(Duration::from_micros(delay_us)).await;
            at_kill.push(progress());
            kill_and_restart(&broker, &config);
        }
        at_kill
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_qos_with_intermittent_subscribers_survives_random_sigkills() {
    let started = Instant::now();
    let deadline = started + DEADLINE;
    let rig = CrashRig::launch("mix.>", PENDING_LIMIT);
    let addr = rig.addr;

    // The two persistent subscriptions, made before anything is published.
    for (client_id, filter, qos) in [
        (Q1_SUBSCRIBER, "mix/q1/#", QoS::AtLeastOnce),
        (Q2_SUBSCRIBER, "mix/q2/#", QoS::ExactlyOnce),
    ] {
        let mut wire = Wire::connect(addr, client_id, false).await;
        subscribe(&mut wire, filter, qos).await;
        wire.send(&disconnect()).await.expect("disconnect");
    }

    let shared = Arc::new(Shared::default());
    let stop_publish_killer = Arc::new(AtomicBool::new(false));
    let publish_killer = {
        let shared = shared.clone();
        spawn_killer(
            rig.broker.clone(),
            rig.config().to_path_buf(),
            {
                let shared = shared.clone();
                move || shared.acked.load(Ordering::Relaxed)
            },
            // Kill with at least a window's worth of exchanges open.
            move || shared.in_flight.load(Ordering::Relaxed) >= WINDOW,
            random_kill_points(PUBLISH_KILLS, TOTAL),
            stop_publish_killer.clone(),
        )
    };

    let mut drain_signals = Vec::new();
    let mut subscribers = Vec::new();
    for (client_id, qos) in [
        (Q1_SUBSCRIBER, QoS::AtLeastOnce),
        (Q2_SUBSCRIBER, QoS::ExactlyOnce),
    ] {
        let (tx, rx) = oneshot::channel();
        drain_signals.push(tx);
        subscribers.push(tokio::spawn(subscriber_task(
            Subscriber::new(client_id, qos),
            addr,
            rx,
            shared.clone(),
            deadline,
        )));
    }
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|index| {
            tokio::spawn(publisher_task(
                Publisher::new(index),
                addr,
                shared.clone(),
                deadline,
            ))
        })
        .collect();
    let mut done_publishers = Vec::new();
    for p in publishers {
        done_publishers.push(p.await.expect("publisher task"));
    }
    let publish_elapsed = started.elapsed();
    // Every kill point is below TOTAL, and TOTAL messages were acknowledged.
    let publish_kills = publish_killer.await.expect("killer task");

    // What each subscriber must get: what the broker acknowledged.
    let mut expected_q1 = HashSet::new();
    let mut expected_q2 = HashSet::new();
    for p in &done_publishers {
        let set = if is_qos2_publisher(p.index) {
            &mut expected_q2
        } else {
            &mut expected_q1
        };
        set.extend(p.acked.iter().map(|seq| (p.index, *seq)));
    }
    let acked_total = expected_q1.len() + expected_q2.len();

    // Drain: the subscribers stay online; the broker is killed DRAIN_KILLS more times at random
    // numbers of distinct messages received (if enough are left to receive).
    let received_before_drain = shared.received.load(Ordering::Relaxed);
    let backlog = acked_total.saturating_sub(received_before_drain);
    let drain_points: Vec<usize> = if backlog >= 2 {
        random_kill_points(DRAIN_KILLS, backlog)
            .into_iter()
            .map(|p| p + received_before_drain)
            .collect()
    } else {
        Vec::new()
    };
    let stop_drain_killer = Arc::new(AtomicBool::new(false));
    let drain_killer = {
        let shared = shared.clone();
        spawn_killer(
            rig.broker.clone(),
            rig.config().to_path_buf(),
            move || shared.received.load(Ordering::Relaxed),
            || true,
            drain_points,
            stop_drain_killer.clone(),
        )
    };
    let drain_started = Instant::now();
    let mut signals = drain_signals.into_iter();
    signals
        .next()
        .expect("q1 drain signal")
        .send(expected_q1.clone())
        .expect("q1 subscriber alive");
    signals
        .next()
        .expect("q2 drain signal")
        .send(expected_q2.clone())
        .expect("q2 subscriber alive");
    let mut subs = Vec::new();
    for s in subscribers {
        subs.push(s.await.expect("subscriber task"));
    }
    stop_drain_killer.store(true, Ordering::Relaxed);
    let drain_kills = drain_killer.await.expect("killer task");
    let drain_elapsed = drain_started.elapsed();
    let (q1_sub, q2_sub) = (&subs[0], &subs[1]);

    // Tally.
    let lost = |sub: &Subscriber, expected: &HashSet<Key>| -> BTreeMap<u32, Vec<u32>> {
        let mut missing: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        for key in expected {
            if !sub.counts.contains_key(key) {
                missing.entry(key.0).or_default().push(key.1);
            }
        }
        missing.values_mut().for_each(|v| v.sort_unstable());
        missing
    };
    let duplicates = |sub: &Subscriber| -> (u64, Vec<(Key, u32)>) {
        let mut examples: Vec<(Key, u32)> = sub
            .counts
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(k, n)| (*k, *n))
            .collect();
        examples.sort_unstable();
        let total = examples.iter().map(|(_, n)| u64::from(n - 1)).sum();
        examples.truncate(10);
        (total, examples)
    };
    let lost_q1 = lost(q1_sub, &expected_q1);
    let lost_q2 = lost(q2_sub, &expected_q2);
    let lost_q1_count: usize = lost_q1.values().map(Vec::len).sum();
    let lost_q2_count: usize = lost_q2.values().map(Vec::len).sum();
    let (dup_q1, dup_q1_examples) = duplicates(q1_sub);
    let (dup_q2, dup_q2_examples) = duplicates(q2_sub);
    let unexpected = |sub: &Subscriber, expected: &HashSet<Key>| {
        sub.counts.keys().filter(|k| !expected.contains(k)).count()
    };

    for p in &done_publishers {
        println!(
            "  publisher {} ({}, QoS {:?}): acked {}/{MESSAGES}, PUBLISH packets {} (re-sent with \
             DUP {}), PUBREL re-sent {}, connections {}, timeouts {}, session missing {}",
            p.index,
            p.topic,
            p.qos,
            p.acked.len(),
            p.publishes_written,
            p.republished,
            p.rereleased,
            p.connections,
            p.timeouts,
            p.sessions_missing
        );
    }
    for s in &subs {
        println!(
            "  subscriber {}: deliveries {}, distinct {}, duplicates with DUP flag {}, QoS 2 \
             re-sends of unreleased ids {}, PUBRELs {}, connections {} (left with DISCONNECT {}, \
             dropped socket {}, cut by a kill {})",
            s.client_id,
            s.deliveries,
            s.counts.len(),
            s.duplicates_with_dup_flag,
            s.resent_unreleased,
            s.pubrels,
            s.connections,
            s.clean_disconnects,
            s.dropped_sockets,
            s.cut
        );
    }
    println!(
        "mixed crash test: sent={TOTAL} (QoS 1 {}, QoS 2 {}) acknowledged={acked_total} \
         (QoS 1 {}, QoS 2 {}) received distinct={} (QoS 1 {}, QoS 2 {}) deliveries={} \
         lost QoS 1={lost_q1_count} lost QoS 2={lost_q2_count} duplicates QoS 1={dup_q1} \
         duplicates QoS 2={dup_q2} kills={} (while publishing at acked {publish_kills:?}, while \
         draining at received {drain_kills:?}; backlog at drain start {backlog}) \
         elapsed: publish {publish_elapsed:?}, drain {drain_elapsed:?}, total {:?}",
        TOTAL / 2,
        TOTAL / 2,
        expected_q1.len(),
        expected_q2.len(),
        q1_sub.counts.len() + q2_sub.counts.len(),
        q1_sub.counts.len(),
        q2_sub.counts.len(),
        q1_sub.deliveries + q2_sub.deliveries,
        publish_kills.len() + drain_kills.len(),
        started.elapsed()
    );

    for p in &done_publishers {
        assert_eq!(
            p.acked.len(),
            MESSAGES as usize,
            "publisher {} not fully acknowledged",
            p.index
        );
        assert_eq!(
            p.sessions_missing, 0,
            "publisher {}: the broker lost its persistent session",
            p.index
        );
    }
    assert_eq!(
        publish_kills.len(),
        PUBLISH_KILLS as usize,
        "kills while publishing"
    );
    for s in &subs {
        assert!(
            s.violations.is_empty(),
            "{}: {:#?}",
            s.client_id,
            s.violations
        );
    }
    assert_eq!(
        lost_q1_count, 0,
        "acknowledged QoS 1 messages lost (publisher -> sequence numbers): {lost_q1:?}"
    );
    assert_eq!(
        lost_q2_count, 0,
        "acknowledged QoS 2 messages lost (publisher -> sequence numbers): {lost_q2:?}"
    );
    assert_eq!(
        dup_q2, 0,
        "QoS 2 messages received more than once (message, times): {dup_q2_examples:?}"
    );
    assert_eq!(
        unexpected(q1_sub, &expected_q1),
        0,
        "QoS 1 messages never acknowledged"
    );
    assert_eq!(
        unexpected(q2_sub, &expected_q2),
        0,
        "QoS 2 messages never acknowledged"
    );
    if dup_q1 > 0 {
        println!("  QoS 1 duplicates (allowed), first few (message, times): {dup_q1_examples:?}");
    }
}
