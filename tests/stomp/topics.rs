//! Topics shared by STOMP and MQTT: `/topic/a.b.c` is MQTT `a/b/c`, `*` is `+`, `>` is `#`;
//! SEND headers are MQTT 5 properties and back; persistent is QoS 1.

use std::time::Duration;

use bytes::Bytes;
use ferromq::protocol::{Packet, Properties, Publish, QoS};

use crate::support::{RawClient, STEP};

#[tokio::test]
async fn stomp_send_to_a_topic_reaches_an_mqtt_wildcard_subscriber() {
    let env = crate::broker().await;
    let mut mqtt = RawClient::connected_v5(env.mqtt(), "sub").await;
    mqtt.subscribe(1, &[("foo/+", QoS::AtLeastOnce)]).await;
    let mut stomp = env.connected(&[]).await;
    stomp
        .send(
            "SEND",
            &[
                ("destination", "/topic/foo.bar"),
                ("persistent", "true"),
                ("content-type", "text/plain"),
                ("reply-to", "/queue/replies"),
                ("correlation-id", "corr-1"),
                ("priority", "7"),
                ("x-app", "v"),
                ("receipt", "r1"),
            ],
            "hello",
        )
        .await;
    let receipt = stomp.recv().await;
    assert_eq!(receipt.command, "RECEIPT");
    assert_eq!(receipt.header("receipt-id"), Some("r1"));
    let p = mqtt.recv_publish().await;
    assert_eq!(p.topic, "foo/bar");
    assert_eq!(p.payload.as_ref(), b"hello");
    assert_eq!(p.qos, QoS::AtLeastOnce, "persistent:true is QoS 1");
    let props = p.properties.expect("MQTT 5 properties");
    assert_eq!(props.content_type.as_deref(), Some("text/plain"));
    assert_eq!(props.response_topic.as_deref(), Some("/queue/replies"));
    assert_eq!(props.correlation_data.as_deref(), Some(&b"corr-1"[..]));
    assert_eq!(
        props.user_properties,
        vec![
            ("priority".to_owned(), "7".to_owned()),
            ("x-app".to_owned(), "v".to_owned())
        ]
    );

    stomp
        .send("SEND", &[("destination", "/topic/foo.baz")], "np")
        .await;
    let p = mqtt.recv_publish().await;
    assert_eq!(p.topic, "foo/baz");
    assert_eq!(p.qos, QoS::AtMostOnce, "non-persistent is QoS 0");
}

#[tokio::test]
async fn mqtt_publish_reaches_a_stomp_wildcard_subscription_with_its_properties() {
    let env = crate::broker().await;
    let mut stomp = env.connected(&[]).await;
    stomp
        .send(
            "SUBSCRIBE",
            &[
                ("destination", "/topic/a.>"),
                ("id", "s1"),
                ("receipt", "sub"),
            ],
            "",
        )
        .await;
    assert_eq!(stomp.recv().await.header("receipt-id"), Some("sub"));
    let mut mqtt = RawClient::connected_v5(env.mqtt(), "pub").await;
    mqtt.send(Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: "a/b".into(),
        packet_id: Some(1),
        payload: Bytes::from_static(b"payload\0with nul"),
        properties: Some(Box::new(Properties {
            content_type: Some("application/json".into()),
            response_topic: Some("replies/here".into()),
            correlation_data: Some(Bytes::from_static(b"c-9")),
            user_properties: vec![("k".into(), "v".into())],
            ..Properties::default()
        })),
    }))
    .await;
    let m = stomp.recv().await;
    assert_eq!(m.command, "MESSAGE");
    assert_eq!(m.header("destination"), Some("/topic/a.b"));
    assert_eq!(m.header("subscription"), Some("s1"));
    assert_eq!(m.header("persistent"), Some("true"), "QoS 1 is persistent");
    assert_eq!(m.header("content-type"), Some("application/json"));
    assert_eq!(m.header("reply-to"), Some("/topic/replies.here"));
    assert_eq!(m.header("correlation-id"), Some("c-9"));
    assert_eq!(m.header("k"), Some("v"));
    assert!(m.header("message-id").is_some());
    assert_eq!(m.body, b"payload\0with nul");

    // QoS 0 is non-persistent; a level below `a` does not match `a.>`'s sibling.
    mqtt.send(crate::support::publish_packet(
        "a/c/d",
        b"x",
        QoS::AtMostOnce,
        None,
        false,
    ))
    .await;
    mqtt.send(crate::support::publish_packet(
        "b/c",
        b"no",
        QoS::AtMostOnce,
        None,
        false,
    ))
    .await;
    let m = stomp.recv().await;
    assert_eq!(m.header("destination"), Some("/topic/a.c.d"));
    assert_eq!(m.header("persistent"), None);
    assert!(stomp
        .recv_within(Duration::from_millis(200))
        .await
        .is_none());
}

#[tokio::test]
async fn two_subscriptions_on_one_destination_each_get_their_copy() {
    let env = crate::broker().await;
    let mut stomp = env.connected(&[]).await;
    for (id, dest) in [
        ("one", "/topic/t.x"),
        ("two", "/topic/t.x"),
        ("three", "/topic/t.*"),
    ] {
        stomp
            .send(
                "SUBSCRIBE",
                &[("destination", dest), ("id", id), ("receipt", id)],
                "",
            )
            .await;
        assert_eq!(stomp.recv().await.command, "RECEIPT");
    }
    let mut sender = env.connected(&[]).await;
    sender
        .send("SEND", &[("destination", "/topic/t.x")], "m")
        .await;
    let mut subs = Vec::new();
    for _ in 0..3 {
        let m = stomp.recv().await;
        assert_eq!(m.body, b"m");
        subs.push(m.header("subscription").expect("subscription").to_owned());
    }
    subs.sort();
    assert_eq!(subs, ["one", "three", "two"]);
    assert!(stomp
        .recv_within(Duration::from_millis(200))
        .await
        .is_none());

    // UNSUBSCRIBE stops one of them.
    stomp
        .send("UNSUBSCRIBE", &[("id", "two"), ("receipt", "u")], "")
        .await;
    assert_eq!(stomp.recv().await.header("receipt-id"), Some("u"));
    sender
        .send("SEND", &[("destination", "/topic/t.x")], "m2")
        .await;
    let mut subs = Vec::new();
    for _ in 0..2 {
        subs.push(stomp.recv().await.header("subscription").map(str::to_owned));
    }
    subs.sort();
    assert_eq!(subs, [Some("one".to_owned()), Some("three".to_owned())]);
    assert!(stomp
        .recv_within(Duration::from_millis(200))
        .await
        .is_none());
}

