//! Retained messages indexed by topic, found by topic filter (MQTT 3.1.1 and 5.0, 3.3.1.3 / 4.7).
//!
//! The store is a trie of topic levels, so a subscription to `sensors/+/temp` walks only the
//! `sensors` branch and a literal filter is one path lookup; nothing scans every retained topic
//! unless the filter really is `#`. The `$` rule applies: `#` and `+/...` do not return topics
//! whose first level starts with `$`.
//!
//! Whether an empty payload clears the topic is the broker's decision (it calls [`clear`]); this
//! store keeps whatever it is given. Like the subscription tree, every walk is a loop, so a topic
//! of 65 536 levels cannot overflow the stack.
//!
//! [`clear`]: RetainedStore::clear

use crate::broker::routing::router::trie::{topic_levels, Level, Node, Slot};

/// A retained message and the full topic it was published to (kept so matches can report the
/// topic without rebuilding it from the path).
struct Retained<M> {
    topic: Box<str>,
    message: M,
}

/// One trie slot: the message retained on exactly this topic, if any.
struct RetainedSlot<M>(Option<Retained<M>>);

impl<M> Default for RetainedSlot<M> {
    fn default() -> Self {
        Self(None)
    }
}

impl<M> Slot for RetainedSlot<M> {
    fn is_empty(&self) -> bool {
        self.0.is_none()
    }
}

/// The last retained message of each topic.
pub struct RetainedStore<M> {
    root: Node<RetainedSlot<M>>,
    len: usize,
}

impl<M> Default for RetainedStore<M> {
    fn default() -> Self {
        Self {
            root: Node::default(),
            len: 0,
        }
    }
}

impl<M> RetainedStore<M> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Retains `message` on `topic`, returning the message it replaces.
    pub fn set(&mut self, topic: &str, message: M) -> Option<M> {
        let slot = &mut self.root.descend_or_create(topic_levels(topic)).slot;
        let previous = slot.0.replace(Retained {
            topic: topic.into(),
            message,
        });
        if previous.is_none() {
            self.len += 1;
        }
        previous.map(|retained| retained.message)
    }

    /// Forgets the message retained on `topic`, returning it.
    pub fn clear(&mut self, topic: &str) -> Option<M> {
        let node = self.root.descend_mut(topic_levels(topic))?;
        let removed = node.slot.0.take()?;
        self.len -= 1;
        self.root.prune(topic_levels(topic));
        Some(removed.message)
    }

    /// The message retained on exactly `topic`.
    pub fn get(&self, topic: &str) -> Option<&M> {
        let mut node = &self.root;
        for level in topic_levels(topic) {
            node = node.child(level)?;
        }
        node.slot.0.as_ref().map(|retained| &retained.message)
    }

    /// Calls `f(topic, message)` for each retained message whose topic matches `filter`.
    pub fn for_each_matching(&self, filter: &str, mut f: impl FnMut(&str, &M)) {
        let mut visit = |node: &Node<RetainedSlot<M>>| {
            if let Some(retained) = &node.slot.0 {
                f(&retained.topic, &retained.message);
            }
        };
        // (node, filter levels left, whether `node` is the root)
        let mut pending = vec![(&self.root, filter.split('/'), true)];
        while let Some((node, mut rest, at_root)) = pending.pop() {
            let Some(level) = rest.next() else {
                visit(node);
                continue;
            };
            // MQTT 4.7.2: a wildcard first level does not match `$` topics.
            let wildcard_may_enter = |name: &str| !(at_root && name.starts_with('$'));
            match Level::of_filter(level) {
                Level::Literal(name) => {
                    if let Some(child) = node.literal.get(name) {
                        pending.push((child, rest, false));
                    }
                }
                Level::Plus => {
                    for (name, child) in node.literal.iter() {
                        if wildcard_may_enter(name) {
                            pending.push((child, rest.clone(), false));
                        }
                    }
                }
                // `#` must be last; an invalid `a/#/b` matches nothing.
                Level::Hash if rest.next().is_some() => {}
                Level::Hash => {
                    // `a/#` matches `a` itself (the root holds no message: topics have a level).
                    visit(node);
                    let mut subtree: Vec<&Node<RetainedSlot<M>>> = node
                        .literal
                        .iter()
                        .filter(|(name, _)| wildcard_may_enter(name))
                        .map(|(_, child)| child)
                        .collect();
                    while let Some(descendant) = subtree.pop() {
                        visit(descendant);
                        subtree.extend(descendant.literal.values());
                    }
                }
            }
        }
    }

    /// Number of retained messages.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every retained `(topic, message)`, in no particular order (for persistence).
    pub fn iter(&self) -> Iter<'_, M> {
        Iter {
            pending: vec![&self.root],
        }
    }
}

/// Iterator over a [`RetainedStore`]'s `(topic, message)` pairs.
pub struct Iter<'a, M> {
    pending: Vec<&'a Node<RetainedSlot<M>>>,
}

impl<'a, M> Iterator for Iter<'a, M> {
    type Item = (&'a str, &'a M);

    fn next(&mut self) -> Option<Self::Item> {
        while let Some(node) = self.pending.pop() {
            self.pending.extend(node.literal.values());
            if let Some(retained) = &node.slot.0 {
                return Some((&retained.topic, &retained.message));
            }
        }
        None
    }
}

impl<'a, M> IntoIterator for &'a RetainedStore<M> {
    type Item = (&'a str, &'a M);
    type IntoIter = Iter<'a, M>;

    fn into_iter(self) -> Iter<'a, M> {
        self.iter()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::RetainedStore;
    use crate::broker::routing::router::tests::naive_matches;

