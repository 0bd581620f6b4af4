//! A reloaded delivery policy reaches the queue engine: a `<redeliveryPlugin>` added to the
//! edited `activemq.xml` makes the next NACKed message come back instead of going to the
//! dead-letter queue.

use std::sync::Arc;

use bytes::Bytes;
use ferromq::broker::message::{Message, SampleStamp};
use ferromq::broker::queues::{ConsumerSpec, Queues};
use ferromq::protocol::QoS;
use tokio::sync::Notify;

use crate::support::broker_xml;
use crate::support::live::LiveBroker;

const REDELIVERY: &str = r#"<redeliveryPlugin>
      <redeliveryPolicyMap><redeliveryPolicyMap><redeliveryPolicyEntries>
        <redeliveryPolicy queue="retry.>" maximumRedeliveries="1" initialRedeliveryDelay="0" redeliveryDelay="0"/>
      </redeliveryPolicyEntries></redeliveryPolicyMap></redeliveryPolicyMap>
    </redeliveryPlugin>"#;

async fn send_and_refuse(queues: &Queues, body: &'static str) -> bool {
    let message = Message {
        stamp: SampleStamp::NONE,
        topic: Arc::from("retry.a"),
        payload: Bytes::from_static(body.as_bytes()),
        qos: QoS::AtLeastOnce,
        retain: false,
        v5: None,
    };
    queues
        .send("retry.a", message)
        .expect("accepted")
        .wait()
        .await
        .expect("kept");
    let wake = Arc::new(Notify::new());
    let consumer = queues.subscribe(
        "retry.a",
        ConsumerSpec {
            prefetch: Some(1),
            exclusive: false,
            priority: 0,
            filter: None,
            wake: wake.clone(),
        },
    );
    let held = consumer.take(1).expect("consumer");
    assert_eq!(held.len(), 1);
    consumer
        .nack(held[0].seq)
        .expect("nack")
        .wait()
        .await
        .expect("kept");
    // Redelivered at once (delay 0), or gone to the dead-letter queue.
    let again = consumer.take(1).expect("consumer");
    again.first().is_some_and(|d| d.redelivered)
}

#[tokio::test]
async fn a_redelivery_plugin_added_by_a_reload_applies_to_the_next_nack() {
    let without = broker_xml("", &[("mqtt", "mqtt://127.0.0.1:0")]);
    let mut live = LiveBroker::start(&without, true).await;
    let queues = live.handle.core().queues.clone();
    assert!(!send_and_refuse(&queues, "first").await, "dead-lettered");
    assert_eq!(queues.stats("ActiveMQ.DLQ").expect("DLQ").depth, 1);

    let stats = live
        .edit(&broker_xml(REDELIVERY, &[("mqtt", "mqtt://127.0.0.1:0")]))
        .await;
    assert_eq!(
        (stats.reloads_ok, stats.reloads_failed),
        (1, 0),
        "{stats:?}"
    );
    assert!(send_and_refuse(&queues, "second").await, "redelivered now");
    assert_eq!(queues.stats("ActiveMQ.DLQ").expect("DLQ").depth, 1);
    drop(queues);
    live.shutdown().await;
}
