//! The `check` lines for dead letters, redelivery and queue prefetch (`Config.delivery`).

use super::delivery_policy::{
    DeadLetterRules, DeadLetterStrategy, DeliveryPolicy, RedeliveryPolicy,
    DEFAULT_DEAD_LETTER_QUEUE, DEFAULT_MAX_BROWSE_PAGE_SIZE, DEFAULT_QUEUE_PREFETCH,
};
use super::model::DestinationKind;

/// One line per setting, without indentation, e.g. `dead letters: queue orders.>: individual
/// (queue DLQ.<name>); persistent only; expired too`.
pub fn lines(delivery: &DeliveryPolicy) -> Vec<String> {
    let mut out = Vec::new();
    for entry in &delivery.entries {
        // The default entry is compiled once per kind: shown once.
        if entry.fallback && entry.kind != DestinationKind::Queue {
            continue;
        }
        let at = if entry.fallback {
            "defaultEntry (destinations no entry matches)".to_owned()
        } else {
            format!("{} {}", kind(entry.kind), entry.pattern)
        };
        if let Some(strategy) = &entry.dead_letter_strategy {
            out.push(format!("dead letters: {at}: {}", strategy_text(strategy)));
        }
        if let Some(prefetch) = entry.queue_prefetch {
            out.push(format!("queue prefetch: {at}: {prefetch}"));
        }
        let queue_kind = matches!(
            entry.kind,
            DestinationKind::Queue | DestinationKind::TempQueue
        );
        if let Some(page) = entry.max_browse_page_size.filter(|_| queue_kind) {
            out.push(format!("queue browse page: {at}: {page}"));
        }
    }
    // What applies where no entry (nor the default entry) sets it.
    let by_default = |set: fn(&super::delivery_policy::DeliveryEntry) -> bool| {
        delivery.entries.iter().any(|e| e.fallback && set(e))
    };
    let mut elsewhere = Vec::new();
    if !by_default(|e| e.dead_letter_strategy.is_some()) {
        elsewhere.push(format!(
            "dead letters elsewhere: queue {DEFAULT_DEAD_LETTER_QUEUE} (persistent messages; \
             expired ones too)"
        ));
    }
    if !by_default(|e| e.queue_prefetch.is_some()) {
        elsewhere.push(format!(
            "queue prefetch elsewhere: {DEFAULT_QUEUE_PREFETCH}"
        ));
    }
    if !by_default(|e| e.max_browse_page_size.is_some()) {
        elsewhere.push(format!(
            "queue browse page elsewhere: {DEFAULT_MAX_BROWSE_PAGE_SIZE}"
        ));
    }
    if !elsewhere.is_empty() {
        out.push(elsewhere.join("; "));
    }
    match &delivery.redelivery {
        None => out.push(
            "redelivery: none (no redeliveryPlugin): a rejected message is dead-lettered at once"
                .to_owned(),
        ),
        Some(plugin) => {
            for entry in &plugin.entries {
                out.push(format!(
                    "redelivery: {} {}: {}",
                    kind(entry.kind),
                    entry.pattern,
                    policy_text(&entry.policy)
                ));
            }
            let fallback = match (&plugin.default_entry, plugin.fallback_to_dead_letter) {
                (Some(policy), _) => policy_text(policy),
                (None, true) => "dead-lettered at once (fallbackToDeadLetter)".to_owned(),
                (None, false) => "dropped (fallbackToDeadLetter=false)".to_owned(),
            };
            out.push(format!("redelivery elsewhere: {fallback}"));
            out.push(format!(
                "after the last redelivery: {}",
                if plugin.send_to_dlq_if_max_retries_exceeded {
                    "dead-lettered"
                } else {
                    "dropped (sendToDlqIfMaxRetriesExceeded=false)"
                }
            ));
        }
    }
    out
}

fn kind(kind: DestinationKind) -> &'static str {
    match kind {
        DestinationKind::Topic => "topic",
        DestinationKind::Queue => "queue",
        DestinationKind::TempTopic => "temp-topic",
        DestinationKind::TempQueue => "temp-queue",
    }
}

