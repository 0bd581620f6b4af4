//! The durable engine: the redb store of [`crate::store`] (where `activemq.xml` names kahaDB).
//! This file is the only place in the broker that knows storage records ([`Op`]): it maps
//! each [`Change`] to them and recovered records back to session state.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::{
    now_ms, Change, Commit, Durability, DurabilityError, DurabilityStats, KeptWill, PageFuture,
    QueueOwner, QueueSeq, RecoveredCounts, RecoveredSession, Recovery, RetainedChange, SessionData,
    WillOwner,
};
use crate::broker::message::Message;
use crate::broker::routing::memory::MemoryGauge;
use crate::broker::session::inflight::{InflightEntry, InflightStage};
use crate::broker::session::queue::QueuedMessage;
use crate::broker::session::{SessionState, Subscription};
use crate::protocol::{QoS, RetainHandling, SubscriptionOptions};
use crate::store::{
    Op, QueueEntry, QueueState, Recovered, SessionRecord, Store, StoreError, StoreLimits,
    StoredMessage, SubscriptionRecord,
};

/// An open redb store as the broker's durability engine.
#[derive(Debug)]
pub struct RedbStore {
    store: Store,
    /// `storeUsage` in bytes of message bodies.
    store_limit_bytes: Option<u64>,
    /// Recovered once at open (reading needs the store's writer idle, so it is done there).
    recovered: parking_lot::Mutex<Option<Recovered>>,
}

