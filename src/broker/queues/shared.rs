//! Queues kept by a store shared by several brokers (the cluster engine, `src/cluster/
//! queues.rs`): a message sent to a queue is stored there, not queued on the sender's broker;
//! each broker with consumers of the queue takes messages from the store into its local
//! [`super::Queue`] as its consumers have room, and the queue's rules (round-robin, prefetch,
//! selectors, exclusive consumers, redelivery, dead letters) stay those of one broker among
//! its consumers.
//!
//! The local queue tells the store what happens to those entries through the durability
//! engine's commits (`Change::Removed` of a [`crate::broker::durability::QueueOwner::Queue`]
//! entry acknowledges it there) and through [`SharedQueues`].

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use crate::broker::durability::{Commit, DurabilityError, QueueSeq};
use crate::broker::message::Message;

use super::queue::Entry;
use super::Queues;

/// What a purge of a queue across the brokers sharing the store did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SharedPurge {
    /// Messages of the queue the store removed: every one it held when the purge began,
    /// waiting there, taken by a broker and not yet delivered, or delivered to a consumer and
    /// not acknowledged (see [`SharedQueues::purge`]).
    pub purged: u64,
    /// Some broker has the queue (declared or used since it started), or the store held
    /// messages of it: `false` is an unknown queue.
    pub known: bool,
    /// The brokers that dropped their copies before the store's purge.
    pub answered: Vec<String>,
    /// The brokers believed alive that did not answer in time: copies they took may still
    /// reach their consumers.
    pub silent: Vec<String>,
}

/// The answer of [`SharedQueues::purge`].
pub type PurgeFuture = Pin<Box<dyn Future<Output = Result<SharedPurge, DurabilityError>> + Send>>;

/// The answer of [`SharedQueues::browse`]: the messages, in store order.
pub type BrowseFuture =
    Pin<Box<dyn Future<Output = Result<Vec<super::QueueDelivery>, DurabilityError>> + Send>>;

/// The answer of [`SharedQueues::depths`]: messages held by the shared store, by queue name.
pub type DepthsFuture =
    Pin<Box<dyn Future<Output = Result<HashMap<String, u64>, DurabilityError>> + Send>>;

/// A persistent topic publish kept in the unit of a transaction's queue work
/// ([`SharedQueues::store_all`]): the message, and the client id of its publisher (for
/// subscriptions that ask not to get their own messages back).
#[derive(Debug, Clone)]
pub struct TopicSend {
    pub message: Message,
    pub publisher: Option<Arc<str>>,
}

