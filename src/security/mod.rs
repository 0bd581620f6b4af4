//! Authentication (simple, JAAS properties/guest/certificate) and casbin-backed destination
//! authorization with ActiveMQ's semantics.
//!
//! The broker sees only this API: build a [`Security`] from a [`Config`], call
//! [`Security::authenticate`] on CONNECT and [`Security::authorize`] (through a per-connection
//! [`AuthzCache`]) on SUBSCRIBE, PUBLISH and delivery. On reload, build the new snapshot with
//! [`Security::rebuild`] (keeps the failed-login table) and swap it in; caches notice the new
//! [`Security::generation`] by themselves.
//!
//! - [`authn`]: plugin dispatch; [`simple`], [`jaas`] (control flags), [`cert`] (DN matching),
//!   [`tables`] (users/groups files, `reload=true`), [`password`] (plaintext, bcrypt, argon2).
//! - [`sasl`]: MQTT 5 enhanced authentication with [`scram`] (SCRAM-SHA-256/512) against the
//!   same users.
//! - [`throttle`]: per-address slowdown of failed logins.
//! - [`authz`]: the casbin model/policy and the precompiled evaluator; [`destination`]: ActiveMQ
//!   wildcards and the MQTT name conversion; [`explain`]: `ferromq explain`.
//!
//! Principals without an authentication plugin: everyone connects as [`Principal::anonymous`]
//! (user `anonymous`, no groups). ActiveMQ would refuse every destination to such connections when
//! an authorization plugin is configured ("User is not authenticated"); ferromq instead lets the
//! entries decide, so only `*` entries (or entries naming user `anonymous`) grant them anything.

pub mod authn;
pub mod authz;
pub mod cache;
pub mod cert;
pub mod destination;
pub mod explain;
pub mod explain_destination;
pub mod jaas;
pub mod ldap;
pub mod password;
pub mod sasl;
pub mod scram;
pub mod scram_keys;
pub mod simple;
pub mod tables;
pub mod throttle;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::config::{Authentication, AuthorizationConfig, Config, DestinationKind};

use authn::Authenticator;
use authz::Authorizer;
pub use cache::AuthzCache;
use throttle::{Admission, LoginThrottle, ThrottlePolicy};

/// A name a peer chose (user name, client id) as it goes into a log line: at most
/// [`Bounded::MAX_CHARS`] characters, then how much was left out, so that a client sending
/// 60,000-character names to failed logins cannot make 60 KB log lines. Control characters
/// (line breaks, ANSI escapes) are written escaped (`\n`, `\u{1b}`), so that a name cannot
/// start a forged log line or drive the terminal that shows the log.
pub struct Bounded<'a>(pub &'a str);

/// `text` with its control characters escaped as Rust writes them.
fn write_escaping_controls(f: &mut std::fmt::Formatter<'_>, text: &str) -> std::fmt::Result {
    use std::fmt::Write;
    for c in text.chars() {
        if c.is_control() {
            write!(f, "{}", c.escape_default())?;
        } else {
            f.write_char(c)?;
        }
    }
    Ok(())
}

impl Bounded<'_> {
    pub const MAX_CHARS: usize = 128;
}

impl std::fmt::Display for Bounded<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.char_indices().nth(Self::MAX_CHARS) {
            None => write_escaping_controls(f, self.0),
            Some((cut, _)) => {
                write_escaping_controls(f, &self.0[..cut])?;
                write!(f, "... ({} more bytes)", self.0.len() - cut)
            }
        }
    }
}

impl std::fmt::Debug for Bounded<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.char_indices().nth(Self::MAX_CHARS) {
            None => write!(f, "{:?}", self.0),
            Some((cut, _)) => write!(
                f,
                "{:?}... ({} more bytes)",
                &self.0[..cut],
                self.0.len() - cut
            ),
        }
    }
}

/// Who a connection is, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user: Arc<str>,
    pub groups: Vec<Arc<str>>,
    pub anonymous: bool,
}

impl Principal {
    /// The principal of a client the broker does not authenticate. Its user name is one
    /// shared string, not an allocation per connection (idle memory).
    pub fn anonymous() -> Self {
        static ANONYMOUS: std::sync::LazyLock<Arc<str>> =
            std::sync::LazyLock::new(|| Arc::from("anonymous"));
        Principal {
            user: Arc::clone(&ANONYMOUS),
            groups: Vec::new(),
            anonymous: true,
        }
    }
}

