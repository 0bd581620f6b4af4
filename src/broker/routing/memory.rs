//! The `systemUsage/memoryUsage` limit: how many bytes of messages the broker holds in memory
//! (session queues, in-flight windows, retained messages, bodies waiting for the store).
//!
//! Each message body is charged ONCE, however many sessions it fans out to: its payload is
//! wrapped ([`bytes::Bytes::from_owner`]) around a `Charge` that holds the bytes on a shared
//! [`MemoryGauge`], and every copy of the message shares that one owner. The charge is released
//! when the last reference goes (delivered and acknowledged, dropped by a full queue, expired
//! session, replaced retained message...), so no exit path has to remember to release it.
//!
//! What an MQTT connection receives is charged per read instead ([`MemoryGauge::receive`]):
//! the complete packets of one read (at most [`READ_GROUP_BYTES`] of them, or one larger
//! packet alone) are copied into one allocation of their exact size, every message decoded
//! from it is a slice of it, and each message admitted adds its share to the read's one
//! charge. A message then keeps its read in memory, not the socket buffer of 8 KiB or more
//! that a slice of the read buffer would hold (a retained message published alone would hold
//! one such buffer), and a publisher's messages cost a few allocations per read rather than
//! one per message. Once the read is handled, its bytes that are no admitted message's payload
//! (headers, topics, packets refused or not published) are charged too ([`Received::settle`]):
//! they stay in memory as long as one of its messages does (queued for an offline session),
//! so the gauge counts them; a read whose messages are all gone releases them at once.
//!
//! A limit of 0 is no limit, as in ActiveMQ (`Usage.caclPercentUsage` answers 0 % for a limit
//! of 0, so the usage is never full): `limit="0"` and a `<memoryUsage>` left without one.
//!
//! When usage reaches the limit, new QoS 1/2 publishes are refused like a full store (not
//! acknowledged; the client re-sends them later) and QoS 0 publishes are dropped. ActiveMQ
//! blocks the producer instead; a refusal keeps the connection's other traffic (acks that free
//! memory) flowing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;

use crate::broker::message::Message;

/// ActiveMQ's `BrokerService` default when no `memoryUsage` is configured: 1 GB. (Its shipped
/// activemq.xml says `percentOfJvmHeap="70"` of the launcher's default `-Xmx1G`, about 700 MB;
/// ferromq has no JVM heap, so a file written that way gets this default; see docs.)
pub const DEFAULT_MEMORY_LIMIT_BYTES: u64 = 1 << 30;

/// Bytes charged per message on top of its topic, payload and properties: the message value,
/// its queue slot and reference counts, rounded up.
pub const MESSAGE_OVERHEAD_BYTES: u64 = 128;

/// The most bytes of packets taken as one read ([`MemoryGauge::receive`]); a larger packet
/// comes alone. Bounds what one small message kept from a read keeps of its neighbours (a
/// large refused PUBLISH next to it is never in the same allocation). A socket read is
/// 8 KiB, so a busy publisher's reads are not split.
pub const READ_GROUP_BYTES: usize = 16 * 1024;

/// Bytes of messages held in memory, against the configured limit. Shared by every charge.
#[derive(Debug)]
pub struct MemoryGauge {
    used_bytes: AtomicU64,
    /// 0: no limit.
    limit_bytes: AtomicU64,
}

impl MemoryGauge {
    /// A gauge of `limit_bytes`; 0 is no limit.
    pub fn new(limit_bytes: u64) -> Arc<MemoryGauge> {
        Arc::new(MemoryGauge {
            used_bytes: AtomicU64::new(0),
            limit_bytes: AtomicU64::new(limit_bytes),
        })
    }

    /// From the configured `memoryUsage` limit (0: none), else [`DEFAULT_MEMORY_LIMIT_BYTES`].
    pub fn from_limit(configured_bytes: Option<u64>) -> Arc<MemoryGauge> {
        Self::new(configured_bytes.unwrap_or(DEFAULT_MEMORY_LIMIT_BYTES))
    }

    pub fn used_bytes(&self) -> u64 {
        self.used_bytes.load(Ordering::Relaxed)
    }

    /// The limit; `None`: there is none.
    pub fn limit_bytes(&self) -> Option<u64> {
        match self.limit_bytes.load(Ordering::Relaxed) {
            0 => None,
            limit => Some(limit),
        }
    }

    /// A reloaded limit (0: none): applies to the next publish (what is held stays held).
    pub fn set_limit_bytes(&self, limit_bytes: u64) {
        self.limit_bytes.store(limit_bytes, Ordering::Relaxed);
    }

    /// Usage has reached the limit: new messages are refused until some are released. Never
    /// without a limit.
    pub fn is_full(&self) -> bool {
        self.limit_bytes()
            .is_some_and(|limit| self.used_bytes() >= limit)
    }

