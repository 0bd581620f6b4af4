//! The message value routed between sessions, and serde adapters so that session state made of
//! these values can be persisted by a durable store without changing its shape.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::protocol::{Properties, QoS};

/// An application message as routed. Cloning is cheap (two reference-count bumps), so one
/// publish fans out to many sessions without copying the topic or the payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub topic: Arc<str>,
    #[serde(with = "bytes_serde")]
    pub payload: Bytes,
    /// The QoS it was published with (delivery uses min(this, subscription QoS)).
    #[serde(with = "qos_serde")]
    pub qos: QoS,
    /// The publisher's retain flag (live deliveries are sent with retain=0 regardless).
    pub retain: bool,
    /// What an MQTT 5 publisher attached. Shared by every copy; `None` for MQTT 3 publishes,
    /// so they pay one pointer. Not persisted yet (see docs/mqtt5-progress.md).
    #[serde(skip)]
    pub v5: Option<Arc<V5Extras>>,
}

/// The MQTT 5 side of a message: the PUBLISH properties forwarded to subscribers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V5Extras {
    /// Payload format, content type, response topic, correlation data, user properties. The
    /// publisher's Message Expiry Interval is replaced by `expires_at`; topic alias and
    /// subscription identifiers are per connection and never forwarded (nor a will's delay).
    pub properties: Properties,
    /// When the message expires (Message Expiry Interval counted from its arrival).
    pub expires_at: Option<Instant>,
}

impl V5Extras {
    /// What of a PUBLISH's `properties` travels with the message, received at `now`;
    /// `None` when nothing does.
    pub fn from_publish(properties: Option<Box<Properties>>, now: Instant) -> Option<Arc<Self>> {
        let mut properties = *properties?;
        let expires_at = properties
            .message_expiry_interval
            .take()
            .map(|secs| now + Duration::from_secs(u64::from(secs)));
        properties.topic_alias = None;
        properties.subscription_identifiers.clear();
        // Of a will's properties, the delay is the will's own, not the message's.
        properties.will_delay_interval = None;
        if properties == Properties::default() && expires_at.is_none() {
            return None;
        }
        Some(Arc::new(V5Extras {
            properties,
            expires_at,
        }))
    }

    /// The Message Expiry Interval to send at `now`: the whole seconds left, rounded up (so
    /// a message that has not expired never says 0); `None` without an expiry.
    pub fn remaining_expiry_secs(&self, now: Instant) -> Option<u32> {
        let left = self.expires_at?.saturating_duration_since(now);
        let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
        Some(u32::try_from(secs).unwrap_or(u32::MAX).max(1))
    }
}

impl Message {
    /// Past its Message Expiry Interval at `now`: not delivered any more.
    pub fn is_expired(&self, now: Instant) -> bool {
        self.v5
            .as_ref()
            .and_then(|v5| v5.expires_at)
            .is_some_and(|at| at <= now)
    }
}

/// The smaller of two QoS levels: what a subscriber granted `sub` receives of a message
/// published at `publish`.
pub fn min_qos(publish: QoS, sub: QoS) -> QoS {
    publish.min(sub)
}

/// `Bytes` as a byte sequence (the `bytes` crate's own serde feature is not enabled).
pub(crate) mod bytes_serde {
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(b)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        Vec::<u8>::deserialize(d).map(Bytes::from)
    }
}

/// `QoS` as its numeric level.
pub(crate) mod qos_serde {
    use serde::de::Error;
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::protocol::QoS;

    pub fn serialize<S: Serializer>(q: &QoS, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(*q as u8)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<QoS, D::Error> {
        let level = u8::deserialize(d)?;
        QoS::from_u8(level).ok_or_else(|| D::Error::custom(format!("invalid QoS level {level}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_round_trips_through_json() {
        let m = Message {
            topic: Arc::from("a/b"),
            payload: Bytes::from_static(b"\x00\xffhi"),
            qos: QoS::ExactlyOnce,
            retain: true,
            v5: None,
        };
        let text = serde_json::to_string(&m).expect("serialize");
        let back: Message = serde_json::from_str(&text).expect("deserialize");
        assert_eq!(back, m);
    }

    #[test]
    fn invalid_qos_is_an_error_not_a_panic() {
        let text = r#"{"topic":"a","payload":[],"qos":3,"retain":false}"#;
        assert!(serde_json::from_str::<Message>(text).is_err());
    }

    #[test]
    fn v5_extras_keep_forwarded_properties_and_count_expiry_down() {
        let now = Instant::now();
        let received = Properties {
            content_type: Some("text/plain".into()),
            message_expiry_interval: Some(10),
            topic_alias: Some(3),
            subscription_identifiers: vec![7],
            user_properties: vec![("k".into(), "v".into())],
            ..Properties::default()
        };
        let extras = V5Extras::from_publish(Some(Box::new(received)), now).expect("extras");
        assert_eq!(
            extras.properties.content_type.as_deref(),
            Some("text/plain")
        );
        assert_eq!(extras.properties.topic_alias, None);
        assert!(extras.properties.subscription_identifiers.is_empty());
        assert_eq!(extras.properties.message_expiry_interval, None);
        assert_eq!(extras.remaining_expiry_secs(now), Some(10));
        assert_eq!(
            extras.remaining_expiry_secs(now + Duration::from_millis(2500)),
            Some(8)
        );
        let message = Message {
            topic: Arc::from("t"),
            payload: Bytes::new(),
            qos: QoS::AtMostOnce,
            retain: false,
            v5: Some(extras),
        };
        assert!(!message.is_expired(now + Duration::from_secs(9)));
        assert!(message.is_expired(now + Duration::from_secs(10)));
        let alias_only = Properties {
            topic_alias: Some(1),
            ..Properties::default()
        };
        assert!(V5Extras::from_publish(Some(Box::new(alias_only)), now).is_none());
    }

    #[test]
    fn min_qos_is_the_lower_level() {
        assert_eq!(
            min_qos(QoS::ExactlyOnce, QoS::AtLeastOnce),
            QoS::AtLeastOnce
        );
        assert_eq!(min_qos(QoS::AtMostOnce, QoS::ExactlyOnce), QoS::AtMostOnce);
    }
}
