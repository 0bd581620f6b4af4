//! Admin actions on persistent sessions (`ferromq session ...`): list the sessions a stopped
//! broker keeps, and end an abandoned one, with its queued messages, either in a stopped
//! broker's store or on a running broker.
//!
//! A running broker owns its store exclusively, so there a session is ended the way MQTT ends
//! one: a connection with the session's client id and Clean Session 1 (MQTT 3.1.1 3.1.2.4)
//! discards it, then disconnects. That connection is authenticated and authorized like any
//! other, so only a user the broker lets in can do it; with `allowLinkStealing` it also closes
//! the session's live connection, if any.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
    pub client_id: String,
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
        "the store is in use by a running broker: end the session on it with --broker \
         HOST:PORT ({0})"
    )]
    BrokerRunning(StoreError),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("no persistent session with client id `{0}` in the store")]
    NoSuchSession(String),
    #[error("cannot reach the broker at {addr}: {detail}")]
    Connect { addr: SocketAddr, detail: String },
    #[error("the broker refused the connection: {0:?} (check --username/--password)")]
    Refused(ConnectReason),
}

fn open_store(config: &Config) -> Result<Store, AdminError> {
    let directory = match (&config.persistence, config.broker.persistent) {
        (Persistence::Durable { directory, .. }, true) => directory.clone(),
        _ => return Err(AdminError::NoStore),
    };
    Store::open(&directory, StoreLimits::default()).map_err(|e| match e {
        StoreError::Locked { .. } => AdminError::BrokerRunning(e),
        other => AdminError::Store(other),
    })
}

/// The persistent sessions in the (stopped) broker's store, by client id.
pub fn list_sessions(config: &Config) -> Result<Vec<KeptSession>, AdminError> {
    sessions_in(&open_store(config)?)
}

fn sessions_in(store: &Store) -> Result<Vec<KeptSession>, AdminError> {
    // Payloads are not needed: none is held.
    let recovered = store.recover_paged(0)?;
    let now_ms = crate::broker::durability::now_ms();
    Ok(recovered
        .sessions
        .into_iter()
        .map(|s| KeptSession {
            client_id: s.client_id.to_string(),
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
    let sessions = sessions_in(&store)?;
    let Some(session) = sessions.into_iter().find(|s| s.client_id == client_id) else {
        return Err(AdminError::NoSuchSession(client_id.to_owned()));
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| AdminError::Store(StoreError::Storage(e.to_string())))?;
    runtime.block_on(store.commit(vec![Op::DeleteSession {
        client_id: client_id.into(),
    }]))?;
    Ok(session)
}

/// End `client_id`'s session on the running broker at `addr`: CONNECT with Clean Session 1
/// (as `username`/`password` when given), CONNACK, DISCONNECT.
pub async fn end_session_online(
    addr: SocketAddr,
    client_id: &str,
    username: Option<String>,
    password: Option<String>,
) -> Result<(), AdminError> {
    let failed = |detail: String| AdminError::Connect { addr, detail };
    let mut stream = tokio::time::timeout(STEP, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| failed("timed out".into()))?
        .map_err(|e| failed(e.to_string()))?;
    let connect = Packet::Connect(Box::new(Connect {
        protocol: ProtocolVersion::V311,
        clean_start: true,
        keep_alive_secs: 0,
        client_id: client_id.to_owned(),
        will: None,
        username,
        password: password.map(Bytes::from),
        properties: None,
    }));
    let mut out = BytesMut::new();
    encode(&connect, ProtocolVersion::V311, &mut out).map_err(|e| failed(e.to_string()))?;
    stream
        .write_all(&out)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let mut buf = BytesMut::new();
    let connack = loop {
        match decode(&mut buf, Some(ProtocolVersion::V311), 1 << 16) {
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
    encode(&disconnect, ProtocolVersion::V311, &mut out).map_err(|e| failed(e.to_string()))?;
    stream
        .write_all(&out)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let _ = stream.shutdown().await;
    Ok(())
}
