//! Round trips through a test-only writer (the inverse of each step, written from the format
//! description), damaged stores, and a property test that no byte string makes the reader panic.
//! Stores made by the real `keytool` are read in `tests/transport/jks.rs`.

use cbc::cipher::{block_padding::Pkcs7, BlockEncryptMut, KeyIvInit};
use des::TdesEde3;
use proptest::prelude::*;
use sha1::{Digest, Sha1};

use super::protector::{derive_triple_des, pbe_password, utf16_be};
use super::*;

/// A DER PKCS#8-shaped SEQUENCE around `body` (short form length: body under 128 bytes).
fn fake_pkcs8(body: &[u8]) -> Vec<u8> {
    let mut der = vec![0x30, u8::try_from(body.len()).expect("short body")];
    der.extend_from_slice(body);
    der
}

fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(u8::try_from(len).expect("len"));
    } else {
        let bytes = u32::try_from(len).expect("len").to_be_bytes();
        out.push(0x84);
        out.extend_from_slice(&bytes);
    }
    out.extend_from_slice(content);
    out
}

fn encrypted_info(oid: &[u8], params: &[u8], data: &[u8]) -> Vec<u8> {
    let mut alg = der(0x06, oid);
    alg.extend_from_slice(params);
    let mut info = der(0x30, &alg);
    info.extend(der(0x04, data));
    der(0x30, &info)
}

fn protect_jks(plain: &[u8], password: &str, salt: [u8; 20]) -> Vec<u8> {
    let pw = utf16_be(password);
    let mut data = salt.to_vec();
    let mut digest = salt;
    for chunk in plain.chunks(20) {
        digest = Sha1::new()
            .chain_update(&pw)
            .chain_update(digest)
            .finalize()
            .into();
        data.extend(chunk.iter().zip(digest.iter()).map(|(c, k)| c ^ k));
    }
    data.extend(Sha1::new().chain_update(&pw).chain_update(plain).finalize());
    let oid = [0x2b, 0x06, 0x01, 0x04, 0x01, 0x2a, 0x02, 0x11, 0x01, 0x01];
    encrypted_info(&oid, &[0x05, 0x00], &data)
}

fn protect_jceks(plain: &[u8], password: &str, salt: [u8; 8], iterations: u8) -> Vec<u8> {
    let derived = derive_triple_des(
        &salt,
        u64::from(iterations),
        &pbe_password(password).expect("ascii"),
    );
    let (key, iv) = derived.split_at(24);
    let data = cbc::Encryptor::<TdesEde3>::new_from_slices(key, iv)
        .expect("key")
        .encrypt_padded_vec_mut::<Pkcs7>(plain);
    let mut params = der(0x04, &salt);
    params.extend(der(0x02, &[iterations]));
    let oid = [0x2b, 0x06, 0x01, 0x04, 0x01, 0x2a, 0x02, 0x13, 0x01];
    encrypted_info(&oid, &der(0x30, &params), &data)
}

fn utf(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&u16::try_from(s.len()).expect("short").to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn sized(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&u32::try_from(bytes.len()).expect("len").to_be_bytes());
    out.extend_from_slice(bytes);
}

/// A version 2 store with `entries`, closed with the integrity digest of `password`.
fn write_store(format: Format, entries: &[Entry], password: &str) -> Vec<u8> {
    let magic = match format {
        Format::Jks => JKS_MAGIC,
        Format::Jceks => JCEKS_MAGIC,
    };
    let mut out = magic.to_be_bytes().to_vec();
    out.extend_from_slice(&2u32.to_be_bytes());
    out.extend_from_slice(&u32::try_from(entries.len()).expect("n").to_be_bytes());
    for e in entries {
        let tag: u32 = match e.kind {
            EntryKind::PrivateKey { .. } => 1,
            EntryKind::Trusted { .. } => 2,
        };
        out.extend_from_slice(&tag.to_be_bytes());
        utf(&mut out, &e.alias);
        out.extend_from_slice(&1_700_000_000_000u64.to_be_bytes());
        match &e.kind {
            EntryKind::PrivateKey { protected, chain } => {
                sized(&mut out, protected);
                out.extend_from_slice(&u32::try_from(chain.len()).expect("n").to_be_bytes());
                for cert in chain {
                    utf(&mut out, "X.509");
                    sized(&mut out, cert);
                }
            }
            EntryKind::Trusted { certificate } => {
                utf(&mut out, "X.509");
                sized(&mut out, certificate);
            }
        }
    }
    let digest = Sha1::new()
        .chain_update(utf16_be(password))
        .chain_update(INTEGRITY_SALT)
        .chain_update(&out)
        .finalize();
    out.extend(digest);
    out
}

