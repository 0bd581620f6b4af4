//! On a cluster node, the sessions the cluster keeps that this node's broker does not hold:
//! listed beside the broker's own on `/api/sessions`, and ended by the console's delete.
//!
//! A drained node releases its sessions into the cluster's session records with no owner, and
//! a dead node's stay there; no broker holds them until a client resumes one, so a console
//! that listed only its broker's sessions showed them nowhere. Their records are read through
//! the backplane ([`Backplane::kept_sessions`]), bounded ([`LISTED_AT_MOST`]), at most once per
//! [`FRESH_FOR`] however many pages poll (each read is a temporary JetStream consumer), and
//! never on the broker's locks.
//!
//! Ending one is the claim every Clean Start CONNECT makes ([`Backplane::claim`]): it asks the
//! holding node to hand the session over (a node whose client is connected keeps it: 409, as
//! for a connected local session, naming the node that refused), and deletes the record with a compare-and-set on the
//! revision it read, so that a client resuming the session at that moment either wins (the
//! delete fails, the claim reads again) or finds no session. It runs under this node's claim
//! gate for the client id, as a CONNECT's does.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::auth::{Peer, User};
use super::Console;
use crate::broker::durability::{Backplane, ClaimRequest, Claimed, KeptSession, KeptSessions};
use crate::broker::session::kind::{
    stomp_client_hold_id, stomp_durable_id, SessionKind, STOMP_READABLE_PREFIX,
};

/// At most this many session records are read for one listing.
pub const LISTED_AT_MOST: usize = 1000;
/// A listing is read again after this long (the pages poll every 2 s).
pub const FRESH_FOR: Duration = Duration::from_secs(5);

/// What `held_by` says of a session no node holds.
pub const NO_NODE: &str = "cluster (no node)";

/// One listing of the cluster's records.
struct Listing {
    at: Instant,
    at_unix_ms: u64,
    read: Result<KeptSessions, String>,
}

/// The last listing, shared by every request (one read at a time; the others wait for it).
#[derive(Default)]
pub struct KeptCache {
    last: tokio::sync::Mutex<Option<Arc<Listing>>>,
}

impl KeptCache {
    async fn listing(&self, backplane: &Arc<dyn Backplane>) -> Arc<Listing> {
        let mut last = self.last.lock().await;
        if let Some(listing) = last.as_ref().filter(|l| l.at.elapsed() < FRESH_FOR) {
            return listing.clone();
        }
        let read = backplane
            .kept_sessions(LISTED_AT_MOST)
            .await
            .map_err(|e| e.to_string());
        let listing = Arc::new(Listing {
            at: Instant::now(),
            at_unix_ms: crate::broker::clients::unix_ms_now(),
            read,
        });
        *last = Some(listing.clone());
        listing
    }

    /// The next listing reads the records again (a session was ended).
    async fn stale(&self) {
        *self.last.lock().await = None;
    }
}

/// The sessions of the cluster's records whose client id is not in `held_here` (the
/// broker's own, listed already), as `/api/sessions` entries, sorted by client id; and the
/// listing's `cluster` summary.
pub async fn listed_elsewhere(
    console: &Console,
    backplane: &Arc<dyn Backplane>,
    held_here: &HashSet<String>,
) -> (Vec<Value>, Value) {
    let listing = console.kept.listing(backplane).await;
    let (kept, summary) = match &listing.read {
        Ok(read) => (
            read.sessions.as_slice(),
            json!({
                "records_read": read.read,
                "records_unread": read.unread,
                "truncated": read.unread > 0,
                "limit": LISTED_AT_MOST,
                "read_at_unix_ms": listing.at_unix_ms,
                "error": Value::Null,
            }),
        ),
        Err(e) => (
            &[][..],
            json!({
                "records_read": 0,
                "records_unread": Value::Null,
                "truncated": false,
                "limit": LISTED_AT_MOST,
                "read_at_unix_ms": listing.at_unix_ms,
                "error": e,
            }),
        ),
    };
    let mut entries: Vec<&KeptSession> = kept
        .iter()
        .filter(|k| !held_here.contains(&k.client_id))
        .collect();
    entries.sort_by(|a, b| a.client_id.cmp(&b.client_id));
    (entries.into_iter().map(entry).collect(), summary)
}

fn entry(kept: &KeptSession) -> Value {
    let mut entry = json!({
        "client_id": kept.client_id,
        "kind": "mqtt",
        "connected": kept.connected,
        "persistent": true,
        // Its messages wait in the cluster's streams: counted only where it is resumed.
        "pending": Value::Null,
        "inflight": kept.inflight,
        "subscriptions": kept.subscriptions,
        "last_seen_unix_ms": kept.offline_since_ms,
        "expiry_secs": kept.expiry_secs,
        "held_by": kept.owner.as_deref().unwrap_or(NO_NODE),
        "here": false,
    });
    super::api::describe_stomp_durable(
        &mut entry,
        SessionKind::of(&kept.client_id),
        kept.first_filter.as_deref(),
    );
    entry
}

