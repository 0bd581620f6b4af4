//! The topic name of a received PUBLISH as the shared `Arc<str>` of an earlier PUBLISH to the
//! same name on this worker thread.
//!
//! A message carries its topic as an `Arc<str>` (every subscriber's copy shares it). Making a
//! new one per PUBLISH allocated and copied the name once more after the decoder had, and the
//! subscriber's thread freed it: with 64-byte payloads that was the largest allocator cost of
//! a QoS 0 fan-in profile (about 5% of the broker's samples). Publishers send to the same few
//! names again and again, so a small direct-mapped table per worker thread keeps the last
//! `Arc` of each name and hands out clones. Per thread, not per connection: an idle
//! connection costs nothing, and no lock is taken. Long names are not kept (a table of 64
//! names of up to [`MAX_KEPT_BYTES`] bounds what a thread holds).

use std::cell::RefCell;
use std::sync::Arc;

/// Names per thread (a power of two); names that share a slot replace each other.
const SLOTS: usize = 64;
/// Longer names are made afresh each time (and not held by the table).
const MAX_KEPT_BYTES: usize = 256;

struct Recent {
    hasher: ahash::RandomState,
    /// Allocated on the first name this thread keeps.
    slots: Vec<Option<Arc<str>>>,
}

thread_local! {
    static RECENT: RefCell<Recent> = RefCell::new(Recent {
        hasher: ahash::RandomState::new(),
        slots: Vec::new(),
    });
}

/// `topic` as an `Arc<str>`: the one this thread made last for the same name, or a new one
/// (then kept for the next PUBLISH to it).
pub(super) fn shared_topic(topic: String) -> Arc<str> {
    if topic.len() > MAX_KEPT_BYTES {
        return Arc::from(topic);
    }
    RECENT
        .try_with(|recent| {
            let mut recent = recent.borrow_mut();
            if recent.slots.is_empty() {
                recent.slots.resize_with(SLOTS, || None);
            }
            let slot = (recent.hasher.hash_one(topic.as_str()) as usize) & (SLOTS - 1);
            match &recent.slots[slot] {
                Some(kept) if **kept == *topic => kept.clone(),
                _ => {
                    let made: Arc<str> = Arc::from(topic.as_str());
                    recent.slots[slot] = Some(made.clone());
                    made
                }
            }
        })
        .unwrap_or_else(|_| Arc::from(topic.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_published_again_shares_the_first_arc() {
        let first = shared_topic("sensors/1/temp".to_owned());
        let again = shared_topic("sensors/1/temp".to_owned());
        assert!(Arc::ptr_eq(&first, &again));
        let other = shared_topic("sensors/2/temp".to_owned());
        assert_eq!(&*other, "sensors/2/temp");
        assert!(!Arc::ptr_eq(&first, &other));
    }

    #[test]
    fn long_names_are_made_afresh_and_not_kept() {
        let long = "a/".repeat(MAX_KEPT_BYTES);
        let first = shared_topic(long.clone());
        let again = shared_topic(long.clone());
        assert_eq!(*first, *long);
        assert!(!Arc::ptr_eq(&first, &again));
        assert_eq!(Arc::strong_count(&first), 1, "the table holds no reference");
    }

    #[test]
    fn names_sharing_a_slot_replace_each_other_and_stay_correct() {
        let names: Vec<String> = (0..SLOTS * 4).map(|i| format!("t/{i}")).collect();
        for _ in 0..2 {
            for name in &names {
                assert_eq!(&*shared_topic(name.clone()), name.as_str());
            }
        }
    }
}
