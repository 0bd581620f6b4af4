//! One task per client connection, generic over the byte stream (plain TCP today; TLS and
//! WebSocket streams from the transport module plug in unchanged).
//!
//! The task owns the socket: it reads and decodes packets (bounded by the connector's
//! `maxFrameSize`), answers them, and writes queued deliveries. Writes are batched: everything
//! available (acks plus messages pulled from the session queue) is encoded into one buffer
//! before each write. Publishers never touch this socket; they queue into the session and poke
//! the task, so a slow socket only ever slows its own client. When the output buffer passes
//! [`OUT_HIGH_WATER_BYTES`] the task stops reading and stops pulling from the queue until the
//! socket drains; the session queue's limit then bounds memory (see [`crate::broker::session::queue`]).
//!
//! A publish (any QoS) that pushes an online subscriber's queue above its soft limit pauses this
//! (the publisher's) task: it stops reading until those queues drain, the subscriber goes
//! offline, or [`crate::broker::routing::limits::OVERFILL_PAUSE_LIMIT_MS`] passes. It still writes meanwhile.

mod connack_limits;
mod connect;
mod connect_v5;
mod durable_acks;
mod enhanced_auth;
mod flow_control;
mod inbound;
pub mod keepalive;
mod outbound;
mod outbound_aliases;
mod page_in;
pub(crate) mod parking;
mod problem_info;
mod read;
pub(crate) mod receive_quota;
mod slot;
pub mod stomp;
#[cfg(test)]
mod tests;

pub(crate) use durable_acks::{PendingAcks, Ready};
pub use flow_control::MQTT5_QUOTA_WAIT;
pub use parking::{PARK_AFTER_CONNECT, PARK_AFTER_IDLE};
pub use slot::{ConnectionSlot, ConnectorSlots};

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use futures_util::future::OptionFuture;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::broker::connection::keepalive::KeepAlive;
use crate::broker::routing::limits::OVERFILL_PAUSE_LIMIT_MS;
use crate::broker::routing::memory::{Body, Received, READ_GROUP_BYTES};
use crate::broker::runtime::{will_delay_secs, BrokerCore, Overfilled, Routed};
use crate::broker::session::{AttachToken, Session};
use crate::config::Listener;
use crate::protocol::codec::{complete_packets, decode_frozen};
use crate::protocol::{
    DecodeError, Disconnect, LastWill, Packet, Properties, ProtocolVersion, ReasonCode,
};
use crate::security::{AuthzCache, Principal};
use crate::transport::SharedTls;

/// Stop reading and stop pulling deliveries while this much output waits for the socket.
pub const OUT_HIGH_WATER_BYTES: usize = 256 * 1024;
/// Capacity a batch of deliveries starts with (the buffer is released whenever it empties).
const OUT_BATCH_START_BYTES: usize = 16 * 1024;
/// How long closing waits for the store to answer the connection's pending publishes.
const PENDING_ACKS_DRAIN_LIMIT: Duration = Duration::from_secs(10);
/// Topic aliases an MQTT 5 client may set per connection (CONNACK Topic Alias Maximum). Small:
/// the aliases are searched linearly and cost a topic reference each.
pub const TOPIC_ALIAS_MAXIMUM: u16 = 16;
/// At most this many PUBLISH packets in one read, a client is not streaming: its
/// acknowledgements wait for the deliveries they caused (see `run`). A streaming client's reads
/// carry dozens (a QoS 1 publisher with a window of 100 in flight sends 17-64 per read here).
const FEW_PUBLISHES: usize = 4;

/// How long closing may spend flushing output and shutting the socket down.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// At most this much is read and discarded after a DISCONNECT for the client's fault.
const LINGER_MAX_BYTES: usize = 256 * 1024;

/// The connector a connection arrived on: its configuration (read through `Deref`: `name`,
/// `scheme`, `options`, `inactivity`) and its live TLS material.
#[derive(Debug, Clone)]
pub struct ListenerSettings {
    pub config: Listener,
    /// The TLS material of a TLS connector (renewed in place when the files change).
    pub tls: Option<Arc<SharedTls>>,
    /// The connector's connection counters (kept across reloads of these settings).
    pub stats: Arc<crate::metrics::ListenerStats>,
}

impl std::ops::Deref for ListenerSettings {
    type Target = Listener;
    fn deref(&self) -> &Listener {
        &self.config
    }
}

impl ListenerSettings {
    /// `maxFrameSize` as the codec's maximum remaining length.
    pub fn max_frame_size_bytes(&self) -> usize {
        usize::try_from(self.options.max_frame_size_bytes).unwrap_or(usize::MAX)
    }
}

/// Everything a connection task needs besides its stream.
#[derive(Debug, Clone)]
pub struct ConnectionParams {
    pub core: Arc<BrokerCore>,
    pub listener: Arc<ListenerSettings>,
    pub peer: SocketAddr,
    /// The stream is TLS (selects the certificate login domain of a dual JAAS setup).
    pub tls: bool,
    /// Subject DN of the verified TLS client certificate, when there is one.
    pub peer_cert_subject: Option<String>,
    /// Cancelled when the broker shuts down.
    pub shutdown: CancellationToken,
}

