//! MQTT 5 properties (MQTT 5.0 section 2.2.2): reading with the spec's checks (identifier known,
//! allowed on this packet, not repeated, value in range) and writing in identifier order.

use bytes::{BufMut, Bytes, BytesMut};

use super::error::{DecodeError, EncodeError};
use super::wire::{prefixed_len, put_prefixed, put_var_int, var_int_len, Reader, MAX_VAR_INT};
use crate::protocol::packet::Properties;
use crate::protocol::topic::validate_topic_name;

const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
const CONTENT_TYPE: u8 = 0x03;
const RESPONSE_TOPIC: u8 = 0x08;
const CORRELATION_DATA: u8 = 0x09;
const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
const SERVER_KEEP_ALIVE: u8 = 0x13;
const AUTHENTICATION_METHOD: u8 = 0x15;
const AUTHENTICATION_DATA: u8 = 0x16;
const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
const WILL_DELAY_INTERVAL: u8 = 0x18;
const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
const RESPONSE_INFORMATION: u8 = 0x1A;
const SERVER_REFERENCE: u8 = 0x1C;
const REASON_STRING: u8 = 0x1F;
const RECEIVE_MAXIMUM: u8 = 0x21;
const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
const TOPIC_ALIAS: u8 = 0x23;
const MAXIMUM_QOS: u8 = 0x24;
const RETAIN_AVAILABLE: u8 = 0x25;
const USER_PROPERTY: u8 = 0x26;
const MAXIMUM_PACKET_SIZE: u8 = 0x27;
const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;

/// The place a property block sits in; it decides which properties are allowed (Table 2-4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PropertyContext {
    Connect,
    Will,
    ConnAck,
    Publish,
    /// PUBACK, PUBREC, PUBREL, PUBCOMP.
    Ack,
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck,
    Disconnect,
    Auth,
}

const fn bit(id: u8) -> u64 {
    1u64 << id
}

impl PropertyContext {
    /// Bit set of the property identifiers allowed here.
    fn allowed(self) -> u64 {
        let user = bit(USER_PROPERTY);
        let reason = bit(REASON_STRING);
        let message = bit(PAYLOAD_FORMAT_INDICATOR)
            | bit(MESSAGE_EXPIRY_INTERVAL)
            | bit(CONTENT_TYPE)
            | bit(RESPONSE_TOPIC)
            | bit(CORRELATION_DATA)
            | user;
        let auth = bit(AUTHENTICATION_METHOD) | bit(AUTHENTICATION_DATA);
        match self {
            PropertyContext::Connect => {
                bit(SESSION_EXPIRY_INTERVAL)
                    | auth
                    | bit(REQUEST_PROBLEM_INFORMATION)
                    | bit(REQUEST_RESPONSE_INFORMATION)
                    | bit(RECEIVE_MAXIMUM)
                    | bit(TOPIC_ALIAS_MAXIMUM)
                    | bit(MAXIMUM_PACKET_SIZE)
                    | user
            }
            PropertyContext::Will => message | bit(WILL_DELAY_INTERVAL),
            PropertyContext::ConnAck => {
                bit(SESSION_EXPIRY_INTERVAL)
                    | bit(ASSIGNED_CLIENT_IDENTIFIER)
                    | bit(SERVER_KEEP_ALIVE)
                    | auth
                    | bit(RESPONSE_INFORMATION)
                    | bit(SERVER_REFERENCE)
                    | reason
                    | bit(RECEIVE_MAXIMUM)
                    | bit(TOPIC_ALIAS_MAXIMUM)
                    | bit(MAXIMUM_QOS)
                    | bit(RETAIN_AVAILABLE)
                    | bit(MAXIMUM_PACKET_SIZE)
                    | bit(WILDCARD_SUBSCRIPTION_AVAILABLE)
                    | bit(SUBSCRIPTION_IDENTIFIER_AVAILABLE)
                    | bit(SHARED_SUBSCRIPTION_AVAILABLE)
                    | user
            }
            PropertyContext::Publish => message | bit(SUBSCRIPTION_IDENTIFIER) | bit(TOPIC_ALIAS),
            PropertyContext::Ack | PropertyContext::SubAck | PropertyContext::UnsubAck => {
                reason | user
            }
            PropertyContext::Subscribe => bit(SUBSCRIPTION_IDENTIFIER) | user,
            PropertyContext::Unsubscribe => user,
            PropertyContext::Disconnect => {
                bit(SESSION_EXPIRY_INTERVAL) | bit(SERVER_REFERENCE) | reason | user
            }
            PropertyContext::Auth => auth | reason | user,
        }
    }

