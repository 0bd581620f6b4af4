//! `<plugins>`: authentication (simple, JAAS), authorization and runtime configuration.
//!
//! Security plugins fail closed: a plugin ferromq cannot honour (an LDAP authorization map, a
//! required JAAS module it does not implement) is an error, never a silent "allow everything".

use super::{delivery, jaas_plugin, Ctx};
use crate::config::delivery_policy::RedeliveryPlugin;
use crate::config::diagnostic::{Diagnostic, Span};
use crate::config::model::{
    Authentication, AuthorizationConfig, AuthzEntry, DestinationKind, Listener, PrincipalKind,
    ReloadSettings, Secret, SimpleAuth, SimpleUser,
};
use crate::config::tree::{Element, Namespace};
use crate::config::values;

const GROUP_PRINCIPAL: &str = "org.apache.activemq.jaas.GroupPrincipal";
const USER_PRINCIPAL: &str = "org.apache.activemq.jaas.UserPrincipal";

pub(super) struct Security {
    pub authentication: Authentication,
    pub authorization: Option<AuthorizationConfig>,
    pub reload: Option<ReloadSettings>,
    /// `<redeliveryPlugin>` (not security, but a plugin: read in the same pass).
    pub redelivery: Option<RedeliveryPlugin>,
}

pub(super) fn plugins(ctx: &mut Ctx<'_>, broker: &Element, listeners: &[Listener]) -> Security {
    let mut security = Security {
        authentication: Authentication::None,
        authorization: None,
        reload: None,
        redelivery: None,
    };
    let mut authentication_at: Option<(String, Span)> = None;
    warn_spring_plugins(ctx, broker);
    for plugin in ctx.items(broker, "plugins") {
        let authentication = match plugin.name.as_str() {
            "simpleAuthenticationPlugin" => Some(Authentication::Simple(simple(ctx, plugin))),
            "jaasAuthenticationPlugin" => {
                jaas_plugin::jaas(ctx, plugin, "configuration", "activemq")
                    .map(Authentication::Jaas)
            }
            "jaasCertificateAuthenticationPlugin" => {
                warn_without_client_certificates(ctx, plugin, listeners);
                jaas_plugin::jaas(ctx, plugin, "configuration", "activemq")
                    .map(Authentication::JaasCertificate)
            }
            "jaasDualAuthenticationPlugin" => {
                jaas_plugin::jaas_dual(ctx, plugin).map(|(password, certificate)| {
                    Authentication::JaasDual {
                        password,
                        certificate,
                    }
                })
            }
            "authorizationPlugin" => {
                if security.authorization.is_some() {
                    ctx.push(Diagnostic::error(
                        plugin.span.clone(),
                        "a second authorizationPlugin; merge their entries into one",
                    ));
                }
                security.authorization = Some(authorization(ctx, plugin));
                None
            }
            "redeliveryPlugin" => {
                if security.redelivery.is_some() {
                    ctx.push(Diagnostic::error(
                        plugin.span.clone(),
                        "a second redeliveryPlugin; merge their policies into one",
                    ));
                }
                warn_without_scheduler(ctx, broker, plugin);
                security.redelivery = Some(delivery::redelivery_plugin(ctx, plugin));
                None
            }
            "runtimeConfigurationPlugin" => {
                ctx.mark(plugin);
                let check_period_ms = match ctx.int_attr(plugin, "checkPeriod") {
                    Some(ms) if ms < 0 => {
                        if let Some(a) = ctx.attr(plugin, "checkPeriod") {
                            ctx.value_error(
                                a,
                                "checkPeriod cannot be negative",
                                "0 turns polling off",
                            );
                        }
                        0
                    }
                    Some(ms) => ms as u64,
                    None => 0,
                };
                security.reload = Some(ReloadSettings { check_period_ms });
                None
            }
            _ => None, // other plugins: the names pass reports them
        };
        if let Some(auth) = authentication {
            if let Some((first, _)) = &authentication_at {
                ctx.push(
                    Diagnostic::error(
                        plugin.span.clone(),
                        format!("a second authentication plugin ({} is already configured)", first),
                    )
                    .with_hint("ferromq supports one authentication plugin; jaasDualAuthenticationPlugin combines certificates and passwords"),
                );
            } else {
                authentication_at = Some((plugin.name.clone(), plugin.span.clone()));
                security.authentication = auth;
            }
        }
    }
    security
}

