//! `<destinationPolicy><policyMap><policyEntries><policyEntry .../>`: per-destination policies.
//! ferromq acts on the pending message limit of slow subscribers
//! (`<pendingMessageLimitStrategy><constantPendingMessageLimitStrategy limit="1000"/>`).

use super::{delivery, Ctx};
use crate::config::delivery_policy::DeliveryEntry;
use crate::config::diagnostic::Diagnostic;
use crate::config::model::{DestinationKind, PolicyEntry};
use crate::config::tree::Element;
use crate::config::values;

/// The policy entries, and the delivery settings (dead letters, queue prefetch) of those that
/// set any.
pub(super) fn entries(
    ctx: &mut Ctx<'_>,
    broker: &Element,
) -> (Vec<PolicyEntry>, Vec<DeliveryEntry>) {
    let mut out = Vec::new();
    let mut delivery = Vec::new();
    for map in ctx.items(broker, "destinationPolicy") {
        if map.name != "policyMap" {
            continue;
        }
        ctx.mark(map);
        let mut elements = ctx.items(map, "policyEntries");
        elements.extend(ctx.items(map, "entries"));
        for element in elements.into_iter().filter(|e| e.name == "policyEntry") {
            let (policies, settings) = entry(ctx, element, false);
            out.extend(policies);
            delivery.extend(settings);
        }
        // The default entry applies when nothing else matches: the least specific pattern.
        for element in ctx
            .items(map, "defaultEntry")
            .into_iter()
            .filter(|e| e.name == "policyEntry")
        {
            let (policies, settings) = entry(ctx, element, true);
            out.extend(policies);
            delivery.extend(settings);
        }
    }
    (out, delivery)
}

fn entry(
    ctx: &mut Ctx<'_>,
    element: &Element,
    is_default: bool,
) -> (Vec<PolicyEntry>, Vec<DeliveryEntry>) {
    ctx.mark(element);
    let mut destinations = Vec::new();
    for (name, kind) in [
        ("topic", DestinationKind::Topic),
        ("queue", DestinationKind::Queue),
        ("tempTopic", DestinationKind::TempTopic),
        ("tempQueue", DestinationKind::TempQueue),
    ] {
        if let Some(attr) = ctx.attr(element, name) {
            destinations.extend(
                destination_patterns(kind, &attr.value)
                    .into_iter()
                    .map(|p| (kind, p)),
            );
        }
    }
    if destinations.is_empty() {
        if is_default {
            destinations.push((DestinationKind::Topic, ">".to_owned()));
        } else {
            ctx.push(
                Diagnostic::error(element.span.clone(), "policyEntry without a destination")
                    .with_hint(
                        "add topic=\">\" (every topic) or a pattern such as topic=\"sensors.>\"",
                    ),
            );
            return (Vec::new(), Vec::new());
        }
    }
    let mut pending_message_limit = None;
    for strategy in ctx.items(element, "pendingMessageLimitStrategy") {
        if strategy.name == "constantPendingMessageLimitStrategy" {
            ctx.mark(strategy);
            // ActiveMQ treats a negative limit as "no limit".
            pending_message_limit = ctx
                .int_attr(strategy, "limit")
                .and_then(|n| u32::try_from(n).ok().or((n > 0).then_some(u32::MAX)));
        }
    }
    let settings = delivery::entry_settings(ctx, element);
    browse_page_checks(
        ctx,
        element,
        &destinations,
        is_default,
        settings.max_browse_page_size,
    );
    // The default entry is every destination's fallback for delivery settings, whatever
    // destination it names (ActiveMQ's `PolicyMap.getEntryFor`), not only topics'.
    let fallback = is_default;
    let delivery_targets: Vec<(DestinationKind, String)> = if fallback {
        [
            DestinationKind::Queue,
            DestinationKind::Topic,
            DestinationKind::TempQueue,
            DestinationKind::TempTopic,
        ]
        .into_iter()
        .map(|kind| (kind, ">".to_owned()))
        .collect()
    } else {
        destinations.clone()
    };
    // Every entry counts, also one that sets none of these: ActiveMQ takes all settings of a
    // destination from the one entry it picks (ActiveMQ's defaults for what that entry does
    // not set).
    let delivery = delivery_targets
        .into_iter()
        .map(|(kind, pattern)| DeliveryEntry {
            kind,
            pattern,
            dead_letter_strategy: settings.dead_letter_strategy.clone(),
            queue_prefetch: settings.queue_prefetch,
            max_browse_page_size: settings.max_browse_page_size,
            fallback,
            span: element.span.clone(),
        })
        .collect();
    let policies = destinations
        .into_iter()
        .map(|(kind, pattern)| PolicyEntry {
            kind,
            pattern,
            pending_message_limit,
            span: element.span.clone(),
        })
        .collect();
    (policies, delivery)
}

/// The patterns a `policyEntry`/`redeliveryPolicy` destination attribute names. `tempQueue=` and
/// `tempTopic=` are flags in ActiveMQ (`DestinationMapEntry.setTempQueue(boolean)` sets every
/// temporary queue, `>`, whatever the value), the others comma-separated patterns.
pub(super) fn destination_patterns(kind: DestinationKind, value: &str) -> Vec<String> {
    match kind {
        DestinationKind::TempQueue | DestinationKind::TempTopic => vec![">".to_owned()],
        DestinationKind::Queue | DestinationKind::Topic => values::parse_comma_list(value),
    }
}

/// `maxBrowsePageSize` that cannot do what it says: on an entry for topics only (topics are
/// not browsed), or 0 (every browse returns only its end, as in ActiveMQ).
fn browse_page_checks(
    ctx: &mut Ctx<'_>,
    element: &Element,
    destinations: &[(DestinationKind, String)],
    is_default: bool,
    page: Option<u32>,
) {
    let Some(page) = page else { return };
    let Some(attr) = ctx.attr(element, "maxBrowsePageSize") else {
        return;
    };
    let span = attr.value_span.clone();
    let topics_only = !is_default
        && destinations
            .iter()
            .all(|(kind, _)| matches!(kind, DestinationKind::Topic | DestinationKind::TempTopic));
    if topics_only {
        ctx.push(
            Diagnostic::warning(
                span,
                "maxBrowsePageSize on a policyEntry for topics does nothing: only queues are browsed",
            )
            .with_hint("set it on a queue=\"...\" entry"),
        );
    } else if page == 0 {
        ctx.push(
            Diagnostic::warning(
                span,
                "maxBrowsePageSize=\"0\": every queue browse returns no message",
            )
            .with_hint("400 is ActiveMQ's default; remove the attribute to use it"),
        );
    }
}
