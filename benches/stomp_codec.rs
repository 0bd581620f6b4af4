//! STOMP codec microbenchmarks: a SEND and a MESSAGE with a 100-byte body, decoded and encoded
//! in STOMP 1.0 (unescaped) and 1.2 (escaped headers).
//!
//! Run: `cargo bench --bench stomp_codec`.

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ferromq::protocol::stomp::{encode, Command, Decoded, Decoder, Frame, Version};

fn send() -> Frame {
    let mut frame = Frame::new(Command::Send)
        .with_header("destination", "/topic/sensors.building-1.temperature")
        .with_header("persistent", "true")
        .with_header("receipt", "message-42");
    frame.body = Bytes::from(vec![0x5A; 100]);
    frame
}

fn message() -> Frame {
    let mut frame = Frame::new(Command::Message)
        .with_header("subscription", "sub-0")
        .with_header("message-id", "ID:ferromq-1:1:1:1:42")
        .with_header("destination", "/topic/sensors.building-1.temperature")
        .with_header("persistent", "true")
        .with_header("content-type", "text/plain");
    frame.body = Bytes::from(vec![0x5A; 100]);
    frame
}

fn bench_stomp_codec(c: &mut Criterion) {
    let cases = [("send_100B", send()), ("message_100B", message())];
    for version in [Version::V1_0, Version::V1_2] {
        let mut group = c.benchmark_group(format!("stomp_codec_{}", version.as_str()));
        for (name, frame) in &cases {
            let mut wire = BytesMut::new();
            encode(frame, version, &mut wire);
            group.throughput(Throughput::Bytes(wire.len() as u64));
            group.bench_function(format!("decode/{name}"), |b| {
                let mut decoder = Decoder::default();
                decoder.set_version(version);
                b.iter_batched(
                    || wire.clone(),
                    |mut buf| match decoder.decode(&mut buf) {
                        Ok(Some(Decoded::Frame(frame))) => frame,
                        other => panic!("expected a frame, got {other:?}"),
                    },
                    BatchSize::SmallInput,
                )
            });
            group.bench_function(format!("encode/{name}"), |b| {
                b.iter_batched(
                    || BytesMut::with_capacity(512),
                    |mut buf| {
                        encode(frame, version, &mut buf);
                        buf
                    },
                    BatchSize::SmallInput,
                )
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench_stomp_codec);
criterion_main!(benches);
