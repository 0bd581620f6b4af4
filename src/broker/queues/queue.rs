//! One queue's state and rules, without IO: what is ready, what each consumer holds, which
//! consumer gets the next message, and what happens to a message that is refused, expires or
//! whose consumer leaves. Every operation runs under the queue's one mutex and reports what the
//! caller does after the lock is released ([`Outcome`]: store changes, consumers to wake,
//! messages to move to a dead-letter queue, a time to look again).

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Notify;

use super::consumer::{ConsumerId, ConsumerSpec, MessageFilter, QueueDelivery, QueuedInfo};
use super::landing::Landing;
use crate::broker::durability::{Change, QueueOwner, QueueSeq};
use crate::broker::message::Message;
use crate::broker::routing::memory::MemoryGauge;
use crate::config::delivery_policy::{DeliveryPolicy, Destination, Rejection};

/// How many waiting messages one dispatch passes over (no consumer's filter accepts them, or
/// their redelivery delay runs) before it stops: the cost of a send stays bounded on a queue
/// of messages nobody selects. Like ActiveMQ's `maxPageSize` (200), a consumer whose selector
/// matches none of the first this-many waiting messages waits for them to be consumed.
pub(super) const DISPATCH_SCAN_LIMIT: usize = 1000;

/// Paged-out messages of one consumer read back per page, at most (the durability engine
/// stops a page sooner at the bytes `memoryUsage` has room for).
pub(super) const PAGE_IN_BATCH: usize = 256;

/// A message in a queue.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub seq: QueueSeq,
    pub message: Message,
    pub persistent: bool,
    /// Kept in the store (persistent, and not in a temporary queue): leaving removes it.
    pub kept: bool,
    /// The payload is not in memory: read it back from the store before delivery.
    pub paged: bool,
    /// Times it came back after a delivery (ActiveMQ's `redeliveryCounter`).
    pub redeliveries: u32,
    /// When the broker accepted it, ms since the Unix epoch (JMSTimestamp; for a message
    /// recovered from the store: when it was recovered).
    pub accepted_ms: u64,
    /// Not dispatched before this (a redelivery delay of the redelivery plugin).
    pub not_before: Option<Instant>,
}

impl Entry {
    fn info(&self) -> QueuedInfo {
        QueuedInfo {
            redeliveries: self.redeliveries,
            persistent: self.persistent,
            accepted_ms: self.accepted_ms,
        }
    }

    fn delivery(&self) -> QueueDelivery {
        QueueDelivery {
            seq: self.seq,
            message: self.message.clone(),
            redelivered: self.redeliveries > 0,
            delivery_count: self.redeliveries.saturating_add(1),
            persistent: self.persistent,
        }
    }
}

/// A message leaving for a dead-letter queue.
#[derive(Debug)]
pub(super) struct DeadLetter {
    pub entry: Entry,
    pub target: Arc<str>,
    /// ActiveMQ's `dlqDeliveryFailureCause`.
    pub cause: String,
    /// The strategy's `expiration`: the dead letter expires this long after it is moved.
    pub expiration: Option<std::time::Duration>,
}

/// What the caller does once the queue's lock is released.
#[derive(Debug, Default)]
pub(super) struct Outcome {
    /// Kept in the background (entries gone: acknowledged, dropped).
    pub changes: Vec<Change>,
    pub wake: Vec<Arc<Notify>>,
    pub dead_letters: Vec<DeadLetter>,
    /// The earliest time a delayed message becomes ready: dispatch again then.
    pub retry_at: Option<Instant>,
    /// Pages of dispatched messages whose payloads must be read back from the store first.
    pub page_in: Vec<PageRead>,
}

/// One page to read back for a consumer: the first paged-out messages dispatched to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PageRead {
    pub consumer: ConsumerId,
    pub seqs: Vec<QueueSeq>,
}

/// A queue's counters (ActiveMQ's destination statistics).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct QueueCounts {
    /// Messages sent to it (or recovered, moved in as dead letters).
    pub enqueued: u64,
    /// Messages that left it: acknowledged, expired, dead-lettered or dropped.
    pub dequeued: u64,
    /// Of `dequeued`: expired.
    pub expired: u64,
    /// Of `dequeued`: moved to a dead-letter queue.
    pub dead_lettered: u64,
    /// Of `dequeued`: dropped undelivered (non-persistent or discarding strategy).
    pub discarded: u64,
    /// Messages handed again after their consumer left or refused them.
    pub redelivered: u64,
}

