//! Reason codes: CONNACK codes in both protocol generations and the sets of MQTT 5 reason codes
//! each packet type may carry (MQTT 5.0 section 2.4 and the per-packet tables).

use crate::protocol::packet::ConnectReason;

/// The MQTT 5 reason codes the broker sends in PUBACK, PUBREC, PUBCOMP, SUBACK, UNSUBACK and DISCONNECT
/// (MQTT 5.0 section 2.4). Packets carry the byte ([`ReasonCode::code`]); MQTT 3 encoders
/// leave it out, except SUBACK's failure return code 0x80 ([`ReasonCode::SubAckFailureV3`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReasonCode {
    Success,
    /// DISCONNECT from the client: publish my will (MQTT 5 3.14.2.1).
    DisconnectWithWill,
    /// UNSUBACK: the filter was not subscribed.
    NoSubscriptionExisted,
    /// MQTT 3.x SUBACK failure return code (the same byte as MQTT 5's unspecified error).
    SubAckFailureV3,
    ProtocolError,
    ImplementationSpecificError,
    NotAuthorized,
    /// DISCONNECT: the server cannot go on with this client now (its store refuses writes
    /// for a moment); the client connects again (MQTT 5 3.14.2.1, 0x89).
    ServerBusy,
    ServerShuttingDown,
    KeepAliveTimeout,
    SessionTakenOver,
    TopicNameInvalid,
    TopicAliasInvalid,
    /// DISCONNECT: the client sent more unacknowledged QoS 1/2 PUBLISHes than our Receive
    /// Maximum (MQTT 5 3.3.4-8).
    ReceiveMaximumExceeded,
    QuotaExceeded,
    /// DISCONNECT: an administrator closed the connection (the web console).
    AdministrativeAction,
    /// SUBACK: a malformed filter, such as `$share/` without a valid ShareName (4.8.2-1/-2).
    TopicFilterInvalid,
    /// DISCONNECT: a PUBLISH above the announced Maximum QoS (3.2.2-11).
    QoSNotSupported,
    /// DISCONNECT: this server cannot serve the session now; connect to another one (a
    /// cluster node that lost its store's quorum).
    UseAnotherServer,
    /// SUBACK: shared subscriptions are not served (CONNACK said so).
    SharedSubscriptionsNotSupported,
    /// PUBCOMP: the PUBREL's packet id names no exchange, here one the broker refused with
    /// a PUBREC >= 0x80 (MQTT 5 3.7.2.1).
    PacketIdentifierNotFound,
}

impl ReasonCode {
    /// The byte on the wire.
    pub const fn code(self) -> u8 {
        match self {
            ReasonCode::Success => 0x00,
            ReasonCode::DisconnectWithWill => 0x04,
            ReasonCode::NoSubscriptionExisted => 0x11,
            ReasonCode::SubAckFailureV3 => 0x80,
            ReasonCode::ProtocolError => 0x82,
            ReasonCode::ImplementationSpecificError => 0x83,
            ReasonCode::NotAuthorized => 0x87,
            ReasonCode::ServerBusy => 0x89,
            ReasonCode::ServerShuttingDown => 0x8B,
            ReasonCode::KeepAliveTimeout => 0x8D,
            ReasonCode::SessionTakenOver => 0x8E,
            ReasonCode::TopicFilterInvalid => 0x8F,
            ReasonCode::TopicNameInvalid => 0x90,
            ReasonCode::PacketIdentifierNotFound => 0x92,
            ReasonCode::ReceiveMaximumExceeded => 0x93,
            ReasonCode::TopicAliasInvalid => 0x94,
            ReasonCode::QuotaExceeded => 0x97,
            ReasonCode::AdministrativeAction => 0x98,
            ReasonCode::QoSNotSupported => 0x9B,
            ReasonCode::UseAnotherServer => 0x9C,
            ReasonCode::SharedSubscriptionsNotSupported => 0x9E,
        }
    }
}

impl From<ReasonCode> for u8 {
    fn from(reason: ReasonCode) -> u8 {
        reason.code()
    }
}

/// The MQTT 5 CONNACK reason code of `reason`.
pub fn connect_reason_code_v5(reason: ConnectReason) -> u8 {
    use ConnectReason::*;
    match reason {
        Success => 0x00,
        UnspecifiedError => 0x80,
        MalformedPacket => 0x81,
        ProtocolError => 0x82,
        ImplementationSpecificError => 0x83,
        UnsupportedProtocolVersion => 0x84,
        ClientIdentifierNotValid => 0x85,
        BadUserNameOrPassword => 0x86,
        NotAuthorized => 0x87,
        ServerUnavailable => 0x88,
        ServerBusy => 0x89,
        Banned => 0x8A,
        BadAuthenticationMethod => 0x8C,
        TopicNameInvalid => 0x90,
        PacketTooLarge => 0x95,
        QuotaExceeded => 0x97,
        PayloadFormatInvalid => 0x99,
        RetainNotSupported => 0x9A,
        QoSNotSupported => 0x9B,
        UseAnotherServer => 0x9C,
        ServerMoved => 0x9D,
        ConnectionRateExceeded => 0x9F,
    }
}

