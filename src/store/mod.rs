//! Durable state: persistent sessions, their queued and in-flight messages, inbound QoS 2 ids
//! and retained messages, kept so that nothing acknowledged is lost, even on kill -9.
//!
//! # Design
//!
//! - One directory, owned exclusively (flock on `ferromq.lock`, holder pid named in
//!   the error), holding one redb database file `ferromq.redb`.
//! - Message bodies are stored once ([`Op::PutMessage`]) and referenced by id from every queue
//!   entry and retained slot; a reference count per body frees it when the last reference
//!   goes, at the end of the commit that dropped it.
//! - All writes go through [`Store::commit`]: a batch of [`Op`]s, applied all-or-nothing, that
//!   returns once it is durable. One writer thread takes every batch waiting, applies them in one
//!   transaction and fsyncs once (group commit): throughput comes from many messages per fsync.
//! - [`Store::recover`] reads everything back at startup and checks the store's own invariants
//!   (every reference points to a stored body, counts match, queues belong to sessions).
//!
//! # Why redb (engine choice, measured)
//!
//! The workload is many small writes (store + enqueue a message, later dequeue it), each of
//! which must be durable before the broker acknowledges it, from many connections at once.
//! Its cost is fsyncs, so what matters is how many messages one fsync carries.
//!
//! Measured with `cargo bench --bench store` (release, ext4 on a virtio disk, 2 shared cores;
//! 64-byte payloads; one message = two commits, enqueue then dequeue):
//!
//! | committers | msgs/s | fsyncs/s | msgs per fsync |
//! |-----------:|-------:|---------:|---------------:|
//! |          1 |    268 |      535 |            0.5 |
//! |         16 |  2 032 |      393 |            5.2 |
//! |        256 | 27 676 |      358 |           77.4 |
//!
//! The same disk in the same run does 3 917 append+fdatasync per second. So an own append-only
//! journal would win with ONE committer (redb's commit writes several B-tree pages: ~1.9 ms
//! against ~0.26 ms), but the broker's persistent load is fan-in from many connections, where
//! group commit carries 77 messages per fsync and the engine's per-commit cost is spread over
//! all of them. To match redb's guarantees a journal needs checksummed records, torn-tail
//! detection, an index rebuilt on start, and a compactor for a workload that deletes almost
//! everything it writes; redb has all of it, is actively maintained, and its crash safety is
//! what `tests/store/crash.rs` checks with 20 kill -9s. The API exposes no redb type, so a
//! journal can replace it later behind [`Store::commit`] if single-publisher latency matters.
//! fjall (LSM) was not measured: its strength is write amplification on large data sets, while
//! this store stays small (messages are deleted soon after their acknowledgement).
//!
//! # Using it from the broker
//!
//! - Startup: [`Store::open`] on `persistenceAdapter/kahaDB@directory` (else `dataDirectory`),
//!   or [`Store::memory`] for `persistent="false"`; then [`Store::recover`] (in
//!   `spawn_blocking`), log `stats` at info and each of `stats.problems` at warn; rebuild the
//!   retained index and every session: `Queued` entries become pending messages, `Sent` ones
//!   in-flight (re-sent with DUP=1), `Released` ones awaiting PUBCOMP (re-sent as PUBREL).
//!   The broker keeps each entry's `seq` next to it to name it in later ops.
//! - QoS 1/2 PUBLISH: one batch = [`Op::PutMessage`] + one [`Op::Enqueue`] per persistent
//!   session it is routed to, plus [`Op::SetRetained`] / [`Op::ClearRetained`] when retain is
//!   set and [`Op::AddInboundQos2`] for QoS 2; PUBACK / PUBREC only after `commit` returned
//!   Ok. On [`StoreError::Full`]: refuse (no ack; a log line and a counter).
//! - Delivery: [`Op::SetQueueState`] `Sent` when a PUBLISH goes out, `Released` on PUBREC;
//!   [`Op::Dequeue`] on PUBACK / PUBCOMP. PUBREL in: [`Op::RemoveInboundQos2`], then PUBCOMP.
//! - SUBSCRIBE / UNSUBSCRIBE / connect / disconnect: [`Op::PutSession`] (with `last_seen_ms`);
//!   clean-session connect: [`Op::DeleteSession`]. Periodically:
//!   [`Store::expire_sessions`] with the ids of connected clients.
//! - Groups and named queues (queues no session owns): [`Op::DeclareQueue`] /
//!   [`Op::DeleteQueue`], and [`Op::EnqueueOwned`], [`Op::SetOwnedQueueState`],
//!   [`Op::DequeueOwned`] as for a session's queue; recovered in [`Recovered::queues`].

mod apply;
mod codec;
pub mod directory;
mod error;
#[cfg(test)]
mod group_equivalence;
mod lock;
mod recover;
mod space;
mod tables;
mod types;
mod writer;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use redb::{Database, ReadableDatabase, ReadableTable};
use tokio::sync::{mpsc, oneshot};

pub use error::StoreError;
pub use lock::held_by_another;
pub(crate) use lock::LOCK_FILE_NAME;
pub use recover::{Hold, RecoveryStats};
pub use space::{disk_cost, reserve_for, reusable_in_db, SpaceSample};
pub use types::{
    MessageId, Op, OwnedQueue, QueueEntry, QueueKind, QueueSeq, QueueState, Recovered,
    RecoveredEntry, RecoveredMessage, RecoveredQueue, RecoveredSession, SessionRecord,
    StoredMessage, SubscriptionRecord, WillOwner, WillRecord,
};

