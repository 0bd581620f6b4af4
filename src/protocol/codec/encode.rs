//! [`Packet`] -> bytes. Each packet's remaining length is computed first so the buffer is grown
//! once, by exactly the packet's size. Fields the target version cannot carry (v5 properties and
//! reason codes in a v3 packet) are left out; contradictions are refused with an [`EncodeError`].

use bytes::{BufMut, BytesMut};

use super::error::EncodeError;
use super::properties::{is_empty, properties_block_len, put_properties, PropertyContext};
use super::reason;
use super::wire::{prefixed_len, put_prefixed, put_var_int, var_int_len, MAX_VAR_INT};
use crate::protocol::packet::*;

/// Append the encoding of `packet` for protocol `version` to `buf`. On error nothing is appended.
///
/// A CONNECT is written in its own [`Connect::protocol`], which must equal `version`.
pub fn encode(
    packet: &Packet,
    version: ProtocolVersion,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    let start = buf.len();
    let result = encode_packet(packet, version == ProtocolVersion::V5, version, buf);
    if result.is_err() {
        buf.truncate(start);
    }
    result
}

fn encode_packet(
    packet: &Packet,
    v5: bool,
    version: ProtocolVersion,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    match packet {
        Packet::Connect(connect) => {
            if connect.protocol != version {
                return Err(invalid(
                    "CONNECT",
                    "its protocol differs from the version to encode for",
                ));
            }
            put_connect(buf, connect)
        }
        Packet::ConnAck(connack) => put_connack(buf, connack, version),
        Packet::Publish(publish) => put_publish(buf, publish, v5),
        Packet::PubAck(ack) => put_ack(buf, 0x40, ack, v5),
        Packet::PubRec(ack) => put_ack(buf, 0x50, ack, v5),
        Packet::PubRel(ack) => put_ack(buf, 0x62, ack, v5),
        Packet::PubComp(ack) => put_ack(buf, 0x70, ack, v5),
        Packet::Subscribe(subscribe) => put_subscribe(buf, subscribe, v5),
        Packet::SubAck(suback) => put_suback(buf, suback, v5),
        Packet::Unsubscribe(unsubscribe) => put_unsubscribe(buf, unsubscribe, v5),
        Packet::UnsubAck(unsuback) => put_unsuback(buf, unsuback, v5),
        Packet::PingReq => put_header(buf, 0xC0, 0),
        Packet::PingResp => put_header(buf, 0xD0, 0),
        Packet::Disconnect(disconnect) => put_disconnect(buf, disconnect, v5),
        Packet::Auth(auth) => {
            if !v5 {
                return Err(invalid("AUTH", "AUTH exists only in MQTT 5"));
            }
            put_auth(buf, auth)
        }
    }
}

fn invalid(packet: &'static str, reason: &'static str) -> EncodeError {
    EncodeError::Invalid { packet, reason }
}

/// Writes the fixed header after reserving exactly the whole packet's size.
fn put_header(buf: &mut BytesMut, first_byte: u8, remaining_len: usize) -> Result<(), EncodeError> {
    if remaining_len > MAX_VAR_INT {
        return Err(EncodeError::TooLarge(remaining_len));
    }
    buf.reserve(1 + var_int_len(remaining_len) + remaining_len);
    buf.put_u8(first_byte);
    put_var_int(buf, remaining_len);
    Ok(())
}

fn props(properties: &Option<Box<Properties>>) -> Option<&Properties> {
    properties.as_deref()
}

