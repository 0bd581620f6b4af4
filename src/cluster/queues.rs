//! STOMP queues across nodes (ActiveMQ's point-to-point `/queue/x`): every message of a queue
//! is stored once in the stream [`QUEUE_STREAM`] and consumed once, by a consumer on any node.
//!
//! - **Store.** A SEND is a JetStream publish on `fmq.q.<queue name>` (the topic codec of
//!   `subject.rs` on the ActiveMQ name) with a message id; its RECEIPT leaves after the
//!   stream's acknowledgement (bounded by `storeTimeout`: no acknowledgement, an ERROR). Work
//!   queue retention: a message stays until a consumer acknowledged it (or `maxOfflineAge`),
//!   so one sent while the queue has no consumer waits for one. The stream is made at the
//!   node's start, in the background.
//! - **Competing consumers.** One durable pull consumer per queue (`Q` + a hash of the name,
//!   explicit acknowledgement, ack wait `nodeTimeout`), pulled by every node with a local
//!   consumer of the queue while the local consumers' prefetch windows have room. A pulled
//!   message becomes an entry of the node's local [`crate::broker::queues::Queue`], so
//!   round-robin, prefetch, selectors, exclusive consumers and the redelivery policy are the
//!   single node's rules among the node's consumers. The entry's redelivery count is
//!   JetStream's delivery count less the pulls that ended in a give-back with no delivery
//!   (`give_backs.rs`): only a MESSAGE sent to a client and not acknowledged counts.
//! - **Acknowledgement.** The local queue's `Change::Removed` of the entry (STOMP ACK, auto
//!   ack, an expiry, a discard) acknowledges the JetStream message; the commit (the ACK's
//!   RECEIPT) waits for the server's confirmation.
//! - **Given back.** An entry waiting in the local queue that no local consumer takes (it left,
//!   its window stays full, its selector refuses the message) is given back (NAK) after
//!   [`GIVE_BACK_AFTER`], with what remains of a redelivery delay; another node's consumer gets
//!   it. The NAK follows a note of the entry's redelivery count to every node
//!   (`give_backs::give_back`), so the give-back itself does not count as a delivery. While a
//!   local consumer holds an entry the node extends its ack wait; a dead node's entries come
//!   back to the others after `nodeTimeout`.
//! - **Dead letters** (`Queues::move_dead_letter`): stored on the dead-letter queue's subject
//!   with the message id `dlq.<stream sequence of the original>`, then the original is
//!   acknowledged: a node that dies between the two leaves the original to be redelivered, and
//!   its second dead-lettering is dropped by the stream's duplicate window (at least three
//!   `nodeTimeout`s): never lost, never twice.
//! - **Purge** (an administrator's, `queue_purge.rs`): the entries pulled below the purge
//!   point leave the local queue or, delivered, are dropped once given back; the queue's
//!   floor holds its pulls meanwhile.
//!
//! Temporary queues are each connection's own and stay refused in a cluster (see
//! `stomp/queue_route.rs`).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::message::{AckKind, Acker, PublishMessage};
use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use std::future::IntoFuture;
use std::sync::atomic::Ordering;
use tokio::sync::{mpsc, oneshot, OnceCell};
use tokio::task::JoinHandle;

use super::codec::{decode_message, encode_message};
use super::engine::Inner;
use super::late_wake;
use super::subject::topic_subject;
use crate::broker::durability::{Change, Commit, DurabilityError, QueueOwner, QueueSeq};
use crate::broker::message::Message;
use crate::broker::queues::{SharedQueues, TopicSend};

/// The stream of every queue's messages.
pub const QUEUE_STREAM: &str = "FMQ_QUEUES";
/// Subject prefix of queue messages.
pub const QUEUE_PREFIX: &str = "fmq.q";
/// The most a node pulls in one request (small, so that nodes share the messages).
const BATCH: usize = 16;
/// How long one pull request waits for messages.
const PULL_EXPIRES: Duration = Duration::from_secs(1);
/// How often a node whose consumers have no room looks again.
const IDLE: Duration = Duration::from_millis(20);
/// An entry waiting this long in a local queue, taken by no local consumer, goes back to the
/// shared store (between one and two sweeps of this period).
pub const GIVE_BACK_AFTER: Duration = Duration::from_millis(250);
/// A message given back is offered again after at least this (not at once to the same node
/// in a loop).
pub(super) const NAK_DELAY: Duration = Duration::from_millis(100);

/// An entry pulled from the store and held by a local queue.
pub(super) struct Pending {
    pub queue: Arc<str>,
    pub stream_seq: u64,
    /// JetStream's delivery count of the pull that brought it (1 for the first).
    pub delivered: u64,
    pub acker: Arc<Acker>,
    /// The delivery's acknowledgement subject (`$JS.ACK...`), which any node may answer for
    /// it: a committed transaction's redo record carries it (`queue_redo.rs`).
    pub reply: Option<async_nats::Subject>,
    /// Delivered when a purge removed it from the stream (`queue_purge.rs`): its ACK is sent
    /// without waiting for an answer about a message the stream no longer holds.
    pub purged: bool,
}

