//! IO-free MQTT codec: bytes in, [`Packet`]s out, and back. No sockets, no tasks.

pub mod codec;
pub mod packet;
pub mod stomp;
pub mod topic;

pub use codec::{decode, encode, properties_len, DecodeError, EncodeError, ReasonCode};
pub use packet::*;
pub use topic::TopicError;
