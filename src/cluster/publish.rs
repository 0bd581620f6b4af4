//! One task sends everything this node publishes into NATS: live (QoS 0) messages on core
//! subjects in the order the broker handed them over, QoS 1 messages into their shard's
//! stream, retained messages into `FMQ_RETAIN`. Stores are pipelined: the task sends the next
//! message without waiting for the previous store's acknowledgement, which is reported to the
//! publisher's commit (its PUBACK), bounded by `storeTimeout`. Stores go through one queue
//! per shard stream (and one for the retained bucket), so a stream whose leader is being
//! elected holds only its own publishers; within a queue, stores not acknowledged are sent
//! again in order, and nothing newer is sent meanwhile (see [`run`]).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::message::PublishMessage as Publish;
use bytes::Bytes;
use std::future::IntoFuture;
use tokio::sync::{mpsc, oneshot};

use super::codec::encode_message;
use super::engine::Inner;
use super::late_wake;
use super::subject::topic_subject;
use super::{shard_of, shard_prefix, LIVE_PREFIX};
use crate::broker::durability::{Commit, DurabilityError, RetainedChange};
use crate::broker::message::Message;
use crate::protocol::QoS;

type Done = oneshot::Sender<Result<(), DurabilityError>>;

/// QoS 0 messages waiting to be written to NATS at most: beyond it (NATS slower than the
/// publishers) a QoS 0 message is dropped and counted as a slow consumer's would be, so memory
/// stays bounded. QoS 1 publishes are bounded by their publishers' in-flight windows.
pub const LIVE_BACKLOG: usize = 16_384;

/// A QoS 0 message for core NATS (no acknowledgement).
pub struct Live {
    pub subject: String,
    pub payload: Bytes,
}

/// One thing to store.
pub enum Outgoing {
    /// A JetStream publish; `done` hears whether it was stored (`None`: nobody waits).
    Store {
        subject: String,
        payload: Bytes,
        delete: bool,
        done: Option<Done>,
        /// A compare-and-set (`Nats-Expected-Last-Subject-Sequence`) with the message id the
        /// store is known by on every node (QoS 2 releases, see `qos2.rs`): a "wrong last
        /// sequence" answer is final (not sent again) and reported as
        /// [`DurabilityError::Stale`] for the caller to read the subject.
        expect: Option<(u64, String)>,
        /// The message id when the caller keeps it across its retries of this store (a
        /// publish's [`message_id`]); `None`: the task picks one.
        id: Option<String>,
        /// The last instant it may be sent (first or again), when another node may store the
        /// same message id (a transaction's topic record, which a sweep stores if this node
        /// seems dead): past it a copy could land outside the stream's duplicate window of
        /// the other's. Past it the store fails unsent. `None`: [`Queue::resend_until`] only.
        send_by: Option<Instant>,
    },
}

/// How long after a store's first send it may be sent again (see [`Queue::resend_until`]);
/// also how long after a message id another node may store is first sent by this one.
pub(super) fn resend_until(inner: &Inner) -> Duration {
    super::engine::duplicate_window(&inner.settings)
        .saturating_sub(attempt_timeout(inner.store_timeout) * 2)
}

/// The message id (`Nats-Msg-Id`) of the store of the message this node numbered `counter`:
/// the same for every retry of its commit (see [`Durability::store_id`]).
///
/// [`Durability::store_id`]: crate::broker::durability::Durability::store_id
pub fn message_id(instance: u64, counter: u64) -> String {
    format!("{instance:x}-m{counter:x}")
}

