//! Per-connector connection counters: relaxed atomics in an `Arc` the connector's settings
//! carry, so a connection reaches them through the settings it already holds (no lookup, no
//! per-connection memory).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use super::reason::Reason;
use crate::config::Protocol;

/// Counters of one protocol on one connector.
#[derive(Debug, Default)]
pub struct ProtocolCounters {
    /// Connections that started speaking the protocol (after any TLS/WebSocket handshake).
    pub opened: AtomicU64,
    /// Connections established (CONNECT accepted).
    pub connected: AtomicU64,
    /// Opened connections that ended, whatever the reason.
    ended: AtomicU64,
    closed: [AtomicU64; Reason::COUNT],
    refused: [AtomicU64; Reason::COUNT],
}

impl ProtocolCounters {
    /// Ended after being established, per reason.
    pub fn closed(&self, reason: Reason) -> u64 {
        self.closed[reason.index()].load(Ordering::Relaxed)
    }

    /// Refused (never established), per reason.
    pub fn refused(&self, reason: Reason) -> u64 {
        self.refused[reason.index()].load(Ordering::Relaxed)
    }

    /// Connections open now.
    pub fn current(&self) -> u64 {
        // Read `ended` first: a connection ending between the two loads cannot make it negative.
        let ended = self.ended.load(Ordering::Relaxed);
        self.opened.load(Ordering::Relaxed).saturating_sub(ended)
    }
}

/// The counters of one connector, kept across reloads of its settings.
#[derive(Debug)]
pub struct ListenerStats {
    /// The connector's name (`transportConnector name`).
    pub name: Arc<str>,
    /// The protocol of the connector's scheme (WebSocket connectors serve both).
    pub default_protocol: Protocol,
    /// A TLS connector (its handshakes are counted).
    pub tls: bool,
    mqtt: ProtocolCounters,
    stomp: ProtocolCounters,
    /// Sockets accepted.
    pub accepted: AtomicU64,
    /// TLS handshakes that completed.
    pub tls_handshakes: AtomicU64,
    /// TLS (or WebSocket-over-TLS) handshakes that failed.
    pub tls_failures: AtomicU64,
}

impl ListenerStats {
    pub fn new(name: &str, default_protocol: Protocol, tls: bool) -> Arc<ListenerStats> {
        Arc::new(ListenerStats {
            name: Arc::from(name),
            default_protocol,
            tls,
            mqtt: ProtocolCounters::default(),
            stomp: ProtocolCounters::default(),
            accepted: AtomicU64::new(0),
            tls_handshakes: AtomicU64::new(0),
            tls_failures: AtomicU64::new(0),
        })
    }

    /// The counters of `protocol`.
    pub fn of(&self, protocol: Protocol) -> &ProtocolCounters {
        match protocol {
            Protocol::Mqtt => &self.mqtt,
            Protocol::Stomp => &self.stomp,
        }
    }

    pub(crate) fn opened(&self, protocol: Protocol) {
        self.of(protocol).opened.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn connected(&self, protocol: Protocol) {
        self.of(protocol).connected.fetch_add(1, Ordering::Relaxed);
    }

    /// An opened connection ended after being established.
    pub(crate) fn closed(&self, protocol: Protocol, reason: Reason) {
        let c = self.of(protocol);
        c.closed[reason.index()].fetch_add(1, Ordering::Relaxed);
        c.ended.fetch_add(1, Ordering::Relaxed);
    }

    /// An opened connection ended before being established.
    pub(crate) fn refused(&self, protocol: Protocol, reason: Reason) {
        let c = self.of(protocol);
        c.refused[reason.index()].fetch_add(1, Ordering::Relaxed);
        c.ended.fetch_add(1, Ordering::Relaxed);
    }

    /// A socket refused before it was opened (`maximumConnections`, failed TLS handshake).
    pub(crate) fn refused_at_accept(&self, reason: Reason) {
        self.of(self.default_protocol).refused[reason.index()].fetch_add(1, Ordering::Relaxed);
    }
}

/// The connectors' counters, for the scrape.
#[derive(Debug, Default)]
pub struct ListenerRegistry(Mutex<Vec<Arc<ListenerStats>>>);

impl ListenerRegistry {
    /// Show `stats` from now on; replaces a connector of the same name (a connector removed
    /// and added again by reloads starts from zero, which Prometheus reads as a reset).
    pub fn register(&self, stats: Arc<ListenerStats>) {
        let mut all = self.0.lock();
        all.retain(|s| s.name != stats.name);
        all.push(stats);
    }

    /// Every registered connector, in registration order.
    pub fn all(&self) -> Vec<Arc<ListenerStats>> {
        self.0.lock().clone()
    }
}