/// A consumer's window.
struct Slot {
    id: ConsumerId,
    prefetch: usize,
    exclusive: bool,
    priority: u8,
    filter: Option<Arc<dyn MessageFilter>>,
    wake: Arc<Notify>,
    /// Dispatched to it, not taken yet (its connection has not seen them).
    assigned: VecDeque<Entry>,
    /// Taken, not acknowledged, in delivery order.
    delivered: VecDeque<Entry>,
    /// A page of its paged-out messages is being read back: one at a time, so what is read
    /// back is bounded by what the durability engine reads per page.
    reading: bool,
    /// `assigned` may hold paged-out messages no read asked for yet (set when one is
    /// assigned or a page came back short; cleared when a look finds none).
    unread: bool,
}

impl Slot {
    fn room(&self) -> usize {
        self.prefetch
            .saturating_sub(self.assigned.len() + self.delivered.len())
    }

    fn accepts(&self, entry: &Entry) -> bool {
        self.filter
            .as_ref()
            .is_none_or(|f| f.accepts(&entry.message, &entry.info()))
    }

    /// The next page of paged-out messages to read back for it, if one is due. None while
    /// `memoryUsage` is full and the consumer holds messages in memory (taken and not
    /// acknowledged, or its next one ready to take): they are released by its progress,
    /// which asks again. Otherwise the page is read even on a full gauge, so a consumer
    /// whose next message is paged out always gets it.
    fn next_page(&mut self, memory: &MemoryGauge) -> Option<PageRead> {
        if self.reading || !self.unread {
            return None;
        }
        let holds_loaded =
            !self.delivered.is_empty() || self.assigned.front().is_some_and(|e| !e.paged);
        if holds_loaded && memory.is_full() {
            return None;
        }
        let seqs: Vec<QueueSeq> = self
            .assigned
            .iter()
            .filter(|e| e.paged)
            .take(PAGE_IN_BATCH)
            .map(|e| e.seq)
            .collect();
        if seqs.is_empty() {
            self.unread = false;
            return None;
        }
        self.reading = true;
        Some(PageRead {
            consumer: self.id,
            seqs,
        })
    }
}

/// Why an ack or nack was not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    #[error("no such consumer")]
    NoConsumer,
    #[error("message {0} is not held by this consumer")]
    NotHeld(QueueSeq),
}

/// The state of one queue (see the module documentation).
pub(super) struct QueueState {
    owner: QueueOwner,
    /// Ready for dispatch, in order.
    ready: BTreeMap<QueueSeq, Entry>,
    consumers: Vec<Slot>,
    /// Where round-robin looks first.
    cursor: usize,
    /// Deliveries a transaction took out of their consumers' windows
    /// ([`Self::take_delivered`]) until it is kept or undone: still held by this queue.
    staged: HashSet<QueueSeq>,
    /// Delivered entries a purge of the shared store (a cluster) removed there: their
    /// consumer keeps them and its ACK succeeds, but one it gives back (it leaves, or NACKs)
    /// is dropped, not delivered again, as ActiveMQ drops a purged message in flight.
    purged: HashSet<QueueSeq>,
    /// New messages waiting for sends before them to enter (`landing.rs`).
    landing: Landing,
    pub counts: QueueCounts,
}

impl QueueState {
    /// Whether one of the consumers' filters accepts `entry` (a consumer without a selector
    /// accepts everything); false without consumers. A selector-aware virtual topic asks it.
    pub(super) fn any_consumer_accepts(&self, entry: &Entry) -> bool {
        self.consumers.iter().any(|c| c.accepts(entry))
    }

    pub fn new(owner: QueueOwner) -> QueueState {
        QueueState {
            owner,
            ready: BTreeMap::new(),
            consumers: Vec::new(),
            cursor: 0,
            staged: HashSet::new(),
            purged: HashSet::new(),
            landing: Landing::default(),
            counts: QueueCounts::default(),
        }
    }

    /// The send of sequence `seq` is being kept: messages landing after it wait for it
    /// (see `landing.rs`).
    pub fn reserve_landing(&mut self, seq: QueueSeq) {
        self.landing.reserve(seq);
    }