fn put_connect(buf: &mut BytesMut, c: &Connect) -> Result<(), EncodeError> {
    const P: &str = "CONNECT";
    let v5 = c.protocol == ProtocolVersion::V5;
    let name: &[u8] = if c.protocol == ProtocolVersion::V31 {
        b"MQIsdp"
    } else {
        b"MQTT"
    };
    if c.password.is_some() && c.username.is_none() && !v5 {
        return Err(invalid(
            P,
            "a password without a user name (allowed only in MQTT 5)",
        ));
    }
    let mut len = prefixed_len(name) + 1 + 1 + 2 + prefixed_len(c.client_id.as_bytes());
    if v5 {
        len += properties_block_len(props(&c.properties));
    }
    if let Some(will) = &c.will {
        len += prefixed_len(will.topic.as_bytes()) + prefixed_len(&will.payload);
        if v5 {
            len += properties_block_len(props(&will.properties));
        }
    }
    len += c
        .username
        .as_ref()
        .map_or(0, |u| prefixed_len(u.as_bytes()));
    len += c.password.as_ref().map_or(0, |p| prefixed_len(p));

    let mut flags = 0u8;
    if c.clean_start {
        flags |= 0x02;
    }
    if let Some(will) = &c.will {
        flags |= 0x04 | (will.qos as u8) << 3;
        if will.retain {
            flags |= 0x20;
        }
    }
    if c.password.is_some() {
        flags |= 0x40;
    }
    if c.username.is_some() {
        flags |= 0x80;
    }

    put_header(buf, 0x10, len)?;
    put_prefixed(buf, name, P, "protocol name")?;
    buf.put_u8(c.protocol as u8);
    buf.put_u8(flags);
    buf.put_u16(c.keep_alive_secs);
    if v5 {
        put_properties(buf, props(&c.properties), PropertyContext::Connect, P)?;
    }
    put_prefixed(buf, c.client_id.as_bytes(), P, "client identifier")?;
    if let Some(will) = &c.will {
        if v5 {
            put_properties(buf, props(&will.properties), PropertyContext::Will, P)?;
        }
        put_prefixed(buf, will.topic.as_bytes(), P, "will topic")?;
        put_prefixed(buf, &will.payload, P, "will payload")?;
    }
    if let Some(username) = &c.username {
        put_prefixed(buf, username.as_bytes(), P, "user name")?;
    }
    if let Some(password) = &c.password {
        put_prefixed(buf, password, P, "password")?;
    }
    Ok(())
}

/// MQTT 3.1 has no session-present flag, so it is dropped there; the v3 return code is the
/// closest one to the reason (see [`reason::connect_return_code_v3`]).
fn put_connack(
    buf: &mut BytesMut,
    c: &ConnAck,
    version: ProtocolVersion,
) -> Result<(), EncodeError> {
    if c.session_present && c.reason != ConnectReason::Success {
        return Err(invalid(
            "CONNACK",
            "session present on a refused connection",
        ));
    }
    let flags = u8::from(c.session_present && version != ProtocolVersion::V31);
    if version == ProtocolVersion::V5 {
        let properties = props(&c.properties);
        put_header(buf, 0x20, 2 + properties_block_len(properties))?;
        buf.put_u8(flags);
        buf.put_u8(reason::connect_reason_code_v5(c.reason));
        put_properties(buf, properties, PropertyContext::ConnAck, "CONNACK")
    } else {
        put_header(buf, 0x20, 2)?;
        buf.put_u8(flags);
        buf.put_u8(reason::connect_return_code_v3(c.reason));
        Ok(())
    }
}

/// Append a PUBLISH for protocol `version` built from borrowed parts (no [`Packet`] and no
/// owned topic per message: the broker's delivery path writes every message through here).
/// `properties` are written for MQTT 5 only. On error nothing is appended.
#[allow(clippy::too_many_arguments)] // the PUBLISH fields themselves; a struct would be the Packet again
pub fn encode_publish(
    topic: &str,
    payload: &[u8],
    qos: QoS,
    retain: bool,
    dup: bool,
    packet_id: Option<u16>,
    properties: Option<&Properties>,
    version: ProtocolVersion,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    let start = buf.len();
    let fields = PublishFields {
        topic,
        payload,
        qos,
        retain,
        dup,
        packet_id,
        properties,
    };
    let result = put_publish_fields(buf, &fields, version == ProtocolVersion::V5);
    if result.is_err() {
        buf.truncate(start);
    }
    result
}

/// The size in bytes of the PUBLISH [`encode_publish`] writes for these arguments (header
/// included): what an MQTT 5 client's Maximum Packet Size is compared with.
pub fn publish_packet_len(
    topic: &str,
    payload_len: usize,
    qos: QoS,
    properties: Option<&Properties>,
    version: ProtocolVersion,
) -> usize {
    // Only the lengths matter: a zero-length stand-in payload and a placeholder packet id.
    let fields = PublishFields {
        topic,
        payload: &[],
        qos,
        retain: false,
        dup: false,
        packet_id: (qos != QoS::AtMostOnce).then_some(1),
        properties,
    };
    let remaining = publish_remaining_len(&fields, version == ProtocolVersion::V5) + payload_len;
    1 + var_int_len(remaining) + remaining
}

