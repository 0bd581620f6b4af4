//! Authorization answers compared with Apache ActiveMQ 5.17 itself.
//!
//! Each round writes one `activemq.xml` (authorization entries, users in groups, an `mqtt://`
//! connector), starts ActiveMQ from it (`support::activemq`) and ferromq from the same text (only
//! the connector's port differs), then drives both with the same MQTT 3.1.1 traffic: every user
//! PUBLISHes a few retained messages, SUBSCRIBEs to its filters one at a time (the SUBACK codes
//! are compared), PUBLISHes at QoS 1 (the PUBACKs are compared), then a marker on a topic everyone
//! may use; each subscriber reads until it has every publisher's marker, and the sets of (topic,
//! payload) each user received, retained copies included, are compared. Any difference fails the
//! test with the seed and a minimal description: the entries, the user, the filter, and the
//! entries ferromq's lookup finds for it.
//!
//! Random rounds: `FERROMQ_DIFF_SEED` replays a seed (printed by every run), `FERROMQ_DIFF_ROUNDS`
//! sets the number of rounds (6), `FERROMQ_DIFF_ADMIN=broad|declared|random` forces how `admin` is
//! treated ([`scenario::AdminMode`]; by default rounds rotate `broad`, `declared` (which keep
//! destination creation out of the comparison) and `random`), `FERROMQ_DIFF_AUTH=simple|jaas` forces how
//! users log in ([`scenario::AuthMode`]; by default pairs of rounds alternate
//! `simpleAuthenticationPlugin` and JAAS `PropertiesLoginModule`, whose rounds also draw entries
//! naming users), `FERROMQ_DIFF_USER_PRINCIPALS=0` stops drawing entries naming users under
//! `simpleAuthenticationPlugin` (which grant nothing there: its logins carry no user principal).
//!
//! The fixed cases measured on 5.17 are in [`measured`]; the traffic's connections in [`peer`],
//! the rounds and their `activemq.xml` in [`scenario`].
//!
//! `cargo test --test security activemq_differential -- --nocapture`

mod measured;
mod peer;
mod scenario;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use crate::support::activemq::{self, ActiveMq};
use crate::support::xml::load_file;
use crate::support::TestBroker;
use ferromq::security::destination::{activemq_selects, mqtt_to_activemq};
use peer::{Peer, PubOutcome, SubOutcome, MARKER_TOPIC};
use scenario::{AdminMode, AuthMode, Scenario, User, OBSERVERS};

/// What one broker answered to a scenario's traffic.
#[derive(Debug, Default)]
struct Observed {
    /// (user, filter index) -> answer.
    subscribes: BTreeMap<(usize, usize), SubOutcome>,
    /// (user, publish index) -> answer.
    publishes: BTreeMap<(usize, usize), PubOutcome>,
    /// (user, retained publish index) -> answer.
    retains: BTreeMap<(usize, usize), PubOutcome>,
    /// user -> (topic, payload) received.
    received: BTreeMap<usize, BTreeSet<(String, String)>>,
    /// user -> publishers whose marker never arrived.
    missing_markers: BTreeMap<usize, Vec<String>>,
    /// Connections the broker closed.
    closes: usize,
}

impl Observed {
    /// Counts, to show that a round was not trivial.
    fn summary(&self) -> String {
        let granted = self
            .subscribes
            .values()
            .filter(|o| matches!(o, SubOutcome::Code(0..=2)))
            .count();
        let acked = self
            .publishes
            .values()
            .filter(|o| **o == PubOutcome::Acked)
            .count();
        let delivered: usize = self.received.values().map(BTreeSet::len).sum();
        let retained = self
            .received
            .values()
            .flatten()
            .filter(|(_, payload)| payload.contains("#retained"))
            .count();
        format!(
            "granted {granted}/{} subscribes, acknowledged {acked}/{} publishes, delivered {delivered} ({retained} retained), closed {} connections",
            self.subscribes.len(),
            self.publishes.len(),
            self.closes
        )
    }
}

/// How long the subscribers may take to receive every marker.
const COLLECT: Duration = Duration::from_secs(5);

