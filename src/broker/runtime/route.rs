//! Routing a published message to the sessions that match it, and the back-pressure wait of
//! a publisher whose messages pushed online sessions above their soft pending limit (the
//! slow-consumer rule is in [`crate::broker::session::queue`]).

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use smallvec::SmallVec;
use tokio::time::Instant;

use crate::broker::durability::{Change, QueueOwner, QueueSeq, QueuedFor, RetainedChange};
use crate::broker::message::{min_qos, Message};
use crate::broker::queues::QueueCopies;
use crate::broker::routing::limits::pending_hard_cap;
use crate::broker::session::queue::QueuedMessage;
use crate::broker::session::{DeliverOutcome, Session, SessionId, SubscriptionOptions};
use crate::protocol::QoS;

use super::backplane::Offer;
use super::route_cache::{self, CachedRoute, CachedTarget, Run, MAX_CACHED_MATCHES};
use super::route_shared::{MatchedGroup, MatchedGroups};
use super::BrokerCore;

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
            && self.session.with_state_unchecked(|s| s.pending().len()) > self.soft_limit
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

/// One delivery of a [`RoutePlan`]: a copy of the message for one session.
#[derive(Debug)]
pub struct RouteTarget {
    pub session: Arc<Session>,
    /// The QoS it is delivered with: min(published QoS, subscription QoS).
    pub qos: QoS,
    /// The RETAIN flag it is sent with (MQTT 5 Retain As Published, 3.3.1-12/-13).
    pub retain: bool,
    /// The Subscription Identifier of the subscription it is delivered through
    /// (MQTT 5 3.3.4-3), sent with the PUBLISH.
    pub subscription_id: Option<NonZeroU32>,
    /// Its kept queue entry: set by [`BrokerCore::keep_targets`] for a persistent session
    /// receiving it at QoS 1/2.
    pub seq: Option<QueueSeq>,
    /// The shared subscription a QoS 1/2 copy goes through (see
    /// [`QueuedMessage::shared_group`]); `None` for every other copy.
    pub shared_group: Option<Arc<str>>,
}

impl RouteTarget {
    /// A copy for `session` not kept yet (`seq` is set when the plan is made durable).
    pub fn new(
        session: Arc<Session>,
        qos: QoS,
        retain: bool,
        subscription_id: Option<NonZeroU32>,
    ) -> Self {
        RouteTarget {
            session,
            qos,
            retain,
            subscription_id,
            seq: None,
            shared_group: None,
        }
    }
}

/// Targets of one publish kept without a heap allocation.
const INLINE_TARGETS: usize = 4;

/// Where a published message goes, computed before it is made durable and applied after.
#[derive(Debug)]
pub struct RoutePlan {
    message: Message,
    /// One copy per delivery. Inline for a few targets: most topics have few subscribers,
    /// and this is built once per publish.
    pub(super) targets: SmallVec<[RouteTarget; INLINE_TARGETS]>,
    limit: usize,
    /// Completing it sets or clears the topic's retained message (false for a delivery from
    /// the backplane: the retained index follows the shared engine's own record).
    pub(super) updates_retained: bool,
    /// Copies for queues (virtual and composite topics), kept by the same commit and put in
    /// their queues when the route completes, before the sessions' copies (as ActiveMQ's
    /// interceptor sends to the queues first). Boxed: most plans have none.
    queue_copies: Option<Box<QueueCopies>>,
    /// The plans of a composite topic's forwards to other topics, completed with this one.
    pub(super) forwarded: Vec<RoutePlan>,
}

impl RoutePlan {
    pub fn into_message(self) -> Message {
        self.message
    }

    pub fn message(&self) -> &Message {
        &self.message
    }
}

impl BrokerCore {
    /// Queue a retained message for `session` because it subscribed (retain=1, at `qos`,
    /// with the subscription's identifier: MQTT 5 3.3.1-9/-10/-11, 3.3.4-3).
    ///
    /// Not subject to the pending limit: the payload is shared with the retained store, so a
    /// queue entry costs a few references, and the retained set is already bounded by what the
    /// store holds. Capping it would silently lose retained messages for a wide subscription.
    pub fn deliver_retained(
        &self,
        session: &Session,
        message: Message,
        qos: QoS,
        subscription_id: Option<NonZeroU32>,
    ) {
        let mut seq = None;
        if session.is_persistent() && qos != QoS::AtMostOnce {
            // A copy of the body for the queue (the retained slot's copy may be replaced).
            let entry_seq = self.durability.next_seq();
            self.commit_background(vec![Change::Message {
                message: message.clone(),
                retained: RetainedChange::Unchanged,
                queued_for: vec![QueuedFor {
                    owner: QueueOwner::Session(session.client_id().clone()),
                    seq: entry_seq,
                    qos,
                    retain: true,
                    subscription_id,
                }],
            }]);
            seq = Some(entry_seq);
        }
        let item = QueuedMessage {
            message,
            qos,
            retain: true,
            subscription_id,
            seq,
            paged: false,
            shared_group: None,
        };
        let outcome = session.deliver(item, usize::MAX, None);
        self.count_delivery(session, outcome, usize::MAX);
        self.dequeue_if_dropped(session, outcome, seq);
    }

