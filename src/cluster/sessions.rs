//! Persistent sessions in `FMQ_SESS`: the claim of a CONNECT (take over from the owner,
//! fence it with a new epoch), record writes (compare-and-set on the KV revision: a node
//! that lost the session can never write it again), kicks between nodes, and the changes the
//! broker core commits.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv::Operation;
use futures_util::StreamExt;

use super::claims::NewSession;
use super::codec::{decode_message, SessionRecord};
use super::engine::{refuses_owner, Inner};
use super::shard_stream;
use super::subject::client_key;
use super::tracker::{Entry, Tracked};
use crate::broker::durability::{
    now_ms, Change, ClaimRequest, Claimed, Commit, DurabilityError, QueueOwner, SessionData,
    SessionImage,
};
use crate::broker::session::inflight::{InflightEntry, InflightStage};
use crate::broker::session::SessionState;
use crate::protocol::QoS;

/// How long a claim waits for the old owner to hand a session over.
pub const KICK_TIMEOUT: Duration = Duration::from_secs(2);
/// How often dirty records (acknowledgement progress) are written.
const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// Attempts of a claim against concurrent writers of the same record.
const CLAIM_ATTEMPTS: usize = 6;
/// The first pause after a claim's write lost to another writer; doubled each time (at most
/// 16 times: 80 ms).
const CLAIM_RETRY_PAUSE: Duration = Duration::from_millis(5);

fn unavailable(what: impl std::fmt::Display) -> DurabilityError {
    DurabilityError::Unavailable(format!("cluster store: {what}"))
}

/// The subject a node answers kicks on.
fn kick_subject(node_id: &str) -> String {
    format!(
        "fmq.node.{}.kick",
        super::subject::topic_subject("n", node_id)
    )
}

/// The changes the broker core commits, applied to the tracker and NATS.
pub fn commit(inner: &Arc<Inner>, changes: Vec<Change>) -> Commit {
    let mut waits = Vec::new();
    // A persistent session's QoS 2 PUBLISH comes with the packet id to remember.
    let inbound_qos2 = changes.iter().find_map(|c| match c {
        Change::InboundQos2Received {
            client_id,
            packet_id,
            connection,
        } => Some((client_id.clone(), *packet_id, connection.clone())),
        _ => None,
    });
    for change in changes {
        match change {
            // The publisher is named from the broker's registry, which no longer has a
            // session this node handed over while its connection is still open: the packet
            // id's change names the session instead. Stored as a plain publish, such a
            // QoS 2 message was delivered at once, and again when its client re-sent it
            // where the session resumed.
            Change::Published {
                message,
                retained,
                publisher,
                store_id: _,
            } if message.qos == QoS::ExactlyOnce
                && inbound_qos2
                    .as_ref()
                    .is_some_and(|(c, _, _)| publisher.as_ref().is_none_or(|p| p == c)) =>
            {
                let Some((client_id, packet_id, connection)) = inbound_qos2.clone() else {
                    continue;
                };
                waits.push(super::qos2::received(
                    inner, message, retained, client_id, packet_id, connection,
                ))
            }
            Change::Published {
                message,
                retained,
                publisher,
                store_id,
            } => waits.push(super::publish::publish(
                inner,
                message,
                retained,
                publisher.as_deref(),
                store_id,
            )),
            Change::InboundQos2Released {
                client_id,
                packet_id,
            } => waits.push(super::qos2::released(inner, client_id, packet_id)),
            Change::Sent {
                owner: QueueOwner::Session(client_id),
                seq,
                packet_id,
            } => waits.push(super::qos2::delivery_state(
                inner, client_id, seq, packet_id, false,
            )),
            Change::Released {
                owner: QueueOwner::Session(client_id),
                seq,
                packet_id,
            } => waits.push(super::qos2::delivery_state(
                inner, client_id, seq, packet_id, true,
            )),
            Change::Removed {
                owner: QueueOwner::Session(client_id),
                seq,
            } => inner.tracker.lock().removed(&client_id, seq),
            Change::SessionSaved(data) => waits.push(save(inner, data, true)),
            Change::SessionEnded { client_id } => waits.push(end(inner, client_id)),
            Change::QueueDeclared { owner } if refuses_owner(&owner) => {
                return Commit::Done(Err(DurabilityError::Unavailable(
                    "a single node's subscription group is not kept by a cluster".into(),
                )))
            }
            // Retained messages sent because of a SUBSCRIBE are not in the log (their queue
            // entries are not tracked); other changes are node-local.
            _ => {}
        }
    }
    join(waits)
}

fn join(waits: Vec<Commit>) -> Commit {
    let mut pending = Vec::new();
    for wait in waits {
        match wait {
            Commit::Done(Ok(())) => {}
            Commit::Done(Err(e)) => return Commit::Done(Err(e)),
            Commit::Pending(f) => pending.push(f),
        }
    }
    if pending.is_empty() {
        return Commit::done();
    }
    Commit::Pending(Box::pin(async move {
        for f in pending {
            f.await?;
        }
        Ok(())
    }))
}

/// A persistent session's client left.
pub fn session_offline(inner: &Arc<Inner>, state: &SessionState) -> Commit {
    let data = SessionData::of(state);
    save(inner, data, false)
}

/// A session's own data changed (attach, SUBSCRIBE, UNSUBSCRIBE, offline): write its record.
fn save(inner: &Arc<Inner>, data: SessionData, connected: bool) -> Commit {
    let client_id = data.client_id.clone();
    if inner.drain.is_released(&client_id) {
        // Handed over by the drain: the record is no longer this node's to write (a change
        // of a still connected client is refused, so that no SUBACK promises it).
        return if connected {
            Commit::Done(Err(unavailable("this node is draining")))
        } else {
            Commit::done()
        };
    }
    let covering = {
        let mut tracker = inner.tracker.lock();
        let mut tracked = tracker.sessions.get_mut(&client_id);
        // Read first: the claims' lock is not held past the verdict.
        let verdict = match tracked {
            None if connected => inner.claims.lock().new_session(&client_id),
            _ => NewSession::NotClaimedNew,
        };
        match save_route(tracked.as_deref(), &data, connected, verdict) {
            SaveRoute::Unchanged => {
                drop(tracker);
                super::confirmed::count(inner, |c| c.cluster_records_unchanged());
                return Commit::done();
            }
            SaveRoute::Skip(why) => {
                drop(tracker);
                tracing::debug!(client_id = %client_id, "offline save skipped: {why}");
                return Commit::done();
            }
            SaveRoute::Refuse(why) => {
                drop(tracker);
                tracing::info!(
                    client_id = %client_id,
                    "a session this node's claim did not start is not made new here: refusing its CONNECT ({why})"
                );
                return Commit::Done(Err(unavailable(why)));
            }
            SaveRoute::Start => {
                // A new session: it is fed from where the node's reader is now.
                let t = Tracked::new(data, inner.shards, &inner.routed());
                let covering = t.data_changes;
                tracker.sessions.insert(client_id.clone(), t);
                covering
            }
            SaveRoute::Update => {
                let Some(t) = tracked.take() else {
                    return Commit::done();
                };
                if t.data != data || t.connected != connected {
                    t.data_changes += 1;
                }
                t.data = data;
                if t.connected && !connected {
                    t.offline_since_ms = now_ms();
                }
                if connected {
                    t.offline_since_ms = 0;
                }
                t.connected = connected;
                t.dirty = true;
                t.data_changes
            }
        }
    };
    let inner = inner.clone();
    Commit::Pending(Box::pin(async move {
        write_record_covering(&inner, &client_id, Some(covering)).await
    }))
}

