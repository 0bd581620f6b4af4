//! The durable store on real files in temporary directories: every record kind survives a
//! reopen, shared bodies are written once and freed with their last reference, the directory
//! is exclusive, the storeUsage limit refuses new messages but never deletions.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use crate::support::store::{message, publish_to, put_session, queued, session};
use bytes::Bytes;
use ferromq::protocol::{QoS, RetainHandling, SubscriptionOptions};
use ferromq::store::{
    Op, QueueEntry, QueueState, SessionRecord, Store, StoreError, StoreLimits, StoredMessage,
    SubscriptionRecord, WillRecord,
};

fn open(dir: &std::path::Path) -> Store {
    Store::open(dir, StoreLimits::default()).expect("open store")
}

#[tokio::test]
async fn every_record_kind_survives_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let record = SessionRecord {
        subscriptions: vec![SubscriptionRecord {
            filter: Arc::from("a/+"),
            options: SubscriptionOptions {
                qos: QoS::ExactlyOnce,
                no_local: true,
                retain_as_published: true,
                retain_handling: RetainHandling::SendAtSubscribeIfNew,
            },
            subscription_id: Some(42),
        }],
        will: Some(WillRecord {
            topic: Arc::from("wills/c1"),
            payload: Bytes::from_static(b"gone"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: Bytes::from_static(b"\x18\x00\x00\x00\x05"),
            owner: Some(ferromq::store::WillOwner {
                user: Arc::from("alice"),
                anonymous: false,
            }),
        }),
        expiry_ms: Some(3_600_000),
        last_seen_ms: 1_700_000_000_123,
        mqtt5: true,
    };
    let retained_message = StoredMessage {
        retain: true,
        properties: Bytes::from_static(b"\x01\x01"),
        ..message("status/door", b"open", QoS::AtLeastOnce)
    };
    let (m1, m2, m3, r) = {
        let store = open(dir.path());
        let ids = [(); 4].map(|_| store.allocate_id());
        let [m1, m2, m3, r] = ids;
        let c1: Arc<str> = Arc::from("c1");
        let entries = [
            (10, m1, QueueState::Queued),
            (11, m2, QueueState::Sent { packet_id: 7 }),
            (12, m3, QueueState::Released { packet_id: 8 }),
        ];
        let mut ops = vec![Op::PutSession {
            client_id: c1.clone(),
            session: record.clone(),
        }];
        for (i, (_, id, _)) in entries.iter().enumerate() {
            ops.push(Op::PutMessage {
                id: *id,
                message: message("a/b", format!("m{i}").as_bytes(), QoS::ExactlyOnce),
            });
        }
        for (seq, id, _) in entries {
            ops.push(Op::Enqueue {
                client_id: c1.clone(),
                seq,
                entry: queued(id, QoS::ExactlyOnce),
            });
        }
        ops.push(Op::PutMessage {
            id: r,
            message: retained_message.clone(),
        });
        ops.push(Op::SetRetained {
            topic: Arc::from("status/door"),
            message_id: r,
        });
        ops.push(Op::AddInboundQos2 {
            client_id: c1.clone(),
            packet_id: 300,
        });
        ops.push(Op::AddInboundQos2 {
            client_id: c1.clone(),
            packet_id: 5,
        });
        store.commit(ops).await.expect("commit");
        // States move in a later batch, as acknowledgements arrive.
        let updates = entries
            .iter()
            .map(|(seq, _, state)| Op::SetQueueState {
                client_id: c1.clone(),
                seq: *seq,
                state: *state,
            })
            .collect();
        store.commit(updates).await.expect("update states");
        (m1, m2, m3, r)
    };

    let store = open(dir.path());
    let recovered = store.recover().expect("recover");
    assert_eq!(recovered.retained.len(), 1);
    let (topic, retained) = &recovered.retained[0];
    assert_eq!(&**topic, "status/door");
    assert_eq!(retained.id, r);
    assert_eq!(retained.message, retained_message);
    assert_eq!(recovered.sessions.len(), 1);
    let s = &recovered.sessions[0];
    assert_eq!(&*s.client_id, "c1");
    assert_eq!(s.record, record);
    assert_eq!(s.inbound_qos2, BTreeSet::from([5, 300]));
    let queue: Vec<(u64, QueueEntry, Bytes)> = s
        .queue
        .iter()
        .map(|e| (e.seq, e.entry, e.message.payload.clone()))
        .collect();
    let expect = |seq, id, state, payload: &'static [u8]| {
        let entry = QueueEntry {
            state,
            ..queued(id, QoS::ExactlyOnce)
        };
        (seq, entry, Bytes::from_static(payload))
    };
    assert_eq!(
        queue,
        vec![
            expect(10, m1, QueueState::Queued, b"m0"),
            expect(11, m2, QueueState::Sent { packet_id: 7 }, b"m1"),
            expect(12, m3, QueueState::Released { packet_id: 8 }, b"m2"),
        ]
    );
    let stats = &recovered.stats;
    assert_eq!(
        (stats.sessions, stats.queued, stats.inflight, stats.released),
        (1, 1, 1, 1)
    );
    assert_eq!(
        (stats.inbound_qos2, stats.retained, stats.messages),
        (2, 1, 4)
    );
    assert!(stats.problems.is_empty(), "{stats}");
    assert!(!stats.engine_repaired, "a clean close needs no repair");
    assert!(
        stats.to_string().contains("recovered 1 sessions"),
        "{stats}"
    );
}

