//! `<ferromq:jetStream servers="nats://..." replicas="3" .../>` inside `<persistenceAdapter>`:
//! the broker keeps its state in a NATS JetStream cluster and becomes one node of a ferromq
//! cluster (docs/cluster.md). The element is a ferromq extension (namespace `urn:ferromq`, any
//! prefix); ActiveMQ's schema lets `<persistenceAdapter>` hold elements of other namespaces.
//!
//! Everything that would only fail once the node runs is refused here, at its file:line:column:
//! no servers, a server URL NATS cannot dial, out of range replicas or shards, durations that
//! are not durations, a missing credentials file, a second store beside it, and a broker that
//! is not persistent (a cluster node without durable state would lose what it acknowledged).

use std::collections::BTreeSet;

use super::Ctx;
use crate::config::diagnostic::Diagnostic;
use crate::config::known_names;
use crate::config::model::{BrokerSettings, JetStreamSettings, Persistence};
use crate::config::tree::{Attr, Element, Namespace};

/// The extension element's local name.
pub(super) const ELEMENT: &str = "jetStream";

/// How messages name it (with the usual prefix, whatever the file's is).
const SHOWN: &str = "ferromq:jetStream";

/// Every attribute the element takes.
const ATTRIBUTES: &[&str] = &[
    "servers",
    "replicas",
    "messageShards",
    "maxOfflineAge",
    "storeTimeout",
    "quorumLossTimeout",
    "heartbeatInterval",
    "nodeTimeout",
    "credentials",
    "user",
    "password",
];

/// JetStream's own limit on the replicas of a stream.
const MAX_REPLICAS: usize = 5;
/// More shards buy nothing on a 3..5 server cluster and each costs a consumer per node.
const MAX_MESSAGE_SHARDS: usize = 64;

const DURATION_HINT: &str =
    "write milliseconds (`5000`) or a number with a unit: `500ms`, `5s`, `2m`, `1h`, `7d`";

/// The `<ferromq:jetStream>` elements of the broker's `<persistenceAdapter>`s, in file order.
pub(super) fn elements(broker: &Element) -> Vec<&Element> {
    broker
        .children
        .iter()
        .filter(|c| c.is_activemq() && c.name == "persistenceAdapter")
        .flat_map(|p| p.children.iter())
        .filter(|c| c.ns == Namespace::Ferromq && c.name == ELEMENT)
        .collect()
}

/// The cluster store of a broker whose `<persistenceAdapter>` holds `<ferromq:jetStream>`
/// (`found` is [`elements`], not empty). Every problem is reported; the settings returned
/// are meaningful only when there was none.
pub(super) fn persistence(
    ctx: &mut Ctx<'_>,
    broker_element: &Element,
    broker: &BrokerSettings,
    found: &[&Element],
) -> Persistence {
    let Some((first, extra)) = found.split_first() else {
        return Persistence::Memory;
    };
    for element in found {
        ctx.mark(element);
    }
    for element in extra {
        ctx.mark_subtree(element);
        ctx.push(
            Diagnostic::error(
                element.span.clone(),
                format!("a second <{}>: write it once", SHOWN),
            )
            .with_hint("one broker is one node of one cluster: keep one element"),
        );
    }
    // Any other adapter beside it: the node would keep part of its state in two places.
    for adapter in ctx.items(broker_element, "persistenceAdapter") {
        ctx.mark_subtree(adapter);
        ctx.push(
            Diagnostic::error(
                adapter.span.clone(),
                format!(
                    "<{}> beside <{}>: a broker has exactly one store",
                    adapter.name, SHOWN
                ),
            )
            .with_hint(format!(
                "a cluster node keeps everything in NATS JetStream: remove <{}>",
                adapter.name
            )),
        );
    }
    if !broker.persistent {
        let at = broker_element
            .attr("persistent")
            .map_or_else(|| first.span.clone(), |a| a.value_span.clone());
        ctx.push(
            Diagnostic::error(
                at,
                format!(
                    "<{}> with persistent=\"false\": clustering needs persistence",
                    SHOWN
                ),
            )
            .with_hint(
                "a cluster node acknowledges messages once NATS JetStream holds them: remove \
                 persistent=\"false\" from <broker>, or remove the element to run one broker \
                 in memory",
            ),
        );
    }
    if broker.broker_name == "localhost" {
        let at = broker_element
            .attr("brokerName")
            .map_or_else(|| broker_element.span.clone(), |a| a.value_span.clone());
        ctx.push(
            Diagnostic::warning(
                at,
                "brokerName `localhost` is this node's id in the cluster; every node needs \
                 its own, and a node refuses to start while another live node uses its id",
            )
            .with_hint(
                "give each node its own brokerName, e.g. brokerName=\"${ferromq.node}\" with \
                 `--set ferromq.node=node1` on the first machine",
            ),
        );
    }
    Persistence::JetStream(settings(ctx, first))
}