/// One message to store: its subject, its message id (the stream's duplicate window), its
/// encoded body.
pub(super) struct Item {
    pub subject: String,
    pub id: String,
    pub payload: Bytes,
}

/// A store to send, in order: one message, or a transaction's messages as one unit
/// (`queue_batch.rs`).
struct Store {
    items: Vec<Item>,
    /// The stream sequence of the last message, once kept.
    done: oneshot::Sender<Result<u64, DurabilityError>>,
}

/// This node's side of the shared queues.
#[derive(Default)]
pub struct SharedQueueState {
    /// Local entry -> its JetStream message.
    pub(super) pending: parking_lot::Mutex<HashMap<QueueSeq, Pending>>,
    /// Queues being purged -> below which stream sequence a pulled message is purged, and
    /// until when (`queue_purge.rs`). A pull takes it shared, a purge exclusively.
    pub(super) floors: parking_lot::RwLock<HashMap<Arc<str>, super::queue_purge::Floor>>,
    /// What give-backs left of each message's redelivery count, told by every node
    /// (`give_backs.rs`).
    pub(super) give_backs: parking_lot::Mutex<super::give_backs::GiveBacks>,
    /// Stream sequences committed STOMP transactions of this node acknowledged lately
    /// (`queue_redo.rs`): a pull that brings one back acknowledges it instead of delivering
    /// it.
    pub(super) committed_acks: parking_lot::Mutex<super::queue_redo::CommittedAcks>,
    /// Queues with local consumers -> their pulling task.
    pullers: parking_lot::Mutex<HashMap<Arc<str>, JoinHandle<()>>>,
    /// The ordered store task's input (started on first use).
    stores: std::sync::OnceLock<mpsc::UnboundedSender<Store>>,
    /// [`QUEUE_STREAM`] exists; `true` when it takes atomic batches (`queue_batch.rs`).
    stream: OnceCell<bool>,
    sweeper: std::sync::OnceLock<()>,
}

/// What the broker's [`crate::broker::queues::Queues`] calls.
pub struct ClusterQueues {
    inner: Weak<Inner>,
    /// This node's temporary queues, each served to the other nodes by its task
    /// (`temp_queues.rs`), aborted when the queue is deleted.
    temporary: parking_lot::Mutex<HashMap<String, JoinHandle<()>>>,
}

impl ClusterQueues {
    pub fn new(inner: &Arc<Inner>) -> ClusterQueues {
        ClusterQueues {
            inner: Arc::downgrade(inner),
            temporary: parking_lot::Mutex::new(HashMap::new()),
        }
    }
}

pub(super) fn unavailable(why: impl Into<String>) -> DurabilityError {
    DurabilityError::Unavailable(why.into())
}

/// A store sent and not answered in time: it may still be kept.
fn unconfirmed(why: &str) -> DurabilityError {
    DurabilityError::Unconfirmed(why.into())
}

/// Whether a NATS client error is its own wait for an answer running out (async-nats reports
/// a double ack's so, as an I/O `TimedOut`).
fn timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    e.downcast_ref::<std::io::Error>()
        .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
}

/// The subject of queue `name`'s messages.
pub fn queue_subject(name: &str) -> String {
    topic_subject(QUEUE_PREFIX, name)
}

/// The durable consumer of queue `name`: `Q` and 32 hex digits of the SHA-256 of the name.
fn consumer_name(name: &str) -> String {
    let digest = Sha256::digest(name.as_bytes());
    let mut out = String::with_capacity(33);
    out.push('Q');
    for b in &digest[..16] {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// How long JetStream waits for an entry's acknowledgement before it gives the message to
/// another node: `nodeTimeout` (a live node extends it while a local consumer holds it).
fn ack_wait(inner: &Inner) -> Duration {
    Duration::from_millis(inner.settings.node_timeout_ms.max(1000))
}

/// The stream's duplicate window: a dead letter stored again by another node after the first
/// node died (an ack wait later) must still be recognised.
pub(super) fn duplicate_window(inner: &Inner) -> Duration {
    Duration::from_millis(inner.settings.store_timeout_ms.saturating_mul(2))
        .max(ack_wait(inner) * 3)
        .max(Duration::from_secs(20))
}

pub(super) fn send_ack(acker: Arc<Acker>, kind: AckKind) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            if let Err(e) = acker.ack_with(kind).await {
                tracing::debug!("cluster queue: acknowledgement not sent: {e}");
            }
        });
    }
}

