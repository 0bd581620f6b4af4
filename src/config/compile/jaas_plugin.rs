//! JAAS plugins: find `login.config`, parse it, pick the plugin's entry, and check the
//! properties files its login modules name (they exist, parse, and the groups name known users).
//!
//! `login.config` is where Java would look: the `java.security.auth.login.config` property
//! (`--set`/`-D`), else `${activemq.conf}/login.config`. Paths inside it are relative to its own
//! directory (or the module's `baseDir` option), as ActiveMQ's login modules resolve them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::Ctx;
use crate::config::diagnostic::{Diagnostic, Span};
use crate::config::jaas::{self, JaasModule, JaasOption, LoginConfig};
use crate::config::known_names;
use crate::config::model::{JaasAuth, LoginModule, LoginModuleKind};
use crate::config::properties;
use crate::config::tree::Element;
use crate::config::values;

const LOGIN_CONFIG_PROPERTY: &str = "java.security.auth.login.config";
const PROPERTIES_MODULE: &str = "org.apache.activemq.jaas.PropertiesLoginModule";
const GUEST_MODULE: &str = "org.apache.activemq.jaas.GuestLoginModule";
const CERTIFICATE_MODULE: &str = "org.apache.activemq.jaas.TextFileCertificateLoginModule";
const LDAP_MODULE: &str = "org.apache.activemq.jaas.LDAPLoginModule";
const ENCRYPTABLE_LDAP_MODULE: &str = "org.apache.activemq.jaas.EncryptableLDAPLoginModule";

/// A parsed login.config and where it came from.
pub(super) struct LoginConfigFile {
    path: PathBuf,
    file: Arc<PathBuf>,
    config: LoginConfig,
}

/// The JAAS configuration of `plugin` named by attribute `attr_name` (default `default_entry`).
pub(super) fn jaas(
    ctx: &mut Ctx<'_>,
    plugin: &Element,
    attr_name: &str,
    default_entry: &str,
) -> Option<JaasAuth> {
    let file = load(ctx, plugin)?;
    auth(ctx, plugin, &file, attr_name, default_entry)
}

/// Both domains of a `jaasDualAuthenticationPlugin` from one reading of login.config.
pub(super) fn jaas_dual(ctx: &mut Ctx<'_>, plugin: &Element) -> Option<(JaasAuth, JaasAuth)> {
    let file = load(ctx, plugin)?;
    let password = auth(ctx, plugin, &file, "configuration", "activemq");
    let certificate = auth(ctx, plugin, &file, "sslConfiguration", "activemq-ssl");
    Some((password?, certificate?))
}

fn login_config_path(ctx: &Ctx<'_>) -> PathBuf {
    if let Some(value) = ctx.properties.get(LOGIN_CONFIG_PROPERTY) {
        let stripped = value.strip_prefix("file:").unwrap_or(value);
        // A Java system property: relative to the working directory, as Java reads it.
        return PathBuf::from(stripped);
    }
    let conf = ctx
        .properties
        .get("activemq.conf")
        .map(PathBuf::from)
        .unwrap_or_else(|| ctx.config_dir.clone());
    conf.join("login.config")
}

fn load(ctx: &mut Ctx<'_>, plugin: &Element) -> Option<LoginConfigFile> {
    ctx.mark(plugin);
    // Read now, so that they count as read even when login.config turns out unusable.
    ctx.attr(plugin, "configuration");
    ctx.attr(plugin, "sslConfiguration");
    let path = login_config_path(ctx);
    ctx.read_file(&path);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            ctx.push(
                Diagnostic::error(
                    plugin.span.clone(),
                    format!("<{}> needs {}, which cannot be read: {e}", plugin.name, path.display()),
                )
                .with_hint(format!(
                    "put login.config beside the configuration file, or name it with --set {LOGIN_CONFIG_PROPERTY}=PATH"
                )),
            );
            return None;
        }
    };
    let file = Arc::new(path.clone());
    match jaas::parse(&text) {
        Ok(config) => Some(LoginConfigFile { path, file, config }),
        Err(e) => {
            ctx.push(
                Diagnostic::error(Span::new(file, e.line, e.col), e.message)
                    .with_hint("login.config entries look like: activemq { org.apache.activemq.jaas.PropertiesLoginModule required org.apache.activemq.jaas.properties.user=\"users.properties\"; };"),
            );
            None
        }
    }
}

