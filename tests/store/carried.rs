//! A message queued for one session only is stored with its queue entry (`Op::PutQueued`):
//! one record instead of a body and an entry. It must be indistinguishable from the two
//! records it replaces: the same storeUsage bytes, the same recovery (in memory and paged),
//! the same state changes, and freed with its entry.

use std::sync::Arc;

use crate::support::store::{message, put_session, queued};
use ferromq::store::{Hold, Op, QueueState, Store, StoreError, StoreLimits};

fn open(dir: &std::path::Path, limit: Option<u64>) -> Store {
    Store::open(
        dir,
        StoreLimits {
            store_limit_bytes: limit,
        },
    )
    .expect("open store")
}

/// Queues `payloads` for client "c", carried in their entries or as bodies and entries;
/// returns the seqs.
async fn queue_all(store: &Store, payloads: &[&[u8]], carried: bool) -> Vec<u64> {
    let client: Arc<str> = Arc::from("c");
    let mut seqs = Vec::new();
    for payload in payloads {
        let (id, seq) = (store.allocate_id(), store.allocate_id());
        let entry = queued(id, ferromq::protocol::QoS::AtLeastOnce);
        let message = message("t/x", payload, ferromq::protocol::QoS::AtLeastOnce);
        let ops = if carried {
            vec![Op::PutQueued {
                client_id: client.clone(),
                seq,
                entry,
                message,
            }]
        } else {
            vec![
                Op::PutMessage { id, message },
                Op::Enqueue {
                    client_id: client.clone(),
                    seq,
                    entry,
                },
            ]
        };
        store.commit(ops).await.expect("queue");
        seqs.push(seq);
    }
    seqs
}

#[tokio::test]
async fn a_carried_body_counts_recovers_pages_in_and_is_freed_like_a_stored_one() {
    let payloads: [&[u8]; 4] = [b"first", b"second", &[9u8; 3_000], b"fourth"];
    let (carried_dir, stored_dir) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let mut bytes = Vec::new();
    let mut seqs = Vec::new();
    for (dir, carried) in [(&carried_dir, true), (&stored_dir, false)] {
        let store = open(dir.path(), None);
        store.commit(vec![put_session("c")]).await.expect("session");
        let queued = queue_all(&store, &payloads, carried).await;
        // The second is sent: its state changes, its body stays with it.
        store
            .commit(vec![Op::SetQueueState {
                client_id: Arc::from("c"),
                seq: queued[1],
                state: QueueState::Sent { packet_id: 4 },
            }])
            .await
            .expect("sent");
        bytes.push(store.stats().message_bytes);
        seqs.push(queued);
    }
    assert!(bytes[0] > 3_000, "stored {} bytes", bytes[0]);
    assert_eq!(
        bytes[0], bytes[1],
        "carried and stored bodies count the same"
    );

    let store = open(carried_dir.path(), None);
    assert_eq!(
        store.stats().message_bytes,
        bytes[0],
        "counted again at open"
    );
    let recovered = store.recover_paged(2).expect("recover");
    assert_eq!(recovered.stats.message_bytes, bytes[0]);
    assert_eq!(recovered.stats.messages, 4);
    assert!(recovered.stats.problems.is_empty(), "{}", recovered.stats);
    let session = &recovered.sessions[0];
    let got: Vec<(u64, QueueState, bool, Vec<u8>)> = session
        .queue
        .iter()
        .map(|e| (e.seq, e.entry.state, e.paged, e.message.payload.to_vec()))
        .collect();
    let seq = &seqs[0];
    assert_eq!(
        got,
        vec![
            (seq[0], QueueState::Queued, false, b"first".to_vec()),
            (
                seq[1],
                QueueState::Sent { packet_id: 4 },
                false,
                b"second".to_vec()
            ),
            (seq[2], QueueState::Queued, true, Vec::new()),
            (seq[3], QueueState::Queued, true, Vec::new()),
        ]
    );
    assert_eq!(&*session.queue[0].message.topic, "t/x");
    let paged = store.read_paged("c", &[seq[2], seq[3]]).expect("page in");
    assert_eq!(
        paged
            .into_iter()
            .map(|m| m.map(|m| m.payload))
            .collect::<Vec<_>>(),
        vec![
            Some(bytes::Bytes::from(vec![9u8; 3_000])),
            Some(bytes::Bytes::from_static(b"fourth"))
        ]
    );

    // Acknowledged: the bodies go with their entries.
    let acks = seq
        .iter()
        .map(|seq| Op::Dequeue {
            client_id: Arc::from("c"),
            seq: *seq,
        })
        .collect();
    store.commit(acks).await.expect("acks");
    assert_eq!(store.stats().message_bytes, 0);
    drop(store);
    let store = open(carried_dir.path(), None);
    let recovered = store.recover().expect("recover");
    assert_eq!(
        (recovered.stats.messages, recovered.stats.message_bytes),
        (0, 0)
    );
    assert!(recovered.sessions[0].queue.is_empty());
}

