//! One task per STOMP client (STOMP 1.0, 1.1, 1.2, <https://stomp.github.io/>), on `stomp://`
//! connectors and WebSocket clients that chose STOMP. See docs/stomp.md.
//!
//! A STOMP connection shares the MQTT broker: a SEND to `/topic/a.b` is routed by
//! [`BrokerCore`] exactly as an MQTT PUBLISH to `a/b`, and each topic SUBSCRIBE is an MQTT
//! subscription on the converted filter held by a session of its own (so two STOMP
//! subscriptions on one destination each get their copy). Those sessions' client ids start
//! with U+0000, which no MQTT client id may contain (MQTT 1.5.4-2): an MQTT client can never
//! name or take over a STOMP session, nor the reverse. Their wake-ups are forwarded to the one
//! wake-up of the connection task.
//!
//! Files: `connect.rs` (CONNECT/STOMP, CONNECTED), `frames.rs` (the client's frames: SEND,
//! receipts, transactions, DISCONNECT), `commit.rs` (a transaction's COMMIT as one store
//! commit), `subscribe.rs` (SUBSCRIBE, UNSUBSCRIBE, the delivery
//! pump, ACK/NACK), `mapping.rs` (SEND headers <-> message), `headers.rs` (ActiveMQ's headers
//! honoured or refused), `destination.rs`,
//! `heartbeat.rs`, `options.rs` (the connector's limits), `page_in.rs` (durable subscriptions'
//! paged messages), `queue_route.rs` (the queue engine's entry), `cluster_limits.rs` (what a
//! cluster node's NATS cannot carry, refused). Bytes <-> frames:
//! [`crate::protocol::stomp`].

mod browse;
mod cluster_limits;
mod commit;
#[cfg(test)]
mod commit_tests;
mod connect;
mod destination;
mod durable_cluster;
mod frames;
mod headers;
mod heartbeat;
mod mapping;
mod options;
mod page_in;
mod queue_route;
mod selector;
mod subscribe;

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::future::OptionFuture;
use futures_util::stream::FuturesOrdered;
use futures_util::FutureExt;
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::Instrument;

use super::{read, ConnectionParams, ListenerSettings};
use crate::broker::routing::limits::OVERFILL_PAUSE_LIMIT_MS;
use crate::broker::runtime::{BrokerCore, Overfilled, RoutePlan, Routed};
use crate::protocol::stomp::{encode, Command, Decoded, Decoder, Frame, Version};
use crate::security::{AuthzCache, Principal};

use heartbeat::HeartBeat;
use subscribe::Sub;

/// Stop reading and stop pulling deliveries while this much output waits for the socket.
const OUT_HIGH_WATER_BYTES: usize = 256 * 1024;
/// Work waiting for the store (SEND commits, ordered receipts) beyond which reading pauses.
const PENDING_MAX: usize = 64;
/// Most released receipts and deliveries handled in one round of the loop before it writes.
const READY_BATCH: usize = 64;
/// How long closing may spend flushing output (the ERROR frame) and shutting the socket down.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// How long closing waits for the store to answer the connection's pending SENDs.
const PENDING_DRAIN_LIMIT: Duration = Duration::from_secs(10);
/// The `server` header of CONNECTED.
const SERVER: &str = concat!("ferromq/", env!("CARGO_PKG_VERSION"));

/// How frames reach the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// TCP or TLS: frames are batched into one write.
    Stream,
    /// WebSocket: one frame per write, so one frame per WebSocket message.
    WebSocket,
}

/// Why a STOMP connection ends.
#[derive(Debug)]
pub(crate) enum Close {
    /// DISCONNECT (its RECEIPT, if asked for, is already queued).
    Disconnect,
    PeerClosed,
    Io(io::Error),
    /// Nothing received within the negotiated heart-beat and its grace.
    HeartBeatTimeout(Duration),
    /// A new connection with the same client-id took over (`allowLinkStealing=true`).
    ClientIdTakenOver,
    Shutdown,
    /// An ERROR frame goes to the client, then the connection closes.
    Error(Box<Frame>),
    /// An administrator closed the connection (the web console): an ERROR frame first.
    Administrative(Box<Frame>),
}

