//! One task sends everything this node publishes into NATS, in the order the broker handed
//! it over: live (QoS 0) messages on core subjects, QoS 1 messages into their shard's stream,
//! retained messages into `FMQ_RETAIN`. Stores are pipelined: the task sends the next
//! message without waiting for the previous store's acknowledgement, which a separate wait
//! reports to the publisher's commit (its PUBACK), bounded by `storeTimeout`.

use std::sync::Arc;

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

/// The task sending stores, in order.
pub async fn run(inner: Arc<Inner>, mut rx: mpsc::UnboundedReceiver<Outgoing>) {
    while let Some(item) = rx.recv().await {
        match item {
            Outgoing::Store {
                subject,
                payload,
                delete,
                done,
            } => {
                let mut publish = Publish::build().payload(payload);
                if delete {
                    publish = publish.header("KV-Operation", "DEL");
                }
                let sent = inner.js.send_publish(subject, publish).await;
                let timeout = inner.store_timeout;
                match sent {
                    Ok(ack) => {
                        tokio::spawn(async move {
                            let result =
                                match tokio::time::timeout(timeout, ack.into_future()).await {
                                    Ok(Ok(_)) => Ok(()),
                                    Ok(Err(e)) => Err(DurabilityError::Unavailable(format!(
                                        "cluster store refused: {e}"
                                    ))),
                                    Err(_) => Err(DurabilityError::Unavailable(format!(
                                        "cluster store did not acknowledge within {} ms",
                                        timeout.as_millis()
                                    ))),
                                };
                            if let Some(done) = done {
                                let _ = done.send(result);
                            }
                        });
                    }
                    Err(e) => {
                        if let Some(done) = done {
                            let _ = done.send(Err(DurabilityError::Unavailable(format!(
                                "cluster store: {e}"
                            ))));
                        }
                    }
                }
            }
        }
    }
}
