//! Fixed cases: the answers measured on ActiveMQ 5.17 (ActiveMQ's documented wildcard cases, admin,
//! principals, `defaultEntry`, refusals), each run against ActiveMQ and ferromq and compared, and
//! ActiveMQ's answers checked against the measured ones.

use std::collections::BTreeSet;

use tokio::time::Instant;

use super::peer::{Peer, PubOutcome, SubOutcome, MARKER_TOPIC};
use super::scenario::{AdminMode, AuthMode, Entry, Scenario, User};
use super::{compare, Observed, COLLECT};
use crate::support::activemq::{self, ActiveMq};
use crate::support::xml::load_xml;
use crate::support::TestBroker;

/// One user with `groups`, `filters` and `publishes`.
fn user(name: &str, groups: &[&'static str], filters: &[&str], publishes: &[&str]) -> User {
    User {
        name: name.into(),
        groups: groups.to_vec(),
        filters: filters.iter().map(|f| f.to_string()).collect(),
        publishes: publishes.iter().map(|p| p.to_string()).collect(),
        retains: Vec::new(),
        anonymous: false,
    }
}

/// The SUBACK codes of `user`'s filters.
fn codes(observed: &Observed, user: usize, filters: usize) -> Vec<SubOutcome> {
    (0..filters)
        .map(|f| observed.subscribes[&(user, f)])
        .collect()
}

/// A fixed case, in both ways of keeping admin out of the way (an admin-only `>` entry must not
/// change a read or write answer): the same differences check as the random rounds, and the
/// SUBACK codes measured on ActiveMQ 5.17, from both brokers.
async fn fixed_case(
    label: &str,
    entries: Vec<Entry>,
    users: Vec<User>,
    expected: &[(usize, &[u8])],
) {
    fixed_case_in(
        label,
        entries,
        users,
        expected,
        &[AdminMode::Broad, AdminMode::Declared],
        AuthMode::Simple,
    )
    .await;
}

/// [`fixed_case`] in the given admin modes; ActiveMQ's answers must not depend on the mode
/// unless the mode is [`AdminMode::Random`] (admin as written).
async fn fixed_case_in(
    label: &str,
    entries: Vec<Entry>,
    users: Vec<User>,
    expected: &[(usize, &[u8])],
    modes: &[AdminMode],
    auth: AuthMode,
) {
    let mut reports = String::new();
    let mut first: Option<(AdminMode, Observed)> = None;
    for &admin in modes {
        let scenario = Scenario {
            entries: entries.clone(),
            default_entry: None,
            users: users.clone(),
            admin,
            auth,
        };
        let label = format!("{label} (admin {admin:?})");
        let (report, by_activemq, by_ferromq) = compare(&label, &scenario).await;
        reports.push_str(&report);
        for (u, want) in expected {
            let want: Vec<SubOutcome> = want.iter().map(|c| SubOutcome::Code(*c)).collect();
            let filters = &scenario.users[*u].filters;
            for (broker, observed) in [("ActiveMQ", &by_activemq), ("ferromq", &by_ferromq)] {
                let got = codes(observed, *u, filters.len());
                if got != want {
                    reports.push_str(&format!(
                        "{label}: {broker} answered {filters:?} with {got:?}, measured {want:?}\n"
                    ));
                }
            }
        }
        // An admin-only `>` entry, or declaring the destinations instead, must not change a
        // read or write answer of ActiveMQ's.
        match &first {
            Some((mode, earlier)) if admin != AdminMode::Random => {
                if earlier.subscribes != by_activemq.subscribes
                    || earlier.received != by_activemq.received
                {
                    reports.push_str(&format!(
                        "{label}: ActiveMQ answered differently in admin mode {mode:?}: \
                         {earlier:?}\nand {admin:?}: {by_activemq:?}\n"
                    ));
                }
            }
            Some(_) => {}
            None => first = Some((admin, by_activemq)),
        }
    }
    assert!(reports.is_empty(), "{reports}");
}

/// `topic=">" read="operators"`, `topic="plant.*.telemetry" read="viewers"`, `topic="plant.>"
/// read="devices"`: a viewer is refused `plant/#` and `#` but granted `plant/+/telemetry` and
/// `+/+/telemetry`, and receives a device's telemetry through them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plant_viewers_match_activemq() {
    if !activemq::available("plant_viewers_match_activemq") {
        return;
    }
    let entries = vec![
        Entry::new(">", &["operators"], &[], &[]),
        Entry::new("plant.*.telemetry", &["viewers"], &[], &[]),
        Entry::new("plant.>", &["devices"], &["devices"], &[]),
    ];
    let users = vec![
        user(
            "viewer",
            &["viewers"],
            &["plant/#", "#", "plant/+/telemetry", "+/+/telemetry"],
            &[],
        ),
        user(
            "device",
            &["devices"],
            &["plant/#"],
            &["plant/p1/telemetry", "plant/p1/state"],
        ),
        user("operator", &["operators"], &["#", "plant/#"], &[]),
    ];
    fixed_case(
        "plant viewers",
        entries,
        users,
        &[(0, &[0x80, 0x80, 0x01, 0x01])],
    )
    .await;
}

