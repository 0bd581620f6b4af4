//! Wills kept in NATS, so that a node's death does not lose them (MQTT 5 3.1.2.5, 3.1.3.2.2;
//! MQTT 3.1.1 3.1.2.5: a will is published when its connection ends without DISCONNECT,
//! after its Will Delay Interval, at the latest when its session ends).
//!
//! - A **persistent session's** will is the `will` field of its record in `FMQ_SESS`, written
//!   with the record (the attach's write: while connected, no deadline; when its connection is
//!   lost with a Will Delay Interval, the absolute deadline). The owner removes it from the
//!   record when it publishes or discards it.
//! - A **clean session's** will is a small record of its own, `w.<client hash>.<instance>` in
//!   `FMQ_SESS`, written by the CONNECT's claim (before the CONNACK) and deleted when its
//!   session ends here (after the will was published, or discarded by DISCONNECT). One key per
//!   node process: a connection of the same client id on another node never overwrites it.
//!
//! Whoever removes a will from NATS with a compare-and-set publishes it, once: the owner (its
//! own connection's close), a node taking the session over (`sessions::claim`), or the reaper
//! for a dead node (`reaper.rs`). Losing the compare-and-set means someone else handled it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::codec::{SessionRecord, WillRecord};
use super::engine::Inner;
use super::subject::client_key;
use crate::broker::durability::{now_ms, KeptWill};
use crate::broker::session::Session;

/// Key prefix of clean sessions' will records.
pub const CLEAN_PREFIX: &str = "w.";

/// A clean session's will record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CleanWill {
    pub client_id: String,
    /// The node holding its connection, and that node's process.
    pub owner: String,
    pub owner_instance: u64,
    pub will: WillRecord,
}

impl CleanWill {
    pub fn encode(&self) -> bytes::Bytes {
        bytes::Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }

    pub fn decode(bytes: &[u8]) -> Option<CleanWill> {
        serde_json::from_slice(bytes).ok()
    }
}

fn clean_key(client_id: &str, instance: u64) -> String {
    format!("{CLEAN_PREFIX}{}.{instance:016x}", client_key(client_id))
}

/// This node's clean sessions' will records: written by a claim (by client id) until the
/// session attaches, then by session id until it ends.
#[derive(Debug, Default)]
pub struct CleanWills {
    /// Client id -> (revision, when claimed).
    claimed: HashMap<Arc<str>, (u64, Instant)>,
    attached: HashMap<u64, (Arc<str>, u64)>,
    /// Records being deleted (their session ended): key -> revision. A graceful stop
    /// finishes them, so that the reaper does not publish a will the node published.
    deleting: HashMap<String, u64>,
}

/// The will of a CONNECT for a clean session: write its record before the CONNACK (bounded
/// by `storeTimeout`; a failure is logged, and the will is then only this node's, as in a
/// single broker).
pub async fn claim_clean(inner: &Arc<Inner>, client_id: &Arc<str>, will: &KeptWill) {
    if !inner.is_available() {
        // Clean sessions are served without the quorum: the will stays this node's.
        tracing::debug!(%client_id, "cluster: quorum unreachable: will not kept in NATS");
        return;
    }
    let record = CleanWill {
        client_id: client_id.to_string(),
        owner: inner.node_id.clone(),
        owner_instance: inner.instance,
        will: WillRecord::of(will),
    };
    let key = clean_key(client_id, inner.instance);
    match tokio::time::timeout(
        inner.store_timeout,
        inner.sessions_kv.put(&key, record.encode()),
    )
    .await
    {
        Ok(Ok(revision)) => {
            inner
                .clean_wills
                .lock()
                .claimed
                .insert(client_id.clone(), (revision, Instant::now()));
        }
        Ok(Err(e)) => tracing::warn!(%client_id, "cluster: will not kept in NATS: {e}"),
        Err(_) => tracing::warn!(%client_id, "cluster: will not kept in NATS: no answer"),
    }
}

/// A session attached here: a clean one takes the will record its claim wrote.
pub fn attached(inner: &Inner, session: &Session) {
    if session.is_persistent() {
        return;
    }
    let mut wills = inner.clean_wills.lock();
    if let Some((revision, _)) = wills.claimed.remove(session.client_id()) {
        wills
            .attached
            .insert(session.id(), (session.client_id().clone(), revision));
    }
}

