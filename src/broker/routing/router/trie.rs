//! The topic-level trie shared by the subscription tree and the retained-message store.
//!
//! Every path through the trie is one topic name or topic filter split on `/`. Literal levels live
//! in a hash map; the `+` and `#` wildcard levels of a filter get their own slots so the match walk
//! reaches them without hashing.
//!
//! Depth comes from the peer: a 65 535-byte filter such as `/////...` has 65 536 levels. Every walk
//! here is therefore a loop, never recursion, and [`Node`]'s `Drop` tears deep chains down with a
//! heap stack instead of the compiler's recursive drop glue, so no input can overflow the stack.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::OnceLock;

use super::small_map::SmallMap;

/// Hashes topic levels with aHash keyed once per process.
///
/// A zero-sized builder instead of `ahash::RandomState` saves 32 bytes in every map of every node,
/// which adds up over a million subscriptions. The key is still random, so peers cannot choose
/// colliding level names.
#[derive(Clone, Copy, Default)]
pub(crate) struct LevelHasher;

impl BuildHasher for LevelHasher {
    type Hasher = ahash::AHasher;

    fn build_hasher(&self) -> ahash::AHasher {
        static PROCESS_KEYS: OnceLock<ahash::RandomState> = OnceLock::new();
        PROCESS_KEYS
            .get_or_init(ahash::RandomState::new)
            .build_hasher()
    }
}

/// A hash map keyed with [`LevelHasher`].
pub(crate) type LevelMap<K, V> = HashMap<K, V, LevelHasher>;

/// What a node stores besides its children.
pub(crate) trait Slot: Default {
    /// True when the slot holds nothing, so the node may be pruned once it has no children.
    fn is_empty(&self) -> bool;
}

/// One level of a topic name or filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Level<'a> {
    Literal(&'a str),
    /// `+`: exactly one level.
    Plus,
    /// `#`: the rest of the topic, including the parent level itself.
    Hash,
}

impl<'a> Level<'a> {
    /// Reads a filter level: `+` and `#` are wildcards, everything else is literal.
    pub(crate) fn of_filter(level: &'a str) -> Self {
        match level {
            "+" => Level::Plus,
            "#" => Level::Hash,
            literal => Level::Literal(literal),
        }
    }
}

/// The levels of a topic filter (`+` and `#` read as wildcards).
pub(crate) fn filter_levels(filter: &str) -> impl Iterator<Item = Level<'_>> + Clone {
    filter.split('/').map(Level::of_filter)
}

/// The levels of a topic name (every level literal, whatever its characters).
pub(crate) fn topic_levels(topic: &str) -> impl Iterator<Item = Level<'_>> + Clone {
    topic.split('/').map(Level::Literal)
}

/// A trie node: its slot and its children.
#[derive(Default)]
pub(crate) struct Node<T> {
    pub(crate) slot: T,
    pub(crate) literal: SmallMap<Box<str>, Node<T>>,
    pub(crate) plus: Option<Box<Node<T>>>,
    pub(crate) hash: Option<Box<Node<T>>>,
}

impl<T: Slot> Node<T> {
    pub(crate) fn child(&self, level: Level<'_>) -> Option<&Node<T>> {
        match level {
            Level::Literal(name) => self.literal.get(name),
            Level::Plus => self.plus.as_deref(),
            Level::Hash => self.hash.as_deref(),
        }
    }

    fn child_mut(&mut self, level: Level<'_>) -> Option<&mut Node<T>> {
        match level {
            Level::Literal(name) => self.literal.get_mut(name),
            Level::Plus => self.plus.as_deref_mut(),
            Level::Hash => self.hash.as_deref_mut(),
        }
    }

    fn child_or_insert(&mut self, level: Level<'_>) -> &mut Node<T> {
        match level {
            Level::Literal(name) => {
                self.literal
                    .get_or_insert_with(name, |name| Box::from(name), Node::default)
            }
            Level::Plus => self.plus.get_or_insert_with(Box::default),
            Level::Hash => self.hash.get_or_insert_with(Box::default),
        }
    }

    fn remove_child(&mut self, level: Level<'_>) -> Option<Node<T>> {
        match level {
            Level::Literal(name) => self.literal.remove(name),
            Level::Plus => self.plus.take().map(|node| *node),
            Level::Hash => self.hash.take().map(|node| *node),
        }
    }

    fn child_count(&self) -> usize {
        self.literal.len() + usize::from(self.plus.is_some()) + usize::from(self.hash.is_some())
    }

    /// The node at the end of `levels`, created with empty slots where missing.
    pub(crate) fn descend_or_create<'a>(
        &mut self,
        levels: impl Iterator<Item = Level<'a>>,
    ) -> &mut Node<T> {
        let mut node = self;
        for level in levels {
            node = node.child_or_insert(level);
        }
        node
    }

    /// The node at the end of `levels`, if that path exists.
    pub(crate) fn descend_mut<'a>(
        &mut self,
        levels: impl Iterator<Item = Level<'a>>,
    ) -> Option<&mut Node<T>> {
        let mut node = self;
        for level in levels {
            node = node.child_mut(level)?;
        }
        Some(node)
    }

    /// Removes the empty tail of the path `levels`: the longest run of nodes at its end that hold
    /// nothing and lead nowhere else. Call after emptying the slot at the end of the path so the
    /// trie's size follows the live subscriptions, not every filter ever seen.
    pub(crate) fn prune<'a>(&mut self, levels: impl Iterator<Item = Level<'a>> + Clone) {
        // Pass 1: the depth of the first node of the removable tail, if the path ends in one.
        let mut tail_start: Option<usize> = None;
        let mut node: &Node<T> = self;
        for (depth, level) in levels.clone().enumerate() {
            let Some(child) = node.child(level) else {
                return;
            };
            // A node on the tail holds nothing and has no child but the next one on the path.
            if child.slot.is_empty() && child.child_count() <= 1 {
                tail_start.get_or_insert(depth);
            } else {
                tail_start = None;
            }
            node = child;
        }
        if node.child_count() != 0 {
            return;
        }
        let Some(tail_start) = tail_start else {
            return;
        };
        // Pass 2: cut the tail off at its parent.
        let mut path = levels;
        let Some(parent) = self.descend_mut(path.by_ref().take(tail_start)) else {
            return;
        };
        if let Some(first_of_tail) = path.next() {
            parent.remove_child(first_of_tail);
        }
    }
}

