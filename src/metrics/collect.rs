//! Reading the broker into metric families, at scrape time.

use std::time::SystemTime;

use super::access::protocol_name;
use super::family::{Family, Kind};
use super::histogram::HistogramSnapshot;
use super::latency::DeliveredBy;
use super::reason::Reason;
use crate::broker::runtime::BrokerCore;
use crate::config::Protocol;

const QOS: [&str; 3] = ["0", "1", "2"];

/// Every family of `core`, read now.
pub(super) fn collect(core: &BrokerCore) -> Vec<Family> {
    let mut out = Vec::new();
    connections(core, &mut out);
    messages(core, &mut out);
    delivery_latency(core, &mut out);
    stomp_frames(core, &mut out);
    sessions(core, &mut out);
    resources(core, &mut out);
    reloads(core, &mut out);
    out.push(
        Family::new("build_info", "The broker's version.", Kind::Gauge).with(
            "version",
            env!("CARGO_PKG_VERSION"),
            1,
        ),
    );
    out
}

fn lp(listener: &str, protocol: Protocol) -> Vec<(&'static str, String)> {
    vec![
        ("listener", listener.to_owned()),
        ("protocol", protocol_name(protocol).to_owned()),
    ]
}

fn connections(core: &BrokerCore, out: &mut Vec<Family>) {
    let listeners = core.metrics.listeners.all();
    let mut current = Family::new(
        "connections",
        "Connections open now, per connector and protocol.",
        Kind::Gauge,
    );
    let mut accepted = Family::new(
        "connections_accepted",
        "Sockets accepted, per connector (before any TLS or WebSocket handshake).",
        Kind::Counter,
    );
    let mut opened = Family::new(
        "connections_opened",
        "Connections that started speaking the protocol (after any TLS/WebSocket handshake).",
        Kind::Counter,
    );
    let mut established = Family::new(
        "connections_established",
        "Connections whose CONNECT was accepted.",
        Kind::Counter,
    );
    let mut closed = Family::new(
        "connections_closed",
        "Established connections that ended, by reason.",
        Kind::Counter,
    );
    let mut refused = Family::new(
        "connections_refused",
        "Connections refused or ended before they were established, by reason.",
        Kind::Counter,
    );
    let mut tls = Family::new(
        "tls_handshakes",
        "TLS handshakes on TLS connectors, by result.",
        Kind::Counter,
    );
    let mut auth = [0u64; Reason::COUNT];
    for stats in &listeners {
        let name = &*stats.name;
        accepted = accepted.sample(
            vec![("listener", name.to_owned())],
            stats.accepted.load(std::sync::atomic::Ordering::Relaxed),
        );
        for protocol in [Protocol::Mqtt, Protocol::Stomp] {
            let c = stats.of(protocol);
            let opened_now = c.opened.load(std::sync::atomic::Ordering::Relaxed);
            let any_refused = Reason::REFUSE.iter().any(|r| c.refused(*r) > 0);
            // A connector's own protocol always; the other only once it was spoken (a
            // WebSocket connector serving STOMP).
            if protocol != stats.default_protocol && opened_now == 0 && !any_refused {
                continue;
            }
            current = current.sample(lp(name, protocol), c.current());
            opened = opened.sample(lp(name, protocol), opened_now);
            established = established.sample(
                lp(name, protocol),
                c.connected.load(std::sync::atomic::Ordering::Relaxed),
            );
            for reason in Reason::CLOSE {
                let mut labels = lp(name, protocol);
                labels.push(("reason", reason.as_str().to_owned()));
                closed = closed.sample(labels, c.closed(reason));
                if reason.is_auth_failure() {
                    auth[reason.index()] += c.closed(reason);
                }
            }
            for reason in Reason::REFUSE {
                let mut labels = lp(name, protocol);
                labels.push(("reason", reason.as_str().to_owned()));
                refused = refused.sample(labels, c.refused(reason));
                if reason.is_auth_failure() {
                    auth[reason.index()] += c.refused(reason);
                }
            }
        }
        let ok = stats
            .tls_handshakes
            .load(std::sync::atomic::Ordering::Relaxed);
        let failed = stats
            .tls_failures
            .load(std::sync::atomic::Ordering::Relaxed);
        if stats.tls {
            tls = tls
                .sample(
                    vec![("listener", name.to_owned()), ("result", "ok".into())],
                    ok,
                )
                .sample(
                    vec![("listener", name.to_owned()), ("result", "failed".into())],
                    failed,
                );
        }
    }
    let mut auth_failures = Family::new(
        "auth_failures",
        "Failed authentications (CONNECT refused, MQTT 5 re-authentication failed, web console login refused), by reason.",
        Kind::Counter,
    );
    for reason in Reason::ALL.iter().filter(|r| r.is_auth_failure()) {
        auth_failures = auth_failures.with("reason", reason.as_str(), auth[reason.index()]);
    }
    auth_failures = auth_failures.with(
        "reason",
        "console",
        core.metrics
            .console_auth_failures
            .load(std::sync::atomic::Ordering::Relaxed),
    );
    let parked = Family::gauge(
        "connections_parked",
        "Idle plain-TCP MQTT connections parked now (no task of their own; counted in connections too).",
        core.counters.connections_parked() as f64,
    );
    out.extend([
        current,
        parked,
        accepted,
        opened,
        established,
        closed,
        refused,
        tls,
        auth_failures,
    ]);
}

