//! The acknowledgements of a STOMP transaction kept with its queue SENDs (`queue_batch.rs`).
//!
//! A COMMIT of queue work stores its SENDs in [`QUEUE_STREAM`] as one atomic batch; the
//! messages it acknowledged (taken by this node from the same stream) must leave the stream
//! with that batch, or not at all. JetStream's acknowledgements are not part of a batch, so
//! the batch carries one more message: a redo record on [`REDO_PREFIX`]`.<node>` listing the
//! stream sequences the transaction acknowledged. Once the batch is kept the node acknowledges
//! them at once ([`acknowledge`]); the record is what makes them happen if it dies first.
//!
//! Every node sweeps the records ([`start`]): one durable consumer ([`REDO_CONSUMER`], on
//! the record subjects only, which no queue's subject matches: a queue's subject is one
//! encoded token, and `$` is always escaped there) hands each record to one node, which,
//! once the record is older than [`grace`] (the committing node has done it by then, or is
//! gone), deletes every listed message still in the stream and then acknowledges the record
//! (a work queue: that removes it). Deleting a message a node acknowledged already finds
//! nothing; one delivered again meanwhile (its node died, `nodeTimeout` passed) reaches that
//! consumer once more (at least once) and then leaves.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{pull, AckPolicy};
use async_nats::jetstream::message::AckKind;
use async_nats::jetstream::stream::DeleteMessageErrorKind;
use async_nats::jetstream::ErrorCode;
use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::engine::Inner;
use super::queues::{Item, QUEUE_PREFIX, QUEUE_STREAM};
use crate::broker::durability::{now_ms, QueueSeq};

/// Subject prefix of redo records (inside the queue stream's subjects).
pub fn redo_prefix() -> String {
    format!("{QUEUE_PREFIX}.$tx")
}
/// The durable consumer every node pulls redo records from.
pub const REDO_CONSUMER: &str = "QTXREDO";
/// How often a node looks for records.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// Records read per look.
const SWEEP_BATCH: usize = 64;
/// How long a record a sweep took stays its own without an answer: a node that dies with
/// records it fetched leaves them to the others after this. Short, because a topic record
/// waiting here is a committed message not yet delivered; a sweep marks the record it is
/// applying as in progress (which starts this wait again), and a record applied twice (its
/// wait ran out while another one of the same fetch was applied) changes nothing the second
/// time: its acknowledgements and deletions find their messages gone, its topic message is a
/// copy the shard stream drops.
const RECORD_ACK_WAIT: Duration = Duration::from_secs(2);

/// One transaction's acknowledgements, as stored (JSON).
#[derive(Debug, Serialize, Deserialize)]
struct Redo {
    /// When the node committed it (ms since the epoch, the node's clock).
    at_ms: u64,
    /// Stream sequences of the messages it acknowledged.
    acks: Vec<u64>,
    /// Their deliveries' acknowledgement subjects, in the same order (empty when they did
    /// not fit in [`REPLIES_AT_MOST`], or from a node before them): a sweep acknowledges
    /// through them, as the dead node would have, and deletes only what that does not
    /// answer. An acknowledgement is the consumer's change, which the servers apply in
    /// bulk: 2,000 took 0.08 s on one server where 2,000 deletions took 1.9 s, each a change
    /// of the stream replicated on its own. JetStream takes one for a delivery its ack wait
    /// gave to another consumer since, and answers a repeated one as done.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    replies: Vec<String>,
}

/// The most bytes of acknowledgement subjects a record carries (NATS's `max_payload` is
/// 1 MiB by default; a record is one message of the batch).
const REPLIES_AT_MOST: usize = 256 * 1024;

/// How old a record is before a sweep applies it: about the time its node takes to do it
/// (the acknowledgements of a kept batch go out at once; at most 1 s, a quarter of
/// `nodeTimeout`), well before JetStream's ack wait (`nodeTimeout`) gives a dead node's
/// acknowledged messages to another consumer. Applying a record early is harmless (its
/// batch is kept: its acknowledgements are committed); it only doubles work.
fn grace(inner: &Inner) -> Duration {
    inner
        .store_timeout
        .min(node_timeout(inner) / 4)
        .clamp(Duration::from_millis(500), Duration::from_secs(1))
}

