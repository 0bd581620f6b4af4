//! Reading key and trust stores: PEM files (chain and key together or apart), PKCS#12 stores and
//! Java JKS/JCEKS stores (`super::keystore`), told apart by their content.
//!
//! A key store with several private keys serves the one `ferromq:keyAlias` names; without it,
//! exactly one private key entry is required (ActiveMQ's `sslContext` names no alias, and picking
//! one silently would serve a certificate nobody chose).
//!
//! Files are read once into a [`FileSnapshot`] and parsed from it, so that a reload can tell
//! whether anything changed on disk by comparing snapshots, without parsing again.

use std::path::{Path, PathBuf};

use p12_keystore::{KeyStore, KeyStoreEntry};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::error::{StoreRole, TlsError};
use super::keystore::{self, EntryKind, JavaKeyStore, KeyStoreError};
use crate::config::KeyMaterial;

/// The bytes of every file one TLS configuration was built from, in reading order.
#[derive(Default, PartialEq, Eq)]
pub(crate) struct FileSnapshot {
    files: Vec<(PathBuf, Vec<u8>)>,
}

impl FileSnapshot {
    /// Read `path` into the snapshot (once; a path read twice is kept once).
    pub(crate) fn read(&mut self, role: StoreRole, path: &Path) -> Result<(), TlsError> {
        if self.files.iter().any(|(p, _)| p == path) {
            return Ok(());
        }
        let bytes = read_store_file(path).map_err(|source| TlsError::Read {
            role,
            path: path.to_path_buf(),
            source,
        })?;
        self.files.push((path.to_path_buf(), bytes));
        Ok(())
    }

    fn bytes(&self, path: &Path) -> &[u8] {
        self.files
            .iter()
            .find(|(p, _)| p == path)
            .map_or(&[], |(_, b)| b.as_slice())
    }
}

/// The most a key store, trust store or key file may hold. Real stores are a few KiB; a CA
/// bundle of every public root is about 250 KiB.
pub const MAX_STORE_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// Read a key store, trust store or key file: a regular file of at most
/// [`MAX_STORE_FILE_BYTES`]. A device (`/dev/zero`) would be read until memory runs out and a
/// FIFO would block the reader forever: both are refused, the FIFO without blocking (it is
/// opened non-blocking and checked before any read).
pub fn read_store_file(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::{Error, ErrorKind, Read};
    use std::os::unix::fs::OpenOptionsExt;
    let nonblocking = rustix::fs::OFlags::NONBLOCK.bits();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(i32::try_from(nonblocking).unwrap_or(0))
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "not a regular file (a directory, device or FIFO); name the store file itself",
        ));
    }
    let mut bytes = Vec::new();
    file.take(MAX_STORE_FILE_BYTES + 1)
        .read_to_end(&mut bytes)?;
    if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > MAX_STORE_FILE_BYTES {
        return Err(Error::new(
            ErrorKind::InvalidData,
            format!(
                "larger than {} MiB, the most a key or trust store may be",
                MAX_STORE_FILE_BYTES / (1024 * 1024)
            ),
        ));
    }
    Ok(bytes)
}

/// What a store file turned out to be, judged by its content (a `.ks` file written by a modern
/// `keytool` is PKCS#12 whatever `keyStoreType` says).
#[derive(Debug, PartialEq, Eq)]
enum Format {
    Pem,
    /// DER: a PKCS#12 store (or, for trust stores, possibly one DER certificate).
    Der,
    Jks,
    Jceks,
}

fn sniff(role: StoreRole, path: &Path, bytes: &[u8]) -> Result<Format, TlsError> {
    match bytes {
        [0xfe, 0xed, 0xfe, 0xed, ..] => return Ok(Format::Jks),
        [0xce, 0xce, 0xce, 0xce, ..] => return Ok(Format::Jceks),
        [0x30, ..] => return Ok(Format::Der),
        _ => {}
    }
    // PEM text may start with explanatory lines (RFC 7468 section 5.2): `openssl pkcs12 -nokeys`
    // writes "Bag Attributes" before each certificate.
    if contains(bytes, b"-----BEGIN ") {
        return Ok(Format::Pem);
    }
    Err(TlsError::UnknownFormat {
        role,
        path: path.to_path_buf(),
        reason: if bytes.is_empty() {
            "the file is empty".into()
        } else {
            "neither PEM text, a PKCS#12 store nor a Java key store".into()
        },
    })
}

