//! Damage that redb's crash safety does not cover (a bad disk, a hand-edited or truncated
//! file, a bug) is repaired when possible and always reported, never a panic.

use std::path::Path;

use crate::support::store::{publish_to, put_session};
use ferromq::store::{Op, Store, StoreError, StoreLimits, DATABASE_FILE_NAME};
use redb::{Database, ReadableTable, TableDefinition};

// The store's table layout, reached directly to damage it.
const MESSAGES: TableDefinition<u64, &[u8]> = TableDefinition::new("messages");
const REFS: TableDefinition<u64, u64> = TableDefinition::new("message_refs");
const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");
const QUEUES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("queues");
const INBOUND_QOS2: TableDefinition<(&str, u16), ()> = TableDefinition::new("inbound_qos2");

async fn store_with_two_queued(dir: &Path) -> (u64, u64) {
    let store = Store::open(dir, StoreLimits::default()).expect("open");
    store
        .commit(vec![put_session("a"), put_session("b")])
        .await
        .expect("sessions");
    let (shared, ops, _) = publish_to(&store, &["a", "b"], b"shared");
    store.commit(ops).await.expect("shared");
    let (only_a, ops, _) = publish_to(&store, &["a"], b"only a");
    store.commit(ops).await.expect("only a");
    (shared, only_a)
}

fn with_raw_db(dir: &Path, damage: impl FnOnce(&redb::WriteTransaction)) {
    let db = Database::open(dir.join(DATABASE_FILE_NAME)).expect("raw open");
    let txn = db.begin_write().expect("txn");
    damage(&txn);
    txn.commit().expect("commit damage");
}

#[tokio::test]
async fn broken_invariants_are_repaired_and_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (shared, only_a) = store_with_two_queued(dir.path()).await;
    with_raw_db(dir.path(), |txn| {
        // A wrong reference count, an orphan body, a body gone from under a queue entry, a
        // queue and an inbound id without a session, an unreadable session.
        txn.open_table(REFS)
            .expect("refs")
            .insert(shared, 7)
            .expect("refcount");
        txn.open_table(MESSAGES)
            .expect("messages")
            .insert(999_001, [1u8, 0, 0, 0, 0, 0].as_slice())
            .expect("orphan");
        txn.open_table(MESSAGES)
            .expect("messages")
            .remove(only_a)
            .expect("remove body");
        let mut queues = txn.open_table(QUEUES).expect("queues");
        let entry = queues
            .iter()
            .expect("iter")
            .next()
            .expect("an entry")
            .expect("read")
            .1
            .value()
            .to_vec();
        queues
            .insert(("ghost", 1u64), entry.as_slice())
            .expect("ghost queue");
        txn.open_table(INBOUND_QOS2)
            .expect("inbound")
            .insert(("ghost", 4u16), ())
            .expect("ghost inbound");
        txn.open_table(SESSIONS)
            .expect("sessions")
            .insert("mangled", [1u8, 2, 3].as_slice())
            .expect("mangled session");
    });

    let store = Store::open(dir.path(), StoreLimits::default()).expect("open damaged");
    let recovered = store.recover().expect("recover damaged");
    let stats = &recovered.stats;
    let report = stats.to_string();
    assert_eq!(stats.refcounts_repaired, 1, "{report}");
    assert_eq!(stats.orphan_messages_freed, 1, "{report}");
    for needle in [
        &format!("its body {only_a} is missing"),
        "unknown session \"ghost\"",
        "inbound QoS 2 ids of unknown sessions",
        "session \"mangled\" kept but unreadable",
    ] {
        assert!(report.contains(needle), "missing {needle:?} in: {report}");
    }
    // What survives is consistent: the shared body is referenced by a and b only.
    assert_eq!(recovered.sessions.len(), 2);
    assert_eq!(stats.queued, 2);
    store
        .commit(
            recovered
                .sessions
                .iter()
                .flat_map(|s| {
                    s.queue.iter().map(|e| Op::Dequeue {
                        client_id: s.client_id.clone(),
                        seq: e.seq,
                    })
                })
                .collect(),
        )
        .await
        .expect("ack everything");
    assert_eq!(
        store.stats().message_bytes,
        0,
        "the repaired count reached zero"
    );
    // A second recovery finds only what it cannot fix (the unreadable session, kept as is).
    let again = store.recover().expect("recover again");
    assert_eq!(again.stats.problems.len(), 1, "{}", again.stats);
    assert_eq!(
        again.stats.refcounts_repaired + again.stats.orphan_messages_freed,
        0
    );
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_an_error_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(DATABASE_FILE_NAME);
    let garbage: Vec<u8> = (0..65_536u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&path, garbage).expect("write garbage");
    match Store::open(dir.path(), StoreLimits::default()) {
        Err(err @ StoreError::Open { .. }) => {
            let text = err.to_string();
            assert!(text.contains(&path.display().to_string()), "{text}");
            assert!(text.contains("move it aside"), "{text}");
        }
        other => panic!("garbage must not open: {other:?}"),
    }
}

