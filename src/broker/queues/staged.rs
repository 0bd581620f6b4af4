//! A STOMP transaction's queue work, staged for one store commit with the rest of the
//! transaction: the messages it sends (entries not in their queues yet) and the deliveries it
//! acknowledges (out of their consumers' windows, not removed yet), with the changes that keep
//! both. The caller commits every change of the transaction at once; once that commit is kept,
//! [`Queues::apply_staged`] puts the messages in their queues and counts the acknowledgements,
//! so a consumer sees nothing of the transaction before all of it is kept. If the commit fails,
//! [`Queues::undo_staged`] gives the acknowledged deliveries back to their queues (redelivered,
//! as when their consumer leaves) and the messages are dropped: nothing of it happened.
//!
//! A queue kept by a shared store (a cluster) takes the transaction's sends as one
//! [`SharedQueues::store_all`](super::SharedQueues::store_all), kept before the
//! acknowledgements' changes are committed ([`Queues::store_staged`]); its messages reach
//! the local queue from the shared store, as every message of such a queue does.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::landing::Reservation;
use super::queue::{AckError, Entry};
use super::{Queue, QueueConsumer, Queues, SendError};
use crate::broker::durability::{Change, Commit, DurabilityError, QueueSeq};
use crate::broker::message::Message;
use crate::protocol::QoS;

/// A message staged for a queue.
struct StagedSend {
    queue: Arc<Queue>,
    entry: Entry,
}

/// Deliveries of one consumer taken out of its window for a transaction's acknowledgement
/// ([`QueueConsumer::take_for_transaction`]): still held by their queue (a cluster node does
/// not give them back to the shared store) until they are staged and kept
/// ([`QueueStaging::stage_taken`]), or given back ([`Queues::give_back_taken`]).
#[must_use = "taken deliveries are held until staged or given back"]
pub struct TakenDeliveries {
    queue: Arc<Queue>,
    entries: Vec<Entry>,
}

impl std::fmt::Debug for TakenDeliveries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TakenDeliveries")
            .field("queue", &self.queue.name)
            .field("entries", &self.entries.len())
            .finish()
    }
}

/// The queue work of one transaction, in frame order (see the module documentation).
#[derive(Default)]
pub struct QueueStaging {
    sends: Vec<StagedSend>,
    /// Sends to queues a shared store keeps, for one [`Queues::store_staged`].
    shared_sends: Vec<(Arc<Queue>, Message)>,
    /// Deliveries staged as acknowledged.
    acks: Vec<TakenDeliveries>,
    changes: Vec<Change>,
    /// The sends' places in their queues, reserved at the COMMIT ([`Queues::reserve_staged`]):
    /// what the connection sends after the COMMIT enters after them.
    places: Vec<Reservation>,
}

impl std::fmt::Debug for QueueStaging {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueStaging")
            .field("sends", &self.sends.len())
            .field("shared_sends", &self.shared_sends.len())
            .field("acks", &self.acks.len())
            .field("changes", &self.changes.len())
            .finish()
    }
}

impl QueueStaging {
    /// What keeps the staged work: new entries (and the records of queues not known to be
    /// kept yet), removals of acknowledged ones.
    pub fn changes(&self) -> &[Change] {
        &self.changes
    }

    /// Whether it holds sends to queues a shared store keeps ([`Queues::store_staged`]).
    pub fn has_shared_sends(&self) -> bool {
        !self.shared_sends.is_empty()
    }

    /// Stage deliveries taken earlier as acknowledged: their removal is kept with the rest of
    /// the transaction.
    pub fn stage_taken(&mut self, taken: TakenDeliveries) {
        for entry in taken.entries.iter().filter(|e| e.kept) {
            self.changes.push(Change::Removed {
                owner: taken.queue.owner.clone(),
                seq: entry.seq,
            });
        }
        self.acks.push(taken);
    }
}

impl Queues {
    /// Stage `message` for queue `name` (a temporary queue when `temporary`: it must exist).
    /// Its room was granted with the rest of its transaction: it is not checked against
    /// `memoryUsage`/`storeUsage` again. Nothing reaches the queue before
    /// [`Queues::apply_staged`].
    pub fn stage_send(
        &self,
        staging: &mut QueueStaging,
        name: &str,
        temporary: bool,
        message: Message,
    ) -> Result<(), SendError> {
        let queue = if temporary {
            self.queues
                .read()
                .get(name)
                .filter(|q| q.temporary)
                .cloned()
                .ok_or_else(|| {
                    SendError::Durability(DurabilityError::Unavailable(
                        "the temporary queue was deleted".into(),
                    ))
                })?
        } else {
            if let Some(targets) = self.composite_targets(name) {
                // A composite queue's send is one staged send per target queue.
                let copy = self.composite_copy(name, &message);
                for (i, target) in targets.queues.into_iter().enumerate() {
                    let sent = if targets.own && i == 0 {
                        message.clone()
                    } else {
                        copy.clone()
                    };
                    self.stage_one(staging, target, sent);
                }
                return Ok(());
            }
            self.get_or_create(name)
        };
        self.stage_one(staging, queue, message);
        Ok(())
    }

