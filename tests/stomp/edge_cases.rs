//! Edge cases of the STOMP connection a user's evaluation found, each fixed to behave as
//! ActiveMQ 5.17 does (or as docs/compatibility.md says where ferromq differs on purpose).

use std::time::Duration;

use bytes::Bytes;
use ferromq::protocol::{Packet, Properties, Publish, QoS};

use crate::client::StompClient;
use crate::support::{RawClient, STEP};

async fn subscribed(stomp: &mut StompClient, destination: &str, id: &str) {
    stomp
        .send(
            "SUBSCRIBE",
            &[("destination", destination), ("id", id), ("receipt", id)],
            "",
        )
        .await;
    let r = stomp.recv().await;
    assert_eq!(r.command, "RECEIPT", "{r:?}");
}

/// MQTT topics with empty levels are `/topic/.devices.x` and `/topic/a..b` for STOMP, which
/// may subscribe and send to them (ActiveMQ accepts both names).
#[tokio::test]
async fn topics_with_empty_levels_are_usable_from_stomp() {
    let env = crate::broker().await;
    let mut stomp = env.connected(&[]).await;
    subscribed(&mut stomp, "/topic/.devices.x", "lead").await;
    subscribed(&mut stomp, "/topic/a..b", "mid").await;
    let mut mqtt = RawClient::connected_v5(env.mqtt(), "empty-levels").await;
    mqtt.subscribe(1, &[("/devices/x", QoS::AtMostOnce)]).await;
    for topic in ["/devices/x", "a//b"] {
        mqtt.send(crate::support::publish_packet(
            topic,
            topic.as_bytes(),
            QoS::AtMostOnce,
            None,
            false,
        ))
        .await;
        if topic == "/devices/x" {
            // The MQTT subscriber gets its own publish too.
            assert_eq!(mqtt.recv_publish().await.topic, "/devices/x");
        }
        let m = stomp.recv().await;
        assert_eq!(m.command, "MESSAGE", "{m:?}");
        assert_eq!(m.body, topic.as_bytes());
    }
    stomp
        .send(
            "SEND",
            &[("destination", "/topic/.devices.x"), ("receipt", "s")],
            "from stomp",
        )
        .await;
    let mut saw_receipt = false;
    let mut saw_message = false;
    while !(saw_receipt && saw_message) {
        let f = stomp.recv().await;
        match f.command.as_str() {
            "RECEIPT" => saw_receipt = true,
            "MESSAGE" => {
                assert_eq!(f.header("destination"), Some("/topic/.devices.x"));
                saw_message = true;
            }
            other => panic!("unexpected {other}: {f:?}"),
        }
    }
    let p = mqtt.recv_publish().await;
    assert_eq!(p.topic, "/devices/x");
    assert_eq!(p.payload.as_ref(), b"from stomp");
}

/// `expires`, `priority` (and `timestamp`) that are not numbers end the connection with an
/// ERROR, as ActiveMQ's `NumberFormatException` does; `persistent:maybe` is non-persistent
/// there and here; a body longer than `content-length` is an ERROR.
#[tokio::test]
async fn send_headers_that_are_not_numbers_are_errors() {
    let env = crate::broker().await;
    for (name, value) in [("expires", "abc"), ("priority", "x"), ("timestamp", "1.5")] {
        let mut stomp = env.connected(&[]).await;
        stomp
            .send(
                "SEND",
                &[("destination", "/topic/a"), (name, value), ("receipt", "r")],
                "x",
            )
            .await;
        let e = stomp.recv().await;
        assert_eq!(e.command, "ERROR", "{name}:{value} -> {e:?}");
        assert_eq!(e.header("receipt-id"), Some("r"));
        assert!(
            e.header("message").is_some_and(|m| m.contains(value)),
            "{e:?}"
        );
        stomp.expect_closed_within(STEP).await;
    }
    let mut stomp = env.connected(&[]).await;
    stomp
        .send(
            "SEND",
            &[
                ("destination", "/topic/a"),
                ("persistent", "maybe"),
                ("expires", "0"),
                ("priority", "9"),
                ("receipt", "ok"),
            ],
            "x",
        )
        .await;
    assert_eq!(stomp.recv().await.header("receipt-id"), Some("ok"));
    stomp
        .send_raw(b"SEND\ndestination:/topic/a\ncontent-length:1\nreceipt:r\n\nxyz\0")
        .await;
    assert_eq!(stomp.recv().await.command, "ERROR");
    stomp.expect_closed_within(STEP).await;
}