    /// A new message (kept, or never to be kept) enters the queue, after the sends reserved
    /// before it ([`Self::insert`] once they have).
    pub fn land(&mut self, entry: Entry, now: Instant, ctx: &Ctx<'_>, out: &mut Outcome) {
        if self.landing.is_empty() {
            return self.insert(entry, now, ctx, out);
        }
        for ready in self.landing.land(entry) {
            self.insert(ready, now, ctx, out);
        }
    }

    /// The reserved send of `seq` will not land (its commit failed): what waited behind it
    /// enters.
    pub fn cancel_landing(
        &mut self,
        seq: QueueSeq,
        now: Instant,
        ctx: &Ctx<'_>,
        out: &mut Outcome,
    ) {
        for ready in self.landing.cancel(seq) {
            self.insert(ready, now, ctx, out);
        }
    }

    /// Messages held: ready, dispatched and unacknowledged.
    pub fn depth(&self) -> usize {
        self.ready.len()
            + self
                .consumers
                .iter()
                .map(|c| c.assigned.len() + c.delivered.len())
                .sum::<usize>()
    }

    pub fn consumer_count(&self) -> usize {
        self.consumers.len()
    }

    /// Messages dispatched and not acknowledged.
    pub fn in_flight(&self) -> usize {
        self.depth() - self.ready.len()
    }

    /// Put back a message recovered from the store (no consumer exists yet).
    pub fn restore(&mut self, entry: Entry) {
        self.ready.insert(entry.seq, entry);
    }

    /// Add a message and dispatch. A kept message arriving behind `ctx.page_after` waiting
    /// ones, or that no consumer has room for once `memoryUsage` is half full, keeps only its
    /// envelope in memory: its payload is read back from the store when it is dispatched (as
    /// ActiveMQ's store cursor pages a long queue).
    pub fn insert(&mut self, entry: Entry, now: Instant, ctx: &Ctx<'_>, out: &mut Outcome) {
        self.counts.enqueued += 1;
        self.insert_taken(entry, now, ctx, out);
    }

    /// [`Self::insert`] of a message this queue did not receive but took from a shared store
    /// (a cluster node's pull): not counted as enqueued, since each message may be taken
    /// several times, by one broker or several (the send that stored it was counted).
    pub fn insert_taken(
        &mut self,
        mut entry: Entry,
        now: Instant,
        ctx: &Ctx<'_>,
        out: &mut Outcome,
    ) {
        if self.pages(&entry, ctx) {
            entry.message.payload = bytes::Bytes::new();
            entry.paged = true;
        }
        self.ready.insert(entry.seq, entry);
        self.dispatch(now, ctx, out);
    }

    /// Whether a new kept message is queued paged out: behind `ctx.page_after` waiting
    /// ones, or, once `memoryUsage` is half full, when no consumer has room for it now (it
    /// would wait in memory; the other half stays for what is in flight and read back).
    fn pages(&self, entry: &Entry, ctx: &Ctx<'_>) -> bool {
        let Some(page_after) = ctx.page_after else {
            return false;
        };
        entry.kept
            && !entry.paged
            && (self.ready.len() >= page_after || (ctx.memory.is_half_full() && self.room() == 0))
    }

    pub fn add_consumer(
        &mut self,
        id: ConsumerId,
        spec: ConsumerSpec,
        now: Instant,
        ctx: &Ctx<'_>,
        out: &mut Outcome,
    ) {
        self.consumers.push(Slot {
            id,
            prefetch: spec
                .prefetch
                .unwrap_or_else(|| {
                    usize::try_from(ctx.policy.queue_prefetch_for(ctx.destination))
                        .unwrap_or(usize::MAX)
                })
                .max(1),
            exclusive: spec.exclusive,
            priority: spec.priority,
            filter: spec.filter,
            wake: spec.wake,
            assigned: VecDeque::new(),
            delivered: VecDeque::new(),
            reading: false,
            unread: false,
        });
        self.dispatch(now, ctx, out);
    }

    /// The consumer leaves: what it held goes back to the queue, in order; what it had seen
    /// counts as redelivered. `false`: no such consumer.
    pub fn remove_consumer(
        &mut self,
        id: ConsumerId,
        now: Instant,
        ctx: &Ctx<'_>,
        out: &mut Outcome,
    ) -> bool {
        let Some(index) = self.consumers.iter().position(|c| c.id == id) else {
            return false;
        };
        let slot = self.consumers.remove(index);
        if self.cursor > index {
            self.cursor -= 1;
        }
        for entry in slot.assigned {
            self.ready.insert(entry.seq, entry);
        }
        for mut entry in slot.delivered {
            if self.purged.remove(&entry.seq) {
                self.drop_purged(&entry, out);
                continue;
            }
            entry.redeliveries = entry.redeliveries.saturating_add(1);
            self.counts.redelivered += 1;
            self.ready.insert(entry.seq, entry);
        }
        self.dispatch(now, ctx, out);
        true
    }

