//! ActiveMQ's virtual topics and composite topics: MQTT devices publish to
//! `VirtualTopic/orders` (topic `VirtualTopic.orders`), STOMP backends consume with load
//! balancing from queues `Consumer.<name>.VirtualTopic.orders`. Each existing consumer queue
//! gets every message (its consumers share them), a plain topic subscriber still gets them,
//! `useVirtualTopics="false"` and a written `<destinationInterceptors>` turn the default off,
//! a composite topic forwards to its queues, and a persistent copy acknowledged by PUBACK
//! survives a SIGKILL of the broker.

use std::time::Duration;

use crate::client::StompClient;
use crate::support::Client;

/// A STOMP subscription to `destination` (receipt awaited, `auto` ack).
async fn subscribed(env: &crate::Env, destination: &str) -> StompClient {
    let mut c = env.connected(&[]).await;
    subscribe(&mut c, destination).await;
    c
}

async fn subscribe(c: &mut StompClient, destination: &str) {
    c.send(
        "SUBSCRIBE",
        &[
            ("destination", destination),
            ("id", "s"),
            ("receipt", "sub"),
        ],
        "",
    )
    .await;
    assert_eq!(c.recv().await.header("receipt-id"), Some("sub"));
}

/// Bodies received until nothing comes for 300 ms.
async fn drain(c: &mut StompClient) -> Vec<String> {
    let mut bodies = Vec::new();
    while let Some(f) = c.recv_within(Duration::from_millis(300)).await {
        assert_eq!(f.command, "MESSAGE", "{f:?}");
        bodies.push(f.body_text());
    }
    bodies
}

async fn publish_all(env: &crate::Env, topic: &str, n: usize) {
    let mut mqtt = Client::connect(env.mqtt(), "device").await;
    for i in 0..n {
        mqtt.publish(
            topic,
            rumqttc::QoS::AtLeastOnce,
            false,
            i.to_string().as_bytes(),
        )
        .await;
    }
    mqtt.disconnect().await;
}

#[tokio::test]
async fn mqtt_publishes_reach_every_consumer_queue_once_and_the_topic() {
    let env = crate::broker().await;
    let mut a1 = subscribed(&env, "/queue/Consumer.a.VirtualTopic.orders").await;
    let mut a2 = subscribed(&env, "/queue/Consumer.a.VirtualTopic.orders").await;
    let mut b = subscribed(&env, "/queue/Consumer.b.VirtualTopic.orders").await;
    let mut topic = subscribed(&env, "/topic/VirtualTopic.orders").await;
    // Not a consumer queue: `*` is one level; nor is a queue of another topic.
    let mut deep = subscribed(&env, "/queue/Consumer.x.y.VirtualTopic.orders").await;
    let mut other = subscribed(&env, "/queue/Consumer.a.VirtualTopic.other").await;
    publish_all(&env, "VirtualTopic/orders", 10).await;

    let all: Vec<String> = (0..10).map(|i| i.to_string()).collect();
    let (got1, got2) = (drain(&mut a1).await, drain(&mut a2).await);
    assert!(!got1.is_empty() && !got2.is_empty(), "{got1:?} {got2:?}");
    let mut shared: Vec<String> = got1.into_iter().chain(got2).collect();
    shared.sort_by_key(|s| s.parse::<u32>().unwrap_or(u32::MAX));
    assert_eq!(shared, all, "consumers of one queue share its messages");
    assert_eq!(drain(&mut b).await, all);
    assert_eq!(drain(&mut topic).await, all);
    assert!(drain(&mut deep).await.is_empty());
    assert!(drain(&mut other).await.is_empty());

    // A STOMP SEND to the topic is copied too.
    let mut p = env.connected(&[]).await;
    p.send(
        "SEND",
        &[
            ("destination", "/topic/VirtualTopic.orders"),
            ("persistent", "true"),
            ("receipt", "r"),
        ],
        "stomp",
    )
    .await;
    assert_eq!(p.recv().await.header("receipt-id"), Some("r"));
    assert_eq!(drain(&mut b).await, ["stomp"]);
}