/// Over WebSocket the echoed sub-protocol is the highest STOMP version offered, whatever the
/// order, as `accept-version` negotiates.
#[tokio::test]
async fn websocket_echoes_the_highest_stomp_version_offered() {
    let env = crate::broker().await;
    let (mut stomp, chosen) = StompClient::ws(env.addr("ws"), "v10.stomp, v12.stomp").await;
    assert_eq!(chosen.as_deref(), Some("v12.stomp"));
    let connected = stomp.connect(&[("accept-version", "1.0,1.2")]).await;
    assert_eq!(connected.header("version"), Some("1.2"));
}

/// STOMP 1.1 cannot escape a CR in a header value: it is written as a space, not raw.
#[tokio::test]
async fn a_cr_in_a_header_value_is_not_written_raw_in_stomp_1_1() {
    let env = crate::broker().await;
    let mut stomp = env.connected(&[("accept-version", "1.1")]).await;
    subscribed(&mut stomp, "/topic/cr", "s").await;
    let mut mqtt = RawClient::connected_v5(env.mqtt(), "cr").await;
    mqtt.send(Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: "cr".into(),
        packet_id: None,
        payload: Bytes::from_static(b"x"),
        properties: Some(Box::new(Properties {
            user_properties: vec![("k".into(), "a\rb".into())],
            ..Properties::default()
        })),
    }))
    .await;
    let m = stomp.recv().await;
    assert_eq!(m.command, "MESSAGE");
    assert_eq!(m.header("k"), Some("a b"));
}

/// Before CONNECTED a frame cannot grow past a small bound (a CONNECT has only headers): an
/// unauthenticated socket gets an ERROR and is closed instead of being buffered.
#[tokio::test]
async fn an_oversized_frame_before_connect_is_refused() {
    let env = crate::broker().await;
    let mut stomp = env.stomp().await;
    let mut connect = b"CONNECT\naccept-version:1.2\n".to_vec();
    for i in 0..80 {
        connect.extend_from_slice(format!("h{i}:{}\n", "v".repeat(1000)).as_bytes());
    }
    // No blank line: the frame never ends.
    stomp.send_raw(&connect).await;
    let e = stomp.recv().await;
    assert_eq!(e.command, "ERROR", "{e:?}");
    stomp.expect_closed_within(STEP).await;
}

/// Heart-beats are checked per window as ActiveMQ's inactivity monitor does: a client
/// beating every 520 ms with `heart-beat:500,0` stays; a silent one is closed within two
/// windows.
#[tokio::test]
async fn heart_beats_are_checked_per_window() {
    let env = crate::broker().await;
    let mut stomp = env.connected(&[("heart-beat", "500,0")]).await;
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(520)).await;
        stomp.send_raw(b"\n").await;
    }
    stomp
        .send(
            "SEND",
            &[("destination", "/topic/hb"), ("receipt", "alive")],
            "",
        )
        .await;
    let r = stomp.recv().await;
    assert_eq!(r.header("receipt-id"), Some("alive"), "{r:?}");
    let silent_from = tokio::time::Instant::now();
    stomp.expect_closed_within(STEP).await;
    let silent = silent_from.elapsed();
    assert!(
        silent >= Duration::from_millis(450) && silent <= Duration::from_millis(1500),
        "closed after {silent:?} of silence (windows of 500 ms)"
    );
}

/// A STOMP requester and an MQTT 5 responder: `reply-to:/topic/app.reply` is the Response
/// Topic `app/reply`, and the answer published there reaches the requester's subscription.
#[tokio::test]
async fn reply_to_a_topic_round_trips_between_stomp_and_mqtt5() {
    let env = crate::broker().await;
    let mut responder = RawClient::connected_v5(env.mqtt(), "responder").await;
    responder
        .subscribe(1, &[("app/request", QoS::AtMostOnce)])
        .await;
    let mut requester = env.connected(&[]).await;
    subscribed(&mut requester, "/topic/app.reply", "replies").await;
    requester
        .send(
            "SEND",
            &[
                ("destination", "/topic/app.request"),
                ("reply-to", "/topic/app.reply"),
                ("correlation-id", "c-1"),
            ],
            "ping",
        )
        .await;
    let request = responder.recv_publish().await;
    let props = request.properties.expect("properties");
    assert_eq!(props.response_topic.as_deref(), Some("app/reply"));
    responder
        .send(Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: props.response_topic.clone().expect("response topic"),
            packet_id: None,
            payload: Bytes::from_static(b"pong"),
            properties: Some(Box::new(Properties {
                correlation_data: props.correlation_data.clone(),
                response_topic: Some("a/b".into()),
                ..Properties::default()
            })),
        }))
        .await;
    let reply = requester.recv().await;
    assert_eq!(reply.command, "MESSAGE", "{reply:?}");
    assert_eq!(reply.header("destination"), Some("/topic/app.reply"));
    assert_eq!(reply.header("correlation-id"), Some("c-1"));
    assert_eq!(reply.header("reply-to"), Some("/topic/a.b"));
    assert_eq!(reply.body, b"pong");
}

