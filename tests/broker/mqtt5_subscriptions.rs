//! MQTT 5 subscription options and identifiers (real broker on 127.0.0.1 port 0, exact packets
//! with ferromq's codec, and rumqttc's v3 and v5 clients): No Local, Retain As Published,
//! Subscription Identifiers (live, retained at SUBSCRIBE, after a resume, re-sent in flight,
//! counted in the Maximum Packet Size), overlapping subscriptions (one copy each for MQTT 5,
//! one at the highest QoS for 3.1.1), the protocol errors, and v3 <-> v5 interplay.

use std::time::Duration;

use bytes::Bytes;
use ferromq::protocol::{encode, Packet, Properties, ProtocolVersion, Publish, QoS};
use tokio::sync::mpsc;

use crate::support::sub_options::{
    disconnect_code, ids, nothing_within, publish, publish_acked, publishes_until, subscribe,
    Filter,
};
use crate::support::{connect_v5, publish_packet, Client, RawClient, TestBroker, STEP};

const QUIET: Duration = Duration::from_millis(300);

#[tokio::test]
async fn no_local_subscriptions_skip_only_the_publishers_own_session() {
    let broker = TestBroker::default().await;
    let mut me = RawClient::connected_v5(broker.addr, "me").await;
    let nl = [Filter::new("nl/#", QoS::AtLeastOnce).no_local()];
    assert_eq!(subscribe(&mut me, 1, &nl, Some(1)).await, [1]);
    let mut other = RawClient::connected_v5(broker.addr, "other").await;
    assert_eq!(subscribe(&mut other, 1, &nl, Some(2)).await, [1]);

    assert!(publish_acked(&mut me, "nl/x", b"mine", 1, false)
        .await
        .is_empty());
    let got = publishes_until(&mut other, b"mine").await;
    assert_eq!(got.len(), 1);
    assert_eq!(ids(&got[0]), [2]);
    // Had `me` got its own message, it would arrive before this one from `other`.
    publish_acked(&mut other, "nl/x", b"theirs", 1, false).await;
    let got = publishes_until(&mut me, b"theirs").await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(ids(&got[0]), [1]);

    // An overlapping subscription without No Local still delivers the own message, once.
    let plain = [Filter::new("nl/+", QoS::AtLeastOnce)];
    assert_eq!(subscribe(&mut me, 2, &plain, Some(3)).await, [1]);
    let mut got = publish_acked(&mut me, "nl/y", b"own", 2, false).await;
    // `nl/m/x` matches only `nl/#`: it comes after the own message, through id 1.
    publish_acked(&mut other, "nl/m/x", b"marker", 2, false).await;
    got.extend(publishes_until(&mut me, b"marker").await);
    let seen: Vec<(&[u8], Vec<u32>)> = got.iter().map(|p| (&p.payload[..], ids(p))).collect();
    assert_eq!(
        seen,
        [(&b"own"[..], vec![3]), (&b"marker"[..], vec![1])],
        "the own message only through the subscription without No Local"
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn retain_as_published_keeps_the_retain_flag_live_and_subscribe_time_retained_always_has_it()
{
    let broker = TestBroker::default().await;
    let mut sub = RawClient::connected_v5(broker.addr, "sub").await;
    let rap = [Filter::new("rap/t", QoS::AtLeastOnce).retain_as_published()];
    assert_eq!(subscribe(&mut sub, 1, &rap, Some(1)).await, [1]);
    let plain = [Filter::new("rap/+", QoS::AtLeastOnce)];
    assert_eq!(subscribe(&mut sub, 2, &plain, Some(2)).await, [1]);

    // A v3 publisher: its RETAIN flag is what Retain As Published keeps.
    let (mut publisher, _) = RawClient::connected(broker.addr, "pub", true).await;
    publish_acked(&mut publisher, "rap/t", b"kept", 1, true).await;
    let mut got: Vec<(Vec<u32>, bool)> = Vec::new();
    for _ in 0..2 {
        let p = publishes_until(&mut sub, b"kept").await.remove(0);
        got.push((ids(&p), p.retain));
    }
    got.sort();
    assert_eq!(got, [(vec![1], true), (vec![2], false)]);
    // Not retained when published: RETAIN=0 through either subscription.
    publish_acked(&mut publisher, "rap/t", b"live", 2, false).await;
    for _ in 0..2 {
        let p = publishes_until(&mut sub, b"live").await.remove(0);
        assert!(!p.retain, "{p:?}");
    }

    // Sent because of a SUBSCRIBE: RETAIN=1 whatever Retain As Published says (3.3.1-9),
    // with the subscription's identifier.
    let mut late = RawClient::connected_v5(broker.addr, "late").await;
    assert_eq!(subscribe(&mut late, 1, &plain, Some(7)).await, [1]);
    let p = publishes_until(&mut late, b"kept").await.remove(0);
    assert!(p.retain);
    assert_eq!(ids(&p), [7]);
    broker.shutdown().await;
}

#[tokio::test]
async fn overlapping_subscriptions_give_a_v5_session_one_copy_each_with_its_identifier() {
    let broker = TestBroker::default().await;
    let mut sub = RawClient::connected_v5(broker.addr, "sub").await;
    let all = [Filter::new("ids/#", QoS::AtLeastOnce)];
    assert_eq!(subscribe(&mut sub, 1, &all, Some(5)).await, [1]);
    let one_level = [Filter::new("ids/+", QoS::AtMostOnce)];
    assert_eq!(
        subscribe(&mut sub, 2, &one_level, Some(268_435_455)).await,
        [0]
    );
    let exact = [Filter::new("ids/x", QoS::AtLeastOnce)];
    assert_eq!(subscribe(&mut sub, 3, &exact, None).await, [1]);

    let mut publisher = RawClient::connected_v5(broker.addr, "pub").await;
    publish_acked(&mut publisher, "ids/x", b"m", 1, false).await;
    let mut got: Vec<(Vec<u32>, QoS)> = Vec::new();
    for _ in 0..3 {
        let p = publishes_until(&mut sub, b"m").await.remove(0);
        got.push((ids(&p), p.qos));
    }
    got.sort_by_key(|(ids, _)| ids.clone());
    assert_eq!(
        got,
        [
            (vec![], QoS::AtLeastOnce),
            (vec![5], QoS::AtLeastOnce),
            (vec![268_435_455], QoS::AtMostOnce),
        ]
    );
    nothing_within(&mut sub, QUIET).await;

    // Subscribing again replaces the identifier (and a SUBSCRIBE without one removes it).
    assert_eq!(subscribe(&mut sub, 4, &all, None).await, [1]);
    assert_eq!(subscribe(&mut sub, 5, &exact, Some(9)).await, [1]);
    publish_acked(&mut publisher, "ids/x", b"again", 2, false).await;
    let mut got: Vec<Vec<u32>> = Vec::new();
    for _ in 0..3 {
        got.push(ids(&publishes_until(&mut sub, b"again").await.remove(0)));
    }
    got.sort();
    assert_eq!(got, [vec![], vec![9], vec![268_435_455]]);
    broker.shutdown().await;
}

#[tokio::test]
async fn overlapping_subscriptions_give_a_v3_session_one_copy_at_the_highest_qos() {
    let broker = TestBroker::default().await;
    let (mut sub, _) = RawClient::connected(broker.addr, "sub3", true).await;
    assert_eq!(
        sub.subscribe(1, &[("o/#", QoS::AtMostOnce), ("o/+", QoS::AtLeastOnce)])
            .await,
        [0, 1]
    );
    let mut publisher = RawClient::connected_v5(broker.addr, "pub").await;
    publish_acked(&mut publisher, "o/x", b"one", 1, false).await;
    // `o/m/x` matches `o/#` only: it follows the single copy of "one".
    publish_acked(&mut publisher, "o/m/x", b"marker", 2, false).await;
    let got = publishes_until(&mut sub, b"marker").await;
    let seen: Vec<(&[u8], QoS)> = got.iter().map(|p| (&p.payload[..], p.qos)).collect();
    assert_eq!(
        seen,
        [
            (&b"one"[..], QoS::AtLeastOnce),
            (&b"marker"[..], QoS::AtMostOnce)
        ]
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn identifiers_and_retain_as_published_survive_a_resume_and_an_in_flight_resend() {
    let broker = TestBroker::default().await;
    let (mut sub, _) = RawClient::connect_ok(broker.addr, connect_v5("s", true, Some(60))).await;
    let rap = [Filter::new("res/#", QoS::AtLeastOnce).retain_as_published()];
    assert_eq!(subscribe(&mut sub, 1, &rap, Some(4)).await, [1]);
    let mut publisher = RawClient::connected_v5(broker.addr, "pub").await;
    publish_acked(&mut publisher, "res/a", b"in flight", 1, true).await;
    // Received and not acknowledged: re-sent on resume.
    let first = sub.recv_publish().await;
    assert_eq!((ids(&first), first.retain), (vec![4], true));
    drop(sub);
    publish_acked(&mut publisher, "res/b", b"queued", 2, true).await;

    let (mut sub, ack) = RawClient::connect_ok(broker.addr, connect_v5("s", false, Some(60))).await;
    assert!(ack.session_present);
    let resent = sub.recv_publish().await;
    assert_eq!(&resent.payload[..], b"in flight");
    assert!(resent.dup);
    assert_eq!((ids(&resent), resent.retain), (vec![4], true));
    let queued = publishes_until(&mut sub, b"queued").await;
    assert_eq!(queued.len(), 1);
    assert_eq!((ids(&queued[0]), queued[0].retain), (vec![4], true));
    broker.shutdown().await;
}

#[tokio::test]
async fn a_subscription_identifier_counts_in_the_clients_maximum_packet_size() {
    let broker = TestBroker::default().await;
    let plain = Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: "m/x".into(),
        packet_id: None,
        payload: Bytes::from_static(b"0123456789"),
        properties: None,
    };
    let mut out = bytes::BytesMut::new();
    encode(&Packet::Publish(plain), ProtocolVersion::V5, &mut out).expect("encode");
    let mut connect = connect_v5("small", true, None);
    connect.properties = Some(Box::new(Properties {
        maximum_packet_size: Some(u32::try_from(out.len()).expect("small")),
        ..Properties::default()
    }));
    let (mut sub, _) = RawClient::connect_ok(broker.addr, connect).await;
    // The same message through two subscriptions: only the copy without an identifier fits.
    let with_id = [Filter::new("m/x", QoS::AtMostOnce)];
    assert_eq!(subscribe(&mut sub, 1, &with_id, Some(5)).await, [0]);
    let without = [Filter::new("m/#", QoS::AtMostOnce)];
    assert_eq!(subscribe(&mut sub, 2, &without, None).await, [0]);
    let mut publisher = RawClient::connected_v5(broker.addr, "pub").await;
    publish_acked(&mut publisher, "m/x", b"0123456789", 1, false).await;
    publish_acked(&mut publisher, "m/y", b"end", 2, false).await;
    let got = publishes_until(&mut sub, b"end").await;
    let seen: Vec<(&[u8], Vec<u32>)> = got.iter().map(|p| (&p.payload[..], ids(p))).collect();
    assert_eq!(
        seen,
        [(&b"0123456789"[..], vec![]), (&b"end"[..], vec![])],
        "the copy with identifier 5 is one property too large"
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn subscription_identifier_0_and_a_client_publish_with_one_are_protocol_errors() {
    let broker = TestBroker::default().await;
    let mut zero = RawClient::connected_v5(broker.addr, "zero").await;
    // Our encoder refuses identifier 0, so by hand: packet id 1, properties [0x0B 0],
    // filter "z", options 0.
    zero.send_raw(&[0x82, 9, 0, 1, 2, 0x0B, 0, 0, 1, b'z', 0])
        .await;
    assert_eq!(disconnect_code(&mut zero).await, 0x82);
    // Two identifiers in one SUBSCRIBE (3.8.2.1.2).
    let mut twice = RawClient::connected_v5(broker.addr, "twice").await;
    twice
        .send_raw(&[0x82, 11, 0, 1, 4, 0x0B, 1, 0x0B, 2, 0, 1, b'z', 0])
        .await;
    assert_eq!(disconnect_code(&mut twice).await, 0x82);

    let mut sub = RawClient::connected_v5(broker.addr, "sub").await;
    assert_eq!(
        subscribe(&mut sub, 1, &[Filter::new("p/#", QoS::AtMostOnce)], None).await,
        [0]
    );
    let mut bad = RawClient::connected_v5(broker.addr, "bad").await;
    let with_id = Properties {
        subscription_identifiers: vec![3],
        ..Properties::default()
    };
    bad.send(publish(
        "p/x",
        b"no",
        QoS::AtLeastOnce,
        Some(1),
        false,
        Some(with_id),
    ))
    .await;
    assert_eq!(disconnect_code(&mut bad).await, 0x82, "3.3.4-6");
    // Not routed: the subscriber's next message is this one.
    let mut good = RawClient::connected_v5(broker.addr, "good").await;
    publish_acked(&mut good, "p/x", b"yes", 1, false).await;
    let got = publishes_until(&mut sub, b"yes").await;
    assert_eq!(got.len(), 1, "{got:?}");
    broker.shutdown().await;
}

/// A rumqttc v5 client whose incoming PUBLISH packets arrive on a channel.
async fn rumqttc_v5(
    broker: &TestBroker,
    client_id: &str,
) -> (
    rumqttc::v5::AsyncClient,
    mpsc::UnboundedReceiver<rumqttc::v5::mqttbytes::v5::Publish>,
    mpsc::UnboundedReceiver<()>,
) {
    use rumqttc::v5::{mqttbytes::v5::Packet as P, Event, MqttOptions};
    let options = MqttOptions::new(client_id, "127.0.0.1", broker.addr.port());
    let (client, mut eventloop) = rumqttc::v5::AsyncClient::new(options, 100);
    let (publishes_tx, publishes) = mpsc::unbounded_channel();
    let (acks_tx, acks) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(event) = eventloop.poll().await {
            match event {
                Event::Incoming(P::Publish(p)) => {
                    let _ = publishes_tx.send(p);
                }
                Event::Incoming(P::SubAck(_) | P::PubAck(_)) => {
                    let _ = acks_tx.send(());
                }
                _ => {}
            }
        }
    });
    (client, publishes, acks)
}

async fn next<T>(rx: &mut mpsc::UnboundedReceiver<T>) -> T {
    tokio::time::timeout(STEP, rx.recv())
        .await
        .expect("in time")
        .expect("event loop running")
}

#[tokio::test]
async fn v3_and_v5_clients_exchange_messages_v5_properties_only_for_v5() {
    use rumqttc::v5::mqttbytes::v5::{PublishProperties, SubscribeProperties};
    use rumqttc::v5::mqttbytes::QoS as Q5;
    let broker = TestBroker::default().await;
    let mut v3 = Client::connect(broker.addr, "v3").await;
    v3.subscribe("mix/#", rumqttc::QoS::AtLeastOnce).await;
    let (v5, mut v5_publishes, mut v5_acks) = rumqttc_v5(&broker, "v5").await;
    let id = SubscribeProperties {
        id: Some(11),
        user_properties: Vec::new(),
    };
    v5.subscribe_with_properties("mix/#", Q5::AtLeastOnce, id)
        .await
        .expect("subscribe");
    next(&mut v5_acks).await;

    // v5 -> v3: the payload arrives, the properties are dropped (3.1.1 has none).
    let properties = PublishProperties {
        content_type: Some("text/plain".into()),
        user_properties: vec![("k".into(), "v".into())],
        ..PublishProperties::default()
    };
    v5.publish_with_properties("mix/a", Q5::AtLeastOnce, false, "from v5", properties)
        .await
        .expect("publish");
    let got = v3.next_publish().await;
    assert_eq!(
        (&got.topic[..], &got.payload[..]),
        ("mix/a", &b"from v5"[..])
    );
    // The v5 subscriber (it did not ask for No Local) gets its own, with the properties.
    let own = next(&mut v5_publishes).await;
    let props = own.properties.expect("properties");
    assert_eq!(props.content_type.as_deref(), Some("text/plain"));
    assert_eq!(props.user_properties, [("k".to_owned(), "v".to_owned())]);
    assert_eq!(props.subscription_identifiers, [11]);

    // v3 -> v5: the v5 subscriber gets the payload and only its subscription identifier.
    v3.publish("mix/b", rumqttc::QoS::AtLeastOnce, false, b"from v3")
        .await;
    let got = next(&mut v5_publishes).await;
    assert_eq!(&got.payload[..], b"from v3");
    let props = got.properties.expect("the subscription identifier");
    assert_eq!(props.subscription_identifiers, [11]);
    assert_eq!(props.content_type, None);
    assert!(props.user_properties.is_empty());
    broker.shutdown().await;
}

#[tokio::test]
async fn a_v3_subscriber_gets_a_v5_publish_without_properties_over_raw_packets() {
    let broker = TestBroker::default().await;
    let (mut v3, _) = RawClient::connected(broker.addr, "v3raw", true).await;
    v3.subscribe(1, &[("raw/#", QoS::AtLeastOnce)]).await;
    let mut v5 = RawClient::connected_v5(broker.addr, "v5raw").await;
    let properties = Properties {
        response_topic: Some("r/1".into()),
        correlation_data: Some(Bytes::from_static(b"c")),
        ..Properties::default()
    };
    v5.send(publish(
        "raw/x",
        b"p",
        QoS::AtLeastOnce,
        Some(1),
        true,
        Some(properties),
    ))
    .await;
    let got = v3.recv_publish().await;
    assert_eq!((&got.payload[..], got.properties), (&b"p"[..], None));
    // 3.1.1 live delivery: RETAIN=0.
    assert!(!got.retain);
    // And a v3 PUBLISH reaches a v5 subscriber with no properties but its identifier.
    let mut sub5 = RawClient::connected_v5(broker.addr, "sub5").await;
    assert_eq!(
        subscribe(
            &mut sub5,
            1,
            &[Filter::new("raw/#", QoS::AtMostOnce)],
            Some(2)
        )
        .await,
        [0]
    );
    publishes_until(&mut sub5, b"p").await; // the retained one, at SUBSCRIBE
    v3.send(publish_packet("raw/y", b"q", QoS::AtMostOnce, None, false))
        .await;
    let got = publishes_until(&mut sub5, b"q").await.remove(0);
    let props = got.properties.expect("identifier");
    assert_eq!(
        *props,
        Properties {
            subscription_identifiers: vec![2],
            ..Properties::default()
        }
    );
    broker.shutdown().await;
}
