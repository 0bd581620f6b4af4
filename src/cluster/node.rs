//! This node in `FMQ_NODES`: its id is unique among live nodes, its heartbeat is written
//! every `heartbeatInterval`, and a heartbeat that does not get through for
//! `quorumLossTimeout` means the JetStream quorum is out of reach: the node stops taking
//! persistent work (CONNACK 0x88, DISCONNECT 0x9C) until it gets through again.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::kv::{Operation, UpdateErrorKind};
use serde::{Deserialize, Serialize};

use super::engine::Inner;
use super::subject::client_key;

/// A node's heartbeat value.
#[derive(Debug, Serialize, Deserialize)]
struct Heartbeat {
    instance: u64,
    pid: u32,
    /// Wall clock of the writer, ms since the Unix epoch.
    at_ms: u64,
    /// Where clients reach the node, whether it is draining (see `drain.rs`).
    #[serde(flatten)]
    announcement: super::drain::Announcement,
}

fn key(node_id: &str) -> String {
    // Node ids are free text (`brokerName`); KV keys are not.
    format!("n{}", client_key(node_id))
}

fn heartbeat(inner: &Inner) -> bytes::Bytes {
    heartbeat_at(inner, crate::broker::durability::now_ms())
}

fn heartbeat_at(inner: &Inner, at_ms: u64) -> bytes::Bytes {
    let value = Heartbeat {
        instance: inner.instance,
        pid: std::process::id(),
        at_ms,
        announcement: super::drain::Announcement {
            node: inner.node_id.clone(),
            listeners: inner.drain.listeners(),
            draining: inner.drain.is_draining(),
            available: inner.is_available(),
        },
    };
    bytes::Bytes::from(serde_json::to_vec(&value).unwrap_or_default())
}

/// Tell the other nodes at once where this node serves and whether it drains (they hear it
/// again with every heartbeat).
pub async fn announce(inner: &Inner) {
    let subject = super::drain::announce_subject(&inner.node_id);
    // Bounded: a heartbeat never waits on a NATS connection that is down.
    let publish = inner.client.publish(subject, heartbeat(inner));
    match tokio::time::timeout(ANNOUNCE_BOUND, publish).await {
        Ok(Err(e)) => tracing::debug!("cluster: node announcement: {e}"),
        Err(_) => tracing::debug!("cluster: node announcement not sent"),
        Ok(Ok(())) => {}
    }
}

/// How long an announcement may wait for the NATS client.
const ANNOUNCE_BOUND: Duration = Duration::from_millis(250);

/// The last heartbeat of a drained node: draining, and as old as can be, so that the node
/// started again under the same id does not wait for it to age (see [`register`]).
pub async fn farewell(inner: &Inner) {
    announce(inner).await;
    let _ = tokio::time::timeout(ANNOUNCE_BOUND, inner.client.flush()).await;
    let put = inner
        .nodes_kv
        .put(key(&inner.node_id), heartbeat_at(inner, 0));
    if tokio::time::timeout(inner.drain.store_wait(inner.store_timeout), put)
        .await
        .is_err()
    {
        tracing::debug!("cluster: last heartbeat not written");
    }
}

