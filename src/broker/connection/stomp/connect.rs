//! The CONNECT/STOMP exchange: wait for the frame (under `connectAttemptTimeout`), negotiate
//! the version (`accept-version`; none means 1.0; no common version is an ERROR with a
//! `version` header listing ours, STOMP 1.2 "Protocol Negotiation"), authenticate `login` /
//! `passcode` (or the TLS client certificate) through the same plugins as MQTT, negotiate
//! heart-beats, answer CONNECTED.

use crate::metrics::Reason;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::BytesMut;
use futures_util::stream::FuturesOrdered;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;

use super::heartbeat;
use super::{Framing, Output, StompConn, CLOSE_GRACE, SERVER};
use crate::broker::connection::read::read_some;
use crate::broker::connection::ConnectionParams;
use crate::broker::session::registry::SessionLifetime;
use crate::broker::session::{AttachToken, Session};
use crate::protocol::stomp::{encode, Command, Decoded, Decoder, Frame, Version};
use crate::security::{AuthFailure, AuthRequest, AuthzCache};

/// Numbers STOMP connections in this process (their subscription sessions' names).
static NEXT_TAG: AtomicU64 = AtomicU64::new(1);

/// The most a client may have sent before its CONNECT frame is complete. A CONNECT carries
/// only headers, so an unauthenticated socket never makes the broker buffer up to
/// `transport.maxDataLength` (ActiveMQ applies that limit from the first frame on: a
/// deliberate difference, docs/compatibility.md).
pub(super) const PRE_CONNECT_MAX_BYTES: usize = 64 * 1024;

/// The versions we speak, as the ERROR of a failed negotiation lists them.
const SUPPORTED: &str = "1.0,1.1,1.2";

/// The highest version both sides speak; `None` when there is none.
pub(super) fn negotiate_version(accept_version: Option<&str>) -> Option<Version> {
    let Some(offered) = accept_version else {
        return Some(Version::V1_0);
    };
    let mut best = None;
    for v in offered.split(',').map(str::trim) {
        let version = match v {
            "1.0" => Version::V1_0,
            "1.1" => Version::V1_1,
            "1.2" => Version::V1_2,
            _ => continue,
        };
        best = best.max(Some(version));
    }
    best
}

