//! The one sweeper that ends abandoned persistent sessions, by two rules:
//!
//! - ActiveMQ's `offlineDurableSubscriberTimeout` (ms; -1 = never, the default), checked every
//!   `offlineDurableSubscriberTaskSchedule` ms (default 300000): a session whose client has been
//!   gone longer is deleted with its queue.
//! - MQTT 5 Session Expiry Interval (MQTT 5 3.1.2.11.2): a session with an interval of its own
//!   ends that long after its client left, checked every [`CHECK_EVERY_MS`] (an interval is in
//!   seconds); the broker-wide timeout, when set, caps it.
//!
//! It also publishes pending wills when their Will Delay Interval passes (MQTT 5 3.1.3-9; the
//! set is [`super::wills::PendingWills`]): it waits for the earliest deadline beside its tick.
//!
//! Offline time is the registry's, which carries what a durability engine recovered across a
//! restart (see [`crate::broker::durability::RecoveredSession::offline_for`]).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::broker::runtime::BrokerCore;
use crate::config::Config;

/// How often sessions with their own expiry interval are checked.
pub const CHECK_EVERY_MS: u64 = 1000;

/// ActiveMQ's `offlineDurableSubscriberTimeout` and `offlineDurableSubscriberTaskSchedule`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbandonedSessionTimeout {
    /// A session whose client has been offline this long is deleted with its queue.
    pub timeout: Duration,
    /// How often sessions are checked against `timeout`.
    pub check_every: Duration,
}

impl AbandonedSessionTimeout {
    /// `None` when the configuration keeps offline sessions forever (ActiveMQ's default).
    pub fn of(config: &Config) -> Option<AbandonedSessionTimeout> {
        let broker = &config.broker;
        broker
            .offline_durable_subscriber_timeout_ms
            .map(|timeout_ms| AbandonedSessionTimeout {
                timeout: Duration::from_millis(timeout_ms),
                check_every: Duration::from_millis(
                    broker.offline_durable_subscriber_task_schedule_ms.max(1),
                ),
            })
    }
}

/// Sweep until broker shutdown (see the module documentation).
pub async fn sweep_periodically(
    core: Arc<BrokerCore>,
    abandoned: Option<AbandonedSessionTimeout>,
    shutdown: CancellationToken,
    _task_alive: tokio::sync::mpsc::Sender<()>,
) {
    let tick = abandoned.map_or(Duration::from_millis(CHECK_EVERY_MS), |a| {
        a.check_every.min(Duration::from_millis(CHECK_EVERY_MS))
    });
    let mut ticks = tokio::time::interval(tick);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut broker_rule_due = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = core.pending_wills.wait_due() => {
                core.publish_due_wills();
                continue;
            }
            _ = ticks.tick() => {}
        }
        let now = tokio::time::Instant::now();
        let broker_rule = abandoned.filter(|_| now >= broker_rule_due);
        if let Some(a) = broker_rule {
            broker_rule_due = now + a.check_every;
        }
        let broker_limit = abandoned.map(|a| a.timeout);
        let mut own_expired = 0usize;
        let mut abandoned_expired = 0usize;
        let expired: Vec<Arc<str>> = core
            .registry
            .persistent_sessions()
            .into_iter()
            .filter(|s| {
                if s.outlived_own_expiry(broker_limit) {
                    own_expired += 1;
                    return true;
                }
                let over = broker_rule
                    .is_some_and(|a| s.offline_for().is_some_and(|offline| offline > a.timeout));
                abandoned_expired += usize::from(over);
                over
            })
            .map(|s| s.client_id().clone())
            .collect();
        if own_expired > 0 {
            tracing::info!(
                sessions = own_expired,
                "sessions ended: offline past their session expiry interval"
            );
        }
        if abandoned_expired > 0 {
            tracing::info!(
                sessions = abandoned_expired,
                offline_durable_subscriber_timeout_ms = broker_limit.map(|t| t.as_millis() as u64),
                "abandoned persistent sessions expired with their queued messages"
            );
        }
        if !expired.is_empty() {
            core.drop_expired(&expired);
        }
    }
}
