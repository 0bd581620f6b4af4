//! The shared runtime state of one broker: session registry, subscription tree, retained
//! messages, security snapshot, limits and counters, and the routing of a published message.
//!
//! Routing never blocks on a subscriber. It reports the online sessions a message (of any
//! QoS) pushed above their soft pending limit; the publisher's connection then stops reading
//! and waits in [`BrokerCore::wait_drained`] (the slow-consumer rule is in [`crate::broker::session::queue`]).

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use arc_swap::ArcSwap;
use parking_lot::RwLock;
use tokio::sync::{watch, Notify};

use crate::broker::counters::Counters;
use crate::broker::durability::{Change, Commit, Durability, KeptWill, SessionData};
use crate::broker::message::Message;
use crate::broker::queues::Queues;
use crate::broker::routing::destinations::DestinationMap;
use crate::broker::routing::limits::{PendingLimits, DEFAULT_RECEIVE_MAXIMUM};
use crate::broker::routing::memory::MemoryGauge;
use crate::broker::routing::retained::RetainedStore;
use crate::broker::routing::router::SubscriptionTree;
use crate::broker::routing::shared::StrategyCell;
use crate::broker::session::registry::{
    AttachError, Attached, Detached, SessionLifetime, SessionRegistry,
};
use crate::broker::session::wills::PendingWills;
use crate::broker::session::{Session, SessionId, SubscriptionOptions};
use crate::config::Config;
use crate::protocol::LastWill;
use crate::security::{Principal, Security};

mod admission;
mod backplane;
mod destinations;
mod recovery;
mod replan;
mod route;
mod route_cache;
mod route_shared;
mod wills;

pub use admission::Refusal;
pub use backplane::{ClaimGate, Offer};
pub use destinations::TopicRefusal;
pub use route::{Overfilled, RoutePlan, Routed};
pub use route_shared::GroupCopy;
pub use wills::will_delay_secs;

