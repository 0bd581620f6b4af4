//! Reading the message shards: one ordered reader per shard per node routes every QoS 1
//! message to this node's sessions; a session that resumes behind gets a temporary catch-up
//! reader per shard, from its floor, until it reaches the node's reader and joins it.
//!
//! Ordered consumers are ephemeral, in memory and single-replica on the server: cheap, and
//! recreated by the client after a gap. Their number per node is the number of shards plus at
//! most [`CATCH_UP_READERS`], whatever the number of sessions.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{push, DeliverPolicy};
use futures_util::StreamExt;

use super::codec::decode_message;
use super::engine::Inner;
use super::tracker::Tracker;
use super::{shard_prefix, shard_stream};
use smallvec::SmallVec;

use crate::broker::runtime::Offer;
use crate::broker::session::Session;

/// Catch-up readers running at once per node; more resuming sessions wait their turn.
pub const CATCH_UP_READERS: usize = 8;

/// The log target of every message a node's reader reads (debug), and of the local sessions
/// it does not offer one to (debug): a run traced message by message.
const READ_TARGET: &str = "ferromq::cluster::read";

/// How long a catch-up keeps its reader while its client works through what it was fed;
/// longer, and the reader goes to another session until the client has caught up.
const CLIENT_BEHIND: Duration = Duration::from_secs(1);

/// How often a catch-up with nothing new to read checks whether it can join the live feed.
const CATCH_UP_IDLE: Duration = Duration::from_millis(20);

/// How often a reader paused by the `memoryUsage` limit looks again (a held local publish is
/// tried as often: `connection/flow_control.rs`).
const MEMORY_RETRY: Duration = Duration::from_millis(25);

/// Readers paused by the `memoryUsage` limit since the process started (their warnings are
/// logged at the 1st, 2nd, 4th, 8th... pause).
static MEMORY_PAUSES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A reader or pull of this node (`who`, reading `what`: a shard, a queue, a group) paused at
/// the `memoryUsage` limit: counted and logged at the 1st, 2nd, 4th, 8th... pause.
pub(super) fn memory_paused(core: &crate::broker::runtime::BrokerCore, who: &str, what: &str) {
    let total = MEMORY_PAUSES.fetch_add(1, Ordering::Relaxed) + 1;
    if crate::broker::durability::should_log(total) {
        tracing::warn!(
            what,
            limit_bytes = core.memory.limit_bytes().unwrap_or(0),
            used_bytes = core.memory.used_bytes(),
            total,
            "{who} paused: messages held in memory reached the memoryUsage limit; the next \
             ones wait in their stream"
        );
    }
}

/// Waits while this node holds as many bytes of messages as its `memoryUsage` allows: a
/// reader then reads nothing more (the messages wait in their stream, stored and acknowledged
/// already), as a local publisher would be held unacknowledged, and goes on once deliveries
/// and acknowledgements have freed some. What it reads is charged to the limit
/// ([`crate::broker::routing::memory`]) like a local publish. `Some(true)`: it waited;
/// `None`: the node is gone.
async fn memory_room(inner: &Inner, shard: usize) -> Option<bool> {
    let mut paused_at: Option<tokio::time::Instant> = None;
    loop {
        let core = inner.core()?;
        if !core.memory.is_full() {
            if let Some(at) = paused_at {
                let waited = at.elapsed();
                tracing::debug!(
                    shard,
                    waited_ms = waited.as_millis() as u64,
                    "cluster reader: memory freed, reading on"
                );
            }
            return Some(paused_at.is_some());
        }
        if paused_at.is_none() {
            paused_at = Some(tokio::time::Instant::now());
            memory_paused(&core, "cluster reader", &format!("shard {shard}"));
        }
        drop(core);
        tokio::time::sleep(MEMORY_RETRY).await;
    }
}

