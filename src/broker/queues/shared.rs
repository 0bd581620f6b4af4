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

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use crate::broker::durability::{Commit, QueueSeq};
use crate::broker::message::Message;

use super::queue::Entry;
use super::Queues;

/// What the shared store does for [`Queues`].
pub trait SharedQueues: Send + Sync + 'static {
    /// Store `message` in queue `queue`: done once the shared store keeps it (report the
    /// send done, the STOMP RECEIPT, only then); it reaches a consumer on any broker.
    fn store(&self, queue: &str, message: &Message) -> Commit;

    /// Move entry `seq` of `from` (taken from the shared store) to the dead-letter queue `to`
    /// as `message`: stored there under an id derived from the original (so a repeat after a
    /// failure is dropped), then the original removed from the store. Done once both are.
    fn dead_letter(&self, from: &str, seq: QueueSeq, to: &str, message: &Message) -> Commit;

    /// Queue `queue` has `consumers` local consumers now (after one came or went): the store
    /// feeds the local queue while it has any.
    fn consumers(&self, queue: &str, consumers: usize);

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
        if let Commit::Pending(done) = self.insert(&queue, entry) {
            let _ = self.spawned(done);
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
    /// returns those that were still waiting.
    pub fn withdraw_shared(&self, name: &str, seqs: &[QueueSeq]) -> Vec<QueueSeq> {
        let Some(queue) = self.queues.read().get(name).cloned() else {
            return Vec::new();
        };
        let gone = queue.state.lock().withdraw(seqs);
        gone
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