/// Why a connection ended; decides whether the will is published.
#[derive(Debug)]
pub(crate) enum CloseReason {
    /// DISCONNECT received: the will is discarded.
    ClientDisconnect,
    /// MQTT 5 DISCONNECT with reason 0x04: the client asks for its will to be published.
    ClientDisconnectWithWill,
    /// The peer closed the socket without DISCONNECT.
    PeerClosed,
    Io(io::Error),
    /// No inbound byte for this long (1.5 x keep-alive).
    KeepAliveExpired(Duration),
    Malformed(DecodeError),
    ProtocolViolation(&'static str),
    /// An MQTT 5 re-authentication failed or timed out (DISCONNECT 0x87, MQTT 5 4.12.1-2).
    AuthenticationFailed(&'static str),
    /// An MQTT 5 PUBLISH used topic alias 0 or one above our Topic Alias Maximum.
    TopicAliasInvalid(u16),
    /// An MQTT 5 client had more QoS 1/2 PUBLISHes unacknowledged than our Receive Maximum
    /// (this many).
    ReceiveMaximumExceeded(u16),
    /// Another connection took the session over (`allowLinkStealing`). The network
    /// connection closes without a DISCONNECT, so the will is due (MQTT 3.1.1 3.1.4-2 with
    /// 3.1.2-8; MQTT 5 3.1.4-3), except for an MQTT 5 will with a Will Delay Interval whose
    /// session the new connection continues (MQTT 5 3.1.3-9): see [`Conn::will_due`].
    TakenOver,
    /// An administrator closed the connection from the console (DISCONNECT 0x98 to an
    /// MQTT 5 client; the will is published, as for any close the client did not ask for).
    AdministrativeAction,
    /// A QoS the broker does not serve now (QoS 2 from a backplane whose Maximum QoS is
    /// lower): MQTT 5 gets DISCONNECT 0x9B (3.2.2-11), MQTT 3 a closed connection.
    QosNotSupported,
    /// A cluster node drains (`draining`: SIGTERM, its sessions handed over) or lost its
    /// shared engine's quorum: the client is sent away (MQTT 5 DISCONNECT 0x9C, Use another
    /// server, with a Server Reference; MQTT 3 a closed connection) so that it resumes on a
    /// node that can keep its messages.
    UseAnotherServer {
        draining: bool,
    },
    /// A single broker's store did not keep what a packet would promise (reopening after a
    /// failed write): closed without it, so that the client re-sends on its next connection
    /// (MQTT 5 DISCONNECT 0x89, Server busy; MQTT 3 a closed connection).
    StoreRefused,
    /// Broker shutdown. Not a DISCONNECT from the client, so the will IS published (MQTT
    /// 3.1.1 3.1.2.5: the will is published whenever the connection closes without one).
    ServerShutdown,
    /// An MQTT 3 publish stayed refused by a full memory or store past
    /// `sendFailIfNoSpace[AfterTimeout]`: closed without acknowledging it (the will is
    /// published; the client re-sends the message when it reconnects).
    NoSpace,
    /// A cluster node cannot carry this PUBLISH's topic (longer, escaped, than a NATS subject
    /// may be): MQTT 5 DISCONNECT 0x90 Topic Name invalid, MQTT 3 a closed connection; never
    /// acknowledged.
    TopicTooLong(usize),
    Internal(String),
}

impl CloseReason {
    /// The access-log / metrics reason.
    fn metric_reason(&self) -> crate::metrics::Reason {
        use crate::metrics::Reason;
        match self {
            CloseReason::ClientDisconnect | CloseReason::ClientDisconnectWithWill => {
                Reason::ClientDisconnect
            }
            CloseReason::PeerClosed => Reason::PeerClosed,
            CloseReason::Io(_) => Reason::SocketError,
            CloseReason::KeepAliveExpired(_) => Reason::KeepAliveTimeout,
            CloseReason::Malformed(_)
            | CloseReason::ProtocolViolation(_)
            | CloseReason::TopicAliasInvalid(_)
            | CloseReason::ReceiveMaximumExceeded(_)
            | CloseReason::QosNotSupported
            | CloseReason::TopicTooLong(_) => Reason::ProtocolError,
            CloseReason::UseAnotherServer { draining: true } => Reason::ServerShutdown,
            CloseReason::UseAnotherServer { draining: false } | CloseReason::StoreRefused => {
                Reason::StoreUnavailable
            }
            CloseReason::AuthenticationFailed(_) => Reason::ReauthFailed,
            CloseReason::TakenOver => Reason::TakenOver,
            CloseReason::AdministrativeAction => Reason::AdminDisconnect,
            CloseReason::ServerShutdown => Reason::ServerShutdown,
            CloseReason::NoSpace => Reason::NoSpace,
            CloseReason::Internal(_) => Reason::Internal,
        }
    }

    fn publishes_will(&self) -> bool {
        !matches!(self, CloseReason::ClientDisconnect)
    }

    /// The reason code of the DISCONNECT an MQTT 5 client is sent before the broker closes
    /// (MQTT 5 4.13.2); `None` when the client ended it or the socket is broken.
    fn server_disconnect_code(&self) -> Option<u8> {
        match self {
            CloseReason::TakenOver => Some(ReasonCode::SessionTakenOver.code()),
            CloseReason::AdministrativeAction => Some(ReasonCode::AdministrativeAction.code()),
            CloseReason::KeepAliveExpired(_) => Some(ReasonCode::KeepAliveTimeout.code()),
            CloseReason::Malformed(e) => Some(e.reason_code()),
            CloseReason::ProtocolViolation(_) => Some(ReasonCode::ProtocolError.code()),
            CloseReason::AuthenticationFailed(_) => Some(ReasonCode::NotAuthorized.code()),
            CloseReason::TopicAliasInvalid(_) => Some(ReasonCode::TopicAliasInvalid.code()),
            CloseReason::TopicTooLong(_) => Some(ReasonCode::TopicNameInvalid.code()),
            CloseReason::ReceiveMaximumExceeded(_) => {
                Some(ReasonCode::ReceiveMaximumExceeded.code())
            }
            CloseReason::ServerShutdown => Some(ReasonCode::ServerShuttingDown.code()),
            CloseReason::QosNotSupported => Some(ReasonCode::QoSNotSupported.code()),
            CloseReason::UseAnotherServer { .. } => Some(ReasonCode::UseAnotherServer.code()),
            CloseReason::StoreRefused => Some(ReasonCode::ServerBusy.code()),
            CloseReason::NoSpace => Some(ReasonCode::QuotaExceeded.code()),
            CloseReason::Internal(_) => Some(ReasonCode::ImplementationSpecificError.code()),
            CloseReason::ClientDisconnect
            | CloseReason::ClientDisconnectWithWill
            | CloseReason::PeerClosed
            | CloseReason::Io(_) => None,
        }
    }

    /// What the log says about this close: its `Display`, except for a packet above a cluster
    /// node's cap (`cluster_max`: NATS's `max_payload` less the frame around a message), whose
    /// hint names `max_payload`: raising `wireFormat.maxFrameSize` (`listener_max`) cannot
    /// lift it.
    fn describe(&self, cluster_max: Option<usize>, listener_max: usize) -> String {
        match (self, cluster_max) {
            (CloseReason::Malformed(DecodeError::TooLarge { size, .. }), Some(cap))
                if *size > cap =>
            {
                let also = if *size > listener_max {
                    ", and wireFormat.maxFrameSize"
                } else {
                    ""
                };
                format!(
                    "packet of {size} bytes exceeds the maximum of {cap} bytes this cluster node \
                     carries (NATS's max_payload less {} bytes of frame; raise max_payload in \
                     the NATS servers' configuration{also} to accept it)",
                    crate::config::JetStreamSettings::MESSAGE_FRAME_MARGIN
                )
            }
            _ => self.to_string(),
        }
    }

    fn is_protocol_error(&self) -> bool {
        matches!(
            self,
            CloseReason::Malformed(_)
                | CloseReason::ProtocolViolation(_)
                | CloseReason::TopicAliasInvalid(_)
                | CloseReason::ReceiveMaximumExceeded(_)
        )
    }
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CloseReason::ClientDisconnect => f.write_str("client sent DISCONNECT"),
            CloseReason::ClientDisconnectWithWill => {
                f.write_str("client sent DISCONNECT asking for its will (0x04)")
            }
            CloseReason::PeerClosed => f.write_str("peer closed the connection without DISCONNECT"),
            CloseReason::Io(e) => write!(f, "socket error: {e}"),
            CloseReason::KeepAliveExpired(d) => {
                write!(
                    f,
                    "keep-alive expired: nothing received for {} ms",
                    d.as_millis()
                )
            }
            CloseReason::Malformed(e) => write!(f, "{e}"),
            CloseReason::ProtocolViolation(what) => write!(f, "protocol violation: {what}"),
            CloseReason::AuthenticationFailed(what) => f.write_str(what),
            CloseReason::TopicAliasInvalid(alias) => {
                write!(
                    f,
                    "topic alias {alias} is outside 1..={TOPIC_ALIAS_MAXIMUM}"
                )
            }
            CloseReason::ReceiveMaximumExceeded(max) => write!(
                f,
                "more than Receive Maximum ({max}) QoS 1/2 publishes unacknowledged"
            ),
            CloseReason::TakenOver => f.write_str("session taken over by a new connection"),
            CloseReason::AdministrativeAction => {
                f.write_str("disconnected by an administrator (console)")
            }
            CloseReason::ServerShutdown => f.write_str("broker shutting down"),
            CloseReason::QosNotSupported => {
                f.write_str("QoS 2 PUBLISH: the store serves QoS 0 and 1 (Maximum QoS 1)")
            }
            CloseReason::UseAnotherServer { draining: true } => f.write_str(
                "this node is draining (shutting down), its sessions handed over: use another server",
            ),
            CloseReason::UseAnotherServer { draining: false } => f.write_str(
                "the cluster store's quorum is unreachable from this node: use another server",
            ),
            CloseReason::StoreRefused => f.write_str(
                "the store did not keep what this exchange needs (reopening after a failed \
                 write): closed unacknowledged, for the client to send it again",
            ),
            CloseReason::NoSpace => f.write_str(
                "publish refused: memory or store full past sendFailIfNoSpace[AfterTimeout]",
            ),
            CloseReason::TopicTooLong(len) => write!(
                f,
                "PUBLISH topic of {len} bytes: too long for the cluster's NATS subjects"
            ),
            CloseReason::Internal(what) => write!(f, "internal error: {what}"),
        }
    }
}

