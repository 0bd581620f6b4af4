//! STOMP connectors (`stomp://`, `stomp+nio://`, `stomp+ssl://`, `stomp+nio+ssl://`) and the
//! STOMP options of `ws://`, through the real loader.

use super::tests::{connectors, has, load, valid};
use crate::config::model::*;
use crate::config::stomp_options::{HeartBeat, StompOptions};

#[test]
fn stomp_schemes_compile_with_activemq_defaults() {
    let schemes: Vec<Option<Scheme>> = ["stomp", "stomp+nio", "stomp+ssl", "stomp+nio+ssl"]
        .into_iter()
        .map(Scheme::parse)
        .collect();
    assert_eq!(
        schemes,
        [
            Some(Scheme::Stomp),
            Some(Scheme::StompNio),
            Some(Scheme::StompSsl),
            Some(Scheme::StompNioSsl)
        ]
    );
    // The TLS ones need the broker's <sslContext>, as MQTT's do.
    let without_tls = load(&connectors(&[
        "stomp+ssl://0.0.0.0:0",
        "stomp+nio+ssl://0.0.0.0:0",
    ]));
    for connector in ["c0", "c1"] {
        assert!(has(
            &without_tls.diagnostics,
            &format!("TLS connector `{connector}` needs a server certificate")
        ));
    }
    let config = valid(load(&connectors(&[
        "stomp://0.0.0.0:0",
        "stomp+nio://0.0.0.0:0",
    ])));
    let plain = &config.listeners[0];
    assert_eq!(plain.scheme.protocol(), Some(Protocol::Stomp));
    assert_eq!(plain.options.stomp, StompOptions::default());
    assert_eq!(plain.options.stomp.max_data_length_bytes, 104_857_600);
    assert_eq!(plain.options.stomp.max_frame_size_bytes, None);
    assert_eq!(plain.options.stomp.hb_grace_period_multiplier, 1.0);
    assert_eq!(plain.options.stomp.default_heart_beat, HeartBeat::default());
    assert_eq!(plain.options.connect_attempt_timeout_ms, Some(30_000));
    assert!(
        !plain.options.allow_link_stealing,
        "ActiveMQ steals links on MQTT connectors only"
    );
}

#[test]
fn every_stomp_option_with_its_unit() {
    let config = valid(load(&connectors(&[
        "stomp+nio://0.0.0.0:0?transport.defaultHeartBeat=5000,10000\
         &amp;transport.hbGracePeriodMultiplier=1.5&amp;transport.maxDataLength=1024\
         &amp;wireFormat.maxFrameSize=4096&amp;maximumConnections=7\
         &amp;transport.connectAttemptTimeout=2000&amp;transport.useInactivityMonitor=false\
         &amp;allowLinkStealing=true",
    ])));
    let o = &config.listeners[0].options;
    assert_eq!(
        o.stomp,
        StompOptions {
            default_heart_beat: HeartBeat {
                client_sends_ms: 5000,
                client_wants_ms: 10_000
            },
            hb_grace_period_multiplier: 1.5,
            max_data_length_bytes: 1024,
            max_frame_size_bytes: Some(4096),
        }
    );
    assert_eq!(
        o.max_frame_size_bytes,
        ListenerOptions::default().max_frame_size_bytes,
        "the MQTT limit is untouched on a STOMP connector"
    );
    assert_eq!(o.maximum_connections, Some(7));
    assert_eq!(o.connect_attempt_timeout_ms, Some(2000));
    assert!(!o.use_inactivity_monitor && o.allow_link_stealing);
    let inactivity = config.listeners[0].inactivity;
    assert_eq!(inactivity.connect_attempt_timeout, None, "monitor off");
}

#[test]
fn websocket_connectors_take_both_protocols_options() {
    let config = valid(load(&connectors(&[
        "ws://0.0.0.0:0?transport.defaultHeartBeat=0,2000&amp;transport.defaultKeepAlive=60000\
         &amp;wireFormat.maxFrameSize=4096",
    ])));
    let l = &config.listeners[0];
    assert_eq!(l.scheme.protocol(), None);
    assert!(l.scheme.serves(Protocol::Mqtt) && l.scheme.serves(Protocol::Stomp));
    assert_eq!(l.options.stomp.default_heart_beat.client_wants_ms, 2000);
    assert_eq!(l.options.default_keep_alive_ms, 60_000);
    assert_eq!(l.options.max_frame_size_bytes, 4096);
    assert_eq!(l.options.stomp.max_frame_size_bytes, Some(4096));
    assert!(l.options.allow_link_stealing);
}