fn auth(
    ctx: &mut Ctx<'_>,
    plugin: &Element,
    file: &LoginConfigFile,
    attr_name: &str,
    default_entry: &str,
) -> Option<JaasAuth> {
    let attr = ctx.attr(plugin, attr_name);
    let configuration = attr
        .map(|a| a.value.trim().to_owned())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default_entry.to_owned());
    let Some(entry) = file.config.entry(&configuration) else {
        let span = attr.map_or_else(|| plugin.span.clone(), |a| a.value_span.clone());
        let names = file.config.entries.iter().map(|e| e.name.as_str());
        let hint = known_names::did_you_mean(&configuration, names).unwrap_or_else(|| {
            format!(
                "add an entry `{configuration} {{ ... }};` to {}",
                file.path.display()
            )
        });
        ctx.push(
            Diagnostic::error(
                span,
                format!("{} has no entry `{configuration}`", file.path.display()),
            )
            .with_hint(hint),
        );
        return None;
    };
    if entry.modules.is_empty() {
        ctx.push(Diagnostic::error(
            Span::new(file.file.clone(), entry.line, entry.col),
            format!("entry `{configuration}` has no login module: nobody could log in"),
        ));
    }
    let base_dir = file
        .path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let modules = entry
        .modules
        .iter()
        .filter_map(|m| module(ctx, file, m, &base_dir))
        .collect();
    Some(JaasAuth {
        configuration,
        login_config: file.path.clone(),
        modules,
        span: plugin.span.clone(),
    })
}