/// What a save of a persistent session's own data does with this node's copy (see
/// [`save_route`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SaveRoute {
    /// The record holds it already: nothing to write.
    Unchanged,
    /// The tracked copy takes the data and its record is written.
    Update,
    /// A new session starts here: tracked from now, its first record written.
    Start,
    /// An offline save of a copy that is not this node's to write: nothing written.
    Skip(&'static str),
    /// A connection's save (its attach) of a copy this node let go: its CONNECT is refused
    /// before any CONNACK, and its client connects again and claims where the session is.
    Refuse(&'static str),
}

/// How [`save`] treats `data` (`connected`: the client is attached) given this node's copy
/// `tracked` and, when there is none, `verdict`, what this node's latest claim allows.
///
/// - A copy the record holds already (a client reconnecting and taking its own connection
///   over, again and again) is left as it is; acknowledgement progress is the flusher's.
/// - A copy being handed over (another node's kick came after this node's claim found the
///   session its own) is the hand-over's to write, and the taking node's after. The broker's
///   registry let it go already, so a connection attaching now made a new, empty session:
///   written, it would replace the session's subscriptions and floors.
/// - No copy and going offline: a copy this node let go of (fenced, dropped, handed over)
///   whose connection closed after; a new session is always tracked from its attach.
///   Writing it would make a record with fresh floors over the session's own.
/// - No copy at an attach: a session starts here only when this node's latest claim found
///   none to resume. Any other untracked copy (restored, then let go before its connection
///   attached on another node's kick or a fence; confirmed, then dropped) made new would
///   replace the record's floors with fresh ones and skip what was stored meanwhile.
fn save_route(
    tracked: Option<&Tracked>,
    data: &SessionData,
    connected: bool,
    verdict: NewSession,
) -> SaveRoute {
    const TAKEN: &str = "the session was taken by another node during its CONNECT";
    match tracked {
        Some(t) if t.holds(data, connected) => SaveRoute::Unchanged,
        Some(t) if t.handed_over && connected => SaveRoute::Refuse(TAKEN),
        Some(t) if t.handed_over => SaveRoute::Skip("the session is being handed over"),
        Some(_) => SaveRoute::Update,
        None if !connected => SaveRoute::Skip("the session is not tracked here"),
        None => match verdict {
            NewSession::Allowed => SaveRoute::Start,
            NewSession::LetGo => SaveRoute::Refuse(TAKEN),
            NewSession::NotClaimedNew => {
                SaveRoute::Refuse("the session was let go here during its CONNECT")
            }
        },
    }
}

/// A persistent session ended here: delete its record (if this node still owns it).
fn end(inner: &Arc<Inner>, client_id: Arc<str>) -> Commit {
    inner.q2.forget(&client_id);
    let Some(t) = inner.tracker.lock().sessions.remove(&client_id) else {
        return Commit::done();
    };
    let inner = inner.clone();
    Commit::Pending(Box::pin(async move {
        let lock = inner.record_lock(&client_id);
        let _one_writer = lock.lock().await;
        if t.revision == 0 {
            return Ok(());
        }
        let key = client_key(&client_id);
        let mut revision = t.revision;
        for _ in 0..2 {
            super::confirmed::count(&inner, |c| c.cluster_record_writes());
            match tokio::time::timeout(
                inner.store_timeout,
                inner
                    .sessions_kv
                    .delete_expect_revision(&key, Some(revision)),
            )
            .await
            {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(_)) => {}
                Err(_) => return Err(unavailable("no answer ending a session")),
            }
            // A write of this node's that was under way when the session ended (its offline
            // record, written as its consumer left just before) moved the revision: still
            // this node's at this epoch, it is deleted at the new one. Another node's
            // (a higher epoch, or another owner): taken meanwhile, theirs, not ended.
            match read_record(&inner, &key).await? {
                Some(e) if e.operation == Operation::Put => {
                    let ours = SessionRecord::decode(&e.value)
                        .is_ok_and(|r| r.owner == inner.node_id && r.epoch == t.epoch);
                    if !ours {
                        return Ok(());
                    }
                    revision = e.revision;
                }
                _ => return Ok(()),
            }
        }
        Err(unavailable("session record changed while it was ended"))
    }))
}

/// Write `client_id`'s record as the tracker has it, with compare-and-set on the revision
/// this node last wrote. A lost compare-and-set means another node took the session: the
/// local copy is dropped (fenced).
pub async fn write_record(inner: &Arc<Inner>, client_id: &Arc<str>) -> Result<(), DurabilityError> {
    write_record_covering(inner, client_id, None).await
}

/// [`write_record`] for a save that made change `covering` of the copy's data (see
/// `Tracked::data_changes`): nothing is written when a write that took the record's lock
/// first made it durable already (saves queued behind a slow write make one write).
async fn write_record_covering(
    inner: &Arc<Inner>,
    client_id: &Arc<str>,
    covering: Option<u64>,
) -> Result<(), DurabilityError> {
    match write_record_once(inner, client_id, covering).await {
        Err(Retry::Adopted) => write_record_once(inner, client_id, covering)
            .await
            .map_err(Retry::into_error),
        other => other.map_err(Retry::into_error),
    }
}

/// Why one write did not go through.
enum Retry {
    /// This node's own older record was adopted: write again at once.
    Adopted,
    Failed(DurabilityError),
}

impl Retry {
    fn into_error(self) -> DurabilityError {
        match self {
            Retry::Adopted => unavailable("session record replaced meanwhile"),
            Retry::Failed(e) => e,
        }
    }
}

impl From<DurabilityError> for Retry {
    fn from(e: DurabilityError) -> Self {
        Retry::Failed(e)
    }
}

