//! The shared runtime state of one broker: session registry, subscription tree, retained
//! messages, security snapshot, limits and counters, and the routing of a published message.

use std::sync::Arc;

use arc_swap::ArcSwap;
use parking_lot::RwLock;

use super::counters::Counters;
use super::limits::{PendingLimits, DEFAULT_INFLIGHT_WINDOW};
use super::message::{min_qos, Message};
use super::queue::QueuedMessage;
use super::registry::{AttachError, Attached, Detached, SessionRegistry};
use super::retained::RetainedStore;
use super::router::SubscriptionTree;
use super::session::{DeliverOutcome, Session, SessionId, Subscription};
use super::store::SessionStore;
use crate::config::Config;
use crate::protocol::QoS;
use crate::security::Security;

/// Everything the connection tasks of one broker share.
pub struct BrokerCore {
    pub registry: SessionRegistry,
    /// filter -> (session id -> granted QoS).
    pub subscriptions: RwLock<SubscriptionTree<SessionId, QoS>>,
    pub retained: RwLock<RetainedStore<Message>>,
    security: ArcSwap<Security>,
    pub counters: Counters,
    pub pending_limits: PendingLimits,
    /// QoS 1/2 messages in flight per client.
    pub inflight_window: usize,
    store: Arc<dyn SessionStore>,
}

impl std::fmt::Debug for BrokerCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerCore")
            .field("sessions", &self.registry.len())
            .field("subscriptions", &self.subscriptions.read().len())
            .field("retained", &self.retained.read().len())
            .field("counters", &self.counters.snapshot())
            .finish_non_exhaustive()
    }
}

impl BrokerCore {
    pub fn new(config: &Config, store: Arc<dyn SessionStore>) -> anyhow::Result<Self> {
        let security = Security::from_config(config)
            .map_err(|e| anyhow::anyhow!("cannot set up security: {e}"))?;
        Ok(BrokerCore {
            registry: SessionRegistry::default(),
            subscriptions: RwLock::new(SubscriptionTree::new()),
            retained: RwLock::new(RetainedStore::default()),
            security: ArcSwap::from_pointee(security),
            counters: Counters::default(),
            pending_limits: PendingLimits::from_policies(&config.policies),
            inflight_window: DEFAULT_INFLIGHT_WINDOW,
            store,
        })
    }

    /// The current security snapshot; a connection keeps the one it authenticated with.
    pub fn security(&self) -> Arc<Security> {
        self.security.load_full()
    }

    /// Bring back the persistent sessions of the store (offline until their clients return).
    pub fn restore_sessions(&self) -> anyhow::Result<usize> {
        let states = self.store.load_all()?;
        let count = states.len();
        for state in states {
            let session = self.registry.restore(state);
            // Lock order: session, then tree (as everywhere else).
            session.with_state_unchecked(|s| {
                let mut tree = self.subscriptions.write();
                for (filter, sub) in &s.subscriptions {
                    tree.insert(filter, session.id(), sub.qos);
                }
            });
        }
        Ok(count)
    }

    /// Give a CONNECTing client its session (see [`SessionRegistry::attach`]).
    pub fn attach(
        &self,
        client_id: &str,
        clean_session: bool,
        allow_link_stealing: bool,
    ) -> Result<Attached, AttachError> {
        let attached = self
            .registry
            .attach(client_id, clean_session, allow_link_stealing)?;
        if let Some(old) = &attached.discarded {
            self.forget(old);
        }
        Ok(attached)
    }

    /// A connection closed: end a clean session, or save a persistent one now offline.
    pub fn detach(&self, session: &Arc<Session>, generation: u64) -> Detached {
        let outcome = self.registry.detach(session, generation);
        match outcome {
            Detached::Ended => self.forget(session),
            Detached::KeptOffline => self.save(session),
            Detached::TakenOver => {}
        }
        outcome
    }

    /// Remove an ended session's subscriptions, and its stored copy when it was persistent.
    fn forget(&self, session: &Session) {
        session.with_state_unchecked(|s| {
            let mut tree = self.subscriptions.write();
            for filter in s.subscriptions.keys() {
                tree.remove(filter, &session.id());
            }
        });
        if session.is_persistent() {
            if let Err(e) = self.store.remove(session.client_id()) {
                tracing::warn!(client_id = %session.client_id(), "{e}");
            }
        }
    }

