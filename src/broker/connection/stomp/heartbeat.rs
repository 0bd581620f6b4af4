//! STOMP heart-beating (STOMP 1.1+ "Heart-beating") as ActiveMQ 5.17 negotiates it: the
//! client's `heart-beat: cx,cy` (or, when it sends no such header, the connector's
//! `transport.defaultHeartBeat`) means the client sends something every `cx` ms and wants
//! something every `cy` ms. The broker then closes a client silent for `cx` x
//! `transport.hbGracePeriodMultiplier` and sends an EOL after `cy` ms without output, and
//! answers `heart-beat: cy,cx` in CONNECTED.

use std::time::Duration;

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

/// Why a `heart-beat` header is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("heart-beat header {0:?} is not two comma-separated numbers of milliseconds")]
pub struct BadHeartBeat(pub String);

/// Parse `cx,cy` (ms).
pub fn parse(value: &str) -> Result<(u64, u64), BadHeartBeat> {
    let bad = || BadHeartBeat(value.chars().take(64).collect());
    let (cx, cy) = value.split_once(',').ok_or_else(bad)?;
    let cx = cx.trim().parse::<u64>().map_err(|_| bad())?;
    let cy = cy.trim().parse::<u64>().map_err(|_| bad())?;
    Ok((cx, cy))
}

/// Negotiate from the client's header (`None`: absent, the connector's `default` applies),
/// with `grace` as the read-side multiplier.
pub fn negotiate(
    client: Option<&str>,
    default: Option<(u64, u64)>,
    grace: f64,
) -> Result<HeartBeat, BadHeartBeat> {
    let (cx, cy) = match client {
        Some(v) => parse(v)?,
        None => default.unwrap_or((0, 0)),
    };
    let read_limit = (cx > 0).then(|| {
        let ms = (cx as f64 * grace.max(1.0)).min(u64::MAX as f64 / 2.0);
        Duration::from_millis(ms as u64)
    });
    let write_every = (cy > 0).then(|| Duration::from_millis(cy));
    Ok(HeartBeat {
        read_limit,
        write_every,
        connected_header: (cy, cx),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_heart_beats_set_both_directions_with_grace() {
        let hb = negotiate(Some("2000,500"), None, 1.5).expect("valid");
        assert_eq!(hb.read_limit, Some(Duration::from_millis(3000)));
        assert_eq!(hb.write_every, Some(Duration::from_millis(500)));
        assert_eq!(hb.connected_header, (500, 2000));
        let none = negotiate(Some("0,0"), Some((1000, 1000)), 1.5).expect("valid");
        assert_eq!(none.read_limit, None);
        let default = negotiate(None, Some((1000, 0)), 2.0).expect("valid");
        assert_eq!(default.read_limit, Some(Duration::from_millis(2000)));
        assert!(negotiate(Some("x"), None, 1.5).is_err());
    }
}