/// An established MQTT connection's state (everything but the socket halves).
pub(crate) struct Conn {
    core: Arc<BrokerCore>,
    listener: Arc<ListenerSettings>,
    version: ProtocolVersion,
    /// The keep-alive limit decided at CONNECT, in milliseconds (`None`: the inactivity
    /// monitor is off; a `transport.defaultKeepAlive` above 49.7 days is held as 49.7 days,
    /// MQTT's own largest is 65,535 s x 1.5), read once to
    /// start the connection's [`KeepAlive`], which holds it from then on (a woken connection
    /// has this `None`). Four bytes beside `version`, where `Conn` has room anyway.
    keep_alive_limit_ms: Option<std::num::NonZeroU32>,
    session: Arc<Session>,
    token: AttachToken,
    /// Who the client is and what it may do.
    identity: Identity,
    /// What the client asked for at CONNECT (MQTT 5) and its topic aliases.
    limits: ClientLimits,
    /// What goes to the socket.
    output: Output,
    /// Acknowledgements waiting for the durable store, in the order the packets arrived.
    pending_acks: PendingAcks,
    /// Back-pressure from slow subscribers this client publishes to.
    pause: PublisherPause,
    /// Producer flow control: broker-wide limits (see `flow_control.rs`).
    flow: FlowControl,
}

/// Who the client is and what it may do.
struct Identity {
    principal: Principal,
    authz: AuthzCache,
    /// Boxed: most clients set none, and every connection (parked or not) would carry its
    /// 72 bytes.
    will: Option<Box<HeldWill>>,
    /// Only for a client that authenticated with an MQTT 5 Authentication Method.
    enhanced_auth: Option<Box<enhanced_auth::EnhancedAuth>>,
}

/// A connected client's will, charged to `memoryUsage` while its connection holds it (a
/// will is kept from CONNECT until the connection ends, and may be large: 600 clients with
/// 65 KB wills held 38 MiB). The CONNECT is never refused for it (ActiveMQ has no limit on
/// wills); what the charge does is pause QoS 1/2 publishers sooner, as any held message does.
/// Published, the will is charged as a message instead.
pub(super) struct HeldWill {
    will: LastWill,
    _charge: crate::broker::routing::memory::HeldBytes,
}

impl HeldWill {
    fn new(will: LastWill, gauge: &Arc<crate::broker::routing::memory::MemoryGauge>) -> Self {
        let bytes = will_bytes(&will);
        HeldWill {
            will,
            _charge: gauge.hold(bytes),
        }
    }
}

/// What a will holds in memory, as charged: its topic, payload and properties (their
/// encoded size, which their decoded form is close to).
fn will_bytes(will: &LastWill) -> u64 {
    let properties = will
        .properties
        .as_deref()
        .map_or(0, crate::protocol::properties_len);
    (will.topic.len() + will.payload.len() + properties) as u64
}

impl Identity {
    /// The user name, `None` for an anonymous client.
    fn user(&self) -> Option<&str> {
        (!self.principal.anonymous).then_some(&*self.principal.user)
    }
}

/// An MQTT 5 client's topic aliases: (alias, topic).
type TopicAliases = Vec<(u16, Arc<str>)>;

/// Limits the client set at CONNECT, and its topic aliases.
struct ClientLimits {
    /// QoS 1/2 deliveries in flight at most: the broker's window (a u16 option), capped by an
    /// MQTT 5 client's Receive Maximum (a two-byte integer). See [`ClientLimits::inflight_window`].
    inflight_window: u16,
    /// An MQTT 5 client's Maximum Packet Size (a four-byte integer, not 0: 3.1.2.11.4): larger
    /// deliveries are dropped for it (counted in `dropped_packet_too_large`), as MQTT 5
    /// 3.1.2-25 requires. See [`ClientLimits::max_packet_bytes`].
    max_packet_size: Option<std::num::NonZeroU32>,
    /// The MQTT 5 client's topic aliases (alias -> topic), at most [`TOPIC_ALIAS_MAXIMUM`].
    /// Boxed on first use: most clients set none, and every connection (parked or not) would
    /// carry an empty `Vec`'s 24 bytes.
    #[allow(clippy::box_collection)]
    topic_aliases: Option<Box<TopicAliases>>,
    /// The client's QoS 1/2 PUBLISHes not yet answered with PUBACK, PUBCOMP or a PUBREC
    /// >= 0x80 (MQTT 5 only; see `receive_quota.rs`).
    unacked_inbound: u16,
    /// An MQTT 5 client's Request Problem Information (false when it sent 0): no Reason
    /// String or User Property on acknowledgements (see `problem_info.rs`).
    problem_info: bool,
    /// The aliases we give topics we send (MQTT 5 client with Topic Alias Maximum > 0; see
    /// `outbound_aliases.rs`).
    outbound_aliases: outbound_aliases::OutboundAliases,
    /// Packet ids of a resumed session's unfinished exchanges not re-sent yet, because the
    /// window was full (see `Conn::resend_inflight`). Boxed and rare: one pointer when idle.
    #[allow(clippy::box_collection)]
    resend_held: Option<Box<VecDeque<u16>>>,
}

impl ClientLimits {
    /// QoS 1/2 deliveries in flight at most.
    fn inflight_window(&self) -> usize {
        usize::from(self.inflight_window)
    }

    /// The client's Maximum Packet Size in bytes (`None`: no limit).
    fn max_packet_bytes(&self) -> Option<usize> {
        self.max_packet_size
            .map(|max| usize::try_from(max.get()).unwrap_or(usize::MAX))
    }
}

/// What goes to the socket.
#[derive(Default)]
struct Output {
    /// Encoded packets waiting for the socket.
    out: BytesMut,
    /// The session queue or the in-flight window changed: try to move deliveries to `out`.
    pump_wanted: bool,
    /// Paged-out payloads of the session queue's head being read back (see `page_in.rs`).
    page_in: Option<page_in::PageIn>,
}

/// Back-pressure: reading pauses while subscriber sessions this client's publishes pushed
/// above their soft limit drain (instead of dropping acknowledged messages). Boxed and
/// allocated on the first pause: most connections never pause, and every connection (parked
/// or not) would carry its 64 bytes.
#[derive(Default)]
struct PublisherPause(Option<Box<PauseState>>);

#[derive(Default)]
struct PauseState {
    overfilled: Vec<Overfilled>,
    /// When the current pause ends regardless (a stuck subscriber must not stall us forever).
    paused_until: Option<tokio::time::Instant>,
    /// Sessions a pause timed out on: not paused for again until they drop below their soft
    /// limit (a stuck subscriber costs one pause; then its QoS 1/2 queue is bounded by the
    /// broker-wide memory and store limits, its QoS 0 queue by the hard cap).
    given_up: Vec<Overfilled>,
}

impl PublisherPause {
    /// The sessions the connection waits for (empty: not paused).
    fn overfilled(&self) -> &[Overfilled] {
        self.0.as_deref().map_or(&[], |s| &s.overfilled)
    }