#[tokio::test]
async fn a_truncated_file_is_refused_with_an_error_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    store_with_two_queued(dir.path()).await;
    let path = dir.path().join(DATABASE_FILE_NAME);
    let full = std::fs::read(&path).expect("read db");
    for keep in [full.len() / 2, full.len() / 4, 4096, 100] {
        let case = tempfile::tempdir().expect("tempdir");
        let cut = case.path().join(DATABASE_FILE_NAME);
        std::fs::write(&cut, &full[..keep]).expect("truncate");
        match Store::open(case.path(), StoreLimits::default()) {
            Err(err @ StoreError::Open { .. }) => {
                let text = err.to_string();
                assert!(
                    text.contains(&cut.display().to_string()),
                    "cut at {keep}: {text}"
                );
            }
            Err(other) => panic!("cut at {keep}: unexpected error {other}"),
            Ok(store) => panic!(
                "cut at {keep}: a truncated file opened: {:?}",
                store.recover().map(|r| r.stats.to_string())
            ),
        }
    }
}

/// The counts a store keeps: a row only for a body with two or more references.
fn count_rows(dir: &Path) -> Vec<(u64, u64)> {
    let db = Database::open(dir.join(DATABASE_FILE_NAME)).expect("raw open");
    let txn = redb::ReadableDatabase::begin_read(&db).expect("read");
    let refs = txn.open_table(REFS).expect("refs");
    refs.iter()
        .expect("iter")
        .map(|item| {
            let (id, count) = item.expect("row");
            (id.value(), count.value())
        })
        .collect()
}

#[tokio::test]
async fn a_body_with_one_reference_has_no_count_row_and_older_rows_of_one_still_count() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (shared, only_a) = store_with_two_queued(dir.path()).await;
    assert_eq!(
        count_rows(dir.path()),
        vec![(shared, 2)],
        "one reference needs no row"
    );
    // A store written before: a row of 1 for the single-reference body. It opens clean, and
    // an extra row on a single-reference body is repaired away rather than counted.
    with_raw_db(dir.path(), |txn| {
        txn.open_table(REFS)
            .expect("refs")
            .insert(only_a, 1)
            .expect("old row");
    });
    let store = Store::open(dir.path(), StoreLimits::default()).expect("open");
    let recovered = store.recover().expect("recover");
    assert_eq!(recovered.stats.refcounts_repaired, 0, "{}", recovered.stats);
    assert_eq!(
        recovered.stats.orphan_messages_freed, 0,
        "{}",
        recovered.stats
    );
    // b's acknowledgement leaves the shared body one reference (no row); a's frees both.
    let dequeue = |client: &str| {
        let session = recovered
            .sessions
            .iter()
            .find(|s| &*s.client_id == client)
            .expect("session");
        session
            .queue
            .iter()
            .map(|e| Op::Dequeue {
                client_id: session.client_id.clone(),
                seq: e.seq,
            })
            .collect::<Vec<_>>()
    };
    store.commit(dequeue("b")).await.expect("ack b");
    assert!(store.stats().message_bytes > 0, "a's messages are kept");
    store.commit(dequeue("a")).await.expect("ack a");
    assert_eq!(store.stats().message_bytes, 0, "every body freed");
    drop(store);
    assert_eq!(count_rows(dir.path()), vec![], "no rows left");
    let store = Store::open(dir.path(), StoreLimits::default()).expect("reopen");
    let again = store.recover().expect("recover again");
    assert_eq!(again.stats.problems.len(), 0, "{}", again.stats);
    assert_eq!(again.stats.messages, 0, "{}", again.stats);
}

#[tokio::test]
async fn a_wrong_count_row_on_a_single_reference_body_is_removed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (shared, only_a) = store_with_two_queued(dir.path()).await;
    with_raw_db(dir.path(), |txn| {
        txn.open_table(REFS)
            .expect("refs")
            .insert(only_a, 5)
            .expect("wrong row");
    });
    let store = Store::open(dir.path(), StoreLimits::default()).expect("open");
    let recovered = store.recover().expect("recover");
    assert_eq!(recovered.stats.refcounts_repaired, 1, "{}", recovered.stats);
    drop((recovered, store));
    assert_eq!(count_rows(dir.path()), vec![(shared, 2)]);
}
