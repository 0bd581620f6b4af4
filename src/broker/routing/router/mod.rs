//! The subscription tree: which subscribers want a published topic (MQTT 3.1.1 and 5.0, 4.7).
//!
//! Rules applied by [`SubscriptionTree::for_each_match`]:
//! - `+` matches exactly one level, `#` the rest of the topic including the parent level
//!   (`sport/#` matches `sport`); empty levels are real levels (`a//b`, `/a`, `a/`).
//! - A topic whose first level starts with `$` is not matched by a filter whose first level is a
//!   wildcard (`#` and `+/x` do not match `$SYS/x`; `$SYS/#` does).
//! - Shared subscriptions `$share/{group}/{filter}` are stored under `{filter}` with the group
//!   recorded, and are visited separately ([`SubscriptionTree::for_each_shared_match`]), since each
//!   group receives one copy, not each member.
//!
//! Filters are expected to be valid (the codec checks them). An invalid one is still stored without
//! panicking, and then matches nothing: a `#` that is not the last level ends the match there
//! (`a/#/b` matches no topic), and a level mixing a wildcard with other characters (`a+`) is a
//! literal that no valid topic name contains.
//!
//! The read path (`for_each_match`, `matches_dedup`) takes `&self` and does not allocate per level,
//! so the broker can hold the tree behind a `parking_lot::RwLock` with many publishers reading.

mod small_map;
pub(crate) mod trie;

#[cfg(test)]
pub(crate) mod tests;

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;

use smallvec::SmallVec;

use super::shared::GroupCursor;
use small_map::SmallMap;
use trie::{filter_levels, LevelMap, Node, Slot};

/// Everything subscribed on one exact filter.
struct Subscribers<K, V> {
    direct: SmallMap<K, V>,
    shared: Vec<SharedGroup<K, V>>,
}

impl<K, V> Default for Subscribers<K, V> {
    fn default() -> Self {
        Self {
            direct: SmallMap::default(),
            shared: Vec::new(),
        }
    }
}

impl<K, V> Slot for Subscribers<K, V> {
    fn is_empty(&self) -> bool {
        self.direct.is_empty() && self.shared.is_empty()
    }
}

/// The members of one shared subscription `$share/{name}/{filter}`: one of them receives each
/// matching message (MQTT 5.0, 4.8.2).
pub struct SharedGroup<K, V> {
    name: Box<str>,
    /// The subscription as subscribed, `$share/{name}/{filter}`: what a copy routed through
    /// the group is tagged with, to find the group again ([`SubscriptionTree::shared_group`]).
    subscription: Arc<str>,
    members: SmallMap<K, V>,
    /// Where the group's member choice stands (shared, so a publisher can take it out of the
    /// tree's read lock before it looks at the members' sessions).
    cursor: Arc<GroupCursor>,
}

impl<K, V> SharedGroup<K, V> {
    /// The share name (the `{group}` of `$share/{group}/{filter}`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Each member's key and subscription options.
    pub fn members(&self) -> impl Iterator<Item = (&K, &V)> {
        self.members.iter()
    }

    /// `$share/{name}/{filter}`, as subscribed.
    pub fn subscription(&self) -> &Arc<str> {
        &self.subscription
    }

    /// The group's choice state (see [`crate::broker::routing::shared::choose`]).
    pub fn cursor(&self) -> &Arc<GroupCursor> {
        &self.cursor
    }

    /// How many subscribers share this subscription (never 0: empty groups are removed).
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Always false: a group is removed with its last member. Present for API symmetry.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}

/// A filter as subscribed: a plain filter, or the inner filter of a shared subscription.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ParsedFilter<'a> {
    Direct(&'a str),
    Shared { group: &'a str, filter: &'a str },
}

impl<'a> ParsedFilter<'a> {
    /// Reads `$share/{group}/{filter}` (MQTT 5.0, 4.8.2: the group is non-empty and holds no `/`,
    /// `+` or `#`; the filter is non-empty). Anything else, including a malformed `$share/...`, is a
    /// plain filter whose first level is the literal `$share`.
    fn parse(filter: &'a str) -> Self {
        let shared = filter.strip_prefix("$share/").and_then(|rest| {
            let (group, inner) = rest.split_once('/')?;
            let group_ok = !group.is_empty() && !group.contains(['+', '#']);
            (group_ok && !inner.is_empty()).then_some(ParsedFilter::Shared {
                group,
                filter: inner,
            })
        });
        shared.unwrap_or(ParsedFilter::Direct(filter))
    }

