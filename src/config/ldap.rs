//! LDAP settings as ActiveMQ names them: the options of JAAS `LDAPLoginModule` (login.config)
//! and the attributes of `<cachedLDAPAuthorizationMap>` (activemq.xml), with ActiveMQ's defaults.
//!
//! ferromq additions (no ActiveMQ equivalent; Java takes these from JVM-wide settings):
//! `startTLS` (true: upgrade `ldap://` with the StartTLS operation, RFC 4511 section 4.14),
//! `trustedCertificates` (PEM CA file for ldaps/StartTLS; default: the system roots),
//! `connectTimeout` and `readTimeout` (ms; JNDI's `com.sun.jndi.ldap.connect.timeout` /
//! `read.timeout`, which ActiveMQ leaves unset, meaning forever: ferromq defaults to 5000 each).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::model::Secret;

/// Connect and operation timeouts when none is given (ms).
pub const DEFAULT_TIMEOUT_MS: u64 = 5000;

/// How to reach and bind to one LDAP server (shared by the login module and the map).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LdapConnection {
    /// `connectionURL`: `ldap://host:port` or `ldaps://host:port` (the path, if any, is ignored).
    pub url: String,
    /// `connectionUsername`: the DN searches bind as (`None`: anonymous).
    pub username: Option<String>,
    /// `connectionPassword`.
    pub password: Option<Secret>,
    /// `connectionProtocol`: `ssl` makes an `ldap://` URL speak TLS from the start (JNDI's
    /// `java.naming.security.protocol`); anything else is plain.
    pub protocol: Option<String>,
    /// `authentication`: `simple` binds with the user and password, `none` does not bind.
    pub bind: bool,
    /// ferromq `startTLS`.
    pub start_tls: bool,
    /// ferromq `trustedCertificates` (resolved path).
    pub trusted_certificates: Option<PathBuf>,
    /// ferromq `connectTimeout` (ms).
    pub connect_timeout_ms: u64,
    /// ferromq `readTimeout` (ms): every LDAP operation.
    pub read_timeout_ms: u64,
}

impl LdapConnection {
    /// TLS from the first byte: `ldaps://`, or `connectionProtocol=ssl`.
    pub fn tls_on_connect(&self) -> bool {
        self.url.to_ascii_lowercase().starts_with("ldaps://")
            || self
                .protocol
                .as_deref()
                .is_some_and(|p| p.trim().eq_ignore_ascii_case("ssl"))
    }

    /// The URL ldap3 connects to: `ldap://` turned into `ldaps://` for `connectionProtocol=ssl`,
    /// without a path (JNDI reads it as the base DN, which ActiveMQ's bases already include).
    pub fn dial_url(&self) -> String {
        let url = self.url.trim();
        let (scheme, rest) = url.split_once("://").unwrap_or(("ldap", url));
        let host = rest.split('/').next().unwrap_or(rest);
        let scheme = if self.tls_on_connect() {
            "ldaps"
        } else {
            &scheme.to_ascii_lowercase()
        };
        format!("{scheme}://{host}")
    }
}

/// `org.apache.activemq.jaas.LDAPLoginModule` options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LdapLoginConfig {
    pub connection: LdapConnection,
    /// `userBase`: where users are searched.
    pub user_base: String,
    /// `userSearchMatching`: a `java.text.MessageFormat`, `{0}` = the escaped user name.
    pub user_search_matching: String,
    /// `userSearchSubtree` (default false: one level below `userBase`).
    pub user_search_subtree: bool,
    /// `roleBase`.
    pub role_base: String,
    /// `roleName`: the attribute of a role entry that names the group (unset: no role search).
    pub role_name: Option<String>,
    /// `roleSearchMatching`: `{0}` = the user's DN, `{1}` = the user name (both escaped).
    pub role_search_matching: String,
    /// `roleSearchSubtree` (default false).
    pub role_search_subtree: bool,
    /// `userRoleName`: an attribute of the user entry whose values are groups too.
    pub user_role_name: Option<String>,
    /// `expandRoles`: follow roles that are members of roles.
    pub expand_roles: bool,
    /// `expandRolesMatching`: `{0}` = a role's DN.
    pub expand_roles_matching: Option<String>,
    /// Where the module is in login.config (for `check --online`).
    pub span: Option<super::diagnostic::Span>,
}

