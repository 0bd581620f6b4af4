//! The MQTT codec: [`decode`] turns the bytes at the front of a buffer into one [`Packet`],
//! [`encode`] appends a packet's bytes. No IO, no state beyond the protocol version the caller
//! passes in, so the same code serves every transport (TCP, TLS, WebSocket) and the tests.
//!
//! [`Packet`]: super::packet::Packet

mod decode;
mod encode;
mod error;
mod properties;
mod reason;
mod wire;

pub use decode::{complete_packets, decode, decode_frozen, take_plain_puback, CompletePackets};
pub use encode::{encode, encode_publish, publish_packet_len};
pub use error::{DecodeError, EncodeError};

/// The encoded length in bytes of an MQTT 5 property block's content (without its length
/// prefix; MQTT 5 2.2.2): what a message's properties cost as their encoded form.
pub fn properties_len(properties: &crate::protocol::Properties) -> usize {
    properties::properties_content_len(Some(properties))
}
pub use reason::{connect_reason_code_v5, connect_return_code_v3, ReasonCode};

/// MQTT 5 message or will properties (the will set of MQTT 5 Table 2-4: payload format,
/// message expiry, content type, response topic, correlation data, user properties, will
/// delay) as one property block (variable byte integer length, then the properties in
/// identifier order), for keeping with a stored message. `Err`: a property outside that set,
/// or a block too large for the wire.
pub fn encode_message_properties(
    properties: &crate::protocol::Properties,
) -> Result<bytes::Bytes, EncodeError> {
    let mut buf =
        bytes::BytesMut::with_capacity(properties::properties_block_len(Some(properties)));
    properties::put_properties(
        &mut buf,
        Some(properties),
        properties::PropertyContext::Will,
        "stored properties",
    )?;
    Ok(buf.freeze())
}

/// The inverse of [`encode_message_properties`]: `block` must be exactly one property block.
/// `Ok(None)` for an empty block. `Err`: damaged bytes, a property outside the will set.
pub fn decode_message_properties(
    block: &bytes::Bytes,
) -> Result<Option<Box<crate::protocol::Properties>>, DecodeError> {
    let mut reader = wire::Reader::new(block, "stored properties");
    let properties = properties::read_properties(&mut reader, properties::PropertyContext::Will)?;
    if !reader.is_empty() {
        return Err(reader.malformed("bytes after the property block"));
    }
    Ok(properties)
}