fn strategy_text(strategy: &DeadLetterStrategy) -> String {
    let (what, rules) = match strategy {
        DeadLetterStrategy::Shared { destination, rules } => (
            format!("shared, to {} {}", kind(destination.kind), destination.name),
            rules,
        ),
        DeadLetterStrategy::Individual {
            queue_prefix,
            queue_suffix,
            topic_prefix,
            topic_suffix,
            use_queue_for_queue_messages,
            use_queue_for_topic_messages,
            rules,
            ..
        } => {
            let as_kind = |queue: bool| if queue { "queue" } else { "topic" };
            (
                format!(
                    "individual, queues' to {} {queue_prefix}<name>{queue_suffix}, topics' to {} \
                     {topic_prefix}<name>{topic_suffix}",
                    as_kind(*use_queue_for_queue_messages),
                    as_kind(*use_queue_for_topic_messages),
                ),
                rules,
            )
        }
        DeadLetterStrategy::Discarding { rules } => ("discarded".to_owned(), rules),
    };
    format!("{what}; {}", rules_text(rules))
}

fn rules_text(rules: &DeadLetterRules) -> String {
    let mut parts = vec![
        if rules.process_non_persistent {
            "non-persistent messages too"
        } else {
            "persistent messages only"
        },
        if rules.process_expired {
            "expired ones too"
        } else {
            "expired ones dropped"
        },
    ]
    .into_iter()
    .map(str::to_owned)
    .collect::<Vec<_>>();
    if let Some(ms) = rules.expiration_ms {
        parts.push(format!("kept {ms} ms"));
    }
    parts.join(", ")
}

fn policy_text(policy: &RedeliveryPolicy) -> String {
    let times = policy
        .maximum_redeliveries
        .map_or("forever".to_owned(), |n| format!("up to {n} times"));
    let back_off = if policy.use_exponential_back_off {
        format!(
            ", x{} each time{}",
            policy.back_off_multiplier,
            policy
                .maximum_redelivery_delay_ms
                .map_or(String::new(), |cap| format!(" (at most {cap} ms)"))
        )
    } else {
        String::new()
    };
    format!(
        "{times}, first after {} ms, then {} ms{back_off}",
        policy.initial_redelivery_delay_ms, policy.redelivery_delay_ms
    )
}

#[cfg(test)]
mod tests {
    use crate::config::{load_str, LoadOptions};

    #[test]
    fn the_default_entry_is_shown_once_as_the_fallback() {
        let xml = "<beans xmlns=\"http://www.springframework.org/schema/beans\">\
             <broker xmlns=\"http://activemq.apache.org/schema/core\"><destinationPolicy><policyMap>\
             <policyEntries><policyEntry queue=\"orders\" queuePrefetch=\"5\"/></policyEntries>\
             <defaultEntry><policyEntry queuePrefetch=\"7\"/></defaultEntry>\
             </policyMap></destinationPolicy></broker></beans>";
        let options = LoadOptions {
            use_env: false,
            ..LoadOptions::default()
        };
        let config = load_str(xml, std::path::Path::new("."), &options)
            .into_result()
            .expect("valid");
        let lines = super::lines(&config.delivery);
        let prefetch: Vec<&String> = lines
            .iter()
            .filter(|l| l.starts_with("queue prefetch:"))
            .collect();
        assert_eq!(
            prefetch,
            [
                "queue prefetch: queue orders: 5",
                "queue prefetch: defaultEntry (destinations no entry matches): 7"
            ]
        );
        assert!(
            lines.contains(
                &"dead letters elsewhere: queue ActiveMQ.DLQ (persistent messages; expired ones \
                  too); queue browse page elsewhere: 400"
                    .to_owned()
            ),
            "{lines:?}"
        );
        assert!(
            !lines.iter().any(|l| l.contains("prefetch elsewhere")),
            "{lines:?}"
        );
    }
}
