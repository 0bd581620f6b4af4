//! How Java protects private key entries, and how to take the protection off.
//!
//! - JKS: Sun's proprietary `sun.security.provider.KeyProtector` (OID 1.3.6.1.4.1.42.2.17.1.1).
//!   The protected bytes are `salt (20) || key XOR keystream || check (20)`; the keystream is
//!   `SHA-1(password || previous)` chained from the salt, the check is `SHA-1(password || key)`.
//!   The password is its UTF-16 code units, big-endian.
//! - JCEKS: `PBEWithMD5AndTripleDES` (OID 1.3.6.1.4.1.42.2.19.1), SunJCE's extension of PKCS#5
//!   PBES1 to three-key DES-EDE: each half of the 8-byte salt (the first half reversed when both
//!   are equal) is hashed `iterations` times as `MD5(previous || password)`, giving 32 bytes:
//!   the 24-byte key, then the 8-byte CBC IV; PKCS#5 padding. The password is printable ASCII.
//!
//! Both yield a DER PKCS#8 `PrivateKeyInfo`.

use cbc::cipher::{block_padding::Pkcs7, BlockDecryptMut, KeyIvInit};
use des::TdesEde3;
use md5::Md5;
use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

use super::der;
use super::KeyStoreError;

/// 1.3.6.1.4.1.42.2.17.1.1, content bytes.
const SUN_JKS_KEY_PROTECTOR: &[u8] = &[0x2b, 0x06, 0x01, 0x04, 0x01, 0x2a, 0x02, 0x11, 0x01, 0x01];
/// 1.3.6.1.4.1.42.2.19.1, content bytes.
const PBE_WITH_MD5_AND_TRIPLE_DES: &[u8] = &[0x2b, 0x06, 0x01, 0x04, 0x01, 0x2a, 0x02, 0x13, 0x01];
/// SunJCE refuses more iterations than this (`MAX_ITERATION_COUNT`); so do we, since the count
/// comes from the file.
pub(super) const MAX_ITERATIONS: u64 = 5_000_000;

const SHA1_LEN: usize = 20;

/// A password as Java's `char[]` in big-endian bytes: what both the store's integrity digest and
/// the JKS key protector hash.
pub(super) fn utf16_be(password: &str) -> Vec<u8> {
    password.encode_utf16().flat_map(u16::to_be_bytes).collect()
}

/// The PKCS#8 `PrivateKeyInfo` inside `protected` (an `EncryptedPrivateKeyInfo`).
pub(super) fn recover(protected: &[u8], password: &str) -> Result<Vec<u8>, KeyStoreError> {
    let info = der::encrypted_private_key_info(protected)?;
    let plain = if info.algorithm == SUN_JKS_KEY_PROTECTOR {
        sun_jks(info.data, password)?
    } else if info.algorithm == PBE_WITH_MD5_AND_TRIPLE_DES {
        let (salt, iterations) = der::pbe_parameters(info.parameters)?;
        pbe_md5_triple_des(info.data, salt, iterations, password)?
    } else {
        return Err(KeyStoreError::UnsupportedProtection {
            oid: der::oid_text(info.algorithm),
        });
    };
    if !der::is_one_sequence(&plain) {
        // The 3DES padding check lets about one wrong password in 256 through; the decrypted
        // bytes then are not a DER PrivateKeyInfo.
        return Err(KeyStoreError::WrongKeyPassword);
    }
    Ok(plain)
}

