//! The message value routed between sessions, and serde adapters so that session state made of
//! these values can be persisted by a durable store without changing its shape.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::broker::durability::stored_v5::StoredV5;
use crate::broker::durability::{now_ms, PagedBody};
pub use crate::metrics::latency::SampleStamp;
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
    /// The publisher's retain flag (live deliveries carry it only through an MQTT 5 Retain As
    /// Published subscription).
    pub retain: bool,
    /// What an MQTT 5 publisher attached. Shared by every copy; `None` for MQTT 3 publishes,
    /// so they pay one pointer. Kept as the durability engines keep it (see
    /// [`crate::broker::durability::stored_v5`]); absent in older serialized forms.
    #[serde(default, with = "v5_serde")]
    pub v5: Option<Arc<V5Extras>>,
    /// When a sampled live publish was received, for the delivery latency histogram
    /// ([`crate::metrics::latency`]); [`SampleStamp::NONE`] for most messages and for every
    /// message read back from a store. In the struct's padding (it stays 64 bytes); compares
    /// equal whatever its value.
    #[serde(skip)]
    pub stamp: SampleStamp,
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

    /// What is kept of it: the properties, and the expiry as wall-clock time (so that what
    /// is left of it counts a broker's downtime).
    pub fn to_stored(&self) -> StoredV5 {
        StoredV5 {
            properties: (self.properties != Properties::default())
                .then(|| Box::new(self.properties.clone())),
            expires_at_ms: self.expires_at.map(wall_ms_of),
            will_deadline_ms: None,
        }
    }

    /// The MQTT 5 side of a kept message read back now; `None` when nothing was kept. An
    /// expiry that passed while the broker was down is in the past (the message is expired).
    pub fn from_stored(stored: StoredV5) -> Option<Arc<Self>> {
        let mut properties = stored.properties.map(|p| *p).unwrap_or_default();
        properties.message_expiry_interval = None;
        properties.will_delay_interval = None;
        let expires_at = stored.expires_at_ms.map(instant_of_wall_ms);
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
    /// This message with its payload and correlation data copied: it shares no allocation
    /// with the read it was decoded from, so keeping it does not keep that read.
    pub fn detached(&self) -> Message {
        let v5 = self
            .v5
            .as_ref()
            .map(|v5| match v5.properties.correlation_data {
                Some(_) => {
                    let mut copy = V5Extras::clone(v5);
                    copy.properties.detach();
                    Arc::new(copy)
                }
                None => v5.clone(),
            });
        Message {
            payload: Bytes::copy_from_slice(&self.payload),
            v5,
            ..self.clone()
        }
    }

    /// This message as a paged-out queue entry keeps it in memory (its envelope): without its
    /// payload, and without MQTT 5 properties that take more heap than a side of their own
    /// (their expiry stays, so an expired entry is known without reading it back). Both are
    /// kept by the durability engine and come back with [`Message::read_back`]; smaller
    /// properties stay, shared with the message's other copies.
    pub fn envelope(&self) -> Message {
        let v5 = match &self.v5 {
            Some(v5) if !kept_in_envelope(&v5.properties) => v5.expires_at.map(|expires_at| {
                Arc::new(V5Extras {
                    properties: Properties::default(),
                    expires_at: Some(expires_at),
                })
            }),
            other => other.clone(),
        };
        Message {
            payload: Bytes::new(),
            v5,
            ..self.clone()
        }
    }

    /// The message of paged-out `envelope` ([`Message::envelope`]) with `body`, read back from
    /// the durability engine: the payload, and the properties unless the envelope kept them.
    /// The envelope's expiry is the one that counts (it is the message's, to the instant).
    pub fn read_back(envelope: &Message, body: PagedBody) -> Message {
        let kept_in_envelope = envelope
            .v5
            .as_ref()
            .is_some_and(|v5| v5.properties != Properties::default());
        let v5 = match body.v5 {
            Some(stored) if !kept_in_envelope && stored.properties != Properties::default() => {
                let mut v5 = Arc::unwrap_or_clone(stored);
                v5.expires_at = envelope.v5.as_ref().and_then(|v5| v5.expires_at);
                Some(Arc::new(v5))
            }
            _ => envelope.v5.clone(),
        };
        Message {
            payload: body.payload,
            v5,
            ..envelope.clone()
        }
    }

    /// Past its Message Expiry Interval at `now`: not delivered any more.
    pub fn is_expired(&self, now: Instant) -> bool {
        self.v5
            .as_ref()
            .and_then(|v5| v5.expires_at)
            .is_some_and(|at| at <= now)
    }
}

