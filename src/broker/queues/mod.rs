//! Queues: ActiveMQ's point-to-point destinations (STOMP `/queue/x`), broker-wide and
//! protocol-free. The STOMP connection (and later a cluster link) calls [`Queues`]; the rules
//! of one queue are in `queue.rs`, the dead-letter and redelivery policies in `policy.rs` (over `config::delivery_policy`).
//!
//! ActiveMQ 5.17's semantics, as kept here (docs/queues.md says more):
//! - Each message goes to exactly one consumer, in order, round-robin over the consumers that
//!   have room in their prefetch window (`activemq.prefetchSize`, `queuePrefetch`, 1000) and
//!   whose filter (a JMS selector) accepts it; a message no consumer accepts stays queued.
//!   An exclusive consumer (`activemq.exclusive`) gets everything while it lives.
//! - A message is kept until acknowledged. What a consumer held unacknowledged goes back to
//!   the queue, in its original place, when the consumer leaves; what it had been given is
//!   marked redelivered (its delivery count goes up).
//! - A refused message (STOMP NACK, ActiveMQ's poison ack) and an expired one go to the
//!   dead-letter queue (`ActiveMQ.DLQ` by default) or are dropped, by the queue's policy; with
//!   a redelivery plugin policy a refused message comes back after a delay first.
//! - Persistent messages (STOMP `persistent:true`, QoS 1 here) are kept through the
//!   durability engine before a send is reported done, as entries of
//!   [`QueueOwner::Queue`]; an acknowledgement removes them; a move to a dead-letter queue is
//!   one commit (never lost, never twice). They are recovered at start ([`Queues::restore`]).
//!   Non-persistent messages live in memory only. Both are charged to `memoryUsage`; a send
//!   the broker cannot keep is refused ([`SendError`]), never accepted and dropped.
//! - A STOMP transaction's sends and acknowledgements are staged and kept by one commit with
//!   the rest of the transaction (`staged.rs`).
//!
//! Locks: one registry lock (name -> queue, taken briefly) and one mutex per queue, never
//! held across an await nor two at once; store commits and wake-ups happen after release.
//! New messages enter a queue in the order of their sends, not of the store's answers
//! (`landing.rs`).

pub mod access;
mod consumer;
pub(crate) mod dead_letter;
mod landing;
mod queue;
mod selector_filter;
mod shared;
mod staged;
mod virtual_copies;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Instant;

use arc_swap::ArcSwap;
use parking_lot::{Mutex, RwLock};

pub use access::QueueRefusal;
pub use consumer::{ConsumerId, ConsumerSpec, MessageFilter, QueueDelivery, QueuedInfo};
pub use queue::{AckError, QueueCounts};
pub use selector_filter::SelectorFilter;
pub use shared::{BrowseFuture, DepthsFuture, PurgeFuture, SharedPurge, SharedQueues, TopicSend};
pub use staged::{QueueStaging, TakenDeliveries};
pub use virtual_copies::QueueCopies;

use crate::broker::durability::{
    now_ms, Change, Commit, Durability, DurabilityError, PagedBody, QueueOwner, QueueSeq,
    QueuedFor, RetainedChange,
};
use crate::broker::message::Message;
use crate::broker::routing::memory::MemoryGauge;
use crate::broker::session::queue::QueuedMessage;
use crate::config::delivery_policy::{DeliveryPolicy, Destination};
use crate::protocol::QoS;
use queue::{Ctx, Entry, Outcome, PageRead, QueueState};

/// Why a send was refused: nothing of it was kept; the sender is told (STOMP ERROR) or
/// paused, and may send again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// `memoryUsage` reached.
    #[error("messages held in memory reached the memoryUsage limit")]
    MemoryFull,
    /// The durability engine has no room (`storeUsage`, disk) or cannot write.
    #[error("{0}")]
    Durability(DurabilityError),
}

