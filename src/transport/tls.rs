//! `<sslContext>` + connector options -> a rustls [`ServerConfig`].
//!
//! ActiveMQ semantics: `needClientAuth` makes a client certificate mandatory, `wantClientAuth`
//! asks for one but admits clients without (the certificate login module then has no DN to map),
//! neither means no certificate is requested. Client certificates are verified against the
//! `trustStore` as Java's trust manager does (`super::trust`): a trusted certificate presented as
//! itself, or a chain to a trusted CA certificate (chain, validity dates, key usage: rustls'
//! WebPKI verifier).

use std::path::PathBuf;
use std::sync::Arc;

use tokio_rustls::rustls::{self, crypto::CryptoProvider, ServerConfig};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::error::TlsError;
use super::material::{self, FileSnapshot, Identity};
use super::trust::TrustVerifier;
use crate::config::{ListenerOptions, SslContextConfig};

/// Whether the TLS handshake asks the client for a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Neither `needClientAuth` nor `wantClientAuth`.
    None,
    /// `wantClientAuth=true`: requested, verified when sent, not required.
    Optional,
    /// `needClientAuth=true` (wins over `wantClientAuth`).
    Required,
}

impl ClientAuth {
    pub fn from_options(options: &ListenerOptions) -> ClientAuth {
        if options.need_client_auth {
            ClientAuth::Required
        } else if options.want_client_auth {
            ClientAuth::Optional
        } else {
            ClientAuth::None
        }
    }
}

/// The recipe for one TLS listener's [`ServerConfig`]: which stores to read and whether to ask
/// for client certificates. Building twice from unchanged files gives the same configuration.
#[derive(Debug, Clone)]
pub struct TlsMaterial {
    ssl: SslContextConfig,
    client_auth: ClientAuth,
}

impl TlsMaterial {
    pub fn new(ssl: &SslContextConfig, options: &ListenerOptions) -> TlsMaterial {
        TlsMaterial {
            ssl: ssl.clone(),
            client_auth: ClientAuth::from_options(options),
        }
    }

    /// Read the stores and build the server configuration, in one step.
    pub fn load(
        ssl: &SslContextConfig,
        options: &ListenerOptions,
    ) -> Result<Arc<ServerConfig>, TlsError> {
        let material = TlsMaterial::new(ssl, options);
        let snapshot = material.read_files()?;
        material.build(&snapshot)
    }

    pub fn client_auth(&self) -> ClientAuth {
        self.client_auth
    }

    /// The files this configuration is built from (what a watcher must watch).
    pub fn files(&self) -> Vec<PathBuf> {
        let mut files = Vec::new();
        if let Some(ks) = &self.ssl.key_store {
            files.push(ks.path.clone());
            files.extend(ks.key_file.clone());
        }
        if let Some(ts) = &self.ssl.trust_store {
            files.push(ts.path.clone());
        }
        files
    }

    /// Read every file the configuration names. The trust store is read even when no client
    /// certificate is requested: Java opens it when the SSL context starts, so a damaged one
    /// (or a wrong trustStorePassword) fails at start there, and here.
    pub(crate) fn read_files(&self) -> Result<FileSnapshot, TlsError> {
        let mut snapshot = FileSnapshot::default();
        let key_store = self.ssl.key_store.as_ref().ok_or(TlsError::NoKeyStore)?;
        material::read_key_store(key_store, &mut snapshot)?;
        match (&self.ssl.trust_store, self.client_auth) {
            (Some(trust_store), _) => material::read_trust_store(trust_store, &mut snapshot)?,
            (None, ClientAuth::None) => {}
            (None, _) => return Err(TlsError::NoTrustStore),
        }
        Ok(snapshot)
    }

