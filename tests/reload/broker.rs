//! Hot reload end to end: a real broker, a real `activemq.xml` edited on disk
//! while rumqttc and raw clients are connected, every wait bounded.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::broker_xml;
use crate::support::live::{closed_within, LiveBroker};
use crate::support::logs::Logs;
use crate::support::{connect_packet, Client, RawClient, STEP};
use bytes::Bytes;
use ferromq::protocol::ConnectReason;
use rumqttc::{QoS as Q, SubscribeReasonCode};
use tokio::net::TcpStream;

/// Any free port on loopback: the tests read bound addresses from the broker.
const ANY: &str = "mqtt://127.0.0.1:0";
/// How long to wait to be sure a message does NOT arrive.
const QUIET: Duration = Duration::from_millis(400);

/// Publish one QoS 1 message through a fresh client on `addr` (PUBACK awaited).
async fn publish_via(addr: std::net::SocketAddr, id: &str, topic: &str, payload: &[u8]) {
    let mut publisher = Client::connect(addr, id).await;
    publisher
        .publish(topic, Q::AtLeastOnce, false, payload)
        .await;
    publisher.disconnect().await;
}

#[tokio::test]
async fn connectors_are_added_removed_and_changed_while_other_clients_stay() {
    let mut live = LiveBroker::start(&broker_xml("", &[("mqtt", ANY)]), true).await;
    let mqtt = live.addr("mqtt").await.expect("mqtt listening");
    let mut stayer = Client::connect(mqtt, "stayer").await;
    stayer.subscribe("t/#", Q::AtLeastOnce).await;

    // A new connector accepts.
    let stats = live
        .edit(&broker_xml("", &[("mqtt", ANY), ("extra", ANY)]))
        .await;
    assert_eq!(
        (stats.reloads_ok, stats.reloads_failed),
        (1, 0),
        "{stats:?}"
    );
    let extra = live.addr("extra").await.expect("extra listening");
    publish_via(extra, "via-extra", "t/1", b"1").await;
    assert_eq!(stayer.next_publish().await.topic, "t/1");
    let (mut on_extra, _) = RawClient::connected(extra, "on-extra", true).await;

    // A removed connector refuses and its client is disconnected (saved by rename, too).
    let stats = live.edit_by_rename(&broker_xml("", &[("mqtt", ANY)])).await;
    assert_eq!(
        (stats.reloads_ok, stats.reloads_failed),
        (2, 0),
        "{stats:?}"
    );
    assert_eq!(live.addr("extra").await, None);
    assert!(
        closed_within(&mut on_extra.stream, STEP).await,
        "the removed connector's client is disconnected"
    );
    assert!(
        TcpStream::connect(extra).await.is_err(),
        "the removed connector refuses connections"
    );

    // Options change: same socket, the unchanged client is still there.
    let stats = live
        .edit(&broker_xml(
            "",
            &[(
                "mqtt",
                "mqtt://127.0.0.1:0?transport.defaultKeepAlive=60000",
            )],
        ))
        .await;
    assert_eq!(
        (stats.reloads_ok, stats.reloads_failed),
        (3, 0),
        "{stats:?}"
    );
    assert_eq!(live.addr("mqtt").await, Some(mqtt), "not rebound");
    publish_via(mqtt, "via-mqtt", "t/2", b"2").await;
    let got = stayer.next_publish().await;
    assert_eq!((got.topic.as_str(), &got.payload[..]), ("t/2", &b"2"[..]));

    stayer.disconnect().await;
    live.shutdown().await;
}

