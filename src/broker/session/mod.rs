//! Sessions: the MQTT state that outlives a network connection when clean session is 0.
//!
//! [`SessionState`] is plain, serializable data (subscriptions, pending queue, outbound
//! in-flight window, inbound QoS 2 packet ids) so that a durable [`crate::broker::durability::SessionStore`]
//! can persist it unchanged. [`Session`] wraps it for the runtime: a short-held mutex, plus the
//! current connection's attachment (generation number, and its kick and wake-up signals).
//!
//! Delivery into a session never blocks: it pushes under the mutex and pokes the attached
//! connection's wake-up (see [`signals`]); the connection task does all socket work.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
// tokio's clock (not std's): offline time then follows paused time in tests.
use tokio::time::Instant;

pub mod expiry;
pub mod inflight;
mod keyed;
pub mod kind;
mod park;
pub mod qos2_storing;
pub mod queue;
pub mod registry;
pub mod signals;
pub mod subscription;
pub mod wills;

use crate::broker::connection::parking::ParkedAt;
use crate::broker::routing::limits::pending_hard_cap;
use crate::broker::session::inflight::Inflight;
use crate::broker::session::queue::{EnqueueOutcome, PendingQueue, QueuedMessage};
use crate::protocol::QoS;
use park::ParkState;
use signals::AttachSignals;

/// Process-unique session number: the subscription tree's key (a client id can be reused by a
/// new session while the old one's subscriptions are still being removed).
pub type SessionId = u64;

pub use subscription::SubscriptionOptions;

/// Everything a session is, as data.
///
/// What only a session with subscriptions or messages uses (its subscriptions, queues and
/// packet-id sets, [`SessionQueues`]) is allocated on first use: an idle connection without a
/// subscription (most of a large fleet between reports) carries one pointer for them instead
/// of 128 bytes of empty collections (docs/scaling.md, "What an idle connection costs").
#[derive(Debug, Clone, Default)]
pub struct SessionState {
    /// The session's client id, shared with its [`Session`] (one allocation).
    pub client_id: Arc<str>,
    /// Clean session 0: the state is kept while the client is offline.
    pub persistent: bool,
    /// The client last attached spoke MQTT 5: deliveries go one copy per matching subscription
    /// (else one per session at the highest QoS). A resumed session takes its new
    /// connection's version.
    pub mqtt5: bool,
    /// MQTT 5 Session Expiry Interval of a persistent session, in seconds: it ends this long
    /// after its client left (the broker's `offlineDurableSubscriberTimeout`, when set, still
    /// caps it). `None`: no limit of its own (MQTT 3, or 5 with 0xFFFFFFFF). `Some(0)`: a
    /// resumed persistent session whose new connection asked for 0, so it ends at disconnect.
    pub expiry_secs: Option<u32>,
    /// The will of the connected client, as kept with a persistent session (its kept data is
    /// written whole on SUBSCRIBE, so the will travels with the state).
    pub kept_will: Option<Box<crate::broker::durability::KeptWill>>,
    /// A connection holds the session (set and cleared with [`Session::is_attached`], under
    /// the same lock): a record written now says so, so that after a crash the session's
    /// offline clock starts at the restart, not at its last save.
    pub connected: bool,
    /// `None` until something is subscribed, queued or in flight.
    queues: Option<Box<SessionQueues>>,
}

