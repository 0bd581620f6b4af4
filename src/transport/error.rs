//! Errors of the transport layer: loading TLS material ([`TlsError`], a configuration problem
//! reported at startup or reload) and upgrading one accepted socket ([`TransportError`], a
//! per-connection problem: the caller logs it and only that connection dies).

use std::fmt;
use std::io;
use std::path::PathBuf;

use tokio_rustls::rustls;

use super::keystore::KeyStoreError;
use crate::config::{Diagnostic, Scheme, SslContextConfig};

/// Which store of `<sslContext>` an error is about (so that it can point at the right attribute).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreRole {
    /// `keyStore`: the broker's own certificate chain and private key.
    KeyStore,
    /// `trustStore`: CA certificates that client certificates are verified against.
    TrustStore,
}

impl fmt::Display for StoreRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StoreRole::KeyStore => "keyStore",
            StoreRole::TrustStore => "trustStore",
        })
    }
}

/// Why TLS material could not be loaded. Every message names the file and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("a TLS connector needs <sslContext keyStore=\"...\"/>: no keyStore is configured")]
    NoKeyStore,

    #[error(
        "needClientAuth/wantClientAuth is set but <sslContext> has no trustStore to verify \
         client certificates against; add trustStore=\"file:...\" (a PEM CA bundle, a PKCS#12, \
         JKS or JCEKS store)"
    )]
    NoTrustStore,

    #[error("cannot read {role} {}: {source}", path.display())]
    Read {
        role: StoreRole,
        path: PathBuf,
        source: io::Error,
    },

    #[error("{role} {} (a Java {format} store): {source}", path.display())]
    JavaStore {
        role: StoreRole,
        path: PathBuf,
        /// `JKS` or `JCEKS`.
        format: &'static str,
        source: KeyStoreError,
    },

    #[error(
        "keyStore {}: the private key `{alias}` cannot be recovered with {used}: wrong key \
         password; set keyStoreKeyPassword to the key entry's password (keyStorePassword is \
         used when keyStoreKeyPassword is not set)",
        path.display()
    )]
    WrongKeyPassword {
        path: PathBuf,
        alias: String,
        /// The attribute whose value was tried: `keyStoreKeyPassword` or `keyStorePassword`.
        used: &'static str,
    },

    #[error(
        "keyStore {} is a Java {format} store: its private key needs a password; set \
         keyStorePassword (and keyStoreKeyPassword when the key's password differs)",
        path.display()
    )]
    KeyPasswordMissing { path: PathBuf, format: &'static str },

    #[error("keyStore {} holds no private key entry (is it a trust store?)", path.display())]
    NoKeyEntry { path: PathBuf },

    #[error(
        "keyStore {} holds several private keys ({}) and ActiveMQ's <sslContext> names none; pick \
         one with ferromq:keyAlias=\"...\" on <sslContext> (declare xmlns:ferromq=\"urn:ferromq\")",
        path.display(), aliases.join(", ")
    )]
    SeveralKeys { path: PathBuf, aliases: Vec<String> },

    #[error(
        "keyStore {} has no private key entry `{alias}` (ferromq:keyAlias); its private key \
         entries are: {}",
        path.display(), aliases.join(", ")
    )]
    NoSuchAlias {
        path: PathBuf,
        alias: String,
        aliases: Vec<String>,
    },

    #[error("{role} {} is not a PKCS#12 store or is damaged: {reason}", path.display())]
    Pkcs12 {
        role: StoreRole,
        path: PathBuf,
        reason: String,
    },

    #[error(
        "{role} {}: wrong password: the {format} store's integrity check failed; check \
         {role}Password",
        path.display()
    )]
    WrongPassword {
        role: StoreRole,
        path: PathBuf,
        /// `PKCS#12`, `JKS` or `JCEKS`.
        format: &'static str,
    },

    #[error("{role} {} holds no certificate{hint}", path.display())]
    NoCertificate {
        role: StoreRole,
        path: PathBuf,
        /// Extra advice, starting with "; " when not empty.
        hint: String,
    },

    #[error(
        "{} holds no private key; put the key in the same PEM file as the certificate chain, \
         or name a separate key file with ferromq:keyFile=\"...\"",
        path.display()
    )]
    NoPrivateKey { path: PathBuf },

    #[error(
        "{} holds an encrypted PEM private key, which ferromq cannot decrypt; decrypt it with \
         `openssl pkey -in {} -out key.pem` (keep it readable by the broker only) or use a \
         PKCS#12 key store with keyStorePassword",
        path.display(), path.display()
    )]
    EncryptedPemKey { path: PathBuf },

    #[error("{role} {}: {reason}", path.display())]
    BadPem {
        role: StoreRole,
        path: PathBuf,
        reason: String,
    },

    #[error("{role} {}: unrecognised format ({reason})", path.display())]
    UnknownFormat {
        role: StoreRole,
        path: PathBuf,
        reason: String,
    },

    #[error("keyStore {}: the certificate and private key cannot be used: {source}", path.display())]
    BadCertifiedKey {
        path: PathBuf,
        source: rustls::Error,
    },

    #[error(
        "keyStore {}: the server's key is {key}, which ferromq cannot serve TLS with; supported \
         keys: RSA (2048 bits or more), EC P-256, EC P-384, EC P-521, Ed25519",
        path.display()
    )]
    UnsupportedKey {
        path: PathBuf,
        /// What the certificate says the key is (`EC P-521`, `DSA`).
        key: String,
    },

    #[error("trustStore {}: cannot build the client certificate verifier: {reason}", path.display())]
    BadTrustStore { path: PathBuf, reason: String },

    #[error("cannot watch TLS files for changes: {0}")]
    Watch(String),
}