/// Everything the connection tasks of one broker share.
pub struct BrokerCore {
    pub registry: SessionRegistry,
    /// filter -> (session id -> the subscription's options). Read it freely; change it only
    /// through `BrokerCore::change_subscriptions` (publishers cache routes resolved from it).
    pub subscriptions: RwLock<SubscriptionTree<SessionId, SubscriptionOptions>>,
    /// This broker among the others of the process (tests run many): the key of its routes in
    /// the per-thread route cache (see `route_cache.rs`).
    route_cache_id: u64,
    pub retained: RwLock<RetainedStore<Message>>,
    /// Which topics exist: using another one creates it, which needs `admin` (see
    /// [`crate::broker::routing::destinations`]).
    pub destinations: DestinationMap,
    /// The queues (`/queue/x`): point-to-point, kept until acknowledged (see
    /// [`crate::broker::queues`]).
    pub queues: Arc<Queues>,
    security: ArcSwap<Security>,
    /// Generation of the current snapshot: connections watch it to drop the subscriptions a
    /// reloaded policy denies as soon as it is swapped in.
    security_generation: watch::Sender<u64>,
    pub counters: Counters,
    /// What the metrics scrape reads besides the counters (connectors, reloads).
    pub metrics: crate::metrics::Sources,
    /// Bytes of messages held in memory against the `memoryUsage` limit (see [`crate::broker::routing::memory`]).
    pub memory: Arc<MemoryGauge>,
    /// Swapped whole on reload, so a changed `policyEntry` applies from the next publish.
    pub pending_limits: arc_swap::ArcSwap<PendingLimits>,
    /// The Receive Maximum announced to and enforced on clients: QoS 1/2 publishes a client
    /// may have unanswered towards the broker (MQTT 5 3.2.2.3.3). The window towards a
    /// subscriber is the connector's `transport.activeMQSubscriptionPrefetch`.
    pub receive_maximum: usize,
    /// Which clients disconnected for exceeding [`Self::receive_maximum`] were warned about
    /// recently (a client that keeps exceeding it reconnects in a loop).
    pub(crate) receive_maximum_warnings:
        crate::broker::connection::receive_quota::ReceiveMaximumWarnings,
    /// `offlineDurableSubscriberTimeout`: no offline session outlives it, whatever Session
    /// Expiry Interval its client asked for (read at startup only, like the sweeper's).
    pub session_expiry_cap: Option<std::time::Duration>,
    /// How a shared subscription group picks its member (swapped by a reload).
    pub shared_strategy: StrategyCell,
    /// `<ferromq:systemTopics interval>` in ms (0 = off), watched by the `$SYS` publisher
    /// (see [`crate::broker::system`]).
    pub(crate) system_topics: crate::broker::system::IntervalCell,
    /// `sendFailIfNoSpace[AfterTimeout]`: how long a publisher stopped by a full memory or
    /// store waits before its publish is refused (`None`: until there is room).
    pub send_fail_after: parking_lot::Mutex<Option<std::time::Duration>>,
    /// Where persistent sessions, their queues and retained messages are kept
    /// (see [`crate::broker::durability`]).
    durability: Arc<dyn Durability>,
    /// [`Durability::keeps_bodies`], asked once: it is needed on every delivery.
    pages_bodies: bool,
    /// [`Durability::backplane`], asked once: with one, publishes go through the shared
    /// engine (see [`crate::broker::durability::backplane`]).
    backplane: Option<Arc<dyn crate::broker::durability::Backplane>>,
    /// With a backplane: the client ids whose CONNECT is claiming and attaching a session
    /// (see [`BrokerCore::claim_gate`]).
    claim_gates: backplane::ClaimGates,
    /// Background commits that failed (logged when the total is a power of two).
    background_failures: Arc<std::sync::atomic::AtomicU64>,
    /// Signalled when a connection moved messages out of its session queue while some
    /// publisher is paused on an overfilled session (see [`BrokerCore::wait_drained`]).
    queue_progress: Notify,
    /// Publishers currently waiting in [`BrokerCore::wait_drained`]: writers skip the signal
    /// when there are none.
    paused_publishers: AtomicUsize,
    /// Wills waiting for their Will Delay Interval (see [`crate::broker::session::wills`]).
    pub pending_wills: PendingWills,
    /// The largest soft limit a publisher has ever waited on: a drain that leaves a queue
    /// longer than this releases no one, so it does not wake every paused publisher (under a
    /// 10 -> 1 fan-in that would be ten wake-ups per pump batch). Only grows; a stale high
    /// value costs wake-ups, never a missed one.
    drain_wake_at: AtomicUsize,
    /// The live connections (the console lists and disconnects them).
    pub clients: crate::broker::clients::ClientRegistry,
    /// Messages and bytes published per topic, for the console (kept only when it is
    /// configured; see [`crate::broker::topic_stats`]).
    pub topic_stats: crate::broker::topic_stats::TopicStatsRegistry,
    /// The console's users (its realm file), swapped when a reload re-reads it.
    pub console_users: ArcSwap<Vec<crate::console::realm::RealmUser>>,
    /// When this broker was built (uptime).
    pub started_at: std::time::Instant,
    /// Idle plain-TCP connections without a task (see [`crate::broker::connection::parking`]).
    pub(crate) parking: crate::broker::connection::parking::Lot,
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
    /// A broker whose persistent state is kept by `durability`.
    pub fn new(config: &Config, durability: Arc<dyn Durability>) -> anyhow::Result<Self> {
        let security = Security::from_config(config)
            .map_err(|e| anyhow::anyhow!("cannot set up security: {e}"))?;
        let security_generation = watch::Sender::new(security.generation());
        let memory = MemoryGauge::from_limit(config.limits.memory_limit_bytes);
        Ok(BrokerCore {
            registry: SessionRegistry::default(),
            subscriptions: RwLock::new(SubscriptionTree::new()),
            route_cache_id: route_cache::next_broker_id(),
            retained: RwLock::new(RetainedStore::default()),
            destinations: DestinationMap::default(),
            queues: {
                let queues =
                    Queues::new(durability.clone(), memory.clone(), config.delivery.clone());
                // A cluster node serves no virtual destinations (the configuration has none
                // there; this keeps a node built otherwise from half-serving them).
                if durability.backplane().is_none() {
                    queues.set_virtual_destinations(&config.virtual_destinations);
                }
                queues
            },
            security: ArcSwap::from_pointee(security),
            security_generation,
            counters: Counters::default(),
            metrics: crate::metrics::Sources::default(),
            memory,
            pending_limits: arc_swap::ArcSwap::from_pointee(PendingLimits::from_policies(
                &config.policies,
            )),
            receive_maximum: DEFAULT_RECEIVE_MAXIMUM,
            receive_maximum_warnings: Default::default(),
            session_expiry_cap: crate::broker::session::expiry::AbandonedSessionTimeout::of(config)
                .map(|a| a.timeout),
            shared_strategy: StrategyCell::new(config.shared_strategy),
            system_topics: crate::broker::system::IntervalCell::new(
                config.system_topics.interval_ms,
            ),
            send_fail_after: parking_lot::Mutex::new(config.limits.send_fail_after()),
            pages_bodies: durability.keeps_bodies(),
            backplane: durability.backplane(),
            claim_gates: backplane::ClaimGates::default(),
            durability,
            background_failures: Arc::default(),
            queue_progress: Notify::new(),
            paused_publishers: AtomicUsize::new(0),
            drain_wake_at: AtomicUsize::new(0),
            pending_wills: PendingWills::default(),
            clients: crate::broker::clients::ClientRegistry::new(config.console.is_some()),
            topic_stats: crate::broker::topic_stats::TopicStatsRegistry::new(
                config.console.is_some(),
                crate::broker::topic_stats::DEFAULT_CAPACITY,
            ),
            console_users: ArcSwap::from_pointee(
                config
                    .console
                    .as_ref()
                    .map(|c| c.users.clone())
                    .unwrap_or_default(),
            ),
            started_at: std::time::Instant::now(),
            parking: Default::default(),
        })
    }