/// A session's subscriptions and message queues (see [`SessionState`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionQueues {
    /// Topic filter -> the subscription's options.
    pub subscriptions: BTreeMap<String, SubscriptionOptions>,
    /// Routed here, not yet sent.
    pub pending: PendingQueue,
    /// Sent at QoS 1/2, not yet acknowledged.
    pub inflight: Inflight,
    /// Inbound QoS 2 packet ids received (PUBREC sent) and not yet released by PUBREL: a PUBLISH
    /// re-sent with one of these ids is acknowledged but not routed again.
    pub inbound_qos2: BTreeSet<u16>,
    /// Inbound QoS 2 packet ids this connection refused with a PUBREC >= 0x80 (the exchange
    /// ended there, MQTT 5 4.3.3): a PUBREL for one of them, which a client should not send,
    /// is answered PUBCOMP 0x92 (Packet Identifier not found), never success. Not kept in a
    /// store: a later connection answers such a PUBREL as any unknown one.
    pub refused_qos2: BTreeSet<u16>,
    /// Inbound QoS 2 PUBLISHes whose commit is on its way (not data: a copy of the state has
    /// none, and it does not count in equality).
    pub storing_qos2: qos2_storing::StoringQos2,
}

/// What a session that never subscribed nor queued anything reads.
static NO_QUEUES: SessionQueues = SessionQueues {
    subscriptions: BTreeMap::new(),
    pending: PendingQueue::new(),
    inflight: Inflight::new(),
    inbound_qos2: BTreeSet::new(),
    refused_qos2: BTreeSet::new(),
    storing_qos2: qos2_storing::StoringQos2::new(),
};

impl SessionState {
    pub fn new(client_id: &str, persistent: bool) -> Self {
        SessionState {
            client_id: Arc::from(client_id),
            persistent,
            ..SessionState::default()
        }
    }

    /// The subscriptions and queues, empty ones if none were ever allocated.
    pub fn queues(&self) -> &SessionQueues {
        self.queues.as_deref().unwrap_or(&NO_QUEUES)
    }

    /// The subscriptions and queues to change, allocated on first use.
    pub fn queues_mut(&mut self) -> &mut SessionQueues {
        self.queues.get_or_insert_with(Box::default)
    }

    /// Give the queues' allocation back when nothing is in it (a connection going idle).
    pub fn release_empty_queues(&mut self) {
        if self.queues.as_deref().is_some_and(SessionQueues::is_empty) {
            self.queues = None;
        }
    }

    /// Topic filter -> the subscription's options.
    pub fn subscriptions(&self) -> &BTreeMap<String, SubscriptionOptions> {
        &self.queues().subscriptions
    }

    pub fn subscriptions_mut(&mut self) -> &mut BTreeMap<String, SubscriptionOptions> {
        &mut self.queues_mut().subscriptions
    }

    /// Routed here, not yet sent.
    pub fn pending(&self) -> &PendingQueue {
        &self.queues().pending
    }

    pub fn pending_mut(&mut self) -> &mut PendingQueue {
        &mut self.queues_mut().pending
    }

    /// Sent at QoS 1/2, not yet acknowledged.
    pub fn inflight(&self) -> &Inflight {
        &self.queues().inflight
    }

    pub fn inflight_mut(&mut self) -> &mut Inflight {
        &mut self.queues_mut().inflight
    }

    /// Inbound QoS 2 packet ids between PUBREC and PUBREL.
    pub fn inbound_qos2(&self) -> &BTreeSet<u16> {
        &self.queues().inbound_qos2
    }

    pub fn inbound_qos2_mut(&mut self) -> &mut BTreeSet<u16> {
        &mut self.queues_mut().inbound_qos2
    }

    /// Inbound QoS 2 packet ids refused with a PUBREC >= 0x80 on this connection.
    pub fn refused_qos2_mut(&mut self) -> &mut BTreeSet<u16> {
        &mut self.queues_mut().refused_qos2
    }

    /// Whether `packet_id` was refused (and forget it): only the allocated queues can hold one.
    pub fn take_refused_qos2(&mut self, packet_id: u16) -> bool {
        self.queues
            .as_mut()
            .is_some_and(|q| q.refused_qos2.remove(&packet_id))
    }
}

impl SessionQueues {
    /// Nothing subscribed, queued, in flight or awaiting a PUBREL. The next outbound packet
    /// id is not state worth keeping (any free id will do).
    fn is_empty(&self) -> bool {
        self.subscriptions.is_empty()
            && self.pending.is_empty()
            && self.inflight.is_empty()
            && self.inbound_qos2.is_empty()
            && self.refused_qos2.is_empty()
            && self.storing_qos2.is_empty()
    }
}

