//! Outbound QoS 1/2 messages sent to a client and not yet fully acknowledged, with packet-id
//! allocation. Kept in session state (not the connection) so that a reconnecting clean-session-0
//! client gets them again: PUBLISH with DUP=1, or PUBREL for those already PUBREC'd (MQTT 3.1.1
//! 4.4: retransmission happens on reconnect only, never on a timer).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::broker::durability::QueueSeq;
use crate::broker::message::{qos_serde, Message};
use crate::broker::session::queue::QueuedMessage;
use crate::protocol::QoS;

/// Where an outbound QoS 1/2 exchange stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum InflightStage {
    /// QoS 1 PUBLISH sent.
    AwaitingPubAck,
    /// QoS 2 PUBLISH sent.
    AwaitingPubRec,
    /// PUBREC received, PUBREL sent.
    AwaitingPubComp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InflightEntry {
    pub packet_id: u16,
    pub message: Message,
    #[serde(with = "qos_serde")]
    pub qos: QoS,
    pub retain: bool,
    /// The Subscription Identifier sent with it (re-sent with the same one).
    #[serde(default)]
    pub subscription_id: Option<std::num::NonZeroU32>,
    pub stage: InflightStage,
    /// The durable store's queue entry for this message (persistent session, durable broker,
    /// QoS 1/2), named in the store ops that acknowledgements cause.
    #[serde(default)]
    pub seq: Option<QueueSeq>,
    /// The shared subscription it was routed through (see `QueuedMessage::shared_group`).
    #[serde(skip)]
    pub shared_group: Option<std::sync::Arc<str>>,
}

/// What an acknowledgement from the client did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckOutcome {
    /// The exchange advanced or completed; a window slot may be free. `seq`: the entry's
    /// durable queue entry, if it has one.
    Accepted { seq: Option<QueueSeq> },
    /// No exchange with this id is at the stage this ack belongs to (late duplicate): ignored.
    Unknown,
}

/// In-flight window in send order (retransmission keeps the original order).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Inflight {
    entries: VecDeque<InflightEntry>,
    next_packet_id: u16,
    /// The entries' ids lie in send order on the circle of ids, from the oldest's to the
    /// newest's: an id past the newest's and short of the oldest's is then free without a
    /// scan of the window (a scan per delivery was the costliest step of a QoS 1 fan-out).
    /// False once an id had to be found by a scan (the ids wrapped onto a live exchange) or
    /// a restored one came out of turn; true again when the window empties.
    #[serde(skip)]
    ids_in_turn: bool,
}

impl PartialEq for Inflight {
    fn eq(&self, other: &Self) -> bool {
        self.entries == other.entries && self.next_packet_id == other.next_packet_id
    }
}

impl Eq for Inflight {}

/// Steps from id `from` forward to id `to` on the circle of packet ids 1..=65535.
fn ids_between(from: u16, to: u16) -> u32 {
    let span = u32::from(u16::MAX);
    (u32::from(to) + span - u32::from(from)) % span
}

impl Default for Inflight {
    fn default() -> Self {
        Inflight::new()
    }
}

