//! Failed reads of the message shards, logged without flooding the log.
//!
//! While JetStream cannot serve (its meta leader or a stream's leader is being elected, a
//! majority of servers is down) every shard's reader and every session's catch-up fails its
//! consumer create and retries within 100-200 ms: one WARN per attempt was about 10 lines a
//! second per shard (80 a second at 8 shards, 640 at 64) for the whole outage, burying what
//! else the node logged.
//!
//! The retained watch, retrying every 200 ms, did the same (5 lines a second).
//!
//! One [`RetryLog`] per node counts all the shard reads (another, the retained watch's
//! starts). The first failure after a quiet spell gets its
//! WARN with the error; failures within the next [`SUMMARY_EVERY`] are only counted (each at
//! debug level), and the first one after that window is logged with how many were not. When
//! a read starts again after logged failures, one INFO line says so with the count. Plain
//! data: the readers pass the time in.

use std::time::Duration;

use tokio::time::Instant;

/// How long failures after a logged one are only counted.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(10);

/// The node's failed shard reads since the last line about them.
#[derive(Debug, Default)]
pub struct RetryLog {
    /// End of the current window: failures before it are counted, not logged.
    quiet_until: Option<Instant>,
    /// Failures counted, not logged, since the last line.
    unlogged: u64,
    /// When the failures since the last successful read began.
    since: Option<Instant>,
}

/// What to log about one failed read.
#[derive(Debug, PartialEq, Eq)]
pub enum Failure {
    /// Log it at WARN, saying that this many failures since the previous line were not logged.
    Log { unlogged: u64 },
    /// Count it only (debug level).
    Counted,
}

impl RetryLog {
    /// A read failed at `now`.
    pub fn failed(&mut self, now: Instant) -> Failure {
        self.since.get_or_insert(now);
        match self.quiet_until {
            Some(until) if now < until => {
                self.unlogged += 1;
                Failure::Counted
            }
            _ => {
                self.quiet_until = Some(now + SUMMARY_EVERY);
                Failure::Log {
                    unlogged: std::mem::take(&mut self.unlogged),
                }
            }
        }
    }

    /// A read started at `now`: after failures, how many went unlogged since the last line
    /// and how long the failures lasted (`None`: nothing failed since the last such line).
    /// Readers of other shards that recover later find nothing to say.
    pub fn read_again(&mut self, now: Instant) -> Option<(u64, Duration)> {
        let since = self.since.take()?;
        self.quiet_until = None;
        Some((std::mem::take(&mut self.unlogged), now - since))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_window_while_reads_fail_and_one_when_they_succeed_again() {
        let start = Instant::now();
        let mut log = RetryLog::default();
        assert_eq!(log.read_again(start), None, "nothing failed");
        assert_eq!(log.failed(start), Failure::Log { unlogged: 0 });
        // 8 shards retrying every 100 ms for the rest of the window.
        let mut counted = 0;
        for tick in 1..100u32 {
            for _shard in 0..8 {
                if log.failed(start + Duration::from_millis(100) * tick) == Failure::Counted {
                    counted += 1;
                }
            }
        }
        assert_eq!(counted, 99 * 8, "nothing else logged within the window");
        assert_eq!(
            log.failed(start + SUMMARY_EVERY),
            Failure::Log { unlogged: 792 },
            "the next window's first failure says how many were not logged"
        );
        log.failed(start + SUMMARY_EVERY + Duration::from_millis(100));
        assert_eq!(
            log.read_again(start + SUMMARY_EVERY * 2),
            Some((1, SUMMARY_EVERY * 2)),
            "the first read that starts again says how long and how many"
        );
        assert_eq!(
            log.read_again(start + SUMMARY_EVERY * 2),
            None,
            "the other shards' readers have nothing to add"
        );
        assert_eq!(
            log.failed(start + SUMMARY_EVERY * 2 + Duration::from_millis(1)),
            Failure::Log { unlogged: 0 },
            "a new outage is logged at once"
        );
    }
}
