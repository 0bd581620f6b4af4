//! Durability: what the broker must keep so that an acknowledged message is never lost, in the
//! broker's own words, behind one interface ([`Durability`]).
//!
//! The broker core says what happened ([`Change`]: a message held for sessions, sent with a
//! packet id, released, removed; an inbound QoS 2 id received or released; a session saved or
//! ended) and gets back one [`Commit`]. It never builds storage records and never asks which
//! engine runs. Implementations:
//!
//! - [`MemoryOnly`]: `persistent="false"` or `memoryPersistenceAdapter`. Every commit is ready at
//!   once; nothing outlives the process (persistent sessions of a stopped broker can be kept as
//!   snapshots in a [`MemorySessionStore`] handed to the next one, which tests use).
//! - [`RedbStore`]: the durable store of `src/store` (kahaDB's place in `activemq.xml`, the
//!   default). A commit is ready once its group commit is fsync'd.
//! - [`Recording`]: records every change in order and lets a test decide when commits finish;
//!   for unit tests of ordering rules (QoS 2 exactly once) without redb or sockets.
//!
//! # What the interface is built for
//!
//! - A commit can be refused ([`DurabilityError::Full`]: storeUsage or disk space;
//!   [`DurabilityError::Unavailable`]: the engine failed; [`DurabilityError::Unconfirmed`]: the
//!   engine did not answer in time and may still keep it): the caller must not acknowledge what
//!   the commit carried.
//! - Commits may be slow (remote engines): callers pipeline them (see
//!   `connection/durable_acks.rs`) and only await what gates an acknowledgement.
//! - A planned commit can become stale ([`DurabilityError::Stale`]: a receiving session ended
//!   between planning and committing): the caller plans again.
//! - Recovery returns plain values ([`Recovery`]) that the runtime applies; durability never
//!   holds the broker core.
//! - Queue targets are named by [`QueueOwner`]: a session, or a group / named queue declared
//!   with [`Change::QueueDeclared`] (records kept and recovered for MQTT 5 shared-subscription
//!   groups and STOMP queues, which nothing routes to yet), and an engine that fences writes by
//!   an owner epoch (a clustered engine) can refuse a stale owner's commit as `Unavailable`.

pub mod backplane;
mod memory;
mod receiving;
mod recording;
mod redb_store;
pub mod stored_v5;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;

use crate::broker::message::{Message, SampleStamp};
use crate::broker::routing::memory::MemoryGauge;
use crate::broker::session::queue::QueuedMessage;
use crate::broker::session::{SessionState, SubscriptionOptions};
use crate::config::{Config, Persistence};
use crate::protocol::{LastWill, Properties, QoS};
use crate::security::Principal;

pub use backplane::{
    Backplane, BackplaneFuture, ClaimRequest, Claimed, KeptSession, KeptSessions, SessionImage,
};
pub use memory::{MemoryOnly, MemorySessionStore, SessionStore, StoreError};
pub use receiving::ReceivingConnection;
pub use recording::Recording;
pub use redb_store::RedbStore;

/// Orders the entries of one queue (ascending = delivery order) and names an entry in later
/// changes. Unique per broker; a durable engine keeps it growing across restarts.
pub type QueueSeq = u64;

/// Why a commit did not happen. The caller must not acknowledge what a failed commit carried;
/// nothing of it was kept, except that an [`DurabilityError::Unconfirmed`] one may still be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurabilityError {
    /// A broker-wide limit (`storeUsage`, free disk space) does not let the engine take more.
    /// Changes that only remove or update records still go through, so it drains.
    #[error("{0}")]
    Full(String),
    /// A session the commit queues for ended after the commit was planned: plan it again.
    #[error("stale plan: {0}")]
    Stale(String),
    /// The engine failed or is closed (I/O error, fenced owner): refuse for now.
    #[error("{0}")]
    Unavailable(String),
    /// The engine was given the changes and did not confirm them within its bound (a cluster
    /// store's acknowledgement not seen within `storeTimeout`): they may still be kept. A
    /// failure all the same (nothing is acknowledged), but a client told of it must not be
    /// told the message is gone: sending it again may deliver it twice.
    #[error("{0}")]
    Unconfirmed(String),
}

impl DurabilityError {
    /// Whether the changes may have been kept (see [`DurabilityError::Unconfirmed`]).
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, DurabilityError::Unconfirmed(_))
    }
}

type PendingCommit = Pin<Box<dyn Future<Output = Result<(), DurabilityError>> + Send>>;