/// UNSUBSCRIBE with `activemq.subscriptionName` (and the connection's client-id) removes an
/// offline durable subscription without resuming it, as ActiveMQ's `RemoveSubscriptionInfo`
/// does: what it kept is gone, and removing it again is an ERROR. The `id` is needed (ActiveMQ:
/// `UNSUBSCRIBE received without a subscription id!`), though it names no SUBSCRIBE.
#[tokio::test]
async fn unsubscribe_removes_an_offline_durable_subscription() {
    let env = crate::broker().await;
    let mut c = env.connected(&[("client-id", "offdur")]).await;
    c.send(
        "UNSUBSCRIBE",
        &[("activemq.subscriptionName", "sub"), ("receipt", "u")],
        "",
    )
    .await;
    assert_eq!(c.recv().await.command, "ERROR", "no id");
    c.expect_closed_within(STEP).await;
    for unsubscribe_id in ["1", "other"] {
        let mut c = env.connected(&[("client-id", "offdur")]).await;
        c.send(
            "SUBSCRIBE",
            &[
                ("destination", "/topic/offdur.t"),
                ("id", "1"),
                ("activemq.subscriptionName", "sub"),
                ("receipt", "sub"),
            ],
            "",
        )
        .await;
        assert_eq!(c.recv().await.header("receipt-id"), Some("sub"));
        c.send("DISCONNECT", &[("receipt", "bye")], "").await;
        assert_eq!(c.recv().await.header("receipt-id"), Some("bye"));
        // Kept for the offline subscription.
        let mut sender = env.connected(&[]).await;
        sender
            .send(
                "SEND",
                &[
                    ("destination", "/topic/offdur.t"),
                    ("persistent", "true"),
                    ("receipt", "kept"),
                ],
                "kept while offline",
            )
            .await;
        assert_eq!(sender.recv().await.header("receipt-id"), Some("kept"));

        let mut c = env.connected(&[("client-id", "offdur")]).await;
        let headers = [
            ("id", unsubscribe_id),
            ("activemq.subscriptionName", "sub"),
            ("receipt", "u"),
        ];
        c.send("UNSUBSCRIBE", &headers, "").await;
        let r = c.recv().await;
        assert_eq!(r.command, "RECEIPT", "{r:?}");
        assert_eq!(r.header("receipt-id"), Some("u"));
        // Not resumed: nothing delivered to this connection.
        assert!(c.recv_within(Duration::from_millis(300)).await.is_none());
        c.send("UNSUBSCRIBE", &headers, "").await;
        let e = c.recv().await;
        assert_eq!(e.command, "ERROR", "removed already: {e:?}");
        assert!(
            e.header("message")
                .is_some_and(|m| m.contains("No durable subscription exists")),
            "{e:?}"
        );
        c.expect_closed_within(STEP).await;
        // Subscribing again starts empty: what the old one kept went with it.
        let mut c = env.connected(&[("client-id", "offdur")]).await;
        c.send(
            "SUBSCRIBE",
            &[
                ("destination", "/topic/offdur.t"),
                ("id", "1"),
                ("activemq.subscriptionName", "sub"),
                ("receipt", "again"),
            ],
            "",
        )
        .await;
        assert_eq!(c.recv().await.header("receipt-id"), Some("again"));
        assert!(c.recv_within(Duration::from_millis(300)).await.is_none());
        c.send(
            "UNSUBSCRIBE",
            &[
                ("id", "1"),
                ("activemq.subscriptionName", "sub"),
                ("receipt", "end"),
            ],
            "",
        )
        .await;
        assert_eq!(c.recv().await.header("receipt-id"), Some("end"));
    }
}

