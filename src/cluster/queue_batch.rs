//! A STOMP transaction's queue SENDs stored in [`super::queues::QUEUE_STREAM`] as one unit:
//! NATS JetStream's atomic batch publish (ADR-50, nats-server 2.12 and later, a stream made
//! with `allow_atomic`). Every message carries the batch's id and its place
//! (`Nats-Batch-Id`, `Nats-Batch-Sequence`); the last one also `Nats-Batch-Commit`, and only
//! it is answered: the server stores the whole batch, or none of it, and its messages become
//! visible to the queues' consumers together. Each message keeps its own `Nats-Msg-Id`, so
//! the stream's duplicate window still recognises them.
//!
//! A stream that does not take atomic batches (made by a server before 2.12, or its update
//! refused) stores the messages one by one, in order, each acknowledged (the answer waits
//! for all of them): the transaction is then kept whole once the answer is done, but a node
//! that dies midway leaves a prefix stored (docs/stomp.md, "What a COMMIT keeps, and when").

use std::future::IntoFuture;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::context::{PublishAckFuture, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::ErrorCode;
use async_nats::HeaderMap;
use tokio::sync::oneshot;

use super::engine::Inner;
use super::queues::{unavailable, Item, FIRST_STORE_RETRY};
use crate::broker::durability::DurabilityError;

/// The most messages nats-server takes in one atomic batch (its `max_batch_size`).
pub const ATOMIC_BATCH_MAX: usize = 1000;

/// Send `items` in order (after everything handed to the store task before them) and answer
/// `done` (the last one's stream sequence, 0 when not known) once the stream kept all of
/// them: as one atomic batch when `atomic`, else one by one. Until this node's first store
/// was answered (`answered_once`), the answer is awaited here and "no responders" (the
/// server does not know the stream's subjects yet) sends the whole batch again (nothing of it
/// was stored). An atomic batch not answered in time is sent again under the same message
/// ids ([`RESENDS`] times): the stream refuses the copy of a batch it kept ("duplicate message
/// id"), which tells that the first was kept, so a lost answer (a leader election) does not
/// leave the client with an unknown outcome.
pub(super) async fn send(
    inner: &Arc<Inner>,
    items: Vec<Item>,
    done: oneshot::Sender<Result<u64, DurabilityError>>,
    atomic: bool,
    answered_once: &mut bool,
) {
    let atomic = atomic && items.len() <= ATOMIC_BATCH_MAX;
    let within = if atomic {
        answer_within(inner, &items)
    } else {
        inner.store_timeout
    };
    if !*answered_once {
        let first_sent = Instant::now();
        let deadline = first_sent + within;
        let result = loop {
            let sent = match send_all(inner, &items, atomic).await {
                Ok(acks) => settle(within, acks, atomic, items.len()).await,
                Err(e) => Err(e),
            };
            match sent {
                Err(Refusal::NoResponders(_)) if Instant::now() + FIRST_STORE_RETRY < deadline => {
                    tokio::time::sleep(FIRST_STORE_RETRY).await;
                }
                Err(Refusal::NotAnswered) if atomic => {
                    break resend(inner, &items, within, first_sent).await
                }
                other => break kept(other),
            }
        };
        *answered_once = result.is_ok();
        let _ = done.send(result);
        return;
    }
    let first_sent = Instant::now();
    match send_all(inner, &items, atomic).await {
        Ok(acks) => {
            let inner = inner.clone();
            tokio::spawn(async move {
                let result = match settle(within, acks, atomic, items.len()).await {
                    Err(Refusal::NotAnswered | Refusal::NoResponders(_)) if atomic => {
                        resend(&inner, &items, within, first_sent).await
                    }
                    other => kept(other),
                };
                let _ = done.send(result);
            });
        }
        Err(e) => {
            let _ = done.send(kept(Err(e)));
        }
    }
}

/// Times an atomic batch not answered is sent again.
const RESENDS: usize = 2;

/// [`send`]'s second and later tries of an atomic batch whose answer did not come, first
/// sent at `first_sent`: only while the stream's duplicate window still holds its message ids
/// (later, a copy of a kept batch would be kept again).
async fn resend(
    inner: &Inner,
    items: &[Item],
    within: Duration,
    first_sent: Instant,
) -> Result<u64, DurabilityError> {
    for _ in 0..RESENDS {
        if first_sent.elapsed() + within >= super::queues::duplicate_window(inner) {
            break;
        }
        let sent = match send_all(inner, items, true).await {
            Ok(acks) => settle(within, acks, true, items.len()).await,
            Err(e) => Err(e),
        };
        match sent {
            Err(Refusal::NotAnswered) => continue,
            Err(Refusal::NoResponders(_)) => tokio::time::sleep(FIRST_STORE_RETRY).await,
            other => return kept(other),
        }
    }
    Err(DurabilityError::Unconfirmed(NOT_ANSWERED.into()))
}

/// What a batch's answer says about it.
fn kept(answer: Result<u64, Refusal>) -> Result<u64, DurabilityError> {
    match answer {
        Ok(seq) => Ok(seq),
        // A copy of a batch the stream kept already (where it was kept: not told).
        Err(Refusal::Duplicate) => Ok(0),
        Err(Refusal::NotAnswered) => Err(DurabilityError::Unconfirmed(NOT_ANSWERED.into())),
        Err(Refusal::NoResponders(e)) => Err(unavailable(format!("cluster store refused: {e}"))),
        Err(Refusal::Other(e)) => Err(e),
    }
}

/// Why a batch was not kept.
enum Refusal {
    /// Nothing received it (see [`send`]).
    NoResponders(String),
    /// No answer in time: the stream may have kept it.
    NotAnswered,
    /// The stream refused it as a copy of messages it keeps (a batch sent again).
    Duplicate,
    Other(DurabilityError),
}

/// Write every message of the batch to the server, in order; the answers to wait for.
async fn send_all(
    inner: &Inner,
    items: &[Item],
    atomic: bool,
) -> Result<Vec<PublishAckFuture>, Refusal> {
    let failed =
        |e: &dyn std::fmt::Display| Refusal::Other(unavailable(format!("cluster store: {e}")));
    if !atomic {
        let mut acks = Vec::with_capacity(items.len());
        for item in items {
            let publish = PublishMessage::build()
                .payload(item.payload.clone())
                .message_id(item.id.as_str());
            let ack = inner
                .stores_js
                .send_publish(item.subject.clone(), publish)
                .await
                .map_err(|e| failed(&e))?;
            acks.push(ack);
        }
        return Ok(acks);
    }
    let batch = format!(
        "{:x}-{}",
        inner.instance,
        inner.counter.fetch_add(1, Ordering::Relaxed)
    );
    let client = inner.js.client();
    let Some((last, first)) = items.split_last() else {
        return Ok(Vec::new());
    };
    for (i, item) in first.iter().enumerate() {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Batch-Id", batch.as_str());
        headers.insert("Nats-Batch-Sequence", (i + 1).to_string().as_str());
        headers.insert("Nats-Msg-Id", item.id.as_str());
        client
            .publish_with_headers(item.subject.clone(), headers, item.payload.clone())
            .await
            .map_err(|e| failed(&e))?;
    }
    let publish = PublishMessage::build()
        .payload(last.payload.clone())
        .message_id(last.id.as_str())
        .header("Nats-Batch-Id", batch.as_str())
        .header("Nats-Batch-Sequence", items.len().to_string().as_str())
        .header("Nats-Batch-Commit", "1");
    let ack = inner
        .stores_js
        .send_publish(last.subject.clone(), publish)
        .await
        .map_err(|e| failed(&e))?;
    Ok(vec![ack])
}

/// How long a batch's answer is awaited: `storeTimeout`, and one more for each 8 MiB it
/// carries (at most 30 more): a large batch is replicated as one (270 MB took 4.4 s on the
/// test rig), and a short wait lets a batch whose answer was lost in a leader election be
/// sent again within the stream's duplicate window.
fn answer_within(inner: &Inner, items: &[Item]) -> Duration {
    let bytes: usize = items.iter().map(|i| i.payload.len()).sum();
    let more = u32::try_from(bytes / (8 << 20)).unwrap_or(u32::MAX).min(30);
    inner.store_timeout * (1 + more)
}

/// A batch whose answer did not come: the server may have stored it.
const NOT_ANSWERED: &str = "no answer in time: its messages may be kept";

/// Wait for the answers (within `within`): every one kept, or the batch's answer counting
/// all of its `count` messages; the stream sequence of the last message.
async fn settle(
    within: Duration,
    acks: Vec<PublishAckFuture>,
    atomic: bool,
    count: usize,
) -> Result<u64, Refusal> {
    let mut last = 0;
    let deadline = tokio::time::Instant::now() + within;
    for ack in acks {
        let answer = match super::late_wake::by(deadline, ack.into_future()).await {
            Some(answer) => answer,
            None => return Err(Refusal::NotAnswered),
        };
        let ack = match answer {
            Ok(ack) => ack,
            Err(e) if e.kind() == PublishErrorKind::StreamNotFound => {
                return Err(Refusal::NoResponders(e.to_string()))
            }
            Err(e) if e.kind() == PublishErrorKind::TimedOut => return Err(Refusal::NotAnswered),
            Err(e) if atomic && is_duplicate(&e) => return Err(Refusal::Duplicate),
            Err(e) => {
                return Err(Refusal::Other(unavailable(format!(
                    "cluster store refused: {e}"
                ))))
            }
        };
        if atomic && ack.batch_size != Some(count as u64) {
            return Err(Refusal::Other(unavailable(format!(
                "cluster store answered {:?} messages of a batch of {count}",
                ack.batch_size
            ))));
        }
        last = ack.sequence;
    }
    Ok(last)
}

/// nats-server's answer to an atomic batch holding a message id it keeps already.
const BATCH_DUPLICATE_MESSAGE_ID: ErrorCode = ErrorCode(10201);

/// Whether the stream refused a batch because it keeps one of its message ids (the batch
/// is a copy of one it kept: every id of a batch is new when it is first sent).
fn is_duplicate(e: &async_nats::jetstream::context::PublishError) -> bool {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<async_nats::jetstream::Error>())
        .is_some_and(|api| api.error_code() == BATCH_DUPLICATE_MESSAGE_ID)
}
