//! Parking: what an idle connection's task holds while it waits.
//!
//! Most connections of a large deployment are idle (a sensor that sends a PINGREQ a minute).
//! A tokio task is one allocation the size of its future's largest state, and the active
//! read/write loop (`run`) is the largest: every `select!` branch's future has room in it,
//! enabled or not. So the active phase is boxed and freed once the connection has been quiet
//! for [`QUIET`] with nothing pending (no output, no partial packet, no acknowledgement waiting
//! for the store, no pause, no held publish, no page being read, no re-authentication); the
//! task then waits here, on only what can make it active again:
//!
//! - a byte from the client (read into the stack, as `read.rs` does; EOF and errors too),
//! - a delivery for its session (the session's wake-up),
//! - a kick (takeover, console disconnect, cluster drain), the broker's shutdown, the
//!   keep-alive deadline: the active phase sees which and closes as it always does (DISCONNECT
//!   for MQTT 5, the will),
//! - a security change (a reload): subscriptions it no longer allows are dropped.
//!
//! Every way into a connection therefore works the same parked or not; the connection stays
//! a task (counted, listed by the console, awaited at shutdown), only a smaller one. Works on
//! every stream type (plain TCP, TLS, WebSocket): TLS and WebSocket keep their own buffers.
//!
//! Parking ends the task but not the socket's registration in tokio's I/O driver, nor the
//! boxed connection state: see docs/scaling.md for what that leaves per idle connection and
//! what a shared readiness loop (no task at all) would still remove.

use std::io;
use std::pin::Pin;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncRead;
use tokio_util::sync::CancellationToken;

use super::{read, Conn};
use crate::broker::counters::Counters;

/// Counts a connection as parked while it lives (also when the task is dropped while parked).
struct Parked<'a>(&'a Counters);

impl<'a> Parked<'a> {
    fn new(counters: &'a Counters) -> Self {
        counters.connection_parked(true);
        Parked(counters)
    }
}

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        self.0.connection_parked(false);
    }
}

/// How long a connection with nothing pending stays active before it parks. Waking costs one
/// allocation of the active phase (well under a microsecond beside the socket read that wakes
/// it), so this is short: an idle client's PINGREQ keeps it active only this long, and in a
/// connect storm only the connections of the last quarter second hold an active phase at once
/// (freed memory stays in the allocator, so that peak is what the process keeps).
pub(super) const QUIET: Duration = Duration::from_millis(250);

/// The active phase ended because the connection was quiet: park it.
pub(super) struct Quiet;

/// Why a parked connection became active again.
pub(super) enum Woken {
    /// The socket had bytes (now in the read buffer), EOF (`Ok(0)`) or an error.
    Read(io::Result<usize>),
    /// Its session has something to deliver.
    Deliveries,
    /// The broker's security changed (a reload).
    SecurityChanged,
    /// Shutdown, a kick or the keep-alive deadline: the active phase finds which.
    Other,
}

impl Conn {
    /// Nothing waits on anything but the client or a delivery: the connection may park.
    pub(super) fn nothing_pending(&self, read_buf: &BytesMut, needs_flush: bool) -> bool {
        !needs_flush
            && read_buf.is_empty()
            && self.output.out.is_empty()
            && !self.output.pump_wanted
            && self.output.page_in.is_none()
            && self.pending_acks.is_empty()
            && self.pause.overfilled.is_empty()
            && self.flow.held.is_none()
            && self.flow.deferred.is_empty()
            && self.reauth_deadline().is_none()
    }
}

/// Wait, parked, until something makes the connection active again. Borrows everything: the
/// future is only these few waits (the read lands in a stack buffer, see `read.rs`).
#[allow(clippy::too_many_arguments)]
pub(super) async fn wait<R: AsyncRead + Unpin>(
    counters: &Counters,
    kick: &CancellationToken,
    wake: &tokio::sync::Notify,
    reader: &mut R,
    read_buf: &mut BytesMut,
    shutdown: &CancellationToken,
    keep_alive_enabled: bool,
    expiry: Pin<&mut tokio::time::Sleep>,
    security_changes: &mut tokio::sync::watch::Receiver<u64>,
) -> Woken {
    let _parked = Parked::new(counters);
    tokio::select! {
        biased;
        _ = shutdown.cancelled() => Woken::Other,
        _ = kick.cancelled() => Woken::Other,
        res = read::read_some(reader, read_buf) => Woken::Read(res),
        _ = expiry, if keep_alive_enabled => Woken::Other,
        _ = wake.notified() => Woken::Deliveries,
        Ok(()) = security_changes.changed() => Woken::SecurityChanged,
    }
}
