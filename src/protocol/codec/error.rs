//! Errors of the codec. Decoding errors are sorted by the reaction the spec asks for: an MQTT 5
//! peer is told the reason code of [`DecodeError::reason_code`] (in a CONNACK or DISCONNECT) before
//! the connection closes; an MQTT 3.x peer is just disconnected, except for
//! [`DecodeError::UnsupportedProtocolVersion`], which gets CONNACK return code 1.

use crate::protocol::topic::TopicError;

/// Why bytes from a peer are not an acceptable packet. After any of these the connection must be
/// closed; what is left in the buffer is unspecified.
///
/// `packet` fields name the packet type being decoded ("PUBLISH", ...) or "fixed header", so
/// the message reads e.g. "malformed PUBLISH: the packet identifier is 0 ...".
/// How much of an unsupported protocol name an error keeps.
pub const PROTOCOL_NAME_SHOWN_CHARS: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes cannot be read as the packet they claim to be (MQTT 5 reason 0x81).
    #[error("malformed {packet}: {reason}")]
    Malformed {
        packet: &'static str,
        reason: &'static str,
    },
    /// A field runs past the end of the packet (MQTT 5 reason 0x81).
    #[error("malformed {packet}: the {field} runs past the end of the packet")]
    Truncated {
        packet: &'static str,
        field: &'static str,
    },
    /// A string is not well-formed UTF-8 or contains U+0000 (MQTT-1.5.3-1/2; reason 0x81).
    #[error("malformed {packet}: the {field} is not well-formed UTF-8 or contains U+0000")]
    InvalidUtf8 {
        packet: &'static str,
        field: &'static str,
    },
    /// The packet can be read but breaks a protocol rule (MQTT 5 reason 0x82).
    #[error("protocol error in {packet}: {reason}")]
    ProtocolError {
        packet: &'static str,
        reason: &'static str,
    },
    /// A PUBLISH topic, will topic or response topic is not a valid topic name (reason 0x90).
    #[error("invalid topic name in {packet}: {error}")]
    InvalidTopicName {
        packet: &'static str,
        error: TopicError,
    },
    /// A SUBSCRIBE or UNSUBSCRIBE filter is not a valid topic filter (reason 0x8F).
    #[error("invalid topic filter in {packet}: {error}")]
    InvalidTopicFilter {
        packet: &'static str,
        error: TopicError,
    },
    /// The remaining length announced by the fixed header exceeds the configured maximum
    /// (reason 0x95). Detected before the body is buffered.
    #[error(
        "packet remaining length of {size} bytes exceeds the maximum of {max} bytes \
         (raise wireFormat.maxFrameSize to accept it)"
    )]
    TooLarge { size: usize, max: usize },
    /// CONNECT with a protocol name / level pair other than `MQIsdp`/3, `MQTT`/4 or `MQTT`/5.
    /// Answer with CONNACK return code 1 (v3) / reason 0x84 (v5), then close.
    #[error(
        "unsupported protocol name {name:?} with level {level} (supported: MQIsdp level 3 = \
         MQTT 3.1, MQTT level 4 = MQTT 3.1.1, MQTT level 5 = MQTT 5.0)"
    )]
    UnsupportedProtocolVersion {
        /// The name the client sent, cut to `PROTOCOL_NAME_SHOWN_CHARS` characters (it is
        /// peer input and ends up in logs).
        name: String,
        level: u8,
    },
}

impl DecodeError {
    /// The MQTT 5 reason code that describes this error in a CONNACK or DISCONNECT.
    pub fn reason_code(&self) -> u8 {
        match self {
            DecodeError::Malformed { .. }
            | DecodeError::Truncated { .. }
            | DecodeError::InvalidUtf8 { .. } => 0x81,
            DecodeError::ProtocolError { .. } => 0x82,
            DecodeError::InvalidTopicName { .. } => 0x90,
            DecodeError::InvalidTopicFilter { .. } => 0x8F,
            DecodeError::TooLarge { .. } => 0x95,
            DecodeError::UnsupportedProtocolVersion { .. } => 0x84,
        }
    }
}

/// Why a packet value cannot be encoded. These are bugs of the caller (the broker built a packet
/// the protocol cannot carry); nothing is appended to the buffer when encoding fails.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The remaining length would exceed 268,435,455 bytes, the wire format's limit.
    #[error("packet too large to encode: remaining length {0} bytes exceeds 268435455")]
    TooLarge(usize),
    /// A string or binary field is longer than its 16-bit length prefix allows.
    #[error("{packet}: the {field} is {len} bytes long; the maximum is 65535")]
    FieldTooLong {
        packet: &'static str,
        field: &'static str,
        len: usize,
    },
    /// The packet's fields contradict each other or the protocol version.
    #[error("cannot encode {packet}: {reason}")]
    Invalid {
        packet: &'static str,
        reason: &'static str,
    },
}
