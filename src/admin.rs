//! Admin actions on persistent sessions (`ferromq session ...`): list the sessions a stopped
//! broker keeps, and end an abandoned one, with its queued messages, either in a stopped
//! broker's store or on a running broker.
//!
//! A running broker owns its store exclusively, so there a session is ended the way MQTT ends
//! one: an MQTT 5 connection with the session's client id, Clean Start 0 and Session Expiry
//! Interval 0 resumes it (its CONNACK's Session Present says whether there was one) and makes
//! it end when that connection closes (MQTT 5 3.1.2.11.2), then disconnects; where there was
//! one, a second connection with Clean Start 1 discards what is left before the command
//! returns. That connection is authenticated and authorized like any
//! other, so only a user the broker lets in can do it; with `allowLinkStealing` it also closes
//! the session's live connection, if any.
//!
//! STOMP durable subscriptions are persistent sessions too; their stored client ids start with
//! U+0000 (`U+0000 stomp-durable:<len>:<client-id>:<name>`, which no MQTT client id can be), so
//! they are shown and accepted as `stomp:<client-id>:<name>` (see [`readable_client_id`]). A
//! running broker has no MQTT way to end one (no MQTT client may use that id): its web console
//! does (a single broker's), or a STOMP client with that `client-id` with UNSUBSCRIBE
//! `activemq.subscriptionName:<name>`.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::broker::session::kind::{durable_parts, stomp_readable_id, STOMP_READABLE_PREFIX};
use crate::config::{Config, Persistence};
use crate::protocol::{
    decode, encode, Connect, ConnectReason, Disconnect, Packet, ProtocolVersion,
};
use crate::store::{Op, Store, StoreError, StoreLimits};

/// How long the online path waits for the broker at each step.
const STEP: Duration = Duration::from_secs(10);

/// A persistent session as a stopped broker keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptSession {
    /// The client id as shown and accepted by `session end`: [`readable_client_id`].
    pub client_id: String,
    /// The client id as stored (differs for STOMP durable subscriptions).
    pub stored_id: String,
    pub subscriptions: usize,
    /// Queue entries: waiting, in flight or awaiting PUBCOMP.
    pub queued: usize,
    /// How long ago its client was last seen, in seconds.
    pub offline_secs: u64,
}

/// Why an admin action failed; the text says what to do.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(
        "the configuration keeps no durable store (persistent=\"false\" or \
         memoryPersistenceAdapter): its sessions live in the running broker only; end one \
         with --broker HOST:PORT"
    )]
    NoStore,
    #[error(
        "a cluster node keeps its sessions in NATS (KV bucket FMQ_SESS, one record per client \
         id, read with `nats kv`); end one on any running node with --broker HOST:PORT"
    )]
    ClusterStore,
    #[error(
        "the store is in use by a running broker: end the session on it with --broker \
         HOST:PORT ({0})"
    )]
    BrokerRunning(StoreError),
    /// [`AdminError::NoStore`] for `session list`: MQTT (what `--broker` speaks) has no way
    /// to list sessions, the web console does (STOMP durable subscriptions too).
    #[error(
        "the configuration keeps no durable store (persistent=\"false\" or \
         memoryPersistenceAdapter): its sessions live in the running broker only; its web \
         console lists them, STOMP durable subscriptions as stomp:<client-id>:<name> (page \
         /sessions, GET /api/sessions; `ferromq run --console HOST:PORT` turns it on, \
         docs/console.md)"
    )]
    NoStoreToList,
    /// [`AdminError::ClusterStore`] for `session list`.
    #[error(
        "a cluster node keeps its sessions in NATS (KV bucket FMQ_SESS, one record per client \
         id, keyed by a hash of it): `session list` cannot read them; each running node's web \
         console lists them (page /sessions, GET /api/sessions: its own, and those the \
         cluster keeps elsewhere or on no node) and deletes one, and `session end CLIENT_ID \
         --broker HOST:PORT` ends one on any running node{STOMP_NOT_LISTED}"
    )]
    ClusterStoreToList,
    /// [`AdminError::BrokerRunning`] for `session list`.
    #[error(
        "the store is in use by a running broker ({0}): `session list` reads a stopped \
         broker's store; on the running broker its web console lists the sessions, STOMP \
         durable subscriptions as stomp:<client-id>:<name>, and deletes an offline one (page \
         /sessions, GET /api/sessions; `ferromq run --console HOST:PORT` turns it on, \
         docs/console.md), and `session end CLIENT_ID --broker HOST:PORT` ends an MQTT one"
    )]
    BrokerRunningToList(StoreError),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("no persistent session with client id `{0}` in the store")]
    NoSuchSession(String),
    #[error(
        "no store at {0} (the broker of this configuration never ran here, or its data \
         directory is elsewhere: -D activemq.data=DIR)"
    )]
    NoStoreYet(String),
    #[error(
        "`{0}` is a STOMP durable subscription: on a running broker the web console's Delete \
         ends it (POST /api/sessions/delete?client_id=..., a single broker's console), or a \
         STOMP client with that client-id (UNSUBSCRIBE with activemq.subscriptionName); \
         --config ends it in a stopped broker's store"
    )]
    StompOnline(String),
    #[error("cannot reach the broker at {addr}: {detail}")]
    Connect { addr: SocketAddr, detail: String },
    #[error("the broker refused the connection: {0:?} (check --username/--password)")]
    Refused(ConnectReason),
}

