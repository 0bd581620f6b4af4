//! The CONNECT exchange: wait for CONNECT (under `connectAttemptTimeout`), pick the protocol
//! version, apply the client-id rules, authenticate, attach the session, answer CONNACK.

use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::connack_limits::{announced_maximum_packet_size, fit_connack, granted_session_expiry};
use super::connect_v5::{refusal_version, response_information};
use super::enhanced_auth;
use super::outbound_aliases::OutboundAliases;
use super::read::read_some;
use super::receive_quota::server_receive_maximum;
use super::{
    ClientLimits, Conn, ConnectionParams, FlowControl, Identity, Output, PendingAcks,
    PublisherPause, CLOSE_GRACE, TOPIC_ALIAS_MAXIMUM,
};
use crate::broker::durability::{Backplane, ClaimRequest, Claimed};
use crate::broker::routing::limits::DEFAULT_SUBSCRIPTION_PREFETCH;
use crate::broker::runtime::BrokerCore;
use crate::broker::session::registry::{AttachError, SessionLifetime};
use crate::metrics::Reason;
use crate::protocol::{
    decode, encode, ConnAck, Connect, ConnectReason, DecodeError, Packet, Properties,
    ProtocolVersion, QoS,
};
use crate::security::{AuthFailure, AuthRequest, AuthzCache};

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
        /// The metrics / access-log reason (finer than an MQTT 3 return code).
        cause: Reason,
        /// The client id and user name of the refused CONNECT, when it got that far.
        who: Option<Box<(Arc<str>, Option<String>)>>,
    },
    Shutdown,
    /// The session was attached and the connection already closed (and logged) normally.
    ClosedAfterAttach,
    /// Closed by the peer, with nothing sent after its CONNECT, while the CONNECT waited for
    /// another CONNECT of the same client id (see [`claim_gate_unless_gone`]): not claimed.
    ClosedWhileQueued,
    /// The peer had closed its socket behind the CONNECT, with nothing but PINGREQs after it, when the
    /// claim was about to start (a CONNECT left in the socket of a process that did not run
    /// meanwhile; its client gave up and may be live on another node): not claimed.
    LeftBeforeClaim,
    /// Even the smallest CONNACK is larger than the client's Maximum Packet Size: closed
    /// without CONNACK (MQTT 5 3.1.2-24; no DISCONNECT may precede CONNACK, 3.14.0-1).
    ConnAckTooLarge {
        size: usize,
        max: usize,
    },
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
            HandshakeEnd::Refused { reason, detail, .. } => {
                tracing::info!(?reason, "CONNECT refused: {detail}");
            }
            HandshakeEnd::Timeout => {
                tracing::debug!("closing: no CONNECT within the connect attempt timeout")
            }
            HandshakeEnd::Closed => tracing::debug!("closed by the peer before CONNECT"),
            HandshakeEnd::Io(e) => tracing::debug!("socket error before CONNECT: {e}"),
            HandshakeEnd::Shutdown => tracing::debug!("broker shutting down during CONNECT"),
            HandshakeEnd::ClosedAfterAttach => {}
            HandshakeEnd::ClosedWhileQueued => tracing::debug!(
                "closed by the peer while its CONNECT waited for another CONNECT of its client \
                 id: not claimed"
            ),
            HandshakeEnd::LeftBeforeClaim => tracing::info!(
                "closed by the peer before its CONNECT was claimed (the client gave up \
                 waiting): the session is left where it is"
            ),
            HandshakeEnd::ConnAckTooLarge { size, max } => tracing::info!(
                "closing without CONNACK: its {size} bytes exceed the client's \
                 Maximum Packet Size of {max}"
            ),
        }
    }
}

impl HandshakeEnd {
    /// Why the connection was refused, for the access log and the metrics; `None` when it
    /// was established and closed (already counted).
    pub(super) fn metric_reason(&self) -> Option<Reason> {
        Some(match self {
            HandshakeEnd::Timeout => Reason::ConnectTimeout,
            HandshakeEnd::Closed
            | HandshakeEnd::Io(_)
            | HandshakeEnd::ClosedWhileQueued
            | HandshakeEnd::LeftBeforeClaim => Reason::ClosedBeforeConnect,
            HandshakeEnd::Malformed(_) | HandshakeEnd::FirstPacketNotConnect => {
                Reason::ProtocolError
            }
            HandshakeEnd::Refused { cause, .. } => *cause,
            HandshakeEnd::Shutdown => Reason::ServerShutdown,
            HandshakeEnd::ClosedAfterAttach => return None,
            HandshakeEnd::ConnAckTooLarge { .. } => Reason::ConnectNotHonoured,
        })
    }