/// ActiveMQ refuses to start a `redeliveryPlugin` unless the broker has
/// `schedulerSupport="true"` (it schedules redeliveries with the JMS scheduler); ferromq
/// schedules them itself, so the file works here either way: say so, for a file shared with
/// ActiveMQ.
fn warn_without_scheduler(ctx: &mut Ctx<'_>, broker: &Element, plugin: &Element) {
    // Read here (marked used): with a redeliveryPlugin the attribute matters to ActiveMQ, so
    // it is not reported as "not acted on".
    let scheduler = ctx
        .attr(broker, "schedulerSupport")
        .and_then(|a| values::parse_bool(&a.value).ok())
        .unwrap_or(false);
    if !scheduler {
        ctx.push(
            Diagnostic::warning(
                plugin.span.clone(),
                "ActiveMQ refuses to start a redeliveryPlugin without schedulerSupport=\"true\" on <broker>",
            )
            .with_hint(
                "ferromq schedules redeliveries itself and serves the plugin; add \
                 schedulerSupport=\"true\" to <broker> if ActiveMQ reads this file too",
            ),
        );
    }
}

/// A Spring `<bean>` among the plugins could be a custom security plugin: say clearly that it
/// does not run.
fn warn_spring_plugins(ctx: &mut Ctx<'_>, broker: &Element) {
    for holder in broker.children_named("plugins").filter(|p| p.is_activemq()) {
        for bean in holder.children.iter().filter(|c| c.ns == Namespace::Beans) {
            let class = bean.attr_value("class").unwrap_or("?");
            ctx.push(
                Diagnostic::warning(
                    bean.span.clone(),
                    format!(
                        "Spring bean plugin `{class}` is not run: ferromq cannot load Java plugins"
                    ),
                )
                .with_hint("if it enforced security, express that with the supported plugins"),
            );
        }
    }
}

fn warn_without_client_certificates(ctx: &mut Ctx<'_>, plugin: &Element, listeners: &[Listener]) {
    let asks = listeners
        .iter()
        .any(|l| l.scheme.is_tls() && (l.options.need_client_auth || l.options.want_client_auth));
    if !asks {
        ctx.push(
            Diagnostic::warning(
                plugin.span.clone(),
                "jaasCertificateAuthenticationPlugin, but no TLS connector asks for client certificates: nobody can log in",
            )
            .with_hint("add ?needClientAuth=true to an mqtt+ssl:// connector"),
        );
    }
}

fn simple(ctx: &mut Ctx<'_>, plugin: &Element) -> SimpleAuth {
    ctx.mark(plugin);
    let mut users: Vec<SimpleUser> = Vec::new();
    for user in ctx.items(plugin, "users") {
        if user.name != "authenticationUser" {
            continue;
        }
        ctx.mark(user);
        let username = ctx
            .attr(user, "username")
            .map(|a| a.value.trim().to_owned());
        let password = ctx.attr(user, "password").map(|a| a.value.clone());
        let groups = ctx
            .attr(user, "groups")
            .map(|a| values::parse_comma_list(&a.value))
            .unwrap_or_default();
        let (Some(username), Some(password)) = (username, password) else {
            ctx.push(
                Diagnostic::error(
                    user.span.clone(),
                    "<authenticationUser> needs both username and password",
                )
                .with_hint(
                    "<authenticationUser username=\"admin\" password=\"...\" groups=\"admins\"/>",
                ),
            );
            continue;
        };
        if username.is_empty() {
            ctx.push(Diagnostic::error(user.span.clone(), "empty username"));
            continue;
        }
        if let Some(first) = users.iter().find(|u| u.username == username) {
            ctx.push(Diagnostic::error(
                user.span.clone(),
                format!(
                    "user `{username}` is defined twice (first at line {})",
                    first.span.line
                ),
            ));
            continue;
        }
        users.push(SimpleUser {
            username,
            password: Secret(password),
            groups,
            span: user.span.clone(),
        });
    }
    let text = |ctx: &mut Ctx<'_>, name: &str| {
        ctx.attr(plugin, name)
            .map(|a| a.value.trim().to_owned())
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "anonymous".to_owned())
    };
    SimpleAuth {
        users,
        anonymous_access_allowed: ctx
            .bool_attr(plugin, "anonymousAccessAllowed")
            .unwrap_or(false),
        anonymous_user: text(ctx, "anonymousUser"),
        anonymous_group: text(ctx, "anonymousGroup"),
        span: plugin.span.clone(),
    }
}

