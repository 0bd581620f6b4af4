//! IO-free STOMP 1.0/1.1/1.2 codec (<https://stomp.github.io/>): bytes in, [`Frame`]s out, and
//! back. No sockets, no tasks; the broker's STOMP connection task drives it.
//!
//! Frames keep their headers in wire order, repeated ones included: STOMP 1.2 says the first
//! occurrence of a repeated header wins ([`Frame::header`] returns it), and a frame re-encoded
//! keeps what it had.
//!
//! [`Decoder`] reads a connection's byte stream (frames and heart-beats) within
//! [`StompLimits`]; [`encode`] writes a frame for a negotiated [`Version`].

mod decode;
mod encode;
mod error;
mod escape;
mod frame;

pub use decode::{BodyInProgress, Decoded, Decoder};
pub use encode::{encode, HEART_BEAT};
pub use error::{StompError, StompLimits};
pub use frame::{Command, Frame, Version};
