//! IO-free STOMP 1.0/1.1/1.2 codec (<https://stomp.github.io/>): bytes in, [`Frame`]s out, and
//! back. No sockets, no tasks; the broker's STOMP connection task drives it.
//!
//! Frames keep their headers in wire order, repeated ones included: STOMP 1.2 says the first
//! occurrence of a repeated header wins ([`Frame::header`] returns it), and a frame re-encoded
//! keeps what it had.

mod frame;

pub use frame::{Command, Frame, Version};
