//! Reading everything back at startup, with a consistency check that repairs what it can and
//! reports everything it could not keep.
//!
//! redb itself guarantees that a crash (kill -9, power loss) leaves the last committed
//! transaction intact: a torn commit is rolled back on open using its checksums. What is
//! checked here is this store's own invariants: every reference points to a stored body,
//! every body's reference count matches the references, every queue belongs to a session or a
//! declared owned queue.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use redb::{Database, ReadableTable};

use super::codec;
use super::tables::{storage, Tables};
use super::types::{
    MessageId, OwnedQueue, QueueKind, QueueState, Recovered, RecoveredEntry, RecoveredMessage,
    RecoveredQueue, RecoveredSession, StoredMessage,
};
use super::StoreError;

/// What recovery found, for the startup log line (its `Display` is that line).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecoveryStats {
    pub sessions: u64,
    /// Queue entries not yet sent.
    pub queued: u64,
    /// Sent, awaiting PUBACK / PUBREC (re-sent with DUP=1).
    pub inflight: u64,
    /// PUBREC received, awaiting PUBCOMP (re-sent as PUBREL).
    pub released: u64,
    pub inbound_qos2: u64,
    /// Declared owned queues (groups and named queues) and their entries, whatever their
    /// state (not counted in `queued`, `inflight` or `released`, which are sessions').
    pub owned_queues: u64,
    pub owned_entries: u64,
    /// Topics of the broker's destination map.
    pub destinations: u64,
    pub retained: u64,
    /// Distinct message bodies, and their encoded size.
    pub messages: u64,
    pub message_bytes: u64,
    /// The storage engine rolled back a torn last commit or rebuilt its allocator on open
    /// (normal after a crash; nothing acknowledged is lost).
    pub engine_repaired: bool,
    /// Reference counts that did not match the references, corrected.
    pub refcounts_repaired: u64,
    /// Bodies nothing referenced any more, freed.
    pub orphan_messages_freed: u64,
    /// What could not be kept or read, one line each (empty when all is well). Logged at warn.
    pub problems: Vec<String>,
}

impl fmt::Display for RecoveryStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "recovered {} sessions ({} queued, {} in flight, {} awaiting PUBCOMP, {} inbound \
             QoS 2 ids), {} retained messages, {} message bodies ({} bytes)",
            self.sessions,
            self.queued,
            self.inflight,
            self.released,
            self.inbound_qos2,
            self.retained,
            self.messages,
            self.message_bytes
        )?;
        if self.owned_queues > 0 {
            write!(
                f,
                ", {} owned queues ({} entries)",
                self.owned_queues, self.owned_entries
            )?;
        }
        if self.destinations > 0 {
            write!(f, ", {} destinations", self.destinations)?;
        }
        if self.engine_repaired {
            write!(f, "; storage engine repaired after an unclean shutdown")?;
        }
        if self.refcounts_repaired > 0 {
            write!(
                f,
                "; {} reference counts corrected",
                self.refcounts_repaired
            )?;
        }
        if self.orphan_messages_freed > 0 {
            write!(f, "; {} orphan bodies freed", self.orphan_messages_freed)?;
        }
        if !self.problems.is_empty() {
            write!(
                f,
                "; {} problems: {}",
                self.problems.len(),
                self.problems.join("; ")
            )?;
        }
        Ok(())
    }
}

/// Reads everything and repairs the store's invariants, in one write transaction (so no commit
/// runs in between). Commits only when something was repaired.
pub(crate) fn recover(
    db: &Database,
    engine_repaired: bool,
    hold: Hold,
    envelope_properties: Option<fn(&Bytes) -> Bytes>,
) -> Result<Recovered, StoreError> {
    let txn = db.begin_write().map_err(storage)?;
    let (recovered, changed) = {
        let mut t = Tables::open(&txn)?;
        let mut scan = Scan {
            stats: RecoveryStats {
                engine_repaired,
                ..RecoveryStats::default()
            },
            queued_in_memory: hold.queued_per_queue,
            held_bytes_left: hold.payload_bytes,
            envelope_properties,
            ..Scan::default()
        };
        scan.messages(&t)?;
        scan.retained(&mut t)?;
        scan.sessions(&t)?;
        scan.queues(&mut t)?;
        scan.owned_queues(&mut t)?;
        scan.inbound(&mut t)?;
        scan.destinations(&t)?;
        scan.refcounts(&mut t)?;
        scan.finish()
    };
    if changed {
        txn.commit().map_err(storage)?;
    } else {
        txn.abort().map_err(storage)?;
    }
    Ok(recovered)
}

