//! The options of a STOMP connector (`stomp://`, `stomp+nio://`, `stomp+ssl://`,
//! `stomp+nio+ssl://`, and STOMP on `ws://`/`wss://`), with ActiveMQ 5.17's names, units and
//! defaults, and what they mean resolved here so that the STOMP connection reads answers, not
//! option values.
//!
//! Sources (ActiveMQ 5.17, `activemq-stomp`): `StompWireFormat` (frame, body and header limits,
//! `DEFAULT_CONNECTION_TIMEOUT`), `StompTransportFilter` (the `transport.*` setters),
//! `ProtocolConverter` (`defaultHeartBeat` "0,0", `hbGracePeriodMultiplier` 1.0,
//! `configureInactivityMonitor`). The options shared with MQTT connectors
//! (`transport.connectAttemptTimeout`, `maximumConnections`, `transport.useInactivityMonitor`,
//! `needClientAuth`/`wantClientAuth`) stay in [`super::ListenerOptions`].

use std::fmt;
use std::time::Duration;

use serde::Serialize;

/// `StompWireFormat.MAX_COMMAND_LENGTH`: the longest command line, in bytes (not an option).
pub const STOMP_MAX_COMMAND_BYTES: usize = 1024;
/// `StompWireFormat.MAX_HEADER_LENGTH`: the longest header line (`name:value`), in bytes, as
/// received (escaped). Not an option in ActiveMQ.
pub const STOMP_MAX_HEADER_LINE_BYTES: usize = 10 * 1024;
/// `StompWireFormat.MAX_HEADERS`: the most headers in one frame. Not an option in ActiveMQ.
pub const STOMP_MAX_HEADERS: usize = 1000;
/// `StompWireFormat.MAX_DATA_LENGTH`: the default `transport.maxDataLength`, 100 MiB.
pub const STOMP_DEFAULT_MAX_DATA_LENGTH_BYTES: u32 = 104_857_600;
/// `ProtocolConverter`'s default `hbGracePeriodMultiplier`.
pub const STOMP_DEFAULT_HB_GRACE_PERIOD_MULTIPLIER: f32 = 1.0;

/// A STOMP `heart-beat` pair `cx,cy` in milliseconds, as a client writes it in CONNECT (STOMP
/// 1.1/1.2 "Heart-beating") and as `transport.defaultHeartBeat` is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
pub struct HeartBeat {
    /// `cx`: the client sends something at least this often (ms); 0 = it sends no heart-beats.
    pub client_sends_ms: u64,
    /// `cy`: the client wants something from the server at least this often (ms); 0 = it does
    /// not want heart-beats.
    pub client_wants_ms: u64,
}

impl HeartBeat {
    /// Parse `cx,cy` (two non-negative integers, spaces around each allowed). ActiveMQ's
    /// `configureInactivityMonitor` refuses anything else with an ERROR frame.
    ///
    /// Errors: a message saying what is wrong, for a diagnostic or an ERROR frame.
    pub fn parse(text: &str) -> Result<HeartBeat, String> {
        let mut parts = text.split(',');
        let (Some(cx), Some(cy), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(format!(
                "`{text}` is not two numbers `cx,cy` (milliseconds)"
            ));
        };
        let number = |part: &str| {
            part.trim()
                .parse::<u64>()
                .map_err(|_| format!("`{}` is not a number of milliseconds", part.trim()))
        };
        Ok(HeartBeat {
            client_sends_ms: number(cx)?,
            client_wants_ms: number(cy)?,
        })
    }
}

impl fmt::Display for HeartBeat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{},{}", self.client_sends_ms, self.client_wants_ms)
    }
}

/// What a STOMP connector's options set. Only STOMP connections read it; on `mqtt://`
/// connectors it keeps its defaults (STOMP options written there are reported and ignored).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct StompOptions {
    /// `transport.defaultHeartBeat` (`cx,cy`, ms, default `0,0`): taken as the client's
    /// `heart-beat` header when its CONNECT has none (STOMP 1.0 clients never send one).
    pub default_heart_beat: HeartBeat,
    /// `transport.hbGracePeriodMultiplier` (default 1.0, always finite and > 0): a client that
    /// promised a heart-beat every `cx` ms may stay silent `cx` x this long.
    pub hb_grace_period_multiplier: f32,
    /// `transport.maxDataLength` / `wireFormat.maxDataLength` (bytes, default 104857600, a Java
    /// int): the largest body, whether it has a `content-length` or ends at the NUL.
    pub max_data_length_bytes: u32,
    /// `wireFormat.maxFrameSize` / `transport.maxFrameSize` (bytes): the largest whole frame
    /// (command, headers and body). `None`: no limit beside the others (ActiveMQ's default,
    /// `Long.MAX_VALUE`).
    pub max_frame_size_bytes: Option<u64>,
}

