//! Authorization rules as decision tables: union of entries, no match denied, `*`,
//! UserPrincipal entries, topic vs queue, defaultEntry, composite patterns, wildcard filters,
//! the ActiveMQ security example; casbin agreeing with the precompiled evaluator; the cache.

use std::path::PathBuf;
use std::sync::Arc;

use ferromq::config::{
    Authentication, AuthorizationConfig, AuthzEntry, DestinationKind, PrincipalKind, SimpleAuth,
    Span,
};
use ferromq::security::{Action, AuthzCache, Principal, Security};
use proptest::prelude::*;

use crate::support::security::list;

fn span(line: u32) -> Span {
    Span::new(Arc::new(PathBuf::from("conf/activemq.xml")), line, 7)
}

fn entry(line: u32, kind: DestinationKind, patterns: &str, rwa: [&str; 3]) -> AuthzEntry {
    AuthzEntry {
        kind,
        patterns: list(patterns),
        read: list(rwa[0]),
        write: list(rwa[1]),
        admin: list(rwa[2]),
        principal_kind: PrincipalKind::Group,
        span: span(line),
    }
}

fn topic(line: u32, patterns: &str, rwa: [&str; 3]) -> AuthzEntry {
    entry(line, DestinationKind::Topic, patterns, rwa)
}

fn security(entries: Vec<AuthzEntry>, default_entry: Option<AuthzEntry>) -> Security {
    let authz = AuthorizationConfig {
        entries,
        default_entry,
        temp_entry: None,
        ldap: None,
    };
    Security::from_parts(&Authentication::None, Some(&authz)).expect("valid security")
}

fn who(user: &str, groups: &str) -> Principal {
    Principal {
        user: Arc::from(user),
        groups: list(groups).into_iter().map(Arc::from).collect(),
        anonymous: false,
    }
}

/// Check a table of (principal, action, MQTT topic, expected) rows, with the precompiled
/// evaluator and with casbin's own enforce.
fn check(sec: &Security, rows: &[(&Principal, Action, &str, bool)]) {
    for (principal, action, topic, expected) in rows {
        assert_eq!(
            sec.authorize(principal, *action, topic),
            *expected,
            "{} {action:?} {topic}",
            principal.user
        );
        let amq = ferromq::security::destination::mqtt_to_activemq(topic);
        assert_eq!(
            sec.authorize_with_casbin(principal, *action, DestinationKind::Topic, &amq),
            Ok(*expected),
            "casbin: {} {action:?} {topic}",
            principal.user
        );
    }
}

use Action::{Admin, Read, Write};

#[test]
fn no_authorization_plugin_allows_everything() {
    let sec = Security::from_parts(&Authentication::None, None).expect("valid");
    assert!(!sec.authorization_enabled());
    let anyone = Principal::anonymous();
    assert!(sec.authorize(&anyone, Write, "any/topic"));
    assert!(sec.authorize(&anyone, Read, "#"));
}

#[test]
fn nothing_matches_means_denied_and_empty_plugin_denies_all() {
    let sec = security(vec![topic(1, "a.>", ["g1", "g1", "g1"])], None);
    let u = who("u", "g1");
    check(&sec, &[(&u, Read, "b", false), (&u, Write, "b/c", false)]);
    let empty = security(vec![], None);
    check(&empty, &[(&u, Read, "a", false), (&u, Write, "x/y", false)]);
}

#[test]
fn union_of_all_matching_entries_not_most_specific() {
    // ActiveMQ's policy entries pick the most specific; authorization entries do not: the
    // narrower `a.b.>` entry does not take away what `a.>` grants.
    let sec = security(
        vec![
            topic(1, "a.>", ["wide", "wide", ""]),
            topic(2, "a.b.>", ["narrow", "", ""]),
        ],
        None,
    );
    let wide = who("w", "wide");
    let narrow = who("n", "narrow");
    let both = who("b", "narrow,wide");
    check(
        &sec,
        &[
            (&wide, Read, "a/b/c", true),
            (&wide, Write, "a/b/c", true),
            (&narrow, Read, "a/b/c", true),
            (&narrow, Write, "a/b/c", false),
            (&narrow, Read, "a/c", false),
            (&both, Write, "a/b", true),
            (&wide, Admin, "a/b", false),
        ],
    );
}

