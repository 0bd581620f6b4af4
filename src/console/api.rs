//! The JSON API: what the pages poll and scripts read (docs/console.md lists the shapes).
//! Reads take the broker's locks briefly, one structure at a time; nothing here is on the
//! publish path.

use std::sync::Arc;

use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::{json, Value};

use super::auth::{authenticate, authorize_action, Denied, Peer, User};
use super::{Console, ConsoleInfo, StoreInfo};
use crate::broker::clients::ClientKey;
use crate::broker::session::kind::{
    stomp_client_hold_id, stomp_durable_id, stomp_readable_id, SessionKind, STOMP_READABLE_PREFIX,
};
use crate::security::destination::mqtt_to_activemq;

/// A listener as the overview shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ListenerInfo {
    pub name: String,
    pub scheme: String,
    pub address: String,
    pub protocol: &'static str,
    pub tls: bool,
    pub websocket: bool,
}

fn reader(console: &Console, headers: &HeaderMap) -> Result<User, Denied> {
    authenticate(&console.core, headers)
}

fn admin(console: &Console, headers: &HeaderMap) -> Result<User, Denied> {
    let user = authenticate(&console.core, headers)?;
    authorize_action(&user, headers, &console.csrf)?;
    Ok(user)
}

fn percent(used: u64, limit: u64) -> u64 {
    if limit == 0 {
        0
    } else {
        (u128::from(used) * 100 / u128::from(limit)).min(100) as u64
    }
}

/// The overview's `store`: `null` for a memory-only broker; on a cluster node, where the
/// messages are (the node keeps none, so used and limit bytes would read as an empty store);
/// else the local store's figures, `used` read only then, with `limit_bytes` `null` when no
/// `storeUsage` limit applies (a 0 would read as a store that is full).
fn store_overview(info: &ConsoleInfo, used: impl FnOnce() -> u64) -> Value {
    match info.store {
        StoreInfo::Cluster => json!({ "kind": "cluster", "engine": "NATS JetStream" }),
        StoreInfo::Local { limit_bytes } => {
            let used = used();
            json!({
                "kind": "local",
                "used_bytes": used,
                "limit_bytes": limit_bytes,
                "percent": percent(used, limit_bytes.unwrap_or(0)),
            })
        }
        StoreInfo::MemoryOnly => Value::Null,
    }
}

/// `kind` of an `/api/sessions` entry that is a STOMP durable topic subscription.
const STOMP_DURABLE_KIND: &str = "stomp-durable-subscription";

/// How `/api/sessions` lists a session of this broker, if it does: MQTT sessions and STOMP
/// durable subscriptions. STOMP's other internal sessions (non-durable subscriptions, a
/// connected client's client-id hold) are not sessions to a user: the clients page shows
/// their connection.
fn listed_kind(session_id: &str) -> Option<SessionKind<'_>> {
    match SessionKind::of(session_id) {
        SessionKind::StompInternal => None,
        kind => Some(kind),
    }
}

pub(super) async fn overview(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
) -> Result<Json<Value>, Denied> {
    let user = reader(&console, &headers)?;
    let core = &console.core;
    let counters = core.counters.snapshot();
    let (mqtt, stomp) = core.clients.counts();
    // What the metrics count (`ferromq_sessions`, `ferromq_stomp_durable_subscriptions`), and
    // on a single broker what /api/sessions lists of each kind.
    let census = core.registry.census();
    let memory_used = core.memory.used_bytes();
    let memory_limit = core.memory.limit_bytes();
    let store = store_overview(&console.info, || core.durability().stats().message_bytes);
    let listeners: Vec<Value> = console
        .info
        .listeners
        .iter()
        .map(|l| {
            let mut v = serde_json::to_value(l).unwrap_or(Value::Null);
            if let Value::Object(map) = &mut v {
                map.insert(
                    "connections".into(),
                    json!(core.clients.per_listener(&l.name)),
                );
            }
            v
        })
        .collect();
    Ok(Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "broker_name": console.info.broker_name,
        "uptime_secs": core.started_at.elapsed().as_secs(),
        "config_file": console.info.config_file,
        "last_reload": console.last_reload(),
        "listeners": listeners,
        "connections": { "current": mqtt + stomp, "mqtt": mqtt, "stomp": stomp },
        "messages": { "received": counters.messages_in, "sent": counters.messages_out },
        "bytes": {
            "received": counters.bytes_in_by_qos.iter().sum::<u64>(),
            "sent": counters.bytes_out_by_qos.iter().sum::<u64>(),
        },
        "sessions": { "online": census.online, "offline": census.offline },
        "stomp_durable_subscriptions": {
            "online": census.stomp_durable_online,
            "offline": census.stomp_durable_offline,
        },
        "subscriptions": core.subscriptions.read().len(),
        "memory": {
            "used_bytes": memory_used,
            // `null`: no limit (`limit="0"`).
            "limit_bytes": memory_limit,
            "percent": percent(memory_used, memory_limit.unwrap_or(0)),
        },
        "store": store,
        "csrf_token": console.csrf.token(&user.name),
        "user": { "name": user.name, "admin": user.admin },
    })))
}