/// Equal as data: a session whose queues were never allocated equals one with empty queues.
impl PartialEq for SessionState {
    fn eq(&self, other: &Self) -> bool {
        self.client_id == other.client_id
            && self.persistent == other.persistent
            && self.mqtt5 == other.mqtt5
            && self.expiry_secs == other.expiry_secs
            && self.kept_will == other.kept_will
            && self.queues() == other.queues()
    }
}

impl Eq for SessionState {}

/// The connection currently serving a session.
#[derive(Debug)]
struct Attachment {
    generation: u64,
    signals: Arc<AttachSignals>,
    /// Whether the connection is parked (its deliveries and kicks must wake it).
    park: ParkState,
}

impl Attachment {
    /// Close this connection (takeover, console, session end): kicks it and returns the
    /// parked connection to wake so that it sees it.
    #[must_use]
    fn kick(&mut self) -> Option<ParkedAt> {
        self.signals.kick();
        self.park.ring()
    }
}

#[derive(Debug)]
struct SessionInner {
    state: SessionState,
    attachment: Option<Attachment>,
    /// Discarded (clean session ended or replaced): late deliveries are dropped.
    ended: bool,
    /// Ended here because another broker of a cluster took it over: the session goes on
    /// there, so a will within its Will Delay is that broker's to cancel or publish.
    handed_over: bool,
    /// When the last connection left (or the session was restored): for the expiry of
    /// abandoned persistent sessions. `None` while attached.
    offline_since: Option<Instant>,
    /// Offline time carried over from before a restart, in whole seconds (added to
    /// `offline_since`'s; expiry intervals are seconds too).
    offline_before_restore_secs: u32,
}

/// What [`Session::deliver`] did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliverOutcome {
    Queued,
    /// Queued after evicting the oldest queued QoS 0 message (slow consumer).
    QueuedEvictedQos0,
    /// A QoS 0 message met a pending queue full of QoS 1/2 messages: dropped (slow consumer).
    DroppedFull,
    /// QoS 0 to an offline session: dropped (the spec allows it).
    DroppedOffline,
    /// The session ended while the message was being routed.
    DroppedEnded,
}

/// A live session shared by the registry, the router's publishers and its connection task.
#[derive(Debug)]
pub struct Session {
    id: SessionId,
    client_id: Arc<str>,
    persistent: bool,
    /// Mirrors [`SessionState::mqtt5`], so routing reads it without the session lock.
    mqtt5: AtomicBool,
    /// Mirrors whether a connection is attached (set under the lock of `inner`), so that
    /// [`Session::is_attached`] takes no lock: a cluster node reads it under its tracker's
    /// lock, which the session's callbacks into the store take under the session's.
    attached: AtomicBool,
    inner: Mutex<SessionInner>,
}

/// A connection's claim on a session, returned by `Session::attach`.
#[derive(Debug, Clone)]
pub struct AttachToken {
    pub generation: u64,
    /// Kicked when another connection takes the session over (or the console, the session's
    /// end, a cluster drain); its `wake` is notified when messages are queued for this
    /// connection.
    pub signals: Arc<AttachSignals>,
}

/// Wake a parked connection (after the session's lock is released: the lot takes its own).
fn wake_parked(parked: Option<ParkedAt>) {
    if let Some(at) = parked {
        at.wake();
    }
}

impl Session {
    pub fn new(id: SessionId, state: SessionState) -> Self {
        Self::restored(id, state, Duration::ZERO)
    }