#[test]
fn star_group_means_everyone() {
    let sec = security(vec![topic(1, "public.>", ["*", "admins", ""])], None);
    let nobody = who("nobody", "");
    let admin = who("root", "admins");
    check(
        &sec,
        &[
            (&nobody, Read, "public/news", true),
            (&Principal::anonymous(), Read, "public", true),
            (&nobody, Write, "public/news", false),
            (&admin, Write, "public/news", true),
            (&nobody, Read, "private", false),
        ],
    );
}

#[test]
fn user_principal_entries_grant_to_user_names_not_groups() {
    let mut by_user = topic(1, "home.alice.>", ["alice", "alice", ""]);
    by_user.principal_kind = PrincipalKind::User;
    let sec = security(vec![by_user.clone()], None);
    let alice = who("alice", "");
    let group_named_alice = who("mallory", "alice");
    check(
        &sec,
        &[
            (&alice, Read, "home/alice/lamp", true),
            (&alice, Write, "home/alice", true),
            (&group_named_alice, Read, "home/alice/lamp", false),
        ],
    );
    // Under simpleAuthenticationPlugin a login carries its groups only, as in ActiveMQ: an
    // entry naming a user grants nothing.
    let simple = Authentication::Simple(SimpleAuth {
        users: Vec::new(),
        anonymous_access_allowed: false,
        anonymous_user: "anonymous".into(),
        anonymous_group: "anonymous".into(),
        span: Span::new(Arc::new(PathBuf::from("activemq.xml")), 1, 1),
    });
    let authz = AuthorizationConfig {
        entries: vec![by_user.clone()],
        default_entry: None,
        temp_entry: None,
        ldap: None,
    };
    let under_simple = Security::from_parts(&simple, Some(&authz)).expect("valid security");
    check(&under_simple, &[(&alice, Read, "home/alice/lamp", false)]);
    // And a group entry does not grant to a user of that name.
    let sec = security(vec![topic(1, "x", ["alice", "", ""])], None);
    check(
        &sec,
        &[
            (&alice, Read, "x", false),
            (&group_named_alice, Read, "x", true),
        ],
    );
}

#[test]
fn topic_and_queue_entries_are_kept_apart() {
    let sec = security(
        vec![entry(1, DestinationKind::Queue, ">", ["g", "g", "g"])],
        None,
    );
    let u = who("u", "g");
    check(
        &sec,
        &[(&u, Read, "orders", false), (&u, Write, "orders", false)],
    );
    assert!(sec.authorize_destination(&u, Read, DestinationKind::Queue, "orders"));
    assert!(!sec.authorize_destination(&u, Read, DestinationKind::Topic, "orders"));
    assert!(
        !sec.authorize_destination(&who("x", "other"), Read, DestinationKind::Queue, "orders"),
        "queue entries grant their groups only"
    );
}

/// Both deciders (the broker's evaluator and casbin's enforce) on an ActiveMQ-named destination.
fn decide(
    sec: &Security,
    p: &Principal,
    action: Action,
    kind: DestinationKind,
    name: &str,
) -> bool {
    let fast = sec.authorize_destination(p, action, kind, name);
    let casbin = sec
        .authorize_with_casbin(p, action, kind, name)
        .expect("casbin decides");
    assert_eq!(fast, casbin, "{action:?} {kind:?} {name}");
    fast
}

#[test]
fn queue_entries_decide_queues_with_wildcards_and_the_default_entry() {
    let sec = security(
        vec![
            entry(
                1,
                DestinationKind::Queue,
                "orders.>",
                ["readers", "writers", "admins"],
            ),
            entry(
                2,
                DestinationKind::Queue,
                "jobs.*.high",
                ["workers", "", ""],
            ),
        ],
        Some(entry(3, DestinationKind::Queue, ">", ["", "", "admins"])),
    );
    let reader = who("r", "readers");
    let writer = who("w", "writers");
    let worker = who("k", "workers");
    let admin = who("a", "admins");
    use DestinationKind::Queue;
    assert!(decide(&sec, &reader, Read, Queue, "orders.eu"));
    assert!(!decide(&sec, &reader, Write, Queue, "orders.eu"));
    assert!(decide(&sec, &writer, Write, Queue, "orders.eu.paid"));
    assert!(!decide(&sec, &writer, Read, Queue, "billing"));
    assert!(decide(&sec, &worker, Read, Queue, "jobs.x.high"));
    assert!(!decide(&sec, &worker, Read, Queue, "jobs.x.low"));
    // defaultEntry is added to every destination's entries: admin everywhere.
    assert!(decide(&sec, &admin, Admin, Queue, "anything.at.all"));
    assert!(!decide(&sec, &reader, Admin, Queue, "orders.eu"));
}

