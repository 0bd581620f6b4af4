//! What the cluster writes into NATS: a message as it travels between nodes (core NATS for
//! QoS 0, the `FMQ_MSG_<k>` streams for QoS 1, the `FMQ_RETAIN` bucket for retained
//! messages), and a persistent session's record in `FMQ_SESS`.
//!
//! A message is one binary frame (payloads stay bytes, no base64):
//!
//! | bytes | field |
//! |---|---|
//! | 1 | layout (1) |
//! | 1 | flags: QoS (bits 0-1), RETAIN (bit 2), a publisher follows (bit 3) |
//! | 8 | origin instance (random per node process), big endian |
//! | 8 | origin counter (per instance), big endian: with the instance, a QoS 0 copy's identity |
//! | 2 + n | publishing client id (when flagged) |
//! | 2 + n | topic (UTF-8) |
//! | 4 + n | MQTT 5 side ([`crate::broker::durability::stored_v5`]: properties, absolute expiry) |
//! | rest | payload |
//!
//! A session record is JSON (serde): small, read once per resume, and readable with the
//! `nats kv get` tool when an operator needs to look.

use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::broker::durability::stored_v5::StoredV5;
use crate::broker::durability::{KeptWill, WillOwner};
use crate::broker::message::{Message, SampleStamp, V5Extras};
use crate::broker::session::SubscriptionOptions;
use crate::protocol::QoS;

const LAYOUT: u8 = 1;
const QOS_BITS: u8 = 0b11;
const RETAIN: u8 = 0b100;
const HAS_PUBLISHER: u8 = 0b1000;

/// A message read back from NATS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub message: Message,
    pub origin_instance: u64,
    pub origin_counter: u64,
    pub publisher: Option<Arc<str>>,
}

/// Why a frame could not be read (a corrupt or foreign message on our subjects).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cluster message frame: {0}")]
pub struct FrameError(pub String);

fn bad(why: impl Into<String>) -> FrameError {
    FrameError(why.into())
}

/// The frame of `message` published by `publisher` on the node process `origin_instance`.
pub fn encode_message(
    message: &Message,
    origin_instance: u64,
    origin_counter: u64,
    publisher: Option<&str>,
) -> Result<Bytes, FrameError> {
    let v5 = match &message.v5 {
        Some(v5) => v5.to_stored().encode().map_err(|e| bad(e.to_string()))?,
        None => Bytes::new(),
    };
    let topic = message.topic.as_bytes();
    let publisher = publisher.map(str::as_bytes);
    let topic_len = u16::try_from(topic.len()).map_err(|_| bad("topic longer than 65535"))?;
    let publisher_len = match publisher {
        Some(p) => Some(u16::try_from(p.len()).map_err(|_| bad("client id too long"))?),
        None => None,
    };
    let v5_len = u32::try_from(v5.len()).map_err(|_| bad("properties too long"))?;
    let mut out = BytesMut::with_capacity(
        24 + topic.len() + publisher.map_or(0, |p| p.len() + 2) + v5.len() + message.payload.len(),
    );
    let mut flags = (message.qos as u8) & QOS_BITS;
    if message.retain {
        flags |= RETAIN;
    }
    if publisher.is_some() {
        flags |= HAS_PUBLISHER;
    }
    out.put_u8(LAYOUT);
    out.put_u8(flags);
    out.put_u64(origin_instance);
    out.put_u64(origin_counter);
    if let (Some(p), Some(len)) = (publisher, publisher_len) {
        out.put_u16(len);
        out.put_slice(p);
    }
    out.put_u16(topic_len);
    out.put_slice(topic);
    out.put_u32(v5_len);
    out.put_slice(&v5);
    out.put_slice(&message.payload);
    Ok(out.freeze())
}

/// Read a frame back. The payload is a copy: `bytes` is a slice of the NATS client's read
/// buffer (64 KiB, shared by every message read into it), which a kept message (retained, queued
/// for a slow session) would otherwise keep whole.
pub fn decode_message(mut bytes: Bytes) -> Result<Frame, FrameError> {
    if bytes.remaining() < 18 {
        return Err(bad("shorter than its header"));
    }
    if bytes.get_u8() != LAYOUT {
        return Err(bad("unknown layout"));
    }
    let flags = bytes.get_u8();
    let qos = match flags & QOS_BITS {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        2 => QoS::ExactlyOnce,
        _ => return Err(bad("QoS 3")),
    };
    let origin_instance = bytes.get_u64();
    let origin_counter = bytes.get_u64();
    let publisher = if flags & HAS_PUBLISHER != 0 {
        Some(Arc::from(read_str(&mut bytes, "client id")?))
    } else {
        None
    };
    let topic: Arc<str> = Arc::from(read_str(&mut bytes, "topic")?);
    if bytes.remaining() < 4 {
        return Err(bad("truncated properties length"));
    }
    let v5_len = bytes.get_u32() as usize;
    if bytes.remaining() < v5_len {
        return Err(bad("truncated properties"));
    }
    let v5_bytes = bytes.split_to(v5_len);
    let v5 = if v5_bytes.is_empty() {
        None
    } else {
        V5Extras::from_stored(StoredV5::decode(&v5_bytes).map_err(|e| bad(e.to_string()))?)
    };
    Ok(Frame {
        message: Message {
            stamp: SampleStamp::NONE,
            topic,
            payload: Bytes::copy_from_slice(&bytes),
            qos,
            retain: flags & RETAIN != 0,
            v5,
        },
        origin_instance,
        origin_counter,
        publisher,
    })
}

