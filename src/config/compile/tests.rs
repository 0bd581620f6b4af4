//! What each section of the compiler builds, through the real loader (`load_str`) on files in
//! temporary directories.

use std::collections::BTreeMap;
use std::path::Path;

use crate::config::model::*;
use crate::config::{load_str, Diagnostics, LoadOptions, Loaded};

pub(super) const BEANS: &str =
    "<beans xmlns=\"http://www.springframework.org/schema/beans\" xmlns:ferromq=\"urn:ferromq\">";
const BROKER: &str = "<broker xmlns=\"http://activemq.apache.org/schema/core\"";

pub(super) fn options() -> LoadOptions {
    LoadOptions {
        overrides: BTreeMap::new(),
        use_env: false,
        local_store: false,
        embedded_default: false,
    }
}

/// `<beans><broker {broker_attrs}>{inner}</broker></beans>` loaded with `dir` as base.
pub(super) fn load_in(dir: &Path, broker_attrs: &str, inner: &str, opts: &LoadOptions) -> Loaded {
    let xml = format!("{BEANS}{BROKER} {broker_attrs}>{inner}</broker></beans>");
    load_str(&xml, dir, opts)
}

pub(super) fn load(inner: &str) -> Loaded {
    let dir = tempfile::tempdir().expect("tempdir");
    load_in(dir.path(), "", inner, &options())
}

pub(super) fn valid(loaded: Loaded) -> Config {
    let text = loaded.diagnostics.to_string();
    loaded
        .into_result()
        .unwrap_or_else(|_| panic!("expected a valid config, got:\n{text}"))
}

pub(super) fn messages(diagnostics: &Diagnostics) -> Vec<String> {
    diagnostics
        .0
        .iter()
        .map(|d| format!("{}: {}", d.severity, d.message))
        .collect()
}

pub(super) fn has(diagnostics: &Diagnostics, needle: &str) -> bool {
    diagnostics.0.iter().any(|d| d.message.contains(needle))
}

pub(super) fn connectors(uris: &[&str]) -> String {
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
fn max_keep_alive_is_milliseconds_in_whole_seconds() {
    let config = valid(load(&connectors(&[
        "mqtt://0.0.0.0:0?transport.maxKeepAlive=60000",
    ])));
    let l = &config.listeners[0];
    assert_eq!(l.options.max_keep_alive_ms, Some(60_000));
    assert_eq!(l.inactivity.max_keep_alive_secs, Some(60));

    let rounded = load(&connectors(&[
        "mqtt://0.0.0.0:0?transport.maxKeepAlive=1500",
    ]));
    assert!(has(&rounded.diagnostics, "rounded down to 1 s"));
    assert_eq!(
        valid(rounded).listeners[0].inactivity.max_keep_alive_secs,
        Some(1)
    );

    let off = valid(load(&connectors(&[
        "mqtt://0.0.0.0:0?transport.maxKeepAlive=0",
    ])));
    assert_eq!(off.listeners[0].inactivity.max_keep_alive_secs, None);

    // Seconds by mistake: 60 ms is refused, not read as a minute.
    for bad in ["60", "-1", "65535001", "1m"] {
        let uri = format!("mqtt://0.0.0.0:0?transport.maxKeepAlive={bad}");
        let loaded = load(&connectors(&[&uri]));
        assert!(
            has(&loaded.diagnostics, "expected milliseconds: 0 (no cap)"),
            "{bad}: {:?}",
            messages(&loaded.diagnostics)
        );
    }

    let unmonitored = load(&connectors(&[
        "mqtt://0.0.0.0:0?transport.maxKeepAlive=60000&amp;transport.useInactivityMonitor=false",
    ]));
    assert!(has(
        &unmonitored.diagnostics,
        "transport.maxKeepAlive has no effect"
    ));
}

#[test]
fn every_connector_option_with_its_unit() {
    let uri =
        "mqtt+nio://[::]:0?transport.defaultKeepAlive=60000&amp;transport.connectAttemptTimeout=0\
               &amp;transport.maxFrameSize=1024&amp;maximumConnections=10&amp;backlog=2048\
               &amp;transport.subscriptionStrategy=mqtt-virtual-topic-subscriptions\
               &amp;transport.publishDollarTopics=TRUE&amp;transport.useInactivityMonitor=false\
               &amp;allowLinkStealing=false&amp;transport.maxKeepAlive=120000\
               &amp;transport.activeMQSubscriptionPrefetch=500";
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
            max_keep_alive_ms: Some(120_000),
            connect_attempt_timeout_ms: None,
            max_frame_size_bytes: 1024,
            maximum_connections: Some(10),
            backlog: 2048,
            subscription_prefetch: Some(500),
            publish_dollar_topics: true,
            use_inactivity_monitor: false,
            // the attribute wins over the URI option
            allow_link_stealing: true,
            need_client_auth: false,
            want_client_auth: false,
            subscription_strategy: SubscriptionStrategy::VirtualTopic,
            stomp: crate::config::stomp_options::StompOptions::default(),
        }
    );
}