/// Expand `${name}` in a login.config value from the known properties (Java's
/// `policy.expandProperties`). Returns the name of the first unknown property as the error.
pub(super) fn expand(value: &str, properties: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let name = &after[..end];
        out.push_str(properties.get(name).ok_or_else(|| name.to_owned())?);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn module(
    ctx: &mut Ctx<'_>,
    file: &LoginConfigFile,
    module: &JaasModule,
    login_dir: &Path,
) -> Option<LoginModule> {
    let span_of = |o: &JaasOption| Span::new(file.file.clone(), o.line, o.col);
    let module_span = Span::new(file.file.clone(), module.line, module.col);
    let mut options = BTreeMap::new();
    for option in &module.options {
        match expand(&option.value, ctx.properties) {
            Ok(v) => {
                options.insert(option.key.clone(), v);
            }
            Err(name) => {
                ctx.push(
                    Diagnostic::error(
                        span_of(option),
                        format!("unresolved property `${{{name}}}`"),
                    )
                    .with_hint(format!("define it with --set {name}=VALUE")),
                );
                return None;
            }
        }
    }
    let base_dir = options
        .get("baseDir")
        .map(PathBuf::from)
        .unwrap_or_else(|| login_dir.to_path_buf());
    let reload = options
        .get("reload")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    let kind = match module.class.as_str() {
        PROPERTIES_MODULE | CERTIFICATE_MODULE => {
            let (name, known) = if module.class == PROPERTIES_MODULE {
                ("PropertiesLoginModule", PROPERTIES_OPTIONS)
            } else {
                ("TextFileCertificateLoginModule", CERTIFICATE_OPTIONS)
            };
            warn_unknown_options(ctx, module, name, known, &span_of);
            let (user_key, group_key) = if module.class == PROPERTIES_MODULE {
                (
                    "org.apache.activemq.jaas.properties.user",
                    "org.apache.activemq.jaas.properties.group",
                )
            } else {
                (
                    "org.apache.activemq.jaas.textfiledn.user",
                    "org.apache.activemq.jaas.textfiledn.group",
                )
            };
            let files =
                user_and_group_files(ctx, file, module, &options, &base_dir, user_key, group_key)?;
            let (users_file, groups_file) = files;
            if module.class == PROPERTIES_MODULE {
                LoginModuleKind::Properties {
                    users_file,
                    groups_file,
                    reload,
                }
            } else {
                LoginModuleKind::TextFileCertificate {
                    users_file,
                    groups_file,
                    reload,
                }
            }
        }
        GUEST_MODULE => {
            warn_unknown_options(ctx, module, "GuestLoginModule", GUEST_OPTIONS, &span_of);
            LoginModuleKind::Guest {
                user: options
                    .get("org.apache.activemq.jaas.guest.user")
                    .cloned()
                    .unwrap_or_else(|| "guest".into()),
                group: options
                    .get("org.apache.activemq.jaas.guest.group")
                    .cloned()
                    .unwrap_or_else(|| "guests".into()),
                credentials_invalidate: options
                    .get("credentialsInvalidate")
                    .is_some_and(|v| v.trim().eq_ignore_ascii_case("true")),
            }
        }
        LDAP_MODULE | ENCRYPTABLE_LDAP_MODULE => {
            if module.class == ENCRYPTABLE_LDAP_MODULE {
                let decrypted = crate::config::ldap::decrypt_options(&mut options, |name| {
                    std::env::var(name).ok()
                });
                if let Err((key, message)) = decrypted {
                    let span = module.option(&key).map_or(module_span, span_of);
                    ctx.push(Diagnostic::error(
                        span,
                        format!("EncryptableLDAPLoginModule option `{key}` {message}"),
                    ));
                    return None;
                }
            }
            warn_unknown_ldap_options(ctx, module, &span_of);
            let config = crate::config::ldap::login(&options, &base_dir);
            match config {
                Ok(mut config) => {
                    config.span = Some(module_span.clone());
                    // The password lives in the module's settings only: the options map is
                    // printed by `check --json` and compared by reload.
                    for secret in ["connectionPassword", "encryptionPassword"] {
                        if let Some(p) = options.get_mut(secret) {
                            *p = "***".to_owned();
                        }
                    }
                    LoginModuleKind::Ldap(Box::new(config))
                }
                Err(e) => {
                    let span = module.option(e.option).map_or(module_span, span_of);
                    ctx.push(Diagnostic::error(
                        span,
                        format!("LDAPLoginModule option `{}` {}", e.option, e.message),
                    ));
                    return None;
                }
            }
        }
        other => {
            // Ignoring a required module would let the remaining modules admit people it
            // would have refused: fail closed.
            let blocking = matches!(module.flag.as_str(), "required" | "requisite");
            let message = format!("login module `{other}` is not supported by ferromq");
            let hint = "supported: PropertiesLoginModule, GuestLoginModule, TextFileCertificateLoginModule, LDAPLoginModule, EncryptableLDAPLoginModule";
            ctx.push(if blocking {
                Diagnostic::error(module_span, format!("{message}, and it is {}", module.flag))
                    .with_hint(hint)
            } else {
                Diagnostic::warning(
                    module_span,
                    format!("{message}; it is {} and ignored", module.flag),
                )
                .with_hint(hint)
            });
            LoginModuleKind::Unsupported
        }
    };
    Some(LoginModule {
        class: module.class.clone(),
        flag: module.flag.clone(),
        options,
        kind,
    })
}

/// Options ActiveMQ's PropertiesLoginModule reads (through its `PropertiesLoader`).
const PROPERTIES_OPTIONS: &[&str] = &[
    "org.apache.activemq.jaas.properties.user",
    "org.apache.activemq.jaas.properties.group",
    "reload",
    "decrypt",
    "algorithm",
    "baseDir",
    "debug",
];
/// Options of TextFileCertificateLoginModule.
const CERTIFICATE_OPTIONS: &[&str] = &[
    "org.apache.activemq.jaas.textfiledn.user",
    "org.apache.activemq.jaas.textfiledn.group",
    "reload",
    "baseDir",
    "debug",
];
/// Options of GuestLoginModule.
const GUEST_OPTIONS: &[&str] = &[
    "org.apache.activemq.jaas.guest.user",
    "org.apache.activemq.jaas.guest.group",
    "credentialsInvalidate",
    "debug",
];

/// An option a login module does not know is ignored by ActiveMQ too, which hides typos
/// (`relaod=true`, `userSerchMatching`): warn, with the closest known name.
fn warn_unknown_options(
    ctx: &mut Ctx<'_>,
    module: &JaasModule,
    module_name: &str,
    known: &[&str],
    span_of: &dyn Fn(&JaasOption) -> Span,
) {
    for option in &module.options {
        if known.contains(&option.key.as_str()) {
            continue;
        }
        let mut d = Diagnostic::warning(
            span_of(option),
            format!(
                "`{}` is not an option of the {module_name}; it is ignored",
                option.key
            ),
        );
        if let Some(hint) = known_names::did_you_mean(&option.key, known.iter().copied()) {
            d = d.with_hint(hint);
        }
        ctx.push(d);
    }
}

fn warn_unknown_ldap_options(
    ctx: &mut Ctx<'_>,
    module: &JaasModule,
    span_of: &dyn Fn(&JaasOption) -> Span,
) {
    use crate::config::ldap::{ENCRYPTION_OPTIONS, IGNORED_LOGIN_OPTIONS, LOGIN_OPTIONS};
    let known: Vec<&str> = LOGIN_OPTIONS
        .iter()
        .chain(IGNORED_LOGIN_OPTIONS)
        .chain(ENCRYPTION_OPTIONS)
        .copied()
        .collect();
    warn_unknown_options(ctx, module, "LDAP login module", &known, span_of);
}

fn user_and_group_files(
    ctx: &mut Ctx<'_>,
    file: &LoginConfigFile,
    module: &JaasModule,
    options: &BTreeMap<String, String>,
    base_dir: &Path,
    user_key: &str,
    group_key: &str,
) -> Option<(PathBuf, PathBuf)> {
    let mut resolved = Vec::new();
    for key in [user_key, group_key] {
        let (Some(value), Some(option)) = (options.get(key), module.option(key)) else {
            ctx.push(
                Diagnostic::error(
                    Span::new(file.file.clone(), module.line, module.col),
                    format!("`{}` needs option `{key}`", module.class),
                )
                .with_hint(format!(
                    "{key}=\"{}\"",
                    if key == user_key {
                        "users.properties"
                    } else {
                        "groups.properties"
                    }
                )),
            );
            return None;
        };
        let path = base_dir.join(value);
        let span = Span::new(file.file.clone(), option.line, option.col);
        resolved.push((path.clone(), read_properties(ctx, &path, span)));
    }
    let [(users_file, users), (groups_file, groups)] = <[_; 2]>::try_from(resolved).ok()?;
    if module.class == PROPERTIES_MODULE {
        if let Some(users) = &users {
            check_decryption(ctx, file, module, options, &users_file, users)?;
        }
    }
    if let (Some(users), Some(groups)) = (users, groups) {
        check_group_members(ctx, &groups_file, &users, &groups);
    }
    Some((users_file, groups_file))
}

/// With `decrypt=true`, every `ENC(...)` password must decrypt now, as the broker will decrypt
/// it at start and on each reload: an error points at its line of users.properties and never
/// shows the value. Without `decrypt=true` an `ENC(...)` password is taken literally (as
/// ActiveMQ does), which is almost never meant: warn.
fn check_decryption(
    ctx: &mut Ctx<'_>,
    file: &LoginConfigFile,
    module: &JaasModule,
    options: &BTreeMap<String, String>,
    users_file: &Path,
    users: &[properties::Property],
) -> Option<()> {
    use crate::security::tables::Decryption;
    let users_span = |line: u32| Span::new(Arc::new(users_file.to_path_buf()), line, 1);
    let decryption = match Decryption::from_options(options) {
        Ok(d) => d,
        Err(e) => {
            let span = module.option("algorithm").map_or_else(
                || Span::new(file.file.clone(), module.line, module.col),
                |o| Span::new(file.file.clone(), o.line, o.col),
            );
            ctx.push(Diagnostic::error(
                span,
                format!("PropertiesLoginModule option `algorithm`: {e}"),
            ));
            return None;
        }
    };
    let Some(decryption) = decryption else {
        if let Some(user) = users
            .iter()
            .find(|u| crate::config::jasypt::enc_inner(&u.value).is_some())
        {
            ctx.push(
                Diagnostic::warning(
                    users_span(user.line),
                    format!(
                        "the password of `{}` is ENC(...), but login.config does not say \
                         decrypt=true: the ENC(...) text itself is the password",
                        user.key
                    ),
                )
                .with_hint("add decrypt=true (and algorithm=... if not PBEWithMD5AndDES) to the PropertiesLoginModule in login.config"),
            );
        }
        return Some(());
    };
    let mut ok = true;
    for user in users {
        if let Err(e) = decryption.decrypt(&user.value) {
            ok = false;
            ctx.push(
                Diagnostic::error(
                    users_span(user.line),
                    format!("password of `{}` {e}", user.key),
                )
                .with_hint(format!(
                    "set {} to the password given to `ferromq encrypt` / `activemq encrypt`",
                    crate::security::tables::ENCRYPTION_PASSWORD_ENV
                )),
            );
        }
    }
    ok.then_some(())
}

/// Read and parse a properties file named by a login module; errors point at the option that
/// names it (missing file) or at the bad line.
fn read_properties(
    ctx: &mut Ctx<'_>,
    path: &Path,
    named_at: Span,
) -> Option<Vec<properties::Property>> {
    ctx.read_file(path);
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            ctx.push(
                Diagnostic::error(named_at, format!("cannot read {}: {e}", path.display()))
                    .with_hint("paths in login.config are relative to login.config's directory"),
            );
            return None;
        }
    };
    match properties::parse(&text) {
        Ok(props) => Some(props),
        Err(e) => {
            ctx.push(Diagnostic::error(
                Span::new(Arc::new(path.to_path_buf()), e.line, 1),
                e.to_string(),
            ));
            None
        }
    }
}