/// One queue: its name, policy and state.
pub struct Queue {
    name: Arc<str>,
    owner: QueueOwner,
    /// The queue as the configuration names destinations (for its policies).
    destination: Destination,
    /// A dead-letter queue (nothing is dead-lettered out of it, as in ActiveMQ).
    dead_letter_queue: AtomicBool,
    /// Its record exists in the durability engine (a commit declaring it succeeded).
    declared: AtomicBool,
    /// The broker's delivery policy (shared by every queue).
    policies: Arc<ArcSwap<DeliveryPolicy>>,
    /// Kept messages beyond this many waiting ones are paged out (see `QueueState::insert`).
    page_after: Option<usize>,
    /// The broker's `memoryUsage` (shared by every queue): it pages and gates page reads too.
    memory: Arc<MemoryGauge>,
    /// A temporary queue (`/temp-queue/`): nothing of it is kept in the store, it ends with
    /// the connection that created it.
    temporary: bool,
    state: Mutex<QueueState>,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Queue {
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// Run `f` on the state under the queue's lock with the rules' context and `now`;
    /// returns its result and what to do after the lock is released.
    fn with<R>(
        &self,
        f: impl FnOnce(&mut QueueState, Instant, &Ctx<'_>, &mut Outcome) -> R,
    ) -> (R, Outcome) {
        let policy = self.policies.load();
        let ctx = Ctx {
            name: &self.name,
            destination: &self.destination,
            policy: &policy,
            is_dead_letter_queue: self.dead_letter_queue.load(Ordering::Relaxed),
            page_after: self.page_after,
            memory: &self.memory,
        };
        let mut out = Outcome::default();
        let result = f(&mut self.state.lock(), Instant::now(), &ctx, &mut out);
        (result, out)
    }
}

/// A queue's numbers for the web console and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueStats {
    pub name: Arc<str>,
    /// Messages held: ready, dispatched and unacknowledged.
    pub depth: usize,
    /// Of `depth`: dispatched to a consumer and not acknowledged.
    pub in_flight: usize,
    pub consumers: usize,
    pub counts: QueueCounts,
}

/// The figures of every queue together (`/metrics`, `$SYS`): bounded, no per-queue label.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueTotals {
    /// Queues (temporary ones included).
    pub queues: usize,
    /// Messages held over all queues: ready, dispatched and unacknowledged.
    pub messages: usize,
    /// The depth of the deepest queue.
    pub deepest: usize,
}

/// Every queue of the broker (see the module documentation).
pub struct Queues {
    me: Weak<Queues>,
    queues: RwLock<HashMap<Arc<str>, Arc<Queue>>>,
    durability: Arc<dyn Durability>,
    memory: Arc<MemoryGauge>,
    /// Dead letters, redelivery and prefetch (`Config.delivery`), swapped by a reload.
    policies: Arc<ArcSwap<DeliveryPolicy>>,
    next_consumer: AtomicU64,
    /// The store shared by the brokers of a cluster keeps the (non-temporary) queues.
    shared: std::sync::OnceLock<Arc<dyn SharedQueues>>,
    /// Which queues take copies of what is published to a topic (virtual topics).
    virtual_index: virtual_copies::VirtualIndex,
}

impl std::fmt::Debug for Queues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queues")
            .field("queues", &self.queues.read().len())
            .finish_non_exhaustive()
    }
}

/// Kept messages a queue holds in memory while they wait; the later ones are paged out (the
/// store keeps them) and read back when dispatched. As a session's pending limit, and as for
/// a session, none more once `memoryUsage` is half full (`QueueState::insert`).
pub const PAGE_AFTER_WAITING: usize = crate::broker::routing::limits::DEFAULT_PENDING_MESSAGE_LIMIT;

/// How long a queue waits before reading payloads back again after the store failed to.
const PAGE_IN_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// A commit-like answer: done at once or once the work behind it finished.
type Pending = Pin<Box<dyn Future<Output = Result<(), DurabilityError>> + Send>>;

impl Queues {
    /// A new entry of `queue` for `message`, charged to the memory gauge, with the next
    /// sequence number; kept (stored) when persistent and the queue is not temporary.
    fn new_entry(&self, queue: &Queue, message: Message, persistent: bool) -> Entry {
        Entry {
            seq: self.durability.next_seq(),
            message: self.memory.charge(message),
            persistent,
            kept: persistent && !queue.temporary,
            paged: false,
            redeliveries: 0,
            accepted_ms: now_ms(),
            not_before: None,
        }
    }

    pub fn new(
        durability: Arc<dyn Durability>,
        memory: Arc<MemoryGauge>,
        policies: DeliveryPolicy,
    ) -> Arc<Queues> {
        Arc::new_cyclic(|me| Queues {
            me: me.clone(),
            queues: RwLock::new(HashMap::new()),
            durability,
            memory,
            policies: Arc::new(ArcSwap::from_pointee(policies)),
            next_consumer: AtomicU64::new(1),
            shared: std::sync::OnceLock::new(),
            virtual_index: virtual_copies::VirtualIndex::default(),
        })
    }

    /// A reloaded configuration's delivery policy (`ConfigDiff.delivery`): applies to what
    /// happens next (a NACK, an expiry, a new consumer's default prefetch).
    pub fn set_delivery_policy(&self, policy: DeliveryPolicy) {
        self.policies.store(Arc::new(policy));
    }

    /// The delivery policy in force (dead letters of topic subscriptions ask it too).
    pub fn delivery_policy(&self) -> Arc<DeliveryPolicy> {
        self.policies.load_full()
    }