/// Only `a.b` (read/write/admin g1): `a/#`, `#`, `+/#`, `a/b/#` refused, `a/+` granted. Only
/// `*.b` readable: `a/#`, `x/#`, `+/#` granted, `#` refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn measured_wildcard_cases_match_activemq() {
    if !activemq::available("measured_wildcard_cases_match_activemq") {
        return;
    }
    fixed_case(
        "only a.b",
        vec![Entry::new("a.b", &["g1"], &["g1"], &["g1"])],
        vec![user(
            "u1",
            &["g1"],
            &["a/#", "#", "+/#", "a/b/#", "a/+"],
            &["a/b"],
        )],
        &[(0, &[0x80, 0x80, 0x80, 0x80, 0x01])],
    )
    .await;
    fixed_case(
        "only *.b",
        vec![Entry::new("*.b", &["g1"], &["g1"], &[])],
        vec![user(
            "u1",
            &["g1"],
            &["a/#", "x/#", "+/#", "#"],
            &["a/b", "x/b"],
        )],
        &[(0, &[0x01, 0x01, 0x01, 0x80])],
    )
    .await;
}

/// `a.b` readable and writable by g1 and g2, admin only for g2: ActiveMQ refuses a g1 user's
/// SUBSCRIBE `a/b` while the topic does not exist (creating it needs admin: "not authorized to
/// create: topic://a.b"), grants it to the g2 user (which creates it), and then grants the same
/// SUBSCRIBE to another g1 user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_creation_matches_activemq() {
    if !activemq::available("admin_creation_matches_activemq") {
        return;
    }
    fixed_case_in(
        "admin creates",
        vec![Entry::new("a.b", &["g1", "g2"], &["g1", "g2"], &["g2"])],
        vec![
            user("early", &["g1"], &["a/b"], &["a/b"]),
            user("creator", &["g2"], &["a/b"], &[]),
            user("late", &["g1"], &["a/b"], &[]),
        ],
        &[(0, &[0x80]), (1, &[0x01]), (2, &[0x01])],
        &[AdminMode::Random],
        AuthMode::Simple,
    )
    .await;
}

/// `a.b` readable by g1, `a.c` by g2, both writable by g3: the lookup of `a.*` finds both
/// entries, so a g1 user is granted `a/+`; a g3 user publishes on `a/b` and `a/c`, retained
/// before the subscription and live after it. Measured on 5.17: only `a/b` reaches the g1 user,
/// retained and live (ActiveMQ also checks read on each concrete topic a wildcard subscription
/// reaches), as in ferromq.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_through_a_granted_wildcard_match_activemq() {
    if !activemq::available("deliveries_through_a_granted_wildcard_match_activemq") {
        return;
    }
    fixed_case(
        "per-delivery read",
        vec![
            Entry::new("a.b", &["g1"], &["g3"], &[]),
            Entry::new("a.c", &["g2"], &["g3"], &[]),
        ],
        vec![
            user("reader", &["g1"], &["a/+", "+/+", "a/#"], &[]),
            User {
                retains: vec!["a/b".into(), "a/c".into()],
                ..user("writer", &["g3"], &[], &["a/b", "a/c"])
            },
        ],
        &[(0, &[0x01, 0x01, 0x80])],
    )
    .await;
}

