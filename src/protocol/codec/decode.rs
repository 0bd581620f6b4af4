//! Bytes -> [`Packet`], with the validation of MQTT 3.1.1 and 5.0 (MQTT 3.1 is read like 3.1.1,
//! except for fixed-header flags, which 3.1 did not reserve).
//!
//! The body is cut from the input with `split_to(..).freeze()`, so payloads, will messages,
//! passwords and binary properties are slices of the received buffer, never copies. What is kept
//! longer than its packet is detached by its keeper (`LastWill::detach`, `Publish::detach`), and a
//! connection's reads are copied in groups of whole packets (`complete_packets`), so a kept
//! slice never keeps a socket buffer.

use bytes::{Buf, Bytes, BytesMut};

use super::error::{DecodeError, PROTOCOL_NAME_SHOWN_CHARS};
use super::properties::{read_properties, PropertyContext};
use super::reason;
use super::wire::{read_fixed_header, FixedHeader, Reader};
use crate::protocol::packet::*;
use crate::protocol::topic::{
    parse_shared_subscription, validate_topic_filter, validate_topic_name,
};

/// The packet type and the meaning of its fixed-header flags, checked from the first byte alone.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Connect,
    ConnAck,
    Publish { dup: bool, qos: QoS, retain: bool },
    PubAck,
    PubRec,
    PubRel,
    PubComp,
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck,
    PingReq,
    PingResp,
    Disconnect,
    Auth,
}

const HEADER: &str = "fixed header";

fn header_error(reason: &'static str) -> DecodeError {
    DecodeError::Malformed {
        packet: HEADER,
        reason,
    }
}

/// Decode one packet from the front of `buf`, consuming exactly its bytes.
///
/// `Ok(None)`: the packet is not complete yet; nothing was consumed. `version` is `None` until
/// the connection's CONNECT has been decoded (then only CONNECT is accepted, and its own protocol
/// level decides its layout); afterwards it is that CONNECT's [`Connect::protocol`], and a second
/// CONNECT is refused. `max_size` bounds the remaining length and is checked as soon as the fixed
/// header is complete, before the body arrives. The first byte is checked as soon as it arrives,
/// so a peer speaking another protocol is refused at once.
///
/// The decoder reads packets of both directions (a broker's tests and clients need CONNACK,
/// SUBACK, ...). Rules that depend on who sent the packet are the caller's: a broker must treat
/// CONNACK, SUBACK, UNSUBACK and PINGRESP from a client as a protocol error, and a client's
/// PUBLISH carrying a subscription identifier (MQTT-3.3.4-6) or a topic alias above the
/// announced maximum likewise.
pub fn decode(
    buf: &mut BytesMut,
    version: Option<ProtocolVersion>,
    max_size: usize,
) -> Result<Option<Packet>, DecodeError> {
    let Some((kind, header)) = frame_at_front(buf, version, max_size)? else {
        return Ok(None);
    };
    let mut frame = buf.split_to(header.header_len + header.remaining_len);
    frame.advance(header.header_len);
    let body = frame.freeze();
    // `packet_kind` refused everything but CONNECT while `version` is None.
    let version = version.unwrap_or(ProtocolVersion::V311);
    decode_body(kind, &body, version).map(Some)
}

/// [`decode`] from a frozen buffer, after the connection's CONNECT (`version` is known): the
/// packet's slices (payload, properties) share `buf`'s storage, and with it whatever owns it
/// (a received chunk charged to `memoryUsage`, see `complete_packets`).
pub fn decode_frozen(
    buf: &mut Bytes,
    version: ProtocolVersion,
    max_size: usize,
) -> Result<Option<Packet>, DecodeError> {
    let Some((kind, header)) = frame_at_front(buf, Some(version), max_size)? else {
        return Ok(None);
    };
    let mut body = buf.split_to(header.header_len + header.remaining_len);
    body.advance(header.header_len);
    decode_body(kind, &body, version).map(Some)
}