#[tokio::test]
async fn a_consumer_queue_gets_what_is_published_after_it_exists() {
    let env = crate::broker().await;
    publish_all(&env, "VirtualTopic/late", 2).await;
    // Created by its first SUBSCRIBE: nothing of before, as in ActiveMQ.
    let mut q = subscribed(&env, "/queue/Consumer.a.VirtualTopic.late").await;
    assert!(drain(&mut q).await.is_empty());
    publish_all(&env, "VirtualTopic/late", 1).await;
    assert_eq!(drain(&mut q).await, ["0"]);
    // The queue keeps copies while no consumer is there.
    drop(q);
    tokio::time::sleep(Duration::from_millis(100)).await;
    publish_all(&env, "VirtualTopic/late", 3).await;
    let mut q = subscribed(&env, "/queue/Consumer.a.VirtualTopic.late").await;
    assert_eq!(drain(&mut q).await, ["0", "1", "2"]);
}

#[tokio::test]
async fn use_virtual_topics_false_and_a_written_interceptor_replace_the_default() {
    for (attributes, children) in [
        (r#"useVirtualTopics="false""#, ""),
        (
            "",
            "<destinationInterceptors><virtualDestinationInterceptor><virtualDestinations>\
             <virtualTopic name=\"Fleet.>\" prefix=\"Backend.*.\"/>\
             </virtualDestinations></virtualDestinationInterceptor></destinationInterceptors>",
        ),
    ] {
        let xml = crate::support::BrokerXml::new()
            .name("vt")
            .attributes(attributes)
            .child(children)
            .connector("mqtt", "mqtt://127.0.0.1:0")
            .connector("stomp", "stomp://127.0.0.1:0")
            .build();
        let env = crate::Env {
            broker: crate::support::TestBroker::from_xml(&xml).await,
        };
        let mut default = subscribed(&env, "/queue/Consumer.a.VirtualTopic.orders").await;
        let mut custom = subscribed(&env, "/queue/Backend.a.Fleet.truck").await;
        publish_all(&env, "VirtualTopic/orders", 1).await;
        publish_all(&env, "Fleet/truck", 1).await;
        assert!(drain(&mut default).await.is_empty(), "{attributes}");
        let expected: &[&str] = if children.is_empty() { &[] } else { &["0"] };
        assert_eq!(drain(&mut custom).await, expected, "{children}");
    }
}

#[tokio::test]
async fn a_composite_topic_forwards_to_its_queues() {
    let env = crate::broker_with(
        r#"<destinationInterceptors><virtualDestinationInterceptor><virtualDestinations>
             <compositeTopic name="MY.TOPIC"><forwardTo><queue physicalName="C"/><queue physicalName="D"/></forwardTo></compositeTopic>
             <compositeTopic name="ALSO" forwardOnly="false"><forwardTo><queue physicalName="E"/></forwardTo></compositeTopic>
           </virtualDestinations></virtualDestinationInterceptor></destinationInterceptors>"#,
    )
    .await;
    let mut topic = subscribed(&env, "/topic/MY.TOPIC").await;
    let mut also = subscribed(&env, "/topic/ALSO").await;
    publish_all(&env, "MY/TOPIC", 2).await;
    publish_all(&env, "ALSO", 1).await;
    let mut retained = Client::connect(env.mqtt(), "retainer").await;
    retained
        .publish("MY/TOPIC", rumqttc::QoS::AtLeastOnce, true, b"r")
        .await;
    // forwardOnly (the default): the topic's own subscribers get nothing, nor is it retained.
    assert!(drain(&mut topic).await.is_empty());
    let mut late = Client::connect(env.mqtt(), "late").await;
    late.subscribe("MY/TOPIC", rumqttc::QoS::AtLeastOnce).await;
    late.no_publish_within(Duration::from_millis(300)).await;
    assert_eq!(drain(&mut also).await, ["0"]);
    let mut c = subscribed(&env, "/queue/C").await;
    let mut d = subscribed(&env, "/queue/D").await;
    let mut e = subscribed(&env, "/queue/E").await;
    assert_eq!(drain(&mut c).await, ["0", "1", "r"]);
    assert_eq!(drain(&mut d).await, ["0", "1", "r"]);
    assert_eq!(drain(&mut e).await, ["0"]);
}

/// The `ferromq` binary with a store, MQTT on `mqtt` and STOMP on `stomp`, and a declared
/// consumer queue (it exists before any consumer).
fn spawn_durable(dir: &std::path::Path, mqtt: u16, stomp: u16) -> crate::support::ChildGuard {
    let config = dir.join("activemq.xml");
    let xml = crate::support::BrokerXml::new()
        .name("vt-crash")
        .kahadb(&dir.join("kahadb"))
        .child(r#"<destinations><queue physicalName="Consumer.kept.VirtualTopic.orders"/></destinations>"#)
        .connector("mqtt", &format!("mqtt://127.0.0.1:{mqtt}"))
        .connector("stomp", &format!("stomp://127.0.0.1:{stomp}"))
        .build();
    std::fs::write(&config, xml).expect("write config");
    crate::support::ChildGuard(crate::support::wire::spawn_broker(&config))
}

/// Every QoS 1 publish whose PUBACK came is in the consumer queue after a SIGKILL.
#[tokio::test]
async fn a_copy_acknowledged_by_puback_survives_a_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mqtt, stomp) = (crate::support::free_port(), crate::support::free_port());
    let mut broker = spawn_durable(dir.path(), mqtt, stomp);
    crate::support::listening(stomp).await;
    let mut device = Client::connect(crate::support::listening(mqtt).await, "device").await;
    for i in 0..20 {
        device
            .publish(
                "VirtualTopic/orders",
                rumqttc::QoS::AtLeastOnce,
                false,
                i.to_string().as_bytes(),
            )
            .await;
    }
    broker.kill().expect("SIGKILL");
    broker.wait().expect("reaped");

    let _broker = spawn_durable(dir.path(), mqtt, stomp);
    let mut c = StompClient::tcp(crate::support::listening(stomp).await).await;
    c.connect(&[]).await;
    subscribe(&mut c, "/queue/Consumer.kept.VirtualTopic.orders").await;
    let expected: Vec<String> = (0..20).map(|i| i.to_string()).collect();
    assert_eq!(drain(&mut c).await, expected);
}

