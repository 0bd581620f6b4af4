//! `<transportConnectors>` -> [`Listener`]s, and `<networkConnectors>` (warned, not supported).
//!
//! URI options follow ActiveMQ's split: `transport.*` options go to each accepted connection,
//! bare ones to the listening socket, `wireFormat.*` to the codec. An option written in the form
//! ActiveMQ ignores (`defaultKeepAlive` without `transport.`) is ignored here too, with a warning
//! naming the form that works, so a file means the same to both brokers.

use std::collections::BTreeMap;

use super::Ctx;
use crate::config::diagnostic::{Diagnostic, Span};
use crate::config::known_names;
use crate::config::model::{
    Inactivity, Listener, ListenerOptions, Protocol, Scheme, SubscriptionStrategy,
};
use crate::config::stomp_options::HeartBeat;
use crate::config::tree::{Attr, Element};
use crate::config::uri::{self, TransportUri};
use crate::config::values;

/// Schemes ActiveMQ knows that ferromq does not serve: accepted with a "not served" warning.
const OTHER_SCHEMES: &[&str] = &[
    "tcp",
    "nio",
    "ssl",
    "nio+ssl",
    "amqp",
    "amqp+nio",
    "amqp+ssl",
    "amqp+nio+ssl",
    "amqp+ws",
    "amqp+wss",
    "auto",
    "auto+nio",
    "auto+ssl",
    "auto+nio+ssl",
    "vm",
    "udp",
    "http",
    "https",
    "multicast",
];

/// Schemes that look like STOMP over WebSocket but that ActiveMQ has no transport for (it
/// refuses to start with them): STOMP over WebSocket is served on `ws://` and `wss://`.
const NO_SUCH_STOMP_SCHEMES: &[(&str, &str)] = &[("stomp+ws", "ws"), ("stomp+wss", "wss")];

pub(super) fn listeners(ctx: &mut Ctx<'_>, broker: &Element) -> Vec<Listener> {
    let mut listeners: Vec<Listener> = Vec::new();
    let mut names: BTreeMap<String, Span> = BTreeMap::new();
    // Connectors dropped for an error: then "no MQTT connector" would only repeat the error.
    let mut broken = 0;
    for connector in ctx.items(broker, "transportConnectors") {
        if connector.name != "transportConnector" {
            continue; // reported by the names pass
        }
        ctx.mark(connector);
        let name_attr = ctx.attr(connector, "name");
        let Some(uri_attr) = ctx.attr(connector, "uri") else {
            ctx.push(
                Diagnostic::error(connector.span.clone(), "<transportConnector> has no `uri`")
                    .with_hint("e.g. uri=\"mqtt://0.0.0.0:1883\""),
            );
            broken += 1;
            continue;
        };
        let name = match name_attr {
            Some(a) if !a.value.trim().is_empty() => a.value.trim().to_owned(),
            _ => uri_attr.value.trim().to_owned(),
        };
        check_unique_name(ctx, &mut names, &name, connector);
        let parsed = match uri::parse(&uri_attr.value) {
            Ok(p) => p,
            Err(e) => {
                ctx.push(bad_uri(uri_attr, &e));
                broken += 1;
                continue;
            }
        };
        let Some(scheme) = Scheme::parse(&parsed.scheme) else {
            if !not_served(ctx, connector, uri_attr, &name, &parsed.scheme) {
                broken += 1;
            }
            continue;
        };
        if let Some(e) = &parsed.bad_port {
            ctx.push(bad_uri(uri_attr, e));
            // The options are still checked, so that one `check` names every problem.
            listener_options(ctx, connector, uri_attr, &parsed, scheme);
            broken += 1;
            continue;
        }
        let Some(port) = parsed.port else {
            ctx.push(
                Diagnostic::error(
                    uri_attr.value_span.clone(),
                    format!("connector `{name}` has no port"),
                )
                .with_hint(format!(
                    "write {scheme}://{}:PORT ({})",
                    display_host(&parsed.host),
                    usual_ports(scheme)
                )),
            );
            broken += 1;
            continue;
        };
        let options = listener_options(ctx, connector, uri_attr, &parsed, scheme);
        let listener = Listener {
            name,
            scheme,
            host: parsed.host,
            port,
            inactivity: Inactivity::of(&options),
            options,
            uri: uri_attr.value.clone(),
            published: super::published_address::policy(ctx, connector),
            span: connector.span.clone(),
        };
        check_clash(ctx, &listeners, &listener);
        listeners.push(listener);
    }
    if listeners.is_empty() && broken == 0 {
        ctx.push(
            Diagnostic::warning(broker.span.clone(), "no MQTT or STOMP connector: clients cannot connect")
                .with_hint("add <transportConnectors><transportConnector name=\"mqtt\" uri=\"mqtt://0.0.0.0:1883\"/></transportConnectors>"),
        );
    }
    listeners
}

