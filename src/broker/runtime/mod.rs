//! The shared runtime state of one broker: session registry, subscription tree, retained
//! messages, security snapshot, limits and counters, and the routing of a published message.
//!
//! Routing never blocks on a subscriber. It reports the online sessions a message (of any
//! QoS) pushed above their soft pending limit; the publisher's connection then stops reading
//! and waits in [`BrokerCore::wait_drained`] (the slow-consumer rule is in [`super::queue`]).

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use arc_swap::ArcSwap;
use parking_lot::RwLock;
use tokio::sync::{watch, Notify};

use crate::broker::counters::Counters;
use crate::broker::limits::{PendingLimits, DEFAULT_INFLIGHT_WINDOW};
use crate::broker::memory::MemoryGauge;
use crate::broker::message::Message;
use crate::broker::persist::{self, Durable};
use crate::broker::registry::{AttachError, Attached, Detached, SessionLifetime, SessionRegistry};
use crate::broker::retained::RetainedStore;
use crate::broker::router::SubscriptionTree;
use crate::broker::session::{Session, SessionId, Subscription};
use crate::broker::store::SessionStore;
use crate::config::Config;
use crate::protocol::{LastWill, QoS};
use crate::security::{Principal, Security};
use crate::store::Op;

mod recovery;
mod routing;

pub use routing::{Overfilled, RoutePlan, Routed};

