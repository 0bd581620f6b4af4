//! The configured delivery policy applied by the queue engine: each dead-letter strategy,
//! `processNonPersistent`, `processExpired`, `expiration`, the redelivery plugin's schedule and
//! limits, `queuePrefetch`, and a policy replaced while queues run. Every policy here is
//! compiled from `activemq.xml` text by the real loader.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Notify;

use super::*;
use crate::broker::durability::MemoryOnly;
use crate::broker::message::{SampleStamp, V5Extras};
use crate::config::{load_str, LoadOptions};

/// `Config.delivery` of a broker whose children are `inner`.
fn compiled(inner: &str) -> DeliveryPolicy {
    let xml = format!(
        "<beans xmlns=\"http://www.springframework.org/schema/beans\">\
         <broker xmlns=\"http://activemq.apache.org/schema/core\" schedulerSupport=\"true\">\
         {inner}</broker></beans>"
    );
    let options = LoadOptions {
        use_env: false,
        ..LoadOptions::default()
    };
    let loaded = load_str(&xml, std::path::Path::new("."), &options);
    let text = loaded.diagnostics.to_string();
    loaded
        .into_result()
        .unwrap_or_else(|_| panic!("invalid test config:\n{text}"))
        .delivery
}

fn strategy(entry_attrs: &str, strategy: &str) -> String {
    format!(
        "<destinationPolicy><policyMap><policyEntries><policyEntry {entry_attrs}>\
         <deadLetterStrategy>{strategy}</deadLetterStrategy></policyEntry>\
         </policyEntries></policyMap></destinationPolicy>"
    )
}

fn redelivery_plugin(attrs: &str, map: &str) -> String {
    format!(
        "<plugins><redeliveryPlugin {attrs}><redeliveryPolicyMap><redeliveryPolicyMap>{map}\
         </redeliveryPolicyMap></redeliveryPolicyMap></redeliveryPlugin></plugins>"
    )
}

fn engine(policy: DeliveryPolicy) -> Arc<Queues> {
    Queues::new(
        Arc::new(MemoryOnly::default()),
        MemoryGauge::new(u64::MAX),
        policy,
    )
}

fn message(payload: &str, qos: QoS) -> Message {
    Message {
        stamp: SampleStamp::NONE,
        topic: Arc::from("q"),
        payload: Bytes::copy_from_slice(payload.as_bytes()),
        qos,
        retain: false,
        v5: None,
    }
}

fn expired(payload: &str, qos: QoS) -> Message {
    Message {
        v5: Some(Arc::new(V5Extras {
            properties: crate::protocol::Properties::default(),
            expires_at: Some(Instant::now()),
        })),
        ..message(payload, qos)
    }
}

fn consumer(queues: &Queues, name: &str, prefetch: Option<usize>) -> (QueueConsumer, Arc<Notify>) {
    let wake = Arc::new(Notify::new());
    let spec = ConsumerSpec {
        prefetch,
        exclusive: false,
        priority: 0,
        filter: None,
        wake: wake.clone(),
    };
    (queues.subscribe(name, spec), wake)
}

fn send(queues: &Queues, name: &str, payload: &str, qos: QoS) {
    queues
        .send(name, message(payload, qos))
        .expect("send accepted");
}

fn payloads(deliveries: &[QueueDelivery]) -> Vec<String> {
    deliveries
        .iter()
        .map(|d| String::from_utf8_lossy(&d.message.payload).into_owned())
        .collect()
}

/// Send `payload` to `queue`, take it and NACK it; the NACK's commit is awaited.
async fn refuse(queues: &Queues, queue: &str, payload: &str, qos: QoS) {
    let (c, _) = consumer(queues, queue, Some(10));
    send(queues, queue, payload, qos);
    let held = c.take(usize::MAX).expect("consumer");
    assert_eq!(payloads(&held), [payload]);
    c.nack(held[0].seq)
        .expect("nack")
        .wait()
        .await
        .expect("kept");
}