/// A session ended here (its will was published or discarded already): delete its clean
/// will record, if it still is the one this session wrote.
pub fn ended(inner: &Arc<Inner>, session: &Session) {
    let key = {
        let mut wills = inner.clean_wills.lock();
        let Some((client_id, revision)) = wills.attached.remove(&session.id()) else {
            return;
        };
        let key = clean_key(&client_id, inner.instance);
        wills.deleting.insert(key.clone(), revision);
        key
    };
    let inner = inner.clone();
    tokio::spawn(async move { delete(&inner, key).await });
}

/// How long a claim's will record waits for its session to attach: a CONNECT refused after
/// its claim (client id in use, a CONNACK too large) never attaches.
const ATTACH_WITHIN: Duration = Duration::from_secs(60);

/// Delete the will records of claims that never attached (see [`ATTACH_WITHIN`]).
pub fn drop_unattached(inner: &Arc<Inner>) {
    let stale: Vec<String> = {
        let mut wills = inner.clean_wills.lock();
        let old: Vec<(Arc<str>, u64)> = wills
            .claimed
            .iter()
            .filter(|(_, (_, at))| at.elapsed() >= ATTACH_WITHIN)
            .map(|(c, (r, _))| (c.clone(), *r))
            .collect();
        old.into_iter()
            .map(|(client_id, revision)| {
                wills.claimed.remove(&client_id);
                let key = clean_key(&client_id, inner.instance);
                wills.deleting.insert(key.clone(), revision);
                key
            })
            .collect()
    };
    for key in stale {
        let inner = inner.clone();
        tokio::spawn(async move { delete(&inner, key).await });
    }
}

/// Delete a clean will record this node is deleting (see [`CleanWills::deleting`]).
async fn delete(inner: &Inner, key: String) {
    let Some(revision) = inner.clean_wills.lock().deleting.get(&key).copied() else {
        return;
    };
    let deleted = tokio::time::timeout(
        inner.store_timeout,
        inner
            .sessions_kv
            .delete_expect_revision(&key, Some(revision)),
    )
    .await;
    if !matches!(deleted, Ok(Ok(()))) {
        // Rewritten by a newer connection of the client here, or NATS did not answer (the
        // reaper publishes it only if this node dies).
        tracing::debug!(%key, "cluster: clean will record not deleted: {deleted:?}");
    }
    let mut wills = inner.clean_wills.lock();
    if wills.deleting.get(&key) == Some(&revision) {
        wills.deleting.remove(&key);
    }
}

/// A graceful stop: finish deleting the records of the clean sessions that ended (their
/// connections closed first, publishing their wills).
pub async fn finish_deletes(inner: &Inner) {
    let keys: Vec<String> = inner.clean_wills.lock().deleting.keys().cloned().collect();
    futures_util::future::join_all(keys.into_iter().map(|key| delete(inner, key))).await;
}

/// The will a node taking over `record` must publish: its session ends now (`ends`: Clean
/// Start, or expired), or its connection was lost without a Will Delay Interval on a node
/// that did not hand it over (dead), or its delay passed. A will still within its delay is
/// cancelled by the resume (MQTT 5 3.1.3-9).
pub fn due_when_taken(record: &SessionRecord, ends: bool, now_ms: u64) -> Option<KeptWill> {
    let will = record.will.as_ref()?;
    if !(ends || will.delay_secs == 0 || will.due(now_ms)) {
        return None;
    }
    will.to_kept().ok()
}

/// The deadline of a will whose connection was lost at `lost_ms`: its Will Delay Interval,
/// capped by the session's expiry (MQTT 5 3.1.3.2.2).
pub fn deadline_after(will: &WillRecord, expiry_secs: Option<u32>, lost_ms: u64) -> u64 {
    let wait = will.delay_secs.min(expiry_secs.unwrap_or(u32::MAX));
    lost_ms.saturating_add(u64::from(wait) * 1000)
}

/// Publish `will` of `client_id` through this node's core (the normal publish path,
/// authorized as its recorded owner now; a retained will updates `FMQ_RETAIN`).
pub fn publish(inner: &Inner, client_id: &str, will: KeptWill, why: &str) {
    let Some(core) = inner.core() else {
        return;
    };
    let topic = will.message.topic.clone();
    if core.publish_will_of_gone_session(client_id, will) {
        tracing::info!(%client_id, %topic, "cluster: will published: {why}");
    }
}

