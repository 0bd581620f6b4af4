//! Dead letters, redelivery and queue prefetch: what ActiveMQ 5.17's configuration says about a
//! message that a consumer rejects (STOMP NACK, a poison ack), that expires, or that is
//! dispatched to a queue consumer, with one lookup per question for the queue engine
//! ([`DeliveryPolicy`]).
//!
//! Sources (ActiveMQ 5.17, `activemq-broker` and `activemq-client`):
//! - `policyEntry`'s `deadLetterStrategy`: `sharedDeadLetterStrategy` (default, queue
//!   `ActiveMQ.DLQ`), `individualDeadLetterStrategy` (`queuePrefix` `ActiveMQ.DLQ.Queue.`,
//!   `topicPrefix` `ActiveMQ.DLQ.Topic.`, suffixes none, `useQueueForQueueMessages` and
//!   `useQueueForTopicMessages` true), `discardingDeadLetterStrategy`; each with
//!   `processNonPersistent` false, `processExpired` true, `expiration` 0 (`AbstractDeadLetterStrategy`).
//! - `<redeliveryPlugin>` (`fallbackToDeadLetter` true, `sendToDlqIfMaxRetriesExceeded` true)
//!   with a `redeliveryPolicyMap` of `redeliveryPolicy` entries (`RedeliveryPolicy`:
//!   `maximumRedeliveries` 6, -1 = forever; `initialRedeliveryDelay` 1000 ms; `redeliveryDelay`
//!   1000 ms; `useExponentialBackOff` false; `backOffMultiplier` 5; `maximumRedeliveryDelay` -1 =
//!   none). Without the plugin a rejected message goes straight to its dead-letter destination.
//! - `policyEntry@queuePrefetch` (default 1000, `ActiveMQPrefetchPolicy`).

use std::time::Duration;

use serde::Serialize;

use super::diagnostic::Span;
use super::model::DestinationKind;
use crate::security::destination::activemq_selects;

/// `SharedDeadLetterStrategy`'s default dead-letter queue.
pub const DEFAULT_DEAD_LETTER_QUEUE: &str = "ActiveMQ.DLQ";
/// `IndividualDeadLetterStrategy`'s default `queuePrefix`.
pub const DEFAULT_DLQ_QUEUE_PREFIX: &str = "ActiveMQ.DLQ.Queue.";
/// `IndividualDeadLetterStrategy`'s default `topicPrefix`.
pub const DEFAULT_DLQ_TOPIC_PREFIX: &str = "ActiveMQ.DLQ.Topic.";
/// `ActiveMQPrefetchPolicy.DEFAULT_QUEUE_PREFETCH`: `policyEntry@queuePrefetch`'s default.
pub const DEFAULT_QUEUE_PREFETCH: u32 = 1000;
/// `BaseDestination.MAX_BROWSE_PAGE_SIZE`: `policyEntry@maxBrowsePageSize`'s default, the
/// most messages one queue browse returns.
pub const DEFAULT_MAX_BROWSE_PAGE_SIZE: u32 = 400;
/// `RedeliveryPolicy.DEFAULT_MAXIMUM_REDELIVERIES`.
pub const DEFAULT_MAXIMUM_REDELIVERIES: u32 = 6;

/// A destination by ActiveMQ kind and physical name (`orders.eu`, not `/queue/orders.eu`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Destination {
    pub kind: DestinationKind,
    pub name: String,
}

impl Destination {
    pub fn queue(name: impl Into<String>) -> Destination {
        Destination {
            kind: DestinationKind::Queue,
            name: name.into(),
        }
    }
    pub fn topic(name: impl Into<String>) -> Destination {
        Destination {
            kind: DestinationKind::Topic,
            name: name.into(),
        }
    }
    /// Queues and temporary queues (point-to-point).
    pub fn is_queue_like(&self) -> bool {
        matches!(
            self.kind,
            DestinationKind::Queue | DestinationKind::TempQueue
        )
    }
}

/// The settings every dead-letter strategy has (`AbstractDeadLetterStrategy`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetterRules {
    /// `processNonPersistent` (default false): non-persistent messages are dead-lettered too;
    /// otherwise they are dropped.
    pub process_non_persistent: bool,
    /// `processExpired` (default true): expired messages are dead-lettered; otherwise dropped.
    pub process_expired: bool,
    /// `expiration` (ms, default 0 = never): a dead-lettered message expires this long after it
    /// is moved.
    pub expiration_ms: Option<u64>,
}

