//! `metrics::render` on a running broker during real traffic: MQTT (rumqttc, raw clients) and
//! STOMP (raw frames over TCP), refusals, authentication failures, reloads and the store.

use std::time::Duration;

use rumqttc::QoS;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::parse::{parse, Exposition};
use crate::support::live::LiveBroker;
use crate::support::{options, BrokerXml, Client, TestBroker, STEP};

pub fn scrape_core(core: &ferromq::broker::runtime::BrokerCore) -> Exposition {
    let text = ferromq::metrics::render(core);
    parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn scrape(broker: &TestBroker) -> Exposition {
    scrape_core(broker.handle.core())
}

/// Scrape until `ready` holds (the broker counts a close after the client saw it), bounded.
async fn scrape_until(
    core: &ferromq::broker::runtime::BrokerCore,
    what: &str,
    ready: impl Fn(&Exposition) -> bool,
) -> Exposition {
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let now = scrape_core(core);
        if ready(&now) {
            return now;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not reached within {STEP:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

const MQTT: [(&str, &str); 2] = [("listener", "mqtt"), ("protocol", "mqtt")];

fn with<'a>(base: &[(&'a str, &'a str)], more: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    base.iter().chain(more).copied().collect()
}

#[tokio::test]
async fn connections_and_messages_by_qos_move_with_mqtt_traffic() {
    let broker = TestBroker::default().await;
    let before = scrape(&broker);
    assert_eq!(before.value("ferromq_connections", &MQTT), 0.0);
    assert_eq!(
        before.value("ferromq_sessions", &[("state", "online")]),
        0.0
    );

    let mut sub = Client::connect(broker.addr, "sub").await;
    sub.subscribe("m/#", QoS::ExactlyOnce).await;
    let mut publisher = Client::connect(broker.addr, "pub").await;
    publisher
        .publish("m/a", QoS::AtMostOnce, false, b"12345")
        .await;
    publisher
        .publish("m/a", QoS::AtLeastOnce, false, b"1234567")
        .await;
    publisher
        .publish("m/a", QoS::ExactlyOnce, false, b"123")
        .await;
    for _ in 0..3 {
        sub.next_publish().await;
    }

    let now = scrape(&broker);
    assert_eq!(now.value("ferromq_connections", &MQTT), 2.0);
    assert_eq!(now.value("ferromq_connections_opened_total", &MQTT), 2.0);
    assert_eq!(
        now.value("ferromq_connections_established_total", &MQTT),
        2.0
    );
    assert_eq!(
        now.value(
            "ferromq_connections_accepted_total",
            &[("listener", "mqtt")]
        ),
        2.0
    );
    for (qos, bytes) in [("0", 5.0), ("1", 7.0), ("2", 3.0)] {
        let q = [("qos", qos)];
        assert_eq!(
            now.value("ferromq_messages_received_total", &q),
            1.0,
            "qos {qos}"
        );
        assert_eq!(now.value("ferromq_payload_received_bytes_total", &q), bytes);
        assert_eq!(
            now.value("ferromq_messages_sent_total", &q),
            1.0,
            "qos {qos}"
        );
        assert_eq!(now.value("ferromq_payload_sent_bytes_total", &q), bytes);
    }
    assert_eq!(now.value("ferromq_subscriptions", &[]), 1.0);
    assert_eq!(now.value("ferromq_sessions", &[("state", "online")]), 2.0);

    publisher.disconnect().await;
    sub.kill();
    let closed = scrape_until(broker.handle.core(), "both closes counted", |e| {
        e.value("ferromq_connections", &MQTT) == 0.0
    })
    .await;
    let reason = |r| with(&MQTT, &[("reason", r)]);
    assert_eq!(
        closed.value(
            "ferromq_connections_closed_total",
            &reason("client_disconnect")
        ),
        1.0
    );
    assert_eq!(
        closed.value("ferromq_connections_closed_total", &reason("peer_closed")),
        1.0
    );
    assert_eq!(
        closed.value("ferromq_sessions", &[("state", "online")]),
        0.0
    );
    broker.shutdown().await;
}

fn secured_xml(connector_options: &str) -> String {
    BrokerXml::new()
        .plugins(
            r#"<simpleAuthenticationPlugin>
        <users><authenticationUser username="alice" password="secret" groups="g"/></users>
      </simpleAuthenticationPlugin>"#,
        )
        .connector("mqtt", &format!("mqtt://127.0.0.1:0{connector_options}"))
        .build()
}

#[tokio::test]
async fn refusals_and_authentication_failures_are_counted_by_reason() {
    let broker = TestBroker::from_xml(&secured_xml("?maximumConnections=1")).await;
    let mut wrong = options(broker.addr, "intruder");
    wrong.set_credentials("alice", "guess");
    let refused = Client::try_connect_with(wrong).await;
    assert!(refused.is_err(), "a wrong password is refused");
    let mut anonymous = options(broker.addr, "nobody");
    anonymous.set_clean_session(true);
    assert!(Client::try_connect_with(anonymous).await.is_err());

    let after_auth = scrape_until(broker.handle.core(), "refusals counted", |e| {
        e.value("ferromq_connections", &MQTT) == 0.0
    })
    .await;
    let refused = |r| with(&MQTT, &[("reason", r)]);
    assert_eq!(
        after_auth.value(
            "ferromq_connections_refused_total",
            &refused("bad_credentials")
        ),
        1.0
    );
    assert_eq!(
        after_auth.value(
            "ferromq_connections_refused_total",
            &refused("not_authorized")
        ),
        1.0,
        "no user name: not authorized"
    );
    assert_eq!(
        after_auth.value(
            "ferromq_auth_failures_total",
            &[("reason", "bad_credentials")]
        ),
        1.0
    );
    assert_eq!(
        after_auth.value(
            "ferromq_auth_failures_total",
            &[("reason", "not_authorized")]
        ),
        1.0
    );
    assert_eq!(
        after_auth.value("ferromq_connections_established_total", &MQTT),
        0.0
    );

    // One connection is the connector's maximum: the next socket is closed at accept.
    let alice = Client::login(broker.addr, "alice-1", "alice", "secret").await;
    let mut extra = TcpStream::connect(broker.addr).await.expect("connect");
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(STEP, extra.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "closed at accept");
    let now = scrape(&broker);
    assert_eq!(
        now.value(
            "ferromq_connections_refused_total",
            &refused("max_connections")
        ),
        1.0
    );
    assert_eq!(now.value("ferromq_connections", &MQTT), 1.0);
    alice.disconnect().await;
    broker.shutdown().await;
}

/// Read STOMP frames until one starting with `command` arrives.
async fn read_frame(stream: &mut TcpStream, command: &str) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    tokio::time::timeout(STEP, async {
        loop {
            let n = stream.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed before {command}: {seen:?}");
            seen.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&seen);
            if text.trim_start_matches('\n').starts_with(command) && seen.contains(&0) {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {command} frame"));
}

#[tokio::test]
async fn stomp_connections_and_sends_are_counted() {
    let xml = BrokerXml::new()
        .connector("mqtt", "mqtt://127.0.0.1:0")
        .connector("stomp", "stomp://127.0.0.1:0")
        .build();
    let broker = TestBroker::from_xml(&xml).await;
    let stomp_addr = broker.handle.listener_addrs()[1].1;
    let mut stomp = TcpStream::connect(stomp_addr).await.expect("connect");
    stomp
        .write_all(b"CONNECT\naccept-version:1.2\nhost:localhost\n\n\0")
        .await
        .expect("write");
    read_frame(&mut stomp, "CONNECTED").await;
    stomp
        .write_all(b"SEND\ndestination:/topic/t\nreceipt:1\n\nhello\0")
        .await
        .expect("write");
    read_frame(&mut stomp, "RECEIPT").await;
    let stomp_labels = [("listener", "stomp"), ("protocol", "stomp")];
    let now = scrape(&broker);
    assert_eq!(now.value("ferromq_connections", &stomp_labels), 1.0);
    assert_eq!(
        now.value("ferromq_messages_received_total", &[("qos", "0")]),
        1.0,
        "a non-persistent SEND is QoS 0"
    );
    assert_eq!(
        now.value("ferromq_payload_received_bytes_total", &[("qos", "0")]),
        5.0
    );
    stomp
        .write_all(b"DISCONNECT\nreceipt:2\n\n\0")
        .await
        .expect("write");
    read_frame(&mut stomp, "RECEIPT").await;
    let closed = scrape_until(broker.handle.core(), "STOMP close counted", |e| {
        e.value("ferromq_connections", &stomp_labels) == 0.0
    })
    .await;
    assert_eq!(
        closed.value(
            "ferromq_connections_closed_total",
            &with(&stomp_labels, &[("reason", "client_disconnect")])
        ),
        1.0
    );
    for (command, n) in [("SEND", 1.0), ("DISCONNECT", 1.0), ("SUBSCRIBE", 0.0)] {
        assert_eq!(
            closed.value(
                "ferromq_stomp_frames_received_total",
                &[("command", command)]
            ),
            n,
            "{command}"
        );
    }
    assert_eq!(
        closed.value("ferromq_connections_opened_total", &MQTT),
        0.0,
        "the MQTT connector saw nothing"
    );
    broker.shutdown().await;
}

/// `ferromq_sessions` counts MQTT sessions only, as the console's overview and /api/sessions
/// do: STOMP's topic subscriptions are sessions inside the broker, and its durable ones are
/// counted apart, online while their client consumes them, offline once it is gone.
#[tokio::test]
async fn stomp_subscriptions_are_not_counted_as_mqtt_sessions() {
    let xml = BrokerXml::new()
        .connector("mqtt", "mqtt://127.0.0.1:0")
        .connector("stomp", "stomp://127.0.0.1:0")
        .build();
    let broker = TestBroker::from_xml(&xml).await;
    let _mqtt = Client::connect(broker.addr, "mqtt-client").await;
    let stomp_addr = broker.handle.listener_addrs()[1].1;
    let mut stomp = TcpStream::connect(stomp_addr).await.expect("connect");
    stomp
        .write_all(b"CONNECT\naccept-version:1.2\nhost:localhost\nclient-id:app\n\n\0")
        .await
        .expect("write");
    read_frame(&mut stomp, "CONNECTED").await;
    stomp
        .write_all(
            b"SUBSCRIBE\nid:1\ndestination:/topic/plain\n\n\0\
              SUBSCRIBE\nid:2\ndestination:/topic/kept\nactivemq.subscriptionName:orders\n\
              receipt:1\n\n\0",
        )
        .await
        .expect("write");
    read_frame(&mut stomp, "RECEIPT").await;
    let sessions = |e: &Exposition, state| e.value("ferromq_sessions", &[("state", state)]);
    let durable =
        |e: &Exposition, state| e.value("ferromq_stomp_durable_subscriptions", &[("state", state)]);
    let now = scrape(&broker);
    assert_eq!(
        (sessions(&now, "online"), sessions(&now, "offline")),
        (1.0, 0.0),
        "the MQTT client's session only"
    );
    assert_eq!(
        (durable(&now, "online"), durable(&now, "offline")),
        (1.0, 0.0)
    );
    stomp
        .write_all(b"DISCONNECT\nreceipt:2\n\n\0")
        .await
        .expect("write");
    read_frame(&mut stomp, "RECEIPT").await;
    let gone = scrape_until(broker.handle.core(), "durable subscription offline", |e| {
        durable(e, "offline") == 1.0
    })
    .await;
    assert_eq!(durable(&gone, "online"), 0.0);
    assert_eq!(
        (sessions(&gone, "online"), sessions(&gone, "offline")),
        (1.0, 0.0)
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn reloads_are_counted_with_their_last_result() {
    let xml = BrokerXml::new().mqtt(0, &[]).build();
    let mut live = LiveBroker::start(&xml, true).await;
    let before = scrape_core(live.handle.core());
    assert_eq!(
        before.value("ferromq_reloads_total", &[("result", "ok")]),
        0.0
    );
    assert_eq!(
        before.value("ferromq_reload_last_result", &[("result", "none")]),
        1.0
    );
    live.edit(&xml.replace("brokerName=", "useJmx=\"false\" brokerName="))
        .await;
    let ok = scrape_core(live.handle.core());
    assert_eq!(ok.value("ferromq_reloads_total", &[("result", "ok")]), 1.0);
    assert_eq!(
        ok.value("ferromq_reload_last_result", &[("result", "ok")]),
        1.0
    );
    live.edit("<beans><broker").await;
    let failed = scrape_core(live.handle.core());
    assert_eq!(
        failed.value("ferromq_reloads_total", &[("result", "failed")]),
        1.0
    );
    assert_eq!(
        failed.value("ferromq_reload_last_result", &[("result", "failed")]),
        1.0
    );
    assert!(failed.value("ferromq_reload_last_timestamp_seconds", &[]) > 1.7e9);
    live.shutdown().await;
}

#[tokio::test]
async fn store_commits_fill_the_fsync_histogram() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker =
        TestBroker::from_xml(&BrokerXml::new().kahadb(dir.path()).mqtt(0, &[]).build()).await;
    let before = scrape(&broker);
    let count_before = before.value("ferromq_store_commit_seconds_count", &[]);
    let mut sub_options = options(broker.addr, "durable");
    sub_options.set_clean_session(false);
    let mut sub = Client::connect_with(sub_options).await;
    sub.subscribe("d/#", QoS::AtLeastOnce).await;
    let mut publisher = Client::connect(broker.addr, "p").await;
    for _ in 0..5 {
        publisher
            .publish("d/x", QoS::AtLeastOnce, false, b"persist")
            .await;
    }
    for _ in 0..5 {
        sub.next_publish().await;
    }
    let after = scrape(&broker);
    let count_after = after.value("ferromq_store_commit_seconds_count", &[]);
    assert!(
        count_after >= count_before + 1.0,
        "commits observed: {count_before} -> {count_after}"
    );
    assert_eq!(
        after.value("ferromq_store_commit_seconds_bucket", &[("le", "+Inf")]),
        count_after
    );
    assert!(after.value("ferromq_store_commits_total", &[]) >= count_after);
    assert!(after.value("ferromq_store_usage_bytes", &[]) >= 0.0);
    sub.disconnect().await;
    publisher.disconnect().await;
    broker.shutdown().await;
}

#[tokio::test]
async fn tls_handshakes_are_counted_per_connector_by_result() {
    use crate::support::tls::{tls_connect, tls_connector, Ca};
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("metrics-ca");
    let pem = dir.path().join("server.pem");
    std::fs::write(&pem, ca.server(1).combined_pem()).expect("write server.pem");
    let xml = BrokerXml::new()
        .key_store(&pem.display().to_string())
        .connector("tls", "mqtt+ssl://127.0.0.1:0")
        .build();
    let broker = TestBroker::from_xml(&xml).await;
    let result = |r| [("listener", "tls"), ("result", r)];

    let ok = tls_connect(broker.addr, &tls_connector(&ca, None))
        .await
        .expect("TLS handshake");
    let counted = scrape_until(broker.handle.core(), "the handshake counted", |e| {
        e.value("ferromq_tls_handshakes_total", &result("ok")) == 1.0
    })
    .await;
    assert_eq!(
        counted.value("ferromq_tls_handshakes_total", &result("failed")),
        0.0
    );
    drop(ok);

    // Plain text to a TLS connector: the handshake fails and the socket is refused.
    let mut plain = TcpStream::connect(broker.addr).await.expect("connect");
    plain
        .write_all(b"GET / HTTP/1.0\r\n\r\n")
        .await
        .expect("write");
    let failed = scrape_until(broker.handle.core(), "the failure counted", |e| {
        e.value("ferromq_tls_handshakes_total", &result("failed")) == 1.0
    })
    .await;
    assert_eq!(
        failed.value(
            "ferromq_connections_refused_total",
            &[
                ("listener", "tls"),
                ("protocol", "mqtt"),
                ("reason", "handshake_failed")
            ]
        ),
        1.0
    );
    assert_eq!(
        failed.value("ferromq_connections_accepted_total", &[("listener", "tls")]),
        2.0
    );
    broker.shutdown().await;
}
