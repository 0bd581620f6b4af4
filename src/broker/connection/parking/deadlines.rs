//! The parked connections' keep-alive deadlines, earliest first.
//!
//! One entry per parked connection with keep-alive, so its size is part of every idle
//! connection's memory: a deadline is held as milliseconds after the lot's start (rounded up,
//! so it never comes early) beside the connection's key, 16 bytes, where an `Instant` and the
//! key took 24 (docs/scaling.md).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

pub(super) struct Deadlines {
    epoch: Instant,
    /// (milliseconds after `epoch`, connection key), earliest on top.
    heap: BinaryHeap<Reverse<(u64, u64)>>,
}

impl Default for Deadlines {
    fn default() -> Self {
        Deadlines {
            epoch: Instant::now(),
            heap: BinaryHeap::new(),
        }
    }
}

impl Deadlines {
    fn to_ms(&self, at: Instant) -> u64 {
        let after = at.saturating_duration_since(self.epoch);
        // Rounded up: a deadline may fire up to 1 ms late, never early.
        let ms = after.as_millis() + u128::from(!after.subsec_nanos().is_multiple_of(1_000_000));
        u64::try_from(ms).unwrap_or(u64::MAX)
    }

    fn to_instant(&self, ms: u64) -> Instant {
        self.epoch
            .checked_add(Duration::from_millis(ms))
            .unwrap_or_else(|| self.epoch + Duration::from_secs(86_400 * 365 * 30))
    }

    pub(super) fn push(&mut self, at: Instant, key: u64) {
        let ms = self.to_ms(at);
        self.heap.push(Reverse((ms, key)));
    }

    /// The earliest deadline.
    pub(super) fn earliest(&self) -> Option<Instant> {
        self.heap
            .peek()
            .map(|Reverse((ms, _))| self.to_instant(*ms))
    }

    /// Take the earliest entry if it is due at `now`.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<u64> {
        let Reverse((ms, key)) = *self.heap.peek()?;
        if self.to_instant(ms) > now {
            return None;
        }
        self.heap.pop();
        Some(key)
    }

    pub(super) fn len(&self) -> usize {
        self.heap.len()
    }

    #[cfg(test)]
    pub(super) fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Keep only `entries` (the parked connections' own deadlines).
    pub(super) fn rebuild(&mut self, entries: impl Iterator<Item = (Instant, u64)>) {
        let heap = entries
            .map(|(at, key)| Reverse((self.to_ms(at), key)))
            .collect();
        self.heap = heap;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_come_in_order_and_never_early() {
        let mut d = Deadlines::default();
        let base = Instant::now();
        d.push(base + Duration::from_micros(2_500), 2);
        d.push(base + Duration::from_millis(1), 1);
        d.push(base + Duration::from_secs(60), 3);
        let earliest = d.earliest().expect("an entry");
        assert!(earliest >= base + Duration::from_millis(1));
        assert!(earliest <= base + Duration::from_millis(2));
        assert_eq!(d.pop_due(base), None, "nothing is due early");
        assert_eq!(d.pop_due(base + Duration::from_millis(3)), Some(1));
        assert_eq!(d.pop_due(base + Duration::from_millis(3)), Some(2));
        assert_eq!(d.pop_due(base + Duration::from_millis(3)), None);
        assert_eq!(d.len(), 1);
        d.rebuild(std::iter::empty());
        assert!(d.is_empty());
        assert_eq!(std::mem::size_of::<Reverse<(u64, u64)>>(), 16);
    }
}
