//! MQTT 5 shared subscriptions across nodes (`$share/{group}/{filter}`, MQTT 5 4.8.2): each
//! message matching a group goes to ONE member of the group in the whole cluster.
//!
//! - **QoS 0 messages** (core NATS, `fmq.t.<topic>`): every node with a local member of the
//!   group subscribes to the filter's live subjects in a NATS queue group named after the
//!   group, so NATS gives each message to one of those nodes, which gives it to one local
//!   member (chosen as on a single node).
//! - **QoS 1 messages** (stored in the shards `FMQ_MSG_<k>`): the stream [`SHARED_STREAM`]
//!   sources every shard (made when the first group is subscribed, so a cluster without groups
//!   pays nothing; interest retention: it keeps a message only while a group's consumer has
//!   not acknowledged it) and each group has ONE durable pull consumer on it, whatever its
//!   members and nodes: consumers stay O(shards + groups). A node pulls while one of its
//!   members of the group is connected, gives each message to one local member as entry `seq`
//!   of its queue, and acknowledges the JetStream message when the member's PUBACK (or the
//!   copy's end by expiry or refusal) commits `Change::Removed` for that entry.
//! - **Redelivery.** While the member's session stays on this node (connected, or offline but
//!   kept: the client may come back, 4.8.2 allows waiting for it) the node extends the
//!   message's ack wait. When the session ends or is taken over elsewhere, the node gives the
//!   message back (NAK) and JetStream hands it to a member anywhere; when the node dies, the
//!   ack wait (`nodeTimeout`) runs out and the same happens. A copy given back is delivered
//!   again: QoS 1 allows the duplicate.
//!
//! A QoS 1 message delivered to a member's QoS 0 subscription is acknowledged once queued.
//! A group's consumer that no node pulls from for `maxOfflineAge` is deleted by NATS.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::message::{AckKind, Acker};
use async_nats::jetstream::{self, stream};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use super::codec::decode_message;
use super::engine::Inner;
use super::subject::filter_subjects;
use super::{shard_prefix, shard_stream, LIVE_PREFIX};

use crate::broker::durability::{Change, QueueOwner, QueueSeq};
use crate::broker::routing::memory::Body;
use crate::broker::session::Session;
use crate::protocol::topic::{matches, parse_shared_subscription};
use crate::protocol::QoS;

/// The stream that sources every message shard for the groups' consumers.
pub const SHARED_STREAM: &str = "FMQ_SHARED";
/// The subjects of every message shard (`shard_prefix(k)` for any k).
const ANY_SHARD: &str = "fmq.m.*";
/// QoS 1 copies of one group a node holds unacknowledged at once.
const LOCAL_WINDOW: usize = 64;
/// The most a node pulls in one request (small, so that nodes share the messages).
const BATCH: usize = 16;
/// How long one pull request waits for messages.
const PULL_EXPIRES: Duration = Duration::from_secs(1);
/// How often a node with no connected member checks again.
const IDLE: Duration = Duration::from_millis(100);
/// A NAK'd message is redelivered after this (not at once to the same node in a loop).
const NAK_DELAY: Duration = Duration::from_millis(100);
/// The longest a SUBACK waits for its group to be in place (see [`Groups::ready`]).
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long after its server has the queue subscriptions a SUBACK still waits (as `live.rs`).
const INTEREST_SETTLE: Duration = Duration::from_millis(25);

/// A group with local members.
struct Local {
    users: usize,
    tasks: Vec<JoinHandle<()>>,
    ready: tokio::sync::watch::Receiver<bool>,
}

/// A QoS 1 copy given to a local member and not acknowledged yet.
struct Pending {
    /// `None` while it is being delivered.
    session: Option<Arc<Session>>,
    acker: Arc<Acker>,
    /// Its entry was removed (acknowledged) while it was being delivered.
    removed: bool,
    _window: OwnedSemaphorePermit,
}

/// This node's groups and their unacknowledged copies.
#[derive(Default)]
pub struct Groups {
    local: parking_lot::Mutex<HashMap<Arc<str>, Local>>,
    pending: parking_lot::Mutex<HashMap<QueueSeq, Pending>>,
    sweeper: std::sync::OnceLock<()>,
}

/// Whether `filter` (as the core names a subscription) is a shared subscription.
pub fn is_shared(filter: &str) -> bool {
    filter.starts_with("$share/")
}

/// The NATS name of a group (durable consumer and queue group): `G` and 32 hex digits of the
/// SHA-256 of `$share/{group}/{filter}` (any UTF-8 there; NATS names allow few characters).
fn group_name(subscription: &str) -> String {
    let digest = Sha256::digest(subscription.as_bytes());
    let mut name = String::with_capacity(33);
    name.push('G');
    for b in &digest[..16] {
        name.push_str(&format!("{b:02x}"));
    }
    name
}

