//! Parking: an idle plain-TCP MQTT connection gives up its task.
//!
//! Most connections of a large deployment are idle (a sensor that publishes once a minute).
//! A connection task costs about 1.4 KiB even when it only waits (its future, tokio's socket
//! registration, the keep-alive timer), three times what mosquitto spends on a whole client.
//! So a connection that has had nothing to do (no input, no output, nothing waiting for the
//! store, no pause) for [`PARK_AFTER_CONNECT`] before its first park, [`PARK_AFTER_IDLE`]
//! after it, ends its task and leaves behind a [`Parked`]
//! record: its state, its socket (registered with this broker's one readiness loop, not
//! tokio's) and its keep-alive deadline. The loop (a thread, see `poll.rs`) answers PINGREQs
//! itself and moves the keep-alive deadline; anything else wakes the connection, which gets a
//! new task and carries on exactly where it stopped:
//!
//! - bytes other than PINGREQ from the client (read by the loop, handed to the new task),
//!   or the peer closing the socket;
//! - the keep-alive deadline (the new task closes the connection as keep-alive expiry);
//! - a delivery, a takeover, a console kick, the session's end: the session rings
//!   ([`crate::broker::session`]'s park state) and the loop wakes the connection;
//! - a security reload, for connections with subscriptions (they drop the denied ones);
//! - the broker's shutdown or its connector's removal by a reload (whoever cancels a stop
//!   token calls [`Lot::wake_stopped`]): the connection wakes and closes as a running one does.
//!
//! TLS and WebSocket connections do not park (their streams keep state in user space).

mod deadlines;
mod poll;
mod record;
mod trim;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_util::FutureExt;
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{Conn, Established};
use crate::broker::session::signals::AttachSignals;
use record::ParkedConn;

/// How long a connection that has parked before must have had nothing to do before it parks
/// again: long enough that a client publishing or receiving several times a second keeps its
/// task instead of paying a park and a wake-up per message.
pub const PARK_AFTER_IDLE: Duration = Duration::from_millis(500);

/// How long a connection that has never parked must have had nothing to do before it parks
/// the first time. Short, because a connect storm is the peak of the broker's memory: every
/// task alive at once stays in the allocator after it ends (its 128-byte-aligned blocks become
/// holes pinned by the long-lived objects allocated around them; see docs/scaling.md). With 50
/// ms only the connections of the last 50-100 ms of a storm hold a task. A client that sends
/// its SUBSCRIBE later than that pays one wake-up, and from then on [`PARK_AFTER_IDLE`].
pub const PARK_AFTER_CONNECT: Duration = Duration::from_millis(50);

/// The readiness loop's own token (parked connections get keys from 1 up).
const WAKER_TOKEN: mio::Token = mio::Token(0);

/// One broker's parked connections; the loop starts with the first connection that parks.
#[derive(Default)]
pub(crate) struct Lot {
    /// `None` inside: the loop could not be started (connections then keep their tasks).
    started: OnceLock<Option<Arc<Shared>>>,
}

/// Where a parked connection is: what its session rings to wake it.
#[derive(Debug)]
pub(crate) struct ParkedAt {
    lot: Arc<Shared>,
    key: u64,
}

impl ParkedAt {
    /// Wake the connection (a no-op when it woke already).
    pub(crate) fn wake(self) {
        self.lot.command(Command::Wake(self.key));
    }
}

/// A parked connection: what its task held that outlives a quiet moment, and the socket. One
/// allocation, in the same size class as the [`Conn`] it replaces (see `record.rs`).
pub(crate) struct Parked {
    pub(super) conn: ParkedConn,
    pub(super) stream: mio::net::TcpStream,
    pub(super) phase: Established,
    /// The session had subscriptions when it parked (a security reload wakes it).
    subscribed: bool,
}

impl Parked {
    /// The keep-alive deadline on the loop's clock (`None`: keep-alive off).
    fn deadline(&self) -> Option<Instant> {
        self.phase
            .keep_alive
            .is_enabled()
            .then(|| self.phase.keep_alive.deadline().into_std())
    }
}

