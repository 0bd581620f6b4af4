//! Parking: an idle plain-TCP connection gives up its task and waits in the broker's readiness
//! loop (`broker::connection::parking`). Every way into a connection must work the same while
//! it is parked: the client's packets (PINGREQ answered by the loop itself, anything else by a
//! new task), deliveries, keep-alive expiry with the will, takeover, the console's kick,
//! shutdown. The broker's `connections_parked` gauge says parking happened, so each test fails
//! if connections stop parking.

use std::time::Duration;

use crate::support::{
    ack, connect_packet, connect_v5, publish_packet, will, RawClient, TestBroker,
};
use ferromq::protocol::{Packet, QoS, ReasonCode};
use tokio::time::Instant;

#[tokio::test]
async fn parked_connections_answer_pingreq_in_mqtt_3_and_5() {
    let broker = TestBroker::default().await;
    let (mut v3, _) = RawClient::connected(broker.addr, "park-v3", true).await;
    let mut v5 = RawClient::connected_v5(broker.addr, "park-v5").await;
    broker.parked(2).await;
    // Parked connections are still connections: counted as such.
    assert_eq!(
        broker.handle.core().counters.snapshot().connections_current,
        2
    );
    for client in [&mut v3, &mut v5] {
        client.send(Packet::PingReq).await;
        assert_eq!(client.recv().await, Packet::PingResp);
    }
    // And they park again.
    broker.parked(2).await;
    v5.send(Packet::PingReq).await;
    assert_eq!(v5.recv().await, Packet::PingResp);
    broker.shutdown().await;
}

#[tokio::test]
async fn a_publish_after_parking_is_acknowledged_and_delivered_to_a_parked_subscriber() {
    let broker = TestBroker::default().await;
    let (mut sub, _) = RawClient::connected(broker.addr, "park-sub", true).await;
    assert_eq!(sub.subscribe(1, &[("park/t", QoS::AtLeastOnce)]).await, [1]);
    let (mut publisher, _) = RawClient::connected(broker.addr, "park-pub", true).await;
    broker.parked(2).await;
    publisher
        .send(publish_packet(
            "park/t",
            b"woken",
            QoS::AtLeastOnce,
            Some(7),
            false,
        ))
        .await;
    assert_eq!(publisher.recv().await, Packet::PubAck(ack(7)));
    let delivered = sub.recv_publish().await;
    assert_eq!(&delivered.payload[..], b"woken");
    let id = delivered.packet_id.expect("QoS 1 delivery has a packet id");
    sub.send(Packet::PubAck(ack(id))).await;
    broker.shutdown().await;
}

#[tokio::test]
async fn subscribe_after_parking_works_and_receives() {
    let broker = TestBroker::default().await;
    let mut c = RawClient::connected_v5(broker.addr, "park-late-sub").await;
    broker.parked(1).await;
    assert_eq!(c.subscribe(1, &[("park/late", QoS::AtMostOnce)]).await, [0]);
    let (mut publisher, _) = RawClient::connected(broker.addr, "park-late-pub", true).await;
    publisher
        .send(publish_packet(
            "park/late",
            b"hi",
            QoS::AtMostOnce,
            None,
            false,
        ))
        .await;
    assert_eq!(&c.recv_publish().await.payload[..], b"hi");
    broker.shutdown().await;
}

