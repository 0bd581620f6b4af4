//! ActiveMQ's virtual destinations (`<destinationInterceptors><virtualDestinationInterceptor>`)
//! as the broker serves them: virtual topics and composite topics that copy a message published
//! to a topic onto queues.
//!
//! ActiveMQ 5.17's rules kept here:
//! - Without `<destinationInterceptors>`, `BrokerService` installs one virtual topic,
//!   `name="VirtualTopic.>" prefix="Consumer.*."`, unless `<broker useVirtualTopics="false">`.
//!   A written `<destinationInterceptors>` replaces that default whatever it holds (one without
//!   a `<virtualTopic>` turns virtual topics off).
//! - `<virtualTopic>` defaults: `name=">"` (every topic), `prefix="Consumer.*."`, `postfix=""`.
//!   A message sent to topic `T` that `name` matches is also sent to every existing queue
//!   matching `prefix + T + postfix` (`*` one level), before the topic's own subscribers get it
//!   (`VirtualTopicInterceptor.send`); a queue copy that cannot be kept fails the send.
//! - `<compositeTopic name="T" forwardOnly="true">` (`forwardOnly` defaults to true): a message
//!   sent to `T` goes to each `forwardTo` destination, and to `T`'s own subscribers only when
//!   `forwardOnly="false"`. `<compositeQueue name="Q">` likewise for what is sent to queue `Q`
//!   (`Q` itself keeps a copy only when `forwardOnly="false"`).

use serde::Serialize;

/// The virtual destinations in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VirtualDestinations {
    /// Virtual topics, in file order (ActiveMQ's default one when none is written).
    pub topics: Vec<VirtualTopic>,
    /// Composite topics (`<compositeTopic>`), in file order.
    pub composite_topics: Vec<Composite>,
    /// Composite queues (`<compositeQueue>`), in file order.
    pub composite_queues: Vec<Composite>,
    /// The configuration wrote `<destinationInterceptors>` (false: ActiveMQ's default applies,
    /// or `useVirtualTopics="false"` turned it off).
    pub explicit: bool,
}

impl Default for VirtualDestinations {
    /// ActiveMQ's default interceptor: `VirtualTopic.>` with prefix `Consumer.*.`.
    fn default() -> Self {
        VirtualDestinations {
            topics: vec![VirtualTopic {
                name: "VirtualTopic.>".to_owned(),
                prefix: "Consumer.*.".to_owned(),
                postfix: String::new(),
                selector_aware: false,
            }],
            composite_topics: Vec::new(),
            composite_queues: Vec::new(),
            explicit: false,
        }
    }
}

impl VirtualDestinations {
    /// None at all (`useVirtualTopics="false"`, or an interceptor list without any).
    pub fn none(explicit: bool) -> Self {
        VirtualDestinations {
            topics: Vec::new(),
            composite_topics: Vec::new(),
            composite_queues: Vec::new(),
            explicit,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.topics.is_empty()
            && self.composite_topics.is_empty()
            && self.composite_queues.is_empty()
    }

    /// One line per virtual destination, for `check`.
    pub fn lines(&self) -> Vec<String> {
        let mut lines: Vec<String> = self
            .topics
            .iter()
            .map(|t| {
                format!(
                    "virtual topic {}: copies to existing queues {}<topic>{}{}{}",
                    t.name,
                    t.prefix,
                    t.postfix,
                    if t.selector_aware {
                        " that have a consumer whose selector accepts the message"
                    } else {
                        ""
                    },
                    if self.explicit {
                        ""
                    } else {
                        " (ActiveMQ's default)"
                    }
                )
            })
            .collect();
        for c in &self.composite_topics {
            let mut to: Vec<String> = Vec::new();
            if !c.forward_to_queues.is_empty() {
                to.push(format!("queues {}", c.forward_to_queues.join(", ")));
            }
            if !c.forward_to_topics.is_empty() {
                to.push(format!("topics {}", c.forward_to_topics.join(", ")));
            }
            lines.push(format!(
                "composite topic {}: forwards to {}{}",
                c.name,
                to.join(" and "),
                if c.forward_only {
                    " only"
                } else {
                    " and to its own subscribers"
                }
            ));
        }
        for c in &self.composite_queues {
            lines.push(format!(
                "composite queue {}: forwards to queues {}{}",
                c.name,
                c.forward_to_queues.join(", "),
                if c.forward_only {
                    " only"
                } else {
                    " and keeps its own copy"
                }
            ));
        }
        lines
    }
}

/// One `<virtualTopic>`: ActiveMQ names (`.` between levels).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VirtualTopic {
    /// The topics it applies to (a pattern: `VirtualTopic.>`).
    pub name: String,
    /// Whole levels ending with `.` (or empty); `*` is one level.
    pub prefix: String,
    /// Whole levels starting with `.` (or empty); `*` is one level.
    pub postfix: String,
    /// `selectorAware` (default false): a queue gets a copy only when one of its consumers
    /// (their selectors) accepts the message; a queue without consumers gets none.
    pub selector_aware: bool,
}

