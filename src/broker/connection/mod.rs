//! One task per client connection, generic over the byte stream (plain TCP today; TLS and
//! WebSocket streams from the transport module plug in unchanged).
//!
//! The task owns the socket: it reads and decodes packets (bounded by the connector's
//! `maxFrameSize`), answers them, and writes queued deliveries. Writes are batched: everything
//! available (acks plus messages pulled from the session queue) is encoded into one buffer
//! before each write. Publishers never touch this socket; they queue into the session and poke
//! the task, so a slow socket only ever slows its own client. When the output buffer passes
//! [`OUT_HIGH_WATER_BYTES`] the task stops reading and stops pulling from the queue until the
//! socket drains; the session queue's limit then bounds memory (see [`super::queue`]).

mod connect;
mod inbound;
mod outbound;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::keepalive::KeepAlive;
use super::runtime::BrokerCore;
use super::session::{AttachToken, Session};
use crate::config::{ListenerOptions, Scheme};
use crate::protocol::{decode, DecodeError, LastWill, ProtocolVersion};
use crate::security::{AuthzCache, Principal, Security};
use crate::transport::SharedTls;

/// Stop reading and stop pulling deliveries while this much output waits for the socket.
pub const OUT_HIGH_WATER_BYTES: usize = 256 * 1024;
/// Read at least this much free space per socket read.
const READ_CHUNK_BYTES: usize = 8 * 1024;
/// How long closing may spend flushing output and shutting the socket down.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// The connector a connection arrived on.
#[derive(Debug, Clone)]
pub struct ListenerSettings {
    pub name: String,
    pub scheme: Scheme,
    pub options: ListenerOptions,
    /// The TLS material of a TLS connector (renewed in place when the files change).
    pub tls: Option<Arc<SharedTls>>,
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
    /// The peer closed the socket without DISCONNECT.
    PeerClosed,
    Io(io::Error),
    /// No inbound byte for this long (1.5 x keep-alive).
    KeepAliveExpired(Duration),
    Malformed(DecodeError),
    ProtocolViolation(&'static str),
    /// Another connection took the session over (`allowLinkStealing`): no will.
    TakenOver,
    /// Broker shutdown. Not a DISCONNECT from the client, so the will IS published (MQTT
    /// 3.1.1 3.1.2.5: the will is published whenever the connection closes without one).
    ServerShutdown,
    Internal(String),
}

impl CloseReason {
    fn publishes_will(&self) -> bool {
        !matches!(self, CloseReason::ClientDisconnect | CloseReason::TakenOver)
    }

    fn is_protocol_error(&self) -> bool {
        matches!(
            self,
            CloseReason::Malformed(_) | CloseReason::ProtocolViolation(_)
        )
    }
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CloseReason::ClientDisconnect => f.write_str("client sent DISCONNECT"),
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
            CloseReason::TakenOver => f.write_str("session taken over by a new connection"),
            CloseReason::ServerShutdown => f.write_str("broker shutting down"),
            CloseReason::Internal(what) => write!(f, "internal error: {what}"),
        }
    }
}

/// An established MQTT connection's state (everything but the socket halves).
pub(crate) struct Conn {
    core: Arc<BrokerCore>,
    listener: Arc<ListenerSettings>,
    version: ProtocolVersion,
    client_id: Arc<str>,
    session: Arc<Session>,
    token: AttachToken,
    security: Arc<Security>,
    principal: Principal,
    authz: AuthzCache,
    will: Option<LastWill>,
    keep_alive_limit: Option<Duration>,
    /// Encoded packets waiting for the socket.
    out: BytesMut,
    /// The session queue or the in-flight window changed: try to move deliveries to `out`.
    pump_wanted: bool,
}

/// Serve one client on `stream` until it disconnects, fails, is taken over or the broker
/// shuts down. Never panics on peer input; every outcome is logged with the peer address.
pub async fn serve<S>(stream: S, params: ConnectionParams)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let span = tracing::info_span!(
        "conn",
        listener = %params.listener.name,
        peer = %params.peer,
        client_id = tracing::field::Empty,
    );
    serve_in_span(stream, params).instrument(span).await
}

