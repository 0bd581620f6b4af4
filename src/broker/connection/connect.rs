//! The CONNECT exchange: wait for CONNECT (under `connectAttemptTimeout`), pick the protocol
//! version, apply the client-id rules, authenticate, attach the session, answer CONNACK.

use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::read::read_some;
use super::{Conn, ConnectionParams, PendingAcks, CLOSE_GRACE};
use crate::broker::keepalive;
use crate::broker::registry::AttachError;
use crate::broker::runtime::BrokerCore;
use crate::protocol::{
    decode, encode, ConnAck, Connect, ConnectReason, DecodeError, Packet, ProtocolVersion,
};
use crate::security::{AuthRequest, AuthzCache};

/// Why a connection ended before it was established.
#[derive(Debug)]
pub(super) enum HandshakeEnd {
    Timeout,
    Closed,
    Io(std::io::Error),
    Malformed(DecodeError),
    FirstPacketNotConnect,
    /// CONNACK with this refusal was sent.
    Refused {
        reason: ConnectReason,
        detail: String,
    },
    Shutdown,
    /// The session was attached and the connection already closed (and logged) normally.
    ClosedAfterAttach,
}

impl HandshakeEnd {
    pub(super) fn log(&self, core: &BrokerCore) {
        match self {
            HandshakeEnd::Malformed(e) => {
                core.counters.protocol_errors();
                tracing::info!("closing before CONNECT completed: {e}");
            }
            HandshakeEnd::FirstPacketNotConnect => {
                core.counters.protocol_errors();
                tracing::info!("closing: the first packet was not CONNECT");
            }
            HandshakeEnd::Refused { reason, detail } => {
                tracing::info!(?reason, "CONNECT refused: {detail}");
            }
            HandshakeEnd::Timeout => {
                tracing::debug!("closing: no CONNECT within the connect attempt timeout")
            }
            HandshakeEnd::Closed => tracing::debug!("closed by the peer before CONNECT"),
            HandshakeEnd::Io(e) => tracing::debug!("socket error before CONNECT: {e}"),
            HandshakeEnd::Shutdown => tracing::debug!("broker shutting down during CONNECT"),
            HandshakeEnd::ClosedAfterAttach => {}
        }
    }
}

/// Which version this broker speaks with a client requesting `requested`, or the version
/// whose CONNACK format carries the refusal. MQTT 5 is refused with a v3 CONNACK code 1, as
/// ActiveMQ does, until MQTT 5 sessions exist: this is the one place to change then.
fn negotiate(requested: ProtocolVersion) -> Result<ProtocolVersion, ProtocolVersion> {
    match requested {
        ProtocolVersion::V31 | ProtocolVersion::V311 => Ok(requested),
        ProtocolVersion::V5 => Err(ProtocolVersion::V311),
    }
}

