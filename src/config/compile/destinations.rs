//! `<destinations>` inside `<broker>`: destinations that exist from the start. ActiveMQ creates
//! them when the broker starts (as the broker itself, so no `admin` is needed), and a client
//! may then use them with `read`/`write` alone (see `broker::routing::destinations`).
//!
//! `<topic physicalName="a.b"/>` declares MQTT topic `a/b`; a comma-separated name declares
//! each part (ActiveMQ's composite destination). `<queue>` entries are read and kept for the
//! STOMP work (MQTT serves no queues) and reported by `check`. A wildcard name (`*`, `>`)
//! declares nothing an MQTT client could publish to, and temporary destinations cannot be
//! declared: both are warnings.

use super::Ctx;
use crate::config::diagnostic::Diagnostic;
use crate::config::model::DeclaredDestinations;
use crate::config::tree::Element;

/// The destinations `<broker><destinations>` declares.
pub(super) fn declared(ctx: &mut Ctx<'_>, broker: &Element) -> DeclaredDestinations {
    let mut declared = DeclaredDestinations::default();
    for item in ctx.items(broker, "destinations") {
        let list = match item.name.as_str() {
            "topic" => &mut declared.topics,
            "queue" => &mut declared.queues,
            "tempTopic" | "tempQueue" => {
                ctx.mark_subtree(item);
                ctx.push(
                    Diagnostic::warning(
                        item.span.clone(),
                        format!("<{}> in <destinations> is not created", item.name),
                    )
                    .with_hint("temporary destinations belong to a connection; remove it"),
                );
                continue;
            }
            _ => continue, // left to the unknown-name check
        };
        ctx.mark(item);
        let Some(attr) = ctx.attr(item, "physicalName") else {
            ctx.push(
                Diagnostic::error(
                    item.span.clone(),
                    format!("<{}> in <destinations> has no physicalName", item.name),
                )
                .with_hint("name the destination, e.g. physicalName=\"sensors.temperature\""),
            );
            continue;
        };
        for name in attr.value.split(',').map(str::trim) {
            if name.is_empty() {
                ctx.value_error(
                    attr,
                    "an empty destination name",
                    "write each name once, separated by commas",
                );
            } else if name.split('.').any(|level| level == "*" || level == ">") {
                ctx.push(
                    Diagnostic::warning(
                        attr.value_span.clone(),
                        format!("`{name}` is a wildcard: it declares no destination"),
                    )
                    .with_hint(
                        "declare concrete names; access by pattern is authorizationEntry's job",
                    ),
                );
            } else if !list.iter().any(|known| known == name) {
                list.push(name.to_owned());
            }
        }
    }
    declared
}

#[cfg(test)]
mod tests {
    use super::super::tests::{has, load, valid};

    #[test]
    fn topics_and_queues_are_read_composites_split() {
        let config = valid(load(
            r#"<destinations>
                 <topic physicalName="a.b"/>
                 <topic physicalName="c.d, e"/>
                 <queue physicalName="orders"/>
                 <topic physicalName="a.b"/>
               </destinations>"#,
        ));
        assert_eq!(config.destinations.topics, ["a.b", "c.d", "e"]);
        assert_eq!(config.destinations.queues, ["orders"]);
        let mqtt: Vec<String> = config.destinations.mqtt_topics().collect();
        assert_eq!(mqtt, ["a/b", "c/d", "e"]);
    }

    #[test]
    fn wildcards_and_temporaries_warn_a_missing_name_is_an_error() {
        let loaded = load(
            r#"<destinations><topic physicalName="a.>"/><tempQueue physicalName="x"/></destinations>"#,
        );
        assert!(!loaded.diagnostics.has_errors(), "{}", loaded.diagnostics);
        assert!(has(&loaded.diagnostics, "`a.>` is a wildcard"));
        assert!(has(
            &loaded.diagnostics,
            "<tempQueue> in <destinations> is not created"
        ));
        assert!(valid(loaded).destinations.topics.is_empty());
        let loaded = load("<destinations><topic/></destinations>");
        assert!(has(
            &loaded.diagnostics,
            "<topic> in <destinations> has no physicalName"
        ));
        assert!(loaded.diagnostics.has_errors());
    }

    #[test]
    fn a_reload_lists_only_added_topics() {
        let running = valid(load(
            r#"<destinations><topic physicalName="a.b"/><topic physicalName="gone"/></destinations>"#,
        ));
        let new = valid(load(
            r#"<destinations><topic physicalName="a.b"/><topic physicalName="c.d"/></destinations>"#,
        ));
        let diff = crate::config::diff::diff(&running, &new);
        assert_eq!(diff.topics_declared, ["c.d"]);
        assert!(diff.has_runtime_changes());
        assert!(
            diff.summary().contains("+destinations (c.d)"),
            "{}",
            diff.summary()
        );
        let removed_only = crate::config::diff::diff(&running, &valid(load("")));
        assert!(
            removed_only.is_empty(),
            "a removed destination stays: nothing to apply"
        );
    }

    #[test]
    fn check_reports_them() {
        let loaded = load(
            r#"<destinations><topic physicalName="a.b"/><queue physicalName="q"/></destinations>"#,
        );
        let report = crate::config::report::text(&loaded);
        assert!(
            report.contains(
                "destinations: topics a.b; queues q (kept for STOMP, not served over MQTT)"
            ),
            "{report}"
        );
    }
}
