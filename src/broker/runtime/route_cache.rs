//! Routes resolved once and reused by the next publishes to the same topic.
//!
//! Resolving a route walks the subscription tree (under its read lock) and looks every
//! matching session up in the registry (under its read lock). Both locks are shared by every
//! publisher: taking a read lock writes its state word, so under steady traffic that cache
//! line moves between cores on every publish. A steady publisher sends to the same few topics
//! again and again, so the resolved route (each matching session and its subscriptions'
//! options) is kept here and reused while nothing that decides routes has changed: the
//! registry's routes generation ([`SessionRegistry::routes_changed`]) is bumped by every
//! subscribe, unsubscribe, restored or removed subscription, and every session removed from the
//! registry (a session's end, a takeover by a clean start, expiry, a cluster handover). A
//! subscription a reloaded policy denies is removed through the same unsubscribe.
//!
//! Where: one small direct-mapped table per worker thread, not per connection. An idle
//! connection costs nothing (no field in the connection, nothing allocated until a thread
//! routes), the publishers of a fan-in share the one entry of their topic, and no lock or
//! shared write is taken on a hit: only the generation is read (a cache line written only when
//! subscriptions change). A task that moves to another thread misses once.
//!
//! What is cached is the part that does not depend on the message or the publisher: sessions
//! (held weakly: a cached route never keeps an ended session alive) and their matching
//! subscriptions, highest QoS first. No Local, the delivered QoS, RETAIN (Retain As Published),
//! the protocol version of each session and the pending limit are applied per publish, exactly
//! as without the cache. Topics matched by a shared subscription group are not cached (the
//! group's choice is made per message); their entry only says so.
//!
//! Correctness of the generation: the route is resolved after reading the generation and
//! stored with it. A change bumps the generation after it is made and before it is answered
//! (SUBACK, UNSUBACK, CONNACK), so a publish that starts after the answer reads the new
//! generation and resolves the route again; a change racing with the resolution leaves the
//! entry with the older generation, never used again.
//!
//! [`SessionRegistry::routes_changed`]: crate::broker::session::registry::SessionRegistry::routes_changed

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use smallvec::SmallVec;

use crate::broker::session::{Session, SessionId, SubscriptionOptions};

/// Entries per thread (a power of two). A publisher to more topics than this at once shares
/// slots and resolves some routes again: correct, only slower.
const SLOTS: usize = 64;

/// Routes with more matching subscriptions than this are not cached (the walk is then a
/// small part of the publish, and an entry would hold a large list per thread).
pub(super) const MAX_CACHED_MATCHES: usize = 256;

static NEXT_BROKER_ID: AtomicU64 = AtomicU64::new(1);

/// A process-unique id for a new broker (the cache key's first part).
pub(super) fn next_broker_id() -> u64 {
    NEXT_BROKER_ID.fetch_add(1, Ordering::Relaxed)
}

/// The matching subscriptions of one session, highest QoS first (as `push_targets` wants).
pub(super) type Run = SmallVec<[(SessionId, SubscriptionOptions); 1]>;

/// One session of a cached route.
pub(super) struct CachedTarget {
    pub(super) session: Weak<Session>,
    pub(super) run: Run,
}

/// A resolved route: its targets, or `None` when a shared group matches (not cached).
pub(super) type CachedRoute = Option<Arc<[CachedTarget]>>;

struct Entry {
    broker: u64,
    generation: u64,
    topic: Arc<str>,
    route: CachedRoute,
}

struct ThreadCache {
    hasher: ahash::RandomState,
    /// Allocated on the first route this thread resolves.
    slots: Vec<Option<Entry>>,
}

thread_local! {
    static CACHE: RefCell<ThreadCache> = RefCell::new(ThreadCache {
        hasher: ahash::RandomState::new(),
        slots: Vec::new(),
    });
}

impl ThreadCache {
    fn slot(&self, broker: u64, topic: &str) -> usize {
        (self.hasher.hash_one((broker, topic)) as usize) & (SLOTS - 1)
    }
}

/// The route of `topic` for `broker` cached on this thread at `generation`, if any. The
/// returned `Arc` is a reference count on a thread-local entry's list (not shared with other
/// threads), so cloning it writes no shared cache line.
pub(super) fn lookup(broker: u64, generation: u64, topic: &Arc<str>) -> Option<CachedRoute> {
    CACHE
        .try_with(|cache| {
            let cache = cache.borrow();
            if cache.slots.is_empty() {
                return None;
            }
            let entry = cache.slots[cache.slot(broker, topic)].as_ref()?;
            let same_topic = Arc::ptr_eq(&entry.topic, topic) || *entry.topic == **topic;
            (entry.broker == broker && entry.generation == generation && same_topic)
                .then(|| entry.route.clone())
        })
        .ok()
        .flatten()
}

/// `topic` as the `Arc<str>` of the route this thread keeps for the same name and `broker`
/// (whatever its generation), or a new one. The route is stored with the `Arc` of the first
/// message routed to it, so a publisher sending to the same names again and again makes no new
/// `Arc` per PUBLISH (the decoder has already copied the name once; making one more copy,
/// freed later on the subscriber's thread, was the largest allocator cost of a QoS 0 fan-in
/// profile), and the next [`lookup`] finds its entry by pointer. A name whose slot another
/// topic took since is made afresh.
pub(crate) fn shared_topic(broker: u64, topic: String) -> Arc<str> {
    CACHE
        .try_with(|cache| {
            let cache = cache.borrow();
            if cache.slots.is_empty() {
                return None;
            }
            let entry = cache.slots[cache.slot(broker, &topic)].as_ref()?;
            (entry.broker == broker && *entry.topic == *topic).then(|| entry.topic.clone())
        })
        .ok()
        .flatten()
        .unwrap_or_else(|| Arc::from(topic))
}

/// Keep `route` as the route of `topic` for `broker`, resolved at `generation` (replacing
/// whatever shared its slot).
pub(super) fn store(broker: u64, generation: u64, topic: &Arc<str>, route: CachedRoute) {
    let _ = CACHE.try_with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.slots.is_empty() {
            cache.slots.resize_with(SLOTS, || None);
        }
        let slot = cache.slot(broker, topic);
        cache.slots[slot] = Some(Entry {
            broker,
            generation,
            topic: topic.clone(),
            route,
        });
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_published_again_shares_the_arc_its_route_was_kept_with() {
        let broker = next_broker_id();
        let first = shared_topic(broker, "sensors/1/temp".to_owned());
        store(broker, 1, &first, None);
        let again = shared_topic(broker, "sensors/1/temp".to_owned());
        assert!(Arc::ptr_eq(&first, &again));
        let other = shared_topic(broker, "sensors/2/temp".to_owned());
        assert_eq!(&*other, "sensors/2/temp");
        assert!(!Arc::ptr_eq(&first, &other));
        let other_broker = shared_topic(next_broker_id(), "sensors/1/temp".to_owned());
        assert!(
            !Arc::ptr_eq(&first, &other_broker),
            "another broker's entry is not shared"
        );
    }

    #[test]
    fn names_sharing_a_slot_replace_each_other_and_stay_correct() {
        let broker = next_broker_id();
        let names: Vec<String> = (0..SLOTS * 4).map(|i| format!("t/{i}")).collect();
        for _ in 0..2 {
            for name in &names {
                let topic = shared_topic(broker, name.clone());
                assert_eq!(&*topic, name.as_str());
                store(broker, 1, &topic, None);
            }
        }
    }
}
