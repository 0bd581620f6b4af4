//! The true redelivery count of a STOMP queue's messages across nodes (`queues.rs`).
//!
//! JetStream counts every pull of a message as a delivery (`num_delivered`), but a node often
//! pulls a message that none of its consumers takes (a selector refuses it, the consumer left,
//! its window stayed full) and gives it back (a NAK). That pull is no delivery: on one broker,
//! and in ActiveMQ, a consumer whose selector refuses a message never counts.
//!
//! So a node that gives a message back first tells every node, on the core subject
//! [`NOTE_SUBJECT`], the message's true redelivery count at that point ([`Note`]: stream
//! sequence, the JetStream delivery count of the pull that ends, and the redeliveries its
//! local entry carries: only MESSAGE frames sent to a client and not acknowledged raised
//! them), then sends the NAK on the same NATS connection, so the note leaves first; the NAK
//! also carries a delay of at least `queues::NAK_DELAY`, which the note does not wait for.
//! Every node keeps the notes ([`GiveBacks`]) and a pull takes its redelivery count from the
//! latest note of the message ([`GiveBacks::redeliveries`]): the noted count, plus one for
//! each pull since that left no note (a node that died holding the message: it may have
//! delivered it, so it counts, as before).
//!
//! The message stays at its place in the stream (no republish): a consumer that takes it gets
//! it in its producer's order.
//!
//! A note is dropped when its message is acknowledged or dead-lettered (the acknowledging node
//! tells the others with a forget note), purged (`queue_purge.rs`'s end notice), or below the
//! stream's first sequence (looked at every [`PRUNE_EVERY`] while notes are kept). At most
//! [`CAPACITY`] notes are kept: past that the lowest sequences are forgotten. A starting node
//! asks the others for theirs ([`SYNC_SUBJECT`], in the background). A forgotten note, one
//! lost or late (past the NAK's delay), and one a starting node had not learned yet when it
//! pulled the message all degrade to JetStream's count for that message: each pull counts, as
//! before.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::message::{AckKind, Acker};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::engine::Inner;

/// Where nodes tell each other what give-backs left of a message's redelivery count.
pub const NOTE_SUBJECT: &str = "fmq.qgb";
/// Where a starting node asks the others for the notes they keep ([`Batch`] answers).
pub const SYNC_SUBJECT: &str = "fmq.qgbsync";
/// Notes per answer to a starting node (some 100 bytes each in JSON: well within NATS's
/// default 1 MiB payload).
const SYNC_CHUNK: usize = 2_000;
/// The most notes a node keeps (about 100 bytes each).
pub const CAPACITY: usize = 100_000;
/// How often a node with notes drops those below the stream's first sequence.
pub const PRUNE_EVERY: Duration = Duration::from_secs(30);

/// One give-back (or, `forget`, the message is gone from the stream), as sent on
/// [`NOTE_SUBJECT`] in JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Note {
    /// The message's sequence in `FMQ_QUEUES`.
    pub seq: u64,
    /// The queue's name (a purge drops its notes by queue).
    pub queue: String,
    /// JetStream's delivery count of the pull that gave the message back (1 for the first).
    pub delivered: u64,
    /// Times the message was delivered to a client and came back, as of the give-back: the
    /// next pull's redelivery count.
    pub redeliveries: u32,
    /// The message left the stream (acknowledged, dead-lettered): drop its note.
    #[serde(default)]
    pub forget: bool,
}

/// One part of a node's answer to a starting node: the notes it keeps, [`SYNC_CHUNK`] at a
/// time, in JSON; `last` on the final part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    /// The answering node's id.
    pub node: String,
    pub notes: Vec<Note>,
    pub last: bool,
}

#[derive(Debug, Clone)]
struct Tally {
    queue: Arc<str>,
    delivered: u64,
    redeliveries: u32,
}

/// The notes this node knows, by stream sequence (plain data).
#[derive(Debug, Default)]
pub struct GiveBacks {
    by_seq: BTreeMap<u64, Tally>,
}

impl GiveBacks {
    /// Apply a note (this node's own or another's). A note of an earlier pull than the one
    /// kept is stale and ignored.
    pub fn apply(&mut self, note: &Note) {
        if note.forget {
            self.by_seq.remove(&note.seq);
            return;
        }
        if self
            .by_seq
            .get(&note.seq)
            .is_some_and(|t| t.delivered >= note.delivered)
        {
            return;
        }
        let queue = match self.by_seq.get(&note.seq) {
            Some(t) if *t.queue == *note.queue => t.queue.clone(),
            _ => Arc::from(note.queue.as_str()),
        };
        self.by_seq.insert(
            note.seq,
            Tally {
                queue,
                delivered: note.delivered,
                redeliveries: note.redeliveries,
            },
        );
        while self.by_seq.len() > CAPACITY {
            self.by_seq.pop_first();
        }
    }

