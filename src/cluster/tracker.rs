//! Where each local persistent session stands in the message log: per shard, how far it has
//! been fed and which queued messages are not acknowledged yet, so that its record can say
//! from where a resume on any node reads again (the shard's *floor*).
//!
//! Plain data under one mutex (no I/O): the readers ask it whether a session takes a message,
//! the broker's acknowledgements update it, and the record writer reads records out of it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use crate::broker::durability::{QueueOwner, QueueSeq, QueuedFor, SessionData};
use crate::broker::session::SessionId;
use crate::cluster::codec::{InflightRef, SessionRecord};

/// One shard of one session.
#[derive(Debug, Clone, Default)]
pub struct Cursor {
    /// A catch-up reader feeds this shard (the node's reader skips the session on it).
    pub catching_up: bool,
    /// The highest sequence of this shard offered to the session.
    pub delivered_upto: u64,
    /// Everything of this shard up to here was offered and its queue entries registered
    /// (by a catch-up, or at the start); the node's reader's routed position covers the rest.
    pub caught_routed: u64,
    /// Sequences queued for the session and not acknowledged (with their copy counts: an
    /// MQTT 5 session gets one copy per matching subscription).
    pub outstanding: BTreeMap<u64, u32>,
    /// Sequences restored into the in-flight window at a resume, or done above the record's
    /// floor when it was read (the catch-up skips them).
    pub restored: BTreeSet<u64>,
    /// Sequences acknowledged that the floor may not cover yet: above an older outstanding
    /// one, or past what the catch-up has registered. The record lists those above its floor
    /// (`SessionRecord::done`), so that a resume elsewhere does not send them again.
    pub done: BTreeSet<u64>,
    /// The session whose catch-up reader runs on this shard now: one at a time, however
    /// often its client reconnects (a client that gives up on slow CONNACKs and reconnects
    /// every 100 ms attached it hundreds of times, and a reader per attach starved every
    /// other session's catch-up of its turn).
    pub catch_up_for: Option<SessionId>,
}

impl Cursor {
    /// Every message up to this sequence is done for the session.
    fn floor(&self, reader_routed: u64) -> u64 {
        let fed = if self.catching_up {
            self.caught_routed
        } else {
            self.caught_routed.max(reader_routed)
        };
        match self.outstanding.keys().next() {
            Some(first) => (first - 1).min(fed),
            None => fed,
        }
    }
}

/// A kept queue entry's place in the log.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    pub shard: u32,
    pub seq: u64,
    pub qos: u8,
    pub subscription_id: Option<u32>,
    /// Sent with this packet id (in flight), or still queued.
    pub packet_id: Option<u16>,
    /// QoS 2: PUBREC received, PUBREL sent.
    pub released: bool,
}

/// One local persistent session.
#[derive(Debug, Clone)]
pub struct Tracked {
    /// The registry's session (a handed-over or replaced one no longer matches).
    pub session_id: Option<SessionId>,
    pub epoch: u64,
    /// The record's KV revision this node last wrote or read (0: no record yet).
    pub revision: u64,
    pub data: SessionData,
    pub connected: bool,
    pub offline_since_ms: u64,
    pub shards: Vec<Cursor>,
    pub entries: BTreeMap<QueueSeq, Entry>,
    /// Changed since the record was last written.
    pub dirty: bool,
    /// Names this session's inbound QoS 2 subjects (see `SessionRecord::incarnation`).
    pub incarnation: u64,
    /// Counts the QoS 2 delivery states recorded (PUBLISH or PUBREL about to be written)...
    pub qos2_changes: u64,
    /// ... and how many of them a record write has made durable (see `qos2::durable`).
    pub qos2_written: u64,
    /// Handed over ([`Tracked::freeze`]): out of the broker's registry, kept here only until
    /// its last record is written. Not this node's session any more for a claim.
    pub handed_over: bool,
    /// The last read or write that found this copy the owner of its record (`confirmed.rs`).
    pub confirmed: Option<super::confirmed::Confirmation>,
    /// Counts the changes of `data` and `connected`...
    pub data_changes: u64,
    /// ... and how many of them a record write has made durable: a save that changes nothing
    /// the record does not already hold is not written again.
    pub data_written: u64,
    /// This node's claim this copy came from (`claims.rs`), when remembered: a fence of
    /// this copy lets go only of that claim, not of a newer one under way.
    pub claim: Option<super::claims::ClaimStamp>,
}

