//! `ferromq check --online`: bind to every configured LDAP server as its connection user, and
//! load each LDAP authorization map once, reporting failures where the server is configured.

use crate::config::{Authentication, Config, Diagnostic, JaasAuth, LoginModuleKind};

use super::authz_map::LdapAuthzSource;
use super::connection::LdapServer;

/// Located errors for the LDAP servers that do not answer as configured (empty: all do).
pub async fn check(config: &Config) -> Vec<Diagnostic> {
    let mut found = Vec::new();
    let domains: Vec<&JaasAuth> = match &config.authentication {
        Authentication::Jaas(j) | Authentication::JaasCertificate(j) => vec![j],
        Authentication::JaasDual {
            password,
            certificate,
        } => vec![password, certificate],
        Authentication::None | Authentication::Simple(_) => Vec::new(),
    };
    for domain in domains {
        for module in &domain.modules {
            let LoginModuleKind::Ldap(ldap) = &module.kind else {
                continue;
            };
            let span = ldap.span.clone().or_else(|| Some(domain.span.clone()));
            let bound = match LdapServer::new(&ldap.connection) {
                Ok(server) => server
                    .open_bound()
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
            if let Err(e) = bound {
                found.push(
                    Diagnostic::error(span, format!("LDAPLoginModule: {e}")).with_hint(
                        "check connectionURL, connectionUsername and connectionPassword (and \
                         trustedCertificates for ldaps:// or startTLS)",
                    ),
                );
            }
        }
    }
    if let Some((map, span)) = config.authorization.as_ref().and_then(|a| a.ldap.as_ref()) {
        let loaded = match LdapAuthzSource::new(map, span) {
            Ok(source) => match source.server().open_bound().await {
                Ok(_) => source.load().await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            },
            Err(e) => Err(e),
        };
        if let Ok(map) = &loaded {
            let odd = map.dn_shaped_groups();
            if let Some(example) = odd.iter().next() {
                found.push(
                    Diagnostic::warning(
                        Some(span.clone()),
                        format!(
                            "cachedLDAPAuthorizationMap: {} group name(s) look like DNs (e.g. \
                             `{example}`): no login carries such a group, so these permissions \
                             grant nothing",
                            odd.len()
                        ),
                    )
                    .with_hint(
                        "with legacyGroupMapping=\"true\" (the default) only `cn=` is stripped \
                         from a member value: use legacyGroupMapping=\"false\" for full-DN \
                         members, so that each member entry is looked up",
                    ),
                );
            }
        }
        if let Err(e) = loaded {
            found.push(
                Diagnostic::error(
                    Some(span.clone()),
                    format!("cachedLDAPAuthorizationMap: {e}"),
                )
                .with_hint("check connectionURL, the connection user and the search bases"),
            );
        }
    }
    found
}