    /// Hand up to `max` dispatched messages to consumer `id` (they are now unacknowledged
    /// deliveries), in order, stopping at one whose payload is still being read back from the
    /// store. Messages that expired meanwhile are expired instead.
    pub fn take(
        &mut self,
        id: ConsumerId,
        max: usize,
        now: Instant,
        ctx: &Ctx<'_>,
        out: &mut Outcome,
    ) -> Result<Vec<QueueDelivery>, AckError> {
        let index = self.index_of(id)?;
        let mut taken = Vec::new();
        let mut expired = Vec::new();
        {
            let slot = &mut self.consumers[index];
            while taken.len() < max {
                if slot.assigned.front().is_none_or(|e| e.paged) {
                    break;
                }
                let Some(entry) = slot.assigned.pop_front() else {
                    break;
                };
                if entry.message.is_expired(now) {
                    expired.push(entry);
                    continue;
                }
                taken.push(entry.delivery());
                slot.delivered.push_back(entry);
            }
        }
        let freed = !expired.is_empty();
        for entry in expired {
            self.expire(entry, ctx, out);
        }
        if freed {
            self.dispatch(now, ctx, out);
        }
        Ok(taken)
    }

    /// The message of dispatched entry `seq` as it is in memory (its envelope when paged).
    pub fn envelope(&self, seq: QueueSeq) -> Option<Message> {
        self.consumers
            .iter()
            .flat_map(|c| c.assigned.iter())
            .find(|e| e.seq == seq)
            .map(|e| e.message.clone())
    }

    /// Payloads of consumer `consumer`'s page read back from the store (`None`: the entry is
    /// gone from the store, which only an edited file causes: the message is forgotten), the
    /// first ones of the page when the store stopped it short. The consumers whose next
    /// message became ready are woken, and the next page is asked for.
    pub fn loaded(
        &mut self,
        consumer: ConsumerId,
        payloads: Vec<(QueueSeq, Option<Message>)>,
        ctx: &Ctx<'_>,
        out: &mut Outcome,
    ) {
        if let Some(slot) = self.consumers.iter_mut().find(|c| c.id == consumer) {
            slot.reading = false;
            slot.unread = true;
        }
        for (seq, message) in payloads {
            for slot in &mut self.consumers {
                let Some(at) = slot.assigned.iter().position(|e| e.seq == seq) else {
                    continue;
                };
                match message {
                    Some(ref m) => {
                        if let Some(entry) = slot.assigned.get_mut(at) {
                            entry.message = m.clone();
                            entry.paged = false;
                        }
                    }
                    None => {
                        slot.assigned.remove(at);
                        self.counts.dequeued += 1;
                        self.counts.discarded += 1;
                    }
                }
                if !out.wake.iter().any(|w| Arc::ptr_eq(w, &slot.wake)) {
                    out.wake.push(slot.wake.clone());
                }
                break;
            }
        }
        self.page_more(ctx, out);
    }

    /// Consumer `consumer`'s page that could not be read back: those messages go back to the
    /// queue and are tried again after `retry_at`.
    pub fn load_failed(
        &mut self,
        consumer: ConsumerId,
        seqs: &[QueueSeq],
        retry_at: Instant,
        out: &mut Outcome,
    ) {
        for slot in &mut self.consumers {
            if slot.id == consumer {
                slot.reading = false;
            }
            let (back, kept): (VecDeque<Entry>, VecDeque<Entry>) =
                std::mem::take(&mut slot.assigned)
                    .into_iter()
                    .partition(|e| seqs.contains(&e.seq));
            slot.assigned = kept;
            for mut entry in back {
                entry.not_before = Some(retry_at);
                self.ready.insert(entry.seq, entry);
            }
        }
        out.retry_at = Some(out.retry_at.map_or(retry_at, |t| t.min(retry_at)));
    }

