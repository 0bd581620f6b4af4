//! Shared helpers of the transport tests: certificates made with rcgen, `<sslContext>` models
//! pointing at files in a tempdir, TLS clients, and an echo server running over
//! `transport::upgrade` on 127.0.0.1.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ferromq::config::{
    KeyMaterial, ListenerOptions, Scheme, Secret, Span, SslContextConfig, StoreKind,
};
use ferromq::transport::{upgrade, SharedTls, UpgradeLimits};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

/// Every network step of a test is bounded by this.
pub const STEP: Duration = Duration::from_secs(10);

pub async fn within<F: std::future::Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(STEP, f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {STEP:?}"))
}

/// A certificate authority able to issue server and client certificates.
pub struct Ca {
    pub cert: rcgen::Certificate,
    pub key: KeyPair,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).expect("CA cert");
        Ca { cert, key }
    }

    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    pub fn der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    /// A server certificate for `localhost` and 127.0.0.1.
    pub fn server(&self, serial: u64) -> Leaf {
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .expect("server params");
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params.serial_number = Some(serial.into());
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params)
    }

    /// A client certificate with subject `CN=<cn>,O=Org,C=US`.
    pub fn client(&self, cn: &str) -> Leaf {
        self.issue(client_params(cn))
    }

    /// A client certificate that expired in 2001.
    pub fn expired_client(&self, cn: &str) -> Leaf {
        let mut params = client_params(cn);
        params.not_before = rcgen::date_time_ymd(2000, 1, 1);
        params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        self.issue(params)
    }

    fn issue(&self, params: CertificateParams) -> Leaf {
        let key = KeyPair::generate().expect("leaf key");
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("leaf cert");
        Leaf { cert, key }
    }
}

fn client_params(cn: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("client params");
    // rcgen starts with a default CN; start empty so that the order is C, O, CN as written
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CountryName, "US");
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Org");
    params.distinguished_name.push(DnType::CommonName, cn);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params
}

/// An issued certificate and its key.
pub struct Leaf {
    pub cert: rcgen::Certificate,
    pub key: KeyPair,
}

impl Leaf {
    pub fn der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    pub fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.serialize_der()))
    }

    /// Certificate then key, in one PEM text.
    pub fn combined_pem(&self) -> String {
        format!("{}{}", self.cert.pem(), self.key.serialize_pem())
    }
}

/// Write `contents` to `path` the way renewal tools do: a temporary file renamed over the old.
pub fn replace_file(path: &Path, contents: impl AsRef<[u8]>) {
    let tmp = path.with_extension("tmp-renewal");
    std::fs::write(&tmp, contents).expect("write temp file");
    std::fs::rename(&tmp, path).expect("rename over");
}

pub fn span() -> Span {
    Span::new(Arc::new(PathBuf::from("activemq.xml")), 1, 1)
}

pub fn store(path: &Path, kind: StoreKind, password: Option<&str>) -> KeyMaterial {
    KeyMaterial {
        path: path.to_path_buf(),
        password: password.map(|p| Secret(p.to_string())),
        kind,
        key_file: None,
        key_password: None,
        key_password_span: None,
        key_alias: None,
        span: span(),
    }
}

/// `<sslContext keyStore="server.pem" trustStore="ca.pem"/>` written into `dir`.
pub fn pem_ssl_context(dir: &Path, server: &Leaf, ca: &Ca) -> SslContextConfig {
    let key_store = dir.join("server.pem");
    let trust_store = dir.join("ca.pem");
    std::fs::write(&key_store, server.combined_pem()).expect("write server.pem");
    std::fs::write(&trust_store, ca.pem()).expect("write ca.pem");
    SslContextConfig {
        key_store: Some(store(&key_store, StoreKind::Pem, None)),
        trust_store: Some(store(&trust_store, StoreKind::Pem, None)),
        span: span(),
    }
}

pub fn options(need_client_auth: bool, want_client_auth: bool) -> ListenerOptions {
    ListenerOptions {
        need_client_auth,
        want_client_auth,
        ..ListenerOptions::default()
    }
}

pub fn limits(handshake_timeout: Duration) -> UpgradeLimits {
    UpgradeLimits {
        handshake_timeout,
        max_frame_size_bytes: 1024 * 1024,
    }
}

/// A TLS client trusting `ca`, presenting `client` when given.
pub fn tls_connector(ca: &Ca, client: Option<&Leaf>) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    roots.add(ca.der()).expect("add CA");
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots);
    let config = match client {
        Some(leaf) => builder
            .with_client_auth_cert(vec![leaf.der()], leaf.key_der())
            .expect("client cert"),
        None => builder.with_no_client_auth(),
    };
    TlsConnector::from(Arc::new(config))
}

pub async fn tls_connect(
    addr: SocketAddr,
    connector: &TlsConnector,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").expect("server name");
    connector.connect(name, tcp).await
}