async fn write_record_once(
    inner: &Arc<Inner>,
    client_id: &Arc<str>,
    covering: Option<u64>,
) -> Result<(), Retry> {
    let lock = inner.record_lock(client_id);
    let _one_writer = lock.lock().await;
    let (record, revision, qos2_changes, data_changes) = {
        let mut tracker = inner.tracker.lock();
        let Some(t) = tracker.sessions.get_mut(client_id) else {
            return Ok(());
        };
        if covering.is_some_and(|change| t.data_written >= change) {
            drop(tracker);
            super::confirmed::count(inner, |c| c.cluster_records_unchanged());
            return Ok(());
        }
        t.dirty = false;
        let routed = inner.routed();
        t.prune_done(&routed);
        let mut record = t.record(&inner.node_id, &routed);
        record.owner_instance = inner.instance;
        (record, t.revision, t.qos2_changes, t.data_changes)
    };
    super::confirmed::count(inner, |c| c.cluster_record_writes());
    let sent = super::confirmed::Sent::now(inner);
    let key = client_key(client_id);
    let bytes = record.encode();
    let written = if revision == 0 {
        tokio::time::timeout(inner.store_timeout, inner.sessions_kv.create(&key, bytes))
            .await
            .map(|r| r.map_err(|e| (super::lost_race::create(&e), e.to_string())))
    } else {
        tokio::time::timeout(
            inner.store_timeout,
            inner.sessions_kv.update(&key, bytes, revision),
        )
        .await
        .map(|r| r.map_err(|e| (super::lost_race::update(&e), e.to_string())))
    };
    match written {
        Ok(Ok(new_revision)) => {
            tracing::trace!(client_id = %client_id, epoch = record.epoch, read_revision = revision, revision = new_revision, "session record written");
            if let Some(t) = inner.tracker.lock().sessions.get_mut(client_id) {
                if t.epoch == record.epoch {
                    t.revision = new_revision;
                    t.qos2_written = t.qos2_written.max(qos2_changes);
                    t.data_written = t.data_written.max(data_changes);
                    // The compare-and-set went through: the record was this copy's.
                    sent.confirm(t);
                }
            }
            Ok(())
        }
        Ok(Err((true, _))) if revision == 0 => {
            // A record this node left behind (an ended session whose delete has not landed
            // yet, or one from before a restart) is taken over by the new session; another
            // node's is not.
            adopt_or_fence(inner, client_id, record.epoch).await
        }
        Ok(Err((true, _))) => {
            tracing::debug!(
                client_id = %client_id,
                epoch = record.epoch,
                read_revision = revision,
                "session record changed by another writer: checking who owns it"
            );
            match fenced(inner, client_id, record.epoch).await {
                // An earlier write of this node landed with its answer lost (a leader's
                // death): its revision is taken, and the write made again at once.
                Fence::Own => Err(Retry::Adopted),
                Fence::Dropped | Fence::Unknown => Err(DurabilityError::Unavailable(format!(
                    "session {client_id} is served by another node now"
                ))
                .into()),
            }
        }
        Ok(Err((false, e))) => {
            mark_dirty(inner, client_id);
            Err(unavailable(e).into())
        }
        Err(_) => {
            mark_dirty(inner, client_id);
            Err(unavailable("no answer writing a session record").into())
        }
    }
}

/// A new session's record already exists: adopt it (its revision, a higher epoch) when this
/// node owns it, so the next write replaces it; else this node's copy is stale.
async fn adopt_or_fence(inner: &Arc<Inner>, client_id: &Arc<str>, epoch: u64) -> Result<(), Retry> {
    let key = client_key(client_id);
    super::confirmed::count(inner, |c| c.cluster_record_reads());
    let existing = inner
        .sessions_kv
        .entry(&key)
        .await
        .ok()
        .flatten()
        .and_then(|e| {
            let record = SessionRecord::decode(&e.value).ok()?;
            Some((record, e.revision))
        });
    match existing {
        Some((record, revision)) if record.owner == inner.node_id => {
            tracing::debug!(
                client_id = %client_id,
                epoch,
                record_epoch = record.epoch,
                revision,
                "a new session's record exists and names this node: adopted"
            );
            if let Some(t) = inner.tracker.lock().sessions.get_mut(client_id) {
                t.epoch = record.epoch.max(epoch) + 1;
                t.revision = revision;
                t.dirty = true;
            }
            Err(Retry::Adopted)
        }
        Some(_) => {
            let _ = fenced(inner, client_id, epoch).await;
            Err(DurabilityError::Unavailable(format!(
                "session {client_id} is served by another node now"
            ))
            .into())
        }
        None => {
            mark_dirty(inner, client_id);
            Err(unavailable("session record changed meanwhile").into())
        }
    }
}

fn mark_dirty(inner: &Inner, client_id: &str) {
    if let Some(t) = inner.tracker.lock().sessions.get_mut(client_id) {
        t.dirty = true;
    }
}

/// What [`fenced`] found.
enum Fence {
    /// The record is this node's copy at the epoch written: a write of its own landed
    /// meanwhile. Its revision is now the copy's, marked to be written again.
    Own,
    /// Another node's, or this node's copy is not tracked any more: dropped here.
    Dropped,
    /// The record could not be read, or the copy tracked now is a newer claim: left alone.
    Unknown,
}

/// A write found the record changed by someone else: if another node owns it now (a higher
/// epoch), this node's copy is stale: close its connection and forget it here.
async fn fenced(inner: &Arc<Inner>, client_id: &Arc<str>, epoch: u64) -> Fence {
    let key = client_key(client_id);
    let (current, revision) = match read_record(inner, &key).await {
        Ok(Some(e)) if e.operation == Operation::Put => {
            (SessionRecord::decode(&e.value).ok(), e.revision)
        }
        // "No record" drops the copy only from the bucket's leader: any replica may answer
        // a read, and one that is catching up (a leader change) does not have the record.
        Ok(_) => match leader_entry(inner, &key).await {
            Ok(Some(e)) => (SessionRecord::decode(&e.value).ok(), e.revision),
            Ok(None) => (None, 0),
            Err(_) => return Fence::Unknown,
        },
        Err(_) => return Fence::Unknown,
    };
    let owner = current.as_ref().map(|r| (r.owner.as_str(), r.epoch));
    {
        let mut tracker = inner.tracker.lock();
        let own = current.as_ref().is_some_and(|r| {
            r.owner == inner.node_id && r.epoch == epoch && r.owner_instance == inner.instance
        });
        let tracked = match tracker.sessions.get_mut(client_id) {
            Some(t) if own && t.epoch == epoch => {
                t.revision = revision;
                t.dirty = true;
                return Fence::Own;
            }
            t => t.map(|t| t.epoch),
        };
        if !fences(&inner.node_id, epoch, tracked, owner) {
            return Fence::Unknown;
        }
        tracker.sessions.remove(client_id);
    }
    inner.claims.lock().let_go(client_id);
    tracing::warn!(
        client_id = %client_id,
        owner = current.as_ref().map(|r| r.owner.as_str()).unwrap_or("none"),
        owner_epoch = current.as_ref().map(|r| r.epoch).unwrap_or(0),
        epoch,
        revision,
        "session taken over by another node: this node's copy is dropped (fenced)"
    );
    inner.q2.forget(client_id);
    if let Some(core) = inner.core() {
        core.hand_over(client_id);
    }
    Fence::Dropped
}