/// [`QUEUE_STREAM`], made when missing, at the first use of a queue on this node (a cluster
/// without STOMP queues keeps no such stream: its raft group would be one more to recover
/// after a restart of the servers); the first SEND waits for its raft group to form.
async fn ensure_stream(inner: &Inner) -> Result<bool, DurabilityError> {
    inner
        .queues
        .stream
        .get_or_try_init(|| async {
            let config = stream::Config {
                name: QUEUE_STREAM.to_owned(),
                subjects: vec![format!("{QUEUE_PREFIX}.>")],
                retention: stream::RetentionPolicy::WorkQueue,
                storage: stream::StorageType::File,
                num_replicas: inner.settings.replicas.max(1),
                max_age: Duration::from_millis(inner.settings.max_offline_age_ms),
                duplicate_window: duplicate_window(inner),
                max_consumers: super::MAX_CONSUMERS_PER_STREAM,
                allow_atomic_publish: true,
                ..Default::default()
            };
            // Creating a stream waits for its raft group to form: a longer bound than a
            // store's.
            let mut js = inner.js.clone();
            js.set_timeout(Duration::from_secs(10));
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                match js.get_or_create_stream(config.clone()).await {
                    // A new stream answers stores only once its raft group has a leader.
                    Ok(mut stream) if Instant::now() < deadline => match stream.info().await {
                        Ok(info) if info.cluster.as_ref().is_none_or(|c| c.leader.is_some()) => {
                            if info.config.allow_atomic_publish {
                                super::raise_consumer_limit(&js, &stream).await;
                                return Ok(true);
                            }
                            super::raise_consumer_limit(&js, &stream).await;
                            // Read again: the consumer limit may have been set just now.
                            let config = match stream.info().await {
                                Ok(info) => info.config.clone(),
                                Err(_) => stream.cached_info().config.clone(),
                            };
                            return Ok(allow_atomic(&js, config).await);
                        }
                        _ => tokio::time::sleep(Duration::from_millis(200)).await,
                    },
                    Ok(stream) => {
                        let atomic = stream.cached_info().config.allow_atomic_publish;
                        return Ok(atomic);
                    }
                    Err(e) if Instant::now() < deadline => {
                        tracing::warn!("cluster queue stream: {e}; retrying");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Err(e) => return Err(unavailable(format!("cluster queue stream: {e}"))),
                }
            }
        })
        .await
        .copied()
}

/// Let [`QUEUE_STREAM`], made by a build that did not ask for it, take atomic batches:
/// whether it does now. A server before 2.12 does not know the setting (its answer leaves
/// it out): the stream then stores a transaction's messages one by one.
async fn allow_atomic(js: &jetstream::Context, mut config: stream::Config) -> bool {
    config.allow_atomic_publish = true;
    match js.update_stream(config).await {
        Ok(info) if info.config.allow_atomic_publish => true,
        Ok(_) => {
            tracing::warn!(
                "cluster queue stream: this NATS server does not take atomic batches \
                 (nats-server 2.12 or later does): a STOMP transaction's queue messages are \
                 stored one by one"
            );
            false
        }
        Err(e) => {
            tracing::warn!(
                "cluster queue stream: atomic batches not enabled ({e}): a STOMP \
                 transaction's queue messages are stored one by one"
            );
            false
        }
    }
}

/// Hand a store to the ordered store task (started on first use); the answer resolves when
/// the stream acknowledged it, within `storeTimeout`.
fn store(inner: &Arc<Inner>, subject: String, id: String, payload: Bytes) -> Commit {
    store_items(
        inner,
        vec![Item {
            subject,
            id,
            payload,
        }],
    )
}

/// [`store`] of several messages as one unit (`queue_batch.rs`).
fn store_items(inner: &Arc<Inner>, items: Vec<Item>) -> Commit {
    let kept = stored_at(inner, items);
    Commit::Pending(Box::pin(async move { kept.await.map(|_| ()) }))
}

/// [`store_items`], answering the stream sequence of the last message once kept.
fn stored_at(
    inner: &Arc<Inner>,
    items: Vec<Item>,
) -> impl std::future::Future<Output = Result<u64, DurabilityError>> {
    let stores = inner.queues.stores.get_or_init(|| {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run_stores(Arc::downgrade(inner), rx));
        tx
    });
    let (done, answer) = oneshot::channel();
    let sent = stores.send(Store { items, done }).is_ok();
    async move {
        if !sent {
            return Err(unavailable("the cluster engine stopped"));
        }
        answer
            .await
            .unwrap_or_else(|_| Err(unavailable("the cluster engine stopped")))
    }
}