impl Close {
    /// The access-log / metrics reason.
    fn metric_reason(&self) -> crate::metrics::Reason {
        use crate::metrics::Reason;
        match self {
            Close::Disconnect => Reason::ClientDisconnect,
            Close::PeerClosed => Reason::PeerClosed,
            Close::Io(_) => Reason::SocketError,
            Close::HeartBeatTimeout(_) => Reason::KeepAliveTimeout,
            Close::ClientIdTakenOver => Reason::TakenOver,
            Close::Shutdown => Reason::ServerShutdown,
            Close::Error(_) => Reason::ProtocolError,
            Close::Administrative(_) => Reason::AdminDisconnect,
        }
    }

    /// An ERROR frame with `message` (and the `receipt-id` of `cause`'s `receipt`, STOMP 1.2
    /// "ERROR"); the body repeats the message with the frame that caused it.
    pub(crate) fn error(message: impl Into<String>, cause: Option<&Frame>) -> Close {
        let message: String = message.into();
        let mut f = Frame::new(Command::Error).with_header("message", message.clone());
        let mut body = message;
        if let Some(cause) = cause {
            if let Some(receipt) = cause.header("receipt") {
                f = f.with_header("receipt-id", receipt);
            }
            body.push_str(&format!("\n\nin the {} frame", cause.command.as_str()));
        }
        f = f.with_header("content-type", "text/plain");
        f.body = Bytes::from(body);
        Close::Error(Box::new(f))
    }

    /// An ERROR with `message` answering the frame whose RECEIPT `receipt` would have been:
    /// it carries that frame's `receipt-id` (STOMP 1.2), so the client knows which failed.
    pub(crate) fn error_answering(message: impl Into<String>, receipt: Option<&Frame>) -> Close {
        let mut error = Close::error(message, None);
        let receipt_id = receipt.and_then(|r| r.header("receipt-id"));
        if let (Close::Error(frame), Some(id)) = (&mut error, receipt_id) {
            frame.headers.push(("receipt-id".to_owned(), id.to_owned()));
        }
        error
    }
}

impl std::fmt::Display for Close {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Close::Disconnect => f.write_str("client sent DISCONNECT"),
            Close::PeerClosed => f.write_str("peer closed the connection"),
            Close::Io(e) => write!(f, "socket error: {e}"),
            Close::HeartBeatTimeout(d) => {
                write!(
                    f,
                    "heart-beat expired: nothing received for {} ms",
                    d.as_millis()
                )
            }
            Close::ClientIdTakenOver => {
                f.write_str("a new connection with this client-id took over (allowLinkStealing)")
            }
            Close::Shutdown => f.write_str("broker shutting down"),
            Close::Administrative(_) => f.write_str("disconnected by an administrator (console)"),
            Close::Error(frame) => write!(
                f,
                "ERROR sent: {}",
                frame.header("message").unwrap_or_default()
            ),
        }
    }
}

/// Work finished by the store, applied in arrival order: a route to complete, frames to send
/// (receipts), or a failure that closes the connection.
#[derive(Default)]
pub(crate) struct Ready {
    route: Option<RoutePlan>,
    frames: Vec<Frame>,
    fail: Option<Close>,
    /// A SEND held by a broker-wide limit was settled (reading may resume).
    released_hold: bool,
    /// A COMMIT whose room is now granted: its frames are applied now (rare: boxed).
    transaction: Option<Box<frames::AdmittedTransaction>>,
    /// A durable subscription claimed from the cluster (rare: boxed).
    durable: Option<Box<durable_cluster::ClaimedDurable>>,
    /// A transaction's commit settled (rare: boxed).
    committed: Option<Box<commit::Committed>>,
    /// The subscription (its key) whose RECEIPT is among `frames`: it may deliver now.
    receipted_sub: Option<u64>,
}

type PendingWork = Pin<Box<dyn Future<Output = Ready> + Send>>;

