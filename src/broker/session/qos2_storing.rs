//! Inbound QoS 2 PUBLISHes whose commit is still on its way, per packet id.
//!
//! The packet id enters the session's `inbound_qos2` set when its PUBLISH is read, before the
//! store answers: a PUBLISH re-sent with that id (on a connection that took the session over
//! at once, or on the same one) must not be answered PUBREC from the set alone while that
//! answer may still be "not kept" (a store I/O error): the PUBREC would stand for a message
//! nobody stored. The re-send waits for the first copy's [`Qos2Outcome`] instead.

use tokio::sync::watch;

/// Whether the first copy of a QoS 2 PUBLISH was kept: `None` while its commit is on its
/// way, then `Some(kept)`. A sender dropped without an answer counts as not kept.
pub type Qos2Outcome = watch::Receiver<Option<bool>>;

/// The sending side, held by the commit's waiter: [`StoringQos2::settle`] answers.
pub type Qos2OutcomeSender = watch::Sender<Option<bool>>;

/// A new outcome, not answered yet.
pub fn outcome() -> (Qos2OutcomeSender, Qos2Outcome) {
    watch::channel(None)
}

/// Whether the first copy was kept, once its commit answered (`false` if its waiter went
/// away without an answer).
pub async fn kept(mut outcome: Qos2Outcome) -> bool {
    matches!(
        outcome
            .wait_for(Option::is_some)
            .await
            .map(|answer| *answer),
        Ok(Some(true))
    )
}

/// A session's outcomes still on their way (usually none; kept in the session's queues,
/// which an inbound QoS 2 exchange allocates anyway).
#[derive(Debug, Default)]
pub struct StoringQos2 {
    pending: Vec<(u16, Qos2Outcome)>,
}

/// Not session data: a copy of a session's state (a snapshot for the store) has no commit on
/// its way.
impl Clone for StoringQos2 {
    fn clone(&self) -> Self {
        StoringQos2::new()
    }
}

/// Not session data: two states equal as data whatever commits are on their way.
impl PartialEq for StoringQos2 {
    fn eq(&self, _other: &Self) -> bool {
        true
    }
}

impl Eq for StoringQos2 {}

impl StoringQos2 {
    pub const fn new() -> Self {
        StoringQos2 {
            pending: Vec::new(),
        }
    }

    /// No commit on its way.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// `packet_id`'s first copy is being stored; a later one of the same id replaces it.
    pub fn begin(&mut self, packet_id: u16, outcome: Qos2Outcome) {
        self.pending.retain(|(id, _)| *id != packet_id);
        self.pending.push((packet_id, outcome));
    }

    /// The outcome `packet_id`'s re-send must wait for, if its first copy is being stored.
    pub fn of(&self, packet_id: u16) -> Option<Qos2Outcome> {
        self.pending
            .iter()
            .find(|(id, _)| *id == packet_id)
            .map(|(_, outcome)| outcome.clone())
    }

    /// `outcome` answered: forget it (not a newer one of the same id).
    pub fn settle(&mut self, packet_id: u16, outcome: &Qos2Outcome) {
        self.pending
            .retain(|(id, o)| !(*id == packet_id && o.same_channel(outcome)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_resend_waits_for_the_first_copys_answer() {
        let mut storing = StoringQos2::default();
        let (first, outcome_of_first) = outcome();
        storing.begin(7, outcome_of_first.clone());
        let waiting = storing.of(7).expect("pending");
        assert!(storing.of(8).is_none());
        let waiter = tokio::spawn(kept(waiting));
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "answered before the store did");
        first.send_replace(Some(true));
        assert!(waiter.await.expect("join"));
        storing.settle(7, &outcome_of_first);
        assert!(storing.of(7).is_none() && storing.is_empty());
    }

    #[tokio::test]
    async fn a_dropped_waiter_or_a_refusal_is_not_kept() {
        let (refused, outcome_refused) = outcome();
        refused.send_replace(Some(false));
        assert!(!kept(outcome_refused).await);
        let (dropped, outcome_dropped) = outcome();
        drop(dropped);
        assert!(!kept(outcome_dropped).await);
    }

    #[test]
    fn settling_an_older_outcome_keeps_the_newer_one() {
        let mut storing = StoringQos2::default();
        let (_older_tx, older) = outcome();
        let (_newer_tx, newer) = outcome();
        storing.begin(3, older.clone());
        storing.begin(3, newer.clone());
        storing.settle(3, &older);
        assert!(storing.of(3).is_some_and(|o| o.same_channel(&newer)));
    }
}