/// How much of the queued (not yet sent) messages recovery reads into memory; the rest stay
/// in the store, paged, to be read back when they reach the head of their queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold {
    /// Queued entries per queue.
    pub queued_per_queue: usize,
    /// Encoded bytes of the held messages, over all queues: the count alone bounds nothing
    /// when messages are large (a thousand 2 MiB messages per session).
    pub payload_bytes: u64,
}

impl Hold {
    /// Everything held.
    pub const ALL: Hold = Hold {
        queued_per_queue: usize::MAX,
        payload_bytes: u64::MAX,
    };
}

#[derive(Default)]
struct Scan {
    stats: RecoveryStats,
    /// Envelopes only: payloads are read when an entry keeps one (see [`Scan::payload`]).
    bodies: HashMap<MessageId, StoredMessage>,
    /// What a paged session entry keeps of its message's properties (see
    /// [`super::Store::recover_envelopes`]); `None`: all of them.
    envelope_properties: Option<fn(&Bytes) -> Bytes>,
    /// Queued entries per session whose payloads are read; the rest are paged.
    queued_in_memory: usize,
    /// Encoded bytes of queued messages that may still be held ([`Hold::payload_bytes`]
    /// less what was held).
    held_bytes_left: u64,
    /// Encoded size of each stored body (`bodies` keeps envelopes only).
    body_len: HashMap<MessageId, u64>,
    /// Ids of stored bodies that could not be decoded: kept, never freed here.
    undecodable_bodies: BTreeSet<MessageId>,
    references: HashMap<MessageId, u64>,
    retained: Vec<(Arc<str>, RecoveredMessage)>,
    sessions: BTreeMap<Arc<str>, RecoveredSession>,
    owned: BTreeMap<OwnedQueue, RecoveredQueue>,
    /// Topics of the destination map, ascending.
    destinations: Vec<Arc<str>>,
    /// A queue entry could not be decoded, so references are unknown: freeing is unsafe.
    references_uncertain: bool,
    changed: bool,
}

impl Scan {
    fn problem(&mut self, text: String) {
        self.stats.problems.push(text);
    }

    fn messages(&mut self, t: &Tables<'_>) -> Result<(), StoreError> {
        for item in t.messages.iter().map_err(storage)? {
            let (id, value) = item.map_err(storage)?;
            let id = id.value();
            let raw = Bytes::copy_from_slice(value.value());
            self.stats.message_bytes += raw.len() as u64;
            match codec::decode_message(&raw) {
                Ok(mut message) => {
                    self.body_len.insert(id, raw.len() as u64);
                    // The envelope only: nothing may keep `raw` (the payload) alive, and an
                    // entry that needs the whole message reads it again (`Scan::body`).
                    message.payload = Bytes::new();
                    message.properties = self.envelope_properties_of(&message.properties);
                    self.bodies.insert(id, message);
                }
                Err(e) => {
                    self.undecodable_bodies.insert(id);
                    self.problem(format!("message {id} kept but unreadable: {e}"));
                }
            }
        }
        self.stats.messages = (self.bodies.len() + self.undecodable_bodies.len()) as u64;
        Ok(())
    }

    /// Whether `id` names a readable body; records the reference either way it exists.
    fn reference(&mut self, id: MessageId) -> Option<StoredMessage> {
        if self.undecodable_bodies.contains(&id) {
            *self.references.entry(id).or_default() += 1;
            return None;
        }
        let message = self.bodies.get(&id)?.clone();
        *self.references.entry(id).or_default() += 1;
        Some(message)
    }

