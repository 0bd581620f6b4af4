//! The store on a real, small filesystem (a tmpfs mounted by the test, so root only): the
//! free-space reserve refuses new messages but not deletions, a real ENOSPC fails only the
//! group it hit, the database is reopened by itself and keeps every committed record.
//!
//! Skipped with a message when not root or when mounting fails, unless `CI` is set: then they
//! fail instead (CI runs as root and must run them).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::support::tmpfs::SmallFs;
use ferromq::protocol::QoS;
use ferromq::store::{
    Op, QueueEntry, QueueState, SessionRecord, Store, StoreError, StoreLimits, StoredMessage,
};

fn session() -> Op {
    Op::PutSession {
        client_id: Arc::from("c"),
        session: SessionRecord {
            subscriptions: Vec::new(),
            will: None,
            expiry_ms: None,
            last_seen_ms: 1,
            mqtt5: false,
        },
    }
}

/// A 4 KiB QoS 1 message queued for session `c`: the ops and its queue seq.
fn publish(store: &Store, number: u32) -> (Vec<Op>, u64) {
    let id = store.allocate_id();
    let seq = store.allocate_id();
    let mut payload = vec![0u8; 4096];
    payload[..4].copy_from_slice(&number.to_be_bytes());
    let ops = vec![
        Op::PutMessage {
            id,
            message: StoredMessage {
                topic: Arc::from("d/x"),
                payload: Bytes::from(payload),
                qos: QoS::AtLeastOnce,
                retain: false,
                properties: Bytes::new(),
            },
        },
        Op::Enqueue {
            client_id: Arc::from("c"),
            seq,
            entry: QueueEntry {
                message_id: id,
                qos: QoS::AtLeastOnce,
                retain: false,
                subscription_id: None,
                state: QueueState::Queued,
            },
        },
    ];
    (ops, seq)
}

fn dequeue(seq: u64) -> Vec<Op> {
    vec![Op::Dequeue {
        client_id: Arc::from("c"),
        seq,
    }]
}

/// The queue seqs of session `c` after reopening the store in `dir`.
fn recovered_seqs(dir: &Path) -> Vec<u64> {
    let store = Store::open(dir, StoreLimits::default()).expect("the store opens again");
    let recovered = store.recover().expect("recover");
    assert!(
        recovered.stats.problems.is_empty(),
        "{:?}",
        recovered.stats.problems
    );
    recovered
        .sessions
        .iter()
        .filter(|s| &*s.client_id == "c")
        .flat_map(|s| s.queue.iter().map(|e| e.seq))
        .collect()
}