    fn paused_until(&self) -> Option<tokio::time::Instant> {
        self.0.as_deref().and_then(|s| s.paused_until)
    }
}

/// Producer flow control (see `flow_control.rs`).
#[derive(Default)]
struct FlowControl {
    /// A QoS 1/2 PUBLISH a broker-wide limit stopped: no new PUBLISH is taken until it is
    /// admitted or refused.
    held: Option<Box<flow_control::HeldPublish>>,
    /// PUBLISH packets read while one was held, in arrival order.
    deferred: flow_control::Deferred,
}

/// A byte stream a connection may park (see `connection::parking`): plain TCP only; TLS and WebSocket
/// streams keep state in user space and keep their task.
pub trait ParkableStream: AsyncRead + AsyncWrite + Unpin + Send + 'static + Sized {
    /// Whether [`ParkableStream::into_tcp`] gives the socket.
    const PARKABLE: bool = false;

    /// The plain TCP socket under this stream, or the stream back.
    fn into_tcp(self) -> Result<tokio::net::TcpStream, Self> {
        Err(self)
    }

    /// A probe of whether the peer closed the plain TCP socket under this stream (see
    /// `connect::LeftProbe`); `None` for other streams.
    fn left_probe(&self) -> Option<connect::LeftProbe> {
        None
    }
}

impl ParkableStream for tokio::net::TcpStream {
    const PARKABLE: bool = true;

    fn into_tcp(self) -> Result<tokio::net::TcpStream, Self> {
        Ok(self)
    }

    fn left_probe(&self) -> Option<connect::LeftProbe> {
        connect::LeftProbe::of(self)
    }
}

impl ParkableStream for Box<dyn crate::transport::AsyncStream> {}

impl ParkableStream for tokio::io::DuplexStream {}

/// Serve one client on `stream` until it disconnects, fails, is taken over or the broker
/// shuts down. Never panics on peer input; every outcome is logged with the peer address.
///
/// A plain function returning the future (not an `async fn`): an `async fn` would keep its own
/// copy of `stream` and `params` beside the inner future's, in every connection's task.
pub fn serve<S: ParkableStream>(
    stream: S,
    params: ConnectionParams,
) -> impl Future<Output = ()> + Send {
    serve_with_slot(stream, params, None)
}

/// [`serve`] for a plain TCP connection a listener accepted: `slot` is held for the
/// connection's whole life, and the connection parks while it is idle (see `connection::parking`).
pub fn serve_tcp(
    stream: tokio::net::TcpStream,
    params: ConnectionParams,
    slot: ConnectionSlot,
) -> impl Future<Output = ()> + Send {
    serve_with_slot(stream, params, Some(slot))
}

fn serve_with_slot<S: ParkableStream>(
    stream: S,
    params: ConnectionParams,
    slot: Option<ConnectionSlot>,
) -> impl Future<Output = ()> + Send {
    params.listener.stats.opened(crate::config::Protocol::Mqtt);
    let span = tracing::info_span!(
        "conn",
        listener = %params.listener.name,
        peer = %params.peer,
        client_id = tracing::field::Empty,
    );
    serve_in_span(stream, params, slot).instrument(span)
}

async fn serve_in_span<S: ParkableStream>(
    stream: S,
    params: ConnectionParams,
    slot: Option<ConnectionSlot>,
) {
    // Memory of a connection: the handshake phase is boxed (and freed when it ends) so that a
    // connection's task holds only the phase it is in.
    let Some(established) = Box::pin(handshake_phase(stream, params, slot)).await else {
        return;
    };
    let (conn, reader, writer, read_buf, phase) = established;
    serve_established(conn, reader, writer, read_buf, phase).await;
}

/// What the handshake phase hands to the established phase.
type Handshaken<S> = (Box<Conn>, ReadHalf<S>, WriteHalf<S>, BytesMut, Established);

/// CONNECT to CONNACK; `None` when the connection was refused (and closed).
async fn handshake_phase<S: ParkableStream>(
    stream: S,
    params: ConnectionParams,
    slot: Option<ConnectionSlot>,
) -> Option<Handshaken<S>> {
    // Only a cluster node's claim asks it; dropped with the handshake.
    let left = params.core.backplane().and_then(|_| stream.left_probe());
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut read_buf = BytesMut::new();
    // The connection state is boxed and no `match` temporary holding it lives across an
    // await (it would stay in this future's layout).
    let handshake = Box::pin(connect::handshake(
        &mut reader,
        &mut writer,
        &mut read_buf,
        &params,
        left.as_ref(),
    ));
    let established = match handshake.await {
        Ok(conn) => Some(Box::new(conn)),
        Err(end) => {
            end.log(&params.core);
            if let Some(reason) = end.metric_reason() {
                let (client_id, user) = end.who();
                crate::metrics::access::refused(
                    crate::metrics::access::Who {
                        listener: &params.listener.stats,
                        protocol: crate::config::Protocol::Mqtt,
                        peer: params.peer,
                        client_id,
                        user,
                    },
                    reason,
                );
            }
            None
        }
    };
    drop(left);
    let Some(conn) = established else {
        Box::pin(shut_down(&mut writer)).await;
        return None;
    };
    tracing::Span::current().record(
        "client_id",
        tracing::field::display(crate::security::Bounded(conn.session.client_id())),
    );
    crate::metrics::access::connected(crate::metrics::access::Who {
        listener: &params.listener.stats,
        protocol: crate::config::Protocol::Mqtt,
        peer: params.peer,
        client_id: Some(conn.session.client_id()),
        user: conn.identity.user(),
    });
    tracing::debug!(
        version = ?conn.version,
        keep_alive_ms = conn.keep_alive_limit_ms,
        "connected"
    );
    let phase = Established {
        keep_alive: KeepAlive::new(
            conn.keep_alive_limit_ms
                .map(|ms| Duration::from_millis(u64::from(ms.get()))),
        ),
        security: conn.core.watch_security(),
        peer: params.peer,
        shutdown: params.shutdown.clone(),
        park: if S::PARKABLE && slot.is_some() {
            ParkAfter::Connect
        } else {
            ParkAfter::Never
        },
        _slot: slot,
    };
    Some((conn, reader, writer, read_buf, phase))
}

/// What an established connection keeps besides [`Conn`] and its socket, from task to task
/// when it parks.
pub(crate) struct Established {
    keep_alive: KeepAlive,
    /// Security reloads (a parked connection sees one that happened while it was parked).
    security: watch::Receiver<u64>,
    peer: SocketAddr,
    /// Cancelled when the broker shuts down.
    shutdown: CancellationToken,
    /// Whether the connection parks while idle, and after how long.
    park: ParkAfter,
    /// The listener's hold on this connection, released when it ends.
    _slot: Option<ConnectionSlot>,
}

/// Whether and when an idle connection parks (see `parking`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ParkAfter {
    /// Never: TLS, WebSocket, or a lot that could not take it.
    Never,
    /// It has not parked yet: after [`PARK_AFTER_CONNECT`].
    Connect,
    /// It has parked before: after [`PARK_AFTER_IDLE`].
    Idle,
}

/// How an established connection's read/write loop ended.
enum Ended {
    Close(CloseReason),
    /// Idle: the connection goes to the parking lot.
    Park,
}

impl From<CloseReason> for Ended {
    fn from(reason: CloseReason) -> Self {
        Ended::Close(reason)
    }
}

