//! The STOMP exchange itself: version negotiation, login, receipts, ERROR frames (and that a
//! bad frame closes only its own connection), heart-beats, transactions, authorization.

use std::time::Duration;

use ferromq::protocol::QoS;

use crate::support::RawClient;

const SECURITY: &str = r#"
    <plugins>
      <simpleAuthenticationPlugin>
        <users>
          <authenticationUser username="admin" password="secret" groups="admins"/>
          <authenticationUser username="sensor" password="s3nsor" groups="devices"/>
        </users>
      </simpleAuthenticationPlugin>
      <authorizationPlugin><map><authorizationMap><authorizationEntries>
        <authorizationEntry topic=">" read="admins" write="admins" admin="admins"/>
        <authorizationEntry topic="sensors.>" read="admins" write="devices" admin="devices"/>
      </authorizationEntries></authorizationMap></map></authorizationPlugin>
    </plugins>"#;

#[tokio::test]
async fn connected_names_version_session_server_and_heart_beat() {
    let env = crate::broker().await;
    let mut c = env.stomp().await;
    let f = c
        .connect(&[("accept-version", "1.0,1.1,1.2"), ("heart-beat", "0,0")])
        .await;
    assert_eq!(f.header("version"), Some("1.2"));
    assert!(f.header("session").is_some());
    assert!(f
        .header("server")
        .is_some_and(|s| s.starts_with("ferromq/")));
    assert_eq!(f.header("heart-beat"), Some("0,0"));

    let mut old = env.stomp().await;
    old.send("CONNECT", &[("accept-version", "1.0,1.1")], "")
        .await;
    assert_eq!(old.recv().await.header("version"), Some("1.1"));
}

#[tokio::test]
async fn no_common_version_is_an_error_listing_ours() {
    let env = crate::broker().await;
    let mut c = env.stomp().await;
    c.send("CONNECT", &[("accept-version", "2.0")], "").await;
    let e = c.recv().await;
    assert_eq!(e.command, "ERROR");
    assert_eq!(e.header("version"), Some("1.0,1.1,1.2"));
    c.expect_closed_within(crate::support::STEP).await;
}

#[tokio::test]
async fn a_wrong_passcode_gets_an_error_and_the_connection_closes() {
    let env = crate::broker_with(SECURITY).await;
    let mut c = env.stomp().await;
    c.send(
        "CONNECT",
        &[
            ("accept-version", "1.2"),
            ("login", "admin"),
            ("passcode", "guess"),
            ("receipt", "c1"),
        ],
        "",
    )
    .await;
    let e = c.recv().await;
    assert_eq!(e.command, "ERROR");
    assert_eq!(
        e.header("message"),
        Some("User name [admin] or password is invalid.")
    );
    assert_eq!(e.header("receipt-id"), Some("c1"));
    c.expect_closed_within(crate::support::STEP).await;

    let mut ok = env.stomp().await;
    ok.connect(&[("login", "admin"), ("passcode", "secret")])
        .await;
}

#[tokio::test]
async fn topic_authorization_refuses_with_an_error_naming_the_destination() {
    let env = crate::broker_with(SECURITY).await;
    let mut sensor = env
        .connected(&[("login", "sensor"), ("passcode", "s3nsor")])
        .await;
    sensor
        .send(
            "SEND",
            &[("destination", "/topic/sensors.t1"), ("receipt", "ok")],
            "21.5",
        )
        .await;
    assert_eq!(sensor.recv().await.header("receipt-id"), Some("ok"));
    sensor
        .send(
            "SUBSCRIBE",
            &[
                ("destination", "/topic/sensors.>"),
                ("id", "1"),
                ("receipt", "r"),
            ],
            "",
        )
        .await;
    let e = sensor.recv().await;
    assert_eq!(e.command, "ERROR");
    assert_eq!(
        e.header("message"),
        Some("User sensor is not authorized to read from: topic://sensors.>")
    );
    assert_eq!(e.header("receipt-id"), Some("r"));
    sensor.expect_closed_within(crate::support::STEP).await;

    let mut sensor = env
        .connected(&[("login", "sensor"), ("passcode", "s3nsor")])
        .await;
    sensor
        .send("SEND", &[("destination", "/topic/other")], "x")
        .await;
    let e = sensor.recv().await;
    assert_eq!(e.command, "ERROR");
    assert_eq!(
        e.header("message"),
        Some("User sensor is not authorized to write to: topic://other")
    );
}

