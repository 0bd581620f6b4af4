//! `cachedLDAPAuthorizationMap`: destination entries loaded from LDAP as ActiveMQ's
//! `CachedLDAPAuthorizationMap` reads them, and kept up to date by polling.
//!
//! Layout (ActiveMQ's): under `topicSearchBase` / `queueSearchBase`, one entry per
//! destination pattern (`cn=plant.$`; `$` stands for `>`, which a DN cannot hold unescaped),
//! each with permission children found by the admin/read/write filters (`(cn=Read)`...)
//! whose `permissionGroupMemberAttribute` values name the principals. Under `tempSearchBase`
//! the permission entries sit directly below the base (temporary destinations).
//!
//! Members: with `legacyGroupMapping` (default) every value is a group named by the value
//! without its `cn=`/`CN=` parts, exactly as ActiveMQ's `replaceAll("(cn|CN)=", "")`
//! (so `cn=admins` is `admins`, while a full DN keeps its `,ou=...` tail and names a group no
//! login produces). Without it, each member entry is read: `groupObjectClass` -> a group
//! named by `groupNameAttribute`, `userObjectClass` -> a user named by `userNameAttribute`.
//!
//! The loaded entries become ordinary authorization entries (same evaluator and wildcard
//! lookup as the XML map) in a new [`Security`] snapshot swapped in as a reload is, so caches
//! and live subscriptions follow. Until the first successful load nothing is granted (fail
//! closed); a failed refresh keeps the last good entries. Both are logged.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::connection::{LdapError, LdapServer};
use crate::broker::BrokerCore;
use crate::config::diagnostic::Span;
use crate::config::ldap::LdapAuthzMapConfig;
use crate::config::{AuthorizationConfig, AuthzEntry, DestinationKind, PrincipalKind};
use crate::security::Security;

/// How soon a map that never loaded is tried again (ms), at most.
const FIRST_LOAD_RETRY: Duration = Duration::from_secs(5);

/// Principals of one permission: group names and user names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Members {
    pub groups: BTreeSet<String>,
    pub users: BTreeSet<String>,
}

/// The read, write and admin members of one destination pattern.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acl {
    pub read: Members,
    pub write: Members,
    pub admin: Members,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Permission {
    Read,
    Write,
    Admin,
}

impl Acl {
    fn slot(&mut self, p: Permission) -> &mut Members {
        match p {
            Permission::Read => &mut self.read,
            Permission::Write => &mut self.write,
            Permission::Admin => &mut self.admin,
        }
    }
}

/// What one load found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadedMap {
    /// (topic?, ActiveMQ pattern) -> permissions. `true` = topic, `false` = queue.
    pub destinations: BTreeMap<(bool, String), Acl>,
    pub temp: Option<Acl>,
}

impl LoadedMap {
    pub fn len(&self) -> usize {
        self.destinations.len()
    }

    pub fn is_empty(&self) -> bool {
        self.destinations.is_empty() && self.temp.is_none()
    }

    /// Group names that still look like DNs (`cn=x,ou=...` with `legacyGroupMapping`, which
    /// only strips `cn=`): no login carries such a group, so the permission grants nothing.
    pub fn dn_shaped_groups(&self) -> BTreeSet<String> {
        let acls = self.destinations.values().chain(self.temp.iter());
        acls.flat_map(|acl| [&acl.read, &acl.write, &acl.admin])
            .flat_map(|members| members.groups.iter())
            .filter(|g| g.contains('=') || g.contains(','))
            .cloned()
            .collect()
    }

    /// `base` with these entries added: one entry per pattern and principal kind (groups,
    /// users), which the evaluator unions as ActiveMQ unions the ACL sets of one entry.
    fn extend(&self, base: &AuthorizationConfig, span: &Span) -> AuthorizationConfig {
        let mut config = base.clone();
        let entry = |kind, pattern: &str, acl: &Acl, pk: PrincipalKind| {
            let pick = |m: &Members| -> Vec<String> {
                match pk {
                    PrincipalKind::Group => m.groups.iter().cloned().collect(),
                    PrincipalKind::User => m.users.iter().cloned().collect(),
                }
            };
            AuthzEntry {
                kind,
                patterns: vec![pattern.to_owned()],
                read: pick(&acl.read),
                write: pick(&acl.write),
                admin: pick(&acl.admin),
                principal_kind: pk,
                span: span.clone(),
            }
        };
        for ((topic, pattern), acl) in &self.destinations {
            let kind = if *topic {
                DestinationKind::Topic
            } else {
                DestinationKind::Queue
            };
            config
                .entries
                .push(entry(kind, pattern, acl, PrincipalKind::Group));
            let has_users = [&acl.read, &acl.write, &acl.admin]
                .iter()
                .any(|m| !m.users.is_empty());
            if has_users {
                config
                    .entries
                    .push(entry(kind, pattern, acl, PrincipalKind::User));
            }
        }
        if let Some(acl) = &self.temp {
            // One temp entry only: its groups (user members of temp permissions are rare and
            // are dropped with a warning at load time).
            config.temp_entry = Some(entry(
                DestinationKind::TempTopic,
                ">",
                acl,
                PrincipalKind::Group,
            ));
        }
        config
    }
}

