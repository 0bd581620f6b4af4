//! The will reaper and the session sweep: what happens to the sessions of a node that died
//! (design §3.6), and to offline sessions past their expiry whose node is gone.
//!
//! Every node follows the heartbeats in `FMQ_NODES` ([`Liveness`]). One node at a time holds
//! the *lease*, key `reaper` in `FMQ_NODES` (compare-and-set, renewed every
//! `heartbeatInterval`, taken over when it has not changed for `nodeTimeout` or its holder is
//! dead). The holder, when a node newly died and at least every [`SWEEP_INTERVAL`] (sooner
//! when a deadline it knows of comes), reads every record of `FMQ_SESS`, and for each one
//! whose owner is dead or gone:
//!
//! - **connected** (the node died with the connection): marks it offline with no owner, the
//!   offline clock (session expiry) starting now, and its will due after its Will Delay
//!   Interval from now (capped by the session's expiry);
//! - **will due** (deadline passed): removes it from the record, then publishes it;
//! - **expired** (offline longer than its Session Expiry Interval): deletes the record, then
//!   publishes a will still pending (MQTT 5 3.1.2.5: at the latest when the session ends);
//! - a **clean session's will record** (`wills::CLEAN_PREFIX`): deletes it, then publishes
//!   it (its session ended with its connection).
//!
//! Every change is a compare-and-set on the revision read: losing it means another node (a
//! claim, an earlier lease holder) handled that record, and it is skipped. A will is removed
//! from NATS before it is published, so it is published at most once.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::kv::Operation;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::codec::SessionRecord;
use super::engine::Inner;
use super::wills::{self, CleanWill, CLEAN_PREFIX};
use super::SESSIONS_BUCKET;

/// The longest the lease holder goes between two sweeps of `FMQ_SESS`.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(10);
/// The lease's key in `FMQ_NODES`.
const LEASE_KEY: &str = "reaper";
/// How soon a sweep that could not read `FMQ_SESS` is tried again.
const SWEEP_RETRY: Duration = Duration::from_secs(1);
/// How long one sweep may read `FMQ_SESS`.
const SCAN_TIMEOUT: Duration = Duration::from_secs(30);

/// The lease's value.
#[derive(Debug, Serialize, Deserialize)]
struct Lease {
    node: String,
    instance: u64,
}

/// A heartbeat's value (the fields of `node.rs`'s that the reaper reads).
#[derive(Debug, Deserialize)]
struct Heartbeat {
    instance: u64,
}

/// Follow the heartbeats; hold or take the lease; sweep while holding it.
pub fn start(inner: &Arc<Inner>) {
    let interval = Duration::from_millis(inner.settings.heartbeat_interval_ms.max(50));
    let node_timeout = Duration::from_millis(inner.settings.node_timeout_ms.max(100));
    // Half the heartbeats a node writes within nodeTimeout: another node's silence counts
    // only while this node's own heartbeats got through (see `Liveness`).
    let ticks = (node_timeout.as_millis() / interval.as_millis().max(1) / 2).max(1) as u64;
    inner.liveness.lock().configure(&inner.node_id, ticks);
    follow_heartbeats(inner);
    let node = inner.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut lease = LeaseState::default();
        let mut dead_before: HashSet<String> = HashSet::new();
        let mut next_sweep = Instant::now();
        let mut sweep_wanted = true;
        loop {
            tick.tick().await;
            if !node.is_available() {
                lease.held = None;
                continue;
            }
            wills::drop_unattached(&node);
            sweep_wanted |= std::mem::take(&mut node.liveness.lock().restarted);
            // Nodes found dead since the last look: sweep now.
            let dead_now = node.liveness.lock().silent(node_timeout);
            sweep_wanted |= dead_now.difference(&dead_before).next().is_some();
            dead_before = dead_now;
            if !lease.renew(&node, node_timeout, ticks).await {
                continue;
            }
            if sweep_wanted || Instant::now() >= next_sweep {
                sweep_wanted = false;
                let next = sweep(&node, node_timeout).await;
                next_sweep = Instant::now() + next.unwrap_or(SWEEP_INTERVAL).min(SWEEP_INTERVAL);
            }
        }
    });
}

