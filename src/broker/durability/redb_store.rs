//! The durable engine: the redb store of [`crate::store`] (where `activemq.xml` names kahaDB).
//! This file is the only place in the broker that knows storage records ([`Op`]): it maps
//! each [`Change`] to them and recovered records back to session state.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::stored_v5::StoredV5;
use super::{
    now_ms, Change, Commit, Durability, DurabilityError, DurabilityStats, KeptWill, PageFuture,
    PagedBody, QueueOwner, QueueSeq, RecoveredCounts, RecoveredSession, Recovery, RetainedChange,
    SessionData, WillOwner,
};
use crate::broker::message::{Message, SampleStamp, V5Extras};
use crate::broker::routing::memory::{MemoryGauge, DEFAULT_MEMORY_LIMIT_BYTES};
use crate::broker::session::inflight::{InflightEntry, InflightStage};
use crate::broker::session::queue::QueuedMessage;
use crate::broker::session::{SessionState, SubscriptionOptions};
use crate::protocol::QoS;
use crate::store::{
    Hold, Op, OwnedQueue, QueueEntry, QueueKind, QueueState, Recovered, SessionRecord, Store,
    StoreError, StoreLimits, StoredMessage, SubscriptionRecord,
};

/// An open redb store as the broker's durability engine.
#[derive(Debug)]
pub struct RedbStore {
    store: Store,
    /// Recovered once at open (reading needs the store's writer idle, so it is done there).
    recovered: parking_lot::Mutex<Option<Recovered>>,
    /// The broker's `memoryUsage` gauge, known from [`Durability::recover`] on: a page read
    /// back is sized to it ([`page_bytes`]).
    memory: std::sync::OnceLock<Arc<MemoryGauge>>,
}

impl RedbStore {
    /// Opens `directory` exclusively and reads it back. `store_limit_bytes`: `storeUsage`;
    /// `memory_limit_bytes`: `memoryUsage` (0: none), which bounds the queued messages read
    /// back into memory (`recovery_hold`).
    pub async fn open(
        directory: PathBuf,
        store_limit_bytes: Option<u64>,
        memory_limit_bytes: u64,
    ) -> anyhow::Result<RedbStore> {
        let limits = StoreLimits { store_limit_bytes };
        let (store, recovered) = tokio::task::spawn_blocking(move || {
            // The `StoreError` is kept in the chain: `run` reports it at the store's place
            // in the configuration.
            let store = Store::open(&directory, limits)
                .map_err(|e| anyhow::Error::new(e).context("cannot open the durable store"))?;
            let recovered = store
                .recover_envelopes(recovery_hold(memory_limit_bytes), Some(envelope_properties))
                .map_err(|e| anyhow::Error::new(e).context("cannot recover the durable store"))?;
            Ok::<_, anyhow::Error>((store, recovered))
        })
        .await
        .map_err(|e| anyhow::anyhow!("store recovery task failed: {e}"))??;
        Ok(RedbStore {
            store,
            recovered: parking_lot::Mutex::new(Some(recovered)),
            memory: std::sync::OnceLock::new(),
        })
    }