/// The loop keeps the deadline: a parked connection that sends nothing is closed at 1.5 x its
/// keep-alive and its will is published; one that sends PINGREQs (answered by the loop) lives on.
#[tokio::test]
async fn keep_alive_expiry_of_a_parked_connection_closes_it_and_publishes_the_will() {
    let broker = TestBroker::default().await;
    let (mut watcher, _) = RawClient::connected(broker.addr, "park-watcher", true).await;
    assert_eq!(
        watcher
            .subscribe(1, &[("will/park", QoS::AtLeastOnce)])
            .await,
        [1]
    );
    let mut connect = connect_packet("park-sleepy", true, 2);
    connect.will = Some(will("will/park", b"gone", QoS::AtLeastOnce, false));
    let (mut sleepy, _) = RawClient::connect_ok(broker.addr, connect).await;
    let start = Instant::now();
    let (mut pinger, _) =
        RawClient::connect_ok(broker.addr, connect_packet("park-pinger", true, 2)).await;
    broker.parked(3).await;
    // The pinger keeps its connection for two limits (3 s each), parked between PINGREQs.
    let pinging = tokio::spawn(async move {
        for _ in 0..6 {
            tokio::time::sleep(Duration::from_millis(1000)).await;
            pinger.send(Packet::PingReq).await;
            assert_eq!(pinger.recv().await, Packet::PingResp);
        }
        pinger
    });
    let closed = sleepy
        .closed_within(Duration::from_secs(10))
        .await
        .map(|_| start.elapsed())
        .expect("closed at the deadline");
    assert!(
        closed >= Duration::from_millis(2900) && closed <= Duration::from_millis(4000),
        "closed after {closed:?}, expected 3 s (1.5 x keep-alive 2 s)"
    );
    let will = watcher.recv_publish().await;
    assert_eq!(&will.payload[..], b"gone");
    if let Some(id) = will.packet_id {
        watcher.send(Packet::PubAck(ack(id))).await;
    }
    let mut pinger = pinging
        .await
        .expect("the pinger's PINGREQs were all answered");
    assert!(
        broker.handle.core().counters.connections_parked() >= 1,
        "the pinger stays parked between PINGREQs"
    );
    pinger.send(Packet::PingReq).await;
    assert_eq!(pinger.recv().await, Packet::PingResp);
    broker.shutdown().await;
}

/// A real client (rumqttc, keep-alive 2 s: a PINGREQ every 2 s, answered while parked) that
/// publishes and receives after every park.
#[tokio::test]
async fn a_rumqttc_client_works_across_parking() {
    let broker = TestBroker::default().await;
    let mut options = crate::support::options(broker.addr, "park-rumqttc");
    options.set_keep_alive(Duration::from_secs(2));
    let mut client = crate::support::Client::connect_with(options).await;
    client
        .subscribe("park/rumqttc", rumqttc::QoS::AtLeastOnce)
        .await;
    for round in 0..3u8 {
        broker.parked(1).await;
        // Past at least one of the client's PINGREQs.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        client
            .publish("park/rumqttc", rumqttc::QoS::AtLeastOnce, false, &[round])
            .await;
        let got = client.next_publish().await;
        assert_eq!(&got.payload[..], &[round]);
    }
    broker.shutdown().await;
}

#[tokio::test]
async fn takeover_of_a_parked_client_closes_it_in_mqtt_3_and_5() {
    let broker = TestBroker::with_uri_options(&["allowLinkStealing=true"]).await;
    let (mut old_v3, _) = RawClient::connected(broker.addr, "park-steal-3", true).await;
    let mut old_v5 = RawClient::connected_v5(broker.addr, "park-steal-5").await;
    broker.parked(2).await;
    let (_new_v3, _) = RawClient::connected(broker.addr, "park-steal-3", true).await;
    old_v3.expect_closed().await;
    let _new_v5 = RawClient::connected_v5(broker.addr, "park-steal-5").await;
    match old_v5.recv_within(Duration::from_secs(5)).await {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason, ReasonCode::SessionTakenOver.code()),
        other => panic!("expected DISCONNECT 0x8E, got {other:?}"),
    }
    old_v5.expect_closed().await;
    broker.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_parked_connections_with_disconnect_for_mqtt_5() {
    let broker = TestBroker::default().await;
    let (mut v3, _) = RawClient::connected(broker.addr, "park-stop-3", true).await;
    let mut v5 = RawClient::connect_ok(broker.addr, connect_v5("park-stop-5", true, None))
        .await
        .0;
    broker.parked(2).await;
    let stopping = tokio::spawn(broker.shutdown());
    match v5.recv_within(Duration::from_secs(5)).await {
        Some(Packet::Disconnect(d)) => {
            assert_eq!(d.reason, ReasonCode::ServerShuttingDown.code())
        }
        other => panic!("expected DISCONNECT 0x8B, got {other:?}"),
    }
    v3.expect_closed().await;
    stopping.await.expect("shutdown completes");
}