/// The stream sequences of `acked` (entries this node took from the queue stream), and the
/// redo record listing them, to store last in the transaction's batch. `None` when none of
/// them is a message of the stream still held here.
pub(super) fn record(inner: &Inner, acked: &[QueueSeq]) -> Option<Item> {
    let (acks, replies): (Vec<u64>, Vec<Option<String>>) = {
        let pending = inner.queues.pending.lock();
        acked
            .iter()
            .filter_map(|seq| pending.get(seq))
            .filter(|p| !p.purged)
            .map(|p| (p.stream_seq, p.reply.as_ref().map(|r| r.to_string())))
            .unzip()
    };
    if acks.is_empty() {
        return None;
    }
    let bytes: usize = replies
        .iter()
        .map(|r| r.as_ref().map_or(0, String::len))
        .sum();
    let replies = if bytes <= REPLIES_AT_MOST {
        replies.into_iter().collect::<Option<Vec<String>>>()
    } else {
        None
    };
    let payload = serde_json::to_vec(&Redo {
        at_ms: now_ms(),
        acks,
        replies: replies.unwrap_or_default(),
    })
    .ok()?;
    let counter = inner
        .counter
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Some(Item {
        subject: format!("{}.{:x}", redo_prefix(), inner.instance),
        id: format!("tx.{:x}.{counter}", inner.instance),
        payload: Bytes::from(payload),
    })
}

/// The batch holding the record of `acked` (at stream sequence `record_seq`, 0 when not
/// known) is kept: acknowledge those messages (all at once), take them out of this node's
/// held entries so that the transaction's commit of their removal sends nothing more, and
/// then delete the record (in the background). Done once every acknowledgement is confirmed,
/// so the transaction's RECEIPT follows them: a node that dies after it leaves nothing to
/// redo. An acknowledgement not confirmed (a leader election of the stream) is made a
/// deletion of the message, tried again until `nodeTimeout` (before JetStream's ack wait
/// would give the message to another consumer); past that the record is left to a sweep.
pub(super) async fn acknowledge(inner: &Arc<Inner>, acked: &[QueueSeq], record_seq: u64) {
    let taken: Vec<_> = {
        let mut pending = inner.queues.pending.lock();
        acked.iter().filter_map(|seq| pending.remove(seq)).collect()
    };
    // For a while (past JetStream's ack wait), a pull that brings one back does not deliver
    // it again: an acknowledgement a stream's leader confirmed and lost in its failover, or
    // one not confirmed during a leader election, lets JetStream redeliver the message.
    inner.queues.committed_acks.lock().add(
        taken.iter().map(|p| p.stream_seq),
        Instant::now() + node_timeout(inner) * 3,
    );
    let deadline = tokio::time::Instant::now() + node_timeout(inner);
    let gone = futures_util::future::join_all(taken.iter().map(|p| async {
        let acked = tokio::time::timeout(inner.store_timeout, p.acker.double_ack()).await;
        let gone = matches!(acked, Ok(Ok(()))) || remove(inner, p.stream_seq, deadline).await;
        if gone {
            super::give_backs::forget(inner, p.stream_seq);
        } else {
            // Still not confirmed: deleted in the background (the record covers a crash).
            let node = inner.clone();
            let seq = p.stream_seq;
            tokio::spawn(async move {
                // Bounded (30 `nodeTimeout`s): past that the record's sweep does it.
                for _ in 0..30 {
                    let until = tokio::time::Instant::now() + node_timeout(&node);
                    if remove(&node, seq, until).await {
                        super::give_backs::forget(&node, seq);
                        break;
                    }
                }
            });
            tracing::warn!(
                stream_seq = p.stream_seq,
                "cluster queue: a message a committed STOMP transaction acknowledged is not \
                 confirmed gone yet; deleted in the background (its redo record covers a crash)"
            );
        }
        gone
    }))
    .await;
    if gone.iter().all(|g| *g) && record_seq != 0 {
        let node = inner.clone();
        tokio::spawn(async move {
            remove(&node, record_seq, deadline).await;
        });
    }
}