/// The packet id of the PUBACK at the front of `buf` when it is one that holds nothing but
/// its packet id (in MQTT 5: reason Success, no properties), taken out of `buf`; `None`, and
/// nothing taken, for anything else ([`decode_frozen`] decodes it). A subscriber sends little
/// else, one per QoS 1 delivery: these four bytes are framed and decoded in one step. Valid
/// at every protocol level, as [`decode_frozen`] would decode it.
pub fn take_plain_puback(buf: &mut Bytes) -> Option<u16> {
    match buf.get(..4) {
        Some(&[0x40, 0x02, high, low]) if (high, low) != (0, 0) => {
            buf.advance(4);
            Some(u16::from_be_bytes([high, low]))
        }
        _ => None,
    }
}

/// The kind and fixed header of the packet at the front of `buf` when all of it is there;
/// `Ok(None)` while it is not.
fn frame_at_front(
    buf: &[u8],
    version: Option<ProtocolVersion>,
    max_size: usize,
) -> Result<Option<(Kind, FixedHeader)>, DecodeError> {
    let Some(&first_byte) = buf.first() else {
        return Ok(None);
    };
    let kind = packet_kind(first_byte, version)?;
    let Some(header) = read_fixed_header(buf)? else {
        return Ok(None);
    };
    if header.remaining_len > max_size {
        return Err(DecodeError::TooLarge {
            size: header.remaining_len,
            max: max_size,
        });
    }
    if buf.len() < header.header_len + header.remaining_len {
        return Ok(None);
    }
    Ok(Some((kind, header)))
}

/// The complete packets at the front of a received buffer: how many bytes they take and how
/// many of them are PUBLISH packets. Only the fixed headers are read (MQTT 5.0 2.1); a
/// packet's content is checked when it is decoded. Stops before an incomplete packet, and
/// before one whose fixed header is malformed or whose remaining length passes `max_size`:
/// the error is returned only when no complete packet comes before it, so the packets the
/// peer sent before a bad one are still handled. Also stops before a packet that would take
/// the total past `max_bytes`; the first packet is taken whatever its size, so a packet
/// larger than `max_bytes` comes alone.
pub fn complete_packets(
    buf: &[u8],
    max_size: usize,
    max_bytes: usize,
) -> Result<CompletePackets, DecodeError> {
    let mut found = CompletePackets::default();
    while let Some(rest) = buf.get(found.bytes..).filter(|rest| !rest.is_empty()) {
        let header = match read_fixed_header(rest) {
            Ok(Some(header)) if header.remaining_len <= max_size => header,
            Ok(Some(header)) if found.bytes == 0 => {
                return Err(DecodeError::TooLarge {
                    size: header.remaining_len,
                    max: max_size,
                })
            }
            Err(e) if found.bytes == 0 => return Err(e),
            Ok(_) | Err(_) => break,
        };
        let len = header.header_len + header.remaining_len;
        if rest.len() < len || (found.bytes > 0 && found.bytes + len > max_bytes) {
            break;
        }
        found.bytes += len;
        found.publishes += usize::from(rest.first().is_some_and(|b| b >> 4 == PUBLISH_TYPE));
    }
    Ok(found)
}

/// What [`complete_packets`] found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CompletePackets {
    /// Bytes of complete packets at the front of the buffer.
    pub bytes: usize,
    /// How many of them are PUBLISH packets.
    pub publishes: usize,
}

/// The control packet type of PUBLISH (MQTT 5.0 2.1.2).
const PUBLISH_TYPE: u8 = 3;