    /// Does the queue `name` (ActiveMQ name) exist?
    pub fn exists(&self, name: &str) -> bool {
        self.queues.read().contains_key(name)
    }

    /// Every queue name, sorted.
    pub fn names(&self) -> Vec<Arc<str>> {
        let mut names: Vec<_> = self.queues.read().keys().cloned().collect();
        names.sort();
        names
    }

    /// The queue `name`, created (and its record declared in the background) if new.
    pub fn get_or_create(&self, name: &str) -> Arc<Queue> {
        if let Some(q) = self.queues.read().get(name) {
            return q.clone();
        }
        let (queue, created) = {
            let mut queues = self.queues.write();
            match queues.get(name) {
                Some(q) => (q.clone(), false),
                None => {
                    let q = Arc::new(self.new_queue(name));
                    queues.insert(q.name.clone(), q.clone());
                    (q, true)
                }
            }
        };
        if created {
            tracing::debug!(queue = %name, "queue created");
            self.declare_in_background(&queue);
            self.index_virtual(&queue);
        }
        queue
    }

    fn new_queue(&self, name: &str) -> Queue {
        let name: Arc<str> = Arc::from(name);
        let destination = Destination::queue(&*name);
        // A dead-letter queue by configuration (also flagged when a strategy first uses one).
        let dead_letter_queue = self
            .policies
            .load()
            .is_dead_letter_destination(&destination);
        Queue {
            owner: QueueOwner::Queue(name.clone()),
            dead_letter_queue: AtomicBool::new(dead_letter_queue),
            declared: AtomicBool::new(false),
            temporary: false,
            state: Mutex::new(QueueState::new(QueueOwner::Queue(name.clone()))),
            policies: self.policies.clone(),
            page_after: self.durability.keeps_bodies().then_some(PAGE_AFTER_WAITING),
            memory: self.memory.clone(),
            destination,
            name,
        }
    }

    /// Keep the queue's record (so it exists after a restart, as in ActiveMQ's store).
    fn declare_in_background(&self, queue: &Arc<Queue>) {
        if self.shared().is_some() {
            // The shared store keeps a queue's messages, not a record of it.
            return;
        }
        let commit = self.durability.commit(vec![Change::QueueDeclared {
            owner: queue.owner.clone(),
        }]);
        let queue = queue.clone();
        match commit {
            Commit::Done(Ok(())) => queue.declared.store(true, Ordering::Relaxed),
            Commit::Done(Err(e)) => tracing::warn!(queue = %queue.name, "queue not recorded: {e}"),
            Commit::Pending(done) => {
                if let Ok(handle) = tokio::runtime::Handle::try_current() {
                    handle.spawn(async move {
                        match done.await {
                            Ok(()) => queue.declared.store(true, Ordering::Relaxed),
                            Err(e) => {
                                tracing::warn!(queue = %queue.name, "queue not recorded: {e}")
                            }
                        }
                    });
                }
            }
        }
    }

    /// Create temporary queue `name` (the connection names it uniquely, e.g. after its
    /// connection id): kept in memory only, persistent messages included (as ActiveMQ's
    /// temporary destinations), until [`Queues::delete`]. `false`: the name is taken.
    pub fn create_temporary(&self, name: &str) -> bool {
        let mut queues = self.queues.write();
        if queues.contains_key(name) {
            return false;
        }
        // Temporary queues have their own policy entries (`tempQueue=`), as in ActiveMQ's
        // policy map, and are never dead-letter queues.
        let queue = Queue {
            temporary: true,
            destination: Destination {
                kind: crate::config::model::DestinationKind::TempQueue,
                name: name.to_owned(),
            },
            dead_letter_queue: AtomicBool::new(false),
            ..self.new_queue(name)
        };
        queues.insert(queue.name.clone(), Arc::new(queue));
        drop(queues);
        if let Some(shared) = self.shared() {
            shared.temporary_created(name);
        }
        true
    }

    /// Whether `name` is a temporary queue.
    pub fn is_temporary(&self, name: &str) -> bool {
        self.queues.read().get(name).is_some_and(|q| q.temporary)
    }

    /// Delete queue `name` with every message it holds (a temporary queue whose connection
    /// closed, or an admin action); its consumers get nothing more. `false`: no such queue.
    pub fn delete(&self, name: &str) -> bool {
        let Some(queue) = self.queues.write().remove(name) else {
            return false;
        };
        self.unindex_virtual(&queue);
        if let (true, Some(shared)) = (queue.temporary, self.shared()) {
            shared.temporary_deleted(name);
        }
        let (_, mut out) = queue.with(|s, _, _, out| s.purge(out));
        // Entries delivered and unacknowledged go with the queue's record.
        out.changes.clear();
        if !queue.temporary {
            out.changes.push(Change::QueueDeleted {
                owner: queue.owner.clone(),
            });
        }
        self.settle_in_background(&queue, out);
        true
    }