/// Whether a failed write of this node's copy at `epoch` fences (drops) the copy tracked now
/// (`tracked`: its epoch), given the record's `(owner, epoch)` read after the failure. Not when
/// the record is this node's at that epoch (the write raced one of its own), and not when the
/// copy tracked now is another epoch: a newer claim of the same client on this node replaced
/// the copy that was written, and moved the record itself.
fn fences(node: &str, epoch: u64, tracked: Option<u64>, record: Option<(&str, u64)>) -> bool {
    if record.is_some_and(|(owner, e)| owner == node && e == epoch) {
        return false;
    }
    tracked.is_none_or(|t| t == epoch)
}

/// How long [`verify`] waits for one read of a session record (a NATS request's own default
/// is 10 s), and for all of them when the node comes back from a lost quorum: it takes
/// persistent work only after its check, so that check is short.
const VERIFY_READ_TIMEOUT: Duration = Duration::from_millis(1_500);
pub const VERIFY_QUICKLY: Duration = Duration::from_secs(3);

/// Whether this node still owns `client_id`'s session at `epoch`; if not, or if its record
/// cannot be read within `patience`, drop it here (its client reconnects and claims it again,
/// from the record: nothing is lost, what was not yet written as progress is delivered again).
async fn verify(inner: &Arc<Inner>, client_id: &Arc<str>, epoch: u64, patience: Duration) {
    let key = client_key(client_id);
    let deadline = tokio::time::Instant::now() + patience;
    let mut first = true;
    while std::mem::take(&mut first) || tokio::time::Instant::now() < deadline {
        let still_tracked = inner
            .tracker
            .lock()
            .sessions
            .get(client_id)
            .is_some_and(|t| t.epoch == epoch);
        if !still_tracked {
            return;
        }
        super::confirmed::count(inner, |c| c.cluster_record_reads());
        let read = tokio::time::timeout(VERIFY_READ_TIMEOUT, inner.sessions_kv.entry(&key)).await;
        let current = match read {
            Ok(Ok(Some(e))) if e.operation == Operation::Put => {
                SessionRecord::decode(&e.value).ok()
            }
            Ok(Ok(_)) => None,
            Ok(Err(_)) | Err(_) => {
                // No replica answers while the bucket has no leader.
                tokio::time::sleep(READ_RETRY).await;
                continue;
            }
        };
        let ours = |r: &SessionRecord| r.owner == inner.node_id && r.epoch == epoch;
        if current.as_ref().is_some_and(ours) {
            return;
        }
        // Any replica answers a read, and one behind the others (a record written a moment
        // ago, a server that rejoined) may have no record or an older owner: a session is
        // closed here only on its leader's word.
        let from_leader = match leader_entry(inner, &key).await {
            Ok(entry) => entry.and_then(|e| SessionRecord::decode(&e.value).ok()),
            Err(_) => {
                tokio::time::sleep(READ_RETRY).await;
                continue;
            }
        };
        if from_leader.as_ref().is_some_and(ours) {
            tracing::debug!(client_id = %client_id, "verify: a replica was behind; the leader has this node's record");
            return;
        }
        let _ = fenced(inner, client_id, epoch).await;
        return;
    }
    tracing::warn!(
        client_id = %client_id,
        "session record not readable after this node was cut off: closing the session here"
    );
    drop_local(inner, client_id);
}

/// Check every local session against its record: after this node was unable to write for a
/// while (paused, cut off), other nodes may have taken some over. A record not read within
/// `patience` drops its session here.
pub async fn verify_all(inner: &Arc<Inner>, patience: Duration) {
    let owned: Vec<(Arc<str>, u64)> = inner
        .tracker
        .lock()
        .sessions
        .iter()
        .map(|(c, t)| (c.clone(), t.epoch))
        .collect();
    futures_util::stream::iter(owned)
        .for_each_concurrent(64, |(client_id, epoch)| async move {
            verify(inner, &client_id, epoch, patience).await;
        })
        .await;
}

