//! A queue consumer as the engine sees it: its window, its filter, how it is woken, and what a
//! delivery to it carries.

use std::sync::Arc;

use tokio::sync::Notify;

use crate::broker::durability::QueueSeq;
use crate::broker::message::Message;

/// Names a consumer of one queue (unique per broker).
pub type ConsumerId = u64;

/// What a filter sees of a queued message besides the message itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueuedInfo {
    /// The message was delivered before and came back (ActiveMQ's `redeliveryCounter`).
    pub redeliveries: u32,
    /// Persistent (kept in the store).
    pub persistent: bool,
    /// When the broker accepted it, ms since the Unix epoch (a selector's JMSTimestamp).
    pub accepted_ms: u64,
}

/// A consumer's message filter (a JMS selector): messages it refuses stay in the queue for
/// the other consumers. Called with the queue's lock held: it must be quick and not block.
pub trait MessageFilter: Send + Sync {
    fn accepts(&self, message: &Message, info: &QueuedInfo) -> bool;
}

impl<F> MessageFilter for F
where
    F: Fn(&Message, &QueuedInfo) -> bool + Send + Sync,
{
    fn accepts(&self, message: &Message, info: &QueuedInfo) -> bool {
        self(message, info)
    }
}

/// How a consumer subscribes.
#[derive(Clone)]
pub struct ConsumerSpec {
    /// How many messages it may hold unacknowledged (`activemq.prefetchSize`); `None`: the
    /// queue's `queuePrefetch` policy (1000 by default). 0 is taken as 1: a STOMP consumer
    /// cannot pull.
    pub prefetch: Option<usize>,
    /// `activemq.exclusive`: while it lives it gets every message (the first exclusive
    /// consumer of the queue wins; the others wait as backups).
    pub exclusive: bool,
    /// `activemq.priority` (0-127, default 0): consumers of a higher priority that have room
    /// get messages first; equal ones share them round-robin.
    pub priority: u8,
    pub filter: Option<Arc<dyn MessageFilter>>,
    /// Notified when messages were dispatched to it ([`super::QueueConsumer::take`] them).
    pub wake: Arc<Notify>,
}

impl std::fmt::Debug for ConsumerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerSpec")
            .field("prefetch", &self.prefetch)
            .field("exclusive", &self.exclusive)
            .field("priority", &self.priority)
            .field("filter", &self.filter.is_some())
            .finish_non_exhaustive()
    }
}

/// One message handed to a consumer: it stays the consumer's until acknowledged
/// ([`super::QueueConsumer::ack`]), refused ([`super::QueueConsumer::nack`]) or the consumer closes (then it
/// goes back to the queue, redelivered).
#[derive(Debug, Clone)]
pub struct QueueDelivery {
    /// Names the message in acks (unique per broker).
    pub seq: QueueSeq,
    pub message: Message,
    /// Delivered before (STOMP `redelivered:true`).
    pub redelivered: bool,
    /// How many times it has been delivered, this one included (JMSXDeliveryCount).
    pub delivery_count: u32,
    /// Persistent (kept in the store until acknowledged).
    pub persistent: bool,
}
