//! Where to send a client away to, and the graceful drain of a node.
//!
//! **Published listeners.** Each node announces the connectors clients reach it on (its
//! heartbeat value in `FMQ_NODES`, and the same value on the core subject
//! `fmq.nodes.<node key>` every `heartbeatInterval`), whether it is draining and whether its
//! quorum answers. Every node keeps what the others announced (a core subscription, no
//! JetStream consumer), and names live ones in the Server Reference (MQTT 5 4.11, property
//! 0x1C) of a DISCONNECT 0x9C "Use another server": same kind of transport (plain MQTT, MQTT
//! over TLS, WebSocket, secure WebSocket), space separated `host:port`, nodes whose quorum
//! answers first, rotated per client so that the clients of one node spread over the others.
//! Each connector is published by its `<publishedAddressPolicy>` (ActiveMQ's: host strategy,
//! `hostMapping`, `portMapping`); a wildcard bind (`0.0.0.0`, `::`) is the machine's host
//! name, as ActiveMQ names it.
//!
//! **Drain (SIGTERM).** With the listeners closed: the node announces it is draining (no node
//! sends clients here any more), starts no new QoS 1 delivery ([`Inner::is_draining`] holds
//! the connections' in-flight windows at 0), waits up to [`IN_FLIGHT_WAIT`] for the
//! acknowledgements of what is in flight, writes every local session's record (its floors
//! cover every acknowledged message; what was queued and not sent lies above them) with no
//! owner, then closes every connection: MQTT 5 DISCONNECT 0x9C with a Server Reference, MQTT
//! 3.1.1 a closed socket. A client resuming on another node takes its unowned record at
//! once (no kick to wait for), with session present, and is fed from its floors: nothing it
//! acknowledged comes again.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::engine::Inner;
use super::subject::client_key;
use crate::broker::durability::now_ms;
use crate::broker::server::published_address::{host_name, is_wildcard};
use crate::config::Scheme;

/// How long a drain waits for the acknowledgements of the messages in flight.
pub const IN_FLIGHT_WAIT: Duration = Duration::from_secs(2);
/// How long a drain waits for its connections to close after it told them to.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// How long a drain that finds the NATS connection down waits for it to come back before
/// it gives the hand-over up.
const RECONNECT_GRACE: Duration = Duration::from_secs(1);
/// Subject prefix of node announcements.
const ANNOUNCE_PREFIX: &str = "fmq.nodes";
/// At most this many addresses in one Server Reference.
const REFERENCE_MAX: usize = 3;

/// A connector as published to the other nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    /// `mqtt`, `mqtt+ssl`, `ws` or `wss` (see [`kind_of`]).
    pub kind: String,
    /// `host:port` (an IPv6 literal in brackets).
    pub address: String,
}

/// The kind of transport a Server Reference must keep: a client of a TLS connector is sent
/// to a TLS connector. `None` for STOMP connectors (no Server Reference there).
pub fn kind_of(scheme: Scheme) -> Option<&'static str> {
    match scheme {
        Scheme::Mqtt | Scheme::MqttNio => Some("mqtt"),
        Scheme::MqttSsl | Scheme::MqttNioSsl => Some("mqtt+ssl"),
        Scheme::Ws => Some("ws"),
        Scheme::Wss => Some("wss"),
        Scheme::Stomp | Scheme::StompNio | Scheme::StompSsl | Scheme::StompNioSsl => None,
    }
}

/// `host` as clients reach it (the connector's published address, see
/// `broker::server::published_address`): an IPv6 literal in brackets; a wildcard bind left
/// over is the machine's host name.
fn published_host(host: &str) -> String {
    let host = if is_wildcard(host) {
        host_name().unwrap_or_else(|| host.to_owned())
    } else {
        host.to_owned()
    };
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    }
}

/// What another node announced, and when it was last heard.
#[derive(Debug, Clone)]
struct Peer {
    listeners: Vec<Published>,
    draining: bool,
    available: bool,
    seen: Instant,
}

