//! SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677): the server side of the exchange and
//! the salted credentials it checks against, for MQTT 5 enhanced authentication (4.12).
//!
//! The exchange is four messages, all carried as MQTT Authentication Data:
//!
//! ```text
//! client-first  n,,n=user,r=<client nonce>                 (CONNECT, or AUTH 0x19 to re-authenticate)
//! server-first  r=<client nonce><server nonce>,s=<salt>,i=<iterations>   (AUTH 0x18)
//! client-final  c=biws,r=<both nonces>,p=<ClientProof>     (AUTH 0x18)
//! server-final  v=<ServerSignature>                        (CONNACK 0x00, or AUTH 0x00)
//! ```
//!
//! The server keeps only `StoredKey = H(HMAC(SaltedPassword, "Client Key"))` and
//! `ServerKey = HMAC(SaltedPassword, "Server Key")` with the salt and iteration count
//! ([`ScramCredential`]); `SaltedPassword = PBKDF2-HMAC(password, salt, iterations)` is computed
//! when credentials are made (by `ferromq passwd --algorithm scram-sha-256`, or for a plain-text
//! password once, in the background after a load or at its first use: [`ScramKeys`]), never
//! again during a login, so a login costs a few HMACs.
//!
//! Not supported: channel binding (`p=` is refused; `y` is accepted, since we never offer the
//! `-PLUS` mechanisms), mandatory extensions (`m=`), an authorization identity other than the
//! user itself, and SASLprep normalisation (user names and passwords are compared as UTF-8
//! bytes; for ASCII they are the same).

use std::fmt;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256, Sha512};
use subtle::ConstantTimeEq;

pub use super::scram_keys::ScramKeys;

/// RFC 7677's minimum iteration count, and the count of credentials derived at load.
pub const DEFAULT_ITERATIONS: u32 = 4096;
/// Upper bound accepted from a credential string (a typo must not make a login take minutes).
pub const MAX_ITERATIONS: u32 = 10_000_000;
/// Salt length of new credentials, in bytes.
const SALT_BYTES: usize = 16;
/// Server nonce length, in random bytes (base64-encoded on the wire).
const NONCE_BYTES: usize = 18;

/// A SCRAM mechanism, named as in the IANA SASL registry and the MQTT Authentication Method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScramMechanism {
    Sha256,
    Sha512,
}

impl ScramMechanism {
    pub const ALL: [ScramMechanism; 2] = [ScramMechanism::Sha256, ScramMechanism::Sha512];

    /// `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub fn name(self) -> &'static str {
        match self {
            ScramMechanism::Sha256 => "SCRAM-SHA-256",
            ScramMechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    /// The mechanism an MQTT Authentication Method names (exact, case-sensitive: SASL names
    /// are upper case), `None` for any other method.
    pub fn from_name(name: &str) -> Option<ScramMechanism> {
        ScramMechanism::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Output length of the hash, in bytes (the length of every key and signature).
    fn key_len(self) -> usize {
        match self {
            ScramMechanism::Sha256 => 32,
            ScramMechanism::Sha512 => 64,
        }
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            ScramMechanism::Sha256 => Sha256::digest(data).to_vec(),
            ScramMechanism::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    /// HMAC(key, parts concatenated).
    fn hmac(self, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        fn run<M: Mac>(mut mac: M, parts: &[&[u8]]) -> Vec<u8> {
            for part in parts {
                mac.update(part);
            }
            mac.finalize().into_bytes().to_vec()
        }
        // HMAC takes keys of any length, so these never fail; an empty result would only make
        // every comparison fail.
        match self {
            ScramMechanism::Sha256 => <Hmac<Sha256> as Mac>::new_from_slice(key)
                .map(|m| run(m, parts))
                .unwrap_or_default(),
            ScramMechanism::Sha512 => <Hmac<Sha512> as Mac>::new_from_slice(key)
                .map(|m| run(m, parts))
                .unwrap_or_default(),
        }
    }

    /// Hi(password, salt, i) of RFC 5802: PBKDF2 with this mechanism's HMAC.
    fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        let mut out = vec![0u8; self.key_len()];
        match self {
            ScramMechanism::Sha256 => {
                pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out)
            }
            ScramMechanism::Sha512 => {
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut out)
            }
        }
        out
    }
}