/// Options read but without effect in ferromq (documented in docs/ldap.md).
pub const IGNORED_LOGIN_OPTIONS: &[&str] = &[
    "initialContextFactory",
    "referral",
    "ignorePartialResultException",
    "debug",
];

/// The options `EncryptableLDAPLoginModule` adds.
pub const ENCRYPTION_OPTIONS: &[&str] = &[
    "encryptionPassword",
    "passwordEnvName",
    "encryptionAlgorithm",
];

/// Every option the LDAP login module knows (for "unknown option" warnings).
pub const LOGIN_OPTIONS: &[&str] = &[
    "connectionURL",
    "connectionUsername",
    "connectionPassword",
    "connectionProtocol",
    "authentication",
    "userBase",
    "userSearchMatching",
    "userSearchSubtree",
    "roleBase",
    "roleName",
    "roleSearchMatching",
    "roleSearchSubtree",
    "userRoleName",
    "expandRoles",
    "expandRolesMatching",
    "startTLS",
    "trustedCertificates",
    "connectTimeout",
    "readTimeout",
];

/// A problem with one option: its name and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionError {
    pub option: &'static str,
    pub message: String,
}

fn err(option: &'static str, message: impl Into<String>) -> OptionError {
    OptionError {
        option,
        message: message.into(),
    }
}

/// Java's `Boolean.valueOf`: `true` in any case is true, everything else false.
fn java_bool(value: Option<&String>) -> bool {
    value.is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

fn non_empty(options: &BTreeMap<String, String>, key: &str) -> Option<String> {
    options.get(key).filter(|v| !v.is_empty()).cloned()
}

fn millis(options: &BTreeMap<String, String>, key: &'static str) -> Result<u64, OptionError> {
    match options.get(key) {
        None => Ok(DEFAULT_TIMEOUT_MS),
        Some(v) => match v.trim().parse::<u64>() {
            Ok(ms) if ms > 0 => Ok(ms),
            _ => Err(err(
                key,
                format!("`{v}` is not a positive number of milliseconds"),
            )),
        },
    }
}

/// The connection part, from login.config options or XML attributes (same names).
/// `defaults` gives the value used when a key is absent (the map has defaults, the module none).
pub fn connection(
    options: &BTreeMap<String, String>,
    base_dir: &Path,
    defaults: &[(&str, &str)],
) -> Result<LdapConnection, OptionError> {
    let get = |key: &str| {
        non_empty(options, key).or_else(|| {
            defaults
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| (*v).to_owned())
        })
    };
    let url = get("connectionURL").ok_or_else(|| {
        err(
            "connectionURL",
            "is required, for example connectionURL=\"ldap://ldap.example.com:389\"",
        )
    })?;
    if url.split_whitespace().count() > 1 {
        return Err(err(
            "connectionURL",
            format!(
                "`{url}` is a space-separated list of servers (JNDI failover), which ferromq \
                 does not follow yet; give one URL (a DNS name or load balancer in front of \
                 the servers)"
            ),
        ));
    }
    let lower = url.trim().to_ascii_lowercase();
    if !(lower.starts_with("ldap://") || lower.starts_with("ldaps://")) {
        return Err(err(
            "connectionURL",
            format!("`{url}` is not an ldap:// or ldaps:// URL"),
        ));
    }
    let bind = match get("authentication").as_deref().map(str::trim) {
        None | Some("simple") => true,
        Some("none") => false,
        Some(other) => {
            return Err(err(
                "authentication",
                format!("`{other}` is not supported; use simple or none"),
            ))
        }
    };
    let start_tls = java_bool(options.get("startTLS"));
    let connection = LdapConnection {
        url: url.trim().to_owned(),
        username: get("connectionUsername"),
        password: get("connectionPassword").map(Secret),
        protocol: get("connectionProtocol"),
        bind,
        start_tls,
        trusted_certificates: non_empty(options, "trustedCertificates").map(|p| base_dir.join(p)),
        connect_timeout_ms: millis(options, "connectTimeout")?,
        read_timeout_ms: millis(options, "readTimeout")?,
    };
    if start_tls && connection.tls_on_connect() {
        return Err(err(
            "startTLS",
            "StartTLS upgrades a plain ldap:// connection; this one is already TLS (ldaps:// or connectionProtocol=ssl)",
        ));
    }
    Ok(connection)
}