/// What a CONNECT presents.
#[derive(Debug, Clone)]
pub struct AuthRequest<'a> {
    pub client_id: &'a str,
    pub username: Option<&'a str>,
    pub password: Option<&'a [u8]>,
    pub peer: SocketAddr,
    /// The connection arrived on a TLS connector.
    pub tls: bool,
    /// Subject DN of a verified client certificate (RFC 2253 form, as ActiveMQ prints it).
    pub peer_cert_subject: Option<&'a str>,
}

/// Why a CONNECT was refused. The broker maps both to CONNACK 5 (not authorized) for 3.1.1, as
/// ActiveMQ and mosquitto do; `BadCredentials` is 4/0x86 only where the protocol distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    #[error("bad user name or password")]
    BadCredentials,
    #[error("not authorized")]
    NotAuthorized,
    /// The authentication backend (LDAP) could not answer: retryable, not a wrong password.
    /// 3.1.1 CONNACK 3, MQTT 5 0x88 (section 3.2.2.2).
    #[error("authentication server unavailable")]
    ServerUnavailable,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Read,
    Write,
    Admin,
}

/// An immutable snapshot of the security configuration; rebuilt (and swapped) on reload.
pub struct Security {
    /// Unique per snapshot: caches filled under another generation are stale.
    generation: u64,
    /// Shared with the snapshots an LDAP authorization refresh derives from this one.
    authenticator: Arc<Authenticator>,
    /// `None`: no authorizationPlugin, everything is allowed.
    authorizer: Option<Authorizer>,
    /// Shared with the snapshots that replace this one.
    throttle: Arc<LoginThrottle>,
    /// Keys the fake SCRAM salts of users without a credential (see [`sasl`]).
    scram_secret: [u8; 32],
    /// `cachedLDAPAuthorizationMap`: where the entries come from, and the XML part of the map.
    ldap_authz: Option<(
        Arc<ldap::authz_map::LdapAuthzSource>,
        Arc<AuthorizationConfig>,
    )>,
}

static NEXT_GENERATION: AtomicU64 = AtomicU64::new(1);

fn next_generation() -> u64 {
    NEXT_GENERATION.fetch_add(1, Ordering::Relaxed)
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Security")
            .field("generation", &self.generation)
            .field("authenticator", &self.authenticator)
            .field("authorizer", &self.authorizer)
            .finish_non_exhaustive()
    }
}

/// No authentication, no authorization: everyone connects and may do everything.
impl Default for Security {
    fn default() -> Self {
        Security {
            generation: next_generation(),
            authenticator: Arc::new(Authenticator::None),
            authorizer: None,
            throttle: Arc::new(LoginThrottle::default()),
            scram_secret: rand::random(),
            ldap_authz: None,
        }
    }
}

impl Security {
    /// Build from `config.authentication` and `config.authorization`, reading the users, groups
    /// and DN files JAAS modules name. Errors name the file (and line) at fault.
    pub fn from_config(config: &Config) -> Result<Security, String> {
        Security::from_parts(&config.authentication, config.authorization.as_ref())
    }

    /// [`Security::from_config`] from the two parts of the model that matter.
    pub fn from_parts(
        authentication: &Authentication,
        authorization: Option<&AuthorizationConfig>,
    ) -> Result<Security, String> {
        Security::build(authentication, authorization, None)
    }