/// What the hint of `session list` on a cluster node adds: a cluster node's console lists MQTT
/// sessions only, and no tool lists a cluster's STOMP durable subscriptions.
const STOMP_NOT_LISTED: &str = "; a cluster node's web console lists no STOMP durable \
     subscriptions (no tool does on a cluster): a STOMP client connected with the \
     subscription's client-id removes one with UNSUBSCRIBE (headers id and \
     activemq.subscriptionName: the subscription's name)";

/// How the readable form of a STOMP durable subscription's id starts.
const STOMP_READABLE: &str = STOMP_READABLE_PREFIX;

/// A stored client id as `session list` shows it: a STOMP durable subscription's
/// (`U+0000 stomp-durable:<len>:<client-id>:<name>`) as `stomp:<client-id>:<name>`; any other
/// control character as `\u{..}`; everything else as is.
pub fn readable_client_id(stored: &str) -> String {
    match durable_parts(stored) {
        Some((client_id, name)) => escape_controls(&stomp_readable_id(client_id, name)),
        None => escape_controls(stored),
    }
}

fn escape_controls(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() {
                format!("\\u{{{:x}}}", u32::from(c))
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn open_store(config: &Config) -> Result<Store, AdminError> {
    let directory = match (&config.persistence, config.broker.persistent) {
        (Persistence::Durable { directory, .. }, true) => directory.clone(),
        (Persistence::JetStream(_), _) => return Err(AdminError::ClusterStore),
        _ => return Err(AdminError::NoStore),
    };
    // Opening creates a store: an offline command reads one, it does not make one.
    if !directory.exists() {
        return Err(AdminError::NoStoreYet(directory.display().to_string()));
    }
    Store::open(&directory, StoreLimits::default()).map_err(|e| match e {
        StoreError::Locked { .. } => AdminError::BrokerRunning(e),
        other => AdminError::Store(other),
    })
}

/// The persistent sessions in the (stopped) broker's store, by client id.
pub fn list_sessions(config: &Config) -> Result<Vec<KeptSession>, AdminError> {
    // `--broker` ends a session over MQTT, which cannot list any: the advice differs.
    let store = open_store(config).map_err(|e| match e {
        AdminError::NoStore => AdminError::NoStoreToList,
        AdminError::ClusterStore => AdminError::ClusterStoreToList,
        AdminError::BrokerRunning(e) => AdminError::BrokerRunningToList(e),
        other => other,
    })?;
    sessions_in(&store)
}

fn sessions_in(store: &Store) -> Result<Vec<KeptSession>, AdminError> {
    // Payloads are not needed: none is held.
    let recovered = store.recover_paged(0)?;
    let now_ms = crate::broker::durability::now_ms();
    Ok(recovered
        .sessions
        .into_iter()
        .map(|s| KeptSession {
            client_id: readable_client_id(&s.client_id),
            stored_id: s.client_id.to_string(),
            subscriptions: s.record.subscriptions.len(),
            queued: s.queue.len(),
            offline_secs: now_ms.saturating_sub(s.record.last_seen_ms) / 1000,
        })
        .collect())
}

/// End `client_id`'s session in the (stopped) broker's store, with its queue; the session as
/// it was.
pub fn end_session_in_store(config: &Config, client_id: &str) -> Result<KeptSession, AdminError> {
    let store = open_store(config)?;
    let mut sessions = sessions_in(&store)?;
    // The stored id first: an MQTT client may be named like a readable STOMP one.
    let session = match sessions.iter().position(|s| s.stored_id == client_id) {
        Some(at) => Some(at),
        None => sessions.iter().position(|s| s.client_id == client_id),
    };
    let Some(session) = session.map(|at| sessions.swap_remove(at)) else {
        return Err(AdminError::NoSuchSession(client_id.to_owned()));
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| AdminError::Store(StoreError::Storage(e.to_string())))?;
    runtime.block_on(store.commit(vec![Op::DeleteSession {
        client_id: session.stored_id.as_str().into(),
    }]))?;
    Ok(session)
}

/// End `client_id`'s session on the running broker at `addr`; whether it had one. MQTT 5
/// connections (as `username`/`password` when given), each CONNECT, CONNACK, DISCONNECT. The
/// first has Clean Start 0 and Session Expiry Interval 0: its CONNACK's Session Present says
/// whether a session existed (MQTT 5 3.2.2.1.1), and whatever it attached to (the resumed
/// session, or one it made when there was none) ends when it closes (3.1.2.11.2), so nothing
/// is left behind whatever happens next. None existing, that is all. One existing, a second
/// connection with Clean Start 1 discards the session at its CONNACK (3.1.2.4), so that it is
/// gone when this returns rather than once the broker has seen the first close; if that
/// connection fails, the session still ends with the first (logged). Queued messages the
/// first connection is sent are not acknowledged: they go with the session. Errors: the
/// broker unreachable or silent ([`AdminError::Connect`]), the first CONNECT refused
/// ([`AdminError::Refused`]), a STOMP durable subscription's id.
pub async fn end_session_online(
    addr: SocketAddr,
    client_id: &str,
    username: Option<String>,
    password: Option<String>,
) -> Result<bool, AdminError> {
    if client_id.starts_with(STOMP_READABLE) || client_id.starts_with('\u{0}') {
        return Err(AdminError::StompOnline(client_id.to_owned()));
    }
    let existed =
        connect_and_disconnect(addr, client_id, false, username.clone(), password.clone()).await?;
    if !existed {
        return Ok(false);
    }
    if let Err(e) = connect_and_disconnect(addr, client_id, true, username, password).await {
        tracing::warn!(
            client_id = %crate::security::Bounded(client_id),
            "the session ends with the first connection (Session Expiry Interval 0), but the \
             Clean Start connection that makes sure of it failed: {e}"
        );
    }
    Ok(true)
}

/// One MQTT 5 connection of `client_id` to `addr` with `clean_start` and no Session Expiry
/// Interval (0: the session ends when it closes): CONNECT, CONNACK, DISCONNECT. Its CONNACK's
/// Session Present.
async fn connect_and_disconnect(
    addr: SocketAddr,
    client_id: &str,
    clean_start: bool,
    username: Option<String>,
    password: Option<String>,
) -> Result<bool, AdminError> {
    let failed = |detail: String| AdminError::Connect { addr, detail };
    let mut stream = tokio::time::timeout(STEP, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| failed("timed out".into()))?
        .map_err(|e| failed(e.to_string()))?;
    let connect = Packet::Connect(Box::new(Connect {
        protocol: ProtocolVersion::V5,
        clean_start,
        keep_alive_secs: 0,
        client_id: client_id.to_owned(),
        will: None,
        username,
        password: password.map(Bytes::from),
        properties: None,
    }));
    let mut out = BytesMut::new();
    encode(&connect, ProtocolVersion::V5, &mut out).map_err(|e| failed(e.to_string()))?;
    stream
        .write_all(&out)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let mut buf = BytesMut::new();
    let connack = loop {
        match decode(&mut buf, Some(ProtocolVersion::V5), 1 << 16) {
            Ok(Some(Packet::ConnAck(ack))) => break ack,
            Ok(Some(other)) => return Err(failed(format!("expected CONNACK, got {other:?}"))),
            Ok(None) => {}
            Err(e) => return Err(failed(e.to_string())),
        }
        let read = tokio::time::timeout(STEP, stream.read_buf(&mut buf))
            .await
            .map_err(|_| failed("no CONNACK in time".into()))?
            .map_err(|e| failed(e.to_string()))?;
        if read == 0 {
            return Err(failed("closed before CONNACK".into()));
        }
    };
    if connack.reason != ConnectReason::Success {
        return Err(AdminError::Refused(connack.reason));
    }
    out.clear();
    let disconnect = Packet::Disconnect(Disconnect {
        reason: 0,
        properties: None,
    });
    encode(&disconnect, ProtocolVersion::V5, &mut out).map_err(|e| failed(e.to_string()))?;
    stream
        .write_all(&out)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let _ = stream.shutdown().await;
    Ok(connack.session_present)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stomp_durable_sessions_read_as_stomp_client_id_name() {
        assert_eq!(
            readable_client_id("\u{0}stomp-durable:5:app:1:orders"),
            "stomp:app:1:orders"
        );
        assert_eq!(readable_client_id("plain"), "plain");
        assert_eq!(readable_client_id("\u{0}odd\n"), "\\u{0}odd\\u{a}");
        assert_eq!(
            readable_client_id("\u{0}stomp-durable:99:x:y"),
            "\\u{0}stomp-durable:99:x:y"
        );
    }
}