use lock::DirLock;
use space::DiskSpace;
use tables::{storage, MESSAGES, META, NEXT_ID_KEY, REFS};
use writer::{DbSlot, Health, Request, Writer};

/// Whose queue [`Store::read_paged_of`] reads.
#[derive(Clone, Copy)]
enum PagedQueue<'a> {
    Session(&'a str),
    Owned(&'a OwnedQueue),
}

/// File name of the database inside the store directory.
pub const DATABASE_FILE_NAME: &str = "ferromq.redb";

/// Page cache of the database: the working set is recent messages, not the whole store.
const CACHE_SIZE_BYTES: usize = 64 * 1024 * 1024;

/// Limits from `systemUsage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreLimits {
    /// `storeUsage limit`: most bytes of message bodies (topic + payload + properties) the
    /// store holds. When a batch would pass it, the batch is refused with
    /// [`StoreError::Full`] if it stores a new body; batches that only remove or update
    /// records always go through, so a full store drains.
    pub store_limit_bytes: Option<u64>,
}

/// Counters since open, for metrics and benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreStats {
    /// Transactions committed, each with one fsync (for a file-backed store).
    pub group_commits: u64,
    pub batches_committed: u64,
    pub ops_committed: u64,
    /// Batches refused because of the storeUsage limit.
    pub batches_refused_full: u64,
    /// Bytes of message bodies stored now (what the storeUsage limit counts).
    pub message_bytes: u64,
    /// Damaged records met while writing (logged at warn when met).
    pub damaged_records: u64,
    /// Times the database was reopened after a failed write (see `writer.rs`).
    pub reopens: u64,
    /// How long each group commit's transaction commit (with its fsync) took.
    pub commit_seconds: crate::metrics::histogram::HistogramSnapshot,
    /// The `storeUsage` limit, when there is one.
    pub limit_bytes: Option<u64>,
}

/// Shared between the handles and the writer thread.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    group_commits: AtomicU64,
    batches_committed: AtomicU64,
    ops_committed: AtomicU64,
    batches_refused_full: AtomicU64,
    message_bytes: AtomicU64,
    damaged_records: AtomicU64,
    reopens: AtomicU64,
    /// Time of each group commit's `commit` (the fsync), observed by the writer thread.
    commit_seconds: crate::metrics::histogram::Histogram,
}

/// A handle on an open store; clones share it. The writer stops and the directory is released
/// when the last handle is dropped (the drop waits for the batch being written, if any).
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// `None` only while dropping.
    /// Unbounded so that [`Store::submit`] can queue a batch synchronously (submission order is
    /// apply order, which the broker relies on); callers bound what they have outstanding
    /// (the broker: a window of unacknowledged publishes per connection).
    requests: Option<mpsc::UnboundedSender<Request>>,
    writer: Option<JoinHandle<()>>,
    db: Arc<DbSlot>,
    counters: Arc<Counters>,
    /// Free space of the store's filesystem (file-backed stores).
    space: Option<Arc<DiskSpace>>,
    health: Arc<Health>,
    /// `storeUsage`, checked before admission too ([`Store::check_room`]).
    limit_bytes: Option<u64>,
    next_id: AtomicU64,
    engine_repaired: bool,
    dir: Option<PathBuf>,
    /// Declared after `db` so that the database is closed before the directory is released.
    _lock: Option<DirLock>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the queue ends the writer's loop once it has answered what it holds.
        self.requests.take();
        if let Some(writer) = self.writer.take() {
            if writer.join().is_err() {
                tracing::error!("store writer thread panicked");
            }
        }
    }
}

impl Store {
    /// Opens (creating if needed) the store in `dir`, exclusively: a second open of the same
    /// directory, from this process or another, fails with [`StoreError::Locked`].
    ///
    /// After a crash the storage engine rolls back a torn last commit here; call
    /// [`Store::recover`] next to read the state back.
    pub fn open(dir: &Path, limits: StoreLimits) -> Result<Store, StoreError> {
        // `a/missing/../store` is made as `a/store`: `create_dir_all` would make `missing`
        // only to step out of it, and leave it behind (`directory::plan`).
        let dir = &directory::creation_path(dir);
        std::fs::create_dir_all(dir).map_err(|e| StoreError::CreateDir {
            dir: dir.to_path_buf(),
            detail: e.to_string(),
        })?;
        let lock = DirLock::acquire(dir)?;
        let path = dir.join(DATABASE_FILE_NAME);
        let (db, engine_repaired) = open_database(&path)?;
        Store::start(
            db,
            limits,
            engine_repaired,
            Some(dir.to_path_buf()),
            Some(lock),
        )
    }

    /// A store that keeps everything in memory (`persistent="false"`,
    /// `memoryPersistenceAdapter`): same behaviour, nothing on disk, nothing survives.
    pub fn memory(limits: StoreLimits) -> Result<Store, StoreError> {
        let db = Database::builder()
            .set_cache_size(CACHE_SIZE_BYTES)
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(|e| StoreError::storage("creating the in-memory store", e))?;
        Store::start(db, limits, false, None, None)
    }

