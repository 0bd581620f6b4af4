//! Stored passwords: plaintext (ActiveMQ's way) or a hash with a recognisable prefix.
//!
//! A stored value starting with `$2a$`, `$2b$` or `$2y$` is a bcrypt hash; one starting with
//! `$argon2id$`, `$argon2i$` or `$argon2d$` is an Argon2 PHC string. Anything else is plaintext and
//! is compared in constant time. `ferromq passwd` prints hashes in either form (see [`hash`]).

use std::fmt;
use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand::RngCore;
use subtle::{Choice, ConstantTimeEq};

/// A password as stored in the configuration or a users file, ready to check.
#[derive(Clone)]
pub enum StoredPassword {
    Plain(Arc<[u8]>),
    Bcrypt(Arc<str>),
    Argon2(Arc<str>),
}

impl fmt::Debug for StoredPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secret, not even a hash (it can be attacked offline).
        f.write_str(match self {
            StoredPassword::Plain(_) => "StoredPassword::Plain(***)",
            StoredPassword::Bcrypt(_) => "StoredPassword::Bcrypt(***)",
            StoredPassword::Argon2(_) => "StoredPassword::Argon2(***)",
        })
    }
}

const BCRYPT_PREFIXES: [&str; 3] = ["$2a$", "$2b$", "$2y$"];
const ARGON2_PREFIXES: [&str; 3] = ["$argon2id$", "$argon2i$", "$argon2d$"];

impl StoredPassword {
    /// Recognise the stored form. A value that carries a hash prefix but does not parse as that
    /// hash is an error (it would otherwise never match, silently locking the user out).
    pub fn parse(stored: &str) -> Result<StoredPassword, String> {
        if BCRYPT_PREFIXES.iter().any(|p| stored.starts_with(p)) {
            if stored.parse::<bcrypt::HashParts>().is_err() {
                return Err("starts like a bcrypt hash ($2b$...) but is not a valid one".into());
            }
            return Ok(StoredPassword::Bcrypt(Arc::from(stored)));
        }
        if ARGON2_PREFIXES.iter().any(|p| stored.starts_with(p)) {
            let complete = PasswordHash::new(stored)
                .map_err(|e| e.to_string())
                .and_then(|h| {
                    argon2::Params::try_from(&h).map_err(|e| e.to_string())?;
                    match (h.salt, h.hash) {
                        (Some(_), Some(_)) => Ok(()),
                        _ => Err("salt or hash missing".to_owned()),
                    }
                });
            if let Err(e) = complete {
                return Err(format!(
                    "starts like an Argon2 hash ($argon2id$...) but is not a valid one: {e}"
                ));
            }
            return Ok(StoredPassword::Argon2(Arc::from(stored)));
        }
        Ok(StoredPassword::Plain(Arc::from(stored.as_bytes())))
    }

    /// Is checking this password expensive (a deliberately slow hash)?
    pub fn is_hashed(&self) -> bool {
        !matches!(self, StoredPassword::Plain(_))
    }

    /// Check `given` against the stored password. Slow for hashes (tens of milliseconds by
    /// design): call [`StoredPassword::verify_off_thread`] from async code.
    pub fn verify(&self, given: &[u8]) -> bool {
        match self {
            StoredPassword::Plain(stored) => constant_time_eq(stored, given),
            StoredPassword::Bcrypt(hash) => bcrypt::verify(given, hash).unwrap_or(false),
            StoredPassword::Argon2(hash) => match PasswordHash::new(hash) {
                Ok(parsed) => Argon2::default().verify_password(given, &parsed).is_ok(),
                Err(_) => false,
            },
        }
    }

    /// [`StoredPassword::verify`], with hashes checked on tokio's blocking pool so that a slow
    /// hash never stalls other connections on the same worker thread.
    pub async fn verify_off_thread(&self, given: &[u8]) -> bool {
        if !self.is_hashed() || tokio::runtime::Handle::try_current().is_err() {
            return self.verify(given);
        }
        let stored = self.clone();
        let given = given.to_vec();
        tokio::task::spawn_blocking(move || stored.verify(&given))
            .await
            .unwrap_or(false)
    }
}

/// Constant-time equality whose running time depends only on the stored value's length, never on
/// where the first difference is or on the length of the attempt.
fn constant_time_eq(stored: &[u8], given: &[u8]) -> bool {
    let mut equal: Choice = stored.len().ct_eq(&given.len());
    for (i, byte) in stored.iter().enumerate() {
        let other = given.get(i).copied().unwrap_or(!*byte);
        equal &= byte.ct_eq(&other);
    }
    equal.into()
}

/// Hash algorithms `ferromq passwd` can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashAlgorithm {
    /// Argon2id with the crate's defaults (19 MiB, 2 passes, 1 lane: OWASP's recommendation).
    Argon2id,
    /// bcrypt with cost 12.
    Bcrypt,
}

/// bcrypt cost of new hashes: 2^12 rounds, about a quarter of a second on a small server.
pub const BCRYPT_COST: u32 = bcrypt::DEFAULT_COST;

/// Hash a password for use in `authenticationUser password="..."` or users.properties.
pub fn hash(password: &[u8], algorithm: HashAlgorithm) -> Result<String, String> {
    match algorithm {
        HashAlgorithm::Bcrypt => bcrypt::non_truncating_hash(password, BCRYPT_COST).map_err(|e| {
            format!("bcrypt cannot hash this password ({e}); bcrypt takes at most 72 bytes")
        }),
        HashAlgorithm::Argon2id => {
            let mut salt_bytes = [0u8; 16];
            rand::rng().fill_bytes(&mut salt_bytes);
            let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| e.to_string())?;
            Argon2::default()
                .hash_password(password, &salt)
                .map(|h| h.to_string())
                .map_err(|e| format!("argon2 cannot hash this password: {e}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_compares_whole_values() {
        let stored = StoredPassword::parse("secret").expect("plain");
        assert!(!stored.is_hashed());
        assert!(stored.verify(b"secret"));
        assert!(!stored.verify(b"secre"));
        assert!(!stored.verify(b"secret!"));
        assert!(!stored.verify(b""));
        assert!(StoredPassword::parse("").expect("plain").verify(b""));
    }

    #[test]
    fn constant_time_eq_handles_all_lengths() {
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"a", b""));
        assert!(!constant_time_eq(b"", b"a"));
        // A byte equal to the complement filler must not make a shorter attempt match.
        assert!(!constant_time_eq(&[0xff, 0x00], &[0xff]));
    }

    #[test]
    fn malformed_hashes_are_errors_not_plaintext() {
        assert!(StoredPassword::parse("$2b$nonsense").is_err());
        assert!(StoredPassword::parse("$argon2id$nonsense").is_err());
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let stored = StoredPassword::parse("hunter2").expect("plain");
        assert!(!format!("{stored:?}").contains("hunter2"));
    }
}