    /// The client id and user of a refused CONNECT.
    pub(super) fn who(&self) -> (Option<&str>, Option<&str>) {
        match self {
            HandshakeEnd::Refused { who: Some(who), .. } => (Some(&who.0), who.1.as_deref()),
            _ => (None, None),
        }
    }

    /// Record who was refused, and why (finer than the return code MQTT 3 gets).
    fn by(mut self, client_id: &Arc<str>, user: Option<&str>, why: Option<Reason>) -> Self {
        if let HandshakeEnd::Refused { who, cause, .. } = &mut self {
            *who = Some(Box::new((client_id.clone(), user.map(str::to_owned))));
            if let Some(why) = why {
                *cause = why;
            }
        }
        self
    }
}

/// The metrics reason of a refusing CONNACK.
pub(super) fn cause_of(reason: ConnectReason) -> Reason {
    match reason {
        ConnectReason::UnsupportedProtocolVersion => Reason::UnsupportedVersion,
        ConnectReason::ClientIdentifierNotValid => Reason::ClientIdRejected,
        ConnectReason::ServerUnavailable => Reason::AuthServerUnavailable,
        ConnectReason::BadUserNameOrPassword | ConnectReason::BadAuthenticationMethod => {
            Reason::BadCredentials
        }
        ConnectReason::NotAuthorized => Reason::NotAuthorized,
        ConnectReason::MalformedPacket | ConnectReason::ProtocolError => Reason::ProtocolError,
        _ => Reason::ConnectNotHonoured,
    }
}

/// How long the session of `connect` outlives the connection.
fn lifetime_of(connect: &Connect) -> SessionLifetime {
    match connect.protocol {
        ProtocolVersion::V5 => SessionLifetime::of_v5(
            connect
                .properties
                .as_ref()
                .and_then(|p| p.session_expiry_interval),
        ),
        ProtocolVersion::V31 | ProtocolVersion::V311 => SessionLifetime::of_v3(connect.clean_start),
    }
}

/// The lifetime the broker keeps `connect`'s session for: the client's, or for MQTT 5 the
/// Session Expiry Interval its CONNACK grants when `cap` (`offlineDurableSubscriberTimeout`)
/// is shorter (0xFFFFFFFF included): the client must use the server's value (MQTT 5
/// 3.2.2.3.2), so the session ends then, not at the broker-wide sweep's next pass.
fn granted_lifetime(connect: &Connect, cap: Option<std::time::Duration>) -> SessionLifetime {
    let requested = match connect.protocol {
        ProtocolVersion::V5 => connect
            .properties
            .as_ref()
            .and_then(|p| p.session_expiry_interval),
        ProtocolVersion::V31 | ProtocolVersion::V311 => return lifetime_of(connect),
    };
    match granted_session_expiry(requested, cap) {
        Some(granted) => SessionLifetime::of_v5(Some(granted)),
        None => lifetime_of(connect),
    }
}

/// What a CONNACK tells one MQTT 5 client beyond what the broker supports.
struct ConnAckExtras<'a> {
    /// The id we chose for a client that sent an empty one.
    assigned_client_id: Option<&'a str>,
    /// The keep-alive we apply when it is not the client's (3.2.2.3.14).
    server_keep_alive: Option<u16>,
    /// The reply prefix for a client that asked for Response Information.
    response_information: Option<String>,
    /// The Session Expiry Interval we apply when it is not the client's (3.2.2.3.2).
    session_expiry_interval: Option<u32>,
    /// The largest packet this listener accepts (3.2.2.3.6).
    maximum_packet_size: Option<u32>,
}

