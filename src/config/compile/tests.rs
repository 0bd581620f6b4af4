//! What each section of the compiler builds, through the real loader (`load_str`) on files in
//! temporary directories.

use std::collections::BTreeMap;
use std::path::Path;

use crate::config::model::*;
use crate::config::{load_str, Diagnostics, LoadOptions, Loaded};

const BEANS: &str =
    "<beans xmlns=\"http://www.springframework.org/schema/beans\" xmlns:ferromq=\"urn:ferromq\">";
const BROKER: &str = "<broker xmlns=\"http://activemq.apache.org/schema/core\"";

fn options() -> LoadOptions {
    LoadOptions {
        overrides: BTreeMap::new(),
        use_env: false,
    }
}

/// `<beans><broker {broker_attrs}>{inner}</broker></beans>` loaded with `dir` as base.
fn load_in(dir: &Path, broker_attrs: &str, inner: &str, opts: &LoadOptions) -> Loaded {
    let xml = format!("{BEANS}{BROKER} {broker_attrs}>{inner}</broker></beans>");
    load_str(&xml, dir, opts)
}

fn load(inner: &str) -> Loaded {
    let dir = tempfile::tempdir().expect("tempdir");
    load_in(dir.path(), "", inner, &options())
}

fn valid(loaded: Loaded) -> Config {
    let text = loaded.diagnostics.to_string();
    loaded
        .into_result()
        .unwrap_or_else(|_| panic!("expected a valid config, got:\n{text}"))
}

fn messages(diagnostics: &Diagnostics) -> Vec<String> {
    diagnostics
        .0
        .iter()
        .map(|d| format!("{}: {}", d.severity, d.message))
        .collect()
}

fn has(diagnostics: &Diagnostics, needle: &str) -> bool {
    diagnostics.0.iter().any(|d| d.message.contains(needle))
}

fn connectors(uris: &[&str]) -> String {
    let items: String = uris
        .iter()
        .enumerate()
        .map(|(i, uri)| format!("<transportConnector name=\"c{i}\" uri=\"{uri}\"/>"))
        .collect();
    format!("<transportConnectors>{items}</transportConnectors>")
}

#[test]
fn minimal_broker_gets_activemq_defaults() {
    let config = valid(load(&connectors(&["mqtt://0.0.0.0:1883"])));
    assert_eq!(config.broker.broker_name, "localhost");
    assert!(config.broker.persistent && config.broker.start);
    let listener = &config.listeners[0];
    assert_eq!(
        (listener.scheme, listener.host.as_str(), listener.port),
        (Scheme::Mqtt, "0.0.0.0", 1883)
    );
    assert_eq!(listener.options, ListenerOptions::default());
    assert_eq!(
        config.persistence,
        Persistence::Durable {
            directory: Path::new("activemq-data").join("localhost").join("KahaDB"),
            journal_max_file_length_bytes: None,
        }
    );
    assert!(matches!(config.authentication, Authentication::None));
    assert!(config.authorization.is_none() && config.reload.is_none() && config.ssl.is_none());
}

#[test]
fn every_connector_option_with_its_unit() {
    let uri =
        "mqtt+nio://[::]:0?transport.defaultKeepAlive=60000&amp;transport.connectAttemptTimeout=0\
               &amp;transport.maxFrameSize=1024&amp;maximumConnections=10\
               &amp;transport.subscriptionStrategy=mqtt-virtual-topic-subscriptions\
               &amp;transport.publishDollarTopics=TRUE&amp;transport.useInactivityMonitor=false\
               &amp;allowLinkStealing=false";
    let inner = format!(
        "<transportConnectors><transportConnector name=\"n\" uri=\"{uri}\" allowLinkStealing=\"true\"/></transportConnectors>"
    );
    let config = valid(load(&inner));
    let l = &config.listeners[0];
    assert_eq!(
        (l.scheme, l.host.as_str(), l.port),
        (Scheme::MqttNio, "::", 0)
    );
    assert_eq!(
        l.options,
        ListenerOptions {
            default_keep_alive_ms: 60_000,
            connect_attempt_timeout_ms: None,
            max_frame_size_bytes: 1024,
            maximum_connections: Some(10),
            publish_dollar_topics: true,
            use_inactivity_monitor: false,
            // the attribute wins over the URI option
            allow_link_stealing: true,
            need_client_auth: false,
            want_client_auth: false,
            subscription_strategy: SubscriptionStrategy::VirtualTopic,
        }
    );
}

