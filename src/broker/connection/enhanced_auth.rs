//! MQTT 5 enhanced authentication (4.12, 3.15): the AUTH packet exchange of a CONNECT and of a
//! re-authentication, with SCRAM-SHA-256/512 as the methods (the maths and the users are in
//! [`crate::security::sasl`]).
//!
//! At CONNECT (Authentication Method `SCRAM-SHA-256` or `SCRAM-SHA-512`, Authentication Data =
//! client-first; a CONNECT without data gets an empty AUTH 0x18 asking for it):
//!
//! ```text
//! CONNECT(method, client-first) -> AUTH 0x18(server-first) -> AUTH 0x18(client-final)
//!   -> CONNACK 0x00(method, server-final) | CONNACK 0x86 | CONNACK 0x87 (throttled)
//! ```
//!
//! Any other method gets CONNACK 0x8C (4.12.0-1), as does SCRAM where the login is by
//! certificate or there is no authentication. Before CONNACK the client may send only AUTH or
//! DISCONNECT (3.1.4, 4.12.0-6); anything else, an AUTH with another reason code than 0x18 or
//! without the same method, is a protocol error (CONNACK 0x82). The whole exchange is bounded
//! by the connector's `connectAttemptTimeout` (again, from the CONNECT; 30 s when it is off).
//!
//! Re-authentication (4.12.1): a client that connected with a method sends AUTH 0x19 with the
//! same method and a new client-first; the broker answers AUTH 0x18, then AUTH 0x00 with
//! server-final. Other packets keep flowing meanwhile under the old authentication. It must
//! authenticate the same user; its groups are looked up again (and subscriptions the new
//! groups may not read are dropped). A failure, or no client-final within the same bound, sends
//! DISCONNECT 0x87 (0x86 is not a DISCONNECT reason code) and closes (4.12.1-2). Another method,
//! AUTH from a client that connected without one, or an out-of-turn reason code is a protocol
//! error (DISCONNECT 0x82).
//!
//! Memory: only connections that authenticated with a method carry an [`EnhancedAuth`] (one
//! boxed `Option` in `Identity`), and the re-authentication exchange inside it is boxed too.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::connect::{refuse, HandshakeEnd};
use super::read::read_some;
use super::{CloseReason, Conn, ConnectionParams};
use crate::protocol::{
    decode, encode, Auth, Connect, ConnectReason, Packet, Properties, ProtocolVersion,
};
use crate::security::sasl::LoginSource;
use crate::security::scram::{ScramMechanism, ServerExchange};
use crate::security::{AuthFailure, AuthzCache, Principal, Security};

/// AUTH reason codes (MQTT 5 3.15.2.1).
const AUTH_SUCCESS: u8 = 0x00;
const CONTINUE_AUTHENTICATION: u8 = 0x18;
const RE_AUTHENTICATE: u8 = 0x19;
/// Bound of an exchange on a connector whose `connectAttemptTimeout` is off (ActiveMQ's default
/// for that timeout).
const DEFAULT_EXCHANGE_LIMIT: Duration = Duration::from_secs(30);

/// What a connection that authenticated with a method remembers (boxed in `Identity`).
pub(in crate::broker::connection) struct EnhancedAuth {
    mechanism: ScramMechanism,
    peer: SocketAddr,
    tls: bool,
    /// How long an exchange may take.
    limit: Duration,
    /// A re-authentication waiting for the client's final message.
    reauth: Option<Box<ReAuth>>,
}

struct ReAuth {
    exchange: ServerExchange,
    deadline: tokio::time::Instant,
}

/// A CONNECT exchange that succeeded.
pub(super) struct Authenticated {
    pub(super) principal: Principal,
    state: Box<EnhancedAuth>,
    server_final: String,
}

impl Authenticated {
    /// CONNACK carries the method and server-final (4.12.0-5, 3.2.2.3.17/18).
    pub(super) fn add_to_connack(&self, properties: &mut Properties) {
        properties.authentication_method = Some(self.state.mechanism.name().to_owned());
        properties.authentication_data = Some(Bytes::from(self.server_final.clone()));
    }

    /// What the connection keeps for re-authentication.
    pub(super) fn into_state(self) -> Box<EnhancedAuth> {
        self.state
    }
}

fn exchange_limit(params: &ConnectionParams) -> Duration {
    params
        .listener
        .inactivity
        .connect_attempt_timeout
        .unwrap_or(DEFAULT_EXCHANGE_LIMIT)
}

