//! Where a session's connection is in parking (see `broker::connection::parking`), kept in
//! the attachment under the session's lock so that a delivery or a kick and a connection
//! going to park cannot miss each other.
//!
//! A connection announces it is about to park (`Parking`), checks once more that nothing is
//! waiting, hands its socket to the parking lot and records where (`Parked`). Whoever wants
//! the connection's attention meanwhile (a delivery, a takeover, a console kick, the session's
//! end) rings: a `Parking` connection is marked `Poked` (it comes straight back), a `Parked`
//! one is taken out of the lot.

use crate::broker::connection::parking::ParkedAt;

/// The parking state of an attached connection.
#[derive(Debug, Default)]
pub(crate) enum ParkState {
    /// The connection has its own task (the usual case).
    #[default]
    Running,
    /// Between the connection's last check and its socket reaching the lot.
    Parking,
    /// Rung while `Parking`: the connection must not stay parked.
    Poked,
    /// In the lot under this key.
    Parked(ParkedAt),
}

impl ParkState {
    /// Something needs the connection: returns the lot entry to wake, if it is parked.
    pub(crate) fn ring(&mut self) -> Option<ParkedAt> {
        match std::mem::take(self) {
            ParkState::Parked(at) => Some(at),
            ParkState::Parking | ParkState::Poked => {
                *self = ParkState::Poked;
                None
            }
            ParkState::Running => None,
        }
    }
}