    /// The redelivery count of message `seq` pulled with JetStream delivery count `delivered`:
    /// the latest note's count plus the pulls after it that left none; `delivered - 1`
    /// without a note, or with one from a later pull than this one (the queue's consumer was
    /// made again and counts from 1).
    pub fn redeliveries(&self, seq: u64, delivered: u64) -> u32 {
        let plain = delivered.saturating_sub(1);
        let count = match self.by_seq.get(&seq) {
            Some(t) if t.delivered < delivered => {
                u64::from(t.redeliveries).saturating_add(plain - t.delivered)
            }
            _ => plain,
        };
        u32::try_from(count).unwrap_or(u32::MAX)
    }

    /// Every note kept, for a starting node.
    pub fn notes(&self) -> Vec<Note> {
        self.by_seq
            .iter()
            .map(|(seq, t)| Note {
                seq: *seq,
                queue: t.queue.to_string(),
                delivered: t.delivered,
                redeliveries: t.redeliveries,
                forget: false,
            })
            .collect()
    }

    /// Drop the note of message `seq`; whether there was one.
    pub fn forget(&mut self, seq: u64) -> bool {
        self.by_seq.remove(&seq).is_some()
    }

    /// Drop the notes of `queue` below sequence `before` (a purge removed those messages).
    pub fn forget_queue_below(&mut self, queue: &str, before: u64) {
        self.by_seq
            .retain(|seq, t| *seq >= before || *t.queue != *queue);
    }

    /// Drop every note below sequence `first` (the stream's first: the rest are gone).
    pub fn forget_below(&mut self, first: u64) {
        self.by_seq = self.by_seq.split_off(&first);
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.by_seq.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_seq.is_empty()
    }
}

/// Give message `seq` of `queue` back to the stream (a NAK delayed by `delay`) after telling
/// every node that its redelivery count is `redeliveries` (it was pulled with JetStream count
/// `delivered`): the note is applied here at once, then published, then the NAK is sent, on
/// one connection in that order.
pub(super) fn give_back(
    inner: &Arc<Inner>,
    queue: &str,
    seq: u64,
    delivered: u64,
    redeliveries: u32,
    acker: Arc<Acker>,
    delay: Duration,
) {
    let note = Note {
        seq,
        queue: queue.to_owned(),
        delivered,
        redeliveries,
        forget: false,
    };
    inner.queues.give_backs.lock().apply(&note);
    let client = inner.client.clone();
    let timeout = inner.store_timeout;
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            publish(&client, &note, timeout).await;
            if let Err(e) = acker.ack_with(AckKind::Nak(Some(delay))).await {
                tracing::debug!("cluster queue: give-back not sent: {e}");
            }
        });
    }
}

/// Message `seq` left the stream (this node acknowledged or dead-lettered it): its note, if
/// this node kept one, is dropped here and on the other nodes.
pub(super) fn forget(inner: &Arc<Inner>, seq: u64) {
    if !inner.queues.give_backs.lock().forget(seq) {
        return;
    }
    let note = Note {
        seq,
        queue: String::new(),
        delivered: 0,
        redeliveries: 0,
        forget: true,
    };
    let client = inner.client.clone();
    let timeout = inner.store_timeout;
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move { publish(&client, &note, timeout).await });
    }
}

async fn publish(client: &async_nats::Client, note: &Note, timeout: Duration) {
    let Ok(payload) = serde_json::to_vec(note) else {
        return;
    };
    match tokio::time::timeout(timeout, client.publish(NOTE_SUBJECT, payload.into())).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(
            seq = note.seq,
            "cluster queue: give-back note not sent: {e}"
        ),
        Err(_) => tracing::debug!(
            seq = note.seq,
            "cluster queue: give-back note not sent in time"
        ),
    }
}