fn sun_jks(data: &[u8], password: &str) -> Result<Vec<u8>, KeyStoreError> {
    let too_short = KeyStoreError::BadKeyEncoding {
        reason: "the protected key is shorter than its salt and check digest",
    };
    let (salt, rest) = data.split_at_checked(SHA1_LEN).ok_or(too_short)?;
    let body_len = rest
        .len()
        .checked_sub(SHA1_LEN)
        .ok_or(KeyStoreError::BadKeyEncoding {
            reason: "the protected key is shorter than its salt and check digest",
        })?;
    let (body, check) = rest.split_at(body_len);
    let password = utf16_be(password);

    let mut plain = Vec::with_capacity(body.len());
    let mut digest: [u8; SHA1_LEN] = [0; SHA1_LEN];
    digest.copy_from_slice(salt);
    for chunk in body.chunks(SHA1_LEN) {
        digest = Sha1::new()
            .chain_update(&password)
            .chain_update(digest)
            .finalize()
            .into();
        plain.extend(chunk.iter().zip(digest.iter()).map(|(c, k)| c ^ k));
    }
    let expected = Sha1::new()
        .chain_update(&password)
        .chain_update(&plain)
        .finalize();
    if bool::from(expected.as_slice().ct_eq(check)) {
        Ok(plain)
    } else {
        Err(KeyStoreError::WrongKeyPassword)
    }
}

/// SunJCE's key and IV derivation for `PBEWithMD5AndTripleDES` (`PBES1Core.deriveCipherKey`);
/// `iterations` >= 1 (0 is refused before, as SunJCE does).
pub(super) fn derive_triple_des(salt: &[u8], iterations: u64, password: &[u8]) -> [u8; 32] {
    let mut salt = <[u8; 8]>::try_from(salt).unwrap_or_default();
    if salt[..4] == salt[4..] {
        salt[..4].reverse();
    }
    let mut out = [0u8; 32];
    for (half, target) in salt.chunks(4).zip(out.chunks_mut(16)) {
        // The first round hashes the salt half, every further one the previous digest (no
        // allocation per round: JCEKS stores from Java 17 use 200 000 rounds).
        let mut hashed = Md5::new()
            .chain_update(half)
            .chain_update(password)
            .finalize();
        for _ in 1..iterations {
            hashed = Md5::new()
                .chain_update(hashed)
                .chain_update(password)
                .finalize();
        }
        target.copy_from_slice(&hashed);
    }
    out
}

/// The password bytes SunJCE's `PBEKey` makes: printable ASCII only.
pub(super) fn pbe_password(password: &str) -> Result<Vec<u8>, KeyStoreError> {
    if password.chars().all(|c| matches!(c, ' '..='~')) {
        Ok(password.bytes().collect())
    } else {
        Err(KeyStoreError::NonAsciiPassword)
    }
}

fn pbe_md5_triple_des(
    data: &[u8],
    salt: &[u8],
    iterations: u64,
    password: &str,
) -> Result<Vec<u8>, KeyStoreError> {
    if salt.len() != 8 {
        return Err(KeyStoreError::BadKeyEncoding {
            reason: "PBEWithMD5AndTripleDES needs an 8-byte salt",
        });
    }
    if iterations == 0 || iterations > MAX_ITERATIONS {
        return Err(KeyStoreError::BadKeyEncoding {
            reason: "PBE iteration count out of range (1..=5000000)",
        });
    }
    if data.is_empty() || !data.len().is_multiple_of(8) {
        return Err(KeyStoreError::BadKeyEncoding {
            reason: "the encrypted key is not a whole number of DES blocks",
        });
    }
    let derived = derive_triple_des(salt, iterations, &pbe_password(password)?);
    let (key, iv) = derived.split_at(24);
    let decryptor = cbc::Decryptor::<TdesEde3>::new_from_slices(key, iv).map_err(|_| {
        KeyStoreError::BadKeyEncoding {
            reason: "bad triple DES key or IV length",
        }
    })?;
    decryptor
        .decrypt_padded_vec_mut::<Pkcs7>(data)
        .map_err(|_| KeyStoreError::WrongKeyPassword)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf16_big_endian() {
        assert_eq!(utf16_be("aé"), vec![0, b'a', 0, 0xe9]);
    }

    #[test]
    fn equal_salt_halves_are_made_different() {
        let same = derive_triple_des(&[1, 2, 3, 4, 1, 2, 3, 4], 1, b"pw");
        assert_ne!(same[..16], same[16..]);
    }

    #[test]
    fn pbe_passwords_are_printable_ascii() {
        assert!(pbe_password("changeit").is_ok());
        assert!(matches!(
            pbe_password("pässword"),
            Err(KeyStoreError::NonAsciiPassword)
        ));
    }
}
