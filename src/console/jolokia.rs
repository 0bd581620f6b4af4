//! A Jolokia-style read of ActiveMQ's Broker MBean
//! (`org.apache.activemq:type=Broker,brokerName=NAME`), so that scripts and monitoring checks
//! written for ActiveMQ's `/api/jolokia/read/...` keep working. Read only; an unknown MBean or
//! attribute is answered as Jolokia answers it: HTTP 200 with `"status": 404` and the JMX
//! exception's name in `error_type` (Jolokia reports errors in the body, not the HTTP status).
//! GET `read/MBEAN[/ATTR[,ATTR...]]`, GET `version` (or no path), and POST of a request object
//! or an array of them (Jolokia's bulk form, which Telegraf's jolokia2 input sends to
//! `<url>/read`) to any path under the agent: Jolokia ignores the path of a POST.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use super::auth::authenticate;
use super::{Console, StoreInfo};

/// Requests in one bulk POST at most (Telegraf sends one per configured metric).
const MAX_BULK: usize = 256;
/// The Jolokia agent and protocol versions whose response shapes these are.
const AGENT_VERSION: &str = "1.7.2";
const PROTOCOL_VERSION: &str = "7.2";

pub(super) async fn read_one(
    State(console): State<Arc<Console>>,
    Path((mbean, attribute)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(denied) = authenticate(&console.core, &headers) {
        return denied.into_response();
    }
    // Jolokia's GET takes several attributes separated by commas.
    let attribute = if attribute.contains(',') {
        Value::Array(
            attribute
                .split(',')
                .map(|a| Value::String(a.trim().to_owned()))
                .collect(),
        )
    } else {
        Value::String(attribute)
    };
    let request = json!({ "type": "read", "mbean": mbean, "attribute": attribute });
    Json(answer(&console, &request)).into_response()
}

pub(super) async fn read_all(
    State(console): State<Arc<Console>>,
    Path(mbean): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(denied) = authenticate(&console.core, &headers) {
        return denied.into_response();
    }
    let request = json!({ "type": "read", "mbean": mbean });
    Json(answer(&console, &request)).into_response()
}

/// `GET /api/jolokia/version`: Jolokia's version response.
pub(super) async fn version(State(console): State<Arc<Console>>, headers: HeaderMap) -> Response {
    if let Err(denied) = authenticate(&console.core, &headers) {
        return denied.into_response();
    }
    Json(answer(&console, &json!({ "type": "version" }))).into_response()
}

/// `POST /api/jolokia`: one request object or an array of them (Jolokia's bulk request, what
/// Telegraf's jolokia2 input sends), answered with one response or an array in the same
/// order. Only `read` and `version` are served: they change nothing, so a login with either
/// role suffices and no CSRF token is asked for (the actions keep theirs).
pub(super) async fn post(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(denied) = authenticate(&console.core, &headers) {
        return denied.into_response();
    }
    let parsed: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return Json(failure(
                Value::Null,
                400,
                "java.lang.IllegalArgumentException",
                format!("Invalid JSON request: {e}"),
            ))
            .into_response()
        }
    };
    match parsed {
        Value::Array(requests) if requests.len() > MAX_BULK => Json(failure(
            Value::Null,
            400,
            "java.lang.IllegalArgumentException",
            format!("at most {MAX_BULK} requests in one bulk request"),
        ))
        .into_response(),
        Value::Array(requests) => Json(Value::Array(
            requests.iter().map(|r| answer(&console, r)).collect(),
        ))
        .into_response(),
        request => Json(answer(&console, &request)).into_response(),
    }
}

/// The response to one Jolokia request object (errors in the body, as Jolokia does).
fn answer(console: &Console, request: &Value) -> Value {
    let Some(object) = request.as_object() else {
        return failure(
            request.clone(),
            400,
            "java.lang.IllegalArgumentException",
            "a request is a JSON object with a `type`".to_owned(),
        );
    };
    match object
        .get("type")
        .and_then(Value::as_str)
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("read") => read(console, request, object),
        Some("version") => success(
            request.clone(),
            json!({
                "agent": AGENT_VERSION,
                "protocol": PROTOCOL_VERSION,
                "config": {},
                "info": {
                    "product": "ferromq",
                    "vendor": "ferromq",
                    "version": env!("CARGO_PKG_VERSION"),
                },
            }),
        ),
        _ => failure(
            request.clone(),
            400,
            "java.lang.UnsupportedOperationException",
            "only the read and version requests are served (the console is read-only to \
             Jolokia)"
                .to_owned(),
        ),
    }
}