impl<T> Node<T> {
    fn has_children(&self) -> bool {
        !self.literal.is_empty() || self.plus.is_some() || self.hash.is_some()
    }

    /// Moves every child out of this node, leaving it a leaf.
    fn take_children(&mut self) -> impl Iterator<Item = Node<T>> {
        let literal = self.literal.take_values();
        let plus = self.plus.take().map(|node| *node);
        let hash = self.hash.take().map(|node| *node);
        literal.chain(plus).chain(hash)
    }
}

#[cfg(test)]
impl<T> Node<T> {
    /// Nodes in this subtree, itself included (tests check pruning with it).
    pub(crate) fn node_count(&self) -> usize {
        let mut count = 0;
        let mut stack = vec![self];
        while let Some(node) = stack.pop() {
            count += 1;
            stack.extend(node.literal.values());
            stack.extend(node.plus.as_deref());
            stack.extend(node.hash.as_deref());
        }
        count
    }
}

impl<T> Drop for Node<T> {
    /// Drops the subtree depth-first with a heap stack of child iterators, one per level, so that
    /// neither a deep chain (stack overflow with recursive drop glue) nor a wide level (a million
    /// children queued at once) costs more than the path being torn down.
    fn drop(&mut self) {
        if !self.has_children() {
            return;
        }
        let mut stack = vec![self.take_children()];
        while let Some(children) = stack.last_mut() {
            match children.next() {
                Some(mut child) => {
                    if child.has_children() {
                        stack.push(child.take_children());
                    }
                    // `child` is a leaf now; dropping it here does not recurse.
                }
                None => {
                    stack.pop();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Slot for bool {
        fn is_empty(&self) -> bool {
            !*self
        }
    }

    fn node_count(root: &Node<bool>) -> usize {
        root.node_count()
    }

    #[test]
    fn prune_removes_only_the_empty_tail() {
        let mut root = Node::<bool>::default();
        root.descend_or_create(filter_levels("a/b/c/d")).slot = true;
        root.descend_or_create(filter_levels("a/b")).slot = true;
        root.descend_or_create(filter_levels("a/+/#")).slot = true;
        assert_eq!(node_count(&root), 1 + 4 + 2);

        let leaf = root
            .descend_mut(filter_levels("a/b/c/d"))
            .expect("path exists");
        leaf.slot = false;
        root.prune(filter_levels("a/b/c/d"));
        // c and d are gone; a/b holds a subscription and stays.
        assert_eq!(node_count(&root), 1 + 2 + 2);
        assert!(root.descend_mut(filter_levels("a/b")).is_some());
        assert!(root.descend_mut(filter_levels("a/b/c")).is_none());

        // Pruning a path that still holds something is a no-op.
        root.prune(filter_levels("a/+/#"));
        assert_eq!(node_count(&root), 5);

        root.descend_mut(filter_levels("a/+/#"))
            .expect("exists")
            .slot = false;
        root.prune(filter_levels("a/+/#"));
        assert_eq!(node_count(&root), 3);
        root.descend_mut(filter_levels("a/b")).expect("exists").slot = false;
        root.prune(filter_levels("a/b"));
        assert_eq!(node_count(&root), 1);
    }

    #[test]
    fn prune_of_missing_path_is_a_no_op() {
        let mut root = Node::<bool>::default();
        root.descend_or_create(filter_levels("x/y")).slot = true;
        root.prune(filter_levels("x/y/z"));
        root.prune(filter_levels("q"));
        assert_eq!(node_count(&root), 3);
    }

    #[test]
    fn topic_levels_are_all_literal() {
        let levels: Vec<_> = topic_levels("+/#/a").collect();
        assert_eq!(
            levels,
            [
                Level::Literal("+"),
                Level::Literal("#"),
                Level::Literal("a")
            ]
        );
        let levels: Vec<_> = filter_levels("+/#//").collect();
        assert_eq!(
            levels,
            [
                Level::Plus,
                Level::Hash,
                Level::Literal(""),
                Level::Literal("")
            ]
        );
    }

    #[test]
    fn deep_chains_build_prune_and_drop_on_a_small_stack() {
        // 65 535 bytes of '/' is the deepest filter MQTT can carry: 65 536 empty levels.
        let deep = "/".repeat(65_535);
        let worker = std::thread::Builder::new()
            .stack_size(128 * 1024)
            .spawn(move || {
                let mut root = Node::<bool>::default();
                root.descend_or_create(filter_levels(&deep)).slot = true;
                root.descend_mut(filter_levels(&deep)).expect("exists").slot = false;
                root.prune(filter_levels(&deep));
                assert_eq!(node_count(&root), 1);
                root.descend_or_create(filter_levels(&deep)).slot = true;
                drop(root);
            })
            .expect("spawn");
        worker.join().expect("no stack overflow");
    }
}