/// A paged-out message read back ([`Durability::read_payloads`]): its payload and the MQTT 5
/// side kept with it (STOMP headers are user properties), which a paged session queue entry
/// does not hold in memory ([`crate::broker::session::queue::QueuedMessage::page_out`]).
#[derive(Debug, Clone)]
pub struct PagedBody {
    pub payload: Bytes,
    pub v5: Option<Arc<crate::broker::message::V5Extras>>,
}

/// The answer to [`Durability::read_payloads`].
pub type PageFuture =
    Pin<Box<dyn Future<Output = Result<Vec<Option<PagedBody>>, DurabilityError>> + Send>>;

/// The answer to [`Durability::commit`]: done at once (memory-only, or nothing to keep), or a
/// future that resolves once the changes are durable. Either way the changes were submitted
/// in order: a later commit is applied after this one even if this one is never awaited.
pub enum Commit {
    Done(Result<(), DurabilityError>),
    Pending(PendingCommit),
}

impl std::fmt::Debug for Commit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Commit::Done(r) => f.debug_tuple("Done").field(r).finish(),
            Commit::Pending(_) => f.write_str("Pending"),
        }
    }
}

impl Commit {
    pub fn done() -> Commit {
        Commit::Done(Ok(()))
    }

    /// Wait for the outcome.
    pub async fn wait(self) -> Result<(), DurabilityError> {
        match self {
            Commit::Done(result) => result,
            Commit::Pending(future) => future.await,
        }
    }
}

/// Who a queued copy is for. The broker routes to sessions only today; group and queue records
/// are kept and recovered so that MQTT 5 shared subscriptions and STOMP queues can use them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum QueueOwner {
    /// A persistent session, by client id: its queue lives and dies with its session record.
    Session(Arc<str>),
    /// An MQTT 5 shared-subscription group, named by one string (share name and filter):
    /// its members compete for its entries. Exists from [`Change::QueueDeclared`] to
    /// [`Change::QueueDeleted`].
    Group(Arc<str>),
    /// A named queue (STOMP `/queue/x`, ActiveMQ queue semantics) with competing consumers.
    /// Exists from [`Change::QueueDeclared`] to [`Change::QueueDeleted`].
    Queue(Arc<str>),
}

/// One copy of a message queued at QoS 1/2 for a persistent session, a group or a queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedFor {
    pub owner: QueueOwner,
    pub seq: QueueSeq,
    /// The QoS it is delivered with: min(published QoS, subscription QoS).
    pub qos: QoS,
    /// Sent with RETAIN=1 (a retained message delivered because of a SUBSCRIBE, or a live
    /// one through a Retain As Published subscription).
    pub retain: bool,
    /// The Subscription Identifier it is sent with (MQTT 5 3.3.4-3).
    pub subscription_id: Option<std::num::NonZeroU32>,
}

/// What a message does to the retained message of its topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetainedChange {
    Unchanged,
    /// It becomes the retained message of its topic.
    Set,
    /// It clears the retained message of its topic (empty retained payload).
    Clear,
}

/// A will kept with a persistent session: while its client is connected (published if the
/// broker stops without a clean shutdown), and while it is pending after its client left
/// without DISCONNECT (MQTT 5 Will Delay Interval, 3.1.3-9), with the principal that connected
/// with it (a will published later is authorized as its owner).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptWill {
    /// Topic, payload, QoS and retain flag (`v5` is not used: see `properties`).
    pub message: Message,
    /// `None`: kept before owners were recorded (not published after a crash).
    pub owner: Option<WillOwner>,
    /// The will properties as the client sent them (MQTT 5 3.1.3.2): Will Delay Interval, and
    /// a Message Expiry Interval that starts when the will is published.
    pub properties: Option<Box<Properties>>,
    /// When the pending will is published, ms since the Unix epoch; `None` while its client is
    /// connected.
    pub deadline_ms: Option<u64>,
}

/// The owner of a kept will: groups are looked up again when it is published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WillOwner {
    pub user: Arc<str>,
    pub anonymous: bool,
}

impl KeptWill {
    pub fn new(will: &LastWill, owner: &Principal) -> KeptWill {
        KeptWill {
            message: Message {
                stamp: SampleStamp::NONE,
                topic: Arc::from(will.topic.as_str()),
                payload: will.payload.clone(),
                qos: will.qos,
                retain: will.retain,
                v5: None,
            },
            owner: Some(WillOwner {
                user: owner.user.clone(),
                anonymous: owner.anonymous,
            }),
            properties: will.properties.clone(),
            deadline_ms: None,
        }
    }

    /// The Will Delay Interval in seconds (0 when absent: MQTT 5 3.1.3.2.2).
    pub fn delay_secs(&self) -> u32 {
        self.properties
            .as_ref()
            .and_then(|p| p.will_delay_interval)
            .unwrap_or(0)
    }