    /// The message an entry carries in its own record ([`super::Op::PutQueued`]), counted as
    /// a stored body; `None` when it cannot be decoded (reported; the entry is kept, as an
    /// unreadable body is).
    fn carried(&mut self, body: &Bytes, owner: &str, seq: u64) -> Option<StoredMessage> {
        self.stats.messages += 1;
        self.stats.message_bytes += body.len() as u64;
        match codec::decode_message(body) {
            Ok(message) => Some(message),
            Err(e) => {
                self.problem(format!(
                    "queued message {seq} of {owner:?} kept but unreadable: {e}"
                ));
                None
            }
        }
    }

    /// An entry kept in the store but not restored (its owner's record is unreadable or of
    /// an unknown kind): the body it refers to stays, the one it carries is counted.
    fn keep_unrestored(&mut self, entry: &super::types::QueueEntry, carried: Option<&Bytes>) {
        match carried {
            Some(body) => {
                self.stats.messages += 1;
                self.stats.message_bytes += body.len() as u64;
            }
            None => *self.references.entry(entry.message_id).or_default() += 1,
        }
    }

    /// What an envelope keeps of `properties`, in an allocation of its own.
    fn envelope_properties_of(&self, properties: &Bytes) -> Bytes {
        match self.envelope_properties {
            Some(slim) => slim(properties),
            None => Bytes::copy_from_slice(properties),
        }
    }

    /// Whether an entry's payload is left in the store (paged: a queued entry past the first
    /// `queued_in_memory` of its queue, `held` counting them, or one that would take the held
    /// bytes past [`Hold::payload_bytes`]); otherwise `message` gets it. Once an entry of a
    /// queue is paged so are the queued ones after it: the paged entries of a queue are its
    /// tail (page-in reads from the first paged one on). A paged entry keeps its envelope's
    /// properties, all of them with `all_properties` (an owned queue's: selectors read them
    /// before its payload is read back).
    #[allow(clippy::too_many_arguments)]
    fn hold_or_page(
        &mut self,
        t: &Tables<'_>,
        held: &mut usize,
        entry: &super::types::QueueEntry,
        carried: Option<&Bytes>,
        all_properties: bool,
        message: &mut StoredMessage,
    ) -> Result<bool, StoreError> {
        let encoded_len = match carried {
            Some(body) => body.len() as u64,
            None => self.body_len.get(&entry.message_id).copied().unwrap_or(0),
        };
        let queued = entry.state == QueueState::Queued;
        if queued && *held < self.queued_in_memory && encoded_len > self.held_bytes_left {
            *held = usize::MAX;
        }
        let paged = queued && *held >= self.queued_in_memory;
        let carried = carried.is_some();
        if paged {
            // Nothing may keep the carried record alive: its payload is left in the store.
            message.payload = Bytes::new();
            message.properties = match (all_properties, carried) {
                (false, _) => self.envelope_properties_of(&message.properties),
                (true, true) => Bytes::copy_from_slice(&message.properties),
                // The shared body's envelope was slimmed: read its properties again.
                (true, false) if self.envelope_properties.is_some() => {
                    Bytes::copy_from_slice(&Self::body(t, entry.message_id)?.1)
                }
                (true, false) => message.properties.clone(),
            };
        } else {
            *held = held.saturating_add(1);
            // In-flight entries are held whatever their size (they are re-sent at connect)
            // and count against what queued ones may take.
            self.held_bytes_left = self.held_bytes_left.saturating_sub(encoded_len);
            if !carried {
                (message.payload, message.properties) = Self::body(t, entry.message_id)?;
            }
        }
        Ok(paged)
    }

    /// The payload and properties of body `id` (decoded before, so it is readable).
    fn body(t: &Tables<'_>, id: MessageId) -> Result<(Bytes, Bytes), StoreError> {
        let Some(value) = t.messages.get(id).map_err(storage)? else {
            return Ok((Bytes::new(), Bytes::new()));
        };
        let raw = Bytes::copy_from_slice(value.value());
        codec::decode_message(&raw)
            .map(|m| (m.payload, m.properties))
            .map_err(|e| StoreError::storage("reading a message body", e))
    }

