//! A map that stays a short vector until it grows.
//!
//! Most trie nodes have one child and most filters one subscriber. A hash table for those costs a
//! table of at least four buckets plus a hash per lookup; a vector of one entry costs that entry,
//! and comparing a few short keys beats hashing one. Past [`FEW_MAX`] entries the map becomes a
//! hash table (a level holding a million device ids), and drops back to a vector when it shrinks
//! to half of that, so churn around the threshold does not convert back and forth.

use std::borrow::Borrow;
use std::hash::Hash;

use super::trie::{LevelHasher, LevelMap};

/// Largest number of entries kept in the vector form.
const FEW_MAX: usize = 8;

pub(crate) enum SmallMap<K, V> {
    /// Unordered entries with distinct keys, grown one slot at a time to keep memory tight.
    Few(Vec<(K, V)>),
    /// Boxed so the enum stays the size of a vector.
    Many(Box<LevelMap<K, V>>),
}

impl<K, V> Default for SmallMap<K, V> {
    fn default() -> Self {
        SmallMap::Few(Vec::new())
    }
}

impl<K, V> SmallMap<K, V> {
    pub(crate) fn len(&self) -> usize {
        match self {
            SmallMap::Few(entries) => entries.len(),
            SmallMap::Many(map) => map.len(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        let (few, many) = match self {
            SmallMap::Few(entries) => (Some(entries.iter().map(|(k, v)| (k, v))), None),
            SmallMap::Many(map) => (None, Some(map.iter())),
        };
        few.into_iter().flatten().chain(many.into_iter().flatten())
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &V> {
        self.iter().map(|(_, value)| value)
    }

    /// Moves every value out, leaving the map empty.
    pub(crate) fn take_values(&mut self) -> impl Iterator<Item = V> {
        let (few, many) = match std::mem::take(self) {
            SmallMap::Few(entries) => (Some(entries.into_iter().map(|(_, v)| v)), None),
            SmallMap::Many(map) => (None, Some(map.into_values())),
        };
        few.into_iter().flatten().chain(many.into_iter().flatten())
    }
}

impl<K: Hash + Eq, V> SmallMap<K, V> {
    pub(crate) fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        match self {
            SmallMap::Few(entries) => entries
                .iter()
                .find(|(k, _)| k.borrow() == key)
                .map(|(_, v)| v),
            SmallMap::Many(map) => map.get(key),
        }
    }

    pub(crate) fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        match self {
            SmallMap::Few(entries) => entries
                .iter_mut()
                .find(|(k, _)| (*k).borrow() == key)
                .map(|(_, v)| v),
            SmallMap::Many(map) => map.get_mut(key),
        }
    }

    /// Inserts or replaces, returning the replaced value.
    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<V> {
        if let SmallMap::Few(entries) = self {
            if let Some((_, existing)) = entries.iter_mut().find(|(k, _)| *k == key) {
                return Some(std::mem::replace(existing, value));
            }
            if entries.len() >= FEW_MAX {
                self.grow_into_map();
            }
        }
        match self {
            SmallMap::Few(entries) => {
                entries.reserve_exact(1);
                entries.push((key, value));
                None
            }
            SmallMap::Many(map) => map.insert(key, value),
        }
    }

    /// The value under `key`, first inserting `make()` under `to_owned(key)` if it is missing, so
    /// the vector form builds the owned key only when it inserts. (The hash form builds it on every
    /// call: std's `HashMap` has no entry API for borrowed keys. Only levels with more than
    /// `FEW_MAX` children pay that, and only on subscribe.)
    pub(crate) fn get_or_insert_with<Q>(
        &mut self,
        key: &Q,
        to_owned: impl FnOnce(&Q) -> K,
        make: impl FnOnce() -> V,
    ) -> &mut V
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if let SmallMap::Few(entries) = self {
            if entries.len() >= FEW_MAX && !entries.iter().any(|(k, _)| k.borrow() == key) {
                self.grow_into_map();
            }
        }
        match self {
            SmallMap::Few(entries) => {
                let index = match entries.iter().position(|(k, _)| k.borrow() == key) {
                    Some(index) => index,
                    None => {
                        entries.reserve_exact(1);
                        entries.push((to_owned(key), make()));
                        entries.len() - 1
                    }
                };
                // In range: `index` was just found or just pushed.
                &mut entries[index].1
            }
            SmallMap::Many(map) => map.entry(to_owned(key)).or_insert_with(make),
        }
    }