/// One configured map: its settings, its server, and the last good load.
pub struct LdapAuthzSource {
    config: LdapAuthzMapConfig,
    span: Span,
    server: LdapServer,
    loaded: parking_lot::Mutex<Option<Arc<LoadedMap>>>,
    /// Member problems already logged at ERROR: a map polled every few seconds would repeat
    /// them on every load (later loads log them at debug). Bounded by [`MAX_REPORTED`].
    reported: parking_lot::Mutex<BTreeSet<(String, String)>>,
}

/// Member problems remembered at most (then every one is logged again: memory stays bounded).
const MAX_REPORTED: usize = 10_000;

impl std::fmt::Debug for LdapAuthzSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LdapAuthzSource")
            .field("url", &self.config.connection.url)
            .finish_non_exhaustive()
    }
}

impl LdapAuthzSource {
    /// Reads the TLS trust file, if any; contacts nothing.
    pub fn new(config: &LdapAuthzMapConfig, span: &Span) -> Result<LdapAuthzSource, String> {
        Ok(LdapAuthzSource {
            config: config.clone(),
            span: span.clone(),
            server: LdapServer::new(&config.connection)
                .map_err(|e| format!("cachedLDAPAuthorizationMap: {e}"))?,
            loaded: parking_lot::Mutex::new(None),
            reported: parking_lot::Mutex::new(BTreeSet::new()),
        })
    }

    /// Where the map element is written.
    pub fn span(&self) -> &Span {
        &self.span
    }

    pub fn config(&self) -> &LdapAuthzMapConfig {
        &self.config
    }

    pub fn server(&self) -> &LdapServer {
        &self.server
    }

    /// The last good load (`None`: never loaded, everything is denied).
    pub fn loaded(&self) -> Option<Arc<LoadedMap>> {
        self.loaded.lock().clone()
    }

    /// Keep `map` as the last good load; true when it differs from the previous one.
    pub fn store(&self, map: LoadedMap) -> bool {
        let mut slot = self.loaded.lock();
        let changed = slot.as_deref() != Some(&map);
        if changed {
            *slot = Some(Arc::new(map));
        }
        changed
    }

    /// `base` (the XML map) with the last good load added.
    pub fn authorization(&self, base: &AuthorizationConfig) -> AuthorizationConfig {
        match self.loaded() {
            Some(map) => map.extend(base, &self.span),
            None => base.clone(),
        }
    }

    /// Query the directory: every permission entry under the three bases.
    pub async fn load(&self) -> Result<LoadedMap, LdapError> {
        let c = &self.config;
        let mut map = LoadedMap::default();
        let perms = [
            (Permission::Admin, &c.admin_filter),
            (Permission::Read, &c.read_filter),
            (Permission::Write, &c.write_filter),
        ];
        let member_attr = c.permission_group_member_attribute.as_str();
        for (base, topic) in [(&c.queue_search_base, false), (&c.topic_search_base, true)] {
            let base_len = rdns(base).len();
            for (perm, filter) in perms {
                for entry in self
                    .server
                    .search(base, true, filter, &[member_attr])
                    .await?
                {
                    let parts = rdns(&entry.dn);
                    // cn=<permission>,cn=<destination>,<base>
                    let Some((_, destination)) =
                        parts.get(1).filter(|_| parts.len() == base_len + 2)
                    else {
                        tracing::error!(
                            entry = %entry.dn,
                            "policy not applied: the destination pattern and permission entries \
                             must be nested directly below {base}"
                        );
                        continue;
                    };
                    let pattern = destination.replace('$', ">");
                    let members = self.members(&entry.dn, entry.values(member_attr)).await?;
                    *map.destinations
                        .entry((topic, pattern))
                        .or_default()
                        .slot(perm) = members;
                }
            }
        }
        let temp_len = rdns(&c.temp_search_base).len();
        for (perm, filter) in perms {
            for entry in self
                .server
                .search(&c.temp_search_base, true, filter, &[member_attr])
                .await?
            {
                if rdns(&entry.dn).len() != temp_len + 1 {
                    tracing::error!(
                        entry = %entry.dn,
                        "policy not applied: temporary destination permission entries must sit \
                         directly below {}", c.temp_search_base
                    );
                    continue;
                }
                let members = self.members(&entry.dn, entry.values(member_attr)).await?;
                if !members.users.is_empty() {
                    tracing::warn!(
                        entry = %entry.dn,
                        "user members of temporary destination permissions are not applied; \
                         name groups"
                    );
                }
                *map.temp.get_or_insert_with(Acl::default).slot(perm) = members;
            }
        }
        Ok(map)
    }

