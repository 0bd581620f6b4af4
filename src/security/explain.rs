//! `ferromq explain`: why a user may or may not publish or subscribe to a topic.
//!
//! Prints the decision, the ActiveMQ destination the MQTT name maps to, the principal's policy
//! names, and every authorization entry that applies (file:line, its patterns, the names it
//! grants the action to and which of them the principal holds). The decision is casbin's own
//! enforce; the precompiled evaluator the broker uses is run too and a disagreement is reported
//! as a bug.

use std::fmt::Write as _;
use std::sync::Arc;

use super::authz::{action_name, principal_names, EntryOrigin};
use super::destination::mqtt_to_activemq;
use super::{Action, Principal, Security};
use crate::config::{Config, DestinationKind};
use crate::protocol::topic::{
    parse_shared_subscription, validate_topic_filter, validate_topic_name, TopicError,
};

/// A decision and the text that explains it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    pub allowed: bool,
    /// The topic (publish) or filter (subscribe) is not valid MQTT: the broker would refuse it
    /// before any authorization (a PUBLISH or SUBSCRIBE carrying it is malformed). `allowed`
    /// is then false.
    pub invalid: bool,
    pub text: String,
}

/// What the broker authorizes for `mqtt_topic` and `action`, checked as the broker checks it:
/// a PUBLISH topic name (or a topic to create) must be a valid name (MQTT 5 4.7.3: non-empty,
/// no wildcards), a SUBSCRIBE filter a valid filter (4.7.1); a shared subscription
/// `$share/<group>/<filter>` is authorized by the filter inside the share (MQTT 5 4.8.2), as
/// the broker does for every protocol version. Returns that filter and the share group.
pub fn authorized_target(
    mqtt_topic: &str,
    action: Action,
) -> Result<(&str, Option<&str>), TopicError> {
    match action {
        Action::Read => {
            validate_topic_filter(mqtt_topic)?;
            Ok(match parse_shared_subscription(mqtt_topic)? {
                Some(share) => (share.filter, Some(share.group)),
                None => (mqtt_topic, None),
            })
        }
        Action::Write | Action::Admin => {
            validate_topic_name(mqtt_topic)?;
            Ok((mqtt_topic, None))
        }
    }
}

fn invalid(mqtt_topic: &str, action: Action, why: TopicError) -> Explanation {
    let what = match action {
        Action::Read => "a subscription filter",
        Action::Write | Action::Admin => "a topic name to publish to",
    };
    Explanation {
        allowed: false,
        invalid: true,
        text: format!(
            "INVALID: `{mqtt_topic}` is not valid as {what}: {why}\n  the broker refuses it \
             before any authorization: a packet carrying it is malformed\n"
        ),
    }
}

impl std::fmt::Display for Explanation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// Explain the decision for `user` on `mqtt_topic` (a topic name, or a filter for subscribe).
/// `groups`: the groups to assume; `None` looks them up in the authentication plugin.
pub fn explain(
    config: &Config,
    user: &str,
    groups: Option<&[String]>,
    mqtt_topic: &str,
    action: Action,
) -> Result<Explanation, String> {
    let security = Security::from_config(config)?;
    explain_with(config, &security, user, groups, mqtt_topic, action)
}

/// [`explain`] with a security snapshot built by the caller (with the entries of an LDAP
/// authorization map loaded, for `explain --online`).
pub fn explain_with(
    config: &Config,
    security: &Security,
    user: &str,
    groups: Option<&[String]>,
    mqtt_topic: &str,
    action: Action,
) -> Result<Explanation, String> {
    let mut out = String::new();
    let principal = resolve_principal(security, user, groups, &mut out);
    let explained = explain_in_config(config, security, &principal, mqtt_topic, action);
    out.push_str(&explained.text);
    Ok(Explanation {
        allowed: explained.allowed,
        invalid: explained.invalid,
        text: out,
    })
}