#[test]
fn ignored_options_warn_and_keep_defaults() {
    let loaded = load(&connectors(&[
        "ws://0.0.0.0:61614?defaultKeepAlive=5&amp;transport.trace=true&amp;wireFormat.maxFrameSize=10&amp;wireFormat.maxFrameSize=20",
    ]));
    let d = &loaded.diagnostics;
    assert!(!d.has_errors(), "{d}");
    assert!(has(d, "ActiveMQ ignores option `defaultKeepAlive`"));
    assert!(has(d, "option `transport.trace` is not acted on"));
    assert!(has(d, "given twice"));
    let config = valid(loaded);
    assert_eq!(config.listeners[0].options.default_keep_alive_ms, 0);
    assert_eq!(config.listeners[0].options.max_frame_size_bytes, 20);
}

#[test]
fn ports_clash_unless_zero_or_different_hosts() {
    let ok = load(&connectors(&[
        "mqtt://127.0.0.1:0",
        "mqtt://127.0.0.1:0",
        "mqtt://10.0.0.1:1883",
        "mqtt://10.0.0.2:1883",
    ]));
    assert!(!ok.diagnostics.has_errors(), "{}", ok.diagnostics);
    for (a, b) in [
        ("[::]", "10.0.0.1"),
        ("10.0.0.1", "0.0.0.0"),
        ("localhost", "127.0.0.1"),
    ] {
        let a_uri = format!("mqtt://{a}:1883");
        let b_uri = format!("ws://{b}:1883");
        let clash = load(&connectors(&[&a_uri, &b_uri]));
        assert!(
            has(&clash.diagnostics, "clashes with connector `c0`"),
            "{a} vs {b}"
        );
    }
}

#[test]
fn other_protocols_are_not_served() {
    let loaded = load(&connectors(&[
        "tcp://0.0.0.0:61616",
        "stomp://0.0.0.0:61613",
        "auto+nio://0.0.0.0:5671",
        "mqtt://0.0.0.0:1883",
    ]));
    assert_eq!(
        loaded
            .diagnostics
            .warnings()
            .filter(|d| d.message.contains("not served"))
            .count(),
        3
    );
    let config = valid(loaded);
    assert_eq!(config.listeners.len(), 1);
}

fn write(dir: &Path, name: &str, contents: impl AsRef<[u8]>) {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(path, contents).expect("write");
}

fn self_signed() -> (String, String) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("rcgen");
    (certified.cert.pem(), certified.key_pair.serialize_pem())
}

#[test]
fn tls_pem_with_separate_key_and_trust_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = self_signed();
    write(dir.path(), "tls/cert.pem", &cert);
    write(dir.path(), "tls/key.pem", &key);
    write(dir.path(), "tls/ca.pem", &cert);
    let inner = format!(
        "<sslContext><sslContext keyStore=\"file:tls/cert.pem\" ferromq:keyFile=\"tls/key.pem\" trustStore=\"tls/ca.pem\"/></sslContext>{}",
        connectors(&["mqtt+ssl://0.0.0.0:8883?transport.needClientAuth=true", "wss://0.0.0.0:8884"])
    );
    let config = valid(load_in(dir.path(), "", &inner, &options()));
    let ssl = config.ssl.as_ref().expect("ssl");
    let key_store = ssl.key_store.as_ref().expect("key store");
    assert_eq!(key_store.kind, StoreKind::Pem);
    assert_eq!(key_store.path, dir.path().join("tls/cert.pem"));
    assert_eq!(
        key_store.key_file.as_deref(),
        Some(dir.path().join("tls/key.pem").as_path())
    );
    assert_eq!(
        ssl.trust_store.as_ref().map(|t| t.kind),
        Some(StoreKind::Pem)
    );
    assert!(config.listeners[0].options.need_client_auth);
    for file in ["tls/cert.pem", "tls/key.pem", "tls/ca.pem"] {
        assert!(
            config.files.contains(&dir.path().join(file)),
            "{file} in files"
        );
    }
}

