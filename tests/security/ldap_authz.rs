//! `cachedLDAPAuthorizationMap` against a real slapd: destination entries shaped like
//! ActiveMQ's LDAP examples grant by LDAP groups and users, an LDAP change is followed within
//! refreshInterval, a failed refresh keeps the last good entries, an unreachable server at
//! start denies everything, and the legacy group mapping.

use std::sync::Arc;
use std::time::Duration;

use ferromq::broker::BrokerCore;
use ferromq::protocol::{ConnectReason, QoS};
use ferromq::security::{Action, Principal};

use super::ldap::{broker_xml, directory, load, login_config};
use crate::support::logs::Logs;
use crate::support::slapd::{self, group_dn, user_dn, Slapd, TOPIC_BASE};
use crate::support::{connect_packet, RawClient, TestBroker};

fn map_xml(url: &str, extra: &str) -> String {
    format!(
        r#"<authorizationPlugin><map>
        <cachedLDAPAuthorizationMap connectionURL="{url}"
            connectionUsername="{broker}" connectionPassword="{pw}"
            queueSearchBase="{queues}" topicSearchBase="{topics}" tempSearchBase="{temps}"
            {extra}/>
      </map></authorizationPlugin>"#,
        broker = slapd::BROKER_DN,
        pw = slapd::BROKER_PW,
        queues = slapd::QUEUE_BASE,
        topics = slapd::TOPIC_BASE,
        temps = slapd::TEMP_BASE,
    )
}

fn principal(user: &str, groups: &[&str]) -> Principal {
    Principal {
        user: Arc::from(user),
        groups: groups.iter().map(|g| Arc::from(*g)).collect(),
        anonymous: false,
    }
}