/// The error of a URI that does not parse, pointing inside the attribute's value.
fn bad_uri(uri_attr: &Attr, e: &uri::UriError) -> Diagnostic {
    let span = span_in_value(uri_attr, e.offset);
    let d = Diagnostic::error(span, format!("bad connector URI: {}", e.message));
    if uri_attr.value.contains("#{") {
        // Left as written: another kind of expression, or a variable that is not set.
        return d.with_hint(
            "the URI holds a Spring expression `#{...}` ferromq did not evaluate: it evaluates \
             #{systemEnvironment['NAME']} and #{systemProperties['name']} (from --set/-D), with \
             an optional ?: 'default', when the variable is set; set it, add a default, or \
             write the value",
        );
    }
    match &e.hint {
        Some(h) => d.with_hint(h.clone()),
        None => d,
    }
}

fn check_unique_name(
    ctx: &mut Ctx<'_>,
    names: &mut BTreeMap<String, Span>,
    name: &str,
    connector: &Element,
) {
    if let Some(first) = names.get(name) {
        ctx.push(
            Diagnostic::error(
                connector.span.clone(),
                format!(
                    "a second connector named `{name}` (the first is at line {})",
                    first.line
                ),
            )
            .with_hint("connector names must be unique; rename one of them"),
        );
    } else {
        names.insert(name.to_owned(), connector.span.clone());
    }
}

/// Report a connector ferromq does not serve; `false` when its scheme is unknown (an error).
fn not_served(
    ctx: &mut Ctx<'_>,
    connector: &Element,
    uri_attr: &Attr,
    name: &str,
    scheme: &str,
) -> bool {
    ctx.mark_subtree(connector);
    let known = OTHER_SCHEMES.contains(&scheme);
    if known {
        let hint = if scheme.starts_with("auto") {
            "ActiveMQ's auto:// also detects MQTT and STOMP, but ferromq serves them only on \
             mqtt://, mqtt+nio://, mqtt+ssl://, mqtt+nio+ssl://, stomp://, stomp+nio://, \
             stomp+ssl://, stomp+nio+ssl://, ws:// and wss:// connectors"
        } else {
            "ferromq speaks MQTT and STOMP only; keep the connector for ActiveMQ or remove it"
        };
        ctx.push(
            Diagnostic::warning(
                connector.span.clone(),
                format!(
                    "connector `{name}` ({scheme}://) is not served: it is neither MQTT nor STOMP"
                ),
            )
            .with_hint(hint),
        );
    } else if let Some((_, ws)) = NO_SUCH_STOMP_SCHEMES.iter().find(|(s, _)| *s == scheme) {
        ctx.push(
            Diagnostic::error(
                uri_attr.value_span.clone(),
                format!("ActiveMQ has no `{scheme}://` transport (it would refuse to start)"),
            )
            .with_hint(format!(
                "STOMP over WebSocket is served on {ws}:// connectors: a client offering the \
                 `v12.stomp`, `v11.stomp`, `v10.stomp` or `stomp` sub-protocol (or no MQTT \
                 one) speaks STOMP there"
            )),
        );
    } else {
        let all = Scheme::ALL
            .iter()
            .map(|s| s.as_str())
            .chain(OTHER_SCHEMES.iter().copied());
        let hint = known_names::did_you_mean(scheme, all).unwrap_or_else(|| {
            "ferromq's schemes are mqtt, mqtt+nio, mqtt+ssl, mqtt+nio+ssl, stomp, stomp+nio, \
             stomp+ssl, stomp+nio+ssl, ws and wss"
                .into()
        });
        ctx.push(
            Diagnostic::error(
                uri_attr.value_span.clone(),
                format!("unknown transport scheme `{scheme}://` (ActiveMQ would refuse to start)"),
            )
            .with_hint(hint),
        );
    }
    known
}