/// The established phase, from CONNACK (or a wake-up) until the connection closes or parks.
async fn serve_established<S: ParkableStream>(
    mut conn: Box<Conn>,
    mut reader: ReadHalf<S>,
    mut writer: WriteHalf<S>,
    read_buf: BytesMut,
    mut phase: Established,
) {
    let reason = match run(&mut conn, &mut reader, &mut writer, read_buf, &mut phase).await {
        Ended::Close(reason) => reason,
        // `run` announced the park to the session (`Conn::try_begin_park`).
        Ended::Park => match reader.unsplit(writer).into_tcp() {
            Ok(tcp) => match tcp.into_std() {
                Ok(socket) => {
                    parking::park(conn, socket, phase);
                    return;
                }
                Err(e) => {
                    conn.session.unparked(conn.token.generation);
                    finish_without_socket(conn, e, phase.peer).await;
                    return;
                }
            },
            Err(stream) => {
                conn.session.unparked(conn.token.generation);
                (reader, writer) = tokio::io::split(stream);
                CloseReason::Internal("a stream that cannot park was parked".into())
            }
        },
    };
    finish(conn, reason, &mut writer, Some(&mut reader), phase.peer).await;
}

/// A woken parked connection's new task (see `connection::parking`).
fn resume(parked: Box<parking::Parked>, woken: parking::Woken) -> impl Future<Output = ()> + Send {
    let span = tracing::info_span!(
        "conn",
        listener = %parked.conn.listener.name,
        peer = %parked.phase.peer,
        client_id = %crate::security::Bounded(parked.conn.session.client_id()),
    );
    resume_in_span(parked, woken).instrument(span)
}

async fn resume_in_span(parked: Box<parking::Parked>, woken: parking::Woken) {
    let parking::Parked {
        conn,
        stream,
        mut phase,
        ..
    } = *parked;
    let mut conn = conn.into_conn();
    if phase.park == ParkAfter::Connect {
        phase.park = ParkAfter::Idle;
    }
    conn.session.unparked(conn.token.generation);
    // What was queued while parked, and what a wake-up ring announced.
    conn.output.pump_wanted = true;
    if !woken.out.is_empty() {
        conn.output.out = woken.out;
    }
    let socket: std::net::TcpStream = stream.into();
    match tokio::net::TcpStream::from_std(socket) {
        Ok(tcp) => {
            let (reader, writer) = tokio::io::split(tcp);
            serve_established(conn, reader, writer, woken.read, phase).await;
        }
        Err(e) => finish_without_socket(conn, e, phase.peer).await,
    }
}

/// Close a connection whose socket could not be moved between tokio and the parking lot
/// (`e`): the will, the session and the counters as for any socket error, nothing written.
async fn finish_without_socket(conn: Box<Conn>, e: io::Error, peer: SocketAddr) {
    let no_reader = None::<&mut tokio::io::Empty>;
    finish(
        conn,
        CloseReason::Io(e),
        &mut tokio::io::sink(),
        no_reader,
        peer,
    )
    .await;
}

/// Close an established connection (see [`Conn::close`]) and linger when it asks to.
async fn finish<W, R>(
    conn: Box<Conn>,
    reason: CloseReason,
    writer: &mut W,
    reader: Option<&mut R>,
    peer: SocketAddr,
) where
    W: AsyncWrite + Unpin,
    R: AsyncRead + Unpin,
{
    conn.core
        .clients
        .remove(crate::broker::clients::ClientKey::Mqtt(
            conn.token.generation,
        ));
    if Box::pin(conn.close(reason, writer, peer)).await {
        if let Some(reader) = reader {
            Box::pin(linger(reader)).await;
        }
    }
}

/// Close the socket, bounded by [`CLOSE_GRACE`].
async fn shut_down<W: AsyncWrite + Unpin>(writer: &mut W) {
    let _ = tokio::time::timeout(CLOSE_GRACE, writer.shutdown()).await;
}

