//! The queue engine's rules on the memory-only and recording engines: dispatch, windows,
//! redelivery, exclusive consumers, filters, dead letters, expiry, what is kept.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Notify;

use super::*;
use crate::broker::durability::{MemoryOnly, Recording};
use crate::broker::message::{SampleStamp, V5Extras};
use crate::config::delivery_policy::DeliveryPolicy;

fn queues() -> Arc<Queues> {
    queues_with(DeliveryPolicy::default())
}

/// The delivery policy of a broker configured with `children` (`destinationPolicy`,
/// `plugins`), as `config::compile` reads it.
fn delivery_policy(children: &str) -> DeliveryPolicy {
    let xml = format!(
        r#"<beans xmlns="http://www.springframework.org/schema/beans">
        <broker xmlns="http://activemq.apache.org/schema/core" persistent="false">
          {children}
          <transportConnectors>
            <transportConnector name="mqtt" uri="mqtt://127.0.0.1:0"/>
          </transportConnectors>
        </broker></beans>"#
    );
    let options = crate::config::LoadOptions::default();
    crate::config::load_str(&xml, std::path::Path::new("."), &options)
        .config
        .expect("config compiles")
        .delivery
}

fn queues_with(policies: DeliveryPolicy) -> Arc<Queues> {
    Queues::new(
        Arc::new(MemoryOnly::default()),
        MemoryGauge::new(u64::MAX),
        policies,
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

fn spec(prefetch: usize) -> ConsumerSpec {
    ConsumerSpec {
        prefetch: Some(prefetch),
        exclusive: false,
        priority: 0,
        filter: None,
        wake: Arc::new(Notify::new()),
    }
}

fn send(queues: &Queues, name: &str, payloads: &[&str], qos: QoS) {
    for p in payloads {
        let commit = queues.send(name, message(p, qos)).expect("send accepted");
        assert!(matches!(commit, Commit::Done(Ok(()))), "memory-only: done");
    }
}

fn payloads(deliveries: &[QueueDelivery]) -> Vec<String> {
    deliveries
        .iter()
        .map(|d| String::from_utf8_lossy(&d.message.payload).into_owned())
        .collect()
}

async fn take(consumer: &QueueConsumer) -> Vec<QueueDelivery> {
    consumer.take(usize::MAX).expect("consumer exists")
}

#[tokio::test]
async fn messages_go_round_robin_to_one_consumer_each() {
    let queues = queues();
    let consumers: Vec<_> = (0..3)
        .map(|_| queues.subscribe("work", spec(100)))
        .collect();
    send(
        &queues,
        "work",
        &["1", "2", "3", "4", "5", "6", "7"],
        QoS::AtMostOnce,
    );
    let mut got = Vec::new();
    for c in &consumers {
        got.push(payloads(&take(c).await));
    }
    assert_eq!(got, [vec!["1", "4", "7"], vec!["2", "5"], vec!["3", "6"]]);
    let stats = queues.stats("work").expect("stats");
    assert_eq!((stats.depth, stats.in_flight, stats.consumers), (7, 7, 3));
}

#[tokio::test]
async fn the_prefetch_window_holds_the_rest_until_acks() {
    let queues = queues();
    let s = spec(2);
    let wake = s.wake.clone();
    let c = queues.subscribe("w", s);
    send(&queues, "w", &["a", "b", "c"], QoS::AtMostOnce);
    wake.notified().await;
    let first = take(&c).await;
    assert_eq!(payloads(&first), ["a", "b"]);
    assert!(take(&c).await.is_empty(), "window full");
    c.ack(first[0].seq)
        .expect("ack")
        .wait()
        .await
        .expect("kept");
    wake.notified().await;
    assert_eq!(payloads(&take(&c).await), ["c"]);
    assert_eq!(
        c.ack(first[0].seq).err(),
        Some(AckError::NotHeld(first[0].seq))
    );
    let stats = queues.stats("w").expect("stats");
    assert_eq!((stats.depth, stats.counts.dequeued), (2, 1));
}

#[tokio::test]
async fn what_a_leaving_consumer_held_goes_back_first_marked_redelivered() {
    let queues = queues();
    let first = queues.subscribe("r", spec(3));
    send(&queues, "r", &["1", "2", "3", "4"], QoS::AtLeastOnce);
    let held = take(&first).await;
    assert_eq!(payloads(&held), ["1", "2", "3"]);
    first.ack(held[0].seq).expect("ack");
    first.close();
    let second = queues.subscribe("r", spec(10));
    let again = take(&second).await;
    assert_eq!(payloads(&again), ["2", "3", "4"], "original order kept");
    let flags: Vec<_> = again
        .iter()
        .map(|d| (d.redelivered, d.delivery_count))
        .collect();
    assert_eq!(flags, [(true, 2), (true, 2), (false, 1)]);
    assert_eq!(queues.stats("r").expect("stats").counts.redelivered, 2);
}

#[tokio::test]
async fn a_dropped_consumer_gives_back_what_it_held() {
    let queues = queues();
    let first = queues.subscribe("d", spec(5));
    send(&queues, "d", &["x"], QoS::AtLeastOnce);
    assert_eq!(take(&first).await.len(), 1);
    drop(first);
    let second = queues.subscribe("d", spec(5));
    let again = take(&second).await;
    assert_eq!(payloads(&again), ["x"]);
    assert!(again[0].redelivered);
}

#[tokio::test]
async fn messages_dispatched_but_not_taken_are_not_redelivered() {
    let queues = queues();
    let first = queues.subscribe("n", spec(5));
    send(&queues, "n", &["x"], QoS::AtMostOnce);
    first.close();
    let second = queues.subscribe("n", spec(5));
    let again = take(&second).await;
    assert!(!again[0].redelivered, "its client never saw it");
}

#[tokio::test]
async fn an_exclusive_consumer_gets_everything_while_it_lives() {
    let queues = queues();
    let plain = queues.subscribe("x", spec(10));
    let exclusive = |q: &Queues| {
        q.subscribe(
            "x",
            ConsumerSpec {
                exclusive: true,
                ..spec(10)
            },
        )
    };
    let owner = exclusive(&queues);
    let backup = exclusive(&queues);
    send(&queues, "x", &["1", "2", "3"], QoS::AtMostOnce);
    assert!(take(&plain).await.is_empty());
    assert!(take(&backup).await.is_empty());
    let held = take(&owner).await;
    assert_eq!(payloads(&held), ["1", "2", "3"]);
    owner.ack(held[0].seq).expect("ack");
    owner.close();
    assert_eq!(
        payloads(&take(&backup).await),
        ["2", "3"],
        "the next exclusive one"
    );
    assert!(take(&plain).await.is_empty());
    backup.close();
    send(&queues, "x", &["4"], QoS::AtMostOnce);
    assert_eq!(payloads(&take(&plain).await), ["2", "3", "4"]);
}

#[tokio::test]
async fn a_filter_leaves_what_it_refuses_for_the_others() {
    let queues = queues();
    let only_a: Arc<dyn MessageFilter> =
        Arc::new(|m: &Message, _: &QueuedInfo| m.payload.starts_with(b"a"));
    let picky = queues.subscribe(
        "f",
        ConsumerSpec {
            filter: Some(only_a),
            ..spec(10)
        },
    );
    send(&queues, "f", &["a1", "b1", "a2"], QoS::AtMostOnce);
    assert_eq!(payloads(&take(&picky).await), ["a1", "a2"]);
    assert_eq!(queues.stats("f").expect("stats").depth, 3, "b1 stays");
    let any = queues.subscribe("f", spec(10));
    assert_eq!(payloads(&take(&any).await), ["b1"]);
}

#[tokio::test]
async fn cumulative_ack_takes_everything_delivered_up_to_the_message() {
    let queues = queues();
    let c = queues.subscribe("c", spec(10));
    send(&queues, "c", &["1", "2", "3"], QoS::AtMostOnce);
    let held = take(&c).await;
    c.ack_through(held[1].seq).expect("ack");
    let stats = queues.stats("c").expect("stats");
    assert_eq!((stats.depth, stats.counts.dequeued), (1, 2));
    assert!(c.ack(held[0].seq).is_err(), "already acknowledged");
    c.ack(held[2].seq).expect("ack");
}

#[tokio::test]
async fn a_refused_persistent_message_goes_to_the_dead_letter_queue() {
    let queues = queues();
    let c = queues.subscribe("orders", spec(10));
    send(&queues, "orders", &["bad"], QoS::AtLeastOnce);
    let held = take(&c).await;
    c.nack(held[0].seq)
        .expect("nack")
        .wait()
        .await
        .expect("kept");
    let stats = queues.stats("orders").expect("stats");
    assert_eq!((stats.depth, stats.counts.dead_lettered), (0, 1));
    let dead = queues.browse("ActiveMQ.DLQ", 10);
    assert_eq!(payloads(&dead), ["bad"]);
    assert!(dead[0].persistent);
    let props = &dead[0]
        .message
        .v5
        .as_ref()
        .expect("v5")
        .properties
        .user_properties;
    assert!(props.contains(&("original-destination".into(), "/queue/orders".into())));
    // Refused in the dead-letter queue itself: dropped, not looped.
    let dlq = queues.subscribe("ActiveMQ.DLQ", spec(10));
    let held = take(&dlq).await;
    dlq.nack(held[0].seq).expect("nack");
    let stats = queues.stats("ActiveMQ.DLQ").expect("stats");
    assert_eq!((stats.depth, stats.counts.discarded), (0, 1));
}

#[tokio::test]
async fn a_refused_non_persistent_message_is_dropped_unless_process_non_persistent() {
    let queues = queues();
    let c = queues.subscribe("np", spec(10));
    send(&queues, "np", &["m"], QoS::AtMostOnce);
    let held = take(&c).await;
    c.nack(held[0].seq).expect("nack");
    assert!(!queues.exists("ActiveMQ.DLQ"));
    assert_eq!(queues.stats("np").expect("stats").counts.discarded, 1);

    let queues = queues_with(delivery_policy(
        r#"<destinationPolicy><policyMap><policyEntries>
          <policyEntry queue=">">
            <deadLetterStrategy>
              <individualDeadLetterStrategy queuePrefix="DLQ." processNonPersistent="true"/>
            </deadLetterStrategy>
          </policyEntry>
        </policyEntries></policyMap></destinationPolicy>"#,
    ));
    let c = queues.subscribe("np", spec(10));
    send(&queues, "np", &["m"], QoS::AtMostOnce);
    let held = take(&c).await;
    c.nack(held[0].seq).expect("nack");
    assert_eq!(payloads(&queues.browse("DLQ.np", 10)), ["m"]);
}

/// A redelivery plugin: queues `retry.>` redelivered `max` times after `delay_ms`.
fn redelivery(max: u32, delay_ms: u64) -> DeliveryPolicy {
    delivery_policy(&format!(
        r#"<plugins><redeliveryPlugin>
          <redeliveryPolicyMap><redeliveryPolicyMap><redeliveryPolicyEntries>
            <redeliveryPolicy queue="retry.>" maximumRedeliveries="{max}"
              initialRedeliveryDelay="{delay_ms}" redeliveryDelay="{delay_ms}"/>
          </redeliveryPolicyEntries></redeliveryPolicyMap></redeliveryPolicyMap>
        </redeliveryPlugin></plugins>"#
    ))
}

#[tokio::test]
async fn the_redelivery_plugin_redelivers_after_its_delay_then_dead_letters() {
    let queues = queues_with(redelivery(1, 50));
    let s = spec(10);
    let wake = s.wake.clone();
    let c = queues.subscribe("retry.a", s);
    send(&queues, "retry.a", &["m"], QoS::AtLeastOnce);
    wake.notified().await;
    let held = take(&c).await;
    let refused_at = Instant::now();
    c.nack(held[0].seq).expect("nack");
    assert!(take(&c).await.is_empty(), "not before the delay");
    tokio::time::timeout(Duration::from_secs(5), wake.notified())
        .await
        .expect("redelivered after the delay");
    assert!(refused_at.elapsed() >= Duration::from_millis(50));
    let again = take(&c).await;
    assert_eq!((again[0].redelivered, again[0].delivery_count), (true, 2));
    c.nack(again[0].seq)
        .expect("nack")
        .wait()
        .await
        .expect("kept");
    assert_eq!(
        payloads(&queues.browse("ActiveMQ.DLQ", 10)),
        ["m"],
        "maximum reached"
    );

    // A queue without a policy falls back to the dead-letter queue.
    let other = queues.subscribe("plain", spec(10));
    send(&queues, "plain", &["p"], QoS::AtLeastOnce);
    let held = take(&other).await;
    other.nack(held[0].seq).expect("nack");
    assert_eq!(queues.browse("ActiveMQ.DLQ", 10).len(), 2);
}

#[tokio::test]
async fn expired_messages_are_not_delivered_persistent_ones_are_dead_lettered() {
    let queues = queues();
    let expired = |payload: &str, qos| Message {
        v5: Some(Arc::new(V5Extras {
            properties: crate::protocol::Properties::default(),
            expires_at: Some(Instant::now()),
        })),
        ..message(payload, qos)
    };
    queues
        .send("e", expired("kept", QoS::AtLeastOnce))
        .expect("send");
    queues
        .send("e", expired("gone", QoS::AtMostOnce))
        .expect("send");
    send(&queues, "e", &["live"], QoS::AtMostOnce);
    let c = queues.subscribe("e", spec(10));
    assert_eq!(payloads(&take(&c).await), ["live"]);
    let stats = queues.stats("e").expect("stats");
    assert_eq!((stats.counts.expired, stats.counts.discarded), (2, 1));
    let dead = queues.browse("ActiveMQ.DLQ", 10);
    assert_eq!(payloads(&dead), ["kept"]);
    assert!(
        !dead[0].message.is_expired(Instant::now()),
        "expiry cleared"
    );
}

#[tokio::test]
async fn the_sweep_expires_messages_nobody_consumes() {
    let queues = queues();
    let m = Message {
        v5: Some(Arc::new(V5Extras {
            properties: crate::protocol::Properties::default(),
            expires_at: Some(Instant::now() + Duration::from_millis(5)),
        })),
        ..message("soon", QoS::AtMostOnce)
    };
    queues.send("s", m).expect("send");
    assert_eq!(queues.stats("s").expect("stats").depth, 1);
    tokio::time::sleep(Duration::from_millis(10)).await;
    queues.sweep_expired();
    assert_eq!(queues.stats("s").expect("stats").depth, 0);
}

#[tokio::test]
async fn a_full_memory_refuses_the_send() {
    let queues = Queues::new(
        Arc::new(MemoryOnly::default()),
        MemoryGauge::new(1),
        DeliveryPolicy::default(),
    );
    queues
        .send("m", message("first", QoS::AtMostOnce))
        .expect("room for one");
    assert_eq!(
        queues.send("m", message("second", QoS::AtLeastOnce)).err(),
        Some(SendError::MemoryFull)
    );
    assert_eq!(queues.stats("m").expect("stats").depth, 1);
    queues.purge("m");
    queues
        .send("m", message("third", QoS::AtMostOnce))
        .expect("freed");
}

fn is_queue_message(c: &Change) -> bool {
    matches!(c, Change::Message { queued_for, .. }
        if matches!(queued_for.first(), Some(QueuedFor { owner: QueueOwner::Queue(_), .. })))
}

#[tokio::test]
async fn persistent_messages_are_queued_once_kept_and_removed_when_acknowledged() {
    let engine = Recording::new();
    let queues = Queues::new(
        engine.clone(),
        MemoryGauge::new(u64::MAX),
        DeliveryPolicy::default(),
    );
    let c = queues.subscribe("p", spec(10));
    engine.hold_when(is_queue_message);
    let commit = queues
        .send("p", message("m", QoS::AtLeastOnce))
        .expect("send");
    assert!(take(&c).await.is_empty(), "not visible before it is kept");
    engine.release();
    commit.wait().await.expect("kept");
    let held = take(&c).await;
    assert_eq!(payloads(&held), ["m"]);
    c.ack(held[0].seq).expect("ack").wait().await.expect("kept");
    send(&queues, "p", &["np"], QoS::AtMostOnce);
    let owner = QueueOwner::Queue(Arc::from("p"));
    let batches = engine.batches();
    assert_eq!(
        batches[0],
        vec![Change::QueueDeclared {
            owner: owner.clone()
        }]
    );
    assert!(is_queue_message(&batches[1][batches[1].len() - 1]));
    assert_eq!(
        batches[2],
        vec![Change::Removed {
            owner,
            seq: held[0].seq
        }]
    );
    assert_eq!(batches.len(), 3, "a non-persistent message is not kept");
}

#[tokio::test]
async fn a_refused_store_refuses_the_send_and_queues_nothing() {
    let engine = Recording::new();
    let queues = Queues::new(
        engine.clone(),
        MemoryGauge::new(u64::MAX),
        DeliveryPolicy::default(),
    );
    engine.refuse_with(Some(DurabilityError::Full("storeUsage".into())));
    let refused = queues.send("p", message("m", QoS::AtLeastOnce));
    assert!(matches!(
        refused,
        Err(SendError::Durability(DurabilityError::Full(_)))
    ));
    assert_eq!(queues.stats("p").expect("stats").depth, 0);
}

#[tokio::test]
async fn a_dead_letter_move_is_one_commit() {
    let engine = Recording::new();
    let queues = Queues::new(
        engine.clone(),
        MemoryGauge::new(u64::MAX),
        DeliveryPolicy::default(),
    );
    let c = queues.subscribe("src", spec(10));
    send(&queues, "src", &["m"], QoS::AtLeastOnce);
    let held = take(&c).await;
    c.nack(held[0].seq)
        .expect("nack")
        .wait()
        .await
        .expect("kept");
    let batches = engine.batches();
    let last = batches.last().expect("a commit");
    assert_eq!(
        last[0],
        Change::Removed {
            owner: QueueOwner::Queue(Arc::from("src")),
            seq: held[0].seq
        }
    );
    let Some(Change::Message { queued_for, .. }) = last.last() else {
        panic!("the dead letter is kept in the same commit: {last:?}");
    };
    assert_eq!(
        queued_for[0].owner,
        QueueOwner::Queue(Arc::from("ActiveMQ.DLQ"))
    );
}

#[tokio::test]
async fn recovered_entries_are_ready_in_order() {
    let queues = queues();
    let item = |seq, payload: &str| QueuedMessage {
        message: message(payload, QoS::AtLeastOnce),
        qos: QoS::AtLeastOnce,
        retain: false,
        subscription_id: None,
        seq: Some(seq),
        paged: false,
        shared_group: None,
    };
    let restored = queues.restore(vec![
        (
            QueueOwner::Queue(Arc::from("back")),
            vec![item(3, "a"), item(9, "b")],
        ),
        (QueueOwner::Group(Arc::from("g")), vec![item(4, "g")]),
    ]);
    assert_eq!(restored, (1, 2));
    let c = queues.subscribe("back", spec(10));
    let got = take(&c).await;
    assert_eq!(payloads(&got), ["a", "b"]);
    assert!(got.iter().all(|d| d.persistent && !d.redelivered));
}

#[tokio::test]
async fn a_temporary_queue_keeps_nothing_in_the_store_and_ends_when_deleted() {
    let engine = Recording::new();
    let queues = Queues::new(
        engine.clone(),
        MemoryGauge::new(u64::MAX),
        DeliveryPolicy::default(),
    );
    assert!(queues
        .send_temporary("ID:c1:1", message("x", QoS::AtLeastOnce))
        .is_none());
    assert!(queues.create_temporary("ID:c1:1"));
    assert!(!queues.create_temporary("ID:c1:1"), "taken");
    assert!(queues.is_temporary("ID:c1:1"));
    let c = queues.subscribe("ID:c1:1", spec(10));
    queues
        .send_temporary("ID:c1:1", message("reply", QoS::AtLeastOnce))
        .expect("exists")
        .expect("accepted")
        .wait()
        .await
        .expect("done");
    let held = take(&c).await;
    assert_eq!(payloads(&held), ["reply"]);
    assert!(held[0].persistent, "still a persistent message");
    c.ack(held[0].seq).expect("ack");
    assert!(
        engine.changes().is_empty(),
        "nothing kept: {:?}",
        engine.changes()
    );
    assert!(queues.delete("ID:c1:1"));
    assert!(!queues.exists("ID:c1:1"));
    assert!(queues
        .send_temporary("ID:c1:1", message("late", QoS::AtMostOnce))
        .is_none());
}

#[tokio::test]
async fn deleting_a_queue_drops_its_messages_and_its_record() {
    let engine = Recording::new();
    let queues = Queues::new(
        engine.clone(),
        MemoryGauge::new(u64::MAX),
        DeliveryPolicy::default(),
    );
    send(&queues, "gone", &["a"], QoS::AtLeastOnce);
    assert!(queues.delete("gone"));
    assert_eq!(
        engine.batches().last(),
        Some(&vec![Change::QueueDeleted {
            owner: QueueOwner::Queue(Arc::from("gone"))
        }])
    );
    assert!(!queues.delete("gone"));
}

#[tokio::test]
async fn without_a_prefetch_the_queue_policy_or_1000_applies() {
    let queues = queues_with(delivery_policy(
        r#"<destinationPolicy><policyMap><policyEntries>
          <policyEntry queue="small.>" queuePrefetch="2"/>
        </policyEntries></policyMap></destinationPolicy>"#,
    ));
    let default = |q: &Queues, name: &str| {
        q.subscribe(
            name,
            ConsumerSpec {
                prefetch: None,
                ..spec(0)
            },
        )
    };
    let small = default(&queues, "small.q");
    let large = default(&queues, "large");
    let many: Vec<String> = (0..1001).map(|i| i.to_string()).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    send(&queues, "small.q", &many[..5], QoS::AtMostOnce);
    send(&queues, "large", &many, QoS::AtMostOnce);
    assert_eq!(take(&small).await.len(), 2);
    assert_eq!(take(&large).await.len(), 1000);
    let zero = queues.subscribe("zero", spec(0));
    send(&queues, "zero", &["a", "b"], QoS::AtMostOnce);
    assert_eq!(take(&zero).await.len(), 1, "0 is taken as 1");
}

#[tokio::test]
async fn a_dispatch_passes_over_a_bounded_number_of_unselected_messages() {
    let queues = queues();
    let only_wanted: Arc<dyn MessageFilter> =
        Arc::new(|m: &Message, _: &QueuedInfo| &m.payload[..] == b"wanted");
    let picky = queues.subscribe(
        "scan",
        ConsumerSpec {
            filter: Some(only_wanted),
            ..spec(10)
        },
    );
    let filler: Vec<&str> = vec!["other"; queue::DISPATCH_SCAN_LIMIT];
    send(&queues, "scan", &filler, QoS::AtMostOnce);
    send(&queues, "scan", &["wanted"], QoS::AtMostOnce);
    assert!(take(&picky).await.is_empty(), "beyond the scan limit");
    let any = queues.subscribe("scan", spec(1));
    let first = take(&any).await;
    any.ack(first[0].seq).expect("ack");
    assert_eq!(
        payloads(&take(&picky).await),
        ["wanted"],
        "within reach now"
    );
}

#[tokio::test]
async fn higher_priority_consumers_with_room_are_served_first() {
    let queues = queues();
    let with_priority = |q: &Queues, prefetch, priority| {
        q.subscribe(
            "prio",
            ConsumerSpec {
                priority,
                ..spec(prefetch)
            },
        )
    };
    let low = with_priority(&queues, 10, 0);
    let high_a = with_priority(&queues, 2, 5);
    let high_b = with_priority(&queues, 2, 5);
    send(
        &queues,
        "prio",
        &["1", "2", "3", "4", "5", "6"],
        QoS::AtMostOnce,
    );
    assert_eq!(payloads(&take(&high_a).await), ["1", "3"]);
    assert_eq!(payloads(&take(&high_b).await), ["2", "4"]);
    assert_eq!(
        payloads(&take(&low).await),
        ["5", "6"],
        "once the others are full"
    );
}

/// What a shared store (a cluster) was asked.
#[derive(Default)]
struct FakeShared {
    stored: parking_lot::Mutex<Vec<(String, String)>>,
    dead: parking_lot::Mutex<Vec<(String, QueueSeq, String)>>,
    consumers: parking_lot::Mutex<Vec<(String, usize)>>,
    temporary: parking_lot::Mutex<Vec<String>>,
}

impl SharedQueues for FakeShared {
    fn store(&self, queue: &str, message: &Message) -> Commit {
        let body = String::from_utf8_lossy(&message.payload).into_owned();
        self.stored.lock().push((queue.to_owned(), body));
        Commit::done()
    }

    fn store_all(
        &self,
        sends: &[(Arc<str>, Message)],
        topics: &[super::TopicSend],
        _acked: &[QueueSeq],
    ) -> Commit {
        for send in topics {
            let body = String::from_utf8_lossy(&send.message.payload).into_owned();
            self.stored
                .lock()
                .push((format!("topic:{}", send.message.topic), body));
        }
        for (queue, message) in sends {
            let body = String::from_utf8_lossy(&message.payload).into_owned();
            self.stored.lock().push((format!("all:{queue}"), body));
        }
        Commit::done()
    }

    fn dead_letter(&self, from: &str, seq: QueueSeq, to: &str, _message: &Message) -> Commit {
        self.dead.lock().push((from.to_owned(), seq, to.to_owned()));
        Commit::done()
    }

    fn consumers(&self, queue: &str, consumers: usize) {
        self.consumers.lock().push((queue.to_owned(), consumers));
    }

    fn temporary_created(&self, queue: &str) {
        self.temporary.lock().push(format!("+{queue}"));
    }

    fn temporary_deleted(&self, queue: &str) {
        self.temporary.lock().push(format!("-{queue}"));
    }

    fn send_to_remote_temporary(&self, queue: &str, message: &Message) -> Commit {
        let body = String::from_utf8_lossy(&message.payload).into_owned();
        self.stored.lock().push((format!("remote:{queue}"), body));
        Commit::done()
    }

    fn purge(&self, queue: &str) -> PurgeFuture {
        let known = self.stored.lock().iter().any(|(q, _)| q == queue);
        Box::pin(async move {
            Ok(SharedPurge {
                known,
                ..SharedPurge::default()
            })
        })
    }
}

#[tokio::test]
async fn a_temporary_queue_is_announced_to_the_shared_store_and_stays_local() {
    let queues = Queues::new(
        Recording::new(),
        MemoryGauge::new(u64::MAX),
        DeliveryPolicy::default(),
    );
    let shared = Arc::new(FakeShared::default());
    queues.set_shared(shared.clone());
    assert!(queues.create_temporary("ID:c-1:r"));
    // A send to it is queued here, not stored in the shared store.
    let sent = queues
        .send_temporary("ID:c-1:r", message("a", QoS::AtLeastOnce))
        .expect("a temporary queue");
    assert!(sent.is_ok());
    assert!(shared.stored.lock().is_empty());
    // Another broker's temporary queue is reached through the shared store.
    assert!(queues
        .send_remote_temporary("ID:c-2:r", &message("b", QoS::AtLeastOnce))
        .is_some());
    assert_eq!(
        *shared.stored.lock(),
        vec![("remote:ID:c-2:r".to_owned(), "b".to_owned())]
    );
    assert!(queues.delete("ID:c-1:r"));
    assert_eq!(*shared.temporary.lock(), ["+ID:c-1:r", "-ID:c-1:r"]);
}

#[tokio::test]
async fn a_shared_store_keeps_sends_and_feeds_the_local_queue_within_its_windows() {
    let engine = Recording::new();
    let queues = Queues::new(
        engine.clone(),
        MemoryGauge::new(u64::MAX),
        DeliveryPolicy::default(),
    );
    let shared = Arc::new(FakeShared::default());
    queues.set_shared(shared.clone());
    // A send goes to the shared store only: nothing is queued (nor declared) here.
    let commit = queues
        .send("s", message("a", QoS::AtLeastOnce))
        .expect("sent");
    assert!(matches!(commit, Commit::Done(Ok(()))));
    assert_eq!(
        *shared.stored.lock(),
        vec![("s".to_owned(), "a".to_owned())]
    );
    assert!(queues.shared_held("s").is_empty());
    assert!(engine.changes().is_empty(), "{:?}", engine.changes());

    let consumer = queues.subscribe("s", spec(2));
    assert_eq!(queues.shared_room("s"), 2);
    for seq in [100, 101, 102] {
        queues.insert_shared("s", seq, message(&seq.to_string(), QoS::AtLeastOnce), 1);
    }
    // Two fit the window; the third waits and takes no room.
    assert_eq!(queues.shared_room("s"), 0);
    let taken = consumer.take(10).expect("taken");
    assert_eq!(payloads(&taken), vec!["100", "101"]);
    assert!(taken.iter().all(|d| d.redelivered && d.delivery_count == 2));
    let waiting: Vec<QueueSeq> = queues
        .shared_waiting("s")
        .into_iter()
        .map(|w| w.0)
        .collect();
    assert_eq!(waiting, vec![102]);
    assert_eq!(queues.withdraw_shared("s", &[102, 999]), vec![(102, 1)]);
    assert_eq!(queues.shared_held("s"), [100, 101].into_iter().collect());

    // An ACK removes the kept entry (the store acknowledges it); a NACK dead-letters it
    // through the shared store.
    consumer
        .ack(100)
        .expect("acked")
        .wait()
        .await
        .expect("kept");
    assert!(engine.changes().iter().any(|c| matches!(
        c,
        Change::Removed { owner: QueueOwner::Queue(q), seq: 100 } if &**q == "s"
    )));
    consumer
        .nack(101)
        .expect("refused")
        .wait()
        .await
        .expect("kept");
    assert_eq!(
        *shared.dead.lock(),
        vec![("s".to_owned(), 101, "ActiveMQ.DLQ".to_owned())]
    );
    assert!(queues.shared_held("s").is_empty());
    consumer.close();
    assert_eq!(
        *shared.consumers.lock(),
        vec![("s".to_owned(), 1), ("s".to_owned(), 0)]
    );
}

#[tokio::test]
async fn a_shared_purge_drops_undelivered_entries_and_delivered_ones_once_given_back() {
    let engine = Recording::new();
    let queues = Queues::new(
        engine.clone(),
        MemoryGauge::new(u64::MAX),
        DeliveryPolicy::default(),
    );
    let shared = Arc::new(FakeShared::default());
    queues.set_shared(shared.clone());
    let a = queues.subscribe("p", spec(2));
    let b = queues.subscribe("p", spec(2));
    for seq in [10, 11, 12, 13, 14, 15] {
        queues.insert_shared("p", seq, message(&seq.to_string(), QoS::AtLeastOnce), 0);
    }
    // Round-robin: a has 10 and 12 delivered, b has 11 and 13 dispatched but not taken, 14
    // and 15 wait.
    assert_eq!(payloads(&a.take(10).expect("taken")), ["10", "12"]);

    // The store's purge takes everything but 15 (stored after its point).
    let purged: std::collections::HashSet<QueueSeq> = [10, 11, 12, 13, 14].into();
    let (mut gone, kept) = queues.purge_shared("p", &purged);
    gone.sort_unstable();
    assert_eq!((gone, kept), (vec![11, 13, 14], 2));
    assert_eq!(
        payloads(&b.take(10).expect("taken")),
        ["15"],
        "b's room freed"
    );
    assert!(engine.changes().is_empty(), "{:?}", engine.changes());

    // a's ACK of a purged delivery succeeds; what it NACKs or leaves with is dropped, not
    // dead-lettered nor handed to b.
    a.ack(10).expect("acked").wait().await.expect("kept");
    a.nack(12).expect("refused").wait().await.expect("kept");
    assert!(shared.dead.lock().is_empty());
    assert_eq!(queues.shared_held("p"), [15].into_iter().collect());
    queues.insert_shared("p", 16, message("16", QoS::AtLeastOnce), 0);
    assert_eq!(payloads(&a.take(10).expect("taken")), ["16"]);
    let purged: std::collections::HashSet<QueueSeq> = [16].into();
    assert_eq!(queues.purge_shared("p", &purged), (vec![], 1));
    a.close();
    assert_eq!(queues.shared_held("p"), [15].into_iter().collect());
    assert!(
        b.take(10).expect("nothing").is_empty(),
        "16 not redelivered"
    );
    let removed: Vec<QueueSeq> = engine
        .changes()
        .iter()
        .filter_map(|c| match c {
            Change::Removed { seq, .. } => Some(*seq),
            _ => None,
        })
        .collect();
    assert_eq!(removed, [10, 12, 16]);
}

/// A kept entry `seq` of the queue, paged out (only its envelope in memory) or not.
pub(super) fn kept_entry(seq: QueueSeq, paged: bool) -> Entry {
    let mut message = message(&format!("m{seq}"), QoS::AtLeastOnce);
    if paged {
        message.payload = Bytes::new();
    }
    Entry {
        seq,
        message,
        persistent: true,
        kept: true,
        paged,
        redeliveries: 0,
        accepted_ms: 0,
        not_before: None,
    }
}

#[test]
fn a_consumer_holding_messages_reads_no_page_while_memory_usage_is_full() {
    let memory = MemoryGauge::new(1000);
    let (policy, destination) = (DeliveryPolicy::default(), Destination::queue("q"));
    let ctx = Ctx {
        name: "q",
        destination: &destination,
        policy: &policy,
        is_dead_letter_queue: false,
        page_after: Some(1000),
        memory: &memory,
    };
    let (now, mut out) = (Instant::now(), Outcome::default());
    let mut state = QueueState::new(QueueOwner::Queue(Arc::from("q")));
    for (seq, paged) in [(1, false), (2, true), (3, true)] {
        state.restore(kept_entry(seq, paged));
    }
    let _full = memory.hold(1000);
    state.add_consumer(7, spec(10), now, &ctx, &mut out);
    assert!(out.page_in.is_empty(), "its next message is in memory");

    let taken = state.take(7, 10, now, &ctx, &mut out).expect("taken");
    assert_eq!(taken.len(), 1, "up to the first paged-out one");
    state.dispatch(now, &ctx, &mut out);
    assert!(
        out.page_in.is_empty(),
        "it holds a delivery not acknowledged"
    );

    state.ack(7, 1, false, now, &ctx, &mut out).expect("ack");
    let page = std::mem::take(&mut out.page_in);
    assert_eq!(
        page,
        [PageRead {
            consumer: 7,
            seqs: vec![2, 3]
        }],
        "holding nothing, it reads on a full gauge"
    );

    // The store stopped the page short: the rest waits for the consumer's progress.
    let back = message("m2", QoS::AtLeastOnce);
    state.loaded(7, vec![(2, Some(back))], &ctx, &mut out);
    assert!(
        out.page_in.is_empty(),
        "its next message is in memory again"
    );
    let taken = state.take(7, 10, now, &ctx, &mut out).expect("taken");
    assert_eq!(taken.len(), 1);
    state.ack(7, 2, false, now, &ctx, &mut out).expect("ack");
    assert_eq!(
        out.page_in,
        [PageRead {
            consumer: 7,
            seqs: vec![3]
        }]
    );
}

#[test]
fn kept_messages_nobody_has_room_for_are_paged_once_memory_usage_is_half_full() {
    let memory = MemoryGauge::new(1000);
    let (policy, destination) = (DeliveryPolicy::default(), Destination::queue("q"));
    let ctx = Ctx {
        name: "q",
        destination: &destination,
        policy: &policy,
        is_dead_letter_queue: false,
        page_after: Some(1000),
        memory: &memory,
    };
    let (now, mut out) = (Instant::now(), Outcome::default());
    let mut state = QueueState::new(QueueOwner::Queue(Arc::from("q")));
    state.insert(kept_entry(1, false), now, &ctx, &mut out);
    let _half = memory.hold(500);
    state.insert(kept_entry(2, false), now, &ctx, &mut out);
    let waiting = state.browse(10);
    assert_eq!(waiting[0].message.payload, "m1", "below half: in memory");
    assert!(
        waiting[1].message.payload.is_empty(),
        "past half: paged out"
    );

    state.add_consumer(7, spec(10), now, &ctx, &mut out);
    out.page_in.clear();
    state.insert(kept_entry(3, false), now, &ctx, &mut out);
    let taken = state.take(7, 10, now, &ctx, &mut out).expect("taken");
    assert_eq!(taken.len(), 1, "the paged-out second waits for its page");
    let held = state.browse(10);
    assert_eq!(
        held.last().map(|d| d.message.payload.clone()),
        Some(Bytes::from("m3")),
        "a consumer had room: kept in memory"
    );
}