#[tokio::test]
async fn a_composite_queue_fans_a_send_out_to_its_queues() {
    let env = crate::broker_with(
        r#"<destinationInterceptors><virtualDestinationInterceptor><virtualDestinations>
             <compositeQueue name="MY.QUEUE"><forwardTo><queue physicalName="A"/><queue physicalName="B"/></forwardTo></compositeQueue>
             <compositeQueue name="KEEP" forwardOnly="false"><forwardTo><queue physicalName="K"/></forwardTo></compositeQueue>
           </virtualDestinationInterceptor></destinationInterceptors>"#
            .replace(
                "</virtualDestinationInterceptor>",
                "</virtualDestinations></virtualDestinationInterceptor>",
            )
            .as_str(),
    )
    .await;
    let mut own = subscribed(&env, "/queue/MY.QUEUE").await;
    let mut p = env.connected(&[]).await;
    for (i, dest) in ["/queue/MY.QUEUE", "/queue/KEEP"].iter().enumerate() {
        let receipt = format!("r{i}");
        p.send(
            "SEND",
            &[
                ("destination", dest),
                ("persistent", "true"),
                ("receipt", &receipt),
            ],
            "plain",
        )
        .await;
        assert_eq!(p.recv().await.header("receipt-id"), Some(&*receipt));
    }
    // In a transaction: one staged send per target, in the queues at COMMIT.
    for (command, headers) in [
        ("BEGIN", vec![("transaction", "tx")]),
        (
            "SEND",
            vec![("destination", "/queue/MY.QUEUE"), ("transaction", "tx")],
        ),
        ("COMMIT", vec![("transaction", "tx"), ("receipt", "c")]),
    ] {
        p.send(command, &headers, "tx").await;
    }
    assert_eq!(p.recv().await.header("receipt-id"), Some("c"));
    // forwardOnly (the default): the composite queue itself gets nothing.
    assert!(drain(&mut own).await.is_empty());
    for (queue, expected) in [
        ("/queue/A", &["plain", "tx"][..]),
        ("/queue/B", &["plain", "tx"][..]),
        ("/queue/KEEP", &["plain"][..]),
        ("/queue/K", &["plain"][..]),
    ] {
        let mut c = env.connected(&[]).await;
        c.send(
            "SUBSCRIBE",
            &[("destination", queue), ("id", "s"), ("receipt", "sub")],
            "",
        )
        .await;
        assert_eq!(c.recv().await.header("receipt-id"), Some("sub"));
        let mut got = Vec::new();
        while let Some(f) = c.recv_within(Duration::from_millis(300)).await {
            assert_eq!(
                f.header("original-destination"),
                Some(if queue.contains('K') {
                    "/queue/KEEP"
                } else {
                    "/queue/MY.QUEUE"
                })
                .filter(|_| queue != "/queue/KEEP"),
                "{f:?}"
            );
            got.push(f.body_text());
        }
        assert_eq!(got, expected, "{queue}");
    }
}