    /// `previous`: the snapshot being replaced, whose LDAP authorization entries are kept when
    /// the new configuration names the same map (a reload does not drop to "deny all").
    fn build(
        authentication: &Authentication,
        authorization: Option<&AuthorizationConfig>,
        previous: Option<&Security>,
    ) -> Result<Security, String> {
        let ldap_authz = match authorization.and_then(|a| a.ldap.as_ref()) {
            None => None,
            Some((map, span)) => {
                let kept = previous
                    .and_then(|p| p.ldap_authz.as_ref())
                    .map(|(source, _)| source)
                    .filter(|source| source.config() == &**map)
                    .cloned();
                let source = match kept {
                    Some(source) => source,
                    None => Arc::new(ldap::authz_map::LdapAuthzSource::new(map, span)?),
                };
                let base = authorization.cloned().unwrap_or_default();
                Some((source, Arc::new(base)))
            }
        };
        let authorizer = match (&ldap_authz, authorization) {
            (Some((source, base)), _) => Some(Authorizer::new(&source.authorization(base))?),
            (None, Some(a)) => Some(Authorizer::new(a)?),
            (None, None) => None,
        };
        Ok(Security {
            generation: next_generation(),
            authenticator: Arc::new(Authenticator::new(authentication)?),
            authorizer: authorizer.map(|a| match authentication {
                Authentication::Simple(_) => a.without_user_principals(),
                _ => a,
            }),
            throttle: Arc::new(LoginThrottle::default()),
            scram_secret: rand::random(),
            ldap_authz,
        })
    }

    /// The snapshot for a reloaded configuration. Failed-login counts carry over, so a reload
    /// does not give a password guesser a fresh start.
    pub fn rebuild(&self, config: &Config) -> Result<Security, String> {
        let mut next = Security::build(
            &config.authentication,
            config.authorization.as_ref(),
            Some(self),
        )?;
        next.throttle = self.throttle.clone();
        Ok(next)
    }

    /// The `cachedLDAPAuthorizationMap` of this snapshot, if it has one.
    pub fn ldap_authz_source(&self) -> Option<&Arc<ldap::authz_map::LdapAuthzSource>> {
        self.ldap_authz.as_ref().map(|(source, _)| source)
    }

    /// This snapshot with the LDAP map's last good entries (after a refresh): same
    /// authentication, login throttle and SCRAM secret; a new generation.
    pub fn with_ldap_authorization(&self) -> Result<Security, String> {
        let Some((source, base)) = &self.ldap_authz else {
            return Err("no cachedLDAPAuthorizationMap".to_owned());
        };
        Ok(Security {
            generation: next_generation(),
            authenticator: self.authenticator.clone(),
            authorizer: Some(user_principal_rule(
                &self.authenticator,
                Authorizer::new(&source.authorization(base))?,
            )),
            throttle: self.throttle.clone(),
            scram_secret: self.scram_secret,
            ldap_authz: self.ldap_authz.clone(),
        })
    }

    /// Replace the login throttle's tuning (and forget its failures).
    pub fn with_throttle_policy(mut self, policy: ThrottlePolicy) -> Security {
        self.throttle = Arc::new(LoginThrottle::new(policy));
        self
    }

    /// Identifies this snapshot; every build gets a new one.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// False when there is no authorizationPlugin (everything is allowed): the broker may skip
    /// authorization entirely.
    pub fn authorization_enabled(&self) -> bool {
        self.authorizer.is_some()
    }

    /// False when there is no authentication plugin: every client is
    /// [`Principal::anonymous`], whatever user name it presents.
    pub fn authentication_enabled(&self) -> bool {
        !self.authenticator.is_none()
    }

    pub fn login_throttle(&self) -> &LoginThrottle {
        &self.throttle
    }

    /// Authenticate a CONNECT. Failed attempts are logged (never with the password) and slowed
    /// down per client address (see [`throttle`]).
    pub async fn authenticate(&self, req: &AuthRequest<'_>) -> Result<Principal, AuthFailure> {
        if self.authenticator.is_none() {
            return Ok(Principal::anonymous());
        }
        let ip = req.peer.ip();
        match self.throttle.admit(ip, Instant::now()) {
            Admission::Now => {}
            Admission::After(delay) => tokio::time::sleep(delay).await,
            Admission::Refused => {
                tracing::warn!(
                    client_id = %Bounded(req.client_id),
                    user = req.username.map(|u| tracing::field::display(Bounded(u))),
                    peer = %req.peer,
                    "login refused: too many failed logins from this address"
                );
                return Err(AuthFailure::NotAuthorized);
            }
        }
        match self.authenticator.login(req).await {
            Ok(principal) => {
                tracing::debug!(
                    client_id = %Bounded(req.client_id),
                    user = %principal.user,
                    groups = ?principal.groups,
                    "authenticated"
                );
                Ok(principal)
            }
            Err(refusal) => {
                // An unreachable backend says nothing about the password: not a failed guess.
                if refusal.failure != AuthFailure::ServerUnavailable {
                    self.throttle.record_failure(ip, Instant::now());
                }
                tracing::warn!(
                    client_id = %Bounded(req.client_id),
                    user = req.username.map(|u| tracing::field::display(Bounded(u))),
                    peer = %req.peer,
                    reason = refusal.reason,
                    domain = refusal.domain.as_deref().unwrap_or("-"),
                    failures = self.throttle.failures(ip, Instant::now()),
                    "login refused"
                );
                Err(refusal.failure)
            }
        }
    }

