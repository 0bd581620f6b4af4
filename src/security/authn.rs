//! Authentication plugins behind one dispatcher: none, simple, JAAS password, JAAS certificate
//! and JAAS dual (certificate domain on TLS connectors, password domain elsewhere).

use std::sync::Arc;

use super::jaas::JaasDomain;
use super::simple::SimpleAuthenticator;
use super::{AuthFailure, AuthRequest, Principal};
use crate::config::Authentication;

/// What a login module may look at. Password domains see the user name and password; the
/// certificate domain sees only the client certificate's subject (ActiveMQ's certificate callback
/// handler offers nothing else).
#[derive(Debug, Clone, Copy)]
pub struct Credentials<'a> {
    pub username: Option<&'a str>,
    pub password: Option<&'a [u8]>,
    pub cert_subject: Option<&'a str>,
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
        })
        .await
        .map_err(|mut r| {
            // A certificate that maps to nobody is a credentials problem, not a missing one.
            r.failure = AuthFailure::BadCredentials;
            r
        })
}
