//! The writer thread: the only place that writes. It takes every request waiting in its queue,
//! applies them in arrival order inside ONE redb write transaction and commits it with one
//! fsync (group commit), then answers each caller. While it is syncing, new requests queue up
//! and form the next group, so the more committers wait, the more messages each fsync carries.
//!
//! # When a write fails
//!
//! redb refuses every call after one I/O error until the database is reopened, so a failed
//! group (disk full, I/O error) is handled here, once for the whole group:
//!
//! 1. Every batch of the group is answered [`StoreError::Unavailable`]: its caller did not
//!    acknowledge anything it carried, and redb's commit is atomic, so nothing acknowledged is
//!    lost and nothing half-written stays.
//! 2. ONE error is logged (`store write failed ...`); repeated failures in a row are logged at
//!    the 2nd, 4th, 8th... only.
//! 3. Batches are refused at once ([`super::Store::submit`] sees [`Health`]) while the database
//!    is closed and opened again from the same file, under the same directory lock, retrying
//!    with backoff (10 ms doubling to 2 s) until it opens. Refusals say `out_of_space` when
//!    the filesystem was out of space, which the broker reports as full.
//! 4. Once open, writes resume by themselves; new message bodies are admitted only while the
//!    free-space check (`space.rs`) passes, so they resume when space returns, while
//!    deletions (acknowledgements), which free space, are tried at once.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redb::{Database, Durability, ReadableTable};
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{mpsc, oneshot};

use super::apply::{self, Group, RefDeltas};
use super::space::{self, DiskSpace};
use super::tables::{storage, Tables, NEXT_ID_KEY};
use super::types::Op;
use super::{codec, Counters, StoreError};

/// First wait between reopen attempts (and before reopening again after a second failure in
/// a row); doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How often requests that arrive while the store is closed are answered.
const REFUSE_POLL: Duration = Duration::from_millis(5);

/// The open database, shared with [`super::Store::recover`]; `None` while it is being
/// reopened (redb locks its file, so the failed instance must be closed first).
pub(crate) type DbSlot = parking_lot::Mutex<Option<Database>>;

/// Whether the store takes writes now, checked by [`super::Store::submit`] so that batches
/// are refused at once while the writer reopens the database instead of queueing behind it.
#[derive(Debug, Default)]
pub(crate) struct Health {
    failed: AtomicBool,
    refusal: parking_lot::Mutex<Option<StoreError>>,
}

impl Health {
    /// The error to refuse a batch with, while the store is being reopened.
    pub(crate) fn refusal(&self) -> Option<StoreError> {
        if !self.failed.load(Ordering::Acquire) {
            return None;
        }
        self.refusal.lock().clone()
    }

    fn fail(&self, refusal: StoreError) {
        *self.refusal.lock() = Some(refusal);
        self.failed.store(true, Ordering::Release);
    }

    fn restore(&self) {
        self.failed.store(false, Ordering::Release);
        self.refusal.lock().take();
    }
}

/// Most requests in one group: bounds the transaction's size and the latency of the first.
const MAX_GROUP_REQUESTS: usize = 4096;