/// The element's attributes, each checked at its value.
fn settings(ctx: &mut Ctx<'_>, element: &Element) -> JetStreamSettings {
    let mut settings = JetStreamSettings::with_servers(Vec::new());
    let mut seen = BTreeSet::new();
    for attr in &element.attrs {
        if !matches!(attr.ns, None | Some(Namespace::Ferromq)) {
            continue; // xmlns declarations and other namespaces are not ours
        }
        ctx.mark_attr(attr);
        if !ATTRIBUTES.contains(&attr.name.as_str()) {
            let hint = known_names::did_you_mean(&attr.name, ATTRIBUTES.iter().copied())
                .unwrap_or_else(|| format!("its attributes are {}", ATTRIBUTES.join(", ")));
            ctx.push(
                Diagnostic::error(
                    attr.span.clone(),
                    format!("unknown attribute `{}` on <{}>", attr.name, SHOWN),
                )
                .with_hint(hint),
            );
            continue;
        }
        seen.insert(attr.name.as_str());
        match attr.name.as_str() {
            "servers" => settings.servers = servers(ctx, attr),
            "replicas" => {
                if let Some(n) = count(ctx, attr, MAX_REPLICAS, replicas_hint()) {
                    settings.replicas = n;
                }
            }
            "messageShards" => {
                let hint = "8 (the default) suits most clusters; each shard is one stream and \
                            one consumer per node";
                if let Some(n) = count(ctx, attr, MAX_MESSAGE_SHARDS, hint) {
                    settings.message_shards = n;
                }
            }
            "maxOfflineAge" => duration(ctx, attr, &mut settings.max_offline_age_ms),
            "storeTimeout" => duration(ctx, attr, &mut settings.store_timeout_ms),
            "quorumLossTimeout" => duration(ctx, attr, &mut settings.quorum_loss_timeout_ms),
            "heartbeatInterval" => duration(ctx, attr, &mut settings.heartbeat_interval_ms),
            "nodeTimeout" => duration(ctx, attr, &mut settings.node_timeout_ms),
            "credentials" => settings.credentials = credentials(ctx, attr),
            "user" => settings.user = Some(attr.value.clone()),
            "password" => settings.password = Some(attr.value.clone()),
            _ => {}
        }
    }
    for child in &element.children {
        ctx.mark_subtree(child);
        ctx.push(
            Diagnostic::error(
                child.span.clone(),
                format!("<{}> takes no elements, only attributes", SHOWN),
            )
            .with_hint("name the NATS servers in servers=\"nats://a:4222,nats://b:4222\""),
        );
    }
    if !seen.contains("servers") {
        ctx.push(
            Diagnostic::error(
                element.span.clone(),
                format!("<{}> names no NATS servers", SHOWN),
            )
            .with_hint(
                "add servers=\"nats://10.0.0.1:4222,nats://10.0.0.2:4222,nats://10.0.0.3:4222\"",
            ),
        );
    }
    login_rules(ctx, element, &settings);
    timing_rules(ctx, element, &settings);
    settings
}

/// `user` and `password` go together; `credentials` replaces both.
fn login_rules(ctx: &mut Ctx<'_>, element: &Element, settings: &JetStreamSettings) {
    let at = |name: &str| element.attr(name).map(|a| a.span.clone());
    if settings.credentials.is_some() && (settings.user.is_some() || settings.password.is_some()) {
        ctx.push(
            Diagnostic::error(
                at("user").or_else(|| at("password")),
                "both credentials and user/password: NATS logs in one way",
            )
            .with_hint("keep credentials (a .creds file) or user and password, not both"),
        );
    } else if settings.user.is_some() != settings.password.is_some() {
        let (present, missing) = if settings.user.is_some() {
            ("user", "password")
        } else {
            ("password", "user")
        };
        ctx.push(
            Diagnostic::error(at(present), format!("{present} without {missing}")).with_hint(
                format!("add {missing}=\"...\" (a ${{placeholder}} keeps it out of the file)"),
            ),
        );
    }
}