#[tokio::test]
async fn retained_mqtt_messages_go_only_to_retroactive_stomp_subscriptions() {
    let env = crate::broker().await;
    let mut mqtt = RawClient::connected_v5(env.mqtt(), "pub").await;
    mqtt.send(crate::support::publish_packet(
        "r/t",
        b"kept",
        QoS::AtMostOnce,
        None,
        true,
    ))
    .await;
    // The retained message is set once a subscriber sees the live copy.
    let mut check = RawClient::connected_v5(env.mqtt(), "check").await;
    check.subscribe(1, &[("r/t", QoS::AtMostOnce)]).await;
    assert_eq!(check.recv_publish().await.payload.as_ref(), b"kept");

    let mut stomp = env.connected(&[]).await;
    stomp
        .send(
            "SUBSCRIBE",
            &[
                ("destination", "/topic/r.t"),
                ("id", "plain"),
                ("receipt", "1"),
            ],
            "",
        )
        .await;
    assert_eq!(stomp.recv().await.command, "RECEIPT");
    assert!(
        stomp
            .recv_within(Duration::from_millis(200))
            .await
            .is_none(),
        "not retroactive: no retained message"
    );
    stomp
        .send(
            "SUBSCRIBE",
            &[
                ("destination", "/topic/r.t"),
                ("id", "retro"),
                ("activemq.retroactive", "true"),
            ],
            "",
        )
        .await;
    let m = stomp.recv_within(STEP).await.expect("retained message");
    assert_eq!(m.header("subscription"), Some("retro"));
    assert_eq!(m.body, b"kept");
}

#[tokio::test]
async fn no_local_subscriptions_skip_what_their_own_connection_sends() {
    let env = crate::broker().await;
    let mut c = env.connected(&[]).await;
    for (id, no_local) in [("nl", "true"), ("all", "false")] {
        c.send(
            "SUBSCRIBE",
            &[
                ("destination", "/topic/chat"),
                ("id", id),
                ("activemq.noLocal", no_local),
                ("receipt", id),
            ],
            "",
        )
        .await;
        assert_eq!(c.recv().await.command, "RECEIPT");
    }
    c.send("SEND", &[("destination", "/topic/chat")], "mine")
        .await;
    let m = c.recv().await;
    assert_eq!(
        (m.header("subscription"), m.body_text().as_str()),
        (Some("all"), "mine")
    );
    assert!(c.recv_within(Duration::from_millis(200)).await.is_none());
    let mut other = env.connected(&[]).await;
    other
        .send("SEND", &[("destination", "/topic/chat")], "theirs")
        .await;
    let mut subs = vec![
        c.recv().await.header("subscription").map(str::to_owned),
        c.recv().await.header("subscription").map(str::to_owned),
    ];
    subs.sort();
    assert_eq!(subs, [Some("all".to_owned()), Some("nl".to_owned())]);
}

#[tokio::test]
async fn a_temporary_topic_takes_replies_for_its_connection_only() {
    let env = crate::broker().await;
    let mut snoop = RawClient::connected_v5(env.mqtt(), "snoop").await;
    snoop.subscribe(1, &[("#", QoS::AtMostOnce)]).await;
    let mut service = env.connected(&[]).await;
    service
        .send(
            "SUBSCRIBE",
            &[
                ("destination", "/topic/service"),
                ("id", "s"),
                ("receipt", "r"),
            ],
            "",
        )
        .await;
    assert_eq!(service.recv().await.command, "RECEIPT");
    let mut requester = env.connected(&[]).await;
    requester
        .send(
            "SUBSCRIBE",
            &[
                ("destination", "/temp-topic/replies"),
                ("id", "t"),
                ("receipt", "r"),
            ],
            "",
        )
        .await;
    assert_eq!(requester.recv().await.command, "RECEIPT");
    requester
        .send(
            "SEND",
            &[
                ("destination", "/topic/service"),
                ("reply-to", "/temp-topic/replies"),
            ],
            "question",
        )
        .await;
    let request = service.recv().await;
    let reply_to = request.header("reply-to").expect("reply-to").to_owned();
    assert!(reply_to.starts_with("/remote-temp-topic/"), "{reply_to}");
    service
        .send("SEND", &[("destination", &reply_to)], "answer")
        .await;
    let answer = requester.recv().await;
    assert_eq!(answer.body_text(), "answer");
    assert_eq!(answer.header("destination"), Some("/temp-topic/replies"));
    // The MQTT `#` subscriber saw the request only.
    assert_eq!(snoop.recv_publish().await.topic, "service");
    assert!(snoop
        .recv_within(Duration::from_millis(200))
        .await
        .is_none());

    // Nobody else may consume it.
    service
        .send(
            "SUBSCRIBE",
            &[("destination", &reply_to), ("id", "steal")],
            "",
        )
        .await;
    assert_eq!(service.recv().await.command, "ERROR");
}
