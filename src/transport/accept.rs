//! Turn an accepted TCP socket into the byte stream the MQTT connection reads, per scheme:
//! as is (`mqtt`, `mqtt+nio`), through TLS (`mqtt+ssl`, `mqtt+nio+ssl`), through a WebSocket
//! upgrade (`ws`) or both (`wss`).
//!
//! [`upgrade`] runs in the connection's own task, under a timeout, so that a client stalling its
//! handshake holds only its own task, never the accept loop.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::rustls::{self, CertificateError};

use super::dn;
use super::error::TransportError;
use super::reload::SharedTls;
use super::ws;
use crate::config::{Listener, Scheme};

/// A byte stream an MQTT connection can run over. Writes reach the peer without a flush while
/// the socket has room; under back-pressure the rest goes out on the next write or flush, so a
/// writer should flush after each batch, as with any buffered stream.
pub trait AsyncStream: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> AsyncStream for T {}

/// An upgraded connection.
pub struct Accepted {
    /// Plain TCP, TLS, WebSocket or WebSocket over TLS. A box costs one indirect call per
    /// read or write, which is nothing next to the system call behind it.
    pub stream: Box<dyn AsyncStream>,
    /// The verified client certificate's subject DN in Java's RFC 2253 form
    /// (`CN=client,O=Org,C=US`), when the client presented one.
    pub peer_cert_subject: Option<String>,
    /// A WebSocket client that offered no MQTT sub-protocol: the connection speaks STOMP
    /// (see [`ws`]). Always false for other transports (the connector's scheme decides).
    pub websocket_stomp: bool,
}

impl std::fmt::Debug for Accepted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accepted")
            .field("peer_cert_subject", &self.peer_cert_subject)
            .field("websocket_stomp", &self.websocket_stomp)
            .finish_non_exhaustive()
    }
}

/// Bounds on one upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpgradeLimits {
    /// The TLS and WebSocket handshakes together must finish within this.
    pub handshake_timeout: Duration,
    /// `maxFrameSize`: the largest MQTT packet, which bounds WebSocket messages too.
    pub max_frame_size_bytes: u64,
}

impl UpgradeLimits {
    /// Used when `connectAttemptTimeout` is off: a handshake must still end some time.
    pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

    /// The handshake may take as long as the connector allows before CONNECT
    /// (`transport.connectAttemptTimeout`, as resolved in [`Listener::inactivity`]), or 30 s
    /// when that is off.
    pub fn for_listener(listener: &Listener) -> UpgradeLimits {
        UpgradeLimits {
            handshake_timeout: listener
                .inactivity
                .connect_attempt_timeout
                .unwrap_or(Self::DEFAULT_HANDSHAKE_TIMEOUT),
            max_frame_size_bytes: listener.options.max_frame_size_bytes,
        }
    }
}

/// Run the handshakes `scheme` needs on `tcp`. `tls` must be given for TLS schemes. On error the
/// socket is dropped (closed); the caller logs the error with `peer`.
pub async fn upgrade(
    tcp: TcpStream,
    peer: SocketAddr,
    scheme: Scheme,
    tls: Option<&SharedTls>,
    limits: UpgradeLimits,
) -> Result<Accepted, TransportError> {
    if !scheme.is_tls() && !scheme.is_websocket() {
        return Ok(Accepted {
            stream: Box::new(tcp),
            peer_cert_subject: None,
            websocket_stomp: false,
        });
    }
    let handshakes = upgrade_unbounded(tcp, scheme, tls, limits.max_frame_size_bytes);
    let accepted = tokio::time::timeout(limits.handshake_timeout, handshakes)
        .await
        .map_err(|_elapsed| TransportError::HandshakeTimeout {
            scheme,
            timeout_ms: u64::try_from(limits.handshake_timeout.as_millis()).unwrap_or(u64::MAX),
        })??;
    tracing::debug!(%peer, %scheme, subject = ?accepted.peer_cert_subject, "transport ready");
    Ok(accepted)
}

async fn upgrade_unbounded(
    tcp: TcpStream,
    scheme: Scheme,
    tls: Option<&SharedTls>,
    max_frame_size_bytes: u64,
) -> Result<Accepted, TransportError> {
    if !scheme.is_tls() {
        let ws = ws::accept_websocket(tcp, max_frame_size_bytes).await?;
        return Ok(Accepted {
            websocket_stomp: ws.is_stomp(),
            stream: Box::new(ws),
            peer_cert_subject: None,
        });
    }
    let shared = tls.ok_or(TransportError::TlsNotConfigured { scheme })?;
    expect_tls_client_hello(&tcp, scheme).await?;
    let tls_stream = shared
        .acceptor()
        .accept(tcp)
        .await
        .map_err(|e| tls_failure(e, scheme))?;
    let peer_cert_subject = match tls_stream.get_ref().1.peer_certificates() {
        Some([leaf, ..]) => Some(
            dn::subject_dn(leaf).map_err(|reason| TransportError::CertificateSubject { reason })?,
        ),
        _ => None,
    };
    let (stream, websocket_stomp): (Box<dyn AsyncStream>, bool) = if scheme.is_websocket() {
        let ws = ws::accept_websocket(tls_stream, max_frame_size_bytes).await?;
        let stomp = ws.is_stomp();
        (Box::new(ws), stomp)
    } else {
        (Box::new(tls_stream), false)
    };
    Ok(Accepted {
        stream,
        peer_cert_subject,
        websocket_stomp,
    })
}