/// Refuse to start when another live node (a heartbeat younger than `nodeTimeout`) uses
/// this node's id; else write the first heartbeat.
pub async fn register(inner: &Arc<Inner>) -> anyhow::Result<()> {
    let key = key(&inner.node_id);
    // A bucket just created by a node starting at the same time may not serve reads yet
    // ("no responders" until its raft group has a leader): retry within a bound.
    let deadline = tokio::time::Instant::now() + REGISTRY_DEADLINE;
    let entry = loop {
        match inner.nodes_kv.entry(&key).await {
            Ok(entry) => break entry,
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::debug!("cluster: node registry not ready: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => anyhow::bail!("cluster: node registry: {e}"),
        }
    };
    if let Some(entry) = entry.filter(|e| e.operation == Operation::Put) {
        if let Ok(other) = serde_json::from_slice::<Heartbeat>(&entry.value) {
            let age_ms = crate::broker::durability::now_ms().saturating_sub(other.at_ms);
            if other.instance != inner.instance && age_ms < inner.settings.node_timeout_ms {
                // A fresh heartbeat: a live node, or this node's previous process killed a
                // moment ago. A live one writes again within two intervals.
                let wait = Duration::from_millis(inner.settings.heartbeat_interval_ms * 2 + 500);
                tokio::time::sleep(wait).await;
                let again = inner.nodes_kv.entry(&key).await.ok().flatten();
                if again.is_some_and(|e| e.revision != entry.revision) {
                    anyhow::bail!(
                        "another live ferromq node already uses brokerName `{}` (pid {} on its \
                         machine; its heartbeat is {age_ms} ms old and still written); give \
                         every node its own brokerName",
                        inner.node_id,
                        other.pid
                    );
                }
            }
        }
    }
    loop {
        match inner.nodes_kv.put(&key, heartbeat(inner)).await {
            Ok(_) => return Ok(()),
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::debug!("cluster: node registry not ready: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => anyhow::bail!("cluster: node registry: {e}"),
        }
    }
}

/// How long a starting node keeps trying to read and write its registry entry.
const REGISTRY_DEADLINE: Duration = Duration::from_secs(30);

/// Write heartbeats; watch the quorum.
pub fn start(inner: &Arc<Inner>) {
    let node = inner.clone();
    tokio::spawn(async move {
        let key = key(&node.node_id);
        let interval = Duration::from_millis(node.settings.heartbeat_interval_ms.max(10));
        let quorum_loss = Duration::from_millis(node.settings.quorum_loss_timeout_ms.max(10));
        let attempt = attempt_bound(interval, quorum_loss);
        // A claim takes a session from an owner that does not answer its kick within this.
        let silent_too_long = super::sessions::KICK_TIMEOUT;
        let mut revision = node
            .nodes_kv
            .entry(&key)
            .await
            .ok()
            .flatten()
            .map(|e| e.revision);
        let mut last_ok = Instant::now();
        let mut verified_at = last_ok;
        let mut checking: Option<tokio::task::JoinHandle<()>> = None;
        let node_timeout = Duration::from_millis(node.settings.node_timeout_ms)
            .max(super::sessions::VERIFY_QUICKLY);
        let mut sent = SentHeartbeats::default();
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if node.drain.is_finished() {
                return;
            }
            announce(&node).await;
            let at_ms = sent.record(crate::broker::durability::now_ms());
            let value = heartbeat_at(&node, at_ms);
            let write = async {
                match revision {
                    Some(r) => node.nodes_kv.update(&key, value, r).await,
                    None => node.nodes_kv.put(&key, value).await.map_err(|e| {
                        async_nats::jetstream::kv::UpdateError::with_source(
                            UpdateErrorKind::Other,
                            e,
                        )
                    }),
                }
            };
            let mut got_through = None;
            match tokio::time::timeout(attempt, write).await {
                Ok(Ok(r)) => {
                    revision = Some(r);
                    got_through = Some(Instant::now());
                }
                Ok(Err(e)) if super::lost_race::update(&e) => {
                    let read = tokio::time::timeout(attempt, node.nodes_kv.entry(&key)).await;
                    let current = read.ok().and_then(|r| r.ok()).flatten();
                    revision = current.as_ref().map(|e| e.revision);
                    // An earlier write of ours that was given up on may have been stored
                    // since (a slow store, or a new leader): our own instance there is no
                    // other process, and the store answered that write.
                    let landed = current
                        .and_then(|e| serde_json::from_slice::<Heartbeat>(&e.value).ok())
                        .filter(|h| h.instance == node.instance);
                    match landed {
                        Some(h) => got_through = sent.sent_at(h.at_ms),
                        None if revision.is_some() => {
                            tracing::error!(
                                node = %node.node_id,
                                "another ferromq process wrote this node's heartbeat: two \
                                 nodes share a brokerName; this one stops taking persistent work"
                            );
                            set_available(&node, false);
                        }
                        None => {}
                    }
                }
                Ok(Err(e)) => {
                    tracing::debug!("cluster heartbeat: {e}");
                }
                Err(_) => {}
            }
            if let Some(at) = got_through.filter(|at| *at > last_ok) {
                // A silence is checked once: a later write credited with an earlier send
                // time (it landed late) does not start another check of the same silence.
                if last_ok.elapsed() >= silent_too_long && verified_at < last_ok {
                    // Others may have found this node dead meanwhile (it was paused or cut
                    // off) and taken its sessions: find out before serving them further.
                    tracing::warn!(
                        node = %node.node_id,
                        silent_ms = last_ok.elapsed().as_millis() as u64,
                        "no heartbeat got through for longer than a takeover waits: \
                         checking which sessions this node still owns"
                    );
                    if node.is_available() {
                        // The quorum was never lost: the sessions are served meanwhile, and
                        // their check may outlast the election of the session bucket (its
                        // leader may be what stopped answering; no replica answers a read
                        // until it has a new one), in its own task, one at a time.
                        if checking.as_ref().is_none_or(|c| c.is_finished()) {
                            let node = node.clone();
                            checking = Some(tokio::spawn(async move {
                                super::sessions::verify_all(&node, node_timeout).await;
                            }));
                        }
                    } else {
                        super::sessions::verify_all(&node, super::sessions::VERIFY_QUICKLY).await;
                    }
                    verified_at = Instant::now();
                }
                last_ok = at;
                if last_ok.elapsed() < quorum_loss {
                    set_available(&node, true);
                }
            }
            if last_ok.elapsed() >= quorum_loss {
                set_available(&node, false);
            }
        }
    });
}

/// The heartbeats this node sent lately, by their `at_ms`: when one that was given up on
/// turns out stored, the quorum answered it, and it counts from when it was sent.
#[derive(Default)]
struct SentHeartbeats(std::collections::VecDeque<(u64, Instant)>);

impl SentHeartbeats {
    /// Heartbeats remembered: more than fit in `quorumLossTimeout` at one per attempt.
    const KEPT: usize = 16;

    /// Record a heartbeat about to be sent; returns its `at_ms`, made unique (a clock that
    /// stood still or stepped back gives the previous one + 1).
    fn record(&mut self, now_ms: u64) -> u64 {
        let at_ms = match self.0.back() {
            Some((last, _)) if *last >= now_ms => last + 1,
            _ => now_ms,
        };
        if self.0.len() == Self::KEPT {
            self.0.pop_front();
        }
        self.0.push_back((at_ms, Instant::now()));
        at_ms
    }

    /// When the heartbeat with `at_ms` was sent, if it is one of the remembered ones.
    fn sent_at(&self, at_ms: u64) -> Option<Instant> {
        self.0.iter().find(|(a, _)| *a == at_ms).map(|(_, i)| *i)
    }
}

/// How long one heartbeat write waits for its answer before the next is sent.
///
/// A write that reached a `KV_FMQ_NODES` leader that stopped answering (paused, cut off) is
/// never answered, and the bucket's next leader (elected after the raft election timeout,
/// 4-9 s in nats-server) answers only writes sent to it after its election: waiting for one
/// answer for all of `quorumLossTimeout` made every node declare the quorum lost when that
/// one server paused, though two of three answered. A write given up on that is stored
/// later still counts ([`SentHeartbeats`]), so a slow store is not taken for a lost one.
fn attempt_bound(interval: Duration, quorum_loss: Duration) -> Duration {
    interval
        .max(Duration::from_millis(500))
        .min(quorum_loss / 4)
}

/// Change availability; on loss, close every connection holding a persistent session (they
/// see the loss and send MQTT 5 clients DISCONNECT 0x9C, Use another server).
fn set_available(inner: &Inner, available: bool) {
    let was = inner.available.swap(available, Ordering::AcqRel);
    if was == available {
        return;
    }
    if available {
        tracing::warn!(node = %inner.node_id, "cluster store quorum reachable again: taking persistent sessions");
        return;
    }
    tracing::error!(
        node = %inner.node_id,
        "cluster store quorum unreachable for quorumLossTimeout: refusing persistent sessions \
         and sending their clients to other nodes"
    );
    if let Some(core) = inner.core() {
        for session in core.registry.persistent_sessions() {
            session.kick_connection();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heartbeat_write_waits_one_interval_within_a_quarter_of_the_window() {
        let ms = Duration::from_millis;
        // The defaults: 1 s interval, 10 s window.
        assert_eq!(attempt_bound(ms(1_000), ms(10_000)), ms(1_000));
        // Short intervals wait 500 ms, unless the window is short too.
        assert_eq!(attempt_bound(ms(200), ms(10_000)), ms(500));
        assert_eq!(attempt_bound(ms(200), ms(1_500)), ms(375));
        // A long interval is cut to a quarter of the window: four tries fit.
        assert_eq!(attempt_bound(ms(5_000), ms(10_000)), ms(2_500));
    }

    #[test]
    fn sent_heartbeats_have_distinct_times_and_are_found_by_them() {
        let mut sent = SentHeartbeats::default();
        let first = sent.record(1_000);
        // A clock that stands still or steps back still gives a time of its own.
        let second = sent.record(1_000);
        let third = sent.record(900);
        assert_eq!((first, second, third), (1_000, 1_001, 1_002));
        assert!(sent.sent_at(1_001).is_some());
        assert!(sent.sent_at(999).is_none());
        for t in 0..SentHeartbeats::KEPT as u64 {
            sent.record(2_000 + t);
        }
        assert!(sent.sent_at(1_000).is_none(), "only the last ones are kept");
        assert!(sent.sent_at(2_000).is_some());
    }
}