/// Sends stores in the order they were handed over (a producer's messages keep their order
/// in the queue), each acknowledgement awaited on its own.
async fn run_stores(inner: Weak<Inner>, mut rx: mpsc::UnboundedReceiver<Store>) {
    // Until the stream has acknowledged one store from here: a stream just made has a leader
    // before this node's server knows the stream's subjects, and a store sent then has "no
    // responders" (nothing received it). So the first store is awaited here and sent again
    // while that lasts; the ones after it wait (a producer's order holds).
    let mut answered_once = false;
    while let Some(Store { mut items, done }) = rx.recv().await {
        let Some(inner) = inner.upgrade() else { return };
        let atomic = match ensure_stream(&inner).await {
            Ok(atomic) => atomic,
            Err(e) => {
                let _ = done.send(Err(e));
                continue;
            }
        };
        if !inner.is_available() {
            let _ = done.send(Err(unavailable(
                "the cluster store's quorum is unreachable from this node",
            )));
            continue;
        }
        if items.len() != 1 {
            super::queue_batch::send(&inner, items, done, atomic, &mut answered_once).await;
            continue;
        }
        let Some(next) = items.pop() else { continue };
        if !answered_once {
            let result = first_store(&inner, &next).await;
            answered_once = result.is_ok();
            let _ = done.send(result);
            continue;
        }
        let publish = PublishMessage::build()
            .payload(next.payload)
            .message_id(next.id.as_str());
        let timeout = inner.store_timeout;
        match inner.stores_js.send_publish(next.subject, publish).await {
            Ok(ack) => {
                tokio::spawn(async move {
                    let result = match late_wake::within(timeout, ack.into_future()).await {
                        Some(Ok(ack)) => Ok(ack.sequence),
                        Some(Err(e)) => Err(unavailable(format!("cluster store refused: {e}"))),
                        None => Err(unconfirmed("cluster store not acknowledged in time")),
                    };
                    let _ = done.send(result);
                });
            }
            Err(e) => {
                let _ = done.send(Err(unavailable(format!("cluster store: {e}"))));
            }
        }
    }
}

/// `store` sent and its acknowledgement awaited, sent again (same message id: the stream
/// keeps one copy) while the answer is "no responders", within `storeTimeout`.
async fn first_store(inner: &Inner, store: &Item) -> Result<u64, DurabilityError> {
    let deadline = Instant::now() + inner.store_timeout;
    loop {
        let publish = PublishMessage::build()
            .payload(store.payload.clone())
            .message_id(store.id.as_str());
        let answer = async {
            inner
                .stores_js
                .send_publish(store.subject.clone(), publish)
                .await?
                .into_future()
                .await
                .map_err(async_nats::Error::from)
        };
        let error = match late_wake::by(deadline.into(), answer).await {
            Some(Ok(ack)) => return Ok(ack.sequence),
            Some(Err(e)) => e,
            None => return Err(unconfirmed("cluster store not acknowledged in time")),
        };
        let no_responders = error
            .downcast_ref::<jetstream::context::PublishError>()
            .is_some_and(|e| e.kind() == jetstream::context::PublishErrorKind::StreamNotFound);
        if !no_responders || Instant::now() + FIRST_STORE_RETRY >= deadline {
            return Err(unavailable(format!("cluster store refused: {error}")));
        }
        tokio::time::sleep(FIRST_STORE_RETRY).await;
    }
}

/// How long a first store answered "no responders" waits before it is sent again.
pub(super) const FIRST_STORE_RETRY: Duration = Duration::from_millis(100);

impl SharedQueues for ClusterQueues {
    fn temporary_created(&self, queue: &str) {
        let Some(inner) = self.inner.upgrade() else {
            return;
        };
        let task = super::temp_queues::serve(&inner, queue);
        if let Some(old) = self.temporary.lock().insert(queue.to_owned(), task) {
            old.abort();
        }
    }

    fn temporary_deleted(&self, queue: &str) {
        if let Some(task) = self.temporary.lock().remove(queue) {
            task.abort();
        }
    }

    fn send_to_remote_temporary(&self, queue: &str, message: &Message) -> Commit {
        let Some(inner) = self.inner.upgrade() else {
            return Commit::Done(Err(unavailable("the cluster engine stopped")));
        };
        super::temp_queues::send(&inner, queue, message)
    }

    fn store(&self, queue: &str, message: &Message) -> Commit {
        let Some(inner) = self.inner.upgrade() else {
            return Commit::Done(Err(unavailable("the cluster engine stopped")));
        };
        let counter = inner.counter.fetch_add(1, Ordering::Relaxed);
        let payload = match encode_message(message, inner.instance, counter, None) {
            Ok(p) => p,
            Err(e) => return Commit::Done(Err(unavailable(e.to_string()))),
        };
        let id = format!("q.{:x}.{counter}", inner.instance);
        store(&inner, queue_subject(queue), id, payload)
    }