    /// A session read back at start whose client had been gone `offline_for` already.
    pub fn restored(id: SessionId, state: SessionState, offline_for: Duration) -> Self {
        Session {
            id,
            client_id: state.client_id.clone(),
            persistent: state.persistent,
            mqtt5: AtomicBool::new(state.mqtt5),
            attached: AtomicBool::new(false),
            inner: Mutex::new(SessionInner {
                state,
                attachment: None,
                ended: false,
                handed_over: false,
                offline_since: Some(Instant::now()),
                offline_before_restore_secs: u32::try_from(offline_for.as_secs())
                    .unwrap_or(u32::MAX),
            }),
        }
    }

    pub fn id(&self) -> SessionId {
        self.id
    }

    /// The first copy of inbound QoS 2 `packet_id` is being stored (see `qos2_storing.rs`).
    pub fn storing_qos2(&self, packet_id: u16, outcome: qos2_storing::Qos2Outcome) {
        self.inner
            .lock()
            .state
            .queues_mut()
            .storing_qos2
            .begin(packet_id, outcome);
    }

    /// What a re-sent QoS 2 `packet_id` must wait for: its first copy's commit, if pending.
    pub fn qos2_being_stored(&self, packet_id: u16) -> Option<qos2_storing::Qos2Outcome> {
        self.inner.lock().state.queues().storing_qos2.of(packet_id)
    }

    /// The commit behind `outcome` answered.
    pub fn qos2_stored(&self, packet_id: u16, outcome: &qos2_storing::Qos2Outcome) {
        if let Some(queues) = self.inner.lock().state.queues.as_mut() {
            queues.storing_qos2.settle(packet_id, outcome);
        }
    }

    pub fn client_id(&self) -> &Arc<str> {
        &self.client_id
    }

    pub fn is_persistent(&self) -> bool {
        self.persistent
    }

    /// The client last attached spoke MQTT 5 (see [`SessionState::mqtt5`]).
    pub fn is_mqtt5(&self) -> bool {
        self.mqtt5.load(Ordering::Relaxed)
    }

    /// A connection of protocol MQTT 5 (`true`) or 3.x is about to attach. Called by the
    /// registry under its lock, before [`Self::attach`].
    pub(crate) fn set_mqtt5(&self, mqtt5: bool) {
        let mut inner = self.inner.lock();
        inner.state.mqtt5 = mqtt5;
        self.mqtt5.store(mqtt5, Ordering::Relaxed);
    }

    /// Discarded: a clean session that ended, or a session a new one replaced.
    pub fn is_ended(&self) -> bool {
        self.inner.lock().ended
    }

    /// Whether a connection holds the session now (no lock taken).
    pub fn is_attached(&self) -> bool {
        self.attached.load(Ordering::SeqCst)
    }

    /// How long no connection has held the session; `None` while one does.
    pub fn offline_for(&self) -> Option<Duration> {
        let inner = self.inner.lock();
        inner.offline_since.map(|since| {
            since.elapsed() + Duration::from_secs(u64::from(inner.offline_before_restore_secs))
        })
    }

    /// The session's own expiry interval (see [`SessionState::expiry_secs`]).
    pub fn expiry_secs(&self) -> Option<u32> {
        self.inner.lock().state.expiry_secs
    }

    /// Offline past its own expiry interval, capped by `broker_limit` (sessions without an
    /// interval of their own are left to the broker-wide sweep).
    pub fn outlived_own_expiry(&self, broker_limit: Option<Duration>) -> bool {
        let Some(own_secs) = self.expiry_secs() else {
            return false;
        };
        let Some(offline) = self.offline_for() else {
            return false;
        };
        let own = Duration::from_secs(u64::from(own_secs));
        let limit = broker_limit.map_or(own, |broker| broker.min(own));
        offline >= limit
    }

    /// Attach a connection with `generation`, kicking out the current one (whose token is
    /// cancelled). Called by the registry under its lock.
    pub(crate) fn attach(&self, generation: u64) -> AttachToken {
        let mut inner = self.inner.lock();
        let parked = inner.attachment.take().and_then(|mut old| old.kick());
        let token = AttachToken {
            generation,
            signals: Arc::default(),
        };
        inner.attachment = Some(Attachment {
            generation,
            signals: token.signals.clone(),
            park: ParkState::Running,
        });
        self.attached.store(true, Ordering::SeqCst);
        inner.state.connected = true;
        inner.offline_since = None;
        inner.offline_before_restore_secs = 0;
        drop(inner);
        wake_parked(parked);
        token
    }

