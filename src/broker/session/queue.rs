//! A session's pending queue: messages routed to it but not yet written to its socket.
//!
//! The rule (an acknowledged QoS 1/2 message is never lost; memory stays bounded):
//! - A QoS 1/2 message is always queued, to an online or an offline session, persistent or
//!   not: its publisher was (or will be) acknowledged, so only delivery, an expiry the user
//!   configured, or an admin action may remove it. What bounds these queues is broker-wide:
//!   every body is charged to `memoryUsage` (and kept within `storeUsage` with a store), and
//!   when a limit is reached new QoS 1/2 publishes are not admitted (producer flow control,
//!   see [`crate::broker::runtime`]'s admission).
//! - Every session has a soft limit (the best-matching `policyEntry`'s
//!   `constantPendingMessageLimitStrategy` limit for the message's topic, else
//!   [`crate::broker::routing::limits::DEFAULT_PENDING_MESSAGE_LIMIT`]). An online session above it makes the
//!   publisher's connection stop reading until it drains below it (back-pressure through TCP;
//!   bounded in time, see [`crate::broker::runtime::BrokerCore::complete_route`]).
//! - QoS 0 keeps the limit's ActiveMQ meaning (a slow non-durable subscriber's oldest
//!   messages are discarded): past the limit (the hard cap,
//!   [`crate::broker::routing::limits::pending_hard_cap`], for an online session) the oldest queued QoS 0
//!   message is evicted to make room, and with none to evict a new QoS 0 message is dropped.
//!   QoS 0 to an offline session is not queued at all (see
//!   [`crate::broker::session::Session::deliver`]). QoS 0 is paused for like any other QoS: a
//!   publisher that outruns its subscriber otherwise costs CPU twice (measured: 92% of a
//!   10 -> 1 QoS 0 fan-in read, routed and evicted unseen).
//!
//! Retained messages queued because of a SUBSCRIBE are exempt from the limit (see
//! [`crate::broker::runtime::BrokerCore::deliver_retained`]).
//!
//! Every QoS 0 drop is counted (`dropped_queue_full`) and logged at warn by the caller.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::broker::durability::PagedBody;
use crate::broker::message::{qos_serde, Message};
use crate::protocol::QoS;

/// A message waiting for a session, with the QoS and retain flag it will be sent with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedMessage {
    pub message: Message,
    /// min(published QoS, subscription QoS).
    #[serde(with = "qos_serde")]
    pub qos: QoS,
    /// The RETAIN flag it is sent with: 1 for retained messages sent because of a SUBSCRIBE,
    /// and for live ones through a Retain As Published subscription that were published with
    /// RETAIN=1.
    pub retain: bool,
    /// The Subscription Identifier of the subscription it was routed through (MQTT 5
    /// 3.3.4-3), sent with it.
    #[serde(default)]
    pub subscription_id: Option<std::num::NonZeroU32>,
    /// The kept queue entry of this message (persistent session, QoS 1/2): the durability
    /// engine holds it, and delivery and acks name it by this number.
    #[serde(default)]
    pub seq: Option<crate::broker::durability::QueueSeq>,
    /// Paged out: the payload is not in memory (empty here) but kept by the durability engine
    /// under `seq`; it is read back before delivery (see `connection/page_in.rs`).
    #[serde(default)]
    pub paged: bool,
    /// The shared subscription (`$share/{group}/{filter}`) a QoS 1/2 copy was routed through:
    /// if this session ends before the copy is acknowledged, it goes to another member of that
    /// group (MQTT 5 4.8.2). Not kept in the store: after a restart such a copy stays with
    /// its session.
    #[serde(skip)]
    pub shared_group: Option<std::sync::Arc<str>>,
}

impl QueuedMessage {
    /// Keep only the envelope in memory ([`Message::envelope`]: no payload, no large
    /// properties): the durability engine keeps the message under `seq`.
    pub fn page_out(&mut self) {
        self.message = self.message.envelope();
        self.paged = true;
    }
}

/// What [`PendingQueue::push`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnqueueOutcome {
    Queued,
    /// Queued after evicting the oldest QoS 0 message.
    QueuedEvictedOldestQos0,
    /// A QoS 0 message met a queue full of QoS 1/2 messages: it was dropped.
    DroppedFull,
}

/// A queue's capacity (in slots) it may keep however empty: small queues are not resized.
const SHRINK_ABOVE_SLOTS: usize = 1024;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingQueue {
    items: VecDeque<QueuedMessage>,
    /// How many queued items are QoS 0, so a full queue of QoS 1/2 is not scanned in vain.
    qos0_count: usize,
}