    fn ops_of(&self, changes: Vec<Change>) -> Vec<Op> {
        let mut ops = Vec::with_capacity(changes.len() + 1);
        for change in changes {
            match change {
                Change::Message {
                    message,
                    retained,
                    queued_for,
                } => {
                    let id = self.store.allocate_id();
                    if let Some(op) = carried_in_entry(&message, id, retained, &queued_for) {
                        ops.push(op);
                        continue;
                    }
                    let body_needed = retained == RetainedChange::Set || !queued_for.is_empty();
                    if body_needed {
                        ops.push(Op::PutMessage {
                            id,
                            message: stored_message(&message),
                        });
                    }
                    match retained {
                        RetainedChange::Unchanged => {}
                        RetainedChange::Set => ops.push(Op::SetRetained {
                            topic: message.topic.clone(),
                            message_id: id,
                        }),
                        RetainedChange::Clear => ops.push(Op::ClearRetained {
                            topic: message.topic.clone(),
                        }),
                    }
                    for copy in queued_for {
                        let entry = QueueEntry {
                            message_id: id,
                            qos: copy.qos,
                            retain: copy.retain,
                            subscription_id: copy.subscription_id.map(NonZeroU32::get),
                            state: QueueState::Queued,
                        };
                        let seq = copy.seq;
                        ops.push(match owned_queue(copy.owner) {
                            Ok(client_id) => Op::Enqueue {
                                client_id,
                                seq,
                                entry,
                            },
                            Err(queue) => Op::EnqueueOwned { queue, seq, entry },
                        });
                    }
                }
                Change::Sent {
                    owner,
                    seq,
                    packet_id,
                } => ops.push(set_state(owner, seq, QueueState::Sent { packet_id })),
                Change::Released {
                    owner,
                    seq,
                    packet_id,
                } => ops.push(set_state(owner, seq, QueueState::Released { packet_id })),
                Change::Removed { owner, seq } => ops.push(match owned_queue(owner) {
                    Ok(client_id) => Op::Dequeue { client_id, seq },
                    Err(queue) => Op::DequeueOwned { queue, seq },
                }),
                Change::QueueDeclared { owner } => {
                    if let Err(queue) = owned_queue(owner) {
                        ops.push(Op::DeclareQueue { queue });
                    }
                }
                Change::QueueDeleted { owner } => {
                    if let Err(queue) = owned_queue(owner) {
                        ops.push(Op::DeleteQueue { queue });
                    }
                }
                Change::DestinationCreated { topic } => ops.push(Op::PutDestination { topic }),
                // Only engines with a backplane are handed publishes.
                Change::Published { .. } => {}
                Change::InboundQos2Received {
                    client_id,
                    packet_id,
                    connection: _,
                } => ops.push(Op::AddInboundQos2 {
                    client_id,
                    packet_id,
                }),
                Change::InboundQos2Released {
                    client_id,
                    packet_id,
                } => ops.push(Op::RemoveInboundQos2 {
                    client_id,
                    packet_id,
                }),
                Change::SessionSaved(data) => ops.push(Op::PutSession {
                    client_id: data.client_id.clone(),
                    session: session_record(data),
                }),
                Change::SessionEnded { client_id } => ops.push(Op::DeleteSession { client_id }),
            }
        }
        ops
    }
}

/// Largest payload carried in its queue entry. A carried body is
/// rewritten with its entry at every change of the entry's state (sent, released): for a
/// message of 2 MiB, a copy read, a copy encoded and a new 2 MiB page held by the store's
/// write transaction until it commits, for each delivery. Larger messages are stored as a
/// body and an entry that refers to it, whose state changes rewrite a few bytes.
const CARRIED_MAX_BYTES: usize = 64 * 1024;

/// The one op storing `message` when it is queued for one session and nothing else (not
/// retained, no retained message cleared) and not larger than [`CARRIED_MAX_BYTES`]: its
/// body goes in its queue entry ([`Op::PutQueued`]), one record instead of a body and an
/// entry. `None` otherwise.
fn carried_in_entry(
    message: &Message,
    id: u64,
    retained: RetainedChange,
    queued_for: &[super::QueuedFor],
) -> Option<Op> {
    let [copy] = queued_for else {
        return None;
    };
    let QueueOwner::Session(client_id) = &copy.owner else {
        return None;
    };
    if retained != RetainedChange::Unchanged {
        return None;
    }
    if message.payload.len() > CARRIED_MAX_BYTES {
        return None;
    }
    Some(Op::PutQueued {
        client_id: client_id.clone(),
        seq: copy.seq,
        entry: QueueEntry {
            message_id: id,
            qos: copy.qos,
            retain: copy.retain,
            subscription_id: copy.subscription_id.map(NonZeroU32::get),
            state: QueueState::Queued,
        },
        message: stored_message(message),
    })
}

/// Where a queue owner's entries are stored: `Ok(client id)` for a session's queue (the
/// session tables), `Err(queue)` for a group or named queue (the owned-queue tables).
fn owned_queue(owner: QueueOwner) -> Result<Arc<str>, OwnedQueue> {
    match owner {
        QueueOwner::Session(client_id) => Ok(client_id),
        QueueOwner::Group(name) => Err(OwnedQueue {
            kind: QueueKind::Group,
            name,
        }),
        QueueOwner::Queue(name) => Err(OwnedQueue {
            kind: QueueKind::Queue,
            name,
        }),
    }
}