fn read_str(bytes: &mut Bytes, what: &str) -> Result<String, FrameError> {
    if bytes.remaining() < 2 {
        return Err(bad(format!("truncated {what} length")));
    }
    let len = usize::from(bytes.get_u16());
    if bytes.remaining() < len {
        return Err(bad(format!("truncated {what}")));
    }
    let raw = bytes.split_to(len);
    String::from_utf8(raw.to_vec()).map_err(|_| bad(format!("{what} is not UTF-8")))
}

/// A message sent to a session and not acknowledged yet, by its place in the log: re-sent
/// first, with its packet id, when the session resumes on any node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InflightRef {
    pub shard: u32,
    pub seq: u64,
    pub packet_id: u16,
    /// The QoS it was sent with.
    pub qos: u8,
    /// The Subscription Identifier it was sent with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription_id: Option<u32>,
    /// QoS 2: PUBREC received and PUBREL sent (a resume re-sends the PUBREL, not the PUBLISH).
    #[serde(default, skip_serializing_if = "is_false")]
    pub released: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A persistent session as `FMQ_SESS` keeps it (key: [`super::subject::client_key`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub client_id: String,
    /// The node that serves it (its `brokerName`).
    pub owner: String,
    /// Raised by every takeover; a node writes only with the epoch it claimed, and every
    /// write is a compare-and-set on the key's revision, so a stale owner can never write.
    pub epoch: u64,
    /// A connection holds it now (on `owner`).
    pub connected: bool,
    /// When its client left, ms since the Unix epoch (0 while connected).
    pub offline_since_ms: u64,
    /// MQTT 5 Session Expiry Interval (`None`: the broker's own rule).
    pub expiry_secs: Option<u32>,
    pub mqtt5: bool,
    pub subscriptions: Vec<(String, SubscriptionOptions)>,
    /// Per message shard: every message of that shard up to this sequence is done for this
    /// session (delivered and acknowledged, or not for it). A resume reads from the next one.
    pub floors: Vec<u64>,
    /// Sent and not acknowledged, in send order.
    pub inflight: Vec<InflightRef>,
    /// Per shard, messages above its floor that are done all the same, as `(shard, seq)`:
    /// acknowledged while an older one was not (a copy re-sent at a resume and acknowledged
    /// before the resume's catch-up reached its place). A resume skips them; without this it
    /// would read them again from the floor and send them as new messages (a QoS 2 message
    /// delivered twice). Absent in records of older nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub done: Vec<(u32, u64)>,
    /// The will the session's last connection left, while it is still to be published or
    /// cancelled (see `wills.rs`): published once by whoever removes it from the record with
    /// a compare-and-set (the owner, a node taking the session, or the reaper).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub will: Option<WillRecord>,
    /// The owner's process (its `instance`): a node restarted with the same `brokerName` is
    /// another process, which does not hold the sessions its predecessor held (0: unknown).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub owner_instance: u64,
    /// Random per session (a new one after a clean start or the end of the session): names
    /// the subjects of its inbound QoS 2 exchanges, so a new session never mistakes an old
    /// one's packet id for its own (see `qos2.rs`). 0 in records of older nodes.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub incarnation: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A will as a session record keeps it (MQTT 5 3.1.3.2; 3.1.1 3.1.3.2-3.1.3.4): the
/// message, its properties, its owner (a will is authorized as the principal that connected
/// with it) and when it is due.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WillRecord {
    pub topic: String,
    /// Base64 (standard alphabet).
    pub payload: String,
    pub qos: u8,
    pub retain: bool,
    /// The will properties ([`StoredV5`] layout, base64; empty for MQTT 3.1.1).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub properties: String,
    /// The user that connected with it, and whether anonymously (`None`: not published).
    pub owner: Option<(String, bool)>,
    /// When it is published, ms since the Unix epoch: the Will Delay Interval (capped by the
    /// session's expiry, MQTT 5 3.1.3.2.2) after its connection was lost. `None` while its
    /// connection lives on the record's owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    /// The Will Delay Interval, seconds (0 when absent).
    #[serde(default)]
    pub delay_secs: u32,
}

impl WillRecord {
    pub fn of(will: &KeptWill) -> WillRecord {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let properties = StoredV5 {
            properties: will.properties.clone(),
            expires_at_ms: None,
            will_deadline_ms: None,
        }
        .encode()
        .unwrap_or_default();
        WillRecord {
            topic: will.message.topic.to_string(),
            payload: b64.encode(&will.message.payload),
            qos: will.message.qos as u8,
            retain: will.message.retain,
            properties: if properties.is_empty() {
                String::new()
            } else {
                b64.encode(&properties)
            },
            owner: will
                .owner
                .as_ref()
                .map(|o| (o.user.to_string(), o.anonymous)),
            deadline_ms: will.deadline_ms,
            delay_secs: will.delay_secs(),
        }
    }

    /// The will to publish; `Err` for a record that is not one (corrupt or foreign).
    pub fn to_kept(&self) -> Result<KeptWill, FrameError> {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let payload = b64
            .decode(&self.payload)
            .map_err(|e| bad(format!("will payload: {e}")))?;
        let properties = if self.properties.is_empty() {
            None
        } else {
            let raw = b64
                .decode(&self.properties)
                .map_err(|e| bad(format!("will properties: {e}")))?;
            StoredV5::decode(&Bytes::from(raw))
                .map_err(|e| bad(e.to_string()))?
                .properties
        };
        let qos = match self.qos {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            2 => QoS::ExactlyOnce,
            _ => return Err(bad("will QoS 3")),
        };
        Ok(KeptWill {
            message: Message {
                stamp: SampleStamp::NONE,
                topic: Arc::from(self.topic.as_str()),
                payload: Bytes::from(payload),
                qos,
                retain: self.retain,
                v5: None,
            },
            owner: self.owner.as_ref().map(|(user, anonymous)| WillOwner {
                user: Arc::from(user.as_str()),
                anonymous: *anonymous,
            }),
            properties,
            deadline_ms: self.deadline_ms,
        })
    }

    /// Due at `now_ms`: its deadline passed (a will whose connection is live is not due).
    pub fn due(&self, now_ms: u64) -> bool {
        self.deadline_ms.is_some_and(|at| at <= now_ms)
    }
}

impl SessionRecord {
    pub fn encode(&self) -> Bytes {
        // A record of plain fields always serializes.
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }

    pub fn decode(bytes: &[u8]) -> Result<SessionRecord, FrameError> {
        serde_json::from_slice(bytes).map_err(|e| bad(format!("session record: {e}")))
    }

    /// Offline past its own expiry interval at `now_ms` (a session without one is kept).
    pub fn expired(&self, now_ms: u64) -> bool {
        match (self.connected, self.expiry_secs) {
            (false, Some(secs)) => {
                now_ms.saturating_sub(self.offline_since_ms) >= u64::from(secs) * 1000
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Properties;

    fn message(v5: bool) -> Message {
        Message {
            stamp: SampleStamp::NONE,
            topic: Arc::from("a/b c/ü"),
            payload: Bytes::from_static(b"payload"),
            qos: QoS::AtLeastOnce,
            retain: true,
            v5: v5.then(|| {
                Arc::new(V5Extras {
                    properties: Properties {
                        content_type: Some("text/plain".into()),
                        user_properties: vec![("k".into(), "v".into())],
                        ..Properties::default()
                    },
                    expires_at: None,
                })
            }),
        }
    }

    #[test]
    fn a_message_frame_round_trips_with_and_without_its_mqtt5_side() {
        for v5 in [false, true] {
            for publisher in [None, Some("pub-1")] {
                let m = message(v5);
                let bytes = encode_message(&m, 7, 9, publisher).expect("encodes");
                let frame = decode_message(bytes).expect("decodes");
                assert_eq!(frame.message, m);
                assert_eq!((frame.origin_instance, frame.origin_counter), (7, 9));
                assert_eq!(frame.publisher.as_deref(), publisher);
            }
        }
    }

    #[test]
    fn a_decoded_payload_does_not_keep_the_buffer_it_was_read_from() {
        let frame = encode_message(&message(false), 1, 2, None).expect("encodes");
        let mut read = bytes::BytesMut::with_capacity(64 * 1024);
        read.extend_from_slice(&frame);
        let buffer = read.as_ptr()..read.as_ptr().wrapping_add(64 * 1024);
        let decoded = decode_message(read.split().freeze()).expect("decodes");
        assert_eq!(&decoded.message.payload[..], b"payload");
        assert!(!buffer.contains(&decoded.message.payload.as_ptr()));
    }

    #[test]
    fn truncated_or_foreign_frames_are_errors_not_panics() {
        let bytes = encode_message(&message(true), 1, 2, Some("p")).expect("encodes");
        for len in 0..bytes.len() - 7 {
            let _ = decode_message(bytes.slice(..len));
        }
        assert!(decode_message(Bytes::from_static(b"{\"json\":1}")).is_err());
    }

    #[test]
    fn a_record_expires_only_offline_and_past_its_interval() {
        let mut r = SessionRecord {
            client_id: "c".into(),
            owner: "n1".into(),
            epoch: 1,
            connected: false,
            offline_since_ms: 1_000,
            expiry_secs: Some(10),
            mqtt5: true,
            subscriptions: vec![],
            floors: vec![0; 8],
            inflight: vec![],
            done: vec![(3, 17)],
            will: None,
            owner_instance: 0,
            incarnation: 0,
        };
        assert!(!r.expired(10_999));
        assert!(r.expired(11_000));
        r.connected = true;
        assert!(!r.expired(u64::MAX));
        let back = SessionRecord::decode(&r.encode()).expect("decodes");
        assert_eq!(back, r);
    }
}