/// A group that lists someone who is not in the users file is almost always a typo.
fn check_group_members(
    ctx: &mut Ctx<'_>,
    groups_file: &Path,
    users: &[properties::Property],
    groups: &[properties::Property],
) {
    let file = Arc::new(groups_file.to_path_buf());
    for group in groups {
        for member in values::parse_comma_list(&group.value) {
            if !users.iter().any(|u| u.key == member) {
                let names = users.iter().map(|u| u.key.as_str());
                let mut d = Diagnostic::warning(
                    Span::new(file.clone(), group.line, 1),
                    format!(
                        "group `{}` lists `{member}`, who is not in the users file",
                        group.key
                    ),
                );
                if let Some(hint) = known_names::did_you_mean(&member, names) {
                    d = d.with_hint(hint);
                }
                ctx.push(d);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_known_properties_only() {
        let props: BTreeMap<String, String> =
            [("activemq.conf".to_owned(), "/etc/amq".to_owned())].into();
        assert_eq!(
            expand("${activemq.conf}/users.properties", &props),
            Ok("/etc/amq/users.properties".to_owned())
        );
        assert_eq!(expand("plain", &props), Ok("plain".to_owned()));
        assert_eq!(expand("${nope}/x", &props), Err("nope".to_owned()));
    }
}