    fn tree_filter(self) -> &'a str {
        match self {
            ParsedFilter::Direct(filter) | ParsedFilter::Shared { filter, .. } => filter,
        }
    }
}

/// A branch of the match walk still to follow: a filter node and the topic levels left after it.
type PendingBranch<'n, 't, K, V> = (&'n Node<Subscribers<K, V>>, std::str::Split<'t, char>);

/// A trie of topic filters mapping each subscription `(filter, key)` to its options `V`.
///
/// `K` identifies a subscriber (a session id, a client id); `V` is what the broker needs at
/// delivery (the granted QoS, later MQTT 5 options). One key has at most one subscription per
/// filter: subscribing again replaces the options (MQTT 3.1.1, 3.8.4).
pub struct SubscriptionTree<K, V> {
    root: Node<Subscribers<K, V>>,
    /// Each key's filters as subscribed (with any `$share/` prefix), so `remove_all` needs no scan.
    filters_by_key: LevelMap<K, SmallMap<Box<str>, ()>>,
    len: usize,
}

impl<K, V> Default for SubscriptionTree<K, V> {
    fn default() -> Self {
        Self {
            root: Node::default(),
            filters_by_key: LevelMap::default(),
            len: 0,
        }
    }
}

impl<K: Hash + Eq + Clone, V> SubscriptionTree<K, V> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Subscribes `key` to `filter` (which may be `$share/{group}/{filter}`) with options `value`.
    /// Returns the previous options if `key` already had this exact subscription.
    pub fn insert(&mut self, filter: &str, key: K, value: V) -> Option<V> {
        let parsed = ParsedFilter::parse(filter);
        let node = self
            .root
            .descend_or_create(filter_levels(parsed.tree_filter()));
        let previous = match parsed {
            ParsedFilter::Direct(_) => node.slot.direct.insert(key.clone(), value),
            ParsedFilter::Shared { group, .. } => {
                let groups = &mut node.slot.shared;
                let index = match groups.iter().position(|g| &*g.name == group) {
                    Some(index) => index,
                    None => {
                        groups.push(SharedGroup {
                            name: group.into(),
                            subscription: filter.into(),
                            members: SmallMap::default(),
                            cursor: Arc::default(),
                        });
                        groups.len() - 1
                    }
                };
                match groups.get_mut(index) {
                    Some(shared) => shared.members.insert(key.clone(), value),
                    None => None,
                }
            }
        };
        if previous.is_none() {
            self.len += 1;
            self.filters_by_key
                .entry(key)
                .or_default()
                .insert(filter.into(), ());
        }
        previous
    }

    /// Unsubscribes `key` from `filter` (spelled as subscribed, `$share/` prefix included).
    /// Returns the removed options, or `None` if there was no such subscription.
    pub fn remove(&mut self, filter: &str, key: &K) -> Option<V> {
        let parsed = ParsedFilter::parse(filter);
        let levels = filter_levels(parsed.tree_filter());
        let node = self.root.descend_mut(levels.clone())?;
        let removed = match parsed {
            ParsedFilter::Direct(_) => node.slot.direct.remove(key),
            ParsedFilter::Shared { group, .. } => {
                let groups = &mut node.slot.shared;
                let index = groups.iter().position(|g| &*g.name == group)?;
                let shared = groups.get_mut(index)?;
                let removed = shared.members.remove(key);
                if shared.members.is_empty() {
                    groups.swap_remove(index);
                }
                removed
            }
        }?;
        self.len -= 1;
        self.root.prune(levels);
        if let Some(filters) = self.filters_by_key.get_mut(key) {
            filters.remove(filter);
            if filters.is_empty() {
                self.filters_by_key.remove(key);
            }
        }
        Some(removed)
    }

    /// Removes every subscription of `key` (a session that ended). Returns how many there were.
    pub fn remove_all(&mut self, key: &K) -> usize {
        let Some(filters) = self.filters_by_key.remove(key) else {
            return 0;
        };
        filters
            .iter()
            .filter(|(filter, ())| self.remove(filter, key).is_some())
            .count()
    }

    /// Number of subscriptions (direct and shared memberships).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Calls `f` once per direct (non-shared) subscription whose filter matches `topic`: a key
    /// subscribed through several matching filters is visited once per filter.
    pub fn for_each_match(&self, topic: &str, mut f: impl FnMut(&K, &V)) {
        self.for_each_matching_slot(topic, |subscribers| {
            for (key, value) in subscribers.direct.iter() {
                f(key, value);
            }
        });
    }

    /// Calls `f` once per shared subscription (group and filter) that matches `topic`; the caller
    /// picks which member receives the message.
    pub fn for_each_shared_match(&self, topic: &str, mut f: impl FnMut(&SharedGroup<K, V>)) {
        self.for_each_matching_slot(topic, |subscribers| {
            for group in &subscribers.shared {
                f(group);
            }
        });
    }

    /// One walk for both kinds: `direct` once per direct subscription matching `topic` (as
    /// [`Self::for_each_match`]), `shared` once per matching shared group (as
    /// [`Self::for_each_shared_match`]). The publish path uses this, so shared subscriptions
    /// cost no second walk of the tree.
    pub fn for_each_match_and_group(
        &self,
        topic: &str,
        mut direct: impl FnMut(&K, &V),
        mut shared: impl FnMut(&SharedGroup<K, V>),
    ) {
        self.for_each_matching_slot(topic, |subscribers| {
            for (key, value) in subscribers.direct.iter() {
                direct(key, value);
            }
            for group in &subscribers.shared {
                shared(group);
            }
        });
    }

    /// The shared group subscribed as `subscription` (`$share/{name}/{filter}`), if it has
    /// members.
    pub fn shared_group(&self, subscription: &str) -> Option<&SharedGroup<K, V>> {
        let ParsedFilter::Shared { group, filter } = ParsedFilter::parse(subscription) else {
            return None;
        };
        let mut node = &self.root;
        for level in filter_levels(filter) {
            node = node.child(level)?;
        }
        node.slot.shared.iter().find(|g| &*g.name == group)
    }

    /// The direct subscribers matching `topic`, each once, with the options of its overlapping
    /// subscriptions folded by `merge` (for QoS: `|a, b| a.max(b)`, MQTT 3.1.1 3.3.5).
    pub fn matches_dedup(
        &self,
        topic: &str,
        mut merge: impl FnMut(&V, &V) -> V,
    ) -> HashMap<K, V, ahash::RandomState>
    where
        V: Clone,
    {
        let mut merged: HashMap<K, V, ahash::RandomState> = HashMap::default();
        self.for_each_match(topic, |key, value| match merged.get_mut(key) {
            Some(existing) => *existing = merge(existing, value),
            None => {
                merged.insert(key.clone(), value.clone());
            }
        });
        merged
    }
}

