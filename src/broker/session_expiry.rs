//! MQTT 5 Session Expiry Interval: a persistent session with an interval of its own ends that
//! long after its client left. Checked in memory every [`CHECK_EVERY_MS`] (an interval is in
//! seconds, so a one-second sweep keeps the promise to within a second) against the
//! registry, which holds every persistent session of a durable broker too; the expired ones
//! are deleted from the durable store or the snapshots. The broker-wide
//! `offlineDurableSubscriberTimeout` (see [`super::persist::expire_sessions_periodically`])
//! caps every interval here as well. After a restart the offline clock starts again at the
//! restart (the session lives at most one interval longer than asked).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::runtime::BrokerCore;

/// How often sessions with their own expiry interval are checked.
pub const CHECK_EVERY_MS: u64 = 1000;

/// Every [`CHECK_EVERY_MS`], end the offline persistent sessions past their own expiry
/// interval (capped by `broker_limit`). Ends at broker shutdown.
pub async fn expire_own_intervals_periodically(
    core: Arc<BrokerCore>,
    broker_limit: Option<Duration>,
    shutdown: CancellationToken,
    _task_alive: tokio::sync::mpsc::Sender<()>,
) {
    let mut ticks = tokio::time::interval(Duration::from_millis(CHECK_EVERY_MS));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let expired: Vec<Arc<str>> = core
            .registry
            .persistent_sessions()
            .into_iter()
            .filter(|s| s.outlived_own_expiry(broker_limit))
            .map(|s| s.client_id().clone())
            .collect();
        if !expired.is_empty() {
            tracing::info!(
                sessions = expired.len(),
                "sessions ended: offline past their session expiry interval"
            );
            core.drop_expired(&expired, true);
        }
    }
}