    /// Parse the files of `snapshot` into a server configuration.
    pub(crate) fn build(&self, snapshot: &FileSnapshot) -> Result<Arc<ServerConfig>, TlsError> {
        let key_store = self.ssl.key_store.as_ref().ok_or(TlsError::NoKeyStore)?;
        let Identity { chain, key } = material::parse_identity(key_store, snapshot)?;
        warn_if_expired(&key_store.path, chain.first().map(|c| c.as_ref()));

        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        if provider
            .key_provider
            .load_private_key(key.clone_key())
            .is_err()
        {
            if let Some(unsupported) = chain.first().and_then(|c| unsupported_key(c.as_ref())) {
                return Err(TlsError::UnsupportedKey {
                    path: key_store.path.clone(),
                    key: unsupported,
                });
            }
        }
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|source| TlsError::BadCertifiedKey {
                path: key_store.path.clone(),
                source,
            })?;
        let builder = match self.client_auth {
            ClientAuth::None => {
                if let Some(trust_store) = &self.ssl.trust_store {
                    // Unused, but a store that does not open is a configuration error.
                    material::parse_trust_roots(trust_store, snapshot)?;
                }
                builder.with_no_client_auth()
            }
            auth => {
                builder.with_client_cert_verifier(self.client_verifier(snapshot, provider, auth)?)
            }
        };
        let config =
            builder
                .with_single_cert(chain, key)
                .map_err(|source| TlsError::BadCertifiedKey {
                    path: key_store.path.clone(),
                    source,
                })?;
        Ok(Arc::new(config))
    }

    fn client_verifier(
        &self,
        snapshot: &FileSnapshot,
        provider: Arc<CryptoProvider>,
        auth: ClientAuth,
    ) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
        let trust_store = self
            .ssl
            .trust_store
            .as_ref()
            .ok_or(TlsError::NoTrustStore)?;
        let certs = material::parse_trust_roots(trust_store, snapshot)?;
        let (verifier, summary) = TrustVerifier::new(certs, provider, auth == ClientAuth::Required)
            .map_err(|e| TlsError::BadTrustStore {
                path: trust_store.path.clone(),
                reason: e.to_string(),
            })?;
        if summary.unparsable > 0 {
            tracing::warn!(
                trust_store = %trust_store.path.display(),
                ignored = summary.unparsable,
                "some trust store certificates cannot be parsed and are ignored"
            );
        }
        if summary.issuers + summary.exact_only == 0 {
            tracing::warn!(
                trust_store = %trust_store.path.display(),
                "the trust store holds no certificate: every client certificate is refused"
            );
        } else {
            tracing::info!(
                trust_store = %trust_store.path.display(),
                issuers = summary.issuers,
                exact_only = summary.exact_only,
                "client certificates: accepted when they are one of the trusted certificates, \
                 or issued by a trusted CA certificate (basicConstraints cA=TRUE, or X.509 v1)"
            );
        }
        Ok(Arc::new(verifier))
    }
}

/// What the certificate's key is, when it is a kind rustls (ring) cannot sign with: RSA, EC
/// P-256 and P-384 and Ed25519 are supported; `None` for those (or an unreadable certificate).
fn unsupported_key(cert_der: &[u8]) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(cert_der).ok()?;
    let spki = cert.public_key();
    let algorithm = spki.algorithm.algorithm.to_id_string();
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .map(|oid| oid.to_id_string());
    let name = match (algorithm.as_str(), curve.as_deref()) {
        ("1.2.840.113549.1.1.1", _) | ("1.3.101.112", _) => return None,
        ("1.2.840.10045.2.1", Some("1.2.840.10045.3.1.7" | "1.3.132.0.34" | "1.3.132.0.35")) => {
            return None
        }
        ("1.2.840.10045.2.1", Some("1.3.132.0.10")) => "EC secp256k1".to_owned(),
        ("1.2.840.10045.2.1", Some(other)) => format!("EC on curve {other}"),
        ("1.2.840.10045.2.1", None) => "EC with explicit curve parameters".to_owned(),
        ("1.2.840.10040.4.1", _) => "DSA".to_owned(),
        ("1.3.101.113", _) => "Ed448".to_owned(),
        ("1.2.840.113549.1.1.10", _) => "RSASSA-PSS-only RSA".to_owned(),
        (other, _) => format!("of algorithm {other}"),
    };
    Some(name)
}

/// rustls serves an expired server certificate without complaint and every client then fails;
/// say so at load time, where the operator looks.
fn warn_if_expired(path: &std::path::Path, leaf_der: Option<&[u8]>) {
    let Some(Ok((_, cert))) = leaf_der.map(X509Certificate::from_der) else {
        return;
    };
    if !cert.validity().is_valid() {
        tracing::warn!(
            key_store = %path.display(),
            not_before = %cert.validity().not_before,
            not_after = %cert.validity().not_after,
            "the server certificate is outside its validity period; clients will refuse it"
        );
    }
}
