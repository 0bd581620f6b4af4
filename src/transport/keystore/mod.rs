//! Java key stores read directly: JKS (magic `FEEDFEED`, Sun's original format) and JCEKS
//! (magic `CECECECE`, SunJCE's), versions 1 and 2, as ActiveMQ's `broker.ks` / `broker.ts`.
//!
//! Written here rather than taken from a crate: the one JKS crate on crates.io reads no JCEKS
//! and brings a second, older copy of the ASN.1 stack; the format is small (a count, then
//! entries, then a SHA-1 digest) and every primitive it needs (SHA-1, MD5, triple DES, CBC) is
//! already a RustCrypto dependency.
//!
//! Layout (Java's `DataOutputStream`, big-endian): magic `u32`, version `u32`, entry count `u32`,
//! then per entry a tag `u32` (1 private key, 2 trusted certificate, 3 JCEKS secret key), the
//! alias (`writeUTF`) and a creation time in milliseconds (`u64`); a private key entry carries a
//! `u32`-sized `EncryptedPrivateKeyInfo` (see [`protector`]) and a `u32` count of certificates,
//! a trusted entry one certificate; each certificate is (from version 2) its type as `writeUTF`,
//! then `u32`-sized DER. Last comes the integrity digest: `SHA-1(password as UTF-16BE ||
//! "Mighty Aphrodite" || every byte before it)`, checked when a password is given (as Java
//! does: without one the store is read unchecked).
//!
//! JCEKS secret key entries are Java-serialized objects with no length in front: they cannot be
//! skipped without a Java deserializer, so a store holding one is refused with its alias.

mod bytes;
mod der;
mod ec;
mod protector;
#[cfg(test)]
mod tests;

use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

use bytes::Reader;
pub(crate) use der::spki_algorithm_id;
pub(crate) use ec::with_public_key;

const JKS_MAGIC: u32 = 0xFEED_FEED;
const JCEKS_MAGIC: u32 = 0xCECE_CECE;
const INTEGRITY_SALT: &[u8] = b"Mighty Aphrodite";

/// Which of Java's two proprietary formats a store is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Jks,
    Jceks,
}

impl Format {
    /// `JKS` or `JCEKS`, as Java names the store type.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Format::Jks => "JKS",
            Format::Jceks => "JCEKS",
        }
    }

    /// The format a file's first four bytes announce, if any.
    pub(crate) fn sniff(bytes: &[u8]) -> Option<Format> {
        match bytes.get(..4)? {
            [0xfe, 0xed, 0xfe, 0xed] => Some(Format::Jks),
            [0xce, 0xce, 0xce, 0xce] => Some(Format::Jceks),
            _ => None,
        }
    }
}

/// Why a Java key store could not be read. Messages say what is wrong, not where: the caller
/// names the file and the attribute.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyStoreError {
    #[error("the file ends inside {what} (truncated or damaged)")]
    Truncated { what: &'static str },
    #[error("not a JKS or JCEKS store (unknown magic number)")]
    BadMagic,
    #[error("unsupported store version {0} (Java writes 1 or 2)")]
    UnsupportedVersion(u32),
    #[error("unknown entry type {tag} (damaged store?)")]
    UnknownEntry { tag: u32 },
    #[error(
        "the store holds a secret key entry `{alias}`, which ferromq cannot read; keep TLS keys \
         in a store of their own or remove it with `keytool -delete -alias {alias}`"
    )]
    SecretKeyEntry { alias: String },
    #[error("the store's integrity check failed: wrong password, or the file is damaged")]
    IntegrityCheckFailed,
    #[error("the private key cannot be recovered: wrong key password")]
    WrongKeyPassword,
    #[error("a JCEKS key password must be printable ASCII (as Java's PBE keys require)")]
    NonAsciiPassword,
    #[error("the private key is protected with an unsupported algorithm (OID {oid})")]
    UnsupportedProtection { oid: String },
    #[error("the protected private key is malformed: {reason}")]
    BadKeyEncoding { reason: &'static str },
}

/// One entry of a store, by alias (Java lower-cases aliases when it writes them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) alias: String,
    pub(crate) kind: EntryKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EntryKind {
    /// A private key (still protected: see [`recover_key`]) and its certificate chain, leaf
    /// first, DER.
    PrivateKey {
        protected: Vec<u8>,
        chain: Vec<Vec<u8>>,
    },
    /// A trusted certificate, DER.
    Trusted { certificate: Vec<u8> },
}