/// Start one reader per shard at the shard's end (what was stored before this node started
/// is read by the catch-up of the sessions that need it).
pub async fn start(inner: &Arc<Inner>) -> anyhow::Result<()> {
    for k in 0..inner.shards {
        let last = super::engine::stream_state_at_start(&inner.js, &shard_stream(k))
            .await?
            .last_sequence;
        inner.positions[k].store(last, Ordering::Release);
        inner.routed[k].store(last, Ordering::Release);
        inner.ledger.start(k, last);
        tokio::spawn(node_reader(inner.clone(), k));
    }
    let advisories = inner
        .client
        .subscribe(LEADER_ELECTED)
        .await
        .map_err(|e| anyhow::anyhow!("cluster: subscribe to {LEADER_ELECTED}: {e}"))?;
    tokio::spawn(leader_advisories(inner.clone(), advisories));
    Ok(())
}

/// JetStream's advisory of a stream's newly elected leader (the stream's name is the last token).
const LEADER_ELECTED: &str = "$JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED.*";

/// A message shard's stream elected a leader: the ledger reads its settling stores of that
/// shard again (`ledger.rs`). The readers' periodic look notices a change too; this is sooner.
async fn leader_advisories(inner: Arc<Inner>, mut advisories: async_nats::Subscriber) {
    while let Some(advisory) = advisories.next().await {
        let stream = advisory.subject.rsplit('.').next().unwrap_or_default();
        let Some(k) = stream
            .strip_prefix("FMQ_MSG_")
            .and_then(|k| k.parse::<usize>().ok())
        else {
            continue;
        };
        inner
            .ledger
            .leader_changed(&inner.js, k, "a leader advisory");
    }
}

/// How long the creation of a reader's consumer may take before it is tried again.
const CONSUMER_CREATE_TIMEOUT: Duration = Duration::from_secs(2);

/// An ordered consumer of shard `k` from `from` (inclusive).
async fn ordered_from(
    inner: &Inner,
    k: usize,
    from: u64,
) -> Result<push::Ordered, async_nats::Error> {
    // NATS places an ephemeral consumer on one of the stream's peers: on a dead one (until the
    // cluster marks it offline) the create times out, and a quick retry lands elsewhere.
    let mut js = inner.js.clone();
    js.set_timeout(CONSUMER_CREATE_TIMEOUT);
    let stream = js.get_stream(shard_stream(k)).await?;
    let consumer = stream
        .create_consumer(push::OrderedConfig {
            deliver_subject: inner.client.new_inbox(),
            filter_subject: format!("{}.>", shard_prefix(k)),
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: from.max(1),
            },
            ..Default::default()
        })
        .await?;
    Ok(consumer.messages().await?)
}

/// A failed consumer create of shard `k`, by the node's reader or by the catch-up of
/// `client_id`: at WARN when the node's [`RetryLog`](super::retry_log::RetryLog) says so,
/// else at debug.
fn log_failed_read(inner: &Inner, k: usize, client_id: Option<&str>, e: &async_nats::Error) {
    use super::retry_log::Failure;
    let reader = if client_id.is_some() {
        "cluster catch-up"
    } else {
        "cluster reader"
    };
    let client_id = client_id.map(|id| tracing::field::display(crate::security::Bounded(id)));
    match inner
        .read_retries
        .lock()
        .failed(tokio::time::Instant::now())
    {
        Failure::Log { unlogged: 0 } => {
            tracing::warn!(shard = k, client_id, "{reader}: {e}; retrying");
        }
        Failure::Log { unlogged } => tracing::warn!(
            shard = k,
            client_id,
            unlogged,
            "{reader}: {e}; retrying (the node's shard reads failed {unlogged} more times \
             since the last such line: those are logged at debug level)"
        ),
        Failure::Counted => {
            tracing::debug!(shard = k, client_id, "{reader}: {e}; retrying");
        }
    }
}