/// Heap bytes of properties a paged-out envelope keeps (see [`Message::envelope`]): up to the
/// size of the side that would replace them, so an envelope costs at most about two sides
/// more than a message without properties, whatever was published.
const PROPERTIES_KEPT_IN_ENVELOPE: usize = std::mem::size_of::<V5Extras>();

/// Whether a paged-out envelope keeps `properties` ([`Message::envelope`]).
pub fn kept_in_envelope(properties: &Properties) -> bool {
    properties.heap_bytes() <= PROPERTIES_KEPT_IN_ENVELOPE
}

/// `at` as ms since the Unix epoch (by the wall clock now).
fn wall_ms_of(at: Instant) -> u64 {
    let (now, now_ms) = (Instant::now(), now_ms());
    if at >= now {
        now_ms.saturating_add(millis(at - now))
    } else {
        now_ms.saturating_sub(millis(now - at))
    }
}

/// Ms since the Unix epoch as an `Instant` (by the wall clock now); a time in the past is at
/// most as old as the process allows, a far future one is capped at the longest interval MQTT
/// can express.
fn instant_of_wall_ms(ms: u64) -> Instant {
    let (now, now_ms) = (Instant::now(), now_ms());
    if ms >= now_ms {
        let ahead =
            Duration::from_millis(ms - now_ms).min(Duration::from_secs(u64::from(u32::MAX)));
        now.checked_add(ahead).unwrap_or(now)
    } else {
        let behind = Duration::from_millis(now_ms - ms);
        // Clamped, never a panic: the earliest instant the platform has is early enough.
        now.checked_sub(behind)
            .or_else(|| now.checked_sub(Duration::from_secs(1)))
            .unwrap_or(now)
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
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

/// `Message::v5` as the bytes of [`StoredV5`] (empty for `None`), so a serialized message keeps
/// the same MQTT 5 side as one in the durable store.
pub(crate) mod v5_serde {
    use std::sync::Arc;

    use bytes::Bytes;
    use serde::de::Error;
    use serde::{Deserialize, Deserializer, Serializer};

    use super::V5Extras;
    use crate::broker::durability::stored_v5::StoredV5;

    pub fn serialize<S: Serializer>(v5: &Option<Arc<V5Extras>>, s: S) -> Result<S::Ok, S::Error> {
        let bytes = match v5 {
            Some(v5) => v5.to_stored().encode().map_err(serde::ser::Error::custom)?,
            None => Bytes::new(),
        };
        s.serialize_bytes(&bytes)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Arc<V5Extras>>, D::Error> {
        let bytes = Bytes::from(Vec::<u8>::deserialize(d)?);
        let stored = StoredV5::decode(&bytes).map_err(D::Error::custom)?;
        Ok(V5Extras::from_stored(stored))
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

    fn with_properties(properties: Properties, expiry_secs: Option<u32>) -> Message {
        let now = Instant::now();
        let properties = Properties {
            message_expiry_interval: expiry_secs,
            ..properties
        };
        Message {
            stamp: SampleStamp::NONE,
            topic: "t".into(),
            payload: Bytes::from_static(b"payload"),
            qos: QoS::AtLeastOnce,
            retain: false,
            v5: V5Extras::from_publish(Some(Box::new(properties)), now),
        }
    }

    fn large_properties() -> Properties {
        Properties {
            user_properties: vec![("pad".into(), "u".repeat(4_000))],
            content_type: Some("text/plain".into()),
            ..Properties::default()
        }
    }

    #[test]
    fn an_envelope_drops_large_properties_and_keeps_the_expiry() {
        let message = with_properties(large_properties(), Some(60));
        let envelope = message.envelope();
        assert!(envelope.payload.is_empty());
        let v5 = envelope.v5.as_ref().expect("the expiry stays");
        assert_eq!(v5.properties, Properties::default());
        assert_eq!(
            v5.expires_at,
            message.v5.as_ref().and_then(|v| v.expires_at)
        );

        let without_expiry = with_properties(large_properties(), None).envelope();
        assert!(without_expiry.v5.is_none(), "nothing left of the side");
    }

    #[test]
    fn an_envelope_shares_small_properties_with_the_message() {
        let small = Properties {
            content_type: Some("text/plain".into()),
            ..Properties::default()
        };
        let message = with_properties(small, Some(60));
        let envelope = message.envelope();
        let (kept, original) = (envelope.v5.expect("kept"), message.v5.expect("sent"));
        assert!(Arc::ptr_eq(&kept, &original), "the same side, not a copy");
    }

    #[test]
    fn read_back_restores_dropped_properties_under_the_envelopes_expiry() {
        let message = with_properties(large_properties(), Some(60));
        let envelope = message.envelope();
        // As the store gives it back: its expiry went through wall-clock milliseconds.
        let stored = message.v5.as_ref().map(|v5| v5.to_stored()).expect("v5");
        let body = PagedBody {
            payload: message.payload.clone(),
            v5: V5Extras::from_stored(stored),
        };
        let back = Message::read_back(&envelope, body);
        assert_eq!(back.payload, message.payload);
        let (back_v5, sent_v5) = (back.v5.expect("back"), message.v5.expect("sent"));
        assert_eq!(back_v5.properties, sent_v5.properties);
        assert_eq!(back_v5.expires_at, sent_v5.expires_at, "to the instant");
    }

    #[test]
    fn read_back_keeps_properties_the_envelope_kept() {
        let small = Properties {
            content_type: Some("kept".into()),
            ..Properties::default()
        };
        let message = with_properties(small, None);
        let envelope = message.envelope();
        let body = PagedBody {
            payload: message.payload.clone(),
            v5: None,
        };
        let back = Message::read_back(&envelope, body);
        assert!(Arc::ptr_eq(
            back.v5.as_ref().expect("kept"),
            message.v5.as_ref().expect("sent")
        ));

        let plain = Message {
            v5: None,
            ..message
        };
        let body = PagedBody {
            payload: plain.payload.clone(),
            v5: None,
        };
        assert_eq!(Message::read_back(&plain.envelope(), body), plain);
    }

    #[test]
    fn a_detached_message_shares_no_bytes_with_its_read() {
        let read = Bytes::from(vec![7u8; 64]);
        let properties = Properties {
            correlation_data: Some(read.slice(0..8)),
            content_type: Some("text/plain".into()),
            ..Properties::default()
        };
        let message = Message {
            stamp: SampleStamp::NONE,
            topic: Arc::from("a/b"),
            payload: read.slice(8..64),
            qos: QoS::AtLeastOnce,
            retain: true,
            v5: Some(Arc::new(V5Extras {
                properties,
                expires_at: None,
            })),
        };
        let detached = message.detached();
        assert_eq!(detached, message, "the same message");
        let within_read = |b: &Bytes| read.as_ptr_range().contains(&b.as_ptr());
        assert!(!within_read(&detached.payload));
        let v5 = detached.v5.as_ref().expect("v5 extras kept");
        let data = v5.properties.correlation_data.as_ref().expect("kept");
        assert!(!within_read(data));
    }

    #[test]
    fn message_round_trips_through_json() {
        let m = Message {
            stamp: SampleStamp::NONE,
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
    fn v5_side_survives_serialization_with_its_expiry_as_wall_clock_time() {
        let now = Instant::now();
        let received = Properties {
            payload_format_indicator: Some(1),
            message_expiry_interval: Some(60),
            content_type: Some("text/plain".into()),
            response_topic: Some("r/t".into()),
            correlation_data: Some(Bytes::from_static(b"c")),
            user_properties: vec![("z".into(), "1".into()), ("a".into(), "2".into())],
            ..Properties::default()
        };
        let m = Message {
            stamp: SampleStamp::NONE,
            topic: Arc::from("a/b"),
            payload: Bytes::from_static(b"x"),
            qos: QoS::AtLeastOnce,
            retain: false,
            v5: V5Extras::from_publish(Some(Box::new(received)), now),
        };
        let text = serde_json::to_string(&m).expect("serialize");
        let back: Message = serde_json::from_str(&text).expect("deserialize");
        let (sent, got) = (m.v5.expect("v5"), back.v5.expect("v5 back"));
        assert_eq!(got.properties, sent.properties);
        let left = got.remaining_expiry_secs(Instant::now()).expect("expiry");
        assert!((59..=60).contains(&left), "{left} s left");
    }

    #[test]
    fn an_expiry_that_passed_while_stored_reads_back_expired() {
        let stored = StoredV5 {
            expires_at_ms: Some(now_ms().saturating_sub(5_000)),
            ..StoredV5::default()
        };
        let v5 = V5Extras::from_stored(stored).expect("v5");
        let message = Message {
            stamp: SampleStamp::NONE,
            topic: Arc::from("t"),
            payload: Bytes::new(),
            qos: QoS::AtLeastOnce,
            retain: false,
            v5: Some(v5),
        };
        assert!(message.is_expired(Instant::now()));
        let far = StoredV5 {
            expires_at_ms: Some(u64::MAX),
            ..StoredV5::default()
        };
        assert!(V5Extras::from_stored(far).is_some(), "no overflow");
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
            stamp: SampleStamp::NONE,
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