/// The owner a stored owned queue is recovered as.
fn owner_of(queue: OwnedQueue) -> QueueOwner {
    match queue.kind {
        QueueKind::Group => QueueOwner::Group(queue.name),
        QueueKind::Queue => QueueOwner::Queue(queue.name),
    }
}

fn set_state(owner: QueueOwner, seq: QueueSeq, state: QueueState) -> Op {
    match owned_queue(owner) {
        Ok(client_id) => Op::SetQueueState {
            client_id,
            seq,
            state,
        },
        Err(queue) => Op::SetOwnedQueueState { queue, seq, state },
    }
}

/// A store error as the broker sees it: the storeUsage limit, a nearly full disk and a write
/// that failed for lack of space are `Full` (retry once space is freed); other failures are
/// `Unavailable`.
fn error_of(e: StoreError) -> DurabilityError {
    match e {
        StoreError::Full { .. }
        | StoreError::DiskFull { .. }
        | StoreError::Unavailable {
            out_of_space: true, ..
        } => DurabilityError::Full(e.to_string()),
        StoreError::InvalidOp(what) => DurabilityError::Stale(what),
        other => DurabilityError::Unavailable(other.to_string()),
    }
}

impl Durability for RedbStore {
    fn location(&self) -> String {
        self.store
            .dir()
            .map_or_else(|| "memory".into(), |d| d.display().to_string())
    }

    fn next_seq(&self) -> u64 {
        self.store.allocate_id()
    }

    fn commit(&self, changes: Vec<Change>) -> Commit {
        if changes.is_empty() {
            return Commit::done();
        }
        let ops = self.ops_of(changes);
        match self.store.submit(ops) {
            Ok(done) => Commit::Pending(Box::pin(async move { done.await.map_err(error_of) })),
            Err(e) => Commit::Done(Err(error_of(e))),
        }
    }

    /// Submitted without an answer: the store's writer logs a refusal (rate-limited).
    fn commit_detached(&self, changes: Vec<Change>) -> Commit {
        if changes.is_empty() {
            return Commit::done();
        }
        let ops = self.ops_of(changes);
        Commit::Done(self.store.submit_detached(ops).map_err(error_of))
    }

    /// `storeUsage`, then the store's own check (`Store::check_room`): the free space of its
    /// filesystem against its reserve (cached `statvfs`, measured at most every 100 ms), and
    /// whether it is being reopened after a failed write.
    fn check_room(&self, incoming_bytes: u64) -> Result<(), DurabilityError> {
        self.store.check_room(incoming_bytes).map_err(error_of)
    }

    fn keeps_bodies(&self) -> bool {
        true
    }

    fn keeps_sessions(&self) -> bool {
        true
    }

    fn read_payloads(&self, client_id: &Arc<str>, seqs: Vec<QueueSeq>) -> PageFuture {
        let (store, client_id) = (self.store.clone(), client_id.clone());
        let max_bytes = page_bytes(self.memory.get().map(|m| &**m));
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                store.read_paged_within(&client_id, &seqs, max_bytes)
            })
            .await
            .map_err(|e| DurabilityError::Unavailable(format!("page-in task failed: {e}")))?
            .map(paged_bodies)
            .map_err(error_of)
        })
    }

    fn read_queue_payloads(&self, owner: &QueueOwner, seqs: Vec<QueueSeq>) -> PageFuture {
        let store = self.store.clone();
        let queue = match owned_queue(owner.clone()) {
            Ok(client_id) => return self.read_payloads(&client_id, seqs),
            Err(queue) => queue,
        };
        let max_bytes = page_bytes(self.memory.get().map(|m| &**m));
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                store.read_owned_paged_within(&queue, &seqs, max_bytes)
            })
            .await
            .map_err(|e| DurabilityError::Unavailable(format!("page-in task failed: {e}")))?
            .map(paged_bodies)
            .map_err(error_of)
        })
    }

    fn recover(&self, memory: &Arc<MemoryGauge>) -> Result<Recovery, DurabilityError> {
        // The first gauge given stays: the broker has one.
        let _ = self.memory.set(memory.clone());
        let Some(recovered) = self.recovered.lock().take() else {
            return Ok(Recovery::default());
        };
        Ok(recovery_of(recovered, memory))
    }

    fn stats(&self) -> DurabilityStats {
        let s = self.store.stats();
        DurabilityStats {
            group_commits: s.group_commits,
            batches_committed: s.batches_committed,
            batches_refused_full: s.batches_refused_full,
            message_bytes: s.message_bytes,
            limit_bytes: s.limit_bytes,
            commit_seconds: s.commit_seconds,
        }
    }
}