/// `read="*"`: every authenticated user, whatever its groups, may read (ActiveMQ's wildcard
/// principal). With `b.*` readable, `b/#` is granted too: below an entry's `*` child the lookup
/// takes the filter's `>` as everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_principal_matches_activemq() {
    if !activemq::available("wildcard_principal_matches_activemq") {
        return;
    }
    fixed_case(
        "read=*",
        vec![
            Entry::new("a.b", &["*"], &["g1"], &[]),
            Entry::new("b.*", &["*"], &["*"], &[]),
        ],
        vec![
            user("nobody", &[], &["a/b", "b/+", "b/#", "a/+"], &[]),
            user("writer", &["g1"], &[], &["a/b", "b/c"]),
        ],
        &[(0, &[0x01, 0x01, 0x01, 0x01])],
    )
    .await;
}

/// An entry naming users (`groupClass="org.apache.activemq.jaas.UserPrincipal"`) under
/// `simpleAuthenticationPlugin`. Measured on 5.17: it grants nothing, not even to the user it
/// names: `SimpleAuthenticationBroker` gives a connection only its group principals, and the
/// authorization map compares principals by class and name. ferromq grants it to the named user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_entries_under_simple_authentication_match_activemq() {
    if !activemq::available("user_entries_under_simple_authentication_match_activemq") {
        return;
    }
    let mut by_user = Entry::new("home.alice.>", &["alice"], &["alice"], &[]);
    by_user.user_names = true;
    fixed_case(
        "user principals",
        vec![by_user, Entry::new("home.alice.>", &[], &["g1"], &[])],
        vec![
            user(
                "alice",
                &["g2"],
                &["home/alice/#", "home/alice/lamp"],
                &["home/alice/lamp"],
            ),
            user("helper", &["g1"], &[], &["home/alice/lamp"]),
        ],
        &[(0, &[0x80, 0x80])],
    )
    .await;
}

/// The same entries with JAAS `PropertiesLoginModule` logins, which carry a user principal: the
/// entry naming alice grants her `home/alice/#` and `home/alice/lamp` in both brokers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_entries_under_jaas_match_activemq() {
    if !activemq::available("user_entries_under_jaas_match_activemq") {
        return;
    }
    let mut by_user = Entry::new("home.alice.>", &["alice"], &["alice"], &[]);
    by_user.user_names = true;
    fixed_case_in(
        "user principals (JAAS)",
        vec![by_user, Entry::new("home.alice.>", &[], &["g1"], &[])],
        vec![
            user(
                "alice",
                &["g2"],
                &["home/alice/#", "home/alice/lamp"],
                &["home/alice/lamp"],
            ),
            user("helper", &["g1"], &[], &["home/alice/lamp"]),
        ],
        &[(0, &[0x01, 0x01])],
        &[AdminMode::Broad, AdminMode::Declared],
        AuthMode::Jaas,
    )
    .await;
}

/// One SUBSCRIBE with several filters, some refused: ActiveMQ 5.17 answers each filter in the
/// SUBACK (`[0x01, 0x80, 0x01]` here) and keeps the connection, as ferromq does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_filter_subscribe_matches_activemq() {
    if !activemq::available("multi_filter_subscribe_matches_activemq") {
        return;
    }
    let scenario = Scenario {
        entries: vec![Entry::new("a.b", &["g1"], &["g1"], &[])],
        default_entry: None,
        users: vec![user("u1", &["g1"], &[], &[])],
        admin: AdminMode::Declared,
        auth: AuthMode::Simple,
    };
    let filters = ["a/b", "a/#", "a/+", "#", "+/b"];
    let activemq = ActiveMq::start(|port| scenario.xml(port));
    let ferromq = TestBroker::start(load_xml(&scenario.xml(0))).await;
    let mut answers = Vec::new();
    for addr in [activemq.mqtt, ferromq.addr] {
        let mut peer = Peer::open(addr, "multi", Some("u1")).await;
        let codes = peer.subscribe_all(&filters).await;
        // Still connected: a PUBLISH is acknowledged.
        let published = peer.publish("a/b", "after", false).await;
        answers.push((codes, published, peer.closes));
        peer.close().await;
    }
    ferromq.shutdown().await;
    assert_eq!(
        answers[0].0,
        [0x01, 0x80, 0x01, 0x80, 0x01].map(SubOutcome::Code),
        "ActiveMQ"
    );
    assert_eq!(
        answers[0], answers[1],
        "ActiveMQ, then ferromq: {filters:?}"
    );
}

