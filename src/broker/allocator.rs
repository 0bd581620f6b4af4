//! Giving memory the broker freed back to the system.
//!
//! glibc's allocator keeps freed memory for reuse, in one arena per thread that allocated it,
//! and returns it to the system only from the top of a heap. A burst that allocates much and
//! frees it leaves the process resident at the burst's peak: recovering a long paged queue at
//! start (the store's page cache fills while envelopes are read), delivering it (pages read
//! back on the connections' threads), a connect storm. Measured with heaptrack after 20,000
//! queued messages of 6 KB were recovered and drained: 100 MiB of anonymous memory resident,
//! 8.5 MiB of it in use; `malloc_trim(0)` brought it to 15 MiB.
//!
//! [`spawn_release`] looks at the allocator's free bytes every [`CHECK_EVERY`] (less often
//! when a look is slow: [`next_look_in`]) and trims when at least [`WORTH_RETURNING`] freed
//! since the last trim stayed free across two looks: memory freed and taken again within a
//! second is a running load's working set, and giving it back would only cost page faults.
//! `malloc_trim(0)` hands whole free pages back (`madvise`) and keeps them mapped for reuse. The connection lot trims on its own right after a burst of parks
//! (`connection/parking/trim.rs`), so that a storm's memory goes back before the next look.
//!
//! Large blocks (message bodies, the store's pages of large messages) are mapped apart at a
//! fixed threshold ([`map_large_blocks_apart`]), so that freeing one returns it at once.
//!
//! Other allocators (and other C libraries) return memory on their own; these calls are
//! no-ops there.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// How often the allocator's free bytes are looked at, at most (see [`next_look_in`]).
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Looking and trimming lock each arena in turn and walk its free lists: on a very large heap
/// that takes milliseconds. The time spent on them is kept under this share of the time.
const SHARE_OF_TIME: u32 = 1_000;

/// When to look again after a look (and trim) that took `took`: [`CHECK_EVERY`], or later
/// when looking costs more than a thousandth of the time.
pub fn next_look_in(took: Duration) -> Duration {
    CHECK_EVERY.max(took.saturating_mul(SHARE_OF_TIME))
}

/// Free bytes worth a trim when they stayed free from one look to the next.
pub const WORTH_RETURNING: usize = 8 << 20;

/// When to trim, from the free bytes of successive looks. A trim leaves the bytes it returned
/// counted as free (their pages are given back, the chunks stay in the arena), so what
/// counts is what was freed since the last trim: the free bytes above the lowest figure seen
/// since then.
#[derive(Debug, Default, Clone, Copy)]
pub struct Release {
    /// Free bytes right after the last trim, or fewer if some were taken again since.
    baseline: usize,
    freed_at_last_look: usize,
}

impl Release {
    /// The allocator holds `free` bytes now: whether to trim (enough was freed since the
    /// last trim at this look and the one before).
    pub fn looked(&mut self, free: usize) -> bool {
        self.baseline = self.baseline.min(free);
        let freed = free - self.baseline;
        let due = freed >= WORTH_RETURNING && self.freed_at_last_look >= WORTH_RETURNING;
        self.freed_at_last_look = if due { 0 } else { freed };
        due
    }

    /// A trim left `free` bytes counted as free.
    pub fn trimmed(&mut self, free: usize) {
        self.baseline = free;
        self.freed_at_last_look = 0;
    }
}

/// Start the background task of this module (ends with `shutdown`).
pub fn spawn_release(shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut release = Release::default();
        let mut wait = CHECK_EVERY;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            // Both walk every arena under its lock: off the runtime's workers.
            let looked = tokio::task::spawn_blocking(move || {
                let started = Instant::now();
                let free = free_bytes()?;
                let trimmed = release.looked(free);
                if trimmed {
                    release_free_memory();
                    release.trimmed(free_bytes()?);
                }
                Some((release, free, trimmed, started.elapsed()))
            })
            .await;
            let Ok(Some((after, free, trimmed, took))) = looked else {
                return;
            };
            release = after;
            wait = next_look_in(took);
            if trimmed {
                tracing::debug!(
                    free_bytes = free,
                    took_us = took.as_micros() as u64,
                    "returned the allocator's free pages to the system"
                );
            }
        }
    });
}