    fn start(
        db: Database,
        limits: StoreLimits,
        engine_repaired: bool,
        dir: Option<PathBuf>,
        lock: Option<DirLock>,
    ) -> Result<Store, StoreError> {
        let (next_id, message_bytes) = read_counters(&db)?;
        let db = Arc::new(parking_lot::Mutex::new(Some(db)));
        let counters = Arc::new(Counters {
            message_bytes: AtomicU64::new(message_bytes),
            ..Counters::default()
        });
        let path = dir.as_ref().map(|d| d.join(DATABASE_FILE_NAME));
        let space = match (&dir, &path) {
            (Some(dir), Some(path)) => Some(Arc::new(DiskSpace::new(dir, path))),
            _ => None,
        };
        let health = Arc::new(Health::default());
        let (requests, receiver) = mpsc::unbounded_channel();
        let writer = Writer {
            db: db.clone(),
            counters: counters.clone(),
            limit_bytes: limits.store_limit_bytes,
            persisted_next_id: next_id,
            path,
            space: space.clone(),
            health: health.clone(),
            failures_in_row: 0,
            detached_refusals: 0,
        };
        let writer = std::thread::Builder::new()
            .name("ferromq-store".into())
            .spawn(move || writer.run(receiver))
            .map_err(|e| StoreError::storage("starting the store writer thread", e))?;
        Ok(Store {
            inner: Arc::new(Inner {
                requests: Some(requests),
                writer: Some(writer),
                db,
                counters,
                space,
                health,
                limit_bytes: limits.store_limit_bytes,
                next_id: AtomicU64::new(next_id),
                engine_repaired,
                dir,
                _lock: lock,
            }),
        })
    }

    /// The directory of a file-backed store.
    pub fn dir(&self) -> Option<&Path> {
        self.inner.dir.as_deref()
    }