impl<K, V> SubscriptionTree<K, V> {
    /// Visits the slot of every filter node matching `topic`. Iterative: a stack of pending
    /// branches (a `+` and a literal child both matching a level) lives inline for the common case
    /// and spills to the heap only for unusually branchy trees.
    fn for_each_matching_slot<'t>(
        &self,
        topic: &'t str,
        mut visit: impl FnMut(&Subscribers<K, V>),
    ) {
        let mut pending: SmallVec<[PendingBranch<'_, 't, K, V>; 8]> = SmallVec::new();

        let mut levels = topic.split('/');
        let Some(first) = levels.next() else {
            return;
        };
        // MQTT 4.7.2: wildcards at the first level do not match `$` topics.
        if !first.starts_with('$') {
            if let Some(hash) = &self.root.hash {
                visit(&hash.slot);
            }
            if let Some(plus) = &self.root.plus {
                pending.push((plus, levels.clone()));
            }
        }
        if let Some(exact) = self.root.literal.get(first) {
            pending.push((exact, levels));
        }

        while let Some((mut node, mut rest)) = pending.pop() {
            loop {
                let Some(level) = rest.next() else {
                    visit(&node.slot);
                    // `a/#` also matches `a`.
                    if let Some(hash) = &node.hash {
                        visit(&hash.slot);
                    }
                    break;
                };
                if let Some(hash) = &node.hash {
                    visit(&hash.slot);
                }
                match (node.plus.as_deref(), node.literal.get(level)) {
                    (Some(plus), Some(exact)) => {
                        pending.push((plus, rest.clone()));
                        node = exact;
                    }
                    (Some(next), None) | (None, Some(next)) => node = next,
                    (None, None) => break,
                }
            }
        }
    }
}
