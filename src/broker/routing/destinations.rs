//! The destination map: which topics exist, in ActiveMQ's sense.
//!
//! In ActiveMQ a SUBSCRIBE or PUBLISH naming a topic that does not exist yet creates it
//! (`AbstractRegion.lookup` -> `Broker.addDestination`), and with an authorization plugin that
//! creation needs the `admin` ACL of the name (`AuthorizationBroker.checkDestinationAdmin`: the
//! union of the admin ACLs of the entries the name's lookup finds, plus `defaultEntry`; a
//! destination that exists needs none). A refusal is logged as
//! `User X is not authorized to create: topic://a.b`. So `admin` is how an ActiveMQ admin stops
//! clients from inventing topics, and ferromq keeps the same map to honour it:
//!
//! - A topic exists once declared in `<destinations>` (at start and when a reload adds it),
//!   created by a permitted SUBSCRIBE or PUBLISH (a will included), or recovered from the
//!   durability engine at start (created topics are recorded with
//!   [`crate::broker::durability::Change::DestinationCreated`]; also the topics of recovered
//!   retained messages and of recovered sessions' non-wildcard subscriptions, which ActiveMQ's
//!   store would hold too). Nothing removes one: ActiveMQ keeps them (until
//!   `gcInactiveDestinations`, which ferromq does not do), and a `<destinations>` entry removed
//!   by a reload stays.
//! - A wildcard subscription creates nothing (`AbstractRegion.addConsumer` only auto-creates a
//!   destination that is not a pattern), so it needs only `read`.
//! - Without an authorization plugin there is no check (everything may create), but topics
//!   are still recorded, so that a configuration that later adds one (reload or restart) sees
//!   the topics that were in use, as ActiveMQ's store would.
//!
//! Names are kept in MQTT form (`a/b` for ActiveMQ's `a.b`: the transport's character swap is
//! a bijection, see [`crate::security::destination`]), so a PUBLISH's topic is looked up
//! without conversion.
//!
//! # Cost
//!
//! One entry per distinct topic ever used, for the broker's life: the name in one `Arc<str>`
//! (16 bytes of counts + the name, plus the allocator's rounding) and one 16-byte slot of the
//! hash set (about 8/7 slots per entry), so about 40 bytes + the name's length per topic: a
//! million topics of 30 bytes cost about 70 MB, as ActiveMQ's own (much larger) destination
//! objects would. A publish looks its topic up once (a read lock and one hash probe); with an
//! authorization plugin the per-connection [`crate::security::AuthzCache`] remembers "allowed
//! and exists" with the write decision, so a connection publishing again to a topic it used
//! does one probe of its own cache and none of this map.

use std::collections::HashSet;
use std::sync::Arc;

use parking_lot::RwLock;

use crate::security::destination::mqtt_to_activemq;

/// The set of existing topics (see the module documentation).
#[derive(Debug, Default)]
pub struct DestinationMap {
    topics: RwLock<HashSet<Arc<str>>>,
}

impl DestinationMap {
    /// Does the topic (MQTT form) exist?
    pub fn contains(&self, mqtt_topic: &str) -> bool {
        self.topics.read().contains(mqtt_topic)
    }

    /// Add a topic (MQTT form). `Some(name)`: it is new (the name to record); `None`: it
    /// existed.
    pub fn insert(&self, mqtt_topic: &str) -> Option<Arc<str>> {
        let mut topics = self.topics.write();
        if topics.contains(mqtt_topic) {
            return None;
        }
        let name: Arc<str> = Arc::from(mqtt_topic);
        topics.insert(name.clone());
        Some(name)
    }

    /// Add topics known to exist (recovered or declared); returns how many were new.
    pub fn extend<I, S>(&self, mqtt_topics: I) -> usize
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut topics = self.topics.write();
        let before = topics.len();
        for topic in mqtt_topics {
            let topic = topic.as_ref();
            if !topics.contains(topic) {
                topics.insert(Arc::from(topic));
            }
        }
        topics.len() - before
    }

    /// How many topics exist.
    pub fn len(&self) -> usize {
        self.topics.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every topic (MQTT form), sorted: for tests and diagnostics.
    pub fn names(&self) -> Vec<Arc<str>> {
        let mut names: Vec<Arc<str>> = self.topics.read().iter().cloned().collect();
        names.sort();
        names
    }
}

/// An MQTT topic name or filter with a wildcard level (`+`, `#`): a subscription to it
/// creates no destination.
pub fn is_wildcard(mqtt_filter: &str) -> bool {
    mqtt_filter
        .split('/')
        .any(|level| level == "+" || level == "#")
}

/// How ActiveMQ prints a topic in its logs: `topic://a.b` for MQTT `a/b`.
pub fn activemq_topic_url(mqtt_topic: &str) -> String {
    format!("topic://{}", mqtt_to_activemq(mqtt_topic))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_reports_new_names_once() {
        let map = DestinationMap::default();
        assert!(!map.contains("a/b"));
        assert_eq!(map.insert("a/b").as_deref(), Some("a/b"));
        assert_eq!(map.insert("a/b"), None);
        assert!(map.contains("a/b"));
        assert_eq!(map.extend(["a/b", "c", "c"]), 1);
        assert_eq!(map.names(), vec![Arc::from("a/b"), Arc::from("c")]);
        assert_eq!(map.len(), 2);
    }

    #[test]
    fn wildcards_and_log_names() {
        assert!(is_wildcard("a/+"));
        assert!(is_wildcard("#"));
        assert!(!is_wildcard("a/b+"));
        assert!(!is_wildcard("a/b"));
        assert_eq!(activemq_topic_url("a/b.c"), "topic://a.b/c");
    }
}