fn send_ack(acker: Arc<Acker>, kind: AckKind) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            if let Err(e) = acker.ack_with(kind).await {
                tracing::debug!("cluster group: acknowledgement not sent: {e}");
            }
        });
    }
}

impl Groups {
    /// A local subscription `$share/{group}/{filter}` was added or removed.
    pub fn changed(&self, inner: &Arc<Inner>, subscription: &str, added: bool) {
        self.start_sweeper(inner);
        let mut local = self.local.lock();
        if added {
            let entry = local.entry(Arc::from(subscription)).or_insert_with(|| {
                let (ready_tx, ready) = tokio::sync::watch::channel(false);
                let subscription: Arc<str> = Arc::from(subscription);
                let tasks = vec![tokio::spawn(serve(inner.clone(), subscription, ready_tx))];
                Local {
                    users: 0,
                    tasks,
                    ready,
                }
            });
            entry.users += 1;
        } else if let Some(entry) = local.get_mut(subscription) {
            entry.users = entry.users.saturating_sub(1);
            if entry.users == 0 {
                if let Some(gone) = local.remove(subscription) {
                    for task in gone.tasks {
                        task.abort();
                    }
                }
            }
        }
    }

    /// Resolves once the groups of `subscriptions` take messages here (queue subscriptions
    /// and the group's consumer in place), bounded by `within`.
    pub fn ready(
        &self,
        subscriptions: &[String],
        within: Duration,
    ) -> impl std::future::Future<Output = ()> {
        let waits: Vec<_> = {
            let local = self.local.lock();
            subscriptions
                .iter()
                .filter_map(|s| local.get(s.as_str()).map(|l| l.ready.clone()))
                .collect()
        };
        async move {
            let all = async {
                for mut ready in waits {
                    let _ = ready.wait_for(|r| *r).await;
                }
            };
            let _ = tokio::time::timeout(within, all).await;
        }
    }

    /// The core committed `changes`: a removed entry of a group's copy acknowledges its
    /// JetStream message.
    pub fn observe(&self, changes: &[Change]) {
        let removed = changes.iter().filter_map(|c| match c {
            Change::Removed {
                owner: QueueOwner::Session(_),
                seq,
            } => Some(*seq),
            _ => None,
        });
        let mut pending = None;
        for seq in removed {
            let pending = pending.get_or_insert_with(|| self.pending.lock());
            match pending.get_mut(&seq) {
                Some(p) if p.session.is_none() => p.removed = true,
                Some(_) => {
                    if let Some(p) = pending.remove(&seq) {
                        send_ack(p.acker, AckKind::Ack);
                    }
                }
                None => {}
            }
        }
    }

    /// Every `ack_wait / 4`: extend the ack wait of the copies whose member's session is still
    /// here; give back those whose session ended or went to another node.
    fn start_sweeper(&self, inner: &Arc<Inner>) {
        if self.sweeper.set(()).is_err() {
            return;
        }
        let inner = Arc::downgrade(inner);
        tokio::spawn(async move {
            loop {
                let period = match inner.upgrade() {
                    Some(inner) => ack_wait(&inner) / 4,
                    None => return,
                };
                tokio::time::sleep(period).await;
                let Some(inner) = inner.upgrade() else { return };
                let Some(core) = inner.core() else { continue };
                // Looked at without the lock held: the core's registry has its own.
                let held: Vec<(QueueSeq, Arc<Session>, Arc<Acker>)> = inner
                    .groups
                    .pending
                    .lock()
                    .iter()
                    .filter_map(|(seq, p)| Some((*seq, p.session.clone()?, p.acker.clone())))
                    .collect();
                let mut gone = Vec::new();
                for (seq, session, acker) in held {
                    if core.holds_session(&session) {
                        send_ack(acker, AckKind::Progress);
                    } else {
                        gone.push(seq);
                    }
                }
                let mut pending = inner.groups.pending.lock();
                for seq in gone {
                    if let Some(p) = pending.remove(&seq) {
                        send_ack(p.acker, AckKind::Nak(Some(NAK_DELAY)));
                    }
                }
            }
        });
    }
}

/// How long JetStream waits for a group copy's acknowledgement before it gives the message
/// to another node: `nodeTimeout` (a live node extends it while its member holds the copy).
fn ack_wait(inner: &Inner) -> Duration {
    Duration::from_millis(inner.settings.node_timeout_ms.max(1000))
}