/// The remaining length of a PUBLISH of `p`.
fn publish_remaining_len(p: &PublishFields, v5: bool) -> usize {
    let mut len = prefixed_len(p.topic.as_bytes()) + p.payload.len();
    if p.packet_id.is_some() {
        len += 2;
    }
    if v5 {
        len += properties_block_len(p.properties);
    }
    len
}

/// A PUBLISH's fields, borrowed from a [`Publish`] or from a queued message.
struct PublishFields<'a> {
    topic: &'a str,
    payload: &'a [u8],
    qos: QoS,
    retain: bool,
    dup: bool,
    packet_id: Option<u16>,
    properties: Option<&'a Properties>,
}

fn put_publish(buf: &mut BytesMut, p: &Publish, v5: bool) -> Result<(), EncodeError> {
    let fields = PublishFields {
        topic: &p.topic,
        payload: &p.payload,
        qos: p.qos,
        retain: p.retain,
        dup: p.dup,
        packet_id: p.packet_id,
        properties: props(&p.properties),
    };
    put_publish_fields(buf, &fields, v5)
}

fn put_publish_fields(buf: &mut BytesMut, p: &PublishFields, v5: bool) -> Result<(), EncodeError> {
    const P: &str = "PUBLISH";
    match (p.qos, p.packet_id) {
        (QoS::AtMostOnce, None) => {
            if p.dup {
                return Err(invalid(P, "DUP set at QoS 0"));
            }
        }
        (QoS::AtMostOnce, Some(_)) => return Err(invalid(P, "a packet identifier at QoS 0")),
        (_, None) => return Err(invalid(P, "no packet identifier at QoS 1 or 2")),
        (_, Some(0)) => return Err(invalid(P, "packet identifier 0")),
        (_, Some(_)) => {}
    }
    let len = publish_remaining_len(p, v5);
    let first_byte = 0x30 | u8::from(p.dup) << 3 | (p.qos as u8) << 1 | u8::from(p.retain);
    put_header(buf, first_byte, len)?;
    put_prefixed(buf, p.topic.as_bytes(), P, "topic name")?;
    if let Some(packet_id) = p.packet_id {
        buf.put_u16(packet_id);
    }
    if v5 {
        put_properties(buf, p.properties, PropertyContext::Publish, P)?;
    }
    buf.put_slice(p.payload);
    Ok(())
}

fn check_packet_id(packet_id: u16, packet: &'static str) -> Result<(), EncodeError> {
    if packet_id == 0 {
        return Err(invalid(packet, "packet identifier 0"));
    }
    Ok(())
}

/// PUBACK / PUBREC / PUBREL / PUBCOMP in the shortest form MQTT 5 allows.
fn put_ack(buf: &mut BytesMut, first_byte: u8, ack: &Ack, v5: bool) -> Result<(), EncodeError> {
    let packet = match first_byte {
        0x40 => "PUBACK",
        0x50 => "PUBREC",
        0x62 => "PUBREL",
        _ => "PUBCOMP",
    };
    check_packet_id(ack.packet_id, packet)?;
    let properties = props(&ack.properties);
    let no_properties = is_empty(properties);
    if !v5 || (ack.reason == 0 && no_properties) {
        put_header(buf, first_byte, 2)?;
        buf.put_u16(ack.packet_id);
    } else if no_properties {
        put_header(buf, first_byte, 3)?;
        buf.put_u16(ack.packet_id);
        buf.put_u8(ack.reason);
    } else {
        put_header(buf, first_byte, 3 + properties_block_len(properties))?;
        buf.put_u16(ack.packet_id);
        buf.put_u8(ack.reason);
        put_properties(buf, properties, PropertyContext::Ack, packet)?;
    }
    Ok(())
}

