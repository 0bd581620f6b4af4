//! The records the store keeps, as plain data, and the operations that change them.
//!
//! Shapes follow the broker's session state (`src/broker/session/`): subscriptions with QoS,
//! a queue of messages per session where each entry is queued, in flight with a packet id, or
//! released (PUBREC received), inbound QoS 2 packet ids, the will. Message bodies live apart
//! from queues and are referenced by [`MessageId`], so one publish fanned out to many
//! persistent sessions is written once.

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;

use crate::protocol::{QoS, SubscriptionOptions};

/// Identifies a stored message body. Allocated by [`super::Store::allocate_id`].
pub type MessageId = u64;

/// Orders entries inside one session's queue (ascending = delivery order). Allocated by
/// [`super::Store::allocate_id`] like message ids, so it keeps growing across restarts.
pub type QueueSeq = u64;

/// An application message as stored: written once, shared by every queue entry and retained
/// slot that references it. Cloning is cheap (reference counts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub topic: Arc<str>,
    pub payload: Bytes,
    /// The QoS it was published with.
    pub qos: QoS,
    /// The publisher's retain flag.
    pub retain: bool,
    /// MQTT 5 PUBLISH properties, encoded by the codec; empty for 3.1/3.1.1.
    pub properties: Bytes,
}

/// One subscription of a persistent session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionRecord {
    pub filter: Arc<str>,
    /// Granted QoS and the MQTT 5 options (no local, retain as published, retain handling).
    pub options: SubscriptionOptions,
    /// MQTT 5 subscription identifier, if the client gave one.
    pub subscription_id: Option<u32>,
}

/// The will of a persistent session (kept so that a will delayed past a broker restart, or
/// pending when the broker crashed, is still published).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WillRecord {
    pub topic: Arc<str>,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// MQTT 5 will properties (including the will delay interval), encoded; empty for 3.1.1.
    pub properties: Bytes,
    /// Who connected with this will, so a will published after a restart is authorized as its
    /// owner. `None` in records written before it was kept (such a will is not published).
    pub owner: Option<WillOwner>,
}

/// The authenticated identity of a will's owner. Groups are not kept: they are looked up again
/// (as of the restart) from the user name, the way the security module forms a principal
/// without a password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WillOwner {
    pub user: Arc<str>,
    /// Logged in without credentials (anonymous access, or no authentication plugin).
    pub anonymous: bool,
}

/// A persistent session's own data (its queue and inbound QoS 2 ids are separate records, so
/// that queue traffic never rewrites this one).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SessionRecord {
    pub subscriptions: Vec<SubscriptionRecord>,
    pub will: Option<WillRecord>,
    /// How long the session outlives its last connection; `None` = the broker's default
    /// (see [`super::Store::expire_sessions`]).
    pub expiry_ms: Option<u64>,
    /// When a client last connected or disconnected, in ms since the Unix epoch.
    pub last_seen_ms: u64,
    /// Its client last spoke MQTT 5 (one copy per matching subscription is queued for it).
    /// False in records written before it was kept.
    pub mqtt5: bool,
}

/// Where one queued message stands in its exchange with the subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueState {
    /// Routed to the session, not yet sent.
    Queued,
    /// PUBLISH sent with `packet_id`, awaiting PUBACK (QoS 1) or PUBREC (QoS 2). Re-sent with
    /// DUP=1 after a reconnect or restart.
    Sent { packet_id: u16 },
    /// QoS 2: PUBREC received and PUBREL sent, awaiting PUBCOMP. Re-sent as PUBREL.
    Released { packet_id: u16 },
}

/// One entry of a session's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueEntry {
    pub message_id: MessageId,
    /// The QoS it is delivered with: min(published QoS, subscription QoS).
    pub qos: QoS,
    /// Retain flag to send (retained messages sent because of a SUBSCRIBE, and live ones
    /// through an MQTT 5 Retain As Published subscription).
    pub retain: bool,
    /// The MQTT 5 Subscription Identifier to send it with (never 0).
    pub subscription_id: Option<u32>,
    pub state: QueueState,
}

/// What owns a queue that is not a session's. Kept as one byte in the owned-queue tables' keys
/// ([`QueueKind::code`]), so the codes never change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum QueueKind {
    /// An MQTT 5 shared-subscription group: its members compete for its entries.
    Group,
    /// A named queue (STOMP `/queue/x`, ActiveMQ queue semantics): consumers compete for it.
    Queue,
}

impl QueueKind {
    /// The byte stored in keys: 1 = group, 2 = queue (0 is left unused).
    pub fn code(self) -> u8 {
        match self {
            QueueKind::Group => 1,
            QueueKind::Queue => 2,
        }
    }

    /// The kind stored as `code`; `None` for a byte this version does not know.
    pub fn from_code(code: u8) -> Option<QueueKind> {
        match code {
            1 => Some(QueueKind::Group),
            2 => Some(QueueKind::Queue),
            _ => None,
        }
    }
}

/// A queue owned by something other than a session: a kind and a name (for a group, its share
/// name and filter kept as one string; for a queue, its destination name). It exists from
/// [`Op::DeclareQueue`] to [`Op::DeleteQueue`], independent of any session.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OwnedQueue {
    pub kind: QueueKind,
    pub name: Arc<str>,
}

