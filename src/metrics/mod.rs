//! Prometheus metrics: [`render`] reads the broker's counters (relaxed atomics kept by
//! [`crate::broker::counters`]) at scrape time and writes them in the Prometheus text format
//! (version 0.0.4, see [`CONTENT_TYPE`]).
//!
//! Nothing here runs on the publish path: the broker only bumps its atomics; the exposition
//! (names, help, escaping, `_total` suffixes) is `prometheus-client`'s encoder, fed a
//! snapshot taken when the scrape arrives. Labels are bounded (listener, protocol, reason,
//! qos): never a client id or a topic.

pub mod access;
mod collect;
mod family;
pub mod histogram;
pub mod latency;
pub mod listener;
pub mod reason;

use crate::broker::runtime::BrokerCore;

pub use family::{Family, Kind, Sample, Value};
pub use listener::{ListenerRegistry, ListenerStats};
pub use reason::Reason;

/// What the scrape reads besides [`BrokerCore::counters`]; lives in the core.
#[derive(Debug, Default)]
pub struct Sources {
    /// Every connector's connection counters.
    pub listeners: ListenerRegistry,
    /// The hot reload's counters, once reload is enabled.
    pub reload:
        parking_lot::Mutex<Option<tokio::sync::watch::Receiver<crate::reload::ReloadStats>>>,
    /// Sampled publish-to-write latencies (see [`latency`]).
    pub delivery_latency: latency::DeliveryLatency,
    /// Failed web console logins (wrong user name or password), counted in
    /// `ferromq_auth_failures_total{reason="console"}`.
    pub console_auth_failures: std::sync::atomic::AtomicU64,
}

/// The `Content-Type` of what [`render`] returns (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Every metric of `core` in the Prometheus text format, names prefixed `ferromq_`.
pub fn render(core: &BrokerCore) -> String {
    family::encode(collect::collect(core))
}
