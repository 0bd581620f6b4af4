//! The live connections, for the console: who is connected, since when, over which listener,
//! and a way to close one (an administrator's disconnect). One entry per established
//! connection (after CONNACK / CONNECTED), removed when it closes; kept out of the connection
//! task itself so an idle task does not grow: the task only knows its key (the MQTT attach
//! generation or the STOMP connection tag, both already in the task).
//!
//! Nothing here is on the publish path: a connection touches the map at connect and at close.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::broker::session::Session;

/// Which protocol a connection speaks, and its key in the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientKey {
    /// The session attach generation (unique per MQTT connection).
    Mqtt(u64),
    /// The STOMP connection tag (unique per STOMP connection).
    Stomp(u64),
}

impl ClientKey {
    /// The opaque id the console shows and takes back (`mqtt-12`, `stomp-3`).
    pub fn id(&self) -> String {
        match self {
            ClientKey::Mqtt(n) => format!("mqtt-{n}"),
            ClientKey::Stomp(n) => format!("stomp-{n}"),
        }
    }

    /// The key of an id made by [`ClientKey::id`].
    pub fn parse(id: &str) -> Option<ClientKey> {
        if let Some(n) = id.strip_prefix("mqtt-") {
            return n.parse().ok().map(ClientKey::Mqtt);
        }
        id.strip_prefix("stomp-")?
            .parse()
            .ok()
            .map(ClientKey::Stomp)
    }

    pub fn protocol(&self) -> &'static str {
        match self {
            ClientKey::Mqtt(_) => "mqtt",
            ClientKey::Stomp(_) => "stomp",
        }
    }
}

/// One established connection as the console lists it.
#[derive(Debug)]
pub struct LiveClient {
    pub client_id: Arc<str>,
    /// `3.1`, `3.1.1`, `5.0`, `1.0`, `1.1`, `1.2`.
    pub protocol_version: &'static str,
    pub user: Option<Arc<str>>,
    pub peer: SocketAddr,
    /// The connector (shared with the connection: no copy of its name per client).
    pub listener: Arc<crate::broker::ListenerSettings>,
    pub connected_unix_ms: u64,
    pub keep_alive_secs: u32,
    /// The MQTT session (for its subscription count); `None` for STOMP.
    pub session: Option<Weak<Session>>,
    kick: Kick,
    kicked_by_admin: AtomicBool,
    /// STOMP: the connection's subscriptions (topics and queues), set by its task after each
    /// SUBSCRIBE / UNSUBSCRIBE (an MQTT client's are read from its session). 16 bits, held
    /// at 65535: it fits the entry's padding (see `an_entry_stays_small`).
    subscriptions: std::sync::atomic::AtomicU16,
}

/// How an administrator's disconnect reaches a connection task.
#[derive(Debug)]
pub enum Kick {
    /// MQTT: the kick of the connection `generation` of the entry's session (a takeover kicks
    /// the same way; the task then asks [`ClientRegistry::kicked_by_admin`] which it was). The
    /// session kicks it, so that a parked connection is woken too.
    Session { generation: u64 },
    /// STOMP: the task's wake-up; on waking it checks [`LiveClient::kicked_by_admin`] (no token
    /// and no extra branch in an idle task).
    Wake(Arc<Notify>),
}

impl LiveClient {
    /// Record a STOMP connection's subscription count (held at 65535).
    pub fn set_subscriptions(&self, count: usize) {
        let count = u16::try_from(count).unwrap_or(u16::MAX);
        self.subscriptions.store(count, Ordering::Relaxed);
    }

    /// What [`LiveClient::set_subscriptions`] last recorded.
    pub fn subscriptions(&self) -> usize {
        usize::from(self.subscriptions.load(Ordering::Relaxed))
    }

    /// Whether an administrator closed this connection.
    pub fn kicked_by_admin(&self) -> bool {
        self.kicked_by_admin.load(Ordering::Acquire)
    }
}

/// What a new entry says (see [`LiveClient`]).
#[derive(Debug)]
pub struct NewClient {
    pub client_id: Arc<str>,
    pub protocol_version: &'static str,
    pub user: Option<Arc<str>>,
    pub peer: SocketAddr,
    pub listener: Arc<crate::broker::ListenerSettings>,
    pub keep_alive_secs: u32,
    pub session: Option<Weak<Session>>,
    /// How to close the connection.
    pub kick: Kick,
}

/// The live connections of one broker. Kept only when the console runs ([`ClientRegistry::new`]
/// with `enabled`): a broker without a console pays nothing per connection.
#[derive(Debug, Default)]
pub struct ClientRegistry {
    enabled: bool,
    live: Mutex<HashMap<ClientKey, Arc<LiveClient>, ahash::RandomState>>,
}

/// Why a disconnect found nothing to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KickError {
    NotFound,
}

impl ClientRegistry {
    /// A registry that records connections when `enabled` (the configuration has a console).
    pub fn new(enabled: bool) -> ClientRegistry {
        ClientRegistry {
            enabled,
            live: Mutex::default(),
        }
    }