/// Follow every heartbeat into the node's [`Liveness`] (one watch of `FMQ_NODES`, made again
/// after a reconnection).
fn follow_heartbeats(inner: &Arc<Inner>) {
    let node = inner.clone();
    tokio::spawn(async move {
        let mut connection = node.connection.clone();
        loop {
            let epoch = connection.borrow_and_update().epoch;
            let mut watch = match node.nodes_kv.watch_with_history(">").await {
                Ok(w) => {
                    // Heartbeats missed while this node's connection was down say nothing
                    // of the other nodes: their silence is counted from now.
                    node.liveness.lock().restart_clock();
                    w
                }
                Err(e) => {
                    tracing::debug!("cluster reaper: heartbeat watch: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            loop {
                let entry = tokio::select! {
                    entry = watch.next() => entry,
                    up = super::engine::reconnected_since(&mut connection, epoch) => {
                        if !up {
                            return;
                        }
                        break;
                    }
                };
                let Some(Ok(entry)) = entry else { break };
                let mut liveness = node.liveness.lock();
                if entry.key.starts_with('n') {
                    match entry.operation {
                        Operation::Put => {
                            if let Ok(hb) = serde_json::from_slice::<Heartbeat>(&entry.value) {
                                liveness.observe(&entry.key, hb.instance, entry.revision);
                            }
                        }
                        Operation::Delete | Operation::Purge => liveness.forget(&entry.key),
                    }
                }
                if entry.delta == 0 {
                    liveness.since.get_or_insert_with(Instant::now);
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
}

/// This node's view of the lease.
#[derive(Debug, Default)]
struct LeaseState {
    /// The revision this node last wrote, while it holds the lease.
    held: Option<u64>,
    /// Another holder's revision, when this node first saw it, and its own heartbeats seen
    /// then (a lease is stale only if this node's heartbeats got through meanwhile).
    other: Option<(u64, Instant, u64)>,
}

impl LeaseState {
    /// Renew the lease (held), or take it when free or stale. Returns whether this node holds
    /// it now.
    async fn renew(&mut self, inner: &Arc<Inner>, node_timeout: Duration, ticks: u64) -> bool {
        let value = bytes::Bytes::from(
            serde_json::to_vec(&Lease {
                node: inner.node_id.clone(),
                instance: inner.instance,
            })
            .unwrap_or_default(),
        );
        if let Some(revision) = self.held {
            match inner
                .nodes_kv
                .update(LEASE_KEY, value.clone(), revision)
                .await
            {
                Ok(r) => {
                    self.held = Some(r);
                    return true;
                }
                Err(e) => {
                    tracing::info!(node = %inner.node_id, "cluster reaper: lease lost: {e}");
                    self.held = None;
                }
            }
        }
        let current = match inner.nodes_kv.entry(LEASE_KEY).await {
            Ok(current) => current,
            Err(_) => return false,
        };
        let taken = match current {
            Some(entry) if entry.operation == Operation::Put => {
                let holder = serde_json::from_slice::<Lease>(&entry.value).ok();
                let own_writes = inner.liveness.lock().own_writes();
                let (seen_since, writes_then) = match self.other {
                    Some((r, at, w)) if r == entry.revision => (at, w),
                    _ => {
                        self.other = Some((entry.revision, Instant::now(), own_writes));
                        (Instant::now(), own_writes)
                    }
                };
                let ours = holder
                    .as_ref()
                    .is_some_and(|h| h.node == inner.node_id && h.instance == inner.instance);
                let holder_dead = holder.as_ref().is_none_or(|h| {
                    inner
                        .liveness
                        .lock()
                        .dead(&h.node, h.instance, node_timeout)
                });
                let stale = seen_since.elapsed() >= node_timeout
                    && own_writes.saturating_sub(writes_then) >= ticks;
                if !ours && !stale && !holder_dead {
                    return false;
                }
                inner
                    .nodes_kv
                    .update(LEASE_KEY, value, entry.revision)
                    .await
                    .ok()
            }
            Some(entry) => inner
                .nodes_kv
                .update(LEASE_KEY, value, entry.revision)
                .await
                .ok(),
            None => inner.nodes_kv.create(LEASE_KEY, value).await.ok(),
        };
        if let Some(r) = taken {
            tracing::info!(node = %inner.node_id, "cluster reaper: holding the lease");
            self.held = Some(r);
            self.other = None;
        }
        self.held.is_some()
    }
}

/// One pass over `FMQ_SESS` (see the module documentation). Returns how long until the
/// earliest deadline it saw on a record of a dead owner (a will's, or an expiry).
async fn sweep(inner: &Arc<Inner>, node_timeout: Duration) -> Option<Duration> {
    let entries = match tokio::time::timeout(SCAN_TIMEOUT, read_all(inner)).await {
        Ok(Ok(entries)) => entries,
        Ok(Err(e)) => {
            tracing::warn!("cluster reaper: reading {SESSIONS_BUCKET}: {e}");
            return Some(SWEEP_RETRY);
        }
        Err(_) => {
            tracing::warn!("cluster reaper: reading {SESSIONS_BUCKET} took too long");
            return Some(SWEEP_RETRY);
        }
    };
    let mut earliest: Option<u64> = None;
    for (key, value, revision) in entries {
        if key.starts_with(CLEAN_PREFIX) {
            reap_clean(inner, &key, &value, revision, node_timeout).await;
            continue;
        }
        let Ok(record) = SessionRecord::decode(&value) else {
            continue;
        };
        let gone = record.owner.is_empty()
            || (record.owner != inner.node_id || record.owner_instance != inner.instance)
                && wills::owner_gone(&inner.liveness.lock(), &record, node_timeout);
        if !gone {
            continue;
        }
        if let Some(at) = reap_session(inner, &key, record, revision).await {
            earliest = Some(earliest.map_or(at, |e| e.min(at)));
        }
    }
    let now = wills::now();
    earliest.map(|at| Duration::from_millis(at.saturating_sub(now)))
}

/// Every live entry of `FMQ_SESS`: (key, value, revision).
async fn read_all(
    inner: &Arc<Inner>,
) -> Result<Vec<(String, bytes::Bytes, u64)>, async_nats::Error> {
    let stored = inner
        .js
        .get_stream(format!("KV_{SESSIONS_BUCKET}"))
        .await?
        .info()
        .await?
        .state
        .messages;
    let mut out = Vec::new();
    if stored == 0 {
        return Ok(out);
    }
    let mut watch = inner.sessions_kv.watch_with_history(">").await?;
    while let Some(entry) = watch.next().await {
        let entry = entry?;
        let last = entry.delta == 0;
        if entry.operation == Operation::Put {
            out.push((entry.key, entry.value, entry.revision));
        }
        if last {
            break;
        }
    }
    Ok(out)
}

/// A clean session's will record: published when its node is dead.
async fn reap_clean(
    inner: &Arc<Inner>,
    key: &str,
    value: &[u8],
    revision: u64,
    node_timeout: Duration,
) {
    let Some(record) = CleanWill::decode(value) else {
        return;
    };
    if record.owner == inner.node_id && record.owner_instance == inner.instance {
        return;
    }
    let dead = inner
        .liveness
        .lock()
        .dead(&record.owner, record.owner_instance, node_timeout);
    if !dead {
        return;
    }
    if inner
        .sessions_kv
        .delete_expect_revision(key, Some(revision))
        .await
        .is_err()
    {
        return;
    }
    match record.will.to_kept() {
        Ok(will) => wills::publish(
            inner,
            &record.client_id,
            will,
            "its node died with the connection (clean session)",
        ),
        Err(e) => tracing::warn!(client_id = %record.client_id, "cluster reaper: {e}"),
    }
}

/// A persistent session of a dead or gone owner. Returns its next deadline (ms since the
/// epoch) when nothing is due yet.
async fn reap_session(
    inner: &Arc<Inner>,
    key: &str,
    record: SessionRecord,
    revision: u64,
) -> Option<u64> {
    let now = wills::now();
    let mut next = record.clone();
    next.owner = String::new();
    next.owner_instance = 0;
    if record.connected {
        // Its node died with the connection: the connection is lost now, as far as anyone
        // can tell (the offline clock and the Will Delay start here).
        next.connected = false;
        next.offline_since_ms = now;
        if let Some(will) = next.will.as_mut() {
            will.deadline_ms = Some(wills::deadline_after(will, record.expiry_secs, now));
        }
    }
    let ends = next.expired(now);
    let due = next
        .will
        .as_ref()
        .filter(|w| ends || w.due(now))
        .and_then(|w| w.to_kept().ok());
    if ends {
        if inner
            .sessions_kv
            .delete_expect_revision(key, Some(revision))
            .await
            .is_err()
        {
            return None;
        }
        tracing::info!(client_id = %record.client_id, "cluster reaper: expired session deleted");
        if let Some(will) = due {
            wills::publish(inner, &record.client_id, will, "its session expired");
        }
        return None;
    }
    if due.is_some() {
        next.will = None;
    }
    if next != record {
        let written = inner.sessions_kv.update(key, next.encode(), revision).await;
        if written.is_err() {
            return None;
        }
        if record.connected {
            tracing::info!(client_id = %record.client_id, owner = %record.owner,
                "cluster reaper: session of a dead node marked offline");
        }
        if let Some(will) = due {
            wills::publish(
                inner,
                &record.client_id,
                will,
                "its node died and its Will Delay passed",
            );
        }
    }
    let expiry_at = next
        .expiry_secs
        .map(|secs| next.offline_since_ms.saturating_add(u64::from(secs) * 1000));
    let will_at = next.will.as_ref().and_then(|w| w.deadline_ms);
    match (expiry_at, will_at) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