    const TOPICS: &[&str] = &[
        "a",
        "a/b",
        "a/b/c",
        "a/",
        "/",
        "//",
        "/a",
        "a//b",
        "b",
        "sport",
        "sport/tennis",
        "sport/tennis/player1",
        "$SYS",
        "$SYS/x",
        "$SYS/x/y",
        "x/$y",
    ];

    const FILTERS: &[&str] = &[
        "#",
        "+",
        "+/+",
        "+/#",
        "a/#",
        "a/+",
        "a/b",
        "/",
        "/+",
        "//",
        "a/+/b",
        "sport/tennis/#",
        "sport/+",
        "$SYS/#",
        "$SYS/+",
        "+/$y",
        "a/#/b",
        "nothing/#",
    ];

    fn store_of(topics: &[&str]) -> RetainedStore<String> {
        let mut store = RetainedStore::new();
        for topic in topics {
            store.set(topic, format!("message on {topic}"));
        }
        store
    }

    fn matching(store: &RetainedStore<String>, filter: &str) -> Vec<String> {
        let mut found = Vec::new();
        store.for_each_matching(filter, |topic, message| {
            assert_eq!(message, &format!("message on {topic}"));
            found.push(topic.to_string());
        });
        found.sort();
        found
    }

    #[test]
    fn wildcard_filters_find_exactly_the_matching_topics() {
        let store = store_of(TOPICS);
        assert_eq!(store.len(), TOPICS.len());
        for filter in FILTERS {
            let mut wanted: Vec<String> = TOPICS
                .iter()
                .filter(|topic| naive_matches(filter, topic))
                .map(|topic| topic.to_string())
                .collect();
            wanted.sort();
            assert_eq!(matching(&store, filter), wanted, "filter {filter:?}");
        }
        assert!(matching(&store, "#").iter().all(|t| !t.starts_with('$')));
        assert_eq!(matching(&store, "$SYS/#"), ["$SYS", "$SYS/x", "$SYS/x/y"]);
        assert_eq!(matching(&store, "sport/tennis/#").len(), 2);
        assert!(matching(&store, "sport/tennis/#")
            .iter()
            .all(|t| t != "sport"));
    }

    #[test]
    fn set_replaces_and_clear_prunes() {
        let mut store = RetainedStore::new();
        assert_eq!(store.set("a/b/c", 1), None);
        assert_eq!(store.set("a/b/c", 2), Some(1));
        assert_eq!(store.set("a", 3), None);
        assert_eq!(store.get("a/b/c"), Some(&2));
        assert_eq!(store.get("a/b"), None);
        assert_eq!(store.len(), 2);
        assert_eq!(store.clear("a/b"), None);
        assert_eq!(store.clear("a/b/c"), Some(2));
        assert_eq!(store.clear("a/b/c"), None);
        assert_eq!(store.root.node_count(), 2, "root and `a` remain");
        assert_eq!(store.clear("a"), Some(3));
        assert!(store.is_empty());
        assert_eq!(store.root.node_count(), 1);
    }

    #[test]
    fn iter_yields_every_retained_message_once() {
        let store = store_of(TOPICS);
        let mut all: Vec<&str> = store.iter().map(|(topic, _)| topic).collect();
        all.sort();
        let mut wanted = TOPICS.to_vec();
        wanted.sort();
        assert_eq!(all, wanted);
        assert_eq!((&store).into_iter().count(), TOPICS.len());
    }

    #[test]
    fn deep_topics_work_on_a_small_stack() {
        let worker = std::thread::Builder::new()
            .stack_size(128 * 1024)
            .spawn(|| {
                let deep = "/".repeat(65_535);
                let mut store = RetainedStore::new();
                store.set(&deep, 1u8);
                store.set("a", 2u8);
                let mut found = 0;
                store.for_each_matching("#", |_, _| found += 1);
                assert_eq!(found, 2);
                assert_eq!(store.iter().count(), 2);
                assert_eq!(store.clear(&deep), Some(1));
                assert_eq!(store.root.node_count(), 2);
                store.set(&deep, 1u8);
                drop(store);
            })
            .expect("spawn");
        worker.join().expect("no stack overflow");
    }

    fn level() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec!["a", "b", "$x", ""])
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn store_agrees_with_naive_matcher(
            ops in prop::collection::vec(
                (prop::collection::vec(level(), 1..5), any::<Option<u16>>()),
                1..60,
            ),
            filters in prop::collection::vec(
                prop::collection::vec(
                    prop::sample::select(vec!["a", "b", "$x", "", "+", "#"]),
                    1..5,
                ),
                1..20,
            ),
        ) {
            let mut store = RetainedStore::new();
            let mut model = BTreeMap::new();
            for (levels, message) in ops {
                let topic = levels.join("/");
                match message {
                    Some(message) => {
                        prop_assert_eq!(store.set(&topic, message), model.insert(topic, message));
                    }
                    None => prop_assert_eq!(store.clear(&topic), model.remove(&topic)),
                }
                prop_assert_eq!(store.len(), model.len());
            }
            for filter in filters {
                let filter = filter.join("/");
                let mut found = Vec::new();
                store.for_each_matching(&filter, |topic, message| {
                    found.push((topic.to_string(), *message));
                });
                found.sort();
                let wanted: Vec<(String, u16)> = model
                    .iter()
                    .filter(|(topic, _)| naive_matches(&filter, topic))
                    .map(|(topic, message)| (topic.clone(), *message))
                    .collect();
                prop_assert_eq!(found, wanted, "filter {:?}", filter);
            }
            let topics: Vec<String> = model.keys().cloned().collect();
            for topic in topics {
                prop_assert!(store.clear(&topic).is_some());
            }
            prop_assert_eq!(store.root.node_count(), 1);
        }
    }
}
