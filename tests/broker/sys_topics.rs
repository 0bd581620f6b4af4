//! The broker's `$SYS` topics with real clients (rumqttc, raw MQTT 5, raw STOMP and
//! `mosquitto_sub`): published and moving, readable only with a `read` entry covering `$SYS.>`,
//! never writable, never matched by `#`, their interval configured, reloaded and turned off.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::support::live::{LiveBroker, RELOAD_WAIT};
use crate::support::{activemq_xml, connect_v5, publish_packet, Client, RawClient, TestBroker};
use bytes::Bytes;
use ferromq::protocol::{Packet, QoS};
use rumqttc::QoS as Q;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Users: `monitor` may read `$SYS`, `app` has `app.>` only, `admin` everything (`>`, and
/// every queue).
fn security(interval_ms: u64) -> String {
    format!(
        r#"
    <ferromq:systemTopics xmlns:ferromq="urn:ferromq" interval="{interval_ms}"/>
    <plugins>
      <simpleAuthenticationPlugin>
        <users>
          <authenticationUser username="admin" password="secret" groups="admins"/>
          <authenticationUser username="monitor" password="m0n" groups="monitors"/>
          <authenticationUser username="app" password="app" groups="apps"/>
        </users>
      </simpleAuthenticationPlugin>
      <authorizationPlugin><map><authorizationMap><authorizationEntries>
        <authorizationEntry topic=">" read="admins" write="admins" admin="admins"/>
        <authorizationEntry queue=">" read="admins" write="admins" admin="admins"/>
        <authorizationEntry topic="$SYS.>" read="monitors"/>
        <authorizationEntry topic="app.>" read="apps" write="apps" admin="apps"/>
      </authorizationEntries></authorizationMap></map></authorizationPlugin>
    </plugins>"#
    )
}

/// A broker whose MQTT connector lets clients publish to `$` topics (so that only the `$SYS`
/// rule refuses them) beside a STOMP connector.
fn broker_xml(interval_ms: u64) -> String {
    activemq_xml(
        &["transport.publishDollarTopics=true"],
        &security(interval_ms),
    )
    .replace(
        "</transportConnectors>",
        r#"<transportConnector name="stomp" uri="stomp://127.0.0.1:0"/></transportConnectors>"#,
    )
}

async fn broker(interval_ms: u64) -> TestBroker {
    TestBroker::from_xml(&broker_xml(interval_ms)).await
}

/// A subscriber's view of the `$SYS` figures: the latest value of every topic it received.
struct Figures {
    client: Client,
    latest: HashMap<String, String>,
}

impl Figures {
    fn of(client: Client) -> Figures {
        Figures {
            client,
            latest: HashMap::new(),
        }
    }

    /// The value of `topic` once it satisfies `want` (the latest one received, or the next).
    async fn wait(&mut self, topic: &str, want: impl Fn(&str) -> bool) -> String {
        if let Some(value) = self.latest.get(topic).filter(|v| want(v)) {
            return value.clone();
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let publish = self.client.publish_within(left).await.unwrap_or_else(|| {
                panic!("no wanted value on {topic} within 10 s: {:?}", self.latest)
            });
            let payload = String::from_utf8_lossy(&publish.payload).into_owned();
            self.latest.insert(publish.topic.clone(), payload.clone());
            if publish.topic == topic && want(&payload) {
                return payload;
            }
        }
    }
}

#[tokio::test]
async fn the_figures_are_published_retained_and_move_with_the_clients() {
    let broker = broker(100).await;
    let mut monitor = Client::login(broker.addr, "monitor", "monitor", "m0n").await;
    assert_eq!(
        monitor.subscribe("$SYS/broker/#", Q::AtMostOnce).await,
        vec![rumqttc::SubscribeReasonCode::Success(Q::AtMostOnce)]
    );
    let mut monitor = Figures::of(monitor);
    // Retained: there at once, with mosquitto's wording.
    let version = monitor.wait("$SYS/broker/version", |_| true).await;
    assert_eq!(
        version,
        format!("ferromq version {}", env!("CARGO_PKG_VERSION"))
    );
    let uptime = monitor.wait("$SYS/broker/uptime", |_| true).await;
    assert!(uptime.ends_with(" seconds"), "{uptime}");
    monitor
        .wait("$SYS/broker/clients/connected", |v| v == "1")
        .await;
    // Another client: the count moves, and so does the maximum.
    let mut app = Client::login(broker.addr, "app", "app", "app").await;
    monitor
        .wait("$SYS/broker/clients/connected", |v| v == "2")
        .await;
    monitor
        .wait("$SYS/broker/clients/maximum", |v| v == "2")
        .await;
    // Its publishes are counted, and so is the per-minute load.
    for n in 0..5u8 {
        app.publish("app/x", Q::AtMostOnce, false, &[n]).await;
    }
    monitor
        .wait("$SYS/broker/publish/messages/received", |v| {
            v.parse::<u64>().is_ok_and(|n| n >= 5)
        })
        .await;
    // Payload bytes: five of one byte each.
    monitor
        .wait("$SYS/broker/bytes/received", |v| {
            v.parse::<u64>().is_ok_and(|n| n >= 5)
        })
        .await;
    monitor
        .wait("$SYS/broker/load/publish/received/1min", |v| {
            v.parse::<f64>().is_ok_and(|load| load > 0.0)
        })
        .await;
    app.subscribe("app/#", Q::AtMostOnce).await;
    monitor
        .wait("$SYS/broker/subscriptions/count", |v| {
            v.parse::<u64>().is_ok_and(|n| n >= 2)
        })
        .await;
    app.disconnect().await;
    monitor
        .wait("$SYS/broker/clients/connected", |v| v == "1")
        .await;
    monitor
        .wait("$SYS/broker/clients/maximum", |v| v == "2")
        .await;
    broker.shutdown().await;
}

#[tokio::test]
async fn reading_needs_a_read_entry_for_sys() {
    let broker = broker(100).await;
    let mut app = Client::login(broker.addr, "app", "app", "app").await;
    for filter in ["$SYS/#", "$SYS/broker/uptime", "$SYS/broker/+/connected"] {
        assert_eq!(
            app.subscribe(filter, Q::AtMostOnce).await,
            vec![rumqttc::SubscribeReasonCode::Failure],
            "{filter}"
        );
    }
    // MQTT 5 is told why: 0x87 Not authorized.
    let mut login = connect_v5("app5", true, None);
    login.username = Some("app".into());
    login.password = Some(Bytes::from_static(b"app"));
    let (mut app5, _) = RawClient::connect_ok(broker.addr, login).await;
    assert_eq!(
        app5.subscribe(1, &[("$SYS/broker/version", QoS::AtMostOnce)])
            .await,
        vec![0x87]
    );
    // With the entry, a single topic needs no admin: the broker made it exist.
    let mut monitor = Client::login(broker.addr, "monitor", "monitor", "m0n").await;
    assert_eq!(
        monitor.subscribe("$SYS/broker/uptime", Q::AtMostOnce).await,
        vec![rumqttc::SubscribeReasonCode::Success(Q::AtMostOnce)]
    );
    Figures::of(monitor)
        .wait("$SYS/broker/uptime", |_| true)
        .await;
    broker.shutdown().await;
}

#[tokio::test]
async fn no_client_writes_sys_even_with_publish_dollar_topics() {
    let broker = broker(100).await;
    let version = format!("ferromq version {}", env!("CARGO_PKG_VERSION"));
    // The admin may do anything else, and the connector accepts `$` publishes.
    let mut admin = Client::login(broker.addr, "admin", "admin", "secret").await;
    admin.subscribe("$other/#", Q::AtMostOnce).await;
    admin
        .publish("$SYS/broker/version", Q::AtLeastOnce, true, b"forged")
        .await;
    admin.publish("$other/x", Q::AtMostOnce, false, b"ok").await;
    assert_eq!(&admin.next_publish().await.payload[..], b"ok");
    // MQTT 5: PUBACK 0x87.
    let mut login = connect_v5("admin5", true, None);
    login.username = Some("admin".into());
    login.password = Some(Bytes::from_static(b"secret"));
    let (mut admin5, _) = RawClient::connect_ok(broker.addr, login).await;
    admin5
        .send(publish_packet(
            "$SYS/broker/uptime",
            b"forged",
            QoS::AtLeastOnce,
            Some(7),
            true,
        ))
        .await;
    match admin5.recv().await {
        Packet::PubAck(ack) => assert_eq!((ack.packet_id, ack.reason), (7, 0x87)),
        other => panic!("expected PUBACK, got {other:?}"),
    }
    // STOMP: an ERROR frame.
    let stomp = broker
        .handle
        .listener_addrs()
        .iter()
        .find(|(name, _)| name == "stomp")
        .map(|(_, addr)| *addr)
        .expect("stomp listener");
    let error = stomp_send(stomp, "/topic/$SYS.broker.version").await;
    assert!(error.starts_with("ERROR"), "{error}");
    assert!(error.contains("read-only"), "{error}");
    // The retained figures are the broker's own.
    assert_eq!(
        broker
            .handle
            .core()
            .retained_matching("$SYS/broker/version")
            .iter()
            .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
            .collect::<Vec<_>>(),
        vec![version]
    );
    let uptime = broker.handle.core().retained_matching("$SYS/broker/uptime");
    assert!(uptime[0].payload.ends_with(b" seconds"));
    assert!(broker.handle.counters().dropped_not_authorized >= 3);
    broker.shutdown().await;
}

/// CONNECT as admin and SEND to `destination`; the first frame the broker answers with.
async fn stomp_send(addr: SocketAddr, destination: &str) -> String {
    let mut socket = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let frames = format!(
        "CONNECT\naccept-version:1.2\nhost:localhost\nlogin:admin\npasscode:secret\n\n\0\
         SEND\ndestination:{destination}\nreceipt:1\n\nforged\0"
    );
    socket.write_all(frames.as_bytes()).await.expect("write");
    let mut read = Vec::new();
    let mut buf = [0u8; 4096];
    let frames = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let n = socket.read(&mut buf).await.expect("read");
            read.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&read).into_owned();
            // CONNECTED, then the answer to the SEND.
            if n == 0 || text.matches('\0').count() >= 2 {
                return text;
            }
        }
    })
    .await
    .expect("STOMP answer in time");
    let mut parts = frames.split('\0').map(|f| f.trim_start_matches('\n'));
    assert!(parts.next().is_some_and(|f| f.starts_with("CONNECTED")));
    parts.next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn wildcards_at_the_root_never_match_sys() {
    let broker = broker(100).await;
    let mut admin = Client::login(broker.addr, "admin", "admin", "secret").await;
    admin.subscribe("#", Q::AtMostOnce).await;
    admin.subscribe("+/broker/#", Q::AtMostOnce).await;
    let mut monitor = Client::login(broker.addr, "monitor", "monitor", "m0n").await;
    monitor
        .subscribe("$SYS/broker/clients/connected", Q::AtMostOnce)
        .await;
    let mut monitor = Figures::of(monitor);
    monitor
        .wait("$SYS/broker/clients/connected", |v| v == "2")
        .await;
    // A round after the admin subscribed has been published (the count of 3 includes this
    // client); the admin's `#` saw none of it, retained or live, but sees other topics.
    let third = Client::login(broker.addr, "app", "app", "app").await;
    monitor
        .wait("$SYS/broker/clients/connected", |v| v == "3")
        .await;
    admin
        .publish("plain/topic", Q::AtMostOnce, false, b"x")
        .await;
    let first = admin.next_publish().await;
    assert_eq!(first.topic, "plain/topic");
    admin.no_publish_within(Duration::from_millis(300)).await;
    third.disconnect().await;
    broker.shutdown().await;
}