/// The principal `explain` decides for: `user` with the `groups` given, or with the groups the
/// authentication plugin knows (a note in `out` when it does not know the user). Without an
/// authentication plugin, the principal the broker gives every client
/// ([`Principal::anonymous`]), with a note saying so: an answer for `user` would describe a
/// client the broker never has.
pub(super) fn resolve_principal(
    security: &Security,
    user: &str,
    groups: Option<&[String]>,
    out: &mut String,
) -> Principal {
    if !security.authentication_enabled() {
        out.push_str(&no_authentication_note(security, user, groups.is_some()));
        return Principal::anonymous();
    }
    let groups: Vec<Arc<str>> = match groups {
        Some(given) => given.iter().map(|g| Arc::from(g.as_str())).collect(),
        None => match security.groups_of(user) {
            Some(found) => found,
            None => {
                let _ = writeln!(
                    out,
                    "note: the authentication plugin does not know user `{user}`; assuming no \
                     groups (pass --group to choose them)"
                );
                Vec::new()
            }
        },
    };
    Principal {
        user: Arc::from(user),
        groups,
        anonymous: false,
    }
}

/// What `explain` says about `user` (and `--group`, when `groups_given`) when the broker has no
/// authentication plugin: the broker checks no user name or password and every client is user
/// `anonymous` with no groups, which is what the decision is for. With an authorization plugin,
/// ActiveMQ refuses such clients every destination; the broker lets its entries decide.
pub fn no_authentication_note(security: &Security, user: &str, groups_given: bool) -> String {
    let mut note = format!(
        "note: no authentication plugin is configured: the broker checks no user name or \
         password and every client is user `anonymous` with no groups, so the answer is for \
         `anonymous`, not `{user}`"
    );
    if groups_given {
        note.push_str(" (--group does not apply)");
    }
    note.push('\n');
    if security.authorization_enabled() {
        note.push_str(
            "note: ActiveMQ would refuse every destination to such clients (\"User is not \
             authenticated.\"); this broker lets the authorization entries decide for \
             `anonymous`\n",
        );
    }
    note
}

/// [`explain_principal`], then whether the destination exists by configuration and whether
/// the principal may create it (see [`explain_creation`]).
pub fn explain_in_config(
    config: &Config,
    security: &Security,
    principal: &Principal,
    mqtt_topic: &str,
    action: Action,
) -> Explanation {
    let mut explained = explain_principal(security, principal, mqtt_topic, action);
    if let Ok((target, _)) = authorized_target(mqtt_topic, action) {
        explained.text.push_str(&explain_creation(
            config, security, principal, target, action,
        ));
    }
    explained
}

/// The admin rule for a concrete topic (a SUBSCRIBE or PUBLISH to a topic that does not exist
/// creates it, which needs `admin`; see `broker::routing::destinations`): whether `config`
/// declares it in `<destinations>`, and whether `principal` may create it. A running broker
/// also knows the topics clients created (kept in its store), which this command does not open.
/// Empty for a wildcard filter (a wildcard subscription creates nothing) and for `create`.
pub fn explain_creation(
    config: &Config,
    security: &Security,
    principal: &Principal,
    mqtt_topic: &str,
    action: Action,
) -> String {
    let wildcard = mqtt_topic
        .split('/')
        .any(|level| level == "+" || level == "#");
    if wildcard || action == Action::Admin {
        return String::new();
    }
    let activemq_name = mqtt_to_activemq(mqtt_topic);
    let declared = config.destinations.topics.contains(&activemq_name);
    let may_create = security.authorize(principal, Action::Admin, mqtt_topic);
    let mut out = String::new();
    if declared {
        let _ = writeln!(
            out,
            "  destination topic://{activemq_name} exists: declared in <destinations> (no admin needed)"
        );
    } else if !security.authorization_enabled() {
        let _ = writeln!(
            out,
            "  destination topic://{activemq_name}: created on first use (no authorizationPlugin: anyone may create)"
        );
    } else {
        let _ = writeln!(
            out,
            "  destination topic://{activemq_name}: not declared in <destinations>; it exists if a \
             client created it before (the broker keeps created topics in its store)"
        );
        let consequence = match action {
            Action::Read => "SUBACK 0x80 (MQTT 5: 0x87)",
            _ => "dropped (MQTT 3 still acknowledges; MQTT 5: 0x87)",
        };
        let _ = writeln!(
            out,
            "  creating it needs `admin`: {} (else, while it does not exist: {consequence})",
            if may_create {
                "this principal MAY create it"
            } else {
                "this principal may NOT create it"
            }
        );
    }
    out
}

