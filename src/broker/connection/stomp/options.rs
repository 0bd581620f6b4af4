//! What a STOMP connection takes from its connector: the codec's limits and the heart-beat
//! terms (`config::StompOptions`, ActiveMQ 5.17's option names and defaults).

use crate::broker::connection::ListenerSettings;
use crate::config::stomp_options::{
    STOMP_MAX_COMMAND_BYTES, STOMP_MAX_HEADERS, STOMP_MAX_HEADER_LINE_BYTES,
};
use crate::protocol::stomp::StompLimits;

/// The decoder's limits for a connection on `listener`: `transport.maxDataLength` for bodies,
/// `wireFormat.maxFrameSize` for whole frames (unlimited by default, as ActiveMQ), ActiveMQ's
/// fixed command and header limits.
pub fn limits(listener: &ListenerSettings) -> StompLimits {
    let stomp = &listener.options.stomp;
    StompLimits {
        max_command_length: STOMP_MAX_COMMAND_BYTES,
        max_header_length: STOMP_MAX_HEADER_LINE_BYTES,
        max_headers: STOMP_MAX_HEADERS,
        max_data_length: usize::try_from(stomp.max_data_length_bytes).unwrap_or(usize::MAX),
        max_frame_size: stomp
            .max_frame_size_bytes
            .map_or(usize::MAX, |max| usize::try_from(max).unwrap_or(usize::MAX)),
    }
}

// SUBSCRIBE header values, read as ActiveMQ 5.17 reads them (`ProtocolConverter.onStompSubscribe`):
// the `activemq.*` headers go through `IntrospectionSupport.setProperties` onto `ConsumerInfo`,
// which ignores a value that does not convert (the default stays), and `ack` is compared
// exactly with `client` and `client-individual`, anything else being `auto`.

/// The ack mode ActiveMQ takes from an `ack` header: `client` or `client-individual` as
/// written (case matters), otherwise (absent, `CLIENT`, empty, unknown) `auto`.
pub fn ack_mode_name(value: Option<&str>) -> &'static str {
    match value {
        Some("client") => "client",
        Some("client-individual") => "client-individual",
        _ => "auto",
    }
}

/// `activemq.exclusive` and other booleans: Java's `Boolean.valueOf` (`true` in any case is
/// true, everything else false).
pub fn java_boolean(value: Option<&str>) -> bool {
    value.is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// `activemq.prefetchSize`: a Java `int` (no spaces, no fraction); one that does not convert
/// is ignored (`None`: the default); 0 or less is 0 (taken as 1: a STOMP consumer cannot pull).
pub fn prefetch_size(value: Option<&str>) -> Option<usize> {
    let n = value?.parse::<i32>().ok()?;
    Some(usize::try_from(n).unwrap_or(0))
}

/// `activemq.priority`: a Java `byte` (-128..=127); one that does not convert is ignored (0),
/// a negative one is 0 (the lowest priority here).
pub fn consumer_priority(value: Option<&str>) -> u8 {
    value
        .and_then(|v| v.parse::<i8>().ok())
        .map_or(0, |p| u8::try_from(p).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribe_values_convert_as_activemq_converts_them() {
        assert_eq!(ack_mode_name(Some("client")), "client");
        assert_eq!(ack_mode_name(Some("CLIENT")), "auto");
        assert_eq!(ack_mode_name(Some("")), "auto");
        assert_eq!(ack_mode_name(None), "auto");
        assert!(java_boolean(Some("TRUE")));
        assert!(!java_boolean(Some("yes")));
        assert!(!java_boolean(Some("")));
        assert_eq!(prefetch_size(Some("5")), Some(5));
        assert_eq!(prefetch_size(Some(" 5")), None);
        assert_eq!(prefetch_size(Some("abc")), None);
        assert_eq!(prefetch_size(Some("1.5")), None);
        assert_eq!(prefetch_size(Some("99999999999")), None);
        assert_eq!(prefetch_size(Some("-1")), Some(0));
        assert_eq!(consumer_priority(Some("127")), 127);
        assert_eq!(consumer_priority(Some("128")), 0);
        assert_eq!(consumer_priority(Some("200")), 0);
        assert_eq!(consumer_priority(Some("-1")), 0);
        assert_eq!(consumer_priority(Some("abc")), 0);
    }
}
