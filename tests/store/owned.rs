//! Queues owned by something other than a session (MQTT 5 shared-subscription groups, named
//! queues): declared and deleted on their own, sharing message bodies with session queues,
//! counted in every body's references, recovered and paged like session queues.

use std::sync::Arc;

use crate::support::store::{message, put_session, queued};
use ferromq::protocol::QoS;
use ferromq::store::{
    MessageId, Op, OwnedQueue, QueueState, Recovered, RecoveredQueue, Store, StoreError,
    StoreLimits,
};

fn open(dir: &std::path::Path) -> Store {
    Store::open(dir, StoreLimits::default()).expect("open store")
}

fn group() -> OwnedQueue {
    OwnedQueue::group("g1 sensors/+/temp")
}

fn orders() -> OwnedQueue {
    OwnedQueue::queue("orders")
}

fn put(id: MessageId, payload: &[u8]) -> Op {
    Op::PutMessage {
        id,
        message: message("t/x", payload, QoS::AtLeastOnce),
    }
}

fn enqueue_owned(queue: &OwnedQueue, seq: u64, id: MessageId) -> Op {
    Op::EnqueueOwned {
        queue: queue.clone(),
        seq,
        entry: queued(id, QoS::AtLeastOnce),
    }
}

fn owned<'a>(recovered: &'a Recovered, queue: &OwnedQueue) -> &'a RecoveredQueue {
    recovered
        .queues
        .iter()
        .find(|q| &q.owner == queue)
        .unwrap_or_else(|| panic!("{queue:?} not recovered: {:?}", recovered.queues))
}

fn assert_clean(recovered: &Recovered) {
    let stats = &recovered.stats;
    assert!(stats.problems.is_empty(), "{stats}");
    assert_eq!(stats.refcounts_repaired, 0, "stored counts match: {stats}");
    assert_eq!(stats.orphan_messages_freed, 0, "{stats}");
}

#[tokio::test]
async fn one_body_queued_for_a_session_a_group_and_a_queue_is_freed_with_its_last_reference() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (id, [to_session, to_group, to_queue]) = {
        let store = open(dir.path());
        store
            .commit(vec![
                put_session("c1"),
                Op::DeclareQueue { queue: group() },
                Op::DeclareQueue { queue: orders() },
            ])
            .await
            .expect("declare");
        let id = store.allocate_id();
        let seqs = [(); 3].map(|_| store.allocate_id());
        store
            .commit(vec![
                put(id, b"shared"),
                Op::Enqueue {
                    client_id: Arc::from("c1"),
                    seq: seqs[0],
                    entry: queued(id, QoS::AtLeastOnce),
                },
                enqueue_owned(&group(), seqs[1], id),
                enqueue_owned(&orders(), seqs[2], id),
            ])
            .await
            .expect("publish");
        (id, seqs)
    };

    // Three references to one body: a recount that found another number would repair it.
    let store = open(dir.path());
    let recovered = store.recover().expect("recover");
    assert_clean(&recovered);
    assert_eq!(recovered.stats.messages, 1);
    assert_eq!(recovered.stats.queued, 1, "the session's entry only");
    assert_eq!(
        (recovered.stats.owned_queues, recovered.stats.owned_entries),
        (2, 2)
    );
    assert!(recovered
        .stats
        .to_string()
        .contains("2 owned queues (2 entries)"));
    assert_eq!(recovered.sessions[0].queue.len(), 1);
    for (queue, seq) in [(group(), to_group), (orders(), to_queue)] {
        let q = owned(&recovered, &queue);
        assert_eq!(q.queue.len(), 1);
        assert_eq!(q.queue[0].seq, seq);
        assert_eq!(q.queue[0].entry.message_id, id);
        assert_eq!(&q.queue[0].message.payload[..], b"shared");
        assert!(!q.queue[0].paged);
    }
    let one_body = store.stats().message_bytes;
    assert!(one_body > 0);

    store
        .commit(vec![
            Op::Dequeue {
                client_id: Arc::from("c1"),
                seq: to_session,
            },
            Op::DequeueOwned {
                queue: group(),
                seq: to_group,
            },
        ])
        .await
        .expect("ack session and group");
    assert_eq!(
        store.stats().message_bytes,
        one_body,
        "the queue still holds it"
    );
    drop(store);

    let store = open(dir.path());
    let recovered = store.recover().expect("recover");
    assert_clean(&recovered);
    assert_eq!(recovered.stats.messages, 1);
    assert!(owned(&recovered, &group()).queue.is_empty());
    assert_eq!(owned(&recovered, &orders()).queue.len(), 1);
    store
        .commit(vec![Op::DequeueOwned {
            queue: orders(),
            seq: to_queue,
        }])
        .await
        .expect("ack queue");
    assert_eq!(store.stats().message_bytes, 0, "last reference gone: freed");
    drop(store);

    let recovered = open(dir.path()).recover().expect("recover");
    assert_clean(&recovered);
    assert_eq!(recovered.stats.messages, 0);
    assert_eq!(recovered.queues.len(), 2, "empty queues stay declared");
}

