//! Checking and applying one batch of [`Op`]s inside a group-commit transaction, and the
//! reference counting that frees message bodies when their last reference goes.

use std::collections::{HashMap, HashSet};

use ahash::{AHashMap, AHashSet};
use std::sync::Arc;

use bytes::Bytes;
use redb::{ReadableTable, ReadableTableMetadata};

use super::codec::{
    self, encode_message, encode_queue_entry, encode_queue_entry_with_body,
    encode_queue_entry_with_message, encode_session,
};
use super::tables::{storage, Tables};
use super::types::{MessageId, Op, OwnedQueue, QueueState};
use super::StoreError;

/// Pending reference-count changes of one group, applied (and bodies freed) at its end: a
/// message fanned out to N sessions costs one refcount write, not N.
///
/// Entries that carry their own body ([`Op::PutQueued`]) hold no reference: their removal
/// frees the body with them, counted in `freed_with_entries`.
#[derive(Default)]
pub(crate) struct RefDeltas {
    counts: AHashMap<MessageId, i64>,
    freed_with_entries: u64,
}

impl RefDeltas {
    fn add(&mut self, id: MessageId, delta: i64) {
        *self.counts.entry(id).or_default() += delta;
    }
}

/// What one group knows without asking its tables, so that the common path of a durable
/// publish (a new body, its queue entries, their removal once acknowledged) takes the fewest
/// B-tree operations:
///
/// - ids at or above `fresh_from` (the committed `NEXT_ID_KEY`, which the store raises above
///   every id its tables hold when it opens) were never committed: a new body's id needs no
///   lookup to prove it unused, and its reference count none to read;
/// - which sessions exist, once looked up (kept true by the group's own puts and deletes);
/// - what becomes of each session queue entry the group changes ([`EntryChange`]), applied
///   at the group's end ([`collect`]): a state change of an entry the group also removes (a
///   QoS 1 delivery's packet id, written when the PUBLISH goes out, then its PUBACK) is never
///   written, and the removals are taken out together, consecutive entries in one pass over
///   their leaf rather than one B-tree removal each (a subscriber acknowledges its queue's
///   head, in order).
pub(crate) struct Group {
    fresh_from: u64,
    put: AHashSet<MessageId>,
    /// Seeds the per-batch sets of [`validate`] (a fresh seed per batch costs more than
    /// the batch's lookups).
    hasher: ahash::RandomState,
    sessions: AHashMap<Arc<str>, bool>,
    /// Client id -> seq -> the last change the group's applied batches made to that entry.
    entries: AHashMap<Arc<str>, AHashMap<u64, EntryChange>>,
}

/// What a group does to an existing session queue entry, kept until its end.
#[derive(Clone, Copy)]
enum EntryChange {
    State(QueueState),
    /// Removed; a later state change finds no entry, as it would in the table.
    Removed,
}

impl Group {
    pub(crate) fn new(fresh_from: u64) -> Group {
        Group {
            fresh_from,
            put: AHashSet::new(),
            hasher: ahash::RandomState::new(),
            sessions: AHashMap::new(),
            entries: AHashMap::new(),
        }
    }

    fn change_entry(&mut self, client_id: &Arc<str>, seq: u64, change: EntryChange) {
        let changes = self.entries.entry(client_id.clone()).or_default();
        match (changes.get(&seq), change) {
            (Some(EntryChange::Removed), EntryChange::State(_)) => {}
            _ => {
                changes.insert(seq, change);
            }
        }
    }

    /// Whether message id `id` has a body now, in this group's transaction.
    fn has_message(&self, t: &Tables<'_>, id: MessageId) -> Result<bool, StoreError> {
        if self.put.contains(&id) {
            return Ok(true);
        }
        if id >= self.fresh_from {
            return Ok(false);
        }
        t.messages.get(id).map(|v| v.is_some()).map_err(storage)
    }

    fn has_session(&mut self, t: &Tables<'_>, client_id: &Arc<str>) -> Result<bool, StoreError> {
        if let Some(exists) = self.sessions.get(client_id) {
            return Ok(*exists);
        }
        let exists = t.sessions.get(&**client_id).map_err(storage)?.is_some();
        self.sessions.insert(client_id.clone(), exists);
        Ok(exists)
    }
}

/// What a group's garbage collection did.
#[derive(Debug, Default)]
pub(crate) struct Collected {
    pub freed_bytes: u64,
    /// References counted below zero: a bug or damage; logged, the body is freed.
    pub negative_refcounts: u64,
}

/// The bytes of new message bodies in `ops`: what the storeUsage limit is checked against.
pub(crate) fn incoming_message_bytes(ops: &[Op]) -> u64 {
    ops.iter()
        .map(|op| match op {
            Op::PutMessage { message, .. } | Op::PutQueued { message, .. } => {
                codec::encoded_message_len(message)
            }
            _ => 0,
        })
        .sum()
}

