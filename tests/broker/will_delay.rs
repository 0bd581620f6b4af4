//! MQTT 5 Will Delay Interval (3.1.2.5, 3.1.3-9): a will left by a connection that ended
//! without a normal DISCONNECT goes out at the earlier of its delay and its session's end; a
//! connection resuming the session within the delay cancels it; one with Clean Start 1 ends
//! the old session, so the will goes out then.
//!
//! Most tests serve the connections in-process (`TestBroker::duplex`) with tokio's clock
//! paused, so the times are exact; one runs in real time with a real MQTT 5 client (rumqttc).

use std::time::Duration;

use bytes::Bytes;
use ferromq::protocol::{Disconnect, LastWill, Packet, Properties, QoS};
use tokio::io::DuplexStream;
use tokio::time::Instant;

use crate::support::{connect_v5, RawClient, TestBroker};

/// Paused time is exact; this only allows for the broker's own rounding.
const SLACK: Duration = Duration::from_millis(20);
const WILL_TOPIC: &str = "wd/t";

fn delayed_will(delay_secs: u32) -> LastWill {
    LastWill {
        topic: WILL_TOPIC.into(),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Some(Box::new(Properties {
            will_delay_interval: Some(delay_secs),
            content_type: Some("text/plain".into()),
            user_properties: vec![("why".into(), "delay".into())],
            ..Properties::default()
        })),
    }
}

/// An MQTT 5 client subscribed to the will topic.
async fn watcher(broker: &TestBroker) -> RawClient<DuplexStream> {
    let (mut w, _) = RawClient::handshake(broker.duplex(), connect_v5("watcher", true, None)).await;
    w.subscribe(1, &[("wd/#", QoS::AtLeastOnce)]).await;
    w
}

/// Client `id` connected with a will delayed `delay_secs` and Session Expiry `expiry_secs`.
async fn with_will(
    broker: &TestBroker,
    id: &str,
    expiry_secs: Option<u32>,
    delay_secs: u32,
) -> RawClient<DuplexStream> {
    let mut connect = connect_v5(id, true, expiry_secs);
    connect.will = Some(delayed_will(delay_secs));
    RawClient::handshake(broker.duplex(), connect).await.0
}

/// How long after `since` the will arrives at `watcher`, if it does within `within`.
async fn will_arrival(
    watcher: &mut RawClient<DuplexStream>,
    since: Instant,
    within: Duration,
) -> Option<Duration> {
    match watcher.recv_within(within).await {
        Some(Packet::Publish(p)) => {
            assert_eq!(&*p.topic, WILL_TOPIC);
            assert_eq!(&p.payload[..], b"gone");
            let props = p.properties.expect("the will's properties are forwarded");
            assert_eq!(props.content_type.as_deref(), Some("text/plain"));
            assert_eq!(
                props.user_properties,
                vec![("why".to_owned(), "delay".to_owned())]
            );
            assert_eq!(
                props.will_delay_interval, None,
                "the delay is the will's own"
            );
            Some(since.elapsed())
        }
        None => None,
        Some(other) => panic!("unexpected {other:?}"),
    }
}

