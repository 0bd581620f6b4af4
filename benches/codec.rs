//! Codec microbenchmarks on the hot path: a 64-byte PUBLISH at QoS 0 and 1, and a SUBSCRIBE,
//! each decoded and encoded in MQTT 3.1.1 and 5.0.
//!
//! Run: `cargo bench --bench codec`.

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ferromq::protocol::*;

fn publish(qos: QoS) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: "sensors/building-1/floor-2/temperature".into(),
        packet_id: (qos != QoS::AtMostOnce).then_some(42),
        payload: Bytes::from(vec![0x5A; 64]),
        properties: None,
    })
}

fn subscribe() -> Packet {
    let options = SubscriptionOptions {
        qos: QoS::AtLeastOnce,
        no_local: false,
        retain_as_published: false,
        retain_handling: RetainHandling::SendAtSubscribe,
    };
    Packet::Subscribe(Subscribe {
        packet_id: 7,
        filters: vec![
            ("sensors/+/floor-2/#".into(), options.clone()),
            ("alerts/#".into(), options),
        ],
        properties: None,
    })
}

fn bench_codec(c: &mut Criterion) {
    let cases = [
        ("publish_qos0_64B", publish(QoS::AtMostOnce)),
        ("publish_qos1_64B", publish(QoS::AtLeastOnce)),
        ("subscribe_2_filters", subscribe()),
    ];
    for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
        let mut group = c.benchmark_group(format!("codec_{version:?}"));
        for (name, packet) in &cases {
            let mut wire = BytesMut::new();
            encode(packet, version, &mut wire).expect("encode");
            group.throughput(Throughput::Bytes(wire.len() as u64));
            group.bench_function(format!("decode/{name}"), |b| {
                b.iter_batched(
                    || wire.clone(),
                    |mut buf| decode(&mut buf, Some(version), 1 << 20).expect("decode"),
                    BatchSize::SmallInput,
                )
            });
            group.bench_function(format!("encode/{name}"), |b| {
                b.iter_batched(
                    || BytesMut::with_capacity(256),
                    |mut buf| {
                        encode(packet, version, &mut buf).expect("encode");
                        buf
                    },
                    BatchSize::SmallInput,
                )
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench_codec);
criterion_main!(benches);