fn stored_message(message: &Message) -> StoredMessage {
    StoredMessage {
        topic: message.topic.clone(),
        payload: message.payload.clone(),
        qos: message.qos,
        retain: message.retain,
        properties: message.v5.as_ref().map_or_else(super::no_properties, |v5| {
            encode_or_log(&v5.to_stored(), &message.topic)
        }),
    }
}

/// The stored bytes of an MQTT 5 side; one that cannot be encoded (never from a decoded
/// packet) is logged and kept without its properties rather than refusing the message.
fn encode_or_log(v5: &StoredV5, topic: &str) -> bytes::Bytes {
    v5.encode().unwrap_or_else(|e| {
        tracing::warn!(%topic, "kept without its MQTT 5 properties: {e}");
        super::no_properties()
    })
}

/// The MQTT 5 side of stored bytes; damaged bytes are logged and read as none.
fn decode_or_log(bytes: &bytes::Bytes, topic: &str) -> StoredV5 {
    StoredV5::decode(bytes).unwrap_or_else(|e| {
        tracing::warn!(%topic, "stored MQTT 5 properties dropped: {e}");
        StoredV5::default()
    })
}

/// What a paged-out session entry recovered from the store keeps of its message's stored
/// MQTT 5 side: the rule of [`Message::envelope`] (large properties stay in the store, the
/// expiry stays), applied to the encoded bytes so that recovery never holds them all.
fn envelope_properties(stored: &bytes::Bytes) -> bytes::Bytes {
    if stored.is_empty() {
        return bytes::Bytes::new();
    }
    let Ok(v5) = StoredV5::decode(stored) else {
        // Read again, and logged, where the whole message is read back.
        return bytes::Bytes::copy_from_slice(stored);
    };
    match &v5.properties {
        Some(properties) if !crate::broker::message::kept_in_envelope(properties) => encode_or_log(
            &StoredV5 {
                properties: None,
                ..v5
            },
            "",
        ),
        _ => bytes::Bytes::copy_from_slice(stored),
    }
}

/// Messages read back for paged-out queue entries, as what page-in needs of them.
fn paged_bodies(read: Vec<Option<StoredMessage>>) -> Vec<Option<PagedBody>> {
    read.into_iter()
        .map(|stored| {
            stored.map(|stored| {
                let message = message_from_stored(stored);
                PagedBody {
                    payload: message.payload,
                    v5: message.v5,
                }
            })
        })
        .collect()
}

fn message_from_stored(stored: StoredMessage) -> Message {
    let v5 = V5Extras::from_stored(decode_or_log(&stored.properties, &stored.topic));
    Message {
        stamp: SampleStamp::NONE,
        topic: stored.topic,
        payload: stored.payload,
        qos: stored.qos,
        retain: stored.retain,
        v5,
    }
}

/// A kept will as the store's will record: its will properties and pending deadline go in
/// the record's `properties` bytes.
fn will_record(will: KeptWill) -> crate::store::WillRecord {
    let v5 = StoredV5 {
        properties: will.properties,
        expires_at_ms: None,
        will_deadline_ms: will.deadline_ms,
    };
    crate::store::WillRecord {
        properties: encode_or_log(&v5, &will.message.topic),
        topic: will.message.topic,
        payload: will.message.payload,
        qos: will.message.qos,
        retain: will.message.retain,
        owner: will.owner.map(|o| crate::store::WillOwner {
            user: o.user,
            anonymous: o.anonymous,
        }),
    }
}

fn will_from_record(w: crate::store::WillRecord) -> KeptWill {
    let v5 = decode_or_log(&w.properties, &w.topic);
    KeptWill {
        message: Message {
            stamp: SampleStamp::NONE,
            topic: w.topic,
            payload: w.payload,
            qos: w.qos,
            retain: w.retain,
            v5: None,
        },
        owner: w.owner.map(|o| WillOwner {
            user: o.user,
            anonymous: o.anonymous,
        }),
        properties: v5.properties,
        deadline_ms: v5.will_deadline_ms,
    }
}

