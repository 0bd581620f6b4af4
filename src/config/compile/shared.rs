//! `<ferromq:sharedSubscriptions strategy="..."/>` inside `<broker>`: how a shared subscription
//! group picks the member that receives a message. ActiveMQ never served MQTT 5 shared
//! subscriptions, so this is a ferromq extension element (namespace `urn:ferromq`).

use super::extension::single_attribute;
use super::Ctx;
use crate::config::model::SharedStrategy;
use crate::config::tree::Element;

/// The extension element's local name.
pub(super) const ELEMENT: &str = "sharedSubscriptions";

/// The strategy the file asks for; the default (round robin) when the element is absent or
/// its value is wrong (reported as an error, so the file does not load).
pub(super) fn strategy(ctx: &mut Ctx<'_>, broker: &Element) -> SharedStrategy {
    let mut chosen = SharedStrategy::default();
    let example = "strategy=\"round-robin\"";
    if let Some(attr) = single_attribute(ctx, broker, ELEMENT, "strategy", example) {
        match SharedStrategy::parse(attr.value.trim()) {
            Some(strategy) => chosen = strategy,
            None => {
                let names: Vec<&str> = SharedStrategy::ALL.iter().map(|s| s.as_str()).collect();
                ctx.value_error(
                    attr,
                    format!("unknown shared subscription strategy `{}`", attr.value),
                    &format!("write one of: {}", names.join(", ")),
                );
            }
        }
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::super::tests::{has, load, valid};
    use crate::config::model::SharedStrategy;

    #[test]
    fn round_robin_is_the_default() {
        let config = valid(load(""));
        assert_eq!(config.shared_strategy, SharedStrategy::RoundRobin);
    }

    #[test]
    fn every_strategy_is_read_by_its_name() {
        for strategy in SharedStrategy::ALL {
            let xml = format!(
                "<ferromq:sharedSubscriptions strategy=\"{}\"/>",
                strategy.as_str()
            );
            assert_eq!(valid(load(&xml)).shared_strategy, strategy);
        }
    }

    #[test]
    fn check_reports_the_strategy_and_a_reload_diff_names_it() {
        let loaded = load("<ferromq:sharedSubscriptions strategy=\"sticky\"/>");
        let report = crate::config::report::text(&loaded);
        assert!(
            report.contains("shared subscriptions: one member per group, sticky"),
            "{report}"
        );
        let json = crate::config::report::json(&loaded);
        assert!(json.contains("\"shared_strategy\":\"sticky\""), "{json}");
        let sticky = valid(loaded);
        let default = valid(load(""));
        let diff = crate::config::diff::diff(&default, &sticky);
        assert_eq!(
            diff.shared_strategy,
            Some((SharedStrategy::RoundRobin, SharedStrategy::Sticky))
        );
        assert!(diff.has_runtime_changes());
        assert!(diff
            .summary()
            .contains("sharedSubscriptions (strategy round-robin -> sticky)"));
        assert!(crate::config::diff::diff(&sticky, &sticky).is_empty());
    }

    #[test]
    fn an_unknown_strategy_is_an_error_naming_the_valid_ones() {
        let loaded = load("<ferromq:sharedSubscriptions strategy=\"fastest\"/>");
        assert!(loaded.diagnostics.has_errors());
        assert!(has(
            &loaded.diagnostics,
            "unknown shared subscription strategy `fastest`"
        ));
        let hint = loaded
            .diagnostics
            .0
            .iter()
            .find(|d| d.message.contains("fastest"))
            .and_then(|d| d.hint.clone());
        assert!(
            hint.as_deref()
                .is_some_and(|h| h.contains("hash-client-id")),
            "{hint:?}"
        );
    }

    #[test]
    fn unknown_attributes_misspelt_and_misplaced_elements_are_errors() {
        let loaded = load("<ferromq:sharedSubscriptions strategie=\"random\"/>");
        assert!(has(&loaded.diagnostics, "unknown attribute `strategie`"));
        let loaded = load("<ferromq:sharedSubscription strategy=\"random\"/>");
        assert!(has(
            &loaded.diagnostics,
            "unknown ferromq element <ferromq:sharedSubscription>"
        ));
        let loaded =
            load("<transportConnectors><ferromq:sharedSubscriptions/></transportConnectors>");
        assert!(loaded.diagnostics.has_errors(), "{}", loaded.diagnostics);
        let loaded = load(
            "<ferromq:sharedSubscriptions strategy=\"random\"/><ferromq:sharedSubscriptions/>",
        );
        assert!(has(
            &loaded.diagnostics,
            "a second <ferromq:sharedSubscriptions>"
        ));
    }
}