/// Take the other nodes' notes (this node's own come back too: applying one twice changes
/// nothing), answer starting nodes with the notes kept here, ask the others for theirs (in
/// the background: a pull before their answers counts as JetStream does), and drop the notes
/// below the stream's first sequence every [`PRUNE_EVERY`].
pub async fn start(inner: &Arc<Inner>) -> anyhow::Result<()> {
    let mut notes = inner
        .client
        .subscribe(NOTE_SUBJECT)
        .await
        .map_err(|e| anyhow::anyhow!("cluster: queue give-back subscription: {e}"))?;
    let mut requests = inner
        .client
        .subscribe(SYNC_SUBJECT)
        .await
        .map_err(|e| anyhow::anyhow!("cluster: queue give-back subscription: {e}"))?;
    let node = Arc::downgrade(inner);
    tokio::spawn(async move {
        while let Some(request) = requests.next().await {
            let Some(inner) = node.upgrade() else { return };
            let Some(reply) = request.reply else { continue };
            answer(&inner, reply).await;
        }
    });
    // After the note subscription: a note sent while the others answer arrives through it.
    let node = inner.clone();
    tokio::spawn(async move { ask(&node).await });
    let node = Arc::downgrade(inner);
    tokio::spawn(async move {
        while let Some(message) = notes.next().await {
            let Some(inner) = node.upgrade() else { return };
            // A peer's payload: one that is not a note is skipped.
            if let Ok(note) = serde_json::from_slice::<Note>(&message.payload) {
                inner.queues.give_backs.lock().apply(&note);
            }
        }
    });
    let node = Arc::downgrade(inner);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(PRUNE_EVERY).await;
            let Some(inner) = node.upgrade() else { return };
            if inner.queues.give_backs.lock().is_empty() {
                continue;
            }
            let first = async {
                let mut stream = inner
                    .js
                    .get_stream(super::queues::QUEUE_STREAM)
                    .await
                    .ok()?;
                let info = stream.info().await.ok()?;
                Some(info.state.first_sequence)
            };
            if let Ok(Some(first)) = tokio::time::timeout(inner.store_timeout, first).await {
                inner.queues.give_backs.lock().forget_below(first);
            }
        }
    });
    Ok(())
}

/// Send the notes kept here to a starting node's `reply` subject, [`SYNC_CHUNK`] at a time.
async fn answer(inner: &Inner, reply: async_nats::Subject) {
    let notes = inner.queues.give_backs.lock().notes();
    let mut chunks: Vec<Vec<Note>> = notes.chunks(SYNC_CHUNK).map(<[Note]>::to_vec).collect();
    if chunks.is_empty() {
        chunks.push(Vec::new());
    }
    let count = chunks.len();
    for (i, notes) in chunks.into_iter().enumerate() {
        let batch = Batch {
            node: inner.node_id.clone(),
            notes,
            last: i + 1 == count,
        };
        let Ok(payload) = serde_json::to_vec(&batch) else {
            return;
        };
        let publish = inner.client.publish(reply.clone(), payload.into());
        if !matches!(
            tokio::time::timeout(inner.store_timeout, publish).await,
            Ok(Ok(()))
        ) {
            tracing::debug!("cluster queue: give-back notes not sent to a starting node");
            return;
        }
    }
}

/// How long a starting node waits at most for the others' notes.
const SYNC_WAIT: Duration = Duration::from_secs(3);