    /// A new id for a message body or a queue entry: unique, and greater than every id
    /// committed before (also across restarts).
    pub fn allocate_id(&self) -> u64 {
        self.inner.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Applies `ops` all-or-nothing and returns once they are durable (fsync'd): only then may
    /// the broker acknowledge what they record. Batches from concurrent callers share one
    /// transaction and one fsync.
    ///
    /// A batch that refers to a missing session or message fails with
    /// [`StoreError::InvalidOp`], one that would pass the storeUsage limit with
    /// [`StoreError::Full`]; either leaves no trace and the other batches of the group go on.
    /// If the caller stops waiting, the batch is still committed.
    pub async fn commit(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        self.submit(ops)?.await
    }

    /// Queues `ops` for the writer now (so batches submitted one after the other are applied
    /// in that order, even when nobody awaits them yet) and returns a future that resolves
    /// once they are durable, like [`Store::commit`]. Dropping the future does not cancel the
    /// batch: fire-and-forget updates (acknowledgement bookkeeping) just drop it.
    pub fn submit(
        &self,
        ops: Vec<Op>,
    ) -> Result<
        impl std::future::Future<Output = Result<(), StoreError>> + Send + 'static,
        StoreError,
    > {
        let answer = if ops.is_empty() {
            None
        } else {
            if let Some(refusal) = self.inner.health.refusal() {
                return Err(refusal);
            }
            let (reply, answer) = oneshot::channel();
            self.send(Request::Commit {
                ops,
                reply: Some(reply),
            })?;
            Some(answer)
        };
        Ok(async move {
            match answer {
                None => Ok(()),
                Some(answer) => answer.await.map_err(|_| StoreError::Closed)?,
            }
        })
    }

    /// Queues `ops` for the writer like [`Store::submit`], for bookkeeping nobody waits for
    /// (a delivery's packet id, an acknowledged entry's removal): no answer is made, so it
    /// costs no channel, task or wake-up per batch. A refusal at submission is returned; one
    /// inside its group is logged by the writer (rate-limited), and a failed group is logged
    /// as every failed group is.
    pub fn submit_detached(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        if ops.is_empty() {
            return Ok(());
        }
        if let Some(refusal) = self.inner.health.refusal() {
            return Err(refusal);
        }
        self.send(Request::Commit { ops, reply: None })
    }

    /// Deletes every persistent session that is not in `online` and was last seen more than
    /// its expiry (its own `expiry_ms` capped by `default_expiry_ms`, else `default_expiry_ms`)
    /// before `now_ms`, with its queue; returns their client ids.
    pub async fn expire_sessions(
        &self,
        now_ms: u64,
        default_expiry_ms: u64,
        online: HashSet<Arc<str>>,
    ) -> Result<Vec<Arc<str>>, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::ExpireSessions {
            now_ms,
            default_expiry_ms,
            online,
            reply,
        })?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Whether a message whose encoded body is `incoming_bytes` could be stored now, checked
    /// before the broker admits a QoS 1/2 publish (cheap: see `space.rs`, it runs per publish).
    ///
    /// Errors: [`StoreError::Unavailable`] while the store is being reopened after a failed
    /// write; [`StoreError::DiskFull`] when the filesystem's free space minus what the message
    /// may take would fall below the reserve ([`reserve_for`]); [`StoreError::Full`] when it
    /// would pass the `storeUsage` limit (the same rule the writer applies). A commit can still
    /// be refused
    /// afterwards (other publishers race for the same space).
    pub fn check_room(&self, incoming_bytes: u64) -> Result<(), StoreError> {
        if let Some(refusal) = self.inner.health.refusal() {
            return Err(refusal);
        }
        let stored = self.inner.counters.message_bytes.load(Ordering::Relaxed);
        if let Some(limit_bytes) = self.inner.limit_bytes {
            if stored.saturating_add(incoming_bytes) > limit_bytes {
                return Err(StoreError::Full {
                    used_bytes: stored,
                    incoming_bytes,
                    limit_bytes,
                });
            }
        }
        if let Some(space) = &self.inner.space {
            space
                .check(incoming_bytes, stored, 0)
                .map_err(|no_room| writer::disk_full(space, no_room))?;
        }
        Ok(())
    }

    /// Replaces the free-space reserve of a file-backed store (bytes kept free on its
    /// filesystem; by default [`reserve_for`] the filesystem's size): `Some(0)` turns the
    /// free-space check off (tests that provoke a real ENOSPC), `None` restores the default.
    /// No effect on an in-memory store.
    pub fn set_disk_reserve(&self, reserve_bytes: Option<u64>) {
        if let Some(space) = &self.inner.space {
            space.set_reserve(reserve_bytes);
        }
    }

    /// The free-space reserve in force, in bytes (`None`: in-memory store).
    pub fn disk_reserve_bytes(&self) -> Option<u64> {
        self.inner.space.as_ref().map(|space| space.reserve_bytes())
    }

    fn send(&self, request: Request) -> Result<(), StoreError> {
        let requests = self.inner.requests.as_ref().ok_or(StoreError::Closed)?;
        requests.send(request).map_err(|_| StoreError::Closed)
    }

    /// Reads everything back (call once, at startup, before serving; it blocks, so from async
    /// code run it in `spawn_blocking`). Repairs the store's invariants and reports, in
    /// [`Recovered::stats`], what it found, repaired and could not keep.
    pub fn recover(&self) -> Result<Recovered, StoreError> {
        self.recover_envelopes(Hold::ALL, None)
    }

    /// [`Store::recover`], reading the payloads of at most `queued_in_memory` queued (not yet
    /// sent) entries per session; the others come back `paged`, with an empty payload, to be
    /// read with [`Store::read_paged`] when needed. Message bodies are decoded one at a time
    /// and their payloads not held, so recovery's memory does not grow with the store's size.
    pub fn recover_paged(&self, queued_in_memory: usize) -> Result<Recovered, StoreError> {
        self.recover_envelopes(
            Hold {
                queued_per_queue: queued_in_memory,
                payload_bytes: u64::MAX,
            },
            None,
        )
    }

    /// [`Store::recover_paged`] holding at most what `hold` allows (entries per queue and
    /// bytes over all queues), where a paged session entry keeps `envelope_properties` of
    /// its message's properties (the encoded bytes; the caller knows their format and what an
    /// envelope keeps of them) and gets the rest back with its payload from
    /// [`Store::read_paged`]. An owned queue's paged entries keep all of theirs.
    pub fn recover_envelopes(
        &self,
        hold: Hold,
        envelope_properties: Option<fn(&bytes::Bytes) -> bytes::Bytes>,
    ) -> Result<Recovered, StoreError> {
        let recovered = {
            let db = self.inner.db.lock();
            let db = db.as_ref().ok_or_else(|| StoreError::Unavailable {
                detail: "the store is being reopened after a failed write".into(),
                out_of_space: false,
            })?;
            recover::recover(db, self.inner.engine_repaired, hold, envelope_properties)?
        };
        self.inner
            .counters
            .message_bytes
            .store(recovered.stats.message_bytes, Ordering::Relaxed);
        Ok(recovered)
    }

    /// The messages (payload and MQTT 5 properties) of queue entries `seqs` of `client_id`,
    /// in the order asked; `None` for an entry (or body) that is not there. Reads a snapshot (a
    /// read transaction beside the writer); it blocks, so from async code run it in
    /// `spawn_blocking`.
    pub fn read_paged(
        &self,
        client_id: &str,
        seqs: &[QueueSeq],
    ) -> Result<Vec<Option<StoredMessage>>, StoreError> {
        self.read_paged_of(PagedQueue::Session(client_id), seqs, u64::MAX)
    }

    /// [`Store::read_paged`] stopping once the messages read reach `max_bytes` (encoded):
    /// the answer is then shorter than `seqs`, its first entries, and holds at least one.
    /// A page of large messages read whole would take what the memory limit keeps out:
    /// 256 messages of 2 MiB are half a gigabyte.
    pub fn read_paged_within(
        &self,
        client_id: &str,
        seqs: &[QueueSeq],
        max_bytes: u64,
    ) -> Result<Vec<Option<StoredMessage>>, StoreError> {
        self.read_paged_of(PagedQueue::Session(client_id), seqs, max_bytes)
    }

    /// [`Store::read_paged`] for entries of an owned queue (the paged entries of
    /// [`Recovered::queues`]).
    pub fn read_owned_paged(
        &self,
        queue: &OwnedQueue,
        seqs: &[QueueSeq],
    ) -> Result<Vec<Option<StoredMessage>>, StoreError> {
        self.read_paged_of(PagedQueue::Owned(queue), seqs, u64::MAX)
    }

    /// [`Store::read_owned_paged`] stopping once the messages read reach `max_bytes`, as
    /// [`Store::read_paged_within`] does for a session's entries.
    pub fn read_owned_paged_within(
        &self,
        queue: &OwnedQueue,
        seqs: &[QueueSeq],
        max_bytes: u64,
    ) -> Result<Vec<Option<StoredMessage>>, StoreError> {
        self.read_paged_of(PagedQueue::Owned(queue), seqs, max_bytes)
    }

    fn read_paged_of(
        &self,
        queue: PagedQueue<'_>,
        seqs: &[QueueSeq],
        max_bytes: u64,
    ) -> Result<Vec<Option<StoredMessage>>, StoreError> {
        let db = self.inner.db.lock();
        let db = db.as_ref().ok_or_else(|| StoreError::Unavailable {
            detail: "the store is being reopened after a failed write".into(),
            out_of_space: false,
        })?;
        let txn = db.begin_read().map_err(storage)?;
        let messages = txn.open_table(MESSAGES).map_err(storage)?;
        // Entry by entry, so that a page stops at `max_bytes` before reading the rest.
        match queue {
            PagedQueue::Session(client_id) => {
                let queues = txn.open_table(tables::QUEUES).map_err(storage)?;
                read_entries(&messages, seqs, max_bytes, |seq| {
                    let entry = queues.get((client_id, seq)).map_err(storage)?;
                    Ok(entry.map(|v| bytes::Bytes::copy_from_slice(v.value())))
                })
            }
            PagedQueue::Owned(queue) => {
                // A store that never declared an owned queue may not have the table yet.
                let owned = match txn.open_table(tables::OWNED_QUEUE_ENTRIES) {
                    Ok(table) => Some(table),
                    Err(redb::TableError::TableDoesNotExist(_)) => None,
                    Err(e) => return Err(storage(e)),
                };
                read_entries(&messages, seqs, max_bytes, |seq| {
                    let Some(table) = &owned else {
                        return Ok(None);
                    };
                    let entry = table
                        .get((queue.kind.code(), &*queue.name, seq))
                        .map_err(storage)?;
                    Ok(entry.map(|v| bytes::Bytes::copy_from_slice(v.value())))
                })
            }
        }
    }

    pub fn stats(&self) -> StoreStats {
        let c = &self.inner.counters;
        StoreStats {
            group_commits: c.group_commits.load(Ordering::Relaxed),
            batches_committed: c.batches_committed.load(Ordering::Relaxed),
            ops_committed: c.ops_committed.load(Ordering::Relaxed),
            batches_refused_full: c.batches_refused_full.load(Ordering::Relaxed),
            message_bytes: c.message_bytes.load(Ordering::Relaxed),
            damaged_records: c.damaged_records.load(Ordering::Relaxed),
            reopens: c.reopens.load(Ordering::Relaxed),
            commit_seconds: c.commit_seconds.snapshot(),
            limit_bytes: self.inner.limit_bytes,
        }
    }
}

/// The messages of queue entries `seqs` (`entry` reads one entry's record), in order, until
/// their encoded bytes reach `max_bytes` (at least one is read).
fn read_entries(
    messages: &redb::ReadOnlyTable<u64, &'static [u8]>,
    seqs: &[QueueSeq],
    max_bytes: u64,
    mut entry: impl FnMut(QueueSeq) -> Result<Option<bytes::Bytes>, StoreError>,
) -> Result<Vec<Option<StoredMessage>>, StoreError> {
    let mut messages_read = Vec::with_capacity(seqs.len());
    let mut bytes_read = 0u64;
    for &seq in seqs {
        if bytes_read > 0 && bytes_read >= max_bytes {
            break;
        }
        let Some(entry) = entry(seq)? else {
            messages_read.push(None);
            continue;
        };
        let record = codec::decode_queue_record(&entry)
            .map_err(|e| StoreError::storage("reading a queue entry", e))?;
        let body = match record.body {
            Some(carried) => carried,
            None => match messages.get(record.entry.message_id).map_err(storage)? {
                Some(body) => bytes::Bytes::copy_from_slice(body.value()),
                None => {
                    messages_read.push(None);
                    continue;
                }
            },
        };
        bytes_read = bytes_read.saturating_add(body.len() as u64);
        let message = codec::decode_message(&body)
            .map_err(|e| StoreError::storage("reading a message body", e))?;
        messages_read.push(Some(message));
    }
    Ok(messages_read)
}

/// The first bytes of every redb database file (redb 4's `MAGICNUMBER`, in
/// `tree_store/page_store/header.rs`): redb refuses a non-empty file that does not start with
/// them ("Not a redb database").
const REDB_MAGIC: [u8; 9] = [b'r', b'e', b'd', b'b', 0x1A, 0x0A, 0xA9, 0x0D, 0x0A];

/// Whether the store's files in `dir` that exist (the lock file, the database file) are
/// regular files this user may read and write, as `Store::open` needs: a lock file that is a
/// directory, or files left owned by another user (a broker once started as root), pass the
/// directory's checks and fail at `run`. Looked at with `access(2)`: nothing is opened.
pub fn store_files_writable(dir: &Path) -> Result<(), String> {
    for name in [lock::LOCK_FILE_NAME, DATABASE_FILE_NAME] {
        let path = dir.join(name);
        let shown = path.display();
        match std::fs::metadata(&path) {
            Ok(meta) if !meta.is_file() => {
                return Err(format!("{shown} is not a regular file"));
            }
            Ok(_) => rustix::fs::access(
                &path,
                rustix::fs::Access::READ_OK | rustix::fs::Access::WRITE_OK,
            )
            .map_err(|e| {
                format!(
                    "{shown} cannot be read and written by this user: {}",
                    std::io::Error::from(e)
                )
            })?,
            // A link to nothing is followed when the file is made: fine while the place it
            // names can be made, "No such file or directory" at open when its directory is
            // missing.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let Ok(target) = std::fs::read_link(&path) else {
                    continue;
                };
                let target = dir.join(&target);
                let parent_is_dir = target
                    .parent()
                    .is_some_and(|parent| std::fs::metadata(parent).is_ok_and(|m| m.is_dir()));
                if !parent_is_dir {
                    return Err(format!(
                        "{shown} is a link to {}, whose directory does not exist",
                        target.display()
                    ));
                }
            }
            Err(e) => return Err(format!("cannot inspect {shown}: {e}")),
        }
    }
    Ok(())
}

