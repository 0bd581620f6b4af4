//! The shared runtime state of one broker: session registry, subscription tree, retained
//! messages, security snapshot, limits and counters, and the routing of a published message.
//!
//! Routing never blocks on a subscriber. It reports the online sessions a message (of any
//! QoS) pushed above their soft pending limit; the publisher's connection then stops reading
//! and waits in [`BrokerCore::wait_drained`] (the slow-consumer rule is in [`super::queue`]).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use parking_lot::RwLock;
use smallvec::SmallVec;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use super::counters::Counters;
use super::limits::{pending_hard_cap, PendingLimits, DEFAULT_INFLIGHT_WINDOW};
use super::memory::MemoryGauge;
use super::message::{min_qos, Message};
use super::persist::{self, Durable, RecoveredCounts};
use super::queue::QueuedMessage;
use super::registry::{AttachError, Attached, Detached, SessionRegistry};
use super::retained::RetainedStore;
use super::router::SubscriptionTree;
use super::session::{DeliverOutcome, Session, SessionId, Subscription};
use super::store::SessionStore;
use crate::config::Config;
use crate::protocol::{LastWill, QoS};
use crate::security::{Principal, Security};
use crate::store::{Op, QueueEntry, QueueSeq, QueueState, Recovered};

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

/// How often a paused publisher re-checks its overfilled sessions without a signal (a session
/// going offline does not signal).
const OVERFILL_RECHECK: Duration = Duration::from_millis(50);

/// A session an online delivery pushed above its soft pending limit.
#[derive(Debug, Clone)]
pub struct Overfilled {
    pub session: Arc<Session>,
    pub soft_limit: usize,
}

impl Overfilled {
    /// Still online and still above its soft limit: its publisher keeps waiting.
    pub fn still_over(&self) -> bool {
        self.session.is_attached()
            && self.session.with_state_unchecked(|s| s.pending.len()) > self.soft_limit
    }
}

/// What routing a message did.
#[derive(Debug, Default)]
pub struct Routed {
    /// Sessions the message was offered to.
    pub offered: usize,
    /// Sessions it pushed above their soft limit: the publisher should pause.
    pub overfilled: Vec<Overfilled>,
}

/// Counts a paused publisher for as long as it waits.
struct PausedGuard<'a>(&'a AtomicUsize);

impl Drop for PausedGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One delivery of a [`RoutePlan`]: session, QoS it is delivered with, durable queue entry.
type RouteTarget = (Arc<Session>, QoS, Option<QueueSeq>);
/// Targets of one publish kept without a heap allocation.
const INLINE_TARGETS: usize = 4;

/// Where a published message goes, computed before it is made durable and applied after.
#[derive(Debug)]
pub struct RoutePlan {
    message: Message,
    /// Session, QoS it is delivered with, and its durable queue entry (if any). Inline for a
    /// few targets: most topics have few subscribers, and this is built once per publish.
    targets: SmallVec<[RouteTarget; INLINE_TARGETS]>,
    limit: usize,
}

impl RoutePlan {
    pub fn into_message(self) -> Message {
        self.message
    }
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

    /// Expired sessions (see [`persist::expire_sessions_periodically`]): dropped from memory,
    /// from the snapshots of a broker without a durable store, and with their queued messages.
    /// One whose client came back in the meantime is written back to the store (it is live
    /// again).
    pub fn drop_expired(&self, client_ids: &[Arc<str>]) {
        for client_id in client_ids {
            match self.registry.remove_offline(client_id) {
                None => {}
                Some(Ok(session)) => {
                    session.with_state_unchecked(|s| {
                        let mut tree = self.subscriptions.write();
                        for filter in s.subscriptions.keys() {
                            tree.remove(filter, &session.id());
                        }
                    });
                    if let Some(snapshots) = &self.snapshots {
                        if let Err(e) = snapshots.remove(client_id) {
                            tracing::warn!(%client_id, "{e}");
                        }
                    }
                }
                Some(Err(back)) => {
                    let op = back.with_state_unchecked(|s| persist::put_session_op(s));
                    self.persist_background(vec![op]);
                }
            }
        }
    }