/// Ask the other nodes for the notes they keep and apply them, until every node believed
/// alive answered in full, or `storeTimeout` (at most [`SYNC_WAIT`]) passed. A node just
/// started may know no peer yet (their heartbeats come within `heartbeatInterval`): it then
/// takes what comes within that time.
async fn ask(inner: &Arc<Inner>) {
    let inbox = inner.client.new_inbox();
    let Ok(mut replies) = inner.client.subscribe(inbox.clone()).await else {
        return;
    };
    if inner
        .client
        .publish_with_reply(SYNC_SUBJECT, inbox, bytes::Bytes::new())
        .await
        .is_err()
    {
        return;
    }
    let mut done = std::collections::HashSet::new();
    let mut learned = 0usize;
    let deadline = tokio::time::Instant::now() + inner.store_timeout.min(SYNC_WAIT);
    loop {
        let expected: Vec<String> = super::drain::live_peers(inner)
            .into_iter()
            .filter(|n| *n != inner.node_id)
            .collect();
        if !expected.is_empty() && expected.iter().all(|n| done.contains(n)) {
            break;
        }
        match tokio::time::timeout_at(deadline, replies.next()).await {
            Ok(Some(message)) => {
                // A peer's payload: one that is not a batch is skipped.
                let Ok(batch) = serde_json::from_slice::<Batch>(&message.payload) else {
                    continue;
                };
                learned += batch.notes.len();
                let mut tallies = inner.queues.give_backs.lock();
                for note in &batch.notes {
                    tallies.apply(note);
                }
                drop(tallies);
                if batch.last {
                    done.insert(batch.node);
                }
            }
            _ => break,
        }
    }
    let _ = replies.unsubscribe().await;
    if learned > 0 {
        tracing::debug!(
            notes = learned,
            nodes = done.len(),
            "cluster queue: give-back notes learned from the other nodes"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(seq: u64, delivered: u64, redeliveries: u32) -> Note {
        Note {
            seq,
            queue: "q".to_owned(),
            delivered,
            redeliveries,
            forget: false,
        }
    }

    #[test]
    fn a_pull_counts_only_what_the_notes_do_not_explain() {
        let mut tallies = GiveBacks::default();
        // No note: JetStream's count, as before.
        assert_eq!(tallies.redeliveries(7, 1), 0);
        assert_eq!(tallies.redeliveries(7, 3), 2);
        // Pulled twice and given back undelivered each time: the third pull is a first
        // delivery.
        tallies.apply(&note(7, 1, 0));
        tallies.apply(&note(7, 2, 0));
        assert_eq!(tallies.redeliveries(7, 3), 0);
        // A fourth pull after a third that left no note (its node died holding it): that
        // pull may have delivered it, so it counts.
        assert_eq!(tallies.redeliveries(7, 4), 1);
        // Delivered to a client who left with it unacknowledged: the note says 1.
        tallies.apply(&note(7, 3, 1));
        assert_eq!(tallies.redeliveries(7, 4), 1);
        // A late note of an earlier pull changes nothing.
        tallies.apply(&note(7, 2, 0));
        assert_eq!(tallies.redeliveries(7, 4), 1);
        // Redelivered on its node by the redelivery plugin (NACKed twice), then given back:
        // more redeliveries than pulls.
        tallies.apply(&note(7, 4, 3));
        assert_eq!(tallies.redeliveries(7, 5), 3);
        // A consumer made again counts from 1: the note is of another consumer's pulls.
        assert_eq!(tallies.redeliveries(7, 1), 0);
        // Other messages are not touched.
        assert_eq!(tallies.redeliveries(8, 2), 1);
    }

    #[test]
    fn notes_are_dropped_when_their_messages_leave() {
        let mut tallies = GiveBacks::default();
        for seq in 1..=10 {
            tallies.apply(&note(seq, 1, 0));
        }
        tallies.apply(&Note {
            queue: "other".to_owned(),
            ..note(11, 1, 0)
        });
        assert!(tallies.forget(3));
        assert!(!tallies.forget(3));
        tallies.apply(&Note {
            forget: true,
            ..note(4, 0, 0)
        });
        assert_eq!(tallies.len(), 9);
        tallies.forget_queue_below("q", 8);
        assert_eq!(tallies.len(), 4, "8, 9, 10 and the other queue's 11");
        assert_eq!(tallies.redeliveries(11, 2), 0);
        tallies.forget_below(10);
        assert_eq!(tallies.len(), 2);
        assert_eq!(
            tallies.redeliveries(9, 2),
            1,
            "forgotten: JetStream's count"
        );
    }

    #[test]
    fn the_notes_are_bounded() {
        let mut tallies = GiveBacks::default();
        for seq in 0..(CAPACITY as u64 + 10) {
            tallies.apply(&note(seq, 1, 0));
        }
        assert_eq!(tallies.len(), CAPACITY);
        // The lowest sequences went first.
        assert_eq!(tallies.redeliveries(0, 2), 1);
        assert_eq!(tallies.redeliveries(CAPACITY as u64 + 9, 2), 0);
    }

    #[test]
    fn a_starting_node_learns_every_note_kept() {
        let mut kept = GiveBacks::default();
        kept.apply(&note(3, 2, 0));
        kept.apply(&note(9, 1, 1));
        let batch = Batch {
            node: "node-0".to_owned(),
            notes: kept.notes(),
            last: true,
        };
        let wire = serde_json::to_vec(&batch).expect("json");
        let got: Batch = serde_json::from_slice(&wire).expect("batch");
        let mut learned = GiveBacks::default();
        got.notes.iter().for_each(|n| learned.apply(n));
        assert_eq!(learned.notes(), kept.notes());
        assert_eq!(learned.redeliveries(3, 3), 0);
        assert_eq!(learned.redeliveries(9, 2), 1);
    }

    #[test]
    fn a_peer_payload_that_is_no_note_is_refused() {
        assert!(serde_json::from_slice::<Note>(b"{\"seq\":1}").is_err());
        assert!(serde_json::from_slice::<Note>(b"not json").is_err());
        let wire = serde_json::to_vec(&note(5, 2, 1)).expect("json");
        assert_eq!(
            serde_json::from_slice::<Note>(&wire).expect("note"),
            note(5, 2, 1)
        );
    }
}