/// The composites of [`composite_differential`]: both brokers run this `<broker>`.
fn composite_xml(mqtt: u16, stomp: u16) -> String {
    format!(
        r#"<beans xmlns="http://www.springframework.org/schema/beans"
  xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
  xsi:schemaLocation="http://www.springframework.org/schema/beans http://www.springframework.org/schema/beans/spring-beans.xsd
    http://activemq.apache.org/schema/core http://activemq.apache.org/schema/core/activemq-core.xsd">
  <broker xmlns="http://activemq.apache.org/schema/core" brokerName="composites" persistent="false" useJmx="false" advisorySupport="false">
    <destinationInterceptors><virtualDestinationInterceptor><virtualDestinations>
      <compositeQueue name="CQ"><forwardTo><queue physicalName="cq.a"/><queue physicalName="cq.b"/></forwardTo></compositeQueue>
      <compositeQueue name="CQKEEP" forwardOnly="false"><forwardTo><queue physicalName="cq.k"/></forwardTo></compositeQueue>
      <compositeTopic name="CT"><forwardTo><queue physicalName="ct.a"/></forwardTo></compositeTopic>
      <compositeTopic name="CT2" forwardOnly="false"><forwardTo><topic physicalName="VirtualTopic.ct2"/><queue physicalName="ct2.q"/></forwardTo></compositeTopic>
      <virtualTopic name="VirtualTopic.>" prefix="Consumer.*."/>
      <virtualTopic name="Aware.>" prefix="Sel.*." selectorAware="true"/>
    </virtualDestinations></virtualDestinationInterceptor></destinationInterceptors>
    <transportConnectors>
      <transportConnector name="mqtt" uri="mqtt://127.0.0.1:{mqtt}"/>
      <transportConnector name="stomp" uri="stomp://127.0.0.1:{stomp}"/>
    </transportConnectors>
  </broker>
</beans>"#
    )
}