impl Default for DeadLetterRules {
    fn default() -> Self {
        DeadLetterRules {
            process_non_persistent: false,
            process_expired: true,
            expiration_ms: None,
        }
    }
}

/// Why a message leaves its destination without being consumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadLetterReason {
    /// Rejected by a consumer (STOMP NACK, a poison ack) past its redeliveries.
    Rejected,
    /// Its expiry time passed before it was consumed.
    Expired,
}

/// `policyEntry`'s `<deadLetterStrategy>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum DeadLetterStrategy {
    /// `sharedDeadLetterStrategy` (the default): every dead letter to one destination.
    Shared {
        /// `<deadLetterQueue><queue physicalName="..."/>` (default `ActiveMQ.DLQ`; a topic is
        /// allowed).
        destination: Destination,
        rules: DeadLetterRules,
    },
    /// `individualDeadLetterStrategy`: a dead-letter destination per original destination,
    /// named prefix + original name + suffix.
    Individual {
        queue_prefix: String,
        queue_suffix: String,
        topic_prefix: String,
        topic_suffix: String,
        /// `useQueueForQueueMessages` (default true): a queue's dead letters go to a queue
        /// (else a topic).
        use_queue_for_queue_messages: bool,
        /// `useQueueForTopicMessages` (default true): a topic's dead letters go to a queue.
        use_queue_for_topic_messages: bool,
        /// `destinationPerDurableSubscriber` (default false): one destination per durable
        /// topic subscriber (`<name>.<clientId>:<subscriptionName>`).
        destination_per_durable_subscriber: bool,
        rules: DeadLetterRules,
    },
    /// `discardingDeadLetterStrategy`: dead letters are dropped.
    Discarding { rules: DeadLetterRules },
}

impl Default for DeadLetterStrategy {
    fn default() -> Self {
        DeadLetterStrategy::Shared {
            destination: Destination::queue(DEFAULT_DEAD_LETTER_QUEUE),
            rules: DeadLetterRules::default(),
        }
    }
}

impl DeadLetterStrategy {
    pub fn rules(&self) -> &DeadLetterRules {
        match self {
            DeadLetterStrategy::Shared { rules, .. }
            | DeadLetterStrategy::Individual { rules, .. }
            | DeadLetterStrategy::Discarding { rules } => rules,
        }
    }

    /// Where a dead letter from `original` goes; `None`: it is dropped (the discarding
    /// strategy, a non-persistent message without `processNonPersistent`, an expired one
    /// without `processExpired`). `durable_subscriber`: `clientId:subscriptionName` of the
    /// durable topic subscriber it was for, if any (only `destinationPerDurableSubscriber`
    /// uses it). A message already in its own dead-letter destination stays dropped rather
    /// than looping.
    pub fn destination_for(
        &self,
        original: &Destination,
        persistent: bool,
        reason: DeadLetterReason,
        durable_subscriber: Option<&str>,
    ) -> Option<Destination> {
        let rules = self.rules();
        if !persistent && !rules.process_non_persistent {
            return None;
        }
        if reason == DeadLetterReason::Expired && !rules.process_expired {
            return None;
        }
        let target = match self {
            DeadLetterStrategy::Discarding { .. } => return None,
            DeadLetterStrategy::Shared { destination, .. } => destination.clone(),
            DeadLetterStrategy::Individual {
                queue_prefix,
                queue_suffix,
                topic_prefix,
                topic_suffix,
                use_queue_for_queue_messages,
                use_queue_for_topic_messages,
                destination_per_durable_subscriber,
                ..
            } => {
                let (prefix, suffix, as_queue) = if original.is_queue_like() {
                    (queue_prefix, queue_suffix, *use_queue_for_queue_messages)
                } else {
                    (topic_prefix, topic_suffix, *use_queue_for_topic_messages)
                };
                let mut name = format!("{prefix}{}", original.name);
                if let (true, Some(subscriber)) =
                    (*destination_per_durable_subscriber, durable_subscriber)
                {
                    name.push('.');
                    name.push_str(subscriber);
                }
                name.push_str(suffix);
                if as_queue {
                    Destination::queue(name)
                } else {
                    Destination::topic(name)
                }
            }
        };
        (target != *original).then_some(target)
    }
}

