//! The copy of a message that enters a dead-letter queue, as ActiveMQ makes it
//! (`RegionBroker.sendToDeadLetterQueue`): no expiry any more, or the strategy's `expiration`
//! from now (0, none, by default), the queue it came from (`original-destination` for STOMP) and why
//! (`dlqDeliveryFailureCause`), as user properties, which STOMP shows as headers. Every dead
//! letter is persistent (kept in the store): a non-persistent one (kept because of
//! `processNonPersistent`) becomes persistent with `originalDeliveryMode:NON_PERSISTENT`, as
//! ActiveMQ does, so a restart does not lose it.

use std::sync::Arc;

use crate::broker::message::{Message, V5Extras};
use crate::protocol::QoS;

/// The header naming the destination a dead letter came from (ActiveMQ's STOMP name).
pub const ORIGINAL_DESTINATION: &str = "original-destination";
/// The property saying why (ActiveMQ's name).
pub const FAILURE_CAUSE: &str = "dlqDeliveryFailureCause";
/// The property a dead letter that was not persistent carries (ActiveMQ's name and value).
pub const ORIGINAL_DELIVERY_MODE: &str = "originalDeliveryMode";
/// [`ORIGINAL_DELIVERY_MODE`]'s value.
pub const NON_PERSISTENT: &str = "NON_PERSISTENT";

/// `message` made persistent as every dead letter is (ActiveMQ's
/// `RegionBroker.sendToDeadLetterQueue`): a QoS 0 message becomes QoS 1 and gets
/// `originalDeliveryMode:NON_PERSISTENT` in `properties`; a persistent one is unchanged.
pub fn made_persistent(message: &mut Message, properties: &mut crate::protocol::Properties) {
    if message.qos == QoS::AtMostOnce {
        message.qos = QoS::AtLeastOnce;
        properties
            .user_properties
            .retain(|(k, _)| k != ORIGINAL_DELIVERY_MODE);
        properties
            .user_properties
            .push((ORIGINAL_DELIVERY_MODE.into(), NON_PERSISTENT.into()));
    }
}

/// `message` as it enters the dead-letter queue of `from` (a queue, ActiveMQ name), expiring
/// `expiration` after now when set; always persistent (see [`made_persistent`]).
pub fn message(
    message: &Message,
    from: &str,
    cause: &str,
    expiration: Option<std::time::Duration>,
) -> Message {
    let mut extras = message.v5.as_deref().cloned().unwrap_or(V5Extras {
        properties: crate::protocol::Properties::default(),
        expires_at: None,
    });
    extras.expires_at = expiration.map(|after| std::time::Instant::now() + after);
    let props = &mut extras.properties.user_properties;
    props.retain(|(k, _)| k != ORIGINAL_DESTINATION && k != FAILURE_CAUSE);
    props.push((ORIGINAL_DESTINATION.into(), format!("/queue/{from}")));
    props.push((FAILURE_CAUSE.into(), cause.into()));
    let mut dead = message.clone();
    made_persistent(&mut dead, &mut extras.properties);
    dead.v5 = Some(Arc::new(extras));
    dead
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::message::SampleStamp;

    #[test]
    fn expiry_cleared_origin_and_cause_added_once() {
        let now = std::time::Instant::now();
        let m = Message {
            stamp: SampleStamp::NONE,
            topic: Arc::from("orders"),
            payload: bytes::Bytes::from_static(b"x"),
            qos: QoS::AtLeastOnce,
            retain: false,
            v5: Some(Arc::new(V5Extras {
                properties: crate::protocol::Properties {
                    user_properties: vec![("k".into(), "v".into())],
                    ..Default::default()
                },
                expires_at: Some(now),
            })),
        };
        let dead = message(&m, "orders", "expired", None);
        let again = message(&dead, "orders", "NACK", None);
        let v5 = again.v5.clone().expect("v5");
        assert_eq!(v5.expires_at, None);
        assert_eq!(
            v5.properties.user_properties,
            vec![
                ("k".into(), "v".into()),
                (ORIGINAL_DESTINATION.into(), "/queue/orders".into()),
                (FAILURE_CAUSE.into(), "NACK".into()),
            ]
        );
        assert!(!again.is_expired(now));
        let expiring = message(
            &m,
            "orders",
            "NACK",
            Some(std::time::Duration::from_secs(60)),
        );
        let left = expiring
            .v5
            .expect("v5")
            .remaining_expiry_secs(std::time::Instant::now())
            .expect("expires");
        assert!((59..=60).contains(&left), "{left}");
    }

    #[test]
    fn a_non_persistent_message_becomes_persistent_saying_so() {
        let m = Message {
            stamp: SampleStamp::NONE,
            topic: Arc::from("events"),
            payload: bytes::Bytes::from_static(b"x"),
            qos: QoS::AtMostOnce,
            retain: false,
            v5: None,
        };
        let dead = message(&m, "events", "NACK", None);
        assert_eq!(dead.qos, QoS::AtLeastOnce);
        let props = &dead.v5.as_ref().expect("v5").properties.user_properties;
        assert_eq!(
            props.last(),
            Some(&(ORIGINAL_DELIVERY_MODE.into(), NON_PERSISTENT.into()))
        );
        // Dead-lettered again (persistent now): the mark stays, once.
        let again = message(&dead, "events", "NACK", None);
        let marks = again
            .v5
            .as_ref()
            .expect("v5")
            .properties
            .user_properties
            .iter();
        assert_eq!(
            marks.filter(|(k, _)| k == ORIGINAL_DELIVERY_MODE).count(),
            1
        );
    }
}