/// Which field an option sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Opt {
    DefaultKeepAlive,
    MaxKeepAlive,
    ConnectAttemptTimeout,
    MaxFrameSize,
    MaximumConnections,
    Backlog,
    SubscriptionPrefetch,
    SubscriptionStrategy,
    PublishDollarTopics,
    UseInactivityMonitor,
    AllowLinkStealing,
    NeedClientAuth,
    WantClientAuth,
    DefaultHeartBeat,
    HbGracePeriodMultiplier,
    MaxDataLength,
}

impl Opt {
    /// The protocol the option is about; `None`: every connector.
    fn protocol(self) -> Option<Protocol> {
        match self {
            Opt::DefaultKeepAlive
            | Opt::MaxKeepAlive
            | Opt::SubscriptionStrategy
            | Opt::SubscriptionPrefetch
            | Opt::PublishDollarTopics => Some(Protocol::Mqtt),
            Opt::DefaultHeartBeat | Opt::HbGracePeriodMultiplier | Opt::MaxDataLength => {
                Some(Protocol::Stomp)
            }
            Opt::ConnectAttemptTimeout
            | Opt::MaxFrameSize
            | Opt::MaximumConnections
            | Opt::Backlog
            | Opt::UseInactivityMonitor
            | Opt::AllowLinkStealing
            | Opt::NeedClientAuth
            | Opt::WantClientAuth => None,
        }
    }
}

/// The option names ActiveMQ acts on for MQTT and STOMP connectors, in the form(s) it accepts
/// (STOMP: `StompTransportFilter`'s setters for `transport.*`, `StompWireFormat`'s for
/// `wireFormat.*`).
const ACTED: &[(&str, Opt)] = &[
    ("transport.defaultKeepAlive", Opt::DefaultKeepAlive),
    // ferromq's own (ActiveMQ never spoke MQTT 5): the Server Keep Alive cap.
    ("transport.maxKeepAlive", Opt::MaxKeepAlive),
    (
        "transport.connectAttemptTimeout",
        Opt::ConnectAttemptTimeout,
    ),
    ("wireFormat.maxFrameSize", Opt::MaxFrameSize),
    ("transport.maxFrameSize", Opt::MaxFrameSize),
    ("maximumConnections", Opt::MaximumConnections),
    ("backlog", Opt::Backlog),
    (
        "transport.activeMQSubscriptionPrefetch",
        Opt::SubscriptionPrefetch,
    ),
    ("transport.subscriptionStrategy", Opt::SubscriptionStrategy),
    ("transport.publishDollarTopics", Opt::PublishDollarTopics),
    ("transport.useInactivityMonitor", Opt::UseInactivityMonitor),
    ("allowLinkStealing", Opt::AllowLinkStealing),
    ("needClientAuth", Opt::NeedClientAuth),
    ("transport.needClientAuth", Opt::NeedClientAuth),
    ("wantClientAuth", Opt::WantClientAuth),
    ("transport.wantClientAuth", Opt::WantClientAuth),
    ("transport.defaultHeartBeat", Opt::DefaultHeartBeat),
    (
        "transport.hbGracePeriodMultiplier",
        Opt::HbGracePeriodMultiplier,
    ),
    ("transport.maxDataLength", Opt::MaxDataLength),
    ("wireFormat.maxDataLength", Opt::MaxDataLength),
];

/// The largest `transport.maxKeepAlive`: Server Keep Alive is a two-byte number of seconds.
const MAX_KEEP_ALIVE_LIMIT_MS: i64 = 65_535_000;