/// The MQTT 3.x CONNACK return code (0-5) of `reason`. v5-only reasons map to the closest v3
/// code: refusals of this client's identity or rights become 5 (not authorized), everything the
/// client cannot fix by changing its credentials becomes 3 (server unavailable).
pub fn connect_return_code_v3(reason: ConnectReason) -> u8 {
    use ConnectReason::*;
    match reason {
        Success => 0,
        UnsupportedProtocolVersion => 1,
        ClientIdentifierNotValid => 2,
        ServerUnavailable
        | ServerBusy
        | UnspecifiedError
        | ImplementationSpecificError
        | MalformedPacket
        | ProtocolError
        | TopicNameInvalid
        | PacketTooLarge
        | QuotaExceeded
        | PayloadFormatInvalid
        | RetainNotSupported
        | QoSNotSupported
        | UseAnotherServer
        | ServerMoved
        | ConnectionRateExceeded => 3,
        BadUserNameOrPassword => 4,
        NotAuthorized | Banned | BadAuthenticationMethod => 5,
    }
}

/// The reason behind an MQTT 5 CONNACK reason code; `None` for codes CONNACK may not carry.
pub(super) fn connect_reason_from_v5(code: u8) -> Option<ConnectReason> {
    use ConnectReason::*;
    Some(match code {
        0x00 => Success,
        0x80 => UnspecifiedError,
        0x81 => MalformedPacket,
        0x82 => ProtocolError,
        0x83 => ImplementationSpecificError,
        0x84 => UnsupportedProtocolVersion,
        0x85 => ClientIdentifierNotValid,
        0x86 => BadUserNameOrPassword,
        0x87 => NotAuthorized,
        0x88 => ServerUnavailable,
        0x89 => ServerBusy,
        0x8A => Banned,
        0x8C => BadAuthenticationMethod,
        0x90 => TopicNameInvalid,
        0x95 => PacketTooLarge,
        0x97 => QuotaExceeded,
        0x99 => PayloadFormatInvalid,
        0x9A => RetainNotSupported,
        0x9B => QoSNotSupported,
        0x9C => UseAnotherServer,
        0x9D => ServerMoved,
        0x9F => ConnectionRateExceeded,
        _ => return None,
    })
}

/// The reason behind an MQTT 3.x CONNACK return code; `None` above 5.
pub(super) fn connect_reason_from_v3(code: u8) -> Option<ConnectReason> {
    use ConnectReason::*;
    Some(match code {
        0 => Success,
        1 => UnsupportedProtocolVersion,
        2 => ClientIdentifierNotValid,
        3 => ServerUnavailable,
        4 => BadUserNameOrPassword,
        5 => NotAuthorized,
        _ => return None,
    })
}

/// PUBACK and PUBREC (MQTT 5.0 3.4.2.1, 3.5.2.1).
pub(super) fn valid_puback_reason(code: u8) -> bool {
    matches!(
        code,
        0x00 | 0x10 | 0x80 | 0x83 | 0x87 | 0x90 | 0x91 | 0x97 | 0x99
    )
}

/// PUBREL and PUBCOMP (MQTT 5.0 3.6.2.1, 3.7.2.1).
pub(super) fn valid_pubrel_reason(code: u8) -> bool {
    matches!(code, 0x00 | 0x92)
}

/// SUBACK in MQTT 5 (3.9.3).
pub(super) fn valid_suback_reason_v5(code: u8) -> bool {
    matches!(
        code,
        0x00 | 0x01 | 0x02 | 0x80 | 0x83 | 0x87 | 0x8F | 0x91 | 0x97 | 0x9E | 0xA1 | 0xA2
    )
}

/// SUBACK in MQTT 3.x: granted QoS 0-2 or 0x80 failure.
pub(super) fn valid_suback_code_v3(code: u8) -> bool {
    matches!(code, 0x00 | 0x01 | 0x02 | 0x80)
}

/// UNSUBACK in MQTT 5 (3.11.3).
pub(super) fn valid_unsuback_reason(code: u8) -> bool {
    matches!(code, 0x00 | 0x11 | 0x80 | 0x83 | 0x87 | 0x8F | 0x91)
}

/// DISCONNECT (3.14.2.1).
pub(super) fn valid_disconnect_reason(code: u8) -> bool {
    matches!(
        code,
        0x00 | 0x04
            | 0x80..=0x83
            | 0x87
            | 0x89
            | 0x8B
            | 0x8D..=0x90
            | 0x93..=0xA2
    )
}

/// AUTH (3.15.2.1).
pub(super) fn valid_auth_reason(code: u8) -> bool {
    matches!(code, 0x00 | 0x18 | 0x19)
}