/// The drain and Server Reference state of a node (a field of [`Inner`]).
#[derive(Debug, Default)]
pub struct DrainState {
    draining: AtomicBool,
    /// The drain is over: no more heartbeats.
    finished: AtomicBool,
    listeners: parking_lot::RwLock<Vec<Published>>,
    peers: parking_lot::Mutex<HashMap<String, Peer>>,
    /// Sessions written without an owner by the drain: a later offline write of the same
    /// session from this node is skipped (the record is no longer this node's to write).
    released: parking_lot::Mutex<HashSet<Arc<str>>>,
    /// When the drain and the shutdown's last record writes must be over (set as the drain
    /// starts): every store wait from then on is cut to what is left of it.
    deadline: parking_lot::Mutex<Option<Instant>>,
}

impl DrainState {
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    pub fn is_finished(&self) -> bool {
        self.finished.load(Ordering::Acquire)
    }

    pub fn is_released(&self, client_id: &str) -> bool {
        self.is_draining() && self.released.lock().contains(client_id)
    }

    /// How long a store write may still wait: `usual` before a drain, what is left of the
    /// drain's deadline (at most `usual`) once it started.
    pub fn store_wait(&self, usual: Duration) -> Duration {
        match *self.deadline.lock() {
            Some(deadline) => usual.min(deadline.saturating_duration_since(Instant::now())),
            None => usual,
        }
    }

    /// This node's published connectors.
    pub fn listeners(&self) -> Vec<Published> {
        self.listeners.read().clone()
    }

    /// Record this node's connectors (scheme, published host, published port).
    pub fn set_listeners(&self, listeners: Vec<(Scheme, String, u16)>) {
        let published = listeners
            .into_iter()
            .filter_map(|(scheme, host, port)| {
                Some(Published {
                    kind: kind_of(scheme)?.to_owned(),
                    address: format!("{}:{port}", published_host(&host)),
                })
            })
            .collect();
        *self.listeners.write() = published;
    }
}

/// The announcement of a node: its heartbeat value (see `node.rs`).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Announcement {
    #[serde(default)]
    pub node: String,
    #[serde(default)]
    pub listeners: Vec<Published>,
    #[serde(default)]
    pub draining: bool,
    #[serde(default)]
    pub available: bool,
}

/// The subject node `node_id` announces itself on.
pub fn announce_subject(node_id: &str) -> String {
    format!("{ANNOUNCE_PREFIX}.{}", client_key(node_id))
}

/// Follow the other nodes' announcements.
pub async fn start(inner: &Arc<Inner>) -> anyhow::Result<()> {
    let mut announcements = inner
        .client
        .subscribe(format!("{ANNOUNCE_PREFIX}.>"))
        .await
        .map_err(|e| anyhow::anyhow!("cluster: node announcements: {e}"))?;
    let node = inner.clone();
    tokio::spawn(async move {
        while let Some(message) = announcements.next().await {
            let Ok(a) = serde_json::from_slice::<Announcement>(&message.payload) else {
                continue;
            };
            if a.node.is_empty() || a.node == node.node_id {
                continue;
            }
            node.drain.peers.lock().insert(
                a.node,
                Peer {
                    listeners: a.listeners,
                    draining: a.draining,
                    available: a.available,
                    seen: Instant::now(),
                },
            );
        }
    });
    Ok(())
}

/// The other nodes heard from within `nodeTimeout`, draining ones included (a queue's purge
/// waits for their answers).
pub fn live_peers(inner: &Inner) -> Vec<String> {
    let within = Duration::from_millis(inner.settings.node_timeout_ms);
    inner
        .drain
        .peers
        .lock()
        .iter()
        .filter(|(_, p)| p.seen.elapsed() < within)
        .map(|(node, _)| node.clone())
        .collect()
}

