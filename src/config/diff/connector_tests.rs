//! Reload diffs of STOMP connectors and delivery policies: added, removed, rebound and
//! re-optioned like MQTT connectors (the running listener set acts on these).

use std::collections::BTreeMap;

use super::diff;
use crate::config::{load_str, Config, LoadOptions};

fn config(inner: &str) -> Config {
    let xml = format!(
        "<beans xmlns=\"http://www.springframework.org/schema/beans\">\
         <broker xmlns=\"http://activemq.apache.org/schema/core\" persistent=\"false\">{inner}</broker></beans>"
    );
    let options = LoadOptions {
        overrides: BTreeMap::new(),
        use_env: false,
        local_store: false,
        embedded_default: false,
    };
    let loaded = load_str(&xml, std::path::Path::new("."), &options);
    let text = loaded.diagnostics.to_string();
    loaded
        .into_result()
        .unwrap_or_else(|_| panic!("expected a valid config:\n{text}"))
}

fn connectors(items: &[(&str, &str)]) -> String {
    let items: String = items
        .iter()
        .map(|(name, uri)| format!("<transportConnector name=\"{name}\" uri=\"{uri}\"/>"))
        .collect();
    format!("<transportConnectors>{items}</transportConnectors>")
}

const MQTT: (&str, &str) = ("mqtt", "mqtt://127.0.0.1:1883");

#[test]
fn stomp_connectors_are_added_and_removed() {
    let before = config(&connectors(&[MQTT]));
    let after = config(&connectors(&[MQTT, ("stomp", "stomp://127.0.0.1:61613")]));
    let added = diff(&before, &after);
    assert_eq!(added.listeners_added, ["stomp"]);
    assert!(added.has_runtime_changes());
    assert!(added.summary().contains("stomp"), "{}", added.summary());
    let removed = diff(&after, &before);
    assert_eq!(removed.listeners_removed, ["stomp"]);
}

#[test]
fn stomp_scheme_and_address_changes_rebind_option_changes_do_not() {
    let running = config(&connectors(&[("s", "stomp://127.0.0.1:61613")]));
    for (uri, what) in [
        ("stomp+nio://127.0.0.1:61613", "scheme"),
        ("stomp://127.0.0.1:61614", "address"),
        ("mqtt://127.0.0.1:61613", "protocol"),
    ] {
        let new = config(&connectors(&[("s", uri)]));
        let d = diff(&running, &new);
        assert_eq!(d.listeners_changed.len(), 1, "{what}");
        assert!(d.listeners_changed[0].rebind, "{what}: {}", d.summary());
    }
    let reoptioned = config(&connectors(&[(
        "s",
        "stomp://127.0.0.1:61613?transport.defaultHeartBeat=1000,0&amp;transport.hbGracePeriodMultiplier=2\
         &amp;transport.maxDataLength=1024&amp;wireFormat.maxFrameSize=2048",
    )]));
    let d = diff(&running, &reoptioned);
    let change = &d.listeners_changed[0];
    assert!(
        !change.rebind,
        "options apply to new connections on the same socket"
    );
    assert_eq!(
        change.options,
        [
            "transport.defaultHeartBeat",
            "transport.hbGracePeriodMultiplier",
            "transport.maxDataLength",
            "wireFormat.maxFrameSize"
        ]
    );
}

#[test]
fn delivery_policy_changes_are_named() {
    let plain = config(&connectors(&[MQTT]));
    let with_dlq = config(&format!(
        "<destinationPolicy><policyMap><policyEntries><policyEntry queue=\">\">\
         <deadLetterStrategy><individualDeadLetterStrategy/></deadLetterStrategy>\
         </policyEntry></policyEntries></policyMap></destinationPolicy>{}",
        connectors(&[MQTT])
    ));
    let d = diff(&plain, &with_dlq);
    assert!(d.delivery && d.has_runtime_changes());
    assert!(d.summary().contains("~delivery policy"), "{}", d.summary());
    assert!(!diff(&with_dlq, &with_dlq).delivery);
}

#[test]
fn a_new_backlog_needs_a_restart_unless_the_connector_is_bound_again() {
    let running = config(&connectors(&[MQTT]));
    let mut new = config(&connectors(&[(
        "mqtt",
        "mqtt://127.0.0.1:1883?backlog=100",
    )]));
    let d = diff(&running, &new);
    assert_eq!(d.restart_needed.len(), 1, "{}", d.summary());
    assert_eq!(d.restart_needed[0].name, "backlog");
    assert_eq!(d.restart_needed[0].requested, "100");
    super::keep_running_values(&running, &mut new);
    assert_eq!(new.listeners[0].options.backlog, 5_000);
    // On another port the socket is bound anew, with the new queue.
    let moved = config(&connectors(&[(
        "mqtt",
        "mqtt://127.0.0.1:1884?backlog=100",
    )]));
    let d = diff(&running, &moved);
    assert!(d.restart_needed.is_empty(), "{}", d.summary());
    assert!(d.listeners_changed[0].rebind);
}