/// What the shared store does for [`Queues`].
pub trait SharedQueues: Send + Sync + 'static {
    /// How many messages the shared store holds of each queue: waiting for a consumer, taken
    /// by a broker, or delivered and not acknowledged (ActiveMQ's `QueueSize` over every
    /// broker), by queue name; a queue it holds nothing of is absent. An error when the
    /// store does not answer in time. `None`: the store cannot tell (the default).
    fn depths(&self) -> Option<DepthsFuture> {
        None
    }

    /// Store `message` in queue `queue`: done once the shared store keeps it (report the
    /// send done, the STOMP RECEIPT, only then); it reaches a consumer on any broker.
    fn store(&self, queue: &str, message: &Message) -> Commit;

    /// Store `sends` (queue name, message), in order, as one unit with the topic publishes
    /// `topics` and the acknowledgements of `acked` (entries this broker took from the shared
    /// store): done once the shared store keeps every message and has the topic publishes
    /// and the acknowledgements recorded with them (applied at once, or by any broker later
    /// if this one dies first: they are part of the unit); no consumer on any broker saw one
    /// of the queue messages before the others were kept, a topic publish reaches its
    /// subscribers once the unit is kept (the store publishes it: the caller does not), and
    /// an error keeps none of it. A store that cannot take them as one unit stores them one
    /// by one, in order (see [`SharedQueues::stores_as_one`]), and leaves `acked` to the
    /// caller's commit; the answer then is done once every message is kept.
    fn store_all(
        &self,
        sends: &[(Arc<str>, Message)],
        topics: &[TopicSend],
        acked: &[QueueSeq],
    ) -> Commit;

    /// The most messages (queue sends and topic publishes) [`SharedQueues::store_all`]
    /// stores as one unit (0: none, it stores them one by one).
    fn stores_as_one(&self) -> usize {
        0
    }

    /// A browse of queue `queue` (STOMP `browser:true`): its first `max` messages `filter`
    /// accepts, as the shared store holds them (waiting, taken by a broker, delivered and not
    /// acknowledged), in store order, without taking any. `None`: the store cannot browse.
    fn browse(
        &self,
        _queue: &str,
        _max: usize,
        _filter: Option<Arc<dyn super::MessageFilter>>,
    ) -> Option<BrowseFuture> {
        None
    }

    /// Move entry `seq` of `from` (taken from the shared store) to the dead-letter queue `to`
    /// as `message`: stored there under an id derived from the original (so a repeat after a
    /// failure is dropped), then the original removed from the store. Done once both are.
    fn dead_letter(&self, from: &str, seq: QueueSeq, to: &str, message: &Message) -> Commit;

    /// Queue `queue` has `consumers` local consumers now (after one came or went): the store
    /// feeds the local queue while it has any.
    fn consumers(&self, queue: &str, consumers: usize);

    /// Purge queue `queue` everywhere (an administrator's purge): every message of it the
    /// store holds when the purge begins is removed there, and every broker drops the copies
    /// it took and has not delivered ([`Queues::purge_shared`]). Copies delivered to a
    /// consumer and not acknowledged stay with it and are not delivered again (ActiveMQ's
    /// purge removes messages in flight too). Messages stored after the purge began are not
    /// touched.
    fn purge(&self, queue: &str) -> PurgeFuture;

    /// Temporary queue `queue` was made on this broker. A temporary queue lives on its
    /// connection's broker only (never in the shared store); from now on the other brokers'
    /// sends to it reach it here, until [`SharedQueues::temporary_deleted`].
    fn temporary_created(&self, queue: &str);

    /// Temporary queue `queue` of this broker is gone (its connection closed).
    fn temporary_deleted(&self, queue: &str);

    /// Send `message` to temporary queue `queue` of another broker: done once that broker
    /// queued it; an error when no broker has that queue (ActiveMQ's "Cannot publish to a
    /// deleted Destination").
    fn send_to_remote_temporary(&self, queue: &str, message: &Message) -> Commit;
}

impl Queues {
    /// Queues are kept by `shared` (a cluster): set once, at start, before any client.
    pub fn set_shared(&self, shared: Arc<dyn SharedQueues>) {
        let _ = self.shared.set(shared);
    }

    pub(super) fn shared(&self) -> Option<&Arc<dyn SharedQueues>> {
        self.shared.get()
    }

    /// [`SharedQueues::depths`]: `None` without a shared store, or one that cannot tell.
    pub fn shared_depths(&self) -> Option<DepthsFuture> {
        self.shared()?.depths()
    }

    /// [`SharedQueues::browse`]: `None` without a shared store, or one that cannot browse.
    pub fn shared_browse(
        &self,
        name: &str,
        max: usize,
        filter: Option<Arc<dyn super::MessageFilter>>,
    ) -> Option<BrowseFuture> {
        self.shared()?.browse(name, max, filter)
    }

    /// [`SharedQueues::stores_as_one`]: 0 without a shared store.
    pub fn shared_stores_as_one(&self) -> usize {
        self.shared().map_or(0, |s| s.stores_as_one())
    }

    /// Whether a shared store (a cluster) keeps the queues.
    pub fn is_shared(&self) -> bool {
        self.shared().is_some()
    }

    /// [`SharedQueues::send_to_remote_temporary`]: `None` without a shared store (a single
    /// broker has every temporary queue itself).
    pub fn send_remote_temporary(&self, name: &str, message: &Message) -> Option<Commit> {
        Some(self.shared()?.send_to_remote_temporary(name, message))
    }

    /// Messages the local consumers of queue `name` could take now (see `QueueState::room`);
    /// 0 when there is no such queue.
    pub fn shared_room(&self, name: &str) -> usize {
        let Some(queue) = self.queues.read().get(name).cloned() else {
            return 0;
        };
        let room = queue.state.lock().room();
        room
    }

    /// Local consumers of queue `name`.
    pub fn consumer_count(&self, name: &str) -> usize {
        let Some(queue) = self.queues.read().get(name).cloned() else {
            return 0;
        };
        let count = queue.state.lock().consumer_count();
        count
    }