pub(super) async fn clients(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
) -> Result<Json<Value>, Denied> {
    reader(&console, &headers)?;
    let mut live = console.core.clients.list();
    live.sort_by_key(|(_, c)| c.connected_unix_ms);
    let clients: Vec<Value> = live
        .into_iter()
        .map(|(key, c)| {
            let subscriptions = match &c.session {
                Some(session) => session
                    .upgrade()
                    .map_or(0, |s| s.with_state_unchecked(|st| st.subscriptions().len())),
                None => c.subscriptions(),
            };
            json!({
                "id": key.id(),
                "client_id": visible_client_id(&c.client_id),
                "protocol": key.protocol(),
                "protocol_version": c.protocol_version,
                "user": c.user.as_deref(),
                "peer": c.peer.to_string(),
                "listener": c.listener.name,
                "connected_unix_ms": c.connected_unix_ms,
                "keep_alive_secs": c.keep_alive_secs,
                "subscriptions": subscriptions,
            })
        })
        .collect();
    Ok(Json(json!({ "clients": clients })))
}

/// A STOMP durable subscription's `/api/sessions` entry: its readable id (the one
/// `session list` shows and `session end` takes; the stored one starts with U+0000), kind,
/// client-id, name and destination (`filter`, its one topic or wildcard kept as an MQTT
/// filter). Other kinds' entries are left as they are.
pub(super) fn describe_stomp_durable(entry: &mut Value, kind: SessionKind, filter: Option<&str>) {
    let (SessionKind::StompDurable { client_id, name }, Value::Object(map)) = (kind, entry) else {
        return;
    };
    map.insert(
        "client_id".into(),
        json!(stomp_readable_id(client_id, name)),
    );
    map.insert("kind".into(), json!(STOMP_DURABLE_KIND));
    map.insert("stomp_client_id".into(), json!(client_id));
    map.insert("subscription_name".into(), json!(name));
    map.insert(
        "destination".into(),
        json!(filter.map(|f| format!("/topic/{}", mqtt_to_activemq(f)))),
    );
}

/// STOMP's internal session names start with U+0000 (no MQTT client id may): shown without it.
fn visible_client_id(id: &str) -> String {
    id.trim_start_matches('\0').to_owned()
}

pub(super) async fn sessions(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
) -> Result<Json<Value>, Denied> {
    reader(&console, &headers)?;
    let now = crate::broker::clients::unix_ms_now();
    let mut all = console.core.registry.all();
    all.sort_by(|a, b| a.client_id().cmp(b.client_id()));
    let backplane = console.core.backplane();
    let mut sessions: Vec<Value> = all
        .iter()
        .filter_map(|s| Some((s, listed_kind(s.client_id())?)))
        .map(|(s, kind)| {
            let connected = s.is_attached();
            let (pending, inflight, subscriptions, filter) = s.with_state_unchecked(|st| {
                (
                    st.pending().len(),
                    st.inflight().len(),
                    st.subscriptions().len(),
                    st.subscriptions().keys().next().cloned(),
                )
            });
            let last_seen = (!connected)
                .then(|| s.offline_for())
                .flatten()
                .map(|d| now.saturating_sub(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)));
            let mut entry = json!({
                "client_id": &**s.client_id(),
                "kind": "mqtt",
                "connected": connected,
                "persistent": s.is_persistent(),
                "pending": pending,
                "inflight": inflight,
                "subscriptions": subscriptions,
                "last_seen_unix_ms": last_seen,
                "expiry_secs": s.expiry_secs(),
            });
            describe_stomp_durable(&mut entry, kind, filter.as_deref());
            if let (Some(backplane), Value::Object(map)) = (backplane, &mut entry) {
                map.insert("held_by".into(), json!(backplane.node_id()));
                map.insert("here".into(), json!(true));
            }
            entry
        })
        .collect();
    let Some(backplane) = backplane.cloned() else {
        return Ok(Json(json!({ "sessions": sessions })));
    };
    let held_here: std::collections::HashSet<String> =
        all.iter().map(|s| s.client_id().to_string()).collect();
    drop(all);
    let (elsewhere, cluster) =
        super::kept::listed_elsewhere(&console, &backplane, &held_here).await;
    sessions.extend(elsewhere);
    Ok(Json(json!({ "sessions": sessions, "cluster": cluster })))
}

