//! What a queue does with a message it cannot deliver: ActiveMQ 5.17's dead-letter strategies
//! (`policyEntry/deadLetterStrategy`) and the broker-side redelivery of `redeliveryPlugin`.
//!
//! ActiveMQ's rules, as kept here:
//! - A poisoned message (a STOMP NACK is a poison ack) and an expired one go to the dead-letter
//!   queue of their queue's strategy: `sharedDeadLetterStrategy` (the default: one queue,
//!   `ActiveMQ.DLQ`), `individualDeadLetterStrategy` (`queuePrefix` + name + `queueSuffix`,
//!   prefix `ActiveMQ.DLQ.Queue.` by default) or `discarding` (dropped).
//! - Only persistent messages are dead-lettered unless `processNonPersistent="true"`; expired
//!   ones only while `processExpired="true"` (the default). The others are dropped (counted).
//! - With a `redeliveryPlugin`, a poisoned message whose queue has a redelivery policy (a
//!   matching entry or the `defaultEntry`) goes back to its queue after the policy's delay
//!   until it was redelivered `maximumRedeliveries` times (-1: forever); then it is
//!   dead-lettered if `sendToDlqIfMaxRetriesExceeded` (default true), else dropped. A queue
//!   without a policy is dead-lettered if `fallbackToDeadLetter` (default true), else dropped.

use std::sync::Arc;
use std::time::Duration;

use crate::security::destination::activemq_selects;

/// ActiveMQ's shared dead-letter queue (`SharedDeadLetterStrategy`).
pub const DEFAULT_DEAD_LETTER_QUEUE: &str = "ActiveMQ.DLQ";
/// `IndividualDeadLetterStrategy.queuePrefix` default.
pub const DEFAULT_INDIVIDUAL_QUEUE_PREFIX: &str = "ActiveMQ.DLQ.Queue.";
/// `queuePrefetch` default (ActiveMQ's `ActiveMQPrefetchPolicy` for queues).
pub const DEFAULT_QUEUE_PREFETCH: usize = 1000;

/// Where a queue's undeliverable messages go (`deadLetterStrategy`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeadLetterTarget {
    /// `sharedDeadLetterStrategy`: one queue for every destination.
    Shared { queue: Arc<str> },
    /// `individualDeadLetterStrategy`: one queue per destination.
    Individual { prefix: Arc<str>, suffix: Arc<str> },
    /// `discardingDeadLetterStrategy`: dropped.
    Discard,
}

/// One `deadLetterStrategy` with its flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterStrategy {
    pub target: DeadLetterTarget,
    /// `processExpired` (default true): expired messages are dead-lettered.
    pub process_expired: bool,
    /// `processNonPersistent` (default false): non-persistent messages are dead-lettered.
    pub process_non_persistent: bool,
}

impl Default for DeadLetterStrategy {
    fn default() -> Self {
        DeadLetterStrategy {
            target: DeadLetterTarget::Shared {
                queue: Arc::from(DEFAULT_DEAD_LETTER_QUEUE),
            },
            process_expired: true,
            process_non_persistent: false,
        }
    }
}

impl DeadLetterStrategy {
    /// The dead-letter queue of `queue` (ActiveMQ name), `None` when discarded.
    pub fn queue_for(&self, queue: &str) -> Option<Arc<str>> {
        match &self.target {
            DeadLetterTarget::Shared { queue } => Some(queue.clone()),
            DeadLetterTarget::Individual { prefix, suffix } => {
                Some(Arc::from(format!("{prefix}{queue}{suffix}")))
            }
            DeadLetterTarget::Discard => None,
        }
    }

    /// Whether a message (`persistent`, `expired`) is dead-lettered rather than dropped
    /// (`AbstractDeadLetterStrategy.isSendToDeadLetterQueue`).
    pub fn takes(&self, persistent: bool, expired: bool) -> bool {
        (persistent || self.process_non_persistent) && (!expired || self.process_expired)
    }
}

/// A `redeliveryPolicy` of the `redeliveryPlugin` (broker-side redelivery).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedeliveryPolicy {
    /// `maximumRedeliveries` (default 6); `None` for -1 (forever).
    pub maximum_redeliveries: Option<u32>,
    /// `initialRedeliveryDelay` (default 1 s): before the first redelivery.
    pub initial_delay: Duration,
    /// `redeliveryDelay` (default 1 s): before the later ones.
    pub delay: Duration,
    /// `useExponentialBackOff` with `backOffMultiplier` (default 5), capped by
    /// `maximumRedeliveryDelay` when set.
    pub backoff_multiplier: Option<u32>,
    pub maximum_delay: Option<Duration>,
}