pub(super) async fn handshake<R, W>(
    reader: &mut R,
    writer: &mut W,
    read_buf: &mut BytesMut,
    params: &ConnectionParams,
) -> Result<Conn, HandshakeEnd>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let connect = read_connect_bounded(reader, read_buf, params).await;
    let connect = match connect {
        Ok(c) => c,
        Err(HandshakeEnd::Malformed(e @ DecodeError::UnsupportedProtocolVersion { .. })) => {
            return Err(refuse(
                writer,
                ProtocolVersion::V311,
                ConnectReason::UnsupportedProtocolVersion,
                e.to_string(),
            )
            .await);
        }
        Err(e) => return Err(e),
    };
    let version = match negotiate(connect.protocol) {
        Ok(v) => v,
        Err(refusal_format) => {
            return Err(refuse(
                writer,
                refusal_format,
                ConnectReason::UnsupportedProtocolVersion,
                format!("protocol {:?} is not served yet", connect.protocol),
            )
            .await);
        }
    };
    let client_id: Arc<str> = if connect.client_id.is_empty() {
        if !connect.clean_start {
            return Err(refuse(
                writer,
                version,
                ConnectReason::ClientIdentifierNotValid,
                "empty client id with clean session 0".into(),
            )
            .await);
        }
        Arc::from(format!("ferromq-{:016x}", rand::random::<u64>()))
    } else {
        Arc::from(connect.client_id.as_str())
    };

    let core = &params.core;
    let security = core.security();
    let request = AuthRequest {
        client_id: &client_id,
        username: connect.username.as_deref(),
        password: connect.password.as_deref(),
        peer: params.peer,
        tls: params.tls,
        peer_cert_subject: params.peer_cert_subject.as_deref(),
    };
    let principal = match security.authenticate(&request).await {
        Ok(p) => p,
        // 3.1.1 clients get 5 (not authorized) for both failures, as ActiveMQ and mosquitto do.
        Err(failure) => {
            return Err(refuse(
                writer,
                version,
                ConnectReason::NotAuthorized,
                format!("authentication failed: {failure}"),
            )
            .await)
        }
    };

    let attached = match core.attach(
        &client_id,
        connect.clean_start,
        params.listener.options.allow_link_stealing,
        connect.will.as_ref().map(|will| (will, &principal)),
    ) {
        Ok(a) => a,
        Err(AttachError::ClientIdInUse) => {
            return Err(refuse(
                writer,
                version,
                ConnectReason::ClientIdentifierNotValid,
                format!("client id `{client_id}` is connected and allowLinkStealing is false"),
            )
            .await)
        }
    };

    let keep_alive_limit =
        keepalive::inbound_silence_limit(connect.keep_alive_secs, &params.listener.options);
    let session_present = attached.session_present;
    let mut conn = Conn {
        core: core.clone(),
        listener: params.listener.clone(),
        version,
        client_id,
        session: attached.session,
        token: attached.token,
        principal,
        authz: AuthzCache::default(),
        will: connect.will,
        keep_alive_limit,
        out: BytesMut::new(),
        pump_wanted: true,
        pending_acks: PendingAcks::default(),
        overfilled: Vec::new(),
        paused_until: None,
        given_up: Vec::new(),
    };
    // MQTT 3.1 has no session-present bit (the byte is reserved).
    let connack = Packet::ConnAck(ConnAck {
        session_present: session_present && version != ProtocolVersion::V31,
        reason: ConnectReason::Success,
        properties: None,
    });
    let established = match conn.send(connack) {
        Ok(()) => conn.resend_inflight(),
        Err(e) => Err(e),
    };
    if let Err(reason) = established {
        // The session is attached: release it like any other close.
        conn.close(reason, writer).await;
        return Err(HandshakeEnd::ClosedAfterAttach);
    }
    Ok(conn)
}

/// Wait for CONNECT under the connect-attempt timeout, giving up at broker shutdown.
async fn read_connect_bounded<R: AsyncRead + Unpin>(
    reader: &mut R,
    read_buf: &mut BytesMut,
    params: &ConnectionParams,
) -> Result<Box<Connect>, HandshakeEnd> {
    let max_frame = params.listener.max_frame_size_bytes();
    let read = read_connect(reader, read_buf, max_frame);
    let timed = async {
        match keepalive::connect_timeout(&params.listener.options) {
            Some(limit) => tokio::time::timeout(limit, read)
                .await
                .unwrap_or(Err(HandshakeEnd::Timeout)),
            None => read.await,
        }
    };
    tokio::select! {
        _ = params.shutdown.cancelled() => Err(HandshakeEnd::Shutdown),
        r = timed => r,
    }
}

async fn read_connect<R: AsyncRead + Unpin>(
    reader: &mut R,
    read_buf: &mut BytesMut,
    max_frame: usize,
) -> Result<Box<Connect>, HandshakeEnd> {
    loop {
        match decode(read_buf, None, max_frame) {
            Ok(Some(Packet::Connect(c))) => return Ok(c),
            Ok(Some(_)) => return Err(HandshakeEnd::FirstPacketNotConnect),
            Ok(None) => {}
            Err(e) => return Err(HandshakeEnd::Malformed(e)),
        }
        match read_some(reader, read_buf).await {
            Ok(0) => return Err(HandshakeEnd::Closed),
            Ok(_) => {}
            Err(e) => return Err(HandshakeEnd::Io(e)),
        }
    }
}

/// Send a refusing CONNACK (best effort, bounded) and report it.
async fn refuse<W: AsyncWrite + Unpin>(
    writer: &mut W,
    version: ProtocolVersion,
    reason: ConnectReason,
    detail: String,
) -> HandshakeEnd {
    let mut buf = BytesMut::with_capacity(8);
    let packet = Packet::ConnAck(ConnAck {
        session_present: false,
        reason,
        properties: None,
    });
    if encode(&packet, version, &mut buf).is_ok() {
        let _ = tokio::time::timeout(CLOSE_GRACE, async {
            writer.write_all(&buf).await?;
            writer.flush().await
        })
        .await;
    }
    HandshakeEnd::Refused { reason, detail }
}