impl Tracked {
    pub fn new(data: SessionData, shards: usize, start: &[u64]) -> Tracked {
        Tracked {
            session_id: None,
            epoch: 1,
            revision: 0,
            data,
            connected: true,
            offline_since_ms: 0,
            shards: (0..shards)
                .map(|k| Cursor {
                    delivered_upto: start.get(k).copied().unwrap_or(0),
                    caught_routed: start.get(k).copied().unwrap_or(0),
                    ..Cursor::default()
                })
                .collect(),
            entries: BTreeMap::new(),
            dirty: true,
            incarnation: rand::random::<u64>() | 1,
            qos2_changes: 0,
            qos2_written: 0,
            handed_over: false,
            confirmed: None,
            data_changes: 1,
            data_written: 0,
            claim: None,
        }
    }

    /// Whether the record, as this node last wrote it, holds `data` and `connected` as they
    /// are now (a save of the same changes nothing).
    pub fn holds(&self, data: &SessionData, connected: bool) -> bool {
        !self.handed_over
            && self.revision > 0
            && self.data_written >= self.data_changes
            && self.connected == connected
            && self.data == *data
    }

    /// The record to write, as of the readers' `positions`.
    pub fn record(&self, owner: &str, positions: &[u64]) -> SessionRecord {
        SessionRecord {
            client_id: self.data.client_id.to_string(),
            owner: owner.to_owned(),
            epoch: self.epoch,
            connected: self.connected,
            offline_since_ms: self.offline_since_ms,
            expiry_secs: self.data.expiry_secs,
            mqtt5: self.data.mqtt5,
            subscriptions: self
                .data
                .subscriptions
                .iter()
                .map(|(f, o)| (f.to_string(), *o))
                .collect(),
            floors: self
                .shards
                .iter()
                .enumerate()
                .map(|(k, c)| c.floor(positions.get(k).copied().unwrap_or(0)))
                .collect(),
            done: self
                .shards
                .iter()
                .enumerate()
                .flat_map(|(k, c)| {
                    let floor = c.floor(positions.get(k).copied().unwrap_or(0));
                    c.done.range(floor + 1..).map(move |seq| (k as u32, *seq))
                })
                .collect(),
            inflight: self
                .entries
                .values()
                .filter_map(|e| {
                    Some(InflightRef {
                        shard: e.shard,
                        seq: e.seq,
                        packet_id: e.packet_id?,
                        qos: e.qos,
                        subscription_id: e.subscription_id,
                        released: e.released,
                    })
                })
                .collect(),
            will: self.data.will.as_ref().map(super::codec::WillRecord::of),
            owner_instance: 0,
            incarnation: self.incarnation,
        }
    }

    /// The session leaves this node (handed over): its floors stop following the node's
    /// readers at `routed`, the positions they have routed now, and no reader offers it
    /// anything more. Without this, a record written after the session left the broker's
    /// registry would put its floors past messages routed meanwhile, which no longer reached
    /// it, and the node taking it would never read them.
    pub fn freeze(&mut self, routed: &[u64]) {
        self.handed_over = true;
        for (k, cursor) in self.shards.iter_mut().enumerate() {
            if !cursor.catching_up {
                let reader = routed.get(k).copied().unwrap_or(0);
                cursor.caught_routed = cursor.caught_routed.max(reader);
                cursor.catching_up = true;
            }
        }
    }

    /// Forgets the done sequences the floors (as of the readers' `routed` positions) cover.
    pub fn prune_done(&mut self, routed: &[u64]) {
        for (k, cursor) in self.shards.iter_mut().enumerate() {
            if cursor.done.is_empty() {
                continue;
            }
            let floor = cursor.floor(routed.get(k).copied().unwrap_or(0));
            cursor.done = cursor.done.split_off(&(floor + 1));
        }
    }

    /// Marks what a record says is done above its floors, so that no reader offers it again.
    pub fn done_above_floors(&mut self, done: &[(u32, u64)]) {
        for (shard, seq) in done {
            if let Some(cursor) = self.shards.get_mut(*shard as usize) {
                if *seq > cursor.caught_routed {
                    cursor.restored.insert(*seq);
                    cursor.done.insert(*seq);
                }
            }
        }
    }

    /// An entry restored into the in-flight window at a resume, before the copy is tracked
    /// (see `sessions::restore`): the catch-up does not offer its message again.
    pub fn restore_entry(&mut self, queue_seq: QueueSeq, entry: Entry) {
        if let Some(cursor) = self.shards.get_mut(entry.shard as usize) {
            cursor.restored.insert(entry.seq);
        }
        self.add_entry(queue_seq, entry);
    }