impl Default for RedeliveryPolicy {
    fn default() -> Self {
        RedeliveryPolicy {
            maximum_redeliveries: Some(6),
            initial_delay: Duration::from_secs(1),
            delay: Duration::from_secs(1),
            backoff_multiplier: None,
            maximum_delay: None,
        }
    }
}

impl RedeliveryPolicy {
    /// The wait before redelivery number `attempt` (1 for the first).
    pub fn delay_before(&self, attempt: u32) -> Duration {
        if attempt <= 1 {
            return self.initial_delay;
        }
        let delay = match self.backoff_multiplier {
            Some(m) => {
                let factor = u64::from(m).saturating_pow(attempt.saturating_sub(2));
                let base = if self.initial_delay.is_zero() {
                    self.delay
                } else {
                    self.initial_delay
                };
                Duration::from_millis(
                    u64::try_from(base.as_millis())
                        .unwrap_or(u64::MAX)
                        .saturating_mul(factor.saturating_mul(u64::from(m))),
                )
            }
            None => self.delay,
        };
        self.maximum_delay.map_or(delay, |max| delay.min(max))
    }
}

/// `<redeliveryPlugin>`: broker-side redelivery of poisoned messages.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RedeliveryPlugin {
    /// `fallbackToDeadLetter` (default true): a queue without a policy dead-letters.
    pub fallback_to_dead_letter: bool,
    /// `sendToDlqIfMaxRetriesExceeded` (default true).
    pub send_to_dlq_if_max_retries_exceeded: bool,
    /// `redeliveryPolicyEntries`: (queue pattern, ActiveMQ wildcards) in file order.
    pub entries: Vec<(String, RedeliveryPolicy)>,
    /// `defaultEntry`.
    pub default_entry: Option<RedeliveryPolicy>,
}

impl RedeliveryPlugin {
    /// The policy for `queue`: the last matching entry (ActiveMQ's `PolicyMap` picks the most
    /// specific; equal patterns: the later), else the default entry.
    pub fn policy_for(&self, queue: &str) -> Option<&RedeliveryPolicy> {
        best_match(self.entries.iter().map(|(p, v)| (p, v)), queue).or(self.default_entry.as_ref())
    }
}

/// Everything about one queue that comes from the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QueuePolicy {
    pub dead_letter: DeadLetterStrategy,
    /// `redeliveryPlugin`'s policy for this queue (`None`: no plugin or no policy).
    pub redelivery: Option<RedeliveryPolicy>,
    /// What happens to a poisoned message without a redelivery policy while a plugin is
    /// configured: `false` when `fallbackToDeadLetter="false"` (dropped).
    pub fallback_to_dead_letter: bool,
    /// `sendToDlqIfMaxRetriesExceeded`.
    pub dead_letter_after_retries: bool,
    /// `queuePrefetch` of the matching `policyEntry` (`None`: the default 1000).
    pub prefetch: Option<usize>,
}

/// The per-queue policies of a configuration: `policyEntry queue=` dead-letter strategies and
/// prefetch, and the `redeliveryPlugin`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QueuePolicies {
    /// (queue pattern, strategy, queuePrefetch) in file order.
    pub entries: Vec<(String, Option<DeadLetterStrategy>, Option<usize>)>,
    pub redelivery: Option<RedeliveryPlugin>,
}

impl QueuePolicies {
    /// The policy of the queue named `queue` (ActiveMQ name).
    pub fn for_queue(&self, queue: &str) -> QueuePolicy {
        let strategies = self
            .entries
            .iter()
            .filter_map(|(p, s, _)| s.as_ref().map(|s| (p, s)));
        let prefetches = self
            .entries
            .iter()
            .filter_map(|(p, _, n)| n.as_ref().map(|n| (p, n)));
        QueuePolicy {
            dead_letter: best_match(strategies, queue).cloned().unwrap_or_default(),
            redelivery: self
                .redelivery
                .as_ref()
                .and_then(|r| r.policy_for(queue).cloned()),
            fallback_to_dead_letter: self
                .redelivery
                .as_ref()
                .is_none_or(|r| r.fallback_to_dead_letter),
            dead_letter_after_retries: self
                .redelivery
                .as_ref()
                .is_none_or(|r| r.send_to_dlq_if_max_retries_exceeded),
            prefetch: best_match(prefetches, queue).copied(),
        }
    }
}