/// ActiveMQ decides temporary destinations by `tempDestinationAuthorizationEntry` alone: with
/// none every principal may use them; entries naming `tempQueue` are never consulted.
#[test]
fn temporary_destinations_follow_the_temp_entry_alone() {
    let u = who("u", "g");
    let open = security(
        vec![entry(1, DestinationKind::TempQueue, ">", ["", "", ""])],
        None,
    );
    for action in [Read, Write, Admin] {
        for kind in [DestinationKind::TempQueue, DestinationKind::TempTopic] {
            assert!(
                decide(&open, &u, action, kind, "ID:host-1:1:1"),
                "{action:?} {kind:?}"
            );
        }
    }
    assert!(
        !decide(&open, &u, Read, DestinationKind::Queue, "ID:host-1:1:1"),
        "a queue of that name is not temporary"
    );

    let authz = AuthorizationConfig {
        entries: vec![entry(1, DestinationKind::TempQueue, ">", ["g", "g", "g"])],
        default_entry: Some(entry(2, DestinationKind::Topic, ">", ["g", "g", "g"])),
        temp_entry: Some(entry(
            3,
            DestinationKind::TempTopic,
            ">",
            ["tmp", "tmp", "tmpadmin"],
        )),
        ldap: None,
    };
    let sec = Security::from_parts(&Authentication::None, Some(&authz)).expect("valid security");
    let tmp = who("t", "tmp");
    let tmp_admin = who("ta", "tmpadmin");
    for kind in [DestinationKind::TempQueue, DestinationKind::TempTopic] {
        assert!(decide(&sec, &tmp, Read, kind, "ID:c:1"));
        assert!(decide(&sec, &tmp, Write, kind, "ID:c:1"));
        assert!(!decide(&sec, &tmp, Admin, kind, "ID:c:1"));
        assert!(decide(&sec, &tmp_admin, Admin, kind, "ID:c:1"));
        // Neither the tempQueue entry nor the defaultEntry applies to temporary destinations.
        assert!(!decide(&sec, &u, Read, kind, "ID:c:1"), "{kind:?}");
    }
}

#[test]
fn default_entry_adds_to_every_destination() {
    let sec = security(
        vec![topic(1, "secret.>", ["admins", "admins", ""])],
        Some(topic(9, "", ["*", "writers", ""])),
    );
    let u = who("u", "writers");
    check(
        &sec,
        &[
            (&u, Read, "anything", true),
            (&u, Read, "secret/plans", true), // union with the default entry
            (&u, Write, "secret/plans", true),
            (&who("x", ""), Write, "anything", false),
        ],
    );
    assert!(sec.authorize_destination(&u, Write, DestinationKind::Queue, "Q"));
}

#[test]
fn composite_patterns_each_apply() {
    let sec = security(vec![topic(1, "a.>,b.*", ["g", "", ""])], None);
    let u = who("u", "g");
    check(
        &sec,
        &[
            (&u, Read, "a", true),
            (&u, Read, "b/x", true),
            (&u, Read, "b/x/y", false),
            (&u, Read, "c", false),
        ],
    );
}

#[test]
fn mqtt_names_are_converted_by_character_swap() {
    let sec = security(
        vec![
            topic(1, "sensors.*.temp", ["g", "", ""]),
            topic(2, "v1/2.x", ["g", "", ""]),
        ],
        None,
    );
    let u = who("u", "g");
    check(
        &sec,
        &[
            (&u, Read, "sensors/kitchen/temp", true),
            (&u, Read, "sensors/kitchen/humidity", false),
            (&u, Read, "v1.2/x", true), // MQTT `.` is ActiveMQ `/`
            (&u, Read, "v1/2/x", false),
        ],
    );
}