/// Everything the connection tasks of one broker share.
pub struct BrokerCore {
    pub registry: SessionRegistry,
    /// filter -> (session id -> granted QoS).
    pub subscriptions: RwLock<SubscriptionTree<SessionId, QoS>>,
    pub retained: RwLock<RetainedStore<Message>>,
    security: ArcSwap<Security>,
    /// Generation of the current snapshot: connections watch it to drop the subscriptions a
    /// reloaded policy denies as soon as it is swapped in.
    security_generation: watch::Sender<u64>,
    pub counters: Counters,
    /// Bytes of messages held in memory against the `memoryUsage` limit (see [`super::memory`]).
    pub memory: Arc<MemoryGauge>,
    /// Swapped whole on reload, so a changed `policyEntry` applies from the next publish.
    pub pending_limits: arc_swap::ArcSwap<PendingLimits>,
    /// QoS 1/2 messages in flight per client.
    pub inflight_window: usize,
    /// Persistent sessions of a non-durable broker: snapshots saved when they go offline.
    snapshots: Option<Arc<dyn SessionStore>>,
    /// The durable store: the single source of truth for persistent sessions and retained
    /// messages when set (then `snapshots` is `None`).
    durable: Option<Arc<Durable>>,
    /// Signalled when a connection moved messages out of its session queue while some
    /// publisher is paused on an overfilled session (see [`BrokerCore::wait_drained`]).
    queue_progress: Notify,
    /// Publishers currently waiting in [`BrokerCore::wait_drained`]: writers skip the signal
    /// when there are none.
    paused_publishers: AtomicUsize,
    /// The largest soft limit a publisher has ever waited on: a drain that leaves a queue
    /// longer than this releases no one, so it does not wake every paused publisher (under a
    /// 10 -> 1 fan-in that would be ten wake-ups per pump batch). Only grows; a stale high
    /// value costs wake-ups, never a missed one.
    drain_wake_at: AtomicUsize,
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
        Self::build(config, Some(store), None)
    }

    /// A broker whose persistent state lives in `durable` (see [`super::persist`]).
    pub fn new_durable(config: &Config, durable: Durable) -> anyhow::Result<Self> {
        Self::build(config, None, Some(Arc::new(durable)))
    }

    fn build(
        config: &Config,
        snapshots: Option<Arc<dyn SessionStore>>,
        durable: Option<Arc<Durable>>,
    ) -> anyhow::Result<Self> {
        let security = Security::from_config(config)
            .map_err(|e| anyhow::anyhow!("cannot set up security: {e}"))?;
        let security_generation = watch::Sender::new(security.generation());
        Ok(BrokerCore {
            registry: SessionRegistry::default(),
            subscriptions: RwLock::new(SubscriptionTree::new()),
            retained: RwLock::new(RetainedStore::default()),
            security: ArcSwap::from_pointee(security),
            security_generation,
            counters: Counters::default(),
            memory: MemoryGauge::from_limit(config.limits.memory_limit_bytes),
            pending_limits: arc_swap::ArcSwap::from_pointee(PendingLimits::from_policies(
                &config.policies,
            )),
            inflight_window: DEFAULT_INFLIGHT_WINDOW,
            snapshots,
            durable,
            queue_progress: Notify::new(),
            paused_publishers: AtomicUsize::new(0),
            drain_wake_at: AtomicUsize::new(0),
        })
    }

    /// The durable store, when this broker has one.
    pub fn durable(&self) -> Option<&Arc<Durable>> {
        self.durable.as_ref()
    }

    /// Submit bookkeeping ops to the durable store (no-op without one).
    pub(crate) fn persist_background(&self, ops: Vec<Op>) {
        if let Some(durable) = &self.durable {
            durable.submit_background(ops);
        }
    }

    /// The current security snapshot (CONNECT authenticates against it).
    pub fn security(&self) -> Arc<Security> {
        self.security.load_full()
    }

    /// The current security snapshot without touching its reference count (which every
    /// connection would otherwise contend on): for per-packet decisions, so a reloaded policy
    /// applies from the next packet. Do not hold it across an await.
    pub fn current_security(&self) -> arc_swap::Guard<Arc<Security>> {
        self.security.load()
    }

    /// Swap in a reloaded snapshot (build it with [`Security::rebuild`]). New CONNECTs
    /// authenticate against it, every decision after this call uses it, and connections are
    /// told (see [`BrokerCore::watch_security`]) so they drop subscriptions it denies.
    pub fn replace_security(&self, security: Security) {
        let generation = security.generation();
        self.security.store(Arc::new(security));
        self.security_generation.send_replace(generation);
    }

    /// Changes as from now of the security snapshot's generation.
    pub fn watch_security(&self) -> watch::Receiver<u64> {
        self.security_generation.subscribe()
    }

    /// Give a CONNECTing client its session (see [`SessionRegistry::attach`]).
    /// A persistent session's record in the durable store carries `will` and the principal
    /// that connected with it (a will published after a crash is authorized as its owner).
    pub fn attach(
        &self,
        client_id: &str,
        clean_start: bool,
        lifetime: SessionLifetime,
        allow_link_stealing: bool,
        will: Option<(&LastWill, &Principal)>,
    ) -> Result<Attached, AttachError> {
        let attached =
            self.registry
                .attach(client_id, clean_start, lifetime, allow_link_stealing)?;
        if let Some(old) = &attached.discarded {
            self.forget(old);
        }
        if self.durable.is_some() && attached.session.is_persistent() {
            let op = attached.session.with_state_unchecked(|s| {
                s.stored_will = will.map(|(will, owner)| persist::will_record(will, owner));
                persist::put_session_op(s)
            });
            self.persist_background(vec![op]);
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
        if !session.is_persistent() {
            return;
        }
        if self.durable.is_some() {
            self.persist_background(vec![Op::DeleteSession {
                client_id: session.client_id().clone(),
            }]);
        } else if let Some(snapshots) = &self.snapshots {
            if let Err(e) = snapshots.remove(session.client_id()) {
                tracing::warn!(client_id = %session.client_id(), "{e}");
            }
        }
    }

    /// A persistent session went offline: its will is gone (published or discarded) and its
    /// last-seen time (session expiry) is now.
    fn save(&self, session: &Session) {
        if self.durable.is_some() {
            let op = session.with_state_unchecked(|s| {
                s.stored_will = None;
                persist::put_session_op(s)
            });
            self.persist_background(vec![op]);
        } else if let Some(snapshots) = &self.snapshots {
            if let Err(e) = snapshots.save(&session.snapshot()) {
                tracing::warn!(client_id = %session.client_id(), "{e}");
            }
        }
    }

    /// Save every persistent session (graceful shutdown; the durable store is always current).
    pub fn save_all(&self) {
        if self.snapshots.is_none() {
            return;
        }
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
                // Submitted before the tree entry exists: no publish can enqueue for a
                // session the store does not have yet.
                if session.is_persistent() {
                    self.persist_background(vec![persist::put_session_op(s)]);
                }
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
                if session.is_persistent() {
                    self.persist_background(vec![persist::put_session_op(s)]);
                }
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
}
