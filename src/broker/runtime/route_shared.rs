//! The shared-subscription half of planning a route (MQTT 5.0 4.8.2): each shared group whose
//! filter matches the topic adds ONE delivery, to the member
//! [`crate::broker::routing::shared::choose`] picks, with that member's subscription options
//! (QoS, Retain As Published, Subscription Identifier). A session that is in a group and also
//! subscribed directly (or in several groups) gets one copy for each, as mosquitto and EMQX do.

use std::sync::Arc;

use smallvec::SmallVec;

use crate::broker::message::Message;
use crate::broker::routing::router::SharedGroup;
use crate::broker::routing::shared::{self, choose, Candidate, Draw, GroupCursor, SharedStrategy};
use crate::broker::session::inflight::InflightStage;
use crate::broker::session::{Session, SessionId, SubscriptionOptions};
use crate::protocol::QoS;

use super::route::shared_copy_for;
use super::BrokerCore;

/// One matching group as taken out of the subscription tree (under its read lock).
pub(super) struct MatchedGroup {
    subscription: Arc<str>,
    cursor: Arc<GroupCursor>,
    members: SmallVec<[(SessionId, SubscriptionOptions); 4]>,
}

impl MatchedGroup {
    pub(super) fn of(group: &SharedGroup<SessionId, SubscriptionOptions>) -> Self {
        MatchedGroup {
            subscription: group.subscription().clone(),
            cursor: group.cursor().clone(),
            members: group.members().map(|(id, o)| (*id, *o)).collect(),
        }
    }
}

/// The matching groups of one publish, inline for the usual one or two.
pub(super) type MatchedGroups = SmallVec<[MatchedGroup; 2]>;

impl BrokerCore {
    /// Choose one member of each group in `groups` and call `deliver` with its session and
    /// subscription options and the group's subscription (`$share/{group}/{filter}`). The members' sessions are only looked at here, with the tree
    /// unlocked, because a SUBSCRIBE holds its session's lock while it takes the tree's write
    /// lock. `publisher`: the session that published (for `hash-client-id`).
    pub(super) fn choose_shared_members(
        &self,
        publisher: Option<SessionId>,
        groups: MatchedGroups,
        mut deliver: impl FnMut(Arc<Session>, SubscriptionOptions, Arc<str>),
    ) {
        let strategy = self.shared_strategy.load();
        let mut publisher_hash = 0;
        if let (SharedStrategy::HashClientId, Some(id)) = (strategy, publisher) {
            self.registry.for_each_of(&[(id, ())], |session, ()| {
                publisher_hash = shared::publisher_hash(session.client_id());
            });
        }
        for group in groups {
            if let Some((session, options)) =
                self.choose_member(strategy, &group.cursor, &group.members, publisher_hash)
            {
                deliver(session, options, group.subscription);
            }
        }
    }

    /// `session` ended (clean disconnect of a session that is not kept, expiry, takeover with
    /// clean start, admin end): hand each copy it got through a shared group and did not
    /// finish to another member of that group (MQTT 5 4.8.2): the QoS 1/2 copies still queued,
    /// and the QoS 1 ones sent but not acknowledged. Not handed over: QoS 2 copies already sent
    /// (4.8.2-5: they complete on their session or not at all), copies the member refused with a
    /// PUBACK >= 0x80 (they left the window then: 4.8.2-6), copies paged out to the store (their
    /// payload is not in memory; they end with the session), and copies whose group has no
    /// other member left. Call it after the session's subscriptions left the tree, so it is
    /// not chosen again.
    pub(super) fn hand_over_shared(&self, session: &Session) {
        let orphans: Vec<(Arc<str>, Message)> = session.with_state_unchecked(|s| {
            let in_flight = s
                .inflight()
                .iter()
                .filter(|e| e.qos == QoS::AtLeastOnce && e.stage == InflightStage::AwaitingPubAck);
            let in_flight =
                in_flight.filter_map(|e| Some((e.shared_group.clone()?, e.message.clone())));
            let queued = s.pending().iter().filter(|item| !item.paged);
            let queued =
                queued.filter_map(|item| Some((item.shared_group.clone()?, item.message.clone())));
            in_flight.chain(queued).collect()
        });
        if orphans.is_empty() {
            return;
        }
        let handed = orphans
            .into_iter()
            .map(|(subscription, message)| self.hand_over_one(subscription, message))
            .filter(|handed| *handed)
            .count();
        tracing::debug!(
            client_id = %crate::security::Bounded(session.client_id()),
            handed,
            "session ended: unfinished shared subscription copies handed to other members"
        );
    }