    /// Acknowledge delivery `seq` of consumer `id`: only that one, or (`cumulative`, STOMP
    /// `client` mode) every message delivered to it up to that one. Returns how many left.
    pub fn ack(
        &mut self,
        id: ConsumerId,
        seq: QueueSeq,
        cumulative: bool,
        now: Instant,
        ctx: &Ctx<'_>,
        out: &mut Outcome,
    ) -> Result<usize, AckError> {
        let index = self.index_of(id)?;
        let slot = &mut self.consumers[index];
        let position = slot
            .delivered
            .iter()
            .position(|e| e.seq == seq)
            .ok_or(AckError::NotHeld(seq))?;
        let gone: Vec<Entry> = if cumulative {
            slot.delivered.drain(..=position).collect()
        } else {
            slot.delivered.remove(position).into_iter().collect()
        };
        let count = gone.len();
        for entry in gone {
            self.purged.remove(&entry.seq);
            self.counts.dequeued += 1;
            self.removed(&entry, out);
        }
        self.dispatch(now, ctx, out);
        Ok(count)
    }

    /// Take deliveries `seqs` of consumer `id` out of its window for an acknowledgement kept
    /// later, with other changes (a STOMP transaction's COMMIT): all of them or, when one is
    /// not held, none. They are counted and the window refilled by [`Self::acknowledged`]
    /// once the removal is kept, or given back by [`Self::given_back`] if it is not.
    pub fn take_delivered(
        &mut self,
        id: ConsumerId,
        seqs: &[QueueSeq],
    ) -> Result<Vec<Entry>, AckError> {
        let index = self.index_of(id)?;
        let slot = &mut self.consumers[index];
        if let Some(missing) = seqs
            .iter()
            .find(|seq| !slot.delivered.iter().any(|e| e.seq == **seq))
        {
            return Err(AckError::NotHeld(*missing));
        }
        let mut taken = Vec::with_capacity(seqs.len());
        for seq in seqs {
            if let Some(at) = slot.delivered.iter().position(|e| e.seq == *seq) {
                taken.extend(slot.delivered.remove(at));
            }
        }
        self.staged.extend(taken.iter().map(|e| e.seq));
        Ok(taken)
    }

    /// `count` deliveries taken out by [`Self::take_delivered`] are acknowledged for good
    /// (their removal is kept): counted, and the consumers' windows refilled.
    pub fn acknowledged(&mut self, count: usize, now: Instant, ctx: &Ctx<'_>, out: &mut Outcome) {
        self.counts.dequeued += count as u64;
        self.dispatch(now, ctx, out);
    }

    /// Deliveries taken out by [`Self::take_delivered`] whose acknowledgement was not kept:
    /// back in the queue in their place, redelivered, as when their consumer leaves.
    pub fn given_back(
        &mut self,
        entries: Vec<Entry>,
        now: Instant,
        ctx: &Ctx<'_>,
        out: &mut Outcome,
    ) {
        for mut entry in entries {
            self.staged.remove(&entry.seq);
            entry.redeliveries = entry.redeliveries.saturating_add(1);
            self.counts.redelivered += 1;
            self.ready.insert(entry.seq, entry);
        }
        self.dispatch(now, ctx, out);
    }

    /// Deliveries `seqs` taken out by [`Self::take_delivered`] are settled (kept or given
    /// back): no longer held as staged.
    pub fn unstage(&mut self, seqs: impl IntoIterator<Item = QueueSeq>) {
        for seq in seqs {
            self.staged.remove(&seq);
        }
    }

    /// Consumer `id` refuses delivery `seq` (a poison ack: STOMP NACK): redelivered after the
    /// redelivery policy's delay while it allows, else dead-lettered or dropped.
    pub fn nack(
        &mut self,
        id: ConsumerId,
        seq: QueueSeq,
        now: Instant,
        ctx: &Ctx<'_>,
        out: &mut Outcome,
    ) -> Result<(), AckError> {
        let index = self.index_of(id)?;
        let slot = &mut self.consumers[index];
        let position = slot
            .delivered
            .iter()
            .position(|e| e.seq == seq)
            .ok_or(AckError::NotHeld(seq))?;
        let Some(mut entry) = slot.delivered.remove(position) else {
            return Err(AckError::NotHeld(seq));
        };
        if self.purged.remove(&seq) {
            self.drop_purged(&entry, out);
            self.dispatch(now, ctx, out);
            return Ok(());
        }
        match ctx.policy.after_rejection(
            ctx.destination,
            entry.persistent,
            entry.redeliveries,
            None,
        ) {
            Rejection::Redeliver { after } => {
                entry.redeliveries = entry.redeliveries.saturating_add(1);
                let at = now + after;
                entry.not_before = Some(at);
                self.counts.redelivered += 1;
                self.ready.insert(entry.seq, entry);
                out.retry_at = Some(out.retry_at.map_or(at, |t| t.min(at)));
            }
            Rejection::DeadLetter { to } => {
                let cause = format!(
                    "Delivery[{}] exceeds redelivery policy limit or was refused (NACK)",
                    entry.redeliveries.saturating_add(1)
                );
                self.dead_letter(entry, Some(to), cause, ctx, out);
            }
            Rejection::Discard => self.discard(entry, out),
        }
        self.dispatch(now, ctx, out);
        Ok(())
    }

