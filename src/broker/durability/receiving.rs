//! The connection a QoS 2 PUBLISH came on, as a store that keeps the exchange beyond the
//! connection sees it (a cluster holds it in NATS, `cluster/qos2.rs`).
//!
//! A client that drops its connection in the middle of a burst and connects again at once
//! re-sends the burst (DUP) on the new connection, and may go on to reuse the packet ids for
//! new messages, while the closed connection is still working through the PUBLISHes it read
//! before it closed. A write for the closed connection that lands after the new connection's
//! would replace a newer message held under the same packet id: that message, acknowledged
//! with a PUBREC, would be lost, and its PUBREL would release the old one a second time. The
//! store asks this handle before it writes, and a connection that no longer holds its
//! session writes nothing (it sends no PUBREC either: its client re-sends the PUBLISH).

use std::sync::Arc;

use crate::broker::session::Session;

/// One connection's hold on its session.
#[derive(Clone)]
pub struct ReceivingConnection {
    session: Arc<Session>,
    /// The attachment generation of the connection (`AttachToken::generation`).
    generation: u64,
}

impl ReceivingConnection {
    pub fn new(session: Arc<Session>, generation: u64) -> Self {
        ReceivingConnection {
            session,
            generation,
        }
    }

    /// Whether this connection still holds its session: `false` once a newer connection
    /// took the session over (on this broker) or the connection detached.
    pub fn holds_session(&self) -> bool {
        self.session.with_state(self.generation, |_| ()).is_some()
    }
}

/// Two handles are equal when they name the same attachment of the same session.
impl PartialEq for ReceivingConnection {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.session, &other.session) && self.generation == other.generation
    }
}

impl Eq for ReceivingConnection {}

impl std::fmt::Debug for ReceivingConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceivingConnection")
            .field("client_id", self.session.client_id())
            .field("generation", &self.generation)
            .finish()
    }
}
