//! Per-topic publish counters for the console's topic page (messages and bytes in).
//!
//! Kept only when the console is configured. A connection finds a topic's [`TopicStats`] in the
//! registry on its first publish to that topic (one read lock, a write lock when the topic is
//! new) and keeps the `Arc` in its own cache ([`crate::security::AuthzCache::count_publish`]), so
//! later publishes cost one probe of that per-connection map and two relaxed atomic adds: no
//! lock shared between connections on the publish path.
//!
//! Bounded: at most [`TopicStatsRegistry::capacity`] topics are tracked (a fleet of devices
//! with a topic each would otherwise grow memory without limit); a publish to a topic past the
//! bound is not counted and [`TopicStatsRegistry::truncated`] says so. When the registry is full
//! the console drops entries no connection holds and whose topic has no subscriber and no
//! retained message ([`TopicStatsRegistry::sweep`]), making room for newer topics.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

/// Topics tracked before new ones are left uncounted.
pub const DEFAULT_CAPACITY: usize = 10_000;

/// What was published to one topic since it was first tracked.
#[derive(Debug, Default)]
pub struct TopicStats {
    messages_in: AtomicU64,
    bytes_in: AtomicU64,
}

impl TopicStats {
    /// Count one publish of `bytes` payload bytes.
    #[inline]
    pub fn record(&self, bytes: usize) {
        self.messages_in.fetch_add(1, Ordering::Relaxed);
        self.bytes_in.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Messages published so far.
    pub fn messages_in(&self) -> u64 {
        self.messages_in.load(Ordering::Relaxed)
    }

    /// Payload bytes published so far.
    pub fn bytes_in(&self) -> u64 {
        self.bytes_in.load(Ordering::Relaxed)
    }
}

/// The topics tracked, by MQTT topic name.
#[derive(Debug)]
pub struct TopicStatsRegistry {
    enabled: bool,
    capacity: usize,
    topics: RwLock<HashMap<Box<str>, Arc<TopicStats>>>,
    /// A topic was left uncounted because the registry was full.
    truncated: AtomicBool,
}

impl TopicStatsRegistry {
    /// A registry that tracks up to `capacity` topics; a disabled one tracks none and costs a
    /// publish one branch.
    pub fn new(enabled: bool, capacity: usize) -> TopicStatsRegistry {
        TopicStatsRegistry {
            enabled,
            capacity,
            topics: RwLock::new(HashMap::new()),
            truncated: AtomicBool::new(false),
        }
    }

    /// Are topics counted at all (the console is configured)?
    #[inline]
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Topics tracked at most.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The counters of `topic`, created when new; `None` when disabled or full.
    pub fn lookup(&self, topic: &str) -> Option<Arc<TopicStats>> {
        if !self.enabled {
            return None;
        }
        if let Some(stats) = self.topics.read().get(topic) {
            return Some(stats.clone());
        }
        let mut topics = self.topics.write();
        if let Some(stats) = topics.get(topic) {
            return Some(stats.clone());
        }
        if topics.len() >= self.capacity {
            self.truncated.store(true, Ordering::Relaxed);
            return None;
        }
        let stats = Arc::new(TopicStats::default());
        topics.insert(Box::from(topic), stats.clone());
        Some(stats)
    }

    /// Has some topic been left uncounted since the registry was last full?
    pub fn truncated(&self) -> bool {
        self.truncated.load(Ordering::Relaxed)
    }

    /// (topic, messages in, bytes in) of every tracked topic.
    pub fn snapshot(&self) -> Vec<(String, u64, u64)> {
        self.topics
            .read()
            .iter()
            .map(|(topic, s)| (topic.to_string(), s.messages_in(), s.bytes_in()))
            .collect()
    }

    /// When full, drop the entries no connection holds (the registry's `Arc` is the only one)
    /// and for which `keep` (has a subscriber or a retained message) is false. Returns how
    /// many were dropped; clears [`Self::truncated`] when room was made.
    pub fn sweep(&self, keep: impl Fn(&str) -> bool) -> usize {
        if !self.enabled || self.topics.read().len() < self.capacity {
            return 0;
        }
        let mut topics = self.topics.write();
        let before = topics.len();
        topics.retain(|topic, stats| Arc::strong_count(stats) > 1 || keep(topic));
        let dropped = before - topics.len();
        if dropped > 0 {
            self.truncated.store(false, Ordering::Relaxed);
        }
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_shared_and_bounded() {
        let registry = TopicStatsRegistry::new(true, 2);
        let a = registry.lookup("a").expect("tracked");
        a.record(3);
        registry.lookup("a").expect("same entry").record(4);
        assert_eq!((a.messages_in(), a.bytes_in()), (2, 7));
        assert!(registry.lookup("b").is_some());
        assert!(!registry.truncated());
        assert!(registry.lookup("c").is_none(), "past the bound");
        assert!(registry.truncated());
        // "a" is held (by `a`), "b" is not: the sweep drops "b" only, unless kept.
        assert_eq!(registry.sweep(|_| true), 0);
        assert_eq!(registry.sweep(|_| false), 1);
        assert!(!registry.truncated());
        assert!(registry.lookup("c").is_some());
        let names: Vec<String> = registry.snapshot().into_iter().map(|s| s.0).collect();
        assert!(names.contains(&"a".to_string()) && names.contains(&"c".to_string()));
    }

    #[test]
    fn disabled_tracks_nothing() {
        let registry = TopicStatsRegistry::new(false, 10);
        assert!(registry.lookup("a").is_none());
        assert!(registry.snapshot().is_empty());
    }
}