/// A wildcard filter is authorized on the entries ActiveMQ's destination map lookup of the mapped
/// name finds: `*` walks every child, `>` is a literal level (ActiveMQ 5.17 answers so).
#[test]
fn wildcard_subscriptions_need_read_on_an_entry_the_lookup_finds() {
    let sec = security(
        vec![
            topic(1, "sensors.>", ["readers", "", ""]),
            topic(2, "sensors.secret.>", ["admins", "", ""]),
            topic(3, "rooms.*.temp", ["readers", "", ""]),
        ],
        None,
    );
    let reader = who("r", "readers");
    check(
        &sec,
        &[
            (&reader, Read, "sensors/#", true),
            (&reader, Read, "sensors/+/x", true),
            (&reader, Read, "#", false), // `>` is looked up literally: no `>` entry
            (&reader, Read, "+/#", true), // `*` walks into `sensors`, finds `sensors.>`
            (&reader, Read, "+", true),  // `sensors` and its `>` child
            (&reader, Read, "rooms/+/temp", true),
            (&reader, Read, "rooms/#", false), // `rooms.>` is not `rooms.*.temp`
            (&reader, Read, "rooms/+", false),
            (&reader, Read, "rooms/+/humidity", false),
            (&reader, Read, "other/#", false),
            // A delivery through a wildcard is checked on the concrete topic.
            (&reader, Read, "sensors/secret/key", true), // union: sensors.> grants it
            (&reader, Read, "lobby", false),
        ],
    );
}

/// A mixed-permission example, with the SUBACK codes ActiveMQ 5.17 gives a `viewers`-only user.
#[test]
fn wildcard_subscriptions_as_activemq_5_17_answers_them() {
    let sec = security(
        vec![
            topic(1, ">", ["operators", "", ""]),
            topic(2, "plant.*.telemetry", ["viewers", "", ""]),
            topic(3, "plant.>", ["devices", "", ""]),
        ],
        None,
    );
    let viewer = who("v", "viewers");
    let device = who("d", "devices");
    check(
        &sec,
        &[
            (&viewer, Read, "plant/#", false),
            (&viewer, Read, "#", false),
            (&viewer, Read, "plant/+/telemetry", true),
            (&viewer, Read, "+/+/telemetry", true),
            (&viewer, Read, "plant/line1/telemetry", true),
            (&viewer, Read, "plant/line1/status", false),
            (&device, Read, "plant/#", true),
            (&device, Read, "#", false),
        ],
    );

    // Only `a.b`, read/write/admin = g1.
    let sec = security(vec![topic(1, "a.b", ["g1", "g1", "g1"])], None);
    let g1 = who("u", "g1");
    let mut rows = Vec::new();
    for action in [Read, Write, Admin] {
        for (filter, expected) in [
            ("a/#", false),
            ("#", false),
            ("+/#", false),
            ("a/b/#", false),
            ("a/+", true),
            ("a/b", true),
        ] {
            rows.push((&g1, action, filter, expected));
        }
    }
    check(&sec, &rows);

    // Only `*.b` readable.
    let sec = security(vec![topic(1, "*.b", ["g1", "", ""])], None);
    check(
        &sec,
        &[
            (&g1, Read, "a/#", true),
            (&g1, Read, "x/#", true),
            (&g1, Read, "+/#", true),
            (&g1, Read, "#", false),
            (&g1, Write, "a/#", false),
        ],
    );

    // The `defaultEntry` is added to every lookup, `#` included.
    let sec = security(
        vec![topic(1, "a.b", ["g1", "", ""])],
        Some(topic(9, ">", ["everyone", "", ""])),
    );
    check(
        &sec,
        &[
            (&who("e", "everyone"), Read, "#", true),
            (&g1, Read, "#", false),
        ],
    );
}