fn assert_about(measured: Option<Duration>, expected: Duration) {
    let measured = measured.expect("the will should be published");
    assert!(
        measured + SLACK >= expected && measured <= expected + SLACK,
        "will after {measured:?}, expected {expected:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_dropped_connection_s_will_waits_for_its_delay() {
    let broker = TestBroker::default().await;
    let mut w = watcher(&broker).await;
    let client = with_will(&broker, "x", Some(60), 3).await;
    drop(client);
    let dropped = Instant::now();
    assert_about(
        will_arrival(&mut w, dropped, Duration::from_secs(10)).await,
        Duration::from_secs(3),
    );
    broker.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn resuming_the_session_within_the_delay_cancels_the_will() {
    let broker = TestBroker::default().await;
    let mut w = watcher(&broker).await;
    drop(with_will(&broker, "x", Some(60), 3).await);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (mut back, ack) =
        RawClient::handshake(broker.duplex(), connect_v5("x", false, Some(60))).await;
    assert!(ack.session_present, "the session lived on");
    let start = Instant::now();
    assert_eq!(
        will_arrival(&mut w, start, Duration::from_secs(30)).await,
        None,
        "a resumed session's will is not published"
    );
    // The resumed connection had no will: leaving normally publishes nothing either.
    back.send(Packet::Disconnect(Disconnect {
        reason: 0,
        properties: None,
    }))
    .await;
    assert_eq!(
        will_arrival(&mut w, start, Duration::from_secs(5)).await,
        None
    );
    broker.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_clean_start_reconnect_ends_the_session_and_publishes_the_will_then() {
    let broker = TestBroker::default().await;
    let mut w = watcher(&broker).await;
    drop(with_will(&broker, "x", Some(60), 30).await);
    let dropped = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_new, ack) = RawClient::handshake(broker.duplex(), connect_v5("x", true, Some(60))).await;
    assert!(!ack.session_present);
    assert_about(
        will_arrival(&mut w, dropped, Duration::from_secs(5)).await,
        Duration::from_secs(1),
    );
    broker.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_session_expiring_before_the_delay_publishes_the_will_at_its_end() {
    let broker = TestBroker::default().await;
    let mut w = watcher(&broker).await;
    drop(with_will(&broker, "x", Some(2), 30).await);
    let dropped = Instant::now();
    assert_about(
        will_arrival(&mut w, dropped, Duration::from_secs(10)).await,
        Duration::from_secs(2),
    );
    // The session ended with it: a resume finds none.
    let (_c, ack) = RawClient::handshake(broker.duplex(), connect_v5("x", false, Some(60))).await;
    assert!(!ack.session_present);
    broker.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn session_expiry_zero_ends_the_session_at_disconnect_so_the_will_goes_at_once() {
    let broker = TestBroker::default().await;
    let mut w = watcher(&broker).await;
    drop(with_will(&broker, "x", None, 30).await);
    let dropped = Instant::now();
    assert_about(
        will_arrival(&mut w, dropped, Duration::from_secs(5)).await,
        Duration::ZERO,
    );
    broker.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn disconnect_0x00_discards_a_delayed_will_and_0x04_waits_for_its_delay() {
    let broker = TestBroker::default().await;
    let mut w = watcher(&broker).await;
    for (id, reason) in [("quiet", 0x00), ("loud", 0x04)] {
        let mut c = with_will(&broker, id, Some(60), 2).await;
        c.send(Packet::Disconnect(Disconnect {
            reason,
            properties: None,
        }))
        .await;
        c.expect_closed().await;
    }
    let closed = Instant::now();
    assert_about(
        will_arrival(&mut w, closed, Duration::from_secs(10)).await,
        Duration::from_secs(2),
    );
    assert_eq!(
        will_arrival(&mut w, closed, Duration::from_secs(30)).await,
        None,
        "one will only: 0x00 discarded the other"
    );
    broker.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn many_pending_wills_go_out_in_deadline_order() {
    let broker = TestBroker::default().await;
    let mut w = watcher(&broker).await;
    // Armed in reverse order of their deadlines.
    for (id, delay) in [("c", 3), ("b", 2), ("a", 1)] {
        let mut connect = connect_v5(id, true, Some(60));
        let mut will = delayed_will(delay);
        will.payload = Bytes::copy_from_slice(id.as_bytes());
        connect.will = Some(will);
        drop(RawClient::handshake(broker.duplex(), connect).await.0);
    }
    let start = Instant::now();
    for (id, at) in [("a", 1), ("b", 2), ("c", 3)] {
        match w.recv_within(Duration::from_secs(10)).await {
            Some(Packet::Publish(p)) => {
                assert_eq!(&p.payload[..], id.as_bytes());
                assert_about(Some(start.elapsed()), Duration::from_secs(at));
            }
            other => panic!("expected the will of {id}, got {other:?}"),
        }
    }
    broker.shutdown().await;
}

/// Real time, real sockets, a real MQTT 5 client library: the will of a client whose socket
/// is dropped arrives after its 2 s delay, not before; a client that comes back within 1 s
/// cancels it.
#[tokio::test]
async fn real_client_will_delay_and_cancel_in_real_time() {
    use rumqttc::v5::mqttbytes::v5::{ConnectProperties, LastWill, LastWillProperties};
    use rumqttc::v5::mqttbytes::QoS as V5QoS;
    use rumqttc::v5::{AsyncClient, Event, EventLoop, Incoming, MqttOptions};

    fn options(broker: &TestBroker, id: &str, clean_start: bool, will: bool) -> MqttOptions {
        let mut o = MqttOptions::new(id, "127.0.0.1", broker.addr.port());
        o.set_clean_start(clean_start);
        let mut props = ConnectProperties::new();
        props.session_expiry_interval = Some(60);
        o.set_connect_properties(props);
        if will {
            let will_props = LastWillProperties {
                delay_interval: Some(2),
                payload_format_indicator: None,
                message_expiry_interval: None,
                content_type: None,
                response_topic: None,
                correlation_data: None,
                user_properties: Vec::new(),
            };
            o.set_last_will(LastWill::new(
                "rw/t",
                id.as_bytes().to_vec(),
                V5QoS::AtLeastOnce,
                false,
                Some(will_props),
            ));
        }
        o
    }

    /// Poll until CONNACK; returns the event loop (dropping it drops the socket).
    async fn connected(o: MqttOptions) -> (AsyncClient, EventLoop, bool) {
        let (client, mut events) = AsyncClient::new(o, 10);
        loop {
            match tokio::time::timeout(Duration::from_secs(5), events.poll()).await {
                Ok(Ok(Event::Incoming(Incoming::ConnAck(ack)))) => {
                    return (client, events, ack.session_present)
                }
                Ok(Ok(_)) => {}
                other => panic!("connect failed: {other:?}"),
            }
        }
    }

    let broker = TestBroker::default().await;
    let (watch, mut watch_events, _) = connected(options(&broker, "rwatch", true, false)).await;
    watch
        .subscribe("rw/#", V5QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    let (tx, mut wills) = tokio::sync::mpsc::unbounded_channel();
    let pump = tokio::spawn(async move {
        while let Ok(event) = watch_events.poll().await {
            match event {
                Event::Incoming(Incoming::Publish(p)) => {
                    let _ = tx.send((Instant::now(), p.payload));
                }
                Event::Incoming(Incoming::SubAck(_)) => {
                    let _ = tx.send((Instant::now(), Bytes::from_static(b"suback")));
                }
                _ => {}
            }
        }
    });
    assert_eq!(
        wills.recv().await.map(|w| w.1),
        Some(Bytes::from_static(b"suback"))
    );

    // Dropped for good: the will comes after 2 s.
    let (_gone, events, _) = connected(options(&broker, "rgone", true, true)).await;
    drop(events);
    let dropped = Instant::now();
    let (at, payload) = tokio::time::timeout(Duration::from_secs(6), wills.recv())
        .await
        .expect("the will arrives")
        .expect("channel open");
    assert_eq!(&payload[..], b"rgone");
    let after = at - dropped;
    assert!(
        after >= Duration::from_millis(1900) && after < Duration::from_millis(3500),
        "will after {after:?}, expected about 2 s"
    );

    // Dropped, back within 1 s: no will.
    let (_c, events, _) = connected(options(&broker, "rback", true, true)).await;
    drop(events);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (back, back_events, present) = connected(options(&broker, "rback", false, false)).await;
    assert!(present, "the session lived on");
    assert!(
        tokio::time::timeout(Duration::from_secs(3), wills.recv())
            .await
            .is_err(),
        "a resumed session's will is not published"
    );
    drop((back, back_events));
    pump.abort();
    broker.shutdown().await;
}

/// A pending will is authorized as its owner when it is published: one whose owner may not
/// write its topic is dropped (counted), another owner's goes out.
#[tokio::test(start_paused = true)]
async fn a_pending_will_is_published_only_if_its_owner_may_write_its_topic() {
    const SECURITY: &str = r#"
    <plugins>
      <simpleAuthenticationPlugin><users>
        <authenticationUser username="sensor" password="s" groups="devices"/>
        <authenticationUser username="reader" password="r" groups="readers"/>
      </users></simpleAuthenticationPlugin>
      <authorizationPlugin><map><authorizationMap><authorizationEntries>
        <authorizationEntry topic="wd.>" read="readers" write="devices" admin="devices,readers"/>
      </authorizationEntries></authorizationMap></map></authorizationPlugin>
    </plugins>"#;
    let broker = TestBroker::from_xml(&crate::support::activemq_xml(&[], SECURITY)).await;
    let login = |id: &str, user: &str, password: &'static str| {
        let mut c = connect_v5(id, true, Some(60));
        c.username = Some(user.into());
        c.password = Some(Bytes::from_static(password.as_bytes()));
        c
    };
    let (mut w, _) = RawClient::handshake(broker.duplex(), login("w", "reader", "r")).await;
    w.subscribe(1, &[("wd/#", QoS::AtLeastOnce)]).await;
    for (id, user, password, payload) in [
        ("denied", "reader", "r", &b"denied"[..]),
        ("allowed", "sensor", "s", &b"gone"[..]),
    ] {
        let mut connect = login(id, user, password);
        let mut will = delayed_will(1);
        will.payload = Bytes::copy_from_slice(payload);
        connect.will = Some(will);
        let (c, ack) = RawClient::handshake(broker.duplex(), connect).await;
        assert_eq!(ack.reason, ferromq::protocol::ConnectReason::Success);
        drop(c);
    }
    let dropped = Instant::now();
    assert_about(
        will_arrival(&mut w, dropped, Duration::from_secs(5)).await,
        Duration::from_secs(1),
    );
    assert_eq!(
        will_arrival(&mut w, dropped, Duration::from_secs(5)).await,
        None,
        "the will its owner may not write is not published"
    );
    let counters = broker.handle.counters();
    assert_eq!(counters.wills_published, 1);
    assert_eq!(counters.dropped_not_authorized, 1);
    broker.shutdown().await;
}

/// A broker that keeps no sessions past its shutdown (memory only) ends every session when it
/// stops: a will waiting for its delay goes out then (a durable broker keeps it pending
/// instead: `persist::will_delay`).
#[tokio::test]
async fn a_memory_only_shutdown_ends_the_session_so_a_delayed_will_goes_out() {
    let broker = TestBroker::default().await;
    let mut connect = connect_v5("x", true, Some(60));
    let mut will = delayed_will(30);
    will.retain = true;
    connect.will = Some(will);
    let (mut c, _) = RawClient::connect_ok(broker.addr, connect).await;
    let core = broker.handle.core().clone();
    broker.shutdown().await;
    c.expect_closed().await;
    assert!(
        core.retained_matching(WILL_TOPIC)
            .iter()
            .any(|m| &m.payload[..] == b"gone"),
        "the will was published (and retained) at the shutdown"
    );
    assert!(core.pending_wills.is_empty());
}

/// `offlineDurableSubscriberTimeout` caps a session that asked never to expire (0xFFFFFFFF) at
/// the interval its CONNACK grants (MQTT 5 3.2.2.3.2: the client uses the server's value): the
/// session ends then and its will is published then, not at the broker-wide sweep's next pass
/// (`offlineDurableSubscriberTaskSchedule`, 300 s here). A DISCONNECT that asks for 0xFFFFFFFF
/// is capped the same way.
#[tokio::test(start_paused = true)]
async fn a_never_expiring_session_ends_at_the_granted_cap_with_its_will() {
    let xml = crate::support::BrokerXml::new()
        .attributes(r#"offlineDurableSubscriberTimeout="20000""#)
        .mqtt(0, &[])
        .build();
    let broker = TestBroker::from_xml(&xml).await;
    let mut w = watcher(&broker).await;
    drop(with_will(&broker, "never", Some(u32::MAX), 600).await);
    let dropped = Instant::now();
    assert_about(
        will_arrival(&mut w, dropped, Duration::from_secs(60)).await,
        Duration::from_secs(20),
    );
    let (_back, ack) =
        RawClient::handshake(broker.duplex(), connect_v5("never", false, Some(u32::MAX))).await;
    assert!(!ack.session_present, "ended at the granted 20 s");

    let (mut raised, _) =
        RawClient::handshake(broker.duplex(), connect_v5("raised", true, Some(5))).await;
    raised
        .send(Packet::Disconnect(Disconnect {
            reason: 0,
            properties: Some(Box::new(Properties {
                session_expiry_interval: Some(u32::MAX),
                ..Properties::default()
            })),
        }))
        .await;
    tokio::time::sleep(Duration::from_secs(21)).await;
    let (_gone, ack) =
        RawClient::handshake(broker.duplex(), connect_v5("raised", false, Some(5))).await;
    assert!(
        !ack.session_present,
        "ended at the cap, not at the sweep's next pass"
    );
    broker.shutdown().await;
}