/// `defaultEntry` (read g2) beside an entry `a.b` (read g1): ActiveMQ 5.17 adds the default entry
/// to the entries of every destination, not only of those no entry matches, so a g2 user may
/// read `a/b` too; a user of neither group may not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_entry_matches_activemq() {
    if !activemq::available("default_entry_matches_activemq") {
        return;
    }
    let scenario = Scenario {
        entries: vec![Entry::new("a.b", &["g1"], &["g1"], &[])],
        default_entry: Some(Entry::new("", &["g2"], &["g2"], &[])),
        users: vec![
            user("one", &["g1"], &["a/b", "a/+", "c"], &["a/b", "c"]),
            user("two", &["g2"], &["a/b", "a/+", "c"], &["a/b", "c"]),
            user("three", &["g3"], &["a/b", "a/+", "c"], &["a/b", "c"]),
        ],
        admin: AdminMode::Declared,
        auth: AuthMode::Simple,
    };
    let (report, by_activemq, _) = compare("defaultEntry", &scenario).await;
    assert!(report.is_empty(), "{report}");
    let want = |codes: [u8; 3]| codes.map(SubOutcome::Code).to_vec();
    assert_eq!(codes(&by_activemq, 0, 3), want([0x01, 0x01, 0x80]), "g1");
    assert_eq!(codes(&by_activemq, 1, 3), want([0x01, 0x01, 0x01]), "g2");
    assert_eq!(codes(&by_activemq, 2, 3), want([0x80, 0x80, 0x80]), "g3");
}

/// PUBLISH refused for want of write, at QoS 1 and QoS 2: measured on 5.17, ActiveMQ completes
/// both exchanges (PUBACK; PUBREC, PUBCOMP), delivers nothing and keeps the connection; so does
/// ferromq for MQTT 3.1.1. Then an allowed PUBLISH on the same connection is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_publishes_match_activemq() {
    if !activemq::available("refused_publishes_match_activemq") {
        return;
    }
    let scenario = Scenario {
        entries: vec![
            Entry::new("a.b", &["g1"], &["g2"], &[]),
            Entry::new("a.c", &["g1"], &["g1"], &[]),
        ],
        default_entry: None,
        users: vec![user("u1", &["g1"], &[], &[])],
        admin: AdminMode::Declared,
        auth: AuthMode::Simple,
    };
    let activemq = ActiveMq::start(|port| scenario.xml(port));
    let ferromq = TestBroker::start(load_xml(&scenario.xml(0))).await;
    let mut answers = Vec::new();
    for addr in [activemq.mqtt, ferromq.addr] {
        let mut reader = Peer::open(addr, "reader", Some("u1")).await;
        assert_eq!(
            reader.subscribe_all(&["a/b", "a/c", MARKER_TOPIC]).await,
            [SubOutcome::Code(1); 3]
        );
        let mut writer = Peer::open(addr, "writer", Some("u1")).await;
        let outcomes = [
            writer.publish("a/b", "refused qos1", false).await,
            writer.publish_qos2("a/b", "refused qos2").await,
            writer.publish_qos2("a/c", "allowed qos2").await,
            writer.publish("a/c", "allowed qos1", false).await,
            writer.publish(MARKER_TOPIC, "u1", false).await,
        ];
        let publishers = BTreeSet::from(["u1".to_owned()]);
        let missing = reader.collect(&publishers, Instant::now() + COLLECT).await;
        answers.push((outcomes, writer.closes, reader.received.clone(), missing));
        writer.close().await;
        reader.close().await;
    }
    ferromq.shutdown().await;
    let delivered: BTreeSet<(String, String)> = [
        ("a/c".to_owned(), "allowed qos1".to_owned()),
        ("a/c".to_owned(), "allowed qos2".to_owned()),
    ]
    .into();
    assert_eq!(
        answers[0],
        ([PubOutcome::Acked; 5], 0, delivered, Vec::new()),
        "ActiveMQ"
    );
    assert_eq!(answers[0], answers[1], "ActiveMQ, then ferromq");
}