#[tokio::test]
async fn a_changed_address_is_bound_again() {
    let mut live =
        LiveBroker::start(&broker_xml("", &[("mqtt", ANY), ("moving", ANY)]), true).await;
    let old = live.addr("moving").await.expect("listening");
    // A probed free port can be taken by another process before the reload binds it: that
    // reload fails (and keeps the running config), so probe again, a few times at most.
    let mut port = 0;
    for attempt in 0..5u64 {
        port = crate::support::free_port();
        let uri = format!("mqtt://127.0.0.1:{port}");
        let stats = live
            .edit(&broker_xml("", &[("mqtt", ANY), ("moving", &uri)]))
            .await;
        if stats.reloads_ok == 1 {
            assert_eq!(stats.reloads_failed, attempt, "{stats:?}");
            break;
        }
        assert_eq!(
            (stats.reloads_ok, stats.reloads_failed),
            (0, attempt + 1),
            "{stats:?}"
        );
        assert!(attempt < 4, "five probed ports were all taken: {stats:?}");
    }
    let new = live.addr("moving").await.expect("listening again");
    assert_eq!(new.port(), port);
    assert!(TcpStream::connect(old).await.is_err(), "old address closed");
    RawClient::connected(new, "moved", true).await;
    live.shutdown().await;
}

#[tokio::test]
async fn default_keep_alive_change_applies_to_the_next_connection() {
    let mut live = LiveBroker::start(&broker_xml("", &[("mqtt", ANY)]), true).await;
    let addr = live.addr("mqtt").await.expect("listening");
    // Keep-alive 0 from the client: the connector's defaultKeepAlive decides.
    let (mut before, _) = RawClient::connected(addr, "before", true).await;
    let stats = live
        .edit(&broker_xml(
            "",
            &[("mqtt", "mqtt://127.0.0.1:0?transport.defaultKeepAlive=300")],
        ))
        .await;
    assert_eq!(
        (stats.reloads_ok, stats.reloads_failed),
        (1, 0),
        "{stats:?}"
    );
    let (mut after, _) = RawClient::connected(addr, "after", true).await;
    assert!(
        closed_within(&mut after.stream, Duration::from_secs(3)).await,
        "a silent new connection is closed under defaultKeepAlive=300"
    );
    assert!(
        !closed_within(&mut before.stream, Duration::from_millis(300)).await,
        "a connection from before the reload keeps the settings it was accepted with"
    );
    live.shutdown().await;
}

fn security(users: &[(&str, &str, &str)], sensors_readers: &str) -> String {
    let users: String = users
        .iter()
        .map(|(name, password, groups)| {
            format!(
                r#"<authenticationUser username="{name}" password="{password}" groups="{groups}"/>"#
            )
        })
        .collect();
    format!(
        r#"<simpleAuthenticationPlugin><users>{users}</users></simpleAuthenticationPlugin>
      <authorizationPlugin><map><authorizationMap><authorizationEntries>
        <authorizationEntry topic=">" read="admins" write="admins" admin="admins"/>
        <authorizationEntry topic="sensors.>" read="{sensors_readers}" write="admins" admin="admins"/>
      </authorizationEntries></authorizationMap></map></authorizationPlugin>"#
    )
}

async fn login_refused(addr: std::net::SocketAddr, user: &str, password: &str) -> bool {
    let mut connect = connect_packet(&format!("try-{user}"), true, 30);
    connect.username = Some(user.into());
    connect.password = Some(Bytes::from(password.as_bytes().to_vec()));
    let (_, ack) = RawClient::connect(addr, connect).await;
    ack.reason == ConnectReason::NotAuthorized
}