impl PendingQueue {
    pub const fn new() -> Self {
        PendingQueue {
            items: VecDeque::new(),
            qos0_count: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Append `item` under the rule of this module: at `limit`, the oldest QoS 0 message makes
    /// room, or a new QoS 0 message is dropped; a QoS 1/2 message is always queued.
    pub fn push(&mut self, item: QueuedMessage, limit: usize) -> EnqueueOutcome {
        let mut outcome = EnqueueOutcome::Queued;
        if self.items.len() >= limit.max(1) {
            if self.qos0_count == 0 {
                if item.qos == QoS::AtMostOnce {
                    return EnqueueOutcome::DroppedFull;
                }
                self.items.push_back(item);
                return EnqueueOutcome::Queued;
            }
            if let Some(pos) = self.items.iter().position(|q| q.qos == QoS::AtMostOnce) {
                self.items.remove(pos);
                self.qos0_count -= 1;
                outcome = EnqueueOutcome::QueuedEvictedOldestQos0;
            }
        }
        if item.qos == QoS::AtMostOnce {
            self.qos0_count += 1;
        }
        self.items.push_back(item);
        outcome
    }

    /// Append `item` with no limit (messages read back from a durability engine).
    pub fn push_unbounded(&mut self, item: QueuedMessage) {
        self.push(item, usize::MAX);
    }

    /// The `seq`s of up to `max` paged-out messages at the head of the queue, in order.
    pub fn paged_head(&self, max: usize) -> Vec<crate::broker::durability::QueueSeq> {
        self.items
            .iter()
            .take_while(|i| i.paged)
            .filter_map(|i| i.seq)
            .take(max)
            .collect()
    }

    /// Give paged-out messages their bodies back: `page` is `(seq, body)` for entries taken
    /// from the head with [`Self::paged_head`], in queue order (`None`: the engine no longer
    /// has the entry, so it is removed). `fill` makes the in-memory message of an item from
    /// its envelope and body (the caller charges it to the memory gauge). Only the head
    /// is walked (the page's items are there: the queue only grows at its back meanwhile), so
    /// the cost is the page's, not the queue's. Returns how many entries were gone.
    pub fn page_in(
        &mut self,
        page: Vec<(crate::broker::durability::QueueSeq, Option<PagedBody>)>,
        mut fill: impl FnMut(&Message, PagedBody) -> Message,
    ) -> usize {
        let scan_limit = page.len() * 2 + 64;
        let mut page = page.into_iter().peekable();
        let (mut index, mut gone) = (0, 0);
        while index < self.items.len().min(scan_limit + gone) {
            let Some((seq, _)) = page.peek() else {
                break;
            };
            let item = &mut self.items[index];
            if !(item.paged && item.seq == Some(*seq)) {
                index += 1;
                continue;
            }
            match page.next().and_then(|(_, body)| body) {
                Some(body) => {
                    item.message = fill(&item.message, body);
                    item.paged = false;
                    index += 1;
                }
                None => {
                    // Paged items are QoS 1/2: the QoS 0 count is unchanged.
                    self.items.remove(index);
                    gone += 1;
                }
            }
        }
        if gone > 0 {
            self.shrink_when_sparse();
        }
        gone
    }

    pub fn front(&self) -> Option<&QueuedMessage> {
        self.items.front()
    }

    /// Put back an item just taken with [`PendingQueue::pop_front`] (it could not be sent yet).
    pub fn push_front(&mut self, item: QueuedMessage) {
        if item.qos == QoS::AtMostOnce {
            self.qos0_count += 1;
        }
        self.items.push_front(item);
    }

    pub fn pop_front(&mut self) -> Option<QueuedMessage> {
        let item = self.items.pop_front()?;
        if item.qos == QoS::AtMostOnce {
            self.qos0_count -= 1;
        }
        self.shrink_when_sparse();
        Some(item)
    }

    /// Give back the room a drained backlog left: a `VecDeque` keeps its largest capacity,
    /// so a session that once queued a million messages held about 100 MB of empty slots
    /// until it ended (measured: 119 MiB of RSS 70 s after the drain). Halved when a quarter
    /// is in use, so a queue that grows again does not shrink and grow in turn, and the
    /// copying costs O(1) per pop over time.
    fn shrink_when_sparse(&mut self) {
        let capacity = self.items.capacity();
        if capacity > SHRINK_ABOVE_SLOTS && self.items.len() <= capacity / 4 {
            self.items
                .shrink_to((self.items.len() * 2).max(SHRINK_ABOVE_SLOTS));
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &QueuedMessage> {
        self.items.iter()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::broker::message::SampleStamp;

    fn item(n: u8, qos: QoS) -> QueuedMessage {
        QueuedMessage {
            message: Message {
                stamp: SampleStamp::NONE,
                topic: Arc::from("t"),
                payload: Bytes::from(vec![n]),
                qos,
                retain: false,
                v5: None,
            },
            qos,
            retain: false,
            subscription_id: None,
            seq: None,
            paged: false,
            shared_group: None,
        }
    }

    fn payloads(q: &PendingQueue) -> Vec<u8> {
        q.iter().map(|i| i.message.payload[0]).collect()
    }

    #[test]
    fn a_drained_backlog_gives_its_room_back() {
        let mut q = PendingQueue::default();
        for n in 0..100_000u32 {
            q.push_unbounded(item(n as u8, QoS::AtLeastOnce));
        }
        let peak = q.items.capacity();
        assert!(peak >= 100_000);
        while q.len() > 10 {
            q.pop_front();
        }
        assert!(
            q.items.capacity() <= 2 * SHRINK_ABOVE_SLOTS,
            "{} slots kept for {} items (peak {peak})",
            q.items.capacity(),
            q.len()
        );
        // Small queues are left alone.
        let mut small = PendingQueue::default();
        for n in 0..100 {
            small.push_unbounded(item(n, QoS::AtLeastOnce));
        }
        let capacity = small.items.capacity();
        while small.pop_front().is_some() {}
        assert_eq!(small.items.capacity(), capacity);
    }

    #[test]
    fn full_queue_evicts_oldest_qos0_first() {
        let mut q = PendingQueue::default();
        assert_eq!(q.push(item(1, QoS::AtLeastOnce), 3), EnqueueOutcome::Queued);
        assert_eq!(q.push(item(2, QoS::AtMostOnce), 3), EnqueueOutcome::Queued);
        assert_eq!(q.push(item(3, QoS::AtMostOnce), 3), EnqueueOutcome::Queued);
        assert_eq!(
            q.push(item(4, QoS::ExactlyOnce), 3),
            EnqueueOutcome::QueuedEvictedOldestQos0
        );
        assert_eq!(payloads(&q), vec![1, 3, 4]);
        assert_eq!(
            q.push(item(5, QoS::AtMostOnce), 3),
            EnqueueOutcome::QueuedEvictedOldestQos0
        );
        assert_eq!(payloads(&q), vec![1, 4, 5]);
    }

    #[test]
    fn full_queue_without_qos0_drops_a_new_qos0_and_keeps_every_qos1_and_2() {
        let mut q = PendingQueue::default();
        q.push(item(1, QoS::AtLeastOnce), 2);
        q.push(item(2, QoS::ExactlyOnce), 2);
        assert_eq!(
            q.push(item(3, QoS::AtMostOnce), 2),
            EnqueueOutcome::DroppedFull
        );
        assert_eq!(q.push(item(4, QoS::AtLeastOnce), 2), EnqueueOutcome::Queued);
        assert_eq!(q.push(item(5, QoS::ExactlyOnce), 2), EnqueueOutcome::Queued);
        assert_eq!(payloads(&q), vec![1, 2, 4, 5]);
        assert_eq!(q.pop_front().map(|i| i.message.payload[0]), Some(1));
        assert_eq!(
            q.push(item(6, QoS::AtMostOnce), 2),
            EnqueueOutcome::DroppedFull,
            "still over the limit"
        );
        assert_eq!(payloads(&q), vec![2, 4, 5]);
    }

    #[test]
    fn qos0_count_tracks_pops() {
        let mut q = PendingQueue::default();
        q.push(item(1, QoS::AtMostOnce), 2);
        q.push(item(2, QoS::AtLeastOnce), 2);
        q.pop_front();
        // The only QoS 0 item is gone: a full queue must now drop a QoS 0, not scan.
        q.push(item(3, QoS::AtLeastOnce), 2);
        assert_eq!(
            q.push(item(4, QoS::AtMostOnce), 2),
            EnqueueOutcome::DroppedFull
        );
        assert_eq!(q.len(), 2);
    }

    #[test]
    fn page_in_fills_the_paged_head_and_removes_entries_that_are_gone() {
        let mut q = PendingQueue::default();
        for n in 1..=4u8 {
            let mut it = item(n, QoS::AtLeastOnce);
            it.seq = Some(u64::from(n));
            if n > 1 {
                it.page_out();
            }
            q.push_unbounded(it);
        }
        assert_eq!(q.paged_head(10), Vec::<u64>::new(), "head not paged yet");
        assert_eq!(q.pop_front().map(|i| i.message.payload[0]), Some(1));
        assert_eq!(q.paged_head(2), vec![2, 3]);
        let body = PagedBody {
            payload: Bytes::from_static(&[20]),
            v5: None,
        };
        let page = vec![(2, Some(body)), (3, None)];
        let gone = q.page_in(page, Message::read_back);
        assert_eq!(gone, 1, "entry 3 was gone from the store");
        let left: Vec<(Option<u64>, bool)> = q.iter().map(|i| (i.seq, i.paged)).collect();
        assert_eq!(left, vec![(Some(2), false), (Some(4), true)]);
        assert_eq!(q.front().map(|i| i.message.payload[0]), Some(20));
    }
}
