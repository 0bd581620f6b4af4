//! The web console: ActiveMQ's `jetty.xml` (imported by activemq.xml) declares it with the
//! `jettyPort` bean (`org.apache.activemq.web.WebConsolePort`, properties `host` and `port`)
//! and its users with the `securityLoginService` bean's `config` property
//! (`${activemq.conf}/jetty-realm.properties`). ferromq's own form is
//! `<ferromq:console host=".." port=".." realm=".." metricsOpen="false" sslContext="false"/>`
//! inside `<broker>`; it wins over jetty.xml. The realm file is read here, so that `check`
//! reports a missing file or a line it cannot read at its file:line:column.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::Ctx;
use crate::config::diagnostic::{Diagnostic, Span};
use crate::config::model::ConsoleConfig;
use crate::config::tree::{Attr, Element, Namespace};
use crate::console::realm;

/// The extension element's local name.
pub(super) const ELEMENT: &str = "console";
/// ActiveMQ's console address when enabled without one.
pub const DEFAULT_HOST: &str = "127.0.0.1";
pub const DEFAULT_PORT: u16 = 8161;
const WEB_CONSOLE_PORT_CLASS: &str = "org.apache.activemq.web.WebConsolePort";
const ATTRIBUTES: [&str; 6] = [
    "host",
    "port",
    "realm",
    "metricsOpen",
    "sslContext",
    "maximumConnections",
];
/// Concurrent console connections by default: plenty for a few admins and scrapers, few enough
/// that idle sockets cannot exhaust the process's descriptors.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 64;

/// The console the file asks for, `None` when neither jetty.xml nor `<ferromq:console>`
/// enables it.
pub(super) fn console(
    ctx: &mut Ctx<'_>,
    root: &Element,
    broker: &Element,
) -> Option<ConsoleConfig> {
    let jetty = jetty_beans(ctx, root);
    let element = ferromq_element(ctx, broker);
    let mut console = match (element, jetty) {
        (Some(element), jetty) => from_element(ctx, element, jetty.and_then(|j| j.realm))?,
        (None, Some(jetty)) => ConsoleConfig {
            host: jetty.host.unwrap_or_else(|| DEFAULT_HOST.to_owned()),
            port: jetty.port.unwrap_or(DEFAULT_PORT),
            source: "jetty.xml",
            realm: jetty.realm.map(|(path, _)| path),
            users: Vec::new(),
            metrics_open: false,
            tls: false,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            span: Some(jetty.span),
        },
        (None, None) => return None,
    };
    let realm_span = console.span.clone();
    if let Some(path) = console.realm.clone() {
        console.users = read_realm(ctx, &path, realm_span.clone());
        if let Some(warning) = nobody_may_use(&console.users, &path, realm_span) {
            ctx.push(warning);
        }
    }
    Some(console)
}

/// Users, but none with a role the console knows: every login would be refused (403), and
/// the console would serve nobody. A warning, not an error: the console itself starts and a
/// reload of the realm file can fix it (Jetty's realm files often carry roles of other web
/// apps, so users without ours are normal; only when none has one is something wrong).
fn nobody_may_use(users: &[realm::RealmUser], path: &Path, at: Option<Span>) -> Option<Diagnostic> {
    if users.is_empty() || users.iter().any(realm::RealmUser::may_read) {
        return None;
    }
    let mut roles: Vec<&str> = users
        .iter()
        .flat_map(|u| u.roles.iter().map(String::as_str))
        .collect();
    roles.sort_unstable();
    roles.dedup();
    let found = if roles.is_empty() {
        "no roles at all".to_owned()
    } else {
        format!("only {}", roles.join(", "))
    };
    Some(
        Diagnostic::warning(
            at,
            format!(
                "no user of the console realm file {} has the role `{}` or `{}` ({found}): \
                 nobody can use the web console",
                path.display(),
                realm::ADMIN_ROLE,
                realm::USER_ROLE
            ),
        )
        .with_hint(format!(
            "the console accepts two roles: `{}` (reads and acts) and `{}` (reads); give a \
             user one of them, e.g. `NAME: PASSWORD, {}` (docs/console.md, \"Users and roles\")",
            realm::ADMIN_ROLE,
            realm::USER_ROLE,
            realm::USER_ROLE
        )),
    )
}

/// What jetty.xml's beans say.
struct JettyBeans {
    host: Option<String>,
    port: Option<u16>,
    /// The realm file and where its `config` property is.
    realm: Option<(PathBuf, Span)>,
    span: Span,
}

fn is_bean_with_id(element: &Element, id: &str) -> bool {
    element.ns == Namespace::Beans && element.name == "bean" && element.attr_value("id") == Some(id)
}