    /// A kept queue entry whose message was not queued in memory is removed.
    fn dequeue_if_dropped(
        &self,
        session: &Session,
        outcome: DeliverOutcome,
        seq: Option<QueueSeq>,
    ) {
        if let (Some(seq), DeliverOutcome::DroppedFull | DeliverOutcome::DroppedEnded) =
            (seq, outcome)
        {
            self.commit_background(vec![Change::removed(session.client_id(), seq)]);
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
                        client_id = %crate::security::Bounded(session.client_id()),
                        limit,
                        dropped_total = total,
                        "slow consumer: pending queue full, QoS 0 message dropped"
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

    /// The topic name of a received PUBLISH as the `Arc<str>` an earlier message to the same
    /// name was routed with on this thread, so a hot topic is not copied once per message
    /// (the per-thread table is the route cache's).
    pub fn shared_topic(&self, topic: String) -> Arc<str> {
        route_cache::shared_topic(self.route_cache_id, topic)
    }

    /// Route a published message now: update the retained store, then queue its copies (see
    /// [`Self::plan_route`]), one per matching shared group to the member it chooses included.
    /// Never blocks on a subscriber. What it changes in the kept state is committed but not
    /// awaited (QoS 0 publishes, wills). `publisher`: the session that published it (`None`
    /// for a will).
    pub fn route(&self, message: Message, publisher: Option<SessionId>) -> Routed {
        let (plan, changes) = self.plan_route(message, publisher);
        self.commit_background(changes);
        self.complete_route(plan)
    }

    /// The first half of routing: the sessions `message` goes to and what must be kept for
    /// it (its retained slot, one queue entry per persistent copy at QoS 1/2). Nothing is
    /// changed until [`Self::complete_route`].
    ///
    /// Overlapping subscriptions (MQTT 5 3.3.4-2 allows either choice): an MQTT 5 session gets
    /// one copy per matching subscription, each with that subscription's QoS, Retain As
    /// Published and Subscription Identifier (as mosquitto and EMQX do); an MQTT 3.1.1 session
    /// one copy at its highest matching QoS. A No Local subscription never receives what
    /// `publisher` (the publishing session; `None` for a will) published (3.8.3-3).
    ///
    /// Each matching shared group (`$share/{group}/{filter}`, MQTT 5 4.8.2) adds one copy for
    /// the member it chooses (see `route_shared.rs`), with that member's options, besides any
    /// copy the member gets through its other subscriptions.
    pub fn plan_route(
        &self,
        message: Message,
        publisher: Option<SessionId>,
    ) -> (RoutePlan, Vec<Change>) {
        self.plan_route_from(message, publisher.as_slice())
    }

    /// [`Self::plan_route`] for a publisher that owns several sessions (a STOMP connection
    /// holds one per subscription): No Local subscriptions of any of `publishers` skip the
    /// message; the first one stands for the publisher in shared-group choices.
    ///
    /// With a backplane (a cluster), nothing is routed here: the plan only updates the local
    /// retained index, and its one change hands the message to the engine, which delivers it
    /// to every broker (see [`crate::broker::durability::backplane`]).
    ///
    /// A topic that forwards to queues (ActiveMQ's virtual and composite topics, see
    /// [`crate::broker::queues::QueueCopies`]) adds their copies to the plan: their entries
    /// are kept by the same commit; a topic that does not costs one atomic load.
    pub fn plan_route_from(
        &self,
        message: Message,
        publishers: &[SessionId],
    ) -> (RoutePlan, Vec<Change>) {
        if self.backplane.is_some() {
            return self.plan_backplane_publish(message, publishers);
        }
        if self.queues.has_virtual_copies() {
            if let Some(copies) = self.queues.virtual_copies(&message) {
                return self.plan_with_queue_copies(message, publishers, copies);
            }
        }
        self.plan_topic_route(message, publishers)
    }

    /// [`Self::plan_route_from`] plus `copies`, kept by the same commit (their queue records
    /// and their own message with an entry per persistent copy). A composite
    /// topic with `forwardOnly` reaches no subscriber of its own and leaves its retained
    /// message as it is.
    #[cold]
    fn plan_with_queue_copies(
        &self,
        message: Message,
        publishers: &[SessionId],
        copies: QueueCopies,
    ) -> (RoutePlan, Vec<Change>) {
        let (mut plan, mut changes) = if copies.forward_only {
            let limit = self.pending_limits.load().limit_for(&message.topic);
            // Not the topic's retained message either (completing the plan would set it).
            let message = Message {
                retain: false,
                ..message
            };
            self.finish_plan(message, SmallVec::new(), limit, RetainedChange::Unchanged)
        } else {
            self.plan_topic_route(message, publishers)
        };
        changes.extend(self.queues.keep_copies(&copies));
        let mut copies = copies;
        for topic in std::mem::take(&mut copies.forward_topics) {
            // As published to that topic (its subscribers, its virtual topic's queues); not
            // its retained message. The configuration refuses chains of composites.
            let forwarded = Message {
                topic,
                ..copies.forwarded_message().clone()
            };
            let (sub_plan, sub_changes) = self.plan_route_from(forwarded, publishers);
            changes.extend(sub_changes);
            plan.forwarded.push(sub_plan);
        }
        plan.queue_copies = Some(Box::new(copies));
        (plan, changes)
    }

    /// The route of `message` to its topic's subscribers (no queue copies).
    fn plan_topic_route(
        &self,
        message: Message,
        publishers: &[SessionId],
    ) -> (RoutePlan, Vec<Change>) {
        let generation = self.registry.routes_generation();
        let route = match route_cache::lookup(self.route_cache_id, generation, &message.topic) {
            Some(route) => route,
            None => {
                let route = self.resolve_route(&message.topic);
                route_cache::store(
                    self.route_cache_id,
                    generation,
                    &message.topic,
                    route.clone(),
                );
                route
            }
        };
        match route {
            Some(targets) => self.plan_resolved_route(message, publishers, &targets),
            None => self.plan_local_route(message, publishers, |_| Offer::All, true),
        }
    }

    /// The sessions and subscriptions `topic` matches, to be cached (see `route_cache.rs`);
    /// `None` when a shared group matches or too many subscriptions do (not cached: planned
    /// by [`Self::plan_local_route`] each time). The caller read the routes generation
    /// before this.
    fn resolve_route(&self, topic: &str) -> CachedRoute {
        let mut matches: SmallVec<[(SessionId, SubscriptionOptions); INLINE_TARGETS]> =
            SmallVec::new();
        let mut grouped = false;
        self.subscriptions.read().for_each_match_and_group(
            topic,
            |id, options| matches.push((*id, *options)),
            |_| grouped = true,
        );
        if grouped || matches.len() > MAX_CACHED_MATCHES {
            return None;
        }
        // Runs per session; within one, highest QoS first (what a 3.1.1 session gets).
        matches.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.qos.cmp(&a.1.qos)));
        let mut targets = Vec::with_capacity(matches.len());
        self.registry.for_each_run(&matches, |session, run| {
            targets.push(CachedTarget {
                session: Arc::downgrade(session),
                run: run.iter().copied().collect(),
            });
        });
        Some(targets.into())
    }