    fn add_entry(&mut self, queue_seq: QueueSeq, entry: Entry) {
        if let Some(cursor) = self.shards.get_mut(entry.shard as usize) {
            *cursor.outstanding.entry(entry.seq).or_insert(0) += 1;
        }
        self.entries.insert(queue_seq, entry);
        self.dirty = true;
    }

    fn remove_entry(&mut self, queue_seq: QueueSeq) {
        let Some(entry) = self.entries.remove(&queue_seq) else {
            return;
        };
        if let Some(cursor) = self.shards.get_mut(entry.shard as usize) {
            if let Some(count) = cursor.outstanding.get_mut(&entry.seq) {
                *count -= 1;
                if *count == 0 {
                    cursor.outstanding.remove(&entry.seq);
                    // Only a copy the client was sent is done by its removal (acknowledged);
                    // one removed unsent was dropped (its session ended or was handed over
                    // meanwhile, or it expired): the next owner reads it again and decides.
                    let acknowledged = entry.packet_id.is_some();
                    let older_outstanding = cursor
                        .outstanding
                        .keys()
                        .next()
                        .is_some_and(|first| *first < entry.seq);
                    // Live, the node's reader routed it before it was offered: the floor
                    // covers it once nothing older is outstanding.
                    let past_caught = cursor.catching_up && entry.seq > cursor.caught_routed;
                    if acknowledged && (older_outstanding || past_caught) {
                        cursor.done.insert(entry.seq);
                    }
                    // A restored message acknowledged before the catch-up reached it stays
                    // marked, else the catch-up offers it again as a new message.
                    if entry.seq <= cursor.delivered_upto {
                        cursor.restored.remove(&entry.seq);
                    }
                }
            }
        }
        self.dirty = true;
    }
}

/// What a delivery's packet waits for before it is written (see [`Tracker::sent`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SentState {
    /// Nothing: a QoS 1 entry (its progress goes with the next flush), or an entry the log
    /// does not hold.
    Nothing,
    /// A record write that makes the QoS 2 state change of this count durable.
    Wait(u64),
    /// The session is not tracked here: a persistent session this node let go (handed over,
    /// fenced, released by a drain, dropped), or a clean session, which keeps nothing.
    Untracked,
}

/// Every local persistent session, by client id.
#[derive(Debug, Default)]
pub struct Tracker {
    pub sessions: HashMap<Arc<str>, Tracked>,
    /// Subscriptions made while stores this node had acknowledged were not read back yet,
    /// per session (clean ones too): kept until the node's reader routed past them.
    young: HashMap<SessionId, Vec<Young>>,
}

/// A subscription and, per shard, the last store this node had acknowledged when it was
/// made: those stores and older ones are not the subscription's.
#[derive(Debug, Clone)]
struct Young {
    filter: String,
    floors: Vec<u64>,
}

impl Young {
    fn needed(&self, routed: &[u64]) -> bool {
        self.floors.iter().zip(routed).any(|(floor, r)| floor > r)
    }
}

impl Tracker {
    /// Session `id` subscribes to `filter` while the stores this node acknowledged reach
    /// `floors` per shard and its reader routed `routed`.
    pub fn subscribing(&mut self, id: SessionId, filter: &str, floors: Vec<u64>, routed: &[u64]) {
        self.prune_young(routed);
        let young = Young {
            filter: filter.to_owned(),
            floors,
        };
        if young.needed(routed) {
            self.young.entry(id).or_default().push(young);
        }
    }

    /// Forget the subscriptions the node's reader routed past.
    pub fn prune_young(&mut self, routed: &[u64]) {
        self.young.retain(|_, list| {
            list.retain(|y| y.needed(routed));
            !list.is_empty()
        });
    }

    /// Whether some subscription is young (the readers' common case is none).
    pub fn has_young(&self) -> bool {
        !self.young.is_empty()
    }

    /// The filters of session `id` made after message `seq` of `shard` was acknowledged
    /// (the message was stored before them).
    pub fn younger_than(&self, id: SessionId, shard: usize, seq: u64) -> Vec<String> {
        self.young.get(&id).map_or_else(Vec::new, |list| {
            list.iter()
                .filter(|y| y.floors.get(shard).is_some_and(|floor| *floor >= seq))
                .map(|y| y.filter.clone())
                .collect()
        })
    }