/// Delete message `seq` of the queue stream, tried again until `deadline`: whether it is gone.
async fn remove(inner: &Inner, seq: u64, deadline: tokio::time::Instant) -> bool {
    let Ok(stream) = inner.js.get_stream_no_info(QUEUE_STREAM).await else {
        return false;
    };
    loop {
        match stream.delete_message(seq).await {
            Ok(_) => return true,
            Err(e) if is_gone(&e) => return true,
            Err(e) if tokio::time::Instant::now() >= deadline => {
                tracing::debug!(seq, "cluster queue: message not deleted: {e}");
                return false;
            }
            Err(_) => tokio::time::sleep(RETRY_AFTER).await,
        }
    }
}

/// How long a deletion refused waits before it is tried again.
const RETRY_AFTER: Duration = Duration::from_millis(250);

fn node_timeout(inner: &Inner) -> Duration {
    Duration::from_millis(inner.settings.node_timeout_ms.max(1000))
}

/// Sweep redo records every [`SWEEP_EVERY`] while the node runs.
pub(super) fn start(inner: &Arc<Inner>) {
    let weak = Arc::downgrade(inner);
    tokio::spawn(async move {
        // The stream and the consumer, looked up once and kept while sweeps succeed (not
        // two JetStream API requests a second on every node).
        let mut handles = None;
        loop {
            tokio::time::sleep(SWEEP_EVERY).await;
            let Some(inner) = weak.upgrade() else { return };
            if !inner.is_available() {
                continue;
            }
            if let Err(e) = sweep(&inner, &mut handles).await {
                handles = None;
                warn_sweep_failed(&format!("not swept: {e}"));
            }
        }
    });
}

/// Apply the records old enough (see the module documentation).
/// The queue stream and the redo records' consumer, once looked up.
type Handles = (
    async_nats::jetstream::stream::Stream,
    async_nats::jetstream::consumer::Consumer<pull::Config>,
);

async fn sweep(inner: &Arc<Inner>, handles: &mut Option<Handles>) -> Result<(), async_nats::Error> {
    if handles.is_none() {
        let stream = match inner.js.get_stream(QUEUE_STREAM).await {
            Ok(stream) => stream,
            Err(e) if super::queue_purge::stream_missing(&e) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let config = pull::Config {
            durable_name: Some(REDO_CONSUMER.to_owned()),
            filter_subject: format!("{}.>", redo_prefix()),
            ack_policy: AckPolicy::Explicit,
            ack_wait: RECORD_ACK_WAIT,
            ..Default::default()
        };
        let mut consumer = stream
            .get_or_create_consumer(REDO_CONSUMER, config.clone())
            .await?;
        if consumer.cached_info().config.ack_wait != RECORD_ACK_WAIT {
            // Made by a node that gave a dead sweep's records to another one later.
            if let Ok(updated) = stream.update_consumer(config).await {
                consumer = updated;
            }
        }
        *handles = Some((stream, consumer));
    }
    let Some((stream, consumer)) = handles.as_ref() else {
        return Ok(());
    };
    let mut records = consumer
        .fetch()
        .max_messages(SWEEP_BATCH)
        .expires(Duration::from_secs(1))
        .messages()
        .await?;
    let grace = grace(inner);
    while let Some(message) = records.next().await {
        let message = message?;
        if super::topic_redo::is_record_subject(&message.subject) {
            sweep_topic_record(inner, message, grace).await?;
            continue;
        }
        let Ok(redo) = serde_json::from_slice::<Redo>(&message.payload) else {
            tracing::warn!(
                subject = %message.subject,
                "cluster queue: a redo record that does not decode, dropped"
            );
            message.double_ack().await?;
            continue;
        };
        let age = Duration::from_millis(now_ms().saturating_sub(redo.at_ms));
        if age < grace {
            message
                .ack_with(AckKind::Nak(Some(grace.saturating_sub(age))))
                .await?;
            continue;
        }
        // One record at a time, each within its bound: a record that cannot be applied now
        // is offered again soon (not left for the consumer's ack wait) and does not hold
        // up the others.
        message.ack_with(AckKind::Progress).await?;
        let bound = inner.store_timeout * 2 + Duration::from_millis(redo.acks.len() as u64 * 20);
        match tokio::time::timeout(bound, apply(inner, stream, &redo)).await {
            Ok(Ok(applied)) => {
                if applied > 0 {
                    tracing::info!(
                        applied,
                        of = redo.acks.len(),
                        "cluster queue: acknowledgements of a committed STOMP transaction \
                         applied from its redo record (its node did not confirm them)"
                    );
                }
                message.double_ack().await?;
            }
            failed => {
                let why = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => "not done in time".to_owned(),
                };
                warn_sweep_failed(&format!("a redo record not applied yet: {why}"));
                message.ack_with(AckKind::Nak(Some(SWEEP_EVERY))).await?;
            }
        }
    }
    Ok(())
}