async fn serve_in_span<S>(stream: S, params: ConnectionParams)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut read_buf = BytesMut::with_capacity(READ_CHUNK_BYTES);
    let mut conn = match connect::handshake(&mut reader, &mut writer, &mut read_buf, &params).await
    {
        Ok(conn) => conn,
        Err(end) => {
            end.log(&params.core);
            let _ = tokio::time::timeout(CLOSE_GRACE, writer.shutdown()).await;
            return;
        }
    };
    tracing::Span::current().record("client_id", &*conn.client_id);
    tracing::debug!(
        version = ?conn.version,
        keep_alive_ms = conn.keep_alive_limit.map(|d| d.as_millis() as u64),
        "connected"
    );
    let reason = run(
        &mut conn,
        &mut reader,
        &mut writer,
        read_buf,
        &params.shutdown,
    )
    .await;
    conn.close(reason, &mut writer).await;
}

/// The read/write loop of an established connection.
async fn run<R, W>(
    conn: &mut Conn,
    reader: &mut R,
    writer: &mut W,
    mut read_buf: BytesMut,
    shutdown: &CancellationToken,
) -> CloseReason
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut keep_alive = KeepAlive::new(conn.keep_alive_limit);
    let expiry = tokio::time::sleep_until(keep_alive.deadline());
    tokio::pin!(expiry);
    let wake = conn.token.wake.clone();
    let kick = conn.token.kick.clone();
    let max_frame = conn.listener.max_frame_size_bytes();
    let mut needs_flush = false;
    loop {
        if conn.pump_wanted && conn.out.len() < OUT_HIGH_WATER_BYTES {
            if let Err(reason) = conn.pump() {
                return reason;
            }
        }
        let can_read = conn.out.len() < OUT_HIGH_WATER_BYTES;
        if read_buf.capacity() - read_buf.len() < READ_CHUNK_BYTES {
            read_buf.reserve(READ_CHUNK_BYTES);
        }
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return CloseReason::ServerShutdown,
            _ = kick.cancelled() => return CloseReason::TakenOver,
            res = write_or_flush(writer, &mut conn.out), if !conn.out.is_empty() || needs_flush => {
                match res {
                    Ok(WriteStep::Wrote) => needs_flush = true,
                    Ok(WriteStep::Flushed) => needs_flush = false,
                    Err(e) => return CloseReason::Io(e),
                }
            }
            res = reader.read_buf(&mut read_buf), if can_read => match res {
                Ok(0) => return CloseReason::PeerClosed,
                Ok(_) => {
                    keep_alive.touch();
                    expiry.as_mut().reset(keep_alive.deadline());
                    loop {
                        match decode(&mut read_buf, Some(conn.version), max_frame) {
                            Ok(Some(packet)) => match conn.handle(packet) {
                                Ok(inbound::Flow::Continue) => {}
                                Ok(inbound::Flow::Disconnect) => return CloseReason::ClientDisconnect,
                                Err(reason) => return reason,
                            },
                            Ok(None) => break,
                            Err(e) => return CloseReason::Malformed(e),
                        }
                    }
                }
                Err(e) => return CloseReason::Io(e),
            },
            _ = &mut expiry, if keep_alive.is_enabled() => {
                return CloseReason::KeepAliveExpired(keep_alive.limit().unwrap_or_default());
            }
            _ = wake.notified() => conn.pump_wanted = true,
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

impl Conn {
    /// End the connection: flush what is pending (bounded), publish the will when `reason`
    /// calls for it, release the session, close the socket.
    async fn close<W: AsyncWrite + Unpin>(mut self, reason: CloseReason, writer: &mut W) {
        if reason.is_protocol_error() {
            self.core.counters.protocol_errors();
            tracing::info!("closing: {reason}");
        } else {
            tracing::debug!("closing: {reason}");
        }
        let socket_usable = !matches!(reason, CloseReason::Io(_) | CloseReason::TakenOver);
        if socket_usable && !self.out.is_empty() {
            let mut out = std::mem::take(&mut self.out);
            let _ = tokio::time::timeout(CLOSE_GRACE, async {
                writer.write_all_buf(&mut out).await?;
                writer.flush().await
            })
            .await;
        }
        if reason.publishes_will() {
            if let Some(will) = self.will.take() {
                self.publish_will(will);
            }
        }
        self.core.detach(&self.session, self.token.generation);
        if socket_usable {
            let _ = tokio::time::timeout(CLOSE_GRACE, writer.shutdown()).await;
        }
    }
}