#[test]
fn tls_store_kinds_and_missing_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = self_signed();
    write(dir.path(), "combined.pem", format!("{cert}{key}"));
    write(dir.path(), "cert-only.pem", &cert);
    write(dir.path(), "store.bin", [0x30u8, 0x82, 0x01, 0x00]);
    let listener = connectors(&["mqtt+ssl://0.0.0.0:8883"]);
    let with = |attrs: &str| {
        load_in(
            dir.path(),
            "",
            &format!("<sslContext><sslContext {attrs}/></sslContext>{listener}"),
            &options(),
        )
    };
    let combined = valid(with("keyStore=\"combined.pem\""));
    assert_eq!(
        combined.ssl.and_then(|s| s.key_store).map(|k| k.kind),
        Some(StoreKind::Pem)
    );
    let p12 = valid(with("keyStore=\"store.bin\" keyStorePassword=\"secret\""));
    let store = p12.ssl.and_then(|s| s.key_store).expect("store");
    assert_eq!(store.kind, StoreKind::Pkcs12);
    assert_eq!(store.password.as_ref().map(Secret::expose), Some("secret"));
    assert!(
        !format!("{store:?}").contains("secret"),
        "passwords never print"
    );
    assert!(has(
        &with("keyStore=\"cert-only.pem\"").diagnostics,
        "holds no private key"
    ));
    assert!(has(
        &with("keyStore=\"missing.p12\"").diagnostics,
        "cannot read keyStore"
    ));
    assert!(has(
        &with("keyStore=\"combined.pem\" keyStoreType=\"bks\"").diagnostics,
        "unknown store type"
    ));
    let no_ssl = load_in(dir.path(), "", &listener, &options());
    assert!(has(&no_ssl.diagnostics, "needs a server certificate"));
}

const AUTHZ: &str = r#"<authorizationPlugin><map><authorizationMap>
    <authorizationEntries>
        <authorizationEntry topic="USERS.>,GUEST.>" read="users" write="users, admins" admin="admins"/>
        <authorizationEntry queue=">" read="admins" groupClass="org.apache.activemq.jaas.UserPrincipal"/>
    </authorizationEntries>
    <defaultEntry><authorizationEntry read="*"/></defaultEntry>
    <tempDestinationAuthorizationEntry><tempDestinationAuthorizationEntry read="admins" write="admins" admin="admins"/></tempDestinationAuthorizationEntry>
</authorizationMap></map></authorizationPlugin>"#;

#[test]
fn simple_authentication_and_authorization() {
    let inner = format!(
        r#"<plugins><simpleAuthenticationPlugin anonymousAccessAllowed="true" anonymousGroup="guests">
            <users><authenticationUser username="admin" password="pw" groups="admins, users"/></users>
        </simpleAuthenticationPlugin>{AUTHZ}</plugins>{}"#,
        connectors(&["mqtt://0.0.0.0:1883"])
    );
    let config = valid(load(&inner));
    let Authentication::Simple(simple) = &config.authentication else {
        panic!("simple authentication expected");
    };
    assert!(simple.anonymous_access_allowed);
    assert_eq!(
        (
            simple.anonymous_user.as_str(),
            simple.anonymous_group.as_str()
        ),
        ("anonymous", "guests")
    );
    assert_eq!(simple.users[0].username, "admin");
    assert_eq!(simple.users[0].password.expose(), "pw");
    assert_eq!(simple.users[0].groups, vec!["admins", "users"]);
    let authz = config.authorization.expect("authorization");
    assert_eq!(authz.entries[0].patterns, vec!["USERS.>", "GUEST.>"]);
    assert_eq!(authz.entries[0].write, vec!["users", "admins"]);
    assert_eq!(
        (authz.entries[1].kind, authz.entries[1].principal_kind),
        (DestinationKind::Queue, PrincipalKind::User)
    );
    assert_eq!(authz.entries[0].principal_kind, PrincipalKind::Group);
    let default = authz.default_entry.expect("default entry");
    assert_eq!(
        (default.patterns.clone(), default.read.clone()),
        (vec![">".to_owned()], vec!["*".to_owned()])
    );
    assert_eq!(
        authz.temp_entry.map(|t| t.kind),
        Some(DestinationKind::TempTopic)
    );
}

