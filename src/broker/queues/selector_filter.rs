//! A JMS selector (the STOMP `selector` header of a queue SUBSCRIBE) as a consumer's
//! [`MessageFilter`]: a message it does not select stays in the queue for the other consumers,
//! as in ActiveMQ (docs/selectors.md).

use std::sync::Arc;

use super::{MessageFilter, QueuedInfo};
use crate::broker::message::Message;
use crate::broker::selector::{DeliveryInfo, Selector};

/// A consumer's selector with what it reads of the queue.
pub struct SelectorFilter {
    selector: Box<Selector>,
    /// `JMSDestination`: `queue://name`.
    destination: Box<str>,
}

impl SelectorFilter {
    /// The filter of a consumer of queue `name` (ActiveMQ form, `a.b`) selecting with
    /// `selector`, for [`super::ConsumerSpec::filter`].
    pub fn for_queue(selector: Box<Selector>, name: &str) -> Arc<dyn MessageFilter> {
        Arc::new(SelectorFilter {
            selector,
            destination: format!("queue://{name}").into(),
        })
    }
}

impl MessageFilter for SelectorFilter {
    fn accepts(&self, message: &Message, info: &QueuedInfo) -> bool {
        // The queue engine calls this before a message id is given: JMSMessageID is NULL.
        self.selector.matches(
            message,
            &DeliveryInfo {
                redelivery_count: info.redeliveries,
                message_id: None,
                timestamp_ms: info.accepted_ms,
                destination: Some(&self.destination),
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use tokio::sync::Notify;

    use super::SelectorFilter;
    use crate::broker::durability::MemoryOnly;
    use crate::broker::message::{Message, SampleStamp, V5Extras};
    use crate::broker::queues::{ConsumerSpec, Queues};
    use crate::broker::routing::memory::MemoryGauge;
    use crate::broker::selector::Selector;
    use crate::config::delivery_policy::DeliveryPolicy;
    use crate::protocol::{Properties, QoS};

    fn message(name: &str, body: &str, kind: &str) -> Message {
        Message {
            stamp: SampleStamp::NONE,
            topic: Arc::from(name),
            payload: Bytes::copy_from_slice(body.as_bytes()),
            qos: QoS::AtMostOnce,
            retain: false,
            v5: Some(Arc::new(V5Extras {
                properties: Properties {
                    user_properties: vec![("kind".into(), kind.into())],
                    ..Properties::default()
                },
                expires_at: None,
            })),
        }
    }

    fn consumer_spec(selector: &str, queue: &str) -> ConsumerSpec {
        let selector = Selector::parse_stomp(selector).expect("a valid selector");
        ConsumerSpec {
            prefetch: Some(10),
            exclusive: false,
            priority: 0,
            filter: Some(SelectorFilter::for_queue(Box::new(selector), queue)),
            wake: Arc::new(Notify::new()),
        }
    }

    fn bodies(consumer: &crate::broker::queues::QueueConsumer) -> Vec<String> {
        consumer
            .take(usize::MAX)
            .expect("consumer exists")
            .iter()
            .map(|d| String::from_utf8_lossy(&d.message.payload).into_owned())
            .collect()
    }

    #[tokio::test]
    async fn consumers_get_what_their_selectors_select_and_the_rest_stays_queued() {
        let queues = Queues::new(
            Arc::new(MemoryOnly::default()),
            MemoryGauge::new(u64::MAX),
            DeliveryPolicy::default(),
        );
        let a = queues.subscribe("jobs", consumer_spec("kind = 'a'", "jobs"));
        let b = queues.subscribe(
            "jobs",
            consumer_spec("kind = 'b' AND JMSDestination = 'queue://jobs'", "jobs"),
        );
        for (body, kind) in [("a1", "a"), ("b1", "b"), ("c1", "c"), ("a2", "a")] {
            queues
                .send("jobs", message("jobs", body, kind))
                .expect("send accepted");
        }
        assert_eq!(bodies(&a), ["a1", "a2"]);
        assert_eq!(bodies(&b), ["b1"]);
        assert_eq!(queues.stats("jobs").expect("stats").depth, 4, "c1 stays");
        let redelivered = queues.subscribe("jobs", consumer_spec("JMSRedelivered", "jobs"));
        assert!(bodies(&redelivered).is_empty(), "c1 was never delivered");
        let first_time = queues.subscribe("jobs", consumer_spec("JMSXDeliveryCount = 1", "jobs"));
        assert_eq!(bodies(&first_time), ["c1"]);
    }
}
