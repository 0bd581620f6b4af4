//! Dead letters, redelivery and queue prefetch ([`DeliveryPolicy`]): `policyEntry`'s
//! `<deadLetterStrategy>` and `queuePrefetch`, and the `<redeliveryPlugin>`, with ActiveMQ
//! 5.17's element names and defaults (see `config::delivery_policy`).

use super::Ctx;
use crate::config::delivery_policy::{
    DeadLetterRules, DeadLetterStrategy, Destination, RedeliveryEntry, RedeliveryPlugin,
    RedeliveryPolicy, DEFAULT_DEAD_LETTER_QUEUE, DEFAULT_DLQ_QUEUE_PREFIX,
    DEFAULT_DLQ_TOPIC_PREFIX,
};
use crate::config::diagnostic::Diagnostic;
use crate::config::model::DestinationKind;
use crate::config::tree::Element;

/// The destination attributes of a `policyEntry` or `redeliveryPolicy`, with their kinds.
const DESTINATION_ATTRS: [(&str, DestinationKind); 4] = [
    ("topic", DestinationKind::Topic),
    ("queue", DestinationKind::Queue),
    ("tempTopic", DestinationKind::TempTopic),
    ("tempQueue", DestinationKind::TempQueue),
];

/// What one `policyEntry` sets of the queue engine's delivery (`None`: not set).
pub(super) struct EntrySettings {
    pub dead_letter_strategy: Option<DeadLetterStrategy>,
    pub queue_prefetch: Option<u32>,
    pub max_browse_page_size: Option<u32>,
}

/// `policyEntry`'s `<deadLetterStrategy>` (at most one strategy), `queuePrefetch` and
/// `maxBrowsePageSize`.
pub(super) fn entry_settings(ctx: &mut Ctx<'_>, entry: &Element) -> EntrySettings {
    let mut strategy = None;
    for element in ctx.items(entry, "deadLetterStrategy") {
        let compiled = match element.name.as_str() {
            "sharedDeadLetterStrategy" => Some(shared(ctx, element)),
            "individualDeadLetterStrategy" => Some(individual(ctx, element)),
            "discarding" => Some(DeadLetterStrategy::Discarding {
                rules: rules(ctx, element),
            }),
            _ => None, // reported by the names pass
        };
        if let Some(compiled) = compiled {
            ctx.mark(element);
            if strategy.is_some() {
                ctx.push(
                    Diagnostic::error(
                        element.span.clone(),
                        "a second dead-letter strategy in one <deadLetterStrategy>",
                    )
                    .with_hint("a policy entry has one strategy; keep one of them"),
                );
            }
            strategy = Some(compiled);
        }
    }
    EntrySettings {
        dead_letter_strategy: strategy,
        queue_prefetch: count_attr(
            ctx,
            entry,
            "queuePrefetch",
            "the number of unacknowledged messages a queue consumer may hold, e.g. 1000",
        ),
        max_browse_page_size: count_attr(
            ctx,
            entry,
            "maxBrowsePageSize",
            "the most messages one queue browse returns, e.g. 400",
        ),
    }
}

/// A count attribute of `entry` (0 to `i32::MAX`, an `int` in ActiveMQ): a value error with
/// `hint` when it is out of range.
fn count_attr(ctx: &mut Ctx<'_>, entry: &Element, name: &str, hint: &str) -> Option<u32> {
    match ctx.int_attr(entry, name) {
        Some(n) if (0..=i64::from(i32::MAX)).contains(&n) => Some(n as u32),
        Some(_) => {
            if let Some(attr) = ctx.attr(entry, name) {
                ctx.value_error(
                    attr,
                    format!("{name} must be between 0 and 2147483647 (an int in ActiveMQ)"),
                    hint,
                );
            }
            None
        }
        None => None,
    }
}

/// `processNonPersistent`, `processExpired`, `expiration` (`AbstractDeadLetterStrategy`).
fn rules(ctx: &mut Ctx<'_>, element: &Element) -> DeadLetterRules {
    let defaults = DeadLetterRules::default();
    let expiration_ms = match ctx.int_attr(element, "expiration") {
        Some(ms) if ms > 0 => Some(ms as u64),
        Some(0) | None => None,
        Some(_) => {
            if let Some(attr) = ctx.attr(element, "expiration") {
                ctx.value_error(
                    attr,
                    "expiration cannot be negative",
                    "milliseconds a dead letter is kept; 0 keeps it forever",
                );
            }
            None
        }
    };
    DeadLetterRules {
        process_non_persistent: ctx
            .bool_attr(element, "processNonPersistent")
            .unwrap_or(defaults.process_non_persistent),
        process_expired: ctx
            .bool_attr(element, "processExpired")
            .unwrap_or(defaults.process_expired),
        expiration_ms,
    }
}