#[test]
fn two_authentication_plugins_are_an_error() {
    let loaded =
        load("<plugins><simpleAuthenticationPlugin/><simpleAuthenticationPlugin/></plugins>");
    assert!(has(&loaded.diagnostics, "a second authentication plugin"));
}

const LOGIN_CONFIG: &str = r#"
activemq {
    org.apache.activemq.jaas.PropertiesLoginModule sufficient
        org.apache.activemq.jaas.properties.user="users.properties"
        org.apache.activemq.jaas.properties.group="${activemq.conf}/groups.properties"
        reload=true;
    org.apache.activemq.jaas.GuestLoginModule optional
        org.apache.activemq.jaas.guest.user="visitor"
        credentialsInvalidate=true;
};
activemq-ssl {
    org.apache.activemq.jaas.TextFileCertificateLoginModule required
        org.apache.activemq.jaas.textfiledn.user="dns.properties"
        org.apache.activemq.jaas.textfiledn.group="groups.properties";
};
broken {
    com.example.LdapLoginModule required;
    com.example.OtherModule optional;
};
"#;

fn jaas_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "login.config", LOGIN_CONFIG);
    write(dir.path(), "users.properties", "admin=secret\nalice=pw\n");
    write(dir.path(), "dns.properties", "admin=CN=admin,O=Example\n");
    write(
        dir.path(),
        "groups.properties",
        "admins=admin\nusers=alice,bob\n",
    );
    dir
}

#[test]
fn jaas_properties_and_guest_modules() {
    let dir = jaas_dir();
    let inner = format!(
        "<plugins><jaasAuthenticationPlugin/></plugins>{}",
        connectors(&["mqtt://0.0.0.0:1883"])
    );
    let loaded = load_in(dir.path(), "", &inner, &options());
    assert!(
        messages(&loaded.diagnostics)
            .iter()
            .any(|m| m.starts_with("warning: group `users` lists `bob`")),
        "{}",
        loaded.diagnostics
    );
    let config = valid(loaded);
    let Authentication::Jaas(jaas) = &config.authentication else {
        panic!("jaas expected");
    };
    assert_eq!(jaas.configuration, "activemq");
    let LoginModuleKind::Properties {
        users_file,
        groups_file,
        reload,
    } = &jaas.modules[0].kind
    else {
        panic!("properties module expected");
    };
    assert_eq!(users_file, &dir.path().join("users.properties"));
    assert_eq!(groups_file, &dir.path().join("groups.properties"));
    assert!(*reload);
    assert_eq!(jaas.modules[0].flag, "sufficient");
    let LoginModuleKind::Guest {
        user,
        group,
        credentials_invalidate,
    } = &jaas.modules[1].kind
    else {
        panic!("guest module expected");
    };
    assert_eq!(
        (user.as_str(), group.as_str(), *credentials_invalidate),
        ("visitor", "guests", true)
    );
    for file in ["login.config", "users.properties", "groups.properties"] {
        assert!(
            config.files.contains(&dir.path().join(file)),
            "{file} in files"
        );
    }
}