/// CONNECT of `request.client_id` (see [`crate::broker::durability::Backplane::claim`]).
pub async fn claim(inner: &Arc<Inner>, request: ClaimRequest) -> Result<Claimed, DurabilityError> {
    let client_id = request.client_id.clone();
    let key = client_key(&client_id);
    super::confirmed::count(inner, |c| c.cluster_claims());
    if let (false, Some(will)) = (request.persistent, &request.will) {
        super::wills::claim_clean(inner, &client_id, will).await;
    }
    // Announced to every node once attached (see `claims.rs`).
    inner
        .claims
        .lock()
        .claimed_here(&client_id, super::claims::now_us(), inner.instance);
    // A resume right after a claim, or a write, that found this node the owner (a client
    // reconnecting over and over): the same answer, without reading again.
    if super::confirmed::still_ours(inner, &request) {
        super::confirmed::count(inner, |c| c.cluster_claims_confirmed());
        tracing::debug!(client_id = %client_id, "claim: this node owns the session (confirmed just before)");
        return Ok(Claimed::Here);
    }
    // The owner last asked to hand over: a claim that loses a race re-reads the record and
    // asks the winner in turn, so two nodes never both hold the session.
    let mut kicked: Option<(String, u64)> = None;
    for attempt in 0..CLAIM_ATTEMPTS {
        let sent = super::confirmed::Sent::now(inner);
        let entry = read_record(inner, &key).await?;
        let entry = match entry {
            Some(e) if e.operation == Operation::Put => Some(e),
            // A clean start discards any session anyway: nothing of the client's is lost if a
            // lagging replica hides its record (the new session's first write, a create,
            // finds it and the client is sent to connect again).
            other if request.clean_start => other,
            // "No record" makes a new session where one is to be resumed: believed only from
            // the bucket's leader. A read may be answered by any replica, and one that
            // rejoined after a partition and has not caught up yet does not have the record.
            _ => {
                let leader = leader_entry(inner, &key).await?;
                if leader.is_some() {
                    tracing::warn!(
                        client_id = %client_id,
                        "a replica answered without the session record; its leader has it"
                    );
                }
                leader
            }
        };
        // A copy being handed over has left the broker's registry: attaching "this node's
        // session" would make a new, empty one while its record still names this node. It is
        // taken over from its record like another node's.
        let tracked = inner
            .tracker
            .lock()
            .sessions
            .get(&client_id)
            .map(|t| (t.epoch, t.revision, t.handed_over));
        let local_epoch = tracked
            .filter(|(_, _, handed_over)| !handed_over)
            .map(|(epoch, revision, _)| (epoch, revision));
        let Some((record, revision)) =
            entry
                .filter(|e| e.operation == Operation::Put)
                .and_then(|e| {
                    SessionRecord::decode(&e.value)
                        .ok()
                        .map(|r| (r, e.revision))
                })
        else {
            tracing::debug!(
                client_id = %client_id,
                local = ?local_epoch,
                clean_start = request.clean_start,
                "claim: no session record; the session starts here"
            );
            // No record: a local copy whose record was written is stale (ended elsewhere).
            // (A copy being handed over too: the session it would be written for is gone.)
            if tracked.is_some_and(|(_, revision, _)| revision > 0) {
                drop_local(inner, &client_id);
            }
            inner.claims.lock().starts_here(&client_id);
            return Ok(Claimed::Here);
        };
        let ours = record.owner == inner.node_id
            && local_epoch.is_some_and(|(epoch, _)| epoch == record.epoch);
        tracing::debug!(
            client_id = %client_id,
            owner = %record.owner,
            epoch = record.epoch,
            revision,
            local = ?local_epoch,
            ours,
            "claim: session record read"
        );
        if ours {
            if request.clean_start {
                // The broker discards it at attach; the record goes with it (SessionEnded).
                inner.claims.lock().starts_here(&client_id);
                return Ok(Claimed::Here);
            }
            if let Some(t) = inner.tracker.lock().sessions.get_mut(&client_id) {
                if t.epoch == record.epoch && !t.handed_over {
                    sent.confirm(t);
                }
            }
            return Ok(Claimed::Here);
        }
        if local_epoch.is_some() {
            drop_local(inner, &client_id);
        }
        let owner_at = (record.owner.clone(), record.epoch);
        // No owner: released by a drained node, nobody to ask.
        if !record.owner.is_empty()
            && record.owner != inner.node_id
            && kicked.as_ref() != Some(&owner_at)
        {
            kicked = Some(owner_at);
            // A silent owner is taken over after the kick's bound: waiting until its heartbeat
            // is `quorumLossTimeout` old (so that an owner cut off from NATS has stopped
            // serving) was tried and made S8 (SIGKILL at QoS 2) deliver duplicates; see
            // docs/cluster.md, "Sessions across nodes".
            let answer = kick_owner(inner, &record.owner, &client_id, !request.take_over).await;
            if answer == KickAnswer::InUse {
                return Ok(Claimed::InUse {
                    holder: Some(record.owner.clone()),
                });
            }
            continue;
        }
        // The old connection's will, when this claim is the one to publish it (see
        // `wills.rs`): published once the record without it is written.
        let now = now_ms();
        if request.clean_start || record.expired(now) {
            let will = super::wills::due_when_taken(&record, true, now);
            super::confirmed::count(inner, |c| c.cluster_record_writes());
            match inner
                .sessions_kv
                .delete_expect_revision(&key, Some(revision))
                .await
            {
                Ok(()) => {
                    if let Some(will) = will {
                        super::wills::publish(inner, &client_id, will, "its session ended");
                    }
                    inner.claims.lock().starts_here(&client_id);
                    return Ok(Claimed::Here);
                }
                Err(_) => continue,
            }
        }
        let will = super::wills::due_when_taken(&record, false, now);
        let taken = SessionRecord {
            owner: inner.node_id.clone(),
            epoch: record.epoch + 1,
            connected: true,
            // A will still within its delay is cancelled by this resume (MQTT 5 3.1.3-9);
            // the new connection's is kept from now on, before the CONNACK.
            will: request
                .will
                .as_ref()
                .filter(|_| request.persistent)
                .map(super::codec::WillRecord::of),
            owner_instance: inner.instance,
            ..record.clone()
        };
        super::confirmed::count(inner, |c| c.cluster_record_writes());
        let sent = super::confirmed::Sent::now(inner);
        match tokio::time::timeout(
            inner.store_timeout,
            inner.sessions_kv.update(&key, taken.encode(), revision),
        )
        .await
        {
            Ok(Ok(new_revision)) => {
                tracing::debug!(
                    client_id = %client_id,
                    from = %record.owner,
                    epoch = taken.epoch,
                    read_revision = revision,
                    revision = new_revision,
                    "claim: session taken over"
                );
                if let Some(will) = will {
                    super::wills::publish(
                        inner,
                        &client_id,
                        will,
                        "its connection was lost on another node",
                    );
                }
                let image = match restore(inner, &client_id, taken, new_revision).await {
                    Ok(image) => image,
                    Err(e) => {
                        // Owned by the record now, not served: the client's next CONNECT
                        // (here or elsewhere) restores it again from the same record.
                        drop_local(inner, &client_id);
                        return Err(e);
                    }
                };
                if let Some(t) = inner.tracker.lock().sessions.get_mut(&client_id) {
                    if t.revision == new_revision {
                        sent.confirm(t);
                    }
                }
                return Ok(Claimed::Image(Box::new(image)));
            }
            Ok(Err(e)) if super::lost_race::update(&e) => {
                tracing::debug!(client_id = %client_id, read_revision = revision, "claim: the record changed since it was read; reading again");
                // The other writer is usually the node the client just left, writing the
                // session offline or handing it over: a moment lets it finish, where reading
                // again at once could lose every attempt to its writes (a client hopping
                // nodes one CONNECT after another was refused 0x88 once in 300 hops).
                tokio::time::sleep(CLAIM_RETRY_PAUSE * (1 << attempt.min(4))).await;
                continue;
            }
            Ok(Err(e)) => return Err(unavailable(e)),
            Err(_) => return Err(unavailable("no answer taking a session over")),
        }
    }
    Err(unavailable(format!(
        "session {client_id} is being taken over by other nodes at the same time"
    )))
}

/// The session record under `key`, read within `storeTimeout`. A read refused before then
/// is tried again every [`READ_RETRY`]: NATS answers "no responders" while a bucket's raft
/// group elects a leader and before a replica that just started serves direct gets, which
/// lasts well under a second; a read changes nothing, so trying again is always safe.
pub(super) async fn read_record(
    inner: &Inner,
    key: &str,
) -> Result<Option<async_nats::jetstream::kv::Entry>, DurabilityError> {
    let deadline = tokio::time::Instant::now() + inner.store_timeout;
    loop {
        super::confirmed::count(inner, |c| c.cluster_record_reads());
        let read = tokio::time::timeout_at(deadline, inner.sessions_kv.entry(key)).await;
        match read {
            Ok(Ok(entry)) => return Ok(entry),
            Ok(Err(e)) if tokio::time::Instant::now() + READ_RETRY < deadline => {
                tracing::debug!("cluster store: session read refused, trying again: {e}");
                tokio::time::sleep(READ_RETRY).await;
            }
            Ok(Err(e)) => return Err(unavailable(e)),
            Err(_) => return Err(unavailable("no answer reading a session")),
        }
    }
}

