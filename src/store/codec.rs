//! Compact binary encoding of the store's records (the values in its tables).
//!
//! Hand-written rather than a serde format: the records are few and small, the encoding is
//! stable by construction (a version byte leads every record), and decoding returns an error
//! value on any damaged input instead of trusting lengths. Integers are little-endian; strings
//! and byte strings are length-prefixed (u32).

use std::sync::Arc;

use bytes::Bytes;

use super::types::{
    QueueEntry, QueueState, SessionRecord, StoredMessage, SubscriptionRecord, WillOwner, WillRecord,
};
use crate::protocol::{QoS, RetainHandling, SubscriptionOptions};

/// Leads every record; bump when a record's layout changes (and decode old versions).
const FORMAT_VERSION: u8 = 1;

/// Why a stored record could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("undecodable {record} record: {reason}")]
pub struct DecodeError {
    pub record: &'static str,
    pub reason: String,
}

struct Writer(Vec<u8>);

impl Writer {
    fn new(capacity: usize) -> Self {
        let mut buf = Vec::with_capacity(capacity + 1);
        buf.push(FORMAT_VERSION);
        Writer(buf)
    }

    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }

    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    /// Length-prefixed bytes. Lengths past u32 cannot occur: MQTT caps a packet at 256 MB.
    fn bytes(&mut self, v: &[u8]) {
        self.u32(u32::try_from(v.len()).unwrap_or(u32::MAX));
        self.0.extend_from_slice(v);
    }

    fn opt_u64(&mut self, v: Option<u64>) {
        match v {
            Some(v) => {
                self.u8(1);
                self.u64(v);
            }
            None => self.u8(0),
        }
    }

    fn opt_u32(&mut self, v: Option<u32>) {
        match v {
            Some(v) => {
                self.u8(1);
                self.u32(v);
            }
            None => self.u8(0),
        }
    }
}

/// Reads a record from shared bytes, so that payloads decode as zero-copy slices.
struct Reader<'a> {
    buf: &'a Bytes,
    pos: usize,
    record: &'static str,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a Bytes, record: &'static str) -> Result<Self, DecodeError> {
        let mut reader = Reader {
            buf,
            pos: 0,
            record,
        };
        let version = reader.u8()?;
        if version != FORMAT_VERSION {
            return Err(reader.error(format!(
                "format version {version}, this build reads version {FORMAT_VERSION}"
            )));
        }
        Ok(reader)
    }

    fn error(&self, reason: String) -> DecodeError {
        DecodeError {
            record: self.record,
            reason,
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|end| *end <= self.buf.len())
            .ok_or_else(|| {
                self.error(format!(
                    "truncated: {n} bytes wanted at offset {} of {}",
                    self.pos,
                    self.buf.len()
                ))
            })?;
        let slice = self.buf.get(self.pos..end).unwrap_or_default();
        self.pos = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(self.error(format!("invalid boolean {other}"))),
        }
    }

    fn len(&mut self) -> Result<usize, DecodeError> {
        let len = self.u32()?;
        usize::try_from(len).map_err(|_| self.error(format!("length {len} too large")))
    }

    fn bytes(&mut self) -> Result<Bytes, DecodeError> {
        let len = self.len()?;
        let start = self.pos;
        self.take(len)?;
        Ok(self.buf.slice(start..start + len))
    }

    fn str(&mut self) -> Result<Arc<str>, DecodeError> {
        let len = self.len()?;
        let raw = self.take(len)?;
        std::str::from_utf8(raw)
            .map(Arc::from)
            .map_err(|e| self.error(format!("invalid UTF-8 string: {e}")))
    }

    fn qos(&mut self) -> Result<QoS, DecodeError> {
        let level = self.u8()?;
        QoS::from_u8(level).ok_or_else(|| self.error(format!("invalid QoS {level}")))
    }

    fn opt_u64(&mut self) -> Result<Option<u64>, DecodeError> {
        Ok(if self.bool()? {
            Some(self.u64()?)
        } else {
            None
        })
    }

    fn opt_u32(&mut self) -> Result<Option<u32>, DecodeError> {
        Ok(if self.bool()? {
            Some(self.u32()?)
        } else {
            None
        })
    }

    /// Nothing left: a record written before a trailing field was added ends here.
    fn at_end(&self) -> bool {
        self.pos == self.buf.len()
    }

    fn finish<T>(self, value: T) -> Result<T, DecodeError> {
        if self.pos == self.buf.len() {
            Ok(value)
        } else {
            Err(self.error(format!(
                "{} trailing bytes",
                self.buf.len().saturating_sub(self.pos)
            )))
        }
    }
}