/// The `last_seen_ms` of a session saved while a connection held it: its client left at the
/// broker's stop (a crash; a clean stop saves every session offline first), whose time is not
/// known, so its offline clock starts at the next start (`now - u64::MAX` saturates to 0
/// there), as does a crashed connection's will delay. Builds from before it read it the same
/// way, and a store's expiry check never expires it (`last_seen_ms + expiry` saturates).
const CONNECTED_AT_LAST_SAVE: u64 = u64::MAX;

fn session_record(data: SessionData) -> SessionRecord {
    SessionRecord {
        subscriptions: data
            .subscriptions
            .into_iter()
            .map(|(filter, sub)| SubscriptionRecord {
                filter,
                options: sub.to_protocol(),
                subscription_id: sub.id.map(NonZeroU32::get),
            })
            .collect(),
        will: data.will.map(will_record),
        expiry_ms: data.expiry_secs.map(|secs| u64::from(secs) * 1000),
        last_seen_ms: if data.connected {
            CONNECTED_AT_LAST_SAVE
        } else {
            now_ms()
        },
        mqtt5: data.mqtt5,
    }
}

/// The store's records as values for the runtime; every message body charged to `memory`.
fn recovery_of(recovered: Recovered, memory: &Arc<MemoryGauge>) -> Recovery {
    let mut counts = RecoveredCounts {
        sessions: recovered.sessions.len(),
        retained: recovered.retained.len(),
        ..RecoveredCounts::default()
    };
    let problems = recovered.stats.problems.clone();
    let retained = recovered
        .retained
        .into_iter()
        .map(|(_, m)| memory.charge(message_from_stored(m.message)))
        .collect();
    let now = now_ms();
    let mut sessions = Vec::with_capacity(recovered.sessions.len());
    for r in recovered.sessions {
        for e in &r.queue {
            match e.entry.state {
                QueueState::Queued => counts.queued += 1,
                _ => counts.inflight += 1,
            }
        }
        counts.inbound_qos2 += r.inbound_qos2.len();
        let offline_for = Duration::from_millis(now.saturating_sub(r.record.last_seen_ms));
        let will = r.record.will.clone().map(will_from_record);
        sessions.push(RecoveredSession {
            state: restore_session(r, memory),
            offline_for,
            will,
        });
    }
    let queues = recovered
        .queues
        .into_iter()
        .map(|q| {
            let entries = q
                .queue
                .into_iter()
                .map(|entry| queued_message(entry, memory))
                .collect();
            (owner_of(q.owner), entries)
        })
        .collect();
    Recovery {
        sessions,
        retained,
        queues,
        destinations: recovered.destinations,
        counts,
        problems,
    }
}

/// A recovered queue entry (a session's or an owned queue's) as a pending message; a paged one
/// keeps only its envelope, the others are charged to `memory`.
fn queued_message(entry: crate::store::RecoveredEntry, memory: &Arc<MemoryGauge>) -> QueuedMessage {
    let (qos, retain, seq) = (entry.entry.qos, entry.entry.retain, Some(entry.seq));
    let subscription_id = entry.entry.subscription_id.and_then(NonZeroU32::new);
    if entry.paged {
        let mut item = QueuedMessage {
            message: message_from_stored(entry.message),
            qos,
            retain,
            subscription_id,
            seq,
            paged: false,
            shared_group: None,
        };
        item.page_out();
        return item;
    }
    QueuedMessage {
        message: memory.charge(message_from_stored(entry.message)),
        qos,
        retain,
        subscription_id,
        seq,
        paged: false,
        shared_group: None,
    }
}

/// Queued messages of a recovered session held in memory; the rest are paged out.
const PAGE_AFTER_RECOVERY: usize = crate::broker::routing::limits::DEFAULT_PENDING_MESSAGE_LIMIT;

/// Share of `memoryUsage` that recovery fills with queued messages (all queues together);
/// the rest is left to the traffic that starts once the broker listens.
const RECOVERY_SHARE_OF_MEMORY: u64 = 2;

/// Share of `memoryUsage` a page of paged-out messages read back may take (per connection).
const PAGE_SHARE_OF_MEMORY: u64 = 4;

