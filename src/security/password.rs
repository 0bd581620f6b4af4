//! Stored passwords: plaintext (ActiveMQ's way) or a hash with a recognisable prefix.
//!
//! A stored value starting with `$2a$`, `$2b$` or `$2y$` is a bcrypt hash; one starting with
//! `$argon2id$`, `$argon2i$` or `$argon2d$` is an Argon2 PHC string; one starting with
//! `SCRAM-SHA-256:` or `SCRAM-SHA-512:` is a SCRAM credential (see [`super::scram`]). Anything else
//! is plaintext and is compared in constant time. `ferromq passwd` prints hashes in any of these
//! forms (see [`hash`]).

use std::fmt;
use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand::RngCore;
use subtle::{Choice, ConstantTimeEq};

use super::scram::{ScramCredential, ScramKeys, ScramMechanism, DEFAULT_ITERATIONS};

/// A password as stored in the configuration or a users file, ready to check.
#[derive(Clone)]
pub enum StoredPassword {
    Plain(Arc<[u8]>),
    Bcrypt(Arc<str>),
    Argon2(Arc<str>),
    Scram(Arc<ScramCredential>),
}

impl fmt::Debug for StoredPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secret, not even a hash (it can be attacked offline).
        f.write_str(match self {
            StoredPassword::Plain(_) => "StoredPassword::Plain(***)",
            StoredPassword::Bcrypt(_) => "StoredPassword::Bcrypt(***)",
            StoredPassword::Argon2(_) => "StoredPassword::Argon2(***)",
            StoredPassword::Scram(_) => "StoredPassword::Scram(***)",
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
        if ScramCredential::looks_like(stored) {
            return ScramCredential::parse(stored)
                .map(|c| StoredPassword::Scram(Arc::new(c)))
                .map_err(|e| format!("starts like a SCRAM credential but {e}"));
        }
        Ok(StoredPassword::Plain(Arc::from(stored.as_bytes())))
    }

    /// The SCRAM credentials this password gives its user: both mechanisms for a plain-text
    /// password (derived once, with fresh random salts, when first used or by the background
    /// thread: [`ScramKeys`]), the one mechanism of a SCRAM credential, none for a bcrypt or
    /// Argon2 hash (SCRAM needs the password or its salted form, which a hash does not give).
    pub fn scram_keys(&self) -> ScramKeys {
        match self {
            StoredPassword::Plain(plain) => ScramKeys::from_plain_password(plain.clone()),
            StoredPassword::Scram(credential) => ScramKeys::from_credential(credential.clone()),
            StoredPassword::Bcrypt(_) | StoredPassword::Argon2(_) => ScramKeys::default(),
        }
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
            StoredPassword::Scram(credential) => credential.verify_password(given),
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
    /// A SCRAM credential (salted, `iterations` rounds of PBKDF2) for MQTT 5 enhanced
    /// authentication with this mechanism; password logins keep working with it too.
    Scram {
        mechanism: ScramMechanism,
        iterations: u32,
    },
}

impl HashAlgorithm {
    /// SCRAM with RFC 7677's iteration count.
    pub fn scram(mechanism: ScramMechanism) -> HashAlgorithm {
        HashAlgorithm::Scram {
            mechanism,
            iterations: DEFAULT_ITERATIONS,
        }
    }
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
        HashAlgorithm::Scram {
            mechanism,
            iterations,
        } => {
            if !(DEFAULT_ITERATIONS..=super::scram::MAX_ITERATIONS).contains(&iterations) {
                return Err(format!(
                    "the SCRAM iteration count must be within {DEFAULT_ITERATIONS}..={}",
                    super::scram::MAX_ITERATIONS
                ));
            }
            Ok(ScramCredential::generate(mechanism, password, iterations).encode())
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
    fn scram_credentials_are_stored_passwords() {
        let text = hash(b"pw", HashAlgorithm::scram(ScramMechanism::Sha512)).expect("hash");
        let stored = StoredPassword::parse(&text).expect("scram");
        assert!(stored.is_hashed());
        assert!(stored.verify(b"pw"));
        assert!(!stored.verify(b"pw2"));
        let keys = stored.scram_keys();
        assert!(keys.get(ScramMechanism::Sha512).is_some());
        assert!(keys.get(ScramMechanism::Sha256).is_none());
        assert!(StoredPassword::parse("SCRAM-SHA-256:4096:bad").is_err());
        let plain = StoredPassword::parse("pw").expect("plain").scram_keys();
        for m in ScramMechanism::ALL {
            assert!(plain.get(m).is_some_and(|c| c.verify_password(b"pw")));
        }
        let bcrypt = bcrypt::hash(b"pw", 4).expect("bcrypt");
        let none = StoredPassword::parse(&bcrypt).expect("bcrypt").scram_keys();
        assert!(none.get(ScramMechanism::Sha256).is_none());
        assert!(hash(
            b"pw",
            HashAlgorithm::Scram {
                mechanism: ScramMechanism::Sha256,
                iterations: 10
            }
        )
        .is_err());
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let stored = StoredPassword::parse("hunter2").expect("plain");
        assert!(!format!("{stored:?}").contains("hunter2"));
    }
}