/// How long a refused session read waits before it is tried again.
const READ_RETRY: Duration = Duration::from_millis(100);

/// The session record `key` as the bucket's leader has it (`STREAM.MSG.GET`, never a
/// replica's direct answer); `None` when there is none or it was deleted.
pub(super) async fn leader_entry(
    inner: &Arc<Inner>,
    key: &str,
) -> Result<Option<async_nats::jetstream::kv::Entry>, DurabilityError> {
    let subject = format!("{}{key}", inner.sessions_kv.prefix);
    super::confirmed::count(inner, |c| c.cluster_record_reads());
    let read = inner
        .sessions_kv
        .stream
        .get_last_raw_message_by_subject(&subject);
    let message = match tokio::time::timeout(inner.store_timeout, read).await {
        Err(_) => return Err(unavailable("no answer reading a session from its leader")),
        Ok(Err(e))
            if e.kind()
                == async_nats::jetstream::stream::LastRawMessageErrorKind::NoMessageFound =>
        {
            return Ok(None)
        }
        Ok(Err(e)) => return Err(unavailable(e)),
        Ok(Ok(m)) => m,
    };
    let deleted = message
        .headers
        .get("KV-Operation")
        .is_some_and(|op| op.as_str() != "PUT");
    if deleted {
        return Ok(None);
    }
    Ok(Some(async_nats::jetstream::kv::Entry {
        bucket: inner.sessions_kv.name.clone(),
        key: key.to_owned(),
        value: message.payload,
        revision: message.sequence,
        delta: 0,
        created: message.time,
        operation: Operation::Put,
        seen_current: false,
    }))
}

/// Forget this node's copy of a session another node owns (or that ended elsewhere).
fn drop_local(inner: &Arc<Inner>, client_id: &Arc<str>) {
    inner.q2.forget(client_id);
    inner.tracker.lock().sessions.remove(client_id);
    if let Some(core) = inner.core() {
        core.hand_over(client_id);
    }
}

/// The session of `record` (claimed at `revision`) as this node restores it: subscriptions,
/// and the messages sent and not acknowledged, read back from the log with their packet ids
/// in send order. Tracked from its floors, every shard catching up.
async fn restore(
    inner: &Arc<Inner>,
    client_id: &Arc<str>,
    record: SessionRecord,
    revision: u64,
) -> Result<SessionImage, DurabilityError> {
    let offline_for = if record.offline_since_ms == 0 {
        Duration::ZERO
    } else {
        Duration::from_millis(now_ms().saturating_sub(record.offline_since_ms))
    };
    let mut state = SessionState::new(client_id, true);
    state.mqtt5 = record.mqtt5;
    state.expiry_secs = record.expiry_secs;
    *state.subscriptions_mut() = record
        .subscriptions
        .iter()
        .cloned()
        .collect::<BTreeMap<_, _>>();
    let data = SessionData::of(&state);
    let mut floors = record.floors.clone();
    floors.resize(inner.shards, 0);
    let mut tracked = Tracked::new(data, inner.shards, &floors);
    tracked.epoch = record.epoch;
    tracked.revision = revision;
    // A record of an older node has none: the new one is written at the attach.
    tracked.dirty = record.incarnation == 0;
    if record.incarnation != 0 {
        tracked.incarnation = record.incarnation;
    }
    for cursor in &mut tracked.shards {
        cursor.catching_up = true;
    }
    tracked.done_above_floors(&record.done);
    // The copy enters the tracker only once its in-flight list is complete (below). Inserted
    // first, a kick that came while the messages were read back handed over a copy lacking
    // the entries not read yet: its last record (`hand_over`) dropped exchanges the client
    // still held open, and the node taking the session gave their packet ids to other
    // messages (lost at the client as re-sends) and sent their messages again as new
    // (duplicates). A QoS 2 subscriber moving among three nodes every 10-300 ms hit it.
    for inflight in &record.inflight {
        let shard = inflight.shard as usize;
        if shard >= inner.shards {
            continue;
        }
        let stored = in_flight_message(inner, shard, inflight.seq).await?;
        let message = match stored.and_then(|s| decode_message(s.payload).ok()) {
            Some(frame) => frame.message,
            // A PUBREL to re-send needs no message.
            None if inflight.released => super::qos2::released_placeholder(),
            // Gone from the log (older than maxOfflineAge): nothing to re-send.
            None => continue,
        };
        let queue_seq = crate::broker::durability::Durability::next_seq(&super::ClusterEngine {
            inner: inner.clone(),
        });
        let (qos, stage) = match (inflight.qos, inflight.released) {
            (0, _) => continue,
            (1, _) => (QoS::AtLeastOnce, InflightStage::AwaitingPubAck),
            (_, false) => (QoS::ExactlyOnce, InflightStage::AwaitingPubRec),
            (_, true) => (QoS::ExactlyOnce, InflightStage::AwaitingPubComp),
        };
        let entry = InflightEntry {
            packet_id: inflight.packet_id,
            message: crate::broker::message::Message {
                retain: false,
                ..message
            },
            qos,
            retain: false,
            subscription_id: inflight.subscription_id.and_then(std::num::NonZeroU32::new),
            stage,
            seq: Some(queue_seq),
            shared_group: None,
        };
        if state.inflight_mut().restore(entry) {
            tracked.restore_entry(
                queue_seq,
                Entry {
                    shard: inflight.shard,
                    seq: inflight.seq,
                    qos: inflight.qos,
                    subscription_id: inflight.subscription_id,
                    packet_id: Some(inflight.packet_id),
                    released: inflight.released,
                },
            );
        }
    }
    {
        let mut tracker = inner.tracker.lock();
        // A kick that came while the messages were read back found no copy here and let the
        // session go at once (`hand_over`): another node may hold it already, from the record
        // this claim wrote (which lists every entry). Neither tracked nor served here: the
        // CONNECT is refused and its client connects again. (Checked under the tracker's
        // lock, which `hand_over` takes after `let_go`: a kick after this finds the whole
        // copy and hands it over with every entry.)
        if inner.claims.lock().new_session(client_id) == NewSession::LetGo {
            return Err(unavailable(format!(
                "session {client_id} was taken by another node while it was restored here"
            )));
        }
        tracker.sessions.insert(client_id.clone(), tracked);
    }
    Ok(SessionImage { state, offline_for })
}