impl VirtualTopic {
    /// The topic (ActiveMQ name) whose messages this virtual topic copies onto queue `queue`,
    /// or `None` when the queue is not one of its consumer queues. `Consumer.a.VirtualTopic.x`
    /// -> `VirtualTopic.x` for the default.
    pub fn topic_of_queue(&self, queue: &str) -> Option<String> {
        let levels: Vec<&str> = queue.split('.').collect();
        let prefix = pattern_levels(self.prefix.strip_suffix('.').unwrap_or(&self.prefix));
        let postfix = pattern_levels(self.postfix.strip_prefix('.').unwrap_or(&self.postfix));
        if levels.len() <= prefix.len() + postfix.len() {
            return None;
        }
        let (head, rest) = levels.split_at(prefix.len());
        let (middle, tail) = rest.split_at(rest.len() - postfix.len());
        let fits = |pattern: &[&str], names: &[&str]| {
            pattern.iter().zip(names).all(|(p, n)| *p == "*" || p == n)
        };
        if !fits(&prefix, head) || !fits(&postfix, tail) {
            return None;
        }
        let topic = middle.join(".");
        // A wildcard level is no topic anyone publishes to. An empty level is one (MQTT
        // `a//b`, `a/`), and ActiveMQ copies it like any other.
        if middle.iter().any(|l| *l == "*" || *l == ">") {
            return None;
        }
        let name = crate::security::destination::CompiledPattern::from_activemq(&self.name);
        name.matches_mqtt(&crate::security::destination::swap_chars(&topic))
            .then_some(topic)
    }
}

fn pattern_levels(part: &str) -> Vec<&str> {
    if part.is_empty() {
        Vec::new()
    } else {
        part.split('.').collect()
    }
}

/// One `<compositeTopic>` or `<compositeQueue>` whose `forwardTo` lists queues.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Composite {
    /// The topic or queue (ActiveMQ name, no wildcard).
    pub name: String,
    /// `forwardOnly` (default true): the topic's own subscribers (the queue itself) do not
    /// get the message.
    pub forward_only: bool,
    /// The queues it forwards to (ActiveMQ names), each once.
    pub forward_to_queues: Vec<String>,
    /// The topics it forwards to (ActiveMQ names), each once: a composite topic's only.
    pub forward_to_topics: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vt(name: &str, prefix: &str, postfix: &str) -> VirtualTopic {
        VirtualTopic {
            name: name.into(),
            prefix: prefix.into(),
            postfix: postfix.into(),
            selector_aware: false,
        }
    }

    #[test]
    fn the_default_maps_consumer_queues_to_their_topic() {
        let d = &VirtualDestinations::default().topics[0];
        assert_eq!(
            d.topic_of_queue("Consumer.a.VirtualTopic.orders")
                .as_deref(),
            Some("VirtualTopic.orders")
        );
        assert_eq!(
            d.topic_of_queue("Consumer.b.VirtualTopic.x.y").as_deref(),
            Some("VirtualTopic.x.y")
        );
        // `*` is one level; the topic must match `VirtualTopic.>`.
        assert_eq!(d.topic_of_queue("Consumer.a.b.VirtualTopic.orders"), None);
        assert_eq!(d.topic_of_queue("Consumer.a.orders"), None);
        assert_eq!(d.topic_of_queue("Consumer.a"), None);
        assert_eq!(d.topic_of_queue("orders"), None);
        assert_eq!(d.topic_of_queue("Other.a.VirtualTopic.orders"), None);
        // Empty levels are levels (MQTT `VirtualTopic/e//x`, `VirtualTopic/x/`, `VirtualTopic//`).
        for topic in [
            "VirtualTopic.e..x",
            "VirtualTopic.x.",
            "VirtualTopic..",
            "VirtualTopic.",
        ] {
            assert_eq!(
                d.topic_of_queue(&format!("Consumer.e.{topic}")).as_deref(),
                Some(topic),
                "{topic}"
            );
        }
        assert_eq!(d.topic_of_queue("Consumer.e.VirtualTopic.*"), None);
    }

    #[test]
    fn name_prefix_and_postfix_apply() {
        let all = vt(">", "Consumer.*.", "");
        assert_eq!(all.topic_of_queue("Consumer.a.x").as_deref(), Some("x"));
        let fixed = vt("VT.>", "q.private.", ".in");
        assert_eq!(
            fixed.topic_of_queue("q.private.VT.a.in").as_deref(),
            Some("VT.a")
        );
        assert_eq!(fixed.topic_of_queue("q.private.VT.a"), None);
        assert_eq!(fixed.topic_of_queue("q.other.VT.a.in"), None);
        let bare = vt(">", "", ".copy");
        assert_eq!(bare.topic_of_queue("a.b.copy").as_deref(), Some("a.b"));
    }
}