    /// Properties that may appear more than once here. User properties always may; a PUBLISH
    /// sent to a subscriber carries one subscription identifier per matching subscription.
    fn repeatable(self) -> u64 {
        match self {
            PropertyContext::Publish => bit(USER_PROPERTY) | bit(SUBSCRIPTION_IDENTIFIER),
            _ => bit(USER_PROPERTY),
        }
    }
}

/// Reads a property block (length, then properties). `None` when the block is empty, so packets
/// without properties cost no allocation.
pub(super) fn read_properties(
    reader: &mut Reader<'_>,
    context: PropertyContext,
) -> Result<Option<Box<Properties>>, DecodeError> {
    let len = reader.var_int("property length")?;
    if len == 0 {
        return Ok(None);
    }
    let mut block = reader.sub_reader(len as usize, "property block")?;
    let mut properties = Properties::default();
    let mut seen = 0u64;
    while !block.is_empty() {
        // Identifiers are variable byte integers, but every defined one fits in one byte; a
        // multi-byte identifier is therefore an unknown one.
        let id = block.var_int("property identifier")?;
        let id = u8::try_from(id)
            .ok()
            .filter(|&id| id < 64 && property_name(id).is_some())
            .ok_or_else(|| block.malformed("unknown property identifier"))?;
        if context.allowed() & bit(id) == 0 {
            return Err(block.protocol_error("a property is not allowed on this packet type"));
        }
        if seen & bit(id) != 0 && context.repeatable() & bit(id) == 0 {
            return Err(block.protocol_error("a property that may appear only once is repeated"));
        }
        seen |= bit(id);
        read_value(&mut block, id, &mut properties)?;
    }
    if properties.authentication_data.is_some() && properties.authentication_method.is_none() {
        return Err(reader.protocol_error("authentication data without an authentication method"));
    }
    Ok(Some(Box::new(properties)))
}

/// A byte that must be 0 or 1 (the "indicator" and "available" properties).
fn read_flag(block: &mut Reader<'_>, field: &'static str) -> Result<u8, DecodeError> {
    let value = block.u8(field)?;
    if value > 1 {
        return Err(block.protocol_error("a 0-or-1 property has another value"));
    }
    Ok(value)
}

fn read_nonzero_u16(block: &mut Reader<'_>, field: &'static str) -> Result<u16, DecodeError> {
    let value = block.u16(field)?;
    if value == 0 {
        return Err(block.protocol_error("a property that must be non-zero is 0"));
    }
    Ok(value)
}