/// The highest message id or queue seq `ops` use.
pub(crate) fn max_id(ops: &[Op]) -> Option<u64> {
    ops.iter()
        .filter_map(|op| match op {
            Op::PutMessage { id, .. } => Some(*id),
            Op::PutQueued { seq, entry, .. } => Some((*seq).max(entry.message_id)),
            Op::Enqueue { seq, .. } | Op::EnqueueOwned { seq, .. } => Some(*seq),
            _ => None,
        })
        .max()
}

/// Refuses a batch that refers to a session or message that does not exist (at this point of
/// the group, including the batch's own earlier ops), or that reuses a message id. Runs before
/// the batch changes anything, so a refused batch leaves no trace.
pub(crate) fn validate(t: &Tables<'_>, ops: &[Op], group: &mut Group) -> Result<(), StoreError> {
    let mut put_here = HashSet::with_hasher(group.hasher.clone());
    // Ids of bodies kept in their entries: in use, but not bodies other ops may refer to.
    let mut carried_here = HashSet::with_hasher(group.hasher.clone());
    let mut sessions_here: HashMap<&str, bool, _> = HashMap::with_hasher(group.hasher.clone());
    let mut queues_here: HashMap<&OwnedQueue, bool, _> = HashMap::with_hasher(group.hasher.clone());
    let message_exists = |group: &Group, put_here: &HashSet<MessageId, _>, id: MessageId| {
        if put_here.contains(&id) {
            return Ok(true);
        }
        group.has_message(t, id)
    };
    for op in ops {
        match op {
            Op::PutMessage { id, .. } => {
                if carried_here.contains(id) || message_exists(group, &put_here, *id)? {
                    return Err(StoreError::InvalidOp(format!(
                        "message id {id} is already in use (allocate ids with Store::allocate_id)"
                    )));
                }
                put_here.insert(*id);
            }
            Op::PutQueued {
                client_id, entry, ..
            } => {
                let id = entry.message_id;
                if carried_here.contains(&id) || message_exists(group, &put_here, id)? {
                    return Err(StoreError::InvalidOp(format!(
                        "message id {id} is already in use (allocate ids with Store::allocate_id)"
                    )));
                }
                require_session(t, group, &sessions_here, client_id)?;
                carried_here.insert(id);
            }
            Op::SetRetained { topic, message_id } => {
                if !message_exists(group, &put_here, *message_id)? {
                    return Err(StoreError::InvalidOp(format!(
                        "retained message for {topic:?} refers to unknown message {message_id}"
                    )));
                }
            }
            Op::Enqueue {
                client_id, entry, ..
            } => {
                require_session(t, group, &sessions_here, client_id)?;
                if !message_exists(group, &put_here, entry.message_id)? {
                    return Err(StoreError::InvalidOp(format!(
                        "enqueue for {client_id:?} refers to unknown message {}",
                        entry.message_id
                    )));
                }
            }
            Op::PutSession { client_id, .. } => {
                sessions_here.insert(client_id, true);
            }
            Op::DeleteSession { client_id } => {
                sessions_here.insert(client_id, false);
            }
            Op::EnqueueOwned { queue, entry, .. } => {
                let queue_exists = match queues_here.get(queue) {
                    Some(exists) => *exists,
                    None => t
                        .owned_queues
                        .get((queue.kind.code(), &*queue.name))
                        .map_err(storage)?
                        .is_some(),
                };
                if !queue_exists {
                    return Err(StoreError::InvalidOp(format!(
                        "enqueue for undeclared {:?} {:?} (DeclareQueue first)",
                        queue.kind, queue.name
                    )));
                }
                if !message_exists(group, &put_here, entry.message_id)? {
                    return Err(StoreError::InvalidOp(format!(
                        "enqueue for {:?} {:?} refers to unknown message {}",
                        queue.kind, queue.name, entry.message_id
                    )));
                }
            }
            Op::DeclareQueue { queue } => {
                queues_here.insert(queue, true);
            }
            Op::DeleteQueue { queue } => {
                queues_here.insert(queue, false);
            }
            Op::ClearRetained { .. }
            | Op::SetOwnedQueueState { .. }
            | Op::DequeueOwned { .. }
            | Op::SetQueueState { .. }
            | Op::Dequeue { .. }
            | Op::AddInboundQos2 { .. }
            | Op::RemoveInboundQos2 { .. }
            | Op::PutDestination { .. } => {}
        }
    }
    Ok(())
}

/// Refuses an enqueue for a session that does not exist at this point of the group
/// (`sessions_here`: what the batch's earlier ops did).
fn require_session<S: std::hash::BuildHasher>(
    t: &Tables<'_>,
    group: &mut Group,
    sessions_here: &HashMap<&str, bool, S>,
    client_id: &Arc<str>,
) -> Result<(), StoreError> {
    let exists = match sessions_here.get(&**client_id) {
        Some(exists) => *exists,
        None => group.has_session(t, client_id)?,
    };
    if exists {
        Ok(())
    } else {
        Err(StoreError::InvalidOp(format!(
            "enqueue for unknown session {client_id:?} (PutSession first)"
        )))
    }
}

