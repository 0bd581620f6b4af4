//! `simpleAuthenticationPlugin`: users and groups written in activemq.xml.
//!
//! As `SimpleAuthenticationBroker`: a CONNECT with neither user name nor password is anonymous
//! and admitted as `anonymousUser` in `anonymousGroup` only when `anonymousAccessAllowed`;
//! anything else must name a configured user and give that user's password (a user name without
//! a password never matches).

use std::collections::HashMap;
use std::sync::Arc;

use super::authn::{Credentials, Refusal};
use super::password::StoredPassword;
use super::scram::{CredentialLookup, ScramKeys, ScramMechanism};
use super::{AuthFailure, Principal};
use crate::config::SimpleAuth;

#[derive(Debug)]
struct UserRecord {
    password: StoredPassword,
    /// For a plain-text password, derived in the background after the load or at first use
    /// (see [`StoredPassword::scram_keys`]).
    scram: ScramKeys,
    groups: Vec<Arc<str>>,
}

#[derive(Debug)]
pub struct SimpleAuthenticator {
    users: HashMap<String, UserRecord>,
    /// The principal of anonymous connections, when they are allowed.
    anonymous: Option<Principal>,
}

impl SimpleAuthenticator {
    pub fn new(config: &SimpleAuth) -> Result<SimpleAuthenticator, String> {
        let mut users = HashMap::new();
        for user in &config.users {
            let password = StoredPassword::parse(user.password.expose())
                .map_err(|e| format!("{}: password of user `{}` {e}", user.span, user.username))?;
            let groups = user
                .groups
                .iter()
                .map(|g| g.trim())
                .filter(|g| !g.is_empty())
                .map(Arc::from)
                .collect();
            let scram = password.scram_keys();
            users.insert(
                user.username.clone(),
                UserRecord {
                    password,
                    scram,
                    groups,
                },
            );
        }
        let anonymous = config.anonymous_access_allowed.then(|| Principal {
            user: Arc::from(config.anonymous_user.as_str()),
            groups: Some(config.anonymous_group.trim())
                .filter(|g| !g.is_empty())
                .map(Arc::from)
                .into_iter()
                .collect(),
            anonymous: true,
        });
        super::scram_keys::warm(users.values().map(|u| &u.scram));
        Ok(SimpleAuthenticator { users, anonymous })
    }

    pub async fn login(&self, creds: &Credentials<'_>) -> Result<Principal, Refusal> {
        if creds.username.is_none() && creds.password.is_none() {
            return self.anonymous.clone().ok_or(Refusal::new(
                AuthFailure::NotAuthorized,
                "anonymous access is not allowed",
            ));
        }
        let Some(username) = creds.username else {
            return Err(Refusal::bad("password given without a user name"));
        };
        let Some(record) = self.users.get(username) else {
            return Err(Refusal::bad("unknown user"));
        };
        let Some(password) = creds.password else {
            return Err(Refusal::bad("no password given"));
        };
        if !record.password.verify_off_thread(password).await {
            return Err(Refusal::bad("wrong password"));
        }
        Ok(Principal {
            user: Arc::from(username),
            groups: record.groups.clone(),
            anonymous: false,
        })
    }

    /// The SCRAM credential of `user` for `mechanism`.
    pub fn scram_credential(&self, user: &str, mechanism: ScramMechanism) -> CredentialLookup {
        match self.users.get(user).map(|r| r.scram.get(mechanism)) {
            Some(Some(credential)) => CredentialLookup::Found(credential),
            Some(None) => CredentialLookup::NotForScram,
            None => CredentialLookup::Unknown,
        }
    }

    /// The principal of `user` after a SCRAM proof checked against its credential.
    pub fn scram_login(&self, user: &str) -> Result<Principal, Refusal> {
        let record = self.users.get(user).ok_or(Refusal::bad("unknown user"))?;
        Ok(Principal {
            user: Arc::from(user),
            groups: record.groups.clone(),
            anonymous: false,
        })
    }

    /// The groups a user would have after logging in (for `ferromq explain`).
    pub fn groups_of(&self, user: &str) -> Option<Vec<Arc<str>>> {
        if let Some(record) = self.users.get(user) {
            return Some(record.groups.clone());
        }
        self.anonymous
            .as_ref()
            .filter(|a| &*a.user == user)
            .map(|a| a.groups.clone())
    }
}
