//! Producer flow control: a QoS 1/2 PUBLISH that a broker-wide limit (`memoryUsage`,
//! `storeUsage`, free disk space) does not let in is held, not acknowledged, and the
//! connection stops reading until it is admitted, as ActiveMQ blocks a producer.
//!
//! - While held, the connection still writes, and still reads every packet but PUBLISH: later
//!   PUBLISH packets wait in order ([`Deferred`], bounded by [`DEFERRED_MAX`] packets and
//!   [`DEFERRED_MAX_BYTES`]; then reading stops). So a client that publishes and subscribes
//!   keeps acknowledging its own deliveries, which frees the memory its publish waits for: it
//!   does not deadlock while its window of unacknowledged publishes stays within those
//!   bounds. Its keep-alive does not run out while a publish is held (we hold it).
//! - The held publish is tried again every [`HELD_RETRY`].
//! - An MQTT 5 client is refused with PUBACK/PUBREC 0x97 (Quota exceeded) after
//!   `sendFailIfNoSpaceAfterTimeout`, at once with `sendFailIfNoSpace="true"`, else after
//!   [`MQTT5_QUOTA_WAIT`]: its window is bounded by our Receive Maximum, so it must hear back.
//! - MQTT 3.1.1 has no negative acknowledgement: the client stays paused until there is room,
//!   unless `sendFailIfNoSpace[AfterTimeout]` is set; then the connection is closed (its will
//!   published) and the client re-sends the message when it reconnects.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use super::inbound::with_reason;
use super::{CloseReason, Conn};
use crate::broker::message::Message;
use crate::broker::routing::memory::Body;
use crate::broker::runtime::Refusal;
use crate::protocol::{Packet, ProtocolVersion, Publish, ReasonCode};

/// How often a held publish is tried again.
pub(super) const HELD_RETRY: Duration = Duration::from_millis(25);
/// How long an MQTT 5 publish is held before 0x97 when `sendFailIfNoSpace` is not set.
pub const MQTT5_QUOTA_WAIT: Duration = Duration::from_secs(5);

/// PUBLISH packets read while a publish is held wait here (in order) up to this many; then
/// reading stops. Above any client's own window of unacknowledged publishes.
pub(super) const DEFERRED_MAX: usize = 256;

/// ... or up to this many bytes of payload, whichever comes first: they are held in memory
/// outside `memoryUsage` (charging them would make the held publish wait for room its own
/// followers take), so a connection may hold this much beyond the limit while it is paused,
/// not 256 packets of up to `maxFrameSize` each.
pub(super) const DEFERRED_MAX_BYTES: usize = 1024 * 1024;

/// PUBLISH packets waiting behind a held one, in arrival order. Allocated on first use; boxed
/// so that a connection that never holds one pays one pointer, not a `VecDeque` (idle memory).
#[derive(Debug, Default)]
pub(super) struct Deferred(Option<Box<DeferredQueue>>);

#[derive(Debug, Default)]
pub(super) struct DeferredQueue {
    publishes: VecDeque<Publish>,
    /// Their payloads' bytes.
    bytes: usize,
}

impl Deferred {
    pub(super) fn is_empty(&self) -> bool {
        self.0.as_ref().is_none_or(|q| q.publishes.is_empty())
    }

    pub(super) fn has_room(&self) -> bool {
        self.0
            .as_ref()
            .is_none_or(|q| q.publishes.len() < DEFERRED_MAX && q.bytes < DEFERRED_MAX_BYTES)
    }

    /// `publish`, with its bytes copied out of the read it came in (that read is charged for
    /// what stays in memory, and a publish waiting for room must not wait on its own bytes).
    pub(super) fn push(&mut self, mut publish: Publish) {
        publish.detach();
        let queue = self.0.get_or_insert_with(Box::default);
        queue.bytes += publish.payload.len();
        queue.publishes.push_back(publish);
    }

    pub(super) fn pop(&mut self) -> Option<Publish> {
        let queue = self.0.as_mut()?;
        let publish = queue.publishes.pop_front();
        if let Some(publish) = &publish {
            queue.bytes -= publish.payload.len();
        }
        if queue.publishes.is_empty() {
            self.0 = None;
        }
        publish
    }
}

/// A QoS 1/2 PUBLISH waiting for room.
#[derive(Debug)]
pub(super) struct HeldPublish {
    message: Message,
    inbound_qos2: Option<u16>,
    ack: Packet,
    /// When it is refused (`None`: never, an MQTT 3 client without `sendFailIfNoSpace`).
    refuse_at: Option<Instant>,
}

