//! Flow control of what an MQTT 5 client sends us (MQTT 5 3.3.4-7/-8, 4.9).
//!
//! CONNACK tells the client our Receive Maximum: how many QoS 1/2 PUBLISHes it may have
//! unacknowledged. We count them as the client does: a QoS 1/2 PUBLISH counts from the moment
//! it is read until the PUBACK, the PUBCOMP or a PUBREC >= 0x80 answering it is written to the
//! output. Acknowledgements the broker itself defers (a commit to the store, a publish held by
//! producer flow control, publishes deferred behind it) keep counting, because the client is
//! still waiting for them; it is at fault only when it sends one more while Receive Maximum of
//! them are unanswered. Then it gets DISCONNECT 0x93.
//!
//! A QoS 2 PUBLISH re-sent with DUP=1 for an exchange we already know is the same exchange and
//! is not counted twice. After a reconnect the client may still count exchanges of the previous
//! connection (their PUBREL -> PUBCOMP arrive here): we do not, so our count can only be lower
//! than the client's, never higher: a client that respects Receive Maximum is never cut off.
//! MQTT 3 clients have no Receive Maximum and are not counted.
//!
//! A client configured with an in-flight window above our Receive Maximum (paho-mqtt's
//! `max_inflight_messages_set(64)` against our 32) that does not lower it to the CONNACK's
//! is disconnected at every burst and usually reconnects at once, for ever. Each such close is
//! logged at `info`; the first for a client id is also a warning naming the numbers and what
//! to change ([`ReceiveMaximumWarnings`]), at most once per client id per
//! [`ReceiveMaximumWarnings::EVERY`], so that a reconnect loop cannot flood the log.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::broker::runtime::BrokerCore;
use crate::protocol::{Packet, ProtocolVersion, Publish, QoS, ReasonCode};

use super::{CloseReason, Conn};

/// Which disconnects for Receive Maximum exceeded (0x93) are worth a warning: the first of a
/// client id, then none of it for [`Self::EVERY`]. Bounded: at most [`Self::TRACKED`] client
/// ids are remembered (by a keyed hash, a few bytes each whatever the id's length; a
/// collision only silences one warning). Past that within the period, the others are counted
/// and summed up in one warning per period.
#[derive(Debug)]
pub(crate) struct ReceiveMaximumWarnings {
    every: Duration,
    tracked: usize,
    hasher: ahash::RandomState,
    state: Mutex<Warned>,
}

#[derive(Debug, Default)]
struct Warned {
    /// Client id (hashed) -> when it was last warned about.
    at: HashMap<u64, Instant>,
    /// Disconnects of client ids not remembered (the table full) since the last summary.
    untracked: u64,
    /// When the last summary of those was written.
    summarised_at: Option<Instant>,
}

/// What to log for one disconnect with 0x93.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Warning {
    /// A warning naming the client id.
    Named,
    /// This client id was warned about within the period: `info` only.
    Quiet,
    /// The table is full: a warning that this many disconnects of client ids not named
    /// happened since the last such summary.
    Untracked(u64),
}

impl Default for ReceiveMaximumWarnings {
    fn default() -> Self {
        ReceiveMaximumWarnings::new(Self::EVERY, Self::TRACKED)
    }
}

impl ReceiveMaximumWarnings {
    /// How long a client id warned about is not warned about again.
    pub(crate) const EVERY: Duration = Duration::from_secs(600);
    /// Client ids remembered at most.
    pub(crate) const TRACKED: usize = 1024;

    pub(crate) fn new(every: Duration, tracked: usize) -> Self {
        ReceiveMaximumWarnings {
            every,
            tracked: tracked.max(1),
            hasher: ahash::RandomState::new(),
            state: Mutex::default(),
        }
    }

    /// A client with `client_id` was disconnected with 0x93 at `now`: what to log.
    pub(crate) fn disconnected(&self, client_id: &str, now: Instant) -> Warning {
        let key = self.hasher.hash_one(client_id);
        let every = self.every;
        let recent = |at: &Instant| now.saturating_duration_since(*at) < every;
        let mut state = self.state.lock();
        if state.at.get(&key).is_some_and(recent) {
            return Warning::Quiet;
        }
        if !state.at.contains_key(&key) && state.at.len() >= self.tracked {
            state.at.retain(|_, at| recent(at));
        }
        if state.at.contains_key(&key) || state.at.len() < self.tracked {
            state.at.insert(key, now);
            return Warning::Named;
        }
        state.untracked += 1;
        if state.summarised_at.is_some_and(|at| recent(&at)) {
            return Warning::Quiet;
        }
        state.summarised_at = Some(now);
        Warning::Untracked(std::mem::take(&mut state.untracked))
    }

    /// Client ids remembered now (for tests of the bound).
    #[cfg(test)]
    fn remembered(&self) -> usize {
        self.state.lock().at.len()
    }
}

/// The Receive Maximum the broker announces in CONNACK and enforces.
pub(super) fn server_receive_maximum(core: &BrokerCore) -> u16 {
    u16::try_from(core.receive_maximum)
        .unwrap_or(u16::MAX)
        .max(1)
}

