//! A STOMP transaction's queue work staged for one commit (`staged.rs`): nothing visible
//! before it is applied, the changes that keep it, and what an undo gives back.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::Notify;

use super::*;
use crate::broker::durability::Recording;
use crate::broker::message::SampleStamp;
use crate::config::delivery_policy::DeliveryPolicy;

fn queues_on(engine: &Arc<Recording>) -> Arc<Queues> {
    Queues::new(
        engine.clone(),
        MemoryGauge::new(u64::MAX),
        DeliveryPolicy::default(),
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

fn consumer(queues: &Queues, name: &str) -> QueueConsumer {
    queues.subscribe(
        name,
        ConsumerSpec {
            prefetch: Some(100),
            exclusive: false,
            priority: 0,
            filter: None,
            wake: Arc::new(Notify::new()),
        },
    )
}

fn payloads(deliveries: &[QueueDelivery]) -> Vec<String> {
    deliveries
        .iter()
        .map(|d| String::from_utf8_lossy(&d.message.payload).into_owned())
        .collect()
}

/// What each change is, in order: `D` a queue record, `M` a kept message, `R` a removal.
fn kinds(changes: &[Change]) -> String {
    changes
        .iter()
        .map(|c| match c {
            Change::QueueDeclared { .. } => 'D',
            Change::Message { .. } => 'M',
            Change::Removed { .. } => 'R',
            _ => '?',
        })
        .collect()
}

#[tokio::test]
async fn staged_sends_reach_their_queue_only_once_applied_and_in_order() {
    let engine = Recording::new();
    let queues = queues_on(&engine);
    let c = consumer(&queues, "orders");
    let mut staging = QueueStaging::default();
    for (payload, qos) in [
        ("1", QoS::AtLeastOnce),
        ("np", QoS::AtMostOnce),
        ("2", QoS::AtLeastOnce),
    ] {
        queues
            .stage_send(&mut staging, "orders", false, message(payload, qos))
            .expect("staged");
    }
    // The non-persistent message keeps nothing.
    assert_eq!(kinds(staging.changes()), "MM");
    assert!(
        c.take(10).expect("consumer").is_empty(),
        "nothing before the commit"
    );
    assert_eq!(queues.stats("orders").expect("queue").depth, 0);
    queues.apply_staged(staging);
    assert_eq!(payloads(&c.take(10).expect("consumer")), ["1", "np", "2"]);
}

#[tokio::test]
async fn a_new_queue_is_recorded_once_with_its_staged_messages() {
    let engine = Recording::new();
    // Its record is still being written when the messages are staged.
    engine.hold_when(|c| matches!(c, Change::QueueDeclared { .. }));
    let queues = queues_on(&engine);
    let mut staging = QueueStaging::default();
    for payload in ["1", "2"] {
        queues
            .stage_send(
                &mut staging,
                "new",
                false,
                message(payload, QoS::AtLeastOnce),
            )
            .expect("staged");
    }
    assert_eq!(kinds(staging.changes()), "DMM");
    engine.release();
}

#[tokio::test]
async fn undone_sends_leave_nothing() {
    let engine = Recording::new();
    let queues = queues_on(&engine);
    let mut staging = QueueStaging::default();
    queues
        .stage_send(
            &mut staging,
            "orders",
            false,
            message("1", QoS::AtLeastOnce),
        )
        .expect("staged");
    queues.undo_staged(staging);
    let c = consumer(&queues, "orders");
    assert!(c.take(10).expect("consumer").is_empty());
    assert_eq!(queues.stats("orders").expect("queue").depth, 0);
}

#[tokio::test]
async fn a_deleted_temporary_queue_takes_no_staged_send() {
    let queues = queues_on(&Recording::new());
    let mut staging = QueueStaging::default();
    let refused = queues.stage_send(&mut staging, "gone", true, message("x", QoS::AtLeastOnce));
    assert!(matches!(refused, Err(SendError::Durability(_))));
    assert!(staging.changes().is_empty());
}

/// A queue with three persistent messages delivered to one consumer: the consumer and the
/// deliveries' seqs.
async fn delivered(queues: &Queues) -> (QueueConsumer, Vec<QueueSeq>) {
    let c = consumer(queues, "work");
    for p in ["a", "b", "c"] {
        queues
            .send("work", message(p, QoS::AtLeastOnce))
            .expect("send")
            .wait()
            .await
            .expect("kept");
    }
    let seqs = c
        .take(10)
        .expect("consumer")
        .iter()
        .map(|d| d.seq)
        .collect();
    (c, seqs)
}

#[tokio::test]
async fn staged_acks_leave_the_window_and_count_once_applied() {
    let engine = Recording::new();
    let queues = queues_on(&engine);
    let (c, seqs) = delivered(&queues).await;
    let mut staging = QueueStaging::default();
    c.stage_ack(&mut staging, &seqs[..2]).expect("held");
    assert_eq!(kinds(staging.changes()), "RR");
    let before = queues.stats("work").expect("queue");
    assert_eq!((before.depth, before.counts.dequeued), (1, 0));
    queues.apply_staged(staging);
    let after = queues.stats("work").expect("queue");
    assert_eq!((after.depth, after.counts.dequeued), (1, 2));
    // The third is still this consumer's to acknowledge.
    c.ack(seqs[2]).expect("held").wait().await.expect("kept");
}

#[tokio::test]
async fn undone_acks_give_the_messages_back_redelivered() {
    let engine = Recording::new();
    let queues = queues_on(&engine);
    let (c, seqs) = delivered(&queues).await;
    let mut staging = QueueStaging::default();
    c.stage_ack(&mut staging, &seqs).expect("held");
    queues.undo_staged(staging);
    let stats = queues.stats("work").expect("queue");
    assert_eq!((stats.depth, stats.counts.dequeued), (3, 0));
    let again = c.take(10).expect("consumer");
    assert_eq!(payloads(&again), ["a", "b", "c"]);
    assert!(again.iter().all(|d| d.redelivered));
}

#[tokio::test]
async fn an_ack_of_a_message_not_held_stages_nothing() {
    let engine = Recording::new();
    let queues = queues_on(&engine);
    let (c, seqs) = delivered(&queues).await;
    let mut staging = QueueStaging::default();
    let unknown = seqs.iter().max().copied().unwrap_or_default() + 100;
    let refused = c.stage_ack(&mut staging, &[seqs[0], unknown]);
    assert_eq!(refused, Err(AckError::NotHeld(unknown)));
    assert!(staging.changes().is_empty());
    // The first is still held: acknowledged alone it goes.
    c.ack(seqs[0])
        .expect("still held")
        .wait()
        .await
        .expect("kept");
}

/// What the queue holds, as a cluster node's sweeper asks before giving back what the shared
/// store delivered to it.
fn held(queues: &Queues, name: &str) -> std::collections::HashSet<QueueSeq> {
    let queue = queues.queues.read().get(name).cloned().expect("queue");
    let held = queue.state.lock().held();
    held
}

#[tokio::test]
async fn staged_acks_stay_held_until_applied_or_undone() {
    let engine = Recording::new();
    let queues = queues_on(&engine);
    let (c, seqs) = delivered(&queues).await;
    let mut staging = QueueStaging::default();
    c.stage_ack(&mut staging, &seqs[..2]).expect("held");
    // Out of the consumer's window while the commit is waited for, but still this queue's:
    // given back meanwhile, they would be delivered again after the commit kept them.
    assert!(seqs.iter().all(|s| held(&queues, "work").contains(s)));
    queues.apply_staged(staging);
    let after = held(&queues, "work");
    assert!(!after.contains(&seqs[0]) && !after.contains(&seqs[1]));
    assert!(after.contains(&seqs[2]));

    let mut staging = QueueStaging::default();
    c.stage_ack(&mut staging, &seqs[2..]).expect("held");
    queues.undo_staged(staging);
    assert!(held(&queues, "work").contains(&seqs[2]));
    c.take(10).expect("consumer");
    c.ack(seqs[2]).expect("held").wait().await.expect("kept");
    assert!(held(&queues, "work").is_empty());
}