/// The read/write loop of an established connection.
async fn run<R, W>(
    conn: &mut Conn,
    reader: &mut R,
    writer: &mut W,
    mut read_buf: BytesMut,
    phase: &mut Established,
) -> Ended
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    // One timer serves the keep-alive deadline and, for a connection that may park, the
    // check whether it has been idle for `park_after` (see `parking`).
    // A connection still busy after a few short checks is an active one: it checks at the
    // long interval from then on (a timer every 50 ms costs a busy connection CPU for nothing).
    let mut short_checks_left: u8 = if phase.park == ParkAfter::Connect {
        4
    } else {
        0
    };
    let park_after = |short_checks_left: u8| {
        if short_checks_left > 0 {
            PARK_AFTER_CONNECT
        } else {
            PARK_AFTER_IDLE
        }
    };
    let mut park_check = (phase.park != ParkAfter::Never)
        .then(|| tokio::time::Instant::now() + park_after(short_checks_left));
    let timer_at = |keep_alive: &KeepAlive, park_check: Option<tokio::time::Instant>| {
        park_check.map_or(keep_alive.deadline(), |check| {
            check.min(keep_alive.deadline())
        })
    };
    let expiry = tokio::time::sleep_until(timer_at(&phase.keep_alive, park_check));
    tokio::pin!(expiry);
    // Rounds of the loop since the last park check: 1 means only the check's own round.
    let mut rounds_since_check: u32 = 0;
    let signals = conn.token.signals.clone();
    let max_frame = conn.listener.max_frame_size_bytes();
    let mut needs_flush = false;
    // A connection woken from the parking lot closes before anything else, as the biased
    // `select!` below would have it: it was shut down, kicked, or its keep-alive expired.
    if phase.shutdown.is_cancelled() {
        return CloseReason::ServerShutdown.into();
    }
    if signals.is_kicked() {
        return conn.kick_reason().into();
    }
    if tokio::time::Instant::now() >= phase.keep_alive.deadline() {
        let limit = phase.keep_alive.limit().unwrap_or_default();
        return CloseReason::KeepAliveExpired(limit).into();
    }
    // Packets that arrived with the CONNECT (a pipelining client) or were read while the
    // connection was parked are already buffered.
    if let Err(reason) = conn.handle_buffered(&mut read_buf, max_frame) {
        return reason.into();
    }
    // Set by a read of a few PUBLISH packets (a client not streaming): the subscribers they
    // woke wait on this worker until this task yields, so they write the deliveries first
    // and our acknowledgements follow. Not for batches, where the extra turn of the
    // scheduler (a poll of the I/O driver) costs more CPU than the wait it saves. Awaited
    // here, not in the `select!` arm: an await there would keep the whole `select!` state
    // in every connection's task (idle memory).
    let mut deliveries_first = false;
    loop {
        if std::mem::take(&mut deliveries_first) {
            tokio::task::yield_now().await;
        }
        rounds_since_check = rounds_since_check.saturating_add(1);
        if conn.output.pump_wanted && conn.output.out.len() < OUT_HIGH_WATER_BYTES {
            if let Err(reason) = conn.pump() {
                return reason.into();
            }
        }
        let can_read = conn.output.out.len() < OUT_HIGH_WATER_BYTES
            && conn.pending_acks.has_room()
            && conn.pause.overfilled().is_empty()
            && conn.flow.deferred.has_room();
        let pause_deadline = conn
            .pause
            .paused_until()
            .unwrap_or_else(tokio::time::Instant::now);
        let reauth_deadline = conn.reauth_deadline();
        tokio::select! {
            biased;
            _ = phase.shutdown.cancelled() => return CloseReason::ServerShutdown.into(),
            _ = signals.kicked() => return conn.kick_reason().into(),
            res = write_or_flush(writer, &mut conn.output.out), if !conn.output.out.is_empty() || needs_flush => {
                match res {
                    Ok(WriteStep::Wrote) => needs_flush = true,
                    Ok(WriteStep::Flushed) => {
                        needs_flush = false;
                        // Nothing waits for the socket: give the buffer back (idle memory).
                        // `pump` and `send` allocate a new one when there is output again.
                        conn.output.out = BytesMut::new();
                    }
                    Err(e) => return CloseReason::Io(e).into(),
                }
            }
            res = read::read_some(reader, &mut read_buf), if can_read => match res {
                Ok(0) => return CloseReason::PeerClosed.into(),
                Ok(_) => {
                    phase.keep_alive.touch();
                    expiry.as_mut().reset(timer_at(&phase.keep_alive, park_check));
                    match conn.handle_buffered(&mut read_buf, max_frame) {
                        Ok(publishes) => {
                            deliveries_first = (1..=FEW_PUBLISHES).contains(&publishes)
                                && !conn.output.out.is_empty();
                        }
                        Err(reason) => return reason.into(),
                    }
                }
                Err(e) => return CloseReason::Io(e).into(),
            },
            // Not while paused for an overfilled subscriber: we are not reading, so the
            // client's packets wait unseen in the socket (the pause is bounded; when it ends the
            // read branch above runs before this one).
            _ = &mut expiry, if (phase.keep_alive.is_enabled() || park_check.is_some())
                && conn.pause.overfilled().is_empty()
                && conn.flow.held.is_none() => {
                let now = tokio::time::Instant::now();
                if now >= phase.keep_alive.deadline() {
                    return CloseReason::KeepAliveExpired(phase.keep_alive.limit().unwrap_or_default()).into();
                }
                // Not with a policy reload unseen: the parked connection would keep the
                // subscriptions it denies.
                if rounds_since_check <= 1
                    && conn.quiet(&read_buf, needs_flush)
                    && !phase.security.has_changed().unwrap_or(false)
                    && conn.try_begin_park(&signals, &phase.shutdown)
                {
                    return Ended::Park;
                }
                rounds_since_check = 0;
                short_checks_left = short_checks_left.saturating_sub(1);
                park_check = park_check.map(|_| now + park_after(short_checks_left));
                expiry.as_mut().reset(timer_at(&phase.keep_alive, park_check));
            }
            ready = conn.pending_acks.next_ready(), if !conn.pending_acks.is_empty() => {
                let mut next = ready;
                let mut taken = 0;
                while let Some(ready) = next {
                    if let Err(reason) = conn.apply_ready(ready) {
                        return reason.into();
                    }
                    taken += 1;
                    // The rest that the same group commit released go out in the same write.
                    // Not in a cluster: there a machine partitioned and healed under load
                    // lost acknowledged messages with this batching, for a cause not yet
                    // found, so a cluster node answers each store on its own (docs/cluster.md,
                    // "batched acknowledgement writes").
                    next = if taken < READY_BATCH
                        && conn.pause.overfilled().is_empty()
                        && conn.core.backplane().is_none()
                    {
                        conn.pending_acks.ready_now()
                    } else {
                        None
                    };
                }
            }
            // Boxed, and only while paused: `select!` keeps room for every branch's future
            // even when its branch is disabled, and this one is large (idle memory).
            _ = OptionFuture::from((!conn.pause.overfilled().is_empty()).then(|| {
                Box::pin(conn.core.wait_drained(conn.pause.overfilled(), pause_deadline))
            })), if !conn.pause.overfilled().is_empty() => {
                conn.end_pause(pause_deadline);
                // The packets read before the pause that it left unhandled.
                if let Err(reason) = conn.handle_buffered(&mut read_buf, max_frame) {
                    return reason.into();
                }
            }
            // Boxed for the same reason: a held publish is rare.
            _ = OptionFuture::from(conn.flow.held.is_some().then(|| {
                Box::pin(tokio::time::sleep(flow_control::HELD_RETRY))
            })), if conn.flow.held.is_some() => {
                if let Err(reason) = conn.retry_held() {
                    return reason.into();
                }
                if conn.flow.held.is_none() {
                    // Admitted or refused: read on, starting with the deferred publishes.
                    phase.keep_alive.touch();
                    expiry.as_mut().reset(timer_at(&phase.keep_alive, park_check));
                    if let Err(reason) = conn.handle_buffered(&mut read_buf, max_frame) {
                        return reason.into();
                    }
                }
            }
            page = OptionFuture::from(conn.output.page_in.as_mut()), if conn.output.page_in.is_some() => {
                if let Some(page) = page {
                    if let Err(reason) = conn.finish_page_in(*page) {
                        return reason.into();
                    }
                }
            }
            // Boxed, and only while a re-authentication waits for the client (rare).
            _ = OptionFuture::from(reauth_deadline.map(|deadline| {
                Box::pin(tokio::time::sleep_until(deadline))
            })), if reauth_deadline.is_some() => {
                return CloseReason::AuthenticationFailed("re-authentication timed out").into();
            }
            _ = signals.woken() => conn.output.pump_wanted = true,
            Ok(()) = phase.security.changed() => {
                if let Err(reason) = conn.drop_denied_subscriptions() {
                    return reason.into();
                }
            }
        }
    }
}

enum WriteStep {
    Wrote,
    Flushed,
}

/// One socket write of the whole pending output, or, once it is all written, a flush (TLS and
/// WebSocket streams buffer). Both steps are cancel-safe, so this can sit in a `select!`.
async fn write_or_flush<W: AsyncWrite + Unpin>(
    writer: &mut W,
    out: &mut BytesMut,
) -> io::Result<WriteStep> {
    if out.is_empty() {
        writer.flush().await?;
        return Ok(WriteStep::Flushed);
    }
    match writer.write_buf(out).await? {
        0 => Err(io::ErrorKind::WriteZero.into()),
        _ => Ok(WriteStep::Wrote),
    }
}

/// Most acknowledgements handled in one round of the connection loop before it writes (and
/// looks at its other events): one group commit's worth for a client with a large window.
const READY_BATCH: usize = 256;

impl Conn {
    /// Why the connection was kicked: the console, a cluster drain or lost
    /// quorum (persistent sessions go elsewhere), or a takeover.
    fn kick_reason(&self) -> CloseReason {
        let key = crate::broker::clients::ClientKey::Mqtt(self.token.generation);
        if self.core.clients.kicked_by_admin(key) {
            CloseReason::AdministrativeAction
        } else if self
            .core
            .backplane()
            .is_some_and(|b| b.is_draining() || (self.session.is_persistent() && !b.is_available()))
        {
            self.sent_away()
        } else {
            CloseReason::TakenOver
        }
    }

    /// Why a connection whose session this broker cannot keep is closed: a cluster node sends
    /// the client to another one (a draining node that knows no other live node is shutting
    /// down: "use another server" naming none would send it nowhere); a single broker whose
    /// store refused closes it for the client to send again.
    fn sent_away(&self) -> CloseReason {
        match self.core.backplane() {
            None => CloseReason::StoreRefused,
            Some(b) if b.is_draining() && self.server_reference().is_none() => {
                CloseReason::ServerShutdown
            }
            Some(b) => CloseReason::UseAnotherServer {
                draining: b.is_draining(),
            },
        }
    }