    /// Usage has reached half the limit: where kept messages start being held by the store
    /// only (paged), so that the other half stays for what must be in memory (messages in
    /// flight, pages read back, non-persistent messages). Never without a limit.
    pub fn is_half_full(&self) -> bool {
        self.limit_bytes()
            .is_some_and(|limit| self.used_bytes() >= limit / 2)
    }

    /// Whether `more` bytes on top of `held` would be over the limit (a transaction that could
    /// never be kept); never without a limit.
    pub fn exceeds_limit(&self, held: u64, more: u64) -> bool {
        self.limit_bytes()
            .is_some_and(|limit| held.saturating_add(more) > limit)
    }

    /// `message` with its payload charged to this gauge until its last copy is dropped.
    /// Charge a message once, where it enters the broker: every clone shares the charge.
    pub fn charge(self: &Arc<Self>, message: Message) -> Message {
        let charge = Charge {
            _held: self.hold(share_of(&message)),
            payload: message.payload,
        };
        Message {
            payload: Bytes::from_owner(charge),
            ..message
        }
    }

    /// `bytes` charged until the returned value is dropped (a message's charge, the SENDs of
    /// an open STOMP transaction); [`HeldBytes::add`] charges more.
    pub fn hold(self: &Arc<Self>, bytes: u64) -> HeldBytes {
        self.used_bytes.fetch_add(bytes, Ordering::Relaxed);
        HeldBytes {
            gauge: self.clone(),
            bytes,
        }
    }

    /// `message` in an allocation and a charge of its own: for a message kept until replaced
    /// (a retained one), which must not keep alive the read its payload is a slice of, nor so
    /// the charge of that read's other messages (they would stay charged after delivery, and
    /// one retained message could hold the gauge at its limit for good).
    pub fn kept_apart(self: &Arc<Self>, message: &Message) -> Message {
        self.charge(message.detached())
    }

    /// `received`, the complete packets of one read, copied into one allocation of its exact
    /// size: packets decoded from [`Received::bytes`] (`decode_frozen`) are slices of it.
    /// Nothing is charged yet; each message admitted from it adds its share to
    /// [`Received::charge`] ([`crate::broker::runtime::BrokerCore::admit`] with
    /// [`Body::Received`]), released together when the last slice of the read is dropped.
    pub fn receive(self: &Arc<Self>, received: &[u8]) -> Received {
        let charge = Arc::new(ReceivedCharge {
            gauge: self.clone(),
            charged_bytes: AtomicU64::new(0),
            payload_bytes: AtomicU64::new(0),
        });
        let bytes = Bytes::from_owner(ReceivedBytes {
            bytes: received.to_vec(),
            _charge: charge.clone(),
        });
        Received {
            bytes,
            charge,
            taken_bytes: received.len(),
        }
    }
}

/// Bytes charged by [`MemoryGauge::hold`], released when dropped.
#[derive(Debug)]
pub struct HeldBytes {
    gauge: Arc<MemoryGauge>,
    bytes: u64,
}