/// The Server Reference for a client of a `scheme` connector: live, not draining nodes
/// serving that kind of transport whose quorum answers (their announcements say so, every
/// `heartbeatInterval`), rotated by the client id; `None` when there is none. A node that
/// refuses persistent work too is not named: when every node lost the quorum, a client told
/// to use another server would only go round them.
pub fn server_reference(inner: &Inner, scheme: Scheme, client_id: &str) -> Option<String> {
    let kind = kind_of(scheme)?;
    // Heard within this: alive when this node last could tell (a node that lost its quorum
    // still names the nodes it heard from before).
    let alive_within = Duration::from_millis(
        inner.settings.node_timeout_ms + inner.settings.quorum_loss_timeout_ms,
    );
    let mut candidates: Vec<(String, String)> = inner
        .drain
        .peers
        .lock()
        .iter()
        .filter(|(_, p)| !p.draining && p.available && p.seen.elapsed() < alive_within)
        .flat_map(|(node, p)| {
            p.listeners
                .iter()
                .filter(|l| l.kind == kind)
                .map(|l| (node.clone(), l.address.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    if candidates.is_empty() {
        return None;
    }
    candidates.sort();
    // Spread the clients of this node over the others.
    let spread = (fnv(client_id) % candidates.len() as u64) as usize;
    candidates.rotate_left(spread);
    let addresses: Vec<String> = candidates
        .into_iter()
        .take(REFERENCE_MAX)
        .map(|c| c.1)
        .collect();
    Some(addresses.join(" "))
}

fn fnv(text: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// Graceful drain (see the module documentation). Bounded as a whole, with the shutdown's
/// last record writes ([`DrainState::store_wait`]): [`IN_FLIGHT_WAIT`] + `storeTimeout` +
/// [`CLOSE_WAIT`] at worst. A node that cannot reach NATS (the connection down for
/// [`RECONNECT_GRACE`], or its quorum lost) hands nothing over: it closes its connections
/// and exits, and its sessions are taken over as a dead node's (`nodeTimeout`).
pub async fn drain(inner: &Arc<Inner>) {
    if inner.drain.draining.swap(true, Ordering::AcqRel) {
        return;
    }
    let started = Instant::now();
    *inner.drain.deadline.lock() =
        Some(started + IN_FLIGHT_WAIT + inner.store_timeout + CLOSE_WAIT);
    let mut reachable = nats_reachable(inner).await;
    let (in_flight_left, released) = if reachable {
        tracing::info!(node = %inner.node_id, "draining: handing every session over to the other nodes");
        super::node::announce(inner).await;
        let _ = tokio::time::timeout(Duration::from_millis(250), inner.client.flush()).await;
        wait_in_flight(inner).await;
        let in_flight_left = in_flight(inner);
        let released = release_all(inner).await;
        if released.released == 0 && released.unanswered > 0 {
            // Not one write answered within the wait (servers hung, or cut off since the
            // check above): the last heartbeat and the final flush would only wait the rest
            // of the bound out.
            *inner.drain.deadline.lock() = Some(Instant::now());
            reachable = false;
            tracing::warn!(
                node = %inner.node_id,
                unanswered = released.unanswered,
                refused = released.refused,
                "draining: the cluster store answered no session release ({} unanswered, {} \
                 refused: client ids {}); exiting without the rest of the hand-over (the \
                 other nodes take the sessions over after nodeTimeout)",
                released.unanswered,
                released.refused,
                released.failed_client_ids()
            );
        } else if released.unanswered + released.refused > 0 {
            tracing::warn!(
                node = %inner.node_id,
                released = released.released,
                unanswered = released.unanswered,
                refused = released.refused,
                "draining: {} session records not released ({} unanswered, {} refused: client \
                 ids {}); the other nodes take those sessions over once this node is gone \
                 (nodeTimeout); each session's error at debug (ferromq::cluster::drain=debug)",
                released.unanswered + released.refused,
                released.unanswered,
                released.refused,
                released.failed_client_ids()
            );
        }
        (in_flight_left, released.released)
    } else {
        // Nothing can be written: the records keep this node as owner, and the other nodes
        // take the sessions over once its heartbeats stop.
        *inner.drain.deadline.lock() = Some(Instant::now());
        tracing::warn!(
            node = %inner.node_id,
            "draining without NATS (connection down or quorum lost): no session handed over; \
             the other nodes take them over after nodeTimeout"
        );
        (in_flight(inner), 0)
    };
    let Some(core) = inner.core() else {
        return;
    };
    for session in core.registry.all() {
        session.kick_connection();
    }
    let deadline = Instant::now() + CLOSE_WAIT;
    while core.registry.all().iter().any(|s| s.is_attached()) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    inner.drain.finished.store(true, Ordering::Release);
    if reachable {
        super::node::farewell(inner).await;
    }
    tracing::info!(
        node = %inner.node_id,
        sessions_released = released,
        in_flight_left,
        drain_ms = started.elapsed().as_millis() as u64,
        "drained"
    );
}

/// Whether this node can write to the cluster store: its NATS connection is up (or comes
/// back within [`RECONNECT_GRACE`]) and its quorum answers.
async fn nats_reachable(inner: &Inner) -> bool {
    let connected = || inner.client.connection_state() == async_nats::connection::State::Connected;
    let deadline = Instant::now() + RECONNECT_GRACE;
    while !connected() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    connected() && inner.is_available()
}

/// QoS 1 messages sent to connected local sessions and not acknowledged yet.
fn in_flight(inner: &Inner) -> usize {
    inner
        .tracker
        .lock()
        .sessions
        .values()
        .filter(|t| t.connected)
        .map(|t| t.entries.values().filter(|e| e.packet_id.is_some()).count())
        .sum()
}

/// Wait (at most [`IN_FLIGHT_WAIT`]) until no connected session has a message in flight.
/// Polled: acknowledgements arrive on many connections and settle in the tracker.
async fn wait_in_flight(inner: &Inner) {
    let deadline = Instant::now() + IN_FLIGHT_WAIT;
    while in_flight(inner) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// How many client ids of the sessions whose release failed the drain's one WARN line names.
const NAMED_IN_SUMMARY: usize = 5;

/// What [`release_all`] did.
#[derive(Debug, Default)]
struct Releases {
    released: usize,
    /// Writes the store did not answer within the drain's wait.
    unanswered: usize,
    /// Writes the store refused.
    refused: usize,
    /// The first [`NAMED_IN_SUMMARY`] client ids of the releases that failed (unanswered or
    /// refused), for the summary line.
    first_failed: Vec<Arc<str>>,
}

impl Releases {
    fn add(&mut self, client_id: Arc<str>, release: Release) {
        match release {
            Release::Released => {
                self.released += 1;
                return;
            }
            Release::Gone => return,
            Release::Unanswered => self.unanswered += 1,
            Release::Refused => self.refused += 1,
        }
        if self.first_failed.len() < NAMED_IN_SUMMARY {
            self.first_failed.push(client_id);
        }
    }

    /// The summary's `client ids a, b, ... (and N more)`.
    fn failed_client_ids(&self) -> String {
        let named: Vec<String> = self
            .first_failed
            .iter()
            .map(|id| crate::security::Bounded(id).to_string())
            .collect();
        let more = (self.unanswered + self.refused).saturating_sub(named.len());
        if more == 0 {
            named.join(", ")
        } else {
            format!("{} and {more} more", named.join(", "))
        }
    }
}

/// What became of one session's release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Release {
    Released,
    /// Not this node's to release any more (handed over meanwhile).
    Gone,
    Refused,
    Unanswered,
}

/// Write every local session's record as offline with no owner. A session whose write
/// failed stays tracked (the shutdown's flush writes it with this node as owner; the node
/// that resumes it then finds no one to answer its kick).
async fn release_all(inner: &Arc<Inner>) -> Releases {
    let client_ids: Vec<Arc<str>> = inner.tracker.lock().sessions.keys().cloned().collect();
    // One line for all the failures (a hung store fails every release alike), each
    // session's at debug.
    futures_util::stream::iter(client_ids)
        .map(|client_id| async move {
            let one = release(inner, client_id.clone()).await;
            (client_id, one)
        })
        .buffer_unordered(64)
        .fold(Releases::default(), |mut all, (client_id, one)| {
            all.add(client_id, one);
            std::future::ready(all)
        })
        .await
}

async fn release(inner: &Arc<Inner>, client_id: Arc<str>) -> Release {
    let lock = inner.record_lock(&client_id);
    let _one_writer = lock.lock().await;
    let (record, revision, epoch) = {
        let mut tracker = inner.tracker.lock();
        let Some(t) = tracker.sessions.get_mut(&client_id) else {
            return Release::Gone;
        };
        if t.connected {
            t.connected = false;
            t.offline_since_ms = now_ms();
            t.data_changes += 1;
        }
        let mut record = t.record("", &inner.routed());
        // The will as the close that follows leaves it (see `wills.rs`): one without delay is
        // published by this node as it closes the connection; one with a Will Delay waits in
        // the record from now (the reaper publishes it, a resume within it cancels it).
        record.will = record
            .will
            .take()
            .filter(|w| w.delay_secs > 0)
            .map(|mut w| {
                w.deadline_ms = Some(super::wills::deadline_after(
                    &w,
                    record.expiry_secs,
                    t.offline_since_ms,
                ));
                w
            });
        (record, t.revision, t.epoch)
    };
    let key = client_key(&client_id);
    let bytes = record.encode();
    let wait = inner.drain.store_wait(inner.store_timeout);
    let written = if revision == 0 {
        tokio::time::timeout(wait, inner.sessions_kv.create(&key, bytes))
            .await
            .map(|r| r.map(|_| ()).map_err(|e| e.to_string()))
    } else {
        tokio::time::timeout(wait, inner.sessions_kv.update(&key, bytes, revision))
            .await
            .map(|r| r.map(|_| ()).map_err(|e| e.to_string()))
    };
    match written {
        Ok(Ok(())) => {
            inner.drain.released.lock().insert(client_id.clone());
            let mut tracker = inner.tracker.lock();
            if tracker
                .sessions
                .get(&client_id)
                .is_some_and(|t| t.epoch == epoch)
            {
                tracker.sessions.remove(&client_id);
            }
            Release::Released
        }
        Ok(Err(e)) => {
            tracing::debug!(client_id = %client_id, "drain: session record not released: {e}");
            Release::Refused
        }
        Err(_) => {
            tracing::debug!(client_id = %client_id, "drain: no answer releasing a session record");
            Release::Unanswered
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Failed releases are counted; the summary names the first five, and how many more.
    #[test]
    fn failed_releases_are_summed_up_with_the_first_client_ids() {
        let mut all = Releases::default();
        all.add(Arc::from("ok"), Release::Released);
        all.add(Arc::from("gone"), Release::Gone);
        for i in 0..7 {
            all.add(Arc::from(format!("c{i}")), Release::Unanswered);
        }
        all.add(Arc::from("r"), Release::Refused);
        assert_eq!((all.released, all.unanswered, all.refused), (1, 7, 1));
        assert_eq!(all.failed_client_ids(), "c0, c1, c2, c3, c4 and 3 more");
    }

    #[test]
    fn wildcard_binds_are_published_with_the_host_name_and_others_as_written() {
        assert_eq!(published_host("10.0.0.1"), "10.0.0.1");
        assert_eq!(published_host("broker-a.example"), "broker-a.example");
        assert_eq!(published_host("fe80::1"), "[fe80::1]");
        let wildcard = published_host("0.0.0.0");
        assert_ne!(wildcard, "0.0.0.0");
        assert!(!wildcard.is_empty());
        assert_eq!(published_host("::"), wildcard);
    }

    #[test]
    fn a_client_of_a_tls_connector_is_sent_to_a_tls_connector() {
        assert_eq!(kind_of(Scheme::MqttNio), Some("mqtt"));
        assert_eq!(kind_of(Scheme::MqttNioSsl), Some("mqtt+ssl"));
        assert_eq!(kind_of(Scheme::Wss), Some("wss"));
        assert_eq!(kind_of(Scheme::Stomp), None);
    }
}
