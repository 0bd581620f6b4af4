//! Jasypt's `StandardPBEStringEncryptor`, byte for byte, for the `ENC(...)` values of
//! ActiveMQ's `credentials-enc.properties` and for `ferromq encrypt` / `ferromq decrypt`.
//!
//! Layouts (jasypt 1.9.3, `StandardPBEByteEncryptor`, default 1000 key obtention iterations,
//! string output base64 of the bytes below, the message as UTF-8):
//! - `PBEWithMD5AndDES` (PKCS #5 PBES1): `salt(8) || ciphertext`; `MD5` iterated 1000 times
//!   over `password || salt` gives the DES key (first 8 bytes) and CBC IV (last 8); PKCS #5
//!   padding. The JCE accepts printable ASCII passwords only.
//! - `PBEWITHHMACSHA512ANDAES_256` (PBES2) with `RandomIvGenerator`:
//!   `salt(16) || iv(16) || ciphertext`; the AES-256 key is PBKDF2-HMAC-SHA512 of the UTF-8
//!   password, 1000 iterations; CBC with PKCS #5 padding.
//!
//! Jasypt also normalizes password and message to Unicode NFC; values typed on a keyboard
//! already are, and no normalization is done here.

use aes::Aes256;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use cbc::cipher::{block_padding::Pkcs7, BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use des::Des;
use md5::{Digest, Md5};
use rand::RngCore;
use sha2::Sha512;

/// Jasypt's (and so ActiveMQ's) default number of key obtention iterations.
pub const ITERATIONS: u32 = 1000;

/// A jasypt PBE algorithm ferromq can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// `PBEWithMD5AndDES`: jasypt's and ActiveMQ's default.
    PbeWithMd5AndDes,
    /// `PBEWITHHMACSHA512ANDAES_256`, with jasypt's `RandomIvGenerator`.
    PbeWithHmacSha512AndAes256,
}

impl Algorithm {
    /// The algorithm of a JCE name, case-insensitively as the JCE matches it.
    pub fn from_name(name: &str) -> Option<Self> {
        match name.trim().to_ascii_uppercase().as_str() {
            "PBEWITHMD5ANDDES" => Some(Self::PbeWithMd5AndDes),
            "PBEWITHHMACSHA512ANDAES_256" => Some(Self::PbeWithHmacSha512AndAes256),
            _ => None,
        }
    }

    /// The JCE name, as jasypt's documentation writes it.
    pub fn name(self) -> &'static str {
        match self {
            Self::PbeWithMd5AndDes => "PBEWithMD5AndDES",
            Self::PbeWithHmacSha512AndAes256 => "PBEWITHHMACSHA512ANDAES_256",
        }
    }

    /// The names accepted by [`Algorithm::from_name`], for messages.
    pub const SUPPORTED: &'static str = "PBEWithMD5AndDES, PBEWITHHMACSHA512ANDAES_256";
}