#[tokio::test]
async fn the_reserve_refuses_new_messages_before_the_disk_is_full_but_never_deletions() {
    let Some(fs) = SmallFs::mount(4096) else {
        return;
    };
    let dir = fs.path().join("store");
    let store = Store::open(&dir, StoreLimits::default()).expect("open");
    assert_eq!(store.disk_reserve_bytes(), Some(256 * 1024));
    store.commit(vec![session()]).await.expect("session");
    let mut acked = Vec::new();
    let refusal = loop {
        let (ops, seq) = publish(&store, acked.len() as u32);
        match store.commit(ops).await {
            Ok(()) => acked.push(seq),
            Err(e) => break e,
        }
        assert!(
            acked.len() < 1000,
            "a 4 MiB filesystem cannot hold 4 MB of messages"
        );
    };
    assert!(
        matches!(refusal, StoreError::DiskFull { reserve_bytes, .. } if reserve_bytes == 256 * 1024),
        "refused by the reserve, not by an I/O error: {refusal}"
    );
    assert!(
        acked.len() >= 100,
        "most of the filesystem was used: {}",
        acked.len()
    );
    assert!(matches!(
        store.check_room(4096),
        Err(StoreError::DiskFull { .. })
    ));
    assert_eq!(store.stats().reopens, 0);
    // Deletions go through on the nearly full disk, one by one as acknowledgements come.
    for seq in acked.drain(..acked.len() / 2) {
        store.commit(dequeue(seq)).await.expect("a deletion");
    }
    // Half drained: the freed pages inside the file let new messages in again.
    let deadline = Instant::now() + Duration::from_secs(5);
    while store.check_room(4096).is_err() {
        assert!(Instant::now() < deadline, "the drained store admits again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (ops, seq) = publish(&store, 9999);
    store.commit(ops).await.expect("admitted after the drain");
    acked.push(seq);
    drop(store);
    let mut seqs = recovered_seqs(&dir);
    seqs.sort_unstable();
    acked.sort_unstable();
    assert_eq!(seqs, acked);
}

#[tokio::test]
async fn a_real_enospc_fails_only_its_group_and_the_store_reopens_by_itself() {
    let Some(fs) = SmallFs::mount(4096) else {
        return;
    };
    let dir = fs.path().join("store");
    let store = Store::open(&dir, StoreLimits::default()).expect("open");
    // No reserve: let the writes run into the real ENOSPC.
    store.set_disk_reserve(Some(0));
    store.commit(vec![session()]).await.expect("session");
    let filler = fs.fill("filler", 1024 * 1024);
    assert!(filler > 512 * 1024);
    let mut acked = Vec::new();
    let failure = loop {
        let (ops, seq) = publish(&store, acked.len() as u32);
        match store.commit(ops).await {
            Ok(()) => acked.push(seq),
            Err(e) => break e,
        }
        assert!(
            acked.len() < 1000,
            "a 4 MiB filesystem cannot hold 4 MB of messages"
        );
    };
    assert!(
        matches!(
            failure,
            StoreError::Unavailable {
                out_of_space: true,
                ..
            }
        ),
        "{failure}"
    );
    // Reopened by itself (same file, same directory lock) while the disk is still full.
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.stats().reopens == 0 {
        assert!(Instant::now() < deadline, "the store reopens");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A second open of the directory still finds it locked: the lock was kept.
    assert!(matches!(
        Store::open(&dir, StoreLimits::default()),
        Err(StoreError::Locked { .. })
    ));
    // Free space: writes resume by themselves.
    std::fs::remove_file(fs.path().join("filler")).expect("remove filler");
    let deadline = Instant::now() + Duration::from_secs(10);
    let resumed = loop {
        let (ops, seq) = publish(&store, 5000);
        match store.commit(ops).await {
            Ok(()) => break seq,
            Err(e) => {
                assert!(Instant::now() < deadline, "writes resume: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    acked.push(resumed);
    // Deletions work again too.
    let first = acked.remove(0);
    store.commit(dequeue(first)).await.expect("a deletion");
    drop(store);
    let mut seqs = recovered_seqs(&dir);
    seqs.sort_unstable();
    acked.sort_unstable();
    assert_eq!(seqs, acked, "every committed record kept, nothing else");
}

#[tokio::test]
async fn while_reopening_batches_are_refused_at_once() {
    let Some(fs) = SmallFs::mount(2048) else {
        return;
    };
    let dir = fs.path().join("store");
    let store = Store::open(&dir, StoreLimits::default()).expect("open");
    store.set_disk_reserve(Some(0));
    store.commit(vec![session()]).await.expect("session");
    // Fill the filesystem from outside, then write until the engine fails.
    fs.fill("filler", usize::MAX);
    let mut failures = 0;
    let started = Instant::now();
    for n in 0..50 {
        let (ops, _) = publish(&store, n);
        if store.commit(ops).await.is_err() {
            failures += 1;
        }
    }
    assert_eq!(failures, 50, "nothing fits on a full filesystem");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refusals are quick: {:?}",
        started.elapsed()
    );
    std::fs::remove_file(fs.path().join("filler")).expect("remove filler");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (ops, _) = publish(&store, 1);
        if store.commit(ops).await.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "writes resume");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