fn messages(core: &BrokerCore, out: &mut Vec<Family>) {
    let c = core.counters.snapshot();
    let by_qos = |name, help, values: [u64; 3], bytes: bool| {
        let mut family = Family::new(name, help, Kind::Counter);
        if bytes {
            family = family.unit_bytes();
        }
        QOS.iter()
            .zip(values)
            .fold(family, |f, (qos, v)| f.with("qos", qos, v))
    };
    out.push(by_qos(
        "messages_received",
        "Messages received from clients (MQTT PUBLISH, STOMP SEND), by QoS (STOMP: 0 \
         non-persistent, 1 persistent).",
        c.messages_in_by_qos,
        false,
    ));
    out.push(by_qos(
        "payload_received",
        "Payload bytes of the messages received, by QoS.",
        c.bytes_in_by_qos,
        true,
    ));
    out.push(by_qos(
        "messages_sent",
        "Messages written to clients (including retransmissions), by QoS.",
        c.messages_out_by_qos,
        false,
    ));
    out.push(by_qos(
        "payload_sent",
        "Payload bytes of the messages sent, by QoS.",
        c.bytes_out_by_qos,
        true,
    ));
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
            "publishes_held",
            "QoS 1/2 publishes held back (not acknowledged, the publisher paused), by cause.",
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
}

/// The frames a STOMP client sends once connected (CONNECT itself is counted in the
/// connection metrics).
const STOMP_CLIENT_COMMANDS: [crate::protocol::stomp::Command; 9] = {
    use crate::protocol::stomp::Command as C;
    [
        C::Send,
        C::Subscribe,
        C::Unsubscribe,
        C::Ack,
        C::Nack,
        C::Begin,
        C::Commit,
        C::Abort,
        C::Disconnect,
    ]
};

fn stomp_frames(core: &BrokerCore, out: &mut Vec<Family>) {
    let received = core.counters.snapshot().stomp_frames_in;
    let family = Family::new(
        "stomp_frames_received",
        "STOMP frames received from connected clients, by command.",
        Kind::Counter,
    );
    out.push(STOMP_CLIENT_COMMANDS.iter().fold(family, |f, c| {
        f.with(
            "command",
            c.as_str(),
            received.get(*c as usize).copied().unwrap_or(0),
        )
    }));
}

fn sessions(core: &BrokerCore, out: &mut Vec<Family>) {
    let census = core.registry.census();
    // MQTT sessions only, as the console's overview and /api/sessions count them: STOMP keeps
    // its topic subscriptions as sessions too, and its durable ones have their own figure.
    out.push(
        Family::new(
            "sessions",
            "MQTT sessions: online (a connection holds it) and offline (persistent, no \
             connection).",
            Kind::Gauge,
        )
        .with("state", "online", census.online)
        .with("state", "offline", census.offline),
    );
    out.push(
        Family::new(
            "stomp_durable_subscriptions",
            "STOMP durable topic subscriptions: online (a connected client consumes it) and \
             offline (kept, no consumer).",
            Kind::Gauge,
        )
        .with("state", "online", census.stomp_durable_online)
        .with("state", "offline", census.stomp_durable_offline),
    );
    out.push(Family::gauge(
        "subscriptions",
        "Topic subscriptions (filters) over all sessions.",
        core.subscriptions.read().len() as f64,
    ));
    out.push(Family::gauge(
        "retained_messages",
        "Retained messages held.",
        core.retained.read().len() as f64,
    ));
    out.push(Family::gauge(
        "queued_messages",
        "Messages queued for delivery to MQTT sessions and STOMP topic subscriptions, summed \
         (queues: ferromq_destination_queue_messages).",
        census.queued as f64,
    ));
    out.push(Family::gauge(
        "queue_depth_max",
        "The longest MQTT session queue (per-session depths are in the JSON API).",
        census.deepest_queue as f64,
    ));
    let queues = core.queues.totals();
    out.push(Family::gauge(
        "destination_queues",
        "Queues (ActiveMQ queue destinations, temporary ones included).",
        queues.queues as f64,
    ));
    out.push(Family::gauge(
        "destination_queue_messages",
        "Messages held by queues (ready, dispatched and unacknowledged), summed over all queues.",
        queues.messages as f64,
    ));
    out.push(Family::gauge(
        "destination_queue_depth_max",
        "The deepest queue's depth (per-queue depths are in the JSON API).",
        queues.deepest as f64,
    ));
}