/// Reads the packet type and checks the flags (MQTT 3.1.1 / 5.0 section 2.1.3).
fn packet_kind(first_byte: u8, version: Option<ProtocolVersion>) -> Result<Kind, DecodeError> {
    let packet_type = first_byte >> 4;
    let flags = first_byte & 0x0F;
    let Some(version) = version else {
        if packet_type != 1 {
            return Err(DecodeError::ProtocolError {
                packet: HEADER,
                reason: "the first packet of a connection must be CONNECT",
            });
        }
        if flags != 0 {
            return Err(header_error("the CONNECT fixed-header flags must be 0"));
        }
        return Ok(Kind::Connect);
    };
    if packet_type == 3 {
        return publish_kind(flags);
    }
    let (kind, expected_flags) = match packet_type {
        1 => {
            return Err(DecodeError::ProtocolError {
                packet: "CONNECT",
                reason: "a second CONNECT on the same connection",
            })
        }
        2 => (Kind::ConnAck, 0),
        4 => (Kind::PubAck, 0),
        5 => (Kind::PubRec, 0),
        6 => (Kind::PubRel, 0b0010),
        7 => (Kind::PubComp, 0),
        8 => (Kind::Subscribe, 0b0010),
        9 => (Kind::SubAck, 0),
        10 => (Kind::Unsubscribe, 0b0010),
        11 => (Kind::UnsubAck, 0),
        12 => (Kind::PingReq, 0),
        13 => (Kind::PingResp, 0),
        14 => (Kind::Disconnect, 0),
        15 if version == ProtocolVersion::V5 => (Kind::Auth, 0),
        15 => return Err(header_error("packet type 15 (AUTH) exists only in MQTT 5")),
        _ => return Err(header_error("packet type 0 is reserved")),
    };
    // MQTT 3.1 reserved no flags: its clients send PUBREL, SUBSCRIBE and UNSUBSCRIBE with QoS 1
    // and set DUP when they resend them, so only 3.1.1 and 5.0 get the strict check.
    if flags != expected_flags && version != ProtocolVersion::V31 {
        return Err(header_error(if expected_flags == 0 {
            "the fixed-header flags of this packet type must be 0"
        } else {
            "the fixed-header flags of PUBREL, SUBSCRIBE and UNSUBSCRIBE must be 0b0010"
        }));
    }
    Ok(kind)
}

fn publish_kind(flags: u8) -> Result<Kind, DecodeError> {
    let qos = QoS::from_u8((flags >> 1) & 0b11)
        .ok_or_else(|| header_error("PUBLISH with QoS 3 (QoS must be 0, 1 or 2)"))?;
    let dup = flags & 0b1000 != 0;
    if dup && qos == QoS::AtMostOnce {
        return Err(header_error("PUBLISH with the DUP flag at QoS 0"));
    }
    Ok(Kind::Publish {
        dup,
        qos,
        retain: flags & 0b0001 != 0,
    })
}

fn decode_body(kind: Kind, body: &Bytes, version: ProtocolVersion) -> Result<Packet, DecodeError> {
    let v5 = version == ProtocolVersion::V5;
    Ok(match kind {
        Kind::Connect => Packet::Connect(Box::new(decode_connect(body)?)),
        Kind::ConnAck => Packet::ConnAck(decode_connack(body, version)?),
        Kind::Publish { dup, qos, retain } => {
            Packet::Publish(decode_publish(body, v5, dup, qos, retain)?)
        }
        Kind::PubAck => {
            Packet::PubAck(decode_ack(body, v5, "PUBACK", reason::valid_puback_reason)?)
        }
        Kind::PubRec => {
            Packet::PubRec(decode_ack(body, v5, "PUBREC", reason::valid_puback_reason)?)
        }
        Kind::PubRel => {
            Packet::PubRel(decode_ack(body, v5, "PUBREL", reason::valid_pubrel_reason)?)
        }
        Kind::PubComp => Packet::PubComp(decode_ack(
            body,
            v5,
            "PUBCOMP",
            reason::valid_pubrel_reason,
        )?),
        Kind::Subscribe => Packet::Subscribe(decode_subscribe(body, v5)?),
        Kind::SubAck => Packet::SubAck(decode_suback(body, v5)?),
        Kind::Unsubscribe => Packet::Unsubscribe(decode_unsubscribe(body, v5)?),
        Kind::UnsubAck => Packet::UnsubAck(decode_unsuback(body, v5)?),
        Kind::PingReq => {
            Reader::new(body, "PINGREQ").finish()?;
            Packet::PingReq
        }
        Kind::PingResp => {
            Reader::new(body, "PINGRESP").finish()?;
            Packet::PingResp
        }
        Kind::Disconnect => Packet::Disconnect(decode_disconnect(body, v5)?),
        Kind::Auth => Packet::Auth(decode_auth(body)?),
    })
}