/// `?system=true` on /api/topics: list the broker's `$SYS` topics too.
#[derive(Debug, Default, serde::Deserialize)]
pub(super) struct TopicsQuery {
    #[serde(default)]
    system: bool,
}

pub(super) async fn topics(
    State(console): State<Arc<Console>>,
    Query(query): Query<TopicsQuery>,
    headers: HeaderMap,
) -> Result<Json<Value>, Denied> {
    reader(&console, &headers)?;
    let core = &console.core;
    // The topics that exist (recorded when authorization is on), those published to (counted
    // per topic while the console is configured), those with a retained message, and the
    // concrete topics subscribed to.
    let mut names: std::collections::BTreeSet<String> = core
        .destinations
        .names()
        .iter()
        .map(|t| t.to_string())
        .collect();
    names.extend(core.retained.read().iter().map(|(t, _)| t.to_owned()));
    for session in core.registry.all() {
        session.with_state_unchecked(|st| {
            for filter in st.subscriptions().keys() {
                let filter = match crate::protocol::topic::parse_shared_subscription(filter) {
                    Ok(Some(share)) => share.filter,
                    _ => filter.as_str(),
                };
                if !crate::broker::routing::destinations::is_wildcard(filter) {
                    names.insert(filter.to_owned());
                }
            }
        });
    }
    type Tree = crate::broker::routing::router::SubscriptionTree<
        crate::broker::session::SessionId,
        crate::broker::session::SubscriptionOptions,
    >;
    let subscribers = |tree: &Tree, topic: &str| {
        let mut subscribers = 0usize;
        tree.for_each_match(topic, |_, _| subscribers += 1);
        tree.for_each_shared_match(topic, |group| subscribers += group.len());
        subscribers
    };
    // A full registry makes room first (topics nobody publishes to, subscribes to or retains).
    core.topic_stats.sweep(|topic| {
        subscribers(&core.subscriptions.read(), topic) > 0
            || core.retained.read().get(topic).is_some()
    });
    let counted: std::collections::HashMap<String, (u64, u64)> = core
        .topic_stats
        .snapshot()
        .into_iter()
        .map(|(topic, messages, bytes)| (topic, (messages, bytes)))
        .collect();
    names.extend(counted.keys().cloned());
    let tree = core.subscriptions.read();
    let retained = core.retained.read();
    let topics: Vec<Value> = names
        .iter()
        .filter(|topic| query.system || !crate::broker::system::is_system_topic(topic))
        .map(|topic| {
            let (messages_in, bytes_in) = match counted.get(topic) {
                Some(&(m, b)) => (json!(m), json!(b)),
                // Not tracked: no console when published to, or past the registry's bound.
                None => (Value::Null, Value::Null),
            };
            json!({
                "topic": topic,
                "destination": crate::security::destination::swap_chars(topic),
                "subscribers": subscribers(&tree, topic),
                "messages_in": messages_in,
                "bytes_in": bytes_in,
                "retained": retained.get(topic).is_some(),
            })
        })
        .collect();
    Ok(Json(json!({
        "topics": topics,
        "truncated": core.topic_stats.truncated(),
        "tracked_limit": core.topic_stats.capacity(),
    })))
}