/// A topic SEND's record (`topic_redo.rs`): stored in its shard stream once older than
/// `grace`, then acknowledged (which removes it); offered again soon when the store fails.
/// A record of a format this node does not know is left for a node that does.
async fn sweep_topic_record(
    inner: &Arc<Inner>,
    message: async_nats::jetstream::Message,
    grace: Duration,
) -> Result<(), async_nats::Error> {
    let Some(record) = super::topic_redo::TopicRecord::decode(&message.payload) else {
        warn_sweep_failed("a topic record this node cannot read (a newer node's?) left");
        message
            .ack_with(AckKind::Nak(Some(SWEEP_EVERY * 10)))
            .await?;
        return Ok(());
    };
    if let Some(wait) = super::topic_redo::due(&record, grace) {
        message.ack_with(AckKind::Nak(Some(wait))).await?;
        return Ok(());
    }
    message.ack_with(AckKind::Progress).await?;
    let messages = record.entries.len();
    match super::topic_redo::apply(inner, record).await {
        Ok(()) => {
            tracing::info!(
                messages,
                "cluster queue: topic messages of a committed STOMP transaction stored from \
                 its record (its node had not confirmed them; a copy it stored is dropped)"
            );
            message.double_ack().await?;
        }
        Err(e) => {
            warn_sweep_failed(&format!("a topic record not applied yet: {e}"));
            message.ack_with(AckKind::Nak(Some(SWEEP_EVERY))).await?;
        }
    }
    Ok(())
}

/// Acknowledgements or deletions a sweep has in flight at once.
const IN_FLIGHT: usize = 64;

