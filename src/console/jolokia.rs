//! A Jolokia-style read of ActiveMQ's Broker MBean
//! (`org.apache.activemq:type=Broker,brokerName=NAME`), so that scripts and monitoring checks
//! written for ActiveMQ's `/api/jolokia/read/...` keep working. Read only; an unknown MBean or
//! attribute is answered as Jolokia answers it: HTTP 200 with `"status": 404` and the JMX
//! exception's name in `error_type` (Jolokia reports errors in the body, not the HTTP status).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::auth::authenticate;
use super::Console;

pub(super) async fn read_one(
    State(console): State<Arc<Console>>,
    Path((mbean, attribute)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    read(&console, &headers, mbean, Some(attribute))
}

pub(super) async fn read_all(
    State(console): State<Arc<Console>>,
    Path(mbean): Path<String>,
    headers: HeaderMap,
) -> Response {
    read(&console, &headers, mbean, None)
}

fn read(
    console: &Console,
    headers: &HeaderMap,
    mbean: String,
    attribute: Option<String>,
) -> Response {
    if let Err(denied) = authenticate(&console.core, headers) {
        return denied.into_response();
    }
    let request = match &attribute {
        Some(a) => json!({ "mbean": mbean, "attribute": a, "type": "read" }),
        None => json!({ "mbean": mbean, "type": "read" }),
    };
    if !is_this_broker(&mbean, &console.info.broker_name) {
        return error(
            request,
            "javax.management.InstanceNotFoundException",
            mbean.clone(),
        );
    }
    let values = attributes(console);
    let value = match attribute {
        None => Value::Object(values.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()),
        Some(name) => match values.get(name.as_str()) {
            Some(v) => v.clone(),
            None => {
                return error(
                    request,
                    "javax.management.AttributeNotFoundException",
                    format!("No such attribute: {name}"),
                )
            }
        },
    };
    Json(json!({
        "request": request,
        "value": value,
        "timestamp": crate::broker::clients::unix_ms_now() / 1000,
        "status": 200,
    }))
    .into_response()
}

/// Jolokia's error response: HTTP 200, the error in the body.
fn error(request: Value, error_type: &str, message: String) -> Response {
    Json(json!({
        "request": request,
        "error_type": error_type,
        "error": format!("{error_type} : {message}"),
        "status": 404,
    }))
    .into_response()
}

/// `org.apache.activemq:type=Broker,brokerName=NAME` with its keys in any order.
fn is_this_broker(mbean: &str, broker_name: &str) -> bool {
    let Some((domain, keys)) = mbean.split_once(':') else {
        return false;
    };
    let keys: BTreeMap<&str, &str> = keys
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect();
    domain == "org.apache.activemq"
        && keys.len() == 2
        && keys.get("type") == Some(&"Broker")
        && keys.get("brokerName") == Some(&broker_name)
}

fn attributes(console: &Console) -> BTreeMap<&'static str, Value> {
    let core = &console.core;
    let counters = core.counters.snapshot();
    let (mqtt, stomp) = core.clients.counts();
    let connections = mqtt + stomp;
    // Messages held: every session's pending and in-flight messages, and every queue's.
    let mut held = 0usize;
    for session in core.registry.all() {
        held += session.with_state_unchecked(|s| s.pending.len() + s.inflight.len());
    }
    let mut queue_consumers = 0usize;
    for name in core.queues.names() {
        if let Some(stats) = core.queues.stats(&name) {
            held += stats.depth;
            queue_consumers += stats.consumers;
        }
    }
    let memory_used = core.memory.used_bytes();
    let memory_limit = core.memory.limit_bytes();
    let store_limit = console.info.store_limit_bytes.unwrap_or(0);
    let store_used = core.durability().stats().message_bytes;
    let uptime = core.started_at.elapsed();
    BTreeMap::from([
        ("BrokerName", json!(console.info.broker_name)),
        ("BrokerVersion", json!(env!("CARGO_PKG_VERSION"))),
        ("CurrentConnectionsCount", json!(connections)),
        ("MemoryLimit", json!(memory_limit)),
        (
            "MemoryPercentUsage",
            json!(percent(memory_used, memory_limit)),
        ),
        ("StoreLimit", json!(store_limit)),
        ("StorePercentUsage", json!(percent(store_used, store_limit))),
        (
            "TotalConnectionsCount",
            json!(counters.connections_accepted),
        ),
        (
            "TotalConsumerCount",
            json!(core.subscriptions.read().len() + queue_consumers),
        ),
        ("TotalDequeueCount", json!(counters.messages_out)),
        ("TotalEnqueueCount", json!(counters.messages_in)),
        ("TotalMessageCount", json!(held)),
        ("TotalProducerCount", json!(connections)),
        ("Uptime", json!(describe_uptime(uptime.as_secs()))),
        (
            "UptimeMillis",
            json!(u64::try_from(uptime.as_millis()).unwrap_or(u64::MAX)),
        ),
    ])
}

fn percent(used: u64, limit: u64) -> u64 {
    if limit == 0 {
        0
    } else {
        (u128::from(used) * 100 / u128::from(limit)).min(100) as u64
    }
}

/// ActiveMQ's `Uptime` text: `1 hour 2 minutes`, `5.123 seconds`.
fn describe_uptime(secs: u64) -> String {
    let (days, hours, minutes, seconds) = (
        secs / 86_400,
        secs % 86_400 / 3600,
        secs % 3600 / 60,
        secs % 60,
    );
    let unit = |n: u64, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    if days > 0 {
        format!("{} {}", unit(days, "day"), unit(hours, "hour"))
    } else if hours > 0 {
        format!("{} {}", unit(hours, "hour"), unit(minutes, "minute"))
    } else if minutes > 0 {
        format!("{} {}", unit(minutes, "minute"), unit(seconds, "second"))
    } else {
        unit(seconds, "second")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_broker_mbean_is_recognised_in_any_key_order() {
        assert!(is_this_broker(
            "org.apache.activemq:type=Broker,brokerName=b",
            "b"
        ));
        assert!(is_this_broker(
            "org.apache.activemq:brokerName=b,type=Broker",
            "b"
        ));
        assert!(!is_this_broker(
            "org.apache.activemq:type=Broker,brokerName=c",
            "b"
        ));
        assert!(!is_this_broker(
            "org.apache.activemq:type=Broker,brokerName=b,destinationType=Queue",
            "b"
        ));
        assert!(!is_this_broker("java.lang:type=Memory", "b"));
    }

    #[test]
    fn uptime_reads_like_activemq() {
        assert_eq!(describe_uptime(5), "5 seconds");
        assert_eq!(describe_uptime(3720), "1 hour 2 minutes");
        assert_eq!(describe_uptime(86_400 + 7200), "1 day 2 hours");
    }
}