/// Write `payload`, read as many bytes back: the echo round trip.
pub async fn round_trip<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    payload: &[u8],
) -> std::io::Result<Vec<u8>> {
    stream.write_all(payload).await?;
    stream.flush().await?;
    let mut back = vec![0u8; payload.len()];
    stream.read_exact(&mut back).await?;
    Ok(back)
}

/// What the echo server saw on one connection.
#[derive(Debug)]
pub enum ServerEvent {
    /// `upgrade` succeeded, with this client certificate subject.
    Upgraded(Option<String>),
    /// `upgrade` failed with this message.
    Refused(String),
    /// Reading the upgraded stream ended cleanly.
    Eof,
    /// Reading the upgraded stream failed with this message.
    ReadError(String),
}

/// How the echo server writes back.
#[derive(Debug, Clone, Copy)]
pub enum EchoMode {
    /// Whatever was read, as read, without flushing.
    Bytes,
    /// One write and flush per MQTT packet (fixed header + remaining length + body).
    MqttPackets,
}

pub struct EchoServer {
    pub addr: SocketAddr,
    pub events: mpsc::UnboundedReceiver<ServerEvent>,
    accept_loop: tokio::task::JoinHandle<()>,
}

impl EchoServer {
    pub async fn next_event(&mut self) -> ServerEvent {
        within("server event", self.events.recv())
            .await
            .expect("echo server stopped")
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

/// Serve `scheme` on 127.0.0.1:0; each connection is upgraded in its own task, as the broker
/// does, then echoed.
pub async fn echo_server(
    scheme: Scheme,
    tls: Option<Arc<SharedTls>>,
    limits: UpgradeLimits,
    mode: EchoMode,
) -> EchoServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let (events_tx, events) = mpsc::unbounded_channel();
    let accept_loop = tokio::spawn(async move {
        while let Ok((tcp, peer)) = listener.accept().await {
            let tls = tls.clone();
            let events_tx = events_tx.clone();
            tokio::spawn(async move {
                match upgrade(tcp, peer, scheme, tls.as_deref(), limits).await {
                    Ok(accepted) => {
                        let _ = events_tx.send(ServerEvent::Upgraded(accepted.peer_cert_subject));
                        let end = echo(accepted.stream, mode).await;
                        let _ = events_tx.send(match end {
                            Ok(()) => ServerEvent::Eof,
                            Err(e) => ServerEvent::ReadError(e.to_string()),
                        });
                    }
                    Err(e) => {
                        let _ = events_tx.send(ServerEvent::Refused(e.to_string()));
                    }
                }
            });
        }
    });
    EchoServer {
        addr,
        events,
        accept_loop,
    }
}

async fn echo<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    mode: EchoMode,
) -> std::io::Result<()> {
    match mode {
        EchoMode::Bytes => {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = stream.read(&mut buf).await?;
                if n == 0 {
                    return Ok(());
                }
                // no flush: a write must reach the peer on every transport, as on plain TCP
                stream.write_all(&buf[..n]).await?;
            }
        }
        EchoMode::MqttPackets => loop {
            let mut packet = vec![0u8; 1];
            if stream.read(&mut packet[..1]).await? == 0 {
                return Ok(());
            }
            let mut remaining: usize = 0;
            for shift in [0, 7, 14, 21] {
                let byte = stream.read_u8().await?;
                packet.push(byte);
                remaining |= usize::from(byte & 0x7f) << shift;
                if byte & 0x80 == 0 {
                    break;
                }
            }
            let start = packet.len();
            packet.resize(start + remaining, 0);
            stream.read_exact(&mut packet[start..]).await?;
            stream.write_all(&packet).await?;
            stream.flush().await?;
        },
    }
}

/// A tiny MQTT packet: PUBLISH QoS 0 to `topic` with `payload`.
pub fn mqtt_publish(topic: &str, payload: &[u8]) -> Vec<u8> {
    let remaining = 2 + topic.len() + payload.len();
    assert!(remaining < 16384, "test packets stay small");
    let mut packet = vec![0x30];
    if remaining < 128 {
        packet.push(remaining as u8);
    } else {
        packet.push((remaining % 128) as u8 | 0x80);
        packet.push((remaining / 128) as u8);
    }
    packet.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    packet.extend_from_slice(topic.as_bytes());
    packet.extend_from_slice(payload);
    packet
}

/// A TLS handshake with `connector`, then `payload` echoed back unchanged: the connection works
/// end to end. Returns the client stream for more traffic.
pub async fn tls_echo(
    addr: SocketAddr,
    connector: &TlsConnector,
    payload: &[u8],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut client = within("connect", tls_connect(addr, connector))
        .await
        .expect("TLS handshake");
    let back = within("echo", round_trip(&mut client, payload))
        .await
        .expect("echo");
    assert_eq!(back, payload);
    client
}