    /// Queues that exist by configuration (`<destinations><queue physicalName=...>`).
    pub fn declare<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> usize {
        let mut created = 0;
        for name in names {
            if !self.exists(name) {
                self.get_or_create(name);
                created += 1;
            }
        }
        created
    }

    /// Put back what the durability engine recovered: named queues with their entries (all
    /// persistent; entries that were delivered and unacknowledged at the stop are ready again,
    /// not marked redelivered: ActiveMQ does not keep the redelivery counter by default).
    /// Other owners are ignored. Returns (queues, messages) restored.
    pub fn restore(&self, recovered: Vec<(QueueOwner, Vec<QueuedMessage>)>) -> (usize, usize) {
        let (mut queues, mut messages) = (0, 0);
        for (owner, entries) in recovered {
            let QueueOwner::Queue(name) = owner else {
                continue;
            };
            let queue = Arc::new(self.new_queue(&name));
            queue.declared.store(true, Ordering::Relaxed);
            {
                let mut state = queue.state.lock();
                for item in entries {
                    let Some(seq) = item.seq else { continue };
                    state.restore(Entry {
                        seq,
                        message: item.message,
                        persistent: true,
                        kept: true,
                        paged: item.paged,
                        redeliveries: 0,
                        accepted_ms: now_ms(),
                        not_before: None,
                    });
                    messages += 1;
                }
            }
            self.queues
                .write()
                .insert(queue.name.clone(), queue.clone());
            self.index_virtual(&queue);
            queues += 1;
        }
        (queues, messages)
    }

    /// Send `message` to queue `name` (created if new: check [`Queues::may_use`] first).
    /// Persistent when its QoS is 1 or 2. `Err`: refused, nothing kept. `Ok(commit)`: the
    /// message is queued once `commit` is done (at once for a non-persistent message or a
    /// memory-only engine; after the store's fsync otherwise): report the send done (STOMP
    /// RECEIPT) only then. Dropping the commit unawaited still queues it.
    pub fn send(&self, name: &str, message: Message) -> Result<Commit, SendError> {
        let persistent = message.qos != QoS::AtMostOnce;
        if self.memory.is_full() {
            return Err(SendError::MemoryFull);
        }
        if persistent {
            let incoming = (message.topic.len() + message.payload.len()) as u64;
            self.durability
                .check_room(incoming)
                .map_err(SendError::Durability)?;
        }
        if let Some(targets) = self.composite_targets(name) {
            return self.send_fanned(name, targets, message, persistent);
        }
        let queue = self.get_or_create(name);
        self.send_to(&queue, message, persistent)
    }

    /// [`Queues::send`] to temporary queue `name` (it must exist: see
    /// [`Queues::create_temporary`]). `None`: there is no such temporary queue.
    pub fn send_temporary(
        &self,
        name: &str,
        message: Message,
    ) -> Option<Result<Commit, SendError>> {
        let queue = self
            .queues
            .read()
            .get(name)
            .filter(|q| q.temporary)
            .cloned()?;
        let persistent = message.qos != QoS::AtMostOnce;
        if self.memory.is_full() {
            return Some(Err(SendError::MemoryFull));
        }
        Some(self.send_to(&queue, message, persistent))
    }

    /// [`Queues::send`] (or [`Queues::send_temporary`] when `temporary`) of a message whose
    /// room was already granted with the rest of a STOMP transaction: not checked against
    /// `memoryUsage`/`storeUsage` again, so a transaction admitted whole is applied whole.
    /// `None`: there is no such temporary queue.
    pub fn send_admitted(
        &self,
        name: &str,
        temporary: bool,
        message: Message,
    ) -> Option<Result<Commit, SendError>> {
        let persistent = message.qos != QoS::AtMostOnce;
        let queue = if temporary {
            self.queues
                .read()
                .get(name)
                .filter(|q| q.temporary)
                .cloned()?
        } else {
            if let Some(targets) = self.composite_targets(name) {
                return Some(self.send_fanned(name, targets, message, persistent));
            }
            self.get_or_create(name)
        };
        Some(self.send_to(&queue, message, persistent))
    }

