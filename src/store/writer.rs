//! The writer thread: the only place that writes. It takes every request waiting in its queue,
//! applies them in arrival order inside ONE redb write transaction and commits it with one
//! fsync (group commit), then answers each caller. While it is syncing, new requests queue up
//! and form the next group, so the more committers wait, the more messages each fsync carries.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use redb::{Database, Durability, ReadableTable};
use tokio::sync::{mpsc, oneshot};

use super::apply::{self, RefDeltas};
use super::tables::{storage, Tables, NEXT_ID_KEY};
use super::types::Op;
use super::{codec, Counters, StoreError};

/// Most requests in one group: bounds the transaction's size and the latency of the first.
const MAX_GROUP_REQUESTS: usize = 4096;

pub(crate) enum Request {
    Commit {
        ops: Vec<Op>,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    ExpireSessions {
        now_ms: u64,
        default_expiry_ms: u64,
        online: HashSet<Arc<str>>,
        reply: oneshot::Sender<Result<Vec<Arc<str>>, StoreError>>,
    },
}

/// The part of a request the transaction works on.
enum Work {
    Commit(Vec<Op>),
    ExpireSessions {
        now_ms: u64,
        default_expiry_ms: u64,
        online: HashSet<Arc<str>>,
    },
}

/// Who to answer, once the group's fate is known.
enum Waiter {
    Commit(oneshot::Sender<Result<(), StoreError>>),
    ExpireSessions(oneshot::Sender<Result<Vec<Arc<str>>, StoreError>>),
}

/// What one request amounted to inside a transaction that went through: the sessions it
/// expired, or why it was refused before touching anything (Full, invalid op; the rest of the
/// group goes on).
type Outcome = Result<Vec<Arc<str>>, StoreError>;

pub(crate) struct Writer {
    pub db: Arc<Database>,
    pub counters: Arc<Counters>,
    pub limit_bytes: Option<u64>,
    /// The value of [`NEXT_ID_KEY`] as last committed.
    pub persisted_next_id: u64,
}

impl Writer {
    /// Serves requests until every [`super::Store`] handle is gone.
    pub(crate) fn run(mut self, mut requests: mpsc::UnboundedReceiver<Request>) {
        while let Some(first) = requests.blocking_recv() {
            let mut group = vec![first];
            while group.len() < MAX_GROUP_REQUESTS {
                match requests.try_recv() {
                    Ok(next) => group.push(next),
                    Err(_) => break,
                }
            }
            self.commit_group(group);
        }
    }

    fn commit_group(&mut self, group: Vec<Request>) {
        let (works, waiters): (Vec<Work>, Vec<Waiter>) = group
            .into_iter()
            .map(|request| match request {
                Request::Commit { ops, reply } => (Work::Commit(ops), Waiter::Commit(reply)),
                Request::ExpireSessions {
                    now_ms,
                    default_expiry_ms,
                    online,
                    reply,
                } => (
                    Work::ExpireSessions {
                        now_ms,
                        default_expiry_ms,
                        online,
                    },
                    Waiter::ExpireSessions(reply),
                ),
            })
            .unzip();
        match self.run_transaction(&works) {
            Ok(outcomes) => {
                for (waiter, outcome) in waiters.into_iter().zip(outcomes) {
                    answer(waiter, outcome);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, requests = waiters.len(), "store group commit failed");
                for waiter in waiters {
                    answer(waiter, Err(e.clone()));
                }
            }
        }
    }