/// Heartbeats must come more often than the timeouts that judge them.
fn timing_rules(ctx: &mut Ctx<'_>, element: &Element, settings: &JetStreamSettings) {
    let beat = settings.heartbeat_interval_ms;
    for (name, ms, default_ms) in [
        (
            "nodeTimeout",
            settings.node_timeout_ms,
            JetStreamSettings::DEFAULT_NODE_TIMEOUT_MS,
        ),
        (
            "quorumLossTimeout",
            settings.quorum_loss_timeout_ms,
            JetStreamSettings::DEFAULT_QUORUM_LOSS_TIMEOUT_MS,
        ),
    ] {
        if beat >= ms {
            let at = element
                .attr(name)
                .or_else(|| element.attr("heartbeatInterval"))
                .map_or_else(|| element.span.clone(), |a| a.value_span.clone());
            ctx.push(
                Diagnostic::error(
                    at,
                    format!("{name} ({ms} ms) is not longer than heartbeatInterval ({beat} ms)"),
                )
                .with_hint(format!(
                    "a node writes a heartbeat every heartbeatInterval; {name} should be several \
                     of them (defaults: heartbeatInterval {} ms, {name} {default_ms} ms)",
                    JetStreamSettings::DEFAULT_HEARTBEAT_INTERVAL_MS
                )),
            );
        }
    }
}

fn replicas_hint() -> &'static str {
    "3 (the default) survives the loss of one NATS server; 1 keeps a single copy, 5 survives two"
}

/// `servers`: comma-separated NATS URLs, normalised to `scheme://host:port`.
fn servers(ctx: &mut Ctx<'_>, attr: &Attr) -> Vec<String> {
    let items = crate::config::values::parse_comma_list(&attr.value);
    if items.is_empty() {
        ctx.value_error(
            attr,
            "servers is empty: name at least one NATS server",
            "write servers=\"nats://10.0.0.1:4222,nats://10.0.0.2:4222,nats://10.0.0.3:4222\"",
        );
        return Vec::new();
    }
    let mut out = Vec::new();
    for item in items {
        match parse_server_url(&item) {
            Ok(url) => out.push(url),
            Err(why) => ctx.value_error(
                attr,
                format!("NATS server `{item}` {why}"),
                "write nats://host:port (or tls://host:port), e.g. nats://10.0.0.1:4222",
            ),
        }
    }
    out
}

/// `nats://host[:port]` or `tls://host[:port]` -> `scheme://host:port` (port 4222 when left
/// out, NATS's own default). The error says what is wrong, after the URL.
pub(crate) fn parse_server_url(text: &str) -> Result<String, String> {
    let Some((scheme, rest)) = text.split_once("://") else {
        return Err("has no scheme".into());
    };
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "nats" && scheme != "tls" {
        return Err(format!(
            "has scheme `{scheme}`; NATS speaks nats:// or tls://"
        ));
    }
    if rest.contains('@') {
        return Err("carries a login: use the user and password attributes instead".into());
    }
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('/') || rest.contains('?') {
        return Err("has a path or query; write only host:port".into());
    }
    let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
        let Some((host, after)) = bracketed.split_once(']') else {
            return Err("has an unclosed [ around its IPv6 address".into());
        };
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("has `{host}`, not an IPv6 address, in brackets"));
        }
        (format!("[{host}]"), after.strip_prefix(':'))
    } else {
        match rest.rsplit_once(':') {
            Some((host, port)) => (host.to_owned(), Some(port)),
            None => (rest.to_owned(), None),
        }
    };
    let host_ok = !host.is_empty()
        && (host.starts_with('[')
            || host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')));
    if !host_ok {
        return Err(format!("has no valid host (`{host}`)"));
    }
    let port = match port {
        None => 4222,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => return Err(format!("has port `{p}`, not a port from 1 to 65535")),
        },
    };
    Ok(format!("{scheme}://{host}:{port}"))
}

