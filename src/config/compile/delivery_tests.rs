//! Dead letters, redelivery and queue prefetch compiled from XML and asked per destination,
//! with ActiveMQ 5.17's defaults.

use std::time::Duration;

use super::tests::{has, load, load_in, options, valid};
use crate::config::delivery_policy::*;
use crate::config::model::*;

fn policies(entries: &str) -> String {
    format!("<destinationPolicy><policyMap><policyEntries>{entries}</policyEntries></policyMap></destinationPolicy>")
}

fn redelivery(attrs: &str, map: &str) -> String {
    format!(
        "<plugins><redeliveryPlugin {attrs}><redeliveryPolicyMap><redeliveryPolicyMap>{map}\
         </redeliveryPolicyMap></redeliveryPolicyMap></redeliveryPlugin></plugins>"
    )
}

#[test]
fn without_configuration_a_rejected_persistent_message_goes_to_activemq_dlq() {
    let config = valid(load(""));
    let orders = Destination::queue("orders");
    assert_eq!(
        config.delivery.after_rejection(&orders, true, 0, None),
        Rejection::DeadLetter {
            to: Destination::queue("ActiveMQ.DLQ")
        }
    );
    assert_eq!(
        config.delivery.after_rejection(&orders, false, 0, None),
        Rejection::Discard,
        "processNonPersistent is false by default"
    );
    assert_eq!(
        config.delivery.after_expiry(&orders, true),
        Some(Destination::queue("ActiveMQ.DLQ")),
        "processExpired is true by default"
    );
    assert_eq!(config.delivery.queue_prefetch_for(&orders), 1000);
    assert_eq!(
        config
            .delivery
            .after_rejection(&Destination::queue("ActiveMQ.DLQ"), true, 0, None),
        Rejection::Discard,
        "a dead letter rejected in the DLQ does not loop"
    );
}

#[test]
fn strategies_are_chosen_by_the_best_matching_entry() {
    let config = valid(load(&policies(
        "<policyEntry queue=\">\" queuePrefetch=\"10\">\
           <deadLetterStrategy><sharedDeadLetterStrategy processNonPersistent=\"true\" processExpired=\"false\">\
             <deadLetterQueue><queue physicalName=\"ALL.DLQ\"/></deadLetterQueue>\
           </sharedDeadLetterStrategy></deadLetterStrategy></policyEntry>\
         <policyEntry queue=\"orders.>\">\
           <deadLetterStrategy><individualDeadLetterStrategy queuePrefix=\"DLQ.\" queueSuffix=\".dead\" expiration=\"60000\"/></deadLetterStrategy></policyEntry>\
         <policyEntry topic=\"news.>\">\
           <deadLetterStrategy><individualDeadLetterStrategy useQueueForTopicMessages=\"false\" destinationPerDurableSubscriber=\"true\"/></deadLetterStrategy></policyEntry>\
         <policyEntry queue=\"logs\" queuePrefetch=\"1\">\
           <deadLetterStrategy><discarding/></deadLetterStrategy></policyEntry>",
    )));
    let d = &config.delivery;
    let other = Destination::queue("billing");
    assert_eq!(
        d.after_rejection(&other, false, 0, None),
        Rejection::DeadLetter {
            to: Destination::queue("ALL.DLQ")
        },
        "processNonPersistent=true"
    );
    assert_eq!(d.after_expiry(&other, true), None, "processExpired=false");
    let orders = Destination::queue("orders.eu");
    assert_eq!(
        d.after_rejection(&orders, true, 0, None),
        Rejection::DeadLetter {
            to: Destination::queue("DLQ.orders.eu.dead")
        }
    );
    assert_eq!(
        d.dead_letter_for(&orders).rules().expiration_ms,
        Some(60_000)
    );
    let news = Destination::topic("news.sport");
    assert_eq!(
        d.after_rejection(&news, true, 0, Some("client1:sub1")),
        Rejection::DeadLetter {
            to: Destination::topic("ActiveMQ.DLQ.Topic.news.sport.client1:sub1")
        }
    );
    // Nothing is dead-lettered out of a dead-letter queue (ActiveMQ's `isDLQ`).
    for dlq in ["ALL.DLQ", "DLQ.orders.eu.dead", "ActiveMQ.DLQ"] {
        let dlq = Destination::queue(dlq);
        assert!(d.is_dead_letter_destination(&dlq), "{dlq:?}");
        assert_eq!(d.after_rejection(&dlq, true, 0, None), Rejection::Discard);
        assert_eq!(d.after_expiry(&dlq, true), None);
    }
    assert!(!d.is_dead_letter_destination(&Destination::queue("DLQ.")));
    let logs = Destination::queue("logs");
    assert_eq!(d.after_rejection(&logs, true, 0, None), Rejection::Discard);
    assert_eq!(d.queue_prefetch_for(&logs), 1, "exact name beats `>`");
    assert_eq!(d.queue_prefetch_for(&other), 10);
    assert_eq!(d.max_browse_page_size_for(&logs), 400, "ActiveMQ's default");
    assert_eq!(
        d.queue_prefetch_for(&Destination::topic("billing")),
        1000,
        "queue entries say nothing about topics"
    );
}