fn decode_connect(body: &Bytes) -> Result<Connect, DecodeError> {
    let mut r = Reader::new(body, "CONNECT");
    let name = r.str("protocol name")?;
    let level = r.u8("protocol level")?;
    let protocol = match (name, level) {
        ("MQIsdp", 3) => ProtocolVersion::V31,
        ("MQTT", 4) => ProtocolVersion::V311,
        ("MQTT", 5) => ProtocolVersion::V5,
        _ => {
            return Err(DecodeError::UnsupportedProtocolVersion {
                name: name.chars().take(PROTOCOL_NAME_SHOWN_CHARS).collect(),
                level,
            })
        }
    };
    let v5 = protocol == ProtocolVersion::V5;
    let flags = r.u8("connect flags")?;
    if flags & 0x01 != 0 {
        return Err(r.malformed("the reserved connect flag (bit 0) is set"));
    }
    let clean_start = flags & 0x02 != 0;
    let will_flag = flags & 0x04 != 0;
    let will_qos = QoS::from_u8((flags >> 3) & 0b11)
        .ok_or_else(|| r.malformed("the will QoS is 3 (it must be 0, 1 or 2)"))?;
    let will_retain = flags & 0x20 != 0;
    let password_flag = flags & 0x40 != 0;
    let username_flag = flags & 0x80 != 0;
    if !will_flag && (will_qos != QoS::AtMostOnce || will_retain) {
        return Err(r.malformed("the will QoS or will retain flag is set without the will flag"));
    }
    if password_flag && !username_flag && !v5 {
        return Err(r.malformed("the password flag is set without the user name flag"));
    }
    let keep_alive_secs = r.u16("keep alive")?;
    let properties = if v5 {
        read_properties(&mut r, PropertyContext::Connect)?
    } else {
        None
    };
    let client_id = r.string("client identifier")?;
    let will = if will_flag {
        let will_properties = if v5 {
            read_properties(&mut r, PropertyContext::Will)?
        } else {
            None
        };
        let topic = r.str("will topic")?;
        validate_topic_name(topic).map_err(|error| DecodeError::InvalidTopicName {
            packet: "CONNECT",
            error,
        })?;
        Some(LastWill {
            topic: topic.to_owned(),
            payload: r.binary("will payload")?,
            qos: will_qos,
            retain: will_retain,
            properties: will_properties,
        })
    } else {
        None
    };
    let username = if username_flag {
        Some(r.string("user name")?)
    } else {
        None
    };
    let password = if password_flag {
        Some(r.binary("password")?)
    } else {
        None
    };
    r.finish()?;
    Ok(Connect {
        protocol,
        clean_start,
        keep_alive_secs,
        client_id,
        will,
        username,
        password,
        properties,
    })
}

fn decode_connack(body: &Bytes, version: ProtocolVersion) -> Result<ConnAck, DecodeError> {
    let mut r = Reader::new(body, "CONNACK");
    let flags = r.u8("acknowledge flags")?;
    let code = r.u8("return code")?;
    let (reason, properties) = if version == ProtocolVersion::V5 {
        let reason = reason::connect_reason_from_v5(code)
            .ok_or_else(|| r.protocol_error("the reason code is not one CONNACK may carry"))?;
        (reason, read_properties(&mut r, PropertyContext::ConnAck)?)
    } else {
        let reason = reason::connect_reason_from_v3(code)
            .ok_or_else(|| r.malformed("the return code is above 5"))?;
        (reason, None)
    };
    r.finish()?;
    // MQTT 3.1 has no session-present flag: the whole first byte is "reserved, not used".
    let session_present = version != ProtocolVersion::V31 && flags & 0x01 != 0;
    if version != ProtocolVersion::V31 && flags & 0xFE != 0 {
        return Err(r.malformed("reserved acknowledge flags (bits 7-1) are set"));
    }
    if session_present && reason != ConnectReason::Success {
        return Err(r.malformed("session present is set on a refused connection"));
    }
    Ok(ConnAck {
        session_present,
        reason,
        properties,
    })
}

fn decode_publish(
    body: &Bytes,
    v5: bool,
    dup: bool,
    qos: QoS,
    retain: bool,
) -> Result<Publish, DecodeError> {
    let mut r = Reader::new(body, "PUBLISH");
    let topic = r.str("topic name")?;
    let packet_id = if qos == QoS::AtMostOnce {
        None
    } else {
        Some(r.packet_id()?)
    };
    let properties = if v5 {
        read_properties(&mut r, PropertyContext::Publish)?
    } else {
        None
    };
    if topic.is_empty() && v5 {
        // MQTT 5 3.3.2.1: an empty topic is how a known topic alias is used.
        if properties.as_ref().is_none_or(|p| p.topic_alias.is_none()) {
            return Err(r.protocol_error("an empty topic name without a topic alias"));
        }
    } else {
        validate_topic_name(topic).map_err(|error| DecodeError::InvalidTopicName {
            packet: "PUBLISH",
            error,
        })?;
    }
    Ok(Publish {
        dup,
        qos,
        retain,
        topic: topic.to_owned(),
        packet_id,
        payload: r.rest(),
        properties,
    })
}