    /// [`Self::plan_local_route`] from a resolved route: the same copies, No Local applied
    /// for `publishers` here (the cached route holds every matching subscription).
    fn plan_resolved_route(
        &self,
        message: Message,
        publishers: &[SessionId],
        resolved: &[CachedTarget],
    ) -> (RoutePlan, Vec<Change>) {
        let limit = self.pending_limits.load().limit_for(&message.topic);
        let mut targets: SmallVec<[RouteTarget; INLINE_TARGETS]> =
            SmallVec::with_capacity(resolved.len());
        for target in resolved {
            // Gone: the session ended (and the generation moved on; this entry is stale and
            // only a publish racing with that end sees it, as it could see the session).
            let Some(session) = target.session.upgrade() else {
                continue;
            };
            let own = target
                .run
                .first()
                .is_some_and(|(id, _)| publishers.contains(id));
            if own && target.run.iter().any(|(_, o)| o.no_local()) {
                let run: Run = target
                    .run
                    .iter()
                    .filter(|(_, o)| !o.no_local())
                    .copied()
                    .collect();
                push_targets(&mut targets, &session, &message, &run);
            } else if let [(_, only)] = target.run.as_slice() {
                targets.push(copy_for(session, &message, only));
            } else {
                push_targets(&mut targets, &session, &message, &target.run);
            }
        }
        let retained = retained_change(&message);
        self.finish_plan(message, targets, limit, retained)
    }