#[tokio::test]
async fn a_malformed_frame_closes_only_its_connection() {
    let env = crate::broker().await;
    let mut good = env.connected(&[]).await;
    good.send(
        "SUBSCRIBE",
        &[("destination", "/topic/ok"), ("id", "1"), ("receipt", "r")],
        "",
    )
    .await;
    assert_eq!(good.recv().await.command, "RECEIPT");
    let mut bad = env.connected(&[]).await;
    bad.send_raw(b"BOGUS\n\n\0").await;
    let e = bad.recv().await;
    assert_eq!(e.command, "ERROR");
    assert!(
        e.header("message").is_some_and(|m| m.contains("BOGUS")),
        "{e:?}"
    );
    bad.expect_closed_within(crate::support::STEP).await;

    let mut bad = env.connected(&[]).await;
    bad.send("SEND", &[("receipt", "s")], "no destination")
        .await;
    let e = bad.recv().await;
    assert_eq!(e.command, "ERROR");
    assert_eq!(e.header("receipt-id"), Some("s"));
    bad.expect_closed_within(crate::support::STEP).await;

    let mut sender = env.connected(&[]).await;
    sender
        .send("SEND", &[("destination", "/topic/ok")], "still here")
        .await;
    assert_eq!(good.recv().await.body, b"still here");
}

/// A frame refused by its `content-length` before its body is read (a number above
/// `maxDataLength`, or too large to be a number at all) is named by the ERROR's `receipt-id`,
/// as every other refusal of a frame with a `receipt` is (STOMP 1.2 "ERROR").
#[tokio::test]
async fn a_content_length_refused_before_the_body_names_its_receipt() {
    let env = crate::broker().await;
    for length in ["99999999999999999999999999", "104857601"] {
        let mut bad = env.connected(&[]).await;
        bad.send_raw(
            format!(
                "SEND\ndestination:/queue/q\nreceipt:big-{length}\ncontent-length:{length}\n\n"
            )
            .as_bytes(),
        )
        .await;
        let e = bad.recv().await;
        assert_eq!(e.command, "ERROR");
        assert!(
            e.header("message")
                .is_some_and(|m| m.contains("maxDataLength")),
            "{e:?}"
        );
        let receipt = format!("big-{length}");
        assert_eq!(e.header("receipt-id"), Some(receipt.as_str()), "{e:?}");
        bad.expect_closed_within(crate::support::STEP).await;
    }
}

#[tokio::test]
async fn an_mqtt_client_on_the_stomp_port_is_refused_at_once() {
    let env = crate::broker().await;
    let mut mqtt = env.stomp().await;
    // An MQTT 3.1.1 CONNECT (client id "x", keep-alive 60): it holds no LF, so a decoder
    // waiting for the command line would wait until the connect timeout.
    mqtt.send_raw(b"\x10\x0d\x00\x04MQTT\x04\x02\x00\x3c\x00\x01x")
        .await;
    let e = mqtt.recv().await;
    assert_eq!(e.command, "ERROR");
    assert!(
        e.header("message")
            .is_some_and(|m| m.contains("Not a STOMP frame")),
        "{e:?}"
    );
    mqtt.expect_closed_within(crate::support::STEP).await;
}

#[tokio::test]
async fn wildcard_queues_selectors_and_unserved_activemq_headers_are_refused() {
    let env = crate::broker().await;
    for headers in [
        vec![("destination", "/queue/q.>"), ("id", "1")],
        vec![
            ("destination", "/topic/t"),
            ("id", "1"),
            // An invalid selector (valid ones are served: selectors.rs).
            ("selector", "a ="),
        ],
        // An unknown ack mode is `auto`, as in ActiveMQ (subscribe_values.rs).
    ] {
        let mut c = env.connected(&[]).await;
        c.send("SUBSCRIBE", &headers, "").await;
        let e = c.recv().await;
        assert_eq!(e.command, "ERROR", "{headers:?}");
        c.expect_closed_within(crate::support::STEP).await;
    }
    let mut c = env.connected(&[]).await;
    c.send(
        "SEND",
        &[("destination", "/topic/t"), ("AMQ_SCHEDULED_DELAY", "1000")],
        "later",
    )
    .await;
    let e = c.recv().await;
    assert_eq!(e.command, "ERROR");
    assert!(e
        .header("message")
        .is_some_and(|m| m.contains("AMQ_SCHEDULED_DELAY")));
}