    /// Where this broker keeps its persistent state.
    pub fn durability(&self) -> &Arc<dyn Durability> {
        &self.durability
    }

    /// Commit bookkeeping that gates no acknowledgement: not awaited; failures are logged
    /// (rate-limited).
    pub(crate) fn commit_background(&self, changes: Vec<Change>) {
        if changes.is_empty() {
            return;
        }
        self.settle_in_background(self.durability.commit_detached(changes));
    }

    /// Let `commit` finish without waiting for it; a failure is logged (rate-limited).
    fn settle_in_background(&self, commit: Commit) {
        let failures = self.background_failures.clone();
        match commit {
            Commit::Done(Ok(())) => {}
            Commit::Done(Err(e)) => background_failed(&failures, &e),
            Commit::Pending(done) => {
                tokio::spawn(async move {
                    if let Err(e) = done.await {
                        background_failed(&failures, &e);
                    }
                });
            }
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
    /// A persistent session is kept with `will` and the principal that connected with it (a
    /// will published after a crash is authorized as its owner). `mqtt5`: the client speaks
    /// MQTT 5 (routing gives its session one copy per matching subscription).
    pub fn attach(
        &self,
        client_id: &str,
        clean_start: bool,
        lifetime: SessionLifetime,
        allow_link_stealing: bool,
        will: Option<(&LastWill, &Principal)>,
        mqtt5: bool,
    ) -> Result<Attached, AttachError> {
        let (attached, saved) = self.attach_saving(
            client_id,
            clean_start,
            lifetime,
            allow_link_stealing,
            will,
            mqtt5,
        )?;
        self.settle_in_background(saved);
        Ok(attached)
    }

    /// [`BrokerCore::attach`] for a CONNECT whose CONNACK promises the session: with the
    /// write of a new persistent session's record still to wait for in a cluster (else
    /// settled in the background, as `attach` does). A new session's record that lands after
    /// its CONNACK would let the client, reconnecting to another node at once, find no
    /// session there (session present 0 after 1); the caller sends the CONNACK once this is
    /// `Ok`. The commit is also the store's refusal when a single broker's store refused
    /// the save at once (reopening after an I/O error): the caller refuses the CONNECT.
    pub fn attach_saving(
        &self,
        client_id: &str,
        clean_start: bool,
        lifetime: SessionLifetime,
        allow_link_stealing: bool,
        will: Option<(&LastWill, &Principal)>,
        mqtt5: bool,
    ) -> Result<(Attached, Commit), AttachError> {
        let attached =
            self.registry
                .attach(client_id, clean_start, lifetime, allow_link_stealing, mqtt5)?;
        if let Some(old) = &attached.discarded {
            self.forget(old);
        }
        if attached.session_present {
            // Resumed within its will's delay: the will is not published (MQTT 5 3.1.3-9);
            // the new connection's will replaces it below, in the record too.
            self.pending_wills.cancel(&attached.session);
        }
        if attached.session.is_persistent() {
            let data = attached.session.with_state_unchecked(|s| {
                s.kept_will = will.map(|(will, owner)| Box::new(KeptWill::new(will, owner)));
                SessionData::of(s)
            });
            let saved = self
                .durability
                .commit_detached(vec![Change::SessionSaved(data)]);
            // A cluster refuses at once a session that is not this node's to start (taken
            // by another node between this CONNECT's claim and now): the CONNECT is refused,
            // before any CONNACK, and the session leaves the registry as handed over.
            if let (Commit::Done(Err(e)), Some(_)) = (&saved, self.backplane()) {
                self.hand_over(client_id);
                return Err(AttachError::Refused(e.to_string()));
            }
            // A single broker's store that refuses at once is reopening after a failed write
            // (or closed): the caller refuses the CONNECT (0x88) as a cluster's does for a
            // record it could not write, rather than serve a session its store cannot keep.
            if matches!(saved, Commit::Done(Err(_))) {
                return Ok((attached, saved));
            }
            // A resumed session's record exists already (its claim read or wrote it): what
            // changes now (connected, the will) is written in the background, as before.
            if self.backplane().is_some() && !attached.session_present {
                return Ok((attached, saved));
            }
            self.settle_in_background(saved);
        }
        Ok((attached, Commit::done()))
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

    /// Remove an ended session's subscriptions, and its kept copy when it was persistent. A
    /// will pending on it is due now (MQTT 5 3.1.2.5: at the latest when the session ends).
    pub(crate) fn forget(&self, session: &Session) {
        let ended = self.forget_committing(session);
        self.settle_in_background(ended);
    }

    /// [`Self::forget`], returning the commit that ends the session's kept copy (done at once
    /// for a clean session): what a RECEIPT for removing it waits for.
    pub(crate) fn forget_committing(&self, session: &Session) -> Commit {
        self.session_ended_with_will(session);
        self.unindex(session);
        self.hand_over_shared(session);
        if let Some(backplane) = &self.backplane {
            backplane.session_ended(session);
        }
        if session.is_persistent() {
            return self.durability.commit(vec![Change::SessionEnded {
                client_id: session.client_id().clone(),
            }]);
        }
        Commit::done()
    }

    /// Change the subscription tree with `f` (under its write lock), then invalidate every
    /// route cached before (see `route_cache.rs`): the next publish resolves its route again.
    pub(crate) fn change_subscriptions<R>(
        &self,
        f: impl FnOnce(&mut SubscriptionTree<SessionId, SubscriptionOptions>) -> R,
    ) -> R {
        let result = f(&mut self.subscriptions.write());
        self.registry.routes_changed();
        result
    }

    /// Remove a session's subscriptions from the tree.
    fn unindex(&self, session: &Session) {
        session.with_state_unchecked(|s| {
            self.change_subscriptions(|tree| {
                for filter in s.subscriptions().keys() {
                    tree.remove(filter, &session.id());
                    self.interest(filter, false);
                }
            })
        });
    }

    /// Add a restored session's subscriptions to the tree.
    fn index(&self, session: &Session) {
        // Lock order: session, then tree (as everywhere else).
        session.with_state_unchecked(|s| {
            self.change_subscriptions(|tree| {
                for (filter, sub) in s.subscriptions() {
                    tree.insert(filter, session.id(), *sub);
                    self.interest(filter, true);
                }
            })
        });
    }

    /// Tell the backplane (if any) that a local session uses `filter`, or stopped using it.
    fn interest(&self, filter: &str, added: bool) {
        if let Some(backplane) = &self.backplane {
            backplane.interest(filter, added);
        }
    }

    /// A persistent session went offline: its will is gone (published or discarded) unless it
    /// is pending, and its offline time (session expiry) starts now.
    fn save(&self, session: &Session) {
        let commit = session.with_state_unchecked(|s| {
            s.kept_will = s.kept_will.take().filter(|w| w.deadline_ms.is_some());
            self.durability.session_offline(s)
        });
        self.settle_in_background(commit);
    }

    /// Graceful shutdown: hand every persistent session to the durability engine as it is.
    pub fn save_all(&self) {
        let states: Vec<_> = self
            .registry
            .persistent_sessions()
            .iter()
            .map(|s| s.snapshot())
            .collect();
        self.durability.shutdown(&states);
    }

    /// Add or replace a subscription of the connection `generation` of `session`, in the
    /// session's state and the tree together (under the session lock, so a concurrent takeover
    /// that discards the session cannot leave a stale tree entry). `false`: taken over.
    pub fn subscribe(
        &self,
        session: &Session,
        generation: u64,
        filter: &str,
        options: SubscriptionOptions,
    ) -> bool {
        session
            .with_state(generation, |s| {
                if s.subscriptions_mut()
                    .insert(filter.to_owned(), options)
                    .is_none()
                {
                    self.interest(filter, true);
                }
                // Committed before the tree entry exists: no publish can queue for a session
                // the engine does not have yet.
                if session.is_persistent() {
                    self.commit_background(vec![Change::SessionSaved(SessionData::of(s))]);
                }
                self.change_subscriptions(|tree| tree.insert(filter, session.id(), options));
            })
            .is_some()
    }

    /// Remove a subscription; `None` when taken over, else whether it existed.
    pub fn unsubscribe(&self, session: &Session, generation: u64, filter: &str) -> Option<bool> {
        session.with_state(generation, |s| {
            let existed = s.subscriptions_mut().remove(filter).is_some();
            if existed {
                self.change_subscriptions(|tree| tree.remove(filter, &session.id()));
                self.interest(filter, false);
                if session.is_persistent() {
                    self.commit_background(vec![Change::SessionSaved(SessionData::of(s))]);
                }
            }
            existed
        })
    }

    /// How many messages a session queue holds in memory before kept messages are queued
    /// paged out (their payloads read back on delivery): its pending limit, when the
    /// durability engine can read bodies back; else never. Once `memoryUsage` is half full,
    /// none: a count alone would let a few large messages per session fill `memoryUsage`
    /// (eight of 2 MiB fill 16 MiB long before a pending limit of 1000) and pause every
    /// publisher until an offline subscriber comes back, though the store could keep them.
    pub fn page_after(&self, pending_limit: usize) -> Option<usize> {
        self.pages_bodies.then(|| {
            if self.memory.is_half_full() {
                0
            } else {
                pending_limit
            }
        })
    }

    /// Retained messages matching `filter`, copied out so no lock is held while queueing them.
    /// Without their latency sample stamp: sent because of a SUBSCRIBE, maybe long after the
    /// publish, they are not what the delivery latency histogram measures.
    pub fn retained_matching(&self, filter: &str) -> Vec<Message> {
        let mut found = Vec::new();
        self.retained.read().for_each_matching(filter, |_, m| {
            found.push(Message {
                stamp: crate::broker::message::SampleStamp::NONE,
                ..m.clone()
            })
        });
        found
    }
}

fn background_failed(failures: &std::sync::atomic::AtomicU64, e: &impl std::fmt::Display) {
    let total = failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    if crate::broker::durability::should_log(total) {
        tracing::warn!(failures_total = total, "durability update failed: {e}");
    }
}

/// For unit tests: a core on `durability` built from a minimal configuration (one plain MQTT
/// connector on port 0, `persistent="false"`), with that connector's settings.
#[cfg(test)]
pub(crate) fn test_core(
    durability: Arc<dyn Durability>,
) -> (Arc<BrokerCore>, Arc<crate::broker::ListenerSettings>) {
    let xml = r#"<beans xmlns="http://www.springframework.org/schema/beans">
        <broker xmlns="http://activemq.apache.org/schema/core" persistent="false">
          <transportConnectors>
            <transportConnector name="mqtt" uri="mqtt://127.0.0.1:0"/>
          </transportConnectors>
        </broker></beans>"#;
    let options = crate::config::LoadOptions::default();
    let config = crate::config::load_str(xml, std::path::Path::new("."), &options)
        .config
        .expect("config compiles");
    let core = Arc::new(BrokerCore::new(&config, durability).expect("core"));
    let settings = Arc::new(crate::broker::ListenerSettings {
        config: config.listeners[0].clone(),
        tls: None,
        stats: crate::metrics::ListenerStats::new("mqtt", crate::config::Protocol::Mqtt, false),
    });
    (core, settings)
}