/// Explain the decision for an already known principal (e.g. after a real login).
pub fn explain_principal(
    security: &Security,
    principal: &Principal,
    mqtt_topic: &str,
    action: Action,
) -> Explanation {
    let (target, share) = match authorized_target(mqtt_topic, action) {
        Ok(found) => found,
        Err(why) => return invalid(mqtt_topic, action, why),
    };
    let mut out = String::new();
    let verb = match action {
        Action::Read => "subscribe to",
        Action::Write => "publish to",
        Action::Admin => "create",
    };
    let who = describe_principal(principal);
    let Some(authorizer) = security.authorizer() else {
        let _ = writeln!(out, "ALLOWED: {who} may {verb} `{mqtt_topic}`");
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
    let asked = mqtt_topic;
    let mqtt_topic = target;
    let activemq_name = mqtt_to_activemq(mqtt_topic);
    let kind = DestinationKind::Topic;
    let fast = security.authorize(principal, action, mqtt_topic);
    let casbin = security.authorize_with_casbin(principal, action, kind, &activemq_name);
    let decision = casbin.as_ref().copied().unwrap_or(fast);
    let _ = writeln!(
        out,
        "{}: {who} may {}{verb} `{asked}`",
        if decision { "ALLOWED" } else { "DENIED" },
        if decision { "" } else { "not " },
    );
    if let Some(group) = share {
        let _ = writeln!(
            out,
            "  shared subscription (group `{group}`): the broker authorizes the filter inside \
             the share, `{mqtt_topic}`"
        );
    }
    let wildcard = activemq_name.split('.').any(|l| l == "*" || l == ">");
    let _ = writeln!(
        out,
        "  destination: topic `{activemq_name}`, needs `{}`{}",
        action_name(action),
        if wildcard {
            "; a wildcard filter: the entries ActiveMQ's destination map lookup finds apply \
             (`>` is looked up as a literal level, `*` walks every child)"
        } else {
            ""
        }
    );
    let names = principal_names(principal, authorizer.user_principals());
    let _ = writeln!(out, "  principal names: {}", names.join(", "));

    write_entries(
        &mut out,
        authorizer,
        &names,
        (action, kind, &activemq_name),
        &casbin,
        fast,
    );
    Explanation {
        allowed: decision,
        invalid: false,
        text: out,
    }
}

/// "user `u` (groups: a, b)": who an explanation is about.
pub(super) fn describe_principal(principal: &Principal) -> String {
    let groups: Vec<&str> = principal.groups.iter().map(|g| &**g).collect();
    format!(
        "user `{}` (groups: {})",
        principal.user,
        if groups.is_empty() {
            "none".to_owned()
        } else {
            groups.join(", ")
        }
    )
}

pub(super) fn kind_label(kind: DestinationKind) -> &'static str {
    match kind {
        DestinationKind::Topic => "topic",
        DestinationKind::Queue => "queue",
        DestinationKind::TempTopic => "temp-topic",
        DestinationKind::TempQueue => "temp-queue",
    }
}