/// Remove every message `redo` lists that the stream still holds, [`IN_FLIGHT`] at a time:
/// acknowledged through its delivery's subject when the record carries it, deleted when it
/// does not or when that acknowledgement is not answered (its consumer gone); how many it
/// removed. The first failure (other than "not there") is the error; the removals made stay
/// made (the record is applied again later, and a second one finds nothing).
async fn apply(
    inner: &Arc<Inner>,
    stream: &async_nats::jetstream::stream::Stream,
    redo: &Redo,
) -> Result<usize, async_nats::jetstream::stream::DeleteMessageError> {
    let replies = (redo.replies.len() == redo.acks.len()).then_some(&redo.replies);
    let mut removals = futures_util::stream::iter(redo.acks.iter().copied().enumerate())
        .map(|(at, seq)| {
            let reply = replies.and_then(|r| r.get(at)).cloned();
            async move {
                if let Some(reply) = reply {
                    // A request, not the acker's double ack: that takes any answer for done,
                    // the "no responders" of a consumer gone too.
                    let acked = tokio::time::timeout(
                        inner.store_timeout,
                        inner.client.request(reply, Bytes::from_static(b"+ACK")),
                    )
                    .await;
                    if matches!(acked, Ok(Ok(_))) {
                        return (seq, Ok(true));
                    }
                }
                match stream.delete_message(seq).await {
                    Ok(_) => (seq, Ok(true)),
                    Err(e) if is_gone(&e) => (seq, Ok(false)),
                    Err(e) => (seq, Err(e)),
                }
            }
        })
        .buffer_unordered(IN_FLIGHT);
    let mut applied = 0;
    let mut failed = None;
    while let Some((seq, removed)) = removals.next().await {
        match removed {
            Ok(true) => {
                applied += 1;
                super::give_backs::forget(inner, seq);
            }
            Ok(false) => {}
            Err(e) => {
                failed.get_or_insert(e);
            }
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(applied),
    }
}

/// A sweep that failed, logged at most once a minute (a node sweeps every second).
fn warn_sweep_failed(why: &str) {
    static LAST: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let now = now_ms();
    let last = LAST.load(std::sync::atomic::Ordering::Relaxed);
    if now.saturating_sub(last) >= 60_000
        && LAST
            .compare_exchange(
                last,
                now,
                std::sync::atomic::Ordering::Relaxed,
                std::sync::atomic::Ordering::Relaxed,
            )
            .is_ok()
    {
        tracing::warn!("cluster queue: redo records: {why}");
    }
}

/// The message is not in the stream (acknowledged already, purged, past `maxOfflineAge`):
/// nats-server answers a deletion of a sequence it does not hold with 10057 "no message
/// found" (10037 elsewhere).
fn is_gone(e: &async_nats::jetstream::stream::DeleteMessageError) -> bool {
    matches!(e.kind(), DeleteMessageErrorKind::JetStream(api)
        if api.error_code() == ErrorCode::NO_MESSAGE_FOUND
            || (api.error_code() == ErrorCode::STREAM_MESSAGE_DELETE_FAILED
                && api.to_string().starts_with("no message found")))
}

/// Stream sequences this node's committed transactions acknowledged, each until its expiry
/// (three `nodeTimeout`s: past JetStream's ack wait of a message brought back after a leader
/// election), at most [`CommittedAcks::MAX`] (the oldest go first). Expiries are expected in
/// the order of the additions (one duration for all).
#[derive(Default)]
pub struct CommittedAcks {
    held: std::collections::HashSet<u64>,
    by_expiry: std::collections::VecDeque<(Instant, u64)>,
}

impl CommittedAcks {
    /// The most sequences kept (8 bytes and a set entry each).
    const MAX: usize = 1_000_000;

    /// Hold `seqs` until `until`; drop what expired.
    pub fn add(&mut self, seqs: impl Iterator<Item = u64>, until: Instant) {
        self.prune(Instant::now());
        for seq in seqs {
            if self.held.insert(seq) {
                self.by_expiry.push_back((until, seq));
            }
        }
        while self.by_expiry.len() > Self::MAX {
            if let Some((_, seq)) = self.by_expiry.pop_front() {
                self.held.remove(&seq);
            }
        }
    }

    /// Whether `seq` is held (not expired).
    pub fn holds(&mut self, seq: u64) -> bool {
        self.prune(Instant::now());
        self.held.contains(&seq)
    }

    fn prune(&mut self, now: Instant) {
        while self.by_expiry.front().is_some_and(|(at, _)| *at <= now) {
            if let Some((_, seq)) = self.by_expiry.pop_front() {
                self.held.remove(&seq);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_acks_are_held_until_they_expire() {
        // Expiries come in the order of the additions (one duration for all).
        let mut acks = CommittedAcks::default();
        let now = Instant::now();
        acks.add([3].into_iter(), now);
        acks.add([1, 2].into_iter(), now + Duration::from_secs(60));
        assert!(acks.holds(1) && acks.holds(2));
        assert!(!acks.holds(3), "expired");
        assert!(!acks.holds(4));
    }
}