/// A Spring element (`<bean>`, `<ref>`) written as the plugin's `<map>`, which ferromq does not
/// read (ActiveMQ instantiates it, e.g. the legacy `LDAPAuthorizationMap`).
fn map_bean(plugin: &Element) -> Option<&Element> {
    plugin
        .children
        .iter()
        .filter(|c| c.is_activemq() && c.name == "map")
        .flat_map(|map| map.children.iter())
        .find(|c| !c.is_activemq())
}

fn authorization(ctx: &mut Ctx<'_>, plugin: &Element) -> AuthorizationConfig {
    ctx.mark(plugin);
    let mut config = AuthorizationConfig::default();
    let maps = ctx.items(plugin, "map");
    if let (true, Some(bean)) = (maps.is_empty(), map_bean(plugin)) {
        let class = bean.attr_value("class").unwrap_or("?");
        let ldap = class.contains("LDAP");
        ctx.push(
            Diagnostic::error(
                bean.span.clone(),
                format!(
                    "the authorization map is a Spring <{}> of class `{class}`, which ferromq \
                     does not read: every destination would be denied",
                    bean.name
                ),
            )
            .with_hint(if ldap {
                "for LDAP write ActiveMQ's <cachedLDAPAuthorizationMap> element, which ferromq \
                 reads (docs/ldap.md); the legacy LDAPAuthorizationMap bean's properties differ"
            } else {
                "list the entries in <map><authorizationMap><authorizationEntries>...\
                 </authorizationEntries></authorizationMap></map>"
            }),
        );
    } else if maps.is_empty() {
        ctx.push(
            Diagnostic::error(plugin.span.clone(), "authorizationPlugin without a <map>: every destination would be denied")
                .with_hint("<map><authorizationMap><authorizationEntries>...</authorizationEntries></authorizationMap></map>"),
        );
    }
    for map in maps {
        if map.name == "cachedLDAPAuthorizationMap" {
            config.ldap = ldap_map(ctx, map);
            continue;
        }
        if map.name != "authorizationMap" {
            ctx.mark_subtree(map);
            ctx.push(
                Diagnostic::error(
                    map.span.clone(),
                    format!("<{}> is not supported; ferromq reads <authorizationMap> and <cachedLDAPAuthorizationMap>", map.name),
                )
                .with_hint("ferromq refuses to run without the authorization you asked for; list the entries in an <authorizationMap>"),
            );
            continue;
        }
        ctx.mark(map);
        let principal = principal_kind(ctx, map, PrincipalKind::Group);
        let mut entries = ctx.items(map, "authorizationEntries");
        entries.extend(ctx.items(map, "entries"));
        for element in entries {
            if element.name == "authorizationEntry" {
                if let Some(entry) = entry(ctx, element, principal, EntryRole::Normal) {
                    config.entries.push(entry);
                }
            }
        }
        let defaults = ctx.items(map, "defaultEntry");
        if let Some(element) = defaults.iter().find(|e| e.name == "authorizationEntry") {
            config.default_entry = entry(ctx, element, principal, EntryRole::Default);
        }
        let temps = ctx.items(map, "tempDestinationAuthorizationEntry");
        if let Some(element) = temps
            .iter()
            .find(|e| e.name == "tempDestinationAuthorizationEntry")
        {
            config.temp_entry = entry(ctx, element, principal, EntryRole::Temp);
        }
    }
    config
}

/// `<cachedLDAPAuthorizationMap>`: its attributes (ActiveMQ's names and defaults, plus the
/// ferromq connection extensions); the entries are loaded from LDAP at run time.
fn ldap_map(
    ctx: &mut Ctx<'_>,
    map: &Element,
) -> Option<(Box<crate::config::ldap::LdapAuthzMapConfig>, Span)> {
    ctx.mark(map);
    let mut attrs = std::collections::BTreeMap::new();
    for name in crate::config::ldap::MAP_ATTRIBUTES {
        if let Some(a) = ctx.attr(map, name) {
            attrs.insert((*name).to_owned(), a.value.clone());
        }
    }
    for name in [
        "startTLS",
        "trustedCertificates",
        "connectTimeout",
        "readTimeout",
    ] {
        if let Some(a) = ctx.ext_attr(map, name) {
            attrs.insert(name.to_owned(), a.value.clone());
        }
    }
    match crate::config::ldap::authz_map(&attrs, &ctx.config_dir.clone()) {
        Ok(config) => Some((Box::new(config), map.span.clone())),
        Err(e) => {
            let span = map
                .attrs
                .iter()
                .find(|a| a.name == e.option)
                .map_or_else(|| map.span.clone(), |a| a.value_span.clone());
            ctx.push(Diagnostic::error(
                span,
                format!("cachedLDAPAuthorizationMap `{}` {}", e.option, e.message),
            ));
            None
        }
    }
}

