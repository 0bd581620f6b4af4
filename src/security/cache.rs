//! Per-connection cache of authorization decisions.

use std::collections::HashMap;
use std::sync::Arc;

use super::{Action, Principal, Security};
use crate::broker::topic_stats::{TopicStats, TopicStatsRegistry};

/// Decisions kept per connection before the cache is emptied and refilled. Bounded so that a
/// client publishing to ever-new topic names cannot grow a connection's memory without limit;
/// emptying (rather than evicting one by one) keeps each lookup to a single hash probe.
pub const DEFAULT_CAPACITY: usize = 256;

/// Decisions for one action, by topic or filter: [`ALLOWED`] and [`EXISTS`] bits.
type DecisionMap = HashMap<Box<str>, u8>;

/// What a connection allocates on first use: its decisions, and the publish counters of the
/// topics it published to (see [`crate::broker::topic_stats`]), in one box so that an idle
/// connection carries one null pointer for both.
#[derive(Debug, Default)]
struct Maps {
    /// The [`Security::generation`] and the principal the decisions were made for. Here rather
    /// than beside the box: an idle connection (parked or not) would carry their 64 bytes.
    filled_for: Option<(u64, Principal)>,
    decisions: [DecisionMap; 3],
    /// `None`: the topic is not tracked (the registry was full), remembered so the registry
    /// is not asked again on every publish.
    topic_stats: HashMap<Box<str>, Option<Arc<TopicStats>>>,
}

/// The action is allowed.
const ALLOWED: u8 = 1;
/// The topic is known to exist in the broker's destination map (destinations are never
/// removed, so this stays true; see `broker::routing::destinations`).
const EXISTS: u8 = 2;

/// What the cache answers for an action on a concrete topic that must exist or be created
/// (see [`AuthzCache::lookup_use`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UseDecision {
    Denied,
    /// Allowed, and the topic is known to exist: nothing more to check.
    AllowedExisting,
    /// Allowed; whether the topic exists (or may be created) is for the caller to find out,
    /// who then calls [`AuthzCache::mark_existing`].
    AllowedUnknown,
}

/// Per-connection cache of authorization decisions, valid for one [`Security`] snapshot.
///
/// Keyed by (action, MQTT topic or filter). A cache remembers the [`Security::generation`] and
/// the principal it was filled for: handing it a different snapshot (after a reload) or a
/// different principal empties it first, so a stale decision is never returned.
#[derive(Debug)]
pub struct AuthzCache {
    /// Indexed by action (read, write, admin); keyed by topic so lookups borrow `&str`.
    /// Allocated on the first decision: a connection that never publishes or receives (and
    /// every connection of a broker without authorization) carries no maps (idle memory).
    decisions: Option<Box<Maps>>,
    capacity: usize,
    misses: u64,
}

impl Default for AuthzCache {
    fn default() -> Self {
        AuthzCache::with_capacity(DEFAULT_CAPACITY)
    }
}

impl AuthzCache {
    /// A cache that holds at most `capacity` decisions per action (at least 1).
    pub fn with_capacity(capacity: usize) -> AuthzCache {
        AuthzCache {
            decisions: None,
            capacity: capacity.max(1),
            misses: 0,
        }
    }

    pub fn allowed(
        &mut self,
        security: &Security,
        principal: &Principal,
        action: Action,
        mqtt_topic: &str,
    ) -> bool {
        if !security.authorization_enabled() {
            return true;
        }
        self.flags(security, principal, action, mqtt_topic) & ALLOWED != 0
    }

    /// [`AuthzCache::allowed`] for a concrete topic that must exist, with what the cache knows
    /// of its existence: one hash probe when both are known. Without authorization:
    /// `AllowedUnknown` (the caller still records the topic).
    pub fn lookup_use(
        &mut self,
        security: &Security,
        principal: &Principal,
        action: Action,
        mqtt_topic: &str,
    ) -> UseDecision {
        if !security.authorization_enabled() {
            return UseDecision::AllowedUnknown;
        }
        let flags = self.flags(security, principal, action, mqtt_topic);
        if flags & ALLOWED == 0 {
            UseDecision::Denied
        } else if flags & EXISTS != 0 {
            UseDecision::AllowedExisting
        } else {
            UseDecision::AllowedUnknown
        }
    }

