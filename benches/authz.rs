//! Authorization decision cost with 20 entries: cached (per-connection `AuthzCache` hit),
//! uncached (the precompiled evaluator), casbin's own enforce (for scale), and no
//! authorization plugin at all (the floor).
//!
//! Run: `cargo bench --bench authz`.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use ferromq::config::{
    Authentication, AuthorizationConfig, AuthzEntry, DestinationKind, PrincipalKind, Span,
};
use ferromq::security::{Action, AuthzCache, Principal, Security};

/// 20 entries in the style of a real site: per-area topics, a few wildcards, advisory topics.
fn twenty_entries() -> AuthorizationConfig {
    let span = Span::new(Arc::new(PathBuf::from("bench.xml")), 1, 1);
    let entry = |pattern: &str, read: &str, write: &str| AuthzEntry {
        kind: DestinationKind::Topic,
        patterns: vec![pattern.to_owned()],
        read: read.split(',').map(str::to_owned).collect(),
        write: write.split(',').map(str::to_owned).collect(),
        admin: vec!["admins".to_owned()],
        principal_kind: PrincipalKind::Group,
        span: span.clone(),
    };
    let mut entries = vec![
        entry(">", "admins", "admins"),
        entry("USERS.>", "users", "users"),
        entry("GUEST.>", "guests", "guests,users"),
        entry("ActiveMQ.Advisory.>", "guests,users", "guests,users"),
        entry("sensors.*.temperature", "operators", "devices"),
        entry("sensors.*.humidity", "operators", "devices"),
        entry("alarms.>", "operators,*", "devices"),
    ];
    for i in 0..13 {
        entries.push(entry(
            &format!("plant{i}.line.*.state"),
            "operators",
            "devices",
        ));
    }
    assert_eq!(entries.len(), 20);
    AuthorizationConfig {
        entries,
        default_entry: None,
        temp_entry: None,
        ldap: None,
    }
}

fn principal() -> Principal {
    Principal {
        user: Arc::from("sensor-17"),
        groups: vec![Arc::from("devices"), Arc::from("users")],
        anonymous: false,
    }
}

fn bench(c: &mut Criterion) {
    let secured = Security::from_parts(&Authentication::None, Some(&twenty_entries()))
        .expect("valid security");
    let open = Security::default();
    let who = principal();
    let topic = "plant12/line/3/state";
    assert!(secured.authorize(&who, Action::Write, topic));

    let mut group = c.benchmark_group("authz_20_entries");
    group.bench_function("cached", |b| {
        let mut cache = AuthzCache::default();
        b.iter(|| cache.allowed(&secured, &who, Action::Write, black_box(topic)))
    });
    group.bench_function("uncached", |b| {
        b.iter(|| secured.authorize(&who, Action::Write, black_box(topic)))
    });
    group.bench_function("uncached_denied", |b| {
        b.iter(|| secured.authorize(&who, Action::Read, black_box(topic)))
    });
    group.bench_function("casbin_enforce", |b| {
        b.iter(|| {
            secured.authorize_with_casbin(
                &who,
                Action::Write,
                DestinationKind::Topic,
                black_box("plant12.line.3.state"),
            )
        })
    });
    group.bench_function("no_plugin_cached", |b| {
        let mut cache = AuthzCache::default();
        b.iter(|| cache.allowed(&open, &who, Action::Write, black_box(topic)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