    /// The plan of a publish handed to the backplane, and no retained slot updated here: the
    /// engine updates the retained index when the store is acknowledged, in the order of the
    /// shared store's revisions (a slot set here when the commit completes could replace a
    /// newer value another broker published meanwhile, and stay stale).
    ///
    /// A QoS 0 message reaches this broker's own subscribers here, at its publish, as on a
    /// single broker; the engine skips its own copy of it. Coming back from the engine it
    /// could reach a subscription the same client made right after the PUBLISH: a second,
    /// live copy besides the retained one. Shared groups still get it from the engine, which
    /// picks one member among all brokers. A QoS 1/2 message has no local copies here: they
    /// come from the engine once it is stored, in the stream's order.
    fn plan_backplane_publish(
        &self,
        message: Message,
        publishers: &[SessionId],
    ) -> (RoutePlan, Vec<Change>) {
        let (targets, limit) = if message.qos == QoS::AtMostOnce {
            self.local_targets(&message, publishers, |_| Offer::All, false)
        } else {
            (SmallVec::new(), 0)
        };
        let retained = retained_change(&message);
        let publisher = publishers
            .first()
            .and_then(|id| self.registry.get(*id))
            .map(|session| session.client_id().clone());
        let change = Change::Published {
            message: message.clone(),
            retained,
            publisher,
            store_id: None,
        };
        let plan = RoutePlan {
            message,
            targets,
            limit,
            updates_retained: false,
            queue_copies: None,
            forwarded: Vec::new(),
        };
        (plan, vec![change])
    }

    /// Route to this broker's sessions only, whatever the engine (the `$SYS` topics, which
    /// are each broker's own, and what the backplane delivers). `accept` drops targets (the
    /// backplane skips sessions still catching up from the shared engine). `with_groups`:
    /// shared groups get their copy here (false for the backplane's deliveries: a shared engine
    /// hands a group's copies to one broker itself, see [`Self::deliver_to_group`]).
    pub(crate) fn plan_local_route(
        &self,
        message: Message,
        publishers: &[SessionId],
        accept: impl FnMut(&Session) -> Offer,
        with_groups: bool,
    ) -> (RoutePlan, Vec<Change>) {
        let (targets, limit) = self.local_targets(&message, publishers, accept, with_groups);
        let retained = retained_change(&message);
        self.finish_plan(message, targets, limit, retained)
    }