/// Authenticate a CONNECT that names `method`, with the AUTH exchange. `Err`: a refusing
/// CONNACK was sent (or the peer left).
pub(super) async fn authenticate_connect<R, W>(
    reader: &mut R,
    writer: &mut W,
    read_buf: &mut BytesMut,
    params: &ConnectionParams,
    connect: &Connect,
    client_id: &str,
    method: &str,
) -> Result<Authenticated, HandshakeEnd>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let security = params.core.security();
    let Some(mechanism) = security.enhanced_auth_mechanism(method, params.tls) else {
        return Err(refuse(
            writer,
            ProtocolVersion::V5,
            ConnectReason::BadAuthenticationMethod,
            format!("authentication method `{method}` is not supported here"),
        )
        .await);
    };
    let limit = exchange_limit(params);
    let exchange = scram_exchange(
        reader, writer, read_buf, params, &security, connect, client_id, mechanism,
    );
    let outcome = tokio::select! {
        _ = params.shutdown.cancelled() => return Err(HandshakeEnd::Shutdown),
        outcome = tokio::time::timeout(limit, exchange) => outcome,
    };
    let refusal = match outcome {
        Ok(Ok((principal, server_final))) => {
            return Ok(Authenticated {
                principal,
                state: Box::new(EnhancedAuth {
                    mechanism,
                    peer: params.peer,
                    tls: params.tls,
                    limit,
                    reauth: None,
                }),
                server_final,
            })
        }
        Ok(Err(ExchangeEnd::Handshake(end))) => return Err(end),
        Ok(Err(ExchangeEnd::Refuse(reason, detail))) => (reason, detail),
        Err(_) => (
            ConnectReason::NotAuthorized,
            format!(
                "{mechanism} exchange not finished within {} ms",
                limit.as_millis()
            ),
        ),
    };
    Err(refuse(writer, ProtocolVersion::V5, refusal.0, refusal.1).await)
}

/// How an exchange ended without a login.
enum ExchangeEnd {
    /// The connection ended (nothing to send).
    Handshake(HandshakeEnd),
    /// Answer CONNACK with this reason.
    Refuse(ConnectReason, String),
}

fn refused_for(failure: AuthFailure) -> ExchangeEnd {
    let reason = match failure {
        AuthFailure::BadCredentials => ConnectReason::BadUserNameOrPassword,
        AuthFailure::NotAuthorized => ConnectReason::NotAuthorized,
        AuthFailure::ServerUnavailable => ConnectReason::ServerUnavailable,
    };
    ExchangeEnd::Refuse(reason, format!("authentication failed: {failure}"))
}

/// The exchange itself, with one security snapshot throughout (a reload meanwhile does not
/// mix credentials of two snapshots).
#[allow(clippy::too_many_arguments)]
async fn scram_exchange<R, W>(
    reader: &mut R,
    writer: &mut W,
    read_buf: &mut BytesMut,
    params: &ConnectionParams,
    security: &Security,
    connect: &Connect,
    client_id: &str,
    mechanism: ScramMechanism,
) -> Result<(Principal, String), ExchangeEnd>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let source = LoginSource {
        client_id,
        peer: params.peer,
        tls: params.tls,
    };
    security.admit_login(&source).await.map_err(refused_for)?;
    let max_frame = params.listener.max_frame_size_bytes();
    let client_first = match connect
        .properties
        .as_ref()
        .and_then(|p| p.authentication_data.clone())
    {
        Some(data) => data,
        None => {
            write_auth(
                writer,
                auth_packet(mechanism, CONTINUE_AUTHENTICATION, None),
            )
            .await?;
            read_auth(reader, read_buf, max_frame, mechanism).await?
        }
    };
    let (exchange, server_first) = security
        .scram_first(mechanism, &client_first, &source)
        .map_err(refused_for)?;
    write_auth(
        writer,
        auth_packet(mechanism, CONTINUE_AUTHENTICATION, Some(server_first)),
    )
    .await?;
    let client_final = read_auth(reader, read_buf, max_frame, mechanism).await?;
    security
        .scram_final(&exchange, &client_final, &source)
        .map_err(refused_for)
}

fn auth_packet(mechanism: ScramMechanism, reason: u8, data: Option<String>) -> Packet {
    Packet::Auth(Auth {
        reason,
        properties: Some(Box::new(Properties {
            authentication_method: Some(mechanism.name().to_owned()),
            authentication_data: data.map(Bytes::from),
            ..Properties::default()
        })),
    })
}

async fn write_auth<W: AsyncWrite + Unpin>(
    writer: &mut W,
    packet: Packet,
) -> Result<(), ExchangeEnd> {
    let mut buf = BytesMut::new();
    encode(&packet, ProtocolVersion::V5, &mut buf).map_err(|e| {
        ExchangeEnd::Refuse(
            ConnectReason::ImplementationSpecificError,
            format!("cannot encode AUTH: {e}"),
        )
    })?;
    let written = async {
        writer.write_all(&buf).await?;
        writer.flush().await
    };
    written
        .await
        .map_err(|e| ExchangeEnd::Handshake(HandshakeEnd::Io(e)))
}