    /// The connection `generation` is about to park: from now on a delivery or kick marks it
    /// poked. False when it no longer holds the session.
    pub(crate) fn begin_park(&self, generation: u64) -> bool {
        let inner = &mut *self.inner.lock();
        match &mut inner.attachment {
            Some(a) if a.generation == generation => {
                a.park = ParkState::Parking;
                // A parked connection keeps only what outlives a quiet moment.
                inner.state.release_empty_queues();
                true
            }
            _ => false,
        }
    }

    /// The connection `generation` is in the lot at `at`. `Err(at)` when it was rung since
    /// [`Session::begin_park`] (or lost the session): the caller wakes it at once.
    pub(crate) fn finish_park(&self, generation: u64, at: ParkedAt) -> Result<(), ParkedAt> {
        match &mut self.inner.lock().attachment {
            Some(a) if a.generation == generation && matches!(a.park, ParkState::Parking) => {
                a.park = ParkState::Parked(at);
                Ok(())
            }
            Some(a) if a.generation == generation => {
                a.park = ParkState::Running;
                Err(at)
            }
            _ => Err(at),
        }
    }

    /// The connection `generation` runs in its own task again (it did not park after
    /// [`Session::begin_park`], or it woke up).
    pub(crate) fn unparked(&self, generation: u64) {
        if let Some(a) = &mut self.inner.lock().attachment {
            if a.generation == generation {
                a.park = ParkState::Running;
            }
        }
    }

    /// Close the connection `generation` if it still holds the session (the console's
    /// disconnect).
    pub fn kick_generation(&self, generation: u64) {
        let mut inner = self.inner.lock();
        let parked = match &mut inner.attachment {
            Some(a) if a.generation == generation => a.kick(),
            _ => None,
        };
        drop(inner);
        wake_parked(parked);
    }

    /// Detach the connection `generation`; false when another connection holds the session.
    pub(crate) fn detach(&self, generation: u64) -> bool {
        let mut inner = self.inner.lock();
        match &inner.attachment {
            Some(a) if a.generation == generation => {
                inner.attachment = None;
                self.attached.store(false, Ordering::SeqCst);
                inner.state.connected = false;
                inner.offline_since = Some(Instant::now());
                true
            }
            _ => false,
        }
    }

    /// Close the connection attached now, if any (it detaches as usual; the session stays).
    pub fn kick_connection(&self) {
        let parked = self
            .inner
            .lock()
            .attachment
            .as_mut()
            .and_then(Attachment::kick);
        wake_parked(parked);
    }

    /// Another broker took the session over: ended here, though it goes on there (see
    /// [`Session::is_handed_over`]).
    pub(crate) fn end_handed_over(&self) {
        self.inner.lock().handed_over = true;
        self.end();
    }

    /// Ended here by `Session::end_handed_over`.
    pub fn is_handed_over(&self) -> bool {
        self.inner.lock().handed_over
    }

    /// Mark the session discarded and kick any connection still attached.
    pub(crate) fn end(&self) {
        let mut inner = self.inner.lock();
        inner.ended = true;
        let parked = inner.attachment.take().and_then(|mut old| old.kick());
        self.attached.store(false, Ordering::SeqCst);
        inner.state.connected = false;
        drop(inner);
        wake_parked(parked);
    }