impl Conn {
    /// A PUBLISH was read: count it when it starts a QoS 1/2 exchange. `Err`: the client now
    /// has more than Receive Maximum unanswered (DISCONNECT 0x93).
    pub(super) fn count_inbound_publish(&mut self, publish: &Publish) -> Result<(), CloseReason> {
        if self.version != ProtocolVersion::V5 || publish.qos == QoS::AtMostOnce {
            return Ok(());
        }
        if publish.qos == QoS::ExactlyOnce && publish.dup {
            if let Some(id) = publish.packet_id {
                if self.with_session(|s| s.inbound_qos2().contains(&id))? {
                    return Ok(());
                }
            }
        }
        let maximum = server_receive_maximum(&self.core);
        if self.limits.unacked_inbound >= maximum {
            return Err(CloseReason::ReceiveMaximumExceeded(maximum));
        }
        self.limits.unacked_inbound += 1;
        Ok(())
    }

    /// `packet` is about to be written: a PUBACK, a PUBCOMP or a PUBREC >= 0x80 ends one of
    /// the client's exchanges (MQTT 5 4.9).
    pub(super) fn release_receive_quota(&mut self, packet: &Packet) {
        let ends_exchange = match packet {
            Packet::PubAck(_) | Packet::PubComp(_) => true,
            Packet::PubRec(ack) => ack.reason >= ReasonCode::SubAckFailureV3.code(),
            _ => false,
        };
        if ends_exchange {
            self.limits.unacked_inbound = self.limits.unacked_inbound.saturating_sub(1);
        }
    }
}

/// Logs a disconnect for Receive Maximum exceeded (`maximum`) of `client_id`: a warning when
/// `warnings` says it is due, else `info` as other protocol errors.
pub(super) fn log_exceeded(warnings: &ReceiveMaximumWarnings, client_id: &str, maximum: u16) {
    let id = crate::security::Bounded(client_id);
    let minutes = ReceiveMaximumWarnings::EVERY.as_secs() / 60;
    match warnings.disconnected(client_id, Instant::now()) {
        Warning::Named => tracing::warn!(
            "MQTT 5 client `{id}` sent QoS 1/2 PUBLISH number {} while {maximum} were \
             unacknowledged, above the broker's Receive Maximum of {maximum} (announced in its \
             CONNACK; MQTT 5 3.3.4-7): disconnected with 0x93 (Receive Maximum exceeded). It \
             is disconnected again at each burst until the client keeps at most {maximum} QoS \
             1/2 publishes in flight: lower its in-flight window to {maximum} or less (paho-mqtt: \
             max_inflight_messages_set({maximum})). Not logged again at warn for this client id \
             for {minutes} minutes",
            u32::from(maximum) + 1,
        ),
        Warning::Untracked(count) => tracing::warn!(
            "{count} disconnect(s) with 0x93 (Receive Maximum {maximum} exceeded) of MQTT 5 \
             clients not named here: more than {} client ids were warned about in the last \
             {minutes} minutes; each client must keep at most {maximum} QoS 1/2 publishes in \
             flight (paho-mqtt: max_inflight_messages_set({maximum}))",
            ReceiveMaximumWarnings::TRACKED,
        ),
        Warning::Quiet => tracing::info!(
            "closing: more than Receive Maximum ({maximum}) QoS 1/2 publishes unacknowledged \
             (a warning says so at most once per client id per {minutes} minutes)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVERY: Duration = Duration::from_secs(600);

    #[test]
    fn a_client_id_is_warned_about_once_per_period() {
        let warnings = ReceiveMaximumWarnings::new(EVERY, 8);
        let start = Instant::now();
        assert_eq!(warnings.disconnected("paho", start), Warning::Named);
        for s in 1..600 {
            let at = start + Duration::from_secs(s);
            assert_eq!(warnings.disconnected("paho", at), Warning::Quiet, "{s} s");
        }
        assert_eq!(warnings.disconnected("other", start), Warning::Named);
        assert_eq!(
            warnings.disconnected("paho", start + EVERY),
            Warning::Named,
            "again after the period"
        );
    }

    #[test]
    fn the_remembered_client_ids_are_bounded_and_the_rest_summed_up() {
        let warnings = ReceiveMaximumWarnings::new(EVERY, 4);
        let start = Instant::now();
        for n in 0..4 {
            assert_eq!(
                warnings.disconnected(&format!("c{n}"), start),
                Warning::Named
            );
        }
        // The table is full of recent ids: the first unknown one is summed up at once, the
        // next ones within the period only counted.
        assert_eq!(warnings.disconnected("c4", start), Warning::Untracked(1));
        for n in 5..1000 {
            let id = format!("c{n}");
            assert_eq!(warnings.disconnected(&id, start), Warning::Quiet);
        }
        assert_eq!(warnings.remembered(), 4, "bounded");
        // After the period the old entries make room again.
        let later = start + EVERY;
        assert_eq!(warnings.disconnected("c5", later), Warning::Named);
        assert_eq!(warnings.remembered(), 1);
        // A full table of recent ids again: the summary counts what was not logged.
        for n in 6..9 {
            assert_eq!(
                warnings.disconnected(&format!("c{n}"), later),
                Warning::Named
            );
        }
        assert_eq!(
            warnings.disconnected("c9", later),
            Warning::Untracked(996),
            "995 not logged in the first period, and this one"
        );
    }
}