pub(crate) enum Request {
    /// `reply`: `None` for a detached batch ([`super::Store::submit_detached`]): nobody waits
    /// for it, and the writer logs its refusal itself.
    Commit {
        ops: Vec<Op>,
        reply: Option<oneshot::Sender<Result<(), StoreError>>>,
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

/// Frees a group's work (its batches, bodies, client ids) on a thread of its own: the store
/// thread is what bounds durable throughput, and freeing a group of a few hundred ops took
/// about 7 % of it. Without that thread (it could not be started) work is freed in place.
struct Freeing {
    sender: Option<std::sync::mpsc::Sender<Vec<Work>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Freeing {
    fn start() -> Freeing {
        let (sender, receiver) = std::sync::mpsc::channel::<Vec<Work>>();
        let thread = std::thread::Builder::new()
            .name("ferromq-store-free".into())
            .spawn(move || receiver.into_iter().for_each(drop));
        match thread {
            Ok(thread) => Freeing {
                sender: Some(sender),
                thread: Some(thread),
            },
            Err(e) => {
                tracing::warn!("store: freeing in place (no thread for it: {e})");
                Freeing {
                    sender: None,
                    thread: None,
                }
            }
        }
    }

    fn free(&self, works: Vec<Work>) {
        if let Some(Err(returned)) = self.sender.as_ref().map(|s| s.send(works)) {
            drop(returned.0);
        }
    }

    fn stop(mut self) {
        self.sender = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Who to answer, once the group's fate is known.
enum Waiter {
    Commit(Option<oneshot::Sender<Result<(), StoreError>>>),
    ExpireSessions(oneshot::Sender<Result<Vec<Arc<str>>, StoreError>>),
}

/// What one request amounted to inside a transaction that went through: the sessions it
/// expired, or why it was refused before touching anything (Full, invalid op; the rest of the
/// group goes on).
type Outcome = Result<Vec<Arc<str>>, StoreError>;

pub(crate) struct Writer {
    pub db: Arc<DbSlot>,
    pub counters: Arc<Counters>,
    pub limit_bytes: Option<u64>,
    /// The value of [`NEXT_ID_KEY`] as last committed.
    pub persisted_next_id: u64,
    /// The database file, to reopen after a failed write; `None` for an in-memory store.
    pub path: Option<PathBuf>,
    /// Free space of the store's filesystem; `None` for an in-memory store.
    pub space: Option<Arc<DiskSpace>>,
    pub health: Arc<Health>,
    /// Failed groups since the last one that went through.
    pub failures_in_row: u64,
    /// Detached batches refused (each refusal is a bug or a race the caller could not see:
    /// a delivery state for a session that ended meanwhile); logged at the 1st, 2nd, 4th...
    pub detached_refusals: u64,
}

impl Writer {
    /// Serves requests until every [`super::Store`] handle is gone.
    pub(crate) fn run(mut self, mut requests: mpsc::UnboundedReceiver<Request>) {
        let freeing = Freeing::start();
        while let Some(first) = requests.blocking_recv() {
            let mut group = vec![first];
            while group.len() < MAX_GROUP_REQUESTS {
                match requests.try_recv() {
                    Ok(next) => group.push(next),
                    Err(_) => break,
                }
            }
            if let Err(failure) = self.commit_group(group, &freeing) {
                if !self.reopen(failure, &mut requests) {
                    break;
                }
            }
        }
        freeing.stop();
    }

    /// Commits one group and answers its callers. `Err`: the engine failed and the database
    /// must be reopened (the callers were answered with the error returned).
    fn commit_group(&mut self, group: Vec<Request>, freeing: &Freeing) -> Result<(), StoreError> {
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
        let slot = self.db.clone();
        let result = match slot.lock().as_ref() {
            Some(db) => self.run_transaction(db, &works),
            None => Err(StoreError::storage("writing", "the database is closed")),
        };
        freeing.free(works);
        match result {
            Ok(outcomes) => {
                for (waiter, outcome) in waiters.into_iter().zip(outcomes) {
                    if let (Waiter::Commit(None), Err(refusal)) = (&waiter, &outcome) {
                        self.detached_refusals += 1;
                        if self.detached_refusals.is_power_of_two() {
                            tracing::warn!(
                                refusals_total = self.detached_refusals,
                                "store update refused: {refusal}"
                            );
                        }
                    }
                    answer(waiter, outcome);
                }
                if self.failures_in_row > 0 {
                    tracing::info!(
                        failed_groups = self.failures_in_row,
                        "store writes go through again"
                    );
                    self.failures_in_row = 0;
                }
                Ok(())
            }
            Err(e) => {
                let refusal = self.failed(&e, waiters.len());
                for waiter in waiters {
                    answer(waiter, Err(refusal.clone()));
                }
                Err(refusal)
            }
        }
    }

    /// A group failed with `e`: log it (once per run of failures) and return what its callers
    /// and every batch until the database is open again are refused with.
    fn failed(&mut self, e: &StoreError, batches: usize) -> StoreError {
        let out_of_space = is_out_of_space(e)
            || self
                .space
                .as_ref()
                .is_some_and(|space| space.out_of_space_now());
        self.failures_in_row += 1;
        let dir = self
            .path
            .as_ref()
            .map_or_else(|| "memory".into(), |p| p.display().to_string());
        if self.failures_in_row == 1 {
            tracing::error!(
                store = %dir,
                out_of_space,
                refused_batches = batches,
                "store write failed: {e}; nothing of the failed group was kept or acknowledged; \
                 the store is reopened and refuses writes until it is (new messages are not \
                 acknowledged meanwhile){}",
                if out_of_space { "; free disk space to resume" } else { "" }
            );
        } else if self.failures_in_row.is_power_of_two() {
            tracing::warn!(
                store = %dir,
                out_of_space,
                failed_groups = self.failures_in_row,
                "store write failed again: {e}"
            );
        }
        StoreError::Unavailable {
            detail: format!("a write failed and the store is being reopened ({e})"),
            out_of_space,
        }
    }

    /// Closes the failed database and opens it again from the same file, refusing requests
    /// with `refusal` meanwhile, with backoff between attempts (and before the first one when
    /// groups keep failing). Returns false when every store handle is gone meanwhile.
    fn reopen(
        &mut self,
        refusal: StoreError,
        requests: &mut mpsc::UnboundedReceiver<Request>,
    ) -> bool {
        let Some(path) = self.path.clone() else {
            // In memory there is nothing to reopen (and no I/O to fail).
            return true;
        };
        self.health.fail(refusal.clone());
        let started = Instant::now();
        let mut backoff = FIRST_BACKOFF;
        if self.failures_in_row > 1 {
            let exponent = u32::try_from(self.failures_in_row - 2)
                .unwrap_or(u32::MAX)
                .min(16);
            let wait = FIRST_BACKOFF.saturating_mul(1 << exponent).min(MAX_BACKOFF);
            if !refuse_for(wait, &refusal, requests) {
                return false;
            }
        }
        let mut attempts = 0u64;
        loop {
            attempts += 1;
            self.db.lock().take();
            match super::open_database(&path).and_then(|(db, repaired)| {
                let counters = super::read_counters(&db)?;
                Ok((db, repaired, counters))
            }) {
                Ok((db, repaired, (next_id, message_bytes))) => {
                    self.persisted_next_id = self.persisted_next_id.max(next_id);
                    self.counters
                        .message_bytes
                        .store(message_bytes, Ordering::Relaxed);
                    *self.db.lock() = Some(db);
                    self.counters.reopens.fetch_add(1, Ordering::Relaxed);
                    if let Some(space) = &self.space {
                        space.out_of_space_now();
                    }
                    self.health.restore();
                    let log = |level_warn: bool| {
                        let elapsed_ms = started.elapsed().as_millis();
                        if level_warn {
                            tracing::warn!(
                                path = %path.display(),
                                attempts,
                                elapsed_ms,
                                "store reopened after a failed write (the storage engine \
                                 repaired its file); writes resume"
                            );
                        } else if self.failures_in_row == 1 {
                            tracing::info!(
                                path = %path.display(),
                                attempts,
                                elapsed_ms,
                                "store reopened after a failed write; writes resume"
                            );
                        }
                    };
                    log(repaired);
                    return true;
                }
                Err(e) => {
                    // Once, then at the 16th, 32nd, 64th... attempt (backoff 2 s by then).
                    if attempts == 1 || (attempts >= 16 && attempts.is_power_of_two()) {
                        tracing::warn!(
                            path = %path.display(),
                            attempts,
                            "cannot reopen the store after a failed write: {e}; retrying with \
                             backoff (writes are refused meanwhile)"
                        );
                    }
                }
            }
            if !refuse_for(backoff, &refusal, requests) {
                return false;
            }
            backoff = backoff.saturating_mul(2).min(MAX_BACKOFF);
        }
    }

    fn run_transaction(
        &mut self,
        db: &Database,
        works: &[Work],
    ) -> Result<Vec<Outcome>, StoreError> {
        let mut txn = db.begin_write().map_err(storage)?;
        txn.set_durability(Durability::Immediate).map_err(storage)?;
        let mut outcomes = Vec::with_capacity(works.len());
        let mut deltas = RefDeltas::default();
        let mut damaged = 0u64;
        let mut stored_bytes = 0u64;
        // Disk the admitted batches of this group may take (see `space::disk_cost`).
        let mut group_cost = 0u64;
        let mut max_id = None;
        let (mut batches, mut ops_count, mut refused_full) = (0u64, 0u64, 0u64);
        let mut group = Group::new(self.persisted_next_id);
        let collected = {
            let mut t = Tables::open(&txn)?;
            for work in works {
                let outcome = match work {
                    Work::Commit(ops) => {
                        let used =
                            self.counters.message_bytes.load(Ordering::Relaxed) + stored_bytes;
                        match self.check(&t, ops, used, group_cost, &mut group) {
                            Err(refusal) => {
                                if matches!(
                                    refusal,
                                    StoreError::Full { .. } | StoreError::DiskFull { .. }
                                ) {
                                    refused_full += 1;
                                }
                                Err(refusal)
                            }
                            Ok(incoming) => {
                                if incoming > 0 {
                                    group_cost =
                                        group_cost.saturating_add(space::disk_cost(incoming));
                                }
                                stored_bytes += apply::apply(
                                    &mut t,
                                    ops,
                                    &mut group,
                                    &mut deltas,
                                    &mut damaged,
                                )?;
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
                        apply::apply(&mut t, &ops, &mut group, &mut deltas, &mut damaged)?;
                        Ok(expired)
                    }
                };
                outcomes.push(outcome);
            }
            let collected = apply::collect(&mut t, deltas, &mut group, &mut damaged)?;
            if let Some(next_id) = max_id.and_then(|id| id.checked_add(1)) {
                if next_id > self.persisted_next_id {
                    t.meta.insert(NEXT_ID_KEY, next_id).map_err(storage)?;
                }
            }
            collected
        };
        let fsync_started = Instant::now();
        txn.commit().map_err(storage)?;
        self.counters
            .commit_seconds
            .observe(fsync_started.elapsed());
        if let Some(space) = &self.space {
            space.note_written(group_cost);
        }
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

    /// Validation, the storeUsage limit and the free disk space, before a batch touches
    /// anything. `used_bytes`: message bytes stored, counting this group's so far;
    /// `group_cost`: disk the group's admitted batches may take. Returns the bytes of new
    /// message bodies the batch stores.
    fn check(
        &self,
        t: &Tables<'_>,
        ops: &[Op],
        used_bytes: u64,
        group_cost: u64,
        group: &mut Group,
    ) -> Result<u64, StoreError> {
        let incoming_bytes = apply::incoming_message_bytes(ops);
        if incoming_bytes > 0 {
            if let Some(limit_bytes) = self.limit_bytes {
                if used_bytes.saturating_add(incoming_bytes) > limit_bytes {
                    return Err(StoreError::Full {
                        used_bytes,
                        incoming_bytes,
                        limit_bytes,
                    });
                }
            }
            if let Some(space) = &self.space {
                space
                    .check(incoming_bytes, used_bytes, group_cost)
                    .map_err(|no_room| disk_full(space, no_room))?;
            }
        }
        apply::validate(t, ops, group)?;
        Ok(incoming_bytes)
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

/// The refusal of a batch that does not fit on the disk.
pub(crate) fn disk_full(space: &DiskSpace, no_room: space::NoRoom) -> StoreError {
    StoreError::DiskFull {
        dir: space.dir().to_path_buf(),
        available_bytes: no_room.available_bytes,
        needed_bytes: no_room.needed_bytes,
        reserve_bytes: no_room.reserve_bytes,
    }
}

/// Whether the engine's error is ENOSPC or EDQUOT (its text is all a [`StoreError`] keeps).
fn is_out_of_space(e: &StoreError) -> bool {
    let text = e.to_string();
    [rustix::io::Errno::NOSPC, rustix::io::Errno::DQUOT]
        .iter()
        .map(|errno| errno.raw_os_error())
        .any(|code| text.contains(&format!("(os error {code})")))
}

/// Waits `wait`, answering every request that arrives meanwhile with `refusal`. Returns false
/// when every store handle is gone.
fn refuse_for(
    wait: Duration,
    refusal: &StoreError,
    requests: &mut mpsc::UnboundedReceiver<Request>,
) -> bool {
    let deadline = Instant::now() + wait;
    loop {
        loop {
            match requests.try_recv() {
                Ok(request) => refuse(request, refusal),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return false,
            }
        }
        let now = Instant::now();
        if now >= deadline {
            return true;
        }
        std::thread::sleep(REFUSE_POLL.min(deadline - now));
    }
}

fn refuse(request: Request, refusal: &StoreError) {
    match request {
        // A detached batch refused while the store reopens: the failure that closed it was
        // logged, and this refusal is one of its consequences.
        Request::Commit { reply: None, .. } => {}
        Request::Commit {
            reply: Some(reply), ..
        } => {
            let _ = reply.send(Err(refusal.clone()));
        }
        Request::ExpireSessions { reply, .. } => {
            let _ = reply.send(Err(refusal.clone()));
        }
    }
}

fn answer(waiter: Waiter, outcome: Outcome) {
    // A caller that stopped waiting (its future was dropped) is no error.
    match waiter {
        Waiter::Commit(Some(reply)) => {
            let _ = reply.send(outcome.map(drop));
        }
        Waiter::Commit(None) => {}
        Waiter::ExpireSessions(reply) => {
            let _ = reply.send(outcome);
        }
    }
}