    fn send_to(
        &self,
        queue: &Arc<Queue>,
        message: Message,
        persistent: bool,
    ) -> Result<Commit, SendError> {
        if let Some(shared) = self.shared().filter(|_| !queue.temporary) {
            // Stored for every broker; queued here only if a local consumer takes it.
            let stored = shared.store(&queue.name, &message);
            return Ok(self.count_shared_store(queue, stored));
        }
        let entry = self.new_entry(queue, message, persistent);
        let queue = queue.clone();
        if !entry.kept {
            return Ok(self.land(&queue, entry));
        }
        // Its place in the queue's order is taken now, before the store answers (`landing.rs`).
        let place = self.reserve(&queue, entry.seq);
        let commit = self.durability.commit(self.kept(&queue, &entry));
        match commit {
            Commit::Done(Ok(())) => {
                queue.declared.store(true, Ordering::Relaxed);
                Ok(place.fill(entry))
            }
            Commit::Done(Err(e)) => Err(SendError::Durability(e)),
            Commit::Pending(done) => Ok(self.spawned(async move {
                done.await?;
                queue.declared.store(true, Ordering::Relaxed);
                place.fill(entry).wait().await
            })),
        }
    }

    /// The changes that keep `entry` in `queue` (declaring the queue while its record is not
    /// known to exist).
    fn kept(&self, queue: &Queue, entry: &Entry) -> Vec<Change> {
        let mut changes = Vec::with_capacity(2);
        if !queue.declared.load(Ordering::Relaxed) {
            changes.push(Change::QueueDeclared {
                owner: queue.owner.clone(),
            });
        }
        changes.push(Change::Message {
            message: entry.message.clone(),
            retained: RetainedChange::Unchanged,
            queued_for: vec![QueuedFor {
                owner: queue.owner.clone(),
                seq: entry.seq,
                qos: QoS::AtLeastOnce,
                retain: false,
                subscription_id: None,
            }],
        });
        changes
    }

    fn insert(&self, queue: &Arc<Queue>, entry: Entry) -> Commit {
        let ((), out) = queue.with(|s, now, ctx, out| s.insert(entry, now, ctx, out));
        self.settle(queue, out)
    }

    /// A new consumer of queue `name` (created if new: check [`Queues::may_use`] first).
    /// Messages dispatched to it are announced on `spec.wake`; [`QueueConsumer::take`] them.
    pub fn subscribe(&self, name: &str, spec: ConsumerSpec) -> QueueConsumer {
        let queue = self.get_or_create(name);
        let id = self.next_consumer.fetch_add(1, Ordering::Relaxed);
        let (consumers, out) = queue.with(|s, now, ctx, out| {
            s.add_consumer(id, spec, now, ctx, out);
            s.consumer_count()
        });
        self.settle_in_background(&queue, out);
        if let Some(shared) = self.shared().filter(|_| !queue.temporary) {
            shared.consumers(&queue.name, consumers);
        }
        QueueConsumer {
            queues: self.me.clone(),
            queue,
            id,
            closed: AtomicBool::new(false),
        }
    }

    /// The numbers of queue `name`.
    pub fn stats(&self, name: &str) -> Option<QueueStats> {
        let queue = self.queues.read().get(name).cloned()?;
        let state = queue.state.lock();
        Some(QueueStats {
            name: queue.name.clone(),
            depth: state.depth(),
            in_flight: state.in_flight(),
            consumers: state.consumer_count(),
            counts: state.counts,
        })
    }

    /// The depths of every queue summed, and the deepest (one queue locked at a time).
    pub fn totals(&self) -> QueueTotals {
        let queues: Vec<Arc<Queue>> = self.queues.read().values().cloned().collect();
        queues.iter().fold(
            QueueTotals {
                queues: queues.len(),
                ..QueueTotals::default()
            },
            |mut totals, queue| {
                let depth = queue.state.lock().depth();
                totals.messages += depth;
                totals.deepest = totals.deepest.max(depth);
                totals
            },
        )
    }

    /// Up to `max` messages of queue `name` in order, without consuming them (paged-out
    /// payloads are empty).
    pub fn browse(&self, name: &str, max: usize) -> Vec<QueueDelivery> {
        let Some(queue) = self.queues.read().get(name).cloned() else {
            return Vec::new();
        };
        let found = queue.state.lock().browse(max);
        found
    }

    /// A queue browser's snapshot of queue `name` (STOMP `browser:true`, a JMS
    /// `QueueBrowser`): its first `max` messages `filter` accepts, in queue order, without
    /// taking them; each with whether its payload is paged out. `None`: no such queue.
    pub fn browse_selected(
        &self,
        name: &str,
        max: usize,
        filter: Option<&dyn MessageFilter>,
    ) -> Option<(QueueOwner, Vec<(QueueDelivery, bool)>)> {
        let queue = self.queues.read().get(name).cloned()?;
        let found = queue.state.lock().browse_selected(max, filter);
        Some((queue.owner.clone(), found))
    }

