//! The shared-subscription half of planning a route (MQTT 5.0 4.8.2): each shared group whose
//! filter matches the topic adds ONE delivery, to the member
//! [`crate::broker::routing::shared::choose`] picks, with that member's subscription options
//! (QoS, Retain As Published, Subscription Identifier). A session that is in a group and also
//! subscribed directly (or in several groups) gets one copy for each, as mosquitto and EMQX do.

use std::sync::Arc;

use smallvec::SmallVec;

use crate::broker::routing::router::SharedGroup;
use crate::broker::routing::shared::{self, choose, Candidate, Draw, GroupCursor, SharedStrategy};
use crate::broker::session::{Session, SessionId, SubscriptionOptions};

use super::BrokerCore;

/// One matching group as taken out of the subscription tree (under its read lock).
pub(super) struct MatchedGroup {
    cursor: Arc<GroupCursor>,
    members: SmallVec<[(SessionId, SubscriptionOptions); 4]>,
}

impl MatchedGroup {
    pub(super) fn of(group: &SharedGroup<SessionId, SubscriptionOptions>) -> Self {
        MatchedGroup {
            cursor: group.cursor().clone(),
            members: group.members().map(|(id, o)| (*id, *o)).collect(),
        }
    }
}

/// The matching groups of one publish, inline for the usual one or two.
pub(super) type MatchedGroups = SmallVec<[MatchedGroup; 2]>;

impl BrokerCore {
    /// Choose one member of each group in `groups` and call `deliver` with its session and
    /// subscription options. The members' sessions are only looked at here, with the tree
    /// unlocked, because a SUBSCRIBE holds its session's lock while it takes the tree's write
    /// lock. `publisher`: the session that published (for `hash-client-id`).
    pub(super) fn choose_shared_members(
        &self,
        publisher: Option<SessionId>,
        groups: MatchedGroups,
        mut deliver: impl FnMut(Arc<Session>, SubscriptionOptions),
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
                deliver(session, options);
            }
        }
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