#[tokio::test]
async fn the_shared_strategy_sends_to_its_configured_queue() {
    let queues = engine(compiled(&strategy(
        "queue=\">\"",
        "<sharedDeadLetterStrategy><deadLetterQueue><queue physicalName=\"ALL.DEAD\"/>\
         </deadLetterQueue></sharedDeadLetterStrategy>",
    )));
    refuse(&queues, "orders", "m", QoS::AtLeastOnce).await;
    assert_eq!(payloads(&queues.browse("ALL.DEAD", 10)), ["m"]);
    assert!(!queues.exists("ActiveMQ.DLQ"));
    // Refused again in the configured dead-letter queue: dropped, not looped.
    let (dlq, _) = consumer(&queues, "ALL.DEAD", Some(10));
    let held = dlq.take(10).expect("consumer");
    dlq.nack(held[0].seq).expect("nack");
    let stats = queues.stats("ALL.DEAD").expect("stats");
    assert_eq!((stats.depth, stats.counts.discarded), (0, 1));
}

#[tokio::test]
async fn the_individual_strategy_uses_activemqs_queue_prefix_and_the_suffix() {
    let queues = engine(compiled(&strategy(
        "queue=\"orders.>\"",
        "<individualDeadLetterStrategy/>",
    )));
    refuse(&queues, "orders.eu", "eu", QoS::AtLeastOnce).await;
    refuse(&queues, "other", "o", QoS::AtLeastOnce).await;
    assert_eq!(
        payloads(&queues.browse("ActiveMQ.DLQ.Queue.orders.eu", 10)),
        ["eu"]
    );
    assert_eq!(
        payloads(&queues.browse("ActiveMQ.DLQ", 10)),
        ["o"],
        "a queue no entry matches keeps the shared default"
    );

    let queues = engine(compiled(&strategy(
        "queue=\">\"",
        "<individualDeadLetterStrategy queuePrefix=\"DEAD.\" queueSuffix=\".x\"/>",
    )));
    refuse(&queues, "orders", "m", QoS::AtLeastOnce).await;
    assert_eq!(payloads(&queues.browse("DEAD.orders.x", 10)), ["m"]);
}

#[tokio::test]
async fn the_discarding_strategy_drops_and_keeps_nothing() {
    let queues = engine(compiled(&strategy("queue=\">\"", "<discarding/>")));
    refuse(&queues, "orders", "m", QoS::AtLeastOnce).await;
    let stats = queues.stats("orders").expect("stats");
    assert_eq!(
        (
            stats.depth,
            stats.counts.discarded,
            stats.counts.dead_lettered
        ),
        (0, 1, 0)
    );
    assert_eq!(queues.names(), [Arc::from("orders")]);
}

#[tokio::test]
async fn non_persistent_messages_are_dead_lettered_only_with_process_non_persistent() {
    let queues = engine(DeliveryPolicy::default());
    refuse(&queues, "np", "m", QoS::AtMostOnce).await;
    assert!(!queues.exists("ActiveMQ.DLQ"), "dropped by default");
    assert_eq!(queues.stats("np").expect("stats").counts.discarded, 1);

    let queues = engine(compiled(&strategy(
        "queue=\">\"",
        "<sharedDeadLetterStrategy processNonPersistent=\"true\"/>",
    )));
    refuse(&queues, "np", "m", QoS::AtMostOnce).await;
    let dead = queues.browse("ActiveMQ.DLQ", 10);
    assert_eq!(payloads(&dead), ["m"]);
    // Made persistent, as ActiveMQ makes every dead letter.
    assert!(dead[0].persistent, "dead letters are persistent");
}

#[tokio::test]
async fn expired_messages_are_dropped_without_process_expired() {
    let queues = engine(compiled(&strategy(
        "queue=\">\"",
        "<sharedDeadLetterStrategy processExpired=\"false\"/>",
    )));
    queues
        .send("e", expired("old", QoS::AtLeastOnce))
        .expect("send");
    let (c, _) = consumer(&queues, "e", Some(10));
    assert!(c.take(10).expect("consumer").is_empty());
    let stats = queues.stats("e").expect("stats");
    assert_eq!((stats.counts.expired, stats.counts.discarded), (1, 1));
    assert!(!queues.exists("ActiveMQ.DLQ"));
}