    /// Remember that `mqtt_topic` exists, next to the `action` decision [`Self::lookup_use`]
    /// just made for it (nothing when that decision is not held).
    pub fn mark_existing(&mut self, action: Action, mqtt_topic: &str) {
        if let Some(flags) = self
            .decisions
            .as_mut()
            .and_then(|maps| maps.decisions[action_slot(action)].get_mut(mqtt_topic))
        {
            *flags |= EXISTS;
        }
    }

    /// The cached flags of a decision, computed on a miss.
    fn flags(
        &mut self,
        security: &Security,
        principal: &Principal,
        action: Action,
        mqtt_topic: &str,
    ) -> u8 {
        let maps = self.decisions.get_or_insert_with(Default::default);
        let generation = security.generation();
        if !maps
            .filled_for
            .as_ref()
            .is_some_and(|(filled, p)| *filled == generation && same_principal(p, principal))
        {
            maps.decisions.iter_mut().for_each(HashMap::clear);
            maps.filled_for = Some((generation, principal.clone()));
        }
        let map = &mut maps.decisions[action_slot(action)];
        if let Some(&flags) = map.get(mqtt_topic) {
            return flags;
        }
        self.misses += 1;
        let flags = if security.authorize(principal, action, mqtt_topic) {
            ALLOWED
        } else {
            0
        };
        if map.len() >= self.capacity {
            map.clear();
        }
        map.insert(Box::from(mqtt_topic), flags);
        flags
    }

    /// Decisions computed (not answered from the cache) so far.
    pub fn misses(&self) -> u64 {
        self.misses
    }

    /// Decisions currently held.
    pub fn len(&self) -> usize {
        self.decisions
            .iter()
            .flat_map(|maps| maps.decisions.iter())
            .map(HashMap::len)
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Count a publish of `bytes` payload bytes to `mqtt_topic` in `registry`: the registry is
    /// asked on this connection's first publish to the topic, later ones cost one probe of
    /// this cache and two relaxed adds. Nothing (one branch) when the registry is disabled.
    /// Kept for the connection's life, bounded like the decisions (emptied when full).
    #[inline]
    pub fn count_publish(&mut self, registry: &TopicStatsRegistry, mqtt_topic: &str, bytes: usize) {
        if !registry.enabled() {
            return;
        }
        let map = &mut self
            .decisions
            .get_or_insert_with(Default::default)
            .topic_stats;
        if let Some(stats) = map.get(mqtt_topic) {
            if let Some(stats) = stats {
                stats.record(bytes);
            }
            return;
        }
        let stats = registry.lookup(mqtt_topic);
        if let Some(stats) = &stats {
            stats.record(bytes);
        }
        if map.len() >= self.capacity {
            map.clear();
        }
        map.insert(Box::from(mqtt_topic), stats);
    }
}

fn action_slot(action: Action) -> usize {
    match action {
        Action::Read => 0,
        Action::Write => 1,
        Action::Admin => 2,
    }
}

/// Equal principals; a pointer comparison first, since a connection passes the same one each time.
fn same_principal(a: &Principal, b: &Principal) -> bool {
    let shared = Arc::ptr_eq(&a.user, &b.user)
        && a.anonymous == b.anonymous
        && a.groups.len() == b.groups.len()
        && a.groups
            .iter()
            .zip(&b.groups)
            .all(|(x, y)| Arc::ptr_eq(x, y));
    shared || a == b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AuthorizationConfig, AuthzEntry, DestinationKind, PrincipalKind};