fn read_value(block: &mut Reader<'_>, id: u8, p: &mut Properties) -> Result<(), DecodeError> {
    match id {
        PAYLOAD_FORMAT_INDICATOR => {
            p.payload_format_indicator = Some(read_flag(block, "payload format indicator")?)
        }
        MESSAGE_EXPIRY_INTERVAL => {
            p.message_expiry_interval = Some(block.u32("message expiry interval")?)
        }
        CONTENT_TYPE => p.content_type = Some(block.string("content type")?),
        RESPONSE_TOPIC => {
            let topic = block.str("response topic")?;
            validate_topic_name(topic).map_err(|error| DecodeError::InvalidTopicName {
                packet: block.packet,
                error,
            })?;
            p.response_topic = Some(topic.to_owned());
        }
        CORRELATION_DATA => p.correlation_data = Some(block.binary("correlation data")?),
        SUBSCRIPTION_IDENTIFIER => {
            let value = block.var_int("subscription identifier")?;
            if value == 0 {
                return Err(block.protocol_error("the subscription identifier is 0"));
            }
            p.subscription_identifiers.push(value);
        }
        SESSION_EXPIRY_INTERVAL => {
            p.session_expiry_interval = Some(block.u32("session expiry interval")?)
        }
        ASSIGNED_CLIENT_IDENTIFIER => {
            p.assigned_client_identifier = Some(block.string("assigned client identifier")?)
        }
        SERVER_KEEP_ALIVE => p.server_keep_alive = Some(block.u16("server keep alive")?),
        AUTHENTICATION_METHOD => {
            p.authentication_method = Some(block.string("authentication method")?)
        }
        AUTHENTICATION_DATA => p.authentication_data = Some(block.binary("authentication data")?),
        REQUEST_PROBLEM_INFORMATION => {
            p.request_problem_information = Some(read_flag(block, "request problem information")?)
        }
        WILL_DELAY_INTERVAL => p.will_delay_interval = Some(block.u32("will delay interval")?),
        REQUEST_RESPONSE_INFORMATION => {
            p.request_response_information = Some(read_flag(block, "request response information")?)
        }
        RESPONSE_INFORMATION => {
            p.response_information = Some(block.string("response information")?)
        }
        SERVER_REFERENCE => p.server_reference = Some(block.string("server reference")?),
        REASON_STRING => p.reason_string = Some(block.string("reason string")?),
        RECEIVE_MAXIMUM => p.receive_maximum = Some(read_nonzero_u16(block, "receive maximum")?),
        TOPIC_ALIAS_MAXIMUM => p.topic_alias_maximum = Some(block.u16("topic alias maximum")?),
        TOPIC_ALIAS => p.topic_alias = Some(read_nonzero_u16(block, "topic alias")?),
        MAXIMUM_QOS => p.maximum_qos = Some(read_flag(block, "maximum QoS")?),
        RETAIN_AVAILABLE => p.retain_available = Some(read_flag(block, "retain available")?),
        USER_PROPERTY => {
            let key = block.string("user property name")?;
            let value = block.string("user property value")?;
            p.user_properties.push((key, value));
        }
        MAXIMUM_PACKET_SIZE => {
            let value = block.u32("maximum packet size")?;
            if value == 0 {
                return Err(block.protocol_error("the maximum packet size is 0"));
            }
            p.maximum_packet_size = Some(value);
        }
        WILDCARD_SUBSCRIPTION_AVAILABLE => {
            p.wildcard_subscription_available =
                Some(read_flag(block, "wildcard subscription available")?)
        }
        SUBSCRIPTION_IDENTIFIER_AVAILABLE => {
            p.subscription_identifier_available =
                Some(read_flag(block, "subscription identifier available")?)
        }
        SHARED_SUBSCRIPTION_AVAILABLE => {
            p.shared_subscription_available =
                Some(read_flag(block, "shared subscription available")?)
        }
        _ => return Err(block.malformed("unknown property identifier")),
    }
    Ok(())
}