/// A second connection with a `client-id` already connected is refused with an ERROR and
/// closed (`allowLinkStealing` is false by default on STOMP connectors, as in ActiveMQ); the
/// first one keeps working, and the client-id is free again once it is gone.
#[tokio::test]
async fn a_second_connection_with_a_connected_client_id_is_refused() {
    let env = crate::broker().await;
    let mut first = env.connected(&[("client-id", "dup")]).await;
    let mut second = env.stomp().await;
    second
        .send(
            "CONNECT",
            &[
                ("accept-version", "1.2"),
                ("host", "h"),
                ("client-id", "dup"),
            ],
            "",
        )
        .await;
    let e = second.recv().await;
    assert_eq!(e.command, "ERROR", "{e:?}");
    assert!(
        e.header("message")
            .is_some_and(|m| m.contains("dup already connected")),
        "{e:?}"
    );
    second.expect_closed_within(STEP).await;
    first
        .send(
            "SEND",
            &[("destination", "/topic/a"), ("receipt", "r")],
            "x",
        )
        .await;
    assert_eq!(first.recv().await.header("receipt-id"), Some("r"));
    first.send("DISCONNECT", &[("receipt", "bye")], "").await;
    assert_eq!(first.recv().await.header("receipt-id"), Some("bye"));
    first.expect_closed_within(STEP).await;
    let _third = env.connected(&[("client-id", "dup")]).await;
}

/// With `allowLinkStealing=true` the new connection takes the client-id over: the old one is
/// closed.
#[tokio::test]
async fn with_link_stealing_the_new_connection_takes_the_client_id_over() {
    let xml = crate::support::BrokerXml::new()
        .name("steal")
        .connector("stomp", "stomp://127.0.0.1:0?allowLinkStealing=true")
        .build();
    let env = crate::Env {
        broker: crate::support::TestBroker::from_xml(&xml).await,
    };
    let mut first = env.connected(&[("client-id", "dup")]).await;
    let mut second = env.connected(&[("client-id", "dup")]).await;
    first.expect_closed_within(STEP).await;
    second
        .send(
            "SEND",
            &[("destination", "/topic/a"), ("receipt", "r")],
            "x",
        )
        .await;
    assert_eq!(second.recv().await.header("receipt-id"), Some("r"));
}

/// `ferromq session list` shows a STOMP durable subscription as `stomp:<client-id>:<name>` and
/// `session end` takes that name (in a stopped broker's store); on a running broker it says
/// how a STOMP client ends it.
#[tokio::test]
async fn session_admin_shows_and_ends_stomp_durable_subscriptions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let xml = crate::support::BrokerXml::new()
        .name("stomp")
        .kahadb(dir.path())
        .connector("stomp", "stomp://127.0.0.1:0")
        .build();
    let env = crate::Env {
        broker: crate::support::TestBroker::from_xml(&xml).await,
    };
    let mut c = env.connected(&[("client-id", "app:1")]).await;
    subscribed_durable(&mut c, "orders").await;
    c.send("DISCONNECT", &[("receipt", "bye")], "").await;
    assert_eq!(c.recv().await.header("receipt-id"), Some("bye"));
    env.broker.shutdown().await;

    let config = ferromq::config::load_str(&xml, dir.path(), &Default::default())
        .into_result()
        .expect("config");
    let listed = ferromq::admin::list_sessions(&config).expect("list");
    let names: Vec<&str> = listed.iter().map(|s| s.client_id.as_str()).collect();
    assert!(names.contains(&"stomp:app:1:orders"), "{names:?}");
    let online = ferromq::admin::end_session_online(
        "127.0.0.1:1".parse().expect("addr"),
        "stomp:app:1:orders",
        None,
        None,
    )
    .await;
    assert!(
        matches!(online, Err(ferromq::admin::AdminError::StompOnline(_))),
        "{online:?}"
    );
    let ended = tokio::task::spawn_blocking({
        let config = config.clone();
        move || ferromq::admin::end_session_in_store(&config, "stomp:app:1:orders")
    })
    .await
    .expect("join")
    .expect("ended");
    assert_eq!(ended.client_id, "stomp:app:1:orders");
    let listed = ferromq::admin::list_sessions(&config).expect("list");
    assert!(listed.iter().all(|s| s.client_id != "stomp:app:1:orders"));
}

async fn subscribed_durable(c: &mut StompClient, name: &str) {
    c.send(
        "SUBSCRIBE",
        &[
            ("destination", "/topic/admin.t"),
            ("id", "1"),
            ("activemq.subscriptionName", name),
            ("receipt", "sub"),
        ],
        "",
    )
    .await;
    assert_eq!(c.recv().await.header("receipt-id"), Some("sub"));
}