    /// Whether the node's live reader offers message `seq` of `shard` to the session: not
    /// while a catch-up reader feeds that shard, and never twice. Sessions not tracked (clean
    /// ones) take everything.
    pub fn accept_live(&mut self, client_id: &str, id: SessionId, shard: usize, seq: u64) -> bool {
        let Some(t) = self.sessions.get_mut(client_id) else {
            return true;
        };
        if t.session_id != Some(id) {
            return false;
        }
        let Some(cursor) = t.shards.get_mut(shard) else {
            return false;
        };
        if cursor.catching_up || seq <= cursor.delivered_upto {
            return false;
        }
        cursor.delivered_upto = seq;
        // Re-sent from the in-flight window at the resume already.
        !cursor.restored.remove(&seq)
    }

    /// The node's reader stops feeding `shard` to the session, whose queue reached its pending
    /// limit: from what it offered last, the shard is read for it by a catch-up reader (at
    /// once when it is online, at its resume otherwise), so that what it has not taken waits in
    /// the stream rather than in this node's memory (a single broker pages such a queue out to
    /// its store). Returns the sequence its catch-up reads after; `None`: not tracked (a
    /// clean session), or it already falls behind.
    pub fn fall_behind(&mut self, client_id: &str, id: SessionId, shard: usize) -> Option<u64> {
        let t = self.sessions.get_mut(client_id)?;
        if t.session_id != Some(id) {
            return None;
        }
        let cursor = t.shards.get_mut(shard)?;
        if cursor.catching_up {
            return None;
        }
        cursor.catching_up = true;
        // Everything up to what it was offered last is registered: its floor stays there.
        cursor.caught_routed = cursor.caught_routed.max(cursor.delivered_upto);
        Some(cursor.delivered_upto)
    }

    /// `client_id`'s cursor on `shard`, when it is tracked.
    /// The cursor of `shard` while `id` is the session's current attachment.
    fn attached_cursor(
        &mut self,
        client_id: &str,
        id: SessionId,
        shard: usize,
    ) -> Option<&mut Cursor> {
        self.sessions
            .get_mut(client_id)
            .filter(|t| t.session_id == Some(id) && !t.handed_over)
            .and_then(|t| t.shards.get_mut(shard))
    }

    fn cursor(&mut self, client_id: &str, shard: usize) -> Option<&mut Cursor> {
        self.sessions
            .get_mut(client_id)
            .and_then(|t| t.shards.get_mut(shard))
    }

    /// Whether a catch-up reader is to start for session `id` on `shard`: the shard is behind
    /// and none runs for that session yet (it is then marked as running). Returns the
    /// sequence it reads after.
    pub fn start_catch_up(&mut self, client_id: &str, id: SessionId, shard: usize) -> Option<u64> {
        let t = self.sessions.get_mut(client_id)?;
        if t.session_id != Some(id) {
            return None;
        }
        let cursor = t.shards.get_mut(shard)?;
        if !cursor.catching_up || cursor.catch_up_for == Some(id) {
            return None;
        }
        cursor.catch_up_for = Some(id);
        Some(cursor.delivered_upto)
    }

    /// The catch-up reader of session `id` on `shard` stopped (if it was the running one).
    pub fn catch_up_stopped(&mut self, client_id: &str, id: SessionId, shard: usize) {
        if let Some(cursor) = self
            .cursor(client_id, shard)
            .filter(|c| c.catch_up_for == Some(id))
        {
            cursor.catch_up_for = None;
        }
    }

    /// Whether a catch-up reader offers message `seq` of `shard` to the session (not one
    /// already restored into its in-flight window, never twice).
    pub fn accept_catch_up(&mut self, client_id: &str, shard: usize, seq: u64) -> bool {
        let Some(cursor) = self.cursor(client_id, shard) else {
            return false;
        };
        if !cursor.catching_up || seq <= cursor.delivered_upto {
            return false;
        }
        cursor.delivered_upto = seq;
        !cursor.restored.remove(&seq)
    }

    /// A catch-up reader of `shard` has offered everything up to `caught_upto`: if the
    /// node's reader has not gone past it, the session joins the live feed (`true`).
    /// `false`: `gone` (the session left) or not yet (keep reading).
    ///
    /// Only the catch-up of the session's current attachment `id` counts: a reader left from
    /// an earlier attachment of the same client (it came back to this node meanwhile) is
    /// `gone`, else it would move the new attachment live past what its own catch-up has not
    /// offered yet.
    pub fn try_go_live(
        &mut self,
        client_id: &str,
        id: SessionId,
        shard: usize,
        caught_upto: u64,
        reader_position: u64,
    ) -> Option<bool> {
        let cursor = self.attached_cursor(client_id, id, shard)?;
        if !cursor.catching_up {
            return Some(true);
        }
        cursor.caught_routed = cursor.caught_routed.max(caught_upto);
        if reader_position > caught_upto.max(cursor.delivered_upto) {
            return Some(false);
        }
        cursor.catching_up = false;
        // Under the same lock as the switch: a fall behind right after it starts a new one.
        cursor.catch_up_for = None;
        cursor.delivered_upto = cursor.delivered_upto.max(caught_upto);
        Some(true)
    }

