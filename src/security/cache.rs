//! Per-connection cache of authorization decisions.

use std::collections::HashMap;
use std::sync::Arc;

use super::{Action, Principal, Security};

/// Decisions kept per connection before the cache is emptied and refilled. Bounded so that a
/// client publishing to ever-new topic names cannot grow a connection's memory without limit;
/// emptying (rather than evicting one by one) keeps each lookup to a single hash probe.
pub const DEFAULT_CAPACITY: usize = 256;

/// Decisions for one action, by topic or filter.
type DecisionMap = HashMap<Box<str>, bool>;

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
        if let Some(&decision) = map.get(mqtt_topic) {
            return decision;
        }
        self.misses += 1;
        let decision = security.authorize(principal, action, mqtt_topic);
        if map.len() >= self.capacity {
            map.clear();
        }
        map.insert(Box::from(mqtt_topic), decision);
        decision
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
