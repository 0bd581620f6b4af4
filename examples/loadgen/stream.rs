//! The byte stream under one MQTT connection: plain TCP or TLS over TCP (`--tls`), behind one
//! type so that the publisher, subscriber and idle loops do not care which.
//!
//! The publisher loop needs two TCP-only operations, a non-blocking read (`try_read_buf`) and
//! "wait until readable" (`readable`). Over TLS they are built from the TLS stream: a read polled
//! once (without a real waker), and the TCP socket's readiness, which is correct because a
//! non-blocking TLS read only reports "would block" once the TCP socket is drained and rustls
//! holds no decrypted bytes.

use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::BytesMut;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

/// What a connection needs to start TLS: the client configuration and the name the broker's
/// certificate must carry (the `--host` given, a DNS name or an IP address).
#[derive(Clone)]
pub struct TlsParams {
    connector: TlsConnector,
    server_name: ServerName<'static>,
}

impl std::fmt::Debug for TlsParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsParams")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl TlsParams {
    /// Trusts only the CA certificates in the PEM file `cafile`; verifies `host` against the
    /// broker's certificate (so `127.0.0.1` needs an IP subject alternative name).
    pub fn new(cafile: &Path, host: &str) -> Result<TlsParams, String> {
        let mut roots = RootCertStore::empty();
        let certs = CertificateDer::pem_file_iter(cafile)
            .map_err(|e| format!("--cafile {}: {e}", cafile.display()))?;
        for cert in certs {
            let cert = cert.map_err(|e| format!("--cafile {}: {e}", cafile.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("--cafile {}: {e}", cafile.display()))?;
        }
        if roots.is_empty() {
            return Err(format!(
                "--cafile {}: no CERTIFICATE in the file",
                cafile.display()
            ));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS client configuration: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let server_name = ServerName::try_from(host.to_owned())
            .map_err(|e| format!("--host {host} is not a valid TLS server name: {e}"))?;
        Ok(TlsParams {
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
        })
    }

    /// TLS handshake over an open TCP connection.
    pub async fn handshake(&self, tcp: TcpStream) -> Result<Stream, String> {
        let tls = self
            .connector
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|e| format!("TLS handshake with the broker: {e}"))?;
        Ok(Stream::Tls(Box::new(tls)))
    }
}

/// A connection's byte stream.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    /// Waits until the TCP socket has bytes (or an error) to read.
    pub async fn readable(&self) -> io::Result<()> {
        match self {
            Stream::Plain(tcp) => tcp.readable().await,
            Stream::Tls(tls) => tls.get_ref().0.readable().await,
        }
    }

    /// Reads what is available now without waiting; `WouldBlock` when nothing is.
    pub fn try_read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            Stream::Plain(tcp) => tcp.try_read_buf(buf),
            Stream::Tls(tls) => {
                let mut read = std::pin::pin!(tls.read_buf(buf));
                match read.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
                    Poll::Ready(result) => result,
                    Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
                }
            }
        }
    }

    /// Writes all of `bytes` and flushes them to the socket (TLS buffers records otherwise).
    pub async fn send_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.write_all(bytes).await?;
        self.flush().await
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }
}
