//! Security sections of the diff: TLS material, authentication, authorization.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::{multiset_missing, AuthenticationChange, AuthorizationChange, TlsChange};
use crate::config::model::*;

pub(super) fn diff_tls(
    old: Option<&SslContextConfig>,
    new: Option<&SslContextConfig>,
    changed_files: &[PathBuf],
) -> Option<TlsChange> {
    let mut settings = Vec::new();
    match (old, new) {
        (None, None) => {}
        (None, Some(_)) => settings.push("sslContext added"),
        (Some(_), None) => settings.push("sslContext removed"),
        (Some(old), Some(new)) => {
            let stores = [
                (&old.key_store, &new.key_store, KEY_STORE_NAMES),
                (&old.trust_store, &new.trust_store, TRUST_STORE_NAMES),
            ];
            for (old, new, names) in stores {
                diff_key_material(old.as_ref(), new.as_ref(), names, &mut settings);
            }
        }
    }
    let files: Vec<PathBuf> = new
        .map(|ssl| {
            let paths = [&ssl.key_store, &ssl.trust_store]
                .into_iter()
                .flatten()
                .flat_map(|m| std::iter::once(&m.path).chain(m.key_file.as_ref()));
            paths
                .filter(|p| changed_files.contains(p))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    (!settings.is_empty() || !files.is_empty()).then_some(TlsChange { settings, files })
}

/// Attribute names of one store: path, password, type, separate key file, key password, alias.
type StoreNames = [&'static str; 6];
const KEY_STORE_NAMES: StoreNames = [
    "keyStore",
    "keyStorePassword",
    "keyStoreType",
    "ferromq:keyFile",
    "keyStoreKeyPassword",
    "ferromq:keyAlias",
];
const TRUST_STORE_NAMES: StoreNames = [
    "trustStore",
    "trustStorePassword",
    "trustStoreType",
    "trustStore",
    "trustStore",
    "trustStore",
];

fn diff_key_material(
    old: Option<&KeyMaterial>,
    new: Option<&KeyMaterial>,
    [path, password, kind, key_file, key_password, key_alias]: StoreNames,
    out: &mut Vec<&'static str>,
) {
    match (old, new) {
        (None, None) => {}
        (Some(_), None) | (None, Some(_)) => out.push(path),
        (Some(old), Some(new)) => {
            let KeyMaterial {
                path: old_path,
                password: old_password,
                kind: old_kind,
                key_file: old_key_file,
                key_password: old_key_password,
                key_alias: old_key_alias,
                key_password_span: _,
                span: _,
            } = old;
            let alias_name = |a: &Option<KeyAlias>| a.as_ref().map(|a| a.name.clone());
            let differing = [
                (*old_path != new.path, path),
                (*old_password != new.password, password),
                (*old_kind != new.kind, kind),
                (*old_key_file != new.key_file, key_file),
                (*old_key_password != new.key_password, key_password),
                (
                    alias_name(old_key_alias) != alias_name(&new.key_alias),
                    key_alias,
                ),
            ];
            for (differs, name) in differing {
                if differs && !out.contains(&name) {
                    out.push(name);
                }
            }
        }
    }
}

fn plugin_name(auth: &Authentication) -> &'static str {
    match auth {
        Authentication::None => "none",
        Authentication::Simple(_) => "simple",
        Authentication::Jaas(_) => "jaas",
        Authentication::JaasCertificate(_) => "jaasCertificate",
        Authentication::JaasDual { .. } => "jaasDual",
    }
}

pub(super) fn diff_authentication(
    old: &Authentication,
    new: &Authentication,
    changed_files: &[PathBuf],
) -> Option<AuthenticationChange> {
    let mut change = AuthenticationChange {
        plugin: None,
        users_added: Vec::new(),
        users_removed: Vec::new(),
        users_changed: Vec::new(),
        settings: Vec::new(),
        files: credential_files(new)
            .into_iter()
            .filter(|p| changed_files.contains(p))
            .collect(),
    };
    match (old, new) {
        (Authentication::None, Authentication::None) => {}
        (Authentication::Simple(old), Authentication::Simple(new)) => {
            diff_simple(old, new, &mut change)
        }
        (Authentication::Jaas(old), Authentication::Jaas(new))
        | (Authentication::JaasCertificate(old), Authentication::JaasCertificate(new)) => {
            diff_jaas(old, new, &mut change.settings)
        }
        (
            Authentication::JaasDual {
                password: old_password,
                certificate: old_certificate,
            },
            Authentication::JaasDual {
                password,
                certificate,
            },
        ) => {
            diff_jaas(old_password, password, &mut change.settings);
            diff_jaas(old_certificate, certificate, &mut change.settings);
            change.settings.dedup();
        }
        _ => change.plugin = Some((plugin_name(old), plugin_name(new))),
    }
    let unchanged = change.plugin.is_none()
        && change.users_added.is_empty()
        && change.users_removed.is_empty()
        && change.users_changed.is_empty()
        && change.settings.is_empty()
        && change.files.is_empty();
    (!unchanged).then_some(change)
}

fn diff_simple(old: &SimpleAuth, new: &SimpleAuth, change: &mut AuthenticationChange) {
    let SimpleAuth {
        users,
        anonymous_access_allowed,
        anonymous_user,
        anonymous_group,
        span: _,
    } = old;
    let old_users: BTreeMap<&str, &SimpleUser> =
        users.iter().map(|u| (u.username.as_str(), u)).collect();
    let new_users: BTreeMap<&str, &SimpleUser> =
        new.users.iter().map(|u| (u.username.as_str(), u)).collect();
    for (name, user) in &new_users {
        match old_users.get(name) {
            None => change.users_added.push(name.to_string()),
            Some(old) => {
                let mut old_groups = old.groups.clone();
                let mut new_groups = user.groups.clone();
                old_groups.sort();
                new_groups.sort();
                if old.password != user.password || old_groups != new_groups {
                    change.users_changed.push(name.to_string());
                }
            }
        }
    }
    change.users_removed = old_users
        .keys()
        .filter(|name| !new_users.contains_key(*name))
        .map(|name| name.to_string())
        .collect();
    if *anonymous_access_allowed != new.anonymous_access_allowed {
        change.settings.push("anonymousAccessAllowed");
    }
    if *anonymous_user != new.anonymous_user {
        change.settings.push("anonymousUser");
    }
    if *anonymous_group != new.anonymous_group {
        change.settings.push("anonymousGroup");
    }
}

fn diff_jaas(old: &JaasAuth, new: &JaasAuth, settings: &mut Vec<&'static str>) {
    let JaasAuth {
        configuration,
        login_config,
        modules,
        span: _,
    } = old;
    if *configuration != new.configuration {
        settings.push("configuration");
    }
    if *login_config != new.login_config {
        settings.push("login.config");
    }
    let same_modules = modules.len() == new.modules.len()
        && modules
            .iter()
            .zip(&new.modules)
            .all(|(a, b)| same_module(a, b));
    if !same_modules {
        settings.push("login modules");
    }
}

fn same_module(a: &LoginModule, b: &LoginModule) -> bool {
    let LoginModule {
        class,
        flag,
        options,
        kind,
    } = a;
    *class == b.class
        && *flag == b.flag
        && *options == b.options
        && match (kind, &b.kind) {
            (
                LoginModuleKind::Properties {
                    users_file,
                    groups_file,
                    reload,
                },
                LoginModuleKind::Properties {
                    users_file: u,
                    groups_file: g,
                    reload: r,
                },
            )
            | (
                LoginModuleKind::TextFileCertificate {
                    users_file,
                    groups_file,
                    reload,
                },
                LoginModuleKind::TextFileCertificate {
                    users_file: u,
                    groups_file: g,
                    reload: r,
                },
            ) => users_file == u && groups_file == g && reload == r,
            (
                LoginModuleKind::Guest {
                    user,
                    group,
                    credentials_invalidate,
                },
                LoginModuleKind::Guest {
                    user: u,
                    group: g,
                    credentials_invalidate: c,
                },
            ) => user == u && group == g && credentials_invalidate == c,
            (LoginModuleKind::Ldap(a), LoginModuleKind::Ldap(b)) => a == b,
            (LoginModuleKind::Unsupported, LoginModuleKind::Unsupported) => true,
            _ => false,
        }
}

/// The users/groups files that the login modules of `auth` read.
fn credential_files(auth: &Authentication) -> Vec<PathBuf> {
    let domains: Vec<&JaasAuth> = match auth {
        Authentication::None | Authentication::Simple(_) => Vec::new(),
        Authentication::Jaas(j) | Authentication::JaasCertificate(j) => vec![j],
        Authentication::JaasDual {
            password,
            certificate,
        } => vec![password, certificate],
    };
    let mut files = Vec::new();
    for module in domains.iter().flat_map(|d| &d.modules) {
        if let LoginModuleKind::Properties {
            users_file,
            groups_file,
            ..
        }
        | LoginModuleKind::TextFileCertificate {
            users_file,
            groups_file,
            ..
        } = &module.kind
        {
            for file in [users_file, groups_file] {
                if !files.contains(file) {
                    files.push(file.clone());
                }
            }
        }
    }
    files
}

/// An authorization entry without its position, principals and patterns sorted: two entries
/// with the same key grant the same rights.
type EntryKey = (
    DestinationKind,
    Vec<String>,
    [Vec<String>; 3],
    PrincipalKind,
);

fn entry_key(entry: &AuthzEntry) -> EntryKey {
    let AuthzEntry {
        kind,
        patterns,
        read,
        write,
        admin,
        principal_kind,
        span: _,
    } = entry;
    let sorted = |v: &Vec<String>| {
        let mut v = v.clone();
        v.sort();
        v
    };
    (
        *kind,
        sorted(patterns),
        [sorted(read), sorted(write), sorted(admin)],
        *principal_kind,
    )
}

pub(super) fn diff_authorization(
    old: Option<&AuthorizationConfig>,
    new: Option<&AuthorizationConfig>,
) -> Option<AuthorizationChange> {
    let keys = |c: &AuthorizationConfig| c.entries.iter().map(entry_key).collect::<Vec<_>>();
    match (old, new) {
        (None, None) => None,
        (None, Some(new)) => Some(AuthorizationChange {
            plugin_added: Some(true),
            entries_added: new.entries.len(),
            entries_removed: 0,
            default_entry_changed: new.default_entry.is_some(),
            temp_entry_changed: new.temp_entry.is_some(),
            ldap_map_changed: new.ldap.is_some(),
        }),
        (Some(old), None) => Some(AuthorizationChange {
            plugin_added: Some(false),
            entries_added: 0,
            entries_removed: old.entries.len(),
            default_entry_changed: old.default_entry.is_some(),
            temp_entry_changed: old.temp_entry.is_some(),
            ldap_map_changed: old.ldap.is_some(),
        }),
        (Some(old), Some(new)) => {
            let AuthorizationConfig {
                entries: _,
                default_entry,
                temp_entry,
                ldap,
            } = old;
            let (old_keys, new_keys) = (keys(old), keys(new));
            let optional_key = |e: &Option<AuthzEntry>| e.as_ref().map(entry_key);
            let change = AuthorizationChange {
                plugin_added: None,
                entries_added: multiset_missing(&new_keys, &old_keys),
                entries_removed: multiset_missing(&old_keys, &new_keys),
                default_entry_changed: optional_key(default_entry)
                    != optional_key(&new.default_entry),
                temp_entry_changed: optional_key(temp_entry) != optional_key(&new.temp_entry),
                ldap_map_changed: ldap.as_ref().map(|(c, _)| c)
                    != new.ldap.as_ref().map(|(c, _)| c),
            };
            let unchanged = change.entries_added == 0
                && change.entries_removed == 0
                && !change.default_entry_changed
                && !change.temp_entry_changed
                && !change.ldap_map_changed;
            (!unchanged).then_some(change)
        }
    }
}