#[tokio::test]
async fn the_interval_is_configured_reloaded_and_zero_turns_them_off() {
    // Off from the start: nothing is published (the first round would be there at start).
    let off = broker(0).await;
    assert!(off.handle.core().retained_matching("$SYS/#").is_empty());
    off.shutdown().await;
    // The default element-less configuration publishes at start.
    let default = TestBroker::from_xml(&activemq_xml(&[], "")).await;
    assert_eq!(
        default
            .handle
            .core()
            .retained_matching("$SYS/broker/version")
            .len(),
        1
    );
    default.shutdown().await;

    let mut live = LiveBroker::start(&broker_xml(0), true).await;
    let addr = live.addr("mqtt").await.expect("mqtt listener");
    let mut monitor = Client::login(addr, "monitor", "monitor", "m0n").await;
    monitor.subscribe("$SYS/broker/#", Q::AtMostOnce).await;
    monitor.no_publish_within(Duration::from_millis(300)).await;
    let mut monitor = Figures::of(monitor);
    // Turned on by a reload (SIGHUP's path): published at once, then every 100 ms.
    let stats = tokio::time::timeout(RELOAD_WAIT, live.edit(&broker_xml(100)))
        .await
        .expect("reload in time");
    assert_eq!(stats.reloads_failed, 0, "{stats:?}");
    monitor.wait("$SYS/broker/version", |_| true).await;
    let first = monitor.wait("$SYS/broker/uptime", |_| true).await;
    monitor.wait("$SYS/broker/uptime", |v| v != first).await;
    // Off again: the retained figures are gone at once and nothing more comes.
    live.edit(&broker_xml(0)).await;
    assert!(live.handle.core().retained_matching("$SYS/#").is_empty());
    let mut monitor = monitor.client;
    while monitor
        .publish_within(Duration::from_millis(400))
        .await
        .is_some()
    {}
    monitor.no_publish_within(Duration::from_millis(400)).await;
    live.handle.shutdown().await;
}

