//! `cachedLDAPAuthorizationMap` against a real slapd: destination entries shaped like
//! ActiveMQ's LDAP examples grant by LDAP groups and users, an LDAP change is followed within
//! refreshInterval, a failed refresh keeps the last good entries, an unreachable server at
//! start denies everything, and the legacy group mapping.

use ferromq::protocol::QoS;
use ferromq::security::Action;

use crate::support::slapd::{
    self, broker_xml, directory, group_dn, load, login, login_config, map_xml, plant_entries,
    principal, until_security, user_dn, TOPIC_BASE,
};
use crate::support::TestBroker;

#[tokio::test]
async fn ldap_map_grants_by_groups_and_follows_changes() {
    if !slapd::available("ldap_map_grants_by_groups_and_follows_changes") {
        return;
    }
    let ldap = directory();
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

#[tokio::test]
async fn queue_and_temporary_destination_entries_from_ldap() {
    if !slapd::available("queue_and_temporary_destination_entries_from_ldap") {
        return;
    }
    use crate::support::slapd::{permission_ldif, QUEUE_BASE, TEMP_BASE};
    use ferromq::config::DestinationKind;
    let ldap = directory();
    ldap.add_destination(
        QUEUE_BASE,
        "orders.$",
        &[
            ("read", &[group_dn("viewers")]),
            ("write", &[group_dn("writers")]),
        ],
    );
    // Temporary destinations: permission entries right below the base.
    let temp = |perm: &str, group: &str| {
        permission_ldif(TEMP_BASE, "x", perm, &[group_dn(group)]).replace(
            &format!("cn={perm},cn=x,{TEMP_BASE}"),
            &format!("cn={perm},{TEMP_BASE}"),
        )
    };
    ldap.modify(&format!(
        "{}{}{}",
        temp("read", "viewers"),
        temp("write", "writers"),
        temp("admin", "writers")
    ));
    // A permission entry at the wrong depth is skipped ("policy not applied").
    let app = |dn: &str, cn: &str| {
        format!("dn: {dn}\nchangetype: add\nobjectClass: applicationProcess\ncn: {cn}\n\n")
    };
    ldap.modify(&format!(
        "{}{}dn: cn=read,cn=deep,cn=plant.$,{TOPIC_BASE}\nchangetype: add\nobjectClass: groupOfNames\ncn: read\nmember: {}\n",
        app(&format!("cn=plant.$,{TOPIC_BASE}"), "plant.$"),
        app(&format!("cn=deep,cn=plant.$,{TOPIC_BASE}"), "deep"),
        group_dn("viewers")
    ));
    let config = load(
        ldap.dir.path(),
        &login_config(&ldap.url(), ""),
        &broker_xml(&map_xml(
            &ldap.url(),
            r#"refreshDisabled="true" legacyGroupMapping="false""#,
        )),
    );
    let broker = TestBroker::start(config).await;
    let core = broker.handle.core().clone();
    let viewer = principal("alice", &["viewers"]);
    let writer = principal("bob", &["writers"]);
    until_security(&core, "map loaded", |s| {
        s.authorize_destination(&viewer, Action::Read, DestinationKind::Queue, "orders.eu")
    })
    .await;
    let s = core.security();
    assert!(!s.authorize_destination(&viewer, Action::Write, DestinationKind::Queue, "orders.eu"));
    assert!(s.authorize_destination(&writer, Action::Write, DestinationKind::Queue, "orders.eu"));
    assert!(!s.authorize_destination(&viewer, Action::Read, DestinationKind::Topic, "orders.eu"));
    assert!(s.authorize_destination(&viewer, Action::Read, DestinationKind::TempQueue, "ID:x"));
    assert!(!s.authorize_destination(&viewer, Action::Write, DestinationKind::TempTopic, "ID:x"));
    assert!(s.authorize_destination(&writer, Action::Admin, DestinationKind::TempTopic, "ID:x"));
    // The too-deep entry (cn=read,cn=deep,cn=plant.$,...) grants nothing: neither `deep` (the
    // RDN a wrong depth count would take as the destination) nor `plant.>`.
    assert!(!s.authorize(&viewer, Action::Read, "deep"));
    assert!(!s.authorize(&viewer, Action::Read, "plant/1"));
    broker.shutdown().await;
}

#[tokio::test]
async fn ldap_map_over_starttls_and_ldaps() {
    if !slapd::available("ldap_map_over_starttls_and_ldaps") {
        return;
    }
    let ldap = directory();
    plant_entries(&ldap);
    let ca = ldap.ca_file.display().to_string();
    for (url, tls) in [
        (
            format!("ldap://localhost:{}", ldap.port),
            format!(r#"ferromq:startTLS="true" ferromq:trustedCertificates="{ca}""#),
        ),
        (
            ldap.ldaps_url(),
            format!(r#"ferromq:trustedCertificates="{ca}""#),
        ),
    ] {
        let extra = format!(
            r#"xmlns:ferromq="urn:ferromq" refreshDisabled="true" legacyGroupMapping="false" {tls}"#
        );
        let config = load(
            ldap.dir.path(),
            &login_config(&ldap.url(), ""),
            &broker_xml(&map_xml(&url, &extra)),
        );
        let broker = TestBroker::start(config).await;
        let core = broker.handle.core().clone();
        until_security(&core, &format!("map loaded over {url}"), |s| {
            s.authorize(&principal("alice", &["viewers"]), Action::Read, "plant/1")
        })
        .await;
        broker.shutdown().await;
    }
    // The ldap:// map really upgraded (slapd logs the StartTLS extended operation).
    assert!(ldap.start_tls_count() >= 1);
}