    fn security() -> Security {
        let entry = AuthzEntry {
            kind: DestinationKind::Topic,
            patterns: vec![">".into()],
            read: vec!["*".into()],
            write: vec!["*".into()],
            admin: Vec::new(),
            principal_kind: PrincipalKind::Group,
            span: crate::config::diagnostic::Span::new(Default::default(), 1, 1),
        };
        let authorization = AuthorizationConfig {
            entries: vec![entry],
            default_entry: None,
            temp_entry: None,
            ldap: None,
        };
        Security::from_parts(&Default::default(), Some(&authorization)).expect("security")
    }

    #[test]
    fn existence_is_remembered_with_the_decision_until_the_snapshot_changes() {
        let security = security();
        let principal = Principal::anonymous();
        let mut cache = AuthzCache::default();
        let use_ab = |cache: &mut AuthzCache, security: &Security| {
            cache.lookup_use(security, &principal, Action::Write, "a/b")
        };
        assert_eq!(use_ab(&mut cache, &security), UseDecision::AllowedUnknown);
        cache.mark_existing(Action::Write, "a/b");
        assert_eq!(use_ab(&mut cache, &security), UseDecision::AllowedExisting);
        assert_eq!(cache.misses(), 1, "answered from the cache");
        // Read is another decision; admin is not granted.
        assert_eq!(
            cache.lookup_use(&security, &principal, Action::Read, "a/b"),
            UseDecision::AllowedUnknown
        );
        assert!(!cache.allowed(&security, &principal, Action::Admin, "a/b"));
        // A reloaded snapshot starts over.
        let reloaded = self::security();
        assert_eq!(use_ab(&mut cache, &reloaded), UseDecision::AllowedUnknown);
        assert_eq!(
            AuthzCache::default().lookup_use(&Security::default(), &principal, Action::Write, "x"),
            UseDecision::AllowedUnknown,
            "without authorization the caller only records the topic"
        );
    }

    #[test]
    fn another_principal_starts_over_and_topic_counts_do_not_fill_decisions() {
        use crate::broker::topic_stats::TopicStatsRegistry;
        let security = security();
        let anonymous = Principal::anonymous();
        let alice = Principal {
            user: Arc::from("alice"),
            groups: vec![Arc::from("users")],
            anonymous: false,
        };
        let mut cache = AuthzCache::default();
        // Counters first: the box exists, the decisions are still for no one.
        cache.count_publish(&TopicStatsRegistry::new(true, 4), "a/b", 1);
        assert!(cache.is_empty());
        assert!(cache.allowed(&security, &anonymous, Action::Write, "a/b"));
        assert!(cache.allowed(&security, &anonymous, Action::Write, "a/b"));
        assert_eq!(cache.misses(), 1);
        // Another principal: decided again, then from the cache.
        assert!(cache.allowed(&security, &alice, Action::Write, "a/b"));
        assert!(cache.allowed(&security, &alice.clone(), Action::Write, "a/b"));
        assert_eq!(cache.misses(), 2);
        assert_eq!(cache.len(), 1, "the anonymous decision was dropped");
        assert!(cache.allowed(&security, &anonymous, Action::Write, "a/b"));
        assert_eq!(cache.misses(), 3);
        // The anonymous principal is one shared user name.
        assert!(Arc::ptr_eq(&anonymous.user, &Principal::anonymous().user));
    }

    #[test]
    fn publish_counts_go_through_the_connection_cache() {
        use crate::broker::topic_stats::TopicStatsRegistry;
        let registry = TopicStatsRegistry::new(true, 1);
        let mut cache = AuthzCache::default();
        assert!(cache.is_empty(), "nothing allocated before use");
        cache.count_publish(&registry, "a/b", 2);
        cache.count_publish(&registry, "a/b", 3);
        // Past the registry's bound: remembered as untracked, counted nowhere.
        cache.count_publish(&registry, "c", 1);
        cache.count_publish(&registry, "c", 1);
        assert_eq!(registry.snapshot(), vec![("a/b".to_string(), 2, 5)]);
        assert!(registry.truncated());
        let off = TopicStatsRegistry::new(false, 10);
        let mut idle = AuthzCache::default();
        idle.count_publish(&off, "a/b", 2);
        assert!(
            idle.decisions.is_none(),
            "a disabled registry allocates nothing"
        );
    }
}
