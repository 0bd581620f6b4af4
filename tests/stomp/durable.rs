//! Durable topic subscriptions (`activemq.subscriptionName` + `client-id`): kept in the store
//! with MQTT persistent sessions, across a broker restart; unacknowledged messages delivered
//! again; UNSUBSCRIBE with the name removes them.

use std::time::Duration;

use ferromq::protocol::{Packet, QoS};

use crate::client::StompClient;
use crate::support::{publish_packet, RawClient};

async fn durable(env: &crate::Env, id: &str) -> StompClient {
    let mut c = env.connected(&[("client-id", "app-1")]).await;
    c.send(
        "SUBSCRIBE",
        &[
            ("destination", "/topic/d.t"),
            ("id", id),
            ("ack", "client-individual"),
            ("activemq.subscriptionName", "orders"),
            ("receipt", "sub"),
        ],
        "",
    )
    .await;
    assert_eq!(c.recv().await.header("receipt-id"), Some("sub"));
    c
}

async fn bye(mut c: StompClient) {
    c.send("DISCONNECT", &[("receipt", "bye")], "").await;
    assert_eq!(c.recv().await.header("receipt-id"), Some("bye"));
}

#[tokio::test]
async fn a_durable_subscription_survives_a_restart_and_redelivers_what_was_not_acked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env = crate::broker_in(dir.path()).await;
    bye(durable(&env, "s").await).await;

    // While it is offline: an MQTT QoS 1 publish and a persistent STOMP SEND (its RECEIPT
    // comes once it is kept).
    let mut mqtt = RawClient::connected(env.mqtt(), "pub", true).await.0;
    mqtt.send(publish_packet(
        "d/t",
        b"m1",
        QoS::AtLeastOnce,
        Some(1),
        false,
    ))
    .await;
    assert!(matches!(mqtt.recv().await, Packet::PubAck(_)));
    let mut sender = env.connected(&[]).await;
    sender
        .send(
            "SEND",
            &[
                ("destination", "/topic/d.t"),
                ("persistent", "true"),
                ("receipt", "kept"),
            ],
            "m2",
        )
        .await;
    assert_eq!(sender.recv().await.header("receipt-id"), Some("kept"));
    // A non-persistent message is not kept for an offline subscription.
    sender
        .send("SEND", &[("destination", "/topic/d.t")], "gone")
        .await;
    bye(sender).await;
    env.broker.shutdown().await;

    let env = crate::broker_in(dir.path()).await;
    let mut c = durable(&env, "s").await;
    let m1 = c.recv().await;
    let m2 = c.recv().await;
    assert_eq!((m1.body_text(), m2.body_text()), ("m1".into(), "m2".into()));
    assert_eq!(m1.header("persistent"), Some("true"));
    assert_eq!(m1.header("destination"), Some("/topic/d.t"));
    assert_eq!(
        (m1.header("redelivered"), m2.header("redelivered")),
        (None, None),
        "never delivered before"
    );
    let ack = m1.header("ack").expect("ack").to_owned();
    c.send("ACK", &[("id", &ack), ("receipt", "a")], "").await;
    assert_eq!(c.recv().await.header("receipt-id"), Some("a"));
    assert!(c.recv_within(Duration::from_millis(200)).await.is_none());
    bye(c).await;

    // m2 was not acknowledged: delivered again.
    let mut c = durable(&env, "s2").await;
    let again = c.recv().await;
    assert_eq!(again.body_text(), "m2");
    assert_eq!(again.header("redelivered"), Some("true"));
    assert!(c.recv_within(Duration::from_millis(200)).await.is_none());

    // No second connection can reach the durable subscription while in use: its client-id
    // is refused at CONNECT (allowLinkStealing is false).
    let mut other = env.stomp().await;
    other
        .send(
            "CONNECT",
            &[
                ("accept-version", "1.2"),
                ("host", "h"),
                ("client-id", "app-1"),
            ],
            "",
        )
        .await;
    assert_eq!(other.recv().await.command, "ERROR");

    // UNSUBSCRIBE with the name removes it and what it kept.
    c.send(
        "UNSUBSCRIBE",
        &[
            ("id", "s2"),
            ("activemq.subscriptionName", "orders"),
            ("receipt", "u"),
        ],
        "",
    )
    .await;
    assert_eq!(c.recv().await.header("receipt-id"), Some("u"));
    let mut mqtt = RawClient::connected(env.mqtt(), "pub", true).await.0;
    mqtt.send(publish_packet(
        "d/t",
        b"m3",
        QoS::AtLeastOnce,
        Some(2),
        false,
    ))
    .await;
    assert!(matches!(mqtt.recv().await, Packet::PubAck(_)));
    bye(c).await;
    let mut c = durable(&env, "s3").await;
    assert!(
        c.recv_within(Duration::from_millis(300)).await.is_none(),
        "a new durable subscription starts empty"
    );
}