/// PUBACK, PUBREC, PUBREL, PUBCOMP. In MQTT 5 the reason code and the properties may be left
/// out (remaining length 2 or 3) when they are "success" and empty.
/// `valid_reason` tells the reason codes this packet type may carry.
fn decode_ack(
    body: &Bytes,
    v5: bool,
    packet: &'static str,
    valid_reason: fn(u8) -> bool,
) -> Result<Ack, DecodeError> {
    let mut r = Reader::new(body, packet);
    let packet_id = r.packet_id()?;
    let mut ack = Ack::new(packet_id);
    if v5 && !r.is_empty() {
        ack.reason = r.u8("reason code")?;
        if !valid_reason(ack.reason) {
            return Err(r.protocol_error("the reason code is not one this packet may carry"));
        }
        if !r.is_empty() {
            ack.properties = read_properties(&mut r, PropertyContext::Ack)?;
        }
    }
    r.finish()?;
    Ok(ack)
}

fn decode_subscribe(body: &Bytes, v5: bool) -> Result<Subscribe, DecodeError> {
    let mut r = Reader::new(body, "SUBSCRIBE");
    let packet_id = r.packet_id()?;
    let properties = if v5 {
        read_properties(&mut r, PropertyContext::Subscribe)?
    } else {
        None
    };
    let mut filters = Vec::new();
    while !r.is_empty() {
        let filter = read_filter(&mut r, v5)?;
        let options = r.u8("subscription options")?;
        let options = if v5 {
            subscription_options_v5(&r, options, &filter)?
        } else {
            if options & 0xFC != 0 {
                return Err(r.malformed("reserved bits (7-2) of the requested QoS are set"));
            }
            SubscriptionOptions {
                qos: requested_qos(&r, options, false)?,
                no_local: false,
                retain_as_published: false,
                retain_handling: RetainHandling::SendAtSubscribe,
            }
        };
        filters.push((filter, options));
    }
    if filters.is_empty() {
        return Err(r.protocol_error("SUBSCRIBE without any topic filter"));
    }
    Ok(Subscribe {
        packet_id,
        filters,
        properties,
    })
}

/// The requested (MQTT 5: maximum) QoS of a subscription. QoS 3 makes the SUBSCRIBE malformed
/// in MQTT 3.1.1 (3.8.3-4) and is a Protocol Error in MQTT 5 (3.8.3.1).
fn requested_qos(r: &Reader<'_>, options: u8, v5: bool) -> Result<QoS, DecodeError> {
    const WHY: &str = "a requested QoS is 3 (it must be 0, 1 or 2)";
    QoS::from_u8(options & 0b11).ok_or_else(|| {
        if v5 {
            r.protocol_error(WHY)
        } else {
            r.malformed(WHY)
        }
    })
}

/// MQTT 5 subscription options byte (3.8.3.1).
fn subscription_options_v5(
    r: &Reader<'_>,
    options: u8,
    filter: &str,
) -> Result<SubscriptionOptions, DecodeError> {
    if options & 0xC0 != 0 {
        return Err(r.malformed("reserved bits (7-6) of the subscription options are set"));
    }
    let retain_handling = match (options >> 4) & 0b11 {
        0 => RetainHandling::SendAtSubscribe,
        1 => RetainHandling::SendAtSubscribeIfNew,
        2 => RetainHandling::DoNotSend,
        _ => return Err(r.protocol_error("retain handling is 3 (it must be 0, 1 or 2)")),
    };
    let no_local = options & 0b0100 != 0;
    if no_local && filter.starts_with("$share/") {
        return Err(r.protocol_error("no local is set on a shared subscription"));
    }
    Ok(SubscriptionOptions {
        qos: requested_qos(r, options, true)?,
        no_local,
        retain_as_published: options & 0b1000 != 0,
        retain_handling,
    })
}