/// The options of one `LDAPLoginModule`. Where ActiveMQ would fail every login at run time
/// (no connection user or password: "Empty username is not allowed"), this is an error now.
pub fn login(
    options: &BTreeMap<String, String>,
    base_dir: &Path,
) -> Result<LdapLoginConfig, OptionError> {
    let connection = connection(options, base_dir, &[])?;
    if connection.username.is_none() {
        return Err(err(
            "connectionUsername",
            "is required: ActiveMQ's LDAPLoginModule refuses every login without it (\"Empty username is not allowed\")",
        ));
    }
    if connection.password.is_none() {
        return Err(err(
            "connectionPassword",
            "is required: ActiveMQ's LDAPLoginModule refuses every login without it (\"Empty password is not allowed\")",
        ));
    }
    let user_search_matching = non_empty(options, "userSearchMatching").ok_or_else(|| {
        err(
            "userSearchMatching",
            "is required, for example userSearchMatching=\"(uid={0})\"",
        )
    })?;
    check_format("userSearchMatching", &user_search_matching, 1)?;
    let role_name = non_empty(options, "roleName");
    let role_search_matching = non_empty(options, "roleSearchMatching").unwrap_or_default();
    if role_name.is_some() {
        if role_search_matching.is_empty() {
            return Err(err(
                "roleSearchMatching",
                "is required with roleName, for example roleSearchMatching=\"(member={0})\"",
            ));
        }
        check_format("roleSearchMatching", &role_search_matching, 2)?;
    }
    let expand_roles = java_bool(options.get("expandRoles"));
    let expand_roles_matching = non_empty(options, "expandRolesMatching");
    if expand_roles {
        match &expand_roles_matching {
            None => {
                return Err(err(
                    "expandRolesMatching",
                    "is required with expandRoles=true, for example expandRolesMatching=\"(member={0})\"",
                ))
            }
            Some(f) => check_format("expandRolesMatching", f, 1)?,
        }
    }
    Ok(LdapLoginConfig {
        connection,
        user_base: non_empty(options, "userBase").unwrap_or_default(),
        user_search_matching,
        user_search_subtree: java_bool(options.get("userSearchSubtree")),
        role_base: non_empty(options, "roleBase").unwrap_or_default(),
        role_name,
        role_search_matching,
        role_search_subtree: java_bool(options.get("roleSearchSubtree")),
        user_role_name: non_empty(options, "userRoleName"),
        expand_roles,
        expand_roles_matching,
        span: None,
    })
}

fn check_format(option: &'static str, pattern: &str, args: usize) -> Result<(), OptionError> {
    let probe: Vec<&str> = vec!["x"; args];
    let filter = message_format(pattern, &probe).map_err(|e| err(option, e))?;
    // A filter the server cannot parse would fail every search at run time, where it looks
    // like an outage ("server unavailable"): refuse it here instead.
    ldap3::parse_filter(&filter).map_err(|()| {
        err(
            option,
            format!("`{pattern}` is not an LDAP search filter (RFC 4515), e.g. `(uid={{0}})`"),
        )
    })?;
    Ok(())
}

/// `java.text.MessageFormat.format` for plain `{n}` arguments: `'...'` quotes literal text,
/// `''` is one quote. A `{n}` beyond `args` stays as written (as Java does); a format type
/// (`{0,number}`) is refused, since LDAP filters never need one.
pub fn message_format(pattern: &str, args: &[&str]) -> Result<String, String> {
    let mut out = String::with_capacity(pattern.len() + 32);
    let mut chars = pattern.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match c {
            '\'' if chars.peek() == Some(&'\'') => {
                chars.next();
                out.push('\'');
            }
            '\'' => quoted = !quoted,
            '{' if !quoted => {
                let mut inner = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(ch) => inner.push(ch),
                        None => return Err(format!("`{pattern}`: `{{` is never closed")),
                    }
                }
                let index: usize = inner.trim().parse().map_err(|_| {
                    format!("`{pattern}`: `{{{inner}}}` is not an argument like {{0}}")
                })?;
                match args.get(index) {
                    Some(value) => out.push_str(value),
                    None => {
                        out.push('{');
                        out.push_str(&inner);
                        out.push('}');
                    }
                }
            }
            other => out.push(other),
        }
    }
    Ok(out)
}