#[tokio::test]
async fn a_dead_letter_expires_after_the_strategys_expiration() {
    let queues = engine(compiled(&strategy(
        "queue=\">\"",
        "<sharedDeadLetterStrategy expiration=\"60000\"/>",
    )));
    let before = Instant::now();
    refuse(&queues, "orders", "m", QoS::AtLeastOnce).await;
    let dead = queues.browse("ActiveMQ.DLQ", 10);
    let expires_at = dead[0]
        .message
        .v5
        .as_ref()
        .and_then(|v5| v5.expires_at)
        .expect("an expiry");
    assert!(expires_at >= before + Duration::from_secs(60));
    assert!(expires_at <= Instant::now() + Duration::from_secs(60));

    // The default (0): a dead letter never expires, whatever its own expiry was.
    let queues = engine(DeliveryPolicy::default());
    queues
        .send("e", expired("old", QoS::AtLeastOnce))
        .expect("send");
    queues.sweep_expired();
    let dead = queues.browse("ActiveMQ.DLQ", 10);
    assert_eq!(payloads(&dead), ["old"]);
    assert_eq!(
        dead[0].message.v5.as_ref().and_then(|v5| v5.expires_at),
        None
    );
}

#[tokio::test]
async fn redeliveries_follow_the_plugins_schedule_then_dead_letter() {
    // 40 ms, then x3 back-off: 120 ms; two redeliveries, then the dead-letter queue.
    let queues = engine(compiled(&redelivery_plugin(
        "",
        "<redeliveryPolicyEntries><redeliveryPolicy queue=\"retry.>\" maximumRedeliveries=\"2\" \
         initialRedeliveryDelay=\"40\" redeliveryDelay=\"40\" useExponentialBackOff=\"true\" \
         backOffMultiplier=\"3\"/></redeliveryPolicyEntries>",
    )));
    let (c, wake) = consumer(&queues, "retry.a", Some(10));
    send(&queues, "retry.a", "m", QoS::AtLeastOnce);
    // The first dispatch's wake-up, so that the next one awaited is a redelivery's.
    wake.notified().await;
    let mut held = c.take(10).expect("consumer");
    for (count, delay) in [(2, 40), (3, 120)] {
        let refused_at = Instant::now();
        c.nack(held[0].seq).expect("nack");
        assert!(
            c.take(10).expect("consumer").is_empty(),
            "not before the delay"
        );
        tokio::time::timeout(Duration::from_secs(5), wake.notified())
            .await
            .expect("redelivered after the delay");
        assert!(refused_at.elapsed() >= Duration::from_millis(delay));
        held = c.take(10).expect("consumer");
        assert_eq!((held[0].redelivered, held[0].delivery_count), (true, count));
    }
    c.nack(held[0].seq)
        .expect("nack")
        .wait()
        .await
        .expect("kept");
    let dead = queues.browse("ActiveMQ.DLQ", 10);
    assert_eq!(payloads(&dead), ["m"], "maximumRedeliveries reached");
    let cause = dead[0]
        .message
        .v5
        .as_ref()
        .and_then(|v5| {
            v5.properties
                .user_properties
                .iter()
                .find(|(k, _)| k == "dlqDeliveryFailureCause")
                .map(|(_, v)| v.clone())
        })
        .expect("a cause");
    assert!(cause.starts_with("Delivery[3]"), "{cause}");
}