fn shared(ctx: &mut Ctx<'_>, element: &Element) -> DeadLetterStrategy {
    let mut destination = Destination::queue(DEFAULT_DEAD_LETTER_QUEUE);
    for target in ctx.items(element, "deadLetterQueue") {
        let kind = match target.name.as_str() {
            "queue" => DestinationKind::Queue,
            "topic" => DestinationKind::Topic,
            _ => continue, // reported by the names pass
        };
        ctx.mark(target);
        let name = ctx
            .attr(target, "physicalName")
            .or_else(|| ctx.attr(target, "name"))
            .map(|a| a.value.trim().to_owned());
        match name {
            Some(name) if !name.is_empty() => destination = Destination { kind, name },
            _ => ctx.push(
                Diagnostic::error(
                    target.span.clone(),
                    format!("<{}> without a physicalName", target.name),
                )
                .with_hint("e.g. <queue physicalName=\"ActiveMQ.DLQ\"/>"),
            ),
        }
    }
    DeadLetterStrategy::Shared {
        destination,
        rules: rules(ctx, element),
    }
}

fn individual(ctx: &mut Ctx<'_>, element: &Element) -> DeadLetterStrategy {
    let mut text = |name: &str, default: &str| {
        ctx.attr(element, name)
            .map_or_else(|| default.to_owned(), |a| a.value.trim().to_owned())
    };
    let queue_prefix = text("queuePrefix", DEFAULT_DLQ_QUEUE_PREFIX);
    let queue_suffix = text("queueSuffix", "");
    let topic_prefix = text("topicPrefix", DEFAULT_DLQ_TOPIC_PREFIX);
    let topic_suffix = text("topicSuffix", "");
    DeadLetterStrategy::Individual {
        queue_prefix,
        queue_suffix,
        topic_prefix,
        topic_suffix,
        use_queue_for_queue_messages: ctx
            .bool_attr(element, "useQueueForQueueMessages")
            .unwrap_or(true),
        use_queue_for_topic_messages: ctx
            .bool_attr(element, "useQueueForTopicMessages")
            .unwrap_or(true),
        destination_per_durable_subscriber: ctx
            .bool_attr(element, "destinationPerDurableSubscriber")
            .unwrap_or(false),
        rules: rules(ctx, element),
    }
}

/// `<redeliveryPlugin>` and its `redeliveryPolicyMap`.
pub(super) fn redelivery_plugin(ctx: &mut Ctx<'_>, plugin: &Element) -> RedeliveryPlugin {
    ctx.mark(plugin);
    let mut compiled = RedeliveryPlugin {
        fallback_to_dead_letter: ctx
            .bool_attr(plugin, "fallbackToDeadLetter")
            .unwrap_or(true),
        send_to_dlq_if_max_retries_exceeded: ctx
            .bool_attr(plugin, "sendToDlqIfMaxRetriesExceeded")
            .unwrap_or(true),
        default_entry: None,
        entries: Vec::new(),
        span: plugin.span.clone(),
    };
    for map in ctx.items(plugin, "redeliveryPolicyMap") {
        if map.name != "redeliveryPolicyMap" {
            continue; // reported by the names pass
        }
        ctx.mark(map);
        let mut entries = ctx.items(map, "redeliveryPolicyEntries");
        entries.extend(ctx.items(map, "entries"));
        for entry in entries.into_iter().filter(|e| e.name == "redeliveryPolicy") {
            ctx.mark(entry);
            let policy = redelivery_policy(ctx, entry);
            let mut named = false;
            for (attr, kind) in DESTINATION_ATTRS {
                let Some(value) = ctx.attr(entry, attr).map(|a| a.value.clone()) else {
                    continue;
                };
                for pattern in super::policy::destination_patterns(kind, &value) {
                    named = true;
                    compiled.entries.push(RedeliveryEntry {
                        kind,
                        pattern,
                        policy: policy.clone(),
                        span: entry.span.clone(),
                    });
                }
            }
            if !named {
                ctx.push(
                    Diagnostic::error(
                        entry.span.clone(),
                        "redeliveryPolicy entry without a destination",
                    )
                    .with_hint(
                        "add queue=\"orders.>\" (or topic=...); a policy for every destination \
                         goes in <defaultEntry>",
                    ),
                );
            }
        }
        for default in ctx
            .items(map, "defaultEntry")
            .into_iter()
            .filter(|e| e.name == "redeliveryPolicy")
        {
            ctx.mark(default);
            compiled.default_entry = Some(redelivery_policy(ctx, default));
        }
    }
    compiled
}