/// Forms ActiveMQ silently ignores (the option lands on the wrong object), with the form that
/// works.
const MISPLACED: &[(&str, &str)] = &[
    ("defaultKeepAlive", "transport.defaultKeepAlive"),
    ("maxKeepAlive", "transport.maxKeepAlive"),
    ("connectAttemptTimeout", "transport.connectAttemptTimeout"),
    ("maxFrameSize", "wireFormat.maxFrameSize"),
    ("subscriptionStrategy", "transport.subscriptionStrategy"),
    ("publishDollarTopics", "transport.publishDollarTopics"),
    ("useInactivityMonitor", "transport.useInactivityMonitor"),
    ("transport.maximumConnections", "maximumConnections"),
    ("transport.allowLinkStealing", "allowLinkStealing"),
    ("defaultHeartBeat", "transport.defaultHeartBeat"),
    (
        "hbGracePeriodMultiplier",
        "transport.hbGracePeriodMultiplier",
    ),
    ("maxDataLength", "transport.maxDataLength"),
];

fn listener_options(
    ctx: &mut Ctx<'_>,
    connector: &Element,
    uri_attr: &Attr,
    parsed: &TransportUri,
    scheme: Scheme,
) -> ListenerOptions {
    let mut options = ListenerOptions::default();
    if scheme.protocol() == Some(Protocol::Stomp) {
        // ActiveMQ's TransportConnector default; only its MQTT transport turns it on.
        options.allow_link_stealing = false;
    }
    let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
    for option in &parsed.options {
        let key = option.key.as_str();
        let span = span_in_value(uri_attr, option_offset(&uri_attr.value, key));
        if let Some(previous) = seen.insert(key, option.value.as_str()) {
            ctx.push(
                Diagnostic::warning(span.clone(), format!("option `{key}` is given twice"))
                    .with_hint(format!(
                        "the last value wins: `{}` replaces `{previous}`",
                        option.value
                    )),
            );
        }
        match ACTED.iter().find(|(name, _)| *name == key) {
            Some((_, opt)) if opt.protocol().is_none_or(|p| scheme.serves(p)) => {
                apply(ctx, &mut options, *opt, key, &option.value, span, scheme)
            }
            Some((_, opt)) => other_protocol_option(ctx, key, *opt, scheme, span),
            None => ignored_option(ctx, key, span),
        }
    }
    if seen.contains_key("wireFormat.maxFrameSize") && seen.contains_key("transport.maxFrameSize") {
        let span = span_in_value(
            uri_attr,
            option_offset(&uri_attr.value, "transport.maxFrameSize"),
        );
        ctx.push(
            Diagnostic::warning(
                span,
                "both wireFormat.maxFrameSize and transport.maxFrameSize are set",
            )
            .with_hint("the one written last wins; keep only wireFormat.maxFrameSize"),
        );
    }
    if let Some(b) = ctx.bool_attr(connector, "allowLinkStealing") {
        options.allow_link_stealing = b;
    }
    if options.max_keep_alive_ms.is_some() && !options.use_inactivity_monitor {
        ctx.push(
            Diagnostic::warning(
                span_in_value(
                    uri_attr,
                    option_offset(&uri_attr.value, "transport.maxKeepAlive"),
                ),
                "transport.maxKeepAlive has no effect with transport.useInactivityMonitor=false",
            )
            .with_hint("keep-alive is not enforced on this connector; remove one of the two"),
        );
    }
    if (options.need_client_auth || options.want_client_auth) && !scheme.is_tls() {
        let key = if options.need_client_auth {
            "needClientAuth"
        } else {
            "wantClientAuth"
        };
        ctx.push(
            Diagnostic::warning(
                span_in_value(uri_attr, option_offset(&uri_attr.value, key)),
                format!("{key} has no effect on a {scheme}:// connector without TLS"),
            )
            .with_hint(
                "use mqtt+ssl://, mqtt+nio+ssl://, stomp+ssl://, stomp+nio+ssl:// or wss:// \
                 for client certificates",
            ),
        );
    }
    options
}

