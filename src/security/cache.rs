//! Per-connection cache of authorization decisions.

use std::collections::HashMap;
use std::sync::Arc;

use super::{Action, Principal, Security};

/// Decisions kept per connection before the cache is emptied and refilled. Bounded so that a
/// client publishing to ever-new topic names cannot grow a connection's memory without limit;
/// emptying (rather than evicting one by one) keeps each lookup to a single hash probe.
pub const DEFAULT_CAPACITY: usize = 256;

/// Decisions for one action, by topic or filter: [`ALLOWED`] and [`EXISTS`] bits.
type DecisionMap = HashMap<Box<str>, u8>;

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
    generation: Option<u64>,
    principal: Option<Principal>,
    /// Indexed by action (read, write, admin); keyed by topic so lookups borrow `&str`.
    /// Allocated on the first decision: a connection that never publishes or receives (and
    /// every connection of a broker without authorization) carries no maps (idle memory).
    decisions: Option<Box<[DecisionMap; 3]>>,
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
            generation: None,
            principal: None,
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
            .and_then(|maps| maps[action_slot(action)].get_mut(mqtt_topic))
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
        if self.generation != Some(security.generation())
            || !self
                .principal
                .as_ref()
                .is_some_and(|p| same_principal(p, principal))
        {
            self.clear();
            self.generation = Some(security.generation());
            self.principal = Some(principal.clone());
        }
        let map = &mut self.decisions.get_or_insert_with(Default::default)[action_slot(action)];
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
            .flat_map(|maps| maps.iter())
            .map(HashMap::len)
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn clear(&mut self) {
        for map in self.decisions.iter_mut().flat_map(|maps| maps.iter_mut()) {
            map.clear();
        }
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
}