/// Hand a publish to the task; the answer resolves when what gates its acknowledgement is
/// stored (at once for QoS 0). `store_id`: the number its connection keeps across retries of
/// this commit (`None`: a fresh one).
pub fn publish(
    inner: &Arc<Inner>,
    message: Message,
    retained: RetainedChange,
    publisher: Option<&str>,
    store_id: Option<u64>,
) -> Commit {
    if !super::subject::topic_fits(&message.topic) {
        // NATS drops a connection that sends a longer subject (MQTT PUBLISH refuses such
        // topics; this guards wills and STOMP).
        return Commit::Done(Err(DurabilityError::Unavailable(format!(
            "topic of {} bytes is too long for the cluster's NATS subjects",
            message.topic.len()
        ))));
    }
    let stored = message.qos != QoS::AtMostOnce;
    // A publish read after this process stalled, of a session perhaps taken meanwhile: its
    // client sends it again where the session resumed (`stalls.rs`). Tried again by its
    // connection until the session is checked.
    if stored
        && publisher.is_some_and(|p| {
            inner.stalls.uncertain(p) && inner.tracker.lock().sessions.contains_key(p)
        })
    {
        return Commit::Done(Err(DurabilityError::Unavailable(
            "this node's process did not run for a while: the publisher's session is being \
             checked against its record"
                .into(),
        )));
    }
    let counter = store_id.unwrap_or_else(|| {
        inner
            .counter
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    });
    let payload = match encode_message(&message, inner.instance, counter, publisher) {
        Ok(p) => p,
        Err(e) => return Commit::Done(Err(DurabilityError::Unavailable(e.to_string()))),
    };
    // Which commit a publisher's acknowledgement came from, for a run traced message by message
    // (see `store_ack.rs`): every attempt of the commit, and how it ended.
    let traced = (stored
        && tracing::enabled!(target: super::store_ack::TARGET, tracing::Level::DEBUG))
    .then(|| {
        // Empty when the publish task picks the id (a store nobody retries).
        let id = store_id.map_or_else(String::new, |_| message_id(inner.instance, counter));
        let digest = format!(
            "{:016x}",
            super::store_ack::payload_digest(&message.payload)
        );
        tracing::debug!(
            target: super::store_ack::TARGET,
            id = %id,
            digest = %digest,
            publisher = publisher.unwrap_or(""),
            topic = %message.topic,
            "commit"
        );
        (id, digest)
    });
    let mut waits = Vec::new();
    let send = |item: Outgoing| {
        if inner.outgoing.send(item).is_err() {
            return Err(DurabilityError::Unavailable(
                "cluster publisher stopped".into(),
            ));
        }
        Ok(())
    };
    if stored {
        let (tx, rx) = oneshot::channel();
        let subject = topic_subject(
            &shard_prefix(shard_of(&message.topic, inner.shards)),
            &message.topic,
        );
        if let Err(e) = send(Outgoing::Store {
            subject,
            payload: payload.clone(),
            delete: false,
            done: Some(tx),
            expect: None,
            // A publish its connection may retry is stored under an id of its own.
            id: store_id.map(|_| message_id(inner.instance, counter)),
            send_by: None,
        }) {
            return Commit::Done(Err(e));
        }
        waits.push(rx);
    } else {
        let live = Live {
            subject: topic_subject(LIVE_PREFIX, &message.topic),
            payload: payload.clone(),
        };
        if inner.live_out.try_send(live).is_err() {
            if let Some(core) = inner.core() {
                let total = core.counters.dropped_queue_full();
                if crate::broker::durability::should_log(total) {
                    tracing::warn!(
                        dropped_total = total,
                        "QoS 0 message dropped: NATS is slower than the publishers"
                    );
                }
            }
        }
    }
    if retained != RetainedChange::Unchanged {
        let clear = retained == RetainedChange::Clear;
        match super::retained::send_change(inner, &message.topic, payload, clear) {
            Ok(rx) if stored => waits.push(rx),
            Ok(_) => {}
            Err(e) => return Commit::Done(Err(e)),
        }
    }
    if waits.is_empty() {
        return Commit::done();
    }
    Commit::Pending(Box::pin(async move {
        let mut result = Ok(());
        for rx in waits {
            result = match rx.await {
                Ok(result) => result,
                Err(_) => Err(DurabilityError::Unavailable(
                    "cluster publisher stopped".into(),
                )),
            };
            if result.is_err() {
                break;
            }
        }
        if let Some((id, digest)) = &traced {
            match &result {
                Ok(()) => tracing::debug!(
                    target: super::store_ack::TARGET,
                    id = %id,
                    digest = %digest,
                    "commit acknowledged"
                ),
                Err(e) => tracing::debug!(
                    target: super::store_ack::TARGET,
                    id = %id,
                    digest = %digest,
                    "commit failed: {e}"
                ),
            }
        }
        result
    }))
}

/// The task writing QoS 0 messages, in order.
pub async fn run_live(inner: Arc<Inner>, mut rx: mpsc::Receiver<Live>) {
    let mut failures = 0u64;
    while let Some(Live { subject, payload }) = rx.recv().await {
        if let Err(e) = inner.client.publish(subject, payload).await {
            failures += 1;
            if crate::broker::durability::should_log(failures) {
                tracing::warn!(failures_total = failures, "cluster live publish: {e}");
            }
        }
    }
}

/// Stores handed to the task and not yet acknowledged, over all its queues, at most: beyond
/// it the task stops taking new ones (they wait in the channel, bounded by the publishers'
/// in-flight windows), so memory stays bounded.
const MAX_IN_FLIGHT: usize = 4_096;

/// A store the task took, oldest first in its queue.
struct InFlight {
    subject: String,
    payload: Bytes,
    delete: bool,
    /// The stream drops a second copy with this id (`Nats-Msg-Id`), so a store is sent again
    /// without a duplicate.
    id: String,
    done: Option<Done>,
    /// The subject's last sequence this store expects (compare-and-set), if any.
    expect: Option<u64>,
    /// Whether its caller retries it under the same id after a failure, so that it is kept
    /// as an orphan (see [`Queue::expire`]).
    kept_id: bool,
    /// Its waiter was told it failed; it stays first in its queue until its publisher's
    /// retry takes it over, it is acknowledged, or `expires` passes.
    orphan: bool,
    /// When its waiter is told it failed (`storeTimeout` after it was taken or taken over),
    /// or, for an orphan, when it is dropped.
    expires: Instant,
    sent: Instant,
    /// When it was first sent: the stream drops a copy under its id only within its
    /// duplicate window from then, so it is never sent again past [`Queue::resend_until`].
    first_sent: Option<Instant>,
    /// See [`Outgoing::Store`]'s `send_by`.
    send_by: Option<Instant>,
    ack: AckFuture,
}

/// `Ok(Some(sequence))`: stored at `sequence` of its stream; `Ok(None)`: a compare-and-set
/// found the subject elsewhere.
type AckFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Option<u64>, String>> + Send>>;

impl InFlight {
    fn publish(&self) -> Publish {
        let mut publish = Publish::build()
            .payload(self.payload.clone())
            .message_id(self.id.as_str());
        if self.delete {
            publish = publish.header("KV-Operation", "DEL");
        }
        if let Some(last) = self.expect {
            publish = publish.expected_last_subject_sequence(last);
        }
        publish
    }

    /// Whether it was first sent `resend_until` or longer ago, or its `send_by` passed: a
    /// copy sent now could be stored as a second message (a node paused past the window,
    /// say).
    fn past_window(&self, now: Instant, resend_until: Duration) -> bool {
        self.first_sent
            .is_some_and(|first| now.saturating_duration_since(first) >= resend_until)
            || self.send_by.is_some_and(|by| now >= by)
    }