/// The CONNACK properties telling an MQTT 5 client what this broker supports.
fn connack_properties(core: &BrokerCore, extras: ConnAckExtras<'_>) -> Properties {
    // A cluster announces what it serves across nodes (shared subscriptions are not served
    // there yet: docs/cluster.md).
    let cluster = core.backplane();
    let maximum_qos = cluster
        .map(|b| b.maximum_qos())
        .filter(|qos| *qos != QoS::ExactlyOnce)
        .map(|qos| qos as u8);
    let shared = cluster.is_none_or(|b| b.shared_subscriptions());
    Properties {
        maximum_qos,
        receive_maximum: Some(server_receive_maximum(core)),
        // Maximum QoS absent: QoS 2 is supported.
        retain_available: Some(1),
        wildcard_subscription_available: Some(1),
        subscription_identifier_available: Some(1),
        // `$share/{group}/{filter}` (MQTT 5 4.8.2; see `routing::shared`).
        shared_subscription_available: Some(u8::from(shared)),
        topic_alias_maximum: Some(TOPIC_ALIAS_MAXIMUM),
        assigned_client_identifier: extras.assigned_client_id.map(str::to_owned),
        server_keep_alive: extras.server_keep_alive,
        response_information: extras.response_information,
        session_expiry_interval: extras.session_expiry_interval,
        maximum_packet_size: extras.maximum_packet_size,
        ..Properties::default()
    }
}