/// What a woken connection's new task starts with.
#[derive(Default)]
pub(crate) struct Woken {
    /// Bytes the loop read from the client and did not answer itself.
    pub(crate) read: BytesMut,
    /// Bytes of an answer the socket did not take yet (written first).
    pub(crate) out: BytesMut,
}

enum Command {
    Wake(u64),
    /// Wake the connections whose sessions have subscriptions (the security policy changed).
    WakeSubscribed,
    /// Wake the connections whose stop token is cancelled (shutdown, connector removed).
    WakeStopped,
    /// The runtime is gone: drop everything and end the loop.
    Stop,
}

/// What the loop and the connections share.
struct Shared {
    registry: mio::Registry,
    waker: mio::Waker,
    state: Mutex<State>,
    next_key: AtomicU64,
    runtime: tokio::runtime::Handle,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

/// Why the lot did not take a connection in.
enum Refused {
    /// Its connector is stopping or the security policy changed: it runs, and may park later.
    NotNow,
    /// The lot cannot take connections (socket registration failed, the loop stopped): it
    /// keeps its task for good rather than retry every quiet period.
    Failed,
}

#[derive(Default)]
struct State {
    parked: HashMap<u64, Box<Parked>>,
    /// Keep-alive deadlines, earliest first, one entry per parked connection with keep-alive.
    /// An entry whose connection woke is dropped when it comes up; one whose connection's
    /// PINGREQs moved its deadline is pushed again with the new deadline.
    deadlines: deadlines::Deadlines,
    commands: Vec<Command>,
    /// Parks since the allocator's free pages were last given back (`trim.rs`).
    trim: trim::Trim,
    /// The loop ended (`Command::Stop`): nothing is admitted any more.
    stopped: bool,
}

impl State {
    /// Entries of connections that woke stay in `deadlines` until they come up, which for a
    /// connection that parks and wakes often (a subscriber with a message every few seconds,
    /// keep-alive of minutes) would be many per connection: past twice the parked count, the
    /// heap is rebuilt from the parked connections' deadlines (amortized O(1) per park).
    fn compact_deadlines(&mut self) {
        if self.deadlines.len() <= 2 * self.parked.len() + 64 {
            return;
        }
        let parked = &self.parked;
        self.deadlines.rebuild(
            parked
                .iter()
                .filter_map(|(key, p)| p.deadline().map(|d| (d, *key))),
        );
    }
}

impl Lot {
    /// The running loop, started now if it is not yet (from a connection task: it needs the
    /// runtime and the broker's security watch).
    fn start(&self, security: impl FnOnce() -> watch::Receiver<u64>) -> Option<&Arc<Shared>> {
        self.started
            .get_or_init(|| match Shared::start(security()) {
                Ok(shared) => Some(shared),
                Err(e) => {
                    tracing::warn!("idle connections cannot park (they keep their tasks): {e}");
                    None
                }
            })
            .as_ref()
    }

    /// A stop token was cancelled (the broker's shutdown, or a connector's): its parked
    /// connections wake and close. Call it after cancelling.
    pub(crate) fn wake_stopped(&self) {
        if let Some(Some(shared)) = self.started.get() {
            shared.command(Command::WakeStopped);
        }
    }
}

impl Shared {
    fn start(security: watch::Receiver<u64>) -> std::io::Result<Arc<Shared>> {
        let poll = mio::Poll::new()?;
        let shared = Arc::new(Shared {
            registry: poll.registry().try_clone()?,
            waker: mio::Waker::new(poll.registry(), WAKER_TOKEN)?,
            state: Mutex::default(),
            next_key: AtomicU64::new(1),
            runtime: tokio::runtime::Handle::try_current()
                .map_err(|e| std::io::Error::other(e.to_string()))?,
        });
        let looping = shared.clone();
        std::thread::Builder::new()
            .name("ferromq-parked".into())
            .spawn(move || poll::run(looping, poll))?;
        shared.runtime.spawn(watch_broker(shared.clone(), security));
        Ok(shared)
    }

