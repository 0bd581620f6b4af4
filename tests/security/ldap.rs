//! JAAS `LDAPLoginModule` against a real slapd (tests/support/slapd.rs), through the broker
//! with MQTT clients: passwords, unknown users, roles as groups for the authorization map,
//! an unreachable server (retryable CONNACK 3 / 0x88, logged) and its return, ldaps://,
//! StartTLS.

use std::path::Path;
use std::time::Duration;

use ferromq::protocol::{ConnectReason, ProtocolVersion, QoS};

use crate::support::slapd::{self, broker_xml, connack, directory, load, login_config, map_xml};
use crate::support::xml::no_env;
use crate::support::TestBroker;

const PLANT_ENTRIES: &str = r#"<authorizationPlugin><map><authorizationMap><authorizationEntries>
        <authorizationEntry topic="plant.>" read="viewers" write="writers" admin="viewers,writers"/>
        <authorizationEntry topic="ActiveMQ.Advisory.>" read="*" write="*" admin="*"/>
      </authorizationEntries></authorizationMap></map></authorizationPlugin>"#;

#[tokio::test]
async fn ldap_login_passwords_unknown_users_and_empty_passwords() {
    if !slapd::available("ldap_login_passwords_unknown_users_and_empty_passwords") {
        return;
    }
    let ldap = directory();
    let config = load(
        ldap.dir.path(),
        &login_config(&ldap.url(), ""),
        &broker_xml(""),
    );
    let broker = TestBroker::start(config).await;
    for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
        let bad = if version == ProtocolVersion::V5 {
            ConnectReason::BadUserNameOrPassword
        } else {
            ConnectReason::NotAuthorized
        };
        let (_, ok) = connack(broker.addr, version, "a1", "alice", "alice-pw").await;
        assert_eq!(ok, ConnectReason::Success, "{version:?}");
        let (_, wrong) = connack(broker.addr, version, "a2", "alice", "bob-pw").await;
        assert_eq!(wrong, bad, "wrong password {version:?}");
        let (_, unknown) = connack(broker.addr, version, "a3", "mallory", "x").await;
        assert_eq!(unknown, bad, "unknown user {version:?}");
        // An empty password would be an anonymous bind, which slapd accepts.
        let (_, empty) = connack(broker.addr, version, "a4", "alice", "").await;
        assert_eq!(empty, bad, "empty password {version:?}");
        // Filter metacharacters in the name are escaped: `*` matches nobody.
        let (_, star) = connack(broker.addr, version, "a5", "*", "alice-pw").await;
        assert_eq!(star, bad, "wildcard user name {version:?}");
    }
    broker.shutdown().await;
}

#[tokio::test]
async fn ldap_roles_become_groups_of_the_authorization_map() {
    if !slapd::available("ldap_roles_become_groups_of_the_authorization_map") {
        return;
    }
    let ldap = directory();
    let config = load(
        ldap.dir.path(),
        &login_config(&ldap.url(), ""),
        &broker_xml(PLANT_ENTRIES),
    );
    let broker = TestBroker::start(config).await;
    let (mut alice, reason) = connack(
        broker.addr,
        ProtocolVersion::V311,
        "alice",
        "alice",
        "alice-pw",
    )
    .await;
    assert_eq!(reason, ConnectReason::Success);
    let (mut bob, reason) =
        connack(broker.addr, ProtocolVersion::V311, "bob", "bob", "bob-pw").await;
    assert_eq!(reason, ConnectReason::Success);
    let (mut carol, reason) = connack(
        broker.addr,
        ProtocolVersion::V311,
        "carol",
        "carol",
        "carol-pw",
    )
    .await;
    assert_eq!(reason, ConnectReason::Success);
    // viewers read plant/#; carol has no group.
    assert_eq!(
        alice.subscribe(1, &[("plant/#", QoS::AtLeastOnce)]).await,
        vec![1]
    );
    assert_eq!(
        carol.subscribe(1, &[("plant/#", QoS::AtLeastOnce)]).await,
        vec![0x80]
    );
    assert_eq!(
        bob.subscribe(1, &[("plant/#", QoS::AtMostOnce)]).await,
        vec![0]
    );
    // bob (writers) publishes: delivered. alice (not a writer) publishes: dropped.
    bob.send(crate::support::publish_packet(
        "plant/1/temp",
        b"21",
        QoS::AtMostOnce,
        None,
        false,
    ))
    .await;
    assert_eq!(&*alice.recv_publish().await.topic, "plant/1/temp");
    assert_eq!(&*bob.recv_publish().await.topic, "plant/1/temp");
    alice
        .send(crate::support::publish_packet(
            "plant/1/temp",
            b"x",
            QoS::AtMostOnce,
            None,
            false,
        ))
        .await;
    assert!(bob.recv_within(Duration::from_millis(300)).await.is_none());
    broker.shutdown().await;
}