/// A parsed JKS or JCEKS store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JavaKeyStore {
    pub(crate) format: Format,
    pub(crate) entries: Vec<Entry>,
}

impl JavaKeyStore {
    /// Parse `bytes`; with a `password`, verify the store's integrity digest first.
    ///
    /// Errors: [`KeyStoreError::IntegrityCheckFailed`] for a wrong password; the others for a
    /// damaged or unsupported file. Never panics, whatever the bytes.
    pub(crate) fn parse(
        bytes: &[u8],
        password: Option<&str>,
    ) -> Result<JavaKeyStore, KeyStoreError> {
        let mut r = Reader::new(bytes);
        let format = match r.u32("the magic number")? {
            JKS_MAGIC => Format::Jks,
            JCEKS_MAGIC => Format::Jceks,
            _ => return Err(KeyStoreError::BadMagic),
        };
        let version = r.u32("the version")?;
        if version != 1 && version != 2 {
            return Err(KeyStoreError::UnsupportedVersion(version));
        }
        let count = r.u32("the entry count")?;
        let mut entries = Vec::new();
        for _ in 0..count {
            entries.push(entry(&mut r, format, version)?);
        }
        if let Some(password) = password {
            let content = bytes.get(..r.position()).unwrap_or_default();
            let stored = r.take(20, "the integrity digest")?;
            let computed = Sha1::new()
                .chain_update(protector::utf16_be(password))
                .chain_update(INTEGRITY_SALT)
                .chain_update(content)
                .finalize();
            if !bool::from(computed.as_slice().ct_eq(stored)) {
                return Err(KeyStoreError::IntegrityCheckFailed);
            }
        }
        Ok(JavaKeyStore { format, entries })
    }

    /// Aliases of the private key entries, in store order.
    pub(crate) fn key_aliases(&self) -> Vec<&str> {
        self.entries
            .iter()
            .filter(|e| matches!(e.kind, EntryKind::PrivateKey { .. }))
            .map(|e| e.alias.as_str())
            .collect()
    }

    /// Certificates a Java trust manager trusts in this store: every trusted certificate entry
    /// and the leaf certificate of every private key entry (`sun.security.validator.KeyStores`).
    pub(crate) fn trusted_certificates(&self) -> Vec<&[u8]> {
        self.entries
            .iter()
            .filter_map(|e| match &e.kind {
                EntryKind::Trusted { certificate } => Some(certificate.as_slice()),
                EntryKind::PrivateKey { chain, .. } => chain.first().map(Vec::as_slice),
            })
            .collect()
    }
}

/// Take the protection off a private key entry's key: the DER PKCS#8 `PrivateKeyInfo`.
///
/// Errors: [`KeyStoreError::WrongKeyPassword`], [`KeyStoreError::NonAsciiPassword`] (JCEKS),
/// [`KeyStoreError::UnsupportedProtection`], [`KeyStoreError::BadKeyEncoding`].
pub(crate) fn recover_key(protected: &[u8], password: &str) -> Result<Vec<u8>, KeyStoreError> {
    protector::recover(protected, password)
}

fn entry(r: &mut Reader<'_>, format: Format, version: u32) -> Result<Entry, KeyStoreError> {
    let tag = r.u32("an entry tag")?;
    let alias = r.utf("an alias")?;
    let _created_ms = r.u64("an entry's creation time")?;
    let kind = match tag {
        1 => {
            let protected = r.sized("a protected private key")?.to_vec();
            let count = r.u32("a certificate chain length")?;
            let mut chain = Vec::new();
            for _ in 0..count {
                chain.push(certificate(r, version)?);
            }
            EntryKind::PrivateKey { protected, chain }
        }
        2 => EntryKind::Trusted {
            certificate: certificate(r, version)?,
        },
        3 if format == Format::Jceks => return Err(KeyStoreError::SecretKeyEntry { alias }),
        tag => return Err(KeyStoreError::UnknownEntry { tag }),
    };
    Ok(Entry { alias, kind })
}

fn certificate(r: &mut Reader<'_>, version: u32) -> Result<Vec<u8>, KeyStoreError> {
    if version == 2 {
        let _type = r.utf("a certificate type")?;
    }
    Ok(r.sized("a certificate")?.to_vec())
}
