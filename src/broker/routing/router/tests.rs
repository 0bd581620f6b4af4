//! Rule tables, a property test against a naive matcher, pruning and shared subscriptions.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::SubscriptionTree;

/// The MQTT 4.7 matching rules written the obvious way, as the oracle for the trie.
pub(crate) fn naive_matches(filter: &str, topic: &str) -> bool {
    let filter_levels: Vec<&str> = filter.split('/').collect();
    let topic_levels: Vec<&str> = topic.split('/').collect();
    let first_is_wildcard = matches!(filter_levels.first(), Some(&"+") | Some(&"#"));
    if topic.starts_with('$') && first_is_wildcard {
        return false;
    }
    for (index, level) in filter_levels.iter().enumerate() {
        if *level == "#" {
            // Matches the rest, including nothing; only valid as the last level.
            return index + 1 == filter_levels.len();
        }
        match topic_levels.get(index) {
            Some(topic_level) if *level == "+" || level == topic_level => {}
            _ => return false,
        }
    }
    filter_levels.len() == topic_levels.len()
}

/// (filter, topic, matches) from MQTT 3.1.1 / 5.0 section 4.7 and the edge cases around it.
const RULES: &[(&str, &str, bool)] = &[
    ("#", "a", true),
    ("#", "a/b/c", true),
    ("#", "/", true),
    ("#", "a/$b", true),
    ("#", "$SYS", false),
    ("#", "$SYS/x", false),
    ("+", "a", true),
    ("+", "/finance", false),
    ("+", "$SYS", false),
    ("+/+", "a/b", true),
    ("+/+", "/finance", true),
    ("+/+", "/", true),
    ("+/+", "a", false),
    ("+/+", "a/b/c", false),
    ("+/+", "$SYS/x", false),
    ("+/#", "a", true),
    ("+/#", "a/b/c", true),
    ("+/#", "/", true),
    ("+/#", "$SYS/x", false),
    ("$SYS/#", "$SYS/x", true),
    ("$SYS/#", "$SYS", true),
    ("$SYS/#", "$SYS/x/y", true),
    ("$SYS/#", "$SYSx/a", false),
    ("$SYS/x", "$SYS/x", true),
    ("$SYS/+", "$SYS/x", true),
    ("$foo", "$foo", true),
    ("+/bar", "$foo/bar", false),
    ("/", "/", true),
    ("/", "a/", false),
    ("/", "//", false),
    ("//", "//", true),
    ("//", "/", false),
    ("/+", "/finance", true),
    ("/+", "/", true),
    ("/+", "a", false),
    ("/finance", "/finance", true),
    ("/finance", "finance", false),
    ("a/+", "a", false),
    ("a/+", "a/", true),
    ("a/+", "a/b", true),
    ("a/+", "a/b/c", false),
    ("a/#", "a", true),
    ("a/#", "a/", true),
    ("a/#", "a/b/c", true),
    ("a/#", "ab", false),
    ("a/#", "b/a", false),
    ("a//b", "a//b", true),
    ("a//b", "a/b", false),
    ("a/+/b", "a//b", true),
    ("a/b", "A/b", false),
    ("a/b", "a/b/", false),
    ("sport/tennis/#", "sport", false),
    ("sport/tennis/#", "sport/tennis", true),
    ("sport/tennis/#", "sport/tennis/player1", true),
    ("sport/tennis/#", "sport/tennis/player1/ranking", true),
    ("sport/tennis/player1/#", "sport/tennis/player1", true),
    ("sport/+", "sport", false),
    ("sport/+", "sport/", true),
    ("+/tennis/#", "sport/tennis/x", true),
    ("+/+/#", "a", false),
    ("+/+/#", "a/b", true),
    // Invalid filters are stored but match nothing.
    ("a/#/b", "a/x/b", false),
    ("a/#/b", "a", false),
    ("a+", "ab", false),
];

fn matched_values(tree: &SubscriptionTree<u32, String>, topic: &str) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    tree.for_each_match(topic, |key, value| found.push((*key, value.clone())));
    found.sort();
    found
}

#[test]
fn naive_oracle_agrees_with_the_rule_table() {
    for &(filter, topic, expected) in RULES {
        assert_eq!(
            naive_matches(filter, topic),
            expected,
            "{filter} vs {topic}"
        );
    }
}

#[test]
fn each_rule_holds_for_a_lone_filter() {
    for &(filter, topic, expected) in RULES {
        let mut tree = SubscriptionTree::new();
        tree.insert(filter, 7, filter.to_string());
        let found = matched_values(&tree, topic);
        let wanted = if expected {
            vec![(7, filter.to_string())]
        } else {
            vec![]
        };
        assert_eq!(found, wanted, "filter {filter:?} vs topic {topic:?}");
    }
}