/// The shortest delay ActiveMQ's `RedeliveryPlugin` starts with (`validatePolicyDelay(1000)`:
/// `IllegalStateException: RedeliveryPolicy initialRedeliveryDelay must exceed: 1000`).
const ACTIVEMQ_MINIMUM_DELAY_MS: u64 = 1000;

/// A delay below [`ACTIVEMQ_MINIMUM_DELAY_MS`]: ferromq serves it, ActiveMQ refuses to start,
/// so warn (as for a missing `schedulerSupport`), for a file shared with ActiveMQ.
fn warn_below_activemq_minimum(ctx: &mut Ctx<'_>, element: &Element, name: &str, ms: u64) {
    if ms >= ACTIVEMQ_MINIMUM_DELAY_MS {
        return;
    }
    let span = ctx
        .attr(element, name)
        .map_or_else(|| element.span.clone(), |a| a.span.clone());
    ctx.push(
        Diagnostic::warning(
            span,
            format!(
                "ActiveMQ refuses to start a redeliveryPlugin whose {name} is below \
                 {ACTIVEMQ_MINIMUM_DELAY_MS} ms (this one: {ms} ms)"
            ),
        )
        .with_hint(
            "ferromq serves the shorter delay; use 1000 or more if ActiveMQ reads this file too",
        ),
    );
}

/// One `<redeliveryPolicy>`'s attributes (`RedeliveryPolicy`).
fn redelivery_policy(ctx: &mut Ctx<'_>, element: &Element) -> RedeliveryPolicy {
    let defaults = RedeliveryPolicy::default();
    let millis = |ctx: &mut Ctx<'_>, name: &str, default: u64| match ctx.int_attr(element, name) {
        Some(ms) if ms >= 0 => ms as u64,
        Some(_) => {
            if let Some(attr) = ctx.attr(element, name) {
                ctx.value_error(
                    attr,
                    format!("{name} cannot be negative"),
                    "milliseconds, e.g. 1000",
                );
            }
            default
        }
        None => default,
    };
    let initial_redelivery_delay_ms = millis(
        ctx,
        "initialRedeliveryDelay",
        defaults.initial_redelivery_delay_ms,
    );
    let redelivery_delay_ms = millis(ctx, "redeliveryDelay", defaults.redelivery_delay_ms);
    for (name, ms) in [
        ("initialRedeliveryDelay", initial_redelivery_delay_ms),
        ("redeliveryDelay", redelivery_delay_ms),
    ] {
        warn_below_activemq_minimum(ctx, element, name, ms);
    }
    let maximum_redeliveries = match ctx.int_attr(element, "maximumRedeliveries") {
        Some(-1) => None,
        Some(n) if n >= 0 => Some(u32::try_from(n).unwrap_or(u32::MAX)),
        Some(_) => {
            if let Some(attr) = ctx.attr(element, "maximumRedeliveries") {
                ctx.value_error(
                    attr,
                    "maximumRedeliveries is -1 (forever) or 0 or more",
                    "e.g. 6 (ActiveMQ's default)",
                );
            }
            defaults.maximum_redeliveries
        }
        None => defaults.maximum_redeliveries,
    };
    let maximum_redelivery_delay_ms = match ctx.int_attr(element, "maximumRedeliveryDelay") {
        Some(ms) if ms >= 0 => Some(ms as u64),
        _ => None, // -1 (the default) and other negatives: no cap, as ActiveMQ
    };
    let back_off_multiplier = match ctx.attr(element, "backOffMultiplier") {
        None => defaults.back_off_multiplier,
        Some(attr) => match attr.value.trim().parse::<f64>() {
            Ok(m) if m.is_finite() && m >= 0.0 => m,
            _ => {
                ctx.value_error(
                    attr,
                    format!("backOffMultiplier `{}` is not a number", attr.value),
                    "e.g. 2: each redelivery waits twice as long as the one before",
                );
                defaults.back_off_multiplier
            }
        },
    };
    RedeliveryPolicy {
        maximum_redeliveries,
        initial_redelivery_delay_ms,
        redelivery_delay_ms,
        use_exponential_back_off: ctx
            .bool_attr(element, "useExponentialBackOff")
            .unwrap_or(defaults.use_exponential_back_off),
        back_off_multiplier,
        maximum_redelivery_delay_ms,
    }
}