/// Applies a validated batch (its session queue entries' state changes and removals at the
/// group's end, see [`Group`]). Returns the bytes of message bodies it stored. An error here
/// is the engine's (I/O): the caller abandons the whole group.
pub(crate) fn apply(
    t: &mut Tables<'_>,
    ops: &[Op],
    group: &mut Group,
    deltas: &mut RefDeltas,
    damaged: &mut u64,
) -> Result<u64, StoreError> {
    let mut stored_bytes = 0u64;
    for op in ops {
        match op {
            Op::PutMessage { id, message } => {
                let encoded = encode_message(message);
                stored_bytes += encoded.len() as u64;
                t.messages
                    .insert(*id, encoded.as_slice())
                    .map_err(storage)?;
                group.put.insert(*id);
                // Tracked so that an unreferenced body is collected at the end of the group.
                deltas.add(*id, 0);
            }
            Op::SetRetained { topic, message_id } => {
                let previous = t
                    .retained
                    .insert(&**topic, *message_id)
                    .map_err(storage)?
                    .map(|old| old.value());
                if let Some(previous) = previous {
                    deltas.add(previous, -1);
                }
                deltas.add(*message_id, 1);
            }
            Op::ClearRetained { topic } => {
                let previous = t
                    .retained
                    .remove(&**topic)
                    .map_err(storage)?
                    .map(|old| old.value());
                if let Some(previous) = previous {
                    deltas.add(previous, -1);
                }
            }
            Op::PutSession { client_id, session } => {
                t.sessions
                    .insert(&**client_id, encode_session(session).as_slice())
                    .map_err(storage)?;
                group.sessions.insert(client_id.clone(), true);
            }
            Op::DeleteSession { client_id } => {
                // Every entry goes, changed by the group or not.
                group.entries.remove(client_id);
                delete_session(t, client_id, deltas, damaged)?;
                group.sessions.insert(client_id.clone(), false);
            }
            Op::Enqueue {
                client_id,
                seq,
                entry,
            } => {
                let record = encode_queue_entry(entry);
                put_entry(t, group, deltas, damaged, client_id, *seq, &record)?;
                deltas.add(entry.message_id, 1);
            }
            Op::PutQueued {
                client_id,
                seq,
                entry,
                message,
            } => {
                stored_bytes += codec::encoded_message_len(message);
                let record = encode_queue_entry_with_message(entry, message);
                put_entry(t, group, deltas, damaged, client_id, *seq, &record)?;
            }
            Op::SetQueueState {
                client_id,
                seq,
                state,
            } => group.change_entry(client_id, *seq, EntryChange::State(*state)),
            Op::Dequeue { client_id, seq } => {
                group.change_entry(client_id, *seq, EntryChange::Removed)
            }
            Op::DeclareQueue { queue } => {
                t.owned_queues
                    .insert((queue.kind.code(), &*queue.name), ())
                    .map_err(storage)?;
            }
            Op::DeleteQueue { queue } => delete_queue(t, queue, deltas, damaged)?,
            Op::EnqueueOwned { queue, seq, entry } => {
                let previous = t
                    .owned_entries
                    .insert(
                        (queue.kind.code(), &*queue.name, *seq),
                        encode_queue_entry(entry).as_slice(),
                    )
                    .map_err(storage)?
                    .map(|old| Bytes::copy_from_slice(old.value()));
                if let Some(previous) = previous {
                    unreference_entry(&previous, deltas, damaged);
                }
                deltas.add(entry.message_id, 1);
            }
            Op::SetOwnedQueueState { queue, seq, state } => {
                set_owned_queue_state(t, queue, *seq, *state, damaged)?
            }
            Op::DequeueOwned { queue, seq } => {
                let removed = t
                    .owned_entries
                    .remove((queue.kind.code(), &*queue.name, *seq))
                    .map_err(storage)?
                    .map(|old| Bytes::copy_from_slice(old.value()));
                if let Some(removed) = removed {
                    unreference_entry(&removed, deltas, damaged);
                }
            }
            Op::AddInboundQos2 {
                client_id,
                packet_id,
            } => {
                t.inbound_qos2
                    .insert((&**client_id, *packet_id), ())
                    .map_err(storage)?;
            }
            Op::RemoveInboundQos2 {
                client_id,
                packet_id,
            } => {
                t.inbound_qos2
                    .remove((&**client_id, *packet_id))
                    .map_err(storage)?;
            }
            Op::PutDestination { topic } => {
                t.destinations.insert(&**topic, ()).map_err(storage)?;
            }
        }
    }
    Ok(stored_bytes)
}

/// Writes session queue entry `seq` of `client_id` (encoded `record`), dropping the
/// reference of the entry it replaces.
fn put_entry(
    t: &mut Tables<'_>,
    group: &mut Group,
    deltas: &mut RefDeltas,
    damaged: &mut u64,
    client_id: &Arc<str>,
    seq: u64,
    record: &[u8],
) -> Result<(), StoreError> {
    // A pending change was the replaced entry's; the insert below drops that entry's
    // reference as a removal would.
    if let Some(changes) = group.entries.get_mut(client_id) {
        changes.remove(&seq);
    }
    let previous = t
        .queues
        .insert((&**client_id, seq), record)
        .map_err(storage)?
        .map(|old| Bytes::copy_from_slice(old.value()));
    if let Some(previous) = previous {
        unreference_entry(&previous, deltas, damaged);
    }
    Ok(())
}

