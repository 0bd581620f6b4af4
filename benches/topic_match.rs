//! Topic matching and subscription churn on trees of 10 000 and 1 000 000 subscriptions.
//!
//! Run with `cargo bench --bench topic_match`. The workload models devices publishing to
//! `site{S}/dev{D}/m{M}` (100 sites, 10 metrics) with subscriptions that are 70 % exact
//! (`site{S}/dev{D}/m{M}`), 20 % single-level wildcards (`site{S}/+/m{M}`: shared by many
//! subscribers, so a publish fans out) and 10 % multi-level (`site{S}/dev{D}/#`), each from its
//! own subscriber key.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ferromq::broker::routing::retained::RetainedStore;
use ferromq::broker::routing::router::SubscriptionTree;

const SITES: u64 = 100;
const METRICS: u64 = 10;

/// The `index`-th subscription of the workload mix.
fn filter(index: u64) -> String {
    let site = index % SITES;
    let device = index;
    let metric = index % METRICS;
    match index % 10 {
        0..=6 => format!("site{site}/dev{device}/m{metric}"),
        7 | 8 => format!("site{site}/+/m{metric}"),
        _ => format!("site{site}/dev{device}/#"),
    }
}

/// A topic some subscriptions match: a device that exists in a tree of `subscriptions`.
fn topic(index: u64, subscriptions: u64) -> String {
    let device = (index * 7_919) % subscriptions;
    format!("site{}/dev{device}/m{}", device % SITES, device % METRICS)
}

fn tree_of(subscriptions: u64) -> SubscriptionTree<u64, u8> {
    let mut tree = SubscriptionTree::new();
    for index in 0..subscriptions {
        tree.insert(&filter(index), index, (index % 3) as u8);
    }
    tree
}

/// Resident memory of this process in bytes (Linux; `None` elsewhere), to report tree size.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

fn matching(c: &mut Criterion) {
    let mut group = c.benchmark_group("match");
    group
        .sample_size(30)
        .measurement_time(Duration::from_secs(4));
    for subscriptions in [10_000u64, 1_000_000] {
        let before = resident_bytes();
        let built = std::time::Instant::now();
        let tree = tree_of(subscriptions);
        let build_time = built.elapsed();
        if let (Some(before), Some(after)) = (before, resident_bytes()) {
            eprintln!(
                "{subscriptions} subscriptions: built in {build_time:?}, ~{} bytes each",
                after.saturating_sub(before) / subscriptions
            );
        }
        let topics: Vec<String> = (0..1024).map(|i| topic(i, subscriptions)).collect();
        let mut total = 0usize;
        for topic in &topics {
            tree.for_each_match(topic, |_, _| total += 1);
        }
        eprintln!(
            "{subscriptions} subscriptions: {:.1} matches per topic on average",
            total as f64 / topics.len() as f64
        );
        group.throughput(Throughput::Elements(1));
        group.bench_with_input(
            BenchmarkId::new("for_each_match", subscriptions),
            &topics,
            |b, topics| {
                let mut next = topics.iter().cycle();
                b.iter(|| {
                    let topic = next.next().map_or("", String::as_str);
                    let mut matches = 0u32;
                    tree.for_each_match(black_box(topic), |_, qos| matches += u32::from(*qos));
                    matches
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("matches_dedup", subscriptions),
            &topics,
            |b, topics| {
                let mut next = topics.iter().cycle();
                b.iter(|| {
                    let topic = next.next().map_or("", String::as_str);
                    tree.matches_dedup(black_box(topic), |a, b| *a.max(b)).len()
                })
            },
        );
        let miss = "site1/nobody/here".to_string();
        group.bench_function(BenchmarkId::new("no_match", subscriptions), |b| {
            b.iter(|| {
                let mut matches = 0u32;
                tree.for_each_match(black_box(&miss), |_, _| matches += 1);
                matches
            })
        });
    }
    group.finish();
}

fn churn(c: &mut Criterion) {
    let mut group = c.benchmark_group("churn");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(4));

    let batch = 10_000u64;
    let filters: Vec<String> = (0..batch).map(filter).collect();
    group.throughput(Throughput::Elements(batch));
    group.bench_function("insert_then_remove_10k_into_empty", |b| {
        b.iter(|| {
            let mut tree = SubscriptionTree::new();
            for (key, filter) in (0u64..).zip(&filters) {
                tree.insert(filter, key, 1u8);
            }
            for (key, filter) in (0u64..).zip(&filters) {
                tree.remove(filter, &key);
            }
            tree.len()
        })
    });

    // Steady state: one subscription added to and removed from a tree of a million.
    let mut big = tree_of(1_000_000);
    let mut next_key = 2_000_000u64;
    group.throughput(Throughput::Elements(1));
    group.bench_function("insert_remove_one_in_1m", |b| {
        b.iter(|| {
            next_key += 1;
            let filter = filter(next_key);
            big.insert(&filter, next_key, 1);
            big.remove(&filter, &next_key)
        })
    });
    group.finish();
}

fn retained(c: &mut Criterion) {
    let mut group = c.benchmark_group("retained");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(4));
    let topics = 1_000_000u64;
    let mut store = RetainedStore::new();
    for index in 0..topics {
        let device = index;
        store.set(
            &format!("site{}/dev{device}/m{}", device % SITES, device % METRICS),
            index,
        );
    }
    for (name, filter) in [
        ("exact", "site42/dev4242/m2"),
        ("plus_in_one_site", "site42/+/m2"),
        ("hash_one_device", "site42/dev4242/#"),
    ] {
        group.bench_function(BenchmarkId::new(name, topics), |b| {
            b.iter(|| {
                let mut found = 0u32;
                store.for_each_matching(black_box(filter), |_, _| found += 1);
                found
            })
        });
    }
    group.finish();
}

criterion_group!(benches, matching, churn, retained);
criterion_main!(benches);