    /// Remove every message of queue `name` not delivered to a consumer; returns how many.
    pub fn purge(&self, name: &str) -> usize {
        let Some(queue) = self.queues.read().get(name).cloned() else {
            return 0;
        };
        let (count, out) = queue.with(|s, _, _, out| s.purge(out));
        self.settle_in_background(&queue, out);
        count
    }

    /// Expire what expired in every queue (ActiveMQ's `expireMessagesPeriod` sweep).
    pub fn sweep_expired(&self) {
        let queues: Vec<Arc<Queue>> = self.queues.read().values().cloned().collect();
        for queue in queues {
            let ((), out) = queue.with(|s, now, ctx, out| s.sweep(now, ctx, out));
            self.settle_in_background(&queue, out);
        }
    }

    /// Dispatch queue `name` again (a redelivery delay passed).
    fn redispatch(&self, queue: &Arc<Queue>) {
        let ((), out) = queue.with(|s, now, ctx, out| s.dispatch(now, ctx, out));
        self.settle_in_background(queue, out);
    }

    fn settle_in_background(&self, queue: &Arc<Queue>, out: Outcome) {
        let commit = self.settle(queue, out);
        if let Commit::Pending(done) = commit {
            self.spawned(async move {
                if let Err(e) = done.await {
                    tracing::warn!("queue update not kept: {e}");
                }
                Ok(())
            });
        } else if let Commit::Done(Err(e)) = commit {
            tracing::warn!("queue update not kept: {e}");
        }
    }

    /// Do what an operation left to do after the queue's lock: wake consumers, keep removals,
    /// move dead letters, arm the redelivery timer. The commit is done once all of it is kept.
    fn settle(&self, queue: &Arc<Queue>, out: Outcome) -> Commit {
        for wake in &out.wake {
            wake.notify_one();
        }
        let mut waits: Vec<Commit> = Vec::new();
        if !out.changes.is_empty() {
            waits.push(self.durability.commit(out.changes));
        }
        for dead in out.dead_letters {
            waits.push(self.move_dead_letter(queue, dead));
        }
        if let Some(at) = out.retry_at {
            self.redispatch_at(queue, at);
        }
        for page in out.page_in {
            self.page_in(queue, page);
        }
        join(waits)
    }