pub(crate) fn encode_message(m: &StoredMessage) -> Vec<u8> {
    let mut w = Writer(Vec::with_capacity(encoded_len(m)));
    put_message(&mut w, m);
    w.0
}

fn encoded_len(m: &StoredMessage) -> usize {
    1 + 2 + 3 * 4 + m.topic.len() + m.properties.len() + m.payload.len()
}

/// The message record (its own version byte first), appended to `w`.
fn put_message(w: &mut Writer, m: &StoredMessage) {
    w.u8(FORMAT_VERSION);
    w.u8(m.qos as u8);
    w.u8(u8::from(m.retain));
    w.bytes(m.topic.as_bytes());
    w.bytes(&m.properties);
    w.bytes(&m.payload);
}

/// `encode_message(m).len()`, without encoding.
pub(crate) fn encoded_message_len(m: &StoredMessage) -> u64 {
    encoded_len(m) as u64
}

pub(crate) fn decode_message(buf: &Bytes) -> Result<StoredMessage, DecodeError> {
    let mut r = Reader::new(buf, "message")?;
    let qos = r.qos()?;
    let retain = r.bool()?;
    let topic = r.str()?;
    let properties = r.bytes()?;
    let payload = r.bytes()?;
    r.finish(StoredMessage {
        topic,
        payload,
        qos,
        retain,
        properties,
    })
}

/// The state byte's flag of an entry that carries its message's body ([`super::Op::PutQueued`]).
/// Older builds read it as an invalid state: a store written with such entries is not read by
/// a build from before them.
const WITH_BODY: u8 = 0x80;

/// A session or owned queue entry as stored: the entry, and the encoded body
/// ([`encode_message`]) when the entry carries its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QueueRecord {
    pub entry: QueueEntry,
    pub body: Option<Bytes>,
}

pub(crate) fn encode_queue_entry(e: &QueueEntry) -> Vec<u8> {
    encode_entry(e, None)
}

/// An entry carrying `body` (an [`encode_message`] record) in one value.
pub(crate) fn encode_queue_entry_with_body(e: &QueueEntry, body: &[u8]) -> Vec<u8> {
    encode_entry(e, Some(Carried::Encoded(body)))
}

/// An entry carrying message `m`, encoded in one pass (what [`encode_queue_entry_with_body`]
/// makes of `encode_message(m)`).
pub(crate) fn encode_queue_entry_with_message(e: &QueueEntry, m: &StoredMessage) -> Vec<u8> {
    encode_entry(e, Some(Carried::Message(m)))
}