/// RFC 2254 escaping of a value put into a search filter, as ActiveMQ's
/// `doRFC2254Encoding`: `\`, `*`, `(`, `)` and NUL become `\5c`, `\2a`, `\28`, `\29`, `\00`.
pub fn escape_filter_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\5c"),
            '*' => out.push_str("\\2a"),
            '(' => out.push_str("\\28"),
            ')' => out.push_str("\\29"),
            '\0' => out.push_str("\\00"),
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn message_format_substitutes_and_unquotes() {
        assert_eq!(
            message_format("(uid={0})", &["bob"]).as_deref(),
            Ok("(uid=bob)")
        );
        assert_eq!(
            message_format("(&(member={0})(x={1}))", &["cn=a", "b"]).as_deref(),
            Ok("(&(member=cn=a)(x=b))")
        );
        assert_eq!(
            message_format("'{0}'=''{0}", &["v"]).as_deref(),
            Ok("{0}='v")
        );
        assert_eq!(message_format("{3}", &["v"]).as_deref(), Ok("{3}"));
        assert!(message_format("{0,number}", &["1"]).is_err());
        assert!(message_format("(uid={0)", &["1"]).is_err());
    }

    #[test]
    fn escapes_filter_metacharacters() {
        assert_eq!(escape_filter_value("a*(b)\\\0"), "a\\2a\\28b\\29\\5c\\00");
        assert_eq!(escape_filter_value("plain"), "plain");
    }

    #[test]
    fn login_options_with_activemq_names() {
        let options = opts(&[
            ("connectionURL", "ldap://127.0.0.1:389/"),
            ("connectionUsername", "cn=mq,dc=x"),
            ("connectionPassword", "secret"),
            ("userBase", "ou=User,dc=x"),
            ("userSearchMatching", "(uid={0})"),
            ("userSearchSubtree", "TRUE"),
            ("roleBase", "ou=Group,dc=x"),
            ("roleName", "cn"),
            ("roleSearchMatching", "(member={0})"),
        ]);
        let c = login(&options, Path::new("/etc")).expect("valid");
        assert!(c.user_search_subtree);
        assert!(!c.role_search_subtree);
        assert_eq!(c.connection.dial_url(), "ldap://127.0.0.1:389");
        assert!(c.connection.bind);
        assert_eq!(c.connection.connect_timeout_ms, DEFAULT_TIMEOUT_MS);

        let mut ssl = options.clone();
        ssl.insert("connectionProtocol".into(), "ssl".into());
        let c = login(&ssl, Path::new("/etc")).expect("valid");
        assert_eq!(c.connection.dial_url(), "ldaps://127.0.0.1:389");

        let mut no_user = options.clone();
        no_user.remove("connectionUsername");
        assert_eq!(
            login(&no_user, Path::new("/")).expect_err("no user").option,
            "connectionUsername"
        );
        let mut bad_url = options.clone();
        bad_url.insert("connectionURL".into(), "http://x".into());
        assert_eq!(
            login(&bad_url, Path::new("/")).expect_err("url").option,
            "connectionURL"
        );
        // A JNDI failover list is refused where it is written, not at every login.
        let mut failover = options.clone();
        failover.insert("connectionURL".into(), "ldap://a:389 ldap://b:389".into());
        let e = login(&failover, Path::new("/")).expect_err("list");
        assert_eq!(e.option, "connectionURL");
        assert!(e.message.contains("failover"), "{}", e.message);
        // A filter the server could not parse is a configuration error, not an outage.
        for broken in ["(uid={0}", "(&(uid={0})", "(uid={0}))"] {
            let mut bad_filter = options.clone();
            bad_filter.insert("userSearchMatching".into(), broken.into());
            assert_eq!(
                login(&bad_filter, Path::new("/")).expect_err(broken).option,
                "userSearchMatching"
            );
        }
        let mut both_tls = options;
        both_tls.insert("connectionURL".into(), "ldaps://x:636".into());
        both_tls.insert("startTLS".into(), "true".into());
        assert_eq!(
            login(&both_tls, Path::new("/"))
                .expect_err("tls twice")
                .option,
            "startTLS"
        );
    }
}