/// One `<redeliveryPolicy>` (`RedeliveryPolicy`'s broker-side meaning).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RedeliveryPolicy {
    /// `maximumRedeliveries` (default 6); `None`: forever (-1).
    pub maximum_redeliveries: Option<u32>,
    /// `initialRedeliveryDelay` (ms, default 1000): before the first redelivery.
    pub initial_redelivery_delay_ms: u64,
    /// `redeliveryDelay` (ms, default 1000): before later ones, without back-off.
    pub redelivery_delay_ms: u64,
    /// `useExponentialBackOff` (default false).
    pub use_exponential_back_off: bool,
    /// `backOffMultiplier` (default 5; finite, checked by `config::compile`).
    pub back_off_multiplier: f64,
    /// `maximumRedeliveryDelay` (ms); `None`: no cap (-1, the default).
    pub maximum_redelivery_delay_ms: Option<u64>,
}

impl Default for RedeliveryPolicy {
    fn default() -> Self {
        RedeliveryPolicy {
            maximum_redeliveries: Some(DEFAULT_MAXIMUM_REDELIVERIES),
            initial_redelivery_delay_ms: 1000,
            redelivery_delay_ms: 1000,
            use_exponential_back_off: false,
            back_off_multiplier: 5.0,
            maximum_redelivery_delay_ms: None,
        }
    }
}

/// Iterations of the back-off computed at most: past this the delay is kept (it has long
/// reached its cap or saturated).
const MAX_BACK_OFF_STEPS: u32 = 10_000;

impl RedeliveryPolicy {
    /// Whether a message already redelivered `redeliveries` times may be redelivered again.
    pub fn allows(&self, redeliveries: u32) -> bool {
        self.maximum_redeliveries
            .is_none_or(|max| redeliveries < max)
    }

    /// How long to wait before redelivering a message already redelivered `redeliveries`
    /// times: `initialRedeliveryDelay`, then `RedeliveryPolicy.getNextRedeliveryDelay` applied
    /// once per earlier redelivery, as `RedeliveryPlugin` computes it.
    pub fn delay(&self, redeliveries: u32) -> Duration {
        let mut delay = self.initial_redelivery_delay_ms;
        for _ in 0..redeliveries.min(MAX_BACK_OFF_STEPS) {
            delay = self.next_delay(delay);
        }
        Duration::from_millis(delay)
    }

    /// `RedeliveryPolicy.getNextRedeliveryDelay(previous)`.
    fn next_delay(&self, previous: u64) -> u64 {
        let mut next = self.redelivery_delay_ms;
        if previous > 0 && self.use_exponential_back_off && self.back_off_multiplier > 1.0 {
            // `as` saturates a float that does not fit.
            next = (previous as f64 * self.back_off_multiplier) as u64;
            if let Some(cap) = self.maximum_redelivery_delay_ms {
                if next > cap {
                    next = cap.max(self.redelivery_delay_ms);
                }
            }
        }
        next
    }
}

/// A `redeliveryPolicy` with `queue=`/`topic=`/`tempQueue=`/`tempTopic=` (one per pattern).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RedeliveryEntry {
    pub kind: DestinationKind,
    pub pattern: String,
    pub policy: RedeliveryPolicy,
    pub span: Span,
}

/// `<redeliveryPlugin>`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RedeliveryPlugin {
    /// `fallbackToDeadLetter` (default true): a destination without a policy dead-letters
    /// rejected messages (else they are dropped).
    pub fallback_to_dead_letter: bool,
    /// `sendToDlqIfMaxRetriesExceeded` (default true): past `maximumRedeliveries` the message
    /// is dead-lettered (else dropped).
    pub send_to_dlq_if_max_retries_exceeded: bool,
    /// `redeliveryPolicyMap/defaultEntry`: for destinations no entry matches.
    pub default_entry: Option<RedeliveryPolicy>,
    /// `redeliveryPolicyMap/redeliveryPolicyEntries`, in file order.
    pub entries: Vec<RedeliveryEntry>,
    pub span: Span,
}

/// What to do with a message a consumer rejected (STOMP NACK).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// Deliver it again after `after` (the redelivery plugin's policy).
    Redeliver { after: Duration },
    /// Move it to this dead-letter destination.
    DeadLetter { to: Destination },
    /// Drop it.
    Discard,
}