    /// The message to publish at `now` (its Message Expiry Interval starts then).
    pub fn into_message(self, now: std::time::Instant) -> Message {
        Message {
            v5: crate::broker::message::V5Extras::from_publish(self.properties, now),
            ..self.message
        }
    }
}

/// A persistent session's own data (not its queue).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionData {
    pub client_id: Arc<str>,
    /// (filter, the subscription's options), by filter.
    pub subscriptions: Vec<(Arc<str>, SubscriptionOptions)>,
    /// Set while a client is connected (published if the broker stops without a clean
    /// shutdown) and while its will is pending (see [`KeptWill::deadline_ms`]).
    pub will: Option<KeptWill>,
    /// MQTT 5 Session Expiry Interval in seconds (`None`: the broker's own rule).
    pub expiry_secs: Option<u32>,
    /// Its client last spoke MQTT 5 (see [`SessionState::mqtt5`]).
    pub mqtt5: bool,
    /// A connection held the session when this was taken (see [`SessionState::connected`]).
    pub connected: bool,
}

impl SessionData {
    pub fn of(state: &SessionState) -> SessionData {
        SessionData {
            client_id: state.client_id.clone(),
            subscriptions: state
                .subscriptions()
                .iter()
                .map(|(filter, sub)| (Arc::from(filter.as_str()), *sub))
                .collect(),
            will: state.kept_will.as_deref().cloned(),
            expiry_secs: state.expiry_secs,
            mqtt5: state.mqtt5,
            connected: state.connected,
        }
    }
}

/// One thing that happened, in the broker's words. A batch of changes passed to
/// [`Durability::commit`] is kept all-or-nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A message held for persistent sessions (one entry per copy) and/or as its topic's
    /// retained message. The body is kept once however many copies reference it.
    Message {
        message: Message,
        retained: RetainedChange,
        queued_for: Vec<QueuedFor>,
    },
    /// Queue entry `seq` was sent to its client with `packet_id`.
    Sent {
        owner: QueueOwner,
        seq: QueueSeq,
        packet_id: u16,
    },
    /// QoS 2 entry `seq`: PUBREC received, PUBREL sent.
    Released {
        owner: QueueOwner,
        seq: QueueSeq,
        packet_id: u16,
    },
    /// Queue entry `seq` is done: acknowledged, expired, or refused at delivery.
    Removed { owner: QueueOwner, seq: QueueSeq },
    /// Inbound QoS 2 PUBLISH `packet_id` received (PUBREC follows), on `connection` (`None`:
    /// not from a live connection). A store that writes the exchange where another
    /// connection of the session can find it writes nothing once `connection` no longer
    /// holds its session.
    InboundQos2Received {
        client_id: Arc<str>,
        packet_id: u16,
        connection: Option<ReceivingConnection>,
    },
    /// PUBREL for inbound `packet_id` received (PUBCOMP follows).
    InboundQos2Released { client_id: Arc<str>, packet_id: u16 },
    /// A persistent session's own data, written whole.
    SessionSaved(SessionData),
    /// A persistent session ended, with its queue.
    SessionEnded { client_id: Arc<str> },
    /// A group's or named queue's record is created (kept when it exists already), so copies
    /// can be queued for it. A `Session` owner is ignored: a session's queue lives and dies
    /// with its record ([`Change::SessionSaved`], [`Change::SessionEnded`]).
    QueueDeclared { owner: QueueOwner },
    /// A group or named queue is gone, with every entry it held. A `Session` owner is
    /// ignored, as for [`Change::QueueDeclared`].
    QueueDeleted { owner: QueueOwner },
    /// A publish accepted from a client (or a will) for an engine with a [`Backplane`]: it
    /// delivers the message to every broker sharing it, this one included. Kept before the
    /// publisher is acknowledged when its QoS is 1 or 2. Never produced without a backplane.
    Published {
        message: Message,
        retained: RetainedChange,
        /// The publishing client (No Local subscriptions of its session skip the message).
        publisher: Option<Arc<str>>,
        /// The identity the engine stores this publish under, from [`Durability::store_id`],
        /// the same for every commit of it that its connection retries, so a store that did
        /// land before its acknowledgement was lost is neither kept twice nor overtaken by
        /// later publishes. `None`: the engine picks a fresh one.
        store_id: Option<u64>,
    },
    /// A topic (MQTT form) now exists in the broker's destination map: created by a SUBSCRIBE
    /// or PUBLISH, or declared in `<destinations>`. Kept (no error when it is already) and
    /// recovered in [`Recovery::destinations`]; nothing removes it.
    DestinationCreated { topic: Arc<str> },
}

