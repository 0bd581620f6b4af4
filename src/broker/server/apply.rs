//! Live apply of a reloaded configuration ([`crate::reload::ApplyConfig`] for the broker).
//!
//! - Authentication or authorization changed: a new [`crate::security::Security`] snapshot is
//!   built (failed-login counts carry over) and swapped in atomically. New CONNECTs use it;
//!   existing connections make every later decision with it (a publish it denies is dropped from
//!   the next packet, a subscription it denies is removed at once and queued messages it denies
//!   are not delivered). Existing connections keep the identity they logged in with: a removed
//!   user's open connection stays, with whatever the new entries grant that user.
//! - Connectors: see [`crate::broker::server::listener_set`] (start, stop, rebind, new options for new
//!   connections, new TLS material for new handshakes).
//! - Policy entries: the pending-message limits are swapped whole and apply to every message
//!   routed from then on (messages already queued stay queued).
//! - `<ferromq:sharedSubscriptions strategy>`: applies to the next message routed to a shared
//!   group (a group's round-robin turn and sticky member carry over).
//! - `<destinations>`: topics added are created (as the broker: no `admin` needed); topics
//!   removed stay, as ActiveMQ keeps a destination once created.
//! - `systemUsage` limits: a new `memoryUsage` limit applies from the next publish (messages
//!   already held stay); the store limit is fixed when the store opens (restart to change it);
//!   `tempUsage` has no meaning for ferromq (logged).

use std::sync::Arc;

use tokio::sync::Mutex;

use crate::broker::routing::limits::PendingLimits;
use crate::broker::routing::memory::DEFAULT_MEMORY_LIMIT_BYTES;
use crate::broker::runtime::BrokerCore;
use crate::broker::server::listener_set::ListenerSet;
use crate::config::diff::ConfigDiff;
use crate::config::Config;
use crate::reload::{ApplyConfig, ApplyFuture, ApplyOutcome};

/// Applies reloads to one running broker.
pub struct BrokerApply {
    core: Arc<BrokerCore>,
    listeners: Arc<Mutex<ListenerSet>>,
}

impl BrokerApply {
    pub fn new(core: Arc<BrokerCore>, listeners: Arc<Mutex<ListenerSet>>) -> BrokerApply {
        BrokerApply { core, listeners }
    }

    async fn apply_now(&self, new: &Config, diff: &ConfigDiff) -> ApplyOutcome {
        let mut failures = Vec::new();
        if diff.authentication.is_some() || diff.authorization.is_some() {
            match self.core.security().rebuild(new) {
                Ok(security) => self.core.replace_security(security),
                Err(e) => failures.push(format!(
                    "users and permissions not reloaded (the running ones stay): {e}"
                )),
            }
        }
        // Always reconciled (it only touches what differs from what runs), so a connector that
        // failed on an earlier reload (a port in use) is retried by the next one.
        let reconciled = self
            .listeners
            .lock()
            .await
            .reconcile(new, diff.tls.is_some())
            .await;
        failures.extend(reconciled);
        if diff.policies.is_some() {
            // Applies to messages routed from now on; what is already queued stays queued.
            self.core
                .pending_limits
                .store(Arc::new(PendingLimits::from_policies(&new.policies)));
            tracing::info!("policy entries applied: new pending-message limits");
        }
        if diff.console_users {
            // Read per console request: the next login uses the new realm file.
            let users = new
                .console
                .as_ref()
                .map(|c| c.users.clone())
                .unwrap_or_default();
            let count = users.len();
            self.core.console_users.store(Arc::new(users));
            tracing::info!(users = count, "console realm file re-read");
        }
        if diff.delivery {
            // Read at each NACK, expiry and new queue consumer from now on.
            self.core.queues.set_delivery_policy(new.delivery.clone());
            tracing::info!(
                "delivery policy applied: dead letters, redelivery, queue prefetch, browse page"
            );
        }
        if let Some((_, strategy)) = diff.shared_strategy {
            // Read per message: the next message routed to a shared group uses it.
            self.core.shared_strategy.store(strategy);
            tracing::info!(%strategy, "shared subscription strategy applied");
        }
        if let Some((_, interval_ms)) = diff.system_topics_ms {
            self.core.set_system_topics_interval(interval_ms);
            tracing::info!(interval_ms, "$SYS topics interval applied (0: off)");
        }
        if !diff.topics_declared.is_empty() {
            // Created as the broker (no admin needed); ones removed from the file stay.
            let topics: Vec<String> = diff
                .topics_declared
                .iter()
                // ActiveMQ name -> MQTT topic (the swap is its own inverse).
                .map(|name| crate::security::destination::swap_chars(name))
                .collect();
            let created = self.core.declare_topics(topics.iter().map(String::as_str));
            tracing::info!(created, "declared destinations applied");
        }
        if diff.limits.contains(&"memoryUsage") {
            let memory = &self.core.memory;
            memory.set_limit_bytes(
                new.limits
                    .memory_limit_bytes
                    .unwrap_or(DEFAULT_MEMORY_LIMIT_BYTES),
            );
            tracing::info!(
                limit_bytes = memory.limit_bytes(),
                used_bytes = memory.used_bytes(),
                "memoryUsage limit applied"
            );
        }
        if diff.limits.contains(&"sendFailIfNoSpace") {
            *self.core.send_fail_after.lock() = new.limits.send_fail_after();
            tracing::info!(
                send_fail_after_ms = new.limits.send_fail_after().map(|d| d.as_millis() as u64),
                "sendFailIfNoSpace applied"
            );
        }
        let restart_only: Vec<_> = diff
            .limits
            .iter()
            .filter(|name| !matches!(**name, "memoryUsage" | "sendFailIfNoSpace"))
            .collect();
        if !restart_only.is_empty() {
            tracing::info!(
                limits = ?restart_only,
                "systemUsage limits changed: storeUsage applies at the next restart (the store \
                 opens with it), tempUsage is not used by ferromq"
            );
        }
        if failures.is_empty() {
            ApplyOutcome::Applied
        } else {
            ApplyOutcome::Partial(failures)
        }
    }
}

impl ApplyConfig for BrokerApply {
    fn apply<'a>(&'a self, new: Config, diff: &'a ConfigDiff) -> ApplyFuture<'a> {
        Box::pin(async move { self.apply_now(&new, diff).await })
    }
}