    /// Add a message taken from the shared store to queue `name` as entry `seq` (kept: its
    /// acknowledgement, expiry or dead-lettering removes it from the store), delivered
    /// `redeliveries` times before, and dispatch it.
    pub fn insert_shared(&self, name: &str, seq: QueueSeq, message: Message, redeliveries: u32) {
        let queue = self.get_or_create(name);
        let entry = Entry {
            seq,
            persistent: message.qos != crate::protocol::QoS::AtMostOnce,
            message,
            kept: true,
            paged: false,
            redeliveries,
            accepted_ms: crate::broker::durability::now_ms(),
            not_before: None,
        };
        let ((), out) = queue.with(|s, now, ctx, out| s.insert_taken(entry, now, ctx, out));
        if let Commit::Pending(done) = self.settle(&queue, out) {
            let _ = self.spawned(done);
        }
    }

    /// `commit` (a store of a message into queue `queue` of the shared store, a send or a
    /// dead letter) counts as enqueued here once it succeeds: a broker's `enqueued` of a
    /// shared queue is what was sent to it through this broker.
    pub(super) fn count_shared_store(&self, queue: &Arc<super::Queue>, commit: Commit) -> Commit {
        match commit {
            Commit::Done(Ok(())) => {
                queue.state.lock().counts.enqueued += 1;
                Commit::done()
            }
            Commit::Done(Err(e)) => Commit::Done(Err(e)),
            Commit::Pending(done) => {
                let queue = queue.clone();
                Commit::Pending(Box::pin(async move {
                    done.await?;
                    queue.state.lock().counts.enqueued += 1;
                    Ok(())
                }))
            }
        }
    }

    /// The waiting (not dispatched) messages of queue `name`, with when each may be
    /// dispatched.
    pub fn shared_waiting(&self, name: &str) -> Vec<(QueueSeq, Option<Instant>)> {
        let Some(queue) = self.queues.read().get(name).cloned() else {
            return Vec::new();
        };
        let waiting = queue.state.lock().waiting();
        waiting
    }

    /// Take waiting messages `seqs` out of queue `name` to give them back to the shared store;
    /// returns those that were still waiting, with their redelivery counts (times delivered
    /// to a consumer and come back: the count the store should carry on to the next taker).
    pub fn withdraw_shared(&self, name: &str, seqs: &[QueueSeq]) -> Vec<(QueueSeq, u32)> {
        let Some(queue) = self.queues.read().get(name).cloned() else {
            return Vec::new();
        };
        let gone = queue.state.lock().withdraw(seqs);
        gone
    }

    /// The store's purge removes entries `seqs` of queue `name` ([`SharedQueues::purge`]):
    /// those waiting or dispatched and not yet taken leave the queue; those delivered stay
    /// with their consumers and are dropped when given back. Returns the entries that left
    /// and how many delivered ones stay.
    pub fn purge_shared(&self, name: &str, seqs: &HashSet<QueueSeq>) -> (Vec<QueueSeq>, usize) {
        let Some(queue) = self.queues.read().get(name).cloned() else {
            return (Vec::new(), 0);
        };
        let (result, out) = queue.with(|s, now, ctx, out| s.purge_entries(seqs, now, ctx, out));
        self.settle_in_background(&queue, out);
        result
    }

    /// Purge queue `name` on every broker sharing the store ([`SharedQueues::purge`]);
    /// `None` without a shared store, or for a temporary queue of this broker (never in the
    /// shared store): [`Queues::purge`] purges those here.
    pub fn purge_everywhere(&self, name: &str) -> Option<PurgeFuture> {
        let shared = self.shared()?;
        if self.is_temporary(name) {
            return None;
        }
        Some(shared.purge(name))
    }

    /// Whether queue `name` is one the shared store keeps and this broker has (declared or
    /// used since it started; not a temporary queue).
    pub fn has_shared(&self, name: &str) -> bool {
        self.queues.read().get(name).is_some_and(|q| !q.temporary)
    }

    /// Every entry queue `name` holds (waiting, dispatched, delivered).
    pub fn shared_held(&self, name: &str) -> HashSet<QueueSeq> {
        let Some(queue) = self.queues.read().get(name).cloned() else {
            return HashSet::new();
        };
        let held = queue.state.lock().held();
        held
    }
}
