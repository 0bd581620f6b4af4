//! LDAP failures are logged (server and error, never a password) and told apart from wrong
//! passwords: a real slapd stopped under a running broker, and a map server never reachable.
//!
//! Its own test binary on purpose (as security_auth_logging.rs): tracing caches per-callsite
//! interest process-wide, and a test on another thread hitting the same callsite without a
//! subscriber makes a captured log miss events now and then.

mod support;

use std::time::Duration;

use ferromq::protocol::{ConnectReason, ProtocolVersion, QoS};
use ferromq::security::Action;

use support::logs::Logs;
use support::slapd::{
    self, broker_xml, connack, directory, load, login, login_config, map_xml, plant_entries,
    principal, until_security, user_dn, TOPIC_BASE,
};
use support::TestBroker;

/// Wait for a log line (the only signal of a failed background refresh).
async fn logged(logs: &Logs, needle: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !logs.text().contains(needle) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no `{needle}` in:\n{}",
            logs.text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "current_thread")]
async fn unreachable_ldap_is_server_unavailable_and_logins_return_with_the_server() {
    if !slapd::available("unreachable_ldap_is_server_unavailable") {
        return;
    }
    let (logs, _guard) = Logs::capture();
    let mut ldap = directory();
    let config = load(
        ldap.dir.path(),
        &login_config(&ldap.url(), "connectTimeout=2000 readTimeout=2000"),
        &broker_xml(""),
    );
    let broker = TestBroker::start(config).await;
    let (_, ok) = connack(
        broker.addr,
        ProtocolVersion::V311,
        "u1",
        "alice",
        "alice-pw",
    )
    .await;
    assert_eq!(ok, ConnectReason::Success);

    ldap.stop();
    let (_, v3) = connack(
        broker.addr,
        ProtocolVersion::V311,
        "u2",
        "alice",
        "alice-pw",
    )
    .await;
    assert_eq!(v3, ConnectReason::ServerUnavailable, "3.1.1 return code 3");
    let (_, v5) = connack(broker.addr, ProtocolVersion::V5, "u3", "alice", "alice-pw").await;
    assert_eq!(v5, ConnectReason::ServerUnavailable, "MQTT 5 0x88");
    let text = logs.text();
    assert!(
        text.contains("LDAP server unavailable") && text.contains(&ldap.url()),
        "the log names the server and the error:\n{text}"
    );
    assert!(
        !text.contains("alice-pw") && !text.contains(slapd::BROKER_PW),
        "{text}"
    );

    // The shared connection broke; after the restart a new one is opened.
    ldap.restart();
    let (_, back) = connack(
        broker.addr,
        ProtocolVersion::V311,
        "u4",
        "alice",
        "alice-pw",
    )
    .await;
    assert_eq!(back, ConnectReason::Success);
    let (_, wrong) = connack(broker.addr, ProtocolVersion::V5, "u5", "alice", "nope").await;
    assert_eq!(wrong, ConnectReason::BadUserNameOrPassword);
    broker.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_failed_map_refresh_keeps_the_last_good_entries() {
    if !slapd::available("a_failed_map_refresh_keeps_the_last_good_entries") {
        return;
    }
    let (logs, _guard) = Logs::capture();
    let mut ldap = directory();
    plant_entries(&ldap);
    ldap.modify(&format!(
        "dn: cn=read,cn=plant.$,{TOPIC_BASE}\nchangetype: modify\nadd: member\nmember: {}\n",
        user_dn("carol")
    ));
    let config = load(
        ldap.dir.path(),
        &login_config(&ldap.url(), ""),
        &broker_xml(&map_xml(
            &ldap.url(),
            r#"refreshInterval="200" legacyGroupMapping="false""#,
        )),
    );
    let broker = TestBroker::start(config).await;
    let core = broker.handle.core().clone();
    until_security(&core, "map loaded", |s| {
        s.authorize(&principal("carol", &[]), Action::Read, "plant/1/temp")
    })
    .await;
    let mut carol = login(broker.addr, "carol").await;
    // The directory goes away: the last good entries stay (and the failure is logged).
    let generation = core.security().generation();
    ldap.stop();
    logged(&logs, "cannot refresh the authorization map from LDAP").await;
    assert_eq!(core.security().generation(), generation);
    assert!(core
        .security()
        .authorize(&principal("carol", &[]), Action::Read, "plant/2/temp"));
    assert_eq!(
        carol.subscribe(1, &[("plant/#", QoS::AtMostOnce)]).await,
        vec![0]
    );
    broker.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn unreachable_ldap_map_at_start_denies_everything_then_loads() {
    if !slapd::available("unreachable_ldap_map_at_start_denies_everything_then_loads") {
        return;
    }
    let (logs, _guard) = Logs::capture();
    let ldap = directory();
    // The map's own server, down when the broker starts.
    let mut map_server = directory();
    plant_entries(&map_server);
    map_server.stop();
    let config = load(
        ldap.dir.path(),
        &login_config(&ldap.url(), ""),
        &broker_xml(&map_xml(
            &map_server.url(),
            r#"refreshInterval="200" legacyGroupMapping="false""#,
        )),
    );
    let broker = TestBroker::start(config).await;
    let mut alice = login(broker.addr, "alice").await;
    assert_eq!(
        alice.subscribe(1, &[("plant/#", QoS::AtMostOnce)]).await,
        vec![0x80]
    );
    logged(&logs, "every destination is denied until it loads").await;
    assert!(logs.text().contains(&map_server.url()), "{}", logs.text());

    // The server comes up: the next try loads the entries.
    map_server.restart();
    let core = broker.handle.core().clone();
    until_security(&core, "map loaded after the server came up", |s| {
        s.authorize(&principal("alice", &["viewers"]), Action::Read, "plant/1")
    })
    .await;
    assert_eq!(
        alice.subscribe(2, &[("plant/#", QoS::AtMostOnce)]).await,
        vec![0]
    );
    broker.shutdown().await;
}