#[tokio::test]
async fn deleting_a_queue_frees_the_bodies_only_it_referenced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let shared_seq = {
        let store = open(dir.path());
        let [only, shared] = [(); 2].map(|_| store.allocate_id());
        let seqs = [(); 3].map(|_| store.allocate_id());
        store
            .commit(vec![
                Op::DeclareQueue { queue: group() },
                Op::DeclareQueue { queue: orders() },
                put(only, b"only in orders"),
                put(shared, b"in both"),
                enqueue_owned(&orders(), seqs[0], only),
                enqueue_owned(&orders(), seqs[1], shared),
                enqueue_owned(&group(), seqs[2], shared),
            ])
            .await
            .expect("publish");
        store
            .commit(vec![Op::SetOwnedQueueState {
                queue: orders(),
                seq: seqs[0],
                state: QueueState::Sent { packet_id: 3 },
            }])
            .await
            .expect("sent");
        store
            .commit(vec![Op::DeleteQueue { queue: orders() }])
            .await
            .expect("delete");
        // Deleting what is gone is not an error.
        store
            .commit(vec![Op::DeleteQueue { queue: orders() }])
            .await
            .expect("delete again");
        seqs[2]
    };

    let store = open(dir.path());
    let recovered = store.recover().expect("recover");
    assert_clean(&recovered);
    assert_eq!(recovered.stats.messages, 1, "the shared body is left");
    assert_eq!(recovered.queues.len(), 1);
    let g = owned(&recovered, &group());
    assert_eq!(g.queue.len(), 1);
    assert_eq!(g.queue[0].seq, shared_seq);
    assert_eq!(&g.queue[0].message.payload[..], b"in both");

    // Declared again, the queue starts empty.
    store
        .commit(vec![Op::DeclareQueue { queue: orders() }])
        .await
        .expect("declare again");
    drop(store);
    let recovered = open(dir.path()).recover().expect("recover");
    assert_clean(&recovered);
    assert!(owned(&recovered, &orders()).queue.is_empty());
}

