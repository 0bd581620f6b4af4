//! The keep-alive deadline of one connection.
//!
//! What the limit is (the client's keep-alive or `transport.defaultKeepAlive`, x 1.5, or none
//! when the inactivity monitor is off) is decided once, by `config::compile`:
//! [`crate::config::Inactivity`]. The connection is closed when nothing at all has been
//! received for that long (MQTT 3.1.1 3.1.2.10). The connection task holds a deadline that every inbound read moves,
//! so the close happens at the exact instant (tokio timer precision, about 1 ms), not on a
//! periodic tick as ActiveMQ does.

use std::time::Duration;

use tokio::time::Instant;

/// The moving deadline of one connection.
#[derive(Debug)]
pub struct KeepAlive {
    limit: Option<Duration>,
    deadline: Instant,
}

impl KeepAlive {
    pub fn new(limit: Option<Duration>) -> Self {
        KeepAlive {
            limit,
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
        self.deadline = match self.limit {
            Some(limit) => Instant::now() + limit,
            None => far_future(),
        };
    }

    pub fn is_enabled(&self) -> bool {
        self.limit.is_some()
    }

    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    pub fn limit(&self) -> Option<Duration> {
        self.limit
    }
}

/// An instant that never comes in practice (a disabled timer still needs a value).
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365)
}