/// A shard read started: after failed ones, one INFO line for the node.
fn log_reading_again(inner: &Inner) {
    let again = inner
        .read_retries
        .lock()
        .read_again(tokio::time::Instant::now());
    if let Some((unlogged, lasted)) = again {
        tracing::info!(
            unlogged_failures = unlogged,
            failing_for_ms = lasted.as_millis() as u64,
            "cluster readers: a shard read started again after failed ones"
        );
    }
}

/// A reader with nothing to read for this long asks the stream whether it is behind: its
/// consumer may sit on a NATS server that died, which the client's heartbeat check (5 s for
/// ordered consumers, not configurable) notices only later.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// What a look at shard `k`'s stream found (its leader's answer).
struct StreamView {
    last: u64,
    /// The leader's server name and since when it leads: a leader that lost its leadership
    /// and won it back is a change too.
    leader: Option<String>,
}

/// Look at shard `k`'s stream, if it answers in time.
async fn look(inner: &Inner, k: usize) -> Option<StreamView> {
    let mut js = inner.js.clone();
    js.set_timeout(CONSUMER_CREATE_TIMEOUT);
    let stream = js.get_stream(shard_stream(k)).await.ok()?;
    let info = stream.cached_info();
    let leader = info.cluster.as_ref().and_then(|c| {
        c.leader
            .as_ref()
            .map(|name| format!("{name}@{:?}", c.leader_since))
    });
    Some(StreamView {
        last: info.state.last_sequence,
        leader,
    })
}

/// The leader and end of a shard's stream the reader saw last. A change of leader, or a
/// stream that got shorter, can have taken back entries already acknowledged and read: the
/// ledger reads its settling stores of the shard again (`ledger.rs`).
#[derive(Default)]
struct LeaderWatch {
    leader: Option<String>,
    last: u64,
}

impl LeaderWatch {
    /// Note `view`; `Some(last)` of the stream when it answered.
    fn saw(&mut self, inner: &Inner, k: usize, view: Option<StreamView>) -> Option<u64> {
        let view = view?;
        let another = matches!((&self.leader, &view.leader), (Some(a), Some(b)) if a != b);
        let shorter = view.last < self.last;
        if view.leader.is_some() {
            self.leader = view.leader;
        }
        self.last = view.last;
        if another {
            inner.ledger.leader_changed(&inner.js, k, "another leader");
        } else if shorter {
            inner
                .ledger
                .leader_changed(&inner.js, k, "a shorter stream");
        }
        Some(view.last)
    }
}

/// A reader that has not reached, within this, the last sequence its stream had at the
/// start of it starts over: its consumer may sit on a server still catching up after a
/// partition healed, which delivers a trickle (never idle for [`IDLE_CHECK`]) or nothing.
const LAG_CHECK: Duration = Duration::from_secs(3);

/// A reader that read at least this many messages since the previous lag check is busy, not
/// stuck behind a server catching up: it is not started over however far behind it is (a new
/// consumer would not read faster, and starting over under load cost a node three quarters
/// of its QoS 1 fan-in). About 330 msg/s per shard: far above a catching-up server's trickle
/// at the chaos runs' rates, far below a loaded shard's.
const BUSY_PROGRESS: u64 = 1_000;

