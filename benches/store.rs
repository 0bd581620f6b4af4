//! Durable store commit throughput with fsync on: QoS 1-like traffic (store + enqueue a
//! message, then dequeue it once "acknowledged", two commits per message) from 1, 16 and 256
//! concurrent committers, plus the raw fsync rate of the same disk as the ceiling any journal
//! could reach. Prints msgs/s, fsyncs/s and msgs per fsync for each case.
//!
//! Run: `cargo bench --bench store` (the store lives in a temp dir under `target/`, on the
//! project's disk, not on a tmpfs).

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ferromq::protocol::QoS;
use ferromq::store::{
    Op, QueueEntry, QueueState, SessionRecord, Store, StoreLimits, StoredMessage,
};

const MESSAGES_PER_ITERATION: u64 = 2_048;
const PAYLOAD_BYTES: usize = 64;

fn bench_dir() -> tempfile::TempDir {
    let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    tempfile::tempdir_in(base).expect("temp dir under target/")
}

/// One committer's share: store+enqueue, then dequeue, `count` times.
async fn qos1_cycles(store: Store, client: Arc<str>, count: u64) {
    for _ in 0..count {
        let id = store.allocate_id();
        let seq = store.allocate_id();
        store
            .commit(vec![
                Op::PutMessage {
                    id,
                    message: StoredMessage {
                        topic: Arc::from("bench/t"),
                        payload: Bytes::from(vec![0x5a; PAYLOAD_BYTES]),
                        qos: QoS::AtLeastOnce,
                        retain: false,
                        properties: Bytes::new(),
                    },
                },
                Op::Enqueue {
                    client_id: client.clone(),
                    seq,
                    entry: QueueEntry {
                        message_id: id,
                        qos: QoS::AtLeastOnce,
                        retain: false,
                        subscription_id: None,
                        state: QueueState::Queued,
                    },
                },
            ])
            .await
            .expect("enqueue");
        store
            .commit(vec![Op::Dequeue {
                client_id: client.clone(),
                seq,
            }])
            .await
            .expect("dequeue");
    }
}

fn commit_throughput(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("store_qos1_enqueue_dequeue");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(MESSAGES_PER_ITERATION));
    for committers in [1u64, 16, 256] {
        let dir = bench_dir();
        let store = Store::open(dir.path(), StoreLimits::default()).expect("open");
        let clients: Vec<Arc<str>> = (0..committers)
            .map(|i| Arc::from(format!("bench-{i}")))
            .collect();
        runtime.block_on(async {
            let ops = clients
                .iter()
                .map(|client_id| Op::PutSession {
                    client_id: client_id.clone(),
                    session: SessionRecord::default(),
                })
                .collect();
            store.commit(ops).await.expect("sessions");
        });
        let (mut total_messages, mut total_fsyncs, mut total_time) = (0u64, 0u64, Duration::ZERO);
        group.bench_function(BenchmarkId::from_parameter(committers), |b| {
            b.iter_custom(|iterations| {
                let fsyncs_before = store.stats().group_commits;
                let started = Instant::now();
                for _ in 0..iterations {
                    runtime.block_on(async {
                        let tasks: Vec<_> = clients
                            .iter()
                            .map(|client| {
                                tokio::spawn(qos1_cycles(
                                    store.clone(),
                                    client.clone(),
                                    MESSAGES_PER_ITERATION / committers,
                                ))
                            })
                            .collect();
                        for task in tasks {
                            task.await.expect("committer");
                        }
                    });
                }
                let elapsed = started.elapsed();
                total_messages += iterations * MESSAGES_PER_ITERATION;
                total_fsyncs += store.stats().group_commits - fsyncs_before;
                total_time += elapsed;
                elapsed
            })
        });
        let seconds = total_time.as_secs_f64();
        eprintln!(
            "store: {committers} committers: {:.0} msgs/s, {:.0} fsyncs/s, {:.1} msgs per fsync \
             ({total_messages} messages)",
            total_messages as f64 / seconds,
            total_fsyncs as f64 / seconds,
            total_messages as f64 / total_fsyncs.max(1) as f64,
        );
    }
    group.finish();
}

/// The ceiling of an own append-only journal: append a record of the size the store writes
/// per message and fdatasync, one record per sync (what 1 committer needs).
fn raw_fsync_ceiling(c: &mut Criterion) {
    let dir = bench_dir();
    let mut file = std::fs::File::create(dir.path().join("journal")).expect("journal");
    let record = [0x5au8; PAYLOAD_BYTES + 64];
    let mut group = c.benchmark_group("raw_append_fdatasync");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(1));
    group.bench_function("one_record_per_sync", |b| {
        b.iter(|| {
            file.write_all(&record).expect("append");
            file.sync_data().expect("fdatasync");
        })
    });
    group.finish();
}

criterion_group!(benches, commit_throughput, raw_fsync_ceiling);
criterion_main!(benches);