pub(super) async fn queues(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
) -> Result<Json<Value>, Denied> {
    reader(&console, &headers)?;
    let queues = &console.core.queues;
    // A cluster's queues: their depth is what the stream holds, on every node the same.
    let stored = match queues.shared_depths() {
        Some(depths) => Some(depths.await),
        None => None,
    };
    let list: Vec<Value> = queues
        .names()
        .iter()
        .filter_map(|name| queues.stats(name))
        .map(|s| {
            let depth = match &stored {
                Some(Ok(depths)) if !queues.is_temporary(&s.name) => {
                    depths.get(&*s.name).copied().unwrap_or(0)
                }
                _ => s.depth as u64,
            };
            json!({
                "name": &*s.name,
                "depth": depth,
                "held": s.depth,
                "consumers": s.consumers,
                "in_flight": s.in_flight,
                "enqueued": s.counts.enqueued,
                "dequeued": s.counts.dequeued,
            })
        })
        .collect();
    let mut answer = json!({ "queues": list });
    if let Some(Err(e)) = stored {
        // The depths are then this node's holdings, as `held`.
        answer["depth_error"] = json!(e.to_string());
    }
    Ok(Json(answer))
}

fn not_found(what: String) -> Response {
    (StatusCode::NOT_FOUND, Json(json!({ "error": what }))).into_response()
}

pub(super) async fn disconnect(
    State(console): State<Arc<Console>>,
    Path(id): Path<String>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
) -> Result<Response, Denied> {
    let user = admin(&console, &headers)?;
    let Some(key) = ClientKey::parse(&id) else {
        return Ok(not_found(format!("no connection {id}")));
    };
    Ok(match console.core.clients.disconnect(key) {
        Ok(client) => {
            tracing::info!(
                admin = %user.name,
                peer = %peer.0,
                connection = %id,
                client_id = %crate::security::Bounded(&client.client_id),
                "console: connection closed by an administrator"
            );
            Json(json!({ "ok": true, "id": id })).into_response()
        }
        Err(_) => not_found(format!("no connection {id}")),
    })
}

/// The one value of `key` in an action's query string. A name goes there rather than in the
/// path when the path cannot carry it: browsers (the WHATWG URL parser) take a `.` or `..`
/// segment, even written `%2E`, as a dot segment and remove it before sending. Given twice, it
/// is refused rather than one of them guessed at; the error says why there is no name.
fn named(params: &[(String, String)], key: &str, what: &str) -> Result<String, String> {
    let mut values = params.iter().filter(|(k, _)| k == key).map(|(_, v)| v);
    match (values.next(), values.next()) {
        (Some(value), None) => Ok(value.clone()),
        (None, _) => Err(format!("name the {what}: ?{key}=...")),
        (Some(_), Some(_)) => Err(format!("{key} given more than once")),
    }
}

fn bad_request(what: String) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({ "error": what }))).into_response()
}

/// `POST /api/sessions/{client_id}/delete`.
pub(super) async fn delete_session(
    State(console): State<Arc<Console>>,
    Path(client_id): Path<String>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
) -> Result<Response, Denied> {
    let user = admin(&console, &headers)?;
    Ok(end_session(&console, client_id, &user, peer).await)
}

/// `POST /api/sessions/delete?client_id=...`: any client id, `.` and `..` included.
pub(super) async fn delete_session_named(
    State(console): State<Arc<Console>>,
    Query(params): Query<Vec<(String, String)>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
) -> Result<Response, Denied> {
    let user = admin(&console, &headers)?;
    Ok(match named(&params, "client_id", "session's client id") {
        Ok(client_id) => end_session(&console, client_id, &user, peer).await,
        Err(why) => bad_request(why),
    })
}

async fn end_session(console: &Console, client_id: String, user: &User, peer: Peer) -> Response {
    if client_id.starts_with('\0') {
        return not_found(format!("no session {client_id}"));
    }
    // An MQTT client may be named like a STOMP durable subscription's readable id: its
    // session comes first, as `session end` takes the stored id first.
    if client_id.starts_with(STOMP_READABLE_PREFIX)
        && console.core.registry.by_client_id(&client_id).is_none()
    {
        let Some(backplane) = console.core.backplane().cloned() else {
            return end_stomp_durable(console, &client_id, user, peer);
        };
        match super::kept::stomp_durable_in_cluster(console, &backplane, &client_id).await {
            Ok(Some(stored)) => {
                return end_by_stored_id(console, Arc::from(stored), &client_id, user, peer).await
            }
            // No such subscription: an MQTT client id that reads like one, held elsewhere.
            Ok(None) => {}
            Err(refused) => return refused,
        }
    }
    let shown = client_id.clone();
    end_by_stored_id(console, Arc::from(client_id), &shown, user, peer).await
}