/// A `<property name=.. value=..>` of a bean.
fn property<'e>(bean: &'e Element, name: &str) -> Option<&'e Attr> {
    bean.children
        .iter()
        .filter(|c| c.ns == Namespace::Beans && c.name == "property")
        .find(|p| p.attr_value("name") == Some(name))
        .and_then(|p| p.attr("value"))
}

fn jetty_beans(ctx: &mut Ctx<'_>, root: &Element) -> Option<JettyBeans> {
    let port_bean = root.children.iter().find(|c| {
        is_bean_with_id(c, "jettyPort")
            || (c.ns == Namespace::Beans
                && c.name == "bean"
                && c.attr_value("class") == Some(WEB_CONSOLE_PORT_CLASS))
    })?;
    let host = property(port_bean, "host").map(|a| a.value.trim().to_owned());
    let port = property(port_bean, "port").and_then(|a| port_value(ctx, a));
    let realm = root
        .children
        .iter()
        .find(|c| is_bean_with_id(c, "securityLoginService"))
        .and_then(|bean| property(bean, "config"))
        .and_then(|attr| realm_path(ctx, attr).map(|path| (path, attr.value_span.clone())));
    Some(JettyBeans {
        host,
        port,
        realm,
        span: port_bean.span.clone(),
    })
}

/// `${activemq.conf}` (and other known properties) in a path that the loader left literal
/// (no PropertyPlaceholderConfigurer declared), then ActiveMQ's resource rules.
fn realm_path(ctx: &mut Ctx<'_>, attr: &Attr) -> Option<PathBuf> {
    // ActiveMQ's launcher always sets activemq.conf: the configuration file's directory.
    let mut properties = ctx.properties.clone();
    properties
        .entry("activemq.conf".to_owned())
        .or_insert_with(|| ctx.config_dir.display().to_string());
    match super::jaas_plugin::expand(&attr.value, &properties) {
        Ok(value) => Some(ctx.resource_path(value.trim())),
        Err(name) => {
            ctx.value_error(
                attr,
                format!("the realm file path uses `${{{name}}}`, which has no value"),
                "write the path, or set the property with --set NAME=VALUE",
            );
            None
        }
    }
}

fn port_value(ctx: &mut Ctx<'_>, attr: &Attr) -> Option<u16> {
    match attr.value.trim().parse::<u16>() {
        Ok(port) => Some(port),
        Err(_) => {
            ctx.value_error(
                attr,
                format!("the console port must be 0-65535, not `{}`", attr.value),
                "write a port number, e.g. 8161",
            );
            None
        }
    }
}

fn ferromq_element<'e>(ctx: &mut Ctx<'_>, broker: &'e Element) -> Option<&'e Element> {
    let mut found = None;
    for element in broker
        .children
        .iter()
        .filter(|c| c.ns == Namespace::Ferromq && c.name == ELEMENT)
    {
        ctx.mark(element);
        if found.is_some() {
            ctx.push(Diagnostic::error(
                element.span.clone(),
                "a second <ferromq:console>: write it once",
            ));
            continue;
        }
        found = Some(element);
    }
    found
}

fn from_element(
    ctx: &mut Ctx<'_>,
    element: &Element,
    jetty_realm: Option<(PathBuf, Span)>,
) -> Option<ConsoleConfig> {
    for attr in &element.attrs {
        let ours = matches!(attr.ns, None | Some(Namespace::Ferromq));
        if !ours || !ATTRIBUTES.contains(&attr.name.as_str()) {
            ctx.push(
                Diagnostic::error(
                    attr.span.clone(),
                    format!("unknown attribute `{}` on <ferromq:console>", attr.name),
                )
                .with_hint(format!("its attributes are {}", ATTRIBUTES.join(", "))),
            );
        } else {
            ctx.mark_attr(attr);
        }
    }
    for child in &element.children {
        ctx.mark_subtree(child);
        ctx.push(Diagnostic::error(
            child.span.clone(),
            "<ferromq:console> takes no elements, only attributes",
        ));
    }
    let mut bool_of = |name: &str| -> bool {
        let Some(attr) = element.attr(name) else {
            return false;
        };
        match crate::config::values::parse_bool(&attr.value) {
            Ok(b) => b,
            Err(e) => {
                ctx.push(e.into_diagnostic(attr.value_span.clone()));
                false
            }
        }
    };
    let metrics_open = bool_of("metricsOpen");
    let tls = bool_of("sslContext");
    let port = match element.attr("port") {
        Some(attr) => port_value(ctx, attr)?,
        None => DEFAULT_PORT,
    };
    let max_connections = match element.attr("maximumConnections") {
        Some(attr) => match attr.value.trim().parse::<u32>() {
            Ok(n) if n > 0 => n,
            _ => {
                ctx.value_error(
                    attr,
                    format!(
                        "maximumConnections must be a number of connections above 0, not `{}`",
                        attr.value
                    ),
                    "write e.g. 64",
                );
                DEFAULT_MAX_CONNECTIONS
            }
        },
        None => DEFAULT_MAX_CONNECTIONS,
    };
    let realm = match element.attr("realm") {
        Some(attr) => Some(realm_path(ctx, attr)?),
        None => jetty_realm.map(|(path, _)| path),
    };
    Some(ConsoleConfig {
        host: element
            .attr_value("host")
            .map_or_else(|| DEFAULT_HOST.to_owned(), |h| h.trim().to_owned()),
        port,
        source: "ferromq:console",
        realm,
        users: Vec::new(),
        metrics_open,
        tls,
        max_connections,
        span: Some(element.span.clone()),
    })
}