#[tokio::test]
async fn fan_out_writes_one_body_and_frees_it_with_the_last_reference() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let clients: Vec<String> = (0..200).map(|i| format!("client-{i}")).collect();
    let client_refs: Vec<&str> = clients.iter().map(String::as_str).collect();
    store
        .commit(client_refs.iter().map(|c| put_session(c)).collect())
        .await
        .expect("sessions");
    let payload = vec![7u8; 10_000];
    let (_, ops, seqs) = publish_to(&store, &client_refs, &payload);
    store.commit(ops).await.expect("fan out");
    let one_body = store.stats().message_bytes;
    assert!(
        (10_000..11_000).contains(&one_body),
        "200 references must share one body, stored {one_body} bytes"
    );
    let file_len = std::fs::metadata(dir.path().join("ferromq.redb"))
        .expect("db file")
        .len();
    assert!(
        file_len < 200 * 10_000 / 4,
        "the file ({file_len} bytes) must not hold 200 copies"
    );
    // All but one subscriber acknowledge: the body stays.
    let (last, rest) = seqs.split_last().expect("seqs");
    let acks = client_refs
        .iter()
        .zip(rest)
        .map(|(c, seq)| Op::Dequeue {
            client_id: Arc::from(*c),
            seq: *seq,
        })
        .collect();
    store.commit(acks).await.expect("acks");
    assert_eq!(store.stats().message_bytes, one_body);
    drop(store);

    let store = open(dir.path());
    let recovered = store.recover().expect("recover");
    assert_eq!(recovered.stats.messages, 1);
    assert_eq!(recovered.stats.queued, 1);
    assert_eq!(store.stats().message_bytes, one_body);
    let last_client = client_refs.last().expect("client");
    store
        .commit(vec![Op::Dequeue {
            client_id: Arc::from(*last_client),
            seq: *last,
        }])
        .await
        .expect("last ack");
    assert_eq!(store.stats().message_bytes, 0, "last reference gone: freed");
    drop(store);
    let recovered = open(dir.path()).recover().expect("recover");
    assert_eq!(recovered.stats.messages, 0);
    assert!(recovered.stats.problems.is_empty());
}

#[tokio::test]
async fn retained_replace_and_clear_free_the_old_bodies() {
    let store = Store::memory(StoreLimits::default()).expect("memory store");
    let topic: Arc<str> = Arc::from("home/temp");
    for value in ["20", "21", "22"] {
        let id = store.allocate_id();
        store
            .commit(vec![
                Op::PutMessage {
                    id,
                    message: message(&topic, value.as_bytes(), QoS::AtMostOnce),
                },
                Op::SetRetained {
                    topic: topic.clone(),
                    message_id: id,
                },
            ])
            .await
            .expect("retain");
    }
    let recovered = store.recover().expect("recover");
    assert_eq!(recovered.stats.messages, 1, "replaced bodies are freed");
    assert_eq!(&recovered.retained[0].1.message.payload[..], b"22");
    store
        .commit(vec![Op::ClearRetained {
            topic: topic.clone(),
        }])
        .await
        .expect("clear");
    assert_eq!(store.stats().message_bytes, 0);
    assert!(store.recover().expect("recover").retained.is_empty());
}