/// An option of the other protocol (`transport.defaultKeepAlive` on `stomp://`,
/// `transport.defaultHeartBeat` on `mqtt://`): ActiveMQ's transport has no such property, so
/// it does nothing there; say which option this protocol uses instead.
fn other_protocol_option(ctx: &mut Ctx<'_>, key: &str, opt: Opt, scheme: Scheme, span: Span) {
    let (what, instead) = match opt.protocol() {
        Some(Protocol::Mqtt) => (
            "an MQTT option",
            "STOMP connectors use transport.defaultHeartBeat and transport.hbGracePeriodMultiplier \
             for inactivity; remove the option",
        ),
        _ => (
            "a STOMP option",
            "MQTT connectors use transport.defaultKeepAlive for inactivity; remove the option",
        ),
    };
    ctx.push(
        Diagnostic::warning(
            span,
            format!("option `{key}` is {what}: not acted on by a {scheme}:// connector"),
        )
        .with_hint(instead),
    );
}

fn ignored_option(ctx: &mut Ctx<'_>, key: &str, span: Span) {
    if let Some(key) = key.strip_prefix("amp;") {
        ctx.push(
            Diagnostic::warning(span, format!("option `amp;{key}` is ignored"))
                .with_hint("`&` is written `&amp;` once in XML; this URI has `&amp;amp;`"),
        );
        return;
    }
    if let Some((_, right)) = MISPLACED.iter().find(|(wrong, _)| *wrong == key) {
        ctx.push(
            Diagnostic::warning(
                span,
                format!("ActiveMQ ignores option `{key}` written this way"),
            )
            .with_hint(format!("write `{right}`")),
        );
        return;
    }
    let acted = ACTED.iter().map(|(name, _)| *name);
    let message = format!("option `{key}` is not acted on by ferromq");
    let diagnostic = match known_names::suggest(key, acted) {
        Some(s) => Diagnostic::warning(
            span,
            format!("{message} (and ActiveMQ ignores unknown options)"),
        )
        .with_hint(format!("did you mean `{s}`?")),
        None => Diagnostic::warning(span, message),
    };
    ctx.push(diagnostic);
}

