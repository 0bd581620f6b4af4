//! Topic aliases the broker gives the topics it sends to an MQTT 5 client that allows them
//! (CONNECT Topic Alias Maximum N > 0; MQTT 5 3.3.2.3.4).
//!
//! Policy: the first `min(N, OUTBOUND_ALIASES_MAX)` distinct topics delivered on the connection
//! get aliases 1, 2, ... in the order they are first sent, and keep them for the life of the
//! connection; later topics are sent in full without an alias. The first PUBLISH of an aliased
//! topic carries the topic and the alias, every later one an empty topic and the alias.
//! Chosen over replacing the least recently used alias because the decision is one map lookup
//! per delivery with no bookkeeping, and because replacement costs as much as it saves once a
//! client's topics outnumber its aliases (each re-assignment re-sends the topic, plus 3 bytes
//! for the alias): the usual subscriber, a handful of steady topics, gets all of them aliased.
//! Aliases never outlive the connection (3.3.2-7): a new connection starts an empty map, and
//! in-flight messages re-sent on resume go out with their full topic.
//!
//! Idle memory: a connection holds the client's maximum and one pointer; the map is allocated
//! with the first delivery to a client that allows aliases.

use std::collections::HashMap;
use std::sync::Arc;

/// At most this many aliases per connection, whatever the client allows: each costs a map
/// entry for the life of the connection.
pub const OUTBOUND_ALIASES_MAX: u16 = 64;

/// How one PUBLISH uses an alias.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct AliasUse {
    pub alias: u16,
    /// The first PUBLISH with this alias: it carries the topic too (it sets the alias).
    pub sets_topic: bool,
}

/// The aliases of one connection (see the module documentation).
#[derive(Debug, Default)]
pub(super) struct OutboundAliases {
    /// How many aliases we may use: `min(client's Topic Alias Maximum, OUTBOUND_ALIASES_MAX)`;
    /// 0 = none.
    limit: u16,
    /// Topic -> alias, allocated with the first aliased delivery. Boxed: an empty `HashMap`
    /// is 48 bytes in every connection, the box one pointer (idle memory).
    #[allow(clippy::box_collection)]
    assigned: Option<Box<HashMap<Arc<str>, u16>>>,
}

impl OutboundAliases {
    /// For a client that allows `client_maximum` aliases (0 or absent: none).
    pub(super) fn new(client_maximum: Option<u16>) -> Self {
        OutboundAliases {
            limit: client_maximum.unwrap_or(0).min(OUTBOUND_ALIASES_MAX),
            assigned: None,
        }
    }

    /// How a PUBLISH of `topic` would use an alias now (nothing changes: call [`Self::record`]
    /// once it is sent). `None`: the topic is sent in full, without an alias.
    pub(super) fn lookup(&self, topic: &Arc<str>) -> Option<AliasUse> {
        if self.limit == 0 {
            return None;
        }
        let assigned = self.assigned.as_deref();
        if let Some(&alias) = assigned.and_then(|m| m.get(topic)) {
            return Some(AliasUse {
                alias,
                sets_topic: false,
            });
        }
        let used = assigned.map_or(0, HashMap::len);
        let next = u16::try_from(used + 1).ok()?;
        (next <= self.limit).then_some(AliasUse {
            alias: next,
            sets_topic: true,
        })
    }

    /// A PUBLISH of `topic` used `alias` (as [`Self::lookup`] said).
    pub(super) fn record(&mut self, topic: &Arc<str>, alias: AliasUse) {
        if alias.sets_topic {
            self.assigned
                .get_or_insert_with(Box::default)
                .insert(topic.clone(), alias.alias);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send(aliases: &mut OutboundAliases, topic: &Arc<str>) -> Option<AliasUse> {
        let alias = aliases.lookup(topic)?;
        aliases.record(topic, alias);
        Some(alias)
    }

    #[test]
    fn first_topics_get_aliases_and_keep_them() {
        let (a, b, c): (Arc<str>, Arc<str>, Arc<str>) = ("a".into(), "b".into(), "c".into());
        let mut aliases = OutboundAliases::new(Some(2));
        let first = |alias| {
            Some(AliasUse {
                alias,
                sets_topic: true,
            })
        };
        let again = |alias| {
            Some(AliasUse {
                alias,
                sets_topic: false,
            })
        };
        assert_eq!(send(&mut aliases, &a), first(1));
        assert_eq!(send(&mut aliases, &a), again(1));
        assert_eq!(send(&mut aliases, &b), first(2));
        assert_eq!(send(&mut aliases, &c), None, "no alias left: sent in full");
        assert_eq!(send(&mut aliases, &b), again(2));
        assert_eq!(send(&mut aliases, &a), again(1));
    }

    #[test]
    fn no_aliases_unless_the_client_allows_them() {
        let topic: Arc<str> = "t".into();
        let mut none = OutboundAliases::new(None);
        assert_eq!(send(&mut none, &topic), None);
        assert!(none.assigned.is_none(), "nothing allocated");
        assert_eq!(OutboundAliases::new(Some(0)).lookup(&topic), None);
        assert_eq!(
            OutboundAliases::new(Some(u16::MAX)).limit,
            OUTBOUND_ALIASES_MAX
        );
    }

    #[test]
    fn a_lookup_alone_assigns_nothing() {
        let topic: Arc<str> = "t".into();
        let aliases = OutboundAliases::new(Some(1));
        assert!(aliases.lookup(&topic).is_some_and(|a| a.sets_topic));
        assert!(aliases.assigned.is_none());
    }
}