#[test]
fn options_of_the_other_protocol_are_warned_and_ignored() {
    let loaded = load(&connectors(&[
        "stomp://0.0.0.0:0?transport.defaultKeepAlive=60000&amp;transport.publishDollarTopics=true",
        "mqtt://0.0.0.0:0?transport.defaultHeartBeat=1000,1000&amp;transport.maxDataLength=10",
    ]));
    let d = &loaded.diagnostics;
    assert!(!d.has_errors(), "{d}");
    assert!(has(
        d,
        "option `transport.defaultKeepAlive` is an MQTT option: not acted on by a stomp:// connector"
    ));
    assert!(has(d, "`transport.publishDollarTopics` is an MQTT option"));
    assert!(has(
        d,
        "option `transport.defaultHeartBeat` is a STOMP option: not acted on by a mqtt:// connector"
    ));
    assert!(has(d, "`transport.maxDataLength` is a STOMP option"));
    let config = valid(loaded);
    assert_eq!(config.listeners[0].options.default_keep_alive_ms, 0);
    assert!(!config.listeners[0].options.publish_dollar_topics);
    assert_eq!(config.listeners[1].options.stomp, StompOptions::default());
}

#[test]
fn bad_stomp_option_values_are_errors() {
    for (option, needle) in [
        ("transport.defaultHeartBeat=1000", "is not two numbers"),
        (
            "transport.defaultHeartBeat=a,0",
            "is not a number of milliseconds",
        ),
        (
            "transport.hbGracePeriodMultiplier=0",
            "expected a positive number",
        ),
        (
            "transport.hbGracePeriodMultiplier=NaN",
            "expected a positive number",
        ),
        ("transport.maxDataLength=3000000000", "up to 2147483647"),
        ("transport.maxDataLength=100mb", "positive number of bytes"),
    ] {
        let loaded = load(&connectors(&[&format!("stomp://0.0.0.0:0?{option}")]));
        assert!(loaded.diagnostics.has_errors(), "{option}");
        assert!(
            has(&loaded.diagnostics, needle),
            "{option}: {}",
            loaded.diagnostics
        );
    }
    let low = load(&connectors(&[
        "stomp://0.0.0.0:0?transport.hbGracePeriodMultiplier=0.5",
    ]));
    assert!(!low.diagnostics.has_errors());
    assert!(has(&low.diagnostics, "is below 1"));
}

#[test]
fn stomp_over_websocket_schemes_are_refused_as_activemq_does() {
    for (uri, served_on) in [
        ("stomp+ws://0.0.0.0:61614", "ws://"),
        ("stomp+wss://0.0.0.0:61614", "wss://"),
    ] {
        let loaded = load(&connectors(&[uri]));
        let d = &loaded.diagnostics;
        assert!(d.has_errors(), "{uri}");
        let error =
            d.0.iter()
                .find(|x| x.message.contains("ActiveMQ has no"))
                .unwrap_or_else(|| panic!("{uri}: {d}"));
        assert!(
            error.hint.as_deref().is_some_and(|h| h.contains(served_on)),
            "{uri}: {error:?}"
        );
    }
}

#[test]
fn stomp_and_mqtt_connectors_clash_on_one_port() {
    let loaded = load(&connectors(&[
        "mqtt://0.0.0.0:61613",
        "stomp://0.0.0.0:61613",
    ]));
    assert!(has(&loaded.diagnostics, "clashes with connector `c0`"));
}

#[test]
fn client_auth_on_plain_stomp_is_warned() {
    let loaded = load(&connectors(&["stomp://0.0.0.0:0?needClientAuth=true"]));
    assert!(has(
        &loaded.diagnostics,
        "needClientAuth has no effect on a stomp:// connector without TLS"
    ));
    let tls = load(&connectors(&["stomp+ssl://0.0.0.0:0?needClientAuth=true"]));
    assert!(!has(&tls.diagnostics, "has no effect"));
}

#[test]
fn a_stomp_only_file_has_no_missing_connector_warning() {
    let loaded = load(&connectors(&["stomp://0.0.0.0:0"]));
    assert!(!has(&loaded.diagnostics, "clients cannot connect"));
    assert!(!has(&loaded.diagnostics, "not served"));
}