#[tokio::test]
async fn users_and_permissions_follow_the_file_on_live_connections() {
    let before = [
        ("admin", "a", "admins"),
        ("reader", "r", "readers"),
        ("old", "o", "readers"),
    ];
    let plugins = security(&before, "admins,readers");
    let mut live = LiveBroker::start(&broker_xml(&plugins, &[("mqtt", ANY)]), true).await;
    let addr = live.addr("mqtt").await.expect("listening");
    assert!(login_refused(addr, "newbie", "n").await, "not a user yet");
    let mut reader = Client::login(addr, "reader", "reader", "r").await;
    assert_eq!(
        reader.subscribe("sensors/#", Q::AtLeastOnce).await,
        vec![SubscribeReasonCode::Success(Q::AtLeastOnce)]
    );
    let mut admin = Client::login(addr, "admin", "admin", "a").await;
    admin
        .publish("sensors/1", Q::AtLeastOnce, false, b"1")
        .await;
    assert_eq!(reader.next_publish().await.topic, "sensors/1");

    // Revoke the readers' read right, remove `old`, add `newbie`.
    let after = [
        ("admin", "a", "admins"),
        ("reader", "r", "readers"),
        ("newbie", "n", "admins"),
    ];
    let stats = live
        .edit(&broker_xml(&security(&after, "admins"), &[("mqtt", ANY)]))
        .await;
    assert_eq!(
        (stats.reloads_ok, stats.reloads_failed),
        (1, 0),
        "{stats:?}"
    );
    admin
        .publish("sensors/2", Q::AtLeastOnce, false, b"2")
        .await;
    reader.no_publish_within(QUIET).await;
    let newbie = Client::login(addr, "newbie", "newbie", "n").await;
    assert!(
        login_refused(addr, "old", "o").await,
        "a removed user cannot log in"
    );

    // The denied subscription was removed, not merely filtered: granting the right again does
    // not bring deliveries back until the client subscribes again.
    let stats = live
        .edit(&broker_xml(
            &security(&after, "admins,readers"),
            &[("mqtt", ANY)],
        ))
        .await;
    assert_eq!(
        (stats.reloads_ok, stats.reloads_failed),
        (2, 0),
        "{stats:?}"
    );
    admin
        .publish("sensors/3", Q::AtLeastOnce, false, b"3")
        .await;
    reader.no_publish_within(QUIET).await;
    reader.subscribe("sensors/#", Q::AtLeastOnce).await;
    admin
        .publish("sensors/4", Q::AtLeastOnce, false, b"4")
        .await;
    assert_eq!(reader.next_publish().await.topic, "sensors/4");

    for client in [reader, admin, newbie] {
        client.disconnect().await;
    }
    live.shutdown().await;
}

