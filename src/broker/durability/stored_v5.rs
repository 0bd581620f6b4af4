//! The MQTT 5 side of a kept message or will, as the bytes stored beside its body (the
//! `properties` field of the store's message and will records, and the serde form of
//! [`crate::broker::message::Message::v5`]).
//!
//! Empty bytes mean "no MQTT 5 side": every record written before this layout existed, and
//! every MQTT 3 message, reads back as such. Otherwise:
//!
//! | bytes | what |
//! |---|---|
//! | 1 | layout: 1 |
//! | 1 | flags: bit 0 = an expiry follows, bit 1 = a will deadline follows |
//! | 8 | when the message expires, ms since the Unix epoch (LE), if bit 0 |
//! | 8 | when a pending will is due, ms since the Unix epoch (LE), if bit 1 |
//! | rest | one MQTT 5 property block, written by the codec (MQTT 5 2.2.2) |
//!
//! Times are wall-clock so that what is left of an interval counts the broker's downtime.

use bytes::{BufMut, Bytes, BytesMut};

use crate::protocol::codec::{decode_message_properties, encode_message_properties};
use crate::protocol::Properties;

/// The first byte of a non-empty record.
const LAYOUT: u8 = 1;
/// An absolute Message Expiry follows.
const HAS_EXPIRY: u8 = 0b01;
/// A pending will's absolute deadline follows.
const HAS_WILL_DEADLINE: u8 = 0b10;

/// The MQTT 5 side of a stored message or will.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredV5 {
    /// Message: the forwarded PUBLISH properties (no Message Expiry Interval: see
    /// `expires_at_ms`). Will: the will properties as the client sent them (Will Delay
    /// Interval and a Message Expiry Interval that starts when the will is published).
    pub properties: Option<Box<Properties>>,
    /// When the message expires, ms since the Unix epoch.
    pub expires_at_ms: Option<u64>,
    /// When a pending will is published, ms since the Unix epoch (`None`: its client was
    /// connected when this was written).
    pub will_deadline_ms: Option<u64>,
}

/// Why stored MQTT 5 bytes could not be read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("MQTT 5 properties of a stored message: {0}")]
pub struct StoredV5Error(pub String);

impl StoredV5 {
    fn is_empty(&self) -> bool {
        self.properties
            .as_deref()
            .is_none_or(|p| *p == Properties::default())
            && self.expires_at_ms.is_none()
            && self.will_deadline_ms.is_none()
    }

    /// The stored bytes (empty when there is nothing to keep). `Err`: a property that a
    /// PUBLISH or will cannot carry (never from decoded packets).
    pub fn encode(&self) -> Result<Bytes, StoredV5Error> {
        if self.is_empty() {
            return Ok(Bytes::new());
        }
        let block = match self.properties.as_deref() {
            Some(p) => encode_message_properties(p).map_err(|e| StoredV5Error(e.to_string()))?,
            None => Bytes::from_static(&[0]),
        };
        let mut buf = BytesMut::with_capacity(2 + 16 + block.len());
        buf.put_u8(LAYOUT);
        let flags = if self.expires_at_ms.is_some() {
            HAS_EXPIRY
        } else {
            0
        } | if self.will_deadline_ms.is_some() {
            HAS_WILL_DEADLINE
        } else {
            0
        };
        buf.put_u8(flags);
        for at in [self.expires_at_ms, self.will_deadline_ms]
            .into_iter()
            .flatten()
        {
            buf.put_u64_le(at);
        }
        buf.extend_from_slice(&block);
        Ok(buf.freeze())
    }

