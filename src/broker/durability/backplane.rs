//! The part of the durability interface that an engine shared by several brokers (the NATS
//! JetStream cluster, `src/cluster`) adds: how a publish reaches the other brokers, how a
//! CONNECT claims a session that another broker may hold, and what the broker may promise its
//! clients while the shared engine is reachable or not.
//!
//! A single-node engine has no backplane ([`super::Durability::backplane`] is `None`) and the
//! broker routes every publish itself, exactly as before. With a backplane, a publish is not
//! routed to local sessions by its connection: it is handed to the engine as
//! [`super::Change::Published`], and every broker (this one included) routes it when the
//! engine delivers it back ([`crate::broker::runtime::BrokerCore::deliver_from_backplane`]). So
//! there is one path and one order for every subscriber, wherever the publisher is.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::broker::durability::DurabilityError;
use crate::broker::runtime::BrokerCore;
use crate::broker::session::{Session, SessionState};

/// A boxed future of the backplane's answers.
pub type BackplaneFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// What a CONNECT asks of the shared engine before its session is attached.
#[derive(Debug, Clone)]
pub struct ClaimRequest {
    pub client_id: Arc<str>,
    /// Clean Start (MQTT 5) / Clean Session (3.1.1): any kept session is discarded.
    pub clean_start: bool,
    /// The new session outlives its connection.
    pub persistent: bool,
    /// The CONNECT's will, with the principal that connected (kept by the engine so that
    /// another broker publishes it if this one dies).
    pub will: Option<crate::broker::durability::KeptWill>,
    /// `true` (MQTT): the session is taken from a broker whose client is still connected
    /// (that connection closes, "session taken over"). `false` (a STOMP durable
    /// subscription): a broker whose client holds the session now keeps it and the claim
    /// answers [`Claimed::InUse`], as ActiveMQ refuses a second consumer of a durable
    /// subscription; a broker that does not answer (dead) still loses it.
    pub take_over: bool,
}

/// The answer to [`Backplane::claim`].
#[derive(Debug)]
pub enum Claimed {
    /// No kept session elsewhere (none, or discarded by Clean Start): attach as a single
    /// broker would, with what this broker holds.
    Here,
    /// A kept session taken over from the shared engine (its owner was another broker, or
    /// this broker before a restart): restore it, then attach to it.
    Image(Box<SessionImage>),
    /// Not taken: its owner's client is connected there (only when
    /// [`ClaimRequest::take_over`] is `false`).
    InUse {
        /// The broker that answered that its client holds the session, when the engine
        /// knows it: the one holding it at the refusal, which is not necessarily the one an
        /// earlier read of the session named (its client may have moved since).
        holder: Option<String>,
    },
}

/// A persistent session as the shared engine kept it, for this broker to restore.
#[derive(Debug)]
pub struct SessionImage {
    /// Subscriptions, options, and the in-flight window (messages sent and not acknowledged,
    /// with their packet ids, in send order: re-sent first, with DUP=1).
    /// A pending will (MQTT 5 Will Delay Interval) is not part of it: the CONNECT that
    /// claims the session continues it before the delay ends, so that will is never sent
    /// (3.1.3-9).
    pub state: SessionState,
    /// How long its client has been gone.
    pub offline_for: Duration,
}

/// A persistent session as the shared engine keeps it, read for the web console (see
/// [`Backplane::kept_sessions`]): it may be held by another broker, or by none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptSession {
    pub client_id: String,
    /// The broker that holds it (its node id); `None`: no broker (released by a drain, or
    /// its broker died), until a client resumes it.
    pub owner: Option<String>,
    /// A client is connected to it (on `owner`).
    pub connected: bool,
    pub subscriptions: usize,
    /// Its first subscription's topic filter (MQTT syntax): a STOMP durable subscription's
    /// one destination.
    pub first_filter: Option<String>,
    /// Messages sent and not acknowledged.
    pub inflight: usize,
    /// When its client left, ms since the Unix epoch (`None` while connected, or unknown).
    pub offline_since_ms: Option<u64>,
    /// MQTT 5 Session Expiry Interval (`None`: the broker's own rule).
    pub expiry_secs: Option<u32>,
}

/// A bounded read of the sessions the shared engine keeps.
#[derive(Debug, Clone, Default)]
pub struct KeptSessions {
    pub sessions: Vec<KeptSession>,
    /// Records read (deleted ones, and ones not listed, included).
    pub read: usize,
    /// Records past the bound, not read.
    pub unread: u64,
}

