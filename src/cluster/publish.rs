//! One task sends everything this node publishes into NATS, in the order the broker handed
//! it over: live (QoS 0) messages on core subjects, QoS 1 messages into their shard's stream,
//! retained messages into `FMQ_RETAIN`. Stores are pipelined: the task sends the next
//! message without waiting for the previous store's acknowledgement, which is reported to the
//! publisher's commit (its PUBACK), bounded by `storeTimeout`; stores not acknowledged are sent
//! again in order (see [`run`]).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::message::PublishMessage as Publish;
use bytes::Bytes;
use std::future::IntoFuture;
use tokio::sync::{mpsc, oneshot};

use super::codec::encode_message;
use super::engine::Inner;
use super::subject::{retained_key, topic_subject};
use super::{shard_of, shard_prefix, LIVE_PREFIX, RETAINED_BUCKET};
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
    },
}

/// Hand a publish to the task; the answer resolves when what gates its acknowledgement is
/// stored (at once for QoS 0).
pub fn publish(
    inner: &Arc<Inner>,
    message: Message,
    retained: RetainedChange,
    publisher: Option<&str>,
) -> Commit {
    if !super::subject::topic_fits(&message.topic) {
        // NATS drops a connection that sends a longer subject (MQTT PUBLISH refuses such
        // topics; this guards wills and STOMP).
        return Commit::Done(Err(DurabilityError::Unavailable(format!(
            "topic of {} bytes is too long for the cluster's NATS subjects",
            message.topic.len()
        ))));
    }
    let counter = inner
        .counter
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let payload = match encode_message(&message, inner.instance, counter, publisher) {
        Ok(p) => p,
        Err(e) => return Commit::Done(Err(DurabilityError::Unavailable(e.to_string()))),
    };
    let stored = message.qos != QoS::AtMostOnce;
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
        let (tx, rx) = oneshot::channel();
        let subject = format!("$KV.{RETAINED_BUCKET}.{}", retained_key(&message.topic));
        let item = Outgoing::Store {
            subject,
            payload: if retained == RetainedChange::Set {
                payload
            } else {
                Bytes::new()
            },
            delete: retained == RetainedChange::Clear,
            done: Some(tx),
            expect: None,
        };
        if let Err(e) = send(item) {
            return Commit::Done(Err(e));
        }
        if stored {
            waits.push(rx);
        }
    }
    if waits.is_empty() {
        return Commit::done();
    }
    Commit::Pending(Box::pin(async move {
        for rx in waits {
            match rx.await {
                Ok(result) => result?,
                Err(_) => {
                    return Err(DurabilityError::Unavailable(
                        "cluster publisher stopped".into(),
                    ))
                }
            }
        }
        Ok(())
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

/// Stores sent and not yet acknowledged at most; more wait in the channel (resent together
/// after a reconnect, so bounded).
const MAX_IN_FLIGHT: usize = 4_096;

/// A store the task sent and waits for, oldest first.
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
    first_sent: Instant,
    sent: Instant,
    ack: AckFuture,
}

/// `Ok(false)`: stored; `Ok(true)`: a compare-and-set found the subject elsewhere.
type AckFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Result<bool, String>> + Send>>;

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

    /// Send (again); a failure to send shows as the answer.
    async fn send(&mut self, inner: &Inner) {
        self.sent = Instant::now();
        self.ack = match inner
            .js
            .send_publish(self.subject.clone(), self.publish())
            .await
        {
            Ok(ack) => {
                let compare_and_set = self.expect.is_some();
                // A duplicate answer is checked against the stream (see `store_ack.rs`).
                let (js, id) = (inner.js.clone(), self.id.clone());
                let again = (!compare_and_set && !self.delete).then(|| super::store_ack::Again {
                    subject: self.subject.clone(),
                    payload: self.payload.clone(),
                    ledger: inner.ledger.clone(),
                });
                Box::pin(async move {
                    match ack.into_future().await {
                        Ok(ack) => super::store_ack::confirm(&js, ack, &id, again)
                            .await
                            .map(|()| false),
                        Err(e)
                            if compare_and_set
                                && e.kind()
                                    == async_nats::jetstream::context::PublishErrorKind::WrongLastSequence =>
                        {
                            Ok(true)
                        }
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

/// How long one send waits for its acknowledgement before everything in flight is sent
/// again: a quarter of `storeTimeout`, at least 500 ms.
fn attempt_timeout(store_timeout: Duration) -> Duration {
    (store_timeout / 4)
        .max(Duration::from_millis(500))
        .min(store_timeout)
}

/// The task sending stores, in order, pipelined. A store whose acknowledgement does not come
/// (its NATS server died with it, a stream leader is being elected) is sent again with the
/// same message id, and so is every store sent after it, in their order, before anything
/// new: a later message never lands in a stream ahead of an earlier one, and none twice.
/// While the connection is down nothing new is sent (the client would write it first after
/// reconnecting, ahead of the stores to repeat). A store not acknowledged within
/// `storeTimeout` of its first send fails (its publisher gets no PUBACK).
pub async fn run(inner: Arc<Inner>, mut rx: mpsc::UnboundedReceiver<Outgoing>) {
    let store_timeout = inner.store_timeout;
    let attempt = attempt_timeout(store_timeout);
    let mut connection = inner.connection.clone();
    let mut epoch = connection.borrow().epoch;
    let mut in_flight: VecDeque<InFlight> = VecDeque::new();
    let mut next_id = 0u64;
    loop {
        let up = connection.borrow().up;
        tokio::select! {
            biased;
            changed = connection.changed() => {
                if changed.is_err() {
                    return;
                }
                let now = *connection.borrow_and_update();
                if now.up && now.epoch != epoch {
                    epoch = now.epoch;
                    // A store that keeps costing the connection still ends at storeTimeout.
                    expire(&mut in_flight, store_timeout, "the connection to NATS was lost");
                    resend_all(&inner, &mut in_flight).await;
                }
            }
            answer = front_answer(&mut in_flight, attempt), if !in_flight.is_empty() => {
                match answer {
                    Ok(conflict) => {
                        if let Some(front) = in_flight.pop_front() {
                            let result = if conflict {
                                Err(DurabilityError::Stale(format!(
                                    "{} was written meanwhile",
                                    front.subject
                                )))
                            } else {
                                Ok(())
                            };
                            front.finish(result);
                        }
                    }
                    Err(e) => {
                        expire(&mut in_flight, store_timeout, &e);
                        if !in_flight.is_empty() && connection.borrow().up {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            resend_all(&inner, &mut in_flight).await;
                        }
                    }
                }
            }
            item = rx.recv(), if up && in_flight.len() < MAX_IN_FLIGHT => {
                let Some(Outgoing::Store { subject, payload, delete, done, expect }) = item else {
                    return;
                };
                next_id += 1;
                let now = Instant::now();
                let (expect, id) = match expect {
                    Some((last, id)) => (Some(last), id),
                    None => (None, format!("{:x}-{next_id:x}", inner.instance)),
                };
                let mut entry = InFlight {
                    subject,
                    payload,
                    delete,
                    id,
                    done,
                    expect,
                    first_sent: now,
                    sent: now,
                    ack: Box::pin(std::future::pending()),
                };
                entry.send(&inner).await;
                in_flight.push_back(entry);
            }
        }
    }
}

/// The acknowledgement of the oldest store, or why it did not come within `attempt` of its
/// last send.
async fn front_answer(
    in_flight: &mut VecDeque<InFlight>,
    attempt: Duration,
) -> Result<bool, String> {
    let Some(front) = in_flight.front_mut() else {
        return std::future::pending().await;
    };
    let deadline = front.sent + attempt;
    match tokio::time::timeout_at(deadline.into(), &mut front.ack).await {
        Ok(answer) => answer,
        Err(_) => Err(format!(
            "cluster store did not acknowledge within {} ms",
            attempt.as_millis()
        )),
    }
}

/// Fail the stores sent `storeTimeout` ago or more (oldest first, so the front).
fn expire(in_flight: &mut VecDeque<InFlight>, store_timeout: Duration, why: &str) {
    while in_flight
        .front()
        .is_some_and(|f| f.first_sent.elapsed() >= store_timeout)
    {
        if let Some(front) = in_flight.pop_front() {
            front.finish(Err(DurabilityError::Unavailable(format!(
                "{why} (gave up after {} ms)",
                store_timeout.as_millis()
            ))));
        }
    }
}

/// Send every store in flight again, oldest first.
async fn resend_all(inner: &Inner, in_flight: &mut VecDeque<InFlight>) {
    if !in_flight.is_empty() {
        tracing::debug!(
            stores = in_flight.len(),
            "cluster: sending unacknowledged stores again"
        );
    }
    for entry in in_flight.iter_mut() {
        entry.send(inner).await;
    }
}
