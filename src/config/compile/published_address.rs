//! `<publishedAddressPolicy>` of a `<transportConnector>` -> [`PublishedAddressPolicy`].
//!
//! ActiveMQ's shape (an XBean property holding the bean of the same name):
//!
//! ```xml
//! <transportConnector name="mqtt" uri="mqtt://0.0.0.0:1883">
//!   <publishedAddressPolicy>
//!     <publishedAddressPolicy publishedHostStrategy="IPADDRESS">
//!       <hostMapping><beans:map><beans:entry key="10.0.0.5" value="broker1.example.com"/>
//!       </beans:map></hostMapping>
//!       <portMapping><beans:map><beans:entry key="1883" value="31883"/></beans:map></portMapping>
//!     </publishedAddressPolicy>
//!   </publishedAddressPolicy>
//! </transportConnector>
//! ```
//!
//! The maps are Spring `<map>`s (`xmlns="http://www.springframework.org/schema/beans"`, or
//! its prefix), as ActiveMQ's schema wants there. `clusterClientUriQuery` is a query ActiveMQ
//! appends to the OpenWire URIs it sends with `updateClusterClients`; an MQTT Server Reference
//! is `host:port` only, so it is read and reported as having no effect.

use super::Ctx;
use crate::config::diagnostic::{Diagnostic, Span};
use crate::config::model::{PublishedAddressPolicy, PublishedHostStrategy};
use crate::config::tree::Element;

/// The connector's policy; ActiveMQ's defaults when it has none. Errors (an unknown strategy,
/// a port that is not a port, an entry without key or value) are reported and that part is
/// left at its default.
pub(super) fn policy(ctx: &mut Ctx<'_>, connector: &Element) -> PublishedAddressPolicy {
    let mut policy = PublishedAddressPolicy::default();
    for bean in ctx.items(connector, "publishedAddressPolicy") {
        if bean.name != "publishedAddressPolicy" {
            continue; // reported by the names pass
        }
        ctx.mark(bean);
        if let Some(attr) = ctx.attr(bean, "publishedHostStrategy") {
            match strategy(&attr.value) {
                Some(s) => policy.host_strategy = s,
                None => ctx.value_error(
                    attr,
                    format!("unknown publishedHostStrategy `{}`", attr.value.trim()),
                    "one of DEFAULT, IPADDRESS, HOSTNAME, FQDN (ActiveMQ's PublishedHostStrategy)",
                ),
            }
        }
        if let Some(attr) = ctx.attr(bean, "clusterClientUriQuery") {
            ctx.push(
                Diagnostic::warning(
                    attr.span.clone(),
                    "`clusterClientUriQuery` has no effect: an MQTT Server Reference is host:port \
                     without a query",
                )
                .with_hint("remove it, or keep it for ActiveMQ's OpenWire clients"),
            );
        }
        for (key, value, _) in entries(ctx, bean, "hostMapping") {
            policy.host_mapping.push((key, value));
        }
        for (key, value, span) in entries(ctx, bean, "portMapping") {
            match (key.trim().parse::<u16>(), value.trim().parse::<u16>()) {
                (Ok(from), Ok(to)) if from > 0 && to > 0 => policy.port_mapping.push((from, to)),
                _ => ctx.push(
                    Diagnostic::error(
                        span,
                        format!("portMapping entry `{key}` -> `{value}` is not a pair of ports"),
                    )
                    .with_hint("write <entry key=\"1883\" value=\"31883\"/>: ports 1 to 65535"),
                ),
            }
        }
    }
    policy
}

/// `publishedHostStrategy`, case-insensitive as ActiveMQ's `PublishedHostStrategy.getValue`.
fn strategy(value: &str) -> Option<PublishedHostStrategy> {
    match value.trim().to_ascii_uppercase().as_str() {
        "DEFAULT" => Some(PublishedHostStrategy::Default),
        "IPADDRESS" => Some(PublishedHostStrategy::IpAddress),
        "HOSTNAME" => Some(PublishedHostStrategy::HostName),
        "FQDN" => Some(PublishedHostStrategy::Fqdn),
        _ => None,
    }
}

