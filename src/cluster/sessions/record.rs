//! Writing a session's record: compare-and-set on the revision this node last wrote (a node
//! that lost the session can never write it again), fencing a copy another node took, and
//! checking the sessions this node holds against their records.

use super::*;

/// Write `client_id`'s record as the tracker has it, with compare-and-set on the revision
/// this node last wrote. A lost compare-and-set means another node took the session: the
/// local copy is dropped (fenced).
pub async fn write_record(inner: &Arc<Inner>, client_id: &Arc<str>) -> Result<(), DurabilityError> {
    write_record_covering(inner, client_id, None).await
}

/// [`write_record`] for a save that made change `covering` of the copy's data (see
/// `Tracked::data_changes`): nothing is written when a write that took the record's lock
/// first made it durable already (saves queued behind a slow write make one write).
pub(in crate::cluster) async fn write_record_covering(
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
pub(in crate::cluster) enum Retry {
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

pub(in crate::cluster) async fn write_record_once(
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
            crate::cluster::confirmed::count(inner, |c| c.cluster_records_unchanged());
            return Ok(());
        }
        t.dirty = false;
        let routed = inner.routed();
        t.prune_done(&routed);
        let mut record = t.record(&inner.node_id, &routed);
        record.owner_instance = inner.instance;
        (record, t.revision, t.qos2_changes, t.data_changes)
    };
    crate::cluster::confirmed::count(inner, |c| c.cluster_record_writes());
    let sent = crate::cluster::confirmed::Sent::now(inner);
    let key = client_key(client_id);
    let bytes = record.encode();
    let written = if revision == 0 {
        tokio::time::timeout(inner.store_timeout, inner.sessions_kv.create(&key, bytes))
            .await
            .map(|r| r.map_err(|e| (crate::cluster::lost_race::create(&e), e.to_string())))
    } else {
        tokio::time::timeout(
            inner.store_timeout,
            inner.sessions_kv.update(&key, bytes, revision),
        )
        .await
        .map(|r| r.map_err(|e| (crate::cluster::lost_race::update(&e), e.to_string())))
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
pub(in crate::cluster) async fn adopt_or_fence(
    inner: &Arc<Inner>,
    client_id: &Arc<str>,
    epoch: u64,
) -> Result<(), Retry> {
    let key = client_key(client_id);
    crate::cluster::confirmed::count(inner, |c| c.cluster_record_reads());
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

pub(in crate::cluster) fn mark_dirty(inner: &Inner, client_id: &str) {
    if let Some(t) = inner.tracker.lock().sessions.get_mut(client_id) {
        t.dirty = true;
    }
}

/// What [`fenced`] found.
pub(in crate::cluster) enum Fence {
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
pub(in crate::cluster) async fn fenced(
    inner: &Arc<Inner>,
    client_id: &Arc<str>,
    epoch: u64,
) -> Fence {
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
    let dropped = {
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
        tracker.sessions.remove(client_id)
    };
    // A copy already gone was let go by what removed it (a kick's hand-over, an earlier
    // fence) or ended; a claim under way now is newer and restores its own.
    if let Some(copy) = &dropped {
        inner
            .claims
            .lock()
            .let_go_unless_newer_here(client_id, copy.claim);
    }
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
pub(in crate::cluster) fn fences(
    node: &str,
    epoch: u64,
    tracked: Option<u64>,
    record: Option<(&str, u64)>,
) -> bool {
    if record.is_some_and(|(owner, e)| owner == node && e == epoch) {
        return false;
    }
    tracked.is_none_or(|t| t == epoch)
}

/// How long [`verify`] waits for one read of a session record (a NATS request's own default
/// is 10 s), and for all of them when the node comes back from a lost quorum: it takes
/// persistent work only after its check, so that check is short.
pub(in crate::cluster) const VERIFY_READ_TIMEOUT: Duration = Duration::from_millis(1_500);
pub const VERIFY_QUICKLY: Duration = Duration::from_secs(3);

/// Whether this node still owns `client_id`'s session at `epoch`; if not, or if its record
/// cannot be read within `patience`, drop it here (its client reconnects and claims it again,
/// from the record: nothing is lost, what was not yet written as progress is delivered again).
pub(in crate::cluster) async fn verify(
    inner: &Arc<Inner>,
    client_id: &Arc<str>,
    epoch: u64,
    patience: Duration,
) {
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
        crate::cluster::confirmed::count(inner, |c| c.cluster_record_reads());
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
            inner.stalls.verified(&client_id);
        })
        .await;
}