pub(super) async fn handshake<R, W>(
    reader: &mut R,
    writer: &mut W,
    read_buf: &mut BytesMut,
    params: &ConnectionParams,
    left: Option<&LeftProbe>,
) -> Result<Conn, HandshakeEnd>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let connect = read_connect_bounded(reader, read_buf, params).await;
    let mut connect = match connect {
        Ok(c) => c,
        Err(HandshakeEnd::Malformed(e @ DecodeError::UnsupportedProtocolVersion { .. })) => {
            let version = match &e {
                DecodeError::UnsupportedProtocolVersion { name, level } => {
                    refusal_version(name, *level)
                }
                _ => ProtocolVersion::V311,
            };
            return Err(refuse(
                writer,
                version,
                ConnectReason::UnsupportedProtocolVersion,
                e.to_string(),
            )
            .await);
        }
        Err(e) => return Err(e),
    };
    // Every version is served (MQTT 5 progress: docs/mqtt5-progress.md).
    let version = connect.protocol;
    let assigned_client_id = connect.client_id.is_empty();
    let client_id: Arc<str> = if assigned_client_id {
        // MQTT 5 (3.1.3-7) assigns an id whatever clean start says; 3.1.1 requires clean session.
        if !connect.clean_start && version != ProtocolVersion::V5 {
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
    // MQTT 5 enhanced authentication: the AUTH exchange instead of the password check.
    let auth_method = connect
        .properties
        .as_ref()
        .and_then(|p| p.authentication_method.as_deref())
        .filter(|_| version == ProtocolVersion::V5);
    let enhanced = match auth_method {
        Some(method) => Some(
            enhanced_auth::authenticate_connect(
                reader, writer, read_buf, params, &connect, &client_id, method,
            )
            .await
            .map_err(|end| end.by(&client_id, connect.username.as_deref(), None))?,
        ),
        None => None,
    };
    let security = core.security();
    let request = AuthRequest {
        client_id: &client_id,
        username: connect.username.as_deref(),
        password: connect.password.as_deref(),
        peer: params.peer,
        tls: params.tls,
        peer_cert_subject: params.peer_cert_subject.as_deref(),
    };
    let authenticated = match &enhanced {
        Some(done) => Ok(done.principal.clone()),
        None => security.authenticate(&request).await,
    };
    let principal = match authenticated {
        Ok(p) => p,
        // 3.1.1 clients get 5 (not authorized) for both failures, as ActiveMQ and mosquitto do;
        // MQTT 5 clients learn which (0x86 / 0x87).
        Err(failure) => {
            let cause = match failure {
                AuthFailure::BadCredentials => Reason::BadCredentials,
                AuthFailure::NotAuthorized => Reason::NotAuthorized,
                AuthFailure::ServerUnavailable => Reason::AuthServerUnavailable,
            };
            let reason = match (version, failure) {
                (ProtocolVersion::V5, AuthFailure::BadCredentials) => {
                    ConnectReason::BadUserNameOrPassword
                }
                // 3.1.1 return code 3 and MQTT 5 0x88: retry later, the credentials may be fine.
                (_, AuthFailure::ServerUnavailable) => ConnectReason::ServerUnavailable,
                _ => ConnectReason::NotAuthorized,
            };
            return Err(refuse(
                writer,
                version,
                reason,
                format!("authentication failed: {failure}"),
            )
            .await
            .by(&client_id, connect.username.as_deref(), Some(cause)));
        }
    };

    let claim_gate = match core.backplane() {
        Some(_) => match claim_gate_unless_gone(core, &client_id, reader, read_buf).await {
            Some(_) if only_pings(read_buf) && left.is_some_and(LeftProbe::left) => {
                core.forget_idle_claim_gate(&client_id);
                return Err(HandshakeEnd::LeftBeforeClaim);
            }
            Some(gate) => Some(gate),
            None => return Err(HandshakeEnd::ClosedWhileQueued),
        },
        None => None,
    };
    if let Some(backplane) = core.backplane() {
        if let Err(refusal) = claim_in_cluster(
            core,
            backplane,
            &mut connect,
            &client_id,
            version,
            &principal,
        )
        .await
        {
            let (mut reason, why) = refusal;
            // This node cannot take sessions (draining, or its quorum lost) and another node
            // can: "Use another server" naming it (MQTT 5 4.11). A store that is slow for
            // every node (a leader election) stays 0x88.
            let elsewhere = backplane.is_draining() || !backplane.is_available();
            let reference = (reason == ConnectReason::ServerUnavailable
                && elsewhere
                && version == ProtocolVersion::V5)
                .then(|| backplane.server_reference(params.listener.scheme, &client_id))
                .flatten();
            if reference.is_some() {
                reason = ConnectReason::UseAnotherServer;
            }
            let properties = reference.map(|r| {
                Box::new(Properties {
                    server_reference: Some(r),
                    ..Properties::default()
                })
            });
            // A drain's refusal is the node shutting down, not its store failing.
            let metric = if backplane.is_draining() {
                Reason::ServerShutdown
            } else {
                Reason::StoreUnavailable
            };
            return Err(refuse_with(writer, version, reason, why, properties)
                .await
                .by(&client_id, connect.username.as_deref(), Some(metric)));
        }
    }

    let inactivity = &params.listener.inactivity;
    let (keep_alive_limit, server_keep_alive) = match version {
        ProtocolVersion::V5 => {
            let terms = inactivity.v5_terms(connect.keep_alive_secs);
            (terms.silence_limit, terms.server_keep_alive_secs)
        }
        ProtocolVersion::V31 | ProtocolVersion::V311 => {
            (inactivity.silence_limit(connect.keep_alive_secs), None)
        }
    };
    let client_limits = connect.properties.as_deref();
    let response_information = client_limits
        .filter(|p| p.request_response_information == Some(1))
        .and_then(|_| response_information(core, &client_id, &principal));
    // Not 0: the decoder refuses a Maximum Packet Size of 0 (3.1.2.11.4).
    let max_packet_size = client_limits
        .and_then(|p| p.maximum_packet_size)
        .and_then(std::num::NonZeroU32::new);
    let max_packet_bytes =
        max_packet_size.map(|max| usize::try_from(max.get()).unwrap_or(usize::MAX));
    // Built before the session is attached: a CONNACK the client cannot receive ends the
    // connection with the session untouched.
    let connack_properties = match version {
        ProtocolVersion::V5 => {
            let mut properties = connack_properties(
                core,
                ConnAckExtras {
                    assigned_client_id: assigned_client_id.then_some(&*client_id),
                    server_keep_alive,
                    response_information,
                    session_expiry_interval: granted_session_expiry(
                        client_limits.and_then(|p| p.session_expiry_interval),
                        core.session_expiry_cap,
                    ),
                    maximum_packet_size: announced_maximum_packet_size(core.backplane().map_or(
                        params.listener.max_frame_size_bytes(),
                        |b| {
                            b.maximum_message_bytes()
                                .min(params.listener.max_frame_size_bytes())
                        },
                    )),
                },
            );
            if let Some(done) = &enhanced {
                done.add_to_connack(&mut properties);
            }
            if let Err(size) = fit_connack(&mut properties, max_packet_bytes) {
                let max = max_packet_bytes.unwrap_or(usize::MAX);
                return Err(HandshakeEnd::ConnAckTooLarge { size, max });
            }
            Some(Box::new(properties))
        }
        ProtocolVersion::V31 | ProtocolVersion::V311 => None,
    };

    let (attached, record_saved) = match core.attach_saving(
        &client_id,
        connect.clean_start,
        granted_lifetime(&connect, core.session_expiry_cap),
        params.listener.options.allow_link_stealing,
        connect.will.as_ref().map(|will| (will, &principal)),
        version == ProtocolVersion::V5,
    ) {
        Ok(a) => a,
        Err(AttachError::ClientIdInUse) => {
            return Err(refuse(
                writer,
                version,
                ConnectReason::ClientIdentifierNotValid,
                format!("client id `{client_id}` is connected and allowLinkStealing is false"),
            )
            .await
            .by(&client_id, connect.username.as_deref(), None))
        }
        // Retryable: the client's next CONNECT claims the session where it is now.
        Err(AttachError::Refused(why)) => {
            return Err(
                refuse(writer, version, ConnectReason::ServerUnavailable, why)
                    .await
                    .by(
                        &client_id,
                        connect.username.as_deref(),
                        Some(Reason::StoreUnavailable),
                    ),
            )
        }
    };

    if let Some(backplane) = core.backplane() {
        backplane.attached(&attached.session);
    }
    // The session-present flag of the client's next CONNECT, on any node, rests on this
    // record: written before the CONNACK, under the claim gate.
    if let Err(e) = record_saved.wait().await {
        // Released like a connection that closed at once: kept offline here, its record
        // written later if the session is still this node's. The client connects again.
        core.detach(&attached.session, attached.token.generation);
        return Err(refuse(
            writer,
            version,
            ConnectReason::ServerUnavailable,
            format!("the session's record was not written: {e}"),
        )
        .await
        .by(
            &client_id,
            connect.username.as_deref(),
            Some(Reason::StoreUnavailable),
        ));
    }
    drop(claim_gate);

    let prefetch = params
        .listener
        .options
        .subscription_prefetch
        .map_or(DEFAULT_SUBSCRIPTION_PREFETCH, usize::from);
    let inflight_window = client_limits
        .and_then(|p| p.receive_maximum)
        .map_or(prefetch, |max| prefetch.min(usize::from(max).max(1)));
    let session_present = attached.session_present;
    debug_assert_eq!(attached.session.client_id(), &client_id);
    let mut conn = Conn {
        core: core.clone(),
        listener: params.listener.clone(),
        version,
        keep_alive_limit_ms: keep_alive_limit.and_then(|limit| {
            std::num::NonZeroU32::new(u32::try_from(limit.as_millis()).unwrap_or(u32::MAX))
        }),
        // The session's copy of the client id, not a second one (idle memory).
        identity: Identity {
            principal,
            authz: AuthzCache::default(),
            will: connect
                .will
                .map(|will| Box::new(super::HeldWill::new(will, &core.memory))),
            enhanced_auth: None,
        },
        limits: ClientLimits {
            inflight_window: u16::try_from(inflight_window).unwrap_or(u16::MAX),
            max_packet_size,
            topic_aliases: None,
            unacked_inbound: 0,
            // Only on an explicit request: a client that leaves the property out may expect
            // the 2-4 byte acknowledgements of most brokers (Eclipse Paho's test client
            // rejects anything longer), and a Reason String is optional (3.4.2.2.2).
            problem_info: client_limits.and_then(|p| p.request_problem_information) == Some(1),
            outbound_aliases: OutboundAliases::new(
                client_limits.and_then(|p| p.topic_alias_maximum),
            ),
            resend_held: None,
        },
        output: Output {
            pump_wanted: true,
            ..Output::default()
        },
        pending_acks: PendingAcks::default(),
        pause: PublisherPause::default(),
        flow: FlowControl::default(),
        session: attached.session,
        token: attached.token,
    };
    // MQTT 3.1 has no session-present bit (the byte is reserved).
    let connack = Packet::ConnAck(ConnAck {
        session_present: session_present && version != ProtocolVersion::V31,
        reason: ConnectReason::Success,
        properties: connack_properties,
    });
    conn.identity.enhanced_auth = enhanced.map(enhanced_auth::Authenticated::into_state);
    let established = match conn.send(connack) {
        Ok(()) => match write_connack(&mut conn, writer).await {
            Ok(()) => conn.resend_inflight(),
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    if let Err(reason) = established {
        // The session is attached: release it like any other close.
        conn.close(reason, writer, params.peer).await;
        return Err(HandshakeEnd::ClosedAfterAttach);
    }
    // Listed by the console until `serve` removes it at close.
    core.clients.register(
        crate::broker::clients::ClientKey::Mqtt(conn.token.generation),
        crate::broker::clients::NewClient {
            client_id: conn.session.client_id().clone(),
            protocol_version: match version {
                ProtocolVersion::V31 => "3.1",
                ProtocolVersion::V311 => "3.1.1",
                ProtocolVersion::V5 => "5.0",
            },
            user: (!conn.identity.principal.anonymous)
                .then(|| conn.identity.principal.user.clone()),
            peer: params.peer,
            listener: params.listener.clone(),
            keep_alive_secs: u32::from(server_keep_alive.unwrap_or(connect.keep_alive_secs)),
            session: Some(Arc::downgrade(&conn.session)),
            kick: crate::broker::clients::Kick::Session {
                generation: conn.token.generation,
            },
        },
    );
    Ok(conn)
}

/// Write the CONNACK `conn` has queued (the only bytes in its buffer) now, before the
/// connection's loop: a session taken over before the loop's first write closes with
/// DISCONNECT 0x8E and drops what was queued, and a DISCONNECT must not come first (MQTT
/// 3.14.0-1; a cluster takes sessions over often during a CONNECT race).
async fn write_connack<W: AsyncWrite + Unpin>(
    conn: &mut Conn,
    writer: &mut W,
) -> Result<(), super::CloseReason> {
    let mut connack = std::mem::take(&mut conn.output.out);
    writer
        .write_all_buf(&mut connack)
        .await
        .map_err(super::CloseReason::Io)?;
    writer.flush().await.map_err(super::CloseReason::Io)
}

/// Wait for CONNECT under the connect-attempt timeout, giving up at broker shutdown.
/// In a cluster: take the session from whichever node holds it, before it is attached here
/// (see [`crate::broker::durability::backplane`]). `Err`: the CONNACK refusal, with why.
/// A will above the cluster's Maximum QoS is refused for MQTT 5 (3.2.2-12) and lowered to it
/// for MQTT 3, which cannot be told.
/// How much a client may send after its CONNECT while the CONNECT waits at the claim gate
/// (MQTT 5 3.1.4 lets it send packets before the CONNACK); past this, it is not read until the
/// CONNACK.
const SENT_WHILE_QUEUED_MAX: usize = 64 * 1024;

/// A second handle on a connection's TCP socket, held during the handshake of a cluster
/// node, to ask whether the peer closed it behind its CONNECT. The connection's own reads
/// cannot tell: the runtime stops polling a socket after a read that did not fill the
/// buffer until a new readiness event, and a close that arrived with the CONNECT (a node
/// that did not run while its client gave up) raises none.
pub struct LeftProbe(std::net::TcpStream);

impl LeftProbe {
    /// Another handle on `socket` (one more descriptor, while the handshake runs).
    pub fn of(socket: &impl std::os::fd::AsFd) -> Option<LeftProbe> {
        let fd = socket.as_fd().try_clone_to_owned().ok()?;
        Some(LeftProbe(std::net::TcpStream::from(fd)))
    }

    /// The peer closed (or reset) the socket and nothing it sent is left unread. Never
    /// waits: the descriptor shares the socket's non-blocking mode.
    fn left(&self) -> bool {
        match self.0.peek(&mut [0u8; 1]) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
            ),
        }
    }
}

/// Whether what a client sent after its CONNECT is nothing or only whole PINGREQs (`C0 00`,
/// MQTT 3.12 and 5 3.12): a client that closed after these asked nothing of its session
/// (one waiting for a CONNACK may ping before it gives up).
fn only_pings(sent: &[u8]) -> bool {
    sent.chunks(2).all(|packet| packet == [0xC0, 0x00])
}

/// The claim gate of `client_id` (see [`BrokerCore::claim_gate`]), or `None` when the peer
/// closes its connection while waiting, having sent nothing after its CONNECT. A client that
/// gives up on slow CONNACKs and connects again leaves such CONNECTs queued behind one
/// another; claimed in turn, each would take the session over (a record read and write, a
/// kick) for a connection that is gone. What the client sends meanwhile stays in `read_buf`
/// for after the CONNACK; a client that sent packets and then closed (fire and forget) is
/// served as if it had waited.
async fn claim_gate_unless_gone<R: AsyncRead + Unpin>(
    core: &BrokerCore,
    client_id: &Arc<str>,
    reader: &mut R,
    read_buf: &mut BytesMut,
) -> Option<crate::broker::runtime::ClaimGate> {
    let mut reading = true;
    {
        let gate = core.claim_gate(client_id);
        tokio::pin!(gate);
        loop {
            tokio::select! {
                biased;
                gate = &mut gate => return Some(gate),
                read = read_some(reader, read_buf),
                    if reading && read_buf.len() < SENT_WHILE_QUEUED_MAX =>
                {
                    match read {
                        Ok(0) | Err(_) if read_buf.is_empty() => break,
                        Ok(0) | Err(_) => reading = false,
                        Ok(_) => {}
                    }
                }
            }
        }
    }
    // The gate future is dropped: this waiter no longer counts.
    core.forget_idle_claim_gate(client_id);
    None
}

async fn claim_in_cluster(
    core: &Arc<BrokerCore>,
    backplane: &Arc<dyn Backplane>,
    connect: &mut Connect,
    client_id: &Arc<str>,
    version: ProtocolVersion,
    principal: &crate::security::Principal,
) -> Result<(), (ConnectReason, String)> {
    let maximum = backplane.maximum_qos();
    if let Some(will) = connect.will.as_mut().filter(|w| w.qos > maximum) {
        if version == ProtocolVersion::V5 {
            return Err((
                ConnectReason::QoSNotSupported,
                "will QoS 2: a cluster serves QoS 0 and 1 (Maximum QoS 1)".into(),
            ));
        }
        will.qos = maximum;
    }
    if backplane.is_draining() {
        return Err((
            ConnectReason::ServerUnavailable,
            "this cluster node is draining (shutting down)".into(),
        ));
    }
    let persistent = lifetime_of(connect) != SessionLifetime::EndsAtDisconnect;
    if persistent && !backplane.is_available() {
        return Err((
            ConnectReason::ServerUnavailable,
            "the cluster store's quorum is unreachable from this node".into(),
        ));
    }
    let request = ClaimRequest {
        client_id: client_id.clone(),
        clean_start: connect.clean_start,
        persistent,
        will: connect
            .will
            .as_ref()
            .map(|will| crate::broker::durability::KeptWill::new(will, principal)),
        take_over: true,
    };
    match backplane.claim(request).await {
        Ok(Claimed::Here) => Ok(()),
        Ok(Claimed::Image(image)) => {
            core.restore_claimed(*image);
            Ok(())
        }
        // Never the answer to a claim that takes over.
        Ok(Claimed::InUse { .. }) => Err((
            ConnectReason::ServerUnavailable,
            "the session is in use on another cluster node".into(),
        )),
        Err(e) if persistent => Err((
            ConnectReason::ServerUnavailable,
            format!("the cluster claim failed: {e}"),
        )),
        Err(e) => {
            // A clean session keeps nothing in the store: it is served (QoS 1 publishes
            // are still refused while the store does not answer).
            tracing::warn!(client_id = %client_id, "cluster claim failed: {e}");
            Ok(())
        }
    }
}

/// The largest CONNECT read (remaining length, bytes), below `wireFormat.maxFrameSize`: before
/// its login a socket must not make the broker buffer up to that (256 MiB by default). Every
/// string and binary field of a CONNECT is at most 65,535 bytes (client id, will topic and
/// payload, user name, password, each property), so only a CONNECT with hundreds of user
/// properties comes near 1 MiB; a larger one is closed as too large, as STOMP's CONNECT past
/// 64 KiB is.
pub const MAX_CONNECT_BYTES: usize = 1 << 20;

async fn read_connect_bounded<R: AsyncRead + Unpin>(
    reader: &mut R,
    read_buf: &mut BytesMut,
    params: &ConnectionParams,
) -> Result<Box<Connect>, HandshakeEnd> {
    let max_frame = params
        .listener
        .max_frame_size_bytes()
        .min(MAX_CONNECT_BYTES);
    let read = read_connect(reader, read_buf, max_frame);
    let timed = async {
        match params.listener.inactivity.connect_attempt_timeout {
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
            Ok(Some(Packet::Connect(mut c))) => {
                // Kept for the connection's life: not a slice of its first read buffer.
                if let Some(will) = c.will.as_mut() {
                    will.detach();
                }
                return Ok(c);
            }
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
pub(super) async fn refuse<W: AsyncWrite + Unpin>(
    writer: &mut W,
    version: ProtocolVersion,
    reason: ConnectReason,
    detail: String,
) -> HandshakeEnd {
    refuse_with(writer, version, reason, detail, None).await
}

/// [`refuse`] with CONNACK properties (MQTT 5 only; a Server Reference).
async fn refuse_with<W: AsyncWrite + Unpin>(
    writer: &mut W,
    version: ProtocolVersion,
    reason: ConnectReason,
    detail: String,
    properties: Option<Box<Properties>>,
) -> HandshakeEnd {
    let mut buf = BytesMut::with_capacity(8);
    let packet = Packet::ConnAck(ConnAck {
        session_present: false,
        reason,
        properties: properties.filter(|_| version == ProtocolVersion::V5),
    });
    if encode(&packet, version, &mut buf).is_ok() {
        let _ = tokio::time::timeout(CLOSE_GRACE, async {
            writer.write_all(&buf).await?;
            writer.flush().await
        })
        .await;
    }
    HandshakeEnd::Refused {
        reason,
        detail,
        cause: cause_of(reason),
        who: None,
    }
}

#[cfg(test)]
mod tests {
    use bytes::{Bytes, BytesMut};
    use tokio::io::AsyncWriteExt;

    use super::*;
    use crate::protocol::{LastWill, QoS};

    #[tokio::test]
    async fn a_will_is_not_a_slice_of_the_buffer_its_connect_was_read_into() {
        let connect = Connect {
            protocol: ProtocolVersion::V311,
            clean_start: true,
            keep_alive_secs: 60,
            client_id: "c".into(),
            username: None,
            password: None,
            properties: None,
            will: Some(LastWill {
                topic: "status/c".into(),
                payload: Bytes::from_static(b"offline"),
                qos: QoS::AtLeastOnce,
                retain: true,
                properties: None,
            }),
        };
        let mut wire = BytesMut::new();
        encode(
            &Packet::Connect(Box::new(connect)),
            ProtocolVersion::V311,
            &mut wire,
        )
        .expect("encode");
        let (mut client, mut server) = tokio::io::duplex(1024);
        client.write_all(&wire).await.expect("write");
        let mut read_buf = BytesMut::with_capacity(16 * 1024);
        let buffer = read_buf.as_ptr_range().start..read_buf.as_ptr().wrapping_add(16 * 1024);
        let connect = read_connect(&mut server, &mut read_buf, 1 << 20)
            .await
            .expect("a CONNECT");
        let will = connect.will.expect("the will");
        assert_eq!(&will.payload[..], b"offline");
        assert!(
            !buffer.contains(&will.payload.as_ptr()),
            "the will keeps the connection's first read buffer"
        );
    }

    #[test]
    fn only_whole_pingreqs_after_a_connect_ask_nothing_of_the_session() {
        assert!(super::only_pings(&[]));
        assert!(super::only_pings(&[0xC0, 0x00, 0xC0, 0x00]));
        assert!(!super::only_pings(&[0xC0]), "half a PINGREQ");
        assert!(!super::only_pings(&[0xE0, 0x00]), "DISCONNECT");
        assert!(
            !super::only_pings(&[0xC0, 0x00, 0x30, 0x03, 0x00, 0x01, b'a']),
            "PUBLISH"
        );
    }
}