#[test]
fn jaas_dual_and_login_config_from_a_property() {
    let dir = jaas_dir();
    // Only the property can find it: it is not called login.config.
    std::fs::rename(
        dir.path().join("login.config"),
        dir.path().join("custom.conf"),
    )
    .expect("rename");
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let mut opts = options();
    opts.overrides.insert(
        "java.security.auth.login.config".into(),
        dir.path().join("custom.conf").display().to_string(),
    );
    // login.config expands ${activemq.conf}; point it at the same directory.
    opts.overrides
        .insert("activemq.conf".into(), dir.path().display().to_string());
    let inner = format!(
        "<plugins><jaasDualAuthenticationPlugin/></plugins>{}",
        connectors(&["mqtt://0.0.0.0:1883"])
    );
    let config = valid(load_in(elsewhere.path(), "", &inner, &opts));
    let Authentication::JaasDual {
        password,
        certificate,
    } = &config.authentication
    else {
        panic!("dual expected");
    };
    assert_eq!(
        (
            password.configuration.as_str(),
            certificate.configuration.as_str()
        ),
        ("activemq", "activemq-ssl")
    );
    assert!(matches!(
        certificate.modules[0].kind,
        LoginModuleKind::TextFileCertificate { .. }
    ));
}

#[test]
fn jaas_unsupported_modules_fail_closed_and_missing_entries_suggest() {
    let dir = jaas_dir();
    let broken = load_in(
        dir.path(),
        "",
        "<plugins><jaasAuthenticationPlugin configuration=\"broken\"/></plugins>",
        &options(),
    );
    let found = messages(&broken.diagnostics);
    assert!(
        found
            .iter()
            .any(|m| m
                .starts_with("error: login module `com.example.LdapLoginModule` is not supported")),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|m| m.starts_with("warning: login module `com.example.OtherModule`")),
        "{found:?}"
    );
    let typo = load_in(
        dir.path(),
        "",
        "<plugins><jaasAuthenticationPlugin configuration=\"activemq-sl\"/></plugins>",
        &options(),
    );
    let d = typo
        .diagnostics
        .0
        .iter()
        .find(|d| d.message.contains("has no entry"))
        .expect("entry error");
    assert_eq!(d.hint.as_deref(), Some("did you mean `activemq-ssl`?"));
}

#[test]
fn persistence_variants() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kaha = valid(load_in(
        dir.path(),
        "brokerName=\"b\" dataDirectory=\"/var/lib/amq\"",
        "<persistenceAdapter><kahaDB directory=\"/srv/kaha\" journalMaxFileLength=\"32mb\"/></persistenceAdapter>",
        &options(),
    ));
    assert_eq!(
        kaha.persistence,
        Persistence::Durable {
            directory: "/srv/kaha".into(),
            journal_max_file_length_bytes: Some(32 << 20)
        }
    );
    let memory = valid(load(
        "<persistenceAdapter><memoryPersistenceAdapter/></persistenceAdapter>",
    ));
    assert_eq!(memory.persistence, Persistence::Memory);
    let off = load_in(
        dir.path(),
        "persistent=\"false\"",
        "<persistenceAdapter><kahaDB/></persistenceAdapter>",
        &options(),
    );
    assert!(has(
        &off.diagnostics,
        "ignored because the broker has persistent=\"false\""
    ));
    assert_eq!(valid(off).persistence, Persistence::Memory);
    let leveldb = load_in(
        dir.path(),
        "dataDirectory=\"/d\"",
        "<persistenceAdapter><levelDB directory=\"x\"/></persistenceAdapter>",
        &options(),
    );
    assert!(has(&leveldb.diagnostics, "<levelDB> is not supported"));
    assert_eq!(
        valid(leveldb).persistence,
        Persistence::Durable {
            directory: Path::new("/d").join("localhost").join("KahaDB"),
            journal_max_file_length_bytes: None
        }
    );
}