    fn redispatch_at(&self, queue: &Arc<Queue>, at: Instant) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (me, queue) = (self.me.clone(), Arc::downgrade(queue));
        handle.spawn(async move {
            tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
            if let (Some(queues), Some(queue)) = (me.upgrade(), queue.upgrade()) {
                queues.redispatch(&queue);
            }
        });
    }

    /// Read back one page of a consumer's dispatched messages that are paged out (a long
    /// queue, or one filled while `memoryUsage` was half full); the consumer is woken once
    /// they are in memory, and its next page is asked for then.
    fn page_in(&self, queue: &Arc<Queue>, page: PageRead) {
        let read = self
            .durability
            .read_queue_payloads(&queue.owner, page.seqs.clone());
        let (me, queue) = (self.me.clone(), queue.clone());
        self.spawned(async move {
            let result = read.await;
            let Some(queues) = me.upgrade() else {
                return Ok(());
            };
            let ((), out) = match result {
                Ok(payloads) => queue.with(|state, _, ctx, out| {
                    let loaded = queues.read_back(&queue, state, &page.seqs, payloads);
                    state.loaded(page.consumer, loaded, ctx, out);
                }),
                Err(e) => {
                    tracing::warn!(queue = %queue.name, "queued payloads not read back, retrying: {e}");
                    let retry = Instant::now() + PAGE_IN_RETRY;
                    queue.with(|state, _, _, out| {
                        state.load_failed(page.consumer, &page.seqs, retry, out);
                    })
                }
            };
            queues.settle_in_background(&queue, out);
            Ok(())
        });
    }

    /// The messages of entries `seqs` with the payloads read back, charged to `memoryUsage`:
    /// as many as the store read (it may stop a page short), `None` for one gone from it.
    fn read_back(
        &self,
        queue: &Queue,
        state: &QueueState,
        seqs: &[QueueSeq],
        payloads: Vec<Option<PagedBody>>,
    ) -> Vec<(QueueSeq, Option<Message>)> {
        let mut loaded = Vec::with_capacity(payloads.len());
        for (seq, payload) in seqs.iter().zip(payloads) {
            // A queue's envelope keeps its properties (selectors read them).
            let message = payload.and_then(|body| {
                let envelope = state.envelope(*seq)?;
                Some(self.memory.charge(Message {
                    payload: body.payload,
                    ..envelope
                }))
            });
            if message.is_none() {
                tracing::warn!(queue = %queue.name, seq, "queued message gone from the store");
            }
            loaded.push((*seq, message));
        }
        loaded
    }

    /// Move a message from `from` to its dead-letter queue: for a persistent one, the removal
    /// and the new entry in one commit; it enters the dead-letter queue once kept (and goes
    /// back to `from` if the commit fails, so it is never lost).
    fn move_dead_letter(&self, from: &Arc<Queue>, dead: queue::DeadLetter) -> Commit {
        if dead.entry.paged {
            return self.move_paged_dead_letter(from, dead);
        }
        let target = self.get_or_create(&dead.target);
        target.dead_letter_queue.store(true, Ordering::Relaxed);
        let original = dead.entry;
        let entry = Entry {
            seq: self.durability.next_seq(),
            message: dead_letter::message(
                &original.message,
                &from.name,
                &dead.cause,
                dead.expiration,
            ),
            // Every dead letter is persistent (dead_letter::message).
            persistent: true,
            kept: !target.temporary,
            paged: original.paged,
            redeliveries: 0,
            accepted_ms: original.accepted_ms,
            not_before: None,
        };
        tracing::debug!(queue = %from.name, dead_letter_queue = %target.name, cause = %dead.cause, "message dead-lettered");
        if let Some(shared) = self.shared().filter(|_| !target.temporary && original.kept) {
            // Stored in the dead-letter queue for every broker, then removed from `from`;
            // back in `from` (still kept there) when that fails.
            let commit = shared.dead_letter(&from.name, original.seq, &target.name, &entry.message);
            let commit = self.count_shared_store(&target, commit);
            let (me, from) = (self.me.clone(), from.clone());
            return self.spawned(async move {
                match commit.wait().await {
                    Ok(()) => Ok(()),
                    Err(e) => {
                        tracing::warn!(queue = %from.name, "dead-letter move not kept, message stays: {e}");
                        match me.upgrade() {
                            Some(queues) => queues.insert(&from, original).wait().await,
                            None => Ok(()),
                        }
                    }
                }
            });
        }
        let mut changes = Vec::new();
        if original.kept {
            changes.push(Change::Removed {
                owner: from.owner.clone(),
                seq: original.seq,
            });
        }
        if entry.kept {
            changes.extend(self.kept(&target, &entry));
        }
        if changes.is_empty() {
            return self.insert(&target, entry);
        }
        let commit = self.durability.commit(changes);
        let me = self.me.clone();
        let from = from.clone();
        let finish = move |result: Result<(), DurabilityError>| -> Commit {
            let Some(queues) = me.upgrade() else {
                return Commit::done();
            };
            match result {
                Ok(()) => {
                    target.declared.store(true, Ordering::Relaxed);
                    queues.insert(&target, entry)
                }
                Err(e) => {
                    tracing::warn!(queue = %from.name, "dead-letter move not kept, message stays: {e}");
                    queues.insert(&from, original)
                }
            }
        };
        match commit {
            Commit::Done(result) => finish(result),
            Commit::Pending(done) => self.spawned(async move {
                let result = done.await;
                finish(result).wait().await
            }),
        }
    }

    /// [`Queues::move_dead_letter`] of a message whose payload is in the store only (an
    /// expired one of a long queue): read back first, so the dead letter carries it. If it
    /// cannot be read now, the message goes back to its queue (still kept there).
    fn move_paged_dead_letter(&self, from: &Arc<Queue>, mut dead: queue::DeadLetter) -> Commit {
        let read = self
            .durability
            .read_queue_payloads(&from.owner, vec![dead.entry.seq]);
        let (me, from) = (self.me.clone(), from.clone());
        self.spawned(async move {
            let result = read.await;
            let Some(queues) = me.upgrade() else {
                return Ok(());
            };
            match result {
                Ok(mut payloads) => match payloads.pop().flatten() {
                    Some(body) => {
                        dead.entry.message = queues.memory.charge(Message {
                            payload: body.payload,
                            ..dead.entry.message
                        });
                        dead.entry.paged = false;
                        queues.move_dead_letter(&from, dead).wait().await
                    }
                    // Gone from the store already (an edited file): nothing to move.
                    None => Ok(()),
                },
                Err(e) => {
                    tracing::warn!(queue = %from.name, "dead letter not read back, it stays: {e}");
                    queues.insert(&from, dead.entry).wait().await
                }
            }
        })
    }

    /// Run `work` on the runtime now (so it completes whether or not the answer is awaited);
    /// the answer resolves with its result.
    fn spawned(
        &self,
        work: impl Future<Output = Result<(), DurabilityError>> + Send + 'static,
    ) -> Commit {
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                let task = handle.spawn(work);
                Commit::Pending(Box::pin(async move {
                    task.await.unwrap_or_else(|e| {
                        Err(DurabilityError::Unavailable(format!(
                            "queue task failed: {e}"
                        )))
                    })
                }))
            }
            Err(_) => Commit::Pending(Box::pin(work)),
        }
    }
}

