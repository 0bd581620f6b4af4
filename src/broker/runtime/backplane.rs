//! What the broker core does for an engine shared by several brokers (see
//! [`crate::broker::durability::backplane`]): route what the engine delivers to local
//! sessions, restore a session another broker kept, and let go of one another broker took.

use std::sync::Arc;

use super::{BrokerCore, Routed};
use crate::broker::durability::{Backplane, Change, QueuedFor, SessionImage};
use crate::broker::message::Message;
use crate::broker::session::Session;

impl BrokerCore {
    /// The backplane, when the engine is shared by several brokers.
    pub fn backplane(&self) -> Option<&Arc<dyn Backplane>> {
        self.backplane.as_ref()
    }

    /// A message the backplane delivers (published on any broker, this one included): route
    /// it to the local sessions `accept` admits, leaving the retained index alone (the engine
    /// keeps it). `publisher`: the publishing client when it published on this broker (its
    /// No Local subscriptions skip the message). `kept` is told the queue entries made for
    /// persistent sessions at QoS 1/2 before any is queued (so an acknowledgement can never
    /// arrive before the engine knows the entry). Returns the online sessions it left above
    /// their soft limit (the engine's reader waits for them as a publisher would).
    pub fn deliver_from_backplane(
        &self,
        message: Message,
        publisher: Option<&str>,
        accept: impl FnMut(&Session) -> bool,
        kept: impl FnOnce(Vec<QueuedFor>),
    ) -> Routed {
        let publisher = publisher
            .and_then(|client_id| self.registry.by_client_id(client_id))
            .map(|session| session.id());
        let (mut plan, changes) = self.plan_local_route(message, publisher.as_slice(), accept);
        plan.updates_retained = false;
        let queued: Vec<QueuedFor> = changes
            .into_iter()
            .flat_map(|change| match change {
                Change::Message { queued_for, .. } => queued_for,
                _ => Vec::new(),
            })
            .collect();
        kept(queued);
        self.complete_route(plan)
    }

    /// Put a session the shared engine kept into the registry, offline, with its
    /// subscriptions indexed, so that the CONNECT that claimed it resumes it.
    pub fn restore_claimed(&self, image: SessionImage) -> Arc<Session> {
        let session = self.registry.restore(image.state, image.offline_for);
        self.index(&session);
        session
    }

    /// Another broker took the session of `client_id` over: kick its connection here (it
    /// closes as taken over), drop its subscriptions and its pending will, and forget it
    /// without ending it in the shared engine. `false`: no such session here.
    pub fn hand_over(&self, client_id: &str) -> bool {
        let Some(session) = self.registry.remove_handed_over(client_id) else {
            return false;
        };
        self.pending_wills.cancel(&session);
        self.unindex(&session);
        true
    }
}
