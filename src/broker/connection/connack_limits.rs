//! The limits an MQTT 5 CONNACK states or obeys: the Maximum Packet Size the broker enforces
//! on this listener (3.2.2.3.6), the Session Expiry Interval it really applies when it is not
//! the client's (3.2.2.3.2), and the client's own Maximum Packet Size, which the CONNACK itself
//! must respect (3.1.2-24).

use std::time::Duration;

use bytes::BytesMut;

use crate::protocol::{encode, ConnAck, ConnectReason, Packet, Properties, ProtocolVersion};

/// The largest Remaining Length the protocol can express (MQTT 5 1.5.5): a listener limit at
/// or above it limits nothing, and no Maximum Packet Size is announced.
const PROTOCOL_MAX_REMAINING_LENGTH: usize = 268_435_455;

/// The Maximum Packet Size (whole packet, bytes) equivalent to `max_remaining`, the limit the
/// codec enforces on a packet's Remaining Length (`wireFormat.maxFrameSize`): the fixed header
/// (1 byte + the Remaining Length's own encoding) plus `max_remaining`. A packet fits this
/// size exactly when its Remaining Length fits `max_remaining` (a longer Remaining Length
/// never has a shorter encoding). `None` when the listener enforces no more than the protocol.
pub(super) fn announced_maximum_packet_size(max_remaining: usize) -> Option<u32> {
    if max_remaining >= PROTOCOL_MAX_REMAINING_LENGTH {
        return None;
    }
    let length_bytes = match max_remaining {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    };
    u32::try_from(1 + length_bytes + max_remaining).ok()
}

/// The Session Expiry Interval (seconds) to put in CONNACK when the broker applies another
/// than the client's `requested` one (absent = 0, MQTT 5 3.1.2.11.2): `cap` is the broker-wide
/// `offlineDurableSubscriberTimeout`, after which any offline session is removed. Whole
/// seconds, rounded down: the session is kept at least that long. `None`: the client's value
/// stands and CONNACK leaves the property out (3.2.2.3.2).
pub(super) fn granted_session_expiry(requested: Option<u32>, cap: Option<Duration>) -> Option<u32> {
    let requested = requested.unwrap_or(0);
    let cap_secs = u32::try_from(cap?.as_secs()).unwrap_or(u32::MAX - 1);
    // 0xFFFFFFFF (never expires) is capped like any other interval above the cap.
    (requested > cap_secs).then_some(cap_secs)
}

/// Make an MQTT 5 CONNACK (Success) with `properties` fit the client's Maximum Packet Size `max`
/// (whole packet, bytes; MQTT 5 3.1.2-24), leaving out what may go: Reason String and User
/// Properties (3.2.2-19, 3.2.2-20), the Response Information the server may always withhold
/// (3.1.2.11.6), then the "available" flags whose absence means the same (3.2.2.3.5,
/// 3.2.2.3.11-13). Returns the encoded size when it still does not fit: the caller then
/// closes the connection without CONNACK (no smaller CONNACK says the same).
pub(super) fn fit_connack(properties: &mut Properties, max: Option<usize>) -> Result<(), usize> {
    let Some(max) = max else {
        return Ok(());
    };
    let size = connack_size;
    if size(properties) <= max {
        return Ok(());
    }
    properties.reason_string = None;
    properties.user_properties = Vec::new();
    properties.response_information = None;
    if size(properties) <= max {
        return Ok(());
    }
    for flag in [
        &mut properties.retain_available,
        &mut properties.wildcard_subscription_available,
        &mut properties.subscription_identifier_available,
        &mut properties.shared_subscription_available,
    ] {
        if *flag == Some(1) {
            *flag = None;
        }
    }
    match size(properties) {
        fits if fits <= max => Ok(()),
        too_large => Err(too_large),
    }
}

/// Encoded size of an MQTT 5 CONNACK carrying `properties` (the flags and reason code have
/// a fixed size).
fn connack_size(properties: &Properties) -> usize {
    let packet = connack_with(properties.clone());
    let mut out = BytesMut::new();
    match encode(&packet, ProtocolVersion::V5, &mut out) {
        Ok(_) => out.len(),
        // Unencodable: nothing fits.
        Err(_) => usize::MAX,
    }
}

fn connack_with(properties: Properties) -> Packet {
    Packet::ConnAck(ConnAck {
        session_present: false,
        reason: ConnectReason::Success,
        properties: Some(Box::new(properties)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announced_size_accepts_exactly_the_remaining_lengths_the_codec_accepts() {
        assert_eq!(announced_maximum_packet_size(268_435_456), None);
        assert_eq!(announced_maximum_packet_size(268_435_455), None);
        assert_eq!(announced_maximum_packet_size(127), Some(129));
        assert_eq!(announced_maximum_packet_size(128), Some(131));
        assert_eq!(announced_maximum_packet_size(1000), Some(1003));
        assert_eq!(announced_maximum_packet_size(16_384), Some(16_388));
        assert_eq!(announced_maximum_packet_size(2_097_152), Some(2_097_157));
    }

    #[test]
    fn session_expiry_is_announced_only_when_capped() {
        let cap = Some(Duration::from_millis(5_500));
        assert_eq!(granted_session_expiry(Some(3600), cap), Some(5));
        assert_eq!(granted_session_expiry(Some(u32::MAX), cap), Some(5));
        assert_eq!(granted_session_expiry(Some(5), cap), None);
        assert_eq!(granted_session_expiry(Some(0), cap), None);
        assert_eq!(granted_session_expiry(None, cap), None);
        assert_eq!(granted_session_expiry(Some(u32::MAX), None), None);
    }

    #[test]
    fn optional_properties_go_first_and_a_hopeless_connack_is_refused() {
        let full = Properties {
            receive_maximum: Some(100),
            retain_available: Some(1),
            wildcard_subscription_available: Some(1),
            reason_string: Some("a long diagnostic text".into()),
            response_information: Some("reply/client/".into()),
            ..Properties::default()
        };
        let mut untouched = full.clone();
        assert_eq!(fit_connack(&mut untouched, None), Ok(()));
        assert_eq!(untouched, full);

        let mut fitted = full.clone();
        assert_eq!(fit_connack(&mut fitted, Some(16)), Ok(()));
        assert_eq!(fitted.reason_string, None);
        assert_eq!(fitted.response_information, None);
        assert_eq!(fitted.retain_available, Some(1), "kept while it fits");
        assert!(connack_size(&fitted) <= 16);

        let mut smaller = full.clone();
        assert_eq!(fit_connack(&mut smaller, Some(9)), Ok(()));
        assert_eq!(smaller.retain_available, None);
        assert_eq!(smaller.receive_maximum, Some(100), "never dropped");
        assert_eq!(connack_size(&smaller), 8);

        let mut hopeless = full;
        assert_eq!(fit_connack(&mut hopeless, Some(7)), Err(8));
    }
}