/// What each queue and topic subscriber receives, as `<where> <body> <original-destination>`.
async fn composite_transcript(stomp: std::net::SocketAddr) -> Vec<String> {
    let mut subs = Vec::new();
    for dest in [
        "/queue/CQ",
        "/queue/CQKEEP",
        "/topic/CT",
        "/queue/Consumer.x.VirtualTopic.v",
        "/topic/CT2",
        "/topic/VirtualTopic.ct2",
        "/queue/Consumer.y.VirtualTopic.ct2",
    ] {
        let mut c = StompClient::tcp(stomp).await;
        c.connect(&[]).await;
        subscribe(&mut c, dest).await;
        subs.push((dest, c));
    }
    let mut red = StompClient::tcp(stomp).await;
    red.connect(&[]).await;
    red.send(
        "SUBSCRIBE",
        &[
            ("destination", "/queue/Sel.red.Aware.s"),
            ("id", "s"),
            ("selector", "color = 'red'"),
            ("receipt", "sub"),
        ],
        "",
    )
    .await;
    assert_eq!(red.recv().await.header("receipt-id"), Some("sub"));
    subs.push(("/queue/Sel.red.Aware.s (red)", red));
    let mut p = StompClient::tcp(stomp).await;
    p.connect(&[]).await;
    for (n, dest) in [
        "/queue/CQ",
        "/queue/CQKEEP",
        "/topic/CT",
        "/topic/VirtualTopic.v",
        "/topic/CT2",
    ]
    .iter()
    .enumerate()
    {
        let receipt = format!("r{n}");
        p.send(
            "SEND",
            &[
                ("destination", dest),
                ("persistent", "true"),
                ("receipt", &receipt),
            ],
            dest,
        )
        .await;
        assert_eq!(p.recv().await.header("receipt-id"), Some(&*receipt));
    }
    for color in ["red", "blue"] {
        p.send(
            "SEND",
            &[
                ("destination", "/topic/Aware.s"),
                ("color", color),
                ("receipt", color),
            ],
            color,
        )
        .await;
        assert_eq!(p.recv().await.header("receipt-id"), Some(color));
    }
    for q in [
        "/queue/cq.a",
        "/queue/cq.b",
        "/queue/cq.k",
        "/queue/ct.a",
        "/queue/Sel.red.Aware.s",
        "/queue/ct2.q",
    ] {
        let mut c = StompClient::tcp(stomp).await;
        c.connect(&[]).await;
        subscribe(&mut c, q).await;
        subs.push((q, c));
    }
    let mut lines = Vec::new();
    for (dest, c) in &mut subs {
        while let Some(f) = c.recv_within(Duration::from_millis(500)).await {
            lines.push(format!(
                "{dest} {} {}",
                f.body_text(),
                f.header("original-destination").unwrap_or("-")
            ));
        }
    }
    lines
}

/// Composite queues and topics and a virtual topic: what reaches which queue, and with which
/// `original-destination`, is what ActiveMQ 5.17 does.
#[tokio::test]
async fn composite_differential() {
    if !crate::support::activemq::available("composite_differential") {
        return;
    }
    let activemq = crate::support::activemq::ActiveMq::start_with_stomp(composite_xml, &[]);
    let expected = composite_transcript(activemq.stomp.expect("stomp")).await;
    eprintln!("ActiveMQ: {expected:#?}");
    assert!(expected.len() >= 6, "{expected:?}");
    let (mqtt, stomp) = (crate::support::free_port(), crate::support::free_port());
    let xml = composite_xml(mqtt, stomp);
    let broker = crate::support::TestBroker::from_xml(&xml).await;
    let addr = broker
        .handle
        .listener_addrs()
        .iter()
        .find(|(n, _)| n == "stomp")
        .map(|(_, a)| *a)
        .expect("stomp listener");
    let got = composite_transcript(addr).await;
    assert_eq!(got, expected);
}