    fn retained(&mut self, t: &mut Tables<'_>) -> Result<(), StoreError> {
        let mut lost = Vec::new();
        let mut found = Vec::new();
        for item in t.retained.iter().map_err(storage)? {
            let (topic, id) = item.map_err(storage)?;
            found.push((Arc::<str>::from(topic.value()), id.value()));
        }
        for (topic, id) in found {
            match self.reference(id) {
                Some(mut message) => {
                    (message.payload, message.properties) = Self::body(t, id)?;
                    self.retained
                        .push((topic, RecoveredMessage { id, message }));
                }
                None if self.undecodable_bodies.contains(&id) => {}
                None => lost.push((topic, id)),
            }
        }
        for (topic, id) in lost {
            t.retained.remove(&*topic).map_err(storage)?;
            self.changed = true;
            self.problem(format!(
                "retained message of {topic:?} lost: its body {id} is missing"
            ));
        }
        self.stats.retained = self.retained.len() as u64;
        Ok(())
    }

    fn sessions(&mut self, t: &Tables<'_>) -> Result<(), StoreError> {
        let mut unreadable = Vec::new();
        for item in t.sessions.iter().map_err(storage)? {
            let (key, value) = item.map_err(storage)?;
            let client_id: Arc<str> = Arc::from(key.value());
            match codec::decode_session(&Bytes::copy_from_slice(value.value())) {
                Ok(record) => {
                    self.sessions.insert(
                        client_id.clone(),
                        RecoveredSession {
                            client_id,
                            record,
                            queue: Vec::new(),
                            inbound_qos2: BTreeSet::new(),
                        },
                    );
                }
                Err(e) => unreadable.push(format!(
                    "session {client_id:?} kept but unreadable (not restored): {e}"
                )),
            }
        }
        for text in unreadable {
            self.problem(text);
        }
        self.stats.sessions = self.sessions.len() as u64;
        Ok(())
    }

    /// Read entry by entry (not collected first): an entry may carry its body, and a paged
    /// one must not stay in memory.
    fn queues(&mut self, t: &mut Tables<'_>) -> Result<(), StoreError> {
        let mut drop_keys = Vec::new();
        let mut in_memory: HashMap<Arc<str>, usize> = HashMap::new();
        let mut last_client: Option<Arc<str>> = None;
        for item in t.queues.iter().map_err(storage)? {
            let (key, value) = item.map_err(storage)?;
            let (client_id, seq) = key.value();
            let client_id = match last_client.take() {
                Some(last) if &*last == client_id => last,
                _ => Arc::<str>::from(client_id),
            };
            last_client = Some(client_id.clone());
            let raw = Bytes::copy_from_slice(value.value());
            let (entry, carried) = match codec::decode_queue_record(&raw) {
                Ok(record) => (record.entry, record.body),
                Err(e) => {
                    self.references_uncertain = true;
                    self.problem(format!(
                        "queue entry {seq} of {client_id:?} kept but unreadable: {e}"
                    ));
                    continue;
                }
            };
            if !self.sessions.contains_key(&client_id) {
                // A session record that failed to decode still owns its queue: keep it.
                let session_stored = t.sessions.get(&*client_id).map_err(storage)?.is_some();
                if session_stored {
                    self.keep_unrestored(&entry, carried.as_ref());
                } else {
                    drop_keys.push((client_id.clone(), seq));
                    self.problem(format!(
                        "queue entry {seq} of unknown session {client_id:?} removed"
                    ));
                }
                continue;
            }
            let found = match &carried {
                Some(body) => self.carried(body, &client_id, seq),
                None => self.reference(entry.message_id),
            };
            let Some(mut message) = found else {
                if carried.is_none() && !self.undecodable_bodies.contains(&entry.message_id) {
                    drop_keys.push((client_id.clone(), seq));
                    self.problem(format!(
                        "queued message {seq} of {client_id:?} lost: its body {} is missing",
                        entry.message_id
                    ));
                }
                continue;
            };
            match entry.state {
                QueueState::Queued => self.stats.queued += 1,
                QueueState::Sent { .. } => self.stats.inflight += 1,
                QueueState::Released { .. } => self.stats.released += 1,
            }
            let held = in_memory.entry(client_id.clone()).or_default();
            let paged =
                self.hold_or_page(t, held, &entry, carried.as_ref(), false, &mut message)?;
            if let Some(session) = self.sessions.get_mut(&client_id) {
                session.queue.push(RecoveredEntry {
                    seq,
                    entry,
                    message,
                    paged,
                });
            }
        }
        for (client_id, seq) in drop_keys {
            t.queues.remove((&*client_id, seq)).map_err(storage)?;
            self.changed = true;
        }
        Ok(())
    }