/// Drive `scenario`'s traffic against the broker at `addr`.
async fn observe(scenario: &Scenario, addr: SocketAddr) -> Observed {
    let mut observed = Observed::default();
    // Retained messages first, each user on a connection of its own, so that subscribing
    // delivers them.
    for (u, user) in scenario.users.iter().enumerate() {
        if user.retains.is_empty() {
            continue;
        }
        let mut peer = Peer::open(addr, &format!("r-{}", user.name), credentials(user)).await;
        for (r, topic) in user.retains.iter().enumerate() {
            let payload = format!("{}#retained{r}", user.name);
            observed
                .retains
                .insert((u, r), peer.publish(topic, &payload, true).await);
        }
        observed.closes += peer.closes;
        peer.close().await;
    }
    let mut subscribers = Vec::new();
    for (u, user) in scenario.users.iter().enumerate() {
        let mut peer = Peer::open(addr, &format!("s-{}", user.name), credentials(user)).await;
        let marker = peer.subscribe(MARKER_TOPIC).await;
        assert!(
            matches!(marker, SubOutcome::Code(0..=2)),
            "{addr}: {} may not subscribe to the marker topic: {marker:?}",
            user.name
        );
        for (f, filter) in user.filters.iter().enumerate() {
            observed
                .subscribes
                .insert((u, f), peer.subscribe(filter).await);
        }
        subscribers.push(peer);
    }
    let mut publishers = BTreeSet::new();
    for (u, user) in scenario.users.iter().enumerate() {
        let mut peer = Peer::open(addr, &format!("p-{}", user.name), credentials(user)).await;
        for (p, topic) in user.publishes.iter().enumerate() {
            let payload = format!("{}#{p}", user.name);
            observed
                .publishes
                .insert((u, p), peer.publish(topic, &payload, false).await);
        }
        let marker = peer.publish(MARKER_TOPIC, &user.name, false).await;
        assert_eq!(
            marker,
            PubOutcome::Acked,
            "{addr}: {} may not publish the marker",
            user.name
        );
        publishers.insert(user.name.clone());
        observed.closes += peer.closes;
        peer.close().await;
    }
    let deadline = Instant::now() + COLLECT;
    for (u, mut peer) in subscribers.into_iter().enumerate() {
        let missing = peer.collect(&publishers, deadline).await;
        if !missing.is_empty() {
            observed.missing_markers.insert(u, missing);
        }
        observed.closes += peer.closes;
        observed
            .received
            .insert(u, std::mem::take(&mut peer.received));
        peer.close().await;
    }
    observed
}

/// The user name to log in with; `None` (no credentials) for the anonymous user.
fn credentials(user: &User) -> Option<&str> {
    (!user.anonymous).then_some(user.name.as_str())
}

fn describe_user(user: &User) -> String {
    format!("user {} (groups [{}])", user.name, user.groups.join(","))
}