    /// A QoS 1/2 publish the store did not take: counted and logged (rate-limited).
    pub fn publish_refused(&self, topic: &str, error: &crate::store::StoreError) {
        if let crate::store::StoreError::Full { .. } = error {
            let total = self.counters.refused_store_full();
            if persist::should_log_refusal(total) {
                tracing::warn!(%topic, refused_total = total, "publish refused: {error}");
            }
        } else {
            tracing::warn!(%topic, "publish refused, not acknowledged: {error}");
        }
    }

    /// A client's PUBLISH entering the broker: charged to the memory gauge (once, shared by
    /// every copy), or `None` when the `memoryUsage` limit is reached. Then a QoS 1/2 publish
    /// is refused like a full store (the caller does not acknowledge it) and a QoS 0 one is
    /// dropped; both counted and logged (rate-limited).
    pub fn admit(&self, message: Message) -> Option<Message> {
        if !self.memory.is_full() {
            return Some(self.memory.charge(message));
        }
        let (total, outcome) = if message.qos == QoS::AtMostOnce {
            (self.counters.dropped_memory_full(), "QoS 0 publish dropped")
        } else {
            (
                self.counters.refused_memory_full(),
                "publish refused, not acknowledged",
            )
        };
        if persist::should_log_refusal(total) {
            tracing::warn!(
                topic = %message.topic,
                limit_bytes = self.memory.limit_bytes(),
                used_bytes = self.memory.used_bytes(),
                total,
                "{outcome}: messages held in memory reached the memoryUsage limit"
            );
        }
        None
    }

    /// Rebuild retained messages and persistent sessions from what the durable store held,
    /// then publish the wills of the clients that were connected when the broker stopped
    /// without a clean shutdown (their connections closed without DISCONNECT: MQTT 3.1.1
    /// 3.1.2-8; MQTT 5 3.1.2.5 allows it after a restart), authorized as their owners as of
    /// now with `config`'s security: see [`persist::publish_recovered_wills`].
    pub fn restore_durable(&self, recovered: Recovered, config: &Config) -> RecoveredCounts {
        let counts = RecoveredCounts::of(&recovered);
        {
            let mut retained = self.retained.write();
            for message in persist::restore_retained(recovered.retained, &self.memory) {
                let topic = message.topic.clone();
                retained.set(&topic, message);
            }
        }
        let mut wills = Vec::new();
        for recovered_session in recovered.sessions {
            let (mut state, will) = persist::restore_session(recovered_session, &self.memory);
            if let Some(will) = will {
                // Gone from the record in the batch that publishes it (or drops it).
                state.stored_will = None;
                wills.push(persist::RecoveredWill {
                    forget: persist::put_session_op(&state),
                    client_id: Arc::from(state.client_id.as_str()),
                    will,
                });
            }
            self.index_restored(state);
        }
        persist::publish_recovered_wills(self, wills, config);
        counts
    }