/// The Authentication Data of the client's next AUTH 0x18 with `mechanism` as its method.
async fn read_auth<R: AsyncRead + Unpin>(
    reader: &mut R,
    read_buf: &mut BytesMut,
    max_frame: usize,
    mechanism: ScramMechanism,
) -> Result<Bytes, ExchangeEnd> {
    let protocol_error = |what: &str| {
        ExchangeEnd::Refuse(
            ConnectReason::ProtocolError,
            format!("during the {mechanism} exchange: {what}"),
        )
    };
    loop {
        match decode(read_buf, Some(ProtocolVersion::V5), max_frame) {
            Ok(Some(Packet::Auth(auth))) => {
                if auth.reason != CONTINUE_AUTHENTICATION {
                    return Err(protocol_error("AUTH with a reason code other than 0x18"));
                }
                let properties = auth.properties.unwrap_or_default();
                if properties.authentication_method.as_deref() != Some(mechanism.name()) {
                    return Err(protocol_error(
                        "AUTH without the CONNECT's authentication method",
                    ));
                }
                return Ok(properties.authentication_data.unwrap_or_default());
            }
            Ok(Some(Packet::Disconnect(_))) => {
                return Err(ExchangeEnd::Handshake(HandshakeEnd::Closed))
            }
            Ok(Some(_)) => return Err(protocol_error("a packet other than AUTH before CONNACK")),
            Ok(None) => {}
            // The CONNECT was valid MQTT 5: its client reads a CONNACK with the reason
            // (MQTT 5 4.13.1), as for an AUTH that decodes but breaks the exchange.
            Err(e) => {
                let reason = match e.reason_code() {
                    0x82 => ConnectReason::ProtocolError,
                    0x95 => ConnectReason::PacketTooLarge,
                    _ => ConnectReason::MalformedPacket,
                };
                return Err(ExchangeEnd::Refuse(
                    reason,
                    format!("during the {mechanism} exchange: {e}"),
                ));
            }
        }
        match read_some(reader, read_buf).await {
            Ok(0) => return Err(ExchangeEnd::Handshake(HandshakeEnd::Closed)),
            Ok(_) => {}
            Err(e) => return Err(ExchangeEnd::Handshake(HandshakeEnd::Io(e))),
        }
    }
}

impl Conn {
    /// An AUTH packet on an established connection: re-authentication (4.12.1).
    pub(super) fn on_auth(&mut self, auth: Auth) -> Result<(), CloseReason> {
        let Some(state) = self.identity.enhanced_auth.as_mut() else {
            return Err(CloseReason::ProtocolViolation(
                "AUTH from a client that connected without an authentication method",
            ));
        };
        let mechanism = state.mechanism;
        let properties = auth.properties.unwrap_or_default();
        if properties.authentication_method.as_deref() != Some(mechanism.name()) {
            return Err(CloseReason::ProtocolViolation(
                "AUTH with another authentication method than the CONNECT's",
            ));
        }
        let data = properties.authentication_data.unwrap_or_default();
        let source = LoginSource {
            client_id: self.session.client_id(),
            peer: state.peer,
            tls: state.tls,
        };
        let security = self.core.security();
        match (auth.reason, state.reauth.take()) {
            (RE_AUTHENTICATE, None) => {
                if security.login_refused_now(&source) {
                    return Err(CloseReason::AuthenticationFailed(
                        "re-authentication refused: too many failed logins from this address",
                    ));
                }
                let (exchange, server_first) = security
                    .scram_first(mechanism, &data, &source)
                    .map_err(|_| CloseReason::AuthenticationFailed("re-authentication failed"))?;
                state.reauth = Some(Box::new(ReAuth {
                    exchange,
                    deadline: tokio::time::Instant::now() + state.limit,
                }));
                self.send(auth_packet(
                    mechanism,
                    CONTINUE_AUTHENTICATION,
                    Some(server_first),
                ))
            }
            (CONTINUE_AUTHENTICATION, Some(reauth)) => {
                let (principal, server_final) = security
                    .scram_final(&reauth.exchange, &data, &source)
                    .map_err(|_| CloseReason::AuthenticationFailed("re-authentication failed"))?;
                if principal.user != self.identity.principal.user {
                    return Err(CloseReason::AuthenticationFailed(
                        "re-authenticated as another user",
                    ));
                }
                self.send(auth_packet(mechanism, AUTH_SUCCESS, Some(server_final)))?;
                if principal != self.identity.principal {
                    self.identity.principal = principal;
                    self.identity.authz = AuthzCache::default();
                    self.drop_denied_subscriptions()?;
                }
                Ok(())
            }
            (RE_AUTHENTICATE, Some(_)) => Err(CloseReason::ProtocolViolation(
                "AUTH 0x19 while a re-authentication is in progress",
            )),
            (CONTINUE_AUTHENTICATION, None) => Err(CloseReason::ProtocolViolation(
                "AUTH 0x18 without a re-authentication in progress",
            )),
            _ => Err(CloseReason::ProtocolViolation(
                "AUTH with a reason code a client may not send here",
            )),
        }
    }

    /// When a re-authentication in progress must have finished.
    pub(super) fn reauth_deadline(&self) -> Option<tokio::time::Instant> {
        let state = self.identity.enhanced_auth.as_ref()?;
        state.reauth.as_ref().map(|r| r.deadline)
    }
}
