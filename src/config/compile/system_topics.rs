//! `<ferromq:systemTopics interval="10000"/>` inside `<broker>`: how often the broker publishes
//! its `$SYS` topics (milliseconds, as ActiveMQ's time attributes; 0 turns them off). ActiveMQ
//! has no `$SYS` tree (it has advisory topics and JMX), so this is a ferromq extension element
//! (namespace `urn:ferromq`); without it the topics are published every 10 s, mosquitto's
//! default `sys_interval`.

use super::extension::single_attribute;
use super::Ctx;
use crate::config::model::SystemTopics;
use crate::config::tree::Element;

/// The extension element's local name.
pub(super) const ELEMENT: &str = "systemTopics";

/// The longest interval accepted: a day. Longer is surely a unit mistake (seconds vs ms are
/// the usual one, and a day in seconds is well below this in ms).
const MAX_INTERVAL_MS: u64 = 86_400_000;

/// The settings the file asks for; the default when the element is absent or its value is
/// wrong (reported as an error, so the file does not load).
pub(super) fn settings(ctx: &mut Ctx<'_>, broker: &Element) -> SystemTopics {
    let mut chosen = SystemTopics::default();
    let example = "interval=\"10000\" (milliseconds, 0 = off)";
    if let Some(attr) = single_attribute(ctx, broker, ELEMENT, "interval", example) {
        match attr.value.trim().parse::<u64>() {
            Ok(ms) if ms <= MAX_INTERVAL_MS => chosen.interval_ms = ms,
            Ok(_) => ctx.value_error(
                attr,
                format!("$SYS interval `{}` ms is longer than a day", attr.value),
                "the interval is in milliseconds: 10000 publishes every 10 s",
            ),
            Err(_) => ctx.value_error(
                attr,
                format!(
                    "$SYS interval must be a whole number of milliseconds, not `{}`",
                    attr.value
                ),
                "write e.g. interval=\"10000\" (every 10 s) or interval=\"0\" (off)",
            ),
        }
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::super::tests::{has, load, valid};

    #[test]
    fn ten_seconds_is_the_default() {
        let config = valid(load(""));
        assert_eq!(config.system_topics.interval_ms, 10_000);
        assert_eq!(
            config.system_topics.interval(),
            Some(std::time::Duration::from_secs(10))
        );
    }

    #[test]
    fn the_interval_is_read_in_milliseconds_and_zero_is_off() {
        let config = valid(load("<ferromq:systemTopics interval=\"2500\"/>"));
        assert_eq!(config.system_topics.interval_ms, 2500);
        let off = valid(load("<ferromq:systemTopics interval=\"0\"/>"));
        assert_eq!(off.system_topics.interval(), None);
    }

    #[test]
    fn check_reports_the_interval_and_a_reload_diff_names_it() {
        let loaded = load("<ferromq:systemTopics interval=\"0\"/>");
        let report = crate::config::report::text(&loaded);
        assert!(report.contains("$SYS topics: off"), "{report}");
        let json = crate::config::report::json(&loaded);
        assert!(json.contains("\"system_topics_interval_ms\":0"), "{json}");
        let off = valid(loaded);
        let default = valid(load(""));
        let report = crate::config::report::text(&load(""));
        assert!(report.contains("$SYS topics: every 10000 ms"), "{report}");
        let diff = crate::config::diff::diff(&default, &off);
        assert_eq!(diff.system_topics_ms, Some((10_000, 0)));
        assert!(diff.has_runtime_changes());
        assert!(diff.summary().contains("~systemTopics (10000 ms -> off)"));
        assert!(crate::config::diff::diff(&off, &off).is_empty());
    }

    #[test]
    fn wrong_values_attributes_and_places_are_errors() {
        for bad in ["-1", "10s", "", "100000000000"] {
            let loaded = load(&format!("<ferromq:systemTopics interval=\"{bad}\"/>"));
            assert!(loaded.diagnostics.has_errors(), "{bad}");
            assert!(has(&loaded.diagnostics, "$SYS interval"), "{bad}");
        }
        let loaded = load("<ferromq:systemTopics period=\"1000\"/>");
        assert!(has(&loaded.diagnostics, "unknown attribute `period`"));
        let loaded = load("<ferromq:systemTopic interval=\"1000\"/>");
        assert!(has(
            &loaded.diagnostics,
            "unknown ferromq element <ferromq:systemTopic>"
        ));
        let loaded = load("<transportConnectors><ferromq:systemTopics/></transportConnectors>");
        assert!(loaded.diagnostics.has_errors(), "{}", loaded.diagnostics);
        let loaded = load("<ferromq:systemTopics/><ferromq:systemTopics interval=\"1\"/>");
        assert!(has(&loaded.diagnostics, "a second <ferromq:systemTopics>"));
    }
}
