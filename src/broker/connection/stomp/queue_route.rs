//! Queues (`/queue/x`, `/temp-queue/x`) as seen from a STOMP connection: the one place the
//! queue engine is called from. Until it is served, every queue use is refused with an ERROR
//! frame, never silently ignored.

use crate::protocol::stomp::Frame;

use super::destination::Destination;
use super::{Close, StompConn};

impl StompConn {
    /// A SEND to a queue destination.
    pub(super) fn queue_send(&mut self, dest: &Destination, frame: &Frame) -> Result<(), Close> {
        Err(Close::error(
            format!("queues are not supported yet: {}", dest),
            Some(frame),
        ))
    }

    /// A SUBSCRIBE to a queue destination.
    pub(super) fn queue_subscribe(
        &mut self,
        dest: &Destination,
        frame: &Frame,
    ) -> Result<(), Close> {
        Err(Close::error(
            format!("queues are not supported yet: {}", dest),
            Some(frame),
        ))
    }
}