fn put_subscribe(buf: &mut BytesMut, s: &Subscribe, v5: bool) -> Result<(), EncodeError> {
    const P: &str = "SUBSCRIBE";
    check_packet_id(s.packet_id, P)?;
    if s.filters.is_empty() {
        return Err(invalid(P, "no topic filter"));
    }
    let properties = props(&s.properties);
    let mut len = 2;
    if v5 {
        len += properties_block_len(properties);
    }
    len += s
        .filters
        .iter()
        .map(|(filter, _)| prefixed_len(filter.as_bytes()) + 1)
        .sum::<usize>();
    put_header(buf, 0x82, len)?;
    buf.put_u16(s.packet_id);
    if v5 {
        put_properties(buf, properties, PropertyContext::Subscribe, P)?;
    }
    for (filter, options) in &s.filters {
        put_prefixed(buf, filter.as_bytes(), P, "topic filter")?;
        let mut byte = options.qos as u8;
        if v5 {
            byte |= u8::from(options.no_local) << 2
                | u8::from(options.retain_as_published) << 3
                | (options.retain_handling as u8) << 4;
        }
        buf.put_u8(byte);
    }
    Ok(())
}

/// MQTT 3.x SUBACK knows only 0, 1, 2 and 0x80, so every MQTT 5 failure code becomes 0x80.
fn put_suback(buf: &mut BytesMut, s: &SubAck, v5: bool) -> Result<(), EncodeError> {
    const P: &str = "SUBACK";
    check_packet_id(s.packet_id, P)?;
    if s.return_codes.is_empty() {
        return Err(invalid(P, "no return code"));
    }
    let valid = if v5 {
        reason::valid_suback_reason_v5
    } else {
        |code: u8| code <= 2 || code >= 0x80
    };
    if !s.return_codes.iter().all(|&code| valid(code)) {
        return Err(invalid(P, "a return code SUBACK cannot carry"));
    }
    let properties = props(&s.properties);
    let mut len = 2 + s.return_codes.len();
    if v5 {
        len += properties_block_len(properties);
    }
    put_header(buf, 0x90, len)?;
    buf.put_u16(s.packet_id);
    if v5 {
        put_properties(buf, properties, PropertyContext::SubAck, P)?;
        buf.put_slice(&s.return_codes);
    } else {
        for &code in &s.return_codes {
            buf.put_u8(if code >= 0x80 { 0x80 } else { code });
        }
    }
    Ok(())
}

fn put_unsubscribe(buf: &mut BytesMut, u: &Unsubscribe, v5: bool) -> Result<(), EncodeError> {
    const P: &str = "UNSUBSCRIBE";
    check_packet_id(u.packet_id, P)?;
    if u.filters.is_empty() {
        return Err(invalid(P, "no topic filter"));
    }
    let properties = props(&u.properties);
    let mut len = 2 + u
        .filters
        .iter()
        .map(|filter| prefixed_len(filter.as_bytes()))
        .sum::<usize>();
    if v5 {
        len += properties_block_len(properties);
    }
    put_header(buf, 0xA2, len)?;
    buf.put_u16(u.packet_id);
    if v5 {
        put_properties(buf, properties, PropertyContext::Unsubscribe, P)?;
    }
    for filter in &u.filters {
        put_prefixed(buf, filter.as_bytes(), P, "topic filter")?;
    }
    Ok(())
}

/// MQTT 3.x UNSUBACK is the packet identifier alone; the reason codes are MQTT 5 only.
fn put_unsuback(buf: &mut BytesMut, u: &UnsubAck, v5: bool) -> Result<(), EncodeError> {
    const P: &str = "UNSUBACK";
    check_packet_id(u.packet_id, P)?;
    if !v5 {
        put_header(buf, 0xB0, 2)?;
        buf.put_u16(u.packet_id);
        return Ok(());
    }
    if u.reason_codes.is_empty() {
        return Err(invalid(
            P,
            "no reason code (MQTT 5 needs one per topic filter)",
        ));
    }
    let properties = props(&u.properties);
    put_header(
        buf,
        0xB0,
        2 + properties_block_len(properties) + u.reason_codes.len(),
    )?;
    buf.put_u16(u.packet_id);
    put_properties(buf, properties, PropertyContext::UnsubAck, P)?;
    buf.put_slice(&u.reason_codes);
    Ok(())
}

fn put_disconnect(buf: &mut BytesMut, d: &Disconnect, v5: bool) -> Result<(), EncodeError> {
    let properties = props(&d.properties);
    let no_properties = is_empty(properties);
    if !v5 || (d.reason == 0 && no_properties) {
        put_header(buf, 0xE0, 0)
    } else if no_properties {
        put_header(buf, 0xE0, 1)?;
        buf.put_u8(d.reason);
        Ok(())
    } else {
        put_header(buf, 0xE0, 1 + properties_block_len(properties))?;
        buf.put_u8(d.reason);
        put_properties(buf, properties, PropertyContext::Disconnect, "DISCONNECT")
    }
}