fn java_format_name(bytes: &[u8]) -> &'static str {
    keystore::Format::sniff(bytes).map_or("Java", keystore::Format::name)
}

/// Parse a JKS/JCEKS store, checking its integrity with the store password when there is one.
fn open_java(role: StoreRole, km: &KeyMaterial, bytes: &[u8]) -> Result<JavaKeyStore, TlsError> {
    let password = km.password.as_ref().map(|p| p.expose());
    let format = java_format_name(bytes);
    JavaKeyStore::parse(bytes, password).map_err(|source| match source {
        KeyStoreError::IntegrityCheckFailed => TlsError::WrongPassword {
            role,
            path: km.path.clone(),
            format,
        },
        source => TlsError::JavaStore {
            role,
            path: km.path.clone(),
            format,
            source,
        },
    })
}

/// Which private key entry to serve, among `aliases` (store order): the one `ferromq:keyAlias`
/// names (case-insensitively: Java lower-cases aliases), else the only one.
fn choose_alias<'a>(km: &KeyMaterial, aliases: &[&'a str]) -> Result<&'a str, TlsError> {
    let listed = || {
        let mut names: Vec<String> = aliases.iter().map(|a| (*a).to_owned()).collect();
        names.sort();
        names
    };
    match (&km.key_alias, aliases) {
        (_, []) => Err(TlsError::NoKeyEntry {
            path: km.path.clone(),
        }),
        (Some(wanted), _) => aliases
            .iter()
            .find(|a| a.to_lowercase() == wanted.name.to_lowercase())
            .copied()
            .ok_or_else(|| TlsError::NoSuchAlias {
                path: km.path.clone(),
                alias: wanted.name.clone(),
                aliases: listed(),
            }),
        (None, [only]) => Ok(only),
        (None, _) => Err(TlsError::SeveralKeys {
            path: km.path.clone(),
            aliases: listed(),
        }),
    }
}

fn java_identity(km: &KeyMaterial, bytes: &[u8]) -> Result<Identity, TlsError> {
    let store = open_java(StoreRole::KeyStore, km, bytes)?;
    let alias = choose_alias(km, &store.key_aliases())?;
    let Some((protected, chain)) = store.entries.iter().find_map(|e| match &e.kind {
        EntryKind::PrivateKey { protected, chain } if e.alias == alias => Some((protected, chain)),
        _ => None,
    }) else {
        return Err(TlsError::NoKeyEntry {
            path: km.path.clone(),
        });
    };
    let format = store.format.name();
    // JSSE's key manager: keyStoreKeyPassword, else the store password.
    let (password, used) = match (&km.key_password, &km.password) {
        (Some(p), _) => (p, "keyStoreKeyPassword"),
        (None, Some(p)) => (p, "keyStorePassword"),
        (None, None) => {
            return Err(TlsError::KeyPasswordMissing {
                path: km.path.clone(),
                format,
            })
        }
    };
    let key = keystore::recover_key(protected, password.expose()).map_err(|e| match e {
        KeyStoreError::WrongKeyPassword => TlsError::WrongKeyPassword {
            path: km.path.clone(),
            alias: alias.to_owned(),
            used,
        },
        source => TlsError::JavaStore {
            role: StoreRole::KeyStore,
            path: km.path.clone(),
            format,
            source,
        },
    })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            role: StoreRole::KeyStore,
            path: km.path.clone(),
            hint: format!("; the key entry {alias:?} has no certificate chain"),
        });
    }
    let key = keystore::with_public_key(key, chain.first().map_or(&[][..], Vec::as_slice));
    Ok(Identity {
        chain: chain
            .iter()
            .map(|c| CertificateDer::from(c.clone()))
            .collect(),
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
    })
}

/// The broker's certificate chain (leaf first) and private key.
pub(crate) struct Identity {
    pub(crate) chain: Vec<CertificateDer<'static>>,
    pub(crate) key: PrivateKeyDer<'static>,
}

/// Add the key store's files to `snapshot`.
pub(crate) fn read_key_store(
    km: &KeyMaterial,
    snapshot: &mut FileSnapshot,
) -> Result<(), TlsError> {
    snapshot.read(StoreRole::KeyStore, &km.path)?;
    if let Some(key_file) = &km.key_file {
        snapshot.read(StoreRole::KeyStore, key_file)?;
    }
    Ok(())
}