    fn store_all(
        &self,
        sends: &[(Arc<str>, Message)],
        topics: &[TopicSend],
        acked: &[QueueSeq],
    ) -> Commit {
        let Some(inner) = self.inner.upgrade() else {
            return Commit::Done(Err(unavailable("the cluster engine stopped")));
        };
        let mut items = Vec::with_capacity(sends.len() + topics.len() + 1);
        for (queue, message) in sends {
            let counter = inner.counter.fetch_add(1, Ordering::Relaxed);
            let payload = match encode_message(message, inner.instance, counter, None) {
                Ok(p) => p,
                Err(e) => return Commit::Done(Err(unavailable(e.to_string()))),
            };
            items.push(Item {
                subject: queue_subject(queue),
                id: format!("q.{:x}.{counter}", inner.instance),
                payload,
            });
        }
        // The topic SENDs as records of the batch (`topic_redo.rs`), after the queue sends.
        let records = match super::topic_redo::records(&inner, topics) {
            Ok(records) => records,
            Err(e) => return Commit::Done(Err(e)),
        };
        items.extend(records.records.iter().map(|r| r.item(&inner)));
        if items.is_empty() {
            return Commit::done();
        }
        // The acknowledgements go into the batch as its last message (`queue_redo.rs`).
        let record = (self.stores_as_one() > 0)
            .then(|| super::queue_redo::record(&inner, acked))
            .flatten();
        if record.is_none() && records.records.is_empty() {
            return store_items(&inner, items);
        }
        let after_topics = u64::from(record.is_some());
        items.extend(record);
        let batch_len = items.len() as u64;
        let stored = stored_at(&inner, items);
        let acked = acked.to_vec();
        Commit::Pending(Box::pin(async move {
            // Every message of an atomic batch is stored at once, in order: the last one's
            // sequence places the others.
            let last = stored.await?;
            let placed = last >= batch_len && inner.queues.stream.get() == Some(&true);
            let record_seq = if after_topics == 1 { last } else { 0 };
            let topic_records = records.records.len() as u64;
            let topic_seqs = if placed {
                let first = last + 1 - after_topics - topic_records;
                (first..first + topic_records).collect()
            } else {
                Vec::new()
            };
            let topics = super::topic_redo::publish(&inner, records, topic_seqs);
            if after_topics == 1 {
                let acks = super::queue_redo::acknowledge(&inner, &acked, record_seq);
                futures_util::future::join(acks, topics).await;
            } else {
                topics.await;
            }
            Ok(())
        }))
    }

    fn browse(
        &self,
        queue: &str,
        max: usize,
        filter: Option<Arc<dyn crate::broker::queues::MessageFilter>>,
    ) -> Option<crate::broker::queues::BrowseFuture> {
        let inner = self.inner.upgrade()?;
        Some(super::queue_browse::browse(&inner, queue, max, filter))
    }

    fn stores_as_one(&self) -> usize {
        match self.inner.upgrade() {
            // Not known before the stream's first use: atomic unless it turns out not to be.
            // One place of a batch is kept for the redo record of its acknowledgements.
            Some(inner) if inner.queues.stream.get() != Some(&false) => {
                super::queue_batch::ATOMIC_BATCH_MAX - 1
            }
            _ => 0,
        }
    }

    fn dead_letter(&self, from: &str, seq: QueueSeq, to: &str, message: &Message) -> Commit {
        let Some(inner) = self.inner.upgrade() else {
            return Commit::Done(Err(unavailable("the cluster engine stopped")));
        };
        let original = inner
            .queues
            .pending
            .lock()
            .get(&seq)
            .map(|p| (p.stream_seq, p.acker.clone()));
        let Some((stream_seq, acker)) = original else {
            return Commit::Done(Err(unavailable(format!(
                "dead letter of queue://{from}: its stored message is not held here"
            ))));
        };
        let payload = match encode_message(message, inner.instance, 0, None) {
            Ok(p) => p,
            Err(e) => return Commit::Done(Err(unavailable(e.to_string()))),
        };
        let stored = store(
            &inner,
            queue_subject(to),
            format!("dlq.{stream_seq}"),
            payload,
        );
        let timeout = inner.store_timeout;
        Commit::Pending(Box::pin(async move {
            stored.wait().await?;
            inner.queues.pending.lock().remove(&seq);
            // Not confirmed: the original comes back after the ack wait and its second dead
            // letter is dropped as a duplicate.
            let _ = tokio::time::timeout(timeout, acker.double_ack()).await;
            super::give_backs::forget(&inner, stream_seq);
            Ok(())
        }))
    }

    fn depths(&self) -> Option<crate::broker::queues::DepthsFuture> {
        let inner = self.inner.upgrade()?;
        Some(Box::pin(async move { depths(&inner).await }))
    }

    fn purge(&self, queue: &str) -> crate::broker::queues::PurgeFuture {
        let Some(inner) = self.inner.upgrade() else {
            return Box::pin(async { Err(unavailable("the cluster engine stopped")) });
        };
        let queue = queue.to_owned();
        Box::pin(async move { super::queue_purge::purge(&inner, &queue).await })
    }

    fn consumers(&self, queue: &str, consumers: usize) {
        let Some(inner) = self.inner.upgrade() else {
            return;
        };
        start_sweeper(&inner);
        let mut pullers = inner.queues.pullers.lock();
        if consumers > 0 {
            let running = pullers.get(queue).is_some_and(|t| !t.is_finished());
            if !running {
                let name: Arc<str> = Arc::from(queue);
                let task = tokio::spawn(pull(inner.clone(), name.clone()));
                pullers.insert(name, task);
            }
        } else {
            // The puller ends by itself after its pull request (what that brings goes back
            // too): aborted, the request's messages would wait for the ack wait.
            drop(pullers);
            give_back_all(&inner, queue);
        }
    }
}