/// `mosquitto_sub` reads the version with the monitor's login and is refused `$SYS` without
/// it. Skipped with a message when mosquitto's clients are missing, except under `CI`.
#[tokio::test]
async fn mosquitto_sub_reads_the_version_with_the_entry() {
    if std::process::Command::new("mosquitto_sub")
        .arg("--help")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os("CI").is_none(),
            "mosquitto_sub is missing under CI"
        );
        eprintln!("skipped: mosquitto_sub is not installed");
        return;
    }
    let broker = broker(100).await;
    // Blocking: on a thread of its own, the broker keeps running on the runtime.
    let sub = |user: &'static str, password: &'static str, port: u16| async move {
        tokio::task::spawn_blocking(move || {
            std::process::Command::new("mosquitto_sub")
                .args(["-h", "127.0.0.1", "-p", &port.to_string()])
                .args(["-u", user, "-P", password, "-V", "mqttv5"])
                .args(["-t", "$SYS/broker/version", "-C", "1", "-W", "5"])
                .output()
                .expect("mosquitto_sub runs")
        })
        .await
        .expect("mosquitto_sub thread")
    };
    let read = sub("monitor", "m0n", broker.addr.port()).await;
    assert!(read.status.success(), "{read:?}");
    assert_eq!(
        String::from_utf8_lossy(&read.stdout).trim(),
        format!("ferromq version {}", env!("CARGO_PKG_VERSION"))
    );
    let refused = sub("app", "app", broker.addr.port()).await;
    assert!(refused.stdout.is_empty(), "{refused:?}");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("denied"),
        "{refused:?}"
    );
    broker.shutdown().await;
}