    /// Declared owned queues and their entries, checked as [`Scan::queues`] checks sessions':
    /// an entry of an undeclared queue or with a missing body is removed and reported. A
    /// declaration of a kind this version does not know is kept with its entries (their
    /// references counted, so their bodies stay) but not returned.
    fn owned_queues(&mut self, t: &mut Tables<'_>) -> Result<(), StoreError> {
        let mut unknown_kinds = BTreeSet::new();
        for item in t.owned_queues.iter().map_err(storage)? {
            let (key, _) = item.map_err(storage)?;
            let (code, name) = key.value();
            let name: Arc<str> = Arc::from(name);
            match QueueKind::from_code(code) {
                Some(kind) => {
                    let owner = OwnedQueue { kind, name };
                    self.owned.insert(
                        owner.clone(),
                        RecoveredQueue {
                            owner,
                            queue: Vec::new(),
                        },
                    );
                }
                None => {
                    unknown_kinds.insert((code, name));
                }
            }
        }
        for (code, name) in &unknown_kinds {
            self.problem(format!(
                "owned queue {name:?} of unknown kind {code} kept but not restored"
            ));
        }
        let mut drop_keys = Vec::new();
        let mut in_memory: HashMap<OwnedQueue, usize> = HashMap::new();
        for item in t.owned_entries.iter().map_err(storage)? {
            let (key, value) = item.map_err(storage)?;
            let (code, name, seq) = key.value();
            let name = Arc::<str>::from(name);
            let raw = Bytes::copy_from_slice(value.value());
            let (entry, carried) = match codec::decode_queue_record(&raw) {
                Ok(record) => (record.entry, record.body),
                Err(e) => {
                    self.references_uncertain = true;
                    self.problem(format!(
                        "queue entry {seq} of owned queue {name:?} kept but unreadable: {e}"
                    ));
                    continue;
                }
            };
            if unknown_kinds.contains(&(code, name.clone())) {
                self.keep_unrestored(&entry, carried.as_ref());
                continue;
            }
            let owner = QueueKind::from_code(code).map(|kind| OwnedQueue {
                kind,
                name: name.clone(),
            });
            let Some(owner) = owner.filter(|o| self.owned.contains_key(o)) else {
                drop_keys.push((code, name.clone(), seq));
                self.problem(format!(
                    "queue entry {seq} of undeclared owned queue {name:?} (kind {code}) removed"
                ));
                continue;
            };
            let found = match &carried {
                Some(body) => self.carried(body, &name, seq),
                None => self.reference(entry.message_id),
            };
            let Some(mut message) = found else {
                if carried.is_none() && !self.undecodable_bodies.contains(&entry.message_id) {
                    drop_keys.push((code, name.clone(), seq));
                    self.problem(format!(
                        "queued message {seq} of owned queue {name:?} lost: its body {} is \
                         missing",
                        entry.message_id
                    ));
                }
                continue;
            };
            self.stats.owned_entries += 1;
            let held = in_memory.entry(owner.clone()).or_default();
            let paged = self.hold_or_page(t, held, &entry, carried.as_ref(), true, &mut message)?;
            if let Some(queue) = self.owned.get_mut(&owner) {
                queue.queue.push(RecoveredEntry {
                    seq,
                    entry,
                    message,
                    paged,
                });
            }
        }
        for (code, name, seq) in drop_keys {
            t.owned_entries
                .remove((code, &*name, seq))
                .map_err(storage)?;
            self.changed = true;
        }
        self.stats.owned_queues = self.owned.len() as u64;
        Ok(())
    }