    /// Acts on one acknowledgement the store released, in arrival order: route its message,
    /// queue its acknowledgement and any deliveries held behind it.
    fn apply_ready(&mut self, ready: durable_acks::Ready) -> Result<(), CloseReason> {
        if let Some(plan) = ready.route {
            let routed = self.core.complete_route(plan);
            self.pause_for(routed);
        }
        if let Some(packet) = ready.ack {
            self.send(packet)?;
        }
        if let Some(deliveries) = ready.deliveries {
            self.output.out.extend_from_slice(&deliveries);
        }
        if let Some(packet_id) = ready.unreleased {
            self.with_session(|s| s.inflight_mut().unrelease(packet_id))?;
        }
        if !ready.unsent.is_empty() {
            self.unsend(&ready.unsent)?;
        }
        if ready.close_no_space {
            return Err(CloseReason::NoSpace);
        }
        if ready.close_unkept {
            return Err(self.sent_away());
        }
        Ok(())
    }

    /// Handle the complete packets in `read_buf`, stopping early when a publish pauses this
    /// connection (the rest waits in `read_buf` for the pause to end, so a paused publisher
    /// adds at most one message to the session it overfilled, however much it pipelined).
    /// The complete packets are taken out of `read_buf` as one read charged to `memoryUsage`
    /// (see `memory.rs`), and the messages are slices of it.
    /// `Ok`: how many PUBLISH packets were taken out (handled, deferred, or left for after a
    /// pause). `Err`: close the connection for that reason.
    fn handle_buffered(
        &mut self,
        read_buf: &mut BytesMut,
        max_frame: usize,
    ) -> Result<usize, CloseReason> {
        let mut read = None;
        let mut publishes = 0;
        let handled = self.handle_received(read_buf, &mut read, &mut publishes, max_frame);
        if let Some(last) = read {
            last.settle();
            if handled.is_ok() && !last.bytes.is_empty() {
                // Paused within a read: the packets not handled yet go back in front of what
                // follows them, and are taken out again when the pause ends.
                let mut unhandled = BytesMut::with_capacity(last.bytes.len() + read_buf.len());
                unhandled.extend_from_slice(&last.bytes);
                unhandled.extend_from_slice(read_buf);
                *read_buf = unhandled;
            }
        }
        handled.map(|()| publishes)
    }

    /// [`Self::handle_buffered`], `read` holding what is left of the current read and the
    /// charge its admitted messages add to; `publishes` counts the PUBLISH packets taken out.
    fn handle_received(
        &mut self,
        read_buf: &mut BytesMut,
        read: &mut Option<Received>,
        publishes: &mut usize,
        max_frame: usize,
    ) -> Result<(), CloseReason> {
        while self.pause.overfilled().is_empty() {
            if self.flow.held.is_none() {
                if let Some(publish) = self.flow.deferred.pop() {
                    // Read before the current read: charged on its own when admitted.
                    self.handle(Packet::Publish(publish), Body::Uncharged)?;
                    continue;
                }
            }
            let current = match read {
                Some(current) if !current.bytes.is_empty() => current,
                _ => {
                    let found = complete_packets(read_buf, max_frame, READ_GROUP_BYTES)
                        .map_err(CloseReason::Malformed)?;
                    if found.bytes == 0 {
                        return Ok(());
                    }
                    *publishes += found.publishes;
                    let received = self.core.memory.receive(&read_buf[..found.bytes]);
                    read_buf.advance(found.bytes);
                    if let Some(handled) = read.take() {
                        handled.settle();
                    }
                    read.insert(received)
                }
            };
            if self.take_plain_pubacks(&mut current.bytes)? {
                continue;
            }
            match decode_frozen(&mut current.bytes, self.version, max_frame) {
                // While a publish is held (or publishes wait behind one), later publishes wait
                // in order; every other packet is handled, so the client's acknowledgements of
                // its own deliveries keep its queue moving (no deadlock on its own messages).
                // Counted against our Receive Maximum on arrival, deferred or not.
                Ok(Some(Packet::Publish(publish)))
                    if self.flow.held.is_some() || !self.flow.deferred.is_empty() =>
                {
                    self.count_inbound_publish(&publish)?;
                    self.flow.deferred.push(publish);
                }
                Ok(Some(packet)) => {
                    if let Packet::Publish(publish) = &packet {
                        self.count_inbound_publish(publish)?;
                    }
                    match self.handle(packet, Body::Received(&current.charge))? {
                        inbound::Flow::Continue => {}
                        inbound::Flow::Disconnect => return Err(CloseReason::ClientDisconnect),
                        inbound::Flow::DisconnectWithWill => {
                            return Err(CloseReason::ClientDisconnectWithWill)
                        }
                    }
                }
                // `complete_packets` framed whole packets only.
                Ok(None) => {
                    return Err(CloseReason::Malformed(DecodeError::Malformed {
                        packet: "fixed header",
                        reason: "a packet framed as complete was not",
                    }))
                }
                Err(e) => return Err(CloseReason::Malformed(e)),
            }
        }
        Ok(())
    }

    /// Pause reading for the sessions `routed` overfilled (never for our own session: its
    /// acknowledgements arrive on the socket we would stop reading).
    fn pause_for(&mut self, routed: Routed) {
        if routed.overfilled.is_empty() {
            return;
        }
        let own = self.session.id();
        let pause = self.pause.0.get_or_insert_with(Default::default);
        pause.given_up.retain(Overfilled::still_over);
        let given_up = &pause.given_up;
        let before = pause.overfilled.len();
        pause
            .overfilled
            .extend(routed.overfilled.into_iter().filter(|o| {
                let id = o.session.id();
                id != own && !given_up.iter().any(|g| g.session.id() == id)
            }));
        if pause.overfilled.len() > before && pause.paused_until.is_none() {
            pause.paused_until =
                Some(tokio::time::Instant::now() + Duration::from_millis(OVERFILL_PAUSE_LIMIT_MS));
        }
    }

    /// The pause ended (`deadline` passed or the sessions drained): sessions still over their
    /// soft limit at the deadline are given up on.
    fn end_pause(&mut self, deadline: tokio::time::Instant) {
        let Some(mut pause) = self.pause.0.take() else {
            return;
        };
        let overfilled = std::mem::take(&mut pause.overfilled);
        pause.paused_until = None;
        if tokio::time::Instant::now() >= deadline {
            for o in overfilled {
                let id = o.session.id();
                if o.still_over() && !pause.given_up.iter().any(|g| g.session.id() == id) {
                    tracing::warn!(
                        subscriber = %o.session.client_id(),
                        soft_limit = o.soft_limit,
                        "subscriber did not drain within {OVERFILL_PAUSE_LIMIT_MS} ms: publishing \
                         on (its queue is bounded by memoryUsage/storeUsage)"
                    );
                    pause.given_up.push(o);
                }
            }
        }
        // Sessions given up on are remembered; otherwise the pause's memory goes.
        if !pause.given_up.is_empty() {
            self.pause.0 = Some(pause);
        }
    }