/// Encoded frames waiting for the socket.
#[derive(Default)]
struct Output {
    frames: VecDeque<Bytes>,
    bytes: usize,
    /// What is being written now (one frame over WebSocket, a batch over a stream).
    current: BytesMut,
    pump_wanted: bool,
    /// When something was last written (for outgoing heart-beats).
    last_write: Option<Instant>,
}

/// Back-pressure from subscribers this client's SENDs overfilled (as for MQTT publishers).
struct Pause {
    overfilled: Vec<Overfilled>,
    until: Instant,
}

/// Subscribers a pause timed out on: not paused for again until they drop below their soft
/// limit (a stuck subscriber costs one pause, as for MQTT publishers; then its queue is
/// bounded by the broker-wide memory and store limits). Boxed: most connections never need it.
type GivenUp = Option<Box<Vec<Overfilled>>>;

/// An established STOMP connection's state.
pub(crate) struct StompConn {
    core: Arc<BrokerCore>,
    listener: Arc<ListenerSettings>,
    version: Version,
    /// The CONNECTED `session` header; also names this connection's message ids.
    session_name: Arc<str>,
    /// Process-unique number of this connection (names its subscription sessions).
    tag: u64,
    /// ActiveMQ's `client-id` CONNECT header (durable subscriptions).
    client_id: Option<Arc<str>>,
    principal: Principal,
    authz: AuthzCache,
    subs: Vec<Sub>,
    next_sub_key: u64,
    next_message_id: u64,
    out: Output,
    framing: Framing,
    /// Notified when any subscription's session has something queued.
    wake: Arc<Notify>,
    pending: FuturesOrdered<PendingWork>,
    /// SENDs held by `memoryUsage`/`storeUsage` (reading stops while there are any).
    held: usize,
    /// A frame's work failed and the connection closes on it: no later frame is answered.
    answers_stopped: bool,
    pause: Option<Box<Pause>>,
    given_up: GivenUp,
    heart_beat: HeartBeat,
    /// A page of a durable subscription's queue being read back (rare).
    page_in: Option<page_in::PageIn>,
    /// Open transactions (rare: boxed and allocated on the first BEGIN).
    transactions: Option<Box<frames::Transactions>>,
    /// Queue subscriptions and temporary queues (boxed, allocated on first use).
    queues: Option<Box<queue_route::QueueSubs>>,
    /// The hold on the CONNECT `client-id` (only when one was given).
    client_id_claim: Option<Box<connect::ClientIdClaim>>,
    /// This connection's entry in the console's list: an administrator's disconnect sets its
    /// flag and wakes the task (no token or extra select branch per idle connection).
    live: Option<Arc<crate::broker::clients::LiveClient>>,
}

/// Serve one STOMP client on `stream` until it disconnects, fails or the broker shuts down.
/// Never panics on peer input; every outcome is logged with the peer address.
pub fn serve<S>(
    stream: S,
    params: ConnectionParams,
    framing: Framing,
) -> impl Future<Output = ()> + Send
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    params.listener.stats.opened(crate::config::Protocol::Stomp);
    let span = tracing::info_span!(
        "stomp",
        listener = %params.listener.name,
        peer = %params.peer,
        session = tracing::field::Empty,
        client_id = tracing::field::Empty,
    );
    serve_in_span(stream, params, framing).instrument(span)
}

async fn serve_in_span<S>(stream: S, params: ConnectionParams, framing: Framing)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut read_buf = BytesMut::new();
    let mut decoder = Decoder::new(options::limits(&params.listener));
    let handshake = Box::pin(connect::handshake(
        &mut reader,
        &mut writer,
        &mut read_buf,
        &mut decoder,
        &params,
        framing,
    ));
    let Some(mut conn) = handshake.await.map(Box::new) else {
        let _ = tokio::time::timeout(CLOSE_GRACE, writer.shutdown()).await;
        return;
    };
    tracing::Span::current().record("session", tracing::field::display(&conn.session_name));
    if let Some(client_id) = &conn.client_id {
        // The `client-id` header, as MQTT connections' spans carry theirs.
        tracing::Span::current().record(
            "client_id",
            tracing::field::display(crate::security::Bounded(client_id)),
        );
    }
    crate::metrics::access::connected(conn.who(params.peer));
    tracing::debug!(
        version = conn.version.as_str(),
        client_id = ?conn.client_id.as_deref().map(crate::security::Bounded),
        "STOMP connected"
    );
    let reason = Box::pin(run(
        &mut conn,
        &mut reader,
        &mut writer,
        read_buf,
        decoder,
        &params,
    ))
    .await;
    conn.core
        .clients
        .remove(crate::broker::clients::ClientKey::Stomp(conn.tag));
    crate::metrics::access::closed(conn.who(params.peer), reason.metric_reason());
    Box::pin(conn.close(reason, &mut writer)).await;
}

