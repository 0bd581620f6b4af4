//! A fixed-bucket latency histogram of relaxed atomics: one `fetch_add` for the bucket and one
//! for the sum per observation, read at scrape time.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A histogram's bucket layout: upper bounds in seconds, increasing, at most [`MAX_SLOTS`] - 1.
pub trait Buckets {
    const SECONDS: &'static [f64];
}

/// Upper bounds of the store commit buckets, in seconds (100 µs to 2.5 s; above goes to `+Inf`).
pub const BUCKETS_SECONDS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// The default layout: [`BUCKETS_SECONDS`] (durable store commits).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CommitBuckets;

impl Buckets for CommitBuckets {
    const SECONDS: &'static [f64] = &BUCKETS_SECONDS;
}

/// Room for every layout's buckets plus `+Inf` (unused slots stay 0).
pub const MAX_SLOTS: usize = 24;

/// Durations observed, counted per bucket of `B`.
#[derive(Debug, Default)]
pub struct Histogram<B = CommitBuckets> {
    /// Per bucket (not cumulative); slot `B::SECONDS.len()` is `+Inf`.
    counts: [AtomicU64; MAX_SLOTS],
    sum_nanos: AtomicU64,
    layout: PhantomData<B>,
}

/// A copy of a [`Histogram`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HistogramSnapshot<B = CommitBuckets> {
    /// Per bucket of `B` (not cumulative), then `+Inf`, then unused zeros.
    pub counts: [u64; MAX_SLOTS],
    /// Sum of the observations, in nanoseconds.
    pub sum_nanos: u64,
    layout: PhantomData<B>,
}

impl<B: Buckets> Histogram<B> {
    /// Count one observation of `elapsed`.
    pub fn observe(&self, elapsed: Duration) {
        const { assert!(B::SECONDS.len() < MAX_SLOTS) };
        let secs = elapsed.as_secs_f64();
        let slot = B::SECONDS
            .iter()
            .position(|&bound| secs <= bound)
            .unwrap_or(B::SECONDS.len());
        self.counts[slot].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot<B> {
        HistogramSnapshot {
            counts: self.counts.each_ref().map(|c| c.load(Ordering::Relaxed)),
            sum_nanos: self.sum_nanos.load(Ordering::Relaxed),
            layout: PhantomData,
        }
    }
}

impl<B: Buckets> HistogramSnapshot<B> {
    /// Observations counted.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// `(upper bound in seconds, count)` per bucket, `+Inf` last, as the encoder wants them.
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        B::SECONDS
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
        let h: Histogram = Histogram::default();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(10));
        let s = h.snapshot();
        assert_eq!(s.count(), 3);
        assert_eq!(s.counts[0], 1, "50 µs <= 100 µs");
        assert_eq!(s.counts[5], 1, "3 ms in (2.5 ms, 5 ms]");
        assert_eq!(s.counts[BUCKETS_SECONDS.len()], 1, "10 s in +Inf");
        assert_eq!(s.buckets().len(), BUCKETS_SECONDS.len() + 1);
        assert_eq!(s.buckets().last(), Some(&(f64::INFINITY, 1)));
        assert!((s.sum_seconds() - 10.00305).abs() < 1e-9);
    }
}
