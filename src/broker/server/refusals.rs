//! Sockets refused beyond a connector's `maximumConnections`, logged without flooding the log:
//! a flood of connects to a full connector (a reconnect storm, a scanner) would otherwise write
//! a WARN and an access-log line per socket, thousands a second, into the one log stream both
//! go to (the access log is the `ferromq::access` target of that stream, on by default).
//!
//! The first refusal after a quiet spell gets its WARN and its access line, with the peer's
//! address. Refusals within the next [`SUMMARY_EVERY`] are counted (the connector's metric
//! counts each one) and logged as one summary, a WARN and an access line with their `count`,
//! when that window ends; while refusals go on there is one summary per window. A window with
//! none ends the flood: the next refusal is logged on its own again.

use std::time::Duration;

use tokio::time::Instant;

/// How long refusals after a logged one are counted before their summary is written.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(10);

/// One connector's refusals at `maximumConnections`: which get their own lines, and when the
/// others' summary is due. Plain data: the accept loop passes the time in.
#[derive(Debug)]
pub(crate) struct RefusalLog {
    every: Duration,
    /// End of the current window: refusals before it are counted, not logged.
    quiet_until: Option<Instant>,
    /// Refusals counted in the current window.
    suppressed: u64,
}

impl RefusalLog {
    pub(crate) fn new(every: Duration) -> RefusalLog {
        RefusalLog {
            every,
            quiet_until: None,
            suppressed: 0,
        }
    }

    /// A socket refused at `now`: `true` when it is logged on its own (the first one after a
    /// quiet spell), `false` when it is counted for the window's summary.
    pub(crate) fn refused(&mut self, now: Instant) -> bool {
        match self.quiet_until {
            Some(until) if now < until => {
                self.suppressed += 1;
                false
            }
            _ => {
                self.quiet_until = Some(now + self.every);
                true
            }
        }
    }

    /// When the summary of the refusals counted in this window is due; `None` while there is
    /// nothing to summarise.
    pub(crate) fn summary_due(&self) -> Option<Instant> {
        self.quiet_until.filter(|_| self.suppressed > 0)
    }

    /// The number of refusals the summary written at `now` stands for (0: nothing to write).
    /// A new window starts, so that a flood that goes on gets one summary per window.
    pub(crate) fn take_summary(&mut self, now: Instant) -> u64 {
        let count = std::mem::take(&mut self.suppressed);
        if count > 0 {
            self.quiet_until = Some(now + self.every);
        }
        count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVERY: Duration = Duration::from_secs(10);

    #[test]
    fn the_first_refusal_is_logged_and_the_rest_of_its_window_summarised() {
        let start = Instant::now();
        let mut log = RefusalLog::new(EVERY);
        assert_eq!(log.summary_due(), None);
        assert!(log.refused(start), "the first one has its own line");
        assert_eq!(log.summary_due(), None, "nothing suppressed yet");
        for ms in 1..=500 {
            assert!(!log.refused(start + Duration::from_millis(ms)));
        }
        assert_eq!(log.summary_due(), Some(start + EVERY));
        assert_eq!(log.take_summary(start + EVERY), 500);
        // The flood goes on: counted again, one summary per window.
        assert!(!log.refused(start + EVERY + Duration::from_secs(1)));
        assert!(!log.refused(start + EVERY + Duration::from_secs(2)));
        assert_eq!(log.summary_due(), Some(start + 2 * EVERY));
        assert_eq!(log.take_summary(start + 2 * EVERY), 2);
        // A window with no refusal: no summary, and the next refusal has its own line.
        assert_eq!(log.summary_due(), None);
        assert_eq!(log.take_summary(start + 3 * EVERY), 0);
        assert!(log.refused(start + 3 * EVERY + Duration::from_secs(1)));
    }
}