/// The value of the most specific pattern selecting `name`: a pattern without wildcards
/// beats any wildcard one, then the one with more literal levels; ties go to the later.
fn best_match<'a, P, T>(entries: impl Iterator<Item = (P, T)>, name: &str) -> Option<T>
where
    P: AsRef<str> + 'a,
{
    let mut best: Option<(usize, T)> = None;
    for (pattern, value) in entries {
        let pattern = pattern.as_ref();
        if !activemq_selects(name, pattern) {
            continue;
        }
        let levels: Vec<&str> = pattern.split('.').collect();
        let literal = levels.iter().filter(|l| **l != "*" && **l != ">").count();
        let score = if literal == levels.len() {
            usize::MAX
        } else {
            literal
        };
        if best.as_ref().is_none_or(|(s, _)| score >= *s) {
            best = Some((score, value));
        }
    }
    best.map(|(_, value)| value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_individual_and_discarding_targets() {
        let shared = DeadLetterStrategy::default();
        assert_eq!(shared.queue_for("orders").as_deref(), Some("ActiveMQ.DLQ"));
        let individual = DeadLetterStrategy {
            target: DeadLetterTarget::Individual {
                prefix: Arc::from(DEFAULT_INDIVIDUAL_QUEUE_PREFIX),
                suffix: Arc::from(""),
            },
            ..DeadLetterStrategy::default()
        };
        assert_eq!(
            individual.queue_for("orders").as_deref(),
            Some("ActiveMQ.DLQ.Queue.orders")
        );
        let discard = DeadLetterStrategy {
            target: DeadLetterTarget::Discard,
            ..DeadLetterStrategy::default()
        };
        assert_eq!(discard.queue_for("orders"), None);
    }

    #[test]
    fn non_persistent_and_expired_follow_the_flags() {
        let s = DeadLetterStrategy::default();
        assert!(s.takes(true, false));
        assert!(s.takes(true, true));
        assert!(!s.takes(false, false), "processNonPersistent is false");
        let s = DeadLetterStrategy {
            process_expired: false,
            process_non_persistent: true,
            ..s
        };
        assert!(s.takes(false, false));
        assert!(!s.takes(true, true));
    }

    #[test]
    fn most_specific_policy_wins() {
        let strategy = |q: &str| {
            Some(DeadLetterStrategy {
                target: DeadLetterTarget::Shared {
                    queue: Arc::from(q),
                },
                ..DeadLetterStrategy::default()
            })
        };
        let policies = QueuePolicies {
            entries: vec![
                (">".into(), strategy("ALL"), Some(10)),
                ("orders.>".into(), strategy("ORDERS"), None),
                ("orders.eu".into(), strategy("EU"), None),
            ],
            redelivery: None,
        };
        let dlq = |q: &str| policies.for_queue(q).dead_letter.queue_for(q);
        assert_eq!(dlq("orders.eu").as_deref(), Some("EU"));
        assert_eq!(dlq("orders.us").as_deref(), Some("ORDERS"));
        assert_eq!(dlq("other").as_deref(), Some("ALL"));
        assert_eq!(policies.for_queue("orders.eu").prefetch, Some(10));
        assert!(policies.for_queue("x").fallback_to_dead_letter);
    }

    #[test]
    fn redelivery_delays_and_backoff() {
        let policy = RedeliveryPolicy {
            initial_delay: Duration::from_millis(100),
            delay: Duration::from_millis(500),
            ..RedeliveryPolicy::default()
        };
        assert_eq!(policy.delay_before(1), Duration::from_millis(100));
        assert_eq!(policy.delay_before(3), Duration::from_millis(500));
        let backoff = RedeliveryPolicy {
            backoff_multiplier: Some(2),
            maximum_delay: Some(Duration::from_millis(700)),
            ..policy
        };
        assert_eq!(backoff.delay_before(2), Duration::from_millis(200));
        assert_eq!(backoff.delay_before(3), Duration::from_millis(400));
        assert_eq!(backoff.delay_before(4), Duration::from_millis(700));
        assert_eq!(backoff.delay_before(u32::MAX), Duration::from_millis(700));
    }
}