/// Whether the database file in `dir` is one `Store::open` can open, judged from its first
/// bytes only (`ferromq check` must not open the store, nor take its lock: a running broker
/// may own it, and one starting meanwhile must find it free): `Ok` when it is missing or empty
/// (a new store is made there) or starts as a redb file does, else why not. Whether it is
/// whole is [`database_file_whole`]'s question; whether its contents are sound is only known
/// by opening it.
pub fn database_file_usable(dir: &Path) -> Result<(), String> {
    let path = dir.join(DATABASE_FILE_NAME);
    match read_head(&path)? {
        Some((head, _)) if head.get(..REDB_MAGIC.len()) != Some(&REDB_MAGIC[..]) => Err(format!(
            "the store file {} is not a ferromq store (it does not start as a redb database \
             does)",
            path.display()
        )),
        _ => Ok(()),
    }
}

/// Whether the redb file in `dir` is as long as its header says, as the engine judges it at
/// open (`redb_header_problem`): a copy cut short after a valid header fails `run`. `Ok`
/// when the file is missing, empty or not a redb file ([`database_file_usable`] says that).
/// Read from its header and length only, without opening the store or taking its lock.
pub fn database_file_whole(dir: &Path) -> Result<(), String> {
    let path = dir.join(DATABASE_FILE_NAME);
    match read_head(&path)? {
        Some((head, file_len)) if head.get(..REDB_MAGIC.len()) == Some(&REDB_MAGIC[..]) => {
            match redb_header_problem(&head, file_len) {
                None => Ok(()),
                Some(problem) => Err(format!(
                    "the store file {} {problem}; the broker cannot open it",
                    path.display()
                )),
            }
        }
        _ => Ok(()),
    }
}