/// Human name of a property identifier; `None` for identifiers the spec does not define.
fn property_name(id: u8) -> Option<&'static str> {
    Some(match id {
        PAYLOAD_FORMAT_INDICATOR => "payload format indicator",
        MESSAGE_EXPIRY_INTERVAL => "message expiry interval",
        CONTENT_TYPE => "content type",
        RESPONSE_TOPIC => "response topic",
        CORRELATION_DATA => "correlation data",
        SUBSCRIPTION_IDENTIFIER => "subscription identifier",
        SESSION_EXPIRY_INTERVAL => "session expiry interval",
        ASSIGNED_CLIENT_IDENTIFIER => "assigned client identifier",
        SERVER_KEEP_ALIVE => "server keep alive",
        AUTHENTICATION_METHOD => "authentication method",
        AUTHENTICATION_DATA => "authentication data",
        REQUEST_PROBLEM_INFORMATION => "request problem information",
        WILL_DELAY_INTERVAL => "will delay interval",
        REQUEST_RESPONSE_INFORMATION => "request response information",
        RESPONSE_INFORMATION => "response information",
        SERVER_REFERENCE => "server reference",
        REASON_STRING => "reason string",
        RECEIVE_MAXIMUM => "receive maximum",
        TOPIC_ALIAS_MAXIMUM => "topic alias maximum",
        TOPIC_ALIAS => "topic alias",
        MAXIMUM_QOS => "maximum QoS",
        RETAIN_AVAILABLE => "retain available",
        USER_PROPERTY => "user property",
        MAXIMUM_PACKET_SIZE => "maximum packet size",
        WILDCARD_SUBSCRIPTION_AVAILABLE => "wildcard subscription available",
        SUBSCRIPTION_IDENTIFIER_AVAILABLE => "subscription identifier available",
        SHARED_SUBSCRIPTION_AVAILABLE => "shared subscription available",
        _ => return None,
    })
}

/// One property value on its way out, so size, check and write walk the same list.
enum Value<'a> {
    Byte(u8),
    U16(u16),
    U32(u32),
    VarInt(u32),
    Str(&'a str),
    Binary(&'a Bytes),
    Pair(&'a str, &'a str),
}

impl Value<'_> {
    fn len(&self) -> usize {
        match self {
            Value::Byte(_) => 1,
            Value::U16(_) => 2,
            Value::U32(_) => 4,
            Value::VarInt(value) => var_int_len(*value as usize),
            Value::Str(text) => prefixed_len(text.as_bytes()),
            Value::Binary(data) => prefixed_len(data),
            Value::Pair(key, value) => {
                prefixed_len(key.as_bytes()) + prefixed_len(value.as_bytes())
            }
        }
    }
}

/// Calls `visit` for every present property, in identifier order.
fn for_each<'a>(p: &'a Properties, mut visit: impl FnMut(u8, Value<'a>)) {
    let mut opt = |id: u8, value: Option<Value<'a>>| {
        if let Some(value) = value {
            visit(id, value);
        }
    };
    opt(
        PAYLOAD_FORMAT_INDICATOR,
        p.payload_format_indicator.map(Value::Byte),
    );
    opt(
        MESSAGE_EXPIRY_INTERVAL,
        p.message_expiry_interval.map(Value::U32),
    );
    opt(CONTENT_TYPE, p.content_type.as_deref().map(Value::Str));
    opt(RESPONSE_TOPIC, p.response_topic.as_deref().map(Value::Str));
    opt(
        CORRELATION_DATA,
        p.correlation_data.as_ref().map(Value::Binary),
    );
    for &id in &p.subscription_identifiers {
        opt(SUBSCRIPTION_IDENTIFIER, Some(Value::VarInt(id)));
    }
    opt(
        SESSION_EXPIRY_INTERVAL,
        p.session_expiry_interval.map(Value::U32),
    );
    opt(
        ASSIGNED_CLIENT_IDENTIFIER,
        p.assigned_client_identifier.as_deref().map(Value::Str),
    );
    opt(SERVER_KEEP_ALIVE, p.server_keep_alive.map(Value::U16));
    opt(
        AUTHENTICATION_METHOD,
        p.authentication_method.as_deref().map(Value::Str),
    );
    opt(
        AUTHENTICATION_DATA,
        p.authentication_data.as_ref().map(Value::Binary),
    );
    opt(
        REQUEST_PROBLEM_INFORMATION,
        p.request_problem_information.map(Value::Byte),
    );
    opt(WILL_DELAY_INTERVAL, p.will_delay_interval.map(Value::U32));
    opt(
        REQUEST_RESPONSE_INFORMATION,
        p.request_response_information.map(Value::Byte),
    );
    opt(
        RESPONSE_INFORMATION,
        p.response_information.as_deref().map(Value::Str),
    );
    opt(
        SERVER_REFERENCE,
        p.server_reference.as_deref().map(Value::Str),
    );
    opt(REASON_STRING, p.reason_string.as_deref().map(Value::Str));
    opt(RECEIVE_MAXIMUM, p.receive_maximum.map(Value::U16));
    opt(TOPIC_ALIAS_MAXIMUM, p.topic_alias_maximum.map(Value::U16));
    opt(TOPIC_ALIAS, p.topic_alias.map(Value::U16));
    opt(MAXIMUM_QOS, p.maximum_qos.map(Value::Byte));
    opt(RETAIN_AVAILABLE, p.retain_available.map(Value::Byte));
    for (key, value) in &p.user_properties {
        opt(USER_PROPERTY, Some(Value::Pair(key, value)));
    }
    opt(MAXIMUM_PACKET_SIZE, p.maximum_packet_size.map(Value::U32));
    opt(
        WILDCARD_SUBSCRIPTION_AVAILABLE,
        p.wildcard_subscription_available.map(Value::Byte),
    );
    opt(
        SUBSCRIPTION_IDENTIFIER_AVAILABLE,
        p.subscription_identifier_available.map(Value::Byte),
    );
    opt(
        SHARED_SUBSCRIPTION_AVAILABLE,
        p.shared_subscription_available.map(Value::Byte),
    );
}