#[tokio::test]
async fn past_the_maximum_or_without_a_policy_the_plugins_flags_decide() {
    let queues = engine(compiled(&redelivery_plugin(
        "sendToDlqIfMaxRetriesExceeded=\"false\" fallbackToDeadLetter=\"false\"",
        "<redeliveryPolicyEntries><redeliveryPolicy queue=\"retry\" maximumRedeliveries=\"0\"/>\
         </redeliveryPolicyEntries>",
    )));
    refuse(&queues, "retry", "past", QoS::AtLeastOnce).await;
    refuse(&queues, "plain", "none", QoS::AtLeastOnce).await;
    assert!(!queues.exists("ActiveMQ.DLQ"));
    for name in ["retry", "plain"] {
        let stats = queues.stats(name).expect("stats");
        assert_eq!((stats.depth, stats.counts.discarded), (0, 1), "{name}");
    }

    // The default entry covers every queue; with the defaults the rest is dead-lettered.
    let queues = engine(compiled(&redelivery_plugin(
        "",
        "<defaultEntry><redeliveryPolicy maximumRedeliveries=\"0\"/></defaultEntry>",
    )));
    refuse(&queues, "any", "m", QoS::AtLeastOnce).await;
    assert_eq!(payloads(&queues.browse("ActiveMQ.DLQ", 10)), ["m"]);
}

#[tokio::test]
async fn a_consumer_without_a_prefetch_gets_the_queue_prefetch() {
    let queues = engine(compiled(
        "<destinationPolicy><policyMap><policyEntries>\
         <policyEntry queue=\"small.>\" queuePrefetch=\"2\"/>\
         </policyEntries></policyMap></destinationPolicy>",
    ));
    let (small, _) = consumer(&queues, "small.q", None);
    let (large, _) = consumer(&queues, "large", None);
    let (asked, _) = consumer(&queues, "small.asked", Some(3));
    for i in 0..1001 {
        let p = i.to_string();
        if i < 5 {
            send(&queues, "small.q", &p, QoS::AtMostOnce);
            send(&queues, "small.asked", &p, QoS::AtMostOnce);
        }
        send(&queues, "large", &p, QoS::AtMostOnce);
    }
    assert_eq!(small.take(usize::MAX).expect("consumer").len(), 2);
    assert_eq!(asked.take(usize::MAX).expect("consumer").len(), 3);
    assert_eq!(large.take(usize::MAX).expect("consumer").len(), 1000);
}

#[tokio::test]
async fn a_replaced_policy_applies_from_the_next_nack_and_consumer() {
    let queues = engine(DeliveryPolicy::default());
    refuse(&queues, "orders", "first", QoS::AtLeastOnce).await;
    assert_eq!(payloads(&queues.browse("ActiveMQ.DLQ", 10)), ["first"]);

    queues.set_delivery_policy(compiled(&strategy(
        "queue=\">\" queuePrefetch=\"1\"",
        "<individualDeadLetterStrategy/>",
    )));
    refuse(&queues, "orders", "second", QoS::AtLeastOnce).await;
    assert_eq!(
        payloads(&queues.browse("ActiveMQ.DLQ.Queue.orders", 10)),
        ["second"]
    );
    assert_eq!(queues.browse("ActiveMQ.DLQ", 10).len(), 1);
    let (c, _) = consumer(&queues, "orders", None);
    send(&queues, "orders", "a", QoS::AtMostOnce);
    send(&queues, "orders", "b", QoS::AtMostOnce);
    assert_eq!(c.take(10).expect("consumer").len(), 1, "queuePrefetch 1");

    queues.set_delivery_policy(compiled(&strategy("queue=\">\"", "<discarding/>")));
    let (d, _) = consumer(&queues, "discard", Some(1));
    send(&queues, "discard", "third", QoS::AtLeastOnce);
    let held = d.take(10).expect("consumer");
    d.nack(held[0].seq).expect("nack");
    assert_eq!(queues.stats("discard").expect("stats").counts.discarded, 1);
}