/// The first [`REDB_HEADER_BYTES`] of the file at `path` (fewer when it is shorter) and its
/// length; `None` when it is missing or empty. Errors: not a regular file, unreadable.
fn read_head(path: &Path) -> Result<Option<(Vec<u8>, u64)>, String> {
    use std::io::Read;
    let shown = path.display();
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot inspect the store file {shown}: {e}")),
    };
    if !meta.is_file() {
        return Err(format!("the store file {shown} is not a regular file"));
    }
    if meta.len() == 0 {
        return Ok(None);
    }
    let mut head = Vec::with_capacity(REDB_HEADER_BYTES);
    let file_len = std::fs::File::open(path)
        .and_then(|file| {
            // The length of the open file: the header and the length it is compared with
            // come from the same file, also if it is replaced meanwhile.
            let len = file.metadata()?.len();
            file.take(REDB_HEADER_BYTES as u64).read_to_end(&mut head)?;
            Ok(len)
        })
        .map_err(|e| format!("cannot read the store file {shown}: {e}"))?;
    Ok(Some((head, file_len)))
}

/// The bytes of a redb file's header: 64 of geometry, then two commit slots of 128
/// (redb 4.6, `tree_store/page_store/header.rs`, `DB_HEADER_SIZE`).
const REDB_HEADER_BYTES: usize = 320;
/// redb's page size, which `Store` does not change: a file of another is refused at open.
const REDB_PAGE_SIZE: u64 = 4096;
/// Where the first of the header's two commit slots starts, and the size of one.
const REDB_SLOT_0: usize = 64;
const REDB_SLOT_BYTES: usize = 128;
/// The file format redb 4.6 writes and reads (`FILE_FORMAT_VERSION3`).
const REDB_FILE_FORMAT: u8 = 3;
/// Flag of the header's "god byte" (offset 9): the last writer did not close the file, so
/// redb rebuilds the layout from the file's length instead of trusting the stored counts.
const REDB_RECOVERY_REQUIRED: u8 = 2;