/// Wait for CONNECT, then establish the connection; `None` when it ended (logged, and an
/// ERROR frame sent when the client should know why).
pub(super) async fn handshake<R, W>(
    reader: &mut R,
    writer: &mut W,
    read_buf: &mut BytesMut,
    decoder: &mut Decoder,
    params: &ConnectionParams,
    framing: Framing,
) -> Option<StompConn>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let read = read_connect(reader, read_buf, decoder);
    let timed = async {
        match params.listener.inactivity.connect_attempt_timeout {
            Some(limit) => tokio::time::timeout(limit, read)
                .await
                .unwrap_or(Err(Ended::Quiet(
                    "no CONNECT within the connect attempt timeout",
                    Reason::ConnectTimeout,
                ))),
            None => read.await,
        }
    };
    let frame = tokio::select! {
        _ = params.shutdown.cancelled() => Err(Ended::Quiet("broker shutting down", Reason::ServerShutdown)),
        r = timed => r,
    };
    let frame = match frame {
        Ok(f) => f,
        Err(Ended::Quiet(why, reason)) => {
            tracing::debug!("closing before CONNECT: {why}");
            refused(params, reason, None, None);
            return None;
        }
        Err(Ended::Refuse(error)) => {
            params.core.counters.protocol_errors();
            refused(params, Reason::ProtocolError, None, None);
            refuse(writer, error, Version::V1_0).await;
            return None;
        }
    };
    let Some(version) = negotiate_version(frame.header("accept-version")) else {
        let error = Frame::new(Command::Error)
            .with_header("version", SUPPORTED)
            .with_header("content-type", "text/plain")
            .with_header(
                "message",
                format!("Supported protocol versions are {SUPPORTED}"),
            );
        refused(params, Reason::UnsupportedVersion, None, None);
        refuse(writer, error, Version::V1_0).await;
        return None;
    };
    let heart_beat = match heartbeat::negotiate(
        frame
            .header("heart-beat")
            .filter(|_| version != Version::V1_0),
        &params.listener.options.stomp,
        params.listener.options.use_inactivity_monitor,
    ) {
        Ok(hb) => hb,
        Err(e) => {
            let message = format!("heart-beat header: {e}");
            refused(params, Reason::ConnectNotHonoured, None, None);
            refuse(writer, error_frame(&message, &frame), version).await;
            return None;
        }
    };
    let tag = NEXT_TAG.fetch_add(1, Ordering::Relaxed);
    let session_name: Arc<str> =
        Arc::from(format!("ID:ferromq-{:016x}-{tag}", rand::random::<u64>()));
    let client_id: Option<Arc<str>> = frame
        .header("client-id")
        .filter(|c| !c.is_empty())
        .map(Arc::from);
    let login = frame.header("login");
    let security = params.core.security();
    let request = AuthRequest {
        client_id: client_id.as_deref().unwrap_or(&session_name),
        username: login,
        password: frame.header("passcode").map(str::as_bytes),
        peer: params.peer,
        tls: params.tls,
        peer_cert_subject: params.peer_cert_subject.as_deref(),
    };
    let principal = match security.authenticate(&request).await {
        Ok(p) => p,
        Err(failure) => {
            // ActiveMQ's SimpleAuthenticationBroker / JaasAuthenticationBroker wording.
            let message = match failure {
                AuthFailure::ServerUnavailable => {
                    "Authentication server unavailable, try again later".to_owned()
                }
                _ => format!(
                    "User name [{}] or password is invalid.",
                    login.unwrap_or_default()
                ),
            };
            tracing::info!("STOMP CONNECT refused: authentication failed: {failure}");
            let reason = match failure {
                AuthFailure::BadCredentials => Reason::BadCredentials,
                AuthFailure::NotAuthorized => Reason::NotAuthorized,
                AuthFailure::ServerUnavailable => Reason::AuthServerUnavailable,
            };
            refused(params, reason, client_id.as_deref(), login);
            refuse(writer, error_frame(&message, &frame), version).await;
            return None;
        }
    };
    let client_id_claim = match &client_id {
        Some(id) => match claim_client_id(params, id) {
            Ok(claim) => Some(claim),
            Err(message) => {
                tracing::info!("STOMP CONNECT refused: {message}");
                refused(params, Reason::ClientIdRejected, Some(id), login);
                refuse(writer, error_frame(&message, &frame), version).await;
                return None;
            }
        },
        None => None,
    };
    decoder.set_version(version);
    let mut conn = StompConn {
        core: params.core.clone(),
        listener: params.listener.clone(),
        version,
        session_name: session_name.clone(),
        tag,
        client_id,
        principal,
        authz: AuthzCache::default(),
        subs: Vec::new(),
        next_sub_key: 0,
        next_message_id: 0,
        out: Output::default(),
        framing,
        wake: Arc::new(Notify::new()),
        pending: FuturesOrdered::new(),
        held: 0,
        answers_stopped: false,
        pause: None,
        given_up: None,
        heart_beat,
        page_in: None,
        transactions: None,
        queues: None,
        client_id_claim,
        live: None,
    };
    // Listed by the console until `serve` removes it at close.
    let live = params.core.clients.register(
        crate::broker::clients::ClientKey::Stomp(tag),
        crate::broker::clients::NewClient {
            client_id: conn
                .client_id
                .clone()
                .unwrap_or_else(|| session_name.clone()),
            protocol_version: version.as_str(),
            user: (!conn.principal.anonymous).then(|| conn.principal.user.clone()),
            peer: params.peer,
            listener: params.listener.clone(),
            keep_alive_secs: heart_beat
                .read_limit
                .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX)),
            session: None,
            kick: crate::broker::clients::Kick::Wake(conn.wake.clone()),
        },
    );
    conn.live = live;
    let mut connected = Frame::new(Command::Connected);
    if version != Version::V1_0 {
        connected = connected.with_header("version", version.as_str());
    }
    connected = connected
        .with_header("session", &*session_name)
        .with_header("server", SERVER);
    if version != Version::V1_0 {
        let (sx, sy) = heart_beat.connected_header;
        connected = connected.with_header("heart-beat", format!("{sx},{sy}"));
    }
    conn.send(&connected);
    Some(conn)
}

/// This connection's hold on its `client-id`: a session of its own in the registry (U+0000
/// first, so no MQTT client id is it), so a second connection with that client-id is refused
/// (`allowLinkStealing=false`, the STOMP default) or takes it over (`true`: this one's `kick`
/// is cancelled and it closes), as ActiveMQ does for a connection's client id.
#[derive(Debug)]
pub(super) struct ClientIdClaim {
    pub(super) session: Arc<Session>,
    pub(super) token: AttachToken,
}

/// The registry name of the claim on STOMP client-id `client_id`.
fn claim_name(client_id: &str) -> String {
    crate::broker::session::kind::stomp_client_hold_id(client_id)
}

