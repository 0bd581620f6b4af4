//! `ferromq explain --destination`: the decision for a destination as STOMP (and ActiveMQ)
//! names it: `/topic/a.b` (the MQTT topic `a/b`: explained as the topic, with `*`/`>` as
//! `+`/`#`), `/queue/orders`, `/temp-queue/...`, `/temp-topic/...`.
//!
//! Queues are decided by `queue=` entries (and the `defaultEntry`), temporary destinations by
//! the `tempDestinationAuthorizationEntry` alone (open to everyone without one), as ActiveMQ's
//! `AuthorizationBroker` does; see [`super::authz`].

use std::fmt::Write as _;

use super::authz::{action_name, principal_names};
use super::destination::swap_chars;
use super::explain::{explain_in_config, kind_label, resolve_principal, Explanation};
use super::{Action, Principal, Security};
use crate::config::{Config, DestinationKind};

/// Another connection's temporary queue, as a `reply-to` shows it (it exists already).
const REMOTE_TEMP_QUEUE: &str = "/remote-temp-queue/";
/// Another connection's temporary topic.
const REMOTE_TEMP_TOPIC: &str = "/remote-temp-topic/";

/// A STOMP destination split into its kind and ActiveMQ physical name (`/queue/a.b` ->
/// (Queue, `a.b`)). ActiveMQ's `queue://` and `topic://` forms are accepted too.
///
/// Errors: a message naming the accepted prefixes (an unprefixed or empty name).
pub fn parse_stomp_destination(text: &str) -> Result<(DestinationKind, &str), String> {
    const PREFIXES: [(&str, DestinationKind); 10] = [
        ("/queue/", DestinationKind::Queue),
        ("/topic/", DestinationKind::Topic),
        ("/temp-queue/", DestinationKind::TempQueue),
        ("/temp-topic/", DestinationKind::TempTopic),
        (REMOTE_TEMP_QUEUE, DestinationKind::TempQueue),
        (REMOTE_TEMP_TOPIC, DestinationKind::TempTopic),
        ("queue://", DestinationKind::Queue),
        ("topic://", DestinationKind::Topic),
        ("temp-queue://", DestinationKind::TempQueue),
        ("temp-topic://", DestinationKind::TempTopic),
    ];
    let Some((kind, name)) = PREFIXES
        .iter()
        .find_map(|(prefix, kind)| text.strip_prefix(prefix).map(|name| (*kind, name)))
    else {
        return Err(format!(
            "`{text}` is not a destination: write /queue/NAME, /topic/NAME, /temp-queue/NAME, \
             /temp-topic/NAME, /remote-temp-queue/NAME or /remote-temp-topic/NAME (or an MQTT \
             topic with --topic)"
        ));
    };
    if name.is_empty() {
        return Err(format!("`{text}` names no destination after its prefix"));
    }
    Ok((kind, name))
}