/// The body an entry carries, as encoded bytes or still to encode.
#[derive(Clone, Copy)]
enum Carried<'a> {
    Encoded(&'a [u8]),
    Message(&'a StoredMessage),
}

fn encode_entry(e: &QueueEntry, body: Option<Carried<'_>>) -> Vec<u8> {
    let body_len = match body {
        None => 0,
        Some(Carried::Encoded(bytes)) => bytes.len(),
        Some(Carried::Message(m)) => encoded_len(m),
    };
    let mut w = Writer::new(14 + body_len + 8);
    w.u64(e.message_id);
    w.u8(e.qos as u8);
    w.u8(u8::from(e.retain));
    let flag = if body.is_some() { WITH_BODY } else { 0 };
    match e.state {
        QueueState::Queued => w.u8(flag),
        QueueState::Sent { packet_id } => {
            w.u8(1 | flag);
            w.u16(packet_id);
        }
        QueueState::Released { packet_id } => {
            w.u8(2 | flag);
            w.u16(packet_id);
        }
    }
    match body {
        // Trailing, and only when present: entries without one keep the original layout.
        None => {
            if let Some(id) = e.subscription_id {
                w.u32(id);
            }
        }
        // Always there (0: none), so that the body's place is fixed.
        Some(Carried::Encoded(body)) => {
            w.u32(e.subscription_id.unwrap_or(0));
            w.bytes(body);
        }
        Some(Carried::Message(m)) => {
            w.u32(e.subscription_id.unwrap_or(0));
            w.u32(u32::try_from(body_len).unwrap_or(u32::MAX));
            put_message(&mut w, m);
        }
    }
    w.0
}

pub(crate) fn decode_queue_record(buf: &Bytes) -> Result<QueueRecord, DecodeError> {
    let mut r = Reader::new(buf, "queue entry")?;
    let message_id = r.u64()?;
    let qos = r.qos()?;
    let retain = r.bool()?;
    let state_byte = r.u8()?;
    let state = match state_byte & !WITH_BODY {
        0 => QueueState::Queued,
        1 => QueueState::Sent {
            packet_id: r.u16()?,
        },
        2 => QueueState::Released {
            packet_id: r.u16()?,
        },
        other => return Err(r.error(format!("invalid queue state {other}"))),
    };
    let with_body = state_byte & WITH_BODY != 0;
    let subscription_id = if r.at_end() && !with_body {
        None
    } else {
        match (r.u32()?, with_body) {
            (0, true) => None,
            (0, false) => return Err(r.error("subscription identifier 0".to_owned())),
            (id, _) => Some(id),
        }
    };
    let body = if with_body { Some(r.bytes()?) } else { None };
    r.finish(QueueRecord {
        entry: QueueEntry {
            message_id,
            qos,
            retain,
            subscription_id,
            state,
        },
        body,
    })
}

/// Subscription options as the SUBSCRIBE options byte of MQTT 5 (3.8.3.1).
fn options_byte(o: &SubscriptionOptions) -> u8 {
    (o.qos as u8)
        | (u8::from(o.no_local) << 2)
        | (u8::from(o.retain_as_published) << 3)
        | ((o.retain_handling as u8) << 4)
}

fn options_from_byte(r: &Reader<'_>, b: u8) -> Result<SubscriptionOptions, DecodeError> {
    let qos = QoS::from_u8(b & 0b11).ok_or_else(|| r.error(format!("invalid QoS in {b:#x}")))?;
    let retain_handling = match (b >> 4) & 0b11 {
        0 => RetainHandling::SendAtSubscribe,
        1 => RetainHandling::SendAtSubscribeIfNew,
        2 => RetainHandling::DoNotSend,
        _ => return Err(r.error(format!("invalid retain handling in {b:#x}"))),
    };
    Ok(SubscriptionOptions {
        qos,
        no_local: b & 0b100 != 0,
        retain_as_published: b & 0b1000 != 0,
        retain_handling,
    })
}

/// The will marker of a session record. Records written before owners were kept use 1, and
/// still decode (with no owner), so an existing store opens without a format change.
const WILL_NONE: u8 = 0;
const WILL_WITHOUT_OWNER: u8 = 1;
const WILL_WITH_OWNER: u8 = 2;

pub(crate) fn encode_session(s: &SessionRecord) -> Vec<u8> {
    let mut w = Writer::new(64);
    w.u64(s.last_seen_ms);
    w.opt_u64(s.expiry_ms);
    w.u32(u32::try_from(s.subscriptions.len()).unwrap_or(u32::MAX));
    for sub in &s.subscriptions {
        w.bytes(sub.filter.as_bytes());
        w.u8(options_byte(&sub.options));
        w.opt_u32(sub.subscription_id);
    }
    match &s.will {
        None => w.u8(WILL_NONE),
        Some(will) => {
            w.u8(if will.owner.is_some() {
                WILL_WITH_OWNER
            } else {
                WILL_WITHOUT_OWNER
            });
            w.bytes(will.topic.as_bytes());
            w.u8(will.qos as u8);
            w.u8(u8::from(will.retain));
            w.bytes(&will.properties);
            w.bytes(&will.payload);
            if let Some(owner) = &will.owner {
                w.bytes(owner.user.as_bytes());
                w.u8(u8::from(owner.anonymous));
            }
        }
    }
    // Trailing, added later and written only when set: an MQTT 3 session keeps the original
    // layout, and a record without it reads as MQTT 3.
    if s.mqtt5 {
        w.u8(1);
    }
    w.0
}

pub(crate) fn decode_session(buf: &Bytes) -> Result<SessionRecord, DecodeError> {
    let mut r = Reader::new(buf, "session")?;
    let last_seen_ms = r.u64()?;
    let expiry_ms = r.opt_u64()?;
    let count = r.u32()?;
    // Each subscription takes at least 6 bytes: a count past what is left is damage, and must
    // not reserve memory.
    let mut subscriptions = Vec::with_capacity((count as usize).min(buf.len() / 6));
    for _ in 0..count {
        let filter = r.str()?;
        let byte = r.u8()?;
        let options = options_from_byte(&r, byte)?;
        let subscription_id = r.opt_u32()?;
        subscriptions.push(SubscriptionRecord {
            filter,
            options,
            subscription_id,
        });
    }
    let will = match r.u8()? {
        WILL_NONE => None,
        kind @ (WILL_WITHOUT_OWNER | WILL_WITH_OWNER) => {
            let topic = r.str()?;
            let qos = r.qos()?;
            let retain = r.bool()?;
            let properties = r.bytes()?;
            let payload = r.bytes()?;
            let owner = if kind == WILL_WITH_OWNER {
                Some(WillOwner {
                    user: r.str()?,
                    anonymous: r.bool()?,
                })
            } else {
                None
            };
            Some(WillRecord {
                topic,
                payload,
                qos,
                retain,
                properties,
                owner,
            })
        }
        other => return Err(r.error(format!("invalid will marker {other}"))),
    };
    let mqtt5 = !r.at_end() && r.bool()?;
    r.finish(SessionRecord {
        subscriptions,
        will,
        expiry_ms,
        last_seen_ms,
        mqtt5,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_queue_entry(buf: &Bytes) -> Result<QueueEntry, DecodeError> {
        decode_queue_record(buf).map(|record| record.entry)
    }

    fn message() -> StoredMessage {
        StoredMessage {
            topic: Arc::from("a/b"),
            payload: Bytes::from_static(b"\x00\xffpayload"),
            qos: QoS::ExactlyOnce,
            retain: true,
            properties: Bytes::from_static(b"\x01\x02"),
        }
    }

    #[test]
    fn records_round_trip() {
        let m = message();
        assert_eq!(
            decode_message(&Bytes::from(encode_message(&m))).expect("m"),
            m
        );
        assert_eq!(encoded_message_len(&m), encode_message(&m).len() as u64);
        for state in [
            QueueState::Queued,
            QueueState::Sent { packet_id: 65535 },
            QueueState::Released { packet_id: 1 },
        ] {
            for subscription_id in [None, Some(268_435_455)] {
                let e = QueueEntry {
                    message_id: u64::MAX,
                    qos: QoS::AtLeastOnce,
                    retain: true,
                    subscription_id,
                    state,
                };
                let back = decode_queue_entry(&Bytes::from(encode_queue_entry(&e))).expect("e");
                assert_eq!(back, e);
                let body = encode_message(&m);
                let with_body = encode_queue_entry_with_body(&e, &body);
                assert_eq!(encode_queue_entry_with_message(&e, &m), with_body);
                let back = decode_queue_record(&Bytes::from(with_body)).expect("entry + body");
                assert_eq!(back.entry, e);
                let carried = back.body.expect("carried body");
                assert_eq!(&carried[..], &body[..]);
                assert_eq!(decode_message(&carried).expect("carried message"), m);
            }
        }
        let s = SessionRecord {
            subscriptions: vec![SubscriptionRecord {
                filter: Arc::from("x/+/#"),
                options: SubscriptionOptions {
                    qos: QoS::ExactlyOnce,
                    no_local: true,
                    retain_as_published: true,
                    retain_handling: RetainHandling::DoNotSend,
                },
                subscription_id: Some(268_435_455),
            }],
            will: Some(WillRecord {
                topic: Arc::from("will"),
                payload: Bytes::from_static(b"bye"),
                qos: QoS::AtLeastOnce,
                retain: true,
                properties: Bytes::new(),
                owner: Some(WillOwner {
                    user: Arc::from("alice"),
                    anonymous: false,
                }),
            }),
            expiry_ms: Some(7),
            last_seen_ms: 1_700_000_000_000,
            mqtt5: true,
        };
        assert_eq!(
            decode_session(&Bytes::from(encode_session(&s))).expect("s"),
            s
        );
    }

    #[test]
    fn records_of_the_layout_before_trailing_fields_still_decode() {
        // A queue entry as written before subscription identifiers were kept.
        let mut w = Writer::new(16);
        w.u64(3);
        w.u8(1);
        w.u8(0);
        w.u8(1);
        w.u16(9);
        let entry = decode_queue_entry(&Bytes::from(w.0)).expect("old entry");
        assert_eq!(entry.subscription_id, None);
        assert_eq!(entry.state, QueueState::Sent { packet_id: 9 });
        // A session record without the protocol flag: one subscription, no will.
        let mut w = Writer::new(32);
        w.u64(5);
        w.opt_u64(None);
        w.u32(1);
        w.bytes(b"a/#");
        w.u8(1);
        w.opt_u32(None);
        w.u8(0);
        let session = decode_session(&Bytes::from(w.0)).expect("old session");
        assert!(!session.mqtt5);
        assert_eq!(session.subscriptions.len(), 1);
    }

    #[test]
    fn a_will_record_of_the_format_before_owners_still_decodes() {
        // Written by hand in the old layout: no subscriptions, will marker 1, no owner after
        // the payload.
        let mut w = Writer::new(32);
        w.u64(5);
        w.opt_u64(None);
        w.u32(0);
        w.u8(1);
        w.bytes(b"will/t");
        w.u8(2);
        w.u8(0);
        w.bytes(b"");
        w.bytes(b"bye");
        let old = Bytes::from(w.0);
        let decoded = decode_session(&old).expect("old record");
        let will = decoded.will.clone().expect("will");
        assert_eq!((&*will.topic, &will.payload[..]), ("will/t", &b"bye"[..]));
        assert_eq!(will.qos, QoS::ExactlyOnce);
        assert_eq!(will.owner, None);
        assert_eq!(
            encode_session(&decoded),
            old.to_vec(),
            "no owner: the old layout"
        );
    }

    #[test]
    fn every_truncation_and_bit_flip_is_an_error_or_a_value_never_a_panic() {
        let encoded = encode_message(&message());
        for cut in 0..encoded.len() {
            let err = decode_message(&Bytes::copy_from_slice(&encoded[..cut]));
            assert!(err.is_err(), "truncated at {cut} must not decode");
        }
        let entry = QueueEntry {
            message_id: 7,
            qos: QoS::AtLeastOnce,
            retain: false,
            subscription_id: Some(3),
            state: QueueState::Sent { packet_id: 2 },
        };
        let carried = encode_queue_entry_with_body(&entry, &encoded);
        for cut in 0..carried.len() {
            let err = decode_queue_record(&Bytes::copy_from_slice(&carried[..cut]));
            assert!(
                err.is_err(),
                "entry with body truncated at {cut} must not decode"
            );
        }
        for i in 0..carried.len() {
            for bit in 0..8 {
                let mut damaged = carried.clone();
                damaged[i] ^= 1 << bit;
                if let Ok(record) = decode_queue_record(&Bytes::from(damaged)) {
                    let _ = record.body.map(|body| decode_message(&body));
                }
            }
        }
        let session = encode_session(&SessionRecord::default());
        for i in 0..session.len() {
            for bit in 0..8 {
                let mut damaged = session.clone();
                damaged[i] ^= 1 << bit;
                let _ = decode_session(&Bytes::from(damaged));
            }
        }
    }

    #[test]
    fn unknown_version_is_reported() {
        let mut encoded = encode_queue_entry(&QueueEntry {
            message_id: 1,
            qos: QoS::AtLeastOnce,
            retain: false,
            subscription_id: None,
            state: QueueState::Queued,
        });
        encoded[0] = 9;
        let err = decode_queue_entry(&Bytes::from(encoded)).expect_err("version");
        assert!(err.to_string().contains("format version 9"), "{err}");
    }
}