#[test]
fn all_rules_hold_with_every_filter_in_one_tree() {
    let mut tree = SubscriptionTree::new();
    let filters: BTreeSet<&str> = RULES.iter().map(|rule| rule.0).collect();
    for (key, filter) in filters.iter().enumerate() {
        tree.insert(filter, key as u32, filter.to_string());
    }
    assert_eq!(tree.len(), filters.len());
    for &(_, topic, _) in RULES {
        let found: Vec<String> = matched_values(&tree, topic)
            .into_iter()
            .map(|(_, filter)| filter)
            .collect();
        let wanted: Vec<String> = filters
            .iter()
            .filter(|filter| naive_matches(filter, topic))
            .map(|filter| filter.to_string())
            .collect();
        assert_eq!(found, wanted, "topic {topic:?}");
    }
}

#[test]
fn insert_replaces_and_remove_returns_the_options() {
    let mut tree = SubscriptionTree::new();
    assert_eq!(tree.insert("a/+", 1u64, 0u8), None);
    assert_eq!(tree.insert("a/+", 1, 2), Some(0));
    assert_eq!(tree.insert("a/+", 2, 1), None);
    assert_eq!(tree.len(), 2);
    assert_eq!(tree.remove("a/+", &3), None);
    assert_eq!(tree.remove("a/b", &1), None);
    assert_eq!(tree.remove("a/+", &1), Some(2));
    assert_eq!(tree.remove("a/+", &1), None);
    assert_eq!(tree.len(), 1);
    let mut seen = Vec::new();
    tree.for_each_match("a/x", |key, qos| seen.push((*key, *qos)));
    assert_eq!(seen, [(2, 1)]);
}

#[test]
fn removal_prunes_every_empty_node() {
    let mut tree = SubscriptionTree::new();
    let filters = [
        "a/b/c", "a/b", "a/+/c", "a/#", "#", "+", "/", "//x", "$SYS/#",
    ];
    for filter in filters {
        tree.insert(filter, 1u8, ());
        tree.insert(filter, 2u8, ());
    }
    let full = tree.root.node_count();
    for filter in filters {
        assert!(tree.remove(filter, &1).is_some());
    }
    // Key 2 still holds every filter: nothing was pruned.
    assert_eq!(tree.root.node_count(), full);
    for filter in filters.iter().rev() {
        assert!(tree.remove(filter, &2).is_some(), "{filter}");
    }
    assert!(tree.is_empty());
    assert_eq!(tree.root.node_count(), 1);
}

#[test]
fn remove_all_drops_every_subscription_of_a_key() {
    let mut tree = SubscriptionTree::new();
    for filter in ["a/b", "a/+", "#", "$share/g/a/b"] {
        tree.insert(filter, "alice", 1u8);
    }
    tree.insert("a/b", "bob", 0);
    assert_eq!(tree.remove_all(&"alice"), 4);
    assert_eq!(tree.remove_all(&"alice"), 0);
    assert_eq!(tree.len(), 1);
    let mut seen = Vec::new();
    tree.for_each_match("a/b", |key, _| seen.push(*key));
    assert_eq!(seen, ["bob"]);
    tree.for_each_shared_match("a/b", |group| panic!("group {} left", group.name()));
    assert_eq!(tree.remove_all(&"bob"), 1);
    assert_eq!(tree.root.node_count(), 1);
}

#[test]
fn overlapping_filters_visit_once_each_and_dedup_to_the_highest() {
    let mut tree = SubscriptionTree::new();
    tree.insert("a/+", 1u64, 0u8);
    tree.insert("a/#", 1, 2);
    tree.insert("+/b", 1, 1);
    tree.insert("a/b", 2, 1);
    tree.insert("x", 3, 2);
    let mut visits = Vec::new();
    tree.for_each_match("a/b", |key, qos| visits.push((*key, *qos)));
    visits.sort();
    assert_eq!(visits, [(1, 0), (1, 1), (1, 2), (2, 1)]);

    let merged = tree.matches_dedup("a/b", |a, b| *a.max(b));
    let mut merged: Vec<(u64, u8)> = merged.into_iter().collect();
    merged.sort();
    assert_eq!(merged, [(1, 2), (2, 1)]);
}