impl fmt::Display for ScramMechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the server stores for one user and one mechanism (RFC 5802 section 3).
///
/// Text form, as `ferromq passwd` prints it and users files hold it (base64 is standard, with
/// padding):
///
/// ```text
/// SCRAM-SHA-256:<iterations>:<salt>:<StoredKey>:<ServerKey>
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct ScramCredential {
    mechanism: ScramMechanism,
    iterations: u32,
    salt: Vec<u8>,
    stored_key: Vec<u8>,
    server_key: Vec<u8>,
}

impl fmt::Debug for ScramCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The keys let anyone who has them impersonate the server: never printed.
        f.debug_struct("ScramCredential")
            .field("mechanism", &self.mechanism)
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl ScramCredential {
    /// The credential of `password` with this salt and iteration count (runs PBKDF2:
    /// milliseconds per thousand iterations).
    pub fn derive(
        mechanism: ScramMechanism,
        password: &[u8],
        salt: &[u8],
        iterations: u32,
    ) -> ScramCredential {
        let salted = mechanism.salted_password(password, salt, iterations);
        let client_key = mechanism.hmac(&salted, &[b"Client Key"]);
        ScramCredential {
            mechanism,
            iterations,
            salt: salt.to_vec(),
            stored_key: mechanism.hash(&client_key),
            server_key: mechanism.hmac(&salted, &[b"Server Key"]),
        }
    }

    /// [`ScramCredential::derive`] with a new random salt.
    pub fn generate(
        mechanism: ScramMechanism,
        password: &[u8],
        iterations: u32,
    ) -> ScramCredential {
        let mut salt = [0u8; SALT_BYTES];
        rand::rng().fill_bytes(&mut salt);
        ScramCredential::derive(mechanism, password, &salt, iterations)
    }

    /// A credential nobody can log in with, for users who cannot use SCRAM: the exchange runs
    /// to its end with `salt`, so that a client cannot tell such users from others.
    fn unusable(mechanism: ScramMechanism, salt: Vec<u8>) -> ScramCredential {
        let mut stored_key = vec![0u8; mechanism.key_len()];
        rand::rng().fill_bytes(&mut stored_key);
        let server_key = stored_key.clone();
        ScramCredential {
            mechanism,
            iterations: DEFAULT_ITERATIONS,
            salt,
            stored_key,
            server_key,
        }
    }

    pub fn mechanism(&self) -> ScramMechanism {
        self.mechanism
    }

    pub fn iterations(&self) -> u32 {
        self.iterations
    }

    /// Does the stored value look like a SCRAM credential (starts with a mechanism name and a
    /// colon)? Then [`ScramCredential::parse`] must accept it.
    pub fn looks_like(stored: &str) -> bool {
        ScramMechanism::ALL.iter().any(|m| {
            stored
                .strip_prefix(m.name())
                .is_some_and(|r| r.starts_with(':'))
        })
    }

    /// Parse the text form. Errors say which field is wrong, never its value.
    pub fn parse(stored: &str) -> Result<ScramCredential, String> {
        let mut fields = stored.split(':');
        let mechanism = fields
            .next()
            .and_then(ScramMechanism::from_name)
            .ok_or("does not start with SCRAM-SHA-256: or SCRAM-SHA-512:")?;
        let (Some(iterations), Some(salt), Some(stored_key), Some(server_key), None) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            return Err(format!(
                "is not {}:<iterations>:<salt>:<StoredKey>:<ServerKey>",
                mechanism.name()
            ));
        };
        let iterations: u32 = iterations
            .parse()
            .map_err(|_| "has an iteration count that is not a number")?;
        if !(DEFAULT_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
            return Err(format!(
                "has an iteration count outside {DEFAULT_ITERATIONS}..={MAX_ITERATIONS}"
            ));
        }
        let decode = |field: &str, what: &str| {
            BASE64
                .decode(field)
                .map_err(|_| format!("has a {what} that is not base64"))
        };
        let salt = decode(salt, "salt")?;
        if salt.is_empty() {
            return Err("has an empty salt".into());
        }
        let stored_key = decode(stored_key, "StoredKey")?;
        let server_key = decode(server_key, "ServerKey")?;
        if stored_key.len() != mechanism.key_len() || server_key.len() != mechanism.key_len() {
            return Err(format!(
                "has keys that are not {} bytes long ({})",
                mechanism.key_len(),
                mechanism.name()
            ));
        }
        Ok(ScramCredential {
            mechanism,
            iterations,
            salt,
            stored_key,
            server_key,
        })
    }

    /// The text form (see the type's documentation).
    pub fn encode(&self) -> String {
        format!(
            "{}:{}:{}:{}:{}",
            self.mechanism.name(),
            self.iterations,
            BASE64.encode(&self.salt),
            BASE64.encode(&self.stored_key),
            BASE64.encode(&self.server_key)
        )
    }

    /// Check a plain password against this credential (a password login of a user stored as a
    /// SCRAM credential). Runs PBKDF2: call it off the async threads.
    pub fn verify_password(&self, password: &[u8]) -> bool {
        let again = ScramCredential::derive(self.mechanism, password, &self.salt, self.iterations);
        again.stored_key.ct_eq(&self.stored_key).into()
    }
}