#[tokio::test]
async fn ldaps_and_starttls_logins() {
    if !slapd::available("ldaps_and_starttls_logins") {
        return;
    }
    let ldap = directory();
    let ca = ldap.ca_file.display().to_string();
    for (name, login) in [
        (
            "ldaps",
            login_config(&ldap.ldaps_url(), &format!("trustedCertificates=\"{ca}\"")),
        ),
        (
            "starttls",
            login_config(
                &format!("ldap://localhost:{}", ldap.port),
                &format!("startTLS=true trustedCertificates=\"{ca}\""),
            ),
        ),
        (
            "connectionProtocol=ssl",
            login_config(
                &format!("ldap://localhost:{}", ldap.ldaps_port),
                &format!("trustedCertificates=\"{ca}\" connectionProtocol=ssl"),
            ),
        ),
    ] {
        let config = load(ldap.dir.path(), &login, &broker_xml(""));
        let broker = TestBroker::start(config).await;
        let (_, ok) = connack(broker.addr, ProtocolVersion::V5, "t1", "bob", "bob-pw").await;
        assert_eq!(ok, ConnectReason::Success, "{name}");
        let (_, bad) = connack(broker.addr, ProtocolVersion::V5, "t2", "bob", "x").await;
        assert_eq!(bad, ConnectReason::BadUserNameOrPassword, "{name}");
        broker.shutdown().await;
    }
    assert!(
        ldap.start_tls_count() >= 2,
        "search and user bind connections upgraded"
    );
    // A certificate the broker does not trust: the TLS handshake fails, which is "server
    // unavailable" for the client (the password was never checked).
    let other_ca = ldap.dir.path().join("other-ca.pem");
    std::fs::write(&other_ca, crate::support::tls::Ca::new("other").pem()).expect("ca");
    let login = login_config(
        &ldap.ldaps_url(),
        &format!("trustedCertificates=\"{}\"", other_ca.display()),
    );
    let broker = TestBroker::start(load(ldap.dir.path(), &login, &broker_xml(""))).await;
    let (_, untrusted) = connack(broker.addr, ProtocolVersion::V5, "t3", "bob", "bob-pw").await;
    assert_eq!(untrusted, ConnectReason::ServerUnavailable);
    broker.shutdown().await;
}

#[test]
fn login_config_errors_are_located() {
    let dir = tempfile::tempdir().expect("tempdir");
    let login = login_config("http://nowhere", "");
    std::fs::write(dir.path().join("login.config"), &login).expect("write");
    let loaded = ferromq::config::load_str(&broker_xml(""), dir.path(), &no_env());
    let text = loaded.diagnostics.to_string();
    assert!(loaded.into_result().is_err());
    assert!(
        text.contains("login.config:5:") && text.contains("connectionURL"),
        "{text}"
    );
    // A misspelt option is ignored (as ActiveMQ does) but named, with the closest option.
    let typo = login_config("ldap://127.0.0.1:389", "roleSearchSubtre=true");
    std::fs::write(dir.path().join("login.config"), &typo).expect("write");
    let loaded = ferromq::config::load_str(&broker_xml(""), dir.path(), &no_env());
    let text = loaded.diagnostics.to_string();
    assert!(loaded.into_result().is_ok(), "{text}");
    assert!(
        text.contains("warning: `roleSearchSubtre` is not an option")
            && text.contains("did you mean `roleSearchSubtree`?"),
        "{text}"
    );
}

fn ferromq_check(dir: &Path, args: &[&str]) -> (Option<i32>, String) {
    let args: Vec<&str> = ["check"]
        .into_iter()
        .chain(args.iter().copied())
        .chain(["activemq.xml"])
        .collect();
    ferromq(dir, &args)
}