/// The node's reader of shard `k`. Its consumer is made again from the next unread sequence
/// after a reconnection to NATS and when it is idle while the stream holds more (a consumer
/// lost with its server does not always say so).
async fn node_reader(inner: Arc<Inner>, k: usize) {
    let mut pace = Pace::default();
    let mut watch = LeaderWatch::default();
    let mut connection = inner.connection.clone();
    loop {
        let epoch = connection.borrow_and_update().epoch;
        let from = inner.positions[k].load(Ordering::Acquire) + 1;
        let mut messages = match ordered_from(&inner, k, from).await {
            Ok(m) => {
                log_reading_again(&inner);
                m
            }
            Err(e) => {
                log_failed_read(&inner, k, None, &e);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let mut lag = tokio::time::interval(LAG_CHECK);
        lag.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The stream's last sequence at the previous lag check, when the reader was behind it.
        let mut owed: Option<u64> = None;
        // Where the reader was at the previous lag check.
        let mut checked_at = inner.positions[k].load(Ordering::Acquire);
        loop {
            let next = tokio::select! {
                next = messages.next() => next,
                _ = lag.tick() => {
                    let position = inner.positions[k].load(Ordering::Acquire);
                    let busy = position.saturating_sub(checked_at) >= BUSY_PROGRESS;
                    checked_at = position;
                    if !busy && owed.is_some_and(|target| position < target) {
                        tracing::warn!(
                            shard = k,
                            position,
                            "cluster reader: fell behind its stream; reading again"
                        );
                        break;
                    }
                    owed = watch
                        .saw(&inner, k, look(&inner, k).await)
                        .filter(|last| *last > position);
                    continue;
                }
                up = super::engine::reconnected_since(&mut connection, epoch) => {
                    if !up {
                        return;
                    }
                    tracing::debug!(shard = k, "cluster reader: reconnected; reading again");
                    // A leader may have changed while this node could not see it.
                    inner.ledger.leader_changed(&inner.js, k, "a reconnection to NATS");
                    break;
                }
                () = tokio::time::sleep(IDLE_CHECK) => {
                    let last = watch.saw(&inner, k, look(&inner, k).await);
                    if last.is_some_and(|last| last > inner.positions[k].load(Ordering::Acquire)) {
                        tracing::warn!(shard = k, "cluster reader: stalled behind its stream; reading again");
                        break;
                    }
                    continue;
                }
            };
            let Some(next) = next else { break };
            let message = match next {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(shard = k, "cluster reader: {e}");
                    break;
                }
            };
            let Ok(seq) = message.info().map(|i| i.stream_sequence) else {
                continue;
            };
            if seq <= inner.positions[k].load(Ordering::Acquire) {
                continue;
            }
            // Before the claim: a paused reader has not read the message for anyone yet.
            match memory_room(&inner, k).await {
                None => return,
                // The pause is not the reader falling behind its stream.
                Some(true) => {
                    owed = None;
                    checked_at = inner.positions[k].load(Ordering::Acquire);
                    lag.reset();
                }
                Some(false) => {}
            }
            let Some(core) = inner.core() else { return };
            // Claimed before it is offered: a catch-up that has not read `seq` yet then
            // stays on (see `catch_up`); routed after: floors never pass an entry not yet
            // registered.
            inner.positions[k].store(seq, Ordering::Release);
            // Confirms (or repairs) this node's acknowledged stores up to `seq`.
            let id = message
                .headers
                .as_ref()
                .and_then(|h| h.get("Nats-Msg-Id"))
                .map(|v| v.as_str());
            inner.ledger.read(&inner.js, k, seq, id);
            let held = super::qos2::is_held(message.headers.as_ref());
            // Where each message went, for a run that must be traced message by message:
            // `--log-level warn,ferromq::cluster::read=debug`.
            tracing::debug!(target: READ_TARGET, shard = k, seq, id, held, "read");
            // Online sessions this message found at their pending limit: their catch-up
            // readers start after the routing.
            let mut behind = Vec::new();
            let routed = match decode_message(message.payload.clone()) {
                // A QoS 2 message not released yet: delivered from its released copy.
                Ok(_) if held => None,
                Ok(frame) => {
                    let limit = core.pending_limits.load().limit_for(&frame.message.topic);
                    let topic = frame.message.topic.clone();
                    Some(core.deliver_from_backplane(
                        core.memory.charge(frame.message),
                        frame.publisher.as_deref(),
                        |session| offer_live(&inner, session, k, (seq, &topic), limit, &mut behind),
                        |queued| {
                            // One check per message, not one trace call per queued copy.
                            let tracing_kept =
                                tracing::enabled!(target: READ_TARGET, tracing::Level::DEBUG);
                            for q in queued.iter().filter(|_| tracing_kept) {
                                tracing::debug!(
                                    target: READ_TARGET,
                                    shard = k,
                                    seq,
                                    queue_seq = q.seq,
                                    "kept"
                                );
                            }
                            inner.tracker.lock().kept(k, seq, &queued)
                        },
                    ))
                }
                Err(e) => {
                    tracing::warn!(shard = k, seq, "cluster reader skipped: {e}");
                    None
                }
            };
            inner.routed[k].store(seq, Ordering::Release);
            for (client_id, session_id, after) in behind {
                let start = inner
                    .tracker
                    .lock()
                    .start_catch_up(&client_id, session_id, k);
                if start.is_some() {
                    tokio::spawn(catch_up(inner.clone(), client_id, session_id, k, after));
                }
            }
            if let Some(routed) = routed {
                tracing::debug!(target: READ_TARGET, shard = k, seq, offered = routed.offered, "routed");
                pace.after(&core, routed).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// An online session whose shard fell behind: its client id, session id and the sequence its
/// catch-up reads after.
type Behind = (Arc<str>, crate::broker::session::SessionId, u64);

/// What the node's reader offers of message `seq` of shard `k`, on `topic`, to `session`
/// (the tracker's [`super::tracker::Tracker::accept_live`]): not the copies through
/// subscriptions made after it was stored ([`older_subscriptions`]), nothing to a persistent
/// session at its pending limit `limit`, whose shard falls behind instead (an online one is
/// pushed to `behind`, for a catch-up reader to start after the routing).
///
/// The session's lock is never taken under the tracker's: the session's callbacks into the
/// store (a persistent session going offline, its record changing) take the tracker's under
/// the session's, and the two orders would deadlock.
fn offer_live(
    inner: &Inner,
    session: &Session,
    k: usize,
    (seq, topic): (u64, &str),
    limit: usize,
    behind: &mut Vec<Behind>,
) -> Offer {
    let at_limit = at_pending_limit(session, limit);
    let mut tracker = inner.tracker.lock();
    let younger = younger_than(inner, &mut tracker, session, k, seq);
    let mut offer = Offer::All;
    if !younger.is_empty() {
        // A young subscription (rare): the session is read with the tracker's lock dropped.
        drop(tracker);
        offer = older_subscriptions(session, &younger, k, seq, topic);
        if offer == Offer::Nothing {
            return offer;
        }
        tracker = inner.tracker.lock();
    }
    let fell_behind = at_limit
        .then(|| tracker.fall_behind(session.client_id(), session.id(), k))
        .flatten();
    let why = match fell_behind {
        Some(after) => {
            // Read under the tracker's lock (no lock of its own): an attach after this finds
            // the shard behind and starts its catch-up (`attached`).
            if session.is_attached() {
                behind.push((session.client_id().clone(), session.id(), after));
            }
            "at its pending limit: fed from the stream"
        }
        None if tracker.accept_live(session.client_id(), session.id(), k, seq) => return offer,
        None => "not offered live",
    };
    drop(tracker);
    tracing::debug!(
        target: READ_TARGET,
        shard = k,
        seq,
        client_id = %session.client_id(),
        "{why}"
    );
    Offer::Nothing
}

/// The filters `session` subscribed to on this node after message `seq` of shard `k` was
/// stored and acknowledged (the tracker's young subscriptions; none in the common case).
fn younger_subscriptions(inner: &Inner, session: &Session, k: usize, seq: u64) -> Vec<String> {
    younger_than(inner, &mut inner.tracker.lock(), session, k, seq)
}

/// [`younger_subscriptions`] under the tracker's lock the caller holds.
fn younger_than(
    inner: &Inner,
    tracker: &mut Tracker,
    session: &Session,
    k: usize,
    seq: u64,
) -> Vec<String> {
    if !tracker.has_young() {
        return Vec::new();
    }
    tracker.prune_young(&inner.routed());
    tracker.younger_than(session.id(), k, seq)
}

/// Which subscriptions of `session` get message `seq` of shard `k` on `topic`, given the
/// filters `younger` than it ([`younger_subscriptions`]): only the older ones. A
/// subscription made after the message was stored (a client's SUBSCRIBE after its own
/// PUBACK, say) never gets it on a single broker, and here the reader may read it after the
/// SUBSCRIBE; its retained copy, if any, came with the SUBACK. Through an older overlapping
/// subscription the message still comes (an MQTT 5 session gets one copy per subscription:
/// only the younger ones' are left out).
fn older_subscriptions(
    session: &Session,
    younger: &[String],
    k: usize,
    seq: u64,
    topic: &str,
) -> Offer {
    if younger.is_empty() {
        return Offer::All;
    }
    let (older, left_out) = session.with_state_unchecked(|s| {
        let mut older = false;
        let mut left_out = SmallVec::new();
        let matching = s
            .subscriptions()
            .iter()
            .filter(|(filter, _)| crate::protocol::topic::matches(filter, topic));
        for (filter, options) in matching {
            if younger.contains(filter) {
                left_out.push(*options);
            } else {
                older = true;
            }
        }
        (older, left_out)
    });
    if !older {
        tracing::debug!(target: READ_TARGET, shard = k, seq, client_id = %session.client_id(),
            "stored before the subscription was made: not offered");
        return Offer::Nothing;
    }
    if left_out.is_empty() {
        Offer::All
    } else {
        Offer::Except(left_out)
    }
}

/// Whether the persistent `session` holds `limit` (its pending limit) or more messages: the
/// node's reader feeds it no more (see [`super::tracker::Tracker::fall_behind`]).
fn at_pending_limit(session: &Session, limit: usize) -> bool {
    session.is_persistent() && session.with_state_unchecked(|s| s.pending().len()) >= limit
}

/// A reader waits, as a publisher does on a single node, for local subscribers it pushed
/// above their soft limit (bounded by `OVERFILL_PAUSE_LIMIT_MS`; one that stays over is given
/// up on until it drains), so a slow subscriber's queue does not grow without bound while the
/// others keep up.
#[derive(Default)]
struct Pace {
    given_up: Vec<crate::broker::runtime::Overfilled>,
}

impl Pace {
    async fn after(
        &mut self,
        core: &crate::broker::runtime::BrokerCore,
        routed: crate::broker::runtime::Routed,
    ) {
        if routed.overfilled.is_empty() {
            return;
        }
        self.given_up.retain(|g| g.still_over());
        let waiting: Vec<_> = routed
            .overfilled
            .into_iter()
            .filter(|o| {
                !self
                    .given_up
                    .iter()
                    .any(|g| g.session.id() == o.session.id())
            })
            .collect();
        if waiting.is_empty() {
            return;
        }
        let limit = Duration::from_millis(crate::broker::routing::limits::OVERFILL_PAUSE_LIMIT_MS);
        let deadline = tokio::time::Instant::now() + limit;
        core.wait_drained(&waiting, deadline).await;
        self.given_up
            .extend(waiting.into_iter().filter(|o| o.still_over()));
    }
}

/// A session is attached here: shards it must catch up on get their readers.
pub fn attached(inner: &Arc<Inner>, session: &Arc<Session>) {
    super::sessions::announce(inner, session.client_id());
    if !session.is_persistent() && inner.claims.lock().superseded(session.client_id()) {
        // Another node's newer CONNECT was announced before this one attached.
        if let Some(core) = inner.core() {
            core.hand_over(session.client_id());
        }
        return;
    }
    let behind: Vec<(usize, u64)> = {
        let mut tracker = inner.tracker.lock();
        let Some(t) = tracker.sessions.get_mut(session.client_id()) else {
            // The hand-over takes the registry's and the session's locks: not under the
            // tracker's (see `offer_live`).
            drop(tracker);
            if session.is_persistent() {
                // Its claim was undone by a newer one (handed over before it attached).
                if let Some(core) = inner.core() {
                    core.hand_over(session.client_id());
                }
            }
            return;
        };
        t.session_id = Some(session.id());
        let shards = t.shards.len();
        (0..shards)
            .filter_map(|k| {
                tracker
                    .start_catch_up(session.client_id(), session.id(), k)
                    .map(|floor| (k, floor))
            })
            .collect()
    };
    for (k, floor) in behind {
        tokio::spawn(catch_up(
            inner.clone(),
            session.client_id().clone(),
            session.id(),
            k,
            floor,
        ));
    }
}

/// Feed `client_id`'s session shard `k` from after `floor` until it reaches the node's
/// reader, then let the node's reader feed it.
async fn catch_up(inner: Arc<Inner>, client_id: Arc<str>, session_id: u64, k: usize, floor: u64) {
    let _running = CatchUpRunning {
        inner: inner.clone(),
        client_id: client_id.clone(),
        session_id,
        k,
    };
    // Nothing stored past the floor that the node's reader has not routed: live at once,
    // without a consumer (the common case of a resume after a short absence).
    if go_live(&inner, &client_id, session_id, k, floor) != Some(false) {
        return;
    }
    let mut caught = floor;
    loop {
        // Taken for one consumer's reading and given back whenever this catch-up waits (a
        // retry, a start over, its client taking what it was fed), so that sessions whose
        // client or server is slow never keep every other resumed session waiting for one.
        let Ok(permit) = inner.catch_up.clone().acquire_owned().await else {
            return;
        };
        if !still_catching_up(&inner, &client_id, session_id, k) {
            return;
        }
        let mut messages = match ordered_from(&inner, k, caught + 1).await {
            Ok(m) => {
                log_reading_again(&inner);
                m
            }
            Err(e) => {
                drop(permit);
                log_failed_read(&inner, k, Some(&client_id), &e);
                tokio::time::sleep(Duration::from_millis(200)).await;
                if still_catching_up(&inner, &client_id, session_id, k) {
                    continue;
                }
                return;
            }
        };
        let mut progress = tokio::time::Instant::now();
        loop {
            match go_live(&inner, &client_id, session_id, k, caught) {
                Some(false) => {}
                Some(true) | None => return,
            }
            let next = tokio::time::timeout(CATCH_UP_IDLE, messages.next()).await;
            let message = match next {
                // Not live yet, so the node's reader is past `caught`: a consumer that gives
                // nothing for IDLE_CHECK sits on a server that is behind (or gone): start over.
                Err(_) if progress.elapsed() >= IDLE_CHECK => {
                    tracing::warn!(
                        shard = k,
                        client_id = %client_id,
                        "cluster catch-up: stalled behind its stream; reading again"
                    );
                    break;
                }
                Err(_) => continue,
                Ok(Some(Ok(m))) => m,
                Ok(Some(Err(e))) => {
                    tracing::warn!(shard = k, "cluster catch-up: {e}");
                    break;
                }
                Ok(None) => break,
            };
            let Ok(seq) = message.info().map(|i| i.stream_sequence) else {
                continue;
            };
            if memory_room(&inner, k).await.is_none() {
                return;
            }
            let Some(core) = inner.core() else { return };
            let held = super::qos2::is_held(message.headers.as_ref());
            let mut overfilled = Vec::new();
            match decode_message(message.payload.clone()) {
                Ok(_) if held => {
                    tracing::debug!(target: READ_TARGET, shard = k, seq, client_id = %client_id, "caught up (held)");
                }
                Ok(frame) => {
                    let topic = frame.message.topic.clone();
                    let routed = core.deliver_from_backplane(
                        core.memory.charge(frame.message),
                        frame.publisher.as_deref(),
                        |session| {
                            if session.id() != session_id {
                                tracing::debug!(target: READ_TARGET, shard = k, seq, client_id = %client_id, "catch-up refused: another attachment");
                                return Offer::Nothing;
                            }
                            let mut tracker = inner.tracker.lock();
                            if !tracker.accept_catch_up(&client_id, k, seq) {
                                // Why, evaluated only when logged: not catching up, or already
                                // offered (`delivered_upto` past `seq`); `delivered_upto` equal
                                // to `seq`: an in-flight entry restored at the resume.
                                tracing::debug!(
                                    target: READ_TARGET,
                                    shard = k,
                                    seq,
                                    client_id = %client_id,
                                    cursor = ?tracker
                                        .sessions
                                        .get(&*client_id)
                                        .and_then(|t| t.shards.get(k))
                                        .map(|c| (c.catching_up, c.delivered_upto)),
                                    "catch-up refused"
                                );
                                return Offer::Nothing;
                            }
                            drop(tracker);
                            // The session's lock not under the tracker's (see `offer_live`).
                            let younger = younger_subscriptions(&inner, session, k, seq);
                            older_subscriptions(session, &younger, k, seq, &topic)
                        },
                        |queued| inner.tracker.lock().kept(k, seq, &queued),
                    );
                    tracing::debug!(
                        target: READ_TARGET,
                        shard = k,
                        seq,
                        client_id = %client_id,
                        offered = routed.offered,
                        "caught up"
                    );
                    overfilled = routed.overfilled;
                }
                Err(e) => tracing::warn!(shard = k, seq, "cluster catch-up skipped: {e}"),
            }
            inner.tracker.lock().caught(&client_id, session_id, k, seq);
            caught = seq;
            progress = tokio::time::Instant::now();
            // A long backlog is fed as fast as its client takes it, not into memory.
            if overfilled.iter().any(|o| o.still_over()) {
                let pause = tokio::time::Instant::now() + CLIENT_BEHIND;
                core.wait_drained(&overfilled, pause).await;
                if overfilled.iter().any(|o| o.still_over()) {
                    // A slow client: its consumer and permit go while it catches up, and
                    // reading starts again after `caught`.
                    drop(messages);
                    drop(permit);
                    while overfilled.iter().any(|o| o.still_over()) {
                        let pause = tokio::time::Instant::now() + CLIENT_BEHIND;
                        core.wait_drained(&overfilled, pause).await;
                    }
                    break;
                }
            }
        }
    }
}

/// Marks a catch-up reader stopped whichever way it returns (see
/// [`super::tracker::Tracker::start_catch_up`]); the switch to live clears the mark itself.
struct CatchUpRunning {
    inner: Arc<Inner>,
    client_id: Arc<str>,
    session_id: u64,
    k: usize,
}

impl Drop for CatchUpRunning {
    fn drop(&mut self) {
        self.inner
            .tracker
            .lock()
            .catch_up_stopped(&self.client_id, self.session_id, self.k);
    }
}

/// [`super::tracker::Tracker::try_go_live`] with the reader's position read under the
/// tracker's lock: a message the reader has claimed was either seen here (so the catch-up
/// goes on and reads it) or is offered by the reader after the switch.
fn go_live(inner: &Inner, client_id: &str, session_id: u64, k: usize, caught: u64) -> Option<bool> {
    let mut tracker = inner.tracker.lock();
    let position = inner.positions[k].load(Ordering::Acquire);
    tracker.try_go_live(client_id, session_id, k, caught, position)
}

fn still_catching_up(inner: &Inner, client_id: &str, session_id: u64, k: usize) -> bool {
    inner
        .tracker
        .lock()
        .sessions
        .get(client_id)
        .is_some_and(|t| {
            t.session_id == Some(session_id) && t.shards.get(k).is_some_and(|c| c.catching_up)
        })
}