/// Why a value could not be encrypted or decrypted. Never carries the clear value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JasyptError {
    #[error("the value is not base64")]
    NotBase64,
    #[error("the value is too short for {0}")]
    TooShort(&'static str),
    /// What jasypt reports as `EncryptionOperationNotPossibleException`: the padding does not
    /// check out, almost always a wrong password.
    #[error("decryption failed: wrong password, or the value was not encrypted with {0}")]
    WrongPasswordOrValue(&'static str),
    #[error("the decrypted value is not UTF-8: wrong password, or another algorithm")]
    NotUtf8,
    #[error("{0} accepts only printable ASCII passwords")]
    PasswordNotAscii(&'static str),
}

/// `ENC(inner)` -> `inner` (trimmed), as jasypt's `PropertyValueEncryptionUtils` reads it.
pub fn enc_inner(value: &str) -> Option<&str> {
    let value = value.trim();
    value
        .strip_prefix("ENC(")
        .and_then(|rest| rest.strip_suffix(')'))
        .map(str::trim)
}

/// `StandardPBEStringEncryptor.encrypt`: base64 of a fresh random salt (and IV), then the
/// ciphertext.
pub fn encrypt(algorithm: Algorithm, password: &str, message: &str) -> Result<String, JasyptError> {
    let mut rng = rand::rng();
    let bytes = match algorithm {
        Algorithm::PbeWithMd5AndDes => {
            let mut salt = [0u8; 8];
            rng.fill_bytes(&mut salt);
            let (key, iv) = pbes1_md5_key_iv(password, &salt)?;
            let encryptor = cbc::Encryptor::<Des>::new(&key.into(), &iv.into());
            let ciphertext = encryptor.encrypt_padded_vec_mut::<Pkcs7>(message.as_bytes());
            [salt.as_slice(), &ciphertext].concat()
        }
        Algorithm::PbeWithHmacSha512AndAes256 => {
            let mut salt = [0u8; 16];
            let mut iv = [0u8; 16];
            rng.fill_bytes(&mut salt);
            rng.fill_bytes(&mut iv);
            let key = pbkdf2_sha512_key(password, &salt);
            let encryptor = cbc::Encryptor::<Aes256>::new(&key.into(), &iv.into());
            let ciphertext = encryptor.encrypt_padded_vec_mut::<Pkcs7>(message.as_bytes());
            [salt.as_slice(), &iv, &ciphertext].concat()
        }
    };
    Ok(BASE64.encode(bytes))
}

/// `StandardPBEStringEncryptor.decrypt` of the base64 text (without `ENC(...)`).
pub fn decrypt(algorithm: Algorithm, password: &str, encoded: &str) -> Result<String, JasyptError> {
    let bytes = BASE64
        .decode(encoded.trim().as_bytes())
        .map_err(|_| JasyptError::NotBase64)?;
    let name = algorithm.name();
    let clear = match algorithm {
        Algorithm::PbeWithMd5AndDes => {
            let (salt, ciphertext) =
                split_blocks(&bytes, 8, 8).ok_or(JasyptError::TooShort(name))?;
            let (key, iv) = pbes1_md5_key_iv(password, salt)?;
            cbc::Decryptor::<Des>::new(&key.into(), &iv.into())
                .decrypt_padded_vec_mut::<Pkcs7>(ciphertext)
                .map_err(|_| JasyptError::WrongPasswordOrValue(name))?
        }
        Algorithm::PbeWithHmacSha512AndAes256 => {
            let (header, ciphertext) =
                split_blocks(&bytes, 32, 16).ok_or(JasyptError::TooShort(name))?;
            let (salt, iv) = header.split_at(16);
            let key = pbkdf2_sha512_key(password, salt);
            let mut iv_block = [0u8; 16];
            iv_block.copy_from_slice(iv);
            cbc::Decryptor::<Aes256>::new(&key.into(), &iv_block.into())
                .decrypt_padded_vec_mut::<Pkcs7>(ciphertext)
                .map_err(|_| JasyptError::WrongPasswordOrValue(name))?
        }
    };
    String::from_utf8(clear).map_err(|_| JasyptError::NotUtf8)
}

/// `header` bytes then a non-empty whole number of `block`-byte cipher blocks.
fn split_blocks(bytes: &[u8], header: usize, block: usize) -> Option<(&[u8], &[u8])> {
    let rest = bytes.len().checked_sub(header)?;
    if rest == 0 || rest % block != 0 {
        return None;
    }
    Some(bytes.split_at(header))
}

/// PKCS #5 PBKDF1 with MD5 as the JCE's `PBEWithMD5AndDES` runs it: the password's chars as
/// single bytes (printable ASCII only, as SunJCE's `PBEKey` demands).
fn pbes1_md5_key_iv(password: &str, salt: &[u8]) -> Result<([u8; 8], [u8; 8]), JasyptError> {
    if !password.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(JasyptError::PasswordNotAscii(
            Algorithm::PbeWithMd5AndDes.name(),
        ));
    }
    let mut digest: [u8; 16] = Md5::new()
        .chain_update(password.as_bytes())
        .chain_update(salt)
        .finalize()
        .into();
    for _ in 1..ITERATIONS {
        digest = Md5::digest(digest).into();
    }
    let mut key = [0u8; 8];
    let mut iv = [0u8; 8];
    key.copy_from_slice(&digest[..8]);
    iv.copy_from_slice(&digest[8..]);
    Ok((key, iv))
}

/// SunJCE's PBES2 key: PBKDF2-HMAC-SHA512 of the UTF-8 password, 256 bits.
fn pbkdf2_sha512_key(password: &str, salt: &[u8]) -> [u8; 32] {
    let mut key = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha512>(password.as_bytes(), salt, ITERATIONS, &mut key);
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decrypts_a_value_jasypt_produced() {
        // `activemq encrypt --password activemq --input mypassword` (ActiveMQ's documented
        // example, PBEWithMD5AndDES).
        assert_eq!(
            decrypt(
                Algorithm::PbeWithMd5AndDes,
                "activemq",
                "eeWjNyX6FY8Fjp3E+F6qTytV11bZItDp"
            )
            .as_deref(),
            Ok("mypassword")
        );
    }

    #[test]
    fn round_trips_both_algorithms_and_rejects_a_wrong_password() {
        for algorithm in [
            Algorithm::PbeWithMd5AndDes,
            Algorithm::PbeWithHmacSha512AndAes256,
        ] {
            let encrypted = encrypt(algorithm, "secret", "pässword").unwrap_or_default();
            assert_eq!(
                decrypt(algorithm, "secret", &encrypted).as_deref(),
                Ok("pässword")
            );
            assert!(decrypt(algorithm, "other", &encrypted).is_err());
        }
    }

    #[test]
    fn bad_values_are_errors() {
        let md5 = Algorithm::PbeWithMd5AndDes;
        assert_eq!(decrypt(md5, "p", "***"), Err(JasyptError::NotBase64));
        assert_eq!(
            decrypt(md5, "p", "AAAA"),
            Err(JasyptError::TooShort("PBEWithMD5AndDES"))
        );
        assert_eq!(enc_inner(" ENC( abc ) "), Some("abc"));
        assert_eq!(Algorithm::from_name("pbewithmd5anddes"), Some(md5));
    }
}