/// The most keys between two removed ones that a single pass over their range steps over;
/// removals farther apart are taken in passes of their own.
const MAX_REMOVAL_GAP: u64 = 64;

/// `sorted` (ascending, distinct) cut into inclusive ranges whose neighbours lie at most
/// [`MAX_REMOVAL_GAP`] apart.
fn removal_runs(sorted: &[u64]) -> Vec<(u64, u64)> {
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for &key in sorted {
        match runs.last_mut() {
            Some((_, last)) if key - *last <= MAX_REMOVAL_GAP => *last = key,
            _ => runs.push((key, key)),
        }
    }
    runs
}

/// Applies the group's pending session queue entry changes: each state change, then the
/// removals, a pass per run of nearby seqs, dropping the references they held.
fn change_entries(
    t: &mut Tables<'_>,
    group: &mut Group,
    deltas: &mut RefDeltas,
    damaged: &mut u64,
) -> Result<(), StoreError> {
    for (client_id, changes) in group.entries.drain() {
        let mut removed = Vec::new();
        for (seq, change) in changes {
            match change {
                EntryChange::State(state) => set_queue_state(t, &client_id, seq, state, damaged)?,
                EntryChange::Removed => removed.push(seq),
            }
        }
        removed.sort_unstable();
        let client_id: &str = &client_id;
        for (first, last) in removal_runs(&removed) {
            let extracted = t
                .queues
                .extract_from_if((client_id, first)..=(client_id, last), |key, _| {
                    removed.binary_search(&key.1).is_ok()
                })
                .map_err(storage)?;
            unreference_extracted(extracted, deltas, damaged)?;
        }
    }
    Ok(())
}

/// Drops the references of the queue entries `extracted` takes out of their table (an
/// `extract_from_if` over encoded entries: each is removed as it is read).
fn unreference_extracted<'a, K: redb::Key + 'static>(
    extracted: impl Iterator<
        Item = redb::Result<(
            redb::AccessGuard<'a, K>,
            redb::AccessGuard<'a, &'static [u8]>,
        )>,
    >,
    deltas: &mut RefDeltas,
    damaged: &mut u64,
) -> Result<(), StoreError> {
    for item in extracted {
        let (_, entry) = item.map_err(storage)?;
        unreference_entry(&Bytes::copy_from_slice(entry.value()), deltas, damaged);
    }
    Ok(())
}

/// Drops the reference a removed queue entry held, or counts the body it carried as freed.
/// An undecodable entry (damage) cannot say which body it referenced: it is counted, and the
/// next recovery's reference recount frees the body.
fn unreference_entry(encoded: &Bytes, deltas: &mut RefDeltas, damaged: &mut u64) {
    match codec::decode_queue_record(encoded) {
        Ok(codec::QueueRecord {
            body: Some(body), ..
        }) => deltas.freed_with_entries += body.len() as u64,
        Ok(record) => deltas.add(record.entry.message_id, -1),
        Err(e) => {
            *damaged += 1;
            tracing::warn!(error = %e, "removed a damaged queue entry");
        }
    }
}

fn set_queue_state(
    t: &mut Tables<'_>,
    client_id: &str,
    seq: u64,
    state: QueueState,
    damaged: &mut u64,
) -> Result<(), StoreError> {
    let current = t
        .queues
        .get((client_id, seq))
        .map_err(storage)?
        .map(|v| Bytes::copy_from_slice(v.value()));
    if let Some(updated) = restated(current, state, damaged, client_id, seq) {
        t.queues
            .insert((client_id, seq), updated.as_slice())
            .map_err(storage)?;
    }
    Ok(())
}

/// The encoded entry `current` moved to `state`; `None` when there is no entry (gone: nothing
/// to do) or it cannot be decoded (counted in `damaged` and logged: `owner` and `seq` name it).
fn restated(
    current: Option<Bytes>,
    state: QueueState,
    damaged: &mut u64,
    owner: &str,
    seq: u64,
) -> Option<Vec<u8>> {
    match codec::decode_queue_record(&current?) {
        Ok(mut record) => {
            record.entry.state = state;
            Some(match &record.body {
                Some(body) => encode_queue_entry_with_body(&record.entry, body),
                None => encode_queue_entry(&record.entry),
            })
        }
        Err(e) => {
            *damaged += 1;
            tracing::warn!(owner, seq, error = %e, "cannot update a damaged queue entry");
            None
        }
    }
}

fn delete_session(
    t: &mut Tables<'_>,
    client_id: &Arc<str>,
    deltas: &mut RefDeltas,
    damaged: &mut u64,
) -> Result<(), StoreError> {
    let client_id: &str = client_id;
    t.sessions.remove(client_id).map_err(storage)?;
    let removed = t
        .queues
        .extract_from_if((client_id, 0u64)..=(client_id, u64::MAX), |_, _| true)
        .map_err(storage)?;
    unreference_extracted(removed, deltas, damaged)?;
    t.inbound_qos2
        .retain_in((client_id, 0u16)..=(client_id, u16::MAX), |_, _| false)
        .map_err(storage)?;
    Ok(())
}