/// The stored id of the STOMP durable subscription whose readable id is `readable`
/// (`stomp:<client-id>:<name>`), held by this broker or kept by the cluster; `None` when
/// there is none. Every split of `readable` at a `:` is looked up (a `:` in a client-id makes
/// `stomp:a:b:c` either `a`'s `b:c` or `a:b`'s `c`), each by its key, so the answer does not
/// depend on the listing's bound. `Err`: the answer to give instead (409 when two read the
/// same or the subscription's STOMP client is connected to this node, 503 when the records
/// cannot be read). A client connected to another node without consuming the subscription
/// is not seen from here: the holding node refuses only while its consumer holds it.
pub async fn stomp_durable_in_cluster(
    console: &Console,
    backplane: &Arc<dyn Backplane>,
    readable: &str,
) -> Result<Option<String>, Response> {
    let Some(rest) = readable.strip_prefix(STOMP_READABLE_PREFIX) else {
        return Ok(None);
    };
    let mut found: Vec<(&str, String)> = Vec::new();
    for (at, _) in rest.match_indices(':') {
        let (client_id, name) = (&rest[..at], &rest[at + 1..]);
        let stored = stomp_durable_id(client_id, name);
        let kept = console.core.registry.by_client_id(&stored).is_some()
            || match backplane.kept_session(&stored).await {
                Ok(kept) => kept.is_some(),
                Err(e) => {
                    return Err(answer(
                        StatusCode::SERVICE_UNAVAILABLE,
                        json!({ "error": format!("the session records could not be read: {e}") }),
                    ))
                }
            };
        if kept {
            found.push((client_id, stored));
        }
    }
    match found.as_slice() {
        [] => Ok(None),
        [(client_id, stored)] => {
            let hold = stomp_client_hold_id(client_id);
            if console.core.registry.by_client_id(&hold).is_some() {
                return Err(super::api::stomp_client_connected(client_id));
            }
            Ok(Some(stored.clone()))
        }
        _ => Err(super::api::stomp_readable_ambiguous(readable, found.len())),
    }
}

fn answer(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

/// Delete `client_id`'s session, which this node's broker does not hold, across the cluster
/// (the caller holds this node's claim gate for it). `shown`: the id the answer and the log
/// name (a STOMP durable subscription's readable one).
pub async fn end_elsewhere(
    console: &Console,
    backplane: &Arc<dyn Backplane>,
    client_id: &Arc<str>,
    shown: &str,
    user: &User,
    peer: Peer,
) -> Response {
    if backplane.is_draining() || !backplane.is_available() {
        return answer(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "error": "this cluster node is draining or cannot reach its quorum: \
                              delete the session on another node" }),
        );
    }
    let kept = match backplane.kept_session(client_id).await {
        Ok(Some(kept)) => kept,
        Ok(None) => {
            return answer(
                StatusCode::NOT_FOUND,
                json!({ "error": format!("no session {shown}") }),
            )
        }
        Err(e) => {
            return answer(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({ "error": format!("the session records could not be read: {e}") }),
            )
        }
    };
    // Who held it when read: what the answer says of a session that was ended.
    let held_by = kept.owner.clone().unwrap_or_else(|| NO_NODE.to_owned());
    // The claim of a Clean Start CONNECT (with no will, and no connection to attach): a
    // node whose client holds the session keeps it.
    let request = ClaimRequest {
        client_id: client_id.clone(),
        clean_start: true,
        persistent: false,
        will: None,
        take_over: false,
    };
    let claimed = backplane.claim(request).await;
    console.kept.stale().await;
    match claimed {
        Ok(Claimed::Here) => {}
        Ok(Claimed::Image(image)) => {
            // A Clean Start claim discards what it finds rather than restoring it; were an
            // engine to hand a session over anyway, it is ended here as a local one is.
            let session = console.core.restore_claimed(*image);
            if let Some(Ok(session)) = console.core.registry.remove_offline(session.client_id()) {
                console.core.forget(&session);
            }
        }
        // Named after the node that refused, not the one read above: a client resuming the
        // session on another node between the read and the claim moved it there.
        Ok(Claimed::InUse { holder: Some(node) }) => {
            return answer(
                StatusCode::CONFLICT,
                json!({
                    "error": format!(
                        "the session's client is connected on cluster node {node}: \
                         disconnect it there first"
                    ),
                    "held_by": node,
                }),
            )
        }
        Ok(Claimed::InUse { holder: None }) => {
            return answer(
                StatusCode::CONFLICT,
                json!({
                    "error": "the session's client is connected on a cluster node the \
                              cluster did not name (the sessions page lists where): \
                              disconnect it there first",
                    "held_by": Value::Null,
                }),
            )
        }
        Err(e) => {
            return answer(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({ "error": format!("the session was not ended: {e}") }),
            )
        }
    }
    tracing::info!(
        admin = %user.name,
        peer = %peer.0,
        client_id = %crate::security::Bounded(shown),
        held_by = %held_by,
        "console: session kept by the cluster deleted with its queue"
    );
    Json(json!({ "ok": true, "client_id": shown, "held_by": held_by })).into_response()
}