    fn index_restored(&self, state: super::session::SessionState) {
        let session = self.registry.restore(state);
        // Lock order: session, then tree (as everywhere else).
        session.with_state_unchecked(|s| {
            let mut tree = self.subscriptions.write();
            for (filter, sub) in &s.subscriptions {
                tree.insert(filter, session.id(), sub.qos);
            }
        });
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

    /// Bring back the persistent sessions of the store (offline until their clients return).
    pub fn restore_sessions(&self) -> anyhow::Result<usize> {
        let Some(snapshots) = &self.snapshots else {
            return Ok(0);
        };
        let states = snapshots.load_all()?;
        let count = states.len();
        for state in states {
            self.index_restored(state);
        }
        Ok(count)
    }

    /// Give a CONNECTing client its session (see [`SessionRegistry::attach`]).
    /// A persistent session's record in the durable store carries `will` and the principal
    /// that connected with it (a will published after a crash is authorized as its owner).
    pub fn attach(
        &self,
        client_id: &str,
        clean_session: bool,
        allow_link_stealing: bool,
        will: Option<(&LastWill, &Principal)>,
    ) -> Result<Attached, AttachError> {
        let attached = self
            .registry
            .attach(client_id, clean_session, allow_link_stealing)?;
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

    /// Queue a retained message for `session` because it subscribed (retain=1, at `qos`).
    ///
    /// Not subject to the pending limit: the payload is shared with the retained store, so a
    /// queue entry costs a few references, and the retained set is already bounded by what the
    /// store holds. Capping it would silently lose retained messages for a wide subscription.
    pub fn deliver_retained(&self, session: &Session, message: Message, qos: QoS) {
        let mut seq = None;
        if let Some(durable) = &self.durable {
            if session.is_persistent() && qos != QoS::AtMostOnce {
                // A copy of the body for the queue (the retained slot's copy may be replaced).
                let (id, entry_seq) = (durable.allocate_id(), durable.allocate_id());
                durable.submit_background(vec![
                    Op::PutMessage {
                        id,
                        message: persist::stored_message(&message),
                    },
                    Op::Enqueue {
                        client_id: session.client_id().clone(),
                        seq: entry_seq,
                        entry: QueueEntry {
                            message_id: id,
                            qos,
                            retain: true,
                            state: QueueState::Queued,
                        },
                    },
                ]);
                seq = Some(entry_seq);
            }
        }
        let item = QueuedMessage {
            message,
            qos,
            retain: true,
            seq,
        };
        let outcome = session.deliver(item, usize::MAX);
        self.count_delivery(session, outcome, usize::MAX);
        self.dequeue_if_dropped(session, outcome, seq);
    }

    /// A durable queue entry whose message was not queued in memory is removed from the store.
    fn dequeue_if_dropped(
        &self,
        session: &Session,
        outcome: DeliverOutcome,
        seq: Option<QueueSeq>,
    ) {
        if let (Some(seq), DeliverOutcome::DroppedFull | DeliverOutcome::DroppedEnded) =
            (seq, outcome)
        {
            self.persist_background(vec![Op::Dequeue {
                client_id: session.client_id().clone(),
                seq,
            }]);
        }
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

    /// A connection moved messages out of its session queue, leaving `pending_len` queued:
    /// wake paused publishers so they re-check, unless none is paused or the queue is still
    /// too long to release any of them.
    pub fn queue_drained_some(&self, pending_len: usize) {
        if self.paused_publishers.load(Ordering::SeqCst) > 0
            && pending_len <= self.drain_wake_at.load(Ordering::SeqCst)
        {
            self.queue_progress.notify_waiters();
        }
    }

    /// Wait until every session of `overfilled` is back under its soft limit or offline, or
    /// until `deadline`. Holds no lock while waiting; cancel-safe (it re-checks from scratch).
    pub async fn wait_drained(&self, overfilled: &[Overfilled], deadline: Instant) {
        let wake_at = overfilled.iter().map(|o| o.soft_limit).max().unwrap_or(0);
        // Raised before we count as paused, so no drain that could release us skips the signal.
        self.drain_wake_at.fetch_max(wake_at, Ordering::SeqCst);
        self.paused_publishers.fetch_add(1, Ordering::SeqCst);
        let _paused = PausedGuard(&self.paused_publishers);
        loop {
            let notified = self.queue_progress.notified();
            tokio::pin!(notified);
            // Registered before the check, so a drain right after it still wakes us.
            notified.as_mut().enable();
            if !overfilled.iter().any(Overfilled::still_over) {
                return;
            }
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            let recheck_at = deadline.min(now + OVERFILL_RECHECK);
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(recheck_at) => {}
            }
        }
    }

    /// Route a published message now: update the retained store, then queue one copy per
    /// matching session at min(publish QoS, highest matching subscription QoS). Never blocks on
    /// a subscriber. With a durable store its changes are submitted but not awaited (QoS 0
    /// publishes, wills).
    pub fn route(&self, message: Message) -> Routed {
        let (plan, ops) = self.plan_route(message);
        self.persist_background(ops);
        self.complete_route(plan)
    }

    /// The first half of routing: the sessions `message` goes to and, for a durable broker,
    /// the store ops that make it durable (its body, its retained slot, one queue entry per
    /// persistent session receiving it at QoS 1/2). Nothing is changed until
    /// [`Self::complete_route`].
    pub fn plan_route(&self, message: Message) -> (RoutePlan, Vec<Op>) {
        let mut matches: SmallVec<[(SessionId, QoS); INLINE_TARGETS]> = SmallVec::new();
        self.subscriptions
            .read()
            .for_each_match(&message.topic, |id, qos| matches.push((*id, *qos)));
        // One copy per session at its highest matching QoS (overlapping subscriptions).
        matches.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        matches.dedup_by_key(|m| m.0);
        let limit = self.pending_limits.load().limit_for(&message.topic);
        let mut targets: SmallVec<[RouteTarget; INLINE_TARGETS]> =
            SmallVec::with_capacity(matches.len());
        self.registry.for_each_of(&matches, |session, sub_qos| {
            targets.push((session.clone(), min_qos(message.qos, sub_qos), None));
        });
        let mut ops = Vec::new();
        if let Some(durable) = &self.durable {
            let message_id = durable.allocate_id();
            let mut body_needed = false;
            if message.retain {
                if message.payload.is_empty() {
                    ops.push(Op::ClearRetained {
                        topic: message.topic.clone(),
                    });
                } else {
                    body_needed = true;
                    ops.push(Op::SetRetained {
                        topic: message.topic.clone(),
                        message_id,
                    });
                }
            }
            for (session, qos, seq) in &mut targets {
                if session.is_persistent() && *qos != QoS::AtMostOnce {
                    let entry_seq = durable.allocate_id();
                    *seq = Some(entry_seq);
                    body_needed = true;
                    ops.push(Op::Enqueue {
                        client_id: session.client_id().clone(),
                        seq: entry_seq,
                        entry: QueueEntry {
                            message_id,
                            qos: *qos,
                            retain: false,
                            state: QueueState::Queued,
                        },
                    });
                }
            }
            if body_needed {
                ops.insert(
                    0,
                    Op::PutMessage {
                        id: message_id,
                        message: persist::stored_message(&message),
                    },
                );
            }
        }
        (
            RoutePlan {
                message,
                targets,
                limit,
            },
            ops,
        )
    }

    /// The second half of routing (after the plan's ops are durable): retained store, then
    /// the deliveries. A delivery to an online session (any QoS) is queued up to the hard cap
    /// (see [`super::queue`]); the sessions it leaves above their soft limit are returned so
    /// the publisher can pause.
    pub fn complete_route(&self, plan: RoutePlan) -> Routed {
        let RoutePlan {
            message,
            targets,
            limit,
        } = plan;
        if message.retain {
            if message.payload.is_empty() {
                self.retained.write().clear(&message.topic);
            } else {
                self.retained.write().set(&message.topic, message.clone());
            }
        }
        let live = Message {
            retain: false,
            ..message
        };
        let mut routed = Routed {
            offered: targets.len(),
            overfilled: Vec::new(),
        };
        for (session, qos, seq) in targets {
            let item = QueuedMessage {
                message: live.clone(),
                qos,
                retain: false,
                seq,
            };
            // Every QoS to an online session: back-pressure, not loss (see [`super::queue`]).
            // QoS 0 skips the attachment check (a lock per delivery): an offline session does
            // not queue it at all, so the hard cap only ever applies to an online one.
            let back_pressure = qos == QoS::AtMostOnce || session.is_attached();
            let push_limit = if back_pressure {
                pending_hard_cap(limit)
            } else {
                limit
            };
            let outcome = session.deliver(item, push_limit);
            self.count_delivery(&session, outcome, push_limit);
            self.dequeue_if_dropped(&session, outcome, seq);
            let queued = matches!(
                outcome,
                DeliverOutcome::Queued | DeliverOutcome::QueuedEvictedQos0
            );
            if back_pressure && queued && session.with_state_unchecked(|s| s.pending.len()) > limit
            {
                routed.overfilled.push(Overfilled {
                    session,
                    soft_limit: limit,
                });
            }
        }
        routed
    }
}