    /// Send (again); a failure to send shows as the answer. Not sent again once
    /// [`InFlight::past_window`]: the answer is then that failure.
    async fn send(&mut self, inner: &Inner, resend_until: Duration) {
        let now = Instant::now();
        self.sent = now;
        if self.past_window(now, resend_until) {
            self.ack = Box::pin(async {
                Err(
                    "not sent again: its first send is past the stream's duplicate window, \
                     where a copy could be stored twice"
                        .to_owned(),
                )
            });
            return;
        }
        self.first_sent.get_or_insert(now);
        // Acknowledgements without a timeout of their own: the task's deadlines, which tell
        // a late wake (`late_wake.rs`), bound them.
        self.ack = match inner
            .stores_js
            .send_publish(self.subject.clone(), self.publish())
            .await
        {
            Ok(ack) => {
                let compare_and_set = self.expect.is_some();
                // A duplicate answer is checked against the stream (see `store_ack.rs`).
                let (js, id) = (inner.js.clone(), self.id.clone());
                // A compare-and-set is a QoS 2 release: kept in the ledger with the held
                // copy's sequence, so that a release taken back is released again.
                let again = (!self.delete).then(|| super::store_ack::Again {
                    subject: self.subject.clone(),
                    payload: self.payload.clone(),
                    expect: self.expect,
                    ledger: inner.ledger.clone(),
                });
                Box::pin(async move {
                    match ack.into_future().await {
                        Ok(ack) => {
                            let sequence = ack.sequence;
                            super::store_ack::confirm(&js, ack, &id, again)
                                .await
                                .map(|()| Some(sequence))
                        }
                        Err(e) if compare_and_set && super::lost_race::publish(&e) => Ok(None),
                        Err(e) => Err(format!("cluster store refused: {e}")),
                    }
                })
            }
            Err(e) => {
                let e = format!("cluster store: {e}");
                Box::pin(async move { Err(e) })
            }
        };
    }

    fn finish(self, result: Result<(), DurabilityError>) {
        if let Some(done) = self.done {
            let _ = done.send(result);
        }
    }
}

/// How long one send waits for its acknowledgement before the queue's front is sent again:
/// a quarter of `storeTimeout`, at least 500 ms.
fn attempt_timeout(store_timeout: Duration) -> Duration {
    (store_timeout / 4)
        .max(Duration::from_millis(500))
        .min(store_timeout)
}

/// How long a failed publish is kept first in its queue for its connection's retry (which
/// comes after the connection's retry pause, 25 ms) to take it over; past it, the connection
/// gave up (its refusal deadline, or it closed) and the store is dropped.
const ORPHAN_GRACE: Duration = Duration::from_secs(2);

/// The pause before the front of a queue is sent again after a failed attempt.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// Which queue a subject's stores go through: one per message shard (its stream's raft
/// leader), one for the retained bucket, one for anything else.
fn queue_of(subject: &str, shards: usize) -> usize {
    if subject.starts_with("fmq.m.") {
        if let Some(k) = super::shard_of_subject(subject).filter(|k| *k < shards) {
            return k;
        }
    } else if super::retained::key_of_subject(subject).is_some() {
        return shards;
    }
    shards + 1
}

/// Where a queue stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Every store is sent when taken; each is in flight.
    Open,
    /// The front was not acknowledged: only the front is sent (again, at `retry` when set)
    /// until it is acknowledged; the rest of the queue waits.
    Probe { retry: Option<Instant> },
    /// The front came through after a probe: the first `resent` stores were sent again, in
    /// order; nothing newer is sent until they are all acknowledged.
    Drain { resent: usize },
}

/// The stores of one stream (or bucket), oldest first.
struct Queue {
    entries: VecDeque<InFlight>,
    mode: Mode,
    /// Orphans are kept past their grace: set while the connection to NATS is down, when the
    /// task takes nothing from its channel, where the retries that would take them over wait.
    hold_orphans: bool,
    /// How long after its first send a store may be sent again: the streams' duplicate
    /// window less two attempts (a re-send may land an attempt later). A store older than
    /// that is failed and dropped, whatever waits for it, orphans too: its first send may
    /// have been stored, and a copy now would be a second message (a node frozen past the
    /// window found its stores' answers late and sent them again).
    resend_until: Duration,
}

impl Queue {
    /// Whether the front has a send whose answer is awaited.
    fn front_live(&self) -> bool {
        !self.entries.is_empty() && !matches!(self.mode, Mode::Probe { retry: Some(_) })
    }

    /// The next instant the task has to look at this queue without an answer: the front's
    /// attempt timing out, a probe's re-send, the front's `expires`.
    fn deadline(&self, attempt: Duration) -> Option<Instant> {
        let front = self.entries.front()?;
        let expiry = front.expires;
        let next = match self.mode {
            Mode::Probe { retry: Some(at) } => at,
            _ => front.sent + attempt,
        };
        Some(next.min(expiry))
    }