/// The delivery settings of one `policyEntry` (one per destination pattern it names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeliveryEntry {
    pub kind: DestinationKind,
    pub pattern: String,
    /// `<deadLetterStrategy>`; `None`: not set by this entry.
    pub dead_letter_strategy: Option<DeadLetterStrategy>,
    /// `queuePrefetch`; `None`: not set by this entry.
    pub queue_prefetch: Option<u32>,
    /// `maxBrowsePageSize`; `None`: not set by this entry.
    pub max_browse_page_size: Option<u32>,
    /// From `<defaultEntry>` without a destination: it applies to every destination of its
    /// kind that no other entry matches (ActiveMQ's `PolicyMap.getEntryFor`).
    pub fallback: bool,
    pub span: Span,
}

/// The configuration's answers for the queue engine (`Config.delivery`): dead letters,
/// redelivery and queue prefetch, each asked with one function per destination.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DeliveryPolicy {
    /// From `destinationPolicy` (`policyEntries`, then `defaultEntry`), in file order; every
    /// entry, also those that set nothing here (they still decide which entry a destination
    /// takes its settings from).
    pub entries: Vec<DeliveryEntry>,
    /// `<redeliveryPlugin>`.
    pub redelivery: Option<RedeliveryPlugin>,
}

impl DeliveryPolicy {
    /// The policy entry ActiveMQ picks for `destination` (`PolicyMap.getEntryFor`): the best
    /// match, else the default entry. Every setting of the destination comes from it.
    fn entry_for(&self, destination: &Destination) -> Option<&DeliveryEntry> {
        best_match(
            self.entries
                .iter()
                .map(|e| (e.kind, e.pattern.as_str(), e.fallback, e)),
            destination,
        )
    }

    /// The dead-letter strategy of the policy entry that best matches `destination`;
    /// ActiveMQ's default (`ActiveMQ.DLQ`) when there is none or it sets no strategy (as in
    /// ActiveMQ, a wider entry's strategy does not apply then).
    pub fn dead_letter_for(&self, destination: &Destination) -> DeadLetterStrategy {
        self.entry_for(destination)
            .and_then(|e| e.dead_letter_strategy.clone())
            .unwrap_or_default()
    }

    /// The redelivery policy for `destination`: the best-matching `redeliveryPolicy` entry,
    /// else the map's `defaultEntry`. `None` without a `<redeliveryPlugin>` or when neither
    /// applies.
    pub fn redelivery_for(&self, destination: &Destination) -> Option<&RedeliveryPolicy> {
        let plugin = self.redelivery.as_ref()?;
        best_match(
            plugin
                .entries
                .iter()
                .map(|e| (e.kind, e.pattern.as_str(), false, &e.policy)),
            destination,
        )
        .or(plugin.default_entry.as_ref())
    }

    /// `queuePrefetch` of the best-matching policy entry, else 1000 (also when that entry
    /// does not set it): how many unacknowledged messages a queue consumer that names no
    /// prefetch may hold.
    pub fn queue_prefetch_for(&self, queue: &Destination) -> u32 {
        self.entry_for(queue)
            .and_then(|e| e.queue_prefetch)
            .unwrap_or(DEFAULT_QUEUE_PREFETCH)
    }

    /// `maxBrowsePageSize` of the best-matching policy entry, else 400 (also when that entry
    /// does not set it): the most messages one browse of `queue` returns (STOMP
    /// `browser:true`, ActiveMQ's `Queue.doBrowse`).
    pub fn max_browse_page_size_for(&self, queue: &Destination) -> u32 {
        self.entry_for(queue)
            .and_then(|e| e.max_browse_page_size)
            .unwrap_or(DEFAULT_MAX_BROWSE_PAGE_SIZE)
    }