    /// A catch-up of attachment `id` offered message `seq` of `shard` to the session and
    /// registered its entries. A reader of an earlier attachment changes nothing: it offered
    /// to nobody, and counting its reading as routed would let the record's floor pass what
    /// the current attachment was never given (a client hopping between nodes lost whole
    /// ranges so).
    pub fn caught(&mut self, client_id: &str, id: SessionId, shard: usize, seq: u64) {
        let Some(t) = self.sessions.get_mut(client_id) else {
            return;
        };
        // Nor does a reader still running after the copy was handed over (taken out of the
        // broker): what it reads reaches no session, and its last record must keep the floor
        // where the session let go (see `freeze`).
        if t.session_id != Some(id) || t.handed_over {
            return;
        }
        if let Some(c) = t.shards.get_mut(shard) {
            c.caught_routed = c.caught_routed.max(seq);
            t.dirty = true;
        }
    }

    /// Queue entries made for message `seq` of `shard`.
    pub fn kept(&mut self, shard: usize, seq: u64, queued: &[QueuedFor]) {
        for q in queued {
            let QueueOwner::Session(client_id) = &q.owner else {
                continue;
            };
            if let Some(t) = self.sessions.get_mut(client_id) {
                t.add_entry(
                    q.seq,
                    Entry {
                        shard: shard as u32,
                        seq,
                        qos: q.qos as u8,
                        subscription_id: q.subscription_id.map(|id| id.get()),
                        packet_id: None,
                        released: false,
                    },
                );
            }
        }
    }

    /// An entry restored into the in-flight window of a tracked copy (tests).
    #[cfg(test)]
    pub fn restored(&mut self, client_id: &str, queue_seq: QueueSeq, entry: Entry) {
        if let Some(t) = self.sessions.get_mut(client_id) {
            t.restore_entry(queue_seq, entry);
        }
    }

    /// Entry `queue_seq` was sent with `packet_id` (`released`: its QoS 2 PUBREL): what the
    /// packet must wait for before it is written (see [`SentState`]).
    pub fn sent(
        &mut self,
        client_id: &str,
        queue_seq: QueueSeq,
        packet_id: u16,
        released: bool,
    ) -> SentState {
        let Some(t) = self.sessions.get_mut(client_id) else {
            return SentState::Untracked;
        };
        // An entry the log does not hold (a retained message sent at SUBSCRIBE): nothing of
        // it is in the record.
        let Some(e) = t.entries.get_mut(&queue_seq) else {
            return SentState::Nothing;
        };
        let unchanged = e.packet_id == Some(packet_id) && e.released == released;
        e.packet_id = Some(packet_id);
        e.released = released;
        if e.qos < 2 {
            // A QoS 1 copy sent again as it was (a resume re-sends its in-flight window)
            // changes nothing in the record: a client that reconnects over and over does not
            // make a write per reconnect.
            t.dirty |= !unchanged;
            return SentState::Nothing;
        }
        t.dirty = true;
        t.qos2_changes += 1;
        SentState::Wait(t.qos2_changes)
    }