    /// Fail the stores taken `storeTimeout` ago or more (oldest first, so the front), and
    /// drop those first sent [`Queue::resend_until`] ago or more (see there).
    ///
    /// A publish whose connection commits it again under the same id (`kept_id`) is not
    /// dropped at once: its waiter is told, and it stays first, an orphan, for
    /// [`ORPHAN_GRACE`] more. The retry takes it over ([`Queue::take_over`]) where it stands,
    /// so it is neither stored twice (it may have landed with its acknowledgement lost) nor
    /// overtaken by what its publisher sent after it, which waits behind it in this queue.
    fn expire(&mut self, store_timeout: Duration, why: &str) {
        let now = Instant::now();
        // A store sent at least once may land later: its waiter is told so.
        let failure = |sent: bool| {
            let text = format!("{why} (gave up after {} ms)", store_timeout.as_millis());
            Err(if sent {
                DurabilityError::Unconfirmed(text)
            } else {
                DurabilityError::Unavailable(text)
            })
        };
        while let Some(front) = self.entries.front_mut() {
            let stale = front.past_window(now, self.resend_until);
            if front.expires > now && !stale {
                break;
            }
            if stale {
                // Neither sent again nor kept for a retry (which would store it anew).
            } else if front.orphan && self.hold_orphans {
                front.expires = now + ORPHAN_GRACE.min(store_timeout);
                break;
            } else if front.kept_id && !front.orphan {
                front.orphan = true;
                front.expires = now + ORPHAN_GRACE.min(store_timeout);
                if let Some(done) = front.done.take() {
                    let _ = done.send(failure(front.first_sent.is_some()));
                }
                break;
            }
            if let Some(front) = self.entries.pop_front() {
                let sent = front.first_sent.is_some();
                front.finish(failure(sent));
            }
            if let Mode::Drain { resent } = &mut self.mode {
                *resent = resent.saturating_sub(1);
            }
        }
        if self.entries.is_empty() {
            self.mode = Mode::Open;
        } else if self.mode == (Mode::Drain { resent: 0 }) {
            // What was re-sent is gone; the rest was never sent: probe with it.
            self.mode = Mode::Probe {
                retry: Some(Instant::now()),
            };
        }
    }

    /// Forget the stores whose connection stopped waiting for them before they were
    /// acknowledged (it closed): its client sends them again, wherever it reconnects, or,
    /// gone, was promised nothing. Sending them after a stream came back (a healed partition)
    /// would only store stale copies behind what the client sent again elsewhere. Only
    /// publishes whose connection keeps their id are forgotten (a retained change of a QoS 0
    /// message has no waiter by design). Called only where what follows sends the queue
    /// again, so no count of re-sent stores is upset.
    fn forget_abandoned(&mut self) {
        self.entries.retain(|e| {
            !(e.kept_id && !e.orphan && e.done.as_ref().is_some_and(|d| d.is_closed()))
        });
        if self.entries.is_empty() {
            self.mode = Mode::Open;
        }
    }

    /// A retry of the orphan `id` (the commit of the same publish, again): it takes the
    /// orphan's place, with a new `storeTimeout`. Gives `done` back when there is none.
    fn take_over(
        &mut self,
        id: &str,
        done: Option<Done>,
        store_timeout: Duration,
    ) -> Option<Option<Done>> {
        let Some(orphan) = self.entries.iter_mut().find(|e| e.orphan && e.id == id) else {
            return Some(done);
        };
        orphan.orphan = false;
        orphan.done = done;
        orphan.expires = Instant::now() + store_timeout;
        None
    }

    /// The task woke for this queue while its front's send is awaited (`sent`: when it was
    /// last sent; `expired`: it is past `expires`). An attempt without an answer is a failure:
    /// probe with the front. A front past `storeTimeout` whose latest send is still within its
    /// attempt, as in a drain after a stream came back (its stores were taken long before),
    /// only has its waiter told ([`Queue::expire`]): its send and those behind it stay in
    /// flight. Failing it instead would start the drain over for every store taken before the
    /// outage, a probe pause and a re-send of the whole queue each.
    fn woke(
        &mut self,
        now: Instant,
        sent: Instant,
        expired: bool,
        attempt: Duration,
        store_timeout: Duration,
    ) {
        let unanswered = now.saturating_duration_since(sent) >= attempt;
        // Open or draining: the sends behind the front are in flight (a probe sends only it).
        let sends_in_flight = matches!(self.mode, Mode::Open | Mode::Drain { .. });
        if expired && !unanswered && sends_in_flight {
            self.expire(store_timeout, "the stream did not acknowledge in time");
        } else if expired || unanswered {
            let why = format!(
                "the stream did not acknowledge (each attempt waits {} ms)",
                attempt.as_millis()
            );
            self.failed(store_timeout, &why);
        }
    }

    /// The front was not acknowledged (`why`): fail what is past `storeTimeout`, then send
    /// only the front again, after a pause.
    fn failed(&mut self, store_timeout: Duration, why: &str) {
        self.mode = Mode::Probe { retry: None };
        self.expire(store_timeout, why);
        if !self.entries.is_empty() {
            self.mode = Mode::Probe {
                retry: Some(Instant::now() + RETRY_PAUSE),
            };
        }
    }
}

/// The acknowledgement of the front of one of the queues that has one in flight: the queue's
/// index and the answer. Pending while there is none.
fn front_answers(
    queues: &mut [Queue],
) -> impl std::future::Future<Output = (usize, Result<Option<u64>, String>)> + '_ {
    std::future::poll_fn(move |cx| {
        for (k, queue) in queues.iter_mut().enumerate() {
            if !queue.front_live() {
                continue;
            }
            if let Some(front) = queue.entries.front_mut() {
                if let std::task::Poll::Ready(answer) = front.ack.as_mut().poll(cx) {
                    return std::task::Poll::Ready((k, answer));
                }
            }
        }
        std::task::Poll::Pending
    })
}

