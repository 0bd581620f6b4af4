//! JMS selector evaluation per message: two typical selectors against a STOMP-like message with
//! a handful of string properties, selected and not selected, and parsing for comparison.
//!
//! Run with `cargo bench --bench selector`. Evaluation borrows strings from the message and
//! the selector, so these numbers are the per-delivery cost of a subscription's selector.

use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use ferromq::broker::message::{Message, SampleStamp, V5Extras};
use ferromq::broker::selector::{DeliveryInfo, Selector};
use ferromq::protocol::{Properties, QoS};

/// Typical: a header equality and a property range, as routing by region and priority does.
const ROUTING: &str = "region = 'eu-west' AND JMSPriority >= 5";
/// Typical: a pattern, a set and a NULL test over string properties.
const FILTERING: &str =
    "symbol LIKE 'AB%' AND exchange IN ('XNYS', 'XNAS', 'XLON') AND halted IS NULL";

fn message(region: &str, priority: &str, symbol: &str) -> Message {
    let user_properties = [
        ("region", region),
        ("priority", priority),
        ("symbol", symbol),
        ("exchange", "XNAS"),
        ("trace-id", "0af7651916cd43dd8448eb211c80319c"),
        ("source", "pricing-engine-3"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    Message {
        stamp: SampleStamp::NONE,
        topic: Arc::from("prices/eu/ab"),
        payload: Bytes::from_static(b"{\"bid\": 1.25}"),
        qos: QoS::AtLeastOnce,
        retain: false,
        v5: Some(Arc::new(V5Extras {
            properties: Properties {
                user_properties,
                ..Properties::default()
            },
            expires_at: None,
        })),
    }
}

fn evaluate(c: &mut Criterion) {
    let info = DeliveryInfo {
        message_id: Some("ID:broker-1:1:1:1"),
        timestamp_ms: 1_764_500_000_000,
        destination: Some("topic://prices.eu.ab"),
        ..DeliveryInfo::default()
    };
    let selected = message("eu-west", "7", "ABC");
    let skipped = message("us-east", "3", "XYZ");
    let mut group = c.benchmark_group("selector");
    for (name, text) in [("routing", ROUTING), ("filtering", FILTERING)] {
        let selector = Selector::parse(text).expect("a valid selector");
        assert!(selector.matches(&selected, &info));
        assert!(!selector.matches(&skipped, &info));
        group.bench_function(format!("{name}/selected"), |b| {
            b.iter(|| black_box(&selector).matches(black_box(&selected), black_box(&info)))
        });
        group.bench_function(format!("{name}/skipped"), |b| {
            b.iter(|| black_box(&selector).matches(black_box(&skipped), black_box(&info)))
        });
        group.bench_function(format!("{name}/parse"), |b| {
            b.iter(|| Selector::parse(black_box(text)))
        });
    }
    group.finish();
}

criterion_group!(benches, evaluate);
criterion_main!(benches);
