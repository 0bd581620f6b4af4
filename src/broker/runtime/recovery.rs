//! What the runtime does with the state its durability engine kept: applying the recovery at
//! start (retained messages, sessions, wills of a crash, pending wills) and ending expired
//! sessions.

use std::sync::Arc;
use std::time::Duration;

use crate::broker::durability::{now_ms, Change, KeptWill, RecoveredCounts, Recovery, SessionData};
use crate::broker::routing::destinations::is_wildcard;
use crate::broker::session::wills::{PendingWill, WillPublisher};
use crate::config::{Authentication, Config};
use crate::protocol::topic::parse_shared_subscription;
use crate::security::{Principal, Security};

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
    /// security. Wills with a Will Delay Interval follow their deadline instead (see
    /// `pending_deadline_ms`): published now when it passed during the downtime, else armed
    /// (a client that resumes its session first cancels it).
    pub fn apply_recovery(&self, recovery: Recovery, config: &Config) -> RecoveredCounts {
        // Topics that existed: those recorded as created, and (for stores written before
        // destinations were recorded) those with a retained message or a durable subscription,
        // which ActiveMQ's store would hold as destinations too. Before the wills below, which
        // may need them.
        self.destinations.extend(recovery.destinations.iter());
        self.destinations
            .extend(recovery.retained.iter().map(|m| m.topic.clone()));
        for recovered in &recovery.sessions {
            self.destinations.extend(
                recovered
                    .state
                    .subscriptions()
                    .keys()
                    .map(|filter| match parse_shared_subscription(filter) {
                        Ok(Some(share)) => share.filter,
                        _ => filter.as_str(),
                    })
                    .filter(|filter| !is_wildcard(filter)),
            );
        }
        // Then `<destinations>`: the ones not recorded yet are recorded now, so a topic later
        // removed from the file still exists after a restart (as in ActiveMQ's store).
        let declared: Vec<String> = config.destinations.mqtt_topics().collect();
        self.declare_topics(declared.iter().map(String::as_str));
        // Queues of `<destinations>` exist from the start (recovered ones already do).
        self.queues
            .declare(config.destinations.queues.iter().map(String::as_str));
        {
            let mut retained = self.retained.write();
            for message in recovery.retained {
                let topic = message.topic.clone();
                retained.set(&topic, message);
            }
        }
        let mut wills = Vec::new();
        let authentication_enabled = !matches!(config.authentication, Authentication::None);
        let now_ms = now_ms();
        for recovered in recovery.sessions {
            let mut state = recovered.state;
            state.kept_will = None;
            let mut armed = None;
            if let Some(will) = recovered.will {
                match pending_deadline_ms(&will, state.expiry_secs, now_ms) {
                    Some(deadline_ms) => {
                        if will.deadline_ms != Some(deadline_ms) {
                            // Connected at a crash: its deadline counts from this start; keep
                            // it so that another restart does not start the delay over.
                            state.kept_will = Some(Box::new(KeptWill {
                                deadline_ms: Some(deadline_ms),
                                ..will
                            }));
                            self.commit_background(vec![Change::SessionSaved(SessionData::of(
                                &state,
                            ))]);
                        } else {
                            state.kept_will = Some(Box::new(will));
                        }
                        armed = Some(Duration::from_millis(deadline_ms - now_ms));
                    }
                    // Gone from the record in the batch that publishes it (or drops it).
                    None => wills.push((SessionData::of(&state), will)),
                }
            }
            let session = self.registry.restore(state, recovered.offline_for);
            if let Some(wait) = armed {
                self.pending_wills.arm(
                    tokio::time::Instant::now() + wait,
                    PendingWill {
                        session: session.clone(),
                        publisher: WillPublisher::Recovered {
                            authentication_enabled,
                        },
                    },
                );
            }
            // Lock order: session, then tree (as everywhere else).
            session.with_state_unchecked(|s| {
                self.change_subscriptions(|tree| {
                    for (filter, sub) in s.subscriptions() {
                        tree.insert(filter, session.id(), *sub);
                    }
                })
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
                .is_some_and(|principal| self.may_publish_will(&security, principal, &topic));
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
            let message = self
                .memory
                .charge(will.into_message(std::time::Instant::now()));
            let (plan, mut changes) = self.plan_route(message, None);
            changes.push(forget);
            self.commit_background(changes);
            self.complete_route(plan);
            self.counters.wills_published();
            tracing::info!(%client_id, %topic,
                "will of a client connected at the last stop published");
        }
    }
}

/// When a recovered will is published, ms since the Unix epoch, if that is after `now_ms`:
/// a pending will keeps its deadline; the will of a client connected at a crash with a Will
/// Delay Interval is due that long (capped by its session's expiry) after this start (the
/// crash's time is not known, and the client may still resume in time). `None`: due now (no
/// delay, or the deadline passed while the broker was down).
fn pending_deadline_ms(will: &KeptWill, expiry_secs: Option<u32>, now_ms: u64) -> Option<u64> {
    let deadline_ms = will.deadline_ms.unwrap_or_else(|| {
        let wait_secs = will.delay_secs().min(expiry_secs.unwrap_or(u32::MAX));
        now_ms.saturating_add(u64::from(wait_secs) * 1000)
    });
    (deadline_ms > now_ms).then_some(deadline_ms)
}

/// The principal a will left by a crash is published as: its owner as the security snapshot
/// knows them NOW (groups looked up again), so a user removed or moved out of a group since is
/// not trusted with their old rights. `None`: unknown owner (not published).
pub(super) fn will_owner_now(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{LastWill, Properties, QoS};

    fn will(delay_secs: Option<u32>, deadline_ms: Option<u64>) -> KeptWill {
        let will = LastWill {
            topic: "w".into(),
            payload: bytes::Bytes::from_static(b"bye"),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: delay_secs.map(|secs| {
                Box::new(Properties {
                    will_delay_interval: Some(secs),
                    ..Properties::default()
                })
            }),
        };
        KeptWill {
            deadline_ms,
            ..KeptWill::new(&will, &Principal::anonymous())
        }
    }

    #[test]
    fn recovered_wills_follow_their_deadline() {
        let now = 1_000_000;
        // Connected at a crash: no delay -> now; a delay counts from this start, capped by
        // the session's expiry.
        assert_eq!(pending_deadline_ms(&will(None, None), None, now), None);
        assert_eq!(pending_deadline_ms(&will(Some(0), None), None, now), None);
        assert_eq!(
            pending_deadline_ms(&will(Some(30), None), None, now),
            Some(now + 30_000)
        );
        assert_eq!(
            pending_deadline_ms(&will(Some(30), None), Some(5), now),
            Some(now + 5_000)
        );
        // Pending: its own deadline, or now when it passed during the downtime.
        assert_eq!(
            pending_deadline_ms(&will(Some(30), Some(now + 7)), None, now),
            Some(now + 7)
        );
        assert_eq!(
            pending_deadline_ms(&will(Some(30), Some(now)), None, now),
            None
        );
        assert_eq!(
            pending_deadline_ms(&will(Some(30), Some(1)), None, now),
            None
        );
    }
}