impl Change {
    /// Give the publishes among `changes` the identity `id` (see [`Durability::store_id`]).
    pub fn set_store_id(changes: &mut [Change], id: Option<u64>) {
        for change in changes {
            if let Change::Published { store_id, .. } = change {
                *store_id = id;
            }
        }
    }

    pub fn sent(client_id: &Arc<str>, seq: QueueSeq, packet_id: u16) -> Change {
        Change::Sent {
            owner: QueueOwner::Session(client_id.clone()),
            seq,
            packet_id,
        }
    }

    pub fn released(client_id: &Arc<str>, seq: QueueSeq, packet_id: u16) -> Change {
        Change::Released {
            owner: QueueOwner::Session(client_id.clone()),
            seq,
            packet_id,
        }
    }

    pub fn removed(client_id: &Arc<str>, seq: QueueSeq) -> Change {
        Change::Removed {
            owner: QueueOwner::Session(client_id.clone()),
            seq,
        }
    }
}

/// A persistent session read back at start.
#[derive(Debug)]
pub struct RecoveredSession {
    pub state: SessionState,
    /// How long its client had been gone when the broker stopped (the offline clock of
    /// `offlineDurableSubscriberTimeout` and MQTT 5 session expiry goes on from there).
    pub offline_for: std::time::Duration,
    /// Its will: the client was connected when the broker stopped without a clean shutdown
    /// (`deadline_ms` is `None`), so the will is due; or a pending will (MQTT 5 Will Delay
    /// Interval) due at `deadline_ms`.
    pub will: Option<KeptWill>,
}

/// What an engine held at start, as values for the runtime to apply.
#[derive(Debug, Default)]
pub struct Recovery {
    pub sessions: Vec<RecoveredSession>,
    pub retained: Vec<Message>,
    /// Declared groups and named queues with their entries in delivery order (named queues
    /// go to [`crate::broker::queues::Queues::restore`]; groups are not used yet and dropped). Entries sent but not acknowledged before
    /// the stop come back as plain queued messages: their consumers left with the restart, so
    /// they are delivered again. Entries beyond the pending limit come back paged.
    pub queues: Vec<(QueueOwner, Vec<QueuedMessage>)>,
    /// Topics (MQTT form) recorded with [`Change::DestinationCreated`].
    pub destinations: Vec<Arc<str>>,
    pub counts: RecoveredCounts,
    /// Damage found and repaired or dropped (logged at warn).
    pub problems: Vec<String>,
}

/// Counts for the startup log line.
#[derive(Debug, Default, Clone, Copy)]
pub struct RecoveredCounts {
    pub sessions: usize,
    pub retained: usize,
    pub queued: usize,
    pub inflight: usize,
    pub inbound_qos2: usize,
}

/// Engine counters (for metrics and benchmarks); zero for memory-only.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DurabilityStats {
    /// Transactions committed, each with one fsync.
    pub group_commits: u64,
    pub batches_committed: u64,
    pub batches_refused_full: u64,
    /// Bytes of message bodies held now (what `storeUsage` counts).
    pub message_bytes: u64,
    /// The `storeUsage` limit, when there is one.
    pub limit_bytes: Option<u64>,
    /// How long each group commit (with its fsync) took.
    pub commit_seconds: crate::metrics::histogram::HistogramSnapshot,
}