    /// Record an established connection; its entry (the connection may keep it). `None` when
    /// the registry is not enabled.
    pub fn register(&self, key: ClientKey, client: NewClient) -> Option<Arc<LiveClient>> {
        if !self.enabled {
            return None;
        }
        let entry = LiveClient {
            client_id: client.client_id,
            protocol_version: client.protocol_version,
            user: client.user,
            peer: client.peer,
            listener: client.listener,
            connected_unix_ms: unix_ms_now(),
            keep_alive_secs: client.keep_alive_secs,
            session: client.session,
            kick: client.kick,
            kicked_by_admin: AtomicBool::new(false),
            subscriptions: std::sync::atomic::AtomicU16::new(0),
        };
        let entry = Arc::new(entry);
        self.live.lock().insert(key, entry.clone());
        Some(entry)
    }

    /// The connection closed.
    pub fn remove(&self, key: ClientKey) {
        if self.enabled {
            self.live.lock().remove(&key);
        }
    }

    /// Close a connection as an administrator: its task sees itself kicked and asks [`ClientRegistry::kicked_by_admin`] why.
    pub fn disconnect(&self, key: ClientKey) -> Result<Arc<LiveClient>, KickError> {
        let entry = self
            .live
            .lock()
            .get(&key)
            .cloned()
            .ok_or(KickError::NotFound)?;
        entry.kicked_by_admin.store(true, Ordering::Release);
        match &entry.kick {
            Kick::Session { generation } => {
                if let Some(session) = entry.session.as_ref().and_then(Weak::upgrade) {
                    session.kick_generation(*generation);
                }
            }
            // A stored permit if the task is busy: it sees the flag at its next wait.
            Kick::Wake(wake) => wake.notify_one(),
        }
        Ok(entry)
    }

    /// Whether the connection `key` was closed by [`ClientRegistry::disconnect`] (rather than
    /// taken over by a new connection of its client id).
    pub fn kicked_by_admin(&self, key: ClientKey) -> bool {
        self.enabled
            && self
                .live
                .lock()
                .get(&key)
                .is_some_and(|e| e.kicked_by_admin.load(Ordering::Acquire))
    }

    /// Every live connection, by key order of arrival not guaranteed.
    pub fn list(&self) -> Vec<(ClientKey, Arc<LiveClient>)> {
        self.live
            .lock()
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect()
    }

    /// Connections per protocol: (mqtt, stomp).
    pub fn counts(&self) -> (usize, usize) {
        let live = self.live.lock();
        let mqtt = live
            .keys()
            .filter(|k| matches!(k, ClientKey::Mqtt(_)))
            .count();
        (mqtt, live.len() - mqtt)
    }

    /// Connections per listener name.
    pub fn per_listener(&self, listener: &str) -> usize {
        self.live
            .lock()
            .values()
            .filter(|c| c.listener.name == listener)
            .count()
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_ms_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(session: Option<&Arc<Session>>) -> NewClient {
        let (_, listener) = crate::broker::runtime::test_core(Arc::new(
            crate::broker::durability::MemoryOnly::default(),
        ));
        NewClient {
            client_id: "c".into(),
            protocol_version: "5.0",
            user: None,
            peer: "127.0.0.1:1".parse().expect("addr"),
            listener,
            keep_alive_secs: 60,
            session: session.map(Arc::downgrade),
            kick: Kick::Session { generation: 1 },
        }
    }

    /// What the console costs an idle connection: this entry (one allocation, with the Arc
    /// counts) plus its slot in the map. The connection task itself does not grow.
    #[test]
    fn an_entry_stays_small() {
        let entry = std::mem::size_of::<LiveClient>();
        assert!(entry <= 128, "LiveClient is {entry} bytes");
    }

    #[test]
    fn a_registry_without_a_console_records_nothing() {
        let registry = ClientRegistry::default();
        assert!(registry
            .register(ClientKey::Mqtt(1), client(None))
            .is_none());
        assert_eq!(registry.counts(), (0, 0));
    }

    #[test]
    fn ids_round_trip_and_a_disconnect_cancels_and_is_remembered() {
        for key in [ClientKey::Mqtt(7), ClientKey::Stomp(9)] {
            assert_eq!(ClientKey::parse(&key.id()), Some(key));
        }
        assert_eq!(ClientKey::parse("mqtt-x"), None);
        let registry = ClientRegistry::new(true);
        let session = Arc::new(Session::new(
            1,
            crate::broker::session::SessionState::new("c", false),
        ));
        let kick = session.attach(1).signals;
        registry.register(ClientKey::Mqtt(1), client(Some(&session)));
        assert!(!registry.kicked_by_admin(ClientKey::Mqtt(1)));
        assert!(registry.disconnect(ClientKey::Mqtt(2)).is_err());
        assert!(registry.disconnect(ClientKey::Mqtt(1)).is_ok());
        assert!(kick.is_kicked());
        assert!(registry.kicked_by_admin(ClientKey::Mqtt(1)));
        assert_eq!(registry.counts(), (1, 0));
        assert_eq!(registry.per_listener("mqtt"), 1);
        registry.remove(ClientKey::Mqtt(1));
        assert_eq!(registry.counts(), (0, 0));
    }
}
