//! The message value routed between sessions, and serde adapters so that session state made of
//! these values can be persisted by a durable store (issue 7) without changing its shape.

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::protocol::QoS;

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
    fn min_qos_is_the_lower_level() {
        assert_eq!(
            min_qos(QoS::ExactlyOnce, QoS::AtLeastOnce),
            QoS::AtLeastOnce
        );
        assert_eq!(min_qos(QoS::AtMostOnce, QoS::ExactlyOnce), QoS::AtMostOnce);
    }
}