impl TlsError {
    /// Which store the error is about, when it is about one.
    pub fn role(&self) -> Option<StoreRole> {
        match self {
            TlsError::NoKeyStore | TlsError::NoPrivateKey { .. } => Some(StoreRole::KeyStore),
            TlsError::BadCertifiedKey { .. } | TlsError::UnsupportedKey { .. } => {
                Some(StoreRole::KeyStore)
            }
            TlsError::NoTrustStore | TlsError::BadTrustStore { .. } => Some(StoreRole::TrustStore),
            TlsError::EncryptedPemKey { .. }
            | TlsError::WrongKeyPassword { .. }
            | TlsError::KeyPasswordMissing { .. }
            | TlsError::NoKeyEntry { .. }
            | TlsError::SeveralKeys { .. }
            | TlsError::NoSuchAlias { .. } => Some(StoreRole::KeyStore),
            TlsError::Read { role, .. }
            | TlsError::JavaStore { role, .. }
            | TlsError::Pkcs12 { role, .. }
            | TlsError::WrongPassword { role, .. }
            | TlsError::NoCertificate { role, .. }
            | TlsError::BadPem { role, .. }
            | TlsError::UnknownFormat { role, .. } => Some(*role),
            TlsError::Watch(_) => None,
        }
    }

    /// What to do about the error, for `ferromq check`: a hint that fits the cause.
    pub fn hint(&self) -> &'static str {
        match self {
            TlsError::WrongPassword { .. } => {
                "the store password is wrong: set keyStorePassword / trustStorePassword to the \
                 password the store was written with (`keytool -list -keystore FILE` asks for it)"
            }
            TlsError::WrongKeyPassword { .. } | TlsError::KeyPasswordMissing { .. } => {
                "set keyStoreKeyPassword to the private key entry's password (`keytool \
                 -keypasswd` changes it)"
            }
            TlsError::Read { .. } => {
                "check the path and that the broker may read the file; relative paths are \
                 relative to the configuration file's directory"
            }
            TlsError::BadCertifiedKey { .. } => {
                "check that the private key belongs to the certificate (the first certificate \
                 of the chain)"
            }
            TlsError::UnsupportedKey { .. } => {
                "make a new key, e.g. `keytool -genkeypair -keyalg RSA -keysize 2048` or \
                 `-keyalg EC -groupname secp256r1`"
            }
            TlsError::NoPrivateKey { .. } | TlsError::EncryptedPemKey { .. } => {
                "give the broker an unencrypted PEM private key, or a PKCS#12/JKS key store"
            }
            TlsError::NoKeyEntry { .. }
            | TlsError::SeveralKeys { .. }
            | TlsError::NoSuchAlias { .. } => {
                "`keytool -list -keystore FILE` shows the store's entries and their aliases"
            }
            TlsError::NoKeyStore | TlsError::NoTrustStore => "add the store to <sslContext>",
            _ => {
                "check the store file: `keytool -list -v -keystore FILE` or `openssl x509 -text \
                 -in FILE` shows what it holds"
            }
        }
    }

    /// What stays in use when a renewal fails with this error, for the reload warning: the
    /// `trust store` when the error is about it, else the `certificate` (the key store).
    pub fn kept_on_reload(&self) -> &'static str {
        match self.role() {
            Some(StoreRole::TrustStore) => "trust store",
            _ => "certificate",
        }
    }

    /// The error as a configuration diagnostic pointing at the `<sslContext>` store it is about,
    /// for `ferromq check` and reload reports.
    pub fn to_diagnostic(&self, ssl: Option<&SslContextConfig>) -> Diagnostic {
        let span = ssl.map(|ssl| {
            let alias = ssl.key_store.as_ref().and_then(|k| k.key_alias.as_ref());
            if let (TlsError::NoSuchAlias { .. }, Some(alias)) = (self, alias) {
                return alias.span.clone();
            }
            let key_password = ssl
                .key_store
                .as_ref()
                .and_then(|k| k.key_password_span.as_ref());
            if let (
                TlsError::WrongKeyPassword {
                    used: "keyStoreKeyPassword",
                    ..
                },
                Some(span),
            ) = (self, key_password)
            {
                return span.clone();
            }
            let store = match self.role() {
                Some(StoreRole::KeyStore) => ssl.key_store.as_ref(),
                Some(StoreRole::TrustStore) => ssl.trust_store.as_ref(),
                None => None,
            };
            store.map_or_else(|| ssl.span.clone(), |s| s.span.clone())
        });
        Diagnostic::error(span, self.to_string())
    }
}