#[tokio::test]
async fn an_unreferenced_body_is_collected_at_the_end_of_its_commit() {
    let store = Store::memory(StoreLimits::default()).expect("memory store");
    let id = store.allocate_id();
    store
        .commit(vec![Op::PutMessage {
            id,
            message: message("t", b"nobody wants me", QoS::AtLeastOnce),
        }])
        .await
        .expect("commit");
    assert_eq!(store.stats().message_bytes, 0);
    assert_eq!(store.recover().expect("recover").stats.messages, 0);
}

#[tokio::test]
async fn delete_session_removes_its_queue_and_inbound_ids_and_frees_bodies() {
    let store = Store::memory(StoreLimits::default()).expect("memory store");
    store
        .commit(vec![put_session("a"), put_session("b")])
        .await
        .expect("sessions");
    let (_, ops, _) = publish_to(&store, &["a", "b"], b"shared");
    store.commit(ops).await.expect("shared");
    let (_, ops, _) = publish_to(&store, &["a"], b"only a");
    store.commit(ops).await.expect("only a");
    store
        .commit(vec![Op::AddInboundQos2 {
            client_id: Arc::from("a"),
            packet_id: 9,
        }])
        .await
        .expect("inbound");
    store
        .commit(vec![Op::DeleteSession {
            client_id: Arc::from("a"),
        }])
        .await
        .expect("delete");
    let recovered = store.recover().expect("recover");
    assert_eq!(recovered.sessions.len(), 1);
    assert_eq!(&*recovered.sessions[0].client_id, "b");
    assert_eq!(recovered.stats.messages, 1, "only the shared body is left");
    assert_eq!(recovered.stats.inbound_qos2, 0);
    assert!(recovered.stats.problems.is_empty(), "{}", recovered.stats);
}

#[tokio::test]
async fn a_second_open_of_the_directory_fails_naming_it_and_the_holder() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = open(dir.path());
    let err = Store::open(dir.path(), StoreLimits::default()).expect_err("second open");
    assert_eq!(
        err,
        StoreError::Locked {
            dir: dir.path().to_path_buf(),
            holder_pid: Some(std::process::id()),
        }
    );
    let text = err.to_string();
    assert!(text.contains(&dir.path().display().to_string()), "{text}");
    assert!(
        text.contains(&format!("pid {}", std::process::id())),
        "{text}"
    );
    drop(first);
    open(dir.path());
}

#[tokio::test]
async fn a_full_store_refuses_new_messages_but_never_deletions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let limits = StoreLimits {
        store_limit_bytes: Some(3_000),
    };
    let store = Store::open(dir.path(), limits).expect("open");
    store.commit(vec![put_session("c")]).await.expect("session");
    let mut seqs = Vec::new();
    for _ in 0..2 {
        let (_, ops, s) = publish_to(&store, &["c"], &[1u8; 1_000]);
        store.commit(ops).await.expect("fits");
        seqs.extend(s);
    }
    let used = store.stats().message_bytes;
    let (_, ops, _) = publish_to(&store, &["c"], &[1u8; 1_000]);
    match store.commit(ops).await {
        Err(StoreError::Full {
            used_bytes,
            limit_bytes: 3_000,
            ..
        }) => assert_eq!(used_bytes, used),
        other => panic!("expected Full, got {other:?}"),
    }
    assert_eq!(store.stats().batches_refused_full, 1);
    assert_eq!(
        store.stats().message_bytes,
        used,
        "the refusal wrote nothing"
    );
    // State changes and deletions still go through.
    store
        .commit(vec![
            Op::SetQueueState {
                client_id: Arc::from("c"),
                seq: seqs[0],
                state: QueueState::Sent { packet_id: 1 },
            },
            put_session("d"),
            Op::Dequeue {
                client_id: Arc::from("c"),
                seq: seqs[0],
            },
        ])
        .await
        .expect("deletions are never refused");
    let (_, ops, _) = publish_to(&store, &["c"], &[1u8; 1_000]);
    store.commit(ops).await.expect("room again after the ack");
    drop(store);
    let store = Store::open(dir.path(), limits).expect("reopen");
    let recovered = store.recover().expect("recover");
    assert_eq!(recovered.stats.queued, 2);
}