    /// Log a member that is not applied: at ERROR the first time (ActiveMQ logs "Policy not
    /// applied!"), at debug when a later load finds the same problem.
    fn member_problem(&self, member: &str, entry_dn: &str, why: &'static str) {
        let first = {
            let mut reported = self.reported.lock();
            if reported.len() >= MAX_REPORTED {
                reported.clear();
            }
            reported.insert((member.to_owned(), entry_dn.to_owned()))
        };
        if first {
            tracing::error!(member = %member, entry = %entry_dn, "policy not applied: {why}");
        } else {
            tracing::debug!(member = %member, entry = %entry_dn, "policy not applied: {why}");
        }
    }

    async fn members(&self, entry_dn: &str, values: &[String]) -> Result<Members, LdapError> {
        let c = &self.config;
        let mut members = Members::default();
        for value in values {
            if c.legacy_group_mapping {
                members.groups.insert(legacy_group_name(value));
                continue;
            }
            let attrs = [
                "objectClass",
                c.group_name_attribute.as_str(),
                c.user_name_attribute.as_str(),
            ];
            let Some(member) = self.server.read_entry(value, &attrs).await? else {
                self.member_problem(value, entry_dn, "unknown member");
                continue;
            };
            let classes = member.values("objectClass");
            let is = |class: &str| classes.iter().any(|c| c.eq_ignore_ascii_case(class));
            let (group, user) = (is(&c.group_object_class), is(&c.user_object_class));
            let name = match (group, user) {
                (true, false) => member.values(&c.group_name_attribute).first(),
                (false, true) => member.values(&c.user_name_attribute).first(),
                _ => {
                    self.member_problem(
                        value,
                        entry_dn,
                        "cannot tell whether the member is a group or a user",
                    );
                    continue;
                }
            };
            let Some(name) = name else {
                self.member_problem(value, entry_dn, "the member has no name attribute");
                continue;
            };
            if group {
                members.groups.insert(name.clone());
            } else {
                members.users.insert(name.clone());
            }
        }
        Ok(members)
    }
}

/// ActiveMQ's legacy mapping: the member value with every `cn=` and `CN=` removed.
pub fn legacy_group_name(member: &str) -> String {
    member.replace("cn=", "").replace("CN=", "")
}

/// The RDN values of a DN, leftmost first, unescaped (RFC 4514: `\,` and `\2c` forms).
/// Only multi-valued RDNs (`+`) are kept whole; they do not occur in destination entries.
pub fn rdns(dn: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut chars = dn.chars().peekable();
    let push = |raw: &str, out: &mut Vec<(String, String)>| {
        if raw.trim().is_empty() {
            return;
        }
        let (attr, value) = raw.split_once('=').unwrap_or(("", raw));
        out.push((attr.trim().to_ascii_lowercase(), unescape(value.trim())));
    };
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                current.push(c);
                if let Some(next) = chars.next() {
                    current.push(next);
                }
            }
            ',' => {
                push(&current, &mut out);
                current.clear();
            }
            other => current.push(other),
        }
    }
    push(&current, &mut out);
    out
}