fn apply(
    ctx: &mut Ctx<'_>,
    o: &mut ListenerOptions,
    opt: Opt,
    key: &str,
    value: &str,
    span: Span,
    scheme: Scheme,
) {
    let bad = |ctx: &mut Ctx<'_>, what: &str, hint: &str| {
        ctx.push(
            Diagnostic::error(span.clone(), format!("option `{key}={value}`: {what}"))
                .with_hint(hint.to_owned()),
        );
    };
    let number = value.trim().parse::<i64>();
    match opt {
        Opt::DefaultKeepAlive => match number {
            Ok(ms) if ms >= 0 => o.default_keep_alive_ms = ms as u64,
            _ => bad(
                ctx,
                "expected milliseconds (0 or more)",
                "e.g. transport.defaultKeepAlive=60000 for one minute",
            ),
        },
        Opt::MaxKeepAlive => match number {
            Ok(0) => o.max_keep_alive_ms = None,
            Ok(ms) if (1000..=MAX_KEEP_ALIVE_LIMIT_MS).contains(&ms) => {
                if ms % 1000 != 0 {
                    ctx.push(
                        Diagnostic::warning(
                            span.clone(),
                            format!("option `{key}={value}` is rounded down to {} s", ms / 1000),
                        )
                        .with_hint("Server Keep Alive is a whole number of seconds"),
                    );
                }
                o.max_keep_alive_ms = Some(ms as u64 / 1000 * 1000);
            }
            _ => bad(
                ctx,
                "expected milliseconds: 0 (no cap) or 1000 to 65535000",
                "milliseconds, like transport.defaultKeepAlive: 60000 caps MQTT 5 clients at one minute",
            ),
        },
        Opt::ConnectAttemptTimeout => match number {
            Ok(ms) => o.connect_attempt_timeout_ms = (ms > 0).then_some(ms as u64),
            Err(_) => bad(
                ctx,
                "expected milliseconds",
                "e.g. 30000; 0 or less turns the timeout off",
            ),
        },
        Opt::MaxFrameSize => match number {
            Ok(bytes) if bytes > 0 => {
                if scheme.serves(Protocol::Mqtt) {
                    o.max_frame_size_bytes = bytes as u64;
                }
                if scheme.serves(Protocol::Stomp) {
                    o.stomp.max_frame_size_bytes = Some(bytes as u64);
                }
            }
            _ => {
                // A size with a unit ("100mb") is worth translating; a number that is not
                // positive is not (its translation is itself).
                let hint = match values::parse_size_bytes(value) {
                    Ok(bytes) if number.is_err() && bytes > 0 => {
                        format!("ActiveMQ reads a plain number of bytes here: write {bytes}")
                    }
                    _ => "a number of bytes, e.g. 104857600 for 100 mb".to_owned(),
                };
                bad(ctx, "expected a positive number of bytes", &hint)
            }
        },
        Opt::MaximumConnections => match number {
            Ok(n) if n >= 1 => o.maximum_connections = Some(u32::try_from(n).unwrap_or(u32::MAX)),
            _ => bad(
                ctx,
                "expected a count of 1 or more",
                "remove the option for no limit",
            ),
        },
        Opt::Backlog => match number {
            Ok(n) if n >= 1 => o.backlog = u32::try_from(n).unwrap_or(u32::MAX),
            _ => bad(
                ctx,
                "expected a count of 1 or more",
                "remove the option for ActiveMQ's default of 5000",
            ),
        },
        // ActiveMQ: a value <= 0 means its defaults (MQTTProtocolConverter).
        Opt::SubscriptionPrefetch => match number {
            Ok(n) if n >= 1 => o.subscription_prefetch = Some(u16::try_from(n).unwrap_or(u16::MAX)),
            Ok(_) => o.subscription_prefetch = None,
            Err(_) => bad(
                ctx,
                "expected a count of messages",
                "remove the option for the default of 100",
            ),
        },
        Opt::SubscriptionStrategy => match value.trim() {
            "mqtt-default-subscriptions" => o.subscription_strategy = SubscriptionStrategy::Default,
            "mqtt-virtual-topic-subscriptions" => {
                o.subscription_strategy = SubscriptionStrategy::VirtualTopic;
                ctx.push(virtual_topic_warning(span));
            }
            _ => bad(
                ctx,
                "unknown subscription strategy",
                "use mqtt-default-subscriptions or mqtt-virtual-topic-subscriptions",
            ),
        },
        Opt::DefaultHeartBeat => match HeartBeat::parse(value) {
            Ok(beat) => o.stomp.default_heart_beat = beat,
            Err(what) => bad(
                ctx,
                &what,
                "two numbers of milliseconds `cx,cy`, as in a CONNECT frame's heart-beat \
                 header: e.g. 10000,0 closes clients that send no heart-beat header after 10 s \
                 of silence",
            ),
        },
        Opt::HbGracePeriodMultiplier => match value.trim().parse::<f32>() {
            Ok(m) if m.is_finite() && m > 0.0 => {
                o.stomp.hb_grace_period_multiplier = m;
                if m < 1.0 {
                    ctx.push(
                        Diagnostic::warning(
                            span.clone(),
                            format!("option `{key}={value}` is below 1"),
                        )
                        .with_hint(
                            "a client that heart-beats exactly as promised is closed before its \
                             next heart-beat is due; 1.5 or 2 allows for network delays",
                        ),
                    );
                }
            }
            _ => bad(
                ctx,
                "expected a positive number",
                "e.g. 1.5: a client promising a heart-beat every 10 s may be silent 15 s",
            ),
        },
        Opt::MaxDataLength => match number {
            Ok(bytes) if bytes > 0 && bytes <= i64::from(i32::MAX) => {
                o.stomp.max_data_length_bytes = bytes as u32
            }
            _ => {
                // As for maxFrameSize: a size with a unit ("100 mb", copied from `check`'s
                // summary) is translated into the plain number ActiveMQ reads here.
                let hint = match values::parse_size_bytes(value) {
                    Ok(bytes) if number.is_err() && bytes > 0 && bytes <= i32::MAX as u64 => {
                        format!("ActiveMQ reads a plain number of bytes here (a Java int): write {bytes}")
                    }
                    _ => "a plain number of bytes (ActiveMQ reads a Java int), e.g. 104857600 \
                          for 100 mb"
                        .to_owned(),
                };
                bad(ctx, "expected a positive number of bytes up to 2147483647", &hint)
            }
        },
        Opt::PublishDollarTopics
        | Opt::UseInactivityMonitor
        | Opt::AllowLinkStealing
        | Opt::NeedClientAuth
        | Opt::WantClientAuth => match values::parse_bool(value) {
            Ok(b) => match opt {
                Opt::PublishDollarTopics => o.publish_dollar_topics = b,
                Opt::UseInactivityMonitor => o.use_inactivity_monitor = b,
                Opt::AllowLinkStealing => o.allow_link_stealing = b,
                Opt::NeedClientAuth => o.need_client_auth = b,
                _ => o.want_client_auth = b,
            },
            Err(_) => bad(ctx, "expected true or false", "write `true` or `false`"),
        },
    }
}