#[tokio::test]
async fn a_carried_body_is_nobody_elses_and_obeys_the_store_limit() {
    let dir = tempfile::tempdir().expect("dir");
    let store = open(dir.path(), Some(10_000));
    store.commit(vec![put_session("c")]).await.expect("session");
    let seqs = queue_all(&store, &[b"kept"], true).await;
    assert_eq!(seqs.len(), 1);
    // Its id names no stored body: another queue or a retained slot may not refer to it.
    let carried_id = seqs[0] - 1;
    let refused = store
        .commit(vec![Op::SetRetained {
            topic: Arc::from("t/x"),
            message_id: carried_id,
        }])
        .await;
    assert!(
        matches!(refused, Err(StoreError::InvalidOp(_))),
        "{refused:?}"
    );
    // Its id is in use: a body under the same id in the same batch is refused.
    let id = store.allocate_id();
    let twice = store
        .commit(vec![
            Op::PutQueued {
                client_id: Arc::from("c"),
                seq: store.allocate_id(),
                entry: queued(id, ferromq::protocol::QoS::AtLeastOnce),
                message: message("t/x", b"a", ferromq::protocol::QoS::AtLeastOnce),
            },
            Op::PutMessage {
                id,
                message: message("t/x", b"b", ferromq::protocol::QoS::AtLeastOnce),
            },
        ])
        .await;
    assert!(matches!(twice, Err(StoreError::InvalidOp(_))), "{twice:?}");
    // For a session that does not exist: refused.
    let unknown = store
        .commit(vec![Op::PutQueued {
            client_id: Arc::from("nobody"),
            seq: store.allocate_id(),
            entry: queued(store.allocate_id(), ferromq::protocol::QoS::AtLeastOnce),
            message: message("t/x", b"a", ferromq::protocol::QoS::AtLeastOnce),
        }])
        .await;
    assert!(
        matches!(unknown, Err(StoreError::InvalidOp(_))),
        "{unknown:?}"
    );
    // Past storeUsage: refused as a stored body is, nothing written.
    let before = store.stats().message_bytes;
    let big = vec![1u8; 20_000];
    let full = store
        .commit(vec![Op::PutQueued {
            client_id: Arc::from("c"),
            seq: store.allocate_id(),
            entry: queued(store.allocate_id(), ferromq::protocol::QoS::AtLeastOnce),
            message: message("t/x", &big, ferromq::protocol::QoS::AtLeastOnce),
        }])
        .await;
    assert!(matches!(full, Err(StoreError::Full { .. })), "{full:?}");
    assert_eq!(store.stats().message_bytes, before);
    drop(store);
    let store = open(dir.path(), Some(10_000));
    let recovered = store.recover().expect("recover");
    let payloads: Vec<&[u8]> = recovered.sessions[0]
        .queue
        .iter()
        .map(|e| &e.message.payload[..])
        .collect();
    assert_eq!(payloads, vec![&b"kept"[..]]);
}

/// Recovery holds queued payloads up to a byte budget as well as a count, the held ones the
/// head of the queue; a page read back stops at its byte budget (at least one message).
/// Carried bodies and stored ones alike.
#[tokio::test]
async fn recovery_and_page_reads_stop_at_their_byte_budget() {
    let big = [7u8; 10_000];
    let payloads: [&[u8]; 5] = [&big, &big, &big, b"small", b"tail"];
    for carried in [true, false] {
        let dir = tempfile::tempdir().expect("dir");
        let store = open(dir.path(), None);
        store.commit(vec![put_session("c")]).await.expect("session");
        let seqs = queue_all(&store, &payloads, carried).await;
        drop(store);

        let store = open(dir.path(), None);
        let recovered = store
            .recover_envelopes(
                Hold {
                    queued_per_queue: 1000,
                    payload_bytes: 25_000,
                },
                None,
            )
            .expect("recover");
        let paged: Vec<bool> = recovered.sessions[0]
            .queue
            .iter()
            .map(|e| e.paged)
            .collect();
        // The third passes the budget; the fourth would fit its rest but follows a paged
        // one: paged too, so the paged entries stay the tail of the queue.
        assert_eq!(
            paged,
            [false, false, true, true, true],
            "carried: {carried}"
        );

        let lens = |read: Vec<Option<ferromq::store::StoredMessage>>| {
            read.iter()
                .map(|m| m.as_ref().map(|m| m.payload.len()))
                .collect::<Vec<_>>()
        };
        let read = store
            .read_paged_within("c", &seqs[2..], 10_001)
            .expect("page in");
        assert_eq!(
            lens(read),
            [Some(10_000)],
            "stops once the budget is reached, the message reaching it included"
        );
        let read = store
            .read_paged_within("c", &seqs[2..], 20_100)
            .expect("page in");
        assert_eq!(lens(read), [Some(10_000), Some(5), Some(4)]);
        let read = store
            .read_paged_within("c", &seqs[3..], 0)
            .expect("page in");
        assert_eq!(read.len(), 1, "at least one message");
    }
}