/// Why an exchange failed. The client learns only that it failed; the reason is for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    #[error("channel binding requested (not supported)")]
    ChannelBinding,
    #[error("authorization identity differs from the user name")]
    AuthzId,
    #[error("nonce does not match")]
    NonceMismatch,
    #[error("channel binding data does not match the GS2 header")]
    BindingMismatch,
    #[error("invalid proof (wrong password)")]
    InvalidProof,
}

/// The parts of a client-first message the server needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFirst {
    /// The user name, `=2C` and `=3D` decoded.
    pub user: String,
    nonce: String,
    gs2_header: String,
    bare: String,
}

impl ClientFirst {
    /// Parse `gs2-header client-first-message-bare` (RFC 5802 section 7).
    pub fn parse(message: &[u8]) -> Result<ClientFirst, ScramError> {
        let message =
            std::str::from_utf8(message).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let (flag, rest) = message
            .split_once(',')
            .ok_or(ScramError::Malformed("no GS2 header"))?;
        match flag {
            "n" | "y" => {}
            f if f.starts_with("p=") => return Err(ScramError::ChannelBinding),
            _ => return Err(ScramError::Malformed("bad channel binding flag")),
        }
        let (authzid, bare) = rest
            .split_once(',')
            .ok_or(ScramError::Malformed("no GS2 header"))?;
        let gs2_header = &message[..flag.len() + 1 + authzid.len() + 1];
        let mut attributes = bare.split(',');
        let user = match attributes.next() {
            Some(a) if a.starts_with("m=") => {
                return Err(ScramError::Malformed("mandatory extension not supported"))
            }
            Some(a) => a
                .strip_prefix("n=")
                .ok_or(ScramError::Malformed("no user name"))?,
            None => return Err(ScramError::Malformed("no user name")),
        };
        let user = decode_sasl_name(user)?;
        if user.is_empty() {
            return Err(ScramError::Malformed("empty user name"));
        }
        let nonce = attributes
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(ScramError::Malformed("no nonce"))?;
        if nonce.is_empty() || !nonce.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return Err(ScramError::Malformed("nonce is not printable ASCII"));
        }
        if !authzid.is_empty() {
            let authzid = authzid
                .strip_prefix("a=")
                .ok_or(ScramError::Malformed("bad authorization identity"))?;
            if decode_sasl_name(authzid)? != user {
                return Err(ScramError::AuthzId);
            }
        }
        Ok(ClientFirst {
            user,
            nonce: nonce.to_owned(),
            gs2_header: gs2_header.to_owned(),
            bare: bare.to_owned(),
        })
    }
}