/// ferromq serves MQTT topics as they are under either strategy, while ActiveMQ's virtual-topic
/// strategy (`MQTTVirtualTopicSubscriptionStrategy`) renames what it authorizes: a PUBLISH or a
/// non-durable SUBSCRIBE to `a/b` is checked on topic `VirtualTopic.a.b`, a durable one (clean
/// session 0, QoS 1 or 2) on queue `Consumer.<clientId>:<QoS>.VirtualTopic.a.b`. Both ways the
/// answers can differ, so say so where the option is written.
fn virtual_topic_warning(span: Span) -> Diagnostic {
    Diagnostic::warning(span, VIRTUAL_TOPIC_WARNING).with_hint(
        "ActiveMQ under this strategy authorizes MQTT `a/b` as topic `VirtualTopic.a.b`, and a \
         durable subscription (clean session 0, QoS 1/2) as queue \
         `Consumer.<clientId>:<QoS>.VirtualTopic.a.b`; ferromq authorizes `a/b` as topic `a.b`, \
         as with mqtt-default-subscriptions. Write the entries for the plain names \
         (topic=\"a.>\", not topic=\"VirtualTopic.a.>\"), or remove the option. Routing \
         differs too: ActiveMQ puts a publish to `a/b` on topic `VirtualTopic.a.b` (so its \
         `Consumer.*.VirtualTopic.a.b` queues get copies), ferromq on topic `a.b`; devices \
         that publish to `VirtualTopic/a/b` get those copies from ferromq's virtual topics",
    )
}

/// The message of [`virtual_topic_warning`] (docs/migration.md quotes it).
const VIRTUAL_TOPIC_WARNING: &str =
    "transport.subscriptionStrategy=mqtt-virtual-topic-subscriptions \
     is served as plain MQTT topics: authorization entries for `VirtualTopic.>` / `Consumer.>` \
     do not apply";

/// Character offset of `key=` (or a bare `key`) in the URI's query, for pointing at it.
fn option_offset(uri: &str, key: &str) -> usize {
    let Some(query_start) = uri.find('?') else {
        return 0;
    };
    let mut offset = query_start + 1;
    for part in uri[query_start + 1..].split('&') {
        if part.split('=').next() == Some(key) {
            return uri[..offset].chars().count();
        }
        offset += part.len() + 1;
    }
    0
}

/// The position of character `offset` of an attribute value. Exact when the value was written
/// without placeholders on one line; `&` and `<` are assumed written as `&amp;` and `&lt;` (XML
/// requires it). Falls back to the start of the value.
fn span_in_value(attr: &Attr, offset: usize) -> Span {
    let mut span = attr.value_span.clone();
    if attr.raw != attr.value || attr.value.contains('\n') {
        return span;
    }
    let extra: usize = attr
        .value
        .chars()
        .take(offset)
        .map(|c| match c {
            '&' => 4,
            '<' => 3,
            _ => 0,
        })
        .sum();
    let shift = u32::try_from(offset + extra).unwrap_or(0);
    span.col = span.col.saturating_add(shift);
    span
}

/// The usual ports for a scheme, for hints.
fn usual_ports(scheme: Scheme) -> &'static str {
    match scheme.protocol() {
        Some(Protocol::Mqtt) => "1883 is MQTT's usual port, 8883 with TLS",
        Some(Protocol::Stomp) => {
            "61613 is STOMP's usual port (ActiveMQ's examples use 61612 with TLS)"
        }
        None => "61614 is ActiveMQ's usual WebSocket port",
    }
}

