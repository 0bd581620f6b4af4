//! `org.apache.activemq.jaas.LDAPLoginModule`: search the user as the connection user, bind as
//! the user's DN with the given password, then search the user's roles (groups).

use std::sync::Arc;

use super::connection::{BindResult, LdapError, LdapServer};
use crate::config::ldap::{escape_filter_value, message_format, LdapLoginConfig};

/// One login's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LdapOutcome {
    Succeeded {
        user: Arc<str>,
        groups: Vec<Arc<str>>,
    },
    /// No user name: the module takes no part (ActiveMQ's `login()` returns false).
    Ignored,
    /// Wrong password, unknown user, empty password.
    Refused(&'static str),
    /// The server could not answer; logged with the server and the error.
    Unavailable,
}

#[derive(Debug)]
pub struct LdapLogin {
    config: LdapLoginConfig,
    server: LdapServer,
}

impl LdapLogin {
    /// Reads the TLS trust file, if any; contacts nothing.
    pub fn new(config: &LdapLoginConfig) -> Result<LdapLogin, String> {
        Ok(LdapLogin {
            config: config.clone(),
            server: LdapServer::new(&config.connection)?,
        })
    }

    pub fn server(&self) -> &LdapServer {
        &self.server
    }

    pub async fn login(&self, username: Option<&str>, password: Option<&[u8]>) -> LdapOutcome {
        let Some(username) = username else {
            return LdapOutcome::Ignored;
        };
        // An empty simple bind is an anonymous bind that every server accepts (RFC 4513
        // section 5.1.2): never let it stand for a password check.
        let password = match password.map(std::str::from_utf8) {
            None | Some(Ok("")) => return LdapOutcome::Refused("empty password"),
            Some(Err(_)) => return LdapOutcome::Refused("password is not UTF-8"),
            Some(Ok(p)) => p,
        };
        match self.check(username, password).await {
            Ok(outcome) => outcome,
            Err(e) => {
                tracing::warn!(
                    server = %self.server.url(),
                    user = %username,
                    error = %e,
                    "LDAP server unavailable: the login cannot be checked"
                );
                LdapOutcome::Unavailable
            }
        }
    }

    async fn check(&self, username: &str, password: &str) -> Result<LdapOutcome, LdapError> {
        let c = &self.config;
        let filter = message_format(&c.user_search_matching, &[&escape_filter_value(username)])
            .map_err(LdapError::Unavailable)?;
        let attrs: Vec<&str> = c.user_role_name.iter().map(String::as_str).collect();
        let found = self
            .server
            .search(&c.user_base, c.user_search_subtree, &filter, &attrs)
            .await?;
        let Some(user) = found.into_iter().next() else {
            return Ok(LdapOutcome::Refused("user not found in LDAP"));
        };
        match self.server.bind_user(&user.dn, password).await? {
            BindResult::Accepted => {}
            BindResult::Refused(rc) => {
                if !LdapServer::is_bad_password(rc) {
                    tracing::debug!(dn = %user.dn, rc, "LDAP refused the user's bind");
                }
                return Ok(LdapOutcome::Refused("wrong password"));
            }
        }
        let mut groups: Vec<Arc<str>> = Vec::new();
        let mut add = |name: &str| {
            if !groups.iter().any(|g| &**g == name) {
                groups.push(Arc::from(name));
            }
        };
        if let Some(attr) = &c.user_role_name {
            user.values(attr).iter().for_each(|v| add(v));
        }
        if let Some(role_name) = &c.role_name {
            for role in self.roles(&user.dn, username, role_name).await? {
                add(&role);
            }
        }
        Ok(LdapOutcome::Succeeded {
            user: Arc::from(username),
            groups,
        })
    }

    /// The `roleName` values of the roles found by `roleSearchMatching`, and with
    /// `expandRoles` of the roles that list those roles, transitively (each role once).
    async fn roles(
        &self,
        user_dn: &str,
        username: &str,
        role_name: &str,
    ) -> Result<Vec<String>, LdapError> {
        let c = &self.config;
        let filter = message_format(
            &c.role_search_matching,
            &[
                &escape_filter_value(user_dn),
                &escape_filter_value(username),
            ],
        )
        .map_err(LdapError::Unavailable)?;
        let mut names = Vec::new();
        let mut seen: Vec<String> = Vec::new();
        let mut pending: Vec<String> = Vec::new();
        for role in self
            .server
            .search(&c.role_base, c.role_search_subtree, &filter, &[role_name])
            .await?
        {
            names.extend(role.values(role_name).iter().cloned());
            if c.expand_roles && !seen.contains(&role.dn) {
                seen.push(role.dn.clone());
                pending.push(role.dn);
            }
        }
        let expand = c
            .expand_roles_matching
            .as_deref()
            .filter(|_| c.expand_roles);
        while let (Some(expand), Some(dn)) = (expand, pending.pop()) {
            let filter = message_format(expand, &[&escape_filter_value(&dn)])
                .map_err(LdapError::Unavailable)?;
            for role in self
                .server
                .search(&c.role_base, c.role_search_subtree, &filter, &[role_name])
                .await?
            {
                if !seen.contains(&role.dn) {
                    names.extend(role.values(role_name).iter().cloned());
                    seen.push(role.dn.clone());
                    pending.push(role.dn);
                }
            }
        }
        Ok(names)
    }
}