#[tokio::test]
async fn a_silent_client_is_closed_after_its_heart_beat_and_grace() {
    let env = crate::broker().await;
    let mut c = env.stomp().await;
    let f = c.connect(&[("heart-beat", "200,0")]).await;
    assert_eq!(f.header("heart-beat"), Some("0,200"));
    let start = tokio::time::Instant::now();
    c.expect_closed_within(Duration::from_secs(3)).await;
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(200),
        "closed after {took:?}, before 200 ms x hbGracePeriodMultiplier (1.0)"
    );

    // A client that keeps sending heart-beats stays, and gets ours.
    let mut alive = env.stomp().await;
    let f = alive.connect(&[("heart-beat", "200,100")]).await;
    assert_eq!(f.header("heart-beat"), Some("100,200"));
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        alive.send_raw(b"\n").await;
    }
    alive
        .send(
            "SEND",
            &[("destination", "/topic/hb"), ("receipt", "still")],
            "",
        )
        .await;
    assert_eq!(alive.recv().await.header("receipt-id"), Some("still"));
}

#[tokio::test]
async fn an_aborted_transaction_delivers_nothing_and_a_committed_one_everything() {
    let env = crate::broker().await;
    let mut mqtt = RawClient::connected_v5(env.mqtt(), "sub").await;
    mqtt.subscribe(1, &[("tx/#", QoS::AtLeastOnce)]).await;
    let mut c = env.connected(&[]).await;
    c.send("BEGIN", &[("transaction", "t1")], "").await;
    c.send(
        "SEND",
        &[("destination", "/topic/tx.a"), ("transaction", "t1")],
        "dropped",
    )
    .await;
    c.send("ABORT", &[("transaction", "t1"), ("receipt", "a")], "")
        .await;
    assert_eq!(c.recv().await.header("receipt-id"), Some("a"));
    assert!(mqtt.recv_within(Duration::from_millis(200)).await.is_none());

    c.send("BEGIN", &[("transaction", "t2")], "").await;
    for body in ["one", "two"] {
        c.send(
            "SEND",
            &[
                ("destination", "/topic/tx.b"),
                ("transaction", "t2"),
                ("persistent", "true"),
            ],
            body,
        )
        .await;
    }
    assert!(
        mqtt.recv_within(Duration::from_millis(200)).await.is_none(),
        "nothing before COMMIT"
    );
    c.send("COMMIT", &[("transaction", "t2"), ("receipt", "c")], "")
        .await;
    assert_eq!(c.recv().await.header("receipt-id"), Some("c"));
    assert_eq!(mqtt.recv_publish().await.payload.as_ref(), b"one");
    assert_eq!(mqtt.recv_publish().await.payload.as_ref(), b"two");

    c.send("COMMIT", &[("transaction", "t2")], "").await;
    let e = c.recv().await;
    assert_eq!(e.command, "ERROR", "t2 is over");
}

#[tokio::test]
async fn heart_beats_are_sent_to_a_client_that_asks_and_silent_sockets_time_out() {
    let env = crate::broker().await;
    let mut c = env.stomp().await;
    let f = c.connect(&[("heart-beat", "0,100")]).await;
    assert_eq!(f.header("heart-beat"), Some("100,0"));
    let beats = c.heart_beats_within(Duration::from_millis(650)).await;
    assert!(
        (3..=8).contains(&beats),
        "{beats} heart-beats in 650 ms at 100 ms"
    );

    // A socket that never sends CONNECT is closed after transport.connectAttemptTimeout.
    let xml = crate::support::BrokerXml::new()
        .connector(
            "stomp",
            "stomp://127.0.0.1:0?transport.connectAttemptTimeout=300",
        )
        .build();
    let broker = crate::support::TestBroker::from_xml(&xml).await;
    let mut idle = crate::client::StompClient::tcp(broker.addr).await;
    let start = tokio::time::Instant::now();
    idle.expect_closed_within(crate::support::STEP).await;
    assert!(
        start.elapsed() >= Duration::from_millis(250),
        "{:?}",
        start.elapsed()
    );
}
