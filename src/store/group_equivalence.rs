//! A group commit must be invisible: whatever batches share a group, the tables end as they
//! would with one group per batch. The group's shortcuts (state changes of entries it also
//! removes left unwritten, removals and freed bodies taken out at its end, count rows read
//! only when they can exist) are checked here against that reference, on random sequences of
//! the batches the broker submits (a publish with its body, retained slot and queue entries,
//! or carried in its single entry;
//! a delivery's packet id; an acknowledgement; a session saved or ended; a retained slot
//! cleared; an enqueue of an unknown body, refused).

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;
use redb::{Database, ReadableDatabase, ReadableTable};

use super::apply::tests::entry;
use super::apply::{apply, collect, validate, Group, RefDeltas};
use super::tables::{Tables, MESSAGES, META, NEXT_ID_KEY, QUEUES, REFS, RETAINED, SESSIONS};
use super::types::{Op, QueueState, SessionRecord, StoredMessage};
use crate::protocol::QoS;

const CLIENTS: [&str; 3] = ["a", "b", "c"];

/// One step of the broker's traffic, before ids are given out.
#[derive(Debug, Clone)]
enum Step {
    /// A body queued for `to` (client indexes; repeats give one entry each), retained or not;
    /// `carried`: stored in its entry when it has one and is not retained, as the broker does.
    Publish {
        to: Vec<usize>,
        retain: bool,
        carried: bool,
    },
    /// `seq_back`: how far below the newest id the entry's seq is (may name no entry).
    Sent {
        client: usize,
        seq_back: u64,
    },
    Acked {
        client: usize,
        seq_back: u64,
    },
    SentAndAcked {
        client: usize,
        seq_back: u64,
    },
    SaveSession {
        client: usize,
    },
    EndSession {
        client: usize,
    },
    ClearRetained,
    /// Refused by validation: it must leave no trace in any grouping.
    EnqueueUnknown {
        client: usize,
    },
}

fn step() -> impl Strategy<Value = Step> {
    let client = 0..CLIENTS.len();
    prop_oneof![
        4 => (prop::collection::vec(0..CLIENTS.len(), 0..3), any::<bool>(), any::<bool>())
            .prop_map(|(to, retain, carried)| Step::Publish { to, retain, carried }),
        2 => (client.clone(), 0..6u64).prop_map(|(client, seq_back)| Step::Sent { client, seq_back }),
        3 => (client.clone(), 0..6u64).prop_map(|(client, seq_back)| Step::Acked { client, seq_back }),
        1 => (client.clone(), 0..6u64)
            .prop_map(|(client, seq_back)| Step::SentAndAcked { client, seq_back }),
        1 => client.clone().prop_map(|client| Step::SaveSession { client }),
        1 => client.clone().prop_map(|client| Step::EndSession { client }),
        1 => Just(Step::ClearRetained),
        1 => client.prop_map(|client| Step::EnqueueUnknown { client }),
    ]
}

fn client(i: usize) -> Arc<str> {
    Arc::from(CLIENTS[i])
}