    /// The copies of `message` for this broker's sessions (see [`Self::plan_local_route`])
    /// and the pending limit of its topic.
    fn local_targets(
        &self,
        message: &Message,
        publishers: &[SessionId],
        mut accept: impl FnMut(&Session) -> Offer,
        with_groups: bool,
    ) -> (SmallVec<[RouteTarget; INLINE_TARGETS]>, usize) {
        let publisher = publishers.first().copied();
        let mut matches: SmallVec<[(SessionId, SubscriptionOptions); INLINE_TARGETS]> =
            SmallVec::new();
        let mut groups = MatchedGroups::new();
        self.subscriptions.read().for_each_match_and_group(
            &message.topic,
            |id, options| {
                if !(options.no_local() && publishers.contains(id)) {
                    matches.push((*id, *options));
                }
            },
            |group| {
                if with_groups {
                    groups.push(MatchedGroup::of(group))
                }
            },
        );
        let limit = self.pending_limits.load().limit_for(&message.topic);
        let mut targets: SmallVec<[RouteTarget; INLINE_TARGETS]> =
            SmallVec::with_capacity(matches.len());
        if let [(id, options)] = matches.as_slice() {
            // The common case, one matching subscription: one copy, whatever the version.
            if let Some(session) = self.registry.get(*id) {
                if accept(&session).admits(options) {
                    targets.push(copy_for(session, message, options));
                }
            }
        } else {
            // Runs per session; within one, highest QoS first (what a 3.1.1 session gets).
            matches.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.qos.cmp(&a.1.qos)));
            self.registry.for_each_run(&matches, |session, run| {
                push_targets(&mut targets, session, message, &accept(session).kept(run));
            });
        }
        if !groups.is_empty() {
            self.choose_shared_members(publisher, groups, |session, options, subscription| {
                targets.push(shared_copy_for(message, session, &options, subscription));
            });
        }
        (targets, limit)
    }

    /// A plan that delivers `message` (live: RETAIN already cleared) to `target` alone and
    /// leaves the retained store as it is: a copy handed from a shared group member whose
    /// session ended to another member.
    pub(super) fn plan_single(
        &self,
        message: Message,
        target: RouteTarget,
    ) -> (RoutePlan, Vec<Change>) {
        let message = Message {
            retain: false,
            ..message
        };
        let limit = self.pending_limits.load().limit_for(&message.topic);
        let mut targets: SmallVec<[RouteTarget; INLINE_TARGETS]> = SmallVec::new();
        targets.push(target);
        self.finish_plan(message, targets, limit, RetainedChange::Unchanged)
    }

    /// The plan of `message` to `targets`, and what must be kept for it: its retained slot
    /// (`retained`) and a queue entry per copy that must survive a restart; no change when
    /// there is neither.
    fn finish_plan(
        &self,
        message: Message,
        mut targets: SmallVec<[RouteTarget; INLINE_TARGETS]>,
        limit: usize,
        retained: RetainedChange,
    ) -> (RoutePlan, Vec<Change>) {
        let queued_for = self.keep_targets(&mut targets);
        let changes = if retained == RetainedChange::Unchanged && queued_for.is_empty() {
            Vec::new()
        } else {
            vec![Change::Message {
                message: message.clone(),
                retained,
                queued_for,
            }]
        };
        (
            RoutePlan {
                message,
                targets,
                limit,
                updates_retained: true,
                queue_copies: None,
                forwarded: Vec::new(),
            },
            changes,
        )
    }

    /// Give every copy that must survive a restart (persistent session, QoS 1/2) its queue
    /// entry number, and describe those entries for the durability engine.
    #[inline]
    pub fn keep_targets(&self, targets: &mut [RouteTarget]) -> Vec<QueuedFor> {
        let mut queued_for = Vec::new();
        for target in targets {
            // A copy that already names its entry is the shared engine's own (see
            // [`Self::deliver_to_group`]).
            if target.seq.is_none()
                && target.session.is_persistent()
                && target.qos != QoS::AtMostOnce
            {
                let entry_seq = self.durability.next_seq();
                target.seq = Some(entry_seq);
                queued_for.push(QueuedFor {
                    owner: QueueOwner::Session(target.session.client_id().clone()),
                    seq: entry_seq,
                    qos: target.qos,
                    retain: target.retain,
                    subscription_id: target.subscription_id,
                });
            }
        }
        queued_for
    }

    /// The second half of routing (after the plan's ops are durable): retained store, then
    /// the deliveries. A QoS 0 delivery to an online session is queued up to the hard cap, a
    /// QoS 1/2 one always
    /// (see [`crate::broker::session::queue`]); the sessions it leaves above their soft limit are returned so
    /// the publisher can pause.
    pub fn complete_route(&self, plan: RoutePlan) -> Routed {
        let RoutePlan {
            message,
            targets,
            limit,
            updates_retained,
            queue_copies,
            forwarded,
        } = plan;
        if let Some(copies) = queue_copies {
            self.queues.insert_copies(*copies);
        }
        let mut forwarded_routed = Routed::default();
        for sub_plan in forwarded {
            let sub = self.complete_route(sub_plan);
            forwarded_routed.offered += sub.offered;
            forwarded_routed.overfilled.extend(sub.overfilled);
        }
        if message.retain && updates_retained {
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
            offered: targets.len() + forwarded_routed.offered,
            overfilled: forwarded_routed.overfilled,
        };
        for target in targets {
            let RouteTarget {
                session,
                qos,
                retain,
                subscription_id,
                seq,
                shared_group,
            } = target;
            // A shared group's copy for a member whose session ends before it is queued goes
            // to another member (see `route_shared.rs`).
            let group_if_ended = shared_group.clone();
            let item = QueuedMessage {
                message: live.clone(),
                qos,
                retain,
                subscription_id,
                seq,
                paged: false,
                shared_group,
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
            let outcome = session.deliver(item, push_limit, self.page_after(limit));
            self.count_delivery(&session, outcome, push_limit);
            self.dequeue_if_dropped(&session, outcome, seq);
            if let (DeliverOutcome::DroppedEnded, Some(group)) = (outcome, group_if_ended) {
                self.hand_over_one(group, live.clone());
            }
            let queued = matches!(
                outcome,
                DeliverOutcome::Queued | DeliverOutcome::QueuedEvictedQos0
            );
            if back_pressure
                && queued
                && session.with_state_unchecked(|s| s.pending().len()) > limit
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

impl BrokerCore {
    /// Queue `message` (live: RETAIN cleared) for `target` alone, as [`Self::complete_route`]
    /// queues one copy, without committing anything for it: the copy's entry number
    /// (`target.seq`) belongs to the caller. Never paged out. True when it was queued; false
    /// when the session ended or its queue was full.
    pub(super) fn deliver_single(&self, message: Message, target: RouteTarget) -> bool {
        let limit = self.pending_limits.load().limit_for(&message.topic);
        let RouteTarget {
            session,
            qos,
            retain,
            subscription_id,
            seq,
            ..
        } = target;
        let item = QueuedMessage {
            message: Message {
                retain: false,
                ..message
            },
            qos,
            retain,
            subscription_id,
            seq,
            paged: false,
            shared_group: None,
        };
        let push_limit = if qos == QoS::AtMostOnce || session.is_attached() {
            pending_hard_cap(limit)
        } else {
            limit
        };
        let outcome = session.deliver(item, push_limit, None);
        self.count_delivery(&session, outcome, push_limit);
        matches!(
            outcome,
            DeliverOutcome::Queued | DeliverOutcome::QueuedEvictedQos0
        )
    }
}

/// What `message` does to its topic's retained message.
fn retained_change(message: &Message) -> RetainedChange {
    match (message.retain, message.payload.is_empty()) {
        (false, _) => RetainedChange::Unchanged,
        (true, true) => RetainedChange::Clear,
        (true, false) => RetainedChange::Set,
    }
}

/// [`copy_for`] through the shared group subscribed as `subscription`: a QoS 1/2 copy is
/// tagged with it, so it can go to another member if this one's session ends first.
pub(super) fn shared_copy_for(
    message: &Message,
    session: Arc<Session>,
    options: &SubscriptionOptions,
    subscription: Arc<str>,
) -> RouteTarget {
    let mut target = copy_for(session, message, options);
    if target.qos != QoS::AtMostOnce {
        target.shared_group = Some(subscription);
    }
    target
}

/// The copies of `message` for `session`, whose matching subscriptions are `run` (highest
/// QoS first): one per subscription for an MQTT 5 session, one at the highest QoS for a 3.1.1
/// one (see [`BrokerCore::plan_route`]). Live copies carry RETAIN only through Retain As
/// Published (3.3.1-12/-13).
fn push_targets(
    targets: &mut SmallVec<[RouteTarget; INLINE_TARGETS]>,
    session: &Arc<Session>,
    message: &Message,
    run: &[(SessionId, SubscriptionOptions)],
) {
    let copy = |options: &SubscriptionOptions| copy_for(session.clone(), message, options);
    match run {
        [(_, only)] => targets.push(copy(only)),
        _ if session.is_mqtt5() => targets.extend(run.iter().map(|(_, options)| copy(options))),
        [(_, highest), ..] => {
            let retain = message.retain && run.iter().any(|(_, o)| o.retain_as_published());
            targets.push(RouteTarget {
                retain,
                subscription_id: None,
                ..copy(highest)
            });
        }
        [] => {}
    }
}

/// The copy of `message` for `session` through one subscription with `options`.
#[inline]
fn copy_for(
    session: Arc<Session>,
    message: &Message,
    options: &SubscriptionOptions,
) -> RouteTarget {
    RouteTarget::new(
        session,
        min_qos(message.qos, options.qos),
        message.retain && options.retain_as_published(),
        options.id,
    )
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::broker::durability::Recording;
    use crate::broker::message::SampleStamp;
    use crate::broker::session::registry::SessionLifetime;
    use crate::protocol::{self, RetainHandling};

    fn options(qos: QoS, no_local: bool, rap: bool, id: u32) -> SubscriptionOptions {
        let wire = protocol::SubscriptionOptions {
            qos,
            no_local,
            retain_as_published: rap,
            retain_handling: RetainHandling::SendAtSubscribe,
        };
        SubscriptionOptions::from_subscribe(&wire, NonZeroU32::new(id))
    }

    fn retained(topic: &str) -> Message {
        Message {
            stamp: SampleStamp::NONE,
            topic: Arc::from(topic),
            payload: Bytes::from_static(b"x"),
            qos: QoS::ExactlyOnce,
            retain: true,
            v5: None,
        }
    }

    /// (QoS, RETAIN, identifier) of each planned copy, sorted.
    fn copies(plan: &RoutePlan) -> Vec<(QoS, bool, Option<u32>)> {
        let mut copies: Vec<_> = plan
            .targets
            .iter()
            .map(|t| (t.qos, t.retain, t.subscription_id.map(NonZeroU32::get)))
            .collect();
        copies.sort();
        copies
    }

    /// A persistent session `client_id` of `mqtt5` or 3.1.1 with these subscriptions.
    fn session_with(
        core: &BrokerCore,
        client_id: &str,
        mqtt5: bool,
        subscriptions: &[(&str, SubscriptionOptions)],
    ) -> Arc<Session> {
        attached_with(core, client_id, mqtt5, subscriptions).0
    }

    /// [`session_with`] and the generation of the connection attaching it.
    fn attached_with(
        core: &BrokerCore,
        client_id: &str,
        mqtt5: bool,
        subscriptions: &[(&str, SubscriptionOptions)],
    ) -> (Arc<Session>, u64) {
        let lifetime = SessionLifetime::Kept { expiry_secs: None };
        let attached = core
            .attach(client_id, true, lifetime, true, None, mqtt5)
            .expect("attach");
        for (filter, options) in subscriptions {
            assert!(core.subscribe(
                &attached.session,
                attached.token.generation,
                filter,
                *options
            ));
        }
        (attached.session, attached.token.generation)
    }

    #[test]
    fn a_v5_session_gets_one_copy_per_subscription_and_a_v3_one_a_single_copy() {
        let (core, _) = crate::broker::runtime::test_core(Recording::new());
        let subscriptions = [
            ("a/#", options(QoS::AtLeastOnce, false, true, 1)),
            ("a/+", options(QoS::ExactlyOnce, false, false, 2)),
            ("a/b", options(QoS::AtMostOnce, false, false, 3)),
        ];
        session_with(&core, "v5", true, &subscriptions);
        let (plan, changes) = core.plan_route(retained("a/b"), None);
        assert_eq!(
            copies(&plan),
            [
                (QoS::AtMostOnce, false, Some(3)),
                (QoS::AtLeastOnce, true, Some(1)),
                (QoS::ExactlyOnce, false, Some(2)),
            ]
        );
        // The kept copies (QoS 1/2) carry their identifier and RETAIN flag to the engine.
        let Some(Change::Message { queued_for, .. }) = changes.first() else {
            panic!("a message change: {changes:?}");
        };
        let mut kept: Vec<_> = queued_for
            .iter()
            .map(|q| (q.qos, q.retain, q.subscription_id.map(NonZeroU32::get)))
            .collect();
        kept.sort();
        assert_eq!(
            kept,
            [
                (QoS::AtLeastOnce, true, Some(1)),
                (QoS::ExactlyOnce, false, Some(2))
            ]
        );

        // The same subscriptions in a session whose client now speaks 3.1.1: one copy at the
        // highest QoS, RETAIN kept through the Retain As Published one, no identifier.
        let (core, _) = crate::broker::runtime::test_core(Recording::new());
        session_with(&core, "v3", false, &subscriptions);
        let (plan, _) = core.plan_route(retained("a/b"), None);
        assert_eq!(copies(&plan), [(QoS::ExactlyOnce, true, None)]);
    }

    #[test]
    fn no_local_skips_only_the_publishers_session_and_not_a_will() {
        let (core, _) = crate::broker::runtime::test_core(Recording::new());
        let me = session_with(
            &core,
            "me",
            true,
            &[("t", options(QoS::AtLeastOnce, true, false, 1))],
        );
        session_with(
            &core,
            "other",
            true,
            &[("t", options(QoS::AtLeastOnce, true, false, 2))],
        );
        let (plan, _) = core.plan_route(retained("t"), Some(me.id()));
        assert_eq!(copies(&plan), [(QoS::AtLeastOnce, false, Some(2))]);
        let (plan, _) = core.plan_route(retained("t"), None);
        assert_eq!(copies(&plan).len(), 2, "a will has no origin session");
    }

    /// Client ids of the sessions a plan delivers to, sorted.
    fn receivers(plan: &RoutePlan) -> Vec<String> {
        let mut ids: Vec<String> = plan
            .targets
            .iter()
            .map(|t| t.session.client_id().to_string())
            .collect();
        ids.sort();
        ids
    }

    fn plan_to(core: &BrokerCore, topic: &str, publisher: Option<SessionId>) -> Vec<String> {
        receivers(&core.plan_route(retained(topic), publisher).0)
    }

    #[test]
    fn a_cached_route_follows_every_change_of_subscriptions_and_sessions() {
        let (core, _) = crate::broker::runtime::test_core(Recording::new());
        let q1 = options(QoS::AtLeastOnce, false, false, 0);
        let (a, a_gen) = attached_with(&core, "a", true, &[("t/+", q1)]);
        // Twice each: the second plan is served from the cache.
        for _ in 0..2 {
            assert_eq!(plan_to(&core, "t/x", None), ["a"]);
        }
        let (b, b_gen) = attached_with(&core, "b", false, &[("t/x", q1)]);
        for _ in 0..2 {
            assert_eq!(plan_to(&core, "t/x", None), ["a", "b"]);
        }
        // A changed subscription (same filter, now No Local) applies at once.
        assert_eq!(core.unsubscribe(&a, a_gen, "t/+"), Some(true));
        for _ in 0..2 {
            assert_eq!(plan_to(&core, "t/x", None), ["b"]);
        }
        assert!(core.subscribe(&a, a_gen, "t/x", options(QoS::AtMostOnce, true, false, 0)));
        for _ in 0..2 {
            assert_eq!(plan_to(&core, "t/x", None), ["a", "b"]);
            assert_eq!(plan_to(&core, "t/x", Some(a.id())), ["b"], "No Local");
            assert_eq!(plan_to(&core, "t/x", Some(b.id())), ["a", "b"]);
        }
        // The QoS of a copy is the message's against the current subscription.
        assert!(core.subscribe(&b, b_gen, "t/x", options(QoS::AtMostOnce, false, false, 0)));
        let (plan, _) = core.plan_route(retained("t/x"), None);
        assert!(plan.targets.iter().all(|t| t.qos == QoS::AtMostOnce));
        // A session that ends is no longer routed to, nor is its replacement until it
        // subscribes.
        let ended = core
            .attach(
                "c",
                true,
                SessionLifetime::EndsAtDisconnect,
                true,
                None,
                true,
            )
            .expect("attach");
        assert!(core.subscribe(&ended.session, ended.token.generation, "t/#", q1));
        assert_eq!(plan_to(&core, "t/x", None), ["a", "b", "c"]);
        assert_eq!(
            core.detach(&ended.session, ended.token.generation),
            crate::broker::session::registry::Detached::Ended
        );
        assert_eq!(plan_to(&core, "t/x", None), ["a", "b"]);
        // Other topics are cached apart.
        assert_eq!(plan_to(&core, "t/y", None), Vec::<String>::new());
        assert_eq!(plan_to(&core, "t/x", None), ["a", "b"]);
    }

    #[test]
    fn brokers_in_one_thread_do_not_share_cached_routes() {
        let (one, _) = crate::broker::runtime::test_core(Recording::new());
        let (two, _) = crate::broker::runtime::test_core(Recording::new());
        let q0 = options(QoS::AtMostOnce, false, false, 0);
        session_with(&one, "on-one", false, &[("t", q0)]);
        session_with(&two, "on-two", false, &[("t", q0)]);
        for _ in 0..3 {
            assert_eq!(plan_to(&one, "t", None), ["on-one"]);
            assert_eq!(plan_to(&two, "t", None), ["on-two"]);
        }
    }

    #[test]
    fn a_shared_group_still_takes_turns_behind_the_cache() {
        let (core, _) = crate::broker::runtime::test_core(Recording::new());
        let q0 = options(QoS::AtMostOnce, false, false, 0);
        session_with(&core, "m1", true, &[("$share/g/t", q0)]);
        session_with(&core, "m2", true, &[("$share/g/t", q0)]);
        session_with(&core, "direct", true, &[("t", q0)]);
        let mut members = std::collections::BTreeSet::new();
        for _ in 0..4 {
            let got = plan_to(&core, "t", None);
            assert_eq!(
                got.len(),
                2,
                "one direct copy and one for the group: {got:?}"
            );
            assert!(got.contains(&"direct".to_string()));
            members.extend(got.into_iter().filter(|id| id != "direct"));
        }
        assert_eq!(members.into_iter().collect::<Vec<_>>(), ["m1", "m2"]);
    }

    /// A publisher streams on one thread while another subscribes and unsubscribes: a publish
    /// planned wholly after an UNSUBSCRIBE returned never goes to that subscription, and one
    /// planned wholly after a SUBSCRIBE returned always does.
    #[test]
    fn a_streaming_publisher_sees_every_subscription_change_at_once() {
        use std::sync::atomic::AtomicU64;

        let (core, _) = crate::broker::runtime::test_core(Recording::new());
        let q0 = options(QoS::AtMostOnce, false, false, 0);
        session_with(&core, "steady", false, &[("s/t", q0)]);
        let (toggled, generation) = attached_with(&core, "toggled", false, &[]);
        // (number of changes made << 1) | subscribed now; CHANGING while a change is made (a
        // publish planned meanwhile may see either side).
        const CHANGING: u64 = u64::MAX;
        let state = Arc::new(AtomicU64::new(0));
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let publisher = {
            let (core, state, done) = (core.clone(), state.clone(), done.clone());
            std::thread::spawn(move || {
                let (mut checked, mut seen_on, mut seen_off) = (0u64, 0u64, 0u64);
                while !done.load(Ordering::SeqCst) {
                    let before = state.load(Ordering::SeqCst);
                    let got = plan_to(&core, "s/t", None);
                    let after = state.load(Ordering::SeqCst);
                    assert!(got.contains(&"steady".to_string()), "{got:?}");
                    if before == after && before != CHANGING {
                        let subscribed = before & 1 == 1;
                        assert_eq!(
                            got.contains(&"toggled".to_string()),
                            subscribed,
                            "after change {}: {got:?}",
                            before >> 1
                        );
                        checked += 1;
                        if subscribed {
                            seen_on += 1;
                        } else {
                            seen_off += 1;
                        }
                    }
                }
                (checked, seen_on, seen_off)
            })
        };
        for change in 1..=200u64 {
            let subscribe = change % 2 == 1;
            state.store(CHANGING, Ordering::SeqCst);
            if subscribe {
                assert!(core.subscribe(&toggled, generation, "s/+", q0));
            } else {
                assert_eq!(core.unsubscribe(&toggled, generation, "s/+"), Some(true));
            }
            state.store((change << 1) | u64::from(subscribe), Ordering::SeqCst);
            // Let the publisher plan a few times in this state.
            for _ in 0..50 {
                std::hint::spin_loop();
                std::thread::yield_now();
            }
        }
        done.store(true, Ordering::SeqCst);
        let (checked, seen_on, seen_off) = publisher.join().expect("publisher thread");
        assert!(
            seen_on > 0 && seen_off > 0,
            "checked {checked}: on {seen_on}, off {seen_off}"
        );
    }
}