    /// Read stored bytes back. `Err`: damaged or of an unknown layout (never a panic).
    pub fn decode(bytes: &Bytes) -> Result<StoredV5, StoredV5Error> {
        if bytes.is_empty() {
            return Ok(StoredV5::default());
        }
        let err = |what: &str| StoredV5Error(what.to_owned());
        let (&layout, rest) = bytes.split_first().ok_or_else(|| err("empty"))?;
        if layout != LAYOUT {
            return Err(StoredV5Error(format!("unknown layout {layout}")));
        }
        let (&flags, _) = rest.split_first().ok_or_else(|| err("truncated flags"))?;
        if flags & !(HAS_EXPIRY | HAS_WILL_DEADLINE) != 0 {
            return Err(StoredV5Error(format!("unknown flags {flags:#x}")));
        }
        let mut pos = 2usize;
        let mut read_u64 = |present: bool| -> Result<Option<u64>, StoredV5Error> {
            if !present {
                return Ok(None);
            }
            let raw = bytes
                .get(pos..pos + 8)
                .ok_or_else(|| err("truncated time"))?;
            pos += 8;
            let mut le = [0u8; 8];
            le.copy_from_slice(raw);
            Ok(Some(u64::from_le_bytes(le)))
        };
        let expires_at_ms = read_u64(flags & HAS_EXPIRY != 0)?;
        let will_deadline_ms = read_u64(flags & HAS_WILL_DEADLINE != 0)?;
        let properties = decode_message_properties(&bytes.slice(pos..))
            .map_err(|e| StoredV5Error(e.to_string()))?;
        Ok(StoredV5 {
            properties,
            expires_at_ms,
            will_deadline_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_properties() -> Properties {
        Properties {
            payload_format_indicator: Some(1),
            message_expiry_interval: Some(30),
            content_type: Some("text/plain".into()),
            response_topic: Some("reply/here".into()),
            correlation_data: Some(Bytes::from_static(b"\x00corr")),
            user_properties: vec![("b".into(), "2".into()), ("a".into(), "1".into())],
            will_delay_interval: Some(5),
            ..Properties::default()
        }
    }

    #[test]
    fn every_field_round_trips_and_user_properties_keep_their_order() {
        let stored = StoredV5 {
            properties: Some(Box::new(all_properties())),
            expires_at_ms: Some(1_700_000_000_123),
            will_deadline_ms: Some(u64::MAX),
        };
        let bytes = stored.encode().expect("encode");
        assert_eq!(StoredV5::decode(&bytes).expect("decode"), stored);
        let only_expiry = StoredV5 {
            expires_at_ms: Some(5),
            ..StoredV5::default()
        };
        let back = StoredV5::decode(&only_expiry.encode().expect("encode")).expect("decode");
        assert_eq!(back, only_expiry);
    }

    #[test]
    fn nothing_to_keep_is_empty_bytes_and_empty_bytes_are_nothing() {
        assert!(StoredV5::default().encode().expect("encode").is_empty());
        let empty_properties = StoredV5 {
            properties: Some(Box::default()),
            ..StoredV5::default()
        };
        assert!(empty_properties.encode().expect("encode").is_empty());
        assert_eq!(
            StoredV5::decode(&Bytes::new()).expect("decode"),
            StoredV5::default()
        );
    }

    #[test]
    fn a_property_no_publish_carries_is_refused() {
        let stored = StoredV5 {
            properties: Some(Box::new(Properties {
                session_expiry_interval: Some(1),
                ..Properties::default()
            })),
            ..StoredV5::default()
        };
        assert!(stored.encode().is_err());
    }

    #[test]
    fn every_truncation_and_bit_flip_is_an_error_or_a_value_never_a_panic() {
        let bytes = StoredV5 {
            properties: Some(Box::new(all_properties())),
            expires_at_ms: Some(9),
            will_deadline_ms: Some(10),
        }
        .encode()
        .expect("encode");
        for cut in 1..bytes.len() {
            assert!(
                StoredV5::decode(&bytes.slice(..cut)).is_err(),
                "truncated at {cut}"
            );
        }
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut damaged = bytes.to_vec();
                damaged[i] ^= 1 << bit;
                let _ = StoredV5::decode(&Bytes::from(damaged));
            }
        }
    }
}
