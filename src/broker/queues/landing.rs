//! The order in which new messages enter a queue: the order of their sends.
//!
//! A persistent send enters its queue once the store has kept it, and the store's answers
//! reach the waiting tasks in no fixed order (a group commit answers many sends at once, and
//! the runtime runs their tasks on any worker). Entering at the answer would let a later send
//! of the same producer be dispatched before an earlier one: a pipelining STOMP producer (one
//! that does not wait for each RECEIPT) saw a quarter of its messages out of order. So a
//! kept send reserves its place (its sequence) before it is committed, and a message enters
//! the queue only when every send reserved before it has entered or failed. A non-persistent
//! send behind a persistent one still being kept waits for it too, as it would in ActiveMQ,
//! whose producer's persistent send returns only once stored.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};

use super::queue::Entry;
use super::{Queue, Queues};
use crate::broker::durability::{Commit, QueueSeq};

/// A send's reserved place in its queue: [`Reservation::fill`] lands its message there;
/// dropped unfilled (the commit failed, or its task ended without an answer), the place is
/// given up so that the queue does not wait for it forever.
pub(super) struct Reservation {
    queues: Weak<Queues>,
    queue: Arc<Queue>,
    seq: QueueSeq,
    open: bool,
}

impl Reservation {
    /// The reserved send was kept: its message lands (see [`Queues::land`]).
    pub fn fill(mut self, entry: Entry) -> Commit {
        self.open = false;
        match self.queues.upgrade() {
            Some(queues) => queues.land(&self.queue, entry),
            None => Commit::done(),
        }
    }
}

impl Reservation {
    /// The message of this place landed another way (by its sequence, [`Queues::land`]).
    pub fn landed(mut self) {
        self.open = false;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.open {
            return;
        }
        let Some(queues) = self.queues.upgrade() else {
            return;
        };
        let seq = self.seq;
        let ((), out) = self
            .queue
            .with(|s, now, ctx, out| s.cancel_landing(seq, now, ctx, out));
        queues.settle_in_background(&self.queue, out);
    }
}

impl Queues {
    /// Reserve the place of the send of `seq` in `queue` before it is committed.
    pub(super) fn reserve(&self, queue: &Arc<Queue>, seq: QueueSeq) -> Reservation {
        // Reserving dispatches nothing: its outcome is empty.
        let ((), _) = queue.with(|s, _, _, _| s.reserve_landing(seq));
        Reservation {
            queues: self.me.clone(),
            queue: queue.clone(),
            seq,
            open: true,
        }
    }

    /// A new message enters `queue` once the sends reserved before it have (at once when
    /// none waits); the commit is that of what entering it changed (dispatch, dead letters).
    pub(super) fn land(&self, queue: &Arc<Queue>, entry: Entry) -> Commit {
        let ((), out) = queue.with(|s, now, ctx, out| s.land(entry, now, ctx, out));
        self.settle(queue, out)
    }
}

/// Sends of one queue not yet entered (inside the queue's state, under its mutex).
#[derive(Default)]
pub(super) struct Landing {
    /// By sequence: `None` while its send is being kept, the entry once it is.
    slots: BTreeMap<QueueSeq, Option<Entry>>,
}

impl Landing {
    /// No send waits: a new message may enter at once.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The send of sequence `seq` is being kept: what lands after it waits for it.
    pub fn reserve(&mut self, seq: QueueSeq) {
        self.slots.insert(seq, None);
    }

    /// `entry` may enter (kept, or never to be kept): the entries that may enter now, in
    /// sequence order (none while a send reserved before it is still being kept).
    pub fn land(&mut self, entry: Entry) -> Vec<Entry> {
        self.slots.insert(entry.seq, Some(entry));
        self.ready_front()
    }

    /// The send of `seq` failed (or was abandoned) before it landed: its place is given up
    /// and the entries behind it may enter. A place already landed is left alone.
    pub fn cancel(&mut self, seq: QueueSeq) -> Vec<Entry> {
        if matches!(self.slots.get(&seq), Some(None)) {
            self.slots.remove(&seq);
        }
        self.ready_front()
    }

    fn ready_front(&mut self) -> Vec<Entry> {
        let mut ready = Vec::new();
        while let Some(first) = self.slots.first_entry() {
            if first.get().is_none() {
                break;
            }
            if let Some(entry) = first.remove() {
                ready.push(entry);
            }
        }
        ready
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: QueueSeq) -> Entry {
        crate::broker::queues::tests::kept_entry(seq, false)
    }

    fn seqs(entries: &[Entry]) -> Vec<QueueSeq> {
        entries.iter().map(|e| e.seq).collect()
    }

    #[test]
    fn a_later_send_kept_first_waits_for_the_earlier_one() {
        let mut landing = Landing::default();
        landing.reserve(1);
        landing.reserve(2);
        landing.reserve(3);
        assert!(landing.land(entry(3)).is_empty());
        assert!(landing.land(entry(2)).is_empty());
        assert_eq!(seqs(&landing.land(entry(1))), [1, 2, 3]);
        assert!(landing.is_empty());
    }

    #[test]
    fn a_failed_send_lets_the_ones_behind_it_enter() {
        let mut landing = Landing::default();
        landing.reserve(1);
        landing.reserve(2);
        assert!(landing.land(entry(2)).is_empty());
        assert_eq!(seqs(&landing.cancel(1)), [2]);
        assert!(landing.is_empty());
    }

    #[test]
    fn an_unreserved_message_waits_behind_a_reserved_one_only() {
        let mut landing = Landing::default();
        landing.reserve(5);
        assert!(landing.land(entry(6)).is_empty(), "behind 5");
        assert_eq!(seqs(&landing.land(entry(5))), [5, 6]);
        assert_eq!(seqs(&landing.land(entry(7))), [7], "nothing reserved");
    }

    #[test]
    fn cancelling_a_landed_place_keeps_its_entry() {
        let mut landing = Landing::default();
        landing.reserve(1);
        landing.reserve(2);
        assert!(landing.land(entry(2)).is_empty());
        assert!(landing.cancel(2).is_empty(), "2 landed: still waits for 1");
        assert_eq!(seqs(&landing.land(entry(1))), [1, 2]);
        assert!(landing.cancel(9).is_empty());
    }
}