#[test]
fn shared_subscriptions_are_grouped_under_the_inner_filter() {
    let mut tree = SubscriptionTree::new();
    tree.insert("$share/g/a/+", 1u32, 1u8);
    tree.insert("$share/g/a/+", 2, 2);
    tree.insert("$share/h/a/+", 3, 0);
    tree.insert("$share/g/#", 4, 0);
    tree.insert("a/+", 1, 0);
    assert_eq!(tree.len(), 5);

    let direct = matched(&tree, "a/b");
    assert_eq!(direct, [(1, 0)]);

    let groups = shared_groups(&tree, "a/b");
    let wanted = [
        ("g".to_string(), vec![(1, 1), (2, 2)]),
        ("g".to_string(), vec![(4, 0)]),
        ("h".to_string(), vec![(3, 0)]),
    ];
    assert_eq!(groups, wanted);
    // `$` rule applies to the inner filter.
    assert!(shared_groups(&tree, "$SYS/x").is_empty());

    assert_eq!(tree.remove("$share/g/a/+", &1), Some(1));
    assert_eq!(tree.remove("a/+", &2), None, "2 is only a shared member");
    assert_eq!(tree.remove("$share/h/a/+", &3), Some(0));
    assert_eq!(
        shared_groups(&tree, "a/b"),
        [
            ("g".to_string(), vec![(2, 2)]),
            ("g".to_string(), vec![(4, 0)]),
        ]
    );
}

#[test]
fn a_group_is_found_again_by_its_subscription_and_one_walk_sees_both_kinds() {
    let mut tree = SubscriptionTree::new();
    tree.insert("$share/g/a/+", 1u32, 1u8);
    tree.insert("$share/g/a/+", 2, 2);
    tree.insert("a/+", 3, 0);
    let group = tree.shared_group("$share/g/a/+").expect("group g on a/+");
    assert_eq!(group.name(), "g");
    assert_eq!(&**group.subscription(), "$share/g/a/+");
    assert_eq!(group.len(), 2);
    for absent in ["$share/h/a/+", "$share/g/a/b", "a/+", "$share/g"] {
        assert!(tree.shared_group(absent).is_none(), "{absent}");
    }
    let (mut direct, mut groups) = (Vec::new(), Vec::new());
    tree.for_each_match_and_group(
        "a/b",
        |key, value| direct.push((*key, *value)),
        |group| groups.push(group.subscription().to_string()),
    );
    assert_eq!(direct, [(3, 0)]);
    assert_eq!(groups, ["$share/g/a/+"]);
    tree.remove("$share/g/a/+", &1);
    tree.remove("$share/g/a/+", &2);
    assert!(
        tree.shared_group("$share/g/a/+").is_none(),
        "gone with its last member"
    );
}

#[test]
fn malformed_share_prefixes_are_plain_filters() {
    for filter in [
        "$share/g",
        "$share//a",
        "$share/g+/a",
        "$share/g#/a",
        "$share/g/",
    ] {
        let mut tree = SubscriptionTree::new();
        tree.insert(filter, 1u32, 5u8);
        assert_eq!(matched(&tree, filter), [(1, 5)], "{filter}");
        assert!(shared_groups(&tree, filter).is_empty(), "{filter}");
        assert_eq!(tree.remove(filter, &1), Some(5));
        assert_eq!(tree.root.node_count(), 1);
    }
}

#[test]
fn many_simultaneous_branches_are_all_followed() {
    // Every filter of 10 levels made of `a` and `+` (1024 of them) matches `a/a/.../a`; the walk
    // holds far more pending branches than its inline stack.
    let depth = 10;
    let mut tree = SubscriptionTree::new();
    for bits in 0u32..(1 << depth) {
        let filter: Vec<&str> = (0..depth)
            .map(|i| if bits & (1 << i) != 0 { "+" } else { "a" })
            .collect();
        tree.insert(&filter.join("/"), bits, ());
    }
    let topic = vec!["a"; depth].join("/");
    let mut keys = BTreeSet::new();
    tree.for_each_match(&topic, |key, _| {
        keys.insert(*key);
    });
    assert_eq!(keys.len(), 1 << depth);
    let other = vec!["b"; depth].join("/");
    let mut count = 0;
    tree.for_each_match(&other, |_, _| count += 1);
    assert_eq!(count, 1, "only the all-`+` filter matches b/b/...");
}

#[test]
fn deep_filters_and_topics_work_on_a_small_stack() {
    let worker = std::thread::Builder::new()
        .stack_size(128 * 1024)
        .spawn(|| {
            let deep = "/".repeat(65_535);
            let deep_hash = format!("{deep}#");
            let mut tree = SubscriptionTree::new();
            tree.insert(&deep, 1u8, ());
            tree.insert(&deep_hash, 2u8, ());
            tree.insert("#", 3u8, ());
            assert_eq!(matched(&tree, &deep), [(1, ()), (2, ()), (3, ())]);
            assert_eq!(tree.remove_all(&1), 1);
            assert_eq!(tree.remove_all(&2), 1);
            assert_eq!(tree.root.node_count(), 2);
            tree.insert(&deep, 1u8, ());
            drop(tree);
        })
        .expect("spawn");
    worker.join().expect("no stack overflow");
}