/// Why redb 4.6 would refuse to open a file with this `header` and `file_len`, by the rules
/// of its `UnrepairedDatabaseHeader::from_bytes`, `finalize` and `layout_from_file_len`: both
/// commit slots must be of file format 3 (1 and 2 need redb's manual upgrade); a file closed
/// cleanly must be at least as long as the layout its header stores (it is only ever shrunk
/// after a smaller one is written), and any other length must be one redb writes (a
/// super-header page, whole regions, then a partial region of whole pages). `None`: redb
/// accepts them. The text follows "the store file PATH". The fields are read, never trusted
/// for arithmetic (checked).
fn redb_header_problem(header: &[u8], file_len: u64) -> Option<String> {
    if header.len() < REDB_HEADER_BYTES {
        return Some(format!(
            "is damaged: it is {file_len} bytes long, shorter than a redb header \
             ({REDB_HEADER_BYTES} bytes)"
        ));
    }
    let u32_at = |offset: usize| {
        header
            .get(offset..offset + 4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map_or(0, |b| u64::from(u32::from_le_bytes(b)))
    };
    let recovery_required = header[9] & REDB_RECOVERY_REQUIRED != 0;
    let page_size = u32_at(12);
    let region_header_pages = u32_at(16);
    let region_max_data_pages = u32_at(20);
    let full_regions = u32_at(24);
    let trailing_data_pages = u32_at(28);
    if page_size != REDB_PAGE_SIZE || region_max_data_pages == 0 {
        return Some(format!(
            "is damaged: its header says a page size of {page_size} and \
             {region_max_data_pages} pages per region"
        ));
    }
    // Each commit slot starts with its file format; redb reads 3 and asks for a manual
    // upgrade of 1 and 2.
    for slot in [REDB_SLOT_0, REDB_SLOT_0 + REDB_SLOT_BYTES] {
        match header[slot] {
            REDB_FILE_FORMAT => {}
            old @ (1 | 2) => {
                return Some(format!(
                    "is in redb's file format {old}, which this broker's engine (format \
                     {REDB_FILE_FORMAT}) opens only after redb's manual upgrade"
                ))
            }
            other => {
                return Some(format!(
                    "is damaged: a commit slot of its header says file format {other}"
                ))
            }
        }
    }
    let full_region_bytes = (region_header_pages + region_max_data_pages) * page_size;
    if !recovery_required {
        let trailing_bytes = if trailing_data_pages > 0 {
            (region_header_pages + trailing_data_pages) * page_size
        } else {
            0
        };
        let stored_len = full_regions
            .checked_mul(full_region_bytes)
            .and_then(|regions| regions.checked_add(page_size + trailing_bytes));
        match stored_len {
            Some(stored) if file_len < stored => {
                return Some(format!(
                    "is damaged: it is {file_len} bytes long, but its header says {stored} \
                     (cut short: a partial copy, or a full disk while it was copied)"
                ))
            }
            Some(stored) if file_len == stored => return None,
            _ => {}
        }
    }
    // Recovery (or a file longer than its header says): the layout is rebuilt from the length.
    let min_len = page_size * (region_header_pages + 2);
    if file_len < min_len {
        return Some(format!(
            "is damaged: it is {file_len} bytes long, shorter than the smallest redb \
             database ({min_len} bytes)"
        ));
    }
    let mut remaining = file_len - page_size;
    remaining -= (remaining / full_region_bytes) * full_region_bytes;
    let whole = if remaining >= (region_header_pages + 1) * page_size {
        (remaining - region_header_pages * page_size).is_multiple_of(page_size)
    } else {
        remaining == 0
    };
    if whole {
        None
    } else {
        Some(format!(
            "is damaged: its length ({file_len} bytes) is not one redb writes (cut short \
             or padded by a copy)"
        ))
    }
}

/// Opens (creating if needed) the database file at `path`; true when the engine had to
/// repair it (after a crash or a failed write). Used at open and to reopen after a failed
/// write, under the directory lock held by the [`Store`].
pub(crate) fn open_database(path: &Path) -> Result<(Database, bool), StoreError> {
    let repaired = Arc::new(AtomicBool::new(false));
    let repaired_flag = repaired.clone();
    let db = Database::builder()
        .set_cache_size(CACHE_SIZE_BYTES)
        .set_repair_callback(move |_| repaired_flag.store(true, Ordering::Relaxed))
        .create(path)
        .map_err(|e| StoreError::Open {
            path: path.to_path_buf(),
            detail: format!(
                "{e} (if the file is damaged beyond repair, move it aside to start empty)"
            ),
        })?;
    Ok((db, repaired.load(Ordering::Relaxed)))
}

/// The persisted next id, and the bytes of stored bodies.
pub(crate) fn read_counters(db: &Database) -> Result<(u64, u64), StoreError> {
    let txn = db.begin_read().map_err(storage)?;
    let next_id = match txn.open_table(META) {
        Ok(meta) => meta
            .get(NEXT_ID_KEY)
            .map_err(storage)?
            .map(|v| v.value())
            .unwrap_or(1),
        Err(redb::TableError::TableDoesNotExist(_)) => 1,
        Err(e) => return Err(storage(e)),
    };
    // The writer takes every id at or above `next_id` for unused (it neither looks a new
    // body's id up nor reads its reference count), so `next_id` is raised above the highest
    // id the tables hold even when the counter says less (a store damaged or edited by hand).
    let mut above_every_id = 1u64;
    let mut message_bytes = match txn.open_table(MESSAGES) {
        Ok(messages) => {
            let mut total = 0u64;
            for item in messages.iter().map_err(storage)? {
                let (id, body) = item.map_err(storage)?;
                total += body.value().len() as u64;
                above_every_id = above_every_id.max(id.value().saturating_add(1));
            }
            total
        }
        Err(redb::TableError::TableDoesNotExist(_)) => 0,
        Err(e) => return Err(storage(e)),
    };
    // Bodies carried in session queue entries (`Op::PutQueued`) count as stored bodies too.
    match txn.open_table(tables::QUEUES) {
        Ok(queues) => {
            for item in queues.iter().map_err(storage)? {
                let (_, value) = item.map_err(storage)?;
                let raw = bytes::Bytes::copy_from_slice(value.value());
                if let Ok(codec::QueueRecord {
                    entry,
                    body: Some(body),
                }) = codec::decode_queue_record(&raw)
                {
                    message_bytes += body.len() as u64;
                    above_every_id = above_every_id.max(entry.message_id.saturating_add(1));
                }
            }
        }
        Err(redb::TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(storage(e)),
    }
    match txn.open_table(REFS) {
        Ok(refs) => {
            if let Some((id, _)) = refs.last().map_err(storage)? {
                above_every_id = above_every_id.max(id.value().saturating_add(1));
            }
        }
        Err(redb::TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(storage(e)),
    }
    Ok((next_id.max(above_every_id), message_bytes))
}

#[cfg(test)]
mod header_tests {
    use super::*;

    /// The magic is redb's own: a file the engine makes passes, so an engine upgrade that
    /// changed it would fail here rather than make `check` refuse good stores.
    #[test]
    fn a_file_the_engine_made_passes_and_junk_does_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(database_file_usable(dir.path()), Ok(()));
        let path = dir.path().join(DATABASE_FILE_NAME);
        std::fs::write(&path, b"").expect("write");
        assert_eq!(database_file_usable(dir.path()), Ok(()));
        std::fs::remove_file(&path).expect("rm");
        drop(Database::create(&path).expect("create"));
        assert_eq!(database_file_usable(dir.path()), Ok(()));
        for junk in [&b"junk\n"[..], b"r", b"SQLite format 3\0"] {
            std::fs::write(&path, junk).expect("write");
            let refused = database_file_usable(dir.path()).expect_err("junk passed");
            assert!(refused.contains("is not a ferromq store"), "{refused}");
        }
        std::fs::remove_file(&path).expect("rm");
        std::fs::create_dir(&path).expect("mkdir");
        assert!(database_file_usable(dir.path()).is_err());
    }

    /// A database of a few regions' worth of pages, and a copy of it taken while it was open
    /// (its header then says "recovery required", as a crashed broker's does).
    fn closed_and_open_copies(dir: &Path) -> Vec<Vec<u8>> {
        const TABLE: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("t");
        let path = dir.join("source.redb");
        let db = Database::create(&path).expect("create");
        let txn = db.begin_write().expect("write");
        {
            let mut table = txn.open_table(TABLE).expect("table");
            for i in 0..64u64 {
                table.insert(i, &[7u8; 40_000][..]).expect("insert");
            }
        }
        txn.commit().expect("commit");
        let open_copy = std::fs::read(&path).expect("read");
        drop(db);
        let closed = std::fs::read(&path).expect("read");
        vec![closed, open_copy]
    }

    /// `check` judges a cut or padded store file as the engine does when `run` opens it: for
    /// each length of a file closed cleanly, the header check refuses exactly the files
    /// `open_database` fails on. A file left open (a crash, a copy of a running store) is
    /// rebuilt by the engine from its pages: the header check refuses only lengths no layout
    /// has, never one the engine opens; a cut at a region boundary is found by opening it.
    #[test]
    fn a_cut_store_file_is_refused_from_its_header_as_the_engine_refuses_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let copies = closed_and_open_copies(dir.path());
        let store = dir.path().join("store");
        std::fs::create_dir(&store).expect("mkdir");
        let path = store.join(DATABASE_FILE_NAME);
        let mut refused = 0;
        let (mut open_failures, mut open_refused) = (0, 0);
        for (copy, bytes) in copies.iter().enumerate() {
            let closed = copy == 0;
            let full = bytes.len();
            let page = REDB_PAGE_SIZE as usize;
            let mut lengths = vec![5, 9, 100, 320, 4095, page, page + 1, 2 * page, 3 * page];
            lengths.extend([full / 2, full - page, full - 1, full, full + 1, full + page]);
            lengths.extend((4..full / page).step_by(7).map(|pages| pages * page));
            for len in lengths {
                let mut cut = bytes.clone();
                cut.resize(len, 0);
                std::fs::write(&path, &cut).expect("write");
                let judged = database_file_usable(&store).and(database_file_whole(&store));
                let opened = open_database(&path).map(drop);
                let agrees = if closed {
                    judged.is_ok() == opened.is_ok()
                } else {
                    judged.is_ok() || opened.is_err()
                };
                assert!(
                    agrees,
                    "{len} of {full} bytes (closed: {closed}): check says {judged:?}, open \
                     says {:?}",
                    opened.err()
                );
                if !closed && opened.is_err() {
                    open_failures += 1;
                }
                if let Err(problem) = judged {
                    if !closed {
                        open_refused += 1;
                    }
                    assert!(
                        problem.contains("is damaged") || problem.contains("not a ferromq store"),
                        "{problem}"
                    );
                    refused += 1;
                }
            }
        }
        assert!(refused > 10, "only {refused} lengths were refused");
        println!(
            "open copy: check refused {open_refused} of the {open_failures} cuts open refused"
        );

        // A commit slot of another file format: refused by both, an old one named as such.
        for (offset, format) in [(64, 2u8), (192, 1), (64, 9)] {
            let mut other = copies[0].clone();
            other[offset] = format;
            std::fs::write(&path, &other).expect("write");
            let judged = database_file_whole(&store).expect_err("another format passed");
            assert!(open_database(&path).is_err(), "format {format} opened");
            let expected = if format < 3 {
                format!("is in redb's file format {format}")
            } else {
                format!("is damaged: a commit slot of its header says file format {format}")
            };
            assert!(judged.contains(&expected), "{judged}");
        }
    }
}