/// The most queues [`depths`] reads from the stream (one page of the server's answer holds
/// some 100,000 subjects: a cluster with more queues than this lists the first ones).
const DEPTHS_AT_MOST: usize = 10_000;

/// The messages [`QUEUE_STREAM`] holds per queue (waiting, pulled, delivered and not
/// acknowledged: work-queue retention keeps each until its acknowledgement), by queue name,
/// from one subject-filtered stream info, within `storeTimeout`. Empty when no queue was ever
/// used in the cluster (no stream).
async fn depths(inner: &Arc<Inner>) -> Result<HashMap<String, u64>, DurabilityError> {
    let read = async {
        let stream = match inner.js.get_stream(QUEUE_STREAM).await {
            Ok(stream) => stream,
            Err(e) if super::queue_purge::stream_missing(&e) => return Ok(HashMap::new()),
            Err(e) => return Err(unavailable(format!("cluster queue stream: {e}"))),
        };
        let mut subjects = stream
            .info_with_subjects(format!("{QUEUE_PREFIX}.>"))
            .await
            .map_err(|e| unavailable(format!("cluster queue stream: {e}")))?;
        let mut depths = HashMap::new();
        let prefix = format!("{QUEUE_PREFIX}.");
        while let Some(next) = subjects.next().await {
            let (subject, count) =
                next.map_err(|e| unavailable(format!("cluster queue stream: {e}")))?;
            // Subjects of this prefix are written by nodes only; one that is not a queue's
            // is skipped.
            if let Some(name) = subject
                .strip_prefix(prefix.as_str())
                .and_then(super::subject::decode_topic)
            {
                depths.insert(name, u64::try_from(count).unwrap_or(u64::MAX));
            }
            if depths.len() >= DEPTHS_AT_MOST {
                break;
            }
        }
        Ok(depths)
    };
    tokio::time::timeout(inner.store_timeout, read)
        .await
        .unwrap_or_else(|_| Err(unavailable("cluster queue stream not answered in time")))
}

/// The local queue `queue` has no consumer any more: everything it waits with goes back.
fn give_back_all(inner: &Arc<Inner>, queue: &str) {
    let Some(core) = inner.core() else { return };
    let waiting: Vec<QueueSeq> = core
        .queues
        .shared_waiting(queue)
        .into_iter()
        .map(|(seq, _)| seq)
        .collect();
    let gone = core.queues.withdraw_shared(queue, &waiting);
    let mut pending = inner.queues.pending.lock();
    for (seq, redeliveries) in gone {
        if let Some(p) = pending.remove(&seq) {
            give_back(inner, p, redeliveries, NAK_DELAY);
        }
    }
}

/// Entry `p`, withdrawn from its local queue with `redeliveries` (real deliveries so far),
/// goes back to the stream after `delay`, its count told to every node first.
fn give_back(inner: &Arc<Inner>, p: Pending, redeliveries: u32, delay: Duration) {
    super::give_backs::give_back(
        inner,
        &p.queue,
        p.stream_seq,
        p.delivered,
        redeliveries,
        p.acker,
        delay,
    );
}

/// The committed changes: a removed entry of a shared queue acknowledges its JetStream
/// message; the commit is done when the server confirmed it.
pub fn observe(inner: &Arc<Inner>, changes: &[Change]) -> Commit {
    let mut ackers = Vec::new();
    {
        let mut pending = None;
        for change in changes {
            if let Change::Removed {
                owner: QueueOwner::Queue(_),
                seq,
            } = change
            {
                let pending = pending.get_or_insert_with(|| inner.queues.pending.lock());
                match pending.remove(seq) {
                    // The stream's purge removed it (or will): nothing to wait for.
                    Some(p) if p.purged => send_ack(p.acker, AckKind::Ack),
                    Some(p) => ackers.push((p.stream_seq, p.acker)),
                    None => {}
                }
            }
        }
    }
    if ackers.is_empty() {
        return Commit::done();
    }
    let timeout = inner.store_timeout;
    let node = inner.clone();
    let task = tokio::spawn(async move {
        for (stream_seq, acker) in ackers {
            let acknowledged = tokio::time::timeout(timeout, acker.double_ack()).await;
            if matches!(acknowledged, Ok(Ok(()))) {
                super::give_backs::forget(&node, stream_seq);
            }
            match acknowledged {
                Ok(Ok(())) => {}
                // Sent, its answer not seen: the stream may have taken it.
                Ok(Err(e)) if timed_out(&*e) => {
                    return Err(DurabilityError::Unconfirmed(format!(
                        "cluster queue acknowledgement: {e}"
                    )))
                }
                Ok(Err(e)) => {
                    return Err(unavailable(format!(
                        "cluster queue acknowledgement refused: {e}"
                    )))
                }
                Err(_) => {
                    return Err(unconfirmed(
                        "cluster queue acknowledgement not confirmed in time",
                    ))
                }
            }
        }
        Ok(())
    });
    Commit::Pending(Box::pin(async move {
        task.await
            .unwrap_or_else(|e| Err(unavailable(format!("acknowledgement task failed: {e}"))))
    }))
}