    fn command(&self, command: Command) {
        self.state.lock().commands.push(command);
        if let Err(e) = self.waker.wake() {
            tracing::error!("cannot wake the parked connections' loop: {e}");
        }
    }

    /// Take a connection in: `Err` gives it back when its stop token is cancelled (checked
    /// under the lock that [`Command::WakeStopped`] takes, so the two cannot miss each other)
    /// or the socket cannot be registered.
    fn admit(self: &Arc<Self>, mut parked: Box<Parked>) -> Result<u64, (Box<Parked>, Refused)> {
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        let Ok(token) = usize::try_from(key) else {
            return Err((parked, Refused::Failed));
        };
        let mut state = self.state.lock();
        if state.stopped {
            return Err((parked, Refused::Failed));
        }
        // Checked under the lock that `WakeStopped` and `WakeSubscribed` take, and those are
        // queued only after the token is cancelled or the policy swapped: the two cannot miss
        // each other.
        if parked.phase.shutdown.is_cancelled()
            || parked.phase.security.has_changed().unwrap_or(false)
        {
            return Err((parked, Refused::NotNow));
        }
        if let Err(e) = self.registry.register(
            &mut parked.stream,
            mio::Token(token),
            mio::Interest::READABLE,
        ) {
            tracing::warn!("cannot park an idle connection (it keeps its task): {e}");
            return Err((parked, Refused::Failed));
        }
        if let Some(deadline) = parked.deadline() {
            let earliest = state.deadlines.earliest();
            state.deadlines.push(deadline, key);
            if earliest.is_none_or(|earliest| deadline < earliest) {
                // The loop sleeps until the earliest deadline it knew.
                let _ = self.waker.wake();
            }
        }
        parked.conn.core.counters.connection_parked(true);
        let first_park = parked.phase.park == super::ParkAfter::Connect;
        state.parked.insert(key, parked);
        // New connections only: a storm or a reconnect wave, not subscribers that wake for
        // a delivery and park again (a trim per broadcast would give back pages the next one
        // takes again).
        if first_park {
            let was_due = state.trim.due_at().is_some();
            state.trim.parked(Instant::now());
            if !was_due && state.trim.due_at().is_some() {
                // The count just reached the minimum, and the loop may be asleep until a
                // keep-alive deadline: it must see the trim's time.
                let _ = self.waker.wake();
            }
        }
        state.compact_deadlines();
        Ok(key)
    }

    /// Give a connection a task again.
    fn wake_up(&self, mut parked: Box<Parked>, woken: Woken) {
        let _ = self.registry.deregister(&mut parked.stream);
        parked.conn.core.counters.connection_parked(false);
        self.runtime.spawn(super::resume(parked, woken));
    }
}

/// Hand an idle connection to its broker's lot; its task ends after this. When it cannot
/// park (no loop, the broker is closing), it gets a new task at once.
pub(super) fn park(conn: Box<Conn>, stream: std::net::TcpStream, phase: Established) {
    let subscribed = conn.session.has_subscriptions();
    // The `Conn` box is freed before the record's is allocated: of the same size class, the
    // allocator hands the same memory back (see `record.rs`).
    let conn = ParkedConn::keep(conn);
    let parked = Box::new(Parked {
        stream: mio::net::TcpStream::from_std(stream),
        subscribed,
        conn,
        phase,
    });
    let core = parked.conn.core.clone();
    let Some(lot) = core.parking.start(|| core.watch_security()) else {
        let mut parked = parked;
        parked.phase.park = super::ParkAfter::Never;
        tokio::spawn(super::resume(parked, Woken::default()));
        return;
    };
    let (session, generation) = (parked.conn.session.clone(), parked.conn.token.generation);
    match lot.admit(parked) {
        Ok(key) => {
            let at = ParkedAt {
                lot: lot.clone(),
                key,
            };
            if let Err(at) = session.finish_park(generation, at) {
                at.wake();
            }
        }
        Err((mut parked, refused)) => {
            if matches!(refused, Refused::Failed) {
                parked.phase.park = super::ParkAfter::Never;
            }
            tokio::spawn(super::resume(parked, Woken::default()));
        }
    }
}

/// Ends the loop when this watcher ends: the runtime dropped it, or the broker is gone.
struct StopOnDrop(Arc<Shared>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.command(Command::Stop);
    }
}