/// Read the realm file: its users, and an error at file:line:column for each line that cannot
/// be read (or at `at` when the file cannot be read at all).
fn read_realm(ctx: &mut Ctx<'_>, path: &Path, at: Option<Span>) -> Vec<realm::RealmUser> {
    ctx.read_file(path);
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => {
            ctx.push(
                Diagnostic::error(
                    at,
                    format!("cannot read the console realm file {}: {e}", path.display()),
                )
                .with_hint("create it with lines `user: password, role` (roles admin, user)"),
            );
            return Vec::new();
        }
    };
    let (users, errors) = realm::parse(&text);
    let file = Arc::new(path.to_path_buf());
    for error in errors {
        ctx.push(
            Diagnostic::error(
                Span::new(file.clone(), error.line, error.col),
                error.message,
            )
            .with_hint("write `user: password [,role ...]`; passwords plain, OBF:, MD5: or CRYPT:"),
        );
    }
    users
}

#[cfg(test)]
mod tests {
    use super::super::tests::{has, load, valid};

    #[test]
    fn no_console_without_jetty_or_element() {
        assert!(valid(load("")).console.is_none());
    }

    #[test]
    fn the_element_enables_it_with_defaults() {
        let console = valid(load("<ferromq:console/>")).console.expect("console");
        assert_eq!(console.address(), "127.0.0.1:8161");
        assert!(console.realm.is_none() && !console.metrics_open && !console.tls);
    }

    #[test]
    fn a_bad_port_is_an_error_at_its_value() {
        let loaded = load("<ferromq:console port=\"81610\"/>");
        assert!(has(&loaded.diagnostics, "the console port must be 0-65535"));
    }

    #[test]
    fn a_new_address_needs_a_restart_and_keeps_the_running_one() {
        let running = valid(load("<ferromq:console port=\"8161\"/>"));
        let mut moved = valid(load("<ferromq:console port=\"9161\"/>"));
        let diff = crate::config::diff::diff(&running, &moved);
        assert_eq!(diff.restart_needed.len(), 1, "{diff:?}");
        assert_eq!(diff.restart_needed[0].name, "console");
        assert_eq!(diff.restart_needed[0].requested, "127.0.0.1:9161");
        assert!(!diff.console_users);
        crate::config::diff::keep_running_values(&running, &mut moved);
        assert_eq!(moved.console.map(|c| c.port), Some(8161));
        let off = valid(load(""));
        let diff = crate::config::diff::diff(&off, &running);
        assert_eq!(diff.restart_needed[0].running, "off");
    }

    #[test]
    fn a_realm_whose_users_have_no_console_role_is_a_warning() {
        let dir = tempfile::tempdir().expect("tempdir");
        let realm = dir.path().join("realm.properties");
        let element = format!(
            "<ferromq:console port=\"0\" realm=\"{}\"/>",
            realm.display()
        );
        std::fs::write(&realm, "bob: pw, guest\ncarol: pw\n").expect("write");
        let loaded = load(&element);
        let warned: Vec<_> = loaded
            .diagnostics
            .warnings()
            .filter(|d| d.message.contains("nobody can use the web console"))
            .collect();
        assert_eq!(warned.len(), 1, "{warned:?}");
        assert!(
            warned[0]
                .message
                .contains("has the role `admin` or `user` (only guest)"),
            "{warned:?}"
        );
        std::fs::write(&realm, "bob: pw, guest\nalice: pw, user\n").expect("write");
        assert!(!has(&load(&element).diagnostics, "nobody can use"));
    }

    #[test]
    fn a_missing_realm_file_is_an_error() {
        let loaded = load("<ferromq:console port=\"0\" realm=\"/nonexistent/realm.properties\"/>");
        assert!(has(
            &loaded.diagnostics,
            "cannot read the console realm file"
        ));
    }
}