/// A count from 1 to `max`.
fn count(ctx: &mut Ctx<'_>, attr: &Attr, max: usize, hint: &str) -> Option<usize> {
    match attr.value.trim().parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Some(n),
        Ok(n) => {
            ctx.value_error(
                attr,
                format!("{} must be from 1 to {max}, not {n}", attr.name),
                hint,
            );
            None
        }
        Err(_) => {
            ctx.value_error(
                attr,
                format!(
                    "{} must be a whole number from 1 to {max}, not `{}`",
                    attr.name, attr.value
                ),
                hint,
            );
            None
        }
    }
}

fn duration(ctx: &mut Ctx<'_>, attr: &Attr, into: &mut u64) {
    match parse_duration(&attr.value) {
        Some(0) => ctx.value_error(
            attr,
            format!("{} must be longer than 0", attr.name),
            DURATION_HINT,
        ),
        Some(ms) => *into = ms,
        None => ctx.value_error(
            attr,
            format!("{} `{}` is not a duration", attr.name, attr.value),
            DURATION_HINT,
        ),
    }
}

/// Milliseconds from `5000` (ActiveMQ's plain milliseconds), `500ms`, `5s`, `2m`, `1h`, `7d`.
pub(crate) fn parse_duration(text: &str) -> Option<u64> {
    let trimmed = text.trim();
    let digits_end = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (digits, unit) = trimmed.split_at(digits_end);
    let n: u64 = digits.parse().ok()?;
    let factor: u64 = match unit.trim() {
        "" | "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    n.checked_mul(factor)
}

/// A credentials file, resolved against the configuration's directory; it must exist.
fn credentials(ctx: &mut Ctx<'_>, attr: &Attr) -> Option<std::path::PathBuf> {
    let value = attr.value.trim();
    if value.is_empty() {
        ctx.value_error(
            attr,
            "credentials is empty",
            "name the NATS .creds file (nsc generate creds), or remove the attribute",
        );
        return None;
    }
    let path = ctx.resource_path(value);
    if !path.is_file() {
        ctx.value_error(
            attr,
            format!(
                "the NATS credentials file {} does not exist",
                path.display()
            ),
            "relative paths are relative to the configuration file's directory",
        );
        return None;
    }
    ctx.read_file(&path);
    Some(path)
}

#[cfg(test)]
mod tests {
    use super::{parse_duration, parse_server_url};
    use crate::config::model::{JetStreamSettings, Persistence};

    #[test]
    fn durations_take_plain_milliseconds_and_units() {
        for (text, ms) in [
            ("5000", 5000),
            ("500ms", 500),
            ("5s", 5000),
            ("2m", 120_000),
            ("1h", 3_600_000),
            ("7d", 604_800_000),
            (" 3 s ", 3000),
        ] {
            assert_eq!(parse_duration(text), Some(ms), "{text}");
        }
        for text in ["", "s", "1.5s", "-1", "5 sec", "99999999999999999999d"] {
            assert_eq!(parse_duration(text), None, "{text}");
        }
    }

    #[test]
    fn server_urls_are_normalised_or_refused() {
        assert_eq!(
            parse_server_url("nats://10.0.0.1:4222").as_deref(),
            Ok("nats://10.0.0.1:4222")
        );
        assert_eq!(
            parse_server_url("NATS://n1").as_deref(),
            Ok("nats://n1:4222")
        );
        assert_eq!(
            parse_server_url("tls://[::1]:4443/").as_deref(),
            Ok("tls://[::1]:4443")
        );
        for bad in [
            "10.0.0.1:4222",
            "http://n1:4222",
            "nats://:4222",
            "nats://n1:0",
            "nats://n1:70000",
            "nats://u:p@n1:4222",
            "nats://n 1:4222",
            "nats://[zz]:4222",
        ] {
            assert!(parse_server_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_password_never_shows() {
        let mut settings = JetStreamSettings::with_servers(vec!["nats://n1:4222".into()]);
        settings.user = Some("fmq".into());
        settings.password = Some("s3cret".into());
        let shown = format!(
            "{settings:?} {} {}",
            settings.describe(),
            serde_json::to_string(&Persistence::JetStream(settings.clone())).unwrap_or_default()
        );
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(
            shown.contains("<redacted>") && shown.contains("user fmq"),
            "{shown}"
        );
    }
}