/// The `<entry key=".." value=".."/>` items of map property `property` of `bean`, in a
/// Spring `<map>` (ActiveMQ's schema takes the map from another namespace there); each with
/// the entry's position. An entry without a key or a value is reported and skipped; an
/// ActiveMQ-namespace element is left to the names pass (unknown element).
fn entries(ctx: &mut Ctx<'_>, bean: &Element, property: &str) -> Vec<(String, String, Span)> {
    let mut found = Vec::new();
    for prop in bean.children.iter().filter(|c| c.name == property) {
        ctx.mark(prop);
        for child in &prop.children {
            if child.is_activemq() {
                continue;
            }
            if child.name != "map" {
                ctx.push(
                    Diagnostic::error(
                        child.span.clone(),
                        format!("<{}> in <{property}>: expected a Spring <map>", child.name),
                    )
                    .with_hint(MAP_HINT),
                );
                continue;
            }
            ctx.mark(child);
            for entry in &child.children {
                ctx.mark_subtree(entry);
                match (entry.name.as_str(), entry.attr("key"), entry.attr("value")) {
                    ("entry", Some(k), Some(v)) => {
                        found.push((k.value.clone(), v.value.clone(), entry.span.clone()))
                    }
                    _ => ctx.push(
                        Diagnostic::error(
                            entry.span.clone(),
                            format!("<{}> in the <map> of <{property}>: expected <entry key=\"..\" value=\"..\"/>", entry.name),
                        )
                        .with_hint(MAP_HINT),
                    ),
                }
            }
        }
    }
    found
}

const MAP_HINT: &str = "write <portMapping><map xmlns=\"http://www.springframework.org/schema/beans\"><entry key=\"1883\" value=\"31883\"/></map></portMapping>";

#[cfg(test)]
mod tests {
    use super::super::tests::{has, load, messages, valid};
    use crate::config::model::{PublishedAddressPolicy, PublishedHostStrategy};

    fn connector(inner: &str) -> String {
        format!(
            "<transportConnectors><transportConnector name=\"mqtt\" uri=\"mqtt://0.0.0.0:0\">\
             {inner}</transportConnector></transportConnectors>"
        )
    }

    #[test]
    fn a_connector_without_a_policy_has_activemqs_defaults() {
        let config = valid(load(&connector("")));
        assert_eq!(
            config.listeners[0].published,
            PublishedAddressPolicy::default()
        );
    }

    #[test]
    fn strategy_and_spring_map_mappings_are_read() {
        let loaded = load(&connector(
            "<publishedAddressPolicy><publishedAddressPolicy publishedHostStrategy=\"ipaddress\">\
               <hostMapping><map xmlns=\"http://www.springframework.org/schema/beans\"><entry key=\"127.0.0.1\" value=\"broker1.example.com\"/></map></hostMapping>\
               <portMapping><map xmlns=\"http://www.springframework.org/schema/beans\">\
                 <entry key=\"1883\" value=\"31883\"/></map></portMapping>\
             </publishedAddressPolicy></publishedAddressPolicy>",
        ));
        let text = messages(&loaded.diagnostics).join("\n");
        let config = valid(loaded);
        assert_eq!(
            config.listeners[0].published,
            PublishedAddressPolicy {
                host_strategy: PublishedHostStrategy::IpAddress,
                host_mapping: vec![("127.0.0.1".into(), "broker1.example.com".into())],
                port_mapping: vec![(1883, 31883)],
            },
            "{text}"
        );
        assert!(
            !text.contains("not read") && !text.contains("unknown"),
            "{text}"
        );
    }

    #[test]
    fn bad_values_are_errors_with_a_hint() {
        let loaded = load(&connector(
            "<publishedAddressPolicy><publishedAddressPolicy publishedHostStrategy=\"HOST\">\
               <portMapping><map xmlns=\"http://www.springframework.org/schema/beans\"><entry key=\"1883\" value=\"http\"/><entry key=\"1\"/></map></portMapping>\
               <hostMapping><entry key=\"a\" value=\"b\"/></hostMapping>\
             </publishedAddressPolicy></publishedAddressPolicy>",
        ));
        assert!(has(
            &loaded.diagnostics,
            "unknown publishedHostStrategy `HOST`"
        ));
        assert!(has(&loaded.diagnostics, "is not a pair of ports"));
        assert!(has(&loaded.diagnostics, "expected <entry key="));
        assert!(has(&loaded.diagnostics, "unknown element <entry>"));
        assert!(loaded.into_result().is_err());
    }

    #[test]
    fn cluster_client_uri_query_is_warned_as_without_effect() {
        let loaded = load(&connector(
            "<publishedAddressPolicy><publishedAddressPolicy clusterClientUriQuery=\"a=b\"/>\
             </publishedAddressPolicy>",
        ));
        assert!(has(
            &loaded.diagnostics,
            "`clusterClientUriQuery` has no effect"
        ));
        valid(loaded);
    }
}
