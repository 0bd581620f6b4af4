//! The keep-alive deadline of one connection.
//!
//! What the limit is (the client's keep-alive or `transport.defaultKeepAlive`, x 1.5, or none
//! when the inactivity monitor is off) is decided once, by `config::compile`:
//! [`crate::config::Inactivity`]. The connection is closed when nothing at all has been
//! received for that long (MQTT 3.1.1 3.1.2.10). The connection task holds a deadline that every inbound read moves,
//! so the close happens at the exact instant (tokio timer precision, about 1 ms), not on a
//! periodic tick as ActiveMQ does.

use std::num::NonZeroU32;
use std::time::Duration;

use tokio::time::Instant;

/// The moving deadline of one connection.
#[derive(Debug)]
pub struct KeepAlive {
    /// In milliseconds (a parked connection keeps this struct: 4 bytes where a `Duration`
    /// takes 16). At least 1 ms; at most 49.7 days, as the connection's limit already is.
    limit_ms: Option<NonZeroU32>,
    deadline: Instant,
}

impl KeepAlive {
    /// `limit`: `None` when the inactivity monitor is off.
    pub fn new(limit: Option<Duration>) -> Self {
        let limit_ms = limit.map(|limit| {
            let ms = u32::try_from(limit.as_millis()).unwrap_or(u32::MAX);
            NonZeroU32::new(ms).unwrap_or(NonZeroU32::MIN)
        });
        KeepAlive {
            limit_ms,
            deadline: far_future(),
        }
        .touched()
    }

    fn touched(mut self) -> Self {
        self.touch();
        self
    }

    /// Inbound bytes arrived.
    pub fn touch(&mut self) {
        self.deadline = match self.limit() {
            Some(limit) => Instant::now() + limit,
            None => far_future(),
        };
    }

    pub fn is_enabled(&self) -> bool {
        self.limit_ms.is_some()
    }

    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    pub fn limit(&self) -> Option<Duration> {
        self.limit_ms
            .map(|ms| Duration::from_millis(u64::from(ms.get())))
    }
}

/// An instant that never comes in practice (a disabled timer still needs a value).
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_limit_is_kept_in_milliseconds() {
        let ka = KeepAlive::new(Some(Duration::from_millis(1_500)));
        assert_eq!(ka.limit(), Some(Duration::from_millis(1_500)));
        assert_eq!(ka.deadline(), Instant::now() + Duration::from_millis(1_500));
        assert_eq!(
            KeepAlive::new(Some(Duration::ZERO)).limit(),
            Some(Duration::from_millis(1)),
            "a zero limit stays a limit"
        );
        let days = Duration::from_secs(86_400 * 60);
        assert_eq!(
            KeepAlive::new(Some(days)).limit(),
            Some(Duration::from_millis(u64::from(u32::MAX))),
            "capped at 49.7 days"
        );
        assert!(!KeepAlive::new(None).is_enabled());
        assert_eq!(std::mem::size_of::<KeepAlive>(), 24);
    }
}