    pub fn removed(&mut self, client_id: &str, queue_seq: QueueSeq) {
        if let Some(t) = self.sessions.get_mut(client_id) {
            t.remove_entry(queue_seq);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(client_id: &str) -> SessionData {
        SessionData {
            client_id: Arc::from(client_id),
            subscriptions: vec![],
            will: None,
            expiry_secs: None,
            mqtt5: false,
            connected: false,
        }
    }

    fn queued(client_id: &str, seq: QueueSeq) -> QueuedFor {
        QueuedFor {
            owner: QueueOwner::Session(Arc::from(client_id)),
            seq,
            qos: crate::protocol::QoS::AtLeastOnce,
            retain: false,
            subscription_id: None,
        }
    }

    #[test]
    fn a_young_subscription_refuses_what_was_stored_before_it_until_the_reader_passes() {
        let mut tracker = Tracker::default();
        // Nothing acknowledged and unread: nothing to remember.
        tracker.subscribing(1, "a/#", vec![5, 0], &[5, 0]);
        assert!(!tracker.has_young());
        // Shard 0: stores up to 9 acknowledged, the reader at 5.
        tracker.subscribing(1, "b/#", vec![9, 0], &[5, 0]);
        assert!(tracker.has_young());
        assert_eq!(tracker.younger_than(1, 0, 9), ["b/#"]);
        assert!(tracker.younger_than(1, 0, 10).is_empty(), "stored after it");
        assert!(tracker.younger_than(1, 1, 1).is_empty(), "another shard");
        assert!(tracker.younger_than(2, 0, 7).is_empty(), "another session");
        tracker.prune_young(&[8, 0]);
        assert_eq!(tracker.younger_than(1, 0, 9), ["b/#"]);
        tracker.prune_young(&[9, 0]);
        assert!(!tracker.has_young(), "the reader routed past it");
    }

    #[test]
    fn the_floor_stays_below_the_oldest_unacknowledged_message() {
        let mut tracker = Tracker::default();
        let mut t = Tracked::new(data("c"), 2, &[10, 0]);
        t.session_id = Some(1);
        tracker.sessions.insert(Arc::from("c"), t);
        assert!(tracker.accept_live("c", 1, 0, 11));
        tracker.kept(0, 11, &[queued("c", 100)]);
        assert!(tracker.accept_live("c", 1, 0, 12));
        tracker.kept(0, 12, &[queued("c", 101)]);
        let floors = |tr: &Tracker, pos: &[u64]| tr.sessions["c"].record("n", pos).floors;
        assert_eq!(floors(&tracker, &[20, 5]), vec![10, 5]);
        tracker.removed("c", 101);
        assert_eq!(floors(&tracker, &[20, 5]), vec![10, 5]);
        tracker.removed("c", 100);
        assert_eq!(floors(&tracker, &[20, 5]), vec![20, 5]);
        // Never offered twice.
        assert!(!tracker.accept_live("c", 1, 0, 12));
        // Another session object under the same client id takes nothing.
        assert!(!tracker.accept_live("c", 2, 0, 30));
    }

    #[test]
    fn a_frozen_session_takes_nothing_more_and_its_floors_stay() {
        let mut tracker = Tracker::default();
        let mut t = Tracked::new(data("c"), 2, &[5, 5]);
        t.session_id = Some(1);
        tracker.sessions.insert(Arc::from("c"), t);
        assert!(tracker.accept_live("c", 1, 0, 8));
        tracker.kept(0, 8, &[queued("c", 100)]);
        let floors = |tr: &Tracker, pos: &[u64]| tr.sessions["c"].record("n", pos).floors;
        assert_eq!(floors(&tracker, &[9, 12]), vec![7, 12]);
        assert!(!tracker.sessions["c"].handed_over);
        if let Some(t) = tracker.sessions.get_mut("c") {
            t.freeze(&[9, 12]);
        }
        // ... marked, so that a claim on this node does not take it for its own ...
        assert!(tracker.sessions["c"].handed_over);
        // Messages the readers route after it left are not its own any more ...
        assert!(!tracker.accept_live("c", 1, 0, 10));
        assert!(!tracker.accept_live("c", 1, 1, 13));
        // ... and its floors do not pass them, whatever the readers' positions.
        assert_eq!(floors(&tracker, &[30, 40]), vec![7, 12]);
        tracker.removed("c", 100);
        assert_eq!(floors(&tracker, &[30, 40]), vec![9, 12]);
    }

    #[test]
    fn a_catch_up_hands_over_to_the_live_reader_without_a_gap() {
        let mut tracker = Tracker::default();
        let mut t = Tracked::new(data("c"), 1, &[5]);
        t.session_id = Some(1);
        t.shards[0].catching_up = true;
        tracker.sessions.insert(Arc::from("c"), t);
        // The live reader is at 9 and skips the session.
        assert!(!tracker.accept_live("c", 1, 0, 9));
        assert!(tracker.accept_catch_up("c", 0, 6));
        assert_eq!(tracker.try_go_live("c", 1, 0, 6, 9), Some(false));
        assert!(tracker.accept_catch_up("c", 0, 9));
        assert_eq!(tracker.try_go_live("c", 1, 0, 9, 9), Some(true));
        assert!(!tracker.accept_live("c", 1, 0, 9));
        assert!(tracker.accept_live("c", 1, 0, 10));
        assert_eq!(tracker.try_go_live("gone", 1, 0, 9, 9), None);
    }

    #[test]
    fn one_catch_up_runs_per_session_and_shard_however_often_it_attaches() {
        let mut tracker = Tracker::default();
        let mut t = Tracked::new(data("c"), 1, &[5]);
        t.session_id = Some(1);
        t.shards[0].catching_up = true;
        tracker.sessions.insert(Arc::from("c"), t);
        assert_eq!(tracker.start_catch_up("c", 1, 0), Some(5));
        // Attached again (a reconnect): the running one goes on.
        assert_eq!(tracker.start_catch_up("c", 1, 0), None);
        // A newer session (another incarnation) gets its own.
        if let Some(t) = tracker.sessions.get_mut("c") {
            t.session_id = Some(2);
        }
        assert_eq!(tracker.start_catch_up("c", 2, 0), Some(5));
        // The old one stopping leaves the new one's mark alone.
        tracker.catch_up_stopped("c", 1, 0);
        assert_eq!(tracker.start_catch_up("c", 2, 0), None);
        // The old one's reading moves nothing of the new one's.
        let routed = tracker.sessions["c"].shards[0].caught_routed;
        assert_eq!(tracker.try_go_live("c", 1, 0, 9, 9), None);
        tracker.caught("c", 1, 0, 9);
        assert_eq!(tracker.sessions["c"].shards[0].caught_routed, routed);
        assert!(tracker.sessions["c"].shards[0].catching_up);
        // Gone live: the mark goes with the switch, so a fall behind right after starts one.
        assert_eq!(tracker.try_go_live("c", 2, 0, 9, 9), Some(true));
        assert_eq!(tracker.fall_behind("c", 2, 0), Some(9));
        assert_eq!(tracker.start_catch_up("c", 2, 0), Some(9));
        tracker.catch_up_stopped("c", 2, 0);
        assert_eq!(tracker.start_catch_up("c", 2, 0), Some(9));
        // Nothing to catch up on a live shard.
        assert_eq!(tracker.try_go_live("c", 2, 0, 9, 9), Some(true));
        assert_eq!(tracker.start_catch_up("c", 2, 0), None);
    }

    /// A catch-up reader that goes on after its session was handed over (taken out of the
    /// broker, its last record not yet written) offers to nobody: it must not move the floor
    /// that record keeps (a client moving between nodes every few hundred ms lost whole
    /// ranges so).
    #[test]
    fn a_catch_up_after_the_hand_over_moves_nothing() {
        let mut tracker = Tracker::default();
        let mut t = Tracked::new(data("c"), 1, &[5]);
        t.session_id = Some(1);
        t.shards[0].catching_up = true;
        tracker.sessions.insert(Arc::from("c"), t);
        tracker.caught("c", 1, 0, 7);
        if let Some(t) = tracker.sessions.get_mut("c") {
            t.freeze(&[20]);
        }
        tracker.caught("c", 1, 0, 12);
        assert_eq!(tracker.try_go_live("c", 1, 0, 12, 12), None);
        assert_eq!(tracker.sessions["c"].record("n", &[20]).floors, vec![7]);
    }

    /// A live session at its pending limit falls behind: the reader skips it, its floor stays
    /// at what it was offered, and a catch-up from there feeds it until it rejoins the reader.
    #[test]
    fn a_session_at_its_pending_limit_falls_behind_and_catches_up_from_what_it_was_offered() {
        let mut tracker = Tracker::default();
        let mut t = Tracked::new(data("c"), 1, &[0]);
        t.session_id = Some(1);
        tracker.sessions.insert(Arc::from("c"), t);
        assert!(tracker.accept_live("c", 1, 0, 4));
        assert_eq!(tracker.fall_behind("c", 2, 0), None, "another session");
        assert_eq!(tracker.fall_behind("clean", 1, 0), None, "not tracked");
        assert_eq!(tracker.fall_behind("c", 1, 0), Some(4));
        assert_eq!(tracker.fall_behind("c", 1, 0), None, "already behind");
        let floors = |tr: &Tracker, pos: &[u64]| tr.sessions["c"].record("n", pos).floors;
        // The reader routes 5..=9 without it: its floor does not pass 4.
        assert!(!tracker.accept_live("c", 1, 0, 5));
        assert_eq!(floors(&tracker, &[9]), vec![4]);
        assert!(tracker.accept_catch_up("c", 0, 5));
        assert_eq!(tracker.try_go_live("c", 1, 0, 9, 9), Some(true));
        assert!(tracker.accept_live("c", 1, 0, 10));
    }

    /// Session `c` catching up shard 0 from floor 3, with in-flight entry 50 (shard 0, seq 4,
    /// packet id 7) restored from its record.
    fn catching_up_with_restored_entry() -> Tracker {
        let mut tracker = Tracker::default();
        let mut t = Tracked::new(data("c"), 1, &[3]);
        t.shards[0].catching_up = true;
        tracker.sessions.insert(Arc::from("c"), t);
        let entry = Entry {
            shard: 0,
            seq: 4,
            qos: 1,
            subscription_id: None,
            packet_id: Some(7),
            released: false,
        };
        tracker.restored("c", 50, entry);
        tracker
    }

    #[test]
    fn a_qos1_copy_sent_again_under_its_packet_id_leaves_the_record_clean() {
        let mut tracker = catching_up_with_restored_entry();
        if let Some(t) = tracker.sessions.get_mut("c") {
            t.dirty = false;
        }
        assert_eq!(tracker.sent("c", 50, 7, false), SentState::Nothing);
        assert!(!tracker.sessions["c"].dirty, "re-sent as it was");
        assert_eq!(tracker.sent("c", 50, 8, false), SentState::Nothing);
        assert!(tracker.sessions["c"].dirty, "another packet id");
    }

    #[test]
    fn restored_in_flight_messages_are_not_offered_again_and_count_until_acknowledged() {
        let mut tracker = catching_up_with_restored_entry();
        assert!(!tracker.accept_catch_up("c", 0, 4));
        assert!(tracker.accept_catch_up("c", 0, 5));
        let record = tracker.sessions["c"].record("n", &[5]);
        assert_eq!(record.floors, vec![3]);
        assert_eq!(record.inflight.len(), 1);
        assert_eq!(record.inflight[0].packet_id, 7);
    }

    #[test]
    fn a_restored_message_acknowledged_before_the_catch_up_reaches_it_is_not_offered_again() {
        let mut tracker = catching_up_with_restored_entry();
        // The client acknowledges the re-sent copy before the catch-up has read seq 4.
        tracker.removed("c", 50);
        assert!(!tracker.accept_catch_up("c", 0, 4));
        assert!(tracker.accept_catch_up("c", 0, 5));
        assert!(tracker.sessions["c"].shards[0].restored.is_empty());
    }

    #[test]
    fn a_restored_message_acknowledged_before_the_catch_up_reaches_it_is_done_in_the_record() {
        let mut tracker = catching_up_with_restored_entry();
        tracker.removed("c", 50);
        let record = tracker.sessions["c"].record("n", &[9]);
        assert_eq!(record.floors, vec![3]);
        assert!(record.inflight.is_empty());
        assert_eq!(record.done, vec![(0, 4)]);
        // The next owner, tracking the session from that record, does not offer it again...
        let mut next = Tracked::new(data("c"), 1, &record.floors);
        next.shards[0].catching_up = true;
        next.done_above_floors(&record.done);
        let mut tracker = Tracker::default();
        tracker.sessions.insert(Arc::from("c"), next);
        assert!(!tracker.accept_catch_up("c", 0, 4));
        assert!(tracker.accept_catch_up("c", 0, 5));
        // ... and keeps it in its own records until its floor passes it.
        assert_eq!(tracker.sessions["c"].record("n", &[9]).done, vec![(0, 4)]);
        let id: SessionId = 7;
        if let Some(t) = tracker.sessions.get_mut("c") {
            t.session_id = Some(id);
        }
        tracker.caught("c", id, 0, 5);
        let t = tracker.sessions.get_mut("c").expect("tracked");
        assert_eq!(t.record("n", &[9]).floors, vec![5]);
        assert!(t.record("n", &[9]).done.is_empty());
        t.prune_done(&[9]);
        assert!(t.shards[0].done.is_empty());
    }

    #[test]
    fn a_message_acknowledged_above_an_older_outstanding_one_is_done_in_the_record() {
        let mut tracker = Tracker::default();
        tracker
            .sessions
            .insert(Arc::from("c"), Tracked::new(data("c"), 1, &[10]));
        tracker.kept(0, 11, &[queued("c", 100)]);
        tracker.kept(0, 12, &[queued("c", 101)]);
        tracker.kept(0, 13, &[queued("c", 102)]);
        tracker.sent("c", 100, 1, false);
        tracker.sent("c", 101, 2, false);
        tracker.removed("c", 101);
        // Removed unsent (dropped, not acknowledged): read again by the next owner.
        tracker.removed("c", 102);
        let record = tracker.sessions["c"].record("n", &[12]);
        assert_eq!((record.floors, record.done), (vec![10], vec![(0, 12)]));
        tracker.removed("c", 100);
        let t = tracker.sessions.get_mut("c").expect("tracked");
        t.prune_done(&[12]);
        let record = t.record("n", &[12]);
        assert_eq!((record.floors, record.done), (vec![12], vec![]));
    }
}