    fn save(&self, session: &Session) {
        if let Err(e) = self.store.save(&session.snapshot()) {
            tracing::warn!(client_id = %session.client_id(), "{e}");
        }
    }

    /// Save every persistent session (graceful shutdown).
    pub fn save_all(&self) {
        for session in self.registry.persistent_sessions() {
            self.save(&session);
        }
    }

    /// Add or replace a subscription of the connection `generation` of `session`, in the
    /// session's state and the tree together (under the session lock, so a concurrent takeover
    /// that discards the session cannot leave a stale tree entry). `false`: taken over.
    pub fn subscribe(&self, session: &Session, generation: u64, filter: &str, qos: QoS) -> bool {
        session
            .with_state(generation, |s| {
                s.subscriptions
                    .insert(filter.to_owned(), Subscription { qos });
                self.subscriptions.write().insert(filter, session.id(), qos);
            })
            .is_some()
    }

    /// Remove a subscription; `None` when taken over, else whether it existed.
    pub fn unsubscribe(&self, session: &Session, generation: u64, filter: &str) -> Option<bool> {
        session.with_state(generation, |s| {
            let existed = s.subscriptions.remove(filter).is_some();
            if existed {
                self.subscriptions.write().remove(filter, &session.id());
            }
            existed
        })
    }

    /// Retained messages matching `filter`, copied out so no lock is held while queueing them.
    pub fn retained_matching(&self, filter: &str) -> Vec<Message> {
        let mut found = Vec::new();
        self.retained
            .read()
            .for_each_matching(filter, |_, m| found.push(m.clone()));
        found
    }

    /// Queue a retained message for `session` because it subscribed (retain=1, at `qos`).
    ///
    /// Not subject to the pending limit: the payload is shared with the retained store, so a
    /// queue entry costs a few references, and the retained set is already bounded by what the
    /// store holds. Capping it would silently lose retained messages for a wide subscription.
    pub fn deliver_retained(&self, session: &Session, message: Message, qos: QoS) {
        let item = QueuedMessage {
            message,
            qos,
            retain: true,
        };
        let outcome = session.deliver(item, usize::MAX);
        self.count_delivery(session, outcome, usize::MAX);
    }

    fn count_delivery(&self, session: &Session, outcome: DeliverOutcome, limit: usize) {
        match outcome {
            DeliverOutcome::Queued | DeliverOutcome::DroppedEnded => {}
            DeliverOutcome::DroppedOffline => {
                self.counters.dropped_offline_qos0();
            }
            DeliverOutcome::QueuedEvictedQos0 | DeliverOutcome::DroppedFull => {
                let total = self.counters.dropped_queue_full();
                // One line per power of two keeps a stuck consumer from flooding the log.
                if total.is_power_of_two() {
                    tracing::warn!(
                        client_id = %session.client_id(),
                        limit,
                        dropped_total = total,
                        "slow consumer: pending queue full, message dropped"
                    );
                }
            }
        }
    }

    /// Route a published message: update the retained store, then queue one copy per matching
    /// session at min(publish QoS, highest matching subscription QoS). Never blocks on a
    /// subscriber. Returns the number of sessions the message was offered to.
    pub fn route(&self, message: Message) -> usize {
        if message.retain {
            if message.payload.is_empty() {
                self.retained.write().clear(&message.topic);
            } else {
                self.retained.write().set(&message.topic, message.clone());
            }
        }
        let mut matches: Vec<(SessionId, QoS)> = Vec::new();
        self.subscriptions
            .read()
            .for_each_match(&message.topic, |id, qos| matches.push((*id, *qos)));
        if matches.is_empty() {
            return 0;
        }
        // One copy per session at its highest matching QoS (overlapping subscriptions).
        matches.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        matches.dedup_by_key(|m| m.0);
        let limit = self.pending_limits.limit_for(&message.topic);
        let live = Message {
            retain: false,
            ..message
        };
        self.registry.for_each_of(&matches, |session, sub_qos| {
            let item = QueuedMessage {
                message: live.clone(),
                qos: min_qos(live.qos, sub_qos),
                retain: false,
            };
            let outcome = session.deliver(item, limit);
            self.count_delivery(session, outcome, limit);
        });
        matches.len()
    }
}