/// Where the broker's persistent state goes. See the module documentation.
pub trait Durability: Send + Sync + std::fmt::Debug + 'static {
    /// Where the state lives, for logs (`memory`, or the store directory).
    fn location(&self) -> String;

    /// A new queue sequence number.
    fn next_seq(&self) -> QueueSeq;

    /// Keep `changes` all-or-nothing, after every batch submitted before (the order of calls
    /// is the order of application, whether or not the answers are awaited).
    fn commit(&self, changes: Vec<Change>) -> Commit;

    /// [`Durability::commit`] for changes nobody waits for (a QoS 1 delivery's packet id, an
    /// acknowledged entry's removal), in the same order as every other commit. An engine that
    /// reports such a commit's failure itself answers [`Commit::Done`] at once and saves the
    /// caller a task per commit; the default is a plain commit, settled by the caller.
    fn commit_detached(&self, changes: Vec<Change>) -> Commit {
        self.commit(changes)
    }

    /// An identity for one publish whose commit its connection may retry, set in its
    /// [`Change::Published`] on every attempt ([`Change::set_store_id`]). `None` (the
    /// default): the engine has no use for one.
    fn store_id(&self) -> Option<u64> {
        None
    }

    /// A persistent session's client left: its offline time starts now. Its will is gone
    /// (published or discarded), unless it is pending (kept with its deadline).
    fn session_offline(&self, state: &SessionState) -> Commit {
        let mut data = SessionData::of(state);
        data.will = data.will.filter(|w| w.deadline_ms.is_some());
        self.commit(vec![Change::SessionSaved(data)])
    }

    /// Whether a message of `incoming_bytes` (topic + payload) can be kept now, checked before
    /// it is admitted (so the common refusal happens before anything is queued, and a paused
    /// publisher can poll it cheaply). `Err(Full)`: a broker-wide limit (`storeUsage`, free
    /// disk space) would be passed; `Err(Unavailable)`: the engine cannot write now. A commit
    /// may still be refused afterwards (a race with other publishers); callers handle both.
    fn check_room(&self, _incoming_bytes: u64) -> Result<(), DurabilityError> {
        Ok(())
    }

    /// Whether a kept message's body can be read back after the broker dropped its in-memory
    /// copy. Then a session's queue beyond its pending limit keeps only the message's
    /// envelope in memory and its payload is read back on delivery ([`Self::read_payloads`]),
    /// as ActiveMQ's store cursor pages durable subscriptions.
    fn keeps_bodies(&self) -> bool {
        false
    }

    /// The payloads and properties of queue entries `seqs` of session `client_id`, in the
    /// order asked (`None`: the entry is gone). An engine may answer for the first of them
    /// only, never none: a page of large messages is sized to what `memoryUsage` has room for.
    fn read_payloads(&self, _client_id: &Arc<str>, _seqs: Vec<QueueSeq>) -> PageFuture {
        Box::pin(std::future::ready(Err(DurabilityError::Unavailable(
            "this engine keeps no message bodies".into(),
        ))))
    }

    /// [`Self::read_payloads`] for entries `seqs` of a group or named queue (entries
    /// recovered paged out, see [`Recovery::queues`]).
    fn read_queue_payloads(&self, _owner: &QueueOwner, _seqs: Vec<QueueSeq>) -> PageFuture {
        Box::pin(std::future::ready(Err(DurabilityError::Unavailable(
            "this engine keeps no message bodies".into(),
        ))))
    }

    /// Graceful shutdown, with every persistent session as it is now.
    fn shutdown(&self, _persistent: &[SessionState]) {}

    /// Whether persistent sessions outlive this broker instance (a store, or snapshots handed
    /// to the next instance). When they do not, a shutdown ends every session, so a will
    /// waiting for its delay is published at the shutdown (MQTT 5 3.1.2.5: at the latest when
    /// the session ends).
    fn keeps_sessions(&self) -> bool {
        false
    }

    /// Read everything back, once, at start; restored message bodies are charged to `memory`.
    fn recover(&self, memory: &Arc<MemoryGauge>) -> Result<Recovery, DurabilityError>;

    fn stats(&self) -> DurabilityStats {
        DurabilityStats::default()
    }

    /// The engine is shared by several brokers (see [`backplane`]); `None` for a single node.
    fn backplane(&self) -> Option<Arc<dyn Backplane>> {
        None
    }
}

/// The engine `config` asks for: [`RedbStore`] for a durable broker (`persistent="true"` with
/// kahaDB, the default), [`MemoryOnly`] for `persistent="false"` or `memoryPersistenceAdapter`.
/// Fails when another broker holds the store directory or the store cannot be opened.
pub async fn open(config: &Config) -> anyhow::Result<Arc<dyn Durability>> {
    match (&config.persistence, config.broker.persistent) {
        (Persistence::JetStream(settings), _) => {
            let engine =
                crate::cluster::ClusterEngine::open(settings, &config.broker.broker_name).await?;
            Ok(Arc::new(engine))
        }
        (Persistence::Durable { directory, .. }, true) => {
            let memory_limit = config
                .limits
                .memory_limit_bytes
                .unwrap_or(crate::broker::routing::memory::DEFAULT_MEMORY_LIMIT_BYTES);
            let store =
                RedbStore::open(directory.clone(), config.limits.store_limit(), memory_limit)
                    .await?;
            Ok(Arc::new(store))
        }
        _ => Ok(Arc::new(MemoryOnly::default())),
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Refusals and background failures are logged when their total is a power of two (a full
/// store under load would otherwise log every message).
pub fn should_log(total: u64) -> bool {
    total.is_power_of_two()
}

/// An empty payload (stored messages without MQTT 5 properties).
pub(crate) fn no_properties() -> Bytes {
    Bytes::new()
}
