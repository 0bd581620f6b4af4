//! The admin rule of ActiveMQ's `AuthorizationBroker` for topics: using a topic that does not
//! exist creates it, which needs `admin` on it (see [`crate::broker::routing::destinations`]).

use crate::broker::durability::Change;
use crate::broker::routing::destinations::activemq_topic_url;
use crate::security::cache::UseDecision;
use crate::security::{Action, AuthzCache, Principal, Security};

use super::BrokerCore;

/// Why a concrete topic may not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicRefusal {
    /// The action itself (read, write) is not granted.
    NotAuthorized,
    /// The topic does not exist and the principal may not create it (no `admin`).
    NotCreated,
}

impl BrokerCore {
    /// May `principal` do `action` (read for a SUBSCRIBE, write for a PUBLISH) on the concrete
    /// topic `mqtt_topic`? It must be granted the action and the topic must exist or be created
    /// now (which needs `admin` when authorization is configured); a topic created here is
    /// recorded with the durability engine. Decisions go through the connection's `cache`: a
    /// topic it used before costs one probe of that cache.
    pub fn use_topic(
        &self,
        cache: &mut AuthzCache,
        security: &Security,
        principal: &Principal,
        action: Action,
        mqtt_topic: &str,
    ) -> Result<(), TopicRefusal> {
        match cache.lookup_use(security, principal, action, mqtt_topic) {
            UseDecision::Denied => Err(TopicRefusal::NotAuthorized),
            UseDecision::AllowedExisting => Ok(()),
            // Without authorization nobody needs admin, so the map is not kept: a publish to a
            // new topic costs nothing more and memory does not grow with distinct topics.
            UseDecision::AllowedUnknown if !security.authorization_enabled() => Ok(()),
            UseDecision::AllowedUnknown => {
                // The broker's `$SYS` tree exists by definition: reading it creates nothing.
                if !self.destinations.contains(mqtt_topic)
                    && !crate::broker::system::is_system_topic(mqtt_topic)
                {
                    if !cache.allowed(security, principal, Action::Admin, mqtt_topic) {
                        not_created(principal, mqtt_topic);
                        return Err(TopicRefusal::NotCreated);
                    }
                    self.record_topic(mqtt_topic);
                }
                cache.mark_existing(action, mqtt_topic);
                Ok(())
            }
        }
    }

    /// [`BrokerCore::use_topic`] without a cache, for the write of a will the broker publishes
    /// on its own (after a delay or a crash).
    pub fn may_publish_will(
        &self,
        security: &Security,
        principal: &Principal,
        mqtt_topic: &str,
    ) -> bool {
        if crate::broker::system::is_system_topic(mqtt_topic)
            || !security.authorize(principal, Action::Write, mqtt_topic)
        {
            return false;
        }
        if !security.authorization_enabled() {
            return true;
        }
        if !self.destinations.contains(mqtt_topic)
            && !security.authorize(principal, Action::Admin, mqtt_topic)
        {
            not_created(principal, mqtt_topic);
            return false;
        }
        self.record_topic(mqtt_topic);
        true
    }

    /// Add a topic to the destination map, recording it with the durability engine when new.
    fn record_topic(&self, mqtt_topic: &str) {
        if self.destinations.contains(mqtt_topic) {
            return;
        }
        if let Some(topic) = self.destinations.insert(mqtt_topic) {
            tracing::debug!(destination = %activemq_topic_url(&topic), "destination created");
            self.commit_background(vec![Change::DestinationCreated { topic }]);
        }
    }

    /// Declare topics (MQTT form) that exist by configuration (`<destinations>`), recording
    /// the new ones. Returns how many were new.
    pub fn declare_topics<'a>(&self, mqtt_topics: impl IntoIterator<Item = &'a str>) -> usize {
        let mut created = 0;
        for topic in mqtt_topics {
            if let Some(topic) = self.destinations.insert(topic) {
                created += 1;
                self.commit_background(vec![Change::DestinationCreated { topic }]);
            }
        }
        created
    }
}

/// ActiveMQ's log line for the refusal (`AuthorizationBroker.addDestination`).
fn not_created(principal: &Principal, mqtt_topic: &str) {
    tracing::info!(
        user = %principal.user,
        topic = %mqtt_topic,
        "User {} is not authorized to create: {}",
        principal.user,
        activemq_topic_url(mqtt_topic)
    );
}