/// TLS records start with content type 22 (handshake). Looking at the first byte before
/// handing the socket to rustls turns "corrupt message" into a message that names the mistake.
async fn expect_tls_client_hello(tcp: &TcpStream, scheme: Scheme) -> Result<(), TransportError> {
    const TLS_HANDSHAKE_RECORD: u8 = 0x16;
    let mut first = [0u8; 1];
    let n = tcp
        .peek(&mut first)
        .await
        .map_err(|source| TransportError::Io { scheme, source })?;
    if n == 0 {
        return Err(TransportError::ClosedBeforeHandshake { scheme });
    }
    let first_byte = first[0];
    if first_byte == TLS_HANDSHAKE_RECORD {
        return Ok(());
    }
    let looks_like = match first_byte {
        0x10 => "an MQTT CONNECT packet: a plain MQTT client",
        b'G' | b'P' | b'H' => "an HTTP request: a plain ws:// or http:// client",
        0x80 => "an SSLv2-style hello, which is not supported",
        _ => "not TLS",
    };
    Err(TransportError::NotTls {
        scheme,
        first_byte,
        looks_like,
    })
}

/// Name the cause of a failed TLS handshake, most usefully a refused client certificate.
fn tls_failure(e: io::Error, scheme: Scheme) -> TransportError {
    let Some(tls_error) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return match e.kind() {
            io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset => {
                TransportError::TlsHandshake {
                    reason: "the client closed the connection during the handshake (it may \
                             not trust the server certificate)"
                        .into(),
                }
            }
            _ => TransportError::Io { scheme, source: e },
        };
    };
    match tls_error {
        rustls::Error::NoCertificatesPresented => TransportError::ClientCertificate {
            reason: "the client sent no certificate and this connector requires one \
                     (needClientAuth=true)"
                .into(),
        },
        rustls::Error::InvalidCertificate(cert_error) => TransportError::ClientCertificate {
            reason: describe_certificate_error(cert_error),
        },
        rustls::Error::AlertReceived(alert) => TransportError::TlsHandshake {
            reason: format!(
                "the client aborted with alert {alert:?} (it may not trust the server \
                 certificate)"
            ),
        },
        other => TransportError::TlsHandshake {
            reason: other.to_string(),
        },
    }
}

fn describe_certificate_error(e: &CertificateError) -> String {
    match e {
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            format!("the client certificate has expired ({e})")
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            format!("the client certificate is not valid yet ({e})")
        }
        CertificateError::UnknownIssuer => {
            "the client certificate is not one of the trustStore's certificates and not issued \
             by a CA in the trustStore (a trusted certificate without basicConstraints cA=TRUE \
             issues nothing)"
                .into()
        }
        CertificateError::BadSignature => "the client certificate signature is invalid".into(),
        CertificateError::Revoked => "the client certificate is revoked".into(),
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            format!("the client certificate is not valid for TLS client authentication ({e})")
        }
        CertificateError::Other(other) => describe_webpki_error(&other.to_string()),
        other => format!("the client certificate is invalid: {other}"),
    }
}

/// WebPKI's reasons reach rustls as `Other` errors that print as a Rust identifier
/// (`CaUsedAsEndEntity`); say them as sentences.
fn describe_webpki_error(name: &str) -> String {
    let sentence = match name {
        "CaUsedAsEndEntity" => {
            "the client certificate is a CA certificate (basicConstraints cA=TRUE) issued by a \
             trusted CA; a CA certificate is accepted as a client certificate only when the \
             trustStore holds exactly it"
        }
        "UnsupportedCertVersion" => {
            "the client certificate is an X.509 v1 certificate issued by a trusted CA; a v1 \
             certificate is accepted only when the trustStore holds exactly it"
        }
        "EndEntityUsedAsCa" => {
            "the client's certificate chain uses a non-CA certificate as an issuer"
        }
        "PathLenConstraintViolated" => {
            "the client's certificate chain is longer than a CA's pathLenConstraint allows"
        }
        "MaximumPathDepthExceeded" | "MaximumPathBuildCallsExceeded" => {
            "the client's certificate chain is too long"
        }
        "UnsupportedSignatureAlgorithm" | "UnsupportedSignatureAlgorithmForPublicKey" => {
            "the client certificate is signed with an unsupported algorithm"
        }
        _ => return format!("the client certificate is invalid ({name})"),
    };
    sentence.into()
}