#[tokio::test]
async fn invalid_edits_change_nothing_and_a_port_clash_is_retried() {
    let (logs, _guard) = Logs::capture();
    let mut live = LiveBroker::start(&broker_xml("", &[("mqtt", ANY)]), true).await;
    let addr = live.addr("mqtt").await.expect("listening");
    let mut sub = Client::connect(addr, "sub").await;
    sub.subscribe("t/#", Q::AtLeastOnce).await;

    let broken = broker_xml("", &[("mqtt", ANY), ("extra", ANY)])
        .replace("</transportConnectors>", "</transportConnectors");
    let stats = live.edit(&broken).await;
    assert_eq!(
        (stats.reloads_ok, stats.reloads_failed),
        (0, 1),
        "{stats:?}"
    );
    assert_eq!(live.addr("extra").await, None, "nothing applied");
    let at = format!("{}:", live.file().display());
    let text = logs.text();
    let logged = text
        .lines()
        .find(|l| l.contains("ERROR") && l.contains(&at))
        .unwrap_or_else(|| panic!("the XML error at {at}line:col in the log:\n{text}"));
    let mut position = logged.split(&at).nth(1).unwrap_or_default().split(':');
    let (line, col) = (position.next(), position.next());
    assert!(
        line.is_some_and(|l| l.parse::<u32>().is_ok())
            && col.is_some_and(|c| c.parse::<u32>().is_ok()),
        "{logged}"
    );

    // A port taken by another socket: that connector fails, the rest of the broker is as it was.
    let blocker = std::net::TcpListener::bind("127.0.0.1:0").expect("blocker");
    let port = blocker.local_addr().expect("addr").port();
    let clash = format!("mqtt://127.0.0.1:{port}");
    let stats = live
        .edit(&broker_xml("", &[("mqtt", ANY), ("clash", &clash)]))
        .await;
    assert_eq!(
        (stats.reloads_ok, stats.reloads_failed),
        (0, 2),
        "{stats:?}"
    );
    assert_eq!(live.addr("clash").await, None);
    // The second connector is on line 6 of the file.
    let clash_at = format!(
        "connector `clash` ({clash}) at {}:6:",
        live.file().display()
    );
    let text = logs.text();
    assert!(
        text.lines()
            .any(|l| l.contains("cannot listen on") && l.contains(&clash_at)),
        "the bind failure with {clash_at}col in the log:\n{text}"
    );
    publish_via(addr, "p1", "t/1", b"1").await;
    assert_eq!(sub.next_publish().await.topic, "t/1");

    // Port freed; the next reload starts the connector.
    drop(blocker);
    let retry = format!("{clash}?transport.defaultKeepAlive=60000");
    let stats = live
        .edit(&broker_xml("", &[("mqtt", ANY), ("clash", &retry)]))
        .await;
    assert_eq!(
        (stats.reloads_ok, stats.reloads_failed),
        (1, 2),
        "{stats:?}"
    );
    let started = live.addr("clash").await.expect("started on retry");
    assert_eq!(started.port(), port);
    publish_via(started, "p2", "t/2", b"2").await;
    assert_eq!(sub.next_publish().await.topic, "t/2");

    sub.disconnect().await;
    live.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_qos1_loss_on_an_unaffected_connector_across_ten_reloads() {
    /// Bounds the load whatever the machine's speed.
    const MAX_MESSAGES: u32 = 5_000;
    let mut live = LiveBroker::start(&broker_xml("", &[("mqtt", ANY)]), true).await;
    let addr = live.addr("mqtt").await.expect("listening");
    let mut counter = Client::connect(addr, "counter").await;
    counter.subscribe("load/#", Q::AtLeastOnce).await;

    let stop = Arc::new(AtomicBool::new(false));
    let publisher = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut client = Client::connect(addr, "loader").await;
            let mut sent = 0u32;
            while !stop.load(Ordering::Relaxed) && sent < MAX_MESSAGES {
                client
                    .publish("load/x", Q::AtLeastOnce, false, &sent.to_be_bytes())
                    .await;
                sent += 1;
            }
            client.disconnect().await;
            sent
        }
    });
    for round in 0..10u64 {
        let connectors: &[(&str, &str)] = if round % 2 == 0 {
            &[("mqtt", ANY), ("extra", ANY)]
        } else {
            &[("mqtt", ANY)]
        };
        let stats = live.edit(&broker_xml("", connectors)).await;
        assert_eq!(stats.reloads_ok, round + 1, "{stats:?}");
    }
    stop.store(true, Ordering::Relaxed);
    let sent = tokio::time::timeout(STEP, publisher)
        .await
        .expect("publisher stops")
        .expect("publisher ok");
    assert!(sent > 0, "the publisher ran during the reloads");
    let mut seen = HashSet::new();
    while seen.len() < sent as usize {
        let message = counter.next_publish().await;
        let number: [u8; 4] = message.payload[..].try_into().expect("4-byte payload");
        seen.insert(u32::from_be_bytes(number));
    }
    assert!(seen.iter().all(|n| *n < sent));
    counter.disconnect().await;
    live.shutdown().await;
}

/// `broker_xml` with a `destinationPolicy` whose pending-message limit is `limit`.
fn with_pending_limit(limit: u32) -> String {
    broker_xml("", &[("mqtt", ANY)]).replace(
        "<transportConnectors>",
        &format!(
            "<destinationPolicy><policyMap><policyEntries><policyEntry topic=\">\">\
             <pendingMessageLimitStrategy><constantPendingMessageLimitStrategy limit=\"{limit}\"/>\
             </pendingMessageLimitStrategy></policyEntry></policyEntries></policyMap>\
             </destinationPolicy>\n    <transportConnectors>"
        ),
    )
}

