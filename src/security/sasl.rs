//! MQTT 5 enhanced authentication (4.12) against the configured users: which Authentication
//! Methods are served, the two server steps of a SCRAM exchange, and the same login throttle,
//! logging and groups as a password login.
//!
//! Who can use SCRAM: users of `simpleAuthenticationPlugin` and of JAAS
//! `PropertiesLoginModule` files whose password is stored in plain text (credentials derived at
//! load) or as a SCRAM credential of the requested mechanism. Users stored as bcrypt or Argon2
//! hashes, and users of modules ferromq does not implement (LDAP), cannot: SCRAM needs the
//! password or its salted form. For them, and for unknown users, the exchange runs to its end
//! with a stable fake salt and fails like a wrong password (CONNACK 0x86), so that a client
//! cannot find out which users exist or how they are stored; the broker's log says why.
//! Connections whose login is by certificate (or no authentication at all) are not offered
//! SCRAM: there the method is not supported (CONNACK 0x8C).

use std::net::SocketAddr;
use std::time::Instant;

use futures_util::FutureExt;

use super::scram::{ClientFirst, CredentialLookup, ScramError, ScramMechanism, ServerExchange};
use super::throttle::Admission;
use super::{AuthFailure, Principal, Security};

/// Where an enhanced-authentication attempt comes from (for the throttle and the log).
#[derive(Debug, Clone, Copy)]
pub struct LoginSource<'a> {
    pub client_id: &'a str,
    pub peer: SocketAddr,
    /// The connection arrived on a TLS connector (selects a dual JAAS setup's domain).
    pub tls: bool,
}

impl Security {
    /// The SCRAM mechanism an MQTT Authentication Method names, when this configuration serves
    /// it on such a connection; `None`: the method is not supported (CONNACK 0x8C).
    pub fn enhanced_auth_mechanism(&self, method: &str, tls: bool) -> Option<ScramMechanism> {
        ScramMechanism::from_name(method).filter(|_| self.authenticator.serves_scram(tls))
    }

    /// Wait for this address's turn under the login throttle, as a password login does.
    /// `Err`: too many failures queued from this address (refuse without checking).
    pub async fn admit_login(&self, source: &LoginSource<'_>) -> Result<(), AuthFailure> {
        match self.throttle.admit(source.peer.ip(), Instant::now()) {
            Admission::Now => Ok(()),
            Admission::After(delay) => {
                tokio::time::sleep(delay).await;
                Ok(())
            }
            Admission::Refused => {
                tracing::warn!(
                    client_id = %super::Bounded(source.client_id),
                    peer = %source.peer,
                    "login refused: too many failed logins from this address"
                );
                Err(AuthFailure::NotAuthorized)
            }
        }
    }

    /// For a re-authentication, which cannot wait in line: is this address refused outright
    /// by the login throttle? (A failed re-authentication closes the connection, so each guess
    /// costs a new CONNECT, which waits.)
    pub fn login_refused_now(&self, source: &LoginSource<'_>) -> bool {
        let refused = self.throttle.would_refuse(source.peer.ip(), Instant::now());
        if refused {
            tracing::warn!(
                client_id = %super::Bounded(source.client_id),
                peer = %source.peer,
                "re-authentication refused: too many failed logins from this address"
            );
        }
        refused
    }

    /// Answer a client-first message with server-first (RFC 5802), for `mechanism` (from
    /// [`Security::enhanced_auth_mechanism`]). A malformed message is a failed login.
    pub fn scram_first(
        &self,
        mechanism: ScramMechanism,
        client_first: &[u8],
        source: &LoginSource<'_>,
    ) -> Result<(ServerExchange, String), AuthFailure> {
        let parsed = match ClientFirst::parse(client_first) {
            Ok(parsed) => parsed,
            Err(e) => return Err(self.scram_failed(source, None, mechanism, &e.to_string())),
        };
        let lookup = self
            .authenticator
            .scram_credential(source.tls, &parsed.user, mechanism);
        Ok(ServerExchange::start(mechanism, parsed, lookup, |user| {
            self.fake_salt(mechanism, user)
        }))
    }

    /// Check client-final; on success, log the user in (groups as after a password login) and
    /// return server-final. Failures count in the login throttle.
    pub fn scram_final(
        &self,
        exchange: &ServerExchange,
        client_final: &[u8],
        source: &LoginSource<'_>,
    ) -> Result<(Principal, String), AuthFailure> {
        let mechanism = exchange.mechanism();
        let server_final = match exchange.finish(client_final) {
            Ok(server_final) => server_final,
            Err(e) => {
                let why = match (
                    e,
                    self.authenticator
                        .scram_credential(source.tls, exchange.user(), mechanism),
                ) {
                    (ScramError::InvalidProof, CredentialLookup::Unknown) => {
                        "unknown user".to_owned()
                    }
                    (ScramError::InvalidProof, CredentialLookup::NotForScram) => format!(
                        "user cannot use {mechanism} (password stored as a hash, or a SCRAM \
                         credential of the other mechanism)"
                    ),
                    (e, _) => e.to_string(),
                };
                return Err(self.scram_failed(source, Some(exchange.user()), mechanism, &why));
            }
        };
        // A SCRAM login checks no password hash, so the login modules never wait: the future
        // completes on its first poll (a module that would wait is refused, not blocked on).
        let login = self
            .authenticator
            .scram_login(source.tls, exchange.user(), exchange.credential())
            .now_or_never();
        match login {
            Some(Ok(principal)) => {
                tracing::debug!(
                    client_id = %super::Bounded(source.client_id),
                    user = %principal.user,
                    groups = ?principal.groups,
                    %mechanism,
                    "authenticated"
                );
                Ok((principal, server_final))
            }
            Some(Err(refusal)) => {
                let failure = refusal.failure;
                self.scram_failed(source, Some(exchange.user()), mechanism, refusal.reason);
                Err(failure)
            }
            None => Err(self.scram_failed(
                source,
                Some(exchange.user()),
                mechanism,
                "a login module would wait",
            )),
        }
    }

    /// Count and log a failed SCRAM login; the client is told 0x86 (bad credentials).
    fn scram_failed(
        &self,
        source: &LoginSource<'_>,
        user: Option<&str>,
        mechanism: ScramMechanism,
        reason: &str,
    ) -> AuthFailure {
        let ip = source.peer.ip();
        self.throttle.record_failure(ip, Instant::now());
        tracing::warn!(
            client_id = %super::Bounded(source.client_id),
            user = user.map(|u| tracing::field::display(super::Bounded(u))),
            peer = %source.peer,
            %mechanism,
            reason,
            failures = self.throttle.failures(ip, Instant::now()),
            "login refused"
        );
        AuthFailure::BadCredentials
    }

    /// A salt for users without a credential: stable for a user and mechanism within this
    /// snapshot (a real user's salt is too), unrelated to anything else.
    fn fake_salt(&self, mechanism: ScramMechanism, user: &str) -> Vec<u8> {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        hasher.update(self.scram_secret);
        hasher.update(mechanism.name().as_bytes());
        hasher.update([0]);
        hasher.update(user.as_bytes());
        hasher.finalize()[..16].to_vec()
    }
}