/// Serve one group on this node: its queue subscriptions (QoS 0) and its consumer (QoS 1).
async fn serve(inner: Arc<Inner>, subscription: Arc<str>, ready: tokio::sync::watch::Sender<bool>) {
    let Ok(Some(shared)) = parse_shared_subscription(&subscription) else {
        let _ = ready.send(true);
        return;
    };
    let filter = shared.filter.to_owned();
    let name = group_name(&subscription);
    let mut subscribers = Vec::new();
    for subject in filter_subjects(LIVE_PREFIX, &filter) {
        match inner
            .client
            .queue_subscribe(subject.clone(), name.clone())
            .await
        {
            Ok(s) => subscribers.push(s),
            Err(e) => tracing::warn!(subject, "cluster group subscription: {e}"),
        }
    }
    let _ = inner.client.flush().await;
    let consumer = loop {
        match group_consumer(&inner, &name, &filter).await {
            Ok(c) => break c,
            Err(e) => {
                tracing::warn!(group = %subscription, "cluster group consumer: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    tokio::time::sleep(INTEREST_SETTLE).await;
    let _ = ready.send(true);
    let pulling = tokio::spawn(pull(
        inner.clone(),
        subscription.clone(),
        name,
        filter,
        consumer,
    ));
    // Aborting this task (the last local member left) ends the pulling too.
    let mut pulling = AbortOnDrop(pulling);
    let mut live = futures_util::stream::select_all(subscribers);
    while let Some(message) = live.next().await {
        let frame = match decode_message(message.payload) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!("cluster group: live message skipped: {e}");
                continue;
            }
        };
        let Some(core) = inner.core() else { continue };
        // Charged to `memoryUsage`, and dropped (counted) when it is reached, as a local
        // QoS 0 publish is.
        let Some(message) = core.admit(frame.message, Body::Uncharged) else {
            continue;
        };
        let seq = core.durability().next_seq();
        let _ = core.deliver_to_group(&subscription, message, seq);
    }
    // No live subscription (NATS refused them) or the client closed: QoS 1 goes on.
    let _ = (&mut pulling.0).await;
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The group's durable consumer (made when missing), on [`SHARED_STREAM`] (made when missing).
async fn group_consumer(
    inner: &Inner,
    name: &str,
    filter: &str,
) -> Result<jetstream::consumer::Consumer<pull::Config>, async_nats::Error> {
    let stream = shared_stream(inner).await?;
    let mut subjects: Vec<String> = filter_subjects(ANY_SHARD, filter).into_iter().collect();
    // Released QoS 2 messages are on their exchange's subject (`qos2.rs`), not their topic's:
    // read too (unless a wildcard subject covers them already), and matched by topic at
    // delivery. Exactly the exchange subjects' three tokens, not `>`: NATS refuses filter
    // subjects that overlap, and `>` would overlap a topic filter of more levels.
    let released = format!("{ANY_SHARD}.{}", super::qos2::SUBJECT_TOKEN);
    if !subjects
        .iter()
        .any(|s| super::qos2::subjects_collide(s, &format!("{released}.x.y.z")))
    {
        subjects.push(format!("{released}.*.*.*"));
    }
    let (filter_subject, filter_subjects) = match subjects.as_slice() {
        [one] => (one.clone(), Vec::new()),
        _ => (String::new(), subjects),
    };
    let consumer = stream
        .get_or_create_consumer(
            name,
            pull::Config {
                durable_name: Some(name.to_owned()),
                filter_subject,
                filter_subjects,
                deliver_policy: DeliverPolicy::New,
                ack_policy: AckPolicy::Explicit,
                ack_wait: ack_wait(inner),
                max_ack_pending: 10_000,
                inactive_threshold: Duration::from_millis(inner.settings.max_offline_age_ms),
                num_replicas: inner.settings.replicas.max(1),
                ..Default::default()
            },
        )
        .await?;
    Ok(consumer)
}

/// [`SHARED_STREAM`], made when missing: it sources every shard from its next message on.
async fn shared_stream(inner: &Inner) -> Result<jetstream::stream::Stream, async_nats::Error> {
    if let Ok(stream) = inner.js.get_stream(SHARED_STREAM).await {
        super::raise_consumer_limit(&inner.js, &stream).await;
        return Ok(stream);
    }
    let mut sources = Vec::with_capacity(inner.shards);
    for k in 0..inner.shards {
        let mut shard = inner.js.get_stream(shard_stream(k)).await?;
        let last = shard.info().await?.state.last_sequence;
        sources.push(stream::Source {
            name: shard_stream(k),
            start_sequence: Some(last + 1),
            filter_subject: Some(format!("{}.>", shard_prefix(k))),
            ..Default::default()
        });
    }
    let config = stream::Config {
        name: SHARED_STREAM.to_owned(),
        sources: Some(sources),
        retention: stream::RetentionPolicy::Interest,
        storage: stream::StorageType::File,
        num_replicas: inner.settings.replicas.max(1),
        max_age: Duration::from_millis(inner.settings.max_offline_age_ms),
        max_consumers: super::MAX_CONSUMERS_PER_STREAM,
        ..Default::default()
    };
    let stream = inner.js.get_or_create_stream(config).await?;
    super::raise_consumer_limit(&inner.js, &stream).await;
    Ok(stream)
}

/// Pull the group's QoS 1 messages while a local member is connected, and give each to one.
async fn pull(
    inner: Arc<Inner>,
    subscription: Arc<str>,
    name: String,
    filter: String,
    mut consumer: jetstream::consumer::Consumer<pull::Config>,
) {
    let window = Arc::new(Semaphore::new(LOCAL_WINDOW));
    // At the memory limit since the last look (logged once per pause).
    let mut paused = false;
    loop {
        // Nothing more while the node is at its `memoryUsage` limit: the messages wait in
        // their stream (stored and acknowledged already), as its shard readers' do.
        let (online, full) = inner.core().map_or((false, false), |core| {
            let full = core.memory.is_full();
            if full && !paused {
                super::readers::memory_paused(
                    &core,
                    "cluster group pull",
                    &format!("group {subscription}"),
                );
            }
            (core.group_has_online_member(&subscription), full)
        });
        paused = full;
        let free = window.available_permits();
        if !online || full || free == 0 {
            tokio::time::sleep(IDLE).await;
            continue;
        }
        let batch = consumer
            .fetch()
            .max_messages(free.min(BATCH))
            .expires(PULL_EXPIRES)
            .messages()
            .await;
        let mut batch = match batch {
            Ok(b) => b,
            Err(e) => {
                // The consumer may be gone (deleted after `maxOfflineAge` without a pull, or by
                // an operator): made again, from the messages that arrive from now on.
                tracing::warn!(group = %subscription, "cluster group pull: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                if let Ok(again) = group_consumer(&inner, &name, &filter).await {
                    consumer = again;
                }
                continue;
            }
        };
        while let Some(next) = batch.next().await {
            match next {
                Ok(message) => deliver(&inner, &subscription, &filter, &window, message),
                Err(e) => {
                    // A consumer whose raft group has no leader yet (just made, or after a
                    // server died) answers every pull at once (503): pause, not a busy loop.
                    tracing::debug!(group = %subscription, "cluster group pull: {e}");
                    tokio::time::sleep(super::PULL_ERROR_PAUSE).await;
                    break;
                }
            }
        }
    }
}

/// Give one pulled message to a local member, or back to JetStream.
fn deliver(
    inner: &Arc<Inner>,
    subscription: &str,
    filter: &str,
    window: &Arc<Semaphore>,
    message: jetstream::Message,
) {
    let (message, acker) = message.split();
    let acker = Arc::new(acker);
    if super::qos2::is_held(message.headers.as_ref()) {
        // A QoS 2 message not released yet (its released copy follows on the same subject).
        send_ack(acker, AckKind::Ack);
        return;
    }
    let frame = match decode_message(message.payload) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!("cluster group: stored message skipped: {e}");
            send_ack(acker, AckKind::Term);
            return;
        }
    };
    if !matches(filter, &frame.message.topic) {
        // A `$` topic under a leading wildcard: NATS subjects match it, MQTT filters do not.
        send_ack(acker, AckKind::Ack);
        return;
    }
    // Only while a local member is connected: else a member elsewhere should have it (a
    // local offline one would only get it when it comes back).
    let (Some(core), Ok(permit)) = (inner.core(), window.clone().try_acquire_owned()) else {
        send_ack(acker, AckKind::Nak(Some(NAK_DELAY)));
        return;
    };
    if !core.group_has_online_member(subscription) {
        send_ack(acker, AckKind::Nak(Some(NAK_DELAY)));
        return;
    }
    let seq = core.durability().next_seq();
    inner.groups.pending.lock().insert(
        seq,
        Pending {
            session: None,
            acker: acker.clone(),
            removed: false,
            _window: permit,
        },
    );
    let copy = core.deliver_to_group(subscription, core.memory.charge(frame.message), seq);
    let mut pending = inner.groups.pending.lock();
    let Some(mut entry) = pending.remove(&seq) else {
        return;
    };
    match copy {
        Some(copy) if copy.queued && copy.qos != QoS::AtMostOnce && !entry.removed => {
            entry.session = Some(copy.session);
            pending.insert(seq, entry);
        }
        Some(copy) if copy.queued => send_ack(entry.acker, AckKind::Ack),
        // No local member could take it: another node may.
        _ => send_ack(entry.acker, AckKind::Nak(Some(NAK_DELAY))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_subjects() {
        assert_eq!(ANY_SHARD.replace('*', "3"), shard_prefix(3));
        let name = group_name("$share/g/a/+");
        assert_eq!(name.len(), 33);
        assert!(super::super::subject::is_valid_token(&name));
        assert_ne!(name, group_name("$share/g/a/b"));
        assert!(is_shared("$share/g/a") && !is_shared("a/$share/g"));
    }
}
