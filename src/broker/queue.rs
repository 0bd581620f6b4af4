//! A session's pending queue: messages routed to it but not yet written to its socket.
//!
//! The slow-consumer rule (memory stays bounded, acknowledged QoS 1/2 messages are not lost to
//! an online subscriber):
//! - Every session has a soft limit (the best-matching `policyEntry`'s
//!   `constantPendingMessageLimitStrategy` limit for the message's topic, else
//!   [`super::limits::DEFAULT_PENDING_MESSAGE_LIMIT`]).
//! - Every message to an OFFLINE session is pushed against the soft limit: when full, the
//!   oldest queued QoS 0 message is evicted to make room (QoS 0 data is "latest wins"
//!   telemetry); with none to evict the NEW message is dropped. (QoS 0 to an offline session
//!   is not queued at all, see [`super::session::Session::deliver`].)
//! - Every message to an ONLINE session, QoS 0 included, is pushed against the hard cap
//!   ([`super::limits::pending_hard_cap`], 16x the soft limit) instead, under the same rule.
//!   The router reports the session as overfilled when it is above its soft limit, and the
//!   publisher's connection stops reading until the session drains below it (back-pressure
//!   through TCP; bounded in time, see [`super::runtime::BrokerCore::complete_route`]). Other
//!   publishers and subscribers go on. QoS 0 gets this too because a publisher that outruns
//!   its subscriber otherwise costs CPU twice: its messages are read, routed and queued, then
//!   evicted unseen (measured: 92% of a 10 -> 1 QoS 0 fan-in lost). Pausing the publisher makes
//!   TCP slow it down instead, as a single-threaded broker (mosquitto) does by nature.
//!
//! Retained messages queued because of a SUBSCRIBE are exempt (see
//! [`super::runtime::BrokerCore::deliver_retained`]).
//!
//! Every drop is counted (`dropped_queue_full`) and logged at warn by the caller.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::message::{qos_serde, Message};
use crate::protocol::QoS;

/// A message waiting for a session, with the QoS and retain flag it will be sent with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedMessage {
    pub message: Message,
    /// min(published QoS, subscription QoS).
    #[serde(with = "qos_serde")]
    pub qos: QoS,
    /// true only for retained messages sent because of a SUBSCRIBE.
    pub retain: bool,
    /// The kept queue entry of this message (persistent session, QoS 1/2): the durability
    /// engine holds it, and delivery and acks name it by this number.
    #[serde(default)]
    pub seq: Option<crate::broker::durability::QueueSeq>,
}

/// What [`PendingQueue::push`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnqueueOutcome {
    Queued,
    /// Queued after evicting the oldest QoS 0 message.
    QueuedEvictedOldestQos0,
    /// The queue was full of QoS 1/2 messages: the new message was dropped.
    DroppedFull,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingQueue {
    items: VecDeque<QueuedMessage>,
    /// How many queued items are QoS 0, so a full queue of QoS 1/2 is not scanned in vain.
    qos0_count: usize,
}

impl PendingQueue {
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Append `item` under the slow-consumer rule of this module.
    pub fn push(&mut self, item: QueuedMessage, limit: usize) -> EnqueueOutcome {
        let mut outcome = EnqueueOutcome::Queued;
        if self.items.len() >= limit.max(1) {
            if self.qos0_count == 0 {
                return EnqueueOutcome::DroppedFull;
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
        Some(item)
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

    fn item(n: u8, qos: QoS) -> QueuedMessage {
        QueuedMessage {
            message: Message {
                topic: Arc::from("t"),
                payload: Bytes::from(vec![n]),
                qos,
                retain: false,
                v5: None,
            },
            qos,
            retain: false,
            seq: None,
        }
    }

    fn payloads(q: &PendingQueue) -> Vec<u8> {
        q.iter().map(|i| i.message.payload[0]).collect()
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
    fn full_queue_without_qos0_drops_the_new_message() {
        let mut q = PendingQueue::default();
        q.push(item(1, QoS::AtLeastOnce), 2);
        q.push(item(2, QoS::ExactlyOnce), 2);
        assert_eq!(
            q.push(item(3, QoS::AtMostOnce), 2),
            EnqueueOutcome::DroppedFull
        );
        assert_eq!(
            q.push(item(4, QoS::AtLeastOnce), 2),
            EnqueueOutcome::DroppedFull
        );
        assert_eq!(payloads(&q), vec![1, 2]);
        assert_eq!(q.pop_front().map(|i| i.message.payload[0]), Some(1));
        assert_eq!(q.push(item(5, QoS::AtMostOnce), 2), EnqueueOutcome::Queued);
        assert_eq!(payloads(&q), vec![2, 5]);
    }

    #[test]
    fn qos0_count_tracks_pops() {
        let mut q = PendingQueue::default();
        q.push(item(1, QoS::AtMostOnce), 2);
        q.push(item(2, QoS::AtLeastOnce), 2);
        q.pop_front();
        // The only QoS 0 item is gone: a full queue must now drop, not scan.
        q.push(item(3, QoS::AtLeastOnce), 2);
        assert_eq!(
            q.push(item(4, QoS::AtLeastOnce), 2),
            EnqueueOutcome::DroppedFull
        );
        assert_eq!(q.len(), 2);
    }
}