fn unescape(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 1 < bytes.len() {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match hex {
                Some(b) => {
                    out.push(b);
                    i += 3;
                }
                None => {
                    out.push(bytes[i + 1]);
                    i += 2;
                }
            }
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Keep the broker's LDAP authorization map loaded: load now, then poll as configured,
/// swapping in a new security snapshot whenever the entries change. Follows reloads (a new
/// map, or none); ends with the broker (`shutdown`, or the core dropped).
pub fn spawn_refresher(core: Weak<BrokerCore>, shutdown: CancellationToken) {
    let Some(mut changes) = core.upgrade().map(|c| c.watch_security()) else {
        return;
    };
    tokio::spawn(async move {
        loop {
            let Some(security) = core.upgrade().map(|c| c.security()) else {
                return;
            };
            changes.borrow_and_update();
            let (wait, installed) = match security.ldap_authz_source() {
                None => (None, None),
                Some(source) => refresh_once(&core, &security, source).await,
            };
            let sleep = async {
                match wait {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::pin!(sleep);
            // Wait for the next poll, or for a reload (a snapshot we did not install).
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = &mut sleep => break,
                    changed = changes.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        if Some(*changes.borrow_and_update()) != installed {
                            break;
                        }
                    }
                }
            }
        }
    });
}

/// One load; returns how long until the next, and the generation of the snapshot it
/// installed (if it did).
async fn refresh_once(
    core: &Weak<BrokerCore>,
    security: &Arc<Security>,
    source: &Arc<LdapAuthzSource>,
) -> (Option<Duration>, Option<u64>) {
    let poll = source.config().poll_every();
    let never_loaded = source.loaded().is_none();
    match source.load().await {
        Ok(map) => {
            let count = map.len();
            let mut installed = None;
            if source.store(map) || never_loaded {
                match security.with_ldap_authorization() {
                    Ok(next) => {
                        if let Some(core) = core.upgrade() {
                            // A reload may have replaced the snapshot meanwhile: it was built
                            // with these entries already (same source), or with another map.
                            if core.security().generation() == security.generation() {
                                installed = Some(next.generation());
                                core.replace_security(next);
                            }
                        }
                        tracing::info!(
                            server = %source.server().url(),
                            destinations = count,
                            "authorization entries loaded from LDAP"
                        );
                    }
                    Err(e) => tracing::error!(
                        server = %source.server().url(),
                        error = %e,
                        "authorization entries from LDAP not applied"
                    ),
                }
            }
            (poll, installed)
        }
        Err(e) => {
            if never_loaded {
                tracing::error!(
                    server = %source.server().url(),
                    error = %e,
                    "cannot load the authorization map from LDAP: every destination is denied until it loads"
                );
                (
                    Some(poll.map_or(FIRST_LOAD_RETRY, |p| p.min(FIRST_LOAD_RETRY))),
                    None,
                )
            } else {
                tracing::warn!(
                    server = %source.server().url(),
                    error = %e,
                    "cannot refresh the authorization map from LDAP: the last loaded entries stay"
                );
                (Some(poll.unwrap_or(FIRST_LOAD_RETRY)), None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A member problem is remembered after its first (ERROR) report, so a map polled every
    /// few seconds does not repeat it; a different member or entry is reported again.
    #[test]
    fn member_problems_are_reported_once() {
        let config = crate::config::ldap::authz_map(&BTreeMap::new(), std::path::Path::new("/"))
            .expect("defaults are valid");
        let span = Span::new(Arc::new(std::path::PathBuf::from("activemq.xml")), 1, 1);
        let source = LdapAuthzSource::new(&config, &span).expect("contacts nothing");
        source.member_problem("cn=ghost", "cn=read,cn=a", "unknown member");
        source.member_problem("cn=ghost", "cn=read,cn=a", "unknown member");
        assert_eq!(source.reported.lock().len(), 1);
        source.member_problem("cn=ghost", "cn=write,cn=a", "unknown member");
        assert_eq!(source.reported.lock().len(), 2);
    }

    #[test]
    fn dn_parts_unescaped() {
        let parts = rdns("cn=read,cn=plant.$,ou=Topic,ou=Destination, ou=ActiveMQ,ou=system");
        assert_eq!(parts.len(), 6);
        assert_eq!(parts[1], ("cn".to_owned(), "plant.$".to_owned()));
        assert_eq!(
            rdns("cn=a\\,b,cn=x\\3ey,o=z")
                .into_iter()
                .map(|p| p.1)
                .collect::<Vec<_>>(),
            vec!["a,b", "x>y", "z"]
        );
    }

    #[test]
    fn legacy_mapping_strips_cn_as_activemq() {
        assert_eq!(legacy_group_name("cn=admins"), "admins");
        assert_eq!(
            legacy_group_name("cn=admins,ou=Group,ou=ActiveMQ,ou=system"),
            "admins,ou=Group,ou=ActiveMQ,ou=system"
        );
        assert_eq!(legacy_group_name("CN=Ops"), "Ops");
    }
}