#[test]
fn redelivery_plugin_redelivers_then_dead_letters() {
    let xml = redelivery(
        "",
        "<redeliveryPolicyEntries>\
           <redeliveryPolicy queue=\"orders.>\" maximumRedeliveries=\"2\" initialRedeliveryDelay=\"100\" \
              redeliveryDelay=\"500\"/>\
           <redeliveryPolicy queue=\"backoff\" maximumRedeliveries=\"-1\" initialRedeliveryDelay=\"100\" \
              useExponentialBackOff=\"true\" backOffMultiplier=\"2\" maximumRedeliveryDelay=\"500\"/>\
         </redeliveryPolicyEntries>",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let loaded = load_in(dir.path(), "schedulerSupport=\"true\"", &xml, &options());
    assert!(!has(&loaded.diagnostics, "without schedulerSupport"));
    let d = valid(loaded).delivery;
    let orders = Destination::queue("orders.eu");
    let steps: Vec<Rejection> = (0..3)
        .map(|n| d.after_rejection(&orders, true, n, None))
        .collect();
    assert_eq!(
        steps,
        [
            Rejection::Redeliver {
                after: Duration::from_millis(100)
            },
            Rejection::Redeliver {
                after: Duration::from_millis(500)
            },
            Rejection::DeadLetter {
                to: Destination::queue("ActiveMQ.DLQ")
            },
        ]
    );
    let backoff = d
        .redelivery_for(&Destination::queue("backoff"))
        .expect("policy");
    let delays: Vec<u128> = (0..5).map(|n| backoff.delay(n).as_millis()).collect();
    // ActiveMQ caps at max(maximumRedeliveryDelay, redeliveryDelay): redeliveryDelay is 1000.
    assert_eq!(delays, [100, 200, 400, 1000, 1000]);
    assert!(backoff.allows(1_000_000), "-1 redelivers forever");
    // No policy for this queue and no defaultEntry: fallbackToDeadLetter (default true).
    assert_eq!(
        d.after_rejection(&Destination::queue("other"), true, 0, None),
        Rejection::DeadLetter {
            to: Destination::queue("ActiveMQ.DLQ")
        }
    );
}

#[test]
fn redelivery_plugin_switches_and_default_entry() {
    let xml = redelivery(
        "fallbackToDeadLetter=\"false\" sendToDlqIfMaxRetriesExceeded=\"false\"",
        "<redeliveryPolicyEntries><redeliveryPolicy queue=\"a\" maximumRedeliveries=\"0\"/></redeliveryPolicyEntries>",
    );
    let loaded = load(&xml);
    assert!(
        has(&loaded.diagnostics, "without schedulerSupport"),
        "{}",
        loaded.diagnostics
    );
    let d = valid(loaded).delivery;
    assert_eq!(
        d.after_rejection(&Destination::queue("a"), true, 0, None),
        Rejection::Discard,
        "max 0, sendToDlqIfMaxRetriesExceeded=false"
    );
    assert_eq!(
        d.after_rejection(&Destination::queue("b"), true, 0, None),
        Rejection::Discard,
        "no policy, fallbackToDeadLetter=false"
    );

    let with_default = valid(load(&redelivery(
        "",
        "<defaultEntry><redeliveryPolicy initialRedeliveryDelay=\"5000\"/></defaultEntry>",
    )))
    .delivery;
    let policy = with_default
        .redelivery_for(&Destination::queue("anything"))
        .expect("default entry");
    assert_eq!(policy.maximum_redeliveries, Some(6));
    assert_eq!(policy.delay(0), Duration::from_secs(5));
    assert_eq!(policy.delay(1), Duration::from_secs(1), "redeliveryDelay");
}

#[test]
fn bad_values_are_errors() {
    for (xml, needle) in [
        (
            redelivery("", "<redeliveryPolicyEntries><redeliveryPolicy maximumRedeliveries=\"1\"/></redeliveryPolicyEntries>"),
            "redeliveryPolicy entry without a destination",
        ),
        (
            redelivery("", "<redeliveryPolicyEntries><redeliveryPolicy queue=\"q\" maximumRedeliveries=\"-2\"/></redeliveryPolicyEntries>"),
            "maximumRedeliveries is -1",
        ),
        (
            redelivery("", "<redeliveryPolicyEntries><redeliveryPolicy queue=\"q\" backOffMultiplier=\"x\"/></redeliveryPolicyEntries>"),
            "backOffMultiplier",
        ),
        (
            policies("<policyEntry queue=\">\" queuePrefetch=\"-1\"/>"),
            "queuePrefetch must be between 0 and 2147483647",
        ),
        (
            policies("<policyEntry queue=\">\"><deadLetterStrategy><sharedDeadLetterStrategy/><discarding/></deadLetterStrategy></policyEntry>"),
            "a second dead-letter strategy",
        ),
    ] {
        let loaded = load(&xml);
        assert!(loaded.diagnostics.has_errors(), "{needle}");
        assert!(has(&loaded.diagnostics, needle), "{needle}: {}", loaded.diagnostics);
    }
}

#[test]
fn compiled_settings_are_not_reported_as_ignored() {
    let loaded = load(&format!(
        "{}{}",
        policies(
            "<policyEntry queue=\">\" queuePrefetch=\"5\"><deadLetterStrategy>\
             <individualDeadLetterStrategy queuePrefix=\"D.\" processExpired=\"false\"/>\
             </deadLetterStrategy></policyEntry>"
        ),
        redelivery(
            "fallbackToDeadLetter=\"true\"",
            "<defaultEntry><redeliveryPolicy maximumRedeliveries=\"3\"/></defaultEntry>"
        )
    ));
    let text = loaded.diagnostics.to_string();
    for name in [
        "queuePrefetch",
        "deadLetterStrategy",
        "individualDeadLetterStrategy",
        "queuePrefix",
        "redeliveryPlugin",
        "redeliveryPolicy",
        "maximumRedeliveries",
    ] {
        assert!(
            !text.contains(&format!("{name}` of")) && !text.contains(&format!("<{name}> of")),
            "{name} reported as ignored:\n{text}"
        );
    }
    let config = valid(loaded);
    assert_eq!(config.delivery.entries.len(), 1);
    assert!(config.delivery.redelivery.is_some());
    assert_eq!(config.delivery.entries[0].kind, DestinationKind::Queue);
}

#[test]
fn redelivery_plugin_warns_as_activemq_would_refuse_it_and_only_then() {
    let map = |delay: &str| {
        redelivery(
            "",
            &format!(
                "<redeliveryPolicyEntries><redeliveryPolicy queue=\"q\" {delay}/>\
                 </redeliveryPolicyEntries>"
            ),
        )
    };
    let dir = tempfile::tempdir().expect("tempdir");
    // schedulerSupport present: neither "without schedulerSupport" nor "not acted on".
    let loaded = load_in(
        dir.path(),
        "schedulerSupport=\"true\"",
        &map(""),
        &options(),
    );
    assert!(!has(&loaded.diagnostics, "schedulerSupport"));
    assert!(!has(&loaded.diagnostics, "redeliveryPlugin"));
    // Missing: the one warning.
    let loaded = load_in(dir.path(), "", &map(""), &options());
    assert!(has(&loaded.diagnostics, "without schedulerSupport"));
    assert!(!has(&loaded.diagnostics, "not acted on"));
    // Delays below ActiveMQ's 1000 ms minimum: served, with a warning each.
    let loaded = load_in(
        dir.path(),
        "schedulerSupport=\"true\"",
        &map("initialRedeliveryDelay=\"300\" redeliveryDelay=\"999\""),
        &options(),
    );
    assert!(has(
        &loaded.diagnostics,
        "initialRedeliveryDelay is below 1000 ms (this one: 300 ms)"
    ));
    assert!(has(
        &loaded.diagnostics,
        "redeliveryDelay is below 1000 ms (this one: 999 ms)"
    ));
    assert!(valid(loaded).delivery.redelivery.is_some());
    let loaded = load_in(
        dir.path(),
        "schedulerSupport=\"true\"",
        &map("initialRedeliveryDelay=\"1000\" redeliveryDelay=\"5000\""),
        &options(),
    );
    assert!(!has(&loaded.diagnostics, "redeliveryPlugin"));
}

#[test]
fn max_browse_page_size_is_read_per_queue_and_checked() {
    let d = valid(load(&policies(
        "<policyEntry queue=\">\" maxBrowsePageSize=\"5\"/>\
         <policyEntry queue=\"big.>\" maxBrowsePageSize=\"2000\"/>",
    )))
    .delivery;
    assert_eq!(d.max_browse_page_size_for(&Destination::queue("orders")), 5);
    assert_eq!(
        d.max_browse_page_size_for(&Destination::queue("big.one")),
        2000
    );
    let loaded = load(&policies(
        "<policyEntry queue=\">\" maxBrowsePageSize=\"-1\"/>",
    ));
    assert!(has(
        &loaded.diagnostics,
        "maxBrowsePageSize must be between 0 and 2147483647"
    ));
}

#[test]
fn max_browse_page_size_that_does_nothing_is_a_warning() {
    let loaded = load(&policies(
        "<policyEntry topic=\">\" maxBrowsePageSize=\"9\"/>\
         <policyEntry queue=\"none.>\" maxBrowsePageSize=\"0\"/>",
    ));
    assert!(has(&loaded.diagnostics, "only queues are browsed"));
    assert!(has(
        &loaded.diagnostics,
        "every queue browse returns no message"
    ));
    let d = valid(loaded).delivery;
    assert_eq!(d.max_browse_page_size_for(&Destination::queue("none.x")), 0);
}