/// Never NaN: `config::compile` refuses a multiplier that is not a finite positive number, so
/// equality is total (reload compares options).
impl Eq for StompOptions {}

impl Default for StompOptions {
    fn default() -> Self {
        StompOptions {
            default_heart_beat: HeartBeat::default(),
            hb_grace_period_multiplier: STOMP_DEFAULT_HB_GRACE_PERIOD_MULTIPLIER,
            max_data_length_bytes: STOMP_DEFAULT_MAX_DATA_LENGTH_BYTES,
            max_frame_size_bytes: None,
        }
    }
}

impl StompOptions {
    /// The heart-beat a client declared: its CONNECT's `heart-beat` header when it sent one,
    /// else `transport.defaultHeartBeat` (ActiveMQ's `onStompConnect`).
    pub fn client_heart_beat(&self, header: Option<HeartBeat>) -> HeartBeat {
        header.unwrap_or(self.default_heart_beat)
    }

    /// How long a client that declared `client` may stay silent before it is closed:
    /// `cx` x `transport.hbGracePeriodMultiplier`, to the millisecond. `None`: never (`cx` is
    /// 0, or `monitored` is false: `transport.useInactivityMonitor=false`).
    pub fn silence_limit(&self, client: HeartBeat, monitored: bool) -> Option<Duration> {
        if !monitored || client.client_sends_ms == 0 {
            return None;
        }
        let ms = client.client_sends_ms as f64 * f64::from(self.hb_grace_period_multiplier);
        // Saturates (`as` on a float clamps); at least 1 ms so a tiny product never means "off".
        Some(Duration::from_millis((ms as u64).max(1)))
    }

    /// How often the server must send something to a client that declared `client`: its `cy`
    /// as ActiveMQ uses it (the write check interval). `None`: never (`cy` is 0, or the monitor
    /// is off).
    pub fn send_interval(&self, client: HeartBeat, monitored: bool) -> Option<Duration> {
        (monitored && client.client_wants_ms > 0)
            .then(|| Duration::from_millis(client.client_wants_ms))
    }

    /// Whether a body of `bytes` is within `transport.maxDataLength`.
    pub fn body_fits(&self, bytes: usize) -> bool {
        u64::try_from(bytes).is_ok_and(|b| b <= u64::from(self.max_data_length_bytes))
    }

    /// Whether a whole frame of `bytes` is within `wireFormat.maxFrameSize`.
    pub fn frame_fits(&self, bytes: u64) -> bool {
        self.max_frame_size_bytes.is_none_or(|max| bytes <= max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heart_beat_parses_two_numbers() {
        assert_eq!(
            HeartBeat::parse(" 1000 , 2000"),
            Ok(HeartBeat {
                client_sends_ms: 1000,
                client_wants_ms: 2000
            })
        );
        assert!(HeartBeat::parse("1000").is_err());
        assert!(HeartBeat::parse("1,2,3").is_err());
        assert!(HeartBeat::parse("-1,0").is_err());
        assert!(HeartBeat::parse("a,0").is_err());
        assert_eq!(
            HeartBeat::parse("0,0").map(|h| h.to_string()),
            Ok("0,0".into())
        );
    }

    #[test]
    fn default_heart_beat_only_without_header() {
        let options = StompOptions {
            default_heart_beat: HeartBeat {
                client_sends_ms: 5000,
                client_wants_ms: 0,
            },
            ..StompOptions::default()
        };
        let own = HeartBeat {
            client_sends_ms: 100,
            client_wants_ms: 200,
        };
        assert_eq!(options.client_heart_beat(Some(own)), own);
        assert_eq!(options.client_heart_beat(None), options.default_heart_beat);
    }

    #[test]
    fn silence_limit_applies_the_multiplier() {
        let client = HeartBeat {
            client_sends_ms: 1000,
            client_wants_ms: 500,
        };
        let plain = StompOptions::default();
        assert_eq!(
            plain.silence_limit(client, true),
            Some(Duration::from_millis(1000))
        );
        let lenient = StompOptions {
            hb_grace_period_multiplier: 1.5,
            ..StompOptions::default()
        };
        assert_eq!(
            lenient.silence_limit(client, true),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(lenient.silence_limit(client, false), None);
        assert_eq!(lenient.silence_limit(HeartBeat::default(), true), None);
        assert_eq!(
            plain.send_interval(client, true),
            Some(Duration::from_millis(500))
        );
        assert_eq!(plain.send_interval(HeartBeat::default(), true), None);
    }

    #[test]
    fn size_limits() {
        let options = StompOptions {
            max_data_length_bytes: 10,
            max_frame_size_bytes: Some(20),
            ..StompOptions::default()
        };
        assert!(options.body_fits(10) && !options.body_fits(11));
        assert!(options.frame_fits(20) && !options.frame_fits(21));
        assert!(StompOptions::default().frame_fits(u64::MAX));
    }
}
