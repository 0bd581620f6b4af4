//! LDAP: the JAAS `LDAPLoginModule` ([`login`]) and the `cachedLDAPAuthorizationMap`
//! ([`authz_map`]), over [`connection`] (ldap3 on tokio, TLS by rustls).
//!
//! Searches share one connection per server, bound as the configured connection user and
//! re-opened when it breaks; user binds (password checks) use a connection of their own, so a
//! user's bind never changes who the shared connection is. Every connect and operation has a
//! timeout: a slow or dead server delays only the CONNECTs waiting on it, never a connection
//! loop, and is reported as [`LdapError::Unavailable`] (the client is told "server
//! unavailable", not "bad password").

pub mod authz_map;
pub mod connection;
pub mod login;
pub mod online;

pub use connection::{LdapError, LdapServer};
pub use login::{LdapLogin, LdapOutcome};