/// Tell the loop about security reloads, and stop it with the broker.
async fn watch_broker(shared: Arc<Shared>, mut security: watch::Receiver<u64>) {
    let _stop = StopOnDrop(shared.clone());
    while security.changed().await.is_ok() {
        shared.command(Command::WakeSubscribed);
    }
}

impl Conn {
    /// Nothing to read, write, wait for or retry: the connection may park.
    pub(super) fn quiet(&self, read_buf: &BytesMut, needs_flush: bool) -> bool {
        read_buf.is_empty()
            && self.output.out.is_empty()
            && !needs_flush
            && !self.output.pump_wanted
            && self.output.page_in.is_none()
            && self.pending_acks.is_empty()
            && self.pause.overfilled().is_empty()
            && self.flow.held.is_none()
            && self.flow.deferred.is_empty()
            && self.reauth_deadline().is_none()
            && self.limits.resend_held.is_none()
    }

    /// Announce the park to the session; false (and the connection runs on) when something
    /// arrived meanwhile: a delivery's wake-up (then pumped), a kick, the shutdown.
    pub(super) fn try_begin_park(
        &mut self,
        signals: &AttachSignals,
        shutdown: &CancellationToken,
    ) -> bool {
        if signals.is_kicked() || shutdown.is_cancelled() {
            return false;
        }
        if !self.session.begin_park(self.token.generation) {
            return false;
        }
        // A delivery queued before the announcement left its permit on `wake`; one queued
        // after it marks the session's park state instead (see `Session::finish_park`).
        let delivered = signals.woken().now_or_never().is_some();
        if delivered || signals.is_kicked() || shutdown.is_cancelled() {
            self.session.unparked(self.token.generation);
            self.output.pump_wanted |= delivered;
            return false;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a parked connection keeps besides its session: this record (one allocation) and
    /// an entry in the lot's map. Together they are most of an idle connection's memory
    /// (docs/scaling.md): keep them small, and the record in the allocator's size class of
    /// the `Conn` it replaces (`record.rs` says why).
    #[test]
    fn a_parked_record_stays_small_and_in_the_size_class_of_a_conn() {
        use std::mem::size_of;
        // glibc on 64 bits: a chunk is the request plus 8 bytes, rounded up to 16.
        let class = |bytes: usize| (bytes + 8).div_ceil(16) * 16;
        // In a release build: mio's socket keeps a selector id in debug builds only, so the
        // record's size is modelled from its fields with the release socket (a plain fd).
        let record = (size_of::<ParkedConn>()
            + size_of::<Established>()
            + size_of::<std::net::TcpStream>()
            + size_of::<bool>())
        .next_multiple_of(8);
        #[cfg(not(debug_assertions))]
        assert_eq!(
            record,
            size_of::<super::Parked>(),
            "the model of the record's size"
        );
        let conn = size_of::<Conn>();
        let (kept, phase) = (size_of::<ParkedConn>(), size_of::<Established>());
        eprintln!("parked record {record} B (kept state {kept}, phase {phase}), Conn {conn} B");
        assert!(record <= 280, "Parked is {record} bytes");
        assert!(conn <= 280, "Conn is {conn} bytes");
        assert_eq!(
            class(record),
            class(conn),
            "Parked {record} B, Conn {conn} B"
        );
    }

    /// Deadlines of connections that woke do not pile up: past twice the parked count (plus
    /// a floor) the heap keeps only the parked connections' own.
    #[test]
    fn stale_deadlines_are_dropped_when_they_pile_up() {
        let mut state = State::default();
        let now = Instant::now();
        for key in 0..64 {
            state.deadlines.push(now, key);
        }
        state.compact_deadlines();
        assert_eq!(state.deadlines.len(), 64, "at the floor nothing is rebuilt");
        state.deadlines.push(now, 64);
        state.compact_deadlines();
        assert!(state.deadlines.is_empty(), "no connection is parked");
    }
}