/// Every difference between ActiveMQ's and ferromq's answers, one line each.
fn differences(scenario: &Scenario, activemq: &Observed, ferromq: &Observed) -> Vec<String> {
    let mut out = Vec::new();
    for (u, user) in scenario.users.iter().enumerate() {
        for (f, filter) in user.filters.iter().enumerate() {
            let (a, b) = (
                activemq.subscribes.get(&(u, f)),
                ferromq.subscribes.get(&(u, f)),
            );
            if a != b {
                out.push(format!(
                    "{}: SUBSCRIBE {filter}: ActiveMQ {}, ferromq {}; entries ferromq's lookup of `{}` finds: {}",
                    describe_user(user),
                    show_sub(a),
                    show_sub(b),
                    mqtt_to_activemq(filter),
                    found_entries(scenario, filter)
                ));
            }
        }
        for (r, topic) in user.retains.iter().enumerate() {
            let (a, b) = (activemq.retains.get(&(u, r)), ferromq.retains.get(&(u, r)));
            if a != b {
                out.push(format!(
                    "{}: retained PUBLISH {topic} (QoS 1): ActiveMQ {a:?}, ferromq {b:?}",
                    describe_user(user)
                ));
            }
        }
        for (p, topic) in user.publishes.iter().enumerate() {
            let (a, b) = (
                activemq.publishes.get(&(u, p)),
                ferromq.publishes.get(&(u, p)),
            );
            if a != b {
                out.push(format!(
                    "{}: PUBLISH {topic} (QoS 1): ActiveMQ {a:?}, ferromq {b:?}; entries found: {}",
                    describe_user(user),
                    found_entries(scenario, topic)
                ));
            }
        }
        let empty = BTreeSet::new();
        let a = activemq.received.get(&u).unwrap_or(&empty);
        let b = ferromq.received.get(&u).unwrap_or(&empty);
        for (only, side) in [
            (a.difference(b), "only ActiveMQ"),
            (b.difference(a), "only ferromq"),
        ] {
            for (topic, payload) in only {
                out.push(format!(
                    "{} (subscribed to [{}]): {side} delivered {payload} on {topic}",
                    describe_user(user),
                    granted_filters(
                        user,
                        if side == "only ActiveMQ" {
                            activemq
                        } else {
                            ferromq
                        },
                        u
                    )
                ));
            }
        }
        let (a, b) = (
            activemq.missing_markers.get(&u),
            ferromq.missing_markers.get(&u),
        );
        if a != b {
            out.push(format!(
                "{}: markers never received: ActiveMQ {a:?}, ferromq {b:?}",
                describe_user(user)
            ));
        }
    }
    // A user may have drawn the same filter twice.
    let mut seen = BTreeSet::new();
    out.retain(|line| seen.insert(line.clone()));
    out
}

/// The round's entries that ferromq's destination-map lookup of the MQTT `name` finds: the
/// smallest part of the configuration that decides the answer.
fn found_entries(scenario: &Scenario, name: &str) -> String {
    let mut found: Vec<String> = scenario
        .entries
        .iter()
        .filter(|e| {
            e.read != [OBSERVERS]
                && e.topic
                    .split(',')
                    .any(|pattern| activemq_selects(&mqtt_to_activemq(name), pattern))
        })
        .map(|e| format!("[{e}]"))
        .collect();
    if let Some(default) = &scenario.default_entry {
        found.push(format!("[defaultEntry {default}]"));
    }
    if found.is_empty() {
        "none".into()
    } else {
        found.join(" ")
    }
}

