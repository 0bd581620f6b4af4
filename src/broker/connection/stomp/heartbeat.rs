//! STOMP heart-beating (STOMP 1.1+ "Heart-beating") as ActiveMQ 5.17 negotiates it: the
//! client's `heart-beat: cx,cy` (or, when it sends no such header, the connector's
//! `transport.defaultHeartBeat`) means the client sends something every `cx` ms and wants
//! something every `cy` ms. The broker checks reads as ActiveMQ's inactivity monitor does
//! ([`ReadWatch`]): every `cx` x `transport.hbGracePeriodMultiplier` (the check window) it
//! looks whether any byte arrived since the previous check, and closes the connection only
//! when a whole window passed without one (so a silence of one to two windows closes it). It
//! sends an EOL after `cy` ms without output, and answers `heart-beat: cy,cx` in CONNECTED.
//! `transport.useInactivityMonitor=false` turns both checks off.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::{HeartBeat as Declared, StompOptions};

/// The negotiated heart-beats of one connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeartBeat {
    /// Close when nothing arrived for this long (`None`: never).
    pub read_limit: Option<Duration>,
    /// Send an EOL when nothing was sent for this long (`None`: never).
    pub write_every: Option<Duration>,
    /// The CONNECTED `heart-beat` header value.
    pub connected_header: (u64, u64),
}

/// Negotiate from the client's header (`None`: absent, the connector's default applies).
/// `Err`: the header is not `cx,cy` (the text says why).
pub fn negotiate(
    client: Option<&str>,
    options: &StompOptions,
    monitored: bool,
) -> Result<HeartBeat, String> {
    let header = client.map(Declared::parse).transpose()?;
    let declared = options.client_heart_beat(header);
    Ok(HeartBeat {
        read_limit: options.silence_limit(declared, monitored),
        write_every: options.send_interval(declared, monitored),
        connected_header: (declared.client_wants_ms, declared.client_sends_ms),
    })
}

/// The read check of ActiveMQ 5.17's `AbstractInactivityMonitor.readCheck` (used by its
/// `StompInactivityMonitor`): a check every window (the first one window after CONNECTED), each
/// passing when any byte was received since the previous one (for the first check, the
/// CONNECT frame counts, as it sets ActiveMQ's `commandReceived`).
#[derive(Debug)]
pub struct ReadWatch {
    window: Option<Duration>,
    next_check: Instant,
    seen: bool,
}

impl ReadWatch {
    /// A watch with checks every `window` (`None`: never) from `now`, just after CONNECT.
    pub fn new(window: Option<Duration>, now: Instant) -> ReadWatch {
        ReadWatch {
            window,
            next_check: now + window.unwrap_or_default(),
            seen: true,
        }
    }

    /// Bytes arrived (or the connection chose not to read: its silence is not the client's).
    pub fn saw_bytes(&mut self) {
        self.seen = true;
    }

    /// When the next check is due (`None`: no checks).
    pub fn next_check(&self) -> Option<Instant> {
        self.window.map(|_| self.next_check)
    }

    /// The check due now: `false` when nothing arrived during the whole window just ended
    /// (close the connection), else the next window starts at `now`.
    pub fn check(&mut self, now: Instant) -> bool {
        let Some(window) = self.window else {
            return true;
        };
        if !self.seen {
            return false;
        }
        self.seen = false;
        self.next_check = now + window;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_read_watch_closes_only_after_a_whole_silent_window() {
        let start = Instant::now();
        let window = Duration::from_millis(500);
        let mut watch = ReadWatch::new(Some(window), start);
        assert_eq!(watch.next_check(), Some(start + window));
        assert!(
            watch.check(start + window),
            "CONNECT is in the first window"
        );
        watch.saw_bytes();
        assert!(watch.check(start + window), "a byte in the second window");
        assert!(!watch.check(start + window * 2), "a silent window closes");
        let mut off = ReadWatch::new(None, start);
        assert_eq!(off.next_check(), None);
        assert!(off.check(start));
    }

    #[test]
    fn client_heart_beats_set_both_directions_with_grace() {
        let options = StompOptions {
            hb_grace_period_multiplier: 1.5,
            ..StompOptions::default()
        };
        let hb = negotiate(Some("2000,500"), &options, true).expect("valid");
        assert_eq!(hb.read_limit, Some(Duration::from_millis(3000)));
        assert_eq!(hb.write_every, Some(Duration::from_millis(500)));
        assert_eq!(hb.connected_header, (500, 2000));
        let off = negotiate(Some("2000,500"), &options, false).expect("valid");
        assert_eq!((off.read_limit, off.write_every), (None, None));
        let default = StompOptions {
            default_heart_beat: Declared {
                client_sends_ms: 1000,
                client_wants_ms: 0,
            },
            ..StompOptions::default()
        };
        let hb = negotiate(None, &default, true).expect("valid");
        assert_eq!(hb.read_limit, Some(Duration::from_millis(1000)));
        assert_eq!(
            negotiate(Some("0,0"), &default, true)
                .expect("valid")
                .read_limit,
            None,
            "the default only applies without a header"
        );
        assert!(negotiate(Some("x"), &options, true).is_err());
    }
}