/// What recovery reads back of the queued messages: [`PAGE_AFTER_RECOVERY`] per queue, and
/// at most half of `memoryUsage` in all (without a limit, half of the default one). A count
/// alone bounds nothing when messages are large: a thousand messages of 2 MiB per session.
fn recovery_hold(memory_limit_bytes: u64) -> Hold {
    let memory = match memory_limit_bytes {
        0 => DEFAULT_MEMORY_LIMIT_BYTES,
        limit => limit,
    };
    Hold {
        queued_per_queue: PAGE_AFTER_RECOVERY,
        payload_bytes: memory / RECOVERY_SHARE_OF_MEMORY,
    }
}

/// Most encoded bytes one page read back may take ([`Store::read_paged_within`], which reads
/// at least one message): a quarter of `memoryUsage`, less when less of it is free. The
/// connection asks for up to 256 messages a page; at 2 MiB each that is half a gigabyte.
fn page_bytes(memory: Option<&MemoryGauge>) -> u64 {
    let Some(memory) = memory else {
        return DEFAULT_MEMORY_LIMIT_BYTES / PAGE_SHARE_OF_MEMORY;
    };
    let limit = memory.limit_bytes().unwrap_or(DEFAULT_MEMORY_LIMIT_BYTES);
    let free = limit.saturating_sub(memory.used_bytes());
    (limit / PAGE_SHARE_OF_MEMORY).min(free)
}