/// The op batches of `steps`, ids given out in order from 1 (bodies and seqs share them, as
/// in the store). Every client's session is saved first.
fn batches(steps: &[Step]) -> Vec<Vec<Op>> {
    let mut next_id = 1u64;
    let mut out: Vec<Vec<Op>> = (0..CLIENTS.len())
        .map(|i| {
            vec![Op::PutSession {
                client_id: client(i),
                session: SessionRecord::default(),
            }]
        })
        .collect();
    let seq_below = |next_id: u64, back: u64| next_id.saturating_sub(1 + back);
    for step in steps {
        let ops = match step {
            Step::Publish {
                to,
                retain,
                carried,
            } => {
                let id = next_id;
                next_id += 1;
                let message = StoredMessage {
                    topic: Arc::from("t"),
                    payload: Bytes::from(id.to_be_bytes().to_vec()),
                    qos: QoS::AtLeastOnce,
                    retain: *retain,
                    properties: Bytes::new(),
                };
                if let ([i], false, true) = (&to[..], retain, carried) {
                    let seq = next_id;
                    next_id += 1;
                    out.push(vec![Op::PutQueued {
                        client_id: client(*i),
                        seq,
                        entry: entry(id),
                        message,
                    }]);
                    continue;
                }
                let mut ops = vec![Op::PutMessage { id, message }];
                if *retain {
                    ops.push(Op::SetRetained {
                        topic: Arc::from("t"),
                        message_id: id,
                    });
                }
                for &i in to {
                    ops.push(Op::Enqueue {
                        client_id: client(i),
                        seq: next_id,
                        entry: entry(id),
                    });
                    next_id += 1;
                }
                ops
            }
            Step::Sent {
                client: i,
                seq_back,
            } => vec![Op::SetQueueState {
                client_id: client(*i),
                seq: seq_below(next_id, *seq_back),
                state: QueueState::Sent {
                    packet_id: (*seq_back as u16) + 1,
                },
            }],
            Step::Acked {
                client: i,
                seq_back,
            } => vec![Op::Dequeue {
                client_id: client(*i),
                seq: seq_below(next_id, *seq_back),
            }],
            Step::SentAndAcked {
                client: i,
                seq_back,
            } => {
                let seq = seq_below(next_id, *seq_back);
                vec![
                    Op::SetQueueState {
                        client_id: client(*i),
                        seq,
                        state: QueueState::Sent { packet_id: 7 },
                    },
                    Op::Dequeue {
                        client_id: client(*i),
                        seq,
                    },
                ]
            }
            Step::SaveSession { client: i } => vec![Op::PutSession {
                client_id: client(*i),
                session: SessionRecord::default(),
            }],
            Step::EndSession { client: i } => vec![Op::DeleteSession {
                client_id: client(*i),
            }],
            Step::ClearRetained => vec![Op::ClearRetained {
                topic: Arc::from("t"),
            }],
            Step::EnqueueUnknown { client: i } => {
                let seq = next_id;
                next_id += 1;
                vec![Op::Enqueue {
                    client_id: client(*i),
                    seq,
                    entry: entry(1_000_000),
                }]
            }
        };
        out.push(ops);
    }
    out
}

/// Commits `batches` in groups of the given sizes (the rest in one last group), as the
/// writer does: validate each batch, apply the valid ones, collect at the group's end, raise
/// the id mark. Returns whether each batch was accepted, and the message bytes stored less
/// those freed (the writer's storeUsage counter).
fn commit_in_groups(db: &Database, batches: &[Vec<Op>], sizes: &[usize]) -> (Vec<bool>, u64) {
    let mut accepted = Vec::new();
    let mut message_bytes = 0u64;
    let mut rest = batches;
    let mut sizes = sizes.iter().copied();
    while !rest.is_empty() {
        let size = sizes.next().unwrap_or(rest.len()).clamp(1, rest.len());
        let (group_batches, later) = rest.split_at(size);
        rest = later;
        let txn = db.begin_write().expect("write");
        {
            let mut t = Tables::open(&txn).expect("tables");
            let fresh_from = t
                .meta
                .get(NEXT_ID_KEY)
                .expect("meta")
                .map_or(0, |v| v.value());
            let mut group = Group::new(fresh_from);
            let (mut deltas, mut damaged) = (RefDeltas::default(), 0);
            let mut max_id = None;
            for ops in group_batches {
                let ok = validate(&t, ops, &mut group).is_ok();
                if ok {
                    message_bytes +=
                        apply(&mut t, ops, &mut group, &mut deltas, &mut damaged).expect("apply");
                    max_id = max_id.max(super::apply::max_id(ops));
                }
                accepted.push(ok);
            }
            let collected = collect(&mut t, deltas, &mut group, &mut damaged).expect("collect");
            assert_eq!((damaged, collected.negative_refcounts), (0, 0));
            message_bytes = message_bytes
                .checked_sub(collected.freed_bytes)
                .expect("freed no more than stored");
            if let Some(next) = max_id.map(|id| id + 1).filter(|n| *n > fresh_from) {
                t.meta.insert(NEXT_ID_KEY, next).expect("mark");
            }
        }
        txn.commit().expect("commit");
    }
    (accepted, message_bytes)
}