/// The MQTT topic (or filter) a `/topic/` name is: levels split at `.`, `*` -> `+`, `>` -> `#`,
/// ActiveMQ's `/` swapped back to `.` (the mapping ActiveMQ's MQTT transport uses).
pub fn topic_to_mqtt(activemq_name: &str) -> String {
    swap_chars(activemq_name)
        .split('/')
        .map(|level| match level {
            "*" => "+",
            ">" => "#",
            other => other,
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// [`explain_destination_in_config`] for `user`, with `groups` given or looked up.
pub fn explain_destination_with(
    config: &Config,
    security: &Security,
    user: &str,
    groups: Option<&[String]>,
    destination: &str,
    action: Action,
) -> Result<Explanation, String> {
    let mut out = String::new();
    let principal = resolve_principal(security, user, groups, &mut out);
    let explained =
        explain_destination_in_config(config, security, &principal, destination, action)?;
    out.push_str(&explained.text);
    Ok(Explanation {
        text: out,
        ..explained
    })
}

/// The decision for `principal` on a STOMP destination. A `/topic/` destination is explained
/// as its MQTT topic (the broker authorizes topics that way for both protocols).
///
/// Errors: `destination` is not a STOMP destination ([`parse_stomp_destination`]).
pub fn explain_destination_in_config(
    config: &Config,
    security: &Security,
    principal: &Principal,
    destination: &str,
    action: Action,
) -> Result<Explanation, String> {
    let (kind, name) = parse_stomp_destination(destination)?;
    if kind == DestinationKind::Topic {
        let mqtt = topic_to_mqtt(name);
        let mut explained = explain_in_config(config, security, principal, &mqtt, action);
        explained.text = format!(
            "`{destination}` is the MQTT topic `{mqtt}` (shared by STOMP and MQTT clients)\n{}",
            explained.text
        );
        return Ok(explained);
    }
    Ok(explain_point_to_point(
        config,
        security,
        principal,
        destination,
        kind,
        name,
        action,
    ))
}

fn explain_point_to_point(
    config: &Config,
    security: &Security,
    principal: &Principal,
    asked: &str,
    kind: DestinationKind,
    name: &str,
    action: Action,
) -> Explanation {
    if let Some(why) = refused_name(kind, name) {
        return Explanation {
            allowed: false,
            invalid: true,
            text: format!(
                "INVALID: `{asked}` {why}\n  the broker refuses it (ERROR frame) before any \
                 authorization\n"
            ),
        };
    }
    let remote = asked.starts_with(REMOTE_TEMP_QUEUE) || asked.starts_with(REMOTE_TEMP_TOPIC);
    let mut out = String::new();
    let verb = match action {
        Action::Read => "subscribe to",
        // The word of `--action publish`, which is also what the MQTT side calls it.
        Action::Write => "publish to",
        Action::Admin => "create",
    };
    let who = super::explain::describe_principal(principal);
    let verdict = |allowed: bool| if allowed { "ALLOWED" } else { "DENIED" };
    let Some(authorizer) = security.authorizer() else {
        let _ = writeln!(out, "ALLOWED: {who} may {verb} `{asked}`");
        let _ = writeln!(
            out,
            "  no authorizationPlugin is configured: everything is allowed"
        );
        return Explanation {
            allowed: true,
            invalid: false,
            text: out,
        };
    };
    let fast = security.authorize_destination(principal, action, kind, name);
    let casbin = security.authorize_with_casbin(principal, action, kind, name);
    let entries_allow = casbin.as_ref().copied().unwrap_or(fast);
    let creation = if remote || action == Action::Admin {
        None
    } else {
        creation(config, security, principal, kind, name)
    };
    let remote_read = remote && action == Action::Read;
    let decision = entries_allow && !remote_read && creation.as_ref().is_none_or(|c| c.allowed);
    let _ = writeln!(
        out,
        "{}: {who} may {}{verb} `{asked}`",
        verdict(decision),
        if decision { "" } else { "not " }
    );
    let _ = writeln!(
        out,
        "  destination: {} `{name}`, needs `{}`",
        kind_label(kind),
        action_name(action)
    );
    if remote_read {
        let _ = writeln!(
            out,
            "  only the connection that created a temporary destination may subscribe to it \
             (the broker answers `Cannot subscribe to a remote temporary destination`)"
        );
    }
    if let Some(c) = &creation {
        out.push_str(&c.text);
    }
    if authorizer.temporary_open(kind) {
        let _ = writeln!(
            out,
            "  temporary destinations are open to every principal: no \
             tempDestinationAuthorizationEntry is configured (ActiveMQ's rule)"
        );
        return Explanation {
            allowed: decision,
            invalid: false,
            text: out,
        };
    }
    if matches!(
        kind,
        DestinationKind::TempQueue | DestinationKind::TempTopic
    ) {
        let _ = writeln!(
            out,
            "  temporary destinations are decided by tempDestinationAuthorizationEntry alone"
        );
    }
    let names = principal_names(principal, authorizer.user_principals());
    let _ = writeln!(out, "  principal names: {}", names.join(", "));
    super::explain::write_entries(
        &mut out,
        authorizer,
        &names,
        (action, kind, name),
        &casbin,
        fast,
    );
    Explanation {
        allowed: decision,
        invalid: false,
        text: out,
    }
}

/// Why the broker refuses a queue name before any authorization: a wildcard (ActiveMQ
/// composes wildcard queues; ferromq does not) or a `,` (a composite destination).
fn refused_name(kind: DestinationKind, name: &str) -> Option<&'static str> {
    if kind == DestinationKind::Topic {
        return None;
    }
    if name.contains(',') {
        return Some("is a composite destination (a `,` in the name), which is not supported");
    }
    let queue = matches!(kind, DestinationKind::Queue | DestinationKind::TempQueue);
    if queue && name.split('.').any(|l| l == "*" || l == ">") {
        return Some("names a wildcard queue, which is not supported");
    }
    None
}

/// Whether using the destination first creates it, and whether `principal` may (`admin`).
struct Creation {
    allowed: bool,
    text: String,
}

/// The creation a send or subscribe implies: a queue not declared in `<destinations>` and a
/// temporary destination of this connection are created on first use, which needs `admin`
/// (ActiveMQ's `AuthorizationBroker.addDestination`; the broker answers `User .. is not
/// authorized to create`). `None` when nothing is created (a declared queue, temporary
/// destinations open to everyone).
fn creation(
    config: &Config,
    security: &Security,
    principal: &Principal,
    kind: DestinationKind,
    name: &str,
) -> Option<Creation> {
    let may = security.authorize_destination(principal, Action::Admin, kind, name);
    let verdict = if may {
        "this principal MAY create it"
    } else {
        "this principal may NOT create it"
    };
    match kind {
        DestinationKind::Queue => {
            if config.destinations.queues.iter().any(|q| q == name) {
                return Some(Creation {
                    allowed: true,
                    text: format!(
                        "  destination queue://{name} exists: declared in <destinations> (no \
                         admin needed)\n"
                    ),
                });
            }
            Some(Creation {
                allowed: may,
                text: format!(
                    "  destination queue://{name}: not declared in <destinations>, so first use \
                     creates it, which needs `admin`: {verdict}{}\n",
                    if may {
                        ""
                    } else {
                        " (allowed only once a principal with `admin` created it: the broker \
                         keeps created queues in its store)"
                    }
                ),
            })
        }
        DestinationKind::TempQueue | DestinationKind::TempTopic => {
            let open = security
                .authorizer()
                .is_some_and(|a| a.temporary_open(kind));
            (!open).then(|| Creation {
                allowed: may,
                text: format!(
                    "  a temporary destination is created by this connection on first use, which \
                     needs `admin`: {verdict}\n"
                ),
            })
        }
        DestinationKind::Topic => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_parse_by_prefix() {
        assert_eq!(
            parse_stomp_destination("/queue/a.b"),
            Ok((DestinationKind::Queue, "a.b"))
        );
        assert_eq!(
            parse_stomp_destination("/temp-queue/x"),
            Ok((DestinationKind::TempQueue, "x"))
        );
        assert_eq!(
            parse_stomp_destination("topic://a"),
            Ok((DestinationKind::Topic, "a"))
        );
        assert!(parse_stomp_destination("orders").is_err());
        assert!(parse_stomp_destination("/queue/").is_err());
    }

    #[test]
    fn topics_map_to_mqtt_with_wildcards() {
        assert_eq!(topic_to_mqtt("a.b.c"), "a/b/c");
        assert_eq!(topic_to_mqtt("a.*.c"), "a/+/c");
        assert_eq!(topic_to_mqtt("a.>"), "a/#");
    }
}
