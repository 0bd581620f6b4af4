//! The chaos harness (docs/chaos.md): a QoS 1 load over a list of broker addresses
//! ([`load`]), what its clients saw ([`recorder`]), the figures of a run ([`checker`]: lost,
//! duplicated and reordered messages, stalls, resume times), and scenario S0-single on one
//! durable broker process ([`single`]).
//!
//! Self-contained (no other test support module), so that both a test binary and
//! `examples/chaos.rs` include it with `#[path = ".../tests/support/chaos/mod.rs"] mod chaos;`.
//! A scenario is [`load::run`] with a fault hook: an async closure run at a given time into
//! the load, which marks in its [`recorder::FaultLog`] when it struck.
#![allow(dead_code)] // each includer uses a different part

pub mod audit;
pub mod checker;
pub mod cluster;
pub mod faults;
pub mod load;
pub mod mqtt;
pub mod partition;
pub mod qos2_sub;
pub mod recorder;
pub mod rolling;
pub mod single;
