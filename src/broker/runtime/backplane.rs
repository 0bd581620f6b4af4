//! What the broker core does for an engine shared by several brokers (see
//! [`crate::broker::durability::backplane`]): route what the engine delivers to local
//! sessions, restore a session another broker kept, and let go of one another broker took.

use std::collections::HashMap;
use std::sync::Arc;

use smallvec::SmallVec;

use super::{BrokerCore, Routed};
use crate::broker::durability::{Backplane, Change, QueuedFor, SessionImage};
use crate::broker::message::Message;
use crate::broker::session::{Session, SessionId, SubscriptionOptions};

/// What a local session gets of a message the backplane delivers (the `accept` of
/// [`BrokerCore::deliver_from_backplane`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Offer {
    /// A copy per matching subscription (MQTT 5; one copy for MQTT 3.1.1), as on a single
    /// broker.
    All,
    /// Nothing.
    Nothing,
    /// All but the copies through subscriptions with these options, one left out per entry:
    /// subscriptions made after the message was stored. Copies through subscriptions with
    /// equal options are equal, so which one of them is left out does not matter.
    Except(SmallVec<[SubscriptionOptions; 1]>),
}

impl Offer {
    /// Whether the one matching subscription, with `options`, gets its copy.
    pub(super) fn admits(&self, options: &SubscriptionOptions) -> bool {
        match self {
            Offer::All => true,
            Offer::Nothing => false,
            Offer::Except(left_out) => !left_out.contains(options),
        }
    }

    /// The matching subscriptions of one session (`run`, in order) that get their copy.
    pub(super) fn kept<'a>(
        &self,
        run: &'a [(SessionId, SubscriptionOptions)],
    ) -> std::borrow::Cow<'a, [(SessionId, SubscriptionOptions)]> {
        match self {
            Offer::All => run.into(),
            Offer::Nothing => (&run[..0]).into(),
            Offer::Except(left_out) => {
                let mut kept = run.to_vec();
                for options in left_out {
                    if let Some(at) = kept.iter().position(|(_, o)| o == options) {
                        kept.remove(at);
                    }
                }
                kept.into()
            }
        }
    }
}

/// Per client id, the CONNECT currently claiming a session from the backplane and attaching
/// it here.
pub(crate) type ClaimGates =
    Arc<parking_lot::Mutex<HashMap<Arc<str>, Arc<tokio::sync::Mutex<()>>>>>;

/// Held by a CONNECT from its claim until its session is attached (see
/// [`BrokerCore::claim_gate`]); the last holder removes the entry.
pub struct ClaimGate {
    gates: ClaimGates,
    client_id: Arc<str>,
    _held: tokio::sync::OwnedMutexGuard<()>,
}

impl Drop for ClaimGate {
    fn drop(&mut self) {
        let mut gates = self.gates.lock();
        // The map's handle and this guard's: nobody else waits.
        if gates
            .get(&self.client_id)
            .is_some_and(|gate| Arc::strong_count(gate) <= 2)
        {
            gates.remove(&self.client_id);
        }
    }
}

impl BrokerCore {
    /// The backplane, when the engine is shared by several brokers.
    pub fn backplane(&self) -> Option<&Arc<dyn Backplane>> {
        self.backplane.as_ref()
    }

    /// Wait until no other CONNECT of `client_id` on this broker is between its claim and
    /// its attach. A client that gives up on a slow CONNECT and sends another would otherwise
    /// have the second one find no session here yet (the first still restoring it) and start
    /// a new one, which the first then takes over.
    pub async fn claim_gate(&self, client_id: &Arc<str>) -> ClaimGate {
        let gate = self
            .claim_gates
            .lock()
            .entry(client_id.clone())
            .or_default()
            .clone();
        ClaimGate {
            gates: self.claim_gates.clone(),
            client_id: client_id.clone(),
            _held: gate.lock_owned().await,
        }
    }

    /// Forget `client_id`'s claim gate when nobody holds it or waits for it any more (a
    /// waiter gave up: its client closed the connection).
    pub fn forget_idle_claim_gate(&self, client_id: &str) {
        let mut gates = self.claim_gates.lock();
        if gates
            .get(client_id)
            .is_some_and(|gate| Arc::strong_count(gate) == 1)
        {
            gates.remove(client_id);
        }
    }

    /// Whether a claim of `client_id` holds its gate now (see [`BrokerCore::claim_gate`]):
    /// between its claim and its attach.
    pub fn is_claiming(&self, client_id: &str) -> bool {
        self.claim_gates.lock().contains_key(client_id)
    }

    /// A message the backplane delivers (QoS 1/2 published on any broker, this one included;
    /// QoS 0 from the others, this broker's own reached its sessions at their publish), charged
    /// to `memoryUsage` by the caller ([`BrokerCore::admit`] for QoS 0; the engine's readers
    /// wait for room, then charge): route it to the local sessions `accept` admits, leaving the retained index alone (the engine
    /// keeps it) and shared groups out (the engine gives each group's copy to one broker:
    /// [`BrokerCore::deliver_to_group`]). `publisher`: the publishing client when it published on this broker (its
    /// No Local subscriptions skip the message). `kept` is told the queue entries made for
    /// persistent sessions at QoS 1/2 before any is queued (so an acknowledgement can never
    /// arrive before the engine knows the entry). Returns the online sessions it left above
    /// their soft limit (the engine's reader waits for them as a publisher would).
    pub fn deliver_from_backplane(
        &self,
        message: Message,
        publisher: Option<&str>,
        accept: impl FnMut(&Session) -> Offer,
        kept: impl FnOnce(Vec<QueuedFor>),
    ) -> Routed {
        let publisher = publisher
            .and_then(|client_id| self.registry.by_client_id(client_id))
            .map(|session| session.id());
        let (mut plan, changes) =
            self.plan_local_route(message, publisher.as_slice(), accept, false);
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
