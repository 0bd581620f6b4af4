//! The STOMP options of the connector a connection arrived on, with ActiveMQ 5.17's defaults.

use crate::broker::connection::ListenerSettings;

use super::connect::DEFAULT_GRACE;

/// What a STOMP connection needs from its connector's options.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StompOptions {
    /// `transport.defaultHeartBeat` ("cx,cy" ms): used when CONNECT has no `heart-beat`.
    pub default_heart_beat: Option<(u64, u64)>,
    /// `transport.hbGracePeriodMultiplier`: a client may be silent this many times its
    /// announced heart-beat.
    pub grace: f64,
}

/// The STOMP options of `listener`.
pub fn of(_listener: &ListenerSettings) -> StompOptions {
    StompOptions {
        default_heart_beat: None,
        grace: DEFAULT_GRACE,
    }
}