/// End session `client_id` (as stored; `shown` in logs and answers: a STOMP durable
/// subscription's readable id) of this broker, or on a cluster node wherever the cluster
/// keeps it.
async fn end_by_stored_id(
    console: &Console,
    client_id: Arc<str>,
    shown: &str,
    user: &User,
    peer: Peer,
) -> Response {
    // On a cluster node, no CONNECT of this client id claims or attaches here meanwhile: the
    // session is either this broker's (ended here) or not (ended across the cluster).
    let backplane = console.core.backplane().cloned();
    let _gate = match &backplane {
        Some(_) => Some(console.core.claim_gate(&client_id).await),
        None => None,
    };
    match console.core.registry.remove_offline(&client_id) {
        Some(Ok(session)) => {
            console.core.forget(&session);
            tracing::info!(
                admin = %user.name,
                peer = %peer.0,
                client_id = %crate::security::Bounded(shown),
                "console: offline session deleted with its queue"
            );
            Json(json!({ "ok": true, "client_id": shown })).into_response()
        }
        Some(Err(_)) => (
            StatusCode::CONFLICT,
            Json(json!({
                "error": "the session's client is connected: disconnect it first"
            })),
        )
            .into_response(),
        None => match &backplane {
            Some(backplane) => {
                super::kept::end_elsewhere(console, backplane, &client_id, shown, user, peer).await
            }
            None => not_found(format!("no session {shown}")),
        },
    }
}

/// 409: `count` STOMP durable subscriptions read `readable` (a client-id with `:`).
pub(super) fn stomp_readable_ambiguous(readable: &str, count: usize) -> Response {
    (
        StatusCode::CONFLICT,
        Json(json!({
            "error": format!(
                "{count} STOMP durable subscriptions read {readable} (a client-id with `:`): \
                 remove the one meant with UNSUBSCRIBE from a STOMP client with its \
                 client-id (header activemq.subscriptionName)"
            )
        })),
    )
        .into_response()
}

/// 409: a durable subscription's STOMP client (`client_id`) is connected to this broker.
pub(super) fn stomp_client_connected(client_id: &str) -> Response {
    (
        StatusCode::CONFLICT,
        Json(json!({
            "error": format!(
                "the subscription's STOMP client (client-id {client_id}) is connected: \
                 disconnect it first"
            )
        })),
    )
        .into_response()
}

/// Delete the STOMP durable subscription whose readable id (`stomp:<client-id>:<name>`) is
/// `readable`, with what it kept, on a single broker: as ActiveMQ's
/// `destroyDurableSubscriber`, refused while in use. 409 while a STOMP client with its
/// client-id is connected (consuming it or not: it could resume it any moment, as an MQTT
/// session's connected client holds it), or when two subscriptions read the same (a `:` in a
/// client-id makes `stomp:a:b:c` either `a`'s `b:c` or `a:b`'s `c`).
fn end_stomp_durable(console: &Console, readable: &str, user: &User, peer: Peer) -> Response {
    let matching: Vec<(String, String)> = console
        .core
        .registry
        .all()
        .iter()
        .filter_map(|s| match SessionKind::of(s.client_id()) {
            SessionKind::StompDurable { client_id, name }
                if stomp_readable_id(client_id, name) == readable =>
            {
                Some((client_id.to_owned(), name.to_owned()))
            }
            _ => None,
        })
        .collect();
    let (client_id, name) = match matching.as_slice() {
        [] => return not_found(format!("no session {readable}")),
        [one] => one.clone(),
        _ => return stomp_readable_ambiguous(readable, matching.len()),
    };
    let in_use = || stomp_client_connected(&client_id);
    if console
        .core
        .registry
        .by_client_id(&stomp_client_hold_id(&client_id))
        .is_some()
    {
        return in_use();
    }
    match console
        .core
        .registry
        .remove_offline(&stomp_durable_id(&client_id, &name))
    {
        Some(Ok(session)) => {
            console.core.forget(&session);
            tracing::info!(
                admin = %user.name,
                peer = %peer.0,
                client_id = %crate::security::Bounded(&client_id),
                subscription = %crate::security::Bounded(&name),
                "console: STOMP durable subscription deleted with what it kept"
            );
            Json(json!({ "ok": true, "client_id": readable })).into_response()
        }
        Some(Err(_)) => in_use(),
        None => not_found(format!("no session {readable}")),
    }
}