    /// Messages the consumers could still take now: the room of their prefetch windows (of
    /// the exclusive consumer's alone when there is one) less what waits already. A cluster
    /// node pulls no more than this from the shared store.
    pub fn room(&self) -> usize {
        let room = match self.consumers.iter().find(|c| c.exclusive) {
            Some(exclusive) => exclusive.room(),
            None => self
                .consumers
                .iter()
                .map(Slot::room)
                .fold(0usize, usize::saturating_add),
        };
        room.saturating_sub(self.ready.len())
    }

    /// The waiting messages (not dispatched), with when each may be dispatched.
    pub fn waiting(&self) -> Vec<(QueueSeq, Option<Instant>)> {
        self.ready.values().map(|e| (e.seq, e.not_before)).collect()
    }

    /// Take waiting messages `seqs` out of the queue without removing them from the store
    /// (a cluster node gives them back to the shared store for another node); returns those
    /// that were still waiting, each with its redelivery count (what the store keeps of it).
    pub fn withdraw(&mut self, seqs: &[QueueSeq]) -> Vec<(QueueSeq, u32)> {
        seqs.iter()
            .filter_map(|seq| self.ready.remove(seq).map(|e| (*seq, e.redeliveries)))
            .collect()
    }

    /// A purge of the shared store (a cluster) removes entries `seqs` there: those waiting or
    /// dispatched and not yet taken leave the queue with no store change (the store's purge
    /// removes them); those delivered stay with their consumers, marked (see `purged`).
    /// Returns the entries that left and how many delivered ones were marked.
    pub fn purge_entries(
        &mut self,
        seqs: &HashSet<QueueSeq>,
        now: Instant,
        ctx: &Ctx<'_>,
        out: &mut Outcome,
    ) -> (Vec<QueueSeq>, usize) {
        let mut gone: Vec<QueueSeq> = Vec::new();
        self.ready.retain(|seq, _| {
            let hit = seqs.contains(seq);
            if hit {
                gone.push(*seq);
            }
            !hit
        });
        let mut marked = 0;
        for slot in &mut self.consumers {
            slot.assigned.retain(|e| {
                let hit = seqs.contains(&e.seq);
                if hit {
                    gone.push(e.seq);
                }
                !hit
            });
            for entry in slot.delivered.iter().filter(|e| seqs.contains(&e.seq)) {
                if self.purged.insert(entry.seq) {
                    marked += 1;
                }
            }
        }
        self.counts.dequeued += gone.len() as u64;
        self.dispatch(now, ctx, out);
        (gone, marked)
    }

    /// A purged delivered entry its consumer gave back: it leaves the queue.
    fn drop_purged(&mut self, entry: &Entry, out: &mut Outcome) {
        self.counts.dequeued += 1;
        self.removed(entry, out);
    }

    /// Every message held: waiting, dispatched or delivered.
    pub fn held(&self) -> std::collections::HashSet<QueueSeq> {
        let mut held: std::collections::HashSet<QueueSeq> = self.ready.keys().copied().collect();
        held.extend(self.staged.iter().copied());
        for slot in &self.consumers {
            held.extend(
                slot.assigned
                    .iter()
                    .chain(slot.delivered.iter())
                    .map(|e| e.seq),
            );
        }
        held
    }

    /// Remove every message not delivered to a consumer (ready and dispatched but not taken).
    /// Delivered ones stay with their consumers. Returns how many went.
    pub fn purge(&mut self, out: &mut Outcome) -> usize {
        let mut gone: Vec<Entry> = std::mem::take(&mut self.ready).into_values().collect();
        for slot in &mut self.consumers {
            gone.extend(slot.assigned.drain(..));
        }
        let count = gone.len();
        for entry in gone {
            self.counts.dequeued += 1;
            self.removed(&entry, out);
        }
        count
    }