/// Length of the properties' content (without the property length prefix).
pub(super) fn properties_content_len(properties: Option<&Properties>) -> usize {
    let mut len = 0;
    if let Some(p) = properties {
        for_each(p, |_, value| len += 1 + value.len());
    }
    len
}

/// Length of a whole property block: length prefix plus content.
pub(super) fn properties_block_len(properties: Option<&Properties>) -> usize {
    let content = properties_content_len(properties);
    var_int_len(content) + content
}

/// True when there is nothing to write (absent or all-default properties).
pub(super) fn is_empty(properties: Option<&Properties>) -> bool {
    properties_content_len(properties) == 0
}

/// Writes a property block, refusing properties not allowed in `context` (the peer would treat
/// them as a protocol error) and values the wire cannot carry.
pub(super) fn put_properties(
    buf: &mut BytesMut,
    properties: Option<&Properties>,
    context: PropertyContext,
    packet: &'static str,
) -> Result<(), EncodeError> {
    let content_len = properties_content_len(properties);
    if content_len > MAX_VAR_INT {
        return Err(EncodeError::TooLarge(content_len));
    }
    put_var_int(buf, content_len);
    let Some(p) = properties else {
        return Ok(());
    };
    let mut result = Ok(());
    for_each(p, |id, value| {
        if result.is_err() {
            return;
        }
        result = put_value(buf, id, value, context, packet);
    });
    result
}

fn put_value(
    buf: &mut BytesMut,
    id: u8,
    value: Value<'_>,
    context: PropertyContext,
    packet: &'static str,
) -> Result<(), EncodeError> {
    let field = property_name(id).unwrap_or("property");
    if context.allowed() & bit(id) == 0 {
        return Err(EncodeError::Invalid {
            packet,
            reason: "a property that is not allowed on this packet type is set",
        });
    }
    buf.put_u8(id);
    match value {
        Value::Byte(byte) => buf.put_u8(byte),
        Value::U16(value) => buf.put_u16(value),
        Value::U32(value) => buf.put_u32(value),
        Value::VarInt(value) => {
            if value == 0 || value as usize > MAX_VAR_INT {
                return Err(EncodeError::Invalid {
                    packet,
                    reason: "a subscription identifier is outside 1..=268435455",
                });
            }
            put_var_int(buf, value as usize);
        }
        Value::Str(text) => put_prefixed(buf, text.as_bytes(), packet, field)?,
        Value::Binary(data) => put_prefixed(buf, data, packet, field)?,
        Value::Pair(key, value) => {
            put_prefixed(buf, key.as_bytes(), packet, field)?;
            put_prefixed(buf, value.as_bytes(), packet, field)?;
        }
    }
    Ok(())
}
