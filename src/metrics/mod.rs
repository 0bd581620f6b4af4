//! Prometheus metrics: [`render`] reads the broker's counters (relaxed atomics kept by
//! [`crate::broker::counters`]) at scrape time and writes them in the Prometheus text format
//! (version 0.0.4, see [`CONTENT_TYPE`]).
//!
//! Nothing here runs on the publish path: the broker only bumps its atomics; the exposition
//! (names, help, escaping, `_total` suffixes) is `prometheus-client`'s encoder, fed a
//! snapshot taken when the scrape arrives. Labels are bounded (listener, protocol, reason,
//! qos): never a client id or a topic.

mod family;

use crate::broker::runtime::BrokerCore;

pub use family::{Family, Kind, Sample};

/// The `Content-Type` of what [`render`] returns (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Every metric of `core` in the Prometheus text format, names prefixed `ferromq_`.
pub fn render(core: &BrokerCore) -> String {
    family::encode(collect(core))
}

/// The metric families of `core`, read now.
fn collect(core: &BrokerCore) -> Vec<Family> {
    let c = core.counters.snapshot();
    let mut out = Vec::new();
    out.push(Family::gauge(
        "connections",
        "Connections currently open.",
        c.connections_current as f64,
    ));
    out.push(Family::counter(
        "connections_opened",
        "Connections accepted and handed to a connection task.",
        c.connections_accepted,
    ));
    out.push(
        Family::new(
            "connections_refused",
            "Connections refused, by reason.",
            Kind::Counter,
        )
        .with("reason", "max_connections", c.connections_refused_limit),
    );
    out.push(
        Family::new(
            "messages_received",
            "PUBLISH packets and STOMP SENDs received from clients.",
            Kind::Counter,
        )
        .sample(vec![], c.messages_in),
    );
    out.push(
        Family::new(
            "messages_sent",
            "Messages written to clients (including retransmissions).",
            Kind::Counter,
        )
        .sample(vec![], c.messages_out),
    );
    out.push(
        Family::new(
            "messages_dropped",
            "Messages not delivered, by cause.",
            Kind::Counter,
        )
        .with("cause", "queue_full", c.dropped_queue_full)
        .with("cause", "offline_qos0", c.dropped_offline_qos0)
        .with("cause", "dollar_topic", c.dropped_dollar_topic)
        .with("cause", "not_authorized", c.dropped_not_authorized)
        .with("cause", "not_created", c.dropped_not_created)
        .with("cause", "memory_full", c.dropped_memory_full)
        .with("cause", "packet_too_large", c.dropped_packet_too_large)
        .with("cause", "expired", c.dropped_expired),
    );
    out.push(
        Family::new(
            "publishes_refused",
            "QoS 1/2 publishes held back (publisher paused), by cause.",
            Kind::Counter,
        )
        .with("cause", "store_full", c.refused_store_full)
        .with("cause", "store_unavailable", c.refused_store_unavailable)
        .with("cause", "memory_full", c.refused_memory_full),
    );
    out.push(Family::counter(
        "protocol_errors",
        "Connections closed for a malformed packet or a protocol violation.",
        c.protocol_errors,
    ));
    out.push(Family::counter(
        "wills_published",
        "Will messages published.",
        c.wills_published,
    ));
    out.push(Family::gauge(
        "sessions",
        "Sessions known to the broker (online and offline).",
        core.registry.len() as f64,
    ));
    out.push(Family::gauge(
        "subscriptions",
        "Topic subscriptions (filters) across all sessions.",
        core.subscriptions.read().len() as f64,
    ));
    out.push(Family::gauge(
        "retained_messages",
        "Retained messages held.",
        core.retained.read().len() as f64,
    ));
    out.push(
        Family::new(
            "memory_usage",
            "Bytes of messages held in memory against memoryUsage.",
            Kind::Gauge,
        )
        .unit_bytes()
        .sample(vec![], core.memory.used_bytes()),
    );
    out.push(
        Family::new("memory_limit", "The memoryUsage limit.", Kind::Gauge)
            .unit_bytes()
            .sample(vec![], core.memory.limit_bytes()),
    );
    out
}