fn key_entry(alias: &str, protected: Vec<u8>) -> Entry {
    Entry {
        alias: alias.into(),
        kind: EntryKind::PrivateKey {
            protected,
            chain: vec![b"leaf".to_vec(), b"ca".to_vec()],
        },
    }
}

#[test]
fn jks_round_trip_with_key_password_and_integrity() {
    let plain = fake_pkcs8(&[7u8; 50]);
    let entries = vec![
        key_entry("broker", protect_jks(&plain, "keypw", [3; 20])),
        Entry {
            alias: "ca".into(),
            kind: EntryKind::Trusted {
                certificate: b"ca-cert".to_vec(),
            },
        },
    ];
    let bytes = write_store(Format::Jks, &entries, "storepw");
    let store = JavaKeyStore::parse(&bytes, Some("storepw")).expect("parses");
    assert_eq!(store.format, Format::Jks);
    assert_eq!(store.entries, entries);
    assert_eq!(store.key_aliases(), vec!["broker"]);
    assert_eq!(
        store.trusted_certificates(),
        vec![&b"leaf"[..], &b"ca-cert"[..]]
    );

    let EntryKind::PrivateKey { protected, .. } = &store.entries[0].kind else {
        panic!("key entry first");
    };
    assert_eq!(recover_key(protected, "keypw").as_deref(), Ok(&plain[..]));
    assert_eq!(
        recover_key(protected, "storepw"),
        Err(KeyStoreError::WrongKeyPassword)
    );

    assert_eq!(
        JavaKeyStore::parse(&bytes, Some("wrong")),
        Err(KeyStoreError::IntegrityCheckFailed)
    );
    // Without a password the store is read unchecked, as Java does.
    assert!(JavaKeyStore::parse(&bytes, None).is_ok());
}

#[test]
fn jceks_round_trip_and_wrong_key_password() {
    let plain = fake_pkcs8(&[9u8; 61]);
    let entries = vec![key_entry(
        "a",
        protect_jceks(&plain, "pw", [1, 2, 3, 4, 5, 6, 7, 8], 20),
    )];
    let bytes = write_store(Format::Jceks, &entries, "pw");
    let store = JavaKeyStore::parse(&bytes, Some("pw")).expect("parses");
    assert_eq!(store.format, Format::Jceks);
    let EntryKind::PrivateKey { protected, .. } = &store.entries[0].kind else {
        panic!("key entry");
    };
    assert_eq!(recover_key(protected, "pw").as_deref(), Ok(&plain[..]));
    assert_eq!(
        recover_key(protected, "other"),
        Err(KeyStoreError::WrongKeyPassword)
    );
    assert_eq!(
        recover_key(protected, "ünï"),
        Err(KeyStoreError::NonAsciiPassword)
    );
}

