//! An administrator's purge of a STOMP queue across the nodes (the web console's Purge,
//! `SharedQueues::purge`). A queue's messages wait in the stream `FMQ_QUEUES` and, once a node
//! pulled them for its consumers, in that node's local queue, so the purge is done in both:
//!
//! 1. **The purge point.** The purging node reads the stream's last sequence: the purge is of
//!    the messages stored up to there. One stored later (a SEND racing the purge) is never
//!    touched, neither by the stream's purge nor by a node.
//! 2. **Every node drops its copies** (a request on [`PURGE_SUBJECT`], which every node
//!    answers, the purging node too): under the queue's floor ([`Floor`]), the entries of that
//!    queue it pulled below the point leave its local queue if no consumer has them yet
//!    (given back with a delay: the stream's purge removes them; a purge that fails gets them
//!    back after the hold), and those delivered and not acknowledged stay with their
//!    consumer, whose ACK succeeds, but are dropped rather than delivered again when it
//!    leaves or NACKs them, as ActiveMQ's `Queue.purge()` removes messages in flight too.
//!    While the floor holds, the node pulls nothing of the queue, and a message below the
//!    point that a pull in flight brings is given back unseen.
//! 3. **The stream's purge**: a JetStream purge filtered by the queue's subject, up to the
//!    point. The subject is a literal (the subject codec escapes `.`, `*` and `>` in a name),
//!    so no other queue's messages match it. Its count is the answer's `purged`: every
//!    message of the queue the stream held, waiting, pulled or delivered and unacknowledged.
//! 4. **Done** ([`DONE_SUBJECT`]): the nodes lift the floor and pull again. A lost notice is
//!    covered by the floor's end ([`hold`]), after the purge's own time bound.
//!
//! A node that does not answer in time (dead, cut off from NATS, starting) is named in the
//! answer: a dead node's copies are in the stream and purged with the rest; a node cut off
//! but alive may still hand its undelivered copies to its consumers (their ACK then
//! acknowledges nothing).

use std::collections::{BTreeMap, HashSet};
use std::future::IntoFuture;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::message::AckKind;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::engine::Inner;
use super::queues::{queue_subject, send_ack, unavailable, NAK_DELAY, QUEUE_STREAM};
use crate::broker::durability::{DurabilityError, QueueSeq};
use crate::broker::queues::SharedPurge;

/// Purge requests; every node answers.
pub const PURGE_SUBJECT: &str = "fmq.qpurge.request";
/// A purge is over: the nodes lift its floor.
pub const DONE_SUBJECT: &str = "fmq.qpurge.done";
/// The longest floor a request may ask for (a peer's number, bounded before use).
const HOLD_AT_MOST: Duration = Duration::from_secs(120);

/// A queue being purged on this node: pulled messages below `before` are the purge's.
#[derive(Debug, Clone, Copy)]
pub struct Floor {
    before: u64,
    until: Instant,
}