    fn destinations(&mut self, t: &Tables<'_>) -> Result<(), StoreError> {
        for item in t.destinations.iter().map_err(storage)? {
            let (topic, _) = item.map_err(storage)?;
            self.destinations.push(Arc::from(topic.value()));
        }
        self.stats.destinations = self.destinations.len() as u64;
        Ok(())
    }

    fn inbound(&mut self, t: &mut Tables<'_>) -> Result<(), StoreError> {
        let mut orphans = Vec::new();
        for item in t.inbound_qos2.iter().map_err(storage)? {
            let (key, _) = item.map_err(storage)?;
            let (client_id, packet_id) = key.value();
            match self.sessions.get_mut(client_id) {
                Some(session) => {
                    session.inbound_qos2.insert(packet_id);
                    self.stats.inbound_qos2 += 1;
                }
                None if t.sessions.get(client_id).map_err(storage)?.is_some() => {}
                None => orphans.push((Arc::<str>::from(client_id), packet_id)),
            }
        }
        if !orphans.is_empty() {
            self.problem(format!(
                "{} inbound QoS 2 ids of unknown sessions removed",
                orphans.len()
            ));
        }
        for (client_id, packet_id) in orphans {
            t.inbound_qos2
                .remove((&*client_id, packet_id))
                .map_err(storage)?;
            self.changed = true;
        }
        Ok(())
    }

    /// Makes every stored count equal the references found (no row for one reference);
    /// frees unreferenced bodies.
    fn refcounts(&mut self, t: &mut Tables<'_>) -> Result<(), StoreError> {
        let mut stored = HashMap::new();
        for item in t.refs.iter().map_err(storage)? {
            let (id, count) = item.map_err(storage)?;
            stored.insert(id.value(), count.value());
        }
        let ids: BTreeSet<MessageId> = self
            .bodies
            .keys()
            .chain(&self.undecodable_bodies)
            .chain(stored.keys())
            .copied()
            .collect();
        for id in ids {
            let found = self.references.get(&id).copied().unwrap_or(0);
            let has_body = self.bodies.contains_key(&id) || self.undecodable_bodies.contains(&id);
            // A body without a count row has one reference (`apply::collect`).
            let row = stored.get(&id).copied();
            let recorded = row.unwrap_or(u64::from(has_body));
            if found == 0 && (self.references_uncertain || !has_body) {
                if !has_body && row.is_some() {
                    t.refs.remove(id).map_err(storage)?;
                    self.changed = true;
                }
                continue;
            }
            if found == 0 {
                t.refs.remove(id).map_err(storage)?;
                let freed = t
                    .messages
                    .remove(id)
                    .map_err(storage)?
                    .map(|v| v.value().len());
                self.stats.message_bytes = self
                    .stats
                    .message_bytes
                    .saturating_sub(freed.unwrap_or(0) as u64);
                self.stats.messages = self.stats.messages.saturating_sub(1);
                self.bodies.remove(&id);
                self.stats.orphan_messages_freed += 1;
                self.changed = true;
            } else if found != recorded {
                if found == 1 {
                    t.refs.remove(id).map_err(storage)?;
                } else {
                    t.refs.insert(id, found).map_err(storage)?;
                }
                self.stats.refcounts_repaired += 1;
                self.changed = true;
            }
        }
        Ok(())
    }

    fn finish(self) -> (Recovered, bool) {
        let recovered = Recovered {
            retained: self.retained,
            sessions: self.sessions.into_values().collect(),
            queues: self.owned.into_values().collect(),
            destinations: self.destinations,
            stats: self.stats,
        };
        (recovered, self.changed)
    }
}