    /// Every message held, in queue order (ready, dispatched and delivered).
    pub fn browse(&self, max: usize) -> Vec<QueueDelivery> {
        self.browse_selected(max, None)
            .into_iter()
            .map(|(d, _)| d)
            .collect()
    }

    /// The first `max` messages held that `filter` accepts, in queue order (ready,
    /// dispatched and delivered), each with whether its payload is paged out (its message
    /// is then the envelope: read the payload back from the store).
    pub fn browse_selected(
        &self,
        max: usize,
        filter: Option<&dyn MessageFilter>,
    ) -> Vec<(QueueDelivery, bool)> {
        let mut all: Vec<&Entry> = self.ready.values().collect();
        for slot in &self.consumers {
            all.extend(slot.assigned.iter().chain(slot.delivered.iter()));
        }
        all.sort_by_key(|e| e.seq);
        all.into_iter()
            .filter(|e| filter.is_none_or(|f| f.accepts(&e.message, &e.info())))
            .take(max)
            .map(|e| (e.delivery(), e.paged))
            .collect()
    }

    /// Expire what expired among the ready messages and dispatch (for a periodic sweep).
    pub fn sweep(&mut self, now: Instant, ctx: &Ctx<'_>, out: &mut Outcome) {
        let expired: Vec<QueueSeq> = self
            .ready
            .values()
            .filter(|e| e.message.is_expired(now))
            .map(|e| e.seq)
            .collect();
        for seq in expired {
            if let Some(entry) = self.ready.remove(&seq) {
                self.expire(entry, ctx, out);
            }
        }
        self.dispatch(now, ctx, out);
    }

    /// Give ready messages to consumers with room: in queue order, each to the next consumer
    /// (round-robin) that has room and whose filter accepts it; with an exclusive consumer,
    /// only to the first exclusive one. A message no consumer accepts stays for later ones.
    /// Then the consumers' next pages of paged-out messages are asked for: everything that
    /// may release memory (an acknowledgement, a consumer leaving) dispatches.
    pub fn dispatch(&mut self, now: Instant, ctx: &Ctx<'_>, out: &mut Outcome) {
        self.assign(now, ctx, out);
        self.page_more(ctx, out);
    }

    /// The page of each consumer that is due (see `Slot::next_page`).
    fn page_more(&mut self, ctx: &Ctx<'_>, out: &mut Outcome) {
        for slot in &mut self.consumers {
            out.page_in.extend(slot.next_page(ctx.memory));
        }
    }

    /// The dispatch proper: ready messages into the consumers' windows.
    fn assign(&mut self, now: Instant, ctx: &Ctx<'_>, out: &mut Outcome) {
        if self.ready.is_empty() {
            return;
        }
        let exclusive = self.consumers.iter().position(|c| c.exclusive);
        let candidates: Vec<usize> = match exclusive {
            Some(owner) => vec![owner],
            None => (0..self.consumers.len()).collect(),
        };
        let mut room: Vec<usize> = self.consumers.iter().map(Slot::room).collect();
        let mut plan: Vec<(QueueSeq, Option<usize>)> = Vec::new();
        let mut next_retry: Option<Instant> = None;
        let mut passed_over = 0;
        for (seq, entry) in &self.ready {
            if passed_over >= DISPATCH_SCAN_LIMIT {
                break;
            }
            if entry.message.is_expired(now) {
                plan.push((*seq, None));
                continue;
            }
            if let Some(at) = entry.not_before.filter(|at| *at > now) {
                next_retry = Some(next_retry.map_or(at, |t| t.min(at)));
                passed_over += 1;
                continue;
            }
            if candidates.iter().all(|c| room[*c] == 0) {
                // Nobody has room: the rest waits (expired ones are found on a later pass).
                break;
            }
            let n = candidates.len();
            let start = if exclusive.is_some() {
                0
            } else {
                self.cursor % n.max(1)
            };
            // Round-robin from the cursor among the consumers of the highest priority that
            // have room and accept it (ActiveMQ's consumer priority).
            let mut chosen: Option<usize> = None;
            for c in (0..n).map(|k| candidates[(start + k) % n]) {
                let better =
                    chosen.is_none_or(|b| self.consumers[c].priority > self.consumers[b].priority);
                if better && room[c] > 0 && self.consumers[c].accepts(entry) {
                    chosen = Some(c);
                }
            }
            if let Some(c) = chosen {
                room[c] -= 1;
                if exclusive.is_none() {
                    self.cursor = (c + 1) % n;
                }
                plan.push((*seq, Some(c)));
            } else {
                passed_over += 1;
            }
        }
        let mut woken = vec![false; self.consumers.len()];
        for (seq, target) in plan {
            let Some(mut entry) = self.ready.remove(&seq) else {
                continue;
            };
            match target {
                None => self.expire(entry, ctx, out),
                Some(c) => {
                    entry.not_before = None;
                    if entry.paged {
                        self.consumers[c].unread = true;
                    } else {
                        woken[c] = true;
                    }
                    self.consumers[c].assigned.push_back(entry);
                }
            }
        }
        for (c, wake) in woken.into_iter().enumerate() {
            if wake {
                out.wake.push(self.consumers[c].wake.clone());
            }
        }
        if let Some(at) = next_retry {
            out.retry_at = Some(out.retry_at.map_or(at, |t| t.min(at)));
        }
    }