/// The authorization section of ActiveMQ's security example (conf/activemq-security.xml).
fn security_example() -> Security {
    let both = |line, pattern, rwa| {
        vec![
            entry(line, DestinationKind::Queue, pattern, rwa),
            entry(line + 10, DestinationKind::Topic, pattern, rwa),
        ]
    };
    let mut entries = Vec::new();
    entries.extend(both(1, ">", ["admins", "admins", "admins"]));
    entries.extend(both(2, "USERS.>", ["users", "users", "users"]));
    entries.extend(both(
        3,
        "GUEST.>",
        ["guests", "guests,users", "guests,users"],
    ));
    entries.push(topic(
        4,
        "ActiveMQ.Advisory.>",
        ["guests,users", "guests,users", "guests,users"],
    ));
    security(entries, None)
}

#[test]
fn activemq_security_example_decisions() {
    let sec = security_example();
    let system = who("system", "users,admins");
    let user = who("user", "users");
    let guest = who("guest", "guests");
    check(
        &sec,
        &[
            (&system, Write, "anything/at/all", true),
            (&system, Read, "#", true),
            (&user, Write, "USERS/news", true),
            (&user, Read, "USERS/news", true),
            (&user, Read, "USERS", true), // USERS.> matches USERS itself
            (&user, Write, "GUEST/board", true),
            (&user, Read, "GUEST/board", false),
            (&user, Write, "other", false),
            (&user, Read, "ActiveMQ/Advisory/Topic", true),
            (&guest, Read, "GUEST/board", true),
            (&guest, Write, "GUEST/board", true),
            (&guest, Read, "USERS/news", false),
            (&guest, Write, "USERS/news", false),
            (&guest, Read, "GUEST/#", true),
            (&guest, Read, "USERS/#", false),
            (&guest, Admin, "GUEST/new", true),
            (&guest, Admin, "other", false),
        ],
    );
}

#[test]
fn cache_answers_repeats_and_is_invalidated_by_a_new_generation() {
    let old = security(vec![topic(1, "a.>", ["g", "", ""])], None);
    let u = who("u", "g");
    let mut cache = AuthzCache::default();
    assert!(cache.allowed(&old, &u, Read, "a/1"));
    assert!(cache.allowed(&old, &u, Read, "a/1"));
    assert!(!cache.allowed(&old, &u, Write, "a/1"));
    assert_eq!(cache.misses(), 2);

    // A reload that revokes the grant: the cache must not answer from the old snapshot.
    let new = security(vec![topic(1, "b.>", ["g", "", ""])], None);
    assert_ne!(old.generation(), new.generation());
    assert!(!cache.allowed(&new, &u, Read, "a/1"));
    assert_eq!(cache.misses(), 3);
    assert_eq!(cache.len(), 1);

    // A different principal empties it too.
    let other = who("v", "");
    assert!(!cache.allowed(&new, &other, Read, "b/1"));
    assert!(cache.allowed(&new, &u, Read, "b/1"));
}

#[test]
fn cache_is_bounded() {
    let sec = security(vec![topic(1, ">", ["g", "", ""])], None);
    let u = who("u", "g");
    let mut cache = AuthzCache::with_capacity(8);
    for i in 0..100 {
        assert!(cache.allowed(&sec, &u, Read, &format!("t/{i}")));
        assert!(cache.len() <= 8);
    }
}

#[test]
fn explain_lists_every_matching_entry_with_file_and_line() {
    let sec = security_example();
    let user = who("user", "users");
    let text = ferromq::security::explain::explain_principal(&sec, &user, "GUEST/board", Write);
    assert!(text.allowed);
    let text = text.text;
    assert!(text.starts_with("ALLOWED"), "{text}");
    assert!(
        text.contains("conf/activemq.xml:13  topic GUEST.>"),
        "{text}"
    );
    assert!(text.contains("GRANTS via g:users"), "{text}");
    assert!(text.contains("conf/activemq.xml:11  topic >"), "{text}");
    assert!(text.contains("grants nothing to this principal"), "{text}");
    assert!(
        !text.contains("queue"),
        "queue entries do not apply: {text}"
    );
    assert!(text.contains("casbin enforce agrees"), "{text}");

    let denied = ferromq::security::explain::explain_principal(&sec, &user, "private/x", Read);
    assert!(!denied.allowed);
    let denied = denied.text;
    assert!(denied.starts_with("DENIED"), "{denied}");
    assert!(denied.contains("conf/activemq.xml:11"), "{denied}");
}