/// Parse the key store from the snapshot.
pub(crate) fn parse_identity(
    km: &KeyMaterial,
    snapshot: &FileSnapshot,
) -> Result<Identity, TlsError> {
    let role = StoreRole::KeyStore;
    let bytes = snapshot.bytes(&km.path);
    let format = sniff(role, &km.path, bytes)?;
    if matches!(format, Format::Jks | Format::Jceks) {
        return java_identity(km, bytes);
    }
    if format == Format::Der {
        if km.key_file.is_some() {
            tracing::warn!(
                key_store = %km.path.display(),
                "ferromq:keyFile is ignored: the PKCS#12 key store carries its own private key"
            );
        }
        return pkcs12_identity(km, bytes);
    }
    let chain = pem_certificates(role, &km.path, bytes)?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            role,
            path: km.path.clone(),
            hint: "; the PEM file must contain the server certificate first, then its chain".into(),
        });
    }
    let key_path = km.key_file.as_deref().unwrap_or(&km.path);
    let key = pem_private_key(key_path, snapshot.bytes(key_path))?;
    Ok(Identity { chain, key })
}

/// Add the trust store's file to `snapshot`.
pub(crate) fn read_trust_store(
    km: &KeyMaterial,
    snapshot: &mut FileSnapshot,
) -> Result<(), TlsError> {
    snapshot.read(StoreRole::TrustStore, &km.path)
}

/// The certificates of the trust store (possibly none: an emptied trust store admits no client
/// certificate).
pub(crate) fn parse_trust_roots(
    km: &KeyMaterial,
    snapshot: &FileSnapshot,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let role = StoreRole::TrustStore;
    let bytes = snapshot.bytes(&km.path);
    let format = sniff(role, &km.path, bytes)?;
    let certs = match format {
        Format::Der => pkcs12_trusted(km, bytes)?,
        Format::Jks | Format::Jceks => open_java(role, km, bytes)?
            .trusted_certificates()
            .into_iter()
            .map(|der| CertificateDer::from(der.to_vec()))
            .collect(),
        _ => pem_certificates(role, &km.path, bytes)?,
    };
    if certs.is_empty() && format == Format::Der {
        // An empty trust store is valid (it admits no client certificate, which the caller
        // logs); this shape of it is most likely a mistake worth a hint.
        tracing::warn!(
            trust_store = %km.path.display(),
            "the PKCS#12 trust store has no trusted-certificate entry; a PKCS#12 store made by \
             openssl lacks Java's trusted-certificate mark: use a PEM CA bundle instead, or \
             import the CA with `keytool -importcert`"
        );
    }
    Ok(certs)
}

fn pem_certificates(
    role: StoreRole,
    path: &Path,
    bytes: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadPem {
            role,
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
}

fn pem_private_key(path: &Path, bytes: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    match PrivateKeyDer::from_pem_slice(bytes) {
        Ok(key) => Ok(key),
        Err(pem::Error::NoItemsFound) => {
            let encrypted = contains(bytes, b"ENCRYPTED PRIVATE KEY")
                || contains(bytes, b"Proc-Type: 4,ENCRYPTED");
            Err(if encrypted {
                TlsError::EncryptedPemKey {
                    path: path.to_path_buf(),
                }
            } else {
                TlsError::NoPrivateKey {
                    path: path.to_path_buf(),
                }
            })
        }
        Err(e) => Err(TlsError::BadPem {
            role: StoreRole::KeyStore,
            path: path.to_path_buf(),
            reason: e.to_string(),
        }),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn open_pkcs12(role: StoreRole, km: &KeyMaterial, bytes: &[u8]) -> Result<KeyStore, TlsError> {
    let password = km.password.as_ref().map_or("", |p| p.expose());
    KeyStore::from_pkcs12(bytes, password).map_err(|e| match e {
        p12_keystore::error::Error::MacError(_) => TlsError::WrongPassword {
            role,
            path: km.path.clone(),
            format: "PKCS#12",
        },
        other => TlsError::Pkcs12 {
            role,
            path: km.path.clone(),
            reason: other.to_string(),
        },
    })
}

fn pkcs12_identity(km: &KeyMaterial, bytes: &[u8]) -> Result<Identity, TlsError> {
    let store = open_pkcs12(StoreRole::KeyStore, km, bytes)?;
    let keys: Vec<(&str, &p12_keystore::PrivateKeyChain)> = store
        .entries()
        .filter_map(|(alias, e)| match e {
            KeyStoreEntry::PrivateKeyChain(chain) => Some((alias.as_str(), chain)),
            _ => None,
        })
        .collect();
    let aliases: Vec<&str> = keys.iter().map(|(alias, _)| *alias).collect();
    let alias = choose_alias(km, &aliases)?;
    let Some((_, chain)) = keys.iter().find(|(a, _)| *a == alias) else {
        return Err(TlsError::NoKeyEntry {
            path: km.path.clone(),
        });
    };
    let certs: Vec<CertificateDer<'static>> = chain
        .chain()
        .iter()
        .map(|c| CertificateDer::from(c.as_der().to_vec()))
        .collect();
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            role: StoreRole::KeyStore,
            path: km.path.clone(),
            hint: format!("; the key entry {alias:?} has no certificate chain"),
        });
    }
    // Java's PKCS#12 stores carry EC keys without their public key, as its JKS stores do.
    let key = keystore::with_public_key(
        chain.key().to_vec(),
        certs.first().map_or(&[][..], |c| c.as_ref()),
    );
    Ok(Identity {
        chain: certs,
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
    })
}

