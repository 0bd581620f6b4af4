//! Authentication (simple, JAAS properties/guest/certificate) and casbin-backed destination
//! authorization with ActiveMQ's semantics. (Being written: issue 4.)
//!
//! The broker sees only this API: build a [`Security`] from a [`Config`], call
//! [`Security::authenticate`] on CONNECT and [`Security::authorize`] (through a per-connection
//! [`AuthzCache`]) on SUBSCRIBE, PUBLISH and delivery.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::config::Config;

/// Who a connection is, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user: Arc<str>,
    pub groups: Vec<Arc<str>>,
    pub anonymous: bool,
}

impl Principal {
    pub fn anonymous() -> Self {
        Principal {
            user: Arc::from("anonymous"),
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Read,
    Write,
    Admin,
}

/// An immutable snapshot of the security configuration; rebuilt (and swapped) on reload.
#[derive(Debug, Default)]
pub struct Security {}

impl Security {
    pub fn from_config(config: &Config) -> Result<Security, String> {
        let _ = config;
        Ok(Security {})
    }

    /// Authenticate a CONNECT. Failed attempts are logged (never with the password) and slowed
    /// down per client address.
    pub async fn authenticate(&self, req: &AuthRequest<'_>) -> Result<Principal, AuthFailure> {
        let _ = req;
        Ok(Principal::anonymous())
    }

    /// May `principal` do `action` on the MQTT topic name or filter (converted to an ActiveMQ
    /// destination name internally)? Uncached; use [`AuthzCache`] on hot paths.
    pub fn authorize(&self, principal: &Principal, action: Action, mqtt_topic: &str) -> bool {
        let _ = (principal, action, mqtt_topic);
        true
    }
}

/// Per-connection cache of authorization decisions, valid for one [`Security`] snapshot.
#[derive(Debug, Default)]
pub struct AuthzCache {}

impl AuthzCache {
    pub fn allowed(
        &mut self,
        security: &Security,
        principal: &Principal,
        action: Action,
        mqtt_topic: &str,
    ) -> bool {
        security.authorize(principal, action, mqtt_topic)
    }
}