#[tokio::test]
async fn enqueue_needs_a_declared_queue_and_names_never_collide() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let id = store.allocate_id();
    let undeclared = vec![put(id, b"x"), enqueue_owned(&orders(), 1, id)];
    assert!(matches!(
        store.commit(undeclared).await,
        Err(StoreError::InvalidOp(_))
    ));
    let deleted_first = vec![
        Op::DeclareQueue { queue: orders() },
        Op::DeleteQueue { queue: orders() },
        put(id, b"x"),
        enqueue_owned(&orders(), 1, id),
    ];
    assert!(matches!(
        store.commit(deleted_first).await,
        Err(StoreError::InvalidOp(_))
    ));
    assert_eq!(
        store.stats().message_bytes,
        0,
        "refused batches leave no trace"
    );

    // One name as a session, a group and a queue: three separate queues.
    let name = "same";
    let [a, b, c] = [(); 3].map(|_| store.allocate_id());
    let (as_group, as_queue) = (OwnedQueue::group(name), OwnedQueue::queue(name));
    store
        .commit(vec![
            put_session(name),
            Op::DeclareQueue {
                queue: as_group.clone(),
            },
            Op::DeclareQueue {
                queue: as_queue.clone(),
            },
            put(a, b"session"),
            put(b, b"group"),
            put(c, b"queue"),
            Op::Enqueue {
                client_id: Arc::from(name),
                seq: 10,
                entry: queued(a, QoS::AtLeastOnce),
            },
            enqueue_owned(&as_group, 10, b),
            enqueue_owned(&as_queue, 10, c),
        ])
        .await
        .expect("publish");
    store
        .commit(vec![Op::DeleteQueue {
            queue: as_group.clone(),
        }])
        .await
        .expect("delete the group");
    drop(store);

    let recovered = open(dir.path()).recover().expect("recover");
    assert_clean(&recovered);
    assert_eq!(recovered.stats.messages, 2);
    assert_eq!(
        &recovered.sessions[0].queue[0].message.payload[..],
        b"session"
    );
    assert_eq!(recovered.queues.len(), 1);
    assert_eq!(
        &owned(&recovered, &as_queue).queue[0].message.payload[..],
        b"queue"
    );
}

#[tokio::test]
async fn owned_queues_keep_states_and_page_payloads_across_reopens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let seqs = {
        let store = open(dir.path());
        let mut ops = vec![Op::DeclareQueue { queue: group() }];
        let mut seqs = Vec::new();
        for i in 0..4u8 {
            let id = store.allocate_id();
            let seq = store.allocate_id();
            ops.push(put(id, &[b'p', b'0' + i]));
            ops.push(enqueue_owned(&group(), seq, id));
            seqs.push(seq);
        }
        store.commit(ops).await.expect("publish");
        store
            .commit(vec![Op::SetOwnedQueueState {
                queue: group(),
                seq: seqs[0],
                state: QueueState::Released { packet_id: 9 },
            }])
            .await
            .expect("released");
        seqs
    };
    // Reopened twice without a crash: nothing lost, nothing repaired.
    drop(open(dir.path()).recover().expect("first reopen"));
    let store = open(dir.path());
    let recovered = store.recover_paged(2).expect("recover");
    assert_clean(&recovered);
    assert!(!recovered.stats.engine_repaired);
    let g = owned(&recovered, &group());
    let got: Vec<(u64, QueueState, bool)> = g
        .queue
        .iter()
        .map(|e| (e.seq, e.entry.state, e.paged))
        .collect();
    assert_eq!(
        got,
        vec![
            (seqs[0], QueueState::Released { packet_id: 9 }, false),
            (seqs[1], QueueState::Queued, false),
            (seqs[2], QueueState::Queued, true),
            (seqs[3], QueueState::Queued, true),
        ],
        "paged as a session's queue: two entries per queue read, later queued ones paged"
    );
    assert!(g.queue[2].message.payload.is_empty());
    let payloads: Vec<_> = store
        .read_owned_paged(&group(), &[seqs[3], seqs[2], 12345])
        .expect("page in")
        .into_iter()
        .map(|m| m.map(|m| m.payload))
        .collect();
    assert_eq!(
        payloads,
        vec![
            Some(bytes::Bytes::from_static(b"p3")),
            Some(bytes::Bytes::from_static(b"p2")),
            None
        ]
    );
    let other = store
        .read_owned_paged(&orders(), &[seqs[3]])
        .expect("undeclared queue");
    assert!(matches!(&other[..], [None]), "{other:?}");
}