/// Only the publisher's `write` on the topic (or on the composite queue) is checked: the
/// copies are made inside the broker, as ActiveMQ's interceptor makes them below its
/// authorization broker. The device may not write to the consumer queues themselves.
#[tokio::test]
async fn only_the_publishers_write_on_the_topic_is_authorized() {
    let env = crate::broker_with(
        r#"<destinationInterceptors><virtualDestinationInterceptor><virtualDestinations>
             <virtualTopic name="VirtualTopic.>" prefix="Consumer.*."/>
             <compositeQueue name="CQ"><forwardTo><queue physicalName="cq.a"/></forwardTo></compositeQueue>
           </virtualDestinations></virtualDestinationInterceptor></destinationInterceptors>
           <plugins>
             <simpleAuthenticationPlugin><users>
               <authenticationUser username="device" password="pw" groups="devices"/>
               <authenticationUser username="backend" password="pw" groups="backends"/>
             </users></simpleAuthenticationPlugin>
             <authorizationPlugin><map><authorizationMap><authorizationEntries>
               <authorizationEntry topic="VirtualTopic.>" write="devices" admin="devices"/>
               <authorizationEntry queue="CQ" write="devices" admin="devices"/>
               <authorizationEntry queue="Consumer.*.VirtualTopic.>" read="backends" admin="backends"/>
               <authorizationEntry queue="cq.>" read="backends" admin="backends"/>
             </authorizationEntries></authorizationMap></map></authorizationPlugin>
           </plugins>"#,
    )
    .await;
    let backend = [("login", "backend"), ("passcode", "pw")];
    let mut q = env.connected(&backend).await;
    subscribe(&mut q, "/queue/Consumer.b.VirtualTopic.orders").await;
    let mut device = Client::login(env.mqtt(), "device", "device", "pw").await;
    device
        .publish(
            "VirtualTopic/orders",
            rumqttc::QoS::AtLeastOnce,
            false,
            b"m",
        )
        .await;
    assert_eq!(drain(&mut q).await, ["m"]);

    let mut p = env
        .connected(&[("login", "device"), ("passcode", "pw")])
        .await;
    p.send(
        "SEND",
        &[
            ("destination", "/queue/CQ"),
            ("persistent", "true"),
            ("receipt", "r"),
        ],
        "c",
    )
    .await;
    assert_eq!(p.recv().await.header("receipt-id"), Some("r"));
    let mut a = env.connected(&backend).await;
    subscribe(&mut a, "/queue/cq.a").await;
    assert_eq!(drain(&mut a).await, ["c"]);
    // Directly, the device may not write to a consumer queue.
    p.send(
        "SEND",
        &[
            ("destination", "/queue/Consumer.b.VirtualTopic.orders"),
            ("receipt", "d"),
        ],
        "direct",
    )
    .await;
    assert_eq!(p.recv().await.command, "ERROR");
    assert!(drain(&mut q).await.is_empty());
}

/// `selectorAware="true"`: a consumer queue gets a copy only when one of its consumers'
/// selectors accepts it; a queue without consumers gets none.
#[tokio::test]
async fn a_selector_aware_virtual_topic_copies_only_what_a_consumer_takes() {
    let env = crate::broker_with(
        r#"<destinations><queue physicalName="Consumer.idle.VirtualTopic.s"/></destinations>
           <destinationInterceptors><virtualDestinationInterceptor><virtualDestinations>
             <virtualTopic name="VirtualTopic.>" prefix="Consumer.*." selectorAware="true"/>
           </virtualDestinations></virtualDestinationInterceptor></destinationInterceptors>"#,
    )
    .await;
    let mut red = env.connected(&[]).await;
    red.send(
        "SUBSCRIBE",
        &[
            ("destination", "/queue/Consumer.red.VirtualTopic.s"),
            ("id", "s"),
            ("selector", "color = 'red'"),
            ("receipt", "sub"),
        ],
        "",
    )
    .await;
    assert_eq!(red.recv().await.header("receipt-id"), Some("sub"));
    let mut all = subscribed(&env, "/queue/Consumer.all.VirtualTopic.s").await;
    let mut p = env.connected(&[]).await;
    for color in ["red", "blue"] {
        p.send(
            "SEND",
            &[
                ("destination", "/topic/VirtualTopic.s"),
                ("color", color),
                ("receipt", color),
            ],
            color,
        )
        .await;
        assert_eq!(p.recv().await.header("receipt-id"), Some(color));
    }
    assert_eq!(drain(&mut red).await, ["red"]);
    assert_eq!(drain(&mut all).await, ["red", "blue"]);
    // The blue one was never put on the red queue, and the idle queue got nothing.
    let mut red_any = subscribed(&env, "/queue/Consumer.red.VirtualTopic.s").await;
    assert!(drain(&mut red_any).await.is_empty());
    let mut idle = subscribed(&env, "/queue/Consumer.idle.VirtualTopic.s").await;
    assert!(drain(&mut idle).await.is_empty());
}