/// Why an accepted socket could not be turned into an MQTT byte stream. Each one ends only the
/// connection it happened on.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error(
        "{scheme} handshake did not finish within {timeout_ms} ms (stalled or very slow client)"
    )]
    HandshakeTimeout { scheme: Scheme, timeout_ms: u64 },

    #[error("{scheme} connector has no TLS material (internal error: listener started without sslContext)")]
    TlsNotConfigured { scheme: Scheme },

    #[error("client closed the connection before the {scheme} handshake")]
    ClosedBeforeHandshake { scheme: Scheme },

    #[error(
        "client did not start a TLS handshake on a {scheme} port: first byte 0x{first_byte:02x} \
         ({looks_like}); is the client configured for TLS?"
    )]
    NotTls {
        scheme: Scheme,
        first_byte: u8,
        looks_like: &'static str,
    },

    #[error("client certificate refused: {reason}")]
    ClientCertificate { reason: String },

    #[error("TLS handshake failed: {reason}")]
    TlsHandshake { reason: String },

    #[error("client certificate subject cannot be read: {reason}")]
    CertificateSubject { reason: String },

    #[error("WebSocket upgrade refused: {reason}")]
    WebSocketRefused { reason: String },

    #[error("WebSocket handshake failed: {reason}")]
    WebSocketHandshake { reason: String },

    #[error("I/O error during the {scheme} handshake: {source}")]
    Io { scheme: Scheme, source: io::Error },
}
