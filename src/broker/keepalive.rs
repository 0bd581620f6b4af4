//! Keep-alive and connect-attempt timing, with ActiveMQ's option semantics.
//!
//! The connection is closed when nothing at all has been received for 1.5 x the keep-alive
//! (MQTT 3.1.1 3.1.2.10). The connection task holds a deadline that every inbound read moves,
//! so the close happens at the exact instant (tokio timer precision, about 1 ms), not on a
//! periodic tick as ActiveMQ does.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::ListenerOptions;

/// The inbound-silence limit for a client that sent `client_keep_alive_secs`, or `None` when
/// nothing is enforced: keep-alive 0 without `transport.defaultKeepAlive`, or
/// `transport.useInactivityMonitor=false`. The default keep-alive (milliseconds) gets the same
/// 1.5 grace factor as the client's value, as in ActiveMQ's MQTTProtocolConverter.
pub fn inbound_silence_limit(
    client_keep_alive_secs: u16,
    options: &ListenerOptions,
) -> Option<Duration> {
    if !options.use_inactivity_monitor {
        return None;
    }
    let keep_alive_ms = match u64::from(client_keep_alive_secs) * 1000 {
        0 => options.default_keep_alive_ms,
        ms => ms,
    };
    if keep_alive_ms == 0 {
        return None;
    }
    Some(Duration::from_millis(keep_alive_ms.saturating_mul(3) / 2))
}

/// How long a new socket may take to send CONNECT, or `None` when unlimited.
pub fn connect_timeout(options: &ListenerOptions) -> Option<Duration> {
    if !options.use_inactivity_monitor {
        return None;
    }
    options
        .connect_attempt_timeout_ms
        .map(Duration::from_millis)
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_and_a_half_times_the_client_value() {
        let o = ListenerOptions::default();
        assert_eq!(
            inbound_silence_limit(2, &o),
            Some(Duration::from_millis(3000))
        );
        assert_eq!(inbound_silence_limit(0, &o), None);
    }

    #[test]
    fn default_keep_alive_applies_only_to_zero() {
        let o = ListenerOptions {
            default_keep_alive_ms: 1000,
            ..ListenerOptions::default()
        };
        assert_eq!(
            inbound_silence_limit(0, &o),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(inbound_silence_limit(10, &o), Some(Duration::from_secs(15)));
    }

    #[test]
    fn inactivity_monitor_off_disables_both() {
        let o = ListenerOptions {
            default_keep_alive_ms: 1000,
            use_inactivity_monitor: false,
            ..ListenerOptions::default()
        };
        assert_eq!(inbound_silence_limit(5, &o), None);
        assert_eq!(connect_timeout(&o), None);
        assert_eq!(
            connect_timeout(&ListenerOptions::default()),
            Some(Duration::from_secs(30))
        );
    }
}
