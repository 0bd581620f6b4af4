//! Acknowledgements that wait for the durable store (pipelined group commit).
//!
//! A QoS 1/2 PUBLISH to a durable broker is acknowledged only once its store batch is durable.
//! The connection does not wait for that: it keeps reading, and each PUBLISH adds its pending
//! acknowledgement here, so one client with many messages in flight gets many of them into one
//! fsync. Acknowledgements leave in arrival order (MQTT 3.1.1 4.6: PUBACK/PUBREC in the order
//! the PUBLISHes came), so once one is pending, even acknowledgements that need no store wait
//! behind it.

use std::future::Future;
use std::pin::Pin;

use futures_util::stream::{FuturesOrdered, StreamExt};

use crate::protocol::Packet;

/// Most acknowledgements waiting for the store per connection; the connection stops reading
/// when it is reached (bounds memory; far above any client's in-flight window).
pub(crate) const MAX_PENDING_ACKS: usize = 4096;

/// What a pending acknowledgement resolves to: the packet to send, or nothing (refused).
type AckFuture = Pin<Box<dyn Future<Output = Option<Packet>> + Send>>;

#[derive(Default)]
pub(crate) struct PendingAcks {
    queue: FuturesOrdered<AckFuture>,
}

impl PendingAcks {
    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub(crate) fn has_room(&self) -> bool {
        self.queue.len() < MAX_PENDING_ACKS
    }

    pub(crate) fn push(&mut self, ack: impl Future<Output = Option<Packet>> + Send + 'static) {
        self.queue.push_back(Box::pin(ack));
    }

    /// The next acknowledgement in order, once ready (`None` as the packet: refused, send
    /// nothing). Cancel-safe.
    pub(crate) async fn next_ready(&mut self) -> Option<Packet> {
        self.queue.next().await.flatten()
    }
}