/// `<cachedLDAPAuthorizationMap>` attributes, with `CachedLDAPAuthorizationMap`'s defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LdapAuthzMapConfig {
    pub connection: LdapConnection,
    pub queue_search_base: String,
    pub topic_search_base: String,
    pub temp_search_base: String,
    /// `refreshInterval` (ms). ActiveMQ: -1 (default) = follow changes by LDAP change
    /// notifications (persistent search), `n >= 0` = reload when an authorization check comes
    /// more than `n` ms after the last load. ferromq polls: every `n` ms (at least 100), and
    /// every [`EVENT_POLL_MS`] for -1.
    pub refresh_interval_ms: i64,
    /// `refreshDisabled`: load once, never again.
    pub refresh_disabled: bool,
    /// `legacyGroupMapping` (default true): a member value is a group, named by the value with
    /// every `cn=` / `CN=` removed (`cn=admins` -> `admins`), as ActiveMQ does.
    pub legacy_group_mapping: bool,
    pub group_object_class: String,
    pub user_object_class: String,
    pub group_name_attribute: String,
    pub user_name_attribute: String,
    pub permission_group_member_attribute: String,
    pub admin_filter: String,
    pub read_filter: String,
    pub write_filter: String,
}

/// How often ferromq polls when `refreshInterval=-1` asks for change notifications (ms).
pub const EVENT_POLL_MS: u64 = 60_000;

/// `CachedLDAPAuthorizationMap`'s connection defaults.
pub const MAP_CONNECTION_DEFAULTS: &[(&str, &str)] = &[
    ("connectionURL", "ldap://localhost:1024"),
    ("connectionUsername", "uid=admin,ou=system"),
    ("connectionPassword", "secret"),
    ("connectionProtocol", "s"),
    ("authentication", "simple"),
];

/// Every attribute of `<cachedLDAPAuthorizationMap>` ferromq reads.
pub const MAP_ATTRIBUTES: &[&str] = &[
    "initialContextFactory",
    "connectionURL",
    "connectionUsername",
    "connectionPassword",
    "connectionProtocol",
    "authentication",
    "queueSearchBase",
    "topicSearchBase",
    "tempSearchBase",
    "refreshInterval",
    "refreshDisabled",
    "legacyGroupMapping",
    "groupObjectClass",
    "userObjectClass",
    "groupNameAttribute",
    "userNameAttribute",
    "permissionGroupMemberAttribute",
    "adminPermissionGroupSearchFilter",
    "readPermissionGroupSearchFilter",
    "writePermissionGroupSearchFilter",
];

/// The map's settings from its attributes (and the ferromq ones: `startTLS`,
/// `trustedCertificates`, `connectTimeout`, `readTimeout`).
pub fn authz_map(
    attrs: &BTreeMap<String, String>,
    base_dir: &Path,
) -> Result<LdapAuthzMapConfig, OptionError> {
    let connection = connection(attrs, base_dir, MAP_CONNECTION_DEFAULTS)?;
    let text =
        |key: &str, default: &str| non_empty(attrs, key).unwrap_or_else(|| default.to_owned());
    let flag = |key: &'static str, default: bool| match attrs.get(key).map(|v| v.trim()) {
        None => Ok(default),
        Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
        Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
        Some(v) => Err(err(key, format!("`{v}` is not true or false"))),
    };
    let refresh_interval_ms = match attrs.get("refreshInterval") {
        None => -1,
        Some(v) => match v.trim().parse::<i64>() {
            Ok(n) if n >= -1 => n,
            _ => {
                return Err(err(
                    "refreshInterval",
                    format!("`{v}` is not -1 (change notifications) or a number of milliseconds"),
                ))
            }
        },
    };
    for option in [
        "adminPermissionGroupSearchFilter",
        "readPermissionGroupSearchFilter",
        "writePermissionGroupSearchFilter",
    ] {
        if let Some(filter) = non_empty(attrs, option) {
            check_format(option, &filter, 0)?;
        }
    }
    Ok(LdapAuthzMapConfig {
        connection,
        queue_search_base: text(
            "queueSearchBase",
            "ou=Queue,ou=Destination,ou=ActiveMQ,ou=system",
        ),
        topic_search_base: text(
            "topicSearchBase",
            "ou=Topic,ou=Destination,ou=ActiveMQ,ou=system",
        ),
        temp_search_base: text(
            "tempSearchBase",
            "ou=Temp,ou=Destination,ou=ActiveMQ,ou=system",
        ),
        refresh_interval_ms,
        refresh_disabled: flag("refreshDisabled", false)?,
        legacy_group_mapping: flag("legacyGroupMapping", true)?,
        group_object_class: text("groupObjectClass", "groupOfNames"),
        user_object_class: text("userObjectClass", "person"),
        group_name_attribute: text("groupNameAttribute", "cn"),
        user_name_attribute: text("userNameAttribute", "uid"),
        permission_group_member_attribute: text("permissionGroupMemberAttribute", "member"),
        admin_filter: text("adminPermissionGroupSearchFilter", "(cn=Admin)"),
        read_filter: text("readPermissionGroupSearchFilter", "(cn=Read)"),
        write_filter: text("writePermissionGroupSearchFilter", "(cn=Write)"),
    })
}