    /// Route `message` (a copy through the shared group subscribed as `subscription`) to a
    /// member of that group now; false when the group has no member left that can take it.
    pub(super) fn hand_over_one(&self, subscription: Arc<str>, message: Message) -> bool {
        let group = self
            .subscriptions
            .read()
            .shared_group(&subscription)
            .map(MatchedGroup::of);
        let strategy = self.shared_strategy.load();
        let Some((member, options)) =
            group.and_then(|group| self.choose_member(strategy, &group.cursor, &group.members, 0))
        else {
            return false;
        };
        let target = shared_copy_for(&message, member, &options, subscription);
        let (plan, changes) = self.plan_single(message, target);
        self.commit_background(changes);
        self.complete_route(plan);
        true
    }

    /// The member of one group (its cursor and members) that receives a message; `None`
    /// when none can.
    fn choose_member(
        &self,
        strategy: SharedStrategy,
        cursor: &GroupCursor,
        members: &[(SessionId, SubscriptionOptions)],
        publisher_hash: u64,
    ) -> Option<(Arc<Session>, SubscriptionOptions)> {
        let mut sessions: SmallVec<[(Arc<Session>, SubscriptionOptions); 4]> = SmallVec::new();
        self.registry.for_each_of(members, |session, options| {
            sessions.push((session.clone(), options))
        });
        let candidates: SmallVec<[Candidate; 4]> = sessions
            .iter()
            .map(|(session, _)| Candidate {
                id: session.id(),
                online: session.is_attached(),
                persistent: session.is_persistent(),
            })
            .collect();
        let draw = Draw {
            publisher_hash,
            random: match strategy {
                SharedStrategy::Random => rand::random(),
                _ => 0,
            },
        };
        let chosen = choose(strategy, cursor, &candidates, draw)?;
        sessions.into_iter().nth(chosen)
    }
}

/// A shared group's copy that [`BrokerCore::deliver_to_group`] gave to a local member.
#[derive(Debug)]
pub struct GroupCopy {
    /// The member chosen.
    pub session: Arc<Session>,
    /// The QoS it is sent with: min(published QoS, the member's subscription QoS).
    pub qos: QoS,
    /// Queued on the member's session (false: the session ended or its queue was full).
    pub queued: bool,
}

impl BrokerCore {
    /// A shared engine's copy of `message` for the shared group subscribed here as
    /// `subscription` (`$share/{group}/{filter}`, MQTT 5 4.8.2): give it to one local member,
    /// chosen as for a local publish, with that member's options. A QoS 1/2 copy is entry
    /// `seq` of the member's queue: the member's acknowledgement (or the copy's end by expiry
    /// or refusal) commits `Change::Removed` with it, and nothing else is committed for it.
    /// The core does not hand such a copy to another member when its session ends: the engine
    /// does. `None`: no local member, or `message`'s topic does not match the group's filter.
    pub fn deliver_to_group(
        &self,
        subscription: &str,
        message: Message,
        seq: crate::broker::durability::QueueSeq,
    ) -> Option<GroupCopy> {
        let Ok(Some(shared)) = crate::protocol::topic::parse_shared_subscription(subscription)
        else {
            return None;
        };
        if !crate::protocol::topic::matches(shared.filter, &message.topic) {
            return None;
        }
        let group = self
            .subscriptions
            .read()
            .shared_group(subscription)
            .map(MatchedGroup::of)?;
        let strategy = self.shared_strategy.load();
        let (member, options) = self.choose_member(strategy, &group.cursor, &group.members, 0)?;
        let mut target = shared_copy_for(&message, member.clone(), &options, group.subscription);
        target.shared_group = None;
        if target.qos != QoS::AtMostOnce {
            target.seq = Some(seq);
        }
        let qos = target.qos;
        let queued = self.deliver_single(message, target);
        Some(GroupCopy {
            session: member,
            qos,
            queued,
        })
    }

    /// Whether a local member of the shared group subscribed as `subscription` has its client
    /// connected (a shared engine takes the group's messages only then).
    pub fn group_has_online_member(&self, subscription: &str) -> bool {
        let members: SmallVec<[(SessionId, SubscriptionOptions); 4]> =
            match self.subscriptions.read().shared_group(subscription) {
                Some(group) => group.members().map(|(id, o)| (*id, *o)).collect(),
                None => return false,
            };
        let mut online = false;
        self.registry.for_each_of(&members, |session, _| {
            online |= session.is_attached();
        });
        online
    }

    /// Whether `session` is still this broker's (not ended, not taken over by another).
    pub fn holds_session(&self, session: &Session) -> bool {
        !session.is_ended()
            && self
                .registry
                .by_client_id(session.client_id())
                .is_some_and(|held| held.id() == session.id())
    }
}