    /// May `principal` do `action` on the MQTT topic name or filter (converted to an ActiveMQ
    /// destination name internally)? Uncached; use [`AuthzCache`] on hot paths.
    pub fn authorize(&self, principal: &Principal, action: Action, mqtt_topic: &str) -> bool {
        match &self.authorizer {
            None => true,
            Some(a) => a.decide_mqtt(principal, action, DestinationKind::Topic, mqtt_topic),
        }
    }

    /// [`Security::authorize`] for any destination kind, by ActiveMQ name (`USERS.>`,
    /// `queue` entries, temporary destinations).
    pub fn authorize_destination(
        &self,
        principal: &Principal,
        action: Action,
        kind: DestinationKind,
        activemq_name: &str,
    ) -> bool {
        match &self.authorizer {
            None => true,
            Some(a) => {
                let mqtt_name = destination::swap_chars(activemq_name);
                a.decide_mqtt(principal, action, kind, &mqtt_name)
            }
        }
    }

    /// The same decision made by casbin's enforcer itself: slow, for `explain` and for checking
    /// that the precompiled evaluator agrees with casbin.
    pub fn authorize_with_casbin(
        &self,
        principal: &Principal,
        action: Action,
        kind: DestinationKind,
        activemq_name: &str,
    ) -> Result<bool, String> {
        match &self.authorizer {
            None => Ok(true),
            Some(a) => a.decide_with_casbin(principal, action, kind, activemq_name),
        }
    }

    /// The groups `user` would get from the authentication plugin, without a password check;
    /// `None` when the plugin does not know the user. For `ferromq explain`.
    pub fn groups_of(&self, user: &str) -> Option<Vec<Arc<str>>> {
        self.authenticator.groups_of(user)
    }

    pub(crate) fn authorizer(&self) -> Option<&Authorizer> {
        self.authorizer.as_ref()
    }
}

/// `simpleAuthenticationPlugin` logins carry no user principal: entries naming users grant
/// nothing to them (the same rule [`Security::from_parts`] applies).
fn user_principal_rule(authenticator: &Authenticator, authorizer: Authorizer) -> Authorizer {
    match authenticator {
        Authenticator::Simple(_) => authorizer.without_user_principals(),
        _ => authorizer,
    }
}

#[cfg(test)]
mod bounded_tests {
    use super::Bounded;

    #[test]
    fn long_names_are_cut_in_logs_short_ones_kept() {
        assert_eq!(format!("{:?}", Bounded("alice")), "\"alice\"");
        let long = "é".repeat(60_000);
        let shown = format!("{:?}", Bounded(&long));
        assert!(shown.len() < 400, "{}", shown.len());
        assert!(shown.ends_with("(119744 more bytes)"), "{shown}");
        assert_eq!(format!("{}", Bounded("alice")), "alice");
        assert!(format!("{}", Bounded(&long)).ends_with("... (119744 more bytes)"));
    }

    #[test]
    fn line_breaks_and_terminal_escapes_cannot_forge_log_lines() {
        let forged = "x\n2026-11-30T12:00:00Z  WARN ferromq::config: FORGED\r\u{1b}[31m";
        let shown = format!("{}", Bounded(forged));
        assert!(!shown.chars().any(char::is_control), "{shown:?}");
        assert_eq!(
            shown,
            "x\\n2026-11-30T12:00:00Z  WARN ferromq::config: FORGED\\r\\u{1b}[31m"
        );
        assert_eq!(format!("{}", Bounded("émile/ü")), "émile/ü");
    }
}