/// Trusted certificates of a PKCS#12 trust store, as Java's trust manager sees them: every
/// trusted-certificate entry and the leaf certificate of every key entry.
fn pkcs12_trusted(
    km: &KeyMaterial,
    bytes: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let store = open_pkcs12(StoreRole::TrustStore, km, bytes)?;
    Ok(store
        .entries()
        .filter_map(|(_, entry)| match entry {
            KeyStoreEntry::Certificate(cert) => Some(cert.as_der()),
            KeyStoreEntry::PrivateKeyChain(chain) => chain.chain().first().map(|c| c.as_der()),
            KeyStoreEntry::Secret(_) => None,
        })
        .map(|der| CertificateDer::from(der.to_vec()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Span, StoreKind};
    use std::sync::Arc;

    fn material(path: PathBuf) -> KeyMaterial {
        KeyMaterial {
            path,
            password: None,
            kind: StoreKind::Pem,
            key_file: None,
            key_password: None,
            key_password_span: None,
            key_alias: None,
            span: Span::new(Arc::new(PathBuf::from("activemq.xml")), 1, 1),
        }
    }

    fn load_identity(km: &KeyMaterial) -> Result<Identity, TlsError> {
        let mut snapshot = FileSnapshot::default();
        read_key_store(km, &mut snapshot)?;
        parse_identity(km, &snapshot)
    }

    #[test]
    fn missing_empty_and_foreign_files_are_clear_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing.pem");
        let err = load_identity(&material(missing)).err().expect("error");
        assert!(err.to_string().starts_with("cannot read keyStore"), "{err}");

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, b"").expect("write");
        let err = load_identity(&material(empty)).err().expect("error");
        assert!(err.to_string().contains("the file is empty"), "{err}");

        let text = dir.path().join("notes.txt");
        std::fs::write(&text, b"hello").expect("write");
        let err = load_identity(&material(text)).err().expect("error");
        assert!(err.to_string().contains("neither PEM text"), "{err}");
    }

    #[test]
    fn pem_without_key_and_encrypted_key_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let cert_only = dir.path().join("cert.pem");
        std::fs::write(&cert_only, cert.pem()).expect("write");
        let err = load_identity(&material(cert_only.clone()))
            .err()
            .expect("error");
        assert!(matches!(err, TlsError::NoPrivateKey { .. }), "{err}");

        let encrypted = dir.path().join("enc.key");
        std::fs::write(
            &encrypted,
            b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nMAA=\n-----END ENCRYPTED PRIVATE KEY-----\n",
        )
        .expect("write");
        let mut km = material(cert_only);
        km.key_file = Some(encrypted);
        let err = load_identity(&km).err().expect("error");
        assert!(matches!(err, TlsError::EncryptedPemKey { .. }), "{err}");
    }

    #[test]
    fn chain_and_key_in_one_file_or_two() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let combined = dir.path().join("server.pem");
        std::fs::write(&combined, format!("{}{}", cert.pem(), key.serialize_pem())).expect("w");
        let identity = load_identity(&material(combined)).expect("combined loads");
        assert_eq!(identity.chain.len(), 1);

        let cert_path = dir.path().join("server.crt");
        let key_path = dir.path().join("server.key");
        std::fs::write(&cert_path, cert.pem()).expect("write");
        std::fs::write(&key_path, key.serialize_pem()).expect("write");
        let mut km = material(cert_path);
        km.key_file = Some(key_path);
        let identity = load_identity(&km).expect("separate files load");
        assert_eq!(identity.chain[0].as_ref(), cert.der().as_ref());
    }
}
