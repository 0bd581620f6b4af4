//! `/metrics` until the broker's own Prometheus renderer is wired in: the broker-wide
//! counters in Prometheus' text format (version 0.0.4).

use std::fmt::Write;

use crate::broker::BrokerCore;

/// The counters and gauges of `core` as Prometheus text.
pub fn render(core: &BrokerCore) -> String {
    let c = core.counters.snapshot();
    let (mqtt, stomp) = core.clients.counts();
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        let _ = writeln!(out, "{name} {value}");
    };
    metric(
        "ferromq_connections_accepted_total",
        "counter",
        "Sockets accepted.",
        c.connections_accepted,
    );
    metric(
        "ferromq_connections_current",
        "gauge",
        "Connection tasks running.",
        c.connections_current,
    );
    metric(
        "ferromq_clients_mqtt",
        "gauge",
        "Established MQTT connections.",
        mqtt as u64,
    );
    metric(
        "ferromq_clients_stomp",
        "gauge",
        "Established STOMP connections.",
        stomp as u64,
    );
    metric(
        "ferromq_messages_received_total",
        "counter",
        "PUBLISH packets received from clients.",
        c.messages_in,
    );
    metric(
        "ferromq_messages_sent_total",
        "counter",
        "PUBLISH packets written to clients.",
        c.messages_out,
    );
    metric(
        "ferromq_memory_used_bytes",
        "gauge",
        "Bytes of messages held against memoryUsage.",
        core.memory.used_bytes(),
    );
    out
}