fn resources(core: &BrokerCore, out: &mut Vec<Family>) {
    out.push(
        Family::new(
            "memory_usage",
            "Bytes of messages held in memory, counted against memoryUsage.",
            Kind::Gauge,
        )
        .unit_bytes()
        .sample(vec![], core.memory.used_bytes()),
    );
    // Without a limit (`limit="0"`) there is no figure: a 0 would read as always full to a
    // rule that divides usage by it, as the store's limit is left out without one.
    if let Some(limit) = core.memory.limit_bytes() {
        out.push(
            Family::new("memory_limit", "The memoryUsage limit.", Kind::Gauge)
                .unit_bytes()
                .sample(vec![], limit),
        );
    }
    let durability = core.durability();
    if !durability.keeps_sessions() {
        return;
    }
    let s = durability.stats();
    out.push(
        Family::new(
            "store_usage",
            "Bytes of message bodies in the durable store (what storeUsage counts).",
            Kind::Gauge,
        )
        .unit_bytes()
        .sample(vec![], s.message_bytes),
    );
    if let Some(limit) = s.limit_bytes {
        out.push(
            Family::new("store_limit", "The storeUsage limit.", Kind::Gauge)
                .unit_bytes()
                .sample(vec![], limit),
        );
    }
    out.push(Family::counter(
        "store_commits",
        "Group commits of the durable store (one fsync each).",
        s.group_commits,
    ));
    out.push(histogram(
        "store_commit",
        "Time of each group commit of the durable store, fsync included.",
        &s.commit_seconds,
    ));
}

fn delivery_latency(core: &BrokerCore, out: &mut Vec<Family>) {
    let latency = &core.metrics.delivery_latency;
    let family = [("mqtt", DeliveredBy::Mqtt), ("stomp", DeliveredBy::Stomp)]
        .into_iter()
        .fold(
            Family::new(
                "delivery_latency",
                "Time from a publish being received to its delivery being written to a \
                 subscriber's output buffer, per subscriber protocol; sampled: one publish \
                 in 64 per QoS, the first delivery of each copy (once per delivered copy).",
                Kind::Histogram,
            )
            .unit_seconds(),
            |family, (name, protocol)| {
                let h = latency.snapshot(protocol);
                family.histogram(
                    vec![("protocol", name.to_owned())],
                    h.buckets(),
                    h.sum_seconds(),
                    h.count(),
                )
            },
        );
    out.push(family);
}

fn histogram(name: &'static str, help: &'static str, h: &HistogramSnapshot) -> Family {
    Family::new(name, help, Kind::Histogram)
        .unit_seconds()
        .histogram(vec![], h.buckets(), h.sum_seconds(), h.count())
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn reloads(core: &BrokerCore, out: &mut Vec<Family>) {
    let stats = core
        .metrics
        .reload
        .lock()
        .as_ref()
        .map(|r| r.borrow().clone())
        .unwrap_or_default();
    out.push(
        Family::new(
            "reloads",
            "Configuration reloads, by result (failed: invalid file, rejected or partial apply).",
            Kind::Counter,
        )
        .with("result", "ok", stats.reloads_ok)
        .with("result", "failed", stats.reloads_failed),
    );
    let last = match (stats.last_success, stats.last_failure) {
        (None, None) => "none",
        (Some(_), None) => "ok",
        (None, Some(_)) => "failed",
        (Some(ok), Some(failed)) if ok >= failed => "ok",
        _ => "failed",
    };
    out.push(
        Family::new(
            "reload_last_result",
            "1 for the result of the last reload: ok, failed or none (no reload yet).",
            Kind::Gauge,
        )
        .with("result", last, 1),
    );
    let last_at = stats
        .last_success
        .into_iter()
        .chain(stats.last_failure)
        .max()
        .map(unix_seconds);
    if let Some(at) = last_at {
        out.push(Family::gauge(
            "reload_last_timestamp_seconds",
            "When the last reload ended (Unix time).",
            at,
        ));
    }
}