    /// Turns a full vector into a hash table before it takes one more key.
    fn grow_into_map(&mut self) {
        if let SmallMap::Few(entries) = self {
            let mut map = LevelMap::with_capacity_and_hasher(FEW_MAX * 2, LevelHasher);
            map.extend(entries.drain(..));
            *self = SmallMap::Many(Box::new(map));
        }
    }

    pub(crate) fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let removed = match self {
            SmallMap::Few(entries) => {
                let index = entries.iter().position(|(k, _)| k.borrow() == key)?;
                let (_, value) = entries.swap_remove(index);
                if entries.is_empty() {
                    *entries = Vec::new();
                }
                value
            }
            SmallMap::Many(map) => map.remove(key)?,
        };
        if let SmallMap::Many(map) = self {
            if map.len() <= FEW_MAX / 2 {
                let mut entries = Vec::with_capacity(map.len());
                entries.extend(map.drain());
                *self = SmallMap::Few(entries);
            }
        }
        Some(removed)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::{SmallMap, FEW_MAX};

    #[derive(Clone, Debug)]
    enum Op {
        Insert(u8, u32),
        GetOrInsert(u8, u32),
        Remove(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        // Keys 0..24 push the map across the vector/table threshold both ways.
        prop_oneof![
            (0u8..24, any::<u32>()).prop_map(|(k, v)| Op::Insert(k, v)),
            (0u8..24, any::<u32>()).prop_map(|(k, v)| Op::GetOrInsert(k, v)),
            (0u8..24).prop_map(Op::Remove),
        ]
    }

    proptest! {
        #[test]
        fn behaves_like_a_map(ops in prop::collection::vec(op(), 1..200)) {
            let mut map = SmallMap::default();
            let mut model = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Insert(k, v) => prop_assert_eq!(map.insert(k, v), model.insert(k, v)),
                    Op::GetOrInsert(k, v) => {
                        let got = *map.get_or_insert_with(&k, |k| *k, || v);
                        prop_assert_eq!(got, *model.entry(k).or_insert(v));
                    }
                    Op::Remove(k) => prop_assert_eq!(map.remove(&k), model.remove(&k)),
                }
                prop_assert_eq!(map.len(), model.len());
                let mut entries: Vec<(u8, u32)> = map.iter().map(|(k, v)| (*k, *v)).collect();
                entries.sort();
                let wanted: Vec<(u8, u32)> = model.iter().map(|(k, v)| (*k, *v)).collect();
                prop_assert_eq!(entries, wanted);
                for k in 0u8..24 {
                    prop_assert_eq!(map.get(&k), model.get(&k));
                }
            }
        }
    }

    #[test]
    fn switches_form_at_the_thresholds() {
        let mut map = SmallMap::default();
        for key in 0..FEW_MAX {
            map.insert(key, ());
        }
        assert!(matches!(map, SmallMap::Few(_)));
        map.insert(FEW_MAX, ());
        assert!(matches!(map, SmallMap::Many(_)));
        for key in 0..FEW_MAX - FEW_MAX / 2 {
            map.remove(&key);
            assert!(matches!(map, SmallMap::Many(_)), "hysteresis");
        }
        map.remove(&(FEW_MAX - FEW_MAX / 2));
        assert!(matches!(map, SmallMap::Few(_)));
        assert_eq!(map.len(), FEW_MAX / 2);
        let drained: Vec<()> = map.take_values().collect();
        assert_eq!(drained.len(), FEW_MAX / 2);
        assert!(map.is_empty());
    }
}