    /// Queue a message for this session under the slow-consumer rule of [`queue`].
    /// `page_after`: when an offline session's queue already holds this many messages (an
    /// online one's: its hard cap, [`crate::broker::routing::limits::pending_hard_cap`], so a
    /// subscriber only briefly behind is not paged), a kept message (one with a `seq`) is queued
    /// paged out: its payload stays with the durability engine only.
    pub fn deliver(
        &self,
        mut item: QueuedMessage,
        limit: usize,
        page_after: Option<usize>,
    ) -> DeliverOutcome {
        let mut inner = self.inner.lock();
        if inner.ended {
            return DeliverOutcome::DroppedEnded;
        }
        let parked = match &mut inner.attachment {
            Some(a) => a.park.ring(),
            None if item.qos == QoS::AtMostOnce => return DeliverOutcome::DroppedOffline,
            None => None,
        };
        let online = inner.attachment.is_some();
        let page_at = page_after.map(|n| if online { pending_hard_cap(n) } else { n });
        if item.seq.is_some() && page_at.is_some_and(|n| inner.state.pending().len() >= n) {
            item.page_out();
        }
        let seq = item.seq;
        let outcome = inner.state.pending_mut().push(item, limit);
        tracing::trace!(target: "ferromq::delivery", client_id = %self.client_id, seq = ?seq, ?outcome, "queued");
        // Notified under the lock: a connection about to park (`Session::begin_park`, then a
        // look for this permit) sees either the permit or the ring above, never neither.
        if let Some(a) = &inner.attachment {
            if outcome != EnqueueOutcome::DroppedFull {
                a.signals.wake_up();
            }
        }
        drop(inner);
        wake_parked(parked);
        match outcome {
            EnqueueOutcome::Queued => DeliverOutcome::Queued,
            EnqueueOutcome::QueuedEvictedOldestQos0 => DeliverOutcome::QueuedEvictedQos0,
            EnqueueOutcome::DroppedFull => DeliverOutcome::DroppedFull,
        }
    }

    /// Run `f` on the state if connection `generation` still holds the session; `None` when it
    /// was taken over (the caller must stop touching the session).
    pub fn with_state<R>(
        &self,
        generation: u64,
        f: impl FnOnce(&mut SessionState) -> R,
    ) -> Option<R> {
        let mut inner = self.inner.lock();
        match &inner.attachment {
            Some(a) if a.generation == generation => Some(f(&mut inner.state)),
            _ => None,
        }
    }

    /// Run `f` on the state whoever holds it (registry bookkeeping, snapshots).
    pub fn with_state_unchecked<R>(&self, f: impl FnOnce(&mut SessionState) -> R) -> R {
        f(&mut self.inner.lock().state)
    }

    /// Run `f` on the state and whether the session has ended, under one lock (a pending will
    /// is taken and its removal committed before an ending can commit the session's end).
    pub fn with_state_ended<R>(&self, f: impl FnOnce(&mut SessionState, bool) -> R) -> R {
        let mut inner = self.inner.lock();
        let ended = inner.ended;
        f(&mut inner.state, ended)
    }

    /// Whether the session has any subscription.
    pub fn has_subscriptions(&self) -> bool {
        !self.inner.lock().state.subscriptions().is_empty()
    }