/// `saslname`: `=2C` is `,`, `=3D` is `=`, any other `=` is an error.
fn decode_sasl_name(name: &str) -> Result<String, ScramError> {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(at) = rest.find('=') {
        out.push_str(&rest[..at]);
        let escape = rest.get(at..at + 3);
        match escape {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(ScramError::Malformed("bad escape in a name")),
        }
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A server that sent server-first and waits for client-final.
pub struct ServerExchange {
    credential: Arc<ScramCredential>,
    /// False for a user who cannot log in with SCRAM (unknown, or stored as a hash): the
    /// exchange runs with an unusable credential and fails at the proof.
    usable: bool,
    user: String,
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

impl fmt::Debug for ServerExchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerExchange")
            .field("mechanism", &self.credential.mechanism)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// The user's credential for the exchange, or why there is none.
#[derive(Debug, Clone)]
pub enum CredentialLookup {
    Found(Arc<ScramCredential>),
    /// Known user whose password cannot serve SCRAM (a bcrypt or Argon2 hash, or a SCRAM
    /// credential of the other mechanism).
    NotForScram,
    Unknown,
}

impl ServerExchange {
    /// Answer `client_first` with server-first. `lookup` finds the user's credential;
    /// `fake_salt` gives a stable salt for users without one (so that repeated attempts do not
    /// reveal that the user does not exist).
    pub fn start(
        mechanism: ScramMechanism,
        client_first: ClientFirst,
        lookup: CredentialLookup,
        fake_salt: impl FnOnce(&str) -> Vec<u8>,
    ) -> (ServerExchange, String) {
        let mut nonce_bytes = [0u8; NONCE_BYTES];
        rand::rng().fill_bytes(&mut nonce_bytes);
        let server_nonce = BASE64.encode(nonce_bytes);
        Self::start_with_nonce(mechanism, client_first, lookup, fake_salt, &server_nonce)
    }

    fn start_with_nonce(
        mechanism: ScramMechanism,
        client_first: ClientFirst,
        lookup: CredentialLookup,
        fake_salt: impl FnOnce(&str) -> Vec<u8>,
        server_nonce: &str,
    ) -> (ServerExchange, String) {
        let (credential, usable) = match lookup {
            CredentialLookup::Found(c) if c.mechanism == mechanism => (c, true),
            _ => (
                Arc::new(ScramCredential::unusable(
                    mechanism,
                    fake_salt(&client_first.user),
                )),
                false,
            ),
        };
        let nonce = format!("{}{server_nonce}", client_first.nonce);
        let server_first = format!(
            "r={nonce},s={},i={}",
            BASE64.encode(&credential.salt),
            credential.iterations
        );
        let exchange = ServerExchange {
            credential,
            usable,
            user: client_first.user,
            gs2_header: client_first.gs2_header,
            client_first_bare: client_first.bare,
            server_first: server_first.clone(),
            nonce,
        };
        (exchange, server_first)
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    pub fn mechanism(&self) -> ScramMechanism {
        self.credential.mechanism
    }

    /// The credential the proof was checked against (to find the login module it came from).
    pub fn credential(&self) -> &Arc<ScramCredential> {
        &self.credential
    }

    /// Check client-final; on success return server-final (`v=<ServerSignature>`).
    pub fn finish(&self, client_final: &[u8]) -> Result<String, ScramError> {
        let message =
            std::str::from_utf8(client_final).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let (without_proof, proof) = message
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("no proof"))?;
        let mut attributes = without_proof.split(',');
        let binding = attributes
            .next()
            .and_then(|a| a.strip_prefix("c="))
            .ok_or(ScramError::Malformed("no channel binding"))?;
        let nonce = attributes
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(ScramError::Malformed("no nonce"))?;
        let binding = BASE64
            .decode(binding)
            .map_err(|_| ScramError::Malformed("channel binding is not base64"))?;
        let proof = BASE64
            .decode(proof)
            .map_err(|_| ScramError::Malformed("proof is not base64"))?;
        if !bool::from(nonce.as_bytes().ct_eq(self.nonce.as_bytes())) {
            return Err(ScramError::NonceMismatch);
        }
        if binding != self.gs2_header.as_bytes() {
            return Err(ScramError::BindingMismatch);
        }
        let mechanism = self.credential.mechanism;
        let auth_message = format!(
            "{},{},{without_proof}",
            self.client_first_bare, self.server_first
        );
        let client_signature =
            mechanism.hmac(&self.credential.stored_key, &[auth_message.as_bytes()]);
        if proof.len() != client_signature.len() {
            return Err(ScramError::InvalidProof);
        }
        let client_key: Vec<u8> = proof
            .iter()
            .zip(&client_signature)
            .map(|(p, s)| p ^ s)
            .collect();
        let matches: bool = mechanism
            .hash(&client_key)
            .ct_eq(&self.credential.stored_key)
            .into();
        if !(matches && self.usable) {
            return Err(ScramError::InvalidProof);
        }
        let server_signature =
            mechanism.hmac(&self.credential.server_key, &[auth_message.as_bytes()]);
        Ok(format!("v={}", BASE64.encode(server_signature)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677 section 3: user `user`, password `pencil`.
    const RFC7677_CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
    const RFC7677_SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    const RFC7677_SALT: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";
    const RFC7677_SERVER_FIRST: &str = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
         s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    const RFC7677_CLIENT_FINAL: &str =
        "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
         p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    const RFC7677_SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

    fn rfc7677_credential() -> Arc<ScramCredential> {
        let salt = BASE64.decode(RFC7677_SALT).expect("salt");
        Arc::new(ScramCredential::derive(
            ScramMechanism::Sha256,
            b"pencil",
            &salt,
            4096,
        ))
    }

    fn rfc7677_exchange(credential: Arc<ScramCredential>) -> (ServerExchange, String) {
        let first = ClientFirst::parse(RFC7677_CLIENT_FIRST.as_bytes()).expect("client-first");
        assert_eq!(first.user, "user");
        ServerExchange::start_with_nonce(
            ScramMechanism::Sha256,
            first,
            CredentialLookup::Found(credential),
            |_| Vec::new(),
            RFC7677_SERVER_NONCE,
        )
    }

    #[test]
    fn rfc7677_test_vector() {
        let (exchange, server_first) = rfc7677_exchange(rfc7677_credential());
        assert_eq!(server_first, RFC7677_SERVER_FIRST);
        let server_final = exchange
            .finish(RFC7677_CLIENT_FINAL.as_bytes())
            .expect("the RFC's proof is valid");
        assert_eq!(server_final, RFC7677_SERVER_FINAL);
    }

    #[test]
    fn wrong_password_fails_the_rfc_proof() {
        let salt = BASE64.decode(RFC7677_SALT).expect("salt");
        let other = Arc::new(ScramCredential::derive(
            ScramMechanism::Sha256,
            b"pencil2",
            &salt,
            4096,
        ));
        let (exchange, _) = rfc7677_exchange(other);
        assert_eq!(
            exchange.finish(RFC7677_CLIENT_FINAL.as_bytes()),
            Err(ScramError::InvalidProof)
        );
    }

    #[test]
    fn tampered_nonce_and_binding_fail() {
        let (exchange, _) = rfc7677_exchange(rfc7677_credential());
        let other_nonce = RFC7677_CLIENT_FINAL.replace("k0,", "k1,");
        assert_eq!(
            exchange.finish(other_nonce.as_bytes()),
            Err(ScramError::NonceMismatch)
        );
        let other_binding = RFC7677_CLIENT_FINAL.replace("c=biws", "c=eSws");
        assert_eq!(
            exchange.finish(other_binding.as_bytes()),
            Err(ScramError::BindingMismatch)
        );
        assert!(matches!(
            exchange.finish(b"c=biws"),
            Err(ScramError::Malformed(_))
        ));
    }

    #[test]
    fn users_without_a_credential_fail_with_a_stable_fake_salt() {
        let first = || ClientFirst::parse(RFC7677_CLIENT_FIRST.as_bytes()).expect("parse");
        let salt_of = |_: &str| b"stable salt".to_vec();
        let (exchange, server_first) = ServerExchange::start(
            ScramMechanism::Sha256,
            first(),
            CredentialLookup::Unknown,
            salt_of,
        );
        let (_, again) = ServerExchange::start(
            ScramMechanism::Sha256,
            first(),
            CredentialLookup::NotForScram,
            salt_of,
        );
        let salt = |s: &str| s.split(',').nth(1).map(str::to_owned);
        assert_eq!(salt(&server_first), salt(&again));
        assert!(server_first.ends_with(",i=4096"));
        let nonce = server_first
            .split(',')
            .next()
            .and_then(|r| r.strip_prefix("r="))
            .expect("nonce");
        let client_final = format!("c=biws,r={nonce},p={}", BASE64.encode([0u8; 32]));
        assert_eq!(
            exchange.finish(client_final.as_bytes()),
            Err(ScramError::InvalidProof)
        );
    }

    #[test]
    fn client_first_parsing() {
        let parsed = ClientFirst::parse(b"y,a=us=2Cer,n=us=2Cer,r=abc,x=ext").expect("ok");
        assert_eq!(parsed.user, "us,er");
        assert_eq!(parsed.gs2_header, "y,a=us=2Cer,");
        assert_eq!(parsed.bare, "n=us=2Cer,r=abc,x=ext");
        assert_eq!(
            ClientFirst::parse(b"p=tls-unique,,n=u,r=abc"),
            Err(ScramError::ChannelBinding)
        );
        assert_eq!(
            ClientFirst::parse(b"n,a=other,n=u,r=abc"),
            Err(ScramError::AuthzId)
        );
        for bad in [
            &b""[..],
            b"n",
            b"n,,",
            b"n,,m=x,n=u,r=a",
            b"n,,n=,r=a",
            b"n,,n=u",
            b"n,,n=u,r=",
            b"n,,n=u=,r=a",
            b"x,,n=u,r=a",
            b"n,,n=u,r=a b",
            &[0xff, 0xfe],
        ] {
            assert!(ClientFirst::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn credential_text_form_round_trips_and_checks_passwords() {
        for mechanism in ScramMechanism::ALL {
            let credential = ScramCredential::generate(mechanism, b"s3cret", DEFAULT_ITERATIONS);
            let text = credential.encode();
            assert!(
                text.starts_with(&format!("{}:4096:", mechanism.name())),
                "{text}"
            );
            assert!(ScramCredential::looks_like(&text));
            let parsed = ScramCredential::parse(&text).expect("parse");
            assert_eq!(parsed, credential);
            assert!(parsed.verify_password(b"s3cret"));
            assert!(!parsed.verify_password(b"s3cret "));
            assert!(!format!("{parsed:?}").contains(&BASE64.encode(&credential.stored_key)));
        }
    }

    #[test]
    fn malformed_credentials_are_errors() {
        let good = ScramCredential::generate(ScramMechanism::Sha256, b"x", 4096).encode();
        let fields: Vec<&str> = good.split(':').collect();
        for bad in [
            "SCRAM-SHA-256:".to_owned(),
            format!(
                "SCRAM-SHA-256:100:{}:{}:{}",
                fields[2], fields[3], fields[4]
            ),
            format!("SCRAM-SHA-256:x:{}:{}:{}", fields[2], fields[3], fields[4]),
            format!("SCRAM-SHA-256:4096:!!:{}:{}", fields[3], fields[4]),
            format!(
                "SCRAM-SHA-512:4096:{}:{}:{}",
                fields[2], fields[3], fields[4]
            ),
            format!("{good}:extra"),
        ] {
            assert!(ScramCredential::parse(&bad).is_err(), "{bad}");
        }
        assert!(!ScramCredential::looks_like("SCRAM-SHA-256"));
        assert!(!ScramCredential::looks_like("plain password"));
    }

    #[test]
    fn mechanism_names() {
        assert_eq!(
            ScramMechanism::from_name("SCRAM-SHA-512"),
            Some(ScramMechanism::Sha512)
        );
        assert_eq!(ScramMechanism::from_name("scram-sha-256"), None);
        assert_eq!(ScramMechanism::from_name("SCRAM-SHA-1"), None);
    }
}