/// What this node knows of the other nodes' heartbeats, followed by a watch on every node:
/// a node is dead when its heartbeat has not changed for `nodeTimeout` as seen from here (no
/// clock is compared between machines) while this node's own heartbeat kept being written
/// (so a stalled `FMQ_NODES`, its raft leader being elected again, or this node cut off,
/// kills nobody), or when it has no heartbeat, or another process writes it now.
#[derive(Debug, Default)]
pub struct Liveness {
    seen: HashMap<String, Seen>,
    /// This node's own heartbeat key, and how many of its writes this node has seen.
    own_key: String,
    own_writes: u64,
    /// Own writes seen since a node's last change for its silence to count (0: time only).
    ticks: u64,
    /// When the view was first filled (a node with no heartbeat at all is dead only after).
    pub since: Option<Instant>,
    /// A node restarted since the reaper last looked (its old process's sessions are
    /// orphans now).
    pub restarted: bool,
}

/// One heartbeat as this node last saw it change.
#[derive(Debug, Clone, Copy)]
struct Seen {
    instance: u64,
    revision: u64,
    at: Instant,
    /// [`Liveness::own_writes`] then.
    own_writes: u64,
}

/// A node's heartbeat key in `FMQ_NODES` (as `node.rs` writes it).
pub fn heartbeat_key(node_id: &str) -> String {
    format!("n{}", client_key(node_id))
}

impl Liveness {
    /// This node's heartbeat key, and how many of its own heartbeats must be seen during a
    /// node's silence for it to count.
    pub fn configure(&mut self, own_node_id: &str, ticks: u64) {
        self.own_key = heartbeat_key(own_node_id);
        self.ticks = ticks;
    }

    /// Record a heartbeat read now (a node that restarted, another process writing its
    /// heartbeat, sets [`Liveness::restarted`]).
    pub fn observe(&mut self, key: &str, instance: u64, revision: u64) {
        let changed = match self.seen.get(key) {
            Some(seen) if seen.revision == revision => false,
            Some(seen) => {
                self.restarted |= seen.instance != instance;
                true
            }
            None => true,
        };
        if !changed {
            return;
        }
        if key == self.own_key {
            self.own_writes += 1;
        }
        let own_writes = self.own_writes;
        self.seen.insert(
            key.to_owned(),
            Seen {
                instance,
                revision,
                at: Instant::now(),
                own_writes,
            },
        );
    }

    /// Count every node's silence from now.
    pub fn restart_clock(&mut self) {
        let now = Instant::now();
        let own_writes = self.own_writes;
        for seen in self.seen.values_mut() {
            seen.at = now;
            seen.own_writes = own_writes;
        }
    }

    /// A heartbeat deleted from the bucket.
    pub fn forget(&mut self, key: &str) {
        self.seen.remove(key);
    }

    fn silent_for(&self, seen: &Seen, node_timeout: Duration) -> bool {
        seen.at.elapsed() >= node_timeout
            && self.own_writes.saturating_sub(seen.own_writes) >= self.ticks
    }