/// `POST /api/queues/{name}/purge`.
pub(super) async fn purge_queue(
    State(console): State<Arc<Console>>,
    Path(name): Path<String>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
) -> Result<Response, Denied> {
    let user = admin(&console, &headers)?;
    Ok(purge(&console, name, &user, peer).await)
}

/// `POST /api/queues/purge?name=...`: any queue name, `.` and `..` included.
pub(super) async fn purge_queue_named(
    State(console): State<Arc<Console>>,
    Query(params): Query<Vec<(String, String)>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
) -> Result<Response, Denied> {
    let user = admin(&console, &headers)?;
    Ok(match named(&params, "name", "queue") {
        Ok(name) => purge(&console, name, &user, peer).await,
        Err(why) => bad_request(why),
    })
}

async fn purge(console: &Console, name: String, user: &User, peer: Peer) -> Response {
    // On a cluster node a queue's waiting messages are in NATS (`FMQ_QUEUES`), pulled into
    // each node's local queue only while its consumers have room: the purge is the
    // cluster's (`src/cluster/queue_purge.rs`), not this broker's local queue.
    if let Some(everywhere) = console.core.queues.purge_everywhere(&name) {
        return match everywhere.await {
            Ok(done) if !done.known => not_found(format!("no queue {name}")),
            Ok(done) => {
                tracing::info!(
                    admin = %user.name,
                    peer = %peer.0,
                    queue = %crate::security::Bounded(&name),
                    purged = done.purged,
                    silent = ?done.silent,
                    "console: queue purged across the cluster"
                );
                Json(json!({
                    "ok": true,
                    "name": name,
                    "purged": done.purged,
                    "nodes": { "answered": done.answered, "silent": done.silent },
                }))
                .into_response()
            }
            Err(e) => {
                tracing::warn!(
                    admin = %user.name,
                    peer = %peer.0,
                    queue = %crate::security::Bounded(&name),
                    "console: queue purge across the cluster failed: {e}"
                );
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Json(json!({ "error": format!("queue {name} not purged: {e}") })),
                )
                    .into_response()
            }
        };
    }
    if !console.core.queues.exists(&name) {
        return not_found(format!("no queue {name}"));
    }
    let purged = console.core.queues.purge(&name);
    tracing::info!(
        admin = %user.name,
        peer = %peer.0,
        queue = %crate::security::Bounded(&name),
        purged,
        "console: queue purged"
    );
    Json(json!({ "ok": true, "name": name, "purged": purged })).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(store: StoreInfo) -> ConsoleInfo {
        ConsoleInfo {
            broker_name: "b".to_owned(),
            config_file: "activemq.xml".to_owned(),
            listeners: Vec::new(),
            store,
            metrics_open: false,
        }
    }

    #[test]
    fn the_overview_says_a_cluster_nodes_messages_are_in_the_cluster() {
        let cluster = store_overview(&info(StoreInfo::Cluster), || unreachable!("no local store"));
        assert_eq!(
            cluster,
            json!({ "kind": "cluster", "engine": "NATS JetStream" })
        );
        let local = store_overview(
            &info(StoreInfo::Local {
                limit_bytes: Some(200),
            }),
            || 50,
        );
        assert_eq!(
            local,
            json!({ "kind": "local", "used_bytes": 50, "limit_bytes": 200, "percent": 25 })
        );
        assert!(store_overview(&info(StoreInfo::MemoryOnly), || 0).is_null());
    }

    #[test]
    fn a_store_without_a_limit_has_no_limit_figure() {
        let local = store_overview(&info(StoreInfo::Local { limit_bytes: None }), || 50);
        assert_eq!(
            local,
            json!({ "kind": "local", "used_bytes": 50, "limit_bytes": null, "percent": 0 })
        );
    }
}