/// Messages held by a queue (STOMP SENDs with no consumer) are stored messages too:
/// `store/messages/count` and `messages/stored` count them beside the retained ones.
#[tokio::test]
async fn stored_messages_include_what_queues_hold() {
    let broker = broker(100).await;
    let stomp = broker.handle.listener_addrs()[1].1;
    let mut monitor = Client::login(broker.addr, "monitor", "monitor", "m0n").await;
    monitor.subscribe("$SYS/broker/#", Q::AtMostOnce).await;
    let mut socket = tokio::net::TcpStream::connect(stomp)
        .await
        .expect("connect");
    let mut frames = String::from(
        "CONNECT\naccept-version:1.2\nhost:localhost\nlogin:admin\npasscode:secret\n\n\0",
    );
    for n in 0..50 {
        frames.push_str(&format!(
            "SEND\ndestination:/queue/app.backlog\npersistent:true\nreceipt:{n}\n\nm{n}\0"
        ));
    }
    socket.write_all(frames.as_bytes()).await.expect("write");
    let mut read = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(Duration::from_secs(10), async {
        while !String::from_utf8_lossy(&read).contains("receipt-id:49") {
            let n = socket.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed: {}", String::from_utf8_lossy(&read));
            read.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("the last receipt in time");
    // Each round publishes both figures and the retained count: stored - retained = 50.
    let mut latest: HashMap<String, u64> = HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let publish = monitor
            .publish_within(left)
            .await
            .unwrap_or_else(|| panic!("stored never counted the queue: {latest:?}"));
        if let Ok(n) = String::from_utf8_lossy(&publish.payload).parse::<u64>() {
            latest.insert(publish.topic.clone(), n);
        }
        let retained = latest.get("$SYS/broker/retained messages/count");
        let held = |topic: &str| {
            latest
                .get(topic)
                .zip(retained)
                .map(|(stored, retained)| stored.saturating_sub(*retained))
        };
        if held("$SYS/broker/store/messages/count") == Some(50)
            && held("$SYS/broker/messages/stored") == Some(50)
        {
            break;
        }
    }
    broker.shutdown().await;
}
