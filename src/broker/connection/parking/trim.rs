//! Giving the allocator's free pages back to the system after a burst of parks.
//!
//! A connect storm allocates a task, buffers and a handshake per connection, all alive at
//! once; parking frees them. glibc's allocator keeps what was freed for reuse, and an idle
//! broker reuses little of it: with 19,000 connections parked after one storm, about 130
//! bytes per connection were whole free pages inside the heap
//! (benches/results/2026-12-03-parked-record/). `malloc_trim(0)` hands such pages back
//! (`madvise`), keeping the memory mapped for reuse. The lot's loop calls it once new
//! connections have stopped parking for [`QUIET`] after at least [`MIN_PARKS`] of them: after
//! a storm or a reconnect wave. Parks of connections that parked before (subscribers woken by
//! a delivery) do not count, so a broadcast to many parked subscribers does not trim each time
//! (each call walks every arena under its lock; the time it took is logged at debug level).
//!
//! The call is `crate::broker::allocator::release_free_memory` (glibc only), which also
//! returns what stays free after other bursts, once a second at most.

use std::time::{Duration, Instant};

/// First parks of new connections since the last trim before one is worth its walk of the
/// heap.
pub(super) const MIN_PARKS: usize = 1024;

/// How long no new connection must have parked before the trim (the burst is over). A
/// storm's connections park every few milliseconds; 250 ms without one means it ended.
pub(super) const QUIET: Duration = Duration::from_millis(250);

/// First parks of new connections counted since the last trim.
#[derive(Debug, Default)]
pub(super) struct Trim {
    parks: usize,
    last_park: Option<Instant>,
}

impl Trim {
    /// A new connection parked for the first time at `now`.
    pub(super) fn parked(&mut self, now: Instant) {
        self.parks += 1;
        self.last_park = Some(now);
    }

    /// When the next trim is due (`None`: too few parks since the last one).
    pub(super) fn due_at(&self) -> Option<Instant> {
        self.last_park
            .filter(|_| self.parks >= MIN_PARKS)
            .map(|last| last + QUIET)
    }

    /// Whether a trim is due at `now`; if so, the count starts over (the caller trims).
    pub(super) fn take_due(&mut self, now: Instant) -> bool {
        let due = self.due_at().is_some_and(|at| at <= now);
        if due {
            *self = Trim::default();
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_only_after_enough_parks_and_a_quiet_moment() {
        let start = Instant::now();
        let mut trim = Trim::default();
        assert_eq!(trim.due_at(), None);
        for _ in 0..MIN_PARKS - 1 {
            trim.parked(start);
        }
        assert_eq!(trim.due_at(), None, "too few parks");
        assert!(!trim.take_due(start + QUIET * 10));
        trim.parked(start + QUIET);
        assert_eq!(trim.due_at(), Some(start + QUIET * 2));
        assert!(!trim.take_due(start + QUIET), "parks are still coming");
        assert!(trim.take_due(start + QUIET * 2));
        assert_eq!(trim.due_at(), None, "counted again from zero");
        crate::broker::allocator::release_free_memory();
    }
}