/// The entries that decide `action` on `(kind, name)` for a principal known by `names`, which
/// of them grant, and whether casbin's answer agrees with the broker's evaluator (`fast`).
pub(super) fn write_entries(
    out: &mut String,
    authorizer: &super::authz::Authorizer,
    names: &[String],
    (action, kind, name): (Action, DestinationKind, &str),
    casbin: &Result<bool, String>,
    fast: bool,
) {
    let matches = authorizer.matching_entries(action, kind, name);
    if matches.is_empty() {
        let _ = writeln!(
            out,
            "  no entry applies: denied (nothing matches, nothing granted)"
        );
    } else {
        let _ = writeln!(
            out,
            "  entries that apply (union rule: one grant is enough):"
        );
    }
    for m in &matches {
        let label = match m.origin {
            EntryOrigin::Entry => format!("{} {}", kind_label(m.entry.kind), m.patterns.join(",")),
            EntryOrigin::Default => "defaultEntry".to_owned(),
            EntryOrigin::TempDestination => "tempDestinationAuthorizationEntry".to_owned(),
        };
        let listed = match action {
            Action::Read => &m.entry.read,
            Action::Write => &m.entry.write,
            Action::Admin => &m.entry.admin,
        };
        let held: Vec<&str> = m
            .granted_to
            .iter()
            .filter(|s| names.contains(s))
            .map(String::as_str)
            .collect();
        let _ = writeln!(
            out,
            "    {}:{}  {label}  {}=\"{}\"  -> {}",
            m.entry.span.file.display(),
            m.entry.span.line,
            action_name(action),
            listed.join(","),
            if held.is_empty() {
                "grants nothing to this principal".to_owned()
            } else {
                format!("GRANTS via {}", held.join(", "))
            }
        );
    }
    match casbin {
        Ok(c) if *c == fast => {
            let _ = writeln!(out, "  casbin enforce agrees with the broker's evaluator");
        }
        Ok(c) => {
            let _ = writeln!(
                out,
                "  BUG: casbin says {c} but the broker's evaluator says {fast}; please report"
            );
        }
        Err(e) => {
            let _ = writeln!(
                out,
                "  casbin could not decide ({e}); shown: the broker's decision"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(children: &str) -> Config {
        let xml = format!(
            r#"<beans xmlns="http://www.springframework.org/schema/beans">
            <broker xmlns="http://activemq.apache.org/schema/core" persistent="false">
              {children}
              <transportConnectors>
                <transportConnector name="mqtt" uri="mqtt://127.0.0.1:0"/>
              </transportConnectors>
            </broker></beans>"#
        );
        let options = crate::config::LoadOptions::default();
        crate::config::load_str(&xml, std::path::Path::new("."), &options)
            .config
            .expect("config compiles")
    }

    const AUTHZ: &str = r#"<plugins><authorizationPlugin><map><authorizationMap>
        <authorizationEntries>
          <authorizationEntry topic="a.b" read="g1" write="g1"/>
          <authorizationEntry topic=">" read="admins" write="admins" admin="admins"/>
        </authorizationEntries></authorizationMap></map></authorizationPlugin></plugins>"#;

    fn principal(group: &str) -> Principal {
        Principal {
            user: Arc::from("u"),
            groups: vec![Arc::from(group)],
            anonymous: false,
        }
    }

    #[test]
    fn creation_is_explained_for_concrete_topics() {
        let config = config(AUTHZ);
        let security = Security::from_config(&config).expect("security");
        let text = explain_creation(&config, &security, &principal("g1"), "a/b", Action::Read);
        assert!(text.contains("not declared in <destinations>"), "{text}");
        assert!(text.contains("may NOT create it"), "{text}");
        assert!(text.contains("SUBACK 0x80"), "{text}");
        let text = explain_creation(
            &config,
            &security,
            &principal("admins"),
            "a/b",
            Action::Write,
        );
        assert!(text.contains("MAY create it"), "{text}");
        // A wildcard subscription creates nothing.
        let text = explain_creation(&config, &security, &principal("g1"), "a/+", Action::Read);
        assert!(text.is_empty(), "{text}");
    }

    #[test]
    fn declared_topics_and_no_authorization_need_no_admin() {
        let declared =
            format!(r#"<destinations><topic physicalName="a.b"/></destinations>{AUTHZ}"#);
        let config = config(&declared);
        let security = Security::from_config(&config).expect("security");
        let explained =
            explain_in_config(&config, &security, &principal("g1"), "a/b", Action::Read);
        assert!(explained.allowed);
        assert!(
            explained
                .text
                .contains("exists: declared in <destinations>"),
            "{explained}"
        );
        let open = super::tests::config("");
        let security = Security::from_config(&open).expect("security");
        let text = explain_creation(&open, &security, &principal("g1"), "a/b", Action::Write);
        assert!(text.contains("anyone may create"), "{text}");
    }
}