fn granted_filters(user: &User, observed: &Observed, u: usize) -> String {
    user.filters
        .iter()
        .enumerate()
        .filter(|(f, _)| {
            matches!(
                observed.subscribes.get(&(u, *f)),
                Some(SubOutcome::Code(0..=2))
            )
        })
        .map(|(_, filter)| filter.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn show_sub(outcome: Option<&SubOutcome>) -> String {
    match outcome {
        Some(SubOutcome::Code(code)) => format!("0x{code:02x}"),
        Some(other) => format!("{other:?}"),
        None => "-".into(),
    }
}

/// Run `scenario` against ActiveMQ, then ferromq; both observations, and ActiveMQ (still running,
/// for its log).
async fn run_both(scenario: &Scenario) -> (Observed, Observed, ActiveMq) {
    let started = std::time::Instant::now();
    let activemq = ActiveMq::start_with_files(|port| scenario.xml(port), &scenario.conf_files());
    let activemq_up = started.elapsed();
    let by_activemq = observe(scenario, activemq.mqtt).await;
    let activemq_done = started.elapsed();
    // ferromq reads login.config beside the configuration file, as ActiveMQ's start script
    // points the JVM at it: the same files in a directory of ferromq's own.
    let conf = tempfile::tempdir().expect("tempdir");
    for (name, text) in scenario.conf_files() {
        std::fs::write(conf.path().join(name), text).expect("write conf file");
    }
    let xml = conf.path().join("activemq.xml");
    std::fs::write(&xml, scenario.xml(0)).expect("write activemq.xml");
    let ferromq = TestBroker::start(load_file(&xml)).await;
    let by_ferromq = observe(scenario, ferromq.addr).await;
    let ferromq_done = started.elapsed();
    ferromq.shutdown().await;
    eprintln!(
        "ActiveMQ up after {activemq_up:?}, its traffic done at {activemq_done:?}, ferromq's at \
         {ferromq_done:?}, ferromq stopped at {:?}",
        started.elapsed()
    );
    (by_activemq, by_ferromq, activemq)
}

/// Compare, print what ActiveMQ did, and return the report of differences (empty when none).
async fn compare(label: &str, scenario: &Scenario) -> (String, Observed, Observed) {
    let (by_activemq, by_ferromq, activemq) = run_both(scenario).await;
    eprintln!(
        "{label}: ActiveMQ {}; ferromq {}",
        by_activemq.summary(),
        by_ferromq.summary()
    );
    let found = differences(scenario, &by_activemq, &by_ferromq);
    let report = if found.is_empty() {
        String::new()
    } else {
        let denials: Vec<String> = activemq
            .log_lines("not authorized to")
            .into_iter()
            .filter(|l| !l.starts_with("java."))
            .collect();
        format!(
            "{label}: {} differences with ActiveMQ 5.17\nentries:\n{}\n{}\nActiveMQ's refusals:\n{}\n",
            found.len(),
            scenario.describe_entries(),
            found.join("\n"),
            denials.iter().take(20).cloned().collect::<Vec<_>>().join("\n")
        )
    };
    (report, by_activemq, by_ferromq)
}

fn seed() -> u64 {
    match std::env::var("FERROMQ_DIFF_SEED") {
        Ok(seed) => seed.parse().expect("FERROMQ_DIFF_SEED is a number"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
    }
}

fn admin_modes() -> Vec<AdminMode> {
    match std::env::var("FERROMQ_DIFF_ADMIN").as_deref() {
        Ok("broad") => vec![AdminMode::Broad],
        Ok("declared") => vec![AdminMode::Declared],
        Ok("random") => vec![AdminMode::Random],
        Ok(other) => panic!("FERROMQ_DIFF_ADMIN={other}: broad, declared or random"),
        Err(_) => vec![AdminMode::Broad, AdminMode::Declared, AdminMode::Random],
    }
}

/// Random entries, users, filters and publishes; ActiveMQ's answers must be ferromq's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_rounds_match_activemq() {
    if !activemq::available("random_rounds_match_activemq") {
        return;
    }
    let seed = seed();
    let rounds: u64 = std::env::var("FERROMQ_DIFF_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(6);
    let modes = admin_modes();
    let user_principals = std::env::var("FERROMQ_DIFF_USER_PRINCIPALS").map_or(true, |v| v != "0");
    let auths = match std::env::var("FERROMQ_DIFF_AUTH").as_deref() {
        Ok("simple") => vec![AuthMode::Simple],
        Ok("jaas") => vec![AuthMode::Jaas],
        Ok(other) => panic!("FERROMQ_DIFF_AUTH={other}: simple or jaas"),
        Err(_) => vec![AuthMode::Simple, AuthMode::Jaas],
    };
    eprintln!("ActiveMQ differential: FERROMQ_DIFF_SEED={seed} FERROMQ_DIFF_ROUNDS={rounds}");
    let mut reports = String::new();
    for round in 0..rounds {
        let round_seed = seed.wrapping_add(round);
        let admin = modes[round as usize % modes.len()];
        let auth = auths[(round as usize / modes.len()) % auths.len()];
        let scenario = Scenario::random(round_seed, admin, auth, user_principals);
        let label = format!(
            "round {round} (seed {round_seed}, admin {admin:?}, {auth:?}{})",
            [
                (scenario.default_entry.is_some(), ", defaultEntry"),
                (scenario.users.iter().any(|u| u.anonymous), ", anonymous"),
            ]
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, text)| *text)
            .collect::<String>()
        );
        let (report, _, _) = compare(&label, &scenario).await;
        reports.push_str(&report);
    }
    assert!(
        reports.is_empty(),
        "replay with FERROMQ_DIFF_SEED={seed}\n{reports}"
    );
}