impl Inflight {
    pub const fn new() -> Self {
        Inflight {
            entries: VecDeque::new(),
            next_packet_id: 1,
            ids_in_turn: true,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &InflightEntry> {
        self.entries.iter()
    }

    /// Record a QoS 1/2 PUBLISH about to be sent; returns its packet id, or `None` when all
    /// 65535 ids are in use (the caller's window is far smaller, so this is only a guard).
    pub fn insert(&mut self, item: &QueuedMessage) -> Option<u16> {
        let qos = item.qos;
        let packet_id = self.allocate_packet_id()?;
        let stage = if qos == QoS::ExactlyOnce {
            InflightStage::AwaitingPubRec
        } else {
            InflightStage::AwaitingPubAck
        };
        self.entries.push_back(InflightEntry {
            packet_id,
            message: item.message.clone(),
            qos,
            retain: item.retain,
            subscription_id: item.subscription_id,
            stage,
            seq: item.seq,
            shared_group: item.shared_group.clone(),
        });
        Some(packet_id)
    }

    /// Put back an exchange recovered from the durable store, with its packet id and stage
    /// (entries arrive in send order). An id already in use is refused (returns false).
    pub fn restore(&mut self, entry: InflightEntry) -> bool {
        if self.entries.iter().any(|e| e.packet_id == entry.packet_id) {
            return false;
        }
        if self.entries.is_empty() {
            self.ids_in_turn = true;
        } else if !self.is_past_newest(entry.packet_id) {
            self.ids_in_turn = false;
        }
        self.next_packet_id = entry.packet_id.checked_add(1).unwrap_or(1);
        self.entries.push_back(entry);
        true
    }

    fn allocate_packet_id(&mut self) -> Option<u16> {
        if self.entries.len() >= usize::from(u16::MAX) {
            return None;
        }
        if self.entries.is_empty() {
            self.ids_in_turn = true;
        }
        loop {
            let candidate = self.next_packet_id;
            self.next_packet_id = candidate.checked_add(1).unwrap_or(1);
            if self.ids_in_turn && self.is_past_newest(candidate) {
                return Some(candidate);
            }
            // Found by a scan: the ids no longer go round in turn.
            self.ids_in_turn = false;
            if !self.entries.iter().any(|e| e.packet_id == candidate) {
                return Some(candidate);
            }
        }
    }

    /// `id` lies past the newest entry's id and short of the oldest's, going round the circle
    /// from the oldest (true for an empty window). Only meaningful while `ids_in_turn`.
    fn is_past_newest(&self, id: u16) -> bool {
        match (self.entries.front(), self.entries.back()) {
            (Some(oldest), Some(newest)) => {
                ids_between(oldest.packet_id, id) > ids_between(oldest.packet_id, newest.packet_id)
            }
            _ => true,
        }
    }

    pub fn on_puback(&mut self, packet_id: u16) -> AckOutcome {
        self.remove_at_stage(packet_id, InflightStage::AwaitingPubAck)
    }

    /// PUBREC: the caller answers with PUBREL (also for ids it already moved on, since a
    /// re-sent PUBREC means the client did not get our PUBREL).
    pub fn on_pubrec(&mut self, packet_id: u16) -> AckOutcome {
        match self.entries.iter_mut().find(|e| e.packet_id == packet_id) {
            Some(e) if e.stage != InflightStage::AwaitingPubAck => {
                e.stage = InflightStage::AwaitingPubComp;
                AckOutcome::Accepted { seq: e.seq }
            }
            _ => AckOutcome::Unknown,
        }
    }

    /// Take back the exchange of `packet_id` whose PUBLISH never left (its delivery state
    /// was not stored): the message goes back to the head of the session's queue, as the
    /// store still has it, and its packet id is free again. An exchange the client already
    /// answered is left alone.
    pub fn unsend(&mut self, packet_id: u16) -> Option<QueuedMessage> {
        let at = self
            .entries
            .iter()
            .position(|e| e.packet_id == packet_id && e.stage != InflightStage::AwaitingPubComp)?;
        let e = self.entries.remove(at)?;
        Some(QueuedMessage {
            message: e.message,
            qos: e.qos,
            retain: e.retain,
            subscription_id: e.subscription_id,
            seq: e.seq,
            paged: false,
            shared_group: e.shared_group,
        })
    }

    /// Undo [`Inflight::on_pubrec`] of `packet_id` (its released state was never stored and
    /// no PUBREL left): it awaits its PUBREC again, and a resumed session re-sends its PUBLISH.
    pub fn unrelease(&mut self, packet_id: u16) {
        if let Some(e) = self
            .entries
            .iter_mut()
            .find(|e| e.packet_id == packet_id && e.stage == InflightStage::AwaitingPubComp)
        {
            e.stage = InflightStage::AwaitingPubRec;
        }
    }

    /// MQTT 5 PUBREC with a reason code >= 0x80: the client refused the message, the exchange
    /// is over (no PUBREL follows, MQTT 5 4.3.3-4) and the entry is removed.
    pub fn on_pubrec_refused(&mut self, packet_id: u16) -> AckOutcome {
        self.remove_at_stage(packet_id, InflightStage::AwaitingPubRec)
    }

    pub fn on_pubcomp(&mut self, packet_id: u16) -> AckOutcome {
        self.remove_at_stage(packet_id, InflightStage::AwaitingPubComp)
    }

    fn remove_at_stage(&mut self, packet_id: u16, stage: InflightStage) -> AckOutcome {
        match self
            .entries
            .iter()
            .position(|e| e.packet_id == packet_id && e.stage == stage)
        {
            Some(pos) => match self.entries.remove(pos) {
                Some(e) => AckOutcome::Accepted { seq: e.seq },
                None => AckOutcome::Unknown,
            },
            None => AckOutcome::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::broker::message::SampleStamp;

    fn msg(qos: QoS) -> QueuedMessage {
        QueuedMessage {
            message: Message {
                stamp: SampleStamp::NONE,
                topic: Arc::from("t"),
                payload: Bytes::new(),
                qos: QoS::ExactlyOnce,
                retain: false,
                v5: None,
            },
            qos,
            retain: false,
            subscription_id: None,
            seq: None,
            paged: false,
            shared_group: None,
        }
    }

    #[test]
    fn qos1_and_qos2_flows_complete() {
        let mut w = Inflight::default();
        let a = w.insert(&msg(QoS::AtLeastOnce)).expect("id");
        let b = w.insert(&msg(QoS::ExactlyOnce)).expect("id");
        assert_ne!(a, b);
        assert_eq!(
            w.on_pubcomp(b),
            AckOutcome::Unknown,
            "PUBCOMP before PUBREC"
        );
        assert_eq!(w.on_pubrec(b), AckOutcome::Accepted { seq: None });
        assert_eq!(
            w.on_pubrec(b),
            AckOutcome::Accepted { seq: None },
            "re-sent PUBREC"
        );
        assert_eq!(w.on_puback(b), AckOutcome::Unknown, "PUBACK for a QoS 2 id");
        assert_eq!(w.on_pubcomp(b), AckOutcome::Accepted { seq: None });
        assert_eq!(w.on_puback(a), AckOutcome::Accepted { seq: None });
        assert_eq!(w.on_puback(a), AckOutcome::Unknown);
        assert!(w.is_empty());
    }

    #[test]
    fn a_refusing_pubrec_ends_the_exchange() {
        let mut w = Inflight::default();
        let a = w.insert(&msg(QoS::ExactlyOnce)).expect("id");
        let b = w.insert(&msg(QoS::AtLeastOnce)).expect("id");
        assert_eq!(w.on_pubrec_refused(b), AckOutcome::Unknown, "a QoS 1 id");
        assert_eq!(w.on_pubrec_refused(a), AckOutcome::Accepted { seq: None });
        assert_eq!(w.on_pubrec_refused(a), AckOutcome::Unknown, "already over");
        assert_eq!(w.on_pubcomp(a), AckOutcome::Unknown);
        assert_eq!(w.len(), 1);
        let c = w.insert(&msg(QoS::ExactlyOnce)).expect("id");
        w.on_pubrec(c);
        assert_eq!(
            w.on_pubrec_refused(c),
            AckOutcome::Unknown,
            "after a PUBREL the exchange only ends with PUBCOMP"
        );
    }

    #[test]
    fn packet_ids_wrap_and_skip_ids_in_use() {
        let mut w = Inflight {
            next_packet_id: u16::MAX,
            ..Inflight::new()
        };
        assert_eq!(w.insert(&msg(QoS::AtLeastOnce)), Some(u16::MAX));
        assert_eq!(w.insert(&msg(QoS::AtLeastOnce)), Some(1));
        w.next_packet_id = u16::MAX;
        assert_eq!(w.insert(&msg(QoS::AtLeastOnce)), Some(2));
    }

    #[test]
    fn order_is_kept_for_retransmission() {
        let mut w = Inflight::default();
        let ids: Vec<u16> = (0..5)
            .filter_map(|_| w.insert(&msg(QoS::AtLeastOnce)))
            .collect();
        w.on_puback(ids[2]);
        let left: Vec<u16> = w.iter().map(|e| e.packet_id).collect();
        assert_eq!(left, vec![ids[0], ids[1], ids[3], ids[4]]);
    }

    /// One exchange never acknowledged while the ids wrap around it twice: its id is never
    /// handed out again, and no two live exchanges share an id.
    #[test]
    fn ids_wrapping_around_a_stuck_exchange_skip_it() {
        let mut w = Inflight::new();
        let stuck = w.insert(&msg(QoS::AtLeastOnce)).expect("id");
        for _ in 0..(2 * usize::from(u16::MAX) + 100) {
            let id = w.insert(&msg(QoS::AtLeastOnce)).expect("id");
            assert_ne!(id, stuck);
            let live: Vec<u16> = w.iter().map(|e| e.packet_id).collect();
            assert_eq!(live.len(), 2, "the stuck one and the one just sent");
            assert_eq!(w.on_puback(id), AckOutcome::Accepted { seq: None });
        }
        assert_eq!(
            w.iter().map(|e| e.packet_id).collect::<Vec<_>>(),
            vec![stuck]
        );
    }

    /// The reference: the next id at or after `next` (going round) that no live entry holds.
    fn scanned_id(live: &[u16], next: u16) -> u16 {
        let mut candidate = next;
        while live.contains(&candidate) {
            candidate = candidate.checked_add(1).unwrap_or(1);
        }
        candidate
    }

    #[derive(Debug, Clone)]
    enum Step {
        Send,
        /// Acknowledge the live entry at this index (modulo the window's length).
        Ack(usize),
        /// Jump the next id (as a long-running session's ids do after 65,535 sends).
        Jump(u16),
        /// Jump the next id to a few ids before a live entry's (the ids wrapped onto it).
        JumpNear(usize, u8),
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        prop_oneof![
            6 => Just(Step::Send),
            4 => any::<usize>().prop_map(Step::Ack),
            1 => (1u16..=u16::MAX).prop_map(Step::Jump),
            1 => (any::<usize>(), any::<u8>()).prop_map(|(i, back)| Step::JumpNear(i, back)),
        ]
    }

    proptest::proptest! {
        /// Handing out ids without a scan gives exactly the ids a scan would, never a live one,
        /// whatever the order of acknowledgements and however the ids wrap.
        #[test]
        fn ids_handed_out_in_turn_are_those_a_scan_finds(
            steps in proptest::collection::vec(step(), 1..400),
            restored in proptest::collection::vec(1u16..=u16::MAX, 0..5),
        ) {
            let mut w = Inflight::new();
            for id in restored {
                let entry = InflightEntry {
                    packet_id: id,
                    message: msg(QoS::AtLeastOnce).message,
                    qos: QoS::AtLeastOnce,
                    retain: false,
                    subscription_id: None,
                    stage: InflightStage::AwaitingPubAck,
                    seq: None,
                    shared_group: None,
                };
                w.restore(entry);
            }
            for step in steps {
                let live: Vec<u16> = w.iter().map(|e| e.packet_id).collect();
                match step {
                    Step::Send => {
                        let expected = scanned_id(&live, w.next_packet_id);
                        proptest::prop_assert_eq!(w.insert(&msg(QoS::AtLeastOnce)), Some(expected));
                    }
                    Step::Ack(i) if !live.is_empty() => {
                        let id = live[i % live.len()];
                        proptest::prop_assert_eq!(w.on_puback(id), AckOutcome::Accepted { seq: None });
                    }
                    Step::Ack(_) => {}
                    Step::Jump(next) => w.next_packet_id = next,
                    Step::JumpNear(i, back) if !live.is_empty() => {
                        let id = u32::from(live[i % live.len()]) + u32::from(u16::MAX) - u32::from(back % 8);
                        w.next_packet_id = u16::try_from((id - 1) % u32::from(u16::MAX) + 1).unwrap_or(1);
                    }
                    Step::JumpNear(..) => {}
                }
            }
        }
    }
}