/// The queue's durable consumer (made when missing), from the queue's first waiting message.
async fn queue_consumer(
    inner: &Inner,
    name: &str,
) -> Result<jetstream::consumer::Consumer<pull::Config>, async_nats::Error> {
    ensure_stream(inner).await?;
    let stream = inner.js.get_stream(QUEUE_STREAM).await?;
    let durable = consumer_name(name);
    let consumer = stream
        .get_or_create_consumer(
            &durable,
            pull::Config {
                durable_name: Some(durable.clone()),
                filter_subject: queue_subject(name),
                deliver_policy: DeliverPolicy::All,
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

/// Pull queue `name`'s messages while the local consumers have room.
async fn pull(inner: Arc<Inner>, name: Arc<str>) {
    let mut consumer = loop {
        match queue_consumer(&inner, &name).await {
            Ok(c) => break c,
            Err(e) => {
                tracing::warn!(queue = %name, "cluster queue consumer: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    // At the memory limit since the last look (logged once per pause).
    let mut paused = false;
    loop {
        let Some(core) = inner.core() else {
            tokio::time::sleep(IDLE).await;
            continue;
        };
        if core.queues.consumer_count(&name) == 0 {
            // Checked again under the pullers' lock: a consumer arriving now either finds
            // this task gone (and starts another) or is seen here.
            let mut pullers = inner.queues.pullers.lock();
            if core.queues.consumer_count(&name) == 0 {
                pullers.remove(&name);
                drop(pullers);
                give_back_all(&inner, &name);
                return;
            }
        }
        let room = core.queues.shared_room(&name);
        // At the node's `memoryUsage` limit the messages wait in their stream, as the shard
        // readers' do.
        let full = core.memory.is_full();
        if full && !paused {
            super::readers::memory_paused(&core, "cluster queue pull", &format!("queue {name}"));
        }
        paused = full;
        // While the queue is purged, what waits in the stream is left to the purge.
        let purging = super::queue_purge::purging(&inner, &name);
        if room == 0 || full || purging || !inner.is_available() {
            drop(core);
            tokio::time::sleep(IDLE).await;
            continue;
        }
        drop(core);
        let batch = consumer
            .fetch()
            .max_messages(room.min(BATCH))
            .expires(PULL_EXPIRES)
            .messages()
            .await;
        let mut batch = match batch {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(queue = %name, "cluster queue pull: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                if let Ok(again) = queue_consumer(&inner, &name).await {
                    consumer = again;
                }
                continue;
            }
        };
        while let Some(next) = batch.next().await {
            match next {
                Ok(message) => take(&inner, &name, message),
                Err(e) => {
                    // A consumer whose raft group has no leader yet (just made, or after a
                    // server died) answers every pull at once (503): pause, not a busy loop.
                    tracing::debug!(queue = %name, "cluster queue pull: {e}");
                    tokio::time::sleep(super::PULL_ERROR_PAUSE).await;
                    break;
                }
            }
        }
    }
}

/// A pulled message becomes an entry of the local queue.
fn take(inner: &Arc<Inner>, name: &Arc<str>, message: jetstream::Message) {
    let (stream_seq, delivered) = match message.info() {
        Ok(info) => (
            info.stream_sequence,
            u64::try_from(info.delivered).unwrap_or(1).max(1),
        ),
        Err(e) => {
            tracing::warn!(queue = %name, "cluster queue: message without metadata: {e}");
            return;
        }
    };
    // Taken before `split`, which moves it into the acker.
    let reply = message.reply.clone();
    let (message, acker) = message.split();
    let acker = Arc::new(acker);
    if inner.queues.committed_acks.lock().holds(stream_seq) {
        // A committed transaction acknowledged it, and the stream has not confirmed that yet
        // (a leader election): delivered again by JetStream, it is not delivered here.
        send_ack(acker, AckKind::Ack);
        return;
    }
    let redeliveries = inner
        .queues
        .give_backs
        .lock()
        .redeliveries(stream_seq, delivered);
    // Held shared until the entry is in the local queue: a purge running now either comes
    // first (the message is left to the stream's purge) or finds the entry and drops it.
    let floors = inner.queues.floors.read();
    if let Some(hold) = floors
        .get(name)
        .and_then(|f| f.purges(stream_seq, Instant::now()))
    {
        drop(floors);
        // Back after the hold should the stream's purge fail; gone if it succeeds.
        super::give_backs::give_back(
            inner,
            name,
            stream_seq,
            delivered,
            redeliveries,
            acker,
            hold.max(NAK_DELAY),
        );
        return;
    }
    let frame = match decode_message(message.payload) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(queue = %name, "cluster queue: stored message skipped: {e}");
            send_ack(acker, AckKind::Term);
            return;
        }
    };
    let Some(core) = inner.core() else {
        super::give_backs::give_back(
            inner,
            name,
            stream_seq,
            delivered,
            redeliveries,
            acker,
            NAK_DELAY,
        );
        return;
    };
    let seq = core.durability().next_seq();
    inner.queues.pending.lock().insert(
        seq,
        Pending {
            queue: name.clone(),
            stream_seq,
            delivered,
            acker,
            reply,
            purged: false,
        },
    );
    let message = core.memory.charge(frame.message);
    core.queues.insert_shared(name, seq, message, redeliveries);
    drop(floors);
}

/// Every [`GIVE_BACK_AFTER`]: give back the entries that waited in a local queue since the
/// previous sweep; every `ack_wait / 4`: extend the ack wait of the entries held here, and
/// give back those no local queue holds any more.
fn start_sweeper(inner: &Arc<Inner>) {
    if inner.queues.sweeper.set(()).is_err() {
        return;
    }
    let weak = Arc::downgrade(inner);
    tokio::spawn(async move {
        let mut seen: HashMap<Arc<str>, HashSet<QueueSeq>> = HashMap::new();
        // Entries pulled but not found in their local queue at the last look (one being
        // inserted right then is found at the next).
        let mut suspects: HashSet<QueueSeq> = HashSet::new();
        let mut last_progress = Instant::now();
        loop {
            tokio::time::sleep(GIVE_BACK_AFTER).await;
            let Some(inner) = weak.upgrade() else { return };
            let Some(core) = inner.core() else { continue };
            let queues: Vec<Arc<str>> = inner.queues.pullers.lock().keys().cloned().collect();
            seen.retain(|q, _| queues.contains(q));
            let now = Instant::now();
            for queue in queues {
                let waiting = core.queues.shared_waiting(&queue);
                let before = seen.remove(&queue).unwrap_or_default();
                let stale: Vec<QueueSeq> = waiting
                    .iter()
                    .filter(|(seq, _)| before.contains(seq))
                    .map(|(seq, _)| *seq)
                    .collect();
                let delays: HashMap<QueueSeq, Option<Instant>> = waiting.iter().copied().collect();
                let gone = core.queues.withdraw_shared(&queue, &stale);
                {
                    let mut pending = inner.queues.pending.lock();
                    for (seq, redeliveries) in &gone {
                        if let Some(p) = pending.remove(seq) {
                            let delay = delays
                                .get(seq)
                                .copied()
                                .flatten()
                                .map(|at| at.saturating_duration_since(now))
                                .unwrap_or_default()
                                .max(NAK_DELAY);
                            give_back(&inner, p, *redeliveries, delay);
                        }
                    }
                }
                let gone: HashSet<QueueSeq> = gone.into_iter().map(|(seq, _)| seq).collect();
                seen.insert(
                    queue,
                    waiting
                        .into_iter()
                        .map(|(seq, _)| seq)
                        .filter(|seq| !gone.contains(seq))
                        .collect(),
                );
            }
            if now.duration_since(last_progress) < ack_wait(&inner) / 4 {
                continue;
            }
            last_progress = now;
            let held: Vec<(QueueSeq, Arc<str>, Arc<Acker>)> = inner
                .queues
                .pending
                .lock()
                .iter()
                .map(|(seq, p)| (*seq, p.queue.clone(), p.acker.clone()))
                .collect();
            let mut by_queue: HashMap<Arc<str>, HashSet<QueueSeq>> = HashMap::new();
            let mut lost = Vec::new();
            let mut again = HashSet::new();
            for (seq, queue, acker) in held {
                let local = by_queue
                    .entry(queue.clone())
                    .or_insert_with(|| core.queues.shared_held(&queue));
                if local.contains(&seq) {
                    send_ack(acker, AckKind::Progress);
                } else if suspects.contains(&seq) {
                    lost.push(seq);
                } else {
                    send_ack(acker, AckKind::Progress);
                    again.insert(seq);
                }
            }
            suspects = again;
            let mut pending = inner.queues.pending.lock();
            for seq in lost {
                // Gone from the local queue without a removal (the queue was deleted): back.
                if let Some(p) = pending.remove(&seq) {
                    send_ack(p.acker, AckKind::Nak(Some(NAK_DELAY)));
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_subjects() {
        let name = consumer_name("orders.eu");
        assert_eq!(name.len(), 33);
        assert!(super::super::subject::is_valid_token(&name));
        assert_ne!(name, consumer_name("orders.us"));
        // One token per queue name: a queue's consumer never reads another queue.
        assert_eq!(queue_subject("orders.eu"), "fmq.q.orders%2Eeu");
        assert!(super::super::subject::is_valid_subject(&queue_subject(
            "a b/c.d"
        )));
    }
}
