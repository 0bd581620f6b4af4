//! What the runtime does with the state its durability engine kept: applying the recovery at
//! start (retained messages, sessions, wills of a crash) and ending expired sessions.

use std::sync::Arc;

use crate::broker::durability::{Change, KeptWill, RecoveredCounts, Recovery, SessionData};
use crate::broker::message::Message;
use crate::config::{Authentication, Config};
use crate::security::{Action, Principal, Security};

use super::BrokerCore;

impl BrokerCore {
    /// End the offline persistent sessions `client_ids` (expired), with their queues. One
    /// whose client came back in the meantime stays.
    pub fn drop_expired(&self, client_ids: &[Arc<str>]) {
        for client_id in client_ids {
            if let Some(Ok(session)) = self.registry.remove_offline(client_id) {
                self.forget(&session);
            }
        }
    }

    /// Apply what the durability engine recovered: the retained index, every persistent
    /// session (offline until its client returns, its offline time carried on), then the wills
    /// of the clients that were connected when the broker stopped without a clean shutdown
    /// (their connections closed without DISCONNECT: MQTT 3.1.1 3.1.2-8; MQTT 5 3.1.2.5
    /// allows it after a restart), authorized as their owners as of now with `config`'s
    /// security.
    pub fn apply_recovery(&self, recovery: Recovery, config: &Config) -> RecoveredCounts {
        {
            let mut retained = self.retained.write();
            for message in recovery.retained {
                let topic = message.topic.clone();
                retained.set(&topic, message);
            }
        }
        let mut wills = Vec::new();
        for recovered in recovery.sessions {
            let mut state = recovered.state;
            state.kept_will = None;
            if let Some(will) = recovered.will {
                // Gone from the record in the batch that publishes it (or drops it).
                wills.push((SessionData::of(&state), will));
            }
            let session = self.registry.restore(state, recovered.offline_for);
            // Lock order: session, then tree (as everywhere else).
            session.with_state_unchecked(|s| {
                let mut tree = self.subscriptions.write();
                for (filter, sub) in &s.subscriptions {
                    tree.insert(filter, session.id(), sub.qos);
                }
            });
        }
        self.publish_recovered_wills(wills, config);
        recovery.counts
    }

    /// Each will authorized as its owner as of now (unknown or unauthorized owner: not
    /// published, logged), then routed like a publish, QoS and retain flag honoured. The
    /// will's removal from its session record is committed with its queue entries, so it is
    /// published at most once.
    fn publish_recovered_wills(&self, wills: Vec<(SessionData, KeptWill)>, config: &Config) {
        let authentication_enabled = !matches!(config.authentication, Authentication::None);
        let security = self.security();
        for (forget, will) in wills {
            let client_id = forget.client_id.clone();
            let forget = Change::SessionSaved(forget);
            let owner = will_owner_now(&security, authentication_enabled, &will);
            let topic = will.message.topic.clone();
            let allowed = owner
                .as_ref()
                .is_some_and(|principal| security.authorize(principal, Action::Write, &topic));
            if !allowed {
                tracing::info!(
                    %client_id,
                    %topic,
                    user = will.owner.as_ref().map_or("unknown", |o| &*o.user),
                    "will of a client connected at the last stop not published: its owner is \
                     unknown or not authorized to write the topic now"
                );
                self.commit_background(vec![forget]);
                continue;
            }
            let message = self.memory.charge(Message { ..will.message });
            let (plan, mut changes) = self.plan_route(message);
            changes.push(forget);
            self.commit_background(changes);
            self.complete_route(plan);
            self.counters.wills_published();
            tracing::info!(%client_id, %topic,
                "will of a client connected at the last stop published");
        }
    }
}

/// The principal a will left by a crash is published as: its owner as the security snapshot
/// knows them NOW (groups looked up again), so a user removed or moved out of a group since is
/// not trusted with their old rights. `None`: unknown owner (not published).
fn will_owner_now(
    security: &Security,
    authentication_enabled: bool,
    will: &KeptWill,
) -> Option<Principal> {
    let owner = will.owner.as_ref()?;
    if !authentication_enabled {
        // Everyone connects as the anonymous principal now, whoever they were then.
        return Some(Principal::anonymous());
    }
    security.groups_of(&owner.user).map(|groups| Principal {
        user: owner.user.clone(),
        groups,
        anonymous: owner.anonymous,
    })
}