fn read(console: &Console, request: &Value, object: &Map<String, Value>) -> Value {
    let Some(mbean) = object.get("mbean").and_then(Value::as_str) else {
        return failure(
            request.clone(),
            400,
            "java.lang.IllegalArgumentException",
            "a read request needs an `mbean`".to_owned(),
        );
    };
    let Some(pattern) = BrokerMbean::parse(mbean) else {
        return not_found(request, mbean);
    };
    let broker_name = console.info.broker_name.as_str();
    if !pattern.matches(broker_name) {
        return not_found(request, mbean);
    }
    let values = attributes(console);
    let value = match object.get("attribute") {
        None | Some(Value::Null) => {
            Value::Object(values.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
        }
        Some(Value::String(name)) => match values.get(name.as_str()) {
            Some(v) => v.clone(),
            None => return no_attribute(request, name),
        },
        Some(Value::Array(names)) => {
            let mut picked = Map::new();
            for name in names {
                let Some(name) = name.as_str() else {
                    return no_attribute(request, &name.to_string());
                };
                match values.get(name) {
                    Some(v) => {
                        picked.insert(name.to_owned(), v.clone());
                    }
                    None => return no_attribute(request, name),
                }
            }
            Value::Object(picked)
        }
        Some(other) => return no_attribute(request, &other.to_string()),
    };
    // A pattern is answered with the value under each matching MBean's canonical name.
    let value = if pattern.is_pattern {
        let canonical = format!("org.apache.activemq:brokerName={broker_name},type=Broker");
        json!({ canonical: value })
    } else {
        value
    };
    success(request.clone(), value)
}

fn success(request: Value, value: Value) -> Value {
    json!({
        "request": request,
        "value": value,
        "timestamp": crate::broker::clients::unix_ms_now() / 1000,
        "status": 200,
    })
}

/// Jolokia's error response: the error in the body (the HTTP status stays 200).
fn failure(request: Value, status: u16, error_type: &str, message: String) -> Value {
    json!({
        "request": request,
        "error_type": error_type,
        "error": format!("{error_type} : {message}"),
        "status": status,
    })
}

fn not_found(request: &Value, mbean: &str) -> Value {
    failure(
        request.clone(),
        404,
        "javax.management.InstanceNotFoundException",
        mbean.to_owned(),
    )
}

fn no_attribute(request: &Value, name: &str) -> Value {
    failure(
        request.clone(),
        404,
        "javax.management.AttributeNotFoundException",
        format!("No such attribute: {name}"),
    )
}

/// `org.apache.activemq:type=Broker,brokerName=NAME` with its keys in any order; the name may
/// be the pattern `*` (as Telegraf's ActiveMQ example asks for).
struct BrokerMbean {
    name: String,
    is_pattern: bool,
}

impl BrokerMbean {
    fn parse(mbean: &str) -> Option<BrokerMbean> {
        let (domain, keys) = mbean.split_once(':')?;
        let keys: BTreeMap<&str, &str> = keys
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.trim(), v.trim()))
            .collect();
        let fits = domain == "org.apache.activemq"
            && keys.len() == 2
            && keys.get("type") == Some(&"Broker");
        let name = keys.get("brokerName").filter(|_| fits)?;
        Some(BrokerMbean {
            name: (*name).to_owned(),
            is_pattern: *name == "*",
        })
    }

    fn matches(&self, broker_name: &str) -> bool {
        self.is_pattern || self.name == broker_name
    }
}

/// `org.apache.activemq:type=Broker,brokerName=NAME` with its keys in any order.
#[cfg(test)]
fn is_this_broker(mbean: &str, broker_name: &str) -> bool {
    BrokerMbean::parse(mbean).is_some_and(|m| !m.is_pattern && m.matches(broker_name))
}

fn attributes(console: &Console) -> BTreeMap<&'static str, Value> {
    let core = &console.core;
    let counters = core.counters.snapshot();
    let (mqtt, stomp) = core.clients.counts();
    let connections = mqtt + stomp;
    // Messages held: every session's pending and in-flight messages, and every queue's.
    let mut held = 0usize;
    for session in core.registry.all() {
        held += session.with_state_unchecked(|s| s.pending().len() + s.inflight().len());
    }
    let mut queue_consumers = 0usize;
    for name in core.queues.names() {
        if let Some(stats) = core.queues.stats(&name) {
            held += stats.depth;
            queue_consumers += stats.consumers;
        }
    }
    let memory_used = core.memory.used_bytes();
    // ActiveMQ's MBean reads 0 for no limit (its `Usage` keeps it as a limit of 0).
    let memory_limit = core.memory.limit_bytes().unwrap_or(0);
    // 0 without a limit, as ActiveMQ's MBean reads a limit of 0.
    let store_limit = match console.info.store {
        StoreInfo::Local { limit_bytes } => limit_bytes.unwrap_or(0),
        StoreInfo::MemoryOnly | StoreInfo::Cluster => 0,
    };
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
