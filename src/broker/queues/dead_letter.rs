//! The copy of a message that enters a dead-letter queue, as ActiveMQ makes it
//! (`RegionBroker.sendToDeadLetterQueue`): no expiry any more, or the strategy's `expiration`
//! from now (0, none, by default), the queue it came from (`original-destination` for STOMP) and why
//! (`dlqDeliveryFailureCause`), as user properties, which STOMP shows as headers.

use std::sync::Arc;

use crate::broker::message::{Message, V5Extras};

/// The header naming the destination a dead letter came from (ActiveMQ's STOMP name).
pub const ORIGINAL_DESTINATION: &str = "original-destination";
/// The property saying why (ActiveMQ's name).
pub const FAILURE_CAUSE: &str = "dlqDeliveryFailureCause";

/// `message` as it enters the dead-letter queue of `from` (a queue, ActiveMQ name), expiring
/// `expiration` after now when set.
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
    Message {
        v5: Some(Arc::new(extras)),
        ..message.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::QoS;

    #[test]
    fn expiry_cleared_origin_and_cause_added_once() {
        let now = std::time::Instant::now();
        let m = Message {
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
}