/// Allocations of this size or more get pages of their own, returned to the system when
/// freed (glibc's `M_MMAP_THRESHOLD`).
pub const OWN_PAGES_FROM: usize = 256 * 1024;

/// Give large allocations (message bodies read back, store pages) pages of their own. glibc
/// maps a block above 128 KiB on its own at first, but the first such block freed raises
/// that threshold to its size (up to 32 MiB): from then on 2 MiB bodies come from the arena
/// of the thread that allocates them, one per thread that reads or delivers, and a freed
/// one stays resident until a trim. Measured on a drain of 150 queued messages of 2 MiB
/// (memoryUsage 32 MiB): 118 MiB of heap in use at the peak, 191 MiB resident; 106 MiB with
/// the threshold set (glibc no longer moves it). Call before the runtime's threads start.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn map_large_blocks_apart() {
    let threshold = libc::c_int::try_from(OWN_PAGES_FROM).unwrap_or(libc::c_int::MAX);
    // SAFETY: `mallopt` takes two integers and only changes the allocator's parameters;
    // M_MMAP_THRESHOLD accepts any value up to 32 MiB.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, threshold);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn map_large_blocks_apart() {}

/// Bytes the allocator holds free (glibc's `mallinfo2().fordblks`); `None` where the
/// allocator is not glibc's.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn free_bytes() -> Option<usize> {
    // SAFETY: `mallinfo2` takes no pointer, returns a plain struct by value and is
    // thread-safe (it locks each arena in turn).
    let info = unsafe { libc::mallinfo2() };
    Some(info.fordblks)
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn free_bytes() -> Option<usize> {
    None
}

/// Return the allocator's free pages to the system.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn release_free_memory() {
    // SAFETY: `malloc_trim` takes no pointer and is thread-safe (it locks each arena); it
    // only releases pages no allocation uses.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release_free_memory() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_only_what_stayed_free_across_two_looks() {
        let mut release = Release::default();
        assert!(!release.looked(WORTH_RETURNING), "one look is not enough");
        assert!(release.looked(WORTH_RETURNING * 2), "free at two looks");
        release.trimmed(WORTH_RETURNING * 2);
        for _ in 0..5 {
            assert!(
                !release.looked(WORTH_RETURNING * 2),
                "what was trimmed still counts as free: not trimmed again"
            );
        }
        // Some of it is taken again, then more than that is freed.
        assert!(!release.looked(WORTH_RETURNING / 2));
        assert!(
            !release.looked(WORTH_RETURNING * 3 / 2 - 1),
            "too little freed since"
        );
        assert!(!release.looked(WORTH_RETURNING * 3 / 2));
        assert!(
            release.looked(WORTH_RETURNING * 3 / 2),
            "freed since the trim, twice"
        );
        release.trimmed(WORTH_RETURNING * 3 / 2);
        assert!(
            !release.looked(WORTH_RETURNING * 3),
            "one look is not enough"
        );
        assert!(
            !release.looked(WORTH_RETURNING * 2 - 1),
            "taken again in between"
        );
    }

    #[test]
    fn looking_takes_at_most_a_thousandth_of_the_time() {
        assert_eq!(next_look_in(Duration::from_micros(300)), CHECK_EVERY);
        assert_eq!(
            next_look_in(Duration::from_millis(5)),
            Duration::from_secs(5)
        );
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn free_bytes_see_what_was_freed() {
        // Small blocks come from an arena (large ones are mapped on their own); every other
        // one stays allocated, so the freed ones stay in the arena as free chunks.
        let blocks: Vec<Vec<u8>> = (0..16_384).map(|i| vec![i as u8; 1_000]).collect();
        let before = free_bytes().expect("glibc");
        let kept: Vec<Vec<u8>> = blocks.into_iter().step_by(2).collect();
        let after = free_bytes().expect("glibc");
        // Other tests allocate meanwhile: only a quarter of what was freed must show.
        assert!(
            after >= before + 2_000_000,
            "free {before} -> {after} after freeing 8 MB"
        );
        drop(kept);
    }
}