/// ActiveMQ's `expireMessagesPeriod` default: how often queues are swept for expired
/// messages nobody consumes.
pub const EXPIRE_MESSAGES_PERIOD: std::time::Duration = std::time::Duration::from_secs(30);

/// Sweep every queue for expired messages every [`EXPIRE_MESSAGES_PERIOD`] until `shutdown`
/// (or the broker is gone).
pub fn sweep_periodically(queues: Weak<Queues>, shutdown: tokio_util::sync::CancellationToken) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(EXPIRE_MESSAGES_PERIOD);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = every.tick() => {}
            }
            let Some(queues) = queues.upgrade() else {
                return;
            };
            queues.sweep_expired();
        }
    });
}

/// One commit that is done when all of `commits` are (the first error wins).
fn join(mut commits: Vec<Commit>) -> Commit {
    match commits.len() {
        0 => Commit::done(),
        1 => commits.pop().unwrap_or_else(Commit::done),
        _ => {
            let all: Pending = Box::pin(async move {
                let mut result = Ok(());
                for commit in commits {
                    if let Err(e) = commit.wait().await {
                        result = result.and(Err(e));
                    }
                }
                result
            });
            Commit::Pending(all)
        }
    }
}

/// A consumer of one queue. Closing it (or dropping it) gives back what it held.
pub struct QueueConsumer {
    queues: Weak<Queues>,
    queue: Arc<Queue>,
    id: ConsumerId,
    closed: AtomicBool,
}

impl std::fmt::Debug for QueueConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueConsumer")
            .field("queue", &self.queue.name)
            .field("id", &self.id)
            .finish()
    }
}

impl QueueConsumer {
    pub fn id(&self) -> ConsumerId {
        self.id
    }

    pub fn queue_name(&self) -> &Arc<str> {
        &self.queue.name
    }

    /// Up to `max` messages dispatched to this consumer, in order; each is this consumer's
    /// until acknowledged. Call it when `spec.wake` is notified (and after acks free room).
    pub fn take(&self, max: usize) -> Result<Vec<QueueDelivery>, AckError> {
        let Some(queues) = self.queues.upgrade() else {
            return Err(AckError::NoConsumer);
        };
        let (taken, out) = self
            .queue
            .with(|s, now, ctx, out| s.take(self.id, max, now, ctx, out));
        queues.settle_in_background(&self.queue, out);
        taken
    }

    /// Acknowledge delivery `seq` alone (STOMP `client-individual`, and `auto`). The commit
    /// is done once its removal is kept.
    pub fn ack(&self, seq: QueueSeq) -> Result<Commit, AckError> {
        self.acknowledge(seq, false)
    }

    /// Acknowledge every delivery up to and including `seq`, in delivery order (STOMP
    /// `client`).
    pub fn ack_through(&self, seq: QueueSeq) -> Result<Commit, AckError> {
        self.acknowledge(seq, true)
    }

    fn acknowledge(&self, seq: QueueSeq, cumulative: bool) -> Result<Commit, AckError> {
        let queues = self.queues.upgrade().ok_or(AckError::NoConsumer)?;
        let (acked, out) = self
            .queue
            .with(|s, now, ctx, out| s.ack(self.id, seq, cumulative, now, ctx, out));
        let commit = queues.settle(&self.queue, out);
        acked.map(|_| commit)
    }

    /// Refuse delivery `seq` (STOMP NACK: ActiveMQ's poison ack): redelivered after the
    /// redelivery policy's delay while it allows, else to the dead-letter queue or dropped.
    pub fn nack(&self, seq: QueueSeq) -> Result<Commit, AckError> {
        let queues = self.queues.upgrade().ok_or(AckError::NoConsumer)?;
        let (refused, out) = self
            .queue
            .with(|s, now, ctx, out| s.nack(self.id, seq, now, ctx, out));
        let commit = queues.settle(&self.queue, out);
        refused.map(|()| commit)
    }

    /// Leave the queue: what it held goes back (given messages marked redelivered).
    pub fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let (consumers, out) = self.queue.with(|s, now, ctx, out| {
            s.remove_consumer(self.id, now, ctx, out);
            s.consumer_count()
        });
        if let Some(queues) = self.queues.upgrade() {
            queues.settle_in_background(&self.queue, out);
            if let Some(shared) = queues.shared().filter(|_| !self.queue.temporary) {
                shared.consumers(&self.queue.name, consumers);
            }
        }
    }
}

impl Drop for QueueConsumer {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod policy_tests;
#[cfg(test)]
mod staged_tests;
#[cfg(test)]
mod tests;