#[tokio::test]
async fn messages_sent_and_not_acked_come_back_flagged_redelivered_others_do_not() {
    let env = crate::broker().await;
    let mut c = durable(&env, "s").await;
    let mut mqtt = RawClient::connected(env.mqtt(), "pub", true).await.0;
    for (id, body) in [(1, b"m1"), (2, b"m2"), (3, b"m3")] {
        mqtt.send(publish_packet(
            "d/t",
            body,
            QoS::AtLeastOnce,
            Some(id),
            false,
        ))
        .await;
        assert!(matches!(mqtt.recv().await, Packet::PubAck(_)));
    }
    let got: Vec<_> = [c.recv().await, c.recv().await, c.recv().await].into();
    assert!(got.iter().all(|m| m.header("redelivered").is_none()));
    let m2_ack = got[1].header("ack").expect("ack").to_owned();
    c.send("ACK", &[("id", &m2_ack), ("receipt", "a")], "")
        .await;
    assert_eq!(c.recv().await.header("receipt-id"), Some("a"));
    // The connection ends without DISCONNECT; m4 arrives while it is offline.
    drop(c);
    mqtt.send(publish_packet(
        "d/t",
        b"m4",
        QoS::AtLeastOnce,
        Some(4),
        false,
    ))
    .await;
    assert!(matches!(mqtt.recv().await, Packet::PubAck(_)));

    let mut c = durable(&env, "s2").await;
    let mut seen = Vec::new();
    for _ in 0..3 {
        let m = c.recv().await;
        seen.push((m.body_text(), m.header("redelivered").map(str::to_owned)));
    }
    let t = Some("true".to_owned());
    assert_eq!(
        seen,
        vec![
            ("m1".into(), t.clone()),
            ("m3".into(), t),
            ("m4".into(), None)
        ],
        "the unacknowledged ones first, flagged; m4 was never delivered"
    );
    // Ended again before acknowledging anything: all three come back flagged.
    bye(c).await;
    let mut c = durable(&env, "s3").await;
    let mut again = Vec::new();
    for _ in 0..3 {
        let m = c.recv().await;
        again.push((m.body_text(), m.header("redelivered").map(str::to_owned)));
    }
    let t = Some("true".to_owned());
    assert_eq!(
        again,
        vec![
            ("m1".into(), t.clone()),
            ("m3".into(), t.clone()),
            ("m4".into(), t)
        ]
    );
    env.broker.shutdown().await;
}

#[tokio::test]
async fn redeliveries_not_yet_sent_again_keep_their_flag() {
    let env = crate::broker().await;
    let mut c = durable(&env, "s").await;
    let mut sender = env.connected(&[]).await;
    for body in ["m1", "m2"] {
        sender
            .send(
                "SEND",
                &[
                    ("destination", "/topic/d.t"),
                    ("persistent", "true"),
                    ("receipt", body),
                ],
                body,
            )
            .await;
        assert_eq!(sender.recv().await.header("receipt-id"), Some(body));
    }
    assert_eq!(c.recv().await.body_text(), "m1");
    assert_eq!(c.recv().await.body_text(), "m2");
    bye(c).await;
    // Resumed with a window of one: m1 is sent again, m2 waits behind it.
    let mut c = env.connected(&[("client-id", "app-1")]).await;
    c.send(
        "SUBSCRIBE",
        &[
            ("destination", "/topic/d.t"),
            ("id", "s2"),
            ("ack", "client-individual"),
            ("activemq.subscriptionName", "orders"),
            ("activemq.prefetchSize", "1"),
        ],
        "",
    )
    .await;
    let m1 = c.recv().await;
    assert_eq!(
        (m1.body_text().as_str(), m1.header("redelivered")),
        ("m1", Some("true"))
    );
    assert!(c.recv_within(Duration::from_millis(200)).await.is_none());
    bye(c).await;
    let mut c = durable(&env, "s3").await;
    for body in ["m1", "m2"] {
        let m = c.recv().await;
        assert_eq!(
            (m.body_text().as_str(), m.header("redelivered")),
            (body, Some("true"))
        );
    }
    env.broker.shutdown().await;
}