/// [`set_queue_state`] for an entry of an owned queue.
fn set_owned_queue_state(
    t: &mut Tables<'_>,
    queue: &OwnedQueue,
    seq: u64,
    state: QueueState,
    damaged: &mut u64,
) -> Result<(), StoreError> {
    let key = (queue.kind.code(), &*queue.name, seq);
    let current = t
        .owned_entries
        .get(key)
        .map_err(storage)?
        .map(|v| Bytes::copy_from_slice(v.value()));
    if let Some(updated) = restated(current, state, damaged, &queue.name, seq) {
        t.owned_entries
            .insert(key, updated.as_slice())
            .map_err(storage)?;
    }
    Ok(())
}

/// Forgets an owned queue's record and every entry in its key range, dropping the references
/// they held.
fn delete_queue(
    t: &mut Tables<'_>,
    queue: &OwnedQueue,
    deltas: &mut RefDeltas,
    damaged: &mut u64,
) -> Result<(), StoreError> {
    let (kind, name) = (queue.kind.code(), &*queue.name);
    t.owned_queues.remove((kind, name)).map_err(storage)?;
    let removed = t
        .owned_entries
        .extract_from_if((kind, name, 0u64)..=(kind, name, u64::MAX), |_, _| true)
        .map_err(storage)?;
    unreference_extracted(removed, deltas, damaged)
}

/// Ends a group's changes: applies its session queue entries' state changes and removals,
/// its reference changes and frees the bodies nothing references any more (entries and bodies
/// in passes over runs of nearby keys, see [`removal_runs`]).
///
/// A body with one reference has no count row: the absence of a row means 1 (a body with
/// none is freed in the group that drops it). The common durable message, queued for one
/// session, so costs no count write when stored and none when acknowledged. Stores written
/// with a row for every body open unchanged: a row of 1 means what its absence does.
///
/// A count is read only when it can exist: a body put by this group ([`Group`]'s fresh ids)
/// has none yet, and a count that falls is taken out as it is read (one operation instead of
/// a read and a removal, for the common last reference).
pub(crate) fn collect(
    t: &mut Tables<'_>,
    mut deltas: RefDeltas,
    group: &mut Group,
    damaged: &mut u64,
) -> Result<Collected, StoreError> {
    change_entries(t, group, &mut deltas, damaged)?;
    let mut collected = Collected {
        freed_bytes: deltas.freed_with_entries,
        ..Collected::default()
    };
    // Bodies nothing references any more; `true`: without a count row (one reference implied),
    // so a missing body there is damage.
    let mut unreferenced: Vec<(MessageId, bool)> = Vec::new();
    // Rows are written only below, one per id: with none at the start, no id has one (the
    // common case of messages queued for one session each), and no lookup is needed.
    let rows_exist = t.refs.len().map_err(storage)? > 0;
    for (id, delta) in deltas.counts {
        let fresh = id >= group.fresh_from;
        let row = if fresh || !rows_exist {
            None
        } else if delta < 0 {
            t.refs.remove(id).map_err(storage)?.map(|v| v.value())
        } else {
            t.refs.get(id).map_err(storage)?.map(|v| v.value())
        };
        // Without a row: a committed body has one reference, a fresh one none yet.
        let implied = row.is_none() && !fresh;
        let current = row.unwrap_or(u64::from(implied));
        let current = i64::try_from(current).unwrap_or(i64::MAX);
        let now = current.saturating_add(delta);
        if now > 1 {
            if delta != 0 {
                t.refs.insert(id, now.unsigned_abs()).map_err(storage)?;
            }
            continue;
        }
        if now == 1 {
            // A row of 0 left by damage, raised to 1: the row goes (a falling count's row
            // was taken out as it was read).
            if delta > 0 && row.is_some() {
                t.refs.remove(id).map_err(storage)?;
            }
            continue;
        }
        if now < 0 {
            collected.negative_refcounts += 1;
            tracing::warn!(
                message_id = id,
                refs = now,
                "message reference count fell below zero"
            );
        }
        if delta == 0 && row.is_some() {
            // Read, not taken out, above: a count of 0 left by damage goes too.
            t.refs.remove(id).map_err(storage)?;
        }
        unreferenced.push((id, implied && now == 0));
    }
    unreferenced.sort_unstable();
    let ids: Vec<MessageId> = unreferenced.iter().map(|(id, _)| *id).collect();
    let mut freed_ids = AHashSet::new();
    for (first, last) in removal_runs(&ids) {
        let bodies = t
            .messages
            .extract_from_if(first..=last, |id, _| ids.binary_search(&id).is_ok())
            .map_err(storage)?;
        for body in bodies {
            let (id, body) = body.map_err(storage)?;
            freed_ids.insert(id.value());
            collected.freed_bytes += body.value().len() as u64;
        }
    }
    for (id, _) in unreferenced
        .iter()
        .filter(|(id, implied)| *implied && !freed_ids.contains(id))
    {
        // No row and no body: a reference dropped from a message that was not there.
        collected.negative_refcounts += 1;
        tracing::warn!(
            message_id = id,
            "a reference was dropped from a message the store does not hold"
        );
    }
    Ok(collected)
}