/// The read/write loop of an established connection.
async fn run<R, W>(
    conn: &mut StompConn,
    reader: &mut R,
    writer: &mut W,
    mut read_buf: BytesMut,
    mut decoder: Decoder,
    params: &ConnectionParams,
) -> Close
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let wake = conn.wake.clone();
    let mut security_changes = conn.core.watch_security();
    let mut read_watch = heartbeat::ReadWatch::new(conn.heart_beat.read_limit, Instant::now());
    let mut needs_flush = false;
    if let Err(close) = conn.handle_buffered(&mut read_buf, &mut decoder) {
        return close;
    }
    loop {
        if conn.out.pump_wanted && conn.out.bytes < OUT_HIGH_WATER_BYTES {
            if let Err(close) = conn.pump() {
                return close;
            }
        }
        conn.fill_current();
        let can_read = conn.out.bytes < OUT_HIGH_WATER_BYTES
            && conn.pending.len() < PENDING_MAX
            && conn.held == 0
            && conn.pause.is_none();
        if !can_read {
            // The client's bytes wait unread in the socket: its silence is not counted.
            read_watch.saw_bytes();
        }
        let read_deadline = read_watch.next_check();
        let write_deadline = conn
            .heart_beat
            .write_every
            .map(|every| conn.out.last_write.unwrap_or_else(Instant::now) + every);
        let pause_until = conn.pause.as_ref().map(|p| p.until);
        tokio::select! {
            biased;
            _ = params.shutdown.cancelled() => return Close::Shutdown,
            res = write_or_flush(writer, &mut conn.out.current), if !conn.out.current.is_empty() || needs_flush => {
                match res {
                    Ok(true) => {
                        needs_flush = true;
                        conn.out.last_write = Some(Instant::now());
                    }
                    Ok(false) => {
                        needs_flush = false;
                        conn.out.current = BytesMut::new();
                    }
                    Err(e) => return Close::Io(e),
                }
            }
            res = read::read_some(reader, &mut read_buf), if can_read => match res {
                Ok(0) => return Close::PeerClosed,
                Ok(_) => {
                    read_watch.saw_bytes();
                    if let Err(close) = conn.handle_buffered(&mut read_buf, &mut decoder) {
                        return close;
                    }
                }
                Err(e) => return Close::Io(e),
            },
            ready = conn.pending.next(), if !conn.pending.is_empty() => {
                if let Some(ready) = ready {
                    if let Err(close) = conn.apply_ready(ready) {
                        return close;
                    }
                    // What the same group commit released goes out in the same write (a
                    // no-op waker here: this branch polls `next` again before the task waits).
                    // Not in a cluster, as for MQTT (docs/cluster.md).
                    let batch = if conn.core.backplane().is_none() { READY_BATCH } else { 1 };
                    for _ in 1..batch {
                        let Some(Some(ready)) = conn.pending.next().now_or_never() else {
                            break;
                        };
                        if let Err(close) = conn.apply_ready(ready) {
                            return close;
                        }
                    }
                    if can_read_after(conn) {
                        // Frames read while work waited may now be handled.
                        if let Err(close) = conn.handle_buffered(&mut read_buf, &mut decoder) {
                            return close;
                        }
                    }
                }
            }
            _ = sleep_until_opt(read_deadline), if read_deadline.is_some() && can_read => {
                if !read_watch.check(Instant::now()) {
                    return Close::HeartBeatTimeout(conn.heart_beat.read_limit.unwrap_or_default());
                }
            }
            _ = sleep_until_opt(write_deadline), if write_deadline.is_some() => {
                conn.queue_bytes(Bytes::from_static(b"\n"));
                conn.out.last_write = Some(Instant::now());
            }
            _ = wait_drained(&conn.core, conn.pause.as_deref(), pause_until), if conn.pause.is_some() => {
                conn.end_pause();
                if let Err(close) = conn.handle_buffered(&mut read_buf, &mut decoder) {
                    return close;
                }
            }
            page = OptionFuture::from(conn.page_in.as_mut()), if conn.page_in.is_some() => {
                if let Some(page) = page {
                    conn.finish_page_in(page);
                }
            }
            _ = wake.notified() => {
                if conn.live.as_ref().is_some_and(|l| l.kicked_by_admin()) {
                    let Close::Error(frame) =
                        Close::error("disconnected by an administrator", None)
                    else {
                        return Close::Shutdown;
                    };
                    return Close::Administrative(frame);
                }
                if let Some(close) = conn.durable_kicked() {
                    return close;
                }
                conn.out.pump_wanted = true;
            }
            Ok(()) = security_changes.changed() => {
                if let Err(close) = conn.drop_denied_subscriptions() {
                    return close;
                }
            }
            _ = client_id_kicked(conn.client_id_claim.as_deref()) => return Close::ClientIdTakenOver,
        }
    }
}

