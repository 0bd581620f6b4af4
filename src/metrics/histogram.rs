//! A fixed-bucket latency histogram of relaxed atomics: one `fetch_add` for the bucket and one
//! for the sum per observation, read at scrape time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in seconds (100 µs to 2.5 s; above goes to `+Inf`).
pub const BUCKETS_SECONDS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

const SLOTS: usize = BUCKETS_SECONDS.len() + 1;

/// Durations observed, counted per bucket.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Per bucket (not cumulative); the last slot is `+Inf`.
    counts: [AtomicU64; SLOTS],
    sum_nanos: AtomicU64,
}

/// A copy of a [`Histogram`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Per bucket of [`BUCKETS_SECONDS`] (not cumulative), then `+Inf`.
    pub counts: [u64; SLOTS],
    /// Sum of the observations, in nanoseconds.
    pub sum_nanos: u64,
}

impl Histogram {
    /// Count one observation of `elapsed`.
    pub fn observe(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        let slot = BUCKETS_SECONDS
            .iter()
            .position(|&bound| secs <= bound)
            .unwrap_or(SLOTS - 1);
        self.counts[slot].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            counts: self.counts.each_ref().map(|c| c.load(Ordering::Relaxed)),
            sum_nanos: self.sum_nanos.load(Ordering::Relaxed),
        }
    }
}

impl HistogramSnapshot {
    /// Observations counted.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// `(upper bound in seconds, count)` per bucket, `+Inf` last, as the encoder wants them.
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        BUCKETS_SECONDS
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.counts.iter().copied())
            .collect()
    }

    /// Sum of the observations in seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_nanos as f64 / 1e9
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_their_bucket() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(10));
        let s = h.snapshot();
        assert_eq!(s.count(), 3);
        assert_eq!(s.counts[0], 1, "50 µs <= 100 µs");
        assert_eq!(s.counts[5], 1, "3 ms in (2.5 ms, 5 ms]");
        assert_eq!(s.counts[SLOTS - 1], 1, "10 s in +Inf");
        assert!((s.sum_seconds() - 10.00305).abs() < 1e-9);
    }
}