/// Claim `client_id` for a new connection; `Err`: the ERROR message (ActiveMQ's
/// `InvalidClientIDException` wording, without its broker name and address).
fn claim_client_id(
    params: &ConnectionParams,
    client_id: &str,
) -> Result<Box<ClientIdClaim>, String> {
    params
        .core
        .registry
        .attach(
            &claim_name(client_id),
            true,
            SessionLifetime::EndsAtDisconnect,
            params.listener.options.allow_link_stealing,
            false,
        )
        .map(|attached| {
            Box::new(ClientIdClaim {
                session: attached.session,
                token: attached.token,
            })
        })
        .map_err(|_| format!("Client: {client_id} already connected"))
}

/// Log and count a STOMP connection that ended before CONNECTED.
fn refused(params: &ConnectionParams, reason: Reason, client_id: Option<&str>, user: Option<&str>) {
    crate::metrics::access::refused(
        crate::metrics::access::Who {
            listener: &params.listener.stats,
            protocol: crate::config::Protocol::Stomp,
            peer: params.peer,
            client_id,
            user,
        },
        reason,
    );
}

/// How the wait for CONNECT ended without one.
enum Ended {
    /// Closed without a word (timeout, peer gone, shutdown).
    Quiet(&'static str, Reason),
    /// Refused with this ERROR frame.
    Refuse(Frame),
}

async fn read_connect<R: AsyncRead + Unpin>(
    reader: &mut R,
    read_buf: &mut BytesMut,
    decoder: &mut Decoder,
) -> Result<Frame, Ended> {
    loop {
        match decoder.decode(read_buf) {
            Ok(Some(Decoded::Frame(f)))
                if matches!(f.command, Command::Connect | Command::Stomp) =>
            {
                return Ok(f)
            }
            Ok(Some(Decoded::Frame(f))) => {
                return Err(Ended::Refuse(error_frame(
                    &format!(
                        "the first frame must be CONNECT or STOMP, not {}",
                        f.command.as_str()
                    ),
                    &f,
                )))
            }
            Ok(Some(Decoded::HeartBeat)) => continue,
            Ok(None) if read_buf.len() > PRE_CONNECT_MAX_BYTES => {
                return Err(Ended::Refuse(Frame::new(Command::Error).with_header(
                    "message",
                    format!(
                        "the CONNECT frame exceeds {PRE_CONNECT_MAX_BYTES} bytes (a CONNECT \
                         has only headers)"
                    ),
                )))
            }
            Ok(None) => {}
            Err(e) => {
                let mut error = Frame::new(Command::Error).with_header("message", e.to_string());
                if let Some(receipt) = decoder.failed_receipt() {
                    error = error.with_header("receipt-id", receipt);
                }
                return Err(Ended::Refuse(error));
            }
        }
        match read_some(reader, read_buf).await {
            Ok(0) => {
                return Err(Ended::Quiet(
                    "closed by the peer before CONNECT",
                    Reason::ClosedBeforeConnect,
                ))
            }
            Ok(_) => {}
            Err(_) => {
                return Err(Ended::Quiet(
                    "socket error before CONNECT",
                    Reason::ClosedBeforeConnect,
                ))
            }
        }
    }
}

fn error_frame(message: &str, cause: &Frame) -> Frame {
    let mut f = Frame::new(Command::Error).with_header("message", message);
    if let Some(r) = cause.header("receipt") {
        f = f.with_header("receipt-id", r);
    }
    f.with_header("content-type", "text/plain")
}

/// Send an ERROR frame (best effort, bounded).
async fn refuse<W: AsyncWrite + Unpin>(writer: &mut W, mut error: Frame, version: Version) {
    tracing::info!(
        "STOMP connection refused: {}",
        error.header("message").unwrap_or_default()
    );
    if error.body.is_empty() {
        if let Some(m) = error.header("message") {
            error.body = bytes::Bytes::from(m.to_owned());
        }
    }
    let mut buf = BytesMut::new();
    encode(&error, version, &mut buf);
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        writer.write_all(&buf).await?;
        writer.flush().await
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_negotiate_to_the_highest_common_one() {
        assert_eq!(negotiate_version(None), Some(Version::V1_0));
        assert_eq!(negotiate_version(Some("1.0,1.1")), Some(Version::V1_1));
        assert_eq!(negotiate_version(Some("1.2, 1.0")), Some(Version::V1_2));
        assert_eq!(negotiate_version(Some("2.0")), None);
    }
}