/// The bytes of every body a snapshot holds: stored ones and those carried in entries.
fn bytes_held(snapshot: &Snapshot) -> u64 {
    let (bodies, _, _, _, entries, _) = snapshot;
    let stored: usize = bodies.values().map(Vec::len).sum();
    let carried: usize = entries
        .values()
        .filter_map(|raw| super::codec::decode_queue_record(&Bytes::from(raw.clone())).ok())
        .filter_map(|record| record.body.map(|b| b.len()))
        .sum();
    (stored + carried) as u64
}

type Snapshot = (
    BTreeMap<u64, Vec<u8>>,
    BTreeMap<u64, u64>,
    BTreeMap<String, u64>,
    BTreeMap<String, Vec<u8>>,
    BTreeMap<(String, u64), Vec<u8>>,
    u64,
);

/// Every table the batches touch, as plain maps.
fn snapshot(db: &Database) -> Snapshot {
    let txn = db.begin_read().expect("read");
    let messages = txn.open_table(MESSAGES).expect("messages");
    let refs = txn.open_table(REFS).expect("refs");
    let retained = txn.open_table(RETAINED).expect("retained");
    let sessions = txn.open_table(SESSIONS).expect("sessions");
    let queues = txn.open_table(QUEUES).expect("queues");
    let meta = txn.open_table(META).expect("meta");
    let bodies = messages
        .iter()
        .expect("iter")
        .map(|r| r.expect("row"))
        .map(|(k, v)| (k.value(), v.value().to_vec()))
        .collect();
    let counts = refs
        .iter()
        .expect("iter")
        .map(|r| r.expect("row"))
        .map(|(k, v)| (k.value(), v.value()))
        .collect();
    let slots = retained
        .iter()
        .expect("iter")
        .map(|r| r.expect("row"))
        .map(|(k, v)| (k.value().to_string(), v.value()))
        .collect();
    let records = sessions
        .iter()
        .expect("iter")
        .map(|r| r.expect("row"))
        .map(|(k, v)| (k.value().to_string(), v.value().to_vec()))
        .collect();
    let entries = queues
        .iter()
        .expect("iter")
        .map(|r| r.expect("row"))
        .map(|(k, v)| ((k.value().0.to_string(), k.value().1), v.value().to_vec()))
        .collect();
    let mark = meta
        .get(NEXT_ID_KEY)
        .expect("meta")
        .map_or(0, |v| v.value());
    (bodies, counts, slots, records, entries, mark)
}

fn database() -> Database {
    Database::builder()
        .create_with_backend(redb::backends::InMemoryBackend::new())
        .expect("in-memory database")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_grouping_of_batches_leaves_the_tables_one_group_per_batch_would(
        steps in prop::collection::vec(step(), 1..40),
        sizes in prop::collection::vec(1usize..12, 0..10),
    ) {
        let batches = batches(&steps);
        let (alone, grouped) = (database(), database());
        let (accepted_alone, bytes_alone) =
            commit_in_groups(&alone, &batches, &vec![1; batches.len()]);
        let (accepted_grouped, bytes_grouped) = commit_in_groups(&grouped, &batches, &sizes);
        prop_assert_eq!(accepted_alone, accepted_grouped);
        let tables = snapshot(&alone);
        prop_assert_eq!(&tables, &snapshot(&grouped));
        prop_assert_eq!(bytes_alone, bytes_held(&tables));
        prop_assert_eq!(bytes_grouped, bytes_held(&tables));
    }
}