#[test]
fn damaged_stores_are_named() {
    let bytes = write_store(
        Format::Jks,
        &[key_entry("k", protect_jks(&fake_pkcs8(b"x"), "p", [0; 20]))],
        "p",
    );
    let cut = &bytes[..bytes.len() - 25];
    assert!(matches!(
        JavaKeyStore::parse(cut, Some("p")),
        Err(KeyStoreError::Truncated { .. })
    ));
    let mut flipped = bytes.clone();
    flipped[40] ^= 1; // inside the protected key
    assert_eq!(
        JavaKeyStore::parse(&flipped, Some("p")),
        Err(KeyStoreError::IntegrityCheckFailed)
    );
    let mut version = bytes.clone();
    version[7] = 9;
    assert_eq!(
        JavaKeyStore::parse(&version, None),
        Err(KeyStoreError::UnsupportedVersion(9))
    );

    let mut secret = JCEKS_MAGIC.to_be_bytes().to_vec();
    secret.extend_from_slice(&[0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 3]);
    utf(&mut secret, "aes");
    secret.extend_from_slice(&[0; 8]);
    assert_eq!(
        JavaKeyStore::parse(&secret, None),
        Err(KeyStoreError::SecretKeyEntry {
            alias: "aes".into()
        })
    );
}

#[test]
fn unknown_protection_and_absurd_iteration_counts_are_refused() {
    let unknown = encrypted_info(&[0x2a, 0x03], &[], &[0; 48]);
    assert!(matches!(
        recover_key(&unknown, "pw"),
        Err(KeyStoreError::UnsupportedProtection { oid }) if oid == "1.2.3"
    ));
    let mut params = der(0x04, &[1; 8]);
    params.extend(der(0x02, &[0x7f, 0xff, 0xff, 0xff]));
    let oid = [0x2b, 0x06, 0x01, 0x04, 0x01, 0x2a, 0x02, 0x13, 0x01];
    let huge = encrypted_info(&oid, &der(0x30, &params), &[0; 16]);
    assert!(matches!(
        recover_key(&huge, "pw"),
        Err(KeyStoreError::BadKeyEncoding { .. })
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Arbitrary bytes after either magic: an error or a store, never a panic.
    #[test]
    fn never_panics_on_arbitrary_bytes(
        jceks in any::<bool>(),
        body in proptest::collection::vec(any::<u8>(), 0..400),
        password in proptest::option::of("[a-z]{0,8}"),
    ) {
        let mut bytes = if jceks { JCEKS_MAGIC } else { JKS_MAGIC }.to_be_bytes().to_vec();
        bytes.extend_from_slice(&body);
        if let Ok(store) = JavaKeyStore::parse(&bytes, password.as_deref()) {
            for e in &store.entries {
                if let EntryKind::PrivateKey { protected, .. } = &e.kind {
                    let _ = recover_key(protected, "pw");
                }
            }
        }
        let _ = recover_key(&body, "pw");
        let _ = with_public_key(body.clone(), &body);
    }

    /// A valid store with one byte changed or cut short: an error or a store, never a panic;
    /// with the password, any change to the content fails the integrity check.
    #[test]
    fn mutated_stores_never_panic(
        key in proptest::collection::vec(any::<u8>(), 1..100),
        at in any::<proptest::sample::Index>(),
        xor in 1u8..,
        cut in any::<bool>(),
        jceks in any::<bool>(),
    ) {
        let plain = fake_pkcs8(&key);
        let (format, protected) = if jceks {
            (Format::Jceks, protect_jceks(&plain, "pw", [5; 8], 3))
        } else {
            (Format::Jks, protect_jks(&plain, "pw", [5; 20]))
        };
        let bytes = write_store(format, &[key_entry("k", protected.clone())], "pw");
        let i = at.index(bytes.len());
        let mut damaged = bytes.clone();
        if cut {
            damaged.truncate(i);
        } else if let Some(b) = damaged.get_mut(i) {
            *b ^= xor;
        }
        let parsed = JavaKeyStore::parse(&damaged, Some("pw"));
        prop_assert!(parsed.is_err(), "a changed store must not pass the integrity check");
        let _ = JavaKeyStore::parse(&damaged, None);
        let mut damaged_key = protected;
        let at_key = i % damaged_key.len().max(1);
        if let Some(b) = damaged_key.get_mut(at_key) {
            *b ^= xor;
        }
        let _ = recover_key(&damaged_key, "pw");
    }
}
