//! Checking and applying one batch of [`Op`]s inside a group-commit transaction, and the
//! reference counting that frees message bodies when their last reference goes.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use redb::ReadableTable;

use super::codec::{self, encode_message, encode_queue_entry, encode_session};
use super::tables::{storage, Tables};
use super::types::{MessageId, Op, OwnedQueue, QueueState};
use super::StoreError;

/// Pending reference-count changes of one group, applied (and bodies freed) at its end: a
/// message fanned out to N sessions costs one refcount write, not N.
#[derive(Default)]
pub(crate) struct RefDeltas(HashMap<MessageId, i64>);

impl RefDeltas {
    fn add(&mut self, id: MessageId, delta: i64) {
        *self.0.entry(id).or_default() += delta;
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
            Op::PutMessage { message, .. } => codec::encoded_message_len(message),
            _ => 0,
        })
        .sum()
}

/// The highest message id or queue seq `ops` use.
pub(crate) fn max_id(ops: &[Op]) -> Option<u64> {
    ops.iter()
        .filter_map(|op| match op {
            Op::PutMessage { id, .. } => Some(*id),
            Op::Enqueue { seq, .. } | Op::EnqueueOwned { seq, .. } => Some(*seq),
            _ => None,
        })
        .max()
}

/// Refuses a batch that refers to a session or message that does not exist (at this point of
/// the group, including the batch's own earlier ops), or that reuses a message id. Runs before
/// the batch changes anything, so a refused batch leaves no trace.
pub(crate) fn validate(t: &Tables<'_>, ops: &[Op]) -> Result<(), StoreError> {
    let mut put_here: HashSet<MessageId> = HashSet::new();
    let mut sessions_here: HashMap<&str, bool> = HashMap::new();
    let mut queues_here: HashMap<&OwnedQueue, bool> = HashMap::new();
    let message_exists = |put_here: &HashSet<MessageId>, id: MessageId| {
        if put_here.contains(&id) {
            return Ok(true);
        }
        t.messages.get(id).map(|v| v.is_some()).map_err(storage)
    };
    for op in ops {
        match op {
            Op::PutMessage { id, .. } => {
                if message_exists(&put_here, *id)? {
                    return Err(StoreError::InvalidOp(format!(
                        "message id {id} is already in use (allocate ids with Store::allocate_id)"
                    )));
                }
                put_here.insert(*id);
            }
            Op::SetRetained { topic, message_id } => {
                if !message_exists(&put_here, *message_id)? {
                    return Err(StoreError::InvalidOp(format!(
                        "retained message for {topic:?} refers to unknown message {message_id}"
                    )));
                }
            }
            Op::Enqueue {
                client_id, entry, ..
            } => {
                let session_exists = match sessions_here.get(&**client_id) {
                    Some(exists) => *exists,
                    None => t.sessions.get(&**client_id).map_err(storage)?.is_some(),
                };
                if !session_exists {
                    return Err(StoreError::InvalidOp(format!(
                        "enqueue for unknown session {client_id:?} (PutSession first)"
                    )));
                }
                if !message_exists(&put_here, entry.message_id)? {
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
                if !message_exists(&put_here, entry.message_id)? {
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

/// Applies a validated batch. Returns the bytes of message bodies it stored. An error here is
/// the engine's (I/O): the caller abandons the whole group.
pub(crate) fn apply(
    t: &mut Tables<'_>,
    ops: &[Op],
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
            }
            Op::DeleteSession { client_id } => delete_session(t, client_id, deltas, damaged)?,
            Op::Enqueue {
                client_id,
                seq,
                entry,
            } => {
                let previous = t
                    .queues
                    .insert((&**client_id, *seq), encode_queue_entry(entry).as_slice())
                    .map_err(storage)?
                    .map(|old| Bytes::copy_from_slice(old.value()));
                if let Some(previous) = previous {
                    unreference_entry(&previous, deltas, damaged);
                }
                deltas.add(entry.message_id, 1);
            }
            Op::SetQueueState {
                client_id,
                seq,
                state,
            } => set_queue_state(t, client_id, *seq, *state, damaged)?,
            Op::Dequeue { client_id, seq } => {
                let removed = t
                    .queues
                    .remove((&**client_id, *seq))
                    .map_err(storage)?
                    .map(|old| Bytes::copy_from_slice(old.value()));
                if let Some(removed) = removed {
                    unreference_entry(&removed, deltas, damaged);
                }
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

/// Drops the reference a removed queue entry held. An undecodable entry (damage) cannot say
/// which body it referenced: it is counted, and the next recovery's reference recount frees
/// the body.
fn unreference_entry(encoded: &Bytes, deltas: &mut RefDeltas, damaged: &mut u64) {
    match codec::decode_queue_entry(encoded) {
        Ok(entry) => deltas.add(entry.message_id, -1),
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
    match codec::decode_queue_entry(&current?) {
        Ok(mut entry) => {
            entry.state = state;
            Some(encode_queue_entry(&entry))
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
    let removed: Vec<Bytes> = t
        .queues
        .extract_from_if((client_id, 0u64)..=(client_id, u64::MAX), |_, _| true)
        .map_err(storage)?
        .map(|item| item.map(|(_, v)| Bytes::copy_from_slice(v.value())))
        .collect::<Result<_, _>>()
        .map_err(storage)?;
    for entry in &removed {
        unreference_entry(entry, deltas, damaged);
    }
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
    let removed: Vec<Bytes> = t
        .owned_entries
        .extract_from_if((kind, name, 0u64)..=(kind, name, u64::MAX), |_, _| true)
        .map_err(storage)?
        .map(|item| item.map(|(_, v)| Bytes::copy_from_slice(v.value())))
        .collect::<Result<_, _>>()
        .map_err(storage)?;
    for entry in &removed {
        unreference_entry(entry, deltas, damaged);
    }
    Ok(())
}

/// Applies the group's reference changes; frees bodies nothing references any more.
pub(crate) fn collect(t: &mut Tables<'_>, deltas: RefDeltas) -> Result<Collected, StoreError> {
    let mut collected = Collected::default();
    for (id, delta) in deltas.0 {
        let current = t.refs.get(id).map_err(storage)?.map(|v| v.value());
        let current = i64::try_from(current.unwrap_or(0)).unwrap_or(i64::MAX);
        let now = current.saturating_add(delta);
        if now > 0 {
            if delta != 0 {
                t.refs.insert(id, now.unsigned_abs()).map_err(storage)?;
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
        t.refs.remove(id).map_err(storage)?;
        let freed = t
            .messages
            .remove(id)
            .map_err(storage)?
            .map(|body| body.value().len() as u64);
        collected.freed_bytes += freed.unwrap_or(0);
    }
    Ok(collected)
}