fn display_host(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

/// Hosts that mean "every address" when binding.
fn is_wildcard(host: &str) -> bool {
    matches!(host, "0.0.0.0" | "::" | "[::]" | "")
}

/// `localhost` binds the loopback address, so it clashes with 127.0.0.1 and ::1.
fn same_address(a: &str, b: &str) -> bool {
    let canon = |h: &str| match h.to_ascii_lowercase().as_str() {
        "localhost" | "127.0.0.1" | "::1" => "loopback".to_owned(),
        other => other.to_owned(),
    };
    canon(a) == canon(b)
}

fn check_clash(ctx: &mut Ctx<'_>, existing: &[Listener], new: &Listener) {
    if new.port == 0 {
        return;
    }
    let clash = existing.iter().find(|l| {
        l.port == new.port
            && (is_wildcard(&l.host) || is_wildcard(&new.host) || same_address(&l.host, &new.host))
    });
    if let Some(other) = clash {
        ctx.push(
            Diagnostic::error(
                new.span.clone(),
                format!(
                    "connector `{}` listens on {}:{}, which clashes with connector `{}` on {}:{} (line {})",
                    new.name,
                    display_host(&new.host),
                    new.port,
                    other.name,
                    display_host(&other.host),
                    other.port,
                    other.span.line
                ),
            )
            .with_hint("give each connector its own port; 0.0.0.0 and [::] cover every address of the machine"),
        );
    }
}

/// The web console on a connector's port (and an address that overlaps it) cannot bind: an
/// error at the console, as for two connectors sharing a port.
pub(super) fn check_console_clash(
    ctx: &mut Ctx<'_>,
    listeners: &[Listener],
    console: &crate::config::ConsoleConfig,
) {
    if let Some(clash) = console_clash(listeners, console) {
        ctx.push(clash);
    }
}

/// `check_console_clash`'s finding, also for a console placed by `--console` after the file
/// was compiled (the preflight of `check --console` and `run --console`).
pub fn console_clash(
    listeners: &[Listener],
    console: &crate::config::ConsoleConfig,
) -> Option<Diagnostic> {
    if console.port == 0 {
        return None;
    }
    let other = listeners.iter().find(|l| {
        l.port == console.port
            && (is_wildcard(&l.host)
                || is_wildcard(&console.host)
                || same_address(&l.host, &console.host))
    })?;
    Some(
        Diagnostic::error(
            console.span.clone(),
            format!(
                "the web console listens on {}:{}, which clashes with connector `{}` on {}:{} (line {})",
                display_host(&console.host),
                console.port,
                other.name,
                display_host(&other.host),
                other.port,
                other.span.line
            ),
        )
        .with_hint("give the console its own port (ActiveMQ's is 8161)"),
    )
}

/// `<networkConnectors>`: parsed only to say that bridging brokers is not supported yet.
pub(super) fn network_connectors(ctx: &mut Ctx<'_>, broker: &Element) {
    for connector in ctx.items(broker, "networkConnectors") {
        let label = connector
            .attr_value("name")
            .or_else(|| connector.attr_value("uri"))
            .unwrap_or("")
            .to_owned();
        ctx.mark_subtree(connector);
        ctx.push(
            Diagnostic::warning(
                connector.span.clone(),
                format!(
                    "<{}> `{label}` is not supported yet: ferromq does not bridge brokers",
                    connector.name
                ),
            )
            .with_hint("clients of this broker will not see messages of the other broker"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_offsets_count_characters() {
        let uri = "mqtt://h:1?a=1&transport.defaultKeepAlive=5";
        assert_eq!(option_offset(uri, "a"), 11);
        assert_eq!(option_offset(uri, "transport.defaultKeepAlive"), 15);
        assert_eq!(option_offset(uri, "missing"), 0);
    }

    #[test]
    fn clash_rules() {
        assert!(is_wildcard("0.0.0.0") && is_wildcard("::"));
        assert!(!is_wildcard("127.0.0.1"));
        assert!(same_address("localhost", "127.0.0.1"));
        assert!(!same_address("10.0.0.1", "127.0.0.1"));
    }
}