/// A client that only publishes (small packets the readiness loop reads and hands to a new
/// task) and never sends PINGREQ is alive: every byte moves the keep-alive deadline, also the
/// ones read while the connection was parked.
#[tokio::test]
async fn publishes_read_while_parked_keep_the_connection_alive() {
    let broker = TestBroker::default().await;
    let (mut client, _) =
        RawClient::connect_ok(broker.addr, connect_packet("park-talker", true, 2)).await;
    assert_eq!(
        client.subscribe(1, &[("park/talk", QoS::AtMostOnce)]).await,
        [0]
    );
    // Five publishes 1.5 s apart: 7.5 s in all, well past the 3 s limit (1.5 x 2 s), each
    // arriving at a parked connection.
    for round in 0..5u8 {
        broker.parked(1).await;
        tokio::time::sleep(Duration::from_millis(1000)).await;
        client
            .send(publish_packet(
                "park/talk",
                &[round],
                QoS::AtMostOnce,
                None,
                false,
            ))
            .await;
        assert_eq!(&client.recv_publish().await.payload[..], &[round]);
    }
    broker.shutdown().await;
}

/// Many park and wake cycles with real clients lose and duplicate nothing. Publishers pause
/// between some publishes longer than the broker's idle delay (500 ms), so publishers and
/// subscribers park and wake again and again while messages are in flight; every subscriber
/// (QoS 1 and QoS 2 subscriptions, rumqttc acknowledging) must receive every publish exactly
/// once (no reconnect: a duplicate would be a broker resend) and each publisher's publishes in
/// the order they were acknowledged.
#[tokio::test]
async fn park_and_wake_cycles_under_traffic_lose_and_duplicate_nothing() {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    const PUBLISHERS: usize = 3;
    const PER_PUBLISHER: usize = 12;
    const SUBSCRIBERS: usize = 4;
    let broker = TestBroker::default().await;
    let most_parked = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (core, most_parked) = (broker.handle.core().clone(), most_parked.clone());
        tokio::spawn(async move {
            loop {
                most_parked.fetch_max(core.counters.connections_parked(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let mut subscribers = Vec::new();
    for s in 0..SUBSCRIBERS {
        let mut client =
            crate::support::Client::connect(broker.addr, &format!("cycle-sub-{s}")).await;
        let qos = if s % 2 == 0 {
            rumqttc::QoS::AtLeastOnce
        } else {
            rumqttc::QoS::ExactlyOnce
        };
        client.subscribe("cycle/#", qos).await;
        subscribers.push(tokio::spawn(async move {
            let mut got: Vec<String> = Vec::new();
            while got.len() < PUBLISHERS * PER_PUBLISHER {
                match client.publish_within(Duration::from_secs(10)).await {
                    Some(p) => got.push(String::from_utf8_lossy(&p.payload).into_owned()),
                    None => break,
                }
            }
            // Anything more would be a duplicate.
            while let Some(p) = client.publish_within(Duration::from_millis(300)).await {
                got.push(String::from_utf8_lossy(&p.payload).into_owned());
            }
            client.disconnect().await;
            got
        }));
    }
    let mut publishers = Vec::new();
    for p in 0..PUBLISHERS {
        let mut client =
            crate::support::Client::connect(broker.addr, &format!("cycle-pub-{p}")).await;
        publishers.push(tokio::spawn(async move {
            for k in 0..PER_PUBLISHER {
                // 0, 60, 650 or 800 ms, the same for every publisher: in the long pauses
                // the broker parks everyone, publishers and subscribers.
                let gap_ms = [0, 60, 650, 800][k % 4];
                tokio::time::sleep(Duration::from_millis(gap_ms)).await;
                let qos = if k % 2 == 0 {
                    rumqttc::QoS::AtLeastOnce
                } else {
                    rumqttc::QoS::ExactlyOnce
                };
                let payload = format!("p{p}-{k:02}");
                client
                    .publish(&format!("cycle/p{p}"), qos, false, payload.as_bytes())
                    .await;
            }
            client.disconnect().await;
        }));
    }
    for publisher in publishers {
        publisher.await.expect("publisher");
    }
    for (s, subscriber) in subscribers.into_iter().enumerate() {
        let got = subscriber.await.expect("subscriber");
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for payload in &got {
            *counts.entry(payload.as_str()).or_default() += 1;
        }
        for p in 0..PUBLISHERS {
            let expected: Vec<String> =
                (0..PER_PUBLISHER).map(|k| format!("p{p}-{k:02}")).collect();
            let mine: Vec<&String> = got
                .iter()
                .filter(|g| g.starts_with(&format!("p{p}-")))
                .collect();
            for e in &expected {
                assert_eq!(
                    counts.get(e.as_str()),
                    Some(&1),
                    "subscriber {s}: {e} in {got:?}"
                );
            }
            assert!(
                mine.windows(2).all(|w| w[0] < w[1]),
                "subscriber {s}: publisher {p}'s messages out of order: {mine:?}"
            );
        }
        assert_eq!(
            got.len(),
            PUBLISHERS * PER_PUBLISHER,
            "subscriber {s}: {got:?}"
        );
    }
    sampler.abort();
    let most = most_parked.load(Ordering::Relaxed);
    assert!(
        most >= (PUBLISHERS + SUBSCRIBERS - 2) as u64,
        "connections parked during the traffic (at most {most} at once): the test must cycle them"
    );
    broker.shutdown().await;
}

/// A connection parks soon after its CONNECT (a connect storm must not leave a task per
/// connection behind), and, once woken, waits the longer interval before parking again (a
/// client active every few hundred ms keeps its task).
#[tokio::test]
async fn a_new_connection_parks_soon_and_a_woken_one_waits_longer() {
    use ferromq::broker::connection::{PARK_AFTER_CONNECT, PARK_AFTER_IDLE};
    let broker = TestBroker::default().await;
    let started = Instant::now();
    let (mut client, _) = RawClient::connected(broker.addr, "park-soon", true).await;
    broker.parked(1).await;
    let first_park = started.elapsed();
    // The short interval: the CONNACK's write counts as activity, so the second check parks
    // it (~100 ms). With only the long interval the second check would come at ~1,000 ms; the
    // bound leaves a loaded machine ~700 ms.
    assert!(
        first_park < PARK_AFTER_IDLE + Duration::from_millis(300),
        "parked {first_park:?} after CONNECT (short interval {PARK_AFTER_CONNECT:?})"
    );
    // Woken by a packet the loop does not answer itself.
    assert_eq!(
        client.subscribe(1, &[("park/soon", QoS::AtMostOnce)]).await,
        [0]
    );
    let woken = Instant::now();
    let counters = &broker.handle.core().counters;
    while woken.elapsed() < PARK_AFTER_IDLE - Duration::from_millis(100) {
        assert_eq!(
            counters.connections_parked(),
            0,
            "parked again {:?} after a wake-up",
            woken.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    broker.parked(1).await;
    client.send(Packet::PingReq).await;
    assert_eq!(client.recv().await, Packet::PingResp);
    broker.shutdown().await;
}

/// What a parked connection keeps and what it rebuilds (`parking/record.rs`): its MQTT 5 topic
/// aliases, its Receive Maximum and its login's rights survive the park; its authorization
/// decisions are dropped and made again, so a denied topic stays denied and an allowed one
/// allowed.
#[tokio::test]
async fn mqtt5_state_and_rights_survive_a_park() {
    use bytes::Bytes;
    use ferromq::protocol::{Properties, Publish};
    let publish = |topic: &str, alias: Option<u16>, id: u16, payload: &'static [u8]| {
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: topic.into(),
            packet_id: Some(id),
            payload: Bytes::from_static(payload),
            properties: alias.map(|alias| {
                Box::new(Properties {
                    topic_alias: Some(alias),
                    ..Properties::default()
                })
            }),
        })
    };
    let broker = TestBroker::from_xml(&crate::support::activemq_xml(
        &[],
        crate::mqtt5_acks::SECURITY,
    ))
    .await;
    let login = |id: &str| {
        let mut connect = connect_v5(id, true, None);
        connect.username = Some("dev".into());
        connect.password = Some(Bytes::from_static(b"pw"));
        connect.properties = Some(Box::new(Properties {
            receive_maximum: Some(1),
            ..Properties::default()
        }));
        connect
    };
    let (mut sub, _) = RawClient::connect_ok(broker.addr, login("park-alias-sub")).await;
    assert_eq!(sub.subscribe(1, &[("open/t", QoS::AtLeastOnce)]).await, [1]);
    let (mut publisher, _) = RawClient::connect_ok(broker.addr, login("park-alias-pub")).await;
    let puback = |packet: Packet| match packet {
        Packet::PubAck(a) => (a.packet_id, a.reason),
        other => panic!("expected PUBACK, got {other:?}"),
    };
    publisher.send(publish("open/t", Some(1), 1, b"one")).await;
    assert_eq!(puback(publisher.recv().await), (1, 0));
    publisher.send(publish("closed/t", None, 2, b"no")).await;
    assert_eq!(puback(publisher.recv().await), (2, 0x87));
    let first = sub.recv_publish().await;
    assert_eq!(&first.payload[..], b"one");
    sub.send(Packet::PubAck(ack(first.packet_id.expect("QoS 1"))))
        .await;
    broker.parked(2).await;
    // The alias only: the topic comes from the state kept while parked.
    publisher.send(publish("", Some(1), 3, b"two")).await;
    assert_eq!(puback(publisher.recv().await), (3, 0));
    publisher.send(publish("closed/t", None, 4, b"no")).await;
    assert_eq!(
        puback(publisher.recv().await),
        (4, 0x87),
        "denied after the park"
    );
    publisher.send(publish("open/t", None, 5, b"three")).await;
    assert_eq!(puback(publisher.recv().await), (5, 0));
    // Receive Maximum 1 kept: the second delivery waits for the first's PUBACK.
    let second = sub.recv_publish().await;
    assert_eq!(
        (&second.topic[..], &second.payload[..]),
        ("open/t", &b"two"[..])
    );
    assert!(
        sub.recv_within(Duration::from_millis(300)).await.is_none(),
        "a second delivery in flight past the client's Receive Maximum of 1"
    );
    sub.send(Packet::PubAck(ack(second.packet_id.expect("QoS 1"))))
        .await;
    assert_eq!(&sub.recv_publish().await.payload[..], b"three");
    broker.shutdown().await;
}

/// A publisher that a stuck subscriber paused once (2 s, then given up on) is not paused for
/// it again after it parked: the parked record keeps the pause's list of sessions given up on.
#[tokio::test]
async fn a_publisher_that_gave_up_on_a_stuck_subscriber_is_not_paused_again_after_a_park() {
    use crate::support::{activemq_xml, pending_limit_policy};
    use ferromq::broker::connection::PARK_AFTER_IDLE;
    use ferromq::broker::routing::limits::{
        pending_hard_cap, DEFAULT_SUBSCRIPTION_PREFETCH, OVERFILL_PAUSE_LIMIT_MS,
    };
    const STUCK_LIMIT: usize = 10;
    let policy = pending_limit_policy("park.stuck", STUCK_LIMIT);
    let broker = TestBroker::from_xml(&activemq_xml(&[], &policy)).await;
    // Never reads its socket, so never acknowledges.
    let (mut stuck, _) = RawClient::connected(broker.addr, "park-stuck-sub", true).await;
    assert_eq!(
        stuck
            .subscribe(1, &[("park/stuck", QoS::AtLeastOnce)])
            .await,
        [1]
    );
    let (mut publisher, _) = RawClient::connected(broker.addr, "park-stuck-pub", true).await;
    let publish = |id: u16| publish_packet("park/stuck", b"x", QoS::AtLeastOnce, Some(id), false);
    let messages = DEFAULT_SUBSCRIPTION_PREFETCH + pending_hard_cap(STUCK_LIMIT) + 50;
    let started = Instant::now();
    for i in 0..messages {
        let id = u16::try_from(i % 60_000 + 1).expect("packet id");
        publisher.send(publish(id)).await;
        assert_eq!(publisher.recv().await, Packet::PubAck(ack(id)));
    }
    let pause = Duration::from_millis(OVERFILL_PAUSE_LIMIT_MS);
    assert!(started.elapsed() >= pause, "paused once before giving up");
    let counters = &broker.handle.core().counters;
    let parked_by = Instant::now() + PARK_AFTER_IDLE * 4;
    while counters.connections_parked() == 0 && Instant::now() < parked_by {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Both may park (the stuck subscriber's deliveries fit its socket buffer); the publisher
    // has had nothing to do for longer than its park delay.
    tokio::time::sleep(PARK_AFTER_IDLE * 2).await;
    assert!(counters.connections_parked() >= 1, "nothing parked");
    // A pause stops reading after the publish that caused it (its PUBACK goes out): the
    // second publish is the one that would wait.
    let again = Instant::now();
    for id in [1, 2] {
        publisher.send(publish(id)).await;
        assert_eq!(publisher.recv().await, Packet::PubAck(ack(id)));
    }
    assert!(
        again.elapsed() < pause / 2,
        "paused again for {:?} after a park",
        again.elapsed()
    );
    broker.shutdown().await;
}