/// The real binary in `dir`, without the environment that would move the configuration;
/// exit code and stdout + stderr.
fn ferromq(dir: &Path, args: &[&str]) -> (Option<i32>, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferromq"))
        .current_dir(dir)
        .args(args)
        .env_remove("ACTIVEMQ_CONF")
        .env_remove("ACTIVEMQ_BASE")
        .env_remove("ACTIVEMQ_HOME")
        .env_remove("RUST_LOG")
        .output()
        .expect("ferromq runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[test]
fn check_contacts_ldap_only_when_online() {
    if !slapd::available("check_contacts_ldap_only_when_online") {
        return;
    }
    let mut ldap = directory();
    let dir = ldap.dir.path().to_path_buf();
    let map = |url: &str| {
        format!(
            r#"<authorizationPlugin><map><cachedLDAPAuthorizationMap connectionURL="{url}"
                connectionUsername="{}" connectionPassword="{}"
                topicSearchBase="{}"/></map></authorizationPlugin>"#,
            slapd::BROKER_DN,
            slapd::BROKER_PW,
            slapd::TOPIC_BASE
        )
    };
    std::fs::write(dir.join("login.config"), login_config(&ldap.url(), "")).expect("write");
    std::fs::write(dir.join("activemq.xml"), broker_xml(&map(&ldap.url()))).expect("write");
    let (code, text) = ferromq_check(&dir, &["--online"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("plus entries from LDAP ldap://"), "{text}");
    let (code, json) = ferromq_check(&dir, &["--format", "json"]);
    assert_eq!(code, Some(0), "{json}");
    assert!(
        !json.contains(slapd::BROKER_PW) && !text.contains(slapd::BROKER_PW),
        "{json}"
    );

    // A wrong connection password: located at the module in login.config.
    let wrong = login_config(&ldap.url(), "").replace(slapd::BROKER_PW, "not-it");
    std::fs::write(dir.join("login.config"), &wrong).expect("write");
    let (code, text) = ferromq_check(&dir, &[]);
    assert_eq!(code, Some(0), "offline check does not bind: {text}");
    let (code, text) = ferromq_check(&dir, &["--online"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("login.config:2:") && text.contains("refused the connection user"),
        "{text}"
    );
    assert!(
        !text.contains("not-it"),
        "the password is not printed: {text}"
    );

    // The server stopped: offline check still passes; online names both servers.
    std::fs::write(dir.join("login.config"), login_config(&ldap.url(), "")).expect("write");
    ldap.stop();
    let (code, text) = ferromq_check(&dir, &[]);
    assert_eq!(code, Some(0), "{text}");
    let (code, text) = ferromq_check(&dir, &["--online"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("LDAPLoginModule: cannot connect")
            && text.contains("cachedLDAPAuthorizationMap: cannot connect")
            && text.contains("activemq.xml:"),
        "{text}"
    );
}

/// `legacyGroupMapping="true"` (ActiveMQ's default) strips only `cn=` from a member value: with
/// full-DN members every group name keeps its `,ou=...` tail and matches no login. The map
/// loads, and `check --online` says so instead of passing silently.
#[test]
fn check_online_warns_of_dn_shaped_groups_under_legacy_mapping() {
    if !slapd::available("check_online_warns_of_dn_shaped_groups_under_legacy_mapping") {
        return;
    }
    let ldap = directory();
    slapd::plant_entries(&ldap);
    let dir = ldap.dir.path().to_path_buf();
    let map = |legacy: &str| map_xml(&ldap.url(), &format!(r#"legacyGroupMapping="{legacy}""#));
    std::fs::write(dir.join("login.config"), login_config(&ldap.url(), "")).expect("write");
    std::fs::write(dir.join("activemq.xml"), broker_xml(&map("true"))).expect("write");
    let (code, text) = ferromq_check(&dir, &["--online"]);
    assert_eq!(code, Some(0), "a warning, not an error: {text}");
    assert!(
        text.contains("look like DNs") && text.contains("legacyGroupMapping"),
        "{text}"
    );
    std::fs::write(dir.join("activemq.xml"), broker_xml(&map("false"))).expect("write");
    let (code, text) = ferromq_check(&dir, &["--online"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(!text.contains("look like DNs"), "{text}");
}

fn ferromq_explain(dir: &Path, args: &[&str]) -> (Option<i32>, String) {
    let args: Vec<&str> = ["explain", "-c", "activemq.xml"]
        .into_iter()
        .chain(args.iter().copied())
        .collect();
    ferromq(dir, &args)
}

/// Entries that live in LDAP are unknown to `explain` until it loads them: without `--online` it
/// refuses to answer (an answer without them would be wrong); with it, it answers as the broker.
#[test]
fn explain_loads_the_ldap_map_only_when_online() {
    if !slapd::available("explain_loads_the_ldap_map_only_when_online") {
        return;
    }
    let ldap = directory();
    slapd::plant_entries(&ldap);
    let dir = ldap.dir.path().to_path_buf();
    let map = map_xml(&ldap.url(), r#"legacyGroupMapping="false""#);
    std::fs::write(dir.join("login.config"), login_config(&ldap.url(), "")).expect("write");
    std::fs::write(dir.join("activemq.xml"), broker_xml(&map)).expect("write");
    let subscribe = [
        "-u",
        "alice",
        "--group",
        "viewers",
        "-t",
        "plant/a",
        "-a",
        "subscribe",
    ];
    let (code, text) = ferromq_explain(&dir, &subscribe);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("in LDAP") && text.contains("--online"),
        "{text}"
    );
    let online: Vec<&str> = subscribe.iter().copied().chain(["--online"]).collect();
    let (code, text) = ferromq_explain(&dir, &online);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.starts_with("ALLOWED"), "{text}");
    let carol = [
        "-u",
        "carol",
        "-t",
        "plant/a",
        "-a",
        "subscribe",
        "--online",
    ];
    let (code, text) = ferromq_explain(&dir, &carol);
    assert_eq!(code, Some(3), "{text}");
    // With a password, the login's LDAP groups decide.
    let login = [
        "-u",
        "alice",
        "--password",
        "alice-pw",
        "-t",
        "plant/a",
        "-a",
        "subscribe",
        "--online",
    ];
    let (code, text) = ferromq_explain(&dir, &login);
    assert_eq!(code, Some(0), "{text}");
}

#[tokio::test]
async fn expand_roles_user_role_name_and_control_flags() {
    if !slapd::available("expand_roles_user_role_name_and_control_flags") {
        return;
    }
    use crate::support::security::{groups, req};
    use ferromq::security::{AuthFailure, Security};
    let ldap = directory();
    // operators lists the viewers group; alice carries a role in her own entry.
    ldap.modify(&format!(
        "dn: {}\nchangetype: add\nobjectClass: groupOfNames\ncn: operators\nmember: {}\n\n\
         dn: {}\nchangetype: modify\nadd: employeeType\nemployeeType: night-shift\n",
        slapd::group_dn("operators"),
        slapd::group_dn("viewers"),
        slapd::user_dn("alice"),
    ));
    let login = login_config(
        &ldap.url(),
        "userRoleName=employeeType expandRoles=true expandRolesMatching=\"(member={0})\"",
    );
    let security =
        Security::from_config(&load(ldap.dir.path(), &login, &broker_xml(""))).expect("security");
    let alice = security
        .authenticate(&req(Some("alice"), Some("alice-pw")))
        .await
        .expect("alice");
    assert_eq!(groups(&alice), vec!["night-shift", "viewers", "operators"]);

    // Without expandRoles: only the direct roles.
    let plain = Security::from_config(&load(
        ldap.dir.path(),
        &login_config(&ldap.url(), ""),
        &broker_xml(""),
    ))
    .expect("security");
    let alice = plain
        .authenticate(&req(Some("alice"), Some("alice-pw")))
        .await
        .expect("alice");
    assert_eq!(groups(&alice), vec!["viewers"]);

    // `sufficient` LDAP before a properties module: an unreachable LDAP server falls through
    // to the file users, and a refusal there is still "server unavailable" (LDAP could not say).
    std::fs::write(ldap.dir.path().join("users.properties"), "local=local-pw\n").expect("users");
    std::fs::write(ldap.dir.path().join("groups.properties"), "locals=local\n").expect("groups");
    let dead = "ldap://127.0.0.1:9".to_owned();
    let both = login_config(&dead, "connectTimeout=1000")
        .replace("LDAPLoginModule required", "LDAPLoginModule sufficient");
    let both = both.replace(
        "};\n",
        "    org.apache.activemq.jaas.PropertiesLoginModule sufficient\n        org.apache.activemq.jaas.properties.user=\"users.properties\"\n        org.apache.activemq.jaas.properties.group=\"groups.properties\";\n};\n",
    );
    let security =
        Security::from_config(&load(ldap.dir.path(), &both, &broker_xml(""))).expect("security");
    let local = security
        .authenticate(&req(Some("local"), Some("local-pw")))
        .await
        .expect("file user while LDAP is down");
    assert_eq!(groups(&local), vec!["locals"]);
    assert_eq!(
        security
            .authenticate(&req(Some("alice"), Some("alice-pw")))
            .await
            .expect_err("LDAP user while LDAP is down"),
        AuthFailure::ServerUnavailable
    );
}

#[tokio::test]
async fn searches_share_one_connection_and_each_user_bind_has_its_own() {
    if !slapd::available("searches_share_one_connection_and_each_user_bind_has_its_own") {
        return;
    }
    let ldap = directory();
    let config = load(
        ldap.dir.path(),
        &login_config(&ldap.url(), ""),
        &broker_xml(""),
    );
    let broker = TestBroker::start(config).await;
    let before = ldap.accepted();
    for i in 0..5 {
        let (_, ok) = connack(
            broker.addr,
            ProtocolVersion::V311,
            &format!("s{i}"),
            "alice",
            "alice-pw",
        )
        .await;
        assert_eq!(ok, ConnectReason::Success);
    }
    // One shared search connection, then one bind connection per login.
    assert_eq!(ldap.accepted() - before, 1 + 5);
    broker.shutdown().await;
}

#[tokio::test]
async fn a_silent_ldap_server_times_out_as_server_unavailable() {
    if !slapd::available("a_silent_ldap_server_times_out_as_server_unavailable") {
        return;
    }
    // Accepts TCP connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("ldap://{}", silent.local_addr().expect("addr"));
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let config = load(
        dir.path(),
        &login_config(&url, "connectTimeout=300 readTimeout=300"),
        &broker_xml(""),
    );
    let broker = TestBroker::start(config).await;
    let started = std::time::Instant::now();
    let (a, b) = tokio::join!(
        connack(broker.addr, ProtocolVersion::V5, "q1", "alice", "alice-pw"),
        connack(broker.addr, ProtocolVersion::V311, "q2", "bob", "bob-pw"),
    );
    assert_eq!(a.1, ConnectReason::ServerUnavailable);
    assert_eq!(b.1, ConnectReason::ServerUnavailable);
    // One bind of the search user each (a new connection that fails is not retried), in
    // parallel for both clients, cut at readTimeout: the broker is not held up.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn encryptable_ldap_login_module_decrypts_enc_options() {
    if !slapd::available("encryptable_ldap_login_module_decrypts_enc_options") {
        return;
    }
    use ferromq::config::jasypt::{encrypt, Algorithm};
    let ldap = directory();
    let enc = encrypt(
        Algorithm::PbeWithHmacSha512AndAes256,
        "master",
        slapd::BROKER_PW,
    )
    .expect("encrypt");
    let login = login_config(
        &ldap.url(),
        "encryptionPassword=master encryptionAlgorithm=PBEWITHHMACSHA512ANDAES_256",
    )
    .replace(
        "LDAPLoginModule required",
        "EncryptableLDAPLoginModule required",
    )
    .replace(
        &format!("connectionPassword=\"{}\"", slapd::BROKER_PW),
        &format!("connectionPassword=\"ENC({enc})\""),
    );
    assert!(login.contains("ENC("));
    let broker = TestBroker::start(load(ldap.dir.path(), &login, &broker_xml(""))).await;
    let (_, ok) = connack(broker.addr, ProtocolVersion::V5, "e1", "alice", "alice-pw").await;
    assert_eq!(ok, ConnectReason::Success);
    broker.shutdown().await;

    // A wrong encryption password: a located configuration error, not a broker that fails
    // every login.
    std::fs::write(
        ldap.dir.path().join("login.config"),
        login.replace("encryptionPassword=master", "encryptionPassword=other"),
    )
    .expect("write");
    let loaded = ferromq::config::load_str(&broker_xml(""), ldap.dir.path(), &no_env());
    let text = loaded.diagnostics.to_string();
    assert!(loaded.into_result().is_err());
    assert!(
        text.contains("login.config:") && text.contains("`connectionPassword` cannot be decrypted"),
        "{text}"
    );
}