fn matched<K: Ord + Copy + std::hash::Hash, V: Ord + Copy>(
    tree: &SubscriptionTree<K, V>,
    topic: &str,
) -> Vec<(K, V)> {
    let mut found = Vec::new();
    tree.for_each_match(topic, |key, value| found.push((*key, *value)));
    found.sort();
    found
}

type GroupView = (String, Vec<(u32, u8)>);

fn shared_groups(tree: &SubscriptionTree<u32, u8>, topic: &str) -> Vec<GroupView> {
    let mut groups = Vec::new();
    tree.for_each_shared_match(topic, |group| {
        let mut members: Vec<(u32, u8)> = group.members().map(|(k, v)| (*k, *v)).collect();
        members.sort();
        assert_eq!(group.len(), members.len());
        groups.push((group.name().to_string(), members));
    });
    groups.sort();
    groups
}

/// Small alphabets so random filters and topics collide often; `$x` exercises the `$` rule and
/// `#` may land anywhere (mid-filter `#` is invalid and must match nothing).
fn topic_strategy() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(vec!["a", "b", "$x", ""]), 1..5)
        .prop_map(|levels| levels.join("/"))
}

fn filter_strategy() -> impl Strategy<Value = String> {
    let level = prop::sample::select(vec!["a", "b", "$x", "", "+", "+", "#", "#"]);
    prop::collection::vec(level, 1..5).prop_map(|levels| levels.join("/"))
}

#[derive(Clone, Debug)]
enum Op {
    Insert(String, u8, u16),
    Remove(String, u8),
    RemoveAll(u8),
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (filter_strategy(), 0u8..4, any::<u16>()).prop_map(|(f, k, v)| Op::Insert(f, k, v)),
        3 => (filter_strategy(), 0u8..4).prop_map(|(f, k)| Op::Remove(f, k)),
        1 => (0u8..4).prop_map(Op::RemoveAll),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn tree_agrees_with_naive_matcher(
        ops in prop::collection::vec(op_strategy(), 1..60),
        topics in prop::collection::vec(topic_strategy(), 1..20),
    ) {
        let mut tree = SubscriptionTree::new();
        let mut model: BTreeMap<(u8, String), u16> = BTreeMap::new();
        for op in &ops {
            match op {
                Op::Insert(filter, key, value) => {
                    let old = tree.insert(filter, *key, *value);
                    prop_assert_eq!(old, model.insert((*key, filter.clone()), *value));
                }
                Op::Remove(filter, key) => {
                    let old = tree.remove(filter, key);
                    prop_assert_eq!(old, model.remove(&(*key, filter.clone())));
                }
                Op::RemoveAll(key) => {
                    let before = model.len();
                    model.retain(|(k, _), _| k != key);
                    prop_assert_eq!(tree.remove_all(key), before - model.len());
                }
            }
            prop_assert_eq!(tree.len(), model.len());
        }
        for topic in &topics {
            let mut found = Vec::new();
            tree.for_each_match(topic, |key, value| found.push((*key, *value)));
            found.sort();
            let mut wanted: Vec<(u8, u16)> = model
                .iter()
                .filter(|((_, filter), _)| naive_matches(filter, topic))
                .map(|((key, _), value)| (*key, *value))
                .collect();
            wanted.sort();
            prop_assert_eq!(found, wanted, "topic {:?}", topic);
        }
        for (key, filter) in model.keys() {
            prop_assert!(tree.remove(filter, key).is_some());
        }
        prop_assert_eq!(tree.root.node_count(), 1, "empty tree pruned to its root");
    }
}

#[test]
fn tree_and_store_can_be_shared_behind_a_lock() {
    fn shareable<T: Send + Sync>(_: &T) {}
    let tree = parking_lot::RwLock::new(SubscriptionTree::<std::sync::Arc<str>, u8>::new());
    let store = parking_lot::RwLock::new(crate::broker::routing::retained::RetainedStore::<
        bytes::Bytes,
    >::new());
    shareable(&tree);
    shareable(&store);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for index in 0..200u32 {
                let filter = format!("t/{}", index % 20);
                tree.write().insert(&filter, "writer".into(), 1);
                tree.write().remove(&filter, &"writer".into());
            }
        });
        for _ in 0..2 {
            scope.spawn(|| {
                for _ in 0..200 {
                    let mut count = 0;
                    tree.read().for_each_match("t/3", |_, _| count += 1);
                    assert!(count <= 1);
                }
            });
        }
    });
    assert!(tree.read().is_empty());
}