impl RedbStore {
    /// Opens `directory` exclusively and reads it back. `store_limit_bytes`: `storeUsage`.
    pub async fn open(
        directory: PathBuf,
        store_limit_bytes: Option<u64>,
    ) -> anyhow::Result<RedbStore> {
        let limits = StoreLimits { store_limit_bytes };
        let (store, recovered) = tokio::task::spawn_blocking(move || {
            let store = Store::open(&directory, limits)
                .map_err(|e| anyhow::anyhow!("cannot open the durable store: {e}"))?;
            let recovered = store
                .recover_paged(PAGE_AFTER_RECOVERY)
                .map_err(|e| anyhow::anyhow!("cannot recover the durable store: {e}"))?;
            Ok::<_, anyhow::Error>((store, recovered))
        })
        .await
        .map_err(|e| anyhow::anyhow!("store recovery task failed: {e}"))??;
        Ok(RedbStore {
            store,
            store_limit_bytes,
            recovered: parking_lot::Mutex::new(Some(recovered)),
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
                        ops.push(Op::Enqueue {
                            client_id: copy.client_id,
                            seq: copy.seq,
                            entry: QueueEntry {
                                message_id: id,
                                qos: copy.qos,
                                retain: copy.retain,
                                state: QueueState::Queued,
                            },
                        });
                    }
                }
                Change::Sent {
                    owner: QueueOwner::Session(client_id),
                    seq,
                    packet_id,
                } => ops.push(Op::SetQueueState {
                    client_id,
                    seq,
                    state: QueueState::Sent { packet_id },
                }),
                Change::Released {
                    owner: QueueOwner::Session(client_id),
                    seq,
                    packet_id,
                } => ops.push(Op::SetQueueState {
                    client_id,
                    seq,
                    state: QueueState::Released { packet_id },
                }),
                Change::Removed {
                    owner: QueueOwner::Session(client_id),
                    seq,
                } => ops.push(Op::Dequeue { client_id, seq }),
                Change::InboundQos2Received {
                    client_id,
                    packet_id,
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

    /// `storeUsage`, then the store's own check (`Store::check_room`): the free space of its
    /// filesystem against its reserve (cached `statvfs`, measured at most every 100 ms), and
    /// whether it is being reopened after a failed write.
    fn check_room(&self, incoming_bytes: u64) -> Result<(), DurabilityError> {
        if let Some(limit_bytes) = self.store_limit_bytes {
            let used_bytes = self.store.stats().message_bytes;
            if used_bytes.saturating_add(incoming_bytes) > limit_bytes {
                return Err(DurabilityError::Full(format!(
                    "store full: {used_bytes} bytes of messages stored, {incoming_bytes} more \
                     would pass the storeUsage limit of {limit_bytes} bytes"
                )));
            }
        }
        self.store.check_room(incoming_bytes).map_err(error_of)
    }

    fn keeps_bodies(&self) -> bool {
        true
    }

    fn read_payloads(&self, client_id: &Arc<str>, seqs: Vec<QueueSeq>) -> PageFuture {
        let (store, client_id) = (self.store.clone(), client_id.clone());
        Box::pin(async move {
            tokio::task::spawn_blocking(move || store.read_payloads(&client_id, &seqs))
                .await
                .map_err(|e| DurabilityError::Unavailable(format!("page-in task failed: {e}")))?
                .map_err(error_of)
        })
    }

    fn recover(&self, memory: &Arc<MemoryGauge>) -> Result<Recovery, DurabilityError> {
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
        }
    }
}

fn stored_message(message: &Message) -> StoredMessage {
    StoredMessage {
        topic: message.topic.clone(),
        payload: message.payload.clone(),
        qos: message.qos,
        retain: message.retain,
        properties: super::no_properties(),
    }
}

fn message_from_stored(stored: StoredMessage) -> Message {
    Message {
        topic: stored.topic,
        payload: stored.payload,
        qos: stored.qos,
        retain: stored.retain,
        v5: None,
    }
}

fn session_record(data: SessionData) -> SessionRecord {
    SessionRecord {
        subscriptions: data
            .subscriptions
            .into_iter()
            .map(|(filter, sub)| SubscriptionRecord {
                filter,
                options: SubscriptionOptions {
                    qos: sub.qos,
                    no_local: false,
                    retain_as_published: false,
                    retain_handling: RetainHandling::SendAtSubscribe,
                },
                subscription_id: None,
            })
            .collect(),
        will: data.will.map(|will| crate::store::WillRecord {
            topic: will.message.topic,
            payload: will.message.payload,
            qos: will.message.qos,
            retain: will.message.retain,
            properties: super::no_properties(),
            owner: will.owner.map(|o| crate::store::WillOwner {
                user: o.user,
                anonymous: o.anonymous,
            }),
        }),
        expiry_ms: data.expiry_secs.map(|secs| u64::from(secs) * 1000),
        last_seen_ms: now_ms(),
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
        let will = r.record.will.clone().map(|w| KeptWill {
            message: Message {
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
        });
        sessions.push(RecoveredSession {
            state: restore_session(r, memory),
            offline_for,
            will,
        });
    }
    Recovery {
        sessions,
        retained,
        counts,
        problems,
    }
}

/// Queued messages of a recovered session held in memory; the rest are paged out.
const PAGE_AFTER_RECOVERY: usize = crate::broker::routing::limits::DEFAULT_PENDING_MESSAGE_LIMIT;

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
    for sub in recovered.record.subscriptions {
        state.subscriptions.insert(
            sub.filter.to_string(),
            Subscription {
                qos: sub.options.qos,
            },
        );
    }
    for entry in recovered.queue {
        let (qos, retain, seq) = (entry.entry.qos, entry.entry.retain, Some(entry.seq));
        if entry.paged {
            // Beyond the default pending limit the payload stayed in the store.
            let mut item = QueuedMessage {
                message: message_from_stored(entry.message),
                qos,
                retain,
                seq,
                paged: false,
            };
            item.page_out();
            state.pending.push_unbounded(item);
            continue;
        }
        let message = memory.charge(message_from_stored(entry.message));
        let (packet_id, stage) = match entry.entry.state {
            QueueState::Queued => {
                state.pending.push_unbounded(QueuedMessage {
                    message,
                    qos,
                    retain,
                    seq,
                    paged: false,
                });
                continue;
            }
            QueueState::Sent { packet_id } if qos == QoS::ExactlyOnce => {
                (packet_id, InflightStage::AwaitingPubRec)
            }
            QueueState::Sent { packet_id } => (packet_id, InflightStage::AwaitingPubAck),
            QueueState::Released { packet_id } => (packet_id, InflightStage::AwaitingPubComp),
        };
        let restored = state.inflight.restore(InflightEntry {
            packet_id,
            message: message.clone(),
            qos,
            retain,
            stage,
            seq,
        });
        if !restored {
            // Two entries claim one packet id (cannot happen unless the file was edited):
            // send the later one again as a new delivery rather than lose it.
            state.pending.push_unbounded(QueuedMessage {
                message,
                qos,
                retain,
                seq,
                paged: false,
            });
        }
    }
    state.inbound_qos2 = recovered.inbound_qos2;
    state
}