#[tokio::test]
async fn temporary_queues_follow_temp_queue_entries_not_queue_ones() {
    let queues = engine(compiled(
        "<destinationPolicy><policyMap><policyEntries>\
         <policyEntry queue=\">\" queuePrefetch=\"1\"><deadLetterStrategy>\
         <individualDeadLetterStrategy/></deadLetterStrategy></policyEntry>\
         <policyEntry tempQueue=\"true\" queuePrefetch=\"2\"/>\
         </policyEntries></policyMap></destinationPolicy>",
    ));
    assert!(queues.create_temporary("tmp.1"));
    let wake = Arc::new(Notify::new());
    let c = queues.subscribe(
        "tmp.1",
        ConsumerSpec {
            prefetch: None,
            exclusive: false,
            priority: 0,
            filter: None,
            wake,
        },
    );
    for p in ["a", "b", "c"] {
        queues
            .send_temporary("tmp.1", message(p, QoS::AtLeastOnce))
            .expect("a temporary queue")
            .expect("accepted");
    }
    let held = c.take(10).expect("consumer");
    assert_eq!(
        payloads(&held),
        ["a", "b"],
        "the tempQueue entry's prefetch"
    );
    c.nack(held[0].seq)
        .expect("nack")
        .wait()
        .await
        .expect("kept");
    assert_eq!(
        payloads(&queues.browse("ActiveMQ.DLQ", 10)),
        ["a"],
        "the queue entry's strategy is not the temporary queue's"
    );
    assert!(!queues.exists("ActiveMQ.DLQ.Queue.tmp.1"));
}

#[tokio::test]
async fn the_default_entry_applies_to_queues_no_entry_matches() {
    let queues = engine(compiled(
        "<destinationPolicy><policyMap><policyEntries>\
         <policyEntry topic=\">\" queuePrefetch=\"3\"/>\
         <policyEntry queue=\"small\" queuePrefetch=\"1\"/>\
         </policyEntries><defaultEntry><policyEntry queuePrefetch=\"2\"><deadLetterStrategy>\
         <individualDeadLetterStrategy/></deadLetterStrategy></policyEntry></defaultEntry>\
         </policyMap></destinationPolicy>",
    ));
    for (queue, window) in [("orders", 2), ("small", 1)] {
        let (c, _) = consumer(&queues, queue, None);
        for p in ["a", "b", "c"] {
            send(&queues, queue, p, QoS::AtMostOnce);
        }
        assert_eq!(c.take(10).expect("consumer").len(), window, "{queue}");
    }
    refuse(&queues, "orders.eu", "m", QoS::AtLeastOnce).await;
    assert_eq!(
        payloads(&queues.browse("ActiveMQ.DLQ.Queue.orders.eu", 10)),
        ["m"]
    );
}

#[tokio::test]
async fn every_setting_comes_from_the_one_entry_activemq_picks() {
    // `orders.eu` takes its settings from its own entry only: no strategy there means the
    // shared default, not the wider entry's individual strategy; likewise for the prefetch.
    let queues = engine(compiled(
        "<destinationPolicy><policyMap><policyEntries>\
         <policyEntry queue=\">\" queuePrefetch=\"1\"><deadLetterStrategy>\
         <individualDeadLetterStrategy/></deadLetterStrategy></policyEntry>\
         <policyEntry queue=\"orders.eu\" producerFlowControl=\"false\"/>\
         </policyEntries></policyMap></destinationPolicy>",
    ));
    refuse(&queues, "orders.eu", "exact", QoS::AtLeastOnce).await;
    refuse(&queues, "orders.us", "wide", QoS::AtLeastOnce).await;
    assert_eq!(payloads(&queues.browse("ActiveMQ.DLQ", 10)), ["exact"]);
    assert_eq!(
        payloads(&queues.browse("ActiveMQ.DLQ.Queue.orders.us", 10)),
        ["wide"]
    );
    let (c, _) = consumer(&queues, "orders.eu", None);
    for p in ["a", "b"] {
        send(&queues, "orders.eu", p, QoS::AtMostOnce);
    }
    assert_eq!(c.take(10).expect("consumer").len(), 2, "the default 1000");
}