/// Rebuild a session's state: queued entries become pending, sent ones in-flight (re-sent with
/// DUP=1 on reconnect), released ones awaiting PUBCOMP (PUBREL re-sent). Every message is
/// charged to `memory` (it is held in memory now).
fn restore_session(
    recovered: crate::store::RecoveredSession,
    memory: &Arc<MemoryGauge>,
) -> SessionState {
    let mut state = SessionState::new(&recovered.client_id, true);
    // Whole seconds were stored (MQTT 5 Session Expiry Interval); saturate anything larger.
    state.expiry_secs = recovered
        .record
        .expiry_ms
        .map(|ms| u32::try_from(ms / 1000).unwrap_or(u32::MAX - 1));
    state.mqtt5 = recovered.record.mqtt5;
    for sub in recovered.record.subscriptions {
        let id = sub.subscription_id.and_then(NonZeroU32::new);
        state.subscriptions_mut().insert(
            sub.filter.to_string(),
            SubscriptionOptions::from_subscribe(&sub.options, id),
        );
    }
    for entry in recovered.queue {
        let state_in_store = entry.entry.state;
        // Queued (paged beyond the default pending limit, or held in memory) ...
        let item = queued_message(entry, memory);
        let (packet_id, stage) = match state_in_store {
            QueueState::Queued => {
                state.pending_mut().push_unbounded(item);
                continue;
            }
            // ... or in flight: re-sent on reconnect.
            QueueState::Sent { packet_id } if item.qos == QoS::ExactlyOnce => {
                (packet_id, InflightStage::AwaitingPubRec)
            }
            QueueState::Sent { packet_id } => (packet_id, InflightStage::AwaitingPubAck),
            QueueState::Released { packet_id } => (packet_id, InflightStage::AwaitingPubComp),
        };
        let restored = state.inflight_mut().restore(InflightEntry {
            packet_id,
            message: item.message.clone(),
            qos: item.qos,
            retain: item.retain,
            subscription_id: item.subscription_id,
            stage,
            seq: item.seq,
            shared_group: None,
        });
        if !restored {
            // Two entries claim one packet id (cannot happen unless the file was edited):
            // send the later one again as a new delivery rather than lose it.
            state.pending_mut().push_unbounded(item);
        }
    }
    *state.inbound_qos2_mut() = recovered.inbound_qos2;
    state
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::durability::QueuedFor;

    fn engine() -> RedbStore {
        RedbStore {
            store: Store::memory(StoreLimits::default()).expect("memory store"),
            recovered: parking_lot::Mutex::new(None),
            memory: std::sync::OnceLock::new(),
        }
    }

    fn message(payload: &'static [u8]) -> Message {
        Message {
            stamp: SampleStamp::NONE,
            topic: Arc::from("t/x"),
            payload: bytes::Bytes::from_static(payload),
            qos: QoS::AtLeastOnce,
            retain: false,
            v5: None,
        }
    }

    fn copy(owner: QueueOwner, seq: QueueSeq) -> QueuedFor {
        QueuedFor {
            owner,
            seq,
            qos: QoS::AtLeastOnce,
            retain: false,
            subscription_id: None,
        }
    }

    #[test]
    fn groups_and_queues_map_to_owned_queue_ops_and_sessions_to_session_ops() {
        let engine = engine();
        let (c1, g, q): (Arc<str>, Arc<str>, Arc<str>) =
            (Arc::from("c1"), Arc::from("g1 t/#"), Arc::from("orders"));
        let group = OwnedQueue {
            kind: QueueKind::Group,
            name: g.clone(),
        };
        let queue = OwnedQueue {
            kind: QueueKind::Queue,
            name: q.clone(),
        };
        let ops = engine.ops_of(vec![
            Change::QueueDeclared {
                owner: QueueOwner::Session(c1.clone()),
            },
            Change::QueueDeclared {
                owner: QueueOwner::Group(g.clone()),
            },
            Change::Message {
                message: message(b"m"),
                retained: RetainedChange::Unchanged,
                queued_for: vec![
                    copy(QueueOwner::Session(c1.clone()), 1),
                    copy(QueueOwner::Group(g.clone()), 2),
                    copy(QueueOwner::Queue(q.clone()), 3),
                ],
            },
            Change::Sent {
                owner: QueueOwner::Group(g.clone()),
                seq: 2,
                packet_id: 5,
            },
            Change::Released {
                owner: QueueOwner::Queue(q.clone()),
                seq: 3,
                packet_id: 6,
            },
            Change::Removed {
                owner: QueueOwner::Group(g.clone()),
                seq: 2,
            },
            Change::removed(&c1, 1),
            Change::QueueDeleted {
                owner: QueueOwner::Queue(q.clone()),
            },
            Change::QueueDeleted {
                owner: QueueOwner::Session(c1.clone()),
            },
        ]);
        let Some(Op::PutMessage { id, .. }) = ops.get(1) else {
            panic!("the body follows the declaration: {ops:?}");
        };
        let entry = QueueEntry {
            message_id: *id,
            qos: QoS::AtLeastOnce,
            retain: false,
            subscription_id: None,
            state: QueueState::Queued,
        };
        let expected_after_body = [
            Op::Enqueue {
                client_id: c1.clone(),
                seq: 1,
                entry,
            },
            Op::EnqueueOwned {
                queue: group.clone(),
                seq: 2,
                entry,
            },
            Op::EnqueueOwned {
                queue: queue.clone(),
                seq: 3,
                entry,
            },
            Op::SetOwnedQueueState {
                queue: group.clone(),
                seq: 2,
                state: QueueState::Sent { packet_id: 5 },
            },
            Op::SetOwnedQueueState {
                queue: queue.clone(),
                seq: 3,
                state: QueueState::Released { packet_id: 6 },
            },
            Op::DequeueOwned {
                queue: group.clone(),
                seq: 2,
            },
            Op::Dequeue {
                client_id: c1,
                seq: 1,
            },
            Op::DeleteQueue { queue },
        ];
        assert_eq!(ops[0], Op::DeclareQueue { queue: group });
        assert_eq!(
            ops[2..],
            expected_after_body[..],
            "session owners add no queue ops"
        );
    }

    #[tokio::test]
    async fn owned_queues_come_back_as_owners_with_their_messages() {
        let engine = engine();
        let g: Arc<str> = Arc::from("g1 t/#");
        let changes = vec![
            Change::QueueDeclared {
                owner: QueueOwner::Group(g.clone()),
            },
            Change::Message {
                message: message(b"hello"),
                retained: RetainedChange::Unchanged,
                queued_for: vec![copy(QueueOwner::Group(g.clone()), 7)],
            },
            Change::Sent {
                owner: QueueOwner::Group(g.clone()),
                seq: 7,
                packet_id: 1,
            },
        ];
        engine.commit(changes).wait().await.expect("commit");
        let recovered = engine.store.recover().expect("recover");
        let memory = MemoryGauge::new(u64::MAX);
        let recovery = recovery_of(recovered, &memory);
        assert_eq!(recovery.queues.len(), 1);
        let (owner, entries) = &recovery.queues[0];
        assert_eq!(owner, &QueueOwner::Group(g));
        assert_eq!(entries.len(), 1, "a sent entry comes back queued");
        assert_eq!(entries[0].seq, Some(7));
        assert_eq!(&entries[0].message.payload[..], b"hello");
        assert!(memory.used_bytes() > 0, "its body is charged");
    }

    #[test]
    fn v5_properties_and_a_pending_will_round_trip_through_the_records() {
        let now = std::time::Instant::now();
        let properties = crate::protocol::Properties {
            payload_format_indicator: Some(1),
            message_expiry_interval: Some(90),
            content_type: Some("application/json".into()),
            response_topic: Some("r".into()),
            correlation_data: Some(bytes::Bytes::from_static(b"c")),
            user_properties: vec![("k2".into(), "v".into()), ("k1".into(), "v".into())],
            ..crate::protocol::Properties::default()
        };
        let m = Message {
            v5: V5Extras::from_publish(Some(Box::new(properties.clone())), now),
            ..message(b"m")
        };
        let back = message_from_stored(stored_message(&m));
        let (sent, got) = (m.v5.expect("v5"), back.v5.expect("v5 back"));
        assert_eq!(got.properties, sent.properties);
        let left = got.remaining_expiry_secs(std::time::Instant::now());
        assert!(matches!(left, Some(89..=90)), "{left:?}");

        let will = KeptWill {
            message: message(b"bye"),
            owner: Some(WillOwner {
                user: Arc::from("alice"),
                anonymous: false,
            }),
            properties: Some(Box::new(crate::protocol::Properties {
                will_delay_interval: Some(30),
                ..properties
            })),
            deadline_ms: Some(1_700_000_000_000),
        };
        assert_eq!(will_from_record(will_record(will.clone())), will);
    }

    #[test]
    fn a_large_payload_is_stored_apart_from_its_entry() {
        let c1: Arc<str> = Arc::from("c1");
        let small = vec![b's'; CARRIED_MAX_BYTES];
        let large = vec![b'l'; CARRIED_MAX_BYTES + 1];
        let ops_for = |payload: &[u8]| {
            engine().ops_of(vec![Change::Message {
                message: Message {
                    payload: bytes::Bytes::copy_from_slice(payload),
                    ..message(b"")
                },
                retained: RetainedChange::Unchanged,
                queued_for: vec![copy(QueueOwner::Session(c1.clone()), 1)],
            }])
        };
        assert!(
            matches!(ops_for(&small)[..], [Op::PutQueued { .. }]),
            "carried in its entry"
        );
        assert!(
            matches!(
                ops_for(&large)[..],
                [Op::PutMessage { .. }, Op::Enqueue { .. }]
            ),
            "a body and an entry: a state change rewrites the entry only"
        );
    }

    #[test]
    fn pages_and_recovery_are_sized_to_memory_usage() {
        assert_eq!(recovery_hold(32 << 20).payload_bytes, 16 << 20);
        assert_eq!(
            recovery_hold(0).payload_bytes,
            DEFAULT_MEMORY_LIMIT_BYTES / 2,
            "no limit: half of the default one"
        );
        let memory = MemoryGauge::new(32 << 20);
        assert_eq!(page_bytes(Some(&memory)), 8 << 20);
        let held = memory.hold(30 << 20);
        assert_eq!(page_bytes(Some(&memory)), 2 << 20, "the free room");
        drop(held);
    }

    #[test]
    fn records_written_without_v5_bytes_read_back_without_v5() {
        let stored = stored_message(&message(b"v3"));
        assert!(
            stored.properties.is_empty(),
            "an MQTT 3 message keeps no bytes"
        );
        assert_eq!(message_from_stored(stored).v5, None);
        let will = will_from_record(crate::store::WillRecord {
            topic: Arc::from("w"),
            payload: bytes::Bytes::from_static(b"bye"),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: bytes::Bytes::new(),
            owner: None,
        });
        assert_eq!(will.delay_secs(), 0);
        assert_eq!((will.properties, will.deadline_ms), (None, None));
        // Damaged bytes: logged and read as none, never a panic.
        let damaged = StoredMessage {
            properties: bytes::Bytes::from_static(b"\x01\x00\x05"),
            ..stored_message(&message(b"x"))
        };
        assert_eq!(message_from_stored(damaged).v5, None);
    }
}