impl HeldBytes {
    /// Charge `bytes` more.
    pub fn add(&mut self, bytes: u64) {
        self.bytes += bytes;
        self.gauge.used_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// What is held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for HeldBytes {
    fn drop(&mut self) {
        self.gauge
            .used_bytes
            .fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// One read of a connection ([`MemoryGauge::receive`]).
#[derive(Debug)]
pub struct Received {
    /// The read's packets; every slice of them holds the charge.
    pub bytes: Bytes,
    /// What the messages admitted from it are charged.
    pub charge: Arc<ReceivedCharge>,
    /// Its length when received (`bytes` shrinks as packets are decoded from its front).
    taken_bytes: usize,
}

impl Received {
    /// The read is handled but for its last `bytes.len()` bytes (given back to the
    /// connection's buffer after a pause): charge its handled bytes that are not an admitted
    /// message's payload, held until its last slice goes like the rest of its charge.
    pub fn settle(&self) {
        if self.charge.charged_bytes.load(Ordering::Relaxed) == 0 {
            // Nothing admitted from it (acknowledgements, a subscribe...): no message keeps a
            // slice of it (retained messages and publishes held for room are copies), so it
            // goes as soon as it is handled. Spares the shared gauge two updates per read.
            return;
        }
        let handled = (self.taken_bytes - self.bytes.len()) as u64;
        let payload = self.charge.payload_bytes.load(Ordering::Relaxed);
        let rest = handled.saturating_sub(payload);
        self.charge.charged_bytes.fetch_add(rest, Ordering::Relaxed);
        self.charge
            .gauge
            .used_bytes
            .fetch_add(rest, Ordering::Relaxed);
    }
}

/// The charge of one read: the sum of its admitted messages' shares (topic, payload and
/// [`MESSAGE_OVERHEAD_BYTES`] each, as [`MemoryGauge::charge`] charges a message) and its
/// other bytes ([`Received::settle`]), released from the gauge when the last slice of the
/// read is dropped.
#[derive(Debug)]
pub struct ReceivedCharge {
    gauge: Arc<MemoryGauge>,
    charged_bytes: AtomicU64,
    /// Bytes of the read that are admitted messages' payloads (charged in their shares).
    payload_bytes: AtomicU64,
}

impl ReceivedCharge {
    /// Charge `message`, whose payload is a slice of this read, as admitted.
    pub fn add(&self, message: &Message) {
        let bytes = share_of(message);
        self.charged_bytes.fetch_add(bytes, Ordering::Relaxed);
        // Its correlation data is a slice of the read too, and charged in its share.
        let correlation = message
            .v5
            .as_ref()
            .and_then(|v5| v5.properties.correlation_data.as_ref())
            .map_or(0, |data| data.len());
        self.payload_bytes.fetch_add(
            (message.payload.len() + correlation) as u64,
            Ordering::Relaxed,
        );
        self.gauge.used_bytes.fetch_add(bytes, Ordering::Relaxed);
    }
}

impl Drop for ReceivedCharge {
    fn drop(&mut self) {
        self.gauge
            .used_bytes
            .fetch_sub(*self.charged_bytes.get_mut(), Ordering::Relaxed);
    }
}

/// The owner of a read's bytes: holds its charge until the last slice is dropped.
struct ReceivedBytes {
    bytes: Vec<u8>,
    _charge: Arc<ReceivedCharge>,
}

impl AsRef<[u8]> for ReceivedBytes {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

/// What a message is charged: its topic, its payload, its MQTT 5 properties (user properties,
/// correlation data... and the struct holding them) and [`MESSAGE_OVERHEAD_BYTES`].
fn share_of(message: &Message) -> u64 {
    let properties = message.v5.as_ref().map_or(0, |v5| {
        std::mem::size_of::<crate::broker::message::V5Extras>() + v5.properties.heap_bytes()
    });
    (message.topic.len() + message.payload.len() + properties) as u64 + MESSAGE_OVERHEAD_BYTES
}

/// Whether a message entering the broker is charged to the gauge already, and how.
#[derive(Debug, Clone, Copy)]
pub enum Body<'a> {
    /// Its payload is a slice of this read ([`MemoryGauge::receive`]): admission adds its
    /// share to the read's charge.
    Received(&'a ReceivedCharge),
    /// Not charged yet: admission charges it on its own ([`MemoryGauge::charge`]).
    Uncharged,
}

/// The owner of a charged payload: releases its bytes from the gauge (its [`HeldBytes`]) when
/// the last `Bytes` sharing it is dropped.
struct Charge {
    payload: Bytes,
    _held: HeldBytes,
}

impl AsRef<[u8]> for Charge {
    fn as_ref(&self) -> &[u8] {
        &self.payload
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::message::SampleStamp;
    use crate::protocol::QoS;

    fn message(topic: &str, payload: &[u8]) -> Message {
        Message {
            stamp: SampleStamp::NONE,
            topic: Arc::from(topic),
            payload: Bytes::copy_from_slice(payload),
            qos: QoS::AtLeastOnce,
            retain: false,
            v5: None,
        }
    }

    #[test]
    fn a_read_is_charged_for_its_admitted_messages_until_its_last_slice_goes() {
        let gauge = MemoryGauge::new(10_000);
        let mut read = vec![0u8; 100];
        read[10] = 7;
        let received = gauge.receive(&read);
        assert_eq!(gauge.used_bytes(), 0, "nothing admitted yet");
        let first = received.bytes.slice(0..40);
        let second = received.bytes.slice(40..100);
        assert_eq!(first[10], 7, "the slices are the read's bytes");
        let admitted = |payload: &Bytes| Message {
            payload: payload.clone(),
            ..message("t", b"")
        };
        received.charge.add(&admitted(&first));
        received.charge.add(&admitted(&second));
        let expected = 1 + 40 + 1 + 60 + 2 * MESSAGE_OVERHEAD_BYTES;
        assert_eq!(gauge.used_bytes(), expected);
        drop(received);
        drop(first);
        assert_eq!(
            gauge.used_bytes(),
            expected,
            "a message still holds the read"
        );
        drop(second);
        assert_eq!(gauge.used_bytes(), 0);
    }

    #[test]
    fn a_settled_read_is_charged_for_its_handled_bytes_that_are_no_admitted_payload() {
        let gauge = MemoryGauge::new(10_000);
        let mut received = gauge.receive(&[0u8; 100]);
        let kept = received.bytes.split_to(40).slice(30..40);
        received.charge.add(&Message {
            payload: kept.clone(),
            ..message("t", b"")
        });
        let _paused_here = received.bytes.split_to(20);
        // 60 handled, 10 of them an admitted payload; 40 go back to the connection's buffer.
        received.settle();
        let share = 1 + 10 + MESSAGE_OVERHEAD_BYTES;
        assert_eq!(gauge.used_bytes(), share + 50);
        drop((received, _paused_here));
        assert_eq!(
            gauge.used_bytes(),
            share + 50,
            "the kept payload holds the read"
        );
        drop(kept);
        assert_eq!(gauge.used_bytes(), 0);
    }

    #[test]
    fn a_copy_kept_apart_frees_its_read_and_the_read_s_other_charges() {
        let gauge = MemoryGauge::new(10_000);
        let received = gauge.receive(&[0u8; 1_000]);
        let admitted = |payload: Bytes| Message {
            payload,
            ..message("t", b"")
        };
        let big = admitted(received.bytes.slice(0..990));
        let small = admitted(received.bytes.slice(990..1_000));
        received.charge.add(&big);
        received.charge.add(&small);
        let kept = gauge.kept_apart(&small);
        drop((received, big, small));
        assert_eq!(
            gauge.used_bytes(),
            1 + 10 + MESSAGE_OVERHEAD_BYTES,
            "only the copy"
        );
        assert_eq!(kept.payload.len(), 10);
        drop(kept);
        assert_eq!(gauge.used_bytes(), 0);
    }

    #[test]
    fn a_fanned_out_message_is_charged_once_and_released_with_its_last_copy() {
        let gauge = MemoryGauge::new(10_000);
        let charged = gauge.charge(message("a/b", b"hello"));
        assert_eq!(&charged.payload[..], b"hello");
        let expected = 3 + 5 + MESSAGE_OVERHEAD_BYTES;
        assert_eq!(gauge.used_bytes(), expected);
        let copies: Vec<Message> = (0..10).map(|_| charged.clone()).collect();
        let slice = charged.payload.slice(1..3);
        assert_eq!(gauge.used_bytes(), expected);
        drop(charged);
        drop(copies);
        assert_eq!(gauge.used_bytes(), expected, "a slice still holds the body");
        drop(slice);
        assert_eq!(gauge.used_bytes(), 0);
    }

    #[test]
    fn a_message_is_charged_for_its_mqtt5_properties_too() {
        let gauge = MemoryGauge::new(1 << 20);
        let properties = crate::protocol::Properties {
            user_properties: vec![("k".into(), "v".repeat(10_000))],
            correlation_data: Some(Bytes::from(vec![0; 5_000])),
            ..Default::default()
        };
        let with_properties = Message {
            v5: Some(Arc::new(crate::broker::message::V5Extras {
                properties,
                expires_at: None,
            })),
            ..message("t", b"p")
        };
        let charged = gauge.charge(with_properties);
        assert!(gauge.used_bytes() > 15_000, "{}", gauge.used_bytes());
        drop(charged);
        assert_eq!(gauge.used_bytes(), 0);
    }

    #[test]
    fn held_bytes_are_charged_until_dropped() {
        let gauge = MemoryGauge::new(1_000);
        let mut held = gauge.hold(100);
        held.add(50);
        assert_eq!((gauge.used_bytes(), held.bytes()), (150, 150));
        drop(held);
        assert_eq!(gauge.used_bytes(), 0);
    }

    #[test]
    fn full_at_the_limit_and_free_again_when_released() {
        let gauge = MemoryGauge::new(2 * (1 + 10 + MESSAGE_OVERHEAD_BYTES));
        let first = gauge.charge(message("t", &[0; 10]));
        assert!(!gauge.is_full());
        let second = gauge.charge(message("t", &[0; 10]));
        assert!(gauge.is_full());
        drop(first);
        assert!(!gauge.is_full());
        gauge.set_limit_bytes(1);
        assert!(gauge.is_full(), "a lowered limit applies at once");
        drop(second);
        assert_eq!(gauge.used_bytes(), 0);
        assert!(
            !gauge.is_full(),
            "nothing held: the next message is admitted"
        );
    }

    /// ActiveMQ's `Usage` counts 0 % of a limit of 0: never full.
    #[test]
    fn a_limit_of_0_is_no_limit() {
        let gauge = MemoryGauge::new(0);
        assert!(!gauge.is_full(), "empty");
        let held = gauge.charge(message("t", &[0; 10]));
        assert!(!gauge.is_full(), "something held");
        assert_eq!(gauge.limit_bytes(), None);
        assert!(!gauge.exceeds_limit(u64::MAX, 1));
        gauge.set_limit_bytes(1);
        assert!(gauge.is_full(), "a limit set by a reload applies");
        gauge.set_limit_bytes(0);
        assert!(!gauge.is_full(), "and 0 lifts it");
        drop(held);
    }
}