/// A topic filter of SUBSCRIBE / UNSUBSCRIBE; in MQTT 5 also the shared-subscription syntax.
fn read_filter(r: &mut Reader<'_>, v5: bool) -> Result<String, DecodeError> {
    let filter = r.str("topic filter")?;
    let invalid = |error| DecodeError::InvalidTopicFilter {
        packet: r.packet,
        error,
    };
    validate_topic_filter(filter).map_err(invalid)?;
    if v5 {
        parse_shared_subscription(filter).map_err(invalid)?;
    }
    Ok(filter.to_owned())
}

fn decode_suback(body: &Bytes, v5: bool) -> Result<SubAck, DecodeError> {
    let mut r = Reader::new(body, "SUBACK");
    let packet_id = r.packet_id()?;
    let properties = if v5 {
        read_properties(&mut r, PropertyContext::SubAck)?
    } else {
        None
    };
    let return_codes = r.rest().to_vec();
    if return_codes.is_empty() {
        return Err(r.protocol_error("SUBACK without any return code"));
    }
    let valid = if v5 {
        reason::valid_suback_reason_v5
    } else {
        reason::valid_suback_code_v3
    };
    if !return_codes.iter().all(|&code| valid(code)) {
        return Err(r.protocol_error("a return code is not one SUBACK may carry"));
    }
    Ok(SubAck {
        packet_id,
        return_codes,
        properties,
    })
}

fn decode_unsubscribe(body: &Bytes, v5: bool) -> Result<Unsubscribe, DecodeError> {
    let mut r = Reader::new(body, "UNSUBSCRIBE");
    let packet_id = r.packet_id()?;
    let properties = if v5 {
        read_properties(&mut r, PropertyContext::Unsubscribe)?
    } else {
        None
    };
    let mut filters = Vec::new();
    while !r.is_empty() {
        filters.push(read_filter(&mut r, v5)?);
    }
    if filters.is_empty() {
        return Err(r.protocol_error("UNSUBSCRIBE without any topic filter"));
    }
    Ok(Unsubscribe {
        packet_id,
        filters,
        properties,
    })
}

fn decode_unsuback(body: &Bytes, v5: bool) -> Result<UnsubAck, DecodeError> {
    let mut r = Reader::new(body, "UNSUBACK");
    let packet_id = r.packet_id()?;
    if !v5 {
        r.finish()?;
        return Ok(UnsubAck {
            packet_id,
            reason_codes: Vec::new(),
            properties: None,
        });
    }
    let properties = read_properties(&mut r, PropertyContext::UnsubAck)?;
    let reason_codes = r.rest().to_vec();
    if reason_codes.is_empty() {
        return Err(r.protocol_error("UNSUBACK without any reason code"));
    }
    if !reason_codes
        .iter()
        .all(|&code| reason::valid_unsuback_reason(code))
    {
        return Err(r.protocol_error("a reason code is not one UNSUBACK may carry"));
    }
    Ok(UnsubAck {
        packet_id,
        reason_codes,
        properties,
    })
}

/// In MQTT 5 the reason code and properties may be left out (remaining length 0 or 1).
fn decode_disconnect(body: &Bytes, v5: bool) -> Result<Disconnect, DecodeError> {
    let mut r = Reader::new(body, "DISCONNECT");
    let mut disconnect = Disconnect {
        reason: 0,
        properties: None,
    };
    if v5 && !r.is_empty() {
        disconnect.reason = r.u8("reason code")?;
        if !reason::valid_disconnect_reason(disconnect.reason) {
            return Err(r.protocol_error("the reason code is not one DISCONNECT may carry"));
        }
        if !r.is_empty() {
            disconnect.properties = read_properties(&mut r, PropertyContext::Disconnect)?;
        }
    }
    r.finish()?;
    Ok(disconnect)
}

/// MQTT 5 AUTH: empty (success, no properties) or reason code plus properties.
fn decode_auth(body: &Bytes) -> Result<Auth, DecodeError> {
    let mut r = Reader::new(body, "AUTH");
    let mut auth = Auth {
        reason: 0,
        properties: None,
    };
    if !r.is_empty() {
        auth.reason = r.u8("reason code")?;
        if !reason::valid_auth_reason(auth.reason) {
            return Err(r.protocol_error("the reason code is not one AUTH may carry"));
        }
        auth.properties = read_properties(&mut r, PropertyContext::Auth)?;
    }
    r.finish()?;
    Ok(auth)
}
