//! Authentication plugins behind one dispatcher: none, simple, JAAS password, JAAS certificate
//! and JAAS dual (certificate domain on TLS connectors, password domain elsewhere).

use std::sync::Arc;

use super::jaas::JaasDomain;
use super::scram::{CredentialLookup, ScramCredential, ScramMechanism};
use super::simple::SimpleAuthenticator;
use super::{AuthFailure, AuthRequest, Principal};
use crate::config::Authentication;

/// What a login module may look at. Password domains see the user name and password; the
/// certificate domain sees only the client certificate's subject (ActiveMQ's certificate callback
/// handler offers nothing else). After a SCRAM exchange, `scram` is the credential the client's
/// proof was verified against, in place of a password.
#[derive(Debug, Clone, Copy)]
pub struct Credentials<'a> {
    pub username: Option<&'a str>,
    pub password: Option<&'a [u8]>,
    pub cert_subject: Option<&'a str>,
    pub scram: Option<&'a ScramCredential>,
}

/// A refused login: what the client is told, and why (for the broker's log only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub failure: AuthFailure,
    pub reason: &'static str,
    /// The JAAS configuration entry that refused, if any.
    pub domain: Option<String>,
}

impl Refusal {
    pub fn new(failure: AuthFailure, reason: &'static str) -> Refusal {
        Refusal {
            failure,
            reason,
            domain: None,
        }
    }

    pub fn bad(reason: &'static str) -> Refusal {
        Refusal::new(AuthFailure::BadCredentials, reason)
    }

    pub fn in_domain(mut self, domain: &str) -> Refusal {
        self.domain = Some(domain.to_owned());
        self
    }
}

#[derive(Debug)]
pub enum Authenticator {
    None,
    Simple(SimpleAuthenticator),
    Jaas(JaasDomain),
    Certificate(JaasDomain),
    Dual {
        password: JaasDomain,
        certificate: JaasDomain,
    },
}

impl Authenticator {
    pub fn new(config: &Authentication) -> Result<Authenticator, String> {
        Ok(match config {
            Authentication::None => Authenticator::None,
            Authentication::Simple(simple) => {
                Authenticator::Simple(SimpleAuthenticator::new(simple)?)
            }
            Authentication::Jaas(jaas) => Authenticator::Jaas(JaasDomain::new(jaas)?),
            Authentication::JaasCertificate(jaas) => {
                Authenticator::Certificate(JaasDomain::new(jaas)?)
            }
            Authentication::JaasDual {
                password,
                certificate,
            } => Authenticator::Dual {
                password: JaasDomain::new(password)?,
                certificate: JaasDomain::new(certificate)?,
            },
        })
    }

    pub fn is_none(&self) -> bool {
        matches!(self, Authenticator::None)
    }

    pub async fn login(&self, req: &AuthRequest<'_>) -> Result<Principal, Refusal> {
        let password_creds = Credentials {
            username: req.username,
            password: req.password,
            cert_subject: None,
            scram: None,
        };
        match self {
            Authenticator::None => Ok(Principal::anonymous()),
            Authenticator::Simple(simple) => simple.login(&password_creds).await,
            Authenticator::Jaas(domain) => domain.login(&password_creds).await,
            Authenticator::Certificate(domain) => certificate_login(domain, req).await,
            Authenticator::Dual {
                password,
                certificate,
            } => {
                if req.tls {
                    certificate_login(certificate, req).await
                } else {
                    password.login(&password_creds).await
                }
            }
        }
    }

    /// Where SCRAM users come from on this connection: the password login (simple, JAAS, or
    /// dual's password domain off TLS). `None`: SCRAM is not offered (no authentication, or a
    /// certificate login, where a user name means nothing).
    fn scram_source(&self, tls: bool) -> Option<ScramSource<'_>> {
        match self {
            Authenticator::Simple(simple) => Some(ScramSource::Simple(simple)),
            Authenticator::Jaas(domain) => Some(ScramSource::Jaas(domain)),
            Authenticator::Dual { password, .. } if !tls => Some(ScramSource::Jaas(password)),
            Authenticator::None | Authenticator::Certificate(_) | Authenticator::Dual { .. } => {
                None
            }
        }
    }

    /// Does this configuration serve SCRAM on a connection (TLS or not)?
    pub fn serves_scram(&self, tls: bool) -> bool {
        self.scram_source(tls).is_some()
    }

    /// The SCRAM credential of `user` (`Unknown` when SCRAM is not served).
    pub fn scram_credential(
        &self,
        tls: bool,
        user: &str,
        mechanism: ScramMechanism,
    ) -> CredentialLookup {
        match self.scram_source(tls) {
            Some(ScramSource::Simple(simple)) => simple.scram_credential(user, mechanism),
            Some(ScramSource::Jaas(domain)) => domain.scram_credential(user, mechanism),
            None => CredentialLookup::Unknown,
        }
    }

    /// The principal after a SCRAM proof of `user` checked against `credential`: the same
    /// login (JAAS control flags, groups) as a password login, with the proof as the password.
    pub async fn scram_login(
        &self,
        tls: bool,
        user: &str,
        credential: &ScramCredential,
    ) -> Result<Principal, Refusal> {
        match self.scram_source(tls) {
            Some(ScramSource::Simple(simple)) => simple.scram_login(user),
            Some(ScramSource::Jaas(domain)) => {
                domain
                    .login(&Credentials {
                        username: Some(user),
                        password: None,
                        cert_subject: None,
                        scram: Some(credential),
                    })
                    .await
            }
            None => Err(Refusal::new(
                AuthFailure::NotAuthorized,
                "SCRAM is not served here",
            )),
        }
    }

    /// The groups `user` would have after logging in, without checking a password; `None` when
    /// the plugin does not know the user.
    pub fn groups_of(&self, user: &str) -> Option<Vec<Arc<str>>> {
        match self {
            Authenticator::None => None,
            Authenticator::Simple(simple) => simple.groups_of(user),
            Authenticator::Jaas(domain) | Authenticator::Certificate(domain) => {
                domain.groups_of(user)
            }
            Authenticator::Dual {
                password,
                certificate,
            } => match (password.groups_of(user), certificate.groups_of(user)) {
                (Some(mut a), Some(b)) => {
                    a.extend(b.into_iter().filter(|g| !a.contains(g)).collect::<Vec<_>>());
                    Some(a)
                }
                (a, b) => a.or(b),
            },
        }
    }
}

enum ScramSource<'a> {
    Simple(&'a SimpleAuthenticator),
    Jaas(&'a JaasDomain),
}

/// `JaasCertificateAuthenticationBroker`: a connection without a verified client certificate is
/// refused before any module runs ("Unable to authenticate transport without SSL certificate").
async fn certificate_login(
    domain: &JaasDomain,
    req: &AuthRequest<'_>,
) -> Result<Principal, Refusal> {
    let Some(subject) = req.peer_cert_subject else {
        return Err(
            Refusal::new(AuthFailure::NotAuthorized, "no client certificate")
                .in_domain("certificate"),
        );
    };
    domain
        .login(&Credentials {
            username: None,
            password: None,
            cert_subject: Some(subject),
            scram: None,
        })
        .await
        .map_err(|mut r| {
            // A certificate that maps to nobody is a credentials problem, not a missing one.
            r.failure = AuthFailure::BadCredentials;
            r
        })
}