/// The message at `seq` of shard `shard`, for an in-flight entry of a restored session: from
/// any replica first, then from the stream's leader, which alone says for sure that it is
/// gone (`None`: older than `maxOfflineAge`). A replica behind the others answers "not
/// found" for a message stored a moment ago; taken for gone, the entry was dropped and its
/// message delivered again as new, under another packet id, while the client still held the
/// first exchange open (a subscriber moving between nodes every few hundred milliseconds).
async fn in_flight_message(
    inner: &Arc<Inner>,
    shard: usize,
    seq: u64,
) -> Result<Option<async_nats::jetstream::message::StreamMessage>, DurabilityError> {
    let stream = inner
        .js
        .get_stream_no_info(shard_stream(shard))
        .await
        .map_err(unavailable)?;
    if let Ok(Ok(message)) = tokio::time::timeout(inner.store_timeout, stream.direct_get(seq)).await
    {
        return Ok(Some(message));
    }
    match tokio::time::timeout(inner.store_timeout, stream.get_raw_message(seq)).await {
        Ok(Ok(message)) => Ok(Some(message)),
        Ok(Err(e))
            if matches!(
                e.kind(),
                async_nats::jetstream::stream::LastRawMessageErrorKind::NoMessageFound
            ) =>
        {
            Ok(None)
        }
        Ok(Err(e)) => Err(unavailable(format!(
            "reading in-flight message {seq} of shard {shard}: {e}"
        ))),
        Err(_) => Err(unavailable(format!(
            "no answer reading in-flight message {seq} of shard {shard}"
        ))),
    }
}

/// The header of a kick that only takes an idle session (see [`ClaimRequest::take_over`]).
const KICK_IF_IDLE: &str = "Fmq-Kick-If-Idle";
/// The answer of an owner whose client holds the session (a kick with [`KICK_IF_IDLE`]).
const IN_USE: &[u8] = b"in-use";

/// How an owner answered a kick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KickAnswer {
    HandedOver,
    /// A kick with [`KICK_IF_IDLE`]: its client holds the session there, which it keeps.
    InUse,
    /// No answer within [`KICK_TIMEOUT`] (a dead or paused owner), or no responder.
    Silent,
}

/// Ask `owner` to hand `client_id`'s session over (close its connection, write its last
/// record) and wait for its answer, at most [`KICK_TIMEOUT`]: a dead or paused owner does not
/// answer, and its last record is the truth (its later writes are fenced by the epoch).
/// `if_idle`: only a session no client holds there is handed over.
async fn kick_owner(inner: &Inner, owner: &str, client_id: &str, if_idle: bool) -> KickAnswer {
    let payload = client_id.to_owned().into();
    let request = async {
        if if_idle {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(KICK_IF_IDLE, "1");
            inner
                .client
                .request_with_headers(kick_subject(owner), headers, payload)
                .await
        } else {
            inner.client.request(kick_subject(owner), payload).await
        }
    };
    match tokio::time::timeout(KICK_TIMEOUT, request).await {
        Ok(Ok(answer)) if &answer.payload[..] == IN_USE => KickAnswer::InUse,
        Ok(Ok(_)) => KickAnswer::HandedOver,
        Ok(Err(e)) => {
            tracing::debug!(owner, client_id, "kick: {e}");
            KickAnswer::Silent
        }
        Err(_) => {
            tracing::info!(
                owner,
                client_id,
                "node did not hand the session over within {} ms",
                KICK_TIMEOUT.as_millis()
            );
            KickAnswer::Silent
        }
    }
}

/// Whether a client of this node holds `client_id`'s session, or is claiming it now (between
/// its claim and its attach): a kick with [`KICK_IF_IDLE`] leaves it here.
fn in_use_here(inner: &Inner, client_id: &str) -> bool {
    inner.core().is_some_and(|core| {
        core.registry
            .by_client_id(client_id)
            .is_some_and(|s| s.is_attached())
            || core.is_claiming(client_id)
    })
}

/// Tell every node that `client_id` connected here, with when its claim started: an older
/// connection with that client id anywhere closes (see `claims.rs`).
pub fn announce(inner: &Arc<Inner>, client_id: &Arc<str>) {
    let Some((claimed_us, instance)) = inner.claims.lock().local(client_id) else {
        return;
    };
    let mut payload = instance.to_be_bytes().to_vec();
    payload.extend_from_slice(&claimed_us.to_be_bytes());
    payload.extend_from_slice(client_id.as_bytes());
    let subject = format!("fmq.kick.{}", client_key(client_id));
    let node = inner.clone();
    tokio::spawn(async move {
        let _ = node.client.publish(subject, payload.into()).await;
    });
}

/// Answer kicks and flush acknowledgement progress.
pub async fn start(inner: &Arc<Inner>) -> anyhow::Result<()> {
    let mut direct = inner
        .client
        .subscribe(kick_subject(&inner.node_id))
        .await
        .map_err(|e| anyhow::anyhow!("cluster: kick subscription: {e}"))?;
    let mut broadcast = inner
        .client
        .subscribe("fmq.kick.>")
        .await
        .map_err(|e| anyhow::anyhow!("cluster: kick subscription: {e}"))?;
    let node = inner.clone();
    tokio::spawn(async move {
        while let Some(message) = direct.next().await {
            let node = node.clone();
            tokio::spawn(async move {
                let client_id: Arc<str> = Arc::from(String::from_utf8_lossy(&message.payload));
                let if_idle = message
                    .headers
                    .as_ref()
                    .is_some_and(|h| h.get(KICK_IF_IDLE).is_some());
                let answer: &'static [u8] = if if_idle && in_use_here(&node, &client_id) {
                    IN_USE
                } else {
                    hand_over(&node, &client_id).await;
                    b"ok"
                };
                if let Some(reply) = message.reply {
                    let _ = node
                        .client
                        .publish(reply, bytes::Bytes::from_static(answer))
                        .await;
                }
            });
        }
    });
    let node = inner.clone();
    tokio::spawn(async move {
        while let Some(message) = broadcast.next().await {
            let payload = &message.payload;
            if payload.len() < 16 {
                continue;
            }
            let (instance, rest) = payload.split_at(8);
            let (claimed_us, client_id) = rest.split_at(8);
            let instance = u64::from_be_bytes(instance.try_into().unwrap_or_default());
            let claimed_us = u64::from_be_bytes(claimed_us.try_into().unwrap_or_default());
            if instance == node.instance {
                continue;
            }
            let client_id: Arc<str> = Arc::from(String::from_utf8_lossy(client_id));
            let older_here = node
                .claims
                .lock()
                .announced(&client_id, (claimed_us, instance));
            let epoch = node
                .tracker
                .lock()
                .sessions
                .get(&client_id)
                .map(|t| t.epoch);
            match epoch {
                // Persistent: the owner's kick hands it over with its record; a node that
                // missed that kick (paused, cut off) finds out here that it lost the session.
                Some(epoch) => {
                    let node = node.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(KICK_TIMEOUT + Duration::from_millis(500)).await;
                        verify(&node, &client_id, epoch, VERIFY_QUICKLY).await;
                    });
                }
                None if older_here => {
                    if let Some(core) = node.core() {
                        core.hand_over(&client_id);
                    }
                }
                None => {}
            }
        }
    });
    let node = inner.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(FLUSH_INTERVAL);
        loop {
            tick.tick().await;
            let dirty: Vec<Arc<str>> = node
                .tracker
                .lock()
                .sessions
                .iter()
                .filter(|(_, t)| t.dirty)
                .map(|(c, _)| c.clone())
                .collect();
            futures_util::stream::iter(dirty)
                .for_each_concurrent(64, |client_id| {
                    let node = node.clone();
                    async move {
                        let _ = write_record(&node, &client_id).await;
                    }
                })
                .await;
        }
    });
    Ok(())
}

