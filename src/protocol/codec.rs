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

pub use decode::decode;
pub use encode::{encode, encode_publish, publish_packet_len};
pub use error::{DecodeError, EncodeError};
pub use reason::{connect_reason_code_v5, connect_return_code_v3, ReasonCode};