impl Conn {
    /// When a publish held from now on is refused (see the module documentation).
    pub(super) fn refusal_deadline(&self) -> Option<Instant> {
        let configured = *self.core.send_fail_after.lock();
        let wait = match self.version {
            ProtocolVersion::V5 => Some(configured.unwrap_or(MQTT5_QUOTA_WAIT)),
            ProtocolVersion::V31 | ProtocolVersion::V311 => configured,
        };
        wait.map(|wait| Instant::now() + wait)
    }

    /// Hold `message` (refused for `refusal`): counted once, and refused at once when the
    /// deadline is now (`sendFailIfNoSpace="true"`).
    pub(super) fn hold(
        &mut self,
        message: Message,
        inbound_qos2: Option<u16>,
        ack: Packet,
        refusal: Refusal,
    ) -> Result<(), CloseReason> {
        self.core.count_held(&message.topic, &refusal);
        if let Some(id) = inbound_qos2 {
            // Not received as far as QoS 2 de-duplication goes until it is admitted: a
            // connection that takes the session over meanwhile must route the client's re-sent
            // PUBLISH, not acknowledge it as a duplicate.
            self.with_session(|s| s.inbound_qos2_mut().remove(&id))?;
        }
        let held = HeldPublish {
            // Copied out of its read: the read is charged for what stays in memory
            // (`Received::settle`), and a held publish must not wait on its own bytes.
            message: message.detached(),
            inbound_qos2,
            ack,
            refuse_at: self.refusal_deadline(),
        };
        self.flow.held = Some(Box::new(held));
        self.retry_held_if_due()
    }

    /// Try the held publish again: admitted -> committed, routed and acknowledged as usual;
    /// still refused -> held on, or refused past its deadline.
    pub(super) fn retry_held(&mut self) -> Result<(), CloseReason> {
        let Some(held) = self.flow.held.take() else {
            return Ok(());
        };
        let HeldPublish {
            message,
            inbound_qos2,
            ack,
            refuse_at,
        } = *held;
        // Its read's charge is not kept: it is charged on its own.
        match self.core.admit_acknowledged(message, Body::Uncharged) {
            Ok(message) => {
                if let Some(id) = inbound_qos2 {
                    self.with_session(|s| s.inbound_qos2_mut().insert(id))?;
                }
                self.publish_admitted(message, inbound_qos2, ack)
            }
            Err((message, _)) => {
                self.flow.held = Some(Box::new(HeldPublish {
                    message,
                    inbound_qos2,
                    ack,
                    refuse_at,
                }));
                self.retry_held_if_due()
            }
        }
    }

    /// Refuse the held publish when its deadline has passed.
    fn retry_held_if_due(&mut self) -> Result<(), CloseReason> {
        let due = self
            .flow
            .held
            .as_ref()
            .and_then(|h| h.refuse_at)
            .is_some_and(|at| Instant::now() >= at);
        if !due {
            return Ok(());
        }
        let Some(held) = self.flow.held.take() else {
            return Ok(());
        };
        // Its QoS 2 id was already forgotten when it was held: a PUBREC >= 0x80 ends the
        // exchange (no PUBREL follows); an MQTT 3 client re-sends.
        match self.version {
            ProtocolVersion::V5 => self.ack(with_reason(held.ack, ReasonCode::QuotaExceeded)),
            ProtocolVersion::V31 | ProtocolVersion::V311 => Err(CloseReason::NoSpace),
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::protocol::QoS;

    fn publish(payload_bytes: usize) -> Publish {
        Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: "t".into(),
            packet_id: Some(1),
            payload: Bytes::from(vec![0; payload_bytes]),
            properties: None,
        }
    }

    #[test]
    fn deferred_publishes_are_bounded_by_count_and_by_bytes() {
        let mut by_bytes = Deferred::default();
        while by_bytes.has_room() {
            by_bytes.push(publish(64 * 1024));
        }
        assert_eq!(by_bytes.0.as_ref().map(|q| q.publishes.len()), Some(16));
        by_bytes.pop();
        assert!(by_bytes.has_room(), "room again once one is taken");
        let mut by_count = Deferred::default();
        while by_count.has_room() {
            by_count.push(publish(1));
        }
        assert_eq!(
            by_count.0.as_ref().map(|q| q.publishes.len()),
            Some(DEFERRED_MAX)
        );
    }
}