impl Floor {
    /// Whether the floor takes stream message `stream_seq` at `now`; what is left of it.
    pub fn purges(&self, stream_seq: u64, now: Instant) -> Option<Duration> {
        (stream_seq < self.before && now < self.until).then(|| self.until - now)
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Request {
    queue: String,
    /// The purge point: stream sequences below it are purged.
    before: u64,
    hold_ms: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Answer {
    node: String,
    /// The queue is declared or was used on that node (not one of its temporary queues).
    known: bool,
    /// Undelivered copies it dropped.
    dropped: usize,
    /// Delivered copies its consumers keep.
    kept: usize,
}

#[derive(Debug, Serialize, Deserialize)]
struct Done {
    queue: String,
    before: u64,
}

/// How long a node holds a queue's floor: longer than the purging node may take (the
/// stream's sequence read, the nodes' answers and the purge, each within `storeTimeout`).
fn hold(inner: &Inner) -> Duration {
    (inner.store_timeout * 3 + Duration::from_secs(1)).min(HOLD_AT_MOST)
}

/// Whether queue `name` is being purged here: its puller waits.
pub fn purging(inner: &Inner, name: &str) -> bool {
    inner
        .queues
        .floors
        .read()
        .get(name)
        .is_some_and(|f| Instant::now() < f.until)
}

/// Purge queue `queue` across the nodes (see the module documentation).
pub async fn purge(inner: &Arc<Inner>, queue: &str) -> Result<SharedPurge, DurabilityError> {
    if !inner.is_available() {
        return Err(unavailable(
            "the cluster store's quorum is unreachable from this node",
        ));
    }
    let bound = inner.store_timeout;
    let stream = match tokio::time::timeout(bound, inner.js.get_stream(QUEUE_STREAM)).await {
        Ok(Ok(stream)) => Some(stream),
        // No queue was ever used in this cluster: nothing is stored, nodes hold nothing.
        Ok(Err(e)) if stream_missing(&e) => None,
        Ok(Err(e)) => return Err(unavailable(format!("cluster queue stream: {e}"))),
        Err(_) => return Err(unavailable("cluster queue stream not answered in time")),
    };
    let before = stream
        .as_ref()
        .map_or(0, |s| s.cached_info().state.last_sequence.saturating_add(1));
    let (answers, silent) = tell_nodes(inner, queue, before).await?;
    let purged = match &stream {
        Some(stream) => {
            let purge = stream.purge().filter(queue_subject(queue)).sequence(before);
            let result = tokio::time::timeout(bound, purge.into_future()).await;
            lift_everywhere(inner, queue, before).await;
            match result {
                Ok(Ok(answer)) => answer.purged,
                Ok(Err(e)) => return Err(unavailable(format!("cluster queue purge: {e}"))),
                Err(_) => {
                    return Err(unavailable(
                        "cluster queue purge not answered in time (it may still happen)",
                    ))
                }
            }
        }
        None => {
            lift_everywhere(inner, queue, before).await;
            0
        }
    };
    let dropped: usize = answers.values().map(|a| a.dropped).sum();
    let kept: usize = answers.values().map(|a| a.kept).sum();
    tracing::debug!(queue, purged, dropped, kept, "cluster queue purged");
    Ok(SharedPurge {
        purged,
        known: purged > 0 || answers.values().any(|a| a.known),
        answered: answers.into_keys().collect(),
        silent,
    })
}

pub(super) fn stream_missing(e: &async_nats::jetstream::context::GetStreamError) -> bool {
    matches!(
        e.kind(),
        async_nats::jetstream::context::GetStreamErrorKind::JetStream(api)
            if api.error_code() == async_nats::jetstream::ErrorCode::STREAM_NOT_FOUND
    )
}

/// Ask every node to drop its copies below `before`; their answers by node id, and the
/// nodes believed alive (heard within `nodeTimeout`) that did not answer within
/// `storeTimeout`.
async fn tell_nodes(
    inner: &Arc<Inner>,
    queue: &str,
    before: u64,
) -> Result<(BTreeMap<String, Answer>, Vec<String>), DurabilityError> {
    let request = Request {
        queue: queue.to_owned(),
        before,
        hold_ms: u64::try_from(hold(inner).as_millis()).unwrap_or(u64::MAX),
    };
    let payload = serde_json::to_vec(&request).map_err(|e| unavailable(e.to_string()))?;
    let inbox = inner.client.new_inbox();
    let mut replies = inner
        .client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| unavailable(format!("cluster queue purge: {e}")))?;
    inner
        .client
        .publish_with_reply(PURGE_SUBJECT, inbox, payload.into())
        .await
        .map_err(|e| unavailable(format!("cluster queue purge: {e}")))?;
    let mut expected: HashSet<String> = super::drain::live_peers(inner).into_iter().collect();
    expected.insert(inner.node_id.clone());
    let deadline = tokio::time::Instant::now() + inner.store_timeout;
    let mut answers: BTreeMap<String, Answer> = BTreeMap::new();
    while !expected.iter().all(|n| answers.contains_key(n)) {
        match tokio::time::timeout_at(deadline, replies.next()).await {
            Ok(Some(message)) => {
                if let Ok(answer) = serde_json::from_slice::<Answer>(&message.payload) {
                    answers.insert(answer.node.clone(), answer);
                }
            }
            _ => break,
        }
    }
    let _ = replies.unsubscribe().await;
    let mut silent: Vec<String> = expected
        .into_iter()
        .filter(|n| !answers.contains_key(n))
        .collect();
    silent.sort();
    Ok((answers, silent))
}

/// Tell every node the purge is over (this one directly: its own notice may come late).
async fn lift_everywhere(inner: &Inner, queue: &str, before: u64) {
    lift(inner, queue, before);
    let done = Done {
        queue: queue.to_owned(),
        before,
    };
    if let Ok(payload) = serde_json::to_vec(&done) {
        let publish = inner.client.publish(DONE_SUBJECT, payload.into());
        if tokio::time::timeout(inner.store_timeout, publish)
            .await
            .is_err()
        {
            tracing::debug!(
                queue,
                "cluster queue purge: end not announced; floors lapse"
            );
        }
    }
}

/// The floor of `queue` at `before` ends here (a later purge's floor stays).
fn lift(inner: &Inner, queue: &str, before: u64) {
    // The purge removed those messages (or, failed, leaves them to count each pull again).
    inner
        .queues
        .give_backs
        .lock()
        .forget_queue_below(queue, before);
    let mut floors = inner.queues.floors.write();
    if floors.get(queue).is_some_and(|f| f.before <= before) {
        floors.remove(queue);
    }
}

/// Drop this node's copies of `queue` below `before` and hold the queue's pulls for `hold`:
/// (undelivered copies dropped, delivered copies kept by their consumers).
fn drop_here(inner: &Inner, queue: &str, before: u64, hold: Duration) -> (usize, usize) {
    let Some(core) = inner.core() else {
        return (0, 0);
    };
    let now = Instant::now();
    let until = now + hold.min(HOLD_AT_MOST);
    // Held until the copies are gone: a pull of this queue inserts under it shared.
    let mut floors = inner.queues.floors.write();
    floors.retain(|_, f| now < f.until);
    if before > 0 {
        let floor = floors
            .entry(Arc::from(queue))
            .or_insert(Floor { before, until });
        floor.before = floor.before.max(before);
        floor.until = floor.until.max(until);
    }
    let mine: HashSet<QueueSeq> = inner
        .queues
        .pending
        .lock()
        .iter()
        .filter(|(_, p)| &*p.queue == queue && p.stream_seq < before)
        .map(|(seq, _)| *seq)
        .collect();
    let (gone, kept) = core.queues.purge_shared(queue, &mine);
    let gone: HashSet<QueueSeq> = gone.into_iter().collect();
    {
        let mut pending = inner.queues.pending.lock();
        for seq in &mine {
            if gone.contains(seq) {
                if let Some(p) = pending.remove(seq) {
                    // Left to the stream's purge; back after the hold should it fail.
                    send_ack(p.acker, AckKind::Nak(Some(hold.max(NAK_DELAY))));
                }
            } else if let Some(p) = pending.get_mut(seq) {
                p.purged = true;
            }
        }
    }
    drop(floors);
    (gone.len(), kept)
}

/// Answer other nodes' purge requests and notices.
pub async fn start(inner: &Arc<Inner>) -> anyhow::Result<()> {
    let mut requests = inner
        .client
        .subscribe(PURGE_SUBJECT)
        .await
        .map_err(|e| anyhow::anyhow!("cluster: queue purge subscription: {e}"))?;
    let mut notices = inner
        .client
        .subscribe(DONE_SUBJECT)
        .await
        .map_err(|e| anyhow::anyhow!("cluster: queue purge subscription: {e}"))?;
    let node = inner.clone();
    tokio::spawn(async move {
        while let Some(message) = requests.next().await {
            let Ok(request) = serde_json::from_slice::<Request>(&message.payload) else {
                continue;
            };
            let hold = Duration::from_millis(request.hold_ms).min(HOLD_AT_MOST);
            let (dropped, kept) = drop_here(&node, &request.queue, request.before, hold);
            if dropped + kept > 0 {
                tracing::info!(
                    queue = %crate::security::Bounded(&request.queue),
                    dropped,
                    kept,
                    "cluster queue purge: copies pulled here dropped"
                );
            }
            let answer = Answer {
                node: node.node_id.clone(),
                known: node
                    .core()
                    .is_some_and(|core| core.queues.has_shared(&request.queue)),
                dropped,
                kept,
            };
            let (Some(reply), Ok(payload)) = (message.reply, serde_json::to_vec(&answer)) else {
                continue;
            };
            let _ = node.client.publish(reply, payload.into()).await;
        }
    });
    let node = inner.clone();
    tokio::spawn(async move {
        while let Some(message) = notices.next().await {
            if let Ok(done) = serde_json::from_slice::<Done>(&message.payload) {
                lift(&node, &done.queue, done.before);
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_floor_takes_what_was_stored_before_the_point_while_it_holds() {
        let now = Instant::now();
        let floor = Floor {
            before: 10,
            until: now + Duration::from_secs(2),
        };
        assert_eq!(floor.purges(9, now), Some(Duration::from_secs(2)));
        assert_eq!(floor.purges(10, now), None, "stored after the point");
        assert_eq!(
            floor.purges(1, now + Duration::from_secs(2)),
            None,
            "lapsed"
        );
    }

    #[test]
    fn a_queue_subject_matches_no_other_queue() {
        // The purge filter is the queue's subject: a name holding NATS wildcards or dots is
        // escaped into a literal, so it cannot match another queue's subject.
        for name in ["a.*", "a.>", ">", "*", "a.b"] {
            let subject = queue_subject(name);
            assert!(
                !subject[QUEUE_SUBJECT_PREFIX_LEN..].contains(['*', '>']),
                "{subject}"
            );
            assert_eq!(subject.split('.').count(), 3, "{subject}");
        }
        assert_ne!(queue_subject("a.b"), queue_subject("a/b"));
    }

    const QUEUE_SUBJECT_PREFIX_LEN: usize = "fmq.q.".len();
}