fn put_auth(buf: &mut BytesMut, a: &Auth) -> Result<(), EncodeError> {
    let properties = props(&a.properties);
    if a.reason == 0 && is_empty(properties) {
        return put_header(buf, 0xF0, 0);
    }
    put_header(buf, 0xF0, 1 + properties_block_len(properties))?;
    buf.put_u8(a.reason);
    put_properties(buf, properties, PropertyContext::Auth, "AUTH")
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn via_packet(p: &Publish, version: ProtocolVersion) -> Result<BytesMut, EncodeError> {
        let mut buf = BytesMut::from(&b"prefix"[..]);
        encode(&Packet::Publish(p.clone()), version, &mut buf).map(|()| buf)
    }

    fn via_parts(p: &Publish, version: ProtocolVersion) -> Result<BytesMut, EncodeError> {
        let mut buf = BytesMut::from(&b"prefix"[..]);
        encode_publish(
            &p.topic,
            &p.payload,
            p.qos,
            p.retain,
            p.dup,
            p.packet_id,
            p.properties.as_deref(),
            version,
            &mut buf,
        )
        .map(|()| buf)
    }

    #[test]
    fn encode_publish_is_byte_identical_to_encoding_the_packet() {
        let versions = [
            ProtocolVersion::V31,
            ProtocolVersion::V311,
            ProtocolVersion::V5,
        ];
        // Sizes around the remaining-length varint boundaries (1, 2 and 3 bytes).
        let payload_sizes = [0, 1, 64, 120, 127, 128, 16_000, 16_384, 70_000];
        let mut checked = 0;
        for version in versions {
            for size in payload_sizes {
                for (qos, packet_id, dup) in [
                    (QoS::AtMostOnce, None, false),
                    (QoS::AtLeastOnce, Some(1), false),
                    (QoS::AtLeastOnce, Some(65_535), true),
                    (QoS::ExactlyOnce, Some(300), true),
                ] {
                    for retain in [false, true] {
                        let p = Publish {
                            dup,
                            qos,
                            retain,
                            topic: "sensors/ü/temp".to_owned(),
                            packet_id,
                            payload: Bytes::from(vec![0xa5; size]),
                            properties: None,
                        };
                        let expected = via_packet(&p, version).expect("packet encodes");
                        assert_eq!(
                            via_parts(&p, version).expect("parts encode"),
                            expected,
                            "{version:?} {qos:?} retain={retain} dup={dup} size={size}"
                        );
                        checked += 1;
                    }
                }
            }
        }
        assert_eq!(checked, 3 * 9 * 4 * 2);
    }

    #[test]
    fn encode_publish_refuses_what_encode_refuses_and_appends_nothing() {
        let bad = [
            (QoS::AtMostOnce, Some(5), false),
            (QoS::AtMostOnce, None, true),
            (QoS::AtLeastOnce, None, false),
            (QoS::ExactlyOnce, Some(0), false),
        ];
        for (qos, packet_id, dup) in bad {
            let p = Publish {
                dup,
                qos,
                retain: false,
                topic: "t".to_owned(),
                packet_id,
                payload: Bytes::from_static(b"x"),
                properties: None,
            };
            let from_packet = via_packet(&p, ProtocolVersion::V311).expect_err("refused");
            let mut buf = BytesMut::from(&b"prefix"[..]);
            let from_parts = encode_publish(
                &p.topic,
                &p.payload,
                qos,
                false,
                dup,
                packet_id,
                None,
                ProtocolVersion::V311,
                &mut buf,
            )
            .expect_err("refused");
            assert_eq!(from_parts.to_string(), from_packet.to_string());
            assert_eq!(&buf[..], b"prefix");
        }
        let long_topic = "t".repeat(70_000);
        let mut buf = BytesMut::new();
        assert!(encode_publish(
            &long_topic,
            b"",
            QoS::AtMostOnce,
            false,
            false,
            None,
            None,
            ProtocolVersion::V5,
            &mut buf,
        )
        .is_err());
        assert!(buf.is_empty());
    }
}