#[cfg(test)]
pub(super) mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use redb::{Database, ReadableDatabase, ReadableTableMetadata};

    use super::*;
    use crate::protocol::QoS;
    use crate::store::tables::{MESSAGES, QUEUES, REFS};
    use crate::store::types::{QueueEntry, SessionRecord, StoredMessage};

    fn database() -> Database {
        Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .expect("in-memory database")
    }

    fn body(payload: &'static [u8]) -> StoredMessage {
        StoredMessage {
            topic: Arc::from("a/b"),
            payload: Bytes::from_static(payload),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: Bytes::new(),
        }
    }

    /// A batch that puts body `id` and queues it at `seq` (a key used again, when it exists).
    fn new_body_at(c: &Arc<str>, seq: u64, id: MessageId) -> Vec<Op> {
        vec![
            Op::PutMessage {
                id,
                message: body(b"new"),
            },
            Op::Enqueue {
                client_id: c.clone(),
                seq,
                entry: entry(id),
            },
        ]
    }

    /// A queued QoS 1 entry of body `message_id`.
    pub(in crate::store) fn entry(message_id: MessageId) -> QueueEntry {
        QueueEntry {
            message_id,
            qos: QoS::AtLeastOnce,
            retain: false,
            subscription_id: None,
            state: QueueState::Queued,
        }
    }

    /// Runs `batches` as one group the way the writer does (validate, apply, collect) and
    /// commits it; returns each batch's validation outcome.
    fn group(db: &Database, fresh_from: u64, batches: &[Vec<Op>]) -> Vec<Result<(), StoreError>> {
        let txn = db.begin_write().expect("write");
        let mut outcomes = Vec::new();
        {
            let mut t = Tables::open(&txn).expect("tables");
            let mut group = Group::new(fresh_from);
            let (mut deltas, mut damaged) = (RefDeltas::default(), 0);
            for ops in batches {
                let outcome = validate(&t, ops, &mut group);
                if outcome.is_ok() {
                    apply(&mut t, ops, &mut group, &mut deltas, &mut damaged).expect("apply");
                }
                outcomes.push(outcome);
            }
            collect(&mut t, deltas, &mut group, &mut damaged).expect("collect");
        }
        txn.commit().expect("commit");
        outcomes
    }

    fn state(db: &Database, client: &str, seq: u64) -> Option<QueueState> {
        let txn = db.begin_read().expect("read");
        let queues = txn.open_table(QUEUES).expect("queues");
        let value = queues.get((client, seq)).expect("get")?;
        let entry =
            codec::decode_queue_record(&Bytes::copy_from_slice(value.value())).map(|r| r.entry);
        Some(entry.expect("decodes").state)
    }

    fn counts(db: &Database) -> (u64, u64) {
        let txn = db.begin_read().expect("read");
        let messages = txn
            .open_table(MESSAGES)
            .expect("messages")
            .len()
            .expect("len");
        let refs = txn.open_table(REFS).expect("refs").len().expect("len");
        (messages, refs)
    }

    fn session_with(client: &Arc<str>, id: MessageId, seq: u64) -> Vec<Op> {
        vec![
            Op::PutSession {
                client_id: client.clone(),
                session: SessionRecord::default(),
            },
            Op::PutMessage {
                id,
                message: body(b"m"),
            },
            Op::Enqueue {
                client_id: client.clone(),
                seq,
                entry: entry(id),
            },
        ]
    }

    #[test]
    fn a_state_change_removed_later_in_the_group_is_skipped_and_the_body_freed() {
        let db = database();
        let c: Arc<str> = Arc::from("c");
        let sent = Op::SetQueueState {
            client_id: c.clone(),
            seq: 2,
            state: QueueState::Sent { packet_id: 9 },
        };
        let removed = Op::Dequeue {
            client_id: c.clone(),
            seq: 2,
        };
        assert!(group(&db, 1, &[session_with(&c, 1, 2)])
            .iter()
            .all(Result::is_ok));
        assert_eq!(counts(&db), (1, 0), "one reference: no count row");
        let outcomes = group(&db, 3, &[vec![sent], vec![removed]]);
        assert!(outcomes.iter().all(Result::is_ok));
        assert_eq!(state(&db, "c", 2), None);
        assert_eq!(
            counts(&db),
            (0, 0),
            "the last reference freed the body and its count"
        );
    }

    #[test]
    fn a_state_change_is_kept_when_the_removal_is_refused_and_lost_when_it_comes_first() {
        let db = database();
        let c: Arc<str> = Arc::from("c");
        assert!(group(&db, 1, &[session_with(&c, 1, 2)])
            .iter()
            .all(Result::is_ok));
        let sent = |packet_id| Op::SetQueueState {
            client_id: c.clone(),
            seq: 2,
            state: QueueState::Sent { packet_id },
        };
        // The removal shares its batch with an enqueue of an unknown message: refused whole.
        let refused_removal = vec![
            Op::Dequeue {
                client_id: c.clone(),
                seq: 2,
            },
            Op::Enqueue {
                client_id: c.clone(),
                seq: 5,
                entry: entry(77),
            },
        ];
        let outcomes = group(&db, 3, &[vec![sent(9)], refused_removal]);
        assert!(outcomes[0].is_ok());
        assert!(matches!(outcomes[1], Err(StoreError::InvalidOp(_))));
        assert_eq!(state(&db, "c", 2), Some(QueueState::Sent { packet_id: 9 }));
        // A removal before the state change: the change finds no entry, as it always did.
        let removal_first = vec![
            Op::Dequeue {
                client_id: c.clone(),
                seq: 2,
            },
            sent(10),
        ];
        assert!(group(&db, 3, &[removal_first]).iter().all(Result::is_ok));
        assert_eq!(state(&db, "c", 2), None);
    }

    #[test]
    fn a_state_change_before_its_key_is_enqueued_again_does_not_reach_the_new_entry() {
        let db = database();
        let c: Arc<str> = Arc::from("c");
        queued(&db, &c, 1..=2);
        let reused = vec![
            vec![Op::SetQueueState {
                client_id: c.clone(),
                seq: 2,
                state: QueueState::Sent { packet_id: 9 },
            }],
            new_body_at(&c, 2, 2000),
        ];
        assert!(group(&db, 2000, &reused).iter().all(Result::is_ok));
        assert_eq!(state(&db, "c", 2), Some(entry(2000).state));
        assert_eq!(
            counts(&db),
            (2, 0),
            "1001 and 2000; 1002 freed by the replacement"
        );
    }

    #[test]
    fn an_id_reused_within_a_group_or_below_the_fresh_mark_is_refused() {
        let db = database();
        let c: Arc<str> = Arc::from("c");
        assert!(group(&db, 1, &[session_with(&c, 1, 2)])
            .iter()
            .all(Result::is_ok));
        let put = |id| {
            vec![Op::PutMessage {
                id,
                message: body(b"again"),
            }]
        };
        // Id 1 is committed and below the mark: looked up, refused.
        assert!(matches!(
            group(&db, 3, &[put(1)])[0],
            Err(StoreError::InvalidOp(_))
        ));
        // Id 8 is above the mark, put twice in one group: the second is refused.
        let outcomes = group(&db, 3, &[put(8), put(8)]);
        assert!(outcomes[0].is_ok());
        assert!(matches!(outcomes[1], Err(StoreError::InvalidOp(_))));
    }

    #[test]
    fn counts_of_old_bodies_are_read_and_new_ones_written_without_a_read() {
        let db = database();
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        // One body for two sessions, committed.
        let mut first = session_with(&a, 1, 2);
        first.push(Op::PutSession {
            client_id: b.clone(),
            session: SessionRecord::default(),
        });
        first.push(Op::Enqueue {
            client_id: b.clone(),
            seq: 3,
            entry: entry(1),
        });
        assert!(group(&db, 1, &[first]).iter().all(Result::is_ok));
        assert_eq!(counts(&db), (1, 1));
        let txn = db.begin_read().expect("read");
        let refs = txn.open_table(REFS).expect("refs");
        assert_eq!(refs.get(1).expect("get").map(|v| v.value()), Some(2));
        drop((refs, txn));
        // One reference goes: the count falls to 1 (no row) and the body stays.
        let drop_a = vec![Op::Dequeue {
            client_id: a.clone(),
            seq: 2,
        }];
        assert!(group(&db, 4, &[drop_a]).iter().all(Result::is_ok));
        assert_eq!(counts(&db), (1, 0));
        // The last goes: body and count freed.
        let drop_b = vec![Op::Dequeue {
            client_id: b.clone(),
            seq: 3,
        }];
        assert!(group(&db, 4, &[drop_b]).iter().all(Result::is_ok));
        assert_eq!(counts(&db), (0, 0));
        // A new body nothing references is collected in its own group.
        assert!(group(
            &db,
            4,
            &[vec![Op::PutMessage {
                id: 4,
                message: body(b"x")
            }]]
        )
        .iter()
        .all(Result::is_ok));
        assert_eq!(counts(&db), (0, 0));
    }

    #[test]
    fn removal_runs_join_keys_up_to_the_gap_apart() {
        assert_eq!(removal_runs(&[]), vec![]);
        assert_eq!(removal_runs(&[5]), vec![(5, 5)]);
        let far = 10 + MAX_REMOVAL_GAP + 1;
        assert_eq!(
            removal_runs(&[1, 2, 4, 10, far, far + MAX_REMOVAL_GAP]),
            vec![(1, 10), (far, far + MAX_REMOVAL_GAP)]
        );
    }

    /// A session `c` with one body and entry per seq in `seqs` (body id = seq + 1000).
    fn queued(db: &Database, c: &Arc<str>, seqs: impl Iterator<Item = u64>) {
        let mut ops = vec![Op::PutSession {
            client_id: c.clone(),
            session: SessionRecord::default(),
        }];
        for seq in seqs {
            ops.push(Op::PutMessage {
                id: seq + 1000,
                message: body(b"m"),
            });
            ops.push(Op::Enqueue {
                client_id: c.clone(),
                seq,
                entry: entry(seq + 1000),
            });
        }
        assert!(group(db, 1, &[ops]).iter().all(Result::is_ok));
    }

    fn seqs_of(db: &Database, client: &str) -> Vec<u64> {
        let txn = db.begin_read().expect("read");
        let queues = txn.open_table(QUEUES).expect("queues");
        queues
            .range((client, 0u64)..=(client, u64::MAX))
            .expect("range")
            .map(|item| item.expect("entry").0.value().1)
            .collect()
    }

    #[test]
    fn removals_of_a_group_take_exactly_their_entries_and_bodies_near_or_far() {
        let db = database();
        let (c, other): (Arc<str>, Arc<str>) = (Arc::from("c"), Arc::from("d"));
        queued(&db, &c, 1..=300);
        queued(&db, &other, 400..=402);
        // Every third entry, a run far from the rest, and one of another session, each in a
        // batch of its own (one per acknowledgement).
        let mut removed: Vec<u64> = (1..=150).filter(|s| s % 3 == 0).collect();
        removed.extend([290, 300]);
        let mut batches: Vec<Vec<Op>> = removed
            .iter()
            .map(|&seq| {
                vec![Op::Dequeue {
                    client_id: c.clone(),
                    seq,
                }]
            })
            .collect();
        batches.push(vec![Op::Dequeue {
            client_id: other.clone(),
            seq: 401,
        }]);
        assert!(group(&db, 2000, &batches).iter().all(Result::is_ok));
        let kept: Vec<u64> = (1..=300).filter(|s| !removed.contains(s)).collect();
        assert_eq!(seqs_of(&db, "c"), kept);
        assert_eq!(seqs_of(&db, "d"), vec![400, 402]);
        let (messages, refs) = counts(&db);
        assert_eq!(messages, (kept.len() + 2) as u64, "each removed body freed");
        assert_eq!(refs, 0);
        let txn = db.begin_read().expect("read");
        let bodies = txn.open_table(MESSAGES).expect("messages");
        for seq in &removed {
            assert!(bodies.get(seq + 1000).expect("get").is_none(), "{seq}");
        }
        for seq in &kept {
            assert!(bodies.get(seq + 1000).expect("get").is_some(), "{seq}");
        }
    }

    #[test]
    fn a_key_enqueued_again_or_a_session_deleted_after_a_removal_in_the_group_stays_exact() {
        let db = database();
        let c: Arc<str> = Arc::from("c");
        queued(&db, &c, 1..=3);
        // Entry 2 removed, then its key used again for another body, in one group.
        let again = vec![
            vec![Op::Dequeue {
                client_id: c.clone(),
                seq: 2,
            }],
            new_body_at(&c, 2, 2000),
        ];
        assert!(group(&db, 2000, &again).iter().all(Result::is_ok));
        assert_eq!(seqs_of(&db, "c"), vec![1, 2, 3]);
        let txn = db.begin_read().expect("read");
        let queues = txn.open_table(QUEUES).expect("queues");
        let value = queues.get(("c", 2u64)).expect("get").expect("entry 2");
        let decoded =
            codec::decode_queue_record(&Bytes::copy_from_slice(value.value())).map(|r| r.entry);
        assert_eq!(decoded.expect("decodes").message_id, 2000);
        drop((value, queues, txn));
        assert_eq!(counts(&db), (3, 0), "1001, 1003 and 2000; 1002 freed");
        // A removal, then the session's deletion: every entry and body goes, no damage.
        let end = [
            vec![Op::Dequeue {
                client_id: c.clone(),
                seq: 1,
            }],
            vec![Op::DeleteSession {
                client_id: c.clone(),
            }],
        ];
        let txn = db.begin_write().expect("write");
        {
            let mut t = Tables::open(&txn).expect("tables");
            let mut group = Group::new(3000);
            let (mut deltas, mut damaged) = (RefDeltas::default(), 0);
            for ops in &end {
                validate(&t, ops, &mut group).expect("valid");
                apply(&mut t, ops, &mut group, &mut deltas, &mut damaged).expect("apply");
            }
            let collected = collect(&mut t, deltas, &mut group, &mut damaged).expect("collect");
            assert_eq!((damaged, collected.negative_refcounts), (0, 0));
        }
        txn.commit().expect("commit");
        assert_eq!(seqs_of(&db, "c"), Vec::<u64>::new());
        assert_eq!(counts(&db), (0, 0));
    }

    #[test]
    fn the_fresh_mark_is_raised_above_every_id_the_tables_hold() {
        let db = database();
        let c: Arc<str> = Arc::from("c");
        assert!(group(&db, 1, &[session_with(&c, 40, 41)])
            .iter()
            .all(Result::is_ok));
        // No group wrote NEXT_ID_KEY here (the writer does): the counter says 1.
        let (next_id, _) = crate::store::read_counters(&db).expect("counters");
        assert_eq!(next_id, 41, "above message 40 (and its count)");
    }
}