#[test]
fn the_virtual_topic_strategy_is_warned_where_it_is_written() {
    let inner = "<transportConnectors>\n<transportConnector name=\"n\" \
        uri=\"mqtt://0.0.0.0:0?transport.subscriptionStrategy=mqtt-virtual-topic-subscriptions\"/>\
        </transportConnectors>";
    let loaded = load(inner);
    let d = &loaded.diagnostics;
    assert!(!d.has_errors(), "{d}");
    let text = d.to_string();
    assert!(has(d, "is served as plain MQTT topics"), "{text}");
    assert!(
        has(d, "`VirtualTopic.>` / `Consumer.>` do not apply"),
        "{text}"
    );
    let located = d
        .warnings()
        .find(|x| x.message.contains("VirtualTopic"))
        .and_then(|x| x.span.as_ref())
        .map(|span| span.line);
    assert!(located.is_some_and(|line| line > 0), "{text}");
    let default = load(&connectors(&[
        "mqtt://0.0.0.0:0?transport.subscriptionStrategy=mqtt-default-subscriptions",
    ]));
    assert!(!has(&default.diagnostics, "VirtualTopic"));
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
        "amqp://0.0.0.0:5672",
        "auto+nio://0.0.0.0:5671",
        "stomp://0.0.0.0:61613",
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
    let names: Vec<&str> = config.listeners.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(
        names,
        ["c3", "c4"],
        "STOMP and MQTT connectors are compiled"
    );
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
            temp_limit_bytes: Some(1024),
            send_fail_if_no_space: false,
            send_fail_if_no_space_after_timeout_ms: None,
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

#[test]
fn offline_durable_subscriber_expiry_uses_activemq_names_and_defaults() {
    let dir = tempfile::tempdir().expect("tempdir");
    let conn = connectors(&["mqtt://0.0.0.0:1883"]);
    let default = valid(load(&conn)).broker;
    assert_eq!(default.offline_durable_subscriber_timeout_ms, None);
    assert_eq!(default.offline_durable_subscriber_task_schedule_ms, 300_000);
    let set = |attrs: &str| load_in(dir.path(), attrs, &conn, &options());
    let broker = valid(set(
        r#"offlineDurableSubscriberTimeout="86400000" offlineDurableSubscriberTaskSchedule="60000""#,
    ))
    .broker;
    assert_eq!(
        broker.offline_durable_subscriber_timeout_ms,
        Some(86_400_000)
    );
    assert_eq!(broker.offline_durable_subscriber_task_schedule_ms, 60_000);
    let never = valid(set(r#"offlineDurableSubscriberTimeout="-1""#)).broker;
    assert_eq!(never.offline_durable_subscriber_timeout_ms, None);
    for (attrs, needle) in [
        (
            r#"offlineDurableSubscriberTimeout="-5""#,
            "cannot be negative",
        ),
        (
            r#"offlineDurableSubscriberTimeout="7 days""#,
            "not a duration",
        ),
        (r#"offlineDurableSubscriberTaskSchedule="0""#, "more than 0"),
    ] {
        let loaded = set(attrs);
        assert!(
            has(&loaded.diagnostics, needle),
            "{attrs}: {:?}",
            messages(&loaded.diagnostics)
        );
        assert!(loaded.into_result().is_err(), "{attrs} is an error");
    }
}

#[test]
fn shared_stores_are_refused_unless_a_local_store_is_accepted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mqtt = connectors(&["mqtt://127.0.0.1:0"]);
    let locker = &format!("{mqtt}<persistenceAdapter><kahaDB directory=\"/srv/kaha\"><locker>\
                  <lease-database-locker dataSource=\"#db\"/></locker></kahaDB></persistenceAdapter>");
    let refused = load_in(dir.path(), "", locker, &options());
    assert!(refused.diagnostics.has_errors(), "{}", refused.diagnostics);
    assert!(has(&refused.diagnostics, "split brain"));
    let flagged = LoadOptions {
        local_store: true,
        ..options()
    };
    let accepted = load_in(dir.path(), "", locker, &flagged);
    assert_eq!(
        messages(&accepted.diagnostics),
        vec![
            "warning: <kahaDB> configures a store shared between brokers (master/slave); \
              ferromq runs it on its own local store in /srv/kaha instead"
                .to_owned()
        ]
    );
    assert_eq!(
        valid(accepted).persistence,
        Persistence::Durable {
            directory: "/srv/kaha".into(),
            journal_max_file_length_bytes: None
        }
    );
    let bad_value = load_in(
        dir.path(),
        "",
        "<persistenceAdapter><jdbcPersistenceAdapter ferromq:localStore=\"maybe\"/></persistenceAdapter>",
        &options(),
    );
    assert!(bad_value.diagnostics.has_errors());
    assert!(
        bad_value
            .diagnostics
            .0
            .iter()
            .any(|d| d.is_error() && d.message.contains("maybe")),
        "{}",
        bad_value.diagnostics
    );
    // A plain kahaDB (its default locker is local) is not affected.
    let plain = load_in(
        dir.path(),
        "",
        &format!(
            "{mqtt}<persistenceAdapter><kahaDB directory=\"/srv/kaha\"/></persistenceAdapter>"
        ),
        &options(),
    );
    assert!(plain.diagnostics.0.is_empty(), "{}", plain.diagnostics);
}

#[test]
fn persistence_factories_are_replaced_or_refused_like_adapters() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Persistence::Durable {
        directory: Path::new("/d").join("localhost").join("KahaDB"),
        journal_max_file_length_bytes: None,
    };
    // ActiveMQ's examples/conf/activemq.xml: a journal over an embedded (local) database.
    let journal = "<persistenceFactory><journalPersistenceAdapterFactory journalLogFiles=\"5\" \
                   dataDirectory=\"../data\"/></persistenceFactory>";
    let local = load_in(dir.path(), "dataDirectory=\"/d\"", journal, &options());
    assert_eq!(
        messages(&local.diagnostics)
            .iter()
            .filter(|m| m.contains("persistence") || m.contains("Factory"))
            .collect::<Vec<_>>(),
        [
            "warning: <journalPersistenceAdapterFactory> is not supported; ferromq keeps durable \
          sessions and messages in its own store in /d/localhost/KahaDB"
        ]
    );
    assert_eq!(valid(local).persistence, store);
    // A database shared between brokers: refused, as a jdbcPersistenceAdapter.
    for shared in [
        "<persistenceFactory><journaledJDBC dataDirectory=\"../data\"/></persistenceFactory>",
        "<persistenceFactory><journalPersistenceAdapterFactory dataSource=\"#postgres-ds\"/>\
         </persistenceFactory>",
    ] {
        let refused = load_in(dir.path(), "dataDirectory=\"/d\"", shared, &options());
        assert!(has(&refused.diagnostics, "split brain"), "{shared}");
        assert!(refused.diagnostics.has_errors(), "{shared}");
        let accepted = load_in(
            dir.path(),
            "dataDirectory=\"/d\"",
            shared,
            &LoadOptions {
                local_store: true,
                ..options()
            },
        );
        assert!(has(&accepted.diagnostics, "runs it on its own local store"));
        assert_eq!(valid(accepted).persistence, store);
    }
    // An adapter wins over a factory, as in ActiveMQ: the factory is not acted on.
    let both = load_in(
        dir.path(),
        "",
        &format!("<persistenceAdapter><kahaDB directory=\"/k\"/></persistenceAdapter>{journal}"),
        &options(),
    );
    assert!(has(
        &both.diagnostics,
        "<persistenceFactory> of <broker> is not acted on"
    ));
    assert!(!both.diagnostics.has_errors());
}

#[test]
fn a_ferromq_element_in_another_namespace_is_an_error_not_skipped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let xml = format!(
        "<beans xmlns=\"http://www.springframework.org/schema/beans\" \
         xmlns:fm=\"https://ferromq.dev/schema\">{BROKER}>\
         <persistenceAdapter><fm:jetStream servers=\"nats://127.0.0.1:4222\"/></persistenceAdapter>\
         <fm:sharedSubscriptions/>\
         <fm:somethingElse/></broker></beans>"
    );
    let loaded = load_str(&xml, dir.path(), &options());
    let errors: Vec<String> = messages(&loaded.diagnostics)
        .into_iter()
        .filter(|m| m.contains("not ferromq's `urn:ferromq`"))
        .collect();
    assert_eq!(errors.len(), 2, "{}", loaded.diagnostics);
    assert!(errors[0].starts_with("error: <jetStream>"), "{errors:?}");
    assert!(loaded.diagnostics.has_errors());
}
