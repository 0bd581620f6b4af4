//! mosquitto's `$SYS/broker/load/...` figures: exponentially decaying averages of a per-minute
//! rate over 1, 5 and 15 minutes, updated once per publication interval as mosquitto's
//! `sys_tree.c` does (the rate of the last interval scaled to a minute, then
//! `load = rate + e^(-dt/window) * (load - rate)`, as the Unix load average).

use std::time::Duration;

/// The three windows, with the topic suffix mosquitto gives them.
pub const WINDOWS: [(&str, f64); 3] = [("1min", 60.0), ("5min", 300.0), ("15min", 900.0)];

/// The decaying averages of one counter.
#[derive(Debug, Clone, Default)]
pub struct LoadAverage {
    /// The counter's value at the previous update (`None` before the first).
    last_total: Option<u64>,
    /// Per-minute averages over each of [`WINDOWS`].
    averages: [f64; 3],
}

impl LoadAverage {
    /// Take the counter's `total` now, `elapsed` after the previous update; returns the three
    /// averages (events per minute). The first call only records the total (all zero).
    pub fn update(&mut self, total: u64, elapsed: Duration) -> [f64; 3] {
        let secs = elapsed.as_secs_f64();
        if let Some(last) = self.last_total.replace(total) {
            if secs > 0.0 {
                // A counter never goes back; saturate anyway rather than trust it.
                let per_minute = total.saturating_sub(last) as f64 * 60.0 / secs;
                for (average, (_, window)) in self.averages.iter_mut().zip(WINDOWS) {
                    let decay = (-secs / window).exp();
                    *average = per_minute + decay * (*average - per_minute);
                }
            }
        }
        self.averages
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_steady_rate_converges_on_itself_faster_over_one_minute_than_fifteen() {
        let mut load = LoadAverage::default();
        assert_eq!(load.update(0, Duration::ZERO), [0.0; 3]);
        // 10 events every 10 s = 60 per minute.
        let mut total = 0;
        let mut averages = [0.0; 3];
        for step in 1..=6 {
            total += 10;
            averages = load.update(total, Duration::from_secs(10));
            if step == 1 {
                // One step: 60 * (1 - e^(-10/60)) = 9.21...
                assert!((averages[0] - 60.0 * (1.0 - (-10.0f64 / 60.0).exp())).abs() < 1e-9);
            }
        }
        assert!(
            averages[0] > averages[1] && averages[1] > averages[2],
            "{averages:?}"
        );
        assert!(averages[0] < 60.0 && averages[0] > 35.0, "{averages:?}");
        // Nothing more: every average decays, none goes negative.
        let decayed = load.update(total, Duration::from_secs(60));
        assert!(decayed
            .iter()
            .zip(averages)
            .all(|(d, a)| *d < a && *d >= 0.0));
    }

    #[test]
    fn no_elapsed_time_changes_nothing() {
        let mut load = LoadAverage::default();
        load.update(5, Duration::from_secs(1));
        let before = load.update(10, Duration::from_secs(1));
        assert_eq!(load.update(50, Duration::ZERO), before);
    }
}