#[tokio::test]
async fn a_changed_pending_message_limit_applies_to_the_next_publishes() {
    let mut live = LiveBroker::start(&with_pending_limit(3), true).await;
    let mqtt = live.addr("mqtt").await.expect("mqtt listening");
    // An offline persistent session: everything routed to it waits in its queue.
    let (mut slow, _) = RawClient::connected(mqtt, "slow", false).await;
    slow.subscribe(1, &[("p/#", ferromq::protocol::QoS::AtLeastOnce)])
        .await;
    slow.send(ferromq::protocol::Packet::Disconnect(
        ferromq::protocol::Disconnect {
            reason: 0,
            properties: None,
        },
    ))
    .await;
    crate::support::settle().await;

    let limit_now = || live.handle.core().pending_limits.load().limit_for("p/x");
    assert_eq!(limit_now(), 3);
    let mut publisher = Client::connect(mqtt, "pub").await;
    for i in 0..10u8 {
        publisher.publish("p/x", Q::AtLeastOnce, false, &[i]).await;
    }

    let stats = live.edit(&with_pending_limit(100)).await;
    assert_eq!(
        (stats.reloads_ok, stats.reloads_failed),
        (1, 0),
        "{stats:?}"
    );
    assert_eq!(
        live.handle.core().pending_limits.load().limit_for("p/x"),
        100,
        "the new limit applies to the next publishes"
    );
    for i in 10..20u8 {
        publisher.publish("p/x", Q::AtLeastOnce, false, &[i]).await;
    }
    // The limit bounds QoS 0 only: every acknowledged QoS 1 message reaches the offline
    // session, under the old limit and the new one.
    let (mut slow, _) = RawClient::connected(mqtt, "slow", false).await;
    for i in 0..20u8 {
        let p = slow.recv_publish().await;
        assert_eq!(&p.payload[..], &[i]);
        slow.send(ferromq::protocol::Packet::PubAck(crate::support::ack(
            p.packet_id.expect("QoS 1 id"),
        )))
        .await;
    }
    assert_eq!(live.handle.counters().dropped_queue_full, 0);
    publisher.disconnect().await;
    live.shutdown().await;
}

/// STOMP connectors are part of the listener set like MQTT ones: bound at start, and a
/// connector whose scheme changes from MQTT to STOMP is bound again and then answers STOMP (not
/// MQTT), and the reverse.
#[tokio::test]
async fn stomp_connectors_are_bound_and_rebound_like_mqtt_ones() {
    const STOMP: &str = "stomp://127.0.0.1:0";
    let mut live =
        LiveBroker::start(&broker_xml("", &[("mqtt", ANY), ("stomp", STOMP)]), true).await;
    let stomp = live.addr("stomp").await.expect("stomp listening");
    assert!(
        stomp_connected(stomp).await,
        "the STOMP connector answers STOMP"
    );
    let mqtt = live.addr("mqtt").await.expect("mqtt listening");

    let stats = live
        .edit(&broker_xml("", &[("mqtt", STOMP), ("stomp", STOMP)]))
        .await;
    assert_eq!(
        (stats.reloads_ok, stats.reloads_failed),
        (1, 0),
        "{stats:?}"
    );
    let rebound = live.addr("mqtt").await.expect("rebound as STOMP");
    assert_ne!(rebound, mqtt, "a new socket");
    assert!(stomp_connected(rebound).await, "now a STOMP connector");

    let stats = live
        .edit(&broker_xml(
            "",
            &[("mqtt", ANY), ("stomp", "stomp+nio://127.0.0.1:0")],
        ))
        .await;
    assert_eq!(
        (stats.reloads_ok, stats.reloads_failed),
        (2, 0),
        "{stats:?}"
    );
    let mqtt = live.addr("mqtt").await.expect("MQTT again: listening");
    let (_client, ack) = RawClient::connect(mqtt, connect_packet("after-stomp", true, 0)).await;
    assert_eq!(ack.reason, ConnectReason::Success);
    let stomp = live.addr("stomp").await.expect("stomp+nio listening");
    assert!(stomp_connected(stomp).await);
    live.shutdown().await;
}

/// A STOMP 1.2 CONNECT on `addr` is answered with CONNECTED (within [`STEP`]).
async fn stomp_connected(addr: std::net::SocketAddr) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut socket) = TcpStream::connect(addr).await else {
        return false;
    };
    let connect = b"CONNECT\naccept-version:1.2\nhost:localhost\n\n\0";
    if socket.write_all(connect).await.is_err() {
        return false;
    }
    let mut answer = Vec::new();
    let mut buffer = [0u8; 512];
    while !answer.contains(&0) {
        match tokio::time::timeout(STEP, socket.read(&mut buffer)).await {
            Ok(Ok(n)) if n > 0 => answer.extend_from_slice(&buffer[..n]),
            _ => break,
        }
    }
    answer.starts_with(b"CONNECTED\n")
}