/// The task sending stores, pipelined, through one queue per shard stream (and one for the
/// retained bucket): a stream whose leader is being elected holds only its own stores, and
/// their publishers' acknowledgements, never those of another stream.
///
/// Within a queue, order is kept across failures: a store whose acknowledgement does not come
/// within an attempt (its NATS server died with it, a leader is being elected) is sent again
/// with the same message id, alone, until it is acknowledged; then the stores sent after it
/// are sent again in their order, and nothing newer goes to that stream until they are
/// acknowledged too. So a later message never lands in a stream ahead of an earlier one
/// (the first send of a newer store could otherwise reach a newly elected leader before the
/// earlier one's re-send), and the stream drops a repeated one by its id. While the
/// connection is down nothing new is sent (the client would write it first after
/// reconnecting); after a reconnection every queue with stores in flight starts over the
/// same way. A store not acknowledged within `storeTimeout` of being taken fails (its
/// publisher gets no acknowledgement).
pub async fn run(inner: Arc<Inner>, mut rx: mpsc::UnboundedReceiver<Outgoing>) {
    let store_timeout = inner.store_timeout;
    let attempt = attempt_timeout(store_timeout);
    let mut connection = inner.connection.clone();
    let mut epoch = connection.borrow().epoch;
    let resend_until = resend_until(&inner);
    let mut queues: Vec<Queue> = (0..inner.shards + 2)
        .map(|_| Queue {
            entries: VecDeque::new(),
            mode: Mode::Open,
            hold_orphans: false,
            resend_until,
        })
        .collect();
    let mut taken = 0usize;
    let mut next_id = 0u64;
    let retained_queue = inner.shards;
    // Retained stores taken into their queue so far (see `retained::Puts`).
    let mut retained_taken = 0u64;
    // When a late wake last gave the NATS client time to read what arrived.
    let mut graced_at: Option<Instant> = None;
    loop {
        let up = connection.borrow().up;
        for queue in queues.iter_mut() {
            queue.hold_orphans = !up;
        }
        let deadline = queues.iter().filter_map(|q| q.deadline(attempt)).min();
        let wake = async move {
            match deadline {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            changed = connection.changed() => {
                if changed.is_err() {
                    return;
                }
                let now = *connection.borrow_and_update();
                if now.up && now.epoch != epoch {
                    epoch = now.epoch;
                    for queue in queues.iter_mut().filter(|q| !q.entries.is_empty()) {
                        // A store that keeps costing the connection still ends at storeTimeout;
                        // an orphan gets its grace anew, for the retries that waited in the
                        // channel meanwhile.
                        queue.mode = Mode::Probe { retry: None };
                        queue.hold_orphans = true;
                        queue.expire(store_timeout, "the connection to NATS was lost");
                        if !queue.entries.is_empty() {
                            queue.mode = Mode::Probe { retry: Some(Instant::now()) };
                        }
                    }
                }
            }
            (k, answer) = front_answers(&mut queues) => {
                let queue = &mut queues[k];
                match answer {
                    Ok(stored) => {
                        if let Some(front) = queue.entries.pop_front() {
                            let result = match stored {
                                None => Err(DurabilityError::Stale(format!(
                                    "{} was written meanwhile",
                                    front.subject
                                ))),
                                Some(revision) => {
                                    if k == retained_queue {
                                        // Before its publisher hears it: a SUBSCRIBE after
                                        // the PUBACK finds it here.
                                        super::retained::apply_stored(
                                            &inner,
                                            &front.subject,
                                            front.delete,
                                            &front.payload,
                                            revision,
                                        );
                                    }
                                    Ok(())
                                }
                            };
                            front.finish(result);
                        }
                        acknowledged(&inner, queue, up).await;
                    }
                    Err(e) => queue.failed(store_timeout, &e),
                }
            }
            () = wake => {
                let now = Instant::now();
                // Due long ago: this process did not run meanwhile. Let the NATS client
                // read what the streams answered then before any store is judged
                // unanswered, once per such wake (`late_wake.rs`).
                let late = deadline.is_some_and(|due| late_wake::is_late(due, now));
                if late && graced_at.is_none_or(|at| late_wake::is_late(at, now)) {
                    graced_at = Some(now);
                    tokio::time::sleep(late_wake::GRACE).await;
                    continue;
                }
                for queue in queues.iter_mut() {
                    let Some((sent, expires)) =
                        queue.entries.front().map(|f| (f.sent, f.expires))
                    else {
                        continue;
                    };
                    let expired = now >= expires;
                    match queue.mode {
                        Mode::Probe { retry: Some(at) } if at <= now => {
                            queue.expire(store_timeout, "the stream did not acknowledge");
                            let Mode::Probe { .. } = queue.mode else {
                                continue;
                            };
                            if up {
                                queue.forget_abandoned();
                                if queue.entries.is_empty() {
                                    continue;
                                }
                                queue.mode = Mode::Probe { retry: None };
                                let until = queue.resend_until;
                                if let Some(front) = queue.entries.front_mut() {
                                    front.send(&inner, until).await;
                                }
                            } else {
                                queue.mode = Mode::Probe {
                                    retry: Some(now + RETRY_PAUSE),
                                };
                            }
                        }
                        Mode::Probe { retry: Some(_) } => {
                            if expired {
                                queue.expire(store_timeout, "the stream did not acknowledge");
                            }
                        }
                        _ => queue.woke(now, sent, expired, attempt, store_timeout),
                    }
                }
            }
            item = rx.recv(), if up && taken < MAX_IN_FLIGHT => {
                let Some(Outgoing::Store { subject, payload, delete, done, expect, id, send_by }) =
                    item
                else {
                    return;
                };
                next_id += 1;
                let now = Instant::now();
                if send_by.is_some_and(|by| now >= by) {
                    // Taken too late (the node was frozen, or the channel long): another
                    // node may have stored this id already, outside the window from now.
                    if let Some(done) = done {
                        let _ = done.send(Err(DurabilityError::Unavailable(
                            "not sent: taken past the time another node's copy would be \
                             recognised"
                                .into(),
                        )));
                    }
                    continue;
                }
                let (expect, id, kept_id) = match (expect, id) {
                    (Some((last, id)), _) => (Some(last), id, true),
                    (None, Some(id)) => (None, id, true),
                    (None, None) => (None, format!("{:x}-{next_id:x}", inner.instance), false),
                };
                let k = queue_of(&subject, inner.shards);
                if k == retained_queue {
                    retained_taken += 1;
                }
                let queue = &mut queues[k];
                let done = if kept_id {
                    match queue.take_over(&id, done, store_timeout) {
                        Some(done) => done,
                        None => continue,
                    }
                } else {
                    done
                };
                let mut entry = InFlight {
                    subject,
                    payload,
                    delete,
                    id,
                    done,
                    expect,
                    kept_id,
                    orphan: false,
                    expires: now + store_timeout,
                    sent: now,
                    first_sent: None,
                    send_by,
                    ack: Box::pin(std::future::pending()),
                };
                // Behind a probe or a drain a store waits (an empty queue is always open).
                if queue.mode == Mode::Open {
                    entry.send(&inner, queue.resend_until).await;
                }
                queue.entries.push_back(entry);
            }
        }
        taken = queues.iter().map(|q| q.entries.len()).sum();
        let settled = retained_taken - queues[retained_queue].entries.len() as u64;
        if inner.retained_puts.settle(settled) {
            inner.retained_progress.notify_waiters();
        }
    }
}

/// The front of `queue` was acknowledged and taken off. After a probe, the rest is sent again
/// in order (the first sends' answers are stale) and nothing newer goes until it is through;
/// once it is, what waited behind it is sent and the queue is open again.
async fn acknowledged(inner: &Inner, queue: &mut Queue, up: bool) {
    if queue.entries.is_empty() {
        queue.mode = Mode::Open;
        return;
    }
    match queue.mode {
        Mode::Open => {}
        Mode::Probe { .. } => {
            if !up {
                // Sent again after the reconnection.
                queue.mode = Mode::Probe {
                    retry: Some(Instant::now() + RETRY_PAUSE),
                };
                return;
            }
            queue.forget_abandoned();
            if queue.entries.is_empty() {
                return;
            }
            tracing::debug!(
                stores = queue.entries.len(),
                "cluster: a stream acknowledged again; sending its stores again in order"
            );
            let until = queue.resend_until;
            for entry in queue.entries.iter_mut() {
                entry.send(inner, until).await;
            }
            queue.mode = Mode::Drain {
                resent: queue.entries.len(),
            };
        }
        Mode::Drain { resent } => {
            let resent = resent.saturating_sub(1);
            if resent > 0 {
                queue.mode = Mode::Drain { resent };
                return;
            }
            if !up {
                queue.mode = Mode::Probe {
                    retry: Some(Instant::now() + RETRY_PAUSE),
                };
                return;
            }
            // Every store re-sent is through: what waited behind them goes now.
            queue.forget_abandoned();
            let until = queue.resend_until;
            for entry in queue.entries.iter_mut() {
                entry.send(inner, until).await;
            }
            queue.mode = Mode::Open;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_shard_stream_and_the_retained_bucket_have_their_own_queue() {
        assert_eq!(queue_of("fmq.m.3.a.b", 8), 3);
        assert_eq!(queue_of("fmq.m.0.a", 8), 0);
        assert_eq!(queue_of("fmq.m.7.$q2.c.1.5", 8), 7);
        assert_eq!(queue_of("$KV.FMQ_RETAIN.a_2fb", 8), 8);
        // Not a shard of this cluster, another bucket: the last queue.
        assert_eq!(queue_of("fmq.m.8.a", 8), 9);
        assert_eq!(queue_of("fmq.m.x.a", 8), 9);
        assert_eq!(queue_of("$KV.FMQ_RETAINED.a", 8), 9);
        assert_eq!(queue_of("$KV.FMQ_SESS.a", 8), 9);
    }

    fn queue_of_entries<const N: usize>(entries: [InFlight; N], mode: Mode) -> Queue {
        Queue {
            entries: VecDeque::from(entries),
            mode,
            hold_orphans: false,
            resend_until: RESEND_UNTIL,
        }
    }

    /// The tests' `storeTimeout`.
    const TIMEOUT: Duration = Duration::from_secs(5);
    /// The tests' [`Queue::resend_until`] (a 20 s window, 1.25 s attempts).
    const RESEND_UNTIL: Duration = Duration::from_millis(17_500);

    /// A store taken `age` ago; `id`: one its publisher keeps across retries.
    fn entry(
        age: Duration,
        id: Option<&str>,
    ) -> (InFlight, oneshot::Receiver<Result<(), DurabilityError>>) {
        let (tx, rx) = oneshot::channel();
        let taken = Instant::now() - age;
        let entry = InFlight {
            subject: "fmq.m.0.t".into(),
            payload: Bytes::new(),
            delete: false,
            id: id.unwrap_or("x").into(),
            done: Some(tx),
            expect: None,
            kept_id: id.is_some(),
            orphan: false,
            expires: taken + TIMEOUT,
            sent: taken,
            first_sent: Some(taken),
            send_by: None,
            ack: Box::pin(std::future::pending()),
        };
        (entry, rx)
    }

    #[test]
    fn a_failed_attempt_fails_only_what_is_past_store_timeout_and_probes_with_the_front() {
        let timeout = TIMEOUT;
        let (old, mut old_rx) = entry(Duration::from_secs(6), None);
        let (mut unsent, mut unsent_rx) = entry(Duration::from_secs(6), None);
        unsent.first_sent = None;
        let (young, mut young_rx) = entry(Duration::from_secs(1), None);
        let mut queue = queue_of_entries([old, unsent, young], Mode::Open);
        queue.failed(timeout, "no answer");
        // Sent, unanswered: it may still land. Never sent: it is not kept.
        assert!(matches!(
            old_rx.try_recv(),
            Ok(Err(DurabilityError::Unconfirmed(_)))
        ));
        assert!(matches!(
            unsent_rx.try_recv(),
            Ok(Err(DurabilityError::Unavailable(_)))
        ));
        assert!(young_rx.try_recv().is_err(), "still waiting");
        assert_eq!(queue.entries.len(), 1);
        assert!(matches!(queue.mode, Mode::Probe { retry: Some(_) }));
        // The front is not live until its re-send: nothing answers for it meanwhile.
        assert!(!queue.front_live());
        let deadline = queue.deadline(attempt_timeout(timeout));
        assert!(deadline.is_some_and(|d| d <= Instant::now() + RETRY_PAUSE));
    }

    #[test]
    fn a_drain_whose_resent_stores_all_expired_probes_with_the_ones_that_waited() {
        let timeout = TIMEOUT;
        let (resent, _r1) = entry(Duration::from_secs(6), None);
        let (waited, _r2) = entry(Duration::from_secs(1), None);
        let mut queue = queue_of_entries([resent, waited], Mode::Drain { resent: 1 });
        queue.expire(timeout, "no answer");
        assert_eq!(queue.entries.len(), 1);
        assert!(matches!(queue.mode, Mode::Probe { retry: Some(_) }));
        if let Some(front) = queue.entries.front_mut() {
            front.expires = Instant::now();
        }
        queue.expire(timeout, "no answer");
        assert!(queue.entries.is_empty());
        assert_eq!(queue.mode, Mode::Open, "an empty queue is open");
    }

    /// A store taken `age` ago and sent again just now (a drain after a stream came back).
    fn resent(
        age: Duration,
        id: Option<&str>,
    ) -> (InFlight, oneshot::Receiver<Result<(), DurabilityError>>) {
        let (mut entry, rx) = entry(age, id);
        entry.sent = Instant::now();
        (entry, rx)
    }

    #[test]
    fn a_drain_fails_stores_past_store_timeout_without_starting_over() {
        let attempt = attempt_timeout(TIMEOUT);
        let (old, mut old_rx) = resent(Duration::from_secs(9), None);
        let (kept, mut kept_rx) = resent(Duration::from_secs(8), Some("i-m2"));
        let (young, mut young_rx) = resent(Duration::from_secs(1), None);
        let mut queue = queue_of_entries([old, kept, young], Mode::Drain { resent: 3 });
        let now = Instant::now();
        queue.woke(now, now, true, attempt, TIMEOUT);
        // Its publisher hears it failed; the re-sends behind it stay in flight.
        assert!(matches!(
            old_rx.try_recv(),
            Ok(Err(DurabilityError::Unconfirmed(_)))
        ));
        assert_eq!(queue.mode, Mode::Drain { resent: 2 });
        assert!(queue.front_live());
        // The next front, kept for its publisher's retry, is told too and stays first.
        queue.woke(now, now, true, attempt, TIMEOUT);
        assert!(matches!(
            kept_rx.try_recv(),
            Ok(Err(DurabilityError::Unconfirmed(_)))
        ));
        assert_eq!(queue.mode, Mode::Drain { resent: 2 });
        assert!(queue.entries.front().is_some_and(|f| f.orphan));
        assert!(young_rx.try_recv().is_err(), "still waiting");
    }

    #[test]
    fn a_drain_whose_front_gets_no_answer_within_an_attempt_probes() {
        let attempt = attempt_timeout(TIMEOUT);
        let (front, _front_rx) = entry(Duration::from_secs(2), None);
        let (next, _next_rx) = resent(Duration::from_secs(1), None);
        let mut queue = queue_of_entries([front, next], Mode::Drain { resent: 2 });
        let now = Instant::now();
        let sent = now - attempt;
        queue.woke(now, sent, false, attempt, TIMEOUT);
        assert!(matches!(queue.mode, Mode::Probe { retry: Some(_) }));
        assert_eq!(queue.entries.len(), 2);
    }

    #[test]
    fn a_store_first_sent_past_the_duplicate_window_is_dropped_not_kept_for_a_retry() {
        // A node frozen for 25 s finds its stores unanswered: one its publisher would retry
        // and one nobody retries are both failed and dropped (a copy sent now could be
        // stored twice), also while the connection is down; the young one stays.
        let (kept, mut kept_rx) = entry(Duration::from_secs(25), Some("i-m1"));
        let (plain, mut plain_rx) = entry(Duration::from_secs(25), None);
        let (young, mut young_rx) = entry(Duration::from_secs(1), Some("i-m3"));
        let mut queue = queue_of_entries([kept, plain, young], Mode::Open);
        queue.hold_orphans = true;
        queue.failed(TIMEOUT, "no answer");
        for rx in [&mut kept_rx, &mut plain_rx] {
            assert!(matches!(
                rx.try_recv(),
                Ok(Err(DurabilityError::Unconfirmed(_)))
            ));
        }
        assert!(young_rx.try_recv().is_err(), "still waiting");
        assert_eq!(queue.entries.len(), 1);
        assert!(queue
            .entries
            .front()
            .is_some_and(|f| !f.orphan && f.id == "i-m3"));
        // An orphan that outlives the window while held is dropped too.
        let (mut orphan, _orphan_rx) = entry(Duration::from_secs(10), Some("i-m4"));
        orphan.orphan = true;
        orphan.done = None;
        let mut queue = queue_of_entries([orphan], Mode::Probe { retry: None });
        queue.hold_orphans = true;
        queue.expire(TIMEOUT, "no answer");
        assert_eq!(queue.entries.len(), 1, "held within the window");
        if let Some(front) = queue.entries.front_mut() {
            front.first_sent = Some(Instant::now() - RESEND_UNTIL);
        }
        queue.expire(TIMEOUT, "no answer");
        assert!(queue.entries.is_empty());
        // A store another node may store too (a transaction's topic record) is not sent
        // once its `send_by` passed, however young: failed and dropped.
        let (mut late, mut late_rx) = entry(Duration::from_secs(1), Some("i-m5"));
        late.send_by = Some(Instant::now() - Duration::from_millis(1));
        late.first_sent = None;
        let (next, mut next_rx) = entry(Duration::from_secs(1), Some("i-m6"));
        let mut queue = queue_of_entries([late, next], Mode::Open);
        queue.failed(TIMEOUT, "no answer");
        // Never sent: its waiter hears it is not kept, not that it may be.
        assert!(matches!(
            late_rx.try_recv(),
            Ok(Err(DurabilityError::Unavailable(_)))
        ));
        assert!(next_rx.try_recv().is_err(), "still waiting");
        assert_eq!(queue.entries.len(), 1);
    }

    #[test]
    fn a_publish_past_store_timeout_is_kept_first_for_its_retry_to_take_over() {
        let (old, mut old_rx) = entry(Duration::from_secs(6), Some("i-m1"));
        let (young, _young_rx) = entry(Duration::from_secs(1), Some("i-m2"));
        let mut queue = queue_of_entries([old, young], Mode::Open);
        queue.failed(TIMEOUT, "no answer");
        // Its publisher hears of the failure, but the store keeps its place.
        assert!(matches!(
            old_rx.try_recv(),
            Ok(Err(DurabilityError::Unconfirmed(_)))
        ));
        assert_eq!(queue.entries.len(), 2);
        assert!(queue.entries.front().is_some_and(|f| f.orphan));
        // Another store's id takes nothing over.
        let (tx, _rx) = oneshot::channel();
        assert!(queue.take_over("i-m9", Some(tx), TIMEOUT).is_some());
        // The retry under the same id does, where the orphan stands, with a new deadline.
        let (tx, mut retry_rx) = oneshot::channel();
        assert!(queue.take_over("i-m1", Some(tx), TIMEOUT).is_none());
        assert_eq!(queue.entries.len(), 2);
        let front = queue
            .entries
            .front()
            .map(|f| (f.id.clone(), f.orphan, f.expires));
        assert!(front.is_some_and(|(id, orphan, expires)| id == "i-m1"
            && !orphan
            && expires > Instant::now() + Duration::from_secs(4)));
        assert!(
            retry_rx.try_recv().is_err(),
            "the retry waits for the stream"
        );
    }

    #[test]
    fn an_orphan_nobody_takes_over_is_dropped_after_its_grace() {
        let (old, _old_rx) = entry(Duration::from_secs(6), Some("i-m1"));
        let (young, _young_rx) = entry(Duration::from_secs(1), Some("i-m2"));
        let mut queue = queue_of_entries([old, young], Mode::Open);
        queue.expire(TIMEOUT, "no answer");
        assert_eq!(queue.entries.len(), 2, "kept as an orphan");
        if let Some(front) = queue.entries.front_mut() {
            front.expires = Instant::now();
        }
        queue.expire(TIMEOUT, "no answer");
        assert_eq!(queue.entries.len(), 1);
        assert!(queue
            .entries
            .front()
            .is_some_and(|f| f.id == "i-m2" && !f.orphan));
    }

    #[test]
    fn an_orphan_is_kept_while_the_connection_to_nats_is_down() {
        let (old, _old_rx) = entry(Duration::from_secs(6), Some("i-m1"));
        let (young, _young_rx) = entry(Duration::from_secs(1), Some("i-m2"));
        let mut queue = queue_of_entries([old, young], Mode::Open);
        queue.expire(TIMEOUT, "no answer");
        // Down: the retry that would take it over waits in the channel, untaken.
        queue.hold_orphans = true;
        if let Some(front) = queue.entries.front_mut() {
            front.expires = Instant::now();
        }
        queue.expire(TIMEOUT, "the connection to NATS was lost");
        assert_eq!(queue.entries.len(), 2, "kept");
        assert!(queue
            .entries
            .front()
            .is_some_and(|f| f.orphan && f.expires > Instant::now() + Duration::from_secs(1)));
        let (tx, _rx) = oneshot::channel();
        assert!(queue.take_over("i-m1", Some(tx), TIMEOUT).is_none());
    }

    #[test]
    fn a_store_whose_connection_closed_is_forgotten_before_the_queue_is_sent_again() {
        let (orphan, _orphan_rx) = entry(Duration::from_secs(6), Some("i-m1"));
        let (abandoned, abandoned_rx) = entry(Duration::from_secs(1), Some("i-m2"));
        let (waiting, _waiting_rx) = entry(Duration::from_secs(1), Some("i-m3"));
        let (retained, retained_rx) = entry(Duration::from_secs(1), None);
        let mut queue = queue_of_entries(
            [orphan, abandoned, waiting, retained],
            Mode::Probe { retry: None },
        );
        queue.expire(TIMEOUT, "no answer");
        drop(abandoned_rx);
        drop(retained_rx);
        queue.forget_abandoned();
        let ids: Vec<&str> = queue.entries.iter().map(|e| e.id.as_str()).collect();
        // The orphan waits for its retry; a store without a kept id is not the connection's.
        assert_eq!(ids, ["i-m1", "i-m3", "x"]);
    }
}
