//! Wills with a Will Delay Interval (MQTT 5 3.1.2.5, 3.1.3-9): left pending when their
//! connection ends, published at the earlier of the delay and the end of their session, never
//! when a connection resumes the session first. The timing is
//! [`crate::broker::session::wills`]; this is what arming and publishing do to the runtime and
//! the kept state.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::broker::durability::{now_ms, Change, KeptWill, SessionData};
use crate::broker::runtime::route::RoutePlan;
use crate::broker::session::registry::Detached;
use crate::broker::session::wills::{PendingWill, WillPublisher};
use crate::broker::session::Session;
use crate::protocol::LastWill;
use crate::security::Principal;

use super::BrokerCore;

/// The Will Delay Interval of `will`, in seconds (0 when absent).
pub fn will_delay_secs(will: &LastWill) -> u32 {
    will.properties
        .as_ref()
        .and_then(|p| p.will_delay_interval)
        .unwrap_or(0)
}

impl BrokerCore {
    /// The connection `generation` of `session` ended without a normal DISCONNECT, leaving
    /// `will` with a Will Delay Interval > 0: detach it with the will pending, due at the
    /// earlier of the delay and the session's expiry (kept with the session, so it survives
    /// a restart with a durable engine). Returns the will when it is due now instead: the
    /// session ends at this disconnect (Session Expiry 0), or a Clean Start connection already
    /// replaced it. `None`: armed, or a connection resumed the session (not published).
    pub(crate) fn detach_leaving_will(
        &self,
        session: &Arc<Session>,
        generation: u64,
        will: LastWill,
        principal: &Principal,
    ) -> Option<LastWill> {
        let expiry = session.expiry_secs();
        if !session.is_persistent() || expiry == Some(0) {
            self.detach(session, generation);
            return Some(will);
        }
        let wait_secs = will_delay_secs(&will).min(expiry.unwrap_or(u32::MAX));
        let wait = Duration::from_secs(u64::from(wait_secs));
        let mut kept = KeptWill::new(&will, principal);
        kept.deadline_ms = Some(now_ms().saturating_add(u64::from(wait_secs) * 1000));
        // Set before detaching, so the offline record keeps it.
        let set = session
            .with_state(generation, |s| s.kept_will = Some(Box::new(kept)))
            .is_some();
        if !set {
            // Taken over meanwhile: by a resume (not published) or a clean start (ended).
            self.detach(session, generation);
            return session.is_ended().then_some(will);
        }
        match self.detach(session, generation) {
            Detached::KeptOffline => {
                self.pending_wills.arm(
                    Instant::now() + wait,
                    PendingWill {
                        session: session.clone(),
                        publisher: WillPublisher::Connected(principal.clone()),
                    },
                );
                tracing::debug!(delay_s = wait_secs, "will pending");
                if session.is_ended() {
                    // Ended (expired) before it was armed: the ending found nothing to publish.
                    self.session_ended_with_will(session);
                }
                None
            }
            // Taken over by a resume, which replaced the will (not published); or ended, by a
            // clean start, before the will was armed (the ending found nothing armed): the
            // will is still ours to publish, now.
            Detached::Ended | Detached::TakenOver => {
                let ours = session.with_state_unchecked(|s| {
                    s.kept_will.take_if(|w| w.deadline_ms.is_some()).is_some()
                });
                ours.then_some(will)
            }
        }
    }

    /// Publish every pending will whose deadline passed (the sweeper calls this).
    pub fn publish_due_wills(&self) {
        for due in self.pending_wills.take_due(Instant::now()) {
            self.publish_pending_will(&due.session, &due.publisher);
        }
    }

    /// `session` ended: the will pending on it, if any, is published now.
    pub(super) fn session_ended_with_will(&self, session: &Session) {
        if let Some(pending) = self.pending_wills.cancel(session) {
            self.publish_pending_will(session, &pending.publisher);
        }
    }

    /// Publish the will pending on `session` as `publisher`, authorized as of now, and drop
    /// it from the session's kept record in the same commit as its queue entries (published at
    /// most once, even across a crash). Nothing when the will is gone (resumed, or already
    /// published).
    ///
    /// The route is planned without the session's lock: routing takes the locks of the
    /// sessions it reaches (a shared group's member is checked for being online), and the
    /// will's own session may be one of them. The lock is taken again only to check that the
    /// same will is still pending, take it and commit.
    fn publish_pending_will(&self, session: &Session, publisher: &WillPublisher) {
        let pending = session.with_state_unchecked(|s| {
            s.kept_will
                .as_deref()
                .filter(|w| w.deadline_ms.is_some())
                .cloned()
        });
        let Some(will) = pending else {
            return;
        };
        let planned = self.plan_will(will.clone(), publisher, session.client_id());
        let plan = session.with_state_ended(|s, ended| {
            // Resumed, or published by another path, while the route was planned.
            if s.kept_will.as_deref() != Some(&will) {
                return None;
            }
            s.kept_will = None;
            // An ended session's record is being deleted: do not write it back.
            let forget = (!ended).then(|| Change::SessionSaved(SessionData::of(s)));
            let (plan, mut changes) = match planned {
                Some((plan, changes)) => (Some(plan), changes),
                None => (None, Vec::new()),
            };
            changes.extend(forget);
            // Committed under the session's lock: an ending waits for it, so its
            // `SessionEnded` is never overtaken by this record.
            self.commit_background(changes);
            plan
        });
        if let Some(plan) = plan {
            let topic = plan.message().topic.clone();
            self.complete_route(plan);
            self.counters.wills_published();
            tracing::info!(client_id = %crate::security::Bounded(session.client_id()), %topic,
                "will published after its delay or its session's end");
        }
    }

    /// A will the shared engine (a cluster) took from a session no connection of this broker
    /// holds: its broker died, or its session ended or was taken over here after that. It is
    /// published as its recorded owner, authorized as of now (an unknown owner, or a named
    /// one once authentication is off, is not), through the normal publish path. Returns
    /// whether it was published.
    pub fn publish_will_of_gone_session(&self, client_id: &str, will: KeptWill) -> bool {
        let publisher = WillPublisher::Recovered {
            authentication_enabled: will.owner.as_ref().is_some_and(|o| !o.anonymous),
        };
        let Some((plan, changes)) = self.plan_will(will, &publisher, client_id) else {
            return false;
        };
        self.commit_background(changes);
        self.complete_route(plan);
        self.counters.wills_published();
        true
    }

    /// The route of a pending will, `None` when its publisher may not write its topic now.
    fn plan_will(
        &self,
        will: KeptWill,
        publisher: &WillPublisher,
        client_id: &str,
    ) -> Option<(RoutePlan, Vec<Change>)> {
        let security = self.current_security();
        let principal = match publisher {
            WillPublisher::Connected(principal) => Some(principal.clone()),
            WillPublisher::Recovered {
                authentication_enabled,
            } => super::recovery::will_owner_now(&security, *authentication_enabled, &will),
        };
        let topic = will.message.topic.clone();
        let allowed = principal
            .as_ref()
            .is_some_and(|p| self.may_publish_will(&security, p, &topic));
        if !allowed {
            self.counters.dropped_not_authorized();
            tracing::info!(%client_id, %topic,
                "pending will not published: its owner is unknown or not authorized to write \
                 the topic now");
            return None;
        }
        // Charged but never refused for memory: a will is one bounded message per session.
        let message = self
            .memory
            .charge(will.into_message(std::time::Instant::now()));
        // A will has no origin session: No Local does not apply.
        Some(self.plan_route(message, None))
    }
}