impl LdapAuthzMapConfig {
    /// Time between loads; `None`: load once (`refreshDisabled`).
    pub fn poll_every(&self) -> Option<std::time::Duration> {
        if self.refresh_disabled {
            return None;
        }
        let ms = match u64::try_from(self.refresh_interval_ms) {
            Ok(ms) => ms.max(100),
            Err(_) => EVENT_POLL_MS,
        };
        Some(std::time::Duration::from_millis(ms))
    }
}

/// `org.apache.activemq.jaas.EncryptableLDAPLoginModule`: every `ENC(...)` option value is
/// decrypted with jasypt before the module reads it. The password is `encryptionPassword`, else
/// the environment variable named by `passwordEnvName` (default `ACTIVEMQ_ENCRYPTION_PASSWORD`);
/// the algorithm `encryptionAlgorithm` (default `PBEWithMD5AndDES`). Errors name the option,
/// never a clear value.
pub fn decrypt_options(
    options: &mut BTreeMap<String, String>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<(), (String, String)> {
    use super::jasypt::{self, Algorithm};
    let encrypted: Vec<String> = options
        .iter()
        .filter(|(_, v)| jasypt::enc_inner(v).is_some())
        .map(|(k, _)| k.clone())
        .collect();
    if encrypted.is_empty() {
        return Ok(());
    }
    let algorithm_name = options
        .get("encryptionAlgorithm")
        .cloned()
        .unwrap_or_else(|| Algorithm::PbeWithMd5AndDes.name().to_owned());
    let Some(algorithm) = Algorithm::from_name(&algorithm_name) else {
        return Err((
            "encryptionAlgorithm".to_owned(),
            format!(
                "`{algorithm_name}` is not supported; use one of {}",
                Algorithm::SUPPORTED
            ),
        ));
    };
    let password = match options.get("encryptionPassword") {
        Some(p) => p.clone(),
        None => {
            let name = options
                .get("passwordEnvName")
                .cloned()
                .unwrap_or_else(|| "ACTIVEMQ_ENCRYPTION_PASSWORD".to_owned());
            env(&name).ok_or_else(|| {
                (
                    encrypted[0].clone(),
                    format!("is ENC(...), but the environment variable `{name}` (passwordEnvName) is not set"),
                )
            })?
        }
    };
    for key in encrypted {
        let Some(value) = options.get(&key) else {
            continue;
        };
        let inner = jasypt::enc_inner(value).unwrap_or_default().to_owned();
        let clear = jasypt::decrypt(algorithm, &password, &inner)
            .map_err(|e| (key.clone(), format!("cannot be decrypted: {e}")))?;
        options.insert(key, clear);
    }
    Ok(())
}

#[cfg(test)]
mod decrypt_tests {
    use super::*;
    use crate::config::jasypt::{encrypt, Algorithm};

    #[test]
    fn encrypted_options_are_decrypted_with_the_environment_password() {
        let enc = encrypt(Algorithm::PbeWithMd5AndDes, "activemq", "s3cret").expect("encrypt");
        let mut options: BTreeMap<String, String> = [
            ("connectionPassword".to_owned(), format!("ENC({enc})")),
            ("userBase".to_owned(), "ou=User".to_owned()),
        ]
        .into();
        decrypt_options(&mut options, |name| {
            (name == "ACTIVEMQ_ENCRYPTION_PASSWORD").then(|| "activemq".to_owned())
        })
        .expect("decrypts");
        assert_eq!(options["connectionPassword"], "s3cret");
        assert_eq!(options["userBase"], "ou=User");

        let mut wrong: BTreeMap<String, String> = [
            ("connectionPassword".to_owned(), format!("ENC({enc})")),
            ("encryptionPassword".to_owned(), "nope".to_owned()),
        ]
        .into();
        let (key, message) = decrypt_options(&mut wrong, |_| None).expect_err("wrong password");
        assert_eq!(key, "connectionPassword");
        assert!(!message.contains("s3cret"), "{message}");
        let mut unset: BTreeMap<String, String> =
            [("connectionPassword".to_owned(), format!("ENC({enc})"))].into();
        assert!(decrypt_options(&mut unset, |_| None).is_err());
    }
}
