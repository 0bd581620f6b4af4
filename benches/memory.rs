//! The cost of the `memoryUsage` charge on the publish path: a message entering the broker with
//! and without [`MemoryGauge::charge`], fanned out to 1 and 10 sessions (clones) and dropped,
//! as routing and delivery do. The difference is what every publish (QoS 0 included) pays for
//! the limit; compare it with the broker's per-message cost (benches/results).
//!
//! Run: `cargo bench --bench memory`.

use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use ferromq::broker::message::{Message, SampleStamp};
use ferromq::broker::routing::memory::MemoryGauge;
use ferromq::protocol::QoS;

const PAYLOAD_BYTES: usize = 64;

fn message(topic: &Arc<str>, read_buffer: &Bytes) -> Message {
    Message {
        stamp: SampleStamp::NONE,
        topic: topic.clone(),
        // As the codec hands it over: a slice of the connection's read buffer.
        payload: read_buffer.slice(0..PAYLOAD_BYTES),
        qos: QoS::AtMostOnce,
        retain: false,
        v5: None,
    }
}

fn fan_out(message: Message, sessions: usize) {
    let copies: Vec<Message> = (0..sessions).map(|_| message.clone()).collect();
    black_box(&copies);
}

fn charge(c: &mut Criterion) {
    let topic: Arc<str> = Arc::from("site1/dev42/m3");
    let read_buffer = Bytes::from(vec![7u8; 4096]);
    let gauge = MemoryGauge::new(1 << 30);
    let mut group = c.benchmark_group("publish_path");
    for sessions in [1usize, 10] {
        group.bench_with_input(
            BenchmarkId::new("uncharged", sessions),
            &sessions,
            |b, &n| b.iter(|| fan_out(message(&topic, &read_buffer), n)),
        );
        group.bench_with_input(BenchmarkId::new("charged", sessions), &sessions, |b, &n| {
            b.iter(|| {
                assert!(!gauge.is_full());
                fan_out(gauge.charge(message(&topic, &read_buffer)), n)
            })
        });
    }
    group.finish();
    assert_eq!(gauge.used_bytes(), 0, "every charge released");
}

criterion_group!(benches, charge);
criterion_main!(benches);
