//! The delivery latency histogram: from a publish being received (MQTT PUBLISH, STOMP SEND,
//! queue send) to its PUBLISH or MESSAGE being written to a subscriber's output buffer.
//!
//! A timestamp per message would cost a clock read per publish and memory per queued message,
//! so only 1 publish in [`SAMPLE_EVERY`] (per QoS, counted by the `messages_in` counter the
//! publish bumps anyway) reads the clock. The time goes into the message's padding as a
//! [`SampleStamp`], so [`crate::broker::message::Message`] stays 64 bytes; every delivery of a
//! stamped message (each subscriber, one observation each) reads the clock once more and
//! records here. Retransmissions (MQTT DUP, STOMP `redelivered`) are not recorded again, and
//! messages read back from a store carry no stamp.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::histogram::{Buckets, Histogram, HistogramSnapshot};

/// One publish in this many (per QoS) is sampled.
pub const SAMPLE_EVERY: u64 = 64;

/// Buckets of [`DeliveryLatency`]: 50 µs to 60 s (a message queued for an offline session
/// can wait long; above goes to `+Inf`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryBuckets;

impl Buckets for DeliveryBuckets {
    const SECONDS: &'static [f64] = &[
        0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
        1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    ];
}

/// When a sampled message was received: microseconds since the process's first sample, plus
/// one, as a 48-bit number (8.9 years); 0 for a message not sampled. Six bytes with
/// alignment 1, so it fits in the padding of [`crate::broker::message::Message`].
///
/// A measurement, not part of the message: every stamp compares equal to every other, so
/// messages compare as they did without it (a message read back from a store, which has
/// none, equals the one written).
#[derive(Debug, Clone, Copy, Default)]
pub struct SampleStamp([u8; 6]);

impl PartialEq for SampleStamp {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for SampleStamp {}

/// The process's time origin for stamps.
fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

/// Microseconds from [`origin`] to `at`, plus one (so no stamp is 0), within 48 bits.
fn micros_since_origin(at: Instant) -> u64 {
    let micros =
        u64::try_from(at.saturating_duration_since(origin()).as_micros()).unwrap_or(u64::MAX);
    micros.saturating_add(1).min((1 << 48) - 1)
}

impl SampleStamp {
    /// Not sampled.
    pub const NONE: SampleStamp = SampleStamp([0; 6]);

    /// The stamp of a publish whose `messages_in` count (for its QoS) just became `total`:
    /// the time now for one in [`SAMPLE_EVERY`], else [`SampleStamp::NONE`] (no clock read).
    #[inline]
    pub fn for_publish(total: u64) -> SampleStamp {
        if total.is_multiple_of(SAMPLE_EVERY) {
            SampleStamp::at(Instant::now())
        } else {
            SampleStamp::NONE
        }
    }

    /// A stamp for `at`.
    pub fn at(at: Instant) -> SampleStamp {
        let bytes = micros_since_origin(at).to_le_bytes();
        SampleStamp([bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5]])
    }

    /// Whether the message was sampled.
    #[inline]
    pub fn is_sampled(self) -> bool {
        self.0 != [0; 6]
    }

    fn micros(self) -> u64 {
        let b = self.0;
        u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], 0, 0])
    }

    /// Time from the stamp to `now` (zero for a stamp after `now`); `None` when not sampled.
    pub fn elapsed_at(self, now: Instant) -> Option<Duration> {
        self.is_sampled()
            .then(|| Duration::from_micros(micros_since_origin(now).saturating_sub(self.micros())))
    }
}

/// Delivery latency observations, per protocol of the subscriber.
#[derive(Debug, Default)]
pub struct DeliveryLatency {
    mqtt: Histogram<DeliveryBuckets>,
    stomp: Histogram<DeliveryBuckets>,
}

/// The subscriber's protocol, for [`DeliveryLatency::record`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveredBy {
    Mqtt,
    Stomp,
}

impl DeliveryLatency {
    /// A first delivery of a message stamped `stamp` was just written (a clock read only when
    /// it was sampled).
    #[inline]
    pub fn record(&self, protocol: DeliveredBy, stamp: SampleStamp) {
        if !stamp.is_sampled() {
            return;
        }
        if let Some(elapsed) = stamp.elapsed_at(Instant::now()) {
            self.histogram(protocol).observe(elapsed);
        }
    }

    fn histogram(&self, protocol: DeliveredBy) -> &Histogram<DeliveryBuckets> {
        match protocol {
            DeliveredBy::Mqtt => &self.mqtt,
            DeliveredBy::Stomp => &self.stomp,
        }
    }

    /// What was observed for `protocol`.
    pub fn snapshot(&self, protocol: DeliveredBy) -> HistogramSnapshot<DeliveryBuckets> {
        self.histogram(protocol).snapshot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::message::Message;

    #[test]
    fn the_stamp_fits_in_the_padding_of_a_message() {
        assert_eq!(std::mem::size_of::<SampleStamp>(), 6);
        assert_eq!(std::mem::align_of::<SampleStamp>(), 1);
        assert_eq!(std::mem::size_of::<Message>(), 64);
    }

    #[test]
    fn one_publish_in_sample_every_reads_the_clock() {
        let sampled = (1..=640)
            .filter(|&total| SampleStamp::for_publish(total).is_sampled())
            .count();
        assert_eq!(sampled, 10);
        assert!(!SampleStamp::NONE.is_sampled());
    }

    #[test]
    fn a_stamp_measures_the_time_to_now_in_microseconds() {
        let _ = SampleStamp::at(Instant::now()); // the origin, for whole microseconds below
        let start = Instant::now();
        let stamp = SampleStamp::at(start);
        assert!(stamp.is_sampled(), "even at the origin a stamp is not 0");
        let later = start + Duration::from_millis(1500);
        assert_eq!(stamp.elapsed_at(later), Some(Duration::from_millis(1500)));
        assert_eq!(
            stamp.elapsed_at(start - Duration::from_millis(1)),
            Some(Duration::ZERO)
        );
        assert_eq!(SampleStamp::NONE.elapsed_at(later), None);
    }

    #[test]
    fn only_sampled_deliveries_are_recorded_per_protocol() {
        let latency = DeliveryLatency::default();
        latency.record(DeliveredBy::Mqtt, SampleStamp::NONE);
        latency.record(DeliveredBy::Stomp, SampleStamp::at(Instant::now()));
        assert_eq!(latency.snapshot(DeliveredBy::Mqtt).count(), 0);
        assert_eq!(latency.snapshot(DeliveredBy::Stomp).count(), 1);
    }
}