    fn stage_one(&self, staging: &mut QueueStaging, queue: Arc<Queue>, message: Message) {
        if self.shared().is_some() && !queue.temporary {
            staging.shared_sends.push((queue, message));
            return;
        }
        let persistent = message.qos != QoS::AtMostOnce;
        let entry = self.new_entry(&queue, message, persistent);
        if entry.kept {
            for change in self.kept(&queue, &entry) {
                // One record of a new queue is enough for the whole transaction.
                let declared = matches!(change, Change::QueueDeclared { .. })
                    && staging.changes.contains(&change);
                if !declared {
                    staging.changes.push(change);
                }
            }
        }
        staging.sends.push(StagedSend { queue, entry });
    }

    /// Store the staged sends to queues a shared store keeps, as one unit with the topic
    /// publishes `topics` and the staged acknowledgements of its entries
    /// ([`SharedQueues::store_all`](super::SharedQueues::store_all)); done at once when
    /// there are neither sends nor publishes. Commit the staged changes only once it is done:
    /// a failure then leaves nothing of the transaction applied.
    pub fn store_staged(&self, staging: &QueueStaging, topics: &[super::TopicSend]) -> Commit {
        let Some(shared) = self
            .shared()
            .filter(|_| staging.has_shared_sends() || !topics.is_empty())
        else {
            return Commit::done();
        };
        let sends: Vec<(Arc<str>, Message)> = staging
            .shared_sends
            .iter()
            .map(|(queue, message)| (queue.name.clone(), message.clone()))
            .collect();
        let acked: Vec<QueueSeq> = staging
            .acks
            .iter()
            .filter(|a| !a.queue.temporary)
            .flat_map(|a| a.entries.iter().filter(|e| e.kept).map(|e| e.seq))
            .collect();
        shared.store_all(&sends, topics, &acked)
    }

    /// The COMMIT was read: the staged sends take their places in their queues' order
    /// (`landing.rs`), so that a SEND after the COMMIT, kept sooner, does not enter first.
    pub fn reserve_staged(&self, staging: &mut QueueStaging) {
        let places: Vec<Reservation> = staging
            .sends
            .iter()
            .map(|s| self.reserve(&s.queue, s.entry.seq))
            .collect();
        staging.places.extend(places);
    }

    /// The staged work's changes are kept: the messages enter their queues (and are
    /// dispatched), in the order they were staged, and the acknowledgements count.
    pub fn apply_staged(&self, staging: QueueStaging) {
        for (queue, _) in staging.shared_sends {
            // Its consumers get it from the shared store.
            queue.state.lock().counts.enqueued += 1;
        }
        for StagedSend { queue, entry } in staging.sends {
            if entry.kept {
                queue.declared.store(true, Ordering::Relaxed);
            }
            let ((), out) = queue.with(|s, now, ctx, out| s.land(entry, now, ctx, out));
            self.settle_in_background(&queue, out);
        }
        staging.places.into_iter().for_each(Reservation::landed);
        for TakenDeliveries { queue, entries } in staging.acks {
            let count = entries.len();
            let seqs: Vec<QueueSeq> = entries.iter().map(|e| e.seq).collect();
            let ((), out) = queue.with(|s, now, ctx, out| {
                s.unstage(seqs);
                s.acknowledged(count, now, ctx, out)
            });
            drop(entries);
            self.settle_in_background(&queue, out);
        }
    }

    /// The staged work's changes were not kept: the staged messages are dropped, the
    /// acknowledged deliveries go back to their queues, redelivered.
    pub fn undo_staged(&self, staging: QueueStaging) {
        drop(staging.sends);
        // Their places are given up: what waited behind them enters.
        drop(staging.places);
        for taken in staging.acks {
            self.give_back_taken(taken);
        }
    }

    /// Deliveries taken for a transaction that did not keep them: back in their queue,
    /// redelivered, as when their consumer leaves.
    pub fn give_back_taken(&self, taken: TakenDeliveries) {
        let TakenDeliveries { queue, entries } = taken;
        let (consumers, out) = queue.with(|s, now, ctx, out| {
            s.given_back(entries, now, ctx, out);
            s.consumer_count()
        });
        self.settle_in_background(&queue, out);
        if consumers == 0 {
            // Their consumer left before its transaction ended: with no consumer here, a
            // shared store (a cluster) takes them back for the other nodes' consumers, as it
            // does when the last consumer leaves.
            if let Some(shared) = self.shared().filter(|_| !queue.temporary) {
                shared.consumers(&queue.name, 0);
            }
        }
    }
}

impl QueueConsumer {
    /// Stage the acknowledgement of deliveries `seqs` (all held by this consumer, or none is
    /// staged): they leave its window now, and their removal is kept with the rest of the
    /// transaction.
    pub fn stage_ack(&self, staging: &mut QueueStaging, seqs: &[QueueSeq]) -> Result<(), AckError> {
        staging.stage_taken(self.take_for_transaction(seqs)?);
        Ok(())
    }

    /// Take deliveries `seqs` (all held by this consumer, or none is taken) out of its window
    /// for a transaction that acknowledged them and has not ended yet: they stay with the
    /// transaction when this consumer leaves (ActiveMQ keeps a transacted acknowledgement of
    /// a consumer closed before its COMMIT).
    pub fn take_for_transaction(&self, seqs: &[QueueSeq]) -> Result<TakenDeliveries, AckError> {
        let (taken, _) = self
            .queue
            .with(|s, _, _, _| s.take_delivered(self.id, seqs));
        Ok(TakenDeliveries {
            queue: self.queue.clone(),
            entries: taken?,
        })
    }
}