fn level() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a".to_owned()),
        Just("b".to_owned()),
        Just("c".to_owned()),
        Just("".to_owned()),
        Just("*".to_owned()),
        Just(">".to_owned()),
    ]
}

fn pattern() -> impl Strategy<Value = String> {
    prop::collection::vec(level(), 1..4).prop_map(|levels| levels.join("."))
}

fn mqtt_topic() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(
            prop_oneof![Just("a"), Just("b"), Just("c"), Just("+")],
            1..4,
        ),
        any::<bool>(),
    )
        .prop_map(|(levels, hash)| {
            let mut t = levels.join("/");
            if hash {
                t.push_str("/#");
            }
            t
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The precompiled evaluator and casbin's enforce decide the same on random policies.
    #[test]
    fn precompiled_evaluator_agrees_with_casbin(
        patterns in prop::collection::vec((pattern(), 0usize..3, 0usize..3), 1..6),
        topics in prop::collection::vec(mqtt_topic(), 1..6),
    ) {
        let groups = ["g0", "g1", "*"];
        let entries = patterns
            .iter()
            .enumerate()
            .map(|(i, (p, reader, writer))| {
                topic(i as u32 + 1, p, [groups[*reader], groups[*writer], ""])
            })
            .collect();
        let sec = security(entries, None);
        let principals = [who("u", "g0"), who("v", "g1"), who("w", "")];
        for t in &topics {
            let amq = ferromq::security::destination::mqtt_to_activemq(t);
            for p in &principals {
                for action in [Read, Write] {
                    let casbin = sec
                        .authorize_with_casbin(p, action, DestinationKind::Topic, &amq)
                        .expect("casbin decides");
                    prop_assert_eq!(sec.authorize(p, action, t), casbin, "{} {:?} {}", p.user, action, t);
                }
            }
        }
    }
}

#[test]
fn explain_looks_groups_up_in_the_authentication_plugin() {
    use ferromq::config::{Config, Persistence, Secret, SimpleAuth, SimpleUser};
    let user = |name: &str, groups: &str| SimpleUser {
        username: name.into(),
        password: Secret("pw".into()),
        groups: list(groups),
        span: span(1),
    };
    let config = Config {
        source: PathBuf::from("conf/activemq.xml"),
        files: Vec::new(),
        broker: Default::default(),
        listeners: Vec::new(),
        ssl: None,
        authentication: Authentication::Simple(SimpleAuth {
            users: vec![user("user", "users"), user("guest", "guests")],
            anonymous_access_allowed: false,
            anonymous_user: "anonymous".into(),
            anonymous_group: "anonymous".into(),
            span: span(1),
        }),
        authorization: Some(AuthorizationConfig {
            entries: vec![topic(20, "USERS.>", ["users", "users", ""])],
            default_entry: None,
            temp_entry: None,
            ldap: None,
        }),
        persistence: Persistence::Memory,
        persistence_span: span(1),
        limits: Default::default(),
        policies: Vec::new(),
        reload: None,
        shared_strategy: Default::default(),
        system_topics: Default::default(),
        destinations: Default::default(),
        virtual_destinations: Default::default(),
        delivery: Default::default(),
        console: None,
    };
    let explain = ferromq::security::explain::explain;
    let e = explain(&config, "user", None, "USERS/x", Write).expect("explains");
    assert!(e.allowed, "{e}");
    assert!(e.text.contains("(groups: users)"), "{e}");
    let e = explain(&config, "guest", None, "USERS/x", Write).expect("explains");
    assert!(!e.allowed, "{e}");
    let groups = ["users".to_owned()];
    let e = explain(&config, "guest", Some(&groups), "USERS/x", Write).expect("explains");
    assert!(e.allowed, "--group overrides the lookup: {e}");
    let e = explain(&config, "stranger", None, "USERS/x", Read).expect("explains");
    assert!(!e.allowed);
    assert!(e
        .text
        .starts_with("note: the authentication plugin does not know user `stranger`"));
}