    /// The heartbeat keys silent for `node_timeout`.
    pub fn silent(&self, node_timeout: Duration) -> std::collections::HashSet<String> {
        self.seen
            .iter()
            .filter(|(_, seen)| self.silent_for(seen, node_timeout))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Whether the process `instance` (0: any) of `node_id` is dead.
    pub fn dead(&self, node_id: &str, instance: u64, node_timeout: Duration) -> bool {
        if node_id.is_empty() {
            return true;
        }
        match self.seen.get(&heartbeat_key(node_id)) {
            None => self.since.is_some(),
            Some(seen) if instance != 0 && seen.instance != instance => true,
            Some(seen) => self.silent_for(seen, node_timeout),
        }
    }

    /// How many of its own heartbeats this node has seen (a clock that stops when
    /// `FMQ_NODES` does).
    pub fn own_writes(&self) -> u64 {
        self.own_writes
    }
}

/// The owner of a record is dead or gone, as of `liveness`.
pub fn owner_gone(liveness: &Liveness, record: &SessionRecord, node_timeout: Duration) -> bool {
    liveness.dead(&record.owner, record.owner_instance, node_timeout)
}

/// Now, ms since the Unix epoch (for the reaper and the claim).
pub fn now() -> u64 {
    now_ms()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::durability::KeptWill;
    use crate::protocol::{LastWill, Properties, QoS};
    use crate::security::Principal;

    fn kept(delay: Option<u32>, deadline_ms: Option<u64>) -> KeptWill {
        let will = LastWill {
            topic: "will/t x".into(),
            payload: bytes::Bytes::from_static(b"\x00bye\xff"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: Some(Box::new(Properties {
                will_delay_interval: delay,
                message_expiry_interval: Some(60),
                content_type: Some("text/plain".into()),
                ..Properties::default()
            })),
        };
        KeptWill {
            deadline_ms,
            ..KeptWill::new(&will, &Principal::anonymous())
        }
    }

    fn record(will: Option<KeptWill>) -> SessionRecord {
        SessionRecord {
            client_id: "c".into(),
            owner: "n1".into(),
            epoch: 1,
            connected: true,
            offline_since_ms: 0,
            expiry_secs: Some(300),
            mqtt5: true,
            subscriptions: vec![],
            floors: vec![],
            inflight: vec![],
            done: vec![],
            will: will.as_ref().map(WillRecord::of),
            owner_instance: 7,
            incarnation: 0,
        }
    }

    #[test]
    fn a_will_round_trips_through_its_record() {
        for will in [kept(Some(3), Some(1_000)), kept(None, None)] {
            let back = WillRecord::of(&will).to_kept().expect("decodes");
            assert_eq!(back, will);
        }
        let r = record(Some(kept(Some(3), None)));
        assert_eq!(SessionRecord::decode(&r.encode()).expect("decodes"), r);
        // A record written before wills were kept still reads, without one.
        let mut old: serde_json::Value = serde_json::from_slice(&r.encode()).expect("json");
        let object = old.as_object_mut().expect("object");
        object.remove("will");
        object.remove("owner_instance");
        let back = SessionRecord::decode(&serde_json::to_vec(&old).expect("json")).expect("old");
        assert_eq!((back.will, back.owner_instance), (None, 0));
    }

    #[test]
    fn a_taking_node_publishes_only_what_is_due() {
        let now = 10_000;
        // No delay, its connection lost with its dead node: due.
        assert!(due_when_taken(&record(Some(kept(None, None))), false, now).is_some());
        // Within its delay: cancelled by the resume, published by a clean start.
        let pending = record(Some(kept(Some(5), Some(now + 1))));
        assert!(due_when_taken(&pending, false, now).is_none());
        assert!(due_when_taken(&pending, true, now).is_some());
        let connected = record(Some(kept(Some(5), None)));
        assert!(due_when_taken(&connected, false, now).is_none());
        // Past its deadline: due.
        let late = record(Some(kept(Some(5), Some(now))));
        assert!(due_when_taken(&late, false, now).is_some());
        assert!(due_when_taken(&record(None), true, now).is_none());
    }

    #[test]
    fn a_will_delay_is_capped_by_the_session_expiry() {
        let will = WillRecord::of(&kept(Some(30), None));
        assert_eq!(deadline_after(&will, Some(3), 1_000), 4_000);
        assert_eq!(deadline_after(&will, None, 1_000), 31_000);
    }

    #[test]
    fn a_node_is_dead_when_silent_gone_or_another_process() {
        let timeout = Duration::from_millis(50);
        let mut live = Liveness::default();
        let key = heartbeat_key("n1");
        live.observe(&key, 7, 1);
        assert!(!live.dead("n1", 7, timeout));
        assert!(!live.dead("n1", 0, timeout));
        assert!(live.dead("n1", 8, timeout), "another process");
        assert!(live.dead("", 0, timeout), "no owner");
        assert!(
            !live.dead("n2", 0, timeout),
            "unknown before the view is filled"
        );
        live.since = Some(Instant::now());
        assert!(live.dead("n2", 0, timeout), "no heartbeat at all");
        std::thread::sleep(timeout);
        assert!(live.dead("n1", 7, timeout), "silent");
        live.observe(&key, 7, 2);
        assert!(!live.dead("n1", 7, timeout), "wrote again");
        assert!(!live.restarted);
        live.observe(&key, 9, 3);
        assert!(live.restarted);
    }

    #[test]
    fn silence_counts_only_while_this_nodes_own_heartbeats_get_through() {
        let timeout = Duration::from_millis(50);
        let mut live = Liveness::default();
        live.configure("me", 2);
        let (me, other) = (heartbeat_key("me"), heartbeat_key("other"));
        live.observe(&me, 1, 1);
        live.observe(&other, 2, 1);
        std::thread::sleep(timeout);
        // The bucket stalled: nobody's heartbeat moved, ours neither.
        assert!(!live.dead("other", 2, timeout));
        live.observe(&me, 1, 2);
        assert!(
            !live.dead("other", 2, timeout),
            "one own write is not enough"
        );
        live.observe(&me, 1, 3);
        assert!(live.dead("other", 2, timeout));
        assert!(!live.dead("me", 1, timeout));
    }
}