    fn index_of(&self, id: ConsumerId) -> Result<usize, AckError> {
        self.consumers
            .iter()
            .position(|c| c.id == id)
            .ok_or(AckError::NoConsumer)
    }

    /// An expired message: dead-lettered when the strategy processes expired messages of its
    /// kind, else dropped. Counted either way.
    fn expire(&mut self, entry: Entry, ctx: &Ctx<'_>, out: &mut Outcome) {
        self.counts.expired += 1;
        let to = ctx.policy.after_expiry(ctx.destination, entry.persistent);
        self.dead_letter(entry, to, "expired".into(), ctx, out);
    }

    /// To dead-letter destination `to` (the policy's answer; `None`: dropped), unless this
    /// is a dead-letter queue itself: ActiveMQ does not dead-letter out of one.
    fn dead_letter(
        &mut self,
        entry: Entry,
        to: Option<Destination>,
        cause: String,
        ctx: &Ctx<'_>,
        out: &mut Outcome,
    ) {
        match to.filter(|_| !ctx.is_dead_letter_queue) {
            Some(to) => {
                if !to.is_queue_like() {
                    tracing::warn!(
                        queue = ctx.name,
                        dead_letter_topic = %to.name,
                        "a topic as dead-letter destination of a queue is served as a queue of that name"
                    );
                }
                self.counts.dequeued += 1;
                self.counts.dead_lettered += 1;
                let expiration = ctx
                    .policy
                    .dead_letter_for(ctx.destination)
                    .rules()
                    .expiration_ms
                    .map(std::time::Duration::from_millis);
                out.dead_letters.push(DeadLetter {
                    entry,
                    target: Arc::from(to.name),
                    cause,
                    expiration,
                });
            }
            None => self.discard(entry, out),
        }
    }

    fn discard(&mut self, entry: Entry, out: &mut Outcome) {
        self.counts.dequeued += 1;
        self.counts.discarded += 1;
        tracing::debug!(queue = %ctx_name(&self.owner), seq = entry.seq, "message discarded");
        self.removed(&entry, out);
    }

    fn removed(&self, entry: &Entry, out: &mut Outcome) {
        if entry.kept {
            out.changes.push(Change::Removed {
                owner: self.owner.clone(),
                seq: entry.seq,
            });
        }
    }
}

fn ctx_name(owner: &QueueOwner) -> &str {
    match owner {
        QueueOwner::Session(n) | QueueOwner::Group(n) | QueueOwner::Queue(n) => n,
    }
}

/// What the rules need to know about the queue besides its state.
pub(super) struct Ctx<'a> {
    pub name: &'a str,
    /// The queue as the configuration names destinations.
    pub destination: &'a Destination,
    pub policy: &'a DeliveryPolicy,
    /// This queue is a dead-letter queue: nothing is dead-lettered out of it.
    pub is_dead_letter_queue: bool,
    /// Kept messages beyond this many waiting ones are paged out (`None`: the engine keeps
    /// no bodies to read back).
    pub page_after: Option<usize>,
    /// The broker's `memoryUsage`: half full, new waiting messages are paged out; full, no
    /// page is read back for a consumer that holds messages in memory.
    pub memory: &'a MemoryGauge,
}
