//! The redb tables and the handle that opens all of them in one write transaction.

use redb::{Table, TableDefinition, WriteTransaction};

use super::StoreError;

/// Message id -> encoded [`super::StoredMessage`] (written once per publish).
pub(crate) const MESSAGES: TableDefinition<u64, &[u8]> = TableDefinition::new("messages");
/// Message id -> how many queue entries and retained slots reference it, for bodies with two
/// or more; a body without a row has one (`apply::collect`).
pub(crate) const REFS: TableDefinition<u64, u64> = TableDefinition::new("message_refs");
/// Topic -> id of the message retained on it.
pub(crate) const RETAINED: TableDefinition<&str, u64> = TableDefinition::new("retained");
/// Client id -> encoded [`super::SessionRecord`].
pub(crate) const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");
/// (client id, seq) -> encoded [`super::QueueEntry`]; a session's queue is one key range.
pub(crate) const QUEUES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("queues");
/// (kind code, name) of every declared owned queue (see [`super::OwnedQueue`]).
pub(crate) const OWNED_QUEUES: TableDefinition<(u8, &str), ()> =
    TableDefinition::new("owned_queues");
/// (kind code, name, seq) -> encoded [`super::QueueEntry`] of owned queues; a queue's entries
/// are one key range.
///
/// A table apart from [`QUEUES`] rather than a key scheme inside it: an MQTT client id may be
/// any string (`$share/g/t` included), so no prefix or separator in the client-id column
/// could be kept from colliding with a session's queue. Apart, the session path keeps its
/// keys, encoding and range scans unchanged, and stores written before owned queues existed
/// open without migration (the table is created empty on first use).
pub(crate) const OWNED_QUEUE_ENTRIES: TableDefinition<(u8, &str, u64), &[u8]> =
    TableDefinition::new("owned_queue_entries");
/// (client id, packet id) of inbound QoS 2 messages awaiting PUBREL.
pub(crate) const INBOUND_QOS2: TableDefinition<(&str, u16), ()> =
    TableDefinition::new("inbound_qos2");
/// Topics (MQTT form) that exist in the broker's destination map ([`super::Op::PutDestination`]).
/// Created empty on first use, so stores written before it open without migration.
pub(crate) const DESTINATIONS: TableDefinition<&str, ()> = TableDefinition::new("destinations");
/// Counters that must survive restarts (see [`NEXT_ID_KEY`]).
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// Above every message id and queue seq ever committed, so ids keep growing across restarts
/// (a queue's order is its seq order).
pub(crate) const NEXT_ID_KEY: &str = "next_id";

/// Every table, open in one write transaction.
pub(crate) struct Tables<'txn> {
    pub messages: Table<'txn, u64, &'static [u8]>,
    pub refs: Table<'txn, u64, u64>,
    pub retained: Table<'txn, &'static str, u64>,
    pub sessions: Table<'txn, &'static str, &'static [u8]>,
    pub queues: Table<'txn, (&'static str, u64), &'static [u8]>,
    pub inbound_qos2: Table<'txn, (&'static str, u16), ()>,
    pub owned_queues: Table<'txn, (u8, &'static str), ()>,
    pub owned_entries: Table<'txn, (u8, &'static str, u64), &'static [u8]>,
    pub meta: Table<'txn, &'static str, u64>,
    pub destinations: Table<'txn, &'static str, ()>,
}

impl<'txn> Tables<'txn> {
    pub(crate) fn open(txn: &'txn WriteTransaction) -> Result<Self, StoreError> {
        let err = |e| StoreError::storage("opening tables", e);
        Ok(Tables {
            messages: txn.open_table(MESSAGES).map_err(err)?,
            refs: txn.open_table(REFS).map_err(err)?,
            retained: txn.open_table(RETAINED).map_err(err)?,
            sessions: txn.open_table(SESSIONS).map_err(err)?,
            queues: txn.open_table(QUEUES).map_err(err)?,
            inbound_qos2: txn.open_table(INBOUND_QOS2).map_err(err)?,
            owned_queues: txn.open_table(OWNED_QUEUES).map_err(err)?,
            owned_entries: txn.open_table(OWNED_QUEUE_ENTRIES).map_err(err)?,
            meta: txn.open_table(META).map_err(err)?,
            destinations: txn.open_table(DESTINATIONS).map_err(err)?,
        })
    }
}

/// Maps a redb error inside a transaction to [`StoreError::Storage`].
pub(crate) fn storage(e: impl std::fmt::Display) -> StoreError {
    StoreError::storage("transaction", e)
}