#[test]
fn limits_policies_and_reload() {
    let inner = r#"<systemUsage><systemUsage>
            <memoryUsage><memoryUsage limit="64 mb"/></memoryUsage>
            <storeUsage><storeUsage limit="100 gb"/></storeUsage>
            <tempUsage><tempUsage limit="1024"/></tempUsage>
        </systemUsage></systemUsage>
        <destinationPolicy><policyMap>
            <policyEntries>
                <policyEntry topic="sensors.>,alerts.>"><pendingMessageLimitStrategy><constantPendingMessageLimitStrategy limit="1000"/></pendingMessageLimitStrategy></policyEntry>
                <policyEntry queue=">"><pendingMessageLimitStrategy><constantPendingMessageLimitStrategy limit="-1"/></pendingMessageLimitStrategy></policyEntry>
            </policyEntries>
            <defaultEntry><policyEntry/></defaultEntry>
        </policyMap></destinationPolicy>
        <plugins><runtimeConfigurationPlugin checkPeriod="1000"/></plugins>"#;
    let config = valid(load(inner));
    assert_eq!(
        config.limits,
        Limits {
            memory_limit_bytes: Some(64 << 20),
            store_limit_bytes: Some(100 << 30),
            temp_limit_bytes: Some(1024)
        }
    );
    let policies: Vec<(DestinationKind, &str, Option<u32>)> = config
        .policies
        .iter()
        .map(|p| (p.kind, p.pattern.as_str(), p.pending_message_limit))
        .collect();
    assert_eq!(
        policies,
        vec![
            (DestinationKind::Topic, "sensors.>", Some(1000)),
            (DestinationKind::Topic, "alerts.>", Some(1000)),
            (DestinationKind::Queue, ">", None),
            (DestinationKind::Topic, ">", None),
        ]
    );
    assert_eq!(
        config.reload,
        Some(ReloadSettings {
            check_period_ms: 1000
        })
    );
}

#[test]
fn names_known_unknown_and_foreign() {
    let inner = r#"<managementContext><managementContext createConnector="false"/></managementContext>
        <plugins><timeStampingBrokerPlugin zeroExpirationOverride="1000"/></plugins>
        <transportConnectors><transportConnector uri="mqtt://0.0.0.0:1883" updateClusterClients="true"/></transportConnectors>
        <camel:camelContext xmlns:camel="http://camel.apache.org/schema/spring"/>"#;
    let loaded = load(inner);
    let found = messages(&loaded.diagnostics);
    assert!(!loaded.diagnostics.has_errors(), "{found:?}");
    assert!(
        found.contains(
            &"warning: <managementContext> of <broker> is not acted on by ferromq".to_owned()
        ),
        "{found:?}"
    );
    assert!(
        found
            .contains(&"warning: <timeStampingBrokerPlugin> is not acted on by ferromq".to_owned()),
        "{found:?}"
    );
    assert!(found.contains(&"warning: attribute `updateClusterClients` of <transportConnector> is not acted on by ferromq".to_owned()), "{found:?}");
    assert!(
        !found.iter().any(|m| m.contains("createConnector")),
        "only the outermost ignored element is reported"
    );
    let config = valid(loaded);
    assert_eq!(
        config.listeners[0].name, "mqtt://0.0.0.0:1883",
        "the URI names an unnamed connector"
    );
}

#[test]
fn prefixed_core_namespace_is_the_same_broker() {
    let dir = tempfile::tempdir().expect("tempdir");
    let xml = r#"<beans xmlns="http://www.springframework.org/schema/beans" xmlns:amq="http://activemq.apache.org/schema/core">
        <amq:broker brokerName="prefixed"><amq:transportConnectors>
            <amq:transportConnector name="m" uri="mqtt://0.0.0.0:1883"/>
        </amq:transportConnectors></amq:broker></beans>"#;
    let config = valid(load_str(xml, dir.path(), &options()));
    assert_eq!(
        (config.broker.broker_name.as_str(), config.listeners.len()),
        ("prefixed", 1)
    );
}

#[test]
fn no_broker_or_two_brokers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let none = load_str(&format!("{BEANS}<broker/></beans>"), dir.path(), &options());
    let d = none
        .diagnostics
        .0
        .iter()
        .find(|d| d.is_error())
        .expect("error");
    assert_eq!(
        d.message,
        "no ActiveMQ <broker> element in this configuration"
    );
    assert!(d.hint.as_deref().is_some_and(|h| h.contains("xmlns=")));
    let two = load_str(
        &format!("{BEANS}{BROKER}/>{BROKER}/></beans>"),
        dir.path(),
        &options(),
    );
    assert!(has(&two.diagnostics, "a second <broker>"));
}