/// Wait (on the security snapshot's change signal) until `pred` holds for the current one.
async fn until_security(
    core: &Arc<BrokerCore>,
    what: &str,
    pred: impl Fn(&ferromq::security::Security) -> bool,
) {
    let mut changes = core.watch_security();
    let wait = async {
        loop {
            if pred(&core.security()) {
                return;
            }
            if changes.changed().await.is_err() {
                panic!("broker gone");
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .unwrap_or_else(|_| panic!("{what}: not within 10 s"));
}

async fn login(addr: std::net::SocketAddr, user: &str) -> RawClient {
    let mut connect = connect_packet(user, true, 0);
    connect.username = Some(user.into());
    connect.password = Some(format!("{user}-pw").into_bytes().into());
    let (client, ack) = RawClient::connect(addr, connect).await;
    assert_eq!(ack.reason, ConnectReason::Success, "{user}");
    client
}

fn plant_entries(ldap: &Slapd) {
    ldap.add_destination(
        TOPIC_BASE,
        "plant.$",
        &[
            ("read", &[group_dn("viewers")]),
            ("write", &[group_dn("writers")]),
            ("admin", &[group_dn("viewers"), group_dn("writers")]),
        ],
    );
}

#[tokio::test]
async fn ldap_map_grants_by_groups_and_follows_changes() {
    if !slapd::available("ldap_map_grants_by_groups_and_follows_changes") {
        return;
    }
    let (logs, _guard) = Logs::capture();
    let mut ldap = directory();
    plant_entries(&ldap);
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
        s.authorize(
            &principal("alice", &["viewers"]),
            Action::Read,
            "plant/1/temp",
        )
    })
    .await;

    let mut alice = login(broker.addr, "alice").await;
    let mut bob = login(broker.addr, "bob").await;
    let mut carol = login(broker.addr, "carol").await;
    assert_eq!(
        alice.subscribe(1, &[("plant/#", QoS::AtMostOnce)]).await,
        vec![0]
    );
    assert_eq!(
        carol.subscribe(1, &[("plant/#", QoS::AtMostOnce)]).await,
        vec![0x80]
    );
    assert_eq!(
        alice.subscribe(2, &[("other/#", QoS::AtMostOnce)]).await,
        vec![0x80]
    );
    bob.send(crate::support::publish_packet(
        "plant/1/temp",
        b"21",
        QoS::AtMostOnce,
        None,
        false,
    ))
    .await;
    assert_eq!(&*alice.recv_publish().await.topic, "plant/1/temp");

    // A user member (not a group) added in LDAP: followed within refreshInterval.
    ldap.modify(&format!(
        "dn: cn=read,cn=plant.$,{TOPIC_BASE}\nchangetype: modify\nadd: member\nmember: {}\n",
        user_dn("carol")
    ));
    until_security(&core, "carol's read followed", |s| {
        s.authorize(&principal("carol", &[]), Action::Read, "plant/1/temp")
    })
    .await;
    assert_eq!(
        carol.subscribe(2, &[("plant/#", QoS::AtMostOnce)]).await,
        vec![0]
    );

    // The directory goes away: the last good entries stay (and the failure is logged).
    let generation = core.security().generation();
    ldap.stop();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !logs
        .text()
        .contains("cannot refresh the authorization map from LDAP")
    {
        assert!(tokio::time::Instant::now() < deadline, "{}", logs.text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(core.security().generation(), generation);
    assert!(core
        .security()
        .authorize(&principal("carol", &[]), Action::Read, "plant/2/temp"));
    broker.shutdown().await;
}

#[tokio::test]
async fn unreachable_ldap_map_at_start_denies_everything_then_loads() {
    if !slapd::available("unreachable_ldap_map_at_start_denies_everything_then_loads") {
        return;
    }
    let (logs, _guard) = Logs::capture();
    let ldap = directory();
    plant_entries(&ldap);
    // The map's server is not there (a free port nobody listens on).
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
    let dead_url = format!(
        "ldap://127.0.0.1:{}",
        dead.local_addr().expect("addr").port()
    );
    drop(dead);
    let config = load(
        ldap.dir.path(),
        &login_config(&ldap.url(), ""),
        &broker_xml(&map_xml(&dead_url, r#"refreshInterval="200""#)),
    );
    let broker = TestBroker::start(config).await;
    let mut alice = login(broker.addr, "alice").await;
    assert_eq!(
        alice.subscribe(1, &[("plant/#", QoS::AtMostOnce)]).await,
        vec![0x80]
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !logs
        .text()
        .contains("every destination is denied until it loads")
    {
        assert!(tokio::time::Instant::now() < deadline, "{}", logs.text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(logs.text().contains(&dead_url), "{}", logs.text());
    broker.shutdown().await;
}

#[tokio::test]
async fn legacy_group_mapping_names_groups_by_cn() {
    if !slapd::available("legacy_group_mapping_names_groups_by_cn") {
        return;
    }
    let ldap = directory();
    // ActiveMQ's legacy layout: member values like `cn=viewers`.
    ldap.add_destination(
        TOPIC_BASE,
        "news.*",
        &[
            ("read", &["cn=viewers".to_owned()]),
            ("write", &["cn=writers".to_owned()]),
            // A full DN under the legacy mapping names `writers,ou=Group,...`: nobody.
            ("admin", &[group_dn("writers")]),
        ],
    );
    let config = load(
        ldap.dir.path(),
        &login_config(&ldap.url(), ""),
        &broker_xml(&map_xml(&ldap.url(), r#"refreshDisabled="true""#)),
    );
    let config_again = config.clone();
    let broker = TestBroker::start(config).await;
    let core = broker.handle.core().clone();
    until_security(&core, "map loaded", |s| {
        s.authorize(&principal("a", &["viewers"]), Action::Read, "news/today")
    })
    .await;
    let security = core.security();
    assert!(security.authorize(&principal("b", &["writers"]), Action::Write, "news/today"));
    assert!(!security.authorize(&principal("b", &["writers"]), Action::Admin, "news/today"));
    assert!(!security.authorize(&principal("a", &["viewers"]), Action::Read, "news/today/x"));
    let mut alice = login(broker.addr, "alice").await;
    assert_eq!(
        alice.subscribe(1, &[("news/+", QoS::AtMostOnce)]).await,
        vec![0]
    );
    // A reload naming the same map keeps the loaded entries (no "deny all" gap); another map
    // starts empty (denied until it loads).
    let reloaded = security.rebuild(&config_again).expect("rebuild");
    assert!(reloaded.authorize(&principal("a", &["viewers"]), Action::Read, "news/today"));
    let other = load(
        ldap.dir.path(),
        &login_config(&ldap.url(), ""),
        &broker_xml(&map_xml(&ldap.url(), r#"refreshInterval="5000""#)),
    );
    let fresh = security.rebuild(&other).expect("rebuild");
    assert!(!fresh.authorize(&principal("a", &["viewers"]), Action::Read, "news/today"));
    broker.shutdown().await;
}