/// Another node takes `client_id`'s session: close it here, write its last record, forget it.
async fn hand_over(inner: &Arc<Inner>, client_id: &Arc<str>) {
    inner.claims.lock().let_go(client_id);
    inner.q2.forget(client_id);
    // A kick the claiming node sent again (its first answer was slow) finds the session
    // handed over already: written again, logged once.
    let mut again = false;
    let tracked = {
        let mut tracker = inner.tracker.lock();
        match tracker.sessions.get_mut(client_id) {
            Some(t) => {
                again = t.handed_over;
                // Before the session leaves the registry: what the readers route from now on
                // no longer reaches it, so its floors must not follow them.
                t.freeze(&inner.routed());
                t.data_changes += 1;
                if t.connected {
                    t.connected = false;
                    t.offline_since_ms = now_ms();
                }
                // A will with a Will Delay (pending, or its connection closing now) goes with
                // the session, for the taking node to cancel (a resume, MQTT 5 3.1.3-9) or
                // publish (its session ends); one without is published by this node's
                // connection as it closes (taken over).
                if let Some(will) = t.data.will.take() {
                    t.data.will =
                        (will.deadline_ms.is_some() || will.delay_secs() > 0).then_some(will);
                }
                Some(t.epoch)
            }
            None => None,
        }
    };
    if again {
        tracing::debug!(client_id = %client_id, epoch = ?tracked, "asked again for a session handed over");
    } else {
        tracing::info!(
            client_id = %client_id,
            epoch = ?tracked,
            "another node's claim asked for the session: handed over"
        );
    }
    if let Some(core) = inner.core() {
        core.hand_over(client_id);
    }
    if let Some(epoch) = tracked {
        let _ = write_record(inner, client_id).await;
        // Only the copy handed over: a claim on this node may have restored the session
        // meanwhile (a newer copy, not handed over).
        let mut tracker = inner.tracker.lock();
        if tracker
            .sessions
            .get(client_id)
            .is_some_and(|t| t.handed_over && t.epoch == epoch)
        {
            tracker.sessions.remove(client_id);
        }
    }
}

/// Graceful shutdown: every local session's record written as offline, bounded.
pub fn flush_all_blocking(inner: &Arc<Inner>) {
    let client_ids: Vec<Arc<str>> = {
        let mut tracker = inner.tracker.lock();
        let now = now_ms();
        for t in tracker.sessions.values_mut() {
            if t.connected {
                t.connected = false;
                t.offline_since_ms = now;
                t.data_changes += 1;
            }
            t.dirty = true;
        }
        tracker.sessions.keys().cloned().collect()
    };
    // What the drain's deadline leaves (nothing when NATS was out of reach).
    let wait = inner.drain.store_wait(Duration::from_secs(5));
    let inner = inner.clone();
    let flush = async move {
        super::wills::finish_deletes(&inner).await;
        futures_util::stream::iter(client_ids)
            .for_each_concurrent(64, |client_id| {
                let inner = inner.clone();
                async move {
                    let _ = write_record(&inner, &client_id).await;
                }
            })
            .await;
    };
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return;
    };
    if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread {
        tokio::task::block_in_place(|| {
            handle.block_on(async {
                if tokio::time::timeout(wait, flush).await.is_err() {
                    tracing::warn!(
                        "cluster: session records not all written at shutdown; their \
                         sessions resume from the last written record"
                    );
                }
            })
        });
    } else {
        tracing::warn!(
            "cluster: session records not flushed at shutdown (single-threaded runtime)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::{fences, save_route, NewSession, SaveRoute, SessionData, Tracked};
    use crate::broker::session::SessionState;

    fn data() -> SessionData {
        SessionData::of(&SessionState::new("c", true))
    }

    #[test]
    fn a_copy_handed_over_during_a_connect_is_neither_made_new_nor_written() {
        let mut t = Tracked::new(data(), 2, &[0, 0]);
        // Another node's kick after this node's claim confirmed the session.
        t.freeze(&[5, 5]);
        let allowed = NewSession::Allowed;
        assert!(matches!(
            save_route(Some(&t), &data(), true, allowed),
            SaveRoute::Refuse(_)
        ));
        assert!(matches!(
            save_route(Some(&t), &data(), false, allowed),
            SaveRoute::Skip(_)
        ));
        // The copy this node still serves takes the change.
        let served = Tracked::new(data(), 2, &[0, 0]);
        assert_eq!(
            save_route(Some(&served), &data(), true, allowed),
            SaveRoute::Update
        );
    }

    #[test]
    fn an_untracked_session_starts_only_where_its_latest_claim_found_none() {
        assert_eq!(
            save_route(None, &data(), true, NewSession::Allowed),
            SaveRoute::Start
        );
        for verdict in [NewSession::LetGo, NewSession::NotClaimedNew] {
            assert!(matches!(
                save_route(None, &data(), true, verdict),
                SaveRoute::Refuse(_)
            ));
        }
        assert!(matches!(
            save_route(None, &data(), false, NewSession::Allowed),
            SaveRoute::Skip(_)
        ));
    }

    #[test]
    fn a_failed_write_fences_only_the_copy_it_was_written_for() {
        // Another node took the session: the copy written at epoch 3 goes.
        assert!(fences("n1", 3, Some(3), Some(("n2", 4))));
        // The record is gone (ended elsewhere): the copy goes.
        assert!(fences("n1", 3, Some(3), None));
        // A newer claim of the same client on this node (epoch 4) moved the record: the
        // failed write was of the old copy; the new one stays.
        assert!(!fences("n1", 3, Some(4), Some(("n1", 4))));
        // ... even when yet another node owns the record now: that is for the new copy's own
        // writes to find out.
        assert!(!fences("n1", 3, Some(4), Some(("n2", 5))));
        // The record is this node's at the written epoch: nothing to fence.
        assert!(!fences("n1", 3, Some(3), Some(("n1", 3))));
        // Nothing tracked any more: nothing to keep.
        assert!(fences("n1", 3, None, Some(("n2", 4))));
    }
}