#[tokio::test]
async fn an_invalid_batch_leaves_no_trace_and_does_not_fail_its_neighbours() {
    let store = Store::memory(StoreLimits::default()).expect("memory store");
    store.commit(vec![put_session("c")]).await.expect("session");
    let (_, good_ops, _) = publish_to(&store, &["c"], b"good");
    // Stores a body, then enqueues it for a session that does not exist.
    let (_, bad_ops, _) = publish_to(&store, &["c", "nobody"], b"bad");
    let dangling = vec![Op::SetRetained {
        topic: Arc::from("t"),
        message_id: 999_999,
    }];
    let (good, bad, dangling) = tokio::join!(
        store.commit(good_ops),
        store.commit(bad_ops),
        store.commit(dangling)
    );
    good.expect("good batch");
    let bad = bad.expect_err("unknown session");
    assert!(bad.to_string().contains("\"nobody\""), "{bad}");
    let dangling = dangling.expect_err("unknown message");
    assert!(dangling.to_string().contains("999999"), "{dangling}");
    let recovered = store.recover().expect("recover");
    let payloads: Vec<&[u8]> = recovered.sessions[0]
        .queue
        .iter()
        .map(|e| &e.message.payload[..])
        .collect();
    assert_eq!(payloads, vec![b"good"]);
    assert_eq!(recovered.stats.messages, 1);
    assert!(recovered.retained.is_empty());
    // A reused id is refused too.
    let reuse = vec![Op::PutMessage {
        id: recovered.sessions[0].queue[0].entry.message_id,
        message: message("t", b"again", QoS::AtLeastOnce),
    }];
    assert!(matches!(
        store.commit(reuse).await,
        Err(StoreError::InvalidOp(_))
    ));
}

#[tokio::test]
async fn ids_keep_growing_across_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let last = {
        let store = open(dir.path());
        store.commit(vec![put_session("c")]).await.expect("session");
        let (_, ops, seqs) = publish_to(&store, &["c"], b"x");
        store.commit(ops).await.expect("publish");
        seqs[0]
    };
    let store = open(dir.path());
    assert!(store.allocate_id() > last);
}

#[tokio::test]
async fn expire_sessions_deletes_offline_sessions_past_their_expiry() {
    let store = Store::memory(StoreLimits::default()).expect("memory store");
    let with = |last_seen_ms, expiry_ms| SessionRecord {
        last_seen_ms,
        expiry_ms,
        ..session(&[("t", QoS::AtLeastOnce)])
    };
    let put = |id: &str, record| Op::PutSession {
        client_id: Arc::from(id),
        session: record,
    };
    store
        .commit(vec![
            put("old", with(1_000, None)),
            put("old-but-online", with(1_000, None)),
            put("recent", with(9_000, None)),
            put("own-short-expiry", with(9_000, Some(500))),
            // Capped by the broker-wide 5 s (MQTT 5 interval under offlineDurableSubscriberTimeout).
            put("own-long-expiry", with(1_000, Some(100_000))),
            put("own-expiry-not-over", with(9_000, Some(4_000))),
        ])
        .await
        .expect("sessions");
    let (_, ops, _) = publish_to(&store, &["old"], b"queued for old");
    store.commit(ops).await.expect("queue");
    let online = HashSet::from([Arc::<str>::from("old-but-online")]);
    let mut expired = store
        .expire_sessions(10_000, 5_000, online)
        .await
        .expect("expire");
    expired.sort();
    assert_eq!(
        expired,
        vec![
            Arc::<str>::from("old"),
            Arc::from("own-long-expiry"),
            Arc::from("own-short-expiry")
        ]
    );
    let recovered = store.recover().expect("recover");
    let left: BTreeSet<&str> = recovered.sessions.iter().map(|s| &*s.client_id).collect();
    assert_eq!(
        left,
        BTreeSet::from(["old-but-online", "recent", "own-expiry-not-over"])
    );
    assert_eq!(
        recovered.stats.messages, 0,
        "the expired queue's body is freed"
    );
}

#[tokio::test]
async fn many_concurrent_committers_share_fsyncs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    store.commit(vec![put_session("c")]).await.expect("session");
    let before = store.stats();
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let (_, ops, _) = publish_to(&store, &["c"], format!("{i}").as_bytes());
                store.commit(ops).await
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("join").expect("commit");
    }
    let after = store.stats();
    assert_eq!(after.batches_committed - before.batches_committed, 64);
    let fsyncs = after.group_commits - before.group_commits;
    assert!(
        fsyncs < 64,
        "64 waiting batches must share fsyncs ({fsyncs})"
    );
    assert_eq!(store.recover().expect("recover").stats.queued, 64);
}