    fn run_transaction(&mut self, works: &[Work]) -> Result<Vec<Outcome>, StoreError> {
        let mut txn = self.db.begin_write().map_err(storage)?;
        txn.set_durability(Durability::Immediate).map_err(storage)?;
        let mut outcomes = Vec::with_capacity(works.len());
        let mut deltas = RefDeltas::default();
        let mut damaged = 0u64;
        let mut stored_bytes = 0u64;
        let mut max_id = None;
        let (mut batches, mut ops_count, mut refused_full) = (0u64, 0u64, 0u64);
        let collected = {
            let mut t = Tables::open(&txn)?;
            for work in works {
                let outcome = match work {
                    Work::Commit(ops) => {
                        let used =
                            self.counters.message_bytes.load(Ordering::Relaxed) + stored_bytes;
                        match self.check(&t, ops, used) {
                            Err(refusal) => {
                                if matches!(refusal, StoreError::Full { .. }) {
                                    refused_full += 1;
                                }
                                Err(refusal)
                            }
                            Ok(()) => {
                                stored_bytes +=
                                    apply::apply(&mut t, ops, &mut deltas, &mut damaged)?;
                                max_id = max_id.max(apply::max_id(ops));
                                batches += 1;
                                ops_count += ops.len() as u64;
                                Ok(Vec::new())
                            }
                        }
                    }
                    Work::ExpireSessions {
                        now_ms,
                        default_expiry_ms,
                        online,
                    } => {
                        let expired = expired_sessions(&t, *now_ms, *default_expiry_ms, online)?;
                        let ops: Vec<Op> = expired
                            .iter()
                            .map(|client_id| Op::DeleteSession {
                                client_id: client_id.clone(),
                            })
                            .collect();
                        apply::apply(&mut t, &ops, &mut deltas, &mut damaged)?;
                        Ok(expired)
                    }
                };
                outcomes.push(outcome);
            }
            let collected = apply::collect(&mut t, deltas)?;
            if let Some(next_id) = max_id.and_then(|id| id.checked_add(1)) {
                if next_id > self.persisted_next_id {
                    t.meta.insert(NEXT_ID_KEY, next_id).map_err(storage)?;
                }
            }
            collected
        };
        txn.commit().map_err(storage)?;
        if let Some(next_id) = max_id.and_then(|id| id.checked_add(1)) {
            self.persisted_next_id = self.persisted_next_id.max(next_id);
        }
        let c = &self.counters;
        c.group_commits.fetch_add(1, Ordering::Relaxed);
        c.batches_committed.fetch_add(batches, Ordering::Relaxed);
        c.ops_committed.fetch_add(ops_count, Ordering::Relaxed);
        c.batches_refused_full
            .fetch_add(refused_full, Ordering::Relaxed);
        c.damaged_records
            .fetch_add(damaged + collected.negative_refcounts, Ordering::Relaxed);
        // Only this thread changes message_bytes while the store is open.
        let bytes = c.message_bytes.load(Ordering::Relaxed);
        c.message_bytes.store(
            (bytes + stored_bytes).saturating_sub(collected.freed_bytes),
            Ordering::Relaxed,
        );
        Ok(outcomes)
    }

    /// Validation and the storeUsage limit, before a batch touches anything.
    fn check(&self, t: &Tables<'_>, ops: &[Op], used_bytes: u64) -> Result<(), StoreError> {
        if let Some(limit_bytes) = self.limit_bytes {
            let incoming_bytes = apply::incoming_message_bytes(ops);
            if incoming_bytes > 0 && used_bytes.saturating_add(incoming_bytes) > limit_bytes {
                return Err(StoreError::Full {
                    used_bytes,
                    incoming_bytes,
                    limit_bytes,
                });
            }
        }
        apply::validate(t, ops)
    }
}

/// Client ids of the sessions that are offline and past their expiry at `now_ms`. Damaged
/// session records are left alone (recovery reports them).
fn expired_sessions(
    t: &Tables<'_>,
    now_ms: u64,
    default_expiry_ms: u64,
    online: &HashSet<Arc<str>>,
) -> Result<Vec<Arc<str>>, StoreError> {
    let mut expired = Vec::new();
    for item in t.sessions.iter().map_err(storage)? {
        let (key, value) = item.map_err(storage)?;
        let client_id = key.value();
        if online.contains(client_id) {
            continue;
        }
        let Ok(record) = codec::decode_session(&bytes::Bytes::copy_from_slice(value.value()))
        else {
            continue;
        };
        // A session's own expiry (MQTT 5) is capped by the broker-wide one.
        let expiry_ms = record
            .expiry_ms
            .map_or(default_expiry_ms, |own| own.min(default_expiry_ms));
        if record.last_seen_ms.saturating_add(expiry_ms) <= now_ms {
            expired.push(Arc::from(client_id));
        }
    }
    Ok(expired)
}

fn answer(waiter: Waiter, outcome: Outcome) {
    // A caller that stopped waiting (its future was dropped) is no error.
    match waiter {
        Waiter::Commit(reply) => {
            let _ = reply.send(outcome.map(drop));
        }
        Waiter::ExpireSessions(reply) => {
            let _ = reply.send(outcome);
        }
    }
}