    /// Finish what waits for the store before the session is released: a message the store
    /// already queued for persistent sessions must reach their in-memory queues too (else the
    /// two disagree until the next restart). Acknowledgements go out if the socket still works.
    async fn drain_pending_acks(&mut self) {
        let deadline = tokio::time::Instant::now() + PENDING_ACKS_DRAIN_LIMIT;
        while !self.pending_acks.is_empty() {
            match tokio::time::timeout_at(deadline, self.pending_acks.next_ready()).await {
                Ok(Some(ready)) => {
                    if let Some(plan) = ready.route {
                        self.core.complete_route(plan);
                    }
                    if let Some(packet) = ready.ack {
                        let _ = self.send(packet);
                    }
                    if let Some(deliveries) = ready.deliveries {
                        self.output.out.extend_from_slice(&deliveries);
                    }
                    if let Some(packet_id) = ready.unreleased {
                        let _ = self.with_session(|s| s.inflight_mut().unrelease(packet_id));
                    }
                    if !ready.unsent.is_empty() {
                        let _ = self.unsend(&ready.unsent);
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    // None of them was acknowledged to the client. Where one the store keeps
                    // anyway shows up differs: a single broker routes it when it recovers
                    // the store; a cluster node's readers deliver it from its stream.
                    let late_ones = if self.core.backplane().is_some() {
                        "delivered from the cluster's streams"
                    } else {
                        "delivered after the next restart"
                    };
                    tracing::warn!(
                        "durable store did not answer within {} ms; this connection's publishes \
                         it has not acknowledged were not acknowledged to the client either \
                         (those the store keeps anyway are {late_ones})",
                        PENDING_ACKS_DRAIN_LIMIT.as_millis()
                    );
                    break;
                }
            }
        }
    }

    /// A cluster's Server Reference (MQTT 5 4.11) for "Use another server": live nodes
    /// serving this connector's kind of transport; `None` when none is known.
    fn server_reference(&self) -> Option<Box<Properties>> {
        let backplane = self.core.backplane()?;
        let reference =
            backplane.server_reference(self.listener.scheme, self.session.client_id())?;
        Some(Box::new(Properties {
            server_reference: Some(reference),
            ..Properties::default()
        }))
    }

    /// Whether closing for `reason` publishes the will. A takeover does, but an MQTT 5 will
    /// with a Will Delay Interval is not published when the new connection continues the
    /// session (MQTT 5 3.1.3-9: the delay has not passed and the session did not end); when
    /// the new connection started a new session (Clean Start 1), the old session ended and the
    /// will is published now.
    fn will_due(&self, reason: &CloseReason) -> bool {
        if !reason.publishes_will() {
            return false;
        }
        if !matches!(reason, CloseReason::TakenOver) || self.version != ProtocolVersion::V5 {
            return true;
        }
        let delayed = self
            .identity
            .will
            .as_ref()
            .and_then(|w| w.will.properties.as_ref())
            .and_then(|p| p.will_delay_interval)
            .is_some_and(|secs| secs > 0);
        // Handed over to another broker of a cluster: the session goes on there, which
        // cancels (a resume) or publishes (a clean start) the will.
        !delayed || (self.session.is_ended() && !self.session.is_handed_over())
    }

    /// Whether a due `will` waits for its Will Delay Interval instead of going out now: an
    /// MQTT 5 will with a delay > 0 whose `$` topic rule lets it through (checked now, as the
    /// connector's rule is known now; authorization is checked when it is published). A
    /// takeover decided in [`Conn::will_due`] already; a shutdown of a broker whose sessions
    /// end with it ends this one too, so its will goes out now.
    fn will_waits(&self, reason: &CloseReason, will: &LastWill) -> bool {
        if self.version != ProtocolVersion::V5
            || matches!(reason, CloseReason::TakenOver)
            || will_delay_secs(will) == 0
        {
            return false;
        }
        if matches!(reason, CloseReason::ServerShutdown) && !self.core.durability().keeps_sessions()
        {
            return false;
        }
        if will.topic.starts_with('$')
            && (!self.listener.options.publish_dollar_topics
                || crate::broker::system::is_system_topic(&will.topic))
        {
            // Refused by `publish_will` now, as it would be then.
            return false;
        }
        true
    }

    /// End the connection: flush what is pending (bounded), publish the will when `reason`
    /// calls for it, release the session, close the socket. `true` when the caller should
    /// [`linger`] on the read side (a DISCONNECT for the client's fault was sent).
    async fn close<W: AsyncWrite + Unpin>(
        mut self,
        reason: CloseReason,
        writer: &mut W,
        peer: SocketAddr,
    ) -> bool {
        crate::metrics::access::closed(
            crate::metrics::access::Who {
                listener: &self.listener.stats,
                protocol: crate::config::Protocol::Mqtt,
                peer,
                client_id: Some(self.session.client_id()),
                user: self.identity.user(),
            },
            reason.metric_reason(),
        );
        if let CloseReason::ReceiveMaximumExceeded(maximum) = reason {
            self.core.counters.protocol_errors();
            receive_quota::log_exceeded(
                &self.core.receive_maximum_warnings,
                self.session.client_id(),
                maximum,
            );
        } else if reason.is_protocol_error() {
            self.core.counters.protocol_errors();
            let cluster_max = self.core.backplane().map(|b| b.maximum_message_bytes());
            tracing::info!(
                "closing: {}",
                reason.describe(cluster_max, self.listener.max_frame_size_bytes())
            );
        } else {
            tracing::debug!("closing: {reason}");
        }
        let disconnect_code = reason
            .server_disconnect_code()
            .filter(|_| self.version == ProtocolVersion::V5);
        // A taken-over MQTT 3 connection just closes; an MQTT 5 one is told why first.
        let socket_usable = match reason {
            CloseReason::Io(_) => false,
            CloseReason::TakenOver => disconnect_code.is_some(),
            _ => true,
        };
        self.pending_acks.close();
        self.drain_pending_acks().await;
        if let Some(code) = disconnect_code {
            if matches!(reason, CloseReason::TakenOver) {
                // The session's new connection re-sends what was in flight: only the
                // DISCONNECT goes out here.
                self.output.out.clear();
            }
            let properties = matches!(reason, CloseReason::UseAnotherServer { .. })
                .then(|| self.server_reference())
                .flatten();
            let _ = self.send(Packet::Disconnect(Disconnect {
                reason: code,
                properties,
            }));
        }
        if socket_usable && !self.output.out.is_empty() {
            let mut out = std::mem::take(&mut self.output.out);
            let _ = tokio::time::timeout(CLOSE_GRACE, async {
                writer.write_all_buf(&mut out).await?;
                writer.flush().await
            })
            .await;
        }
        let will = self
            .will_due(&reason)
            .then(|| self.identity.will.take())
            .flatten()
            // Its charge ends here: published, it is charged as a message.
            .map(|held| held.will);
        match will {
            Some(will) if self.will_waits(&reason, &will) => {
                // Pending until its delay passes or its session ends (MQTT 5 3.1.3-9).
                let due_now = self.core.detach_leaving_will(
                    &self.session,
                    self.token.generation,
                    will,
                    &self.identity.principal,
                );
                if let Some(will) = due_now {
                    self.publish_will(will);
                }
            }
            will => {
                if let Some(will) = will {
                    self.publish_will(will);
                }
                self.core.detach(&self.session, self.token.generation);
            }
        }
        if socket_usable {
            let _ = tokio::time::timeout(CLOSE_GRACE, writer.shutdown()).await;
        }
        // A client told of its own fault may still be writing (acks of what it read before the
        // DISCONNECT): closing over unread bytes would reset the connection, and a reset makes
        // the client's kernel drop the DISCONNECT it has not read yet.
        socket_usable
            && disconnect_code.is_some()
            && !matches!(reason, CloseReason::TakenOver | CloseReason::ServerShutdown)
    }
}

/// Read and discard what the peer still sends after the broker's DISCONNECT (its write side
/// already shut down), until the peer closes, for at most [`CLOSE_GRACE`] and
/// [`LINGER_MAX_BYTES`]: a lingering close, so that the DISCONNECT reaches the client.
async fn linger<R: AsyncRead + Unpin>(reader: &mut R) {
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        let mut sink = [0u8; 1024];
        let mut discarded = 0;
        while discarded < LINGER_MAX_BYTES {
            match tokio::io::AsyncReadExt::read(reader, &mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => discarded += n,
            }
        }
    })
    .await;
}
