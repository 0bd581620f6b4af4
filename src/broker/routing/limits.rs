//! Per-session limits: the in-flight window and the pending-queue limit, the latter taken from
//! the best-matching `<policyEntry topic="...">` (ActiveMQ applies one entry per destination,
//! unlike authorization which unions them).

use crate::config::{DestinationKind, PolicyEntry};

/// Pending messages a session may hold when no policy entry gives a limit.
pub const DEFAULT_PENDING_MESSAGE_LIMIT: usize = 1000;
/// An online session's queue may exceed its (soft) pending limit by this factor for QoS 0
/// messages while their publishers are paused (see [`crate::broker::session::queue`]); past it the oldest QoS 0
/// message is evicted. QoS 1/2 messages are never dropped by a queue limit.
pub const PENDING_HARD_CAP_FACTOR: usize = 16;
/// How long a publisher that overfilled a session waits for it to drain before reading on (a
/// dead subscriber is cut by its keep-alive; it must not stall the publisher forever).
pub const OVERFILL_PAUSE_LIMIT_MS: u64 = 2000;

/// The hard cap of a queue whose soft pending limit is `soft_limit`.
pub fn pending_hard_cap(soft_limit: usize) -> usize {
    soft_limit.max(1).saturating_mul(PENDING_HARD_CAP_FACTOR)
}
/// The broker's Receive Maximum (MQTT 5 3.2.2.3.3): QoS 1/2 publishes a client may have
/// unanswered towards the broker.
pub const DEFAULT_RECEIVE_MAXIMUM: usize = 32;
/// QoS 1/2 messages sent to one MQTT client and not yet acknowledged when the connector sets
/// no `transport.activeMQSubscriptionPrefetch`; the rest wait in the session's queue.
/// ActiveMQ's prefetch for the QoS 1/2 subscription of a persistent session
/// (`ActiveMQPrefetchPolicy.DEFAULT_DURABLE_TOPIC_PREFETCH`). A small window bounds a
/// subscriber's throughput to window / round trip (32 gave 39,000 msg/s per subscriber on
/// loopback here), so it stays well above MQTT client libraries' own limits.
pub const DEFAULT_SUBSCRIPTION_PREFETCH: usize = 100;

/// The topic policy entries, ready for per-publish lookup.
#[derive(Debug, Clone, Default)]
pub struct PendingLimits {
    /// (pattern levels in MQTT spelling, limit), in declaration order.
    entries: Vec<(Vec<String>, Option<usize>)>,
}

impl PendingLimits {
    pub fn from_policies(policies: &[PolicyEntry]) -> Self {
        let entries = policies
            .iter()
            .filter(|p| p.kind == DestinationKind::Topic)
            .map(|p| {
                (
                    p.pattern.split('.').map(activemq_level_to_mqtt).collect(),
                    p.pending_message_limit.map(|l| l as usize),
                )
            })
            .collect();
        PendingLimits { entries }
    }

    /// The pending-queue limit for messages on MQTT `topic`.
    ///
    /// Best match, approximating ActiveMQ's `DestinationMap.chooseValue`: an entry without
    /// wildcards beats any pattern; among patterns the one with the most literal levels wins,
    /// and on a tie the later declaration. An entry that matches but sets no limit gives the
    /// default.
    pub fn limit_for(&self, topic: &str) -> usize {
        if self.entries.is_empty() {
            return DEFAULT_PENDING_MESSAGE_LIMIT;
        }
        let mut best: Option<(usize, Option<usize>)> = None;
        for (pattern, limit) in &self.entries {
            if !pattern_matches(pattern, topic) {
                continue;
            }
            let literal = pattern.iter().filter(|l| *l != "*" && *l != ">").count();
            let score = if literal == pattern.len() {
                usize::MAX
            } else {
                literal
            };
            if best.is_none_or(|(s, _)| score >= s) {
                best = Some((score, *limit));
            }
        }
        best.and_then(|(_, l)| l)
            .unwrap_or(DEFAULT_PENDING_MESSAGE_LIMIT)
            .max(1)
    }
}

/// One level of an ActiveMQ name in MQTT spelling. ActiveMQ's MQTT transport swaps `/` and
/// `.` (lossless), so an ActiveMQ level `a/b` is the MQTT level `a.b`.
fn activemq_level_to_mqtt(level: &str) -> String {
    level.replace('/', ".")
}

/// ActiveMQ wildcards over MQTT topic levels: `*` one level, `>` the rest including no level
/// at all (`A.>` matches `A`). No allocation: this runs for every publish.
fn pattern_matches(pattern: &[String], topic: &str) -> bool {
    let mut levels = topic.split('/');
    for p in pattern {
        if p == ">" {
            return true;
        }
        match levels.next() {
            Some(level) if p == "*" || p == level => {}
            _ => return false,
        }
    }
    levels.next().is_none()
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::Arc;

    use super::*;
    use crate::config::Span;

    fn entry(pattern: &str, limit: Option<u32>) -> PolicyEntry {
        PolicyEntry {
            kind: DestinationKind::Topic,
            pattern: pattern.into(),
            pending_message_limit: limit,
            span: Span::new(Arc::new(PathBuf::from("t.xml")), 1, 1),
        }
    }

    #[test]
    fn best_matching_entry_gives_the_limit() {
        let limits = PendingLimits::from_policies(&[
            entry(">", Some(100)),
            entry("sensors.>", Some(10)),
            entry("sensors.*.temp", Some(5)),
            entry("sensors.a.temp", None),
        ]);
        assert_eq!(limits.limit_for("other"), 100);
        assert_eq!(limits.limit_for("sensors"), 10);
        assert_eq!(limits.limit_for("sensors/b/temp"), 5);
        assert_eq!(
            limits.limit_for("sensors/a/temp"),
            DEFAULT_PENDING_MESSAGE_LIMIT
        );
    }

    #[test]
    fn mqtt_dots_are_not_level_separators() {
        let limits = PendingLimits::from_policies(&[entry("a.b", Some(7))]);
        assert_eq!(limits.limit_for("a/b"), 7);
        assert_eq!(limits.limit_for("a.b"), DEFAULT_PENDING_MESSAGE_LIMIT);
    }

    #[test]
    fn no_policies_means_the_default() {
        assert_eq!(
            PendingLimits::default().limit_for("x"),
            DEFAULT_PENDING_MESSAGE_LIMIT
        );
    }
}