fn principal_kind(ctx: &mut Ctx<'_>, element: &Element, inherited: PrincipalKind) -> PrincipalKind {
    let Some(attr) = ctx.attr(element, "groupClass") else {
        return inherited;
    };
    match attr.value.trim() {
        GROUP_PRINCIPAL => PrincipalKind::Group,
        USER_PRINCIPAL => PrincipalKind::User,
        other => {
            ctx.value_error(
                attr,
                format!("groupClass `{other}` is not supported"),
                "use org.apache.activemq.jaas.GroupPrincipal (names are groups) or org.apache.activemq.jaas.UserPrincipal (names are users)",
            );
            inherited
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EntryRole {
    Normal,
    /// `<defaultEntry>`: applies to every destination no other entry matches.
    Default,
    /// `<tempDestinationAuthorizationEntry>`: applies to temporary destinations.
    Temp,
}

fn entry(
    ctx: &mut Ctx<'_>,
    element: &Element,
    inherited: PrincipalKind,
    role: EntryRole,
) -> Option<AuthzEntry> {
    ctx.mark(element);
    let kinds = [
        ("topic", DestinationKind::Topic),
        ("queue", DestinationKind::Queue),
        ("tempTopic", DestinationKind::TempTopic),
        ("tempQueue", DestinationKind::TempQueue),
    ];
    let mut destinations: Vec<(DestinationKind, Vec<String>, Span)> = Vec::new();
    for (attr_name, kind) in kinds {
        if let Some(attr) = ctx.attr(element, attr_name) {
            destinations.push((
                kind,
                values::parse_comma_list(&attr.value),
                attr.span.clone(),
            ));
        }
    }
    let list = |ctx: &mut Ctx<'_>, name: &str| {
        ctx.attr(element, name)
            .map(|a| values::parse_comma_list(&a.value))
            .unwrap_or_default()
    };
    let read = list(ctx, "read");
    let write = list(ctx, "write");
    let admin = list(ctx, "admin");
    let principal_kind = principal_kind(ctx, element, inherited);
    if let Some((_, _, span)) = destinations.get(1) {
        ctx.push(
            Diagnostic::error(
                span.clone(),
                "an entry names one destination kind: topic, queue, tempTopic or tempQueue",
            )
            .with_hint("write a separate entry for each kind"),
        );
        return None;
    }
    if let (
        Some((DestinationKind::TempTopic | DestinationKind::TempQueue, _, span)),
        EntryRole::Normal,
    ) = (destinations.first(), role)
    {
        ctx.push(
            Diagnostic::warning(
                span.clone(),
                "an authorizationEntry for temporary destinations is never consulted",
            )
            .with_hint(
                "ActiveMQ (and ferromq) decide temporary queues and topics by \
                 <tempDestinationAuthorizationEntry> alone; move read/write/admin there",
            ),
        );
    }
    let (kind, patterns) = match (destinations.pop(), role) {
        (Some((kind, patterns, _)), _) if !patterns.is_empty() => (kind, patterns),
        (None, EntryRole::Default) => (DestinationKind::Topic, vec![">".to_owned()]),
        (None, EntryRole::Temp) => (DestinationKind::TempTopic, vec![">".to_owned()]),
        _ => {
            ctx.push(
                Diagnostic::error(
                    element.span.clone(),
                    "authorizationEntry without a destination",
                )
                .with_hint("add topic=\"pattern\" (e.g. topic=\"sensors.>\") or queue=\"pattern\""),
            );
            return None;
        }
    };
    Some(AuthzEntry {
        kind,
        patterns,
        read,
        write,
        admin,
        principal_kind,
        span: element.span.clone(),
    })
}