/// What an engine shared by several brokers adds to [`super::Durability`].
pub trait Backplane: Send + Sync + std::fmt::Debug + 'static {
    /// This broker's node id (`brokerName`), for logs and `$SYS`.
    fn node_id(&self) -> &str;

    /// Start delivering: the engine's readers route what any broker publishes into `core`
    /// (with [`BrokerCore::deliver_from_backplane`]) and its watches keep `core`'s retained
    /// index. Resolves once the retained index is loaded and the readers run.
    fn start(&self, core: Weak<BrokerCore>) -> BackplaneFuture<anyhow::Result<()>>;

    /// CONNECT of `request.client_id`: take the session from whichever broker holds it (that
    /// broker's connection is closed, "session taken over"), and fence it there. `Err`: the
    /// engine cannot answer now (quorum lost, timeout): refuse the CONNECT (0x88).
    fn claim(&self, request: ClaimRequest) -> BackplaneFuture<Result<Claimed, DurabilityError>>;

    /// The session of a successful CONNECT is attached (new, resumed here, or restored from
    /// a [`Claimed::Image`]): the engine starts feeding it, catching up from where its
    /// acknowledgements stopped.
    fn attached(&self, session: &Arc<Session>);

    /// A session ended on this broker (a clean one at its connection's close, after its will
    /// was published or discarded): the engine drops what it kept for it.
    fn session_ended(&self, _session: &Session) {}

    /// A client's SUBSCRIBE adds `filter`, new to its session: messages the engine stored
    /// and acknowledged before it must not reach that subscription, as on a single broker
    /// (they may not have been read back yet when it is made).
    fn subscribing(&self, _session: crate::broker::session::SessionId, _filter: &str) {}

    /// A filter is now used by a local session (`added`), or no longer by any (`!added`):
    /// the engine subscribes to the live subjects it needs (reference counted per filter).
    fn interest(&self, filter: &str, added: bool);

    /// Resolves once the live subscriptions of `filters` are in place (bounded in time): the
    /// SUBACK waits for it, so a QoS 0 message published after the SUBACK reaches the
    /// subscriber.
    fn interest_ready(&self, filters: Vec<String>) -> BackplaneFuture<()>;

    /// Whether the shared engine can take persistent work now (its quorum answered within
    /// the configured time). While it cannot, persistent CONNECTs are refused and persistent
    /// sessions' connections are closed (MQTT 5: DISCONNECT 0x9C, Use another server).
    fn is_available(&self) -> bool;

    /// The highest QoS served across brokers (the CONNACK's Maximum QoS).
    fn maximum_qos(&self) -> crate::protocol::QoS;

    /// The largest message (topic + properties + payload, in bytes) the shared engine carries:
    /// announced as the CONNACK's Maximum Packet Size, and a larger PUBLISH is refused.
    fn maximum_message_bytes(&self) -> usize;

    /// Whether MQTT 5 shared subscriptions are served across brokers.
    fn shared_subscriptions(&self) -> bool;

    /// Whether the shared engine can carry `topic` (a PUBLISH's topic name): its own naming
    /// may bound the length (NATS subjects are bounded by the server's control line).
    fn topic_fits(&self, topic: &str) -> bool;

    /// For a topic [`Self::topic_fits`] refuses: the length it takes in the shared engine's
    /// naming and the most that naming allows, in bytes, for the line that says why.
    fn topic_bytes_carried(&self, topic: &str) -> (usize, usize) {
        (topic.len(), usize::MAX)
    }

    /// Whether the shared engine can carry a subscription to `filter` (as [`Self::topic_fits`]).
    fn filter_fits(&self, filter: &str) -> bool;

    /// The connectors this broker serves clients on, once bound: (scheme, host as written,
    /// bound port). The engine announces them to the other brokers, which name them in a
    /// Server Reference (MQTT 5 4.11) when they send a client here.
    fn listening(&self, _listeners: Vec<(crate::config::Scheme, String, u16)>) {}

    /// Whether this broker is draining (a graceful shutdown handing its sessions over): new
    /// deliveries of QoS 1/2 wait, and connections are closed with "Use another server".
    fn is_draining(&self) -> bool {
        false
    }

    /// Graceful drain before a shutdown (listeners already closed): hold new deliveries,
    /// wait (bounded) for what is in flight to be acknowledged, write and release every
    /// session, then close every connection (MQTT 5: DISCONNECT 0x9C with a Server
    /// Reference). Resolves when done, or at its time bounds.
    fn drain(&self) -> BackplaneFuture<()> {
        Box::pin(async {})
    }

    /// The MQTT 5 Server Reference (4.11: space separated `host:port`) of live brokers that
    /// serve `scheme`'s kind of connector (plain MQTT, MQTT over TLS, WebSocket, secure
    /// WebSocket), for the client `client_id`; `None` when no other broker is known alive.
    fn server_reference(&self, _scheme: crate::config::Scheme, _client_id: &str) -> Option<String> {
        None
    }

    /// At most `limit` of the persistent sessions the shared engine keeps, wherever they are
    /// held (this broker's among them), for the web console; read without blocking the
    /// broker. A session is ended across brokers by a [`Self::claim`] with Clean Start.
    fn kept_sessions(
        &self,
        _limit: usize,
    ) -> BackplaneFuture<Result<KeptSessions, DurabilityError>> {
        Box::pin(async { Ok(KeptSessions::default()) })
    }

    /// The session the shared engine keeps for `client_id`, if any (see
    /// [`Self::kept_sessions`]).
    fn kept_session(
        &self,
        _client_id: &str,
    ) -> BackplaneFuture<Result<Option<KeptSession>, DurabilityError>> {
        Box::pin(async { Ok(None) })
    }
}
