//! What a CONNECT's claim may leave out when this node has just seen that it owns the session.
//!
//! A client that reconnects over and over (one that gives up on a slow CONNACK and sends
//! another CONNECT, as around a partition's heal) sends CONNECTs that the claim gate
//! (`BrokerCore::claim_gate`) lines up one behind the other on this node. Each of them read the
//! session record, although the claim before it had just found this node the owner or made it
//! so: one read per CONNECT, thousands in a storm, each one a request to the bucket's leader
//! or a replica that the other sessions' claims and catch-ups waited behind.
//!
//! Now a read or write of the record that showed this node as the owner is remembered with
//! the tracked copy ([`Confirmation`]), and a claim made shortly after answers "the session is
//! here" without reading, as long as nothing says another node may have taken it since:
//!
//! - Another node that takes the session asks this one first (its kick). A kick that arrives
//!   marks the copy handed over at once, before anything is written, or the copy is dropped
//!   (fenced, ended, verified away): then there is no confirmed copy to answer from.
//! - A kick that does not arrive (this node's NATS connection down, or lost and back) lets the
//!   other node take the session only after [`super::sessions::KICK_TIMEOUT`] of silence.
//!   A confirmation counts only while the connection it was made on is still up, and for
//!   [`CONFIRMED_FOR`], half that bound: a claim answered from it follows a read or write
//!   that saw this node as the owner less than a kick's bound before.
//! - Only a resume (clean session 0, a session that outlives its connection) is answered so:
//!   a clean start discards the session, which the claim does from the record.
//!
//! What a stale answer would cost is what a claim's own read can already cost (a read may be
//! answered by a replica that lags, and the answer is stale by the time the session attaches):
//! the next write of the copy fails its compare-and-set and the copy is dropped here (fenced),
//! its connection closed. QoS 2 deliveries wait for a record write, so none is sent twice.

use std::time::{Duration, Instant};

use super::engine::Inner;
use super::tracker::Tracked;
use crate::broker::counters::Counters;
use crate::broker::durability::ClaimRequest;

/// How long a read or write that showed this node as the owner answers claims.
pub const CONFIRMED_FOR: Duration = Duration::from_secs(1);

/// When a request that found this node the owner was sent, on which NATS connection, and
/// for which copy (its epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Confirmation {
    at: Instant,
    connection: u64,
    epoch: u64,
}

/// Taken before a read or write of a record is sent: what it finds is at least this recent.
#[derive(Debug, Clone, Copy)]
pub struct Sent {
    at: Instant,
    connection: u64,
}

impl Sent {
    pub fn now(inner: &Inner) -> Sent {
        Sent {
            at: Instant::now(),
            connection: inner.connection.borrow().epoch,
        }
    }

    /// The request sent at `self` found `t`'s copy the owner of the record.
    pub fn confirm(self, t: &mut Tracked) {
        let newer = t.confirmed.is_none_or(|c| c.at <= self.at);
        if newer {
            t.confirmed = Some(Confirmation {
                at: self.at,
                connection: self.connection,
                epoch: t.epoch,
            });
        }
    }
}

/// Whether `request` may be answered "the session is here" without reading its record.
pub fn still_ours(inner: &Inner, request: &ClaimRequest) -> bool {
    if !request.persistent || request.clean_start {
        return false;
    }
    if !inner.is_available()
        || inner.drain.is_draining()
        || inner.drain.is_released(&request.client_id)
    {
        return false;
    }
    let connection = *inner.connection.borrow();
    if !connection.up {
        return false;
    }
    let tracker = inner.tracker.lock();
    tracker
        .sessions
        .get(&request.client_id)
        .is_some_and(|t| answers(t, connection.epoch, Instant::now()))
}

/// Whether `t`'s confirmation answers a claim at `now`, on NATS connection `connection`.
fn answers(t: &Tracked, connection: u64, now: Instant) -> bool {
    !t.handed_over
        && t.revision > 0
        && t.confirmed.is_some_and(|c| {
            c.epoch == t.epoch
                && c.connection == connection
                && now.saturating_duration_since(c.at) < CONFIRMED_FOR
        })
}

/// Count on the broker's counters (`$SYS/broker/cluster/...`).
pub fn count(inner: &Inner, bump: impl FnOnce(&Counters) -> u64) {
    if let Some(core) = inner.core() {
        bump(&core.counters);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::broker::durability::SessionData;

    fn tracked() -> Tracked {
        let data = SessionData {
            client_id: Arc::from("c"),
            subscriptions: vec![],
            will: None,
            expiry_secs: None,
            mqtt5: false,
            connected: false,
        };
        let mut t = Tracked::new(data, 1, &[0]);
        t.revision = 7;
        t
    }

    fn sent(at: Instant, connection: u64) -> Sent {
        Sent { at, connection }
    }

    #[test]
    fn a_recent_confirmation_of_the_same_copy_on_the_same_connection_answers() {
        let start = Instant::now();
        let mut t = tracked();
        assert!(!answers(&t, 1, start), "never confirmed");
        sent(start, 1).confirm(&mut t);
        assert!(answers(&t, 1, start + Duration::from_millis(900)));
        assert!(!answers(&t, 1, start + CONFIRMED_FOR), "too old");
        assert!(!answers(&t, 2, start), "the NATS connection was lost since");
        // An older request answered later does not move the confirmation back.
        sent(start + Duration::from_millis(500), 1).confirm(&mut t);
        sent(start, 1).confirm(&mut t);
        assert!(answers(&t, 1, start + Duration::from_millis(1_400)));
    }

    #[test]
    fn a_copy_handed_over_or_of_another_epoch_is_not_answered_from() {
        let start = Instant::now();
        let mut t = tracked();
        sent(start, 1).confirm(&mut t);
        t.epoch += 1;
        assert!(
            !answers(&t, 1, start),
            "another copy (epoch) than confirmed"
        );
        t.epoch -= 1;
        t.freeze(&[0]);
        assert!(!answers(&t, 1, start), "handed over");
        let mut unwritten = tracked();
        sent(start, 1).confirm(&mut unwritten);
        unwritten.revision = 0;
        assert!(!answers(&unwritten, 1, start), "no record written yet");
    }
}