fn can_read_after(conn: &StompConn) -> bool {
    conn.held == 0 && conn.pause.is_none() && conn.pending.len() < PENDING_MAX
}

/// Resolves when another connection took this one's client-id over (`allowLinkStealing`).
async fn client_id_kicked(claim: Option<&connect::ClientIdClaim>) {
    match claim {
        Some(claim) => claim.token.signals.kicked().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn wait_drained(core: &BrokerCore, pause: Option<&Pause>, until: Option<Instant>) {
    if let (Some(pause), Some(until)) = (pause, until) {
        core.wait_drained(&pause.overfilled, until).await;
    }
}

/// One socket write of the current chunk (`Ok(true)`), or, once it is all written, a flush
/// (`Ok(false)`). Cancel-safe.
async fn write_or_flush<W: AsyncWrite + Unpin>(
    writer: &mut W,
    current: &mut BytesMut,
) -> io::Result<bool> {
    if current.is_empty() {
        writer.flush().await?;
        return Ok(false);
    }
    match writer.write_buf(current).await? {
        0 => Err(io::ErrorKind::WriteZero.into()),
        _ => Ok(true),
    }
}

impl StompConn {
    /// Who this connection is, for the access log.
    fn who(&self, peer: std::net::SocketAddr) -> crate::metrics::access::Who<'_> {
        crate::metrics::access::Who {
            listener: &self.listener.stats,
            protocol: crate::config::Protocol::Stomp,
            peer,
            client_id: self.client_id.as_deref(),
            user: (!self.principal.anonymous).then_some(&*self.principal.user),
        }
    }

    /// Handle the complete frames in `read_buf`, stopping when a SEND is held or pauses the
    /// connection (the rest waits in the buffer).
    fn handle_buffered(
        &mut self,
        read_buf: &mut BytesMut,
        decoder: &mut Decoder,
    ) -> Result<(), Close> {
        while self.held == 0 && self.pause.is_none() && self.pending.len() < PENDING_MAX {
            match decoder.decode(read_buf) {
                Ok(Some(Decoded::Frame(frame))) => self.handle(frame)?,
                Ok(Some(Decoded::HeartBeat)) => {}
                Ok(None) => {
                    // A cluster node refuses a SEND it cannot carry before its body is all
                    // buffered (up to `transport.maxDataLength`, 100 MiB by default).
                    if let Some(body) = decoder.body_in_progress(read_buf) {
                        self.cluster_body_fits(&body)?;
                    }
                    return Ok(());
                }
                Err(e) => {
                    self.core.counters.protocol_errors();
                    let mut close = Close::error(e.to_string(), None);
                    if let (Close::Error(frame), Some(receipt)) =
                        (&mut close, decoder.failed_receipt())
                    {
                        frame
                            .headers
                            .push(("receipt-id".to_owned(), receipt.to_owned()));
                    }
                    return Err(close);
                }
            }
        }
        Ok(())
    }

    /// Queue a frame for the socket.
    fn send(&mut self, frame: &Frame) {
        let mut buf = BytesMut::new();
        encode(frame, self.version, &mut buf);
        self.queue_bytes(buf.freeze());
    }

    fn queue_bytes(&mut self, bytes: Bytes) {
        self.out.bytes += bytes.len();
        self.out.frames.push_back(bytes);
    }

    /// Send `frame` after every frame already waiting for the store (order is kept).
    fn send_ordered(&mut self, frame: Frame) {
        if self.pending.is_empty() {
            self.send(&frame);
        } else {
            self.pending.push_back(Box::pin(std::future::ready(Ready {
                frames: vec![frame],
                ..Ready::default()
            })));
        }
    }

    /// The RECEIPT a frame with a `receipt` header asks for.
    fn receipt_for(frame: &Frame) -> Option<Frame> {
        frame
            .header("receipt")
            .map(|r| Frame::new(Command::Receipt).with_header("receipt-id", r))
    }

    /// Move queued frames into the chunk being written, when it is empty.
    fn fill_current(&mut self) {
        if !self.out.current.is_empty() {
            return;
        }
        match self.framing {
            Framing::WebSocket => {
                if let Some(frame) = self.out.frames.pop_front() {
                    self.out.bytes -= frame.len();
                    self.out.current = BytesMut::from(&frame[..]);
                }
            }
            Framing::Stream => {
                if self.out.frames.len() == 1 {
                    if let Some(frame) = self.out.frames.pop_front() {
                        self.out.bytes -= frame.len();
                        self.out.current = BytesMut::from(&frame[..]);
                    }
                    return;
                }
                let mut chunk = BytesMut::with_capacity(self.out.bytes);
                while let Some(frame) = self.out.frames.pop_front() {
                    chunk.extend_from_slice(&frame);
                }
                self.out.bytes = 0;
                self.out.current = chunk;
            }
        }
    }

    fn apply_ready(&mut self, ready: Ready) -> Result<(), Close> {
        if ready.released_hold {
            self.held = self.held.saturating_sub(1);
        }
        if let Some(plan) = ready.route {
            let routed = self.core.complete_route(plan);
            self.pause_for(routed);
        }
        for frame in &ready.frames {
            self.send(frame);
        }
        if let Some(key) = ready.receipted_sub {
            if let Some(sub) = self.subs.iter_mut().find(|s| s.key == key) {
                sub.awaits_receipt = false;
                self.out.pump_wanted = true;
            }
        }
        if let Some(done) = ready.committed {
            self.committed(*done);
        }
        if let Some(transaction) = ready.transaction {
            self.apply_transaction(*transaction)?;
        }
        if let Some(claimed) = ready.durable {
            self.finish_claim(*claimed)?;
        }
        match ready.fail {
            Some(close) => {
                self.answers_stopped = true;
                Err(close)
            }
            None => Ok(()),
        }
    }

    /// Stop reading while subscribers this connection's SENDs overfilled drain (bounded).
    fn pause_for(&mut self, routed: Routed) {
        if routed.overfilled.is_empty() {
            return;
        }
        let own: Vec<_> = self.subs.iter().map(|s| s.session.id()).collect();
        if let Some(given_up) = self.given_up.as_mut() {
            given_up.retain(Overfilled::still_over);
        }
        let given_up = self.given_up.as_deref().map(Vec::as_slice).unwrap_or(&[]);
        let overfilled: Vec<_> = routed
            .overfilled
            .into_iter()
            .filter(|o| {
                let id = o.session.id();
                !own.contains(&id) && !given_up.iter().any(|g| g.session.id() == id)
            })
            .collect();
        if overfilled.is_empty() {
            return;
        }
        match &mut self.pause {
            Some(p) => p.overfilled.extend(overfilled),
            None => {
                self.pause = Some(Box::new(Pause {
                    overfilled,
                    until: Instant::now() + Duration::from_millis(OVERFILL_PAUSE_LIMIT_MS),
                }))
            }
        }
    }

    /// The pause ended (its deadline passed or the subscribers drained): those still over
    /// their soft limit at the deadline are given up on.
    fn end_pause(&mut self) {
        let Some(pause) = self.pause.take() else {
            return;
        };
        if Instant::now() < pause.until {
            return;
        }
        for o in pause.overfilled {
            let id = o.session.id();
            let given_up = self.given_up.get_or_insert_with(Default::default);
            if o.still_over() && !given_up.iter().any(|g| g.session.id() == id) {
                tracing::warn!(
                    subscriber = %crate::security::Bounded(o.session.client_id()),
                    soft_limit = o.soft_limit,
                    "subscriber did not drain within {OVERFILL_PAUSE_LIMIT_MS} ms: sending on \
                     (its queue is bounded by memoryUsage/storeUsage)"
                );
                given_up.push(o);
            }
        }
    }

    /// End the connection: settle pending work (bounded), send what is queued (an ERROR frame
    /// last), release the subscriptions, close the socket.
    async fn close<W: AsyncWrite + Unpin>(mut self, reason: Close, writer: &mut W) {
        match &reason {
            Close::Error(_) | Close::Administrative(_) => tracing::info!("closing: {reason}"),
            _ => tracing::debug!("closing: {reason}"),
        }
        if let Some(claim) = self.client_id_claim.take() {
            // Released first: a client that reconnects as soon as it reads its DISCONNECT
            // receipt finds its client-id free.
            self.core.detach(&claim.session, claim.token.generation);
        }
        let socket_usable = !matches!(reason, Close::Io(_));
        let mut reason = reason;
        // Answers leave in frame order: once an earlier frame's work failed, that failure is
        // the ERROR, and no frame after it is answered (a RECEIPT after an unanswered SEND
        // would read as covering it).
        let mut failed = self.answers_stopped;
        let deadline = Instant::now() + PENDING_DRAIN_LIMIT;
        while !self.pending.is_empty() {
            match tokio::time::timeout_at(deadline, self.pending.next()).await {
                Ok(Some(ready)) => {
                    if let Some(plan) = ready.route {
                        self.core.complete_route(plan);
                    }
                    if let Some(done) = ready.committed {
                        self.committed_at_close(*done);
                    }
                    if let (Some(fail), false) = (ready.fail, failed) {
                        failed = true;
                        // A DISCONNECT's RECEIPT after it would say all was kept: the ERROR
                        // goes instead (the server's own close keeps its words).
                        if !matches!(reason, Close::Io(_) | Close::Administrative(_)) {
                            reason = fail;
                        }
                    }
                    if !failed {
                        for frame in &ready.frames {
                            self.send(frame);
                        }
                    }
                    if let Some(claimed) = ready.durable {
                        // A durable session claimed from the cluster is attached and then
                        // released with the others below: written offline, not left
                        // claimed by a connection that is gone.
                        let _ = self.finish_claim(*claimed);
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    tracing::warn!("durable store did not answer in time while closing");
                    break;
                }
            }
        }
        if let Close::Error(frame) | Close::Administrative(frame) = &reason {
            self.send(frame);
        }
        // Before the last frames (a DISCONNECT's RECEIPT) leave: a client that subscribes
        // again as soon as it reads them, here or on another cluster node, finds its durable
        // subscriptions released.
        self.release_subscriptions();
        if socket_usable {
            let _ = tokio::time::timeout(CLOSE_GRACE, async {
                loop {
                    self.fill_current();
                    if self.out.current.is_empty() {
                        break;
                    }
                    let mut chunk = std::mem::take(&mut self.out.current);
                    writer.write_all_buf(&mut chunk).await?;
                }
                writer.flush().await?;
                writer.shutdown().await
            })
            .await;
        }
    }
}