    /// A copy of the state for a [`crate::broker::durability::SessionStore`].
    pub fn snapshot(&self) -> SessionState {
        self.inner.lock().state.clone()
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::broker::message::{Message, SampleStamp};

    fn item(qos: QoS) -> QueuedMessage {
        QueuedMessage {
            message: Message {
                stamp: SampleStamp::NONE,
                topic: Arc::from("t"),
                payload: Bytes::from_static(b"x"),
                qos,
                retain: false,
                v5: None,
            },
            qos,
            retain: false,
            subscription_id: None,
            seq: None,
            paged: false,
            shared_group: None,
        }
    }

    #[test]
    fn offline_session_keeps_qos1_and_drops_qos0() {
        let s = Session::new(1, SessionState::new("c", true));
        assert_eq!(
            s.deliver(item(QoS::AtMostOnce), 10, None),
            DeliverOutcome::DroppedOffline
        );
        assert_eq!(
            s.deliver(item(QoS::AtLeastOnce), 10, None),
            DeliverOutcome::Queued
        );
        assert_eq!(s.snapshot().pending().len(), 1);
    }

    #[test]
    fn takeover_kicks_the_old_connection_and_fences_its_state_access() {
        let s = Session::new(1, SessionState::new("c", true));
        let first = s.attach(1);
        let second = s.attach(2);
        assert!(first.signals.is_kicked());
        assert!(!second.signals.is_kicked());
        assert_eq!(s.with_state(1, |_| ()), None);
        assert_eq!(s.with_state(2, |_| ()), Some(()));
        assert!(
            !s.detach(1),
            "the old connection must not detach the new one"
        );
        assert!(s.detach(2));
    }

    #[tokio::test]
    async fn delivery_wakes_the_attached_connection() {
        let s = Session::new(1, SessionState::new("c", false));
        let token = s.attach(7);
        assert_eq!(
            s.deliver(item(QoS::AtMostOnce), 10, None),
            DeliverOutcome::Queued
        );
        tokio::time::timeout(std::time::Duration::from_secs(1), token.signals.woken())
            .await
            .expect("woken");
    }

    #[test]
    fn own_expiry_counts_from_going_offline_and_is_capped_by_the_broker() {
        let mut state = SessionState::new("c", true);
        state.expiry_secs = Some(3600);
        let s = Session::new(1, state);
        let token = s.attach(1);
        assert!(
            !s.outlived_own_expiry(Some(Duration::ZERO)),
            "never while attached"
        );
        s.detach(token.generation);
        assert!(!s.outlived_own_expiry(None), "3600 s not over");
        assert!(s.outlived_own_expiry(Some(Duration::ZERO)), "capped at 0");
        let no_own = Session::new(2, SessionState::new("d", true));
        assert!(
            !no_own.outlived_own_expiry(Some(Duration::ZERO)),
            "left to the broker-wide sweep"
        );
    }

    #[test]
    fn ended_session_drops_late_deliveries() {
        let s = Session::new(1, SessionState::new("c", false));
        let token = s.attach(1);
        s.end();
        assert!(token.signals.is_kicked());
        assert_eq!(
            s.deliver(item(QoS::AtLeastOnce), 10, None),
            DeliverOutcome::DroppedEnded
        );
    }

    /// An idle session (no subscription, nothing queued) is most of a large fleet's memory:
    /// its collections are not allocated, and a session that emptied gives them back when its
    /// connection parks (docs/scaling.md).
    #[test]
    fn an_idle_session_holds_no_collections() {
        assert!(
            std::mem::size_of::<Session>() <= 152,
            "Session is {} bytes",
            std::mem::size_of::<Session>()
        );
        let mut state = SessionState::new("c", true);
        assert!(state.queues.is_none());
        assert!(state.pending().is_empty() && state.subscriptions().is_empty());
        assert!(state.queues.is_none(), "reading allocates nothing");
        state
            .subscriptions_mut()
            .insert("a/b".into(), SubscriptionOptions::qos(QoS::AtLeastOnce));
        let subscribed = state.clone();
        state.release_empty_queues();
        assert_eq!(state, subscribed, "a subscription is kept");
        state.subscriptions_mut().clear();
        assert_ne!(state, subscribed);
        state.release_empty_queues();
        assert!(state.queues.is_none());
        assert_eq!(
            state,
            SessionState::new("c", true),
            "no queues equals empty ones"
        );

        let s = Session::new(1, SessionState::new("c", false));
        let token = s.attach(1);
        assert_eq!(
            s.deliver(item(QoS::AtLeastOnce), 10, None),
            DeliverOutcome::Queued
        );
        assert!(s.begin_park(token.generation));
        assert_eq!(s.snapshot().pending().len(), 1, "a queued message stays");
        s.with_state_unchecked(|st| st.pending_mut().pop_front());
        assert!(s.begin_park(token.generation));
        assert!(s.inner.lock().state.queues.is_none());
    }
}
