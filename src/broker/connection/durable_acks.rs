//! Acknowledgements that wait for the durable store (pipelined group commit).
//!
//! A QoS 1/2 PUBLISH to a durable broker is acknowledged only once its store batch is durable.
//! The connection does not wait for that: it keeps reading, and each PUBLISH adds its pending
//! acknowledgement here, so one client with many messages in flight gets many of them into one
//! fsync. Acknowledgements leave in arrival order (MQTT 3.1.1 4.6: PUBACK/PUBREC in the order
//! the PUBLISHes came), so once one is pending, even acknowledgements that need no store wait
//! behind it. Routing happens as each one leaves (not when its commit completes), so a
//! publisher's messages reach subscribers in the order it sent them, QoS 0 included.
//!
//! Outbound QoS 2 deliveries of a persistent session use the same queue: a PUBLISH leaves only
//! once its "sent with packet id N" state is durable, and a PUBREL only once its "released"
//! state is. Otherwise a crash could make the restarted broker send the message again under a
//! new packet id (a duplicate the client cannot recognise) or re-send a PUBLISH the client
//! already completed (MQTT 3.1.1 4.3.3: exactly once across a restart).

use std::future::Future;
use std::pin::Pin;

use bytes::BytesMut;
use futures_util::stream::{FuturesOrdered, StreamExt};

use crate::broker::runtime::RoutePlan;
use crate::protocol::Packet;

/// Most acknowledgements waiting for the store per connection; the connection stops reading
/// when it is reached (bounds memory; far above any client's in-flight window).
pub(crate) const MAX_PENDING_ACKS: usize = 4096;

/// What the connection does, in arrival order, once a pending entry is ready.
#[derive(Debug, Default)]
pub(crate) struct Ready {
    /// Deliver this message (its store ops are durable).
    pub route: Option<RoutePlan>,
    /// Send this acknowledgement (`None`: refused, send nothing).
    pub ack: Option<Packet>,
    /// Encoded deliveries to write: a batch held until its QoS 2 exchanges' state was durable
    /// (see `Conn::pump`), or one queued behind such a batch to keep the delivery order.
    pub deliveries: Option<BytesMut>,
    /// An MQTT 3 publish stayed refused past `sendFailIfNoSpace[AfterTimeout]`: close the
    /// connection (see `flow_control.rs`).
    pub close_no_space: bool,
    /// The store could not keep what this packet promises (a SUBSCRIBE's subscription in a
    /// cluster, a QoS 2 release, the state of a QoS 2 delivery, the first copy of a re-sent
    /// QoS 2 PUBLISH): close the connection instead of sending it (MQTT 5 DISCONNECT 0x9C, Use
    /// another server, from a cluster node; 0x89, Server busy, from a single broker).
    pub close_unkept: bool,
    /// The released state of this QoS 2 delivery (packet id) was never stored, so no PUBREL
    /// left: its in-flight entry goes back to awaiting PUBREC, as the store has it, and the
    /// PUBLISH is sent again when its session resumes.
    pub unreleased: Option<u16>,
    /// Deliveries (packet ids, in send order) whose PUBLISH never left because their state
    /// was not stored: back to the head of the session's queue (see `Inflight::unsend`).
    pub unsent: Vec<u16>,
}

type AckFuture = Pin<Box<dyn Future<Output = Ready> + Send>>;

/// Created on first use and dropped when empty: most connections never wait for the store,
/// and an empty `FuturesOrdered` still holds an allocation. Boxed, so an idle connection pays
/// one pointer for it rather than the queue's 64 bytes (idle memory).
#[derive(Default)]
pub(crate) struct PendingAcks {
    queue: Option<Box<FuturesOrdered<AckFuture>>>,
    /// Cancelled when the connection closes: a publish whose commit was refused and is being
    /// retried then gives up (unacknowledged: its client re-sends it) instead of outliving the
    /// connection. Created with the first such retry.
    closing: Option<tokio_util::sync::CancellationToken>,
}

impl PendingAcks {
    /// The token a retrying publish watches (see `closing`).
    pub(crate) fn closing(&mut self) -> tokio_util::sync::CancellationToken {
        self.closing.get_or_insert_with(Default::default).clone()
    }

    /// The connection is closing: retrying publishes give up.
    pub(crate) fn close(&mut self) {
        if let Some(closing) = &self.closing {
            closing.cancel();
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.queue.as_ref().is_none_or(|q| q.is_empty())
    }

    pub(crate) fn len(&self) -> usize {
        self.queue.as_ref().map_or(0, |q| q.len())
    }

    pub(crate) fn has_room(&self) -> bool {
        self.queue
            .as_ref()
            .is_none_or(|q| q.len() < MAX_PENDING_ACKS)
    }

    pub(crate) fn push(&mut self, ack: impl Future<Output = Ready> + Send + 'static) {
        self.queue
            .get_or_insert_with(Box::default)
            .push_back(Box::pin(ack));
    }

    /// The next entry if it is ready now, without waiting. One group commit releases many
    /// acknowledgements at once; taking all of them before the connection writes sends them
    /// (and routes their messages) in one batch, not one socket write per acknowledgement.
    /// Polled with a no-op waker: the caller must poll [`PendingAcks::next_ready`] again
    /// before it waits (the connection's `select!` does, every round).
    pub(crate) fn ready_now(&mut self) -> Option<Ready> {
        use futures_util::FutureExt;
        self.next_ready().now_or_never().flatten()
    }

    /// The next entry in arrival order, once ready (`None` when nothing is pending).
    /// Cancel-safe.
    pub(crate) async fn next_ready(&mut self) -> Option<Ready> {
        let queue = self.queue.as_mut()?;
        let ready = queue.next().await;
        if queue.is_empty() {
            self.queue = None;
        }
        ready
    }
}
