//! JAAS login domains: the module list of one `login.config` entry, evaluated with the control
//! flags exactly as `javax.security.auth.login.LoginContext` does.
//!
//! Each module's login either succeeds, is ignored (returns false) or fails:
//! - `required`: a failure fails the whole login, but the remaining modules still run;
//! - `requisite`: a failure fails the whole login at once;
//! - `sufficient`: a success ends the login successfully, unless a `required` module has already
//!   failed; a failure is remembered only in case nothing else succeeds;
//! - `optional`: like `sufficient` without the early exit.
//!
//! The login succeeds when no required/requisite module failed and at least one module succeeded
//! ("all modules ignored" is a failure). The principals are those of every module that succeeded
//! (each module's `commit`): the user is the first such module's user, the groups their union.

use std::sync::Arc;

use super::authn::{Credentials, Refusal};
use super::cert::DistinguishedName;
use super::scram::{CredentialLookup, ScramMechanism};
use super::tables::{Decryption, DnTable, GroupsTable, UsersTable, WatchedFile};
use super::{AuthFailure, Principal};
use crate::config::{JaasAuth, LoginModuleKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlFlag {
    Required,
    Requisite,
    Sufficient,
    Optional,
}

impl ControlFlag {
    pub fn parse(flag: &str) -> Option<ControlFlag> {
        Some(match flag.to_ascii_lowercase().as_str() {
            "required" => ControlFlag::Required,
            "requisite" => ControlFlag::Requisite,
            "sufficient" => ControlFlag::Sufficient,
            "optional" => ControlFlag::Optional,
            _ => return None,
        })
    }
}

#[derive(Debug)]
enum Module {
    Properties {
        users: WatchedFile<UsersTable>,
        groups: WatchedFile<GroupsTable>,
    },
    Guest {
        user: Arc<str>,
        group: Arc<str>,
        credentials_invalidate: bool,
    },
    Certificate {
        users: WatchedFile<DnTable>,
        groups: WatchedFile<GroupsTable>,
    },
    /// `LDAPLoginModule`.
    Ldap(Box<super::ldap::LdapLogin>),
    /// A class ferromq does not implement: it takes no part in the login (ignored), and the
    /// configuration check has already warned about it.
    Unsupported,
}

/// What one module's login produced.
enum Outcome {
    Succeeded {
        user: Arc<str>,
        groups: Vec<Arc<str>>,
        guest: bool,
    },
    Ignored,
    Failed(&'static str),
    /// The module could not decide (its server is unreachable): a failure for the control
    /// flags, and a failed login is then "server unavailable" rather than "bad credentials".
    Unavailable(&'static str),
}

/// One JAAS login configuration entry, ready to log users in.
#[derive(Debug)]
pub struct JaasDomain {
    name: String,
    modules: Vec<(ControlFlag, Module)>,
}

impl JaasDomain {
    pub fn new(config: &JaasAuth) -> Result<JaasDomain, String> {
        let mut modules = Vec::new();
        for m in &config.modules {
            let flag = ControlFlag::parse(&m.flag).ok_or_else(|| {
                format!(
                    "{}: login module {} has flag `{}`; expected required, requisite, \
                     sufficient or optional",
                    config.login_config.display(),
                    m.class,
                    m.flag
                )
            })?;
            let module = match &m.kind {
                LoginModuleKind::Properties {
                    users_file,
                    groups_file,
                    reload,
                } => Module::Properties {
                    users: {
                        let decryption = Decryption::from_options(&m.options).map_err(|e| {
                            format!(
                                "{}: PropertiesLoginModule option `algorithm`: {e}",
                                config.login_config.display()
                            )
                        })?;
                        WatchedFile::open(users_file, *reload, move |text| {
                            UsersTable::parse_decrypting(text, decryption.as_ref())
                        })?
                    },
                    groups: WatchedFile::open(groups_file, *reload, GroupsTable::parse)?,
                },
                LoginModuleKind::Guest {
                    user,
                    group,
                    credentials_invalidate,
                } => Module::Guest {
                    user: Arc::from(user.as_str()),
                    group: Arc::from(group.as_str()),
                    credentials_invalidate: *credentials_invalidate,
                },
                LoginModuleKind::TextFileCertificate {
                    users_file,
                    groups_file,
                    reload,
                } => Module::Certificate {
                    users: WatchedFile::open(users_file, *reload, DnTable::parse)?,
                    groups: WatchedFile::open(groups_file, *reload, GroupsTable::parse)?,
                },
                LoginModuleKind::Ldap(ldap) => {
                    Module::Ldap(Box::new(super::ldap::LdapLogin::new(ldap).map_err(
                        |e| format!("{}: LDAPLoginModule: {e}", config.login_config.display()),
                    )?))
                }
                LoginModuleKind::Unsupported => Module::Unsupported,
            };
            modules.push((flag, module));
        }
        Ok(JaasDomain {
            name: config.configuration.clone(),
            modules,
        })
    }

    /// Run the module list for `creds`.
    pub async fn login(&self, creds: &Credentials<'_>) -> Result<Principal, Refusal> {
        let mut first_required_error: Option<&'static str> = None;
        let mut first_error: Option<&'static str> = None;
        let mut committed: Vec<(Arc<str>, Vec<Arc<str>>, bool)> = Vec::new();
        let mut success = false;
        let mut unavailable = false;
        for (flag, module) in &self.modules {
            let outcome = match module.login(creds).await {
                Outcome::Unavailable(reason) => {
                    unavailable = true;
                    Outcome::Failed(reason)
                }
                other => other,
            };
            match outcome {
                Outcome::Succeeded {
                    user,
                    groups,
                    guest,
                } => {
                    committed.push((user, groups, guest));
                    success = true;
                    if *flag == ControlFlag::Sufficient && first_required_error.is_none() {
                        break;
                    }
                }
                Outcome::Ignored => {}
                Outcome::Failed(reason) | Outcome::Unavailable(reason) => match flag {
                    ControlFlag::Requisite => {
                        return Err(self.refusal(
                            creds,
                            first_required_error.unwrap_or(reason),
                            unavailable,
                        ))
                    }
                    ControlFlag::Required => {
                        first_required_error.get_or_insert(reason);
                    }
                    ControlFlag::Sufficient | ControlFlag::Optional => {
                        first_error.get_or_insert(reason);
                    }
                },
            }
        }
        if let Some(reason) = first_required_error {
            return Err(self.refusal(creds, reason, unavailable));
        }
        if !success {
            return Err(self.refusal(
                creds,
                first_error.unwrap_or("all login modules ignored"),
                unavailable,
            ));
        }
        let mut committed = committed.into_iter();
        let Some((user, mut groups, mut anonymous)) = committed.next() else {
            return Err(self.refusal(creds, "no principal", false));
        };
        for (_, more_groups, guest) in committed {
            anonymous &= guest;
            for g in more_groups {
                if !groups.contains(&g) {
                    groups.push(g);
                }
            }
        }
        Ok(Principal {
            user,
            groups,
            anonymous,
        })
    }

    /// The SCRAM credential of `user` from the first properties module that has one for
    /// `mechanism`; `NotForScram` when modules know the user but none has one.
    pub fn scram_credential(&self, user: &str, mechanism: ScramMechanism) -> CredentialLookup {
        let mut known = false;
        for (_, module) in &self.modules {
            if let Module::Properties { users, .. } = module {
                match users.current().scram_credential(user, mechanism) {
                    found @ CredentialLookup::Found(_) => return found,
                    CredentialLookup::NotForScram => known = true,
                    CredentialLookup::Unknown => {}
                }
            }
        }
        if known {
            CredentialLookup::NotForScram
        } else {
            CredentialLookup::Unknown
        }
    }

    /// `unavailable`: a module could not reach its server, so the refusal may not be the
    /// user's fault (the client is told to retry).
    fn refusal(&self, creds: &Credentials<'_>, reason: &'static str, unavailable: bool) -> Refusal {
        let failure = if unavailable {
            AuthFailure::ServerUnavailable
        } else if creds.username.is_some() || creds.password.is_some() {
            AuthFailure::BadCredentials
        } else {
            AuthFailure::NotAuthorized
        };
        Refusal::new(failure, reason).in_domain(&self.name)
    }

    /// The groups a user would have after logging in (for `ferromq explain`): from every
    /// properties or certificate module's groups file, plus the guest group for the guest user.
    pub fn groups_of(&self, user: &str) -> Option<Vec<Arc<str>>> {
        let mut known = false;
        let mut groups: Vec<Arc<str>> = Vec::new();
        let mut add = |more: &[Arc<str>]| {
            for g in more {
                if !groups.contains(g) {
                    groups.push(g.clone());
                }
            }
        };
        for (_, module) in &self.modules {
            match module {
                Module::Properties {
                    users,
                    groups: group_file,
                } => {
                    if users.current().password(user).is_some() {
                        known = true;
                        add(group_file.current().groups_of(user));
                    }
                }
                Module::Certificate {
                    groups: group_file, ..
                } => {
                    let table = group_file.current();
                    if !table.groups_of(user).is_empty() {
                        known = true;
                        add(table.groups_of(user));
                    }
                }
                Module::Guest {
                    user: guest, group, ..
                } if &**guest == user => {
                    known = true;
                    add(std::slice::from_ref(group));
                }
                Module::Guest { .. } | Module::Ldap(_) | Module::Unsupported => {}
            }
        }
        known.then_some(groups)
    }
}

impl Module {
    async fn login(&self, creds: &Credentials<'_>) -> Outcome {
        match self {
            // PropertiesLoginModule: a missing password counts as the empty one. After SCRAM,
            // the module succeeds when the verified credential is its own for that user.
            Module::Properties { users, groups } => {
                let Some(username) = creds.username else {
                    return Outcome::Failed("no user name");
                };
                let table = users.current();
                let Some(stored) = table.password(username).cloned() else {
                    return Outcome::Failed("unknown user");
                };
                if let Some(verified) = creds.scram {
                    let own = match table.scram_credential(username, verified.mechanism()) {
                        CredentialLookup::Found(c) => *c == *verified,
                        CredentialLookup::NotForScram | CredentialLookup::Unknown => false,
                    };
                    if !own {
                        return Outcome::Failed("SCRAM proof was for another module's password");
                    }
                } else if !stored
                    .verify_off_thread(creds.password.unwrap_or_default())
                    .await
                {
                    return Outcome::Failed("wrong password");
                }
                Outcome::Succeeded {
                    user: Arc::from(username),
                    groups: groups.current().groups_of(username).to_vec(),
                    guest: false,
                }
            }
            // GuestLoginModule: with credentialsInvalidate, a connection that presents a
            // password is not a guest (the module is ignored, not failed).
            Module::Guest {
                user,
                group,
                credentials_invalidate,
            } => {
                if *credentials_invalidate && (creds.password.is_some() || creds.scram.is_some()) {
                    return Outcome::Ignored;
                }
                Outcome::Succeeded {
                    user: user.clone(),
                    groups: vec![group.clone()],
                    guest: true,
                }
            }
            Module::Certificate { users, groups } => {
                let Some(subject) = creds.cert_subject else {
                    return Outcome::Failed("no client certificate");
                };
                let Ok(dn) = DistinguishedName::parse(subject) else {
                    return Outcome::Failed("client certificate subject is not a valid DN");
                };
                let Some(user) = users.current().user_for(&dn).cloned() else {
                    return Outcome::Failed("no user for the client certificate's DN");
                };
                let groups = groups.current().groups_of(&user).to_vec();
                Outcome::Succeeded {
                    user,
                    groups,
                    guest: false,
                }
            }
            // LDAP checks passwords by binding: a SCRAM proof (no password) cannot be checked.
            Module::Ldap(ldap) => {
                if creds.scram.is_some() {
                    return Outcome::Failed("LDAP cannot check a SCRAM proof");
                }
                match ldap.login(creds.username, creds.password).await {
                    super::ldap::LdapOutcome::Succeeded { user, groups } => Outcome::Succeeded {
                        user,
                        groups,
                        guest: false,
                    },
                    super::ldap::LdapOutcome::Ignored => Outcome::Ignored,
                    super::ldap::LdapOutcome::Refused(reason) => Outcome::Failed(reason),
                    super::ldap::LdapOutcome::Unavailable => {
                        Outcome::Unavailable("LDAP server unavailable")
                    }
                }
            }
            Module::Unsupported => Outcome::Ignored,
        }
    }
}