    /// What ActiveMQ 5.17 does with a message of `destination` that a consumer rejected
    /// (STOMP NACK: a poison ack) after it was redelivered `redeliveries` times: with a
    /// `<redeliveryPlugin>` and a policy for the destination, redeliver after the policy's
    /// delay while `maximumRedeliveries` allows, then dead-letter
    /// (`sendToDlqIfMaxRetriesExceeded`) or drop; without a policy, dead-letter
    /// (`fallbackToDeadLetter`) or drop; without the plugin, dead-letter. Dead-lettering
    /// follows [`DeliveryPolicy::dead_letter_for`] (so a non-persistent message is dropped
    /// unless `processNonPersistent`).
    pub fn after_rejection(
        &self,
        destination: &Destination,
        persistent: bool,
        redeliveries: u32,
        durable_subscriber: Option<&str>,
    ) -> Rejection {
        let dead_letter = || match self.dead_letter_for(destination).destination_for(
            destination,
            persistent,
            DeadLetterReason::Rejected,
            durable_subscriber,
        ) {
            Some(to) => Rejection::DeadLetter { to },
            None => Rejection::Discard,
        };
        if self.is_dead_letter_destination(destination) {
            // ActiveMQ never dead-letters out of a dead-letter destination (`isDLQ`).
            return Rejection::Discard;
        }
        let Some(plugin) = &self.redelivery else {
            return dead_letter();
        };
        match self.redelivery_for(destination) {
            Some(policy) if policy.allows(redeliveries) => Rejection::Redeliver {
                after: policy.delay(redeliveries),
            },
            Some(_) if plugin.send_to_dlq_if_max_retries_exceeded => dead_letter(),
            Some(_) => Rejection::Discard,
            None if plugin.fallback_to_dead_letter => dead_letter(),
            None => Rejection::Discard,
        }
    }

    /// Whether `destination` is a dead-letter destination of this configuration: `ActiveMQ.DLQ`,
    /// a shared strategy's destination, or a name an individual strategy makes (its prefix and
    /// suffix around a name). Nothing is dead-lettered out of one.
    pub fn is_dead_letter_destination(&self, destination: &Destination) -> bool {
        let default = DeadLetterStrategy::default();
        let strategies = self
            .entries
            .iter()
            .filter_map(|e| e.dead_letter_strategy.as_ref())
            .chain(std::iter::once(&default));
        let name = destination.name.as_str();
        let framed = |prefix: &str, suffix: &str| {
            !(prefix.is_empty() && suffix.is_empty())
                && name.len() > prefix.len() + suffix.len()
                && name.starts_with(prefix)
                && name.ends_with(suffix)
        };
        strategies.into_iter().any(|strategy| match strategy {
            DeadLetterStrategy::Shared {
                destination: dlq, ..
            } => dlq == destination,
            DeadLetterStrategy::Individual {
                queue_prefix,
                queue_suffix,
                topic_prefix,
                topic_suffix,
                ..
            } => framed(queue_prefix, queue_suffix) || framed(topic_prefix, topic_suffix),
            DeadLetterStrategy::Discarding { .. } => false,
        })
    }

    /// Where an expired message of `destination` goes (`processExpired`); `None`: dropped.
    pub fn after_expiry(&self, destination: &Destination, persistent: bool) -> Option<Destination> {
        if self.is_dead_letter_destination(destination) {
            return None;
        }
        self.dead_letter_for(destination).destination_for(
            destination,
            persistent,
            DeadLetterReason::Expired,
            None,
        )
    }
}

/// The value of the entry that best matches `destination`, approximating ActiveMQ's
/// `DestinationMap.chooseValue` as the pending-limit lookup does (`broker::routing::limits`):
/// same kind; an exact name beats any pattern; among patterns the most literal segments win,
/// and on a tie the later entry. A `fallback` entry (`<defaultEntry>`) counts only when no
/// other entry matches.
fn best_match<'a, T>(
    entries: impl Iterator<Item = (DestinationKind, &'a str, bool, &'a T)>,
    destination: &Destination,
) -> Option<&'a T> {
    let mut best: Option<((bool, usize), &T)> = None;
    for (kind, pattern, fallback, value) in entries {
        if kind != destination.kind || !activemq_selects(&destination.name, pattern) {
            continue;
        }
        let segments: Vec<&str> = pattern.split('.').collect();
        let literal = segments.iter().filter(|s| **s != "*" && **s != ">").count();
        let specificity = if literal == segments.len() {
            usize::MAX
        } else {
            literal
        };
        let score = (!fallback, specificity);
        if best.is_none_or(|(s, _)| score >= s) {
            best = Some((score, value));
        }
    }
    best.map(|(_, value)| value)
}