impl OwnedQueue {
    pub fn group(name: &str) -> OwnedQueue {
        OwnedQueue {
            kind: QueueKind::Group,
            name: Arc::from(name),
        }
    }

    pub fn queue(name: &str) -> OwnedQueue {
        OwnedQueue {
            kind: QueueKind::Queue,
            name: Arc::from(name),
        }
    }
}

/// One change to the store. A batch of these passed to [`super::Store::commit`] is applied
/// all-or-nothing, in order, after the batches committed before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Store a message body. It starts unreferenced: reference it in the same batch
    /// ([`Op::Enqueue`], [`Op::SetRetained`]) or it is collected at the end of the commit.
    /// Refused with [`super::StoreError::Full`] when the storeUsage limit would be passed.
    PutMessage {
        id: MessageId,
        message: StoredMessage,
    },
    /// Retain `message_id` on `topic`, replacing (and un-referencing) the previous one.
    SetRetained {
        topic: Arc<str>,
        message_id: MessageId,
    },
    /// Forget the message retained on `topic` (no error when there is none).
    ClearRetained { topic: Arc<str> },
    /// Insert or replace a session's own record.
    PutSession {
        client_id: Arc<str>,
        session: SessionRecord,
    },
    /// Forget a session with its queue and inbound QoS 2 ids (no error when absent).
    DeleteSession { client_id: Arc<str> },
    /// Add (or replace) entry `seq` of a session's queue. The session and the message must exist.
    Enqueue {
        client_id: Arc<str>,
        seq: QueueSeq,
        entry: QueueEntry,
    },
    /// [`Op::PutMessage`] and one [`Op::Enqueue`] of it in one record: a message queued for
    /// one session and nothing else (not retained, no other queue) keeps its body in its
    /// queue entry, so it costs one insert when stored and one removal when acknowledged
    /// instead of two of each. No other op may refer to `entry.message_id` (its body is not
    /// a stored message of its own); the session must exist and the id be unused, as for
    /// the two ops it replaces. Counted against storeUsage like [`Op::PutMessage`].
    PutQueued {
        client_id: Arc<str>,
        seq: QueueSeq,
        entry: QueueEntry,
        message: StoredMessage,
    },
    /// Move a queue entry to `state` (no error when the entry is gone).
    SetQueueState {
        client_id: Arc<str>,
        seq: QueueSeq,
        state: QueueState,
    },
    /// Remove a queue entry (acknowledged or dropped); no error when it is gone.
    Dequeue { client_id: Arc<str>, seq: QueueSeq },
    /// Create an owned queue's record (no error when it exists: its entries are kept).
    DeclareQueue { queue: OwnedQueue },
    /// Forget an owned queue with its entries, un-referencing their bodies (no error when
    /// absent).
    DeleteQueue { queue: OwnedQueue },
    /// [`Op::Enqueue`] for an owned queue: add (or replace) entry `seq`. The queue must be
    /// declared and the message must exist.
    EnqueueOwned {
        queue: OwnedQueue,
        seq: QueueSeq,
        entry: QueueEntry,
    },
    /// [`Op::SetQueueState`] for an owned queue (no error when the entry is gone).
    SetOwnedQueueState {
        queue: OwnedQueue,
        seq: QueueSeq,
        state: QueueState,
    },
    /// [`Op::Dequeue`] for an owned queue (no error when the entry is gone).
    DequeueOwned { queue: OwnedQueue, seq: QueueSeq },
    /// Inbound QoS 2 PUBLISH `packet_id` received and PUBREC sent.
    AddInboundQos2 { client_id: Arc<str>, packet_id: u16 },
    /// PUBREL for `packet_id` received (no error when absent).
    RemoveInboundQos2 { client_id: Arc<str>, packet_id: u16 },
    /// A topic (MQTT form) exists in the broker's destination map (no error when it is kept
    /// already). Nothing removes it.
    PutDestination { topic: Arc<str> },
}

/// A stored message with its id (to reference it in later ops).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveredMessage {
    pub id: MessageId,
    pub message: StoredMessage,
}

/// One queue entry as recovered, in queue order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveredEntry {
    pub seq: QueueSeq,
    pub entry: QueueEntry,
    /// With an empty payload when `paged`.
    pub message: StoredMessage,
    /// The payload was left in the store (see [`super::Store::recover_paged`]).
    pub paged: bool,
}

/// A persistent session as recovered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveredSession {
    pub client_id: Arc<str>,
    pub record: SessionRecord,
    /// Ascending by `seq`: queued, in-flight and released entries together.
    pub queue: Vec<RecoveredEntry>,
    pub inbound_qos2: BTreeSet<u16>,
}

/// An owned queue as recovered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveredQueue {
    pub owner: OwnedQueue,
    /// Ascending by `seq`, paged like a session's queue (see [`super::Store::recover_paged`]).
    pub queue: Vec<RecoveredEntry>,
}

/// Everything the store holds, read at startup.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Recovered {
    /// Topic -> retained message, ascending by topic.
    pub retained: Vec<(Arc<str>, RecoveredMessage)>,
    pub sessions: Vec<RecoveredSession>,
    /// Declared owned queues (groups, then queues; by name within a kind).
    pub queues: Vec<RecoveredQueue>,
    /// Topics kept with [`Op::PutDestination`], ascending.
    pub destinations: Vec<Arc<str>>,
    pub stats: super::RecoveryStats,
}
