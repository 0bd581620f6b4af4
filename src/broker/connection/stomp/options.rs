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
