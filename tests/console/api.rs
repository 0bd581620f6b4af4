//! The JSON API and the Jolokia read against what the broker really holds.

use rumqttc::QoS;

use crate::http::get;
use crate::support::Client;
use crate::{Env, ADMIN, VIEWER};

#[tokio::test]
async fn overview_topics_and_clients_show_the_live_broker() {
    let env = Env::start().await;
    let mqtt = env.listener("mqtt");
    let mut subscriber = Client::connect(mqtt, "sub-1").await;
    subscriber
        .subscribe("sensors/+/temp", QoS::AtLeastOnce)
        .await;
    let mut publisher = Client::connect(mqtt, "pub-1").await;
    publisher
        .publish("sensors/kitchen/temp", QoS::AtLeastOnce, true, b"21")
        .await;
    subscriber.next_publish().await;

    let overview = get(env.console, "/api/overview", Some(VIEWER)).await.json();
    assert_eq!(overview["broker_name"], "console-test");
    assert_eq!(overview["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(overview["connections"]["current"], 2, "{overview}");
    assert_eq!(overview["connections"]["mqtt"], 2);
    assert_eq!(overview["connections"]["stomp"], 0);
    assert_eq!(overview["sessions"]["online"], 2);
    assert_eq!(overview["subscriptions"], 1);
    assert_eq!(overview["messages"]["received"], 1);
    assert_eq!(overview["messages"]["sent"], 1);
    assert_eq!(overview["last_reload"]["result"], "none");
    assert!(overview["store"].is_null(), "memory-only broker");
    assert!(overview["config_file"]
        .as_str()
        .is_some_and(|f| f.ends_with("activemq.xml")));
    assert_eq!(overview["csrf_token"].as_str().map(str::len), Some(64));
    let listeners = overview["listeners"].as_array().expect("listeners");
    assert_eq!(listeners.len(), 2);
    assert_eq!(listeners[0]["name"], "mqtt");
    assert_eq!(listeners[0]["protocol"], "mqtt");
    assert_eq!(listeners[0]["address"], mqtt.to_string());
    assert_eq!(listeners[0]["connections"], 2);
    assert_eq!(listeners[1]["protocol"], "stomp");
    assert_eq!(listeners[1]["tls"], false);

    let topics = get(env.console, "/api/topics", Some(VIEWER)).await.json();
    let kitchen = topics["topics"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["topic"] == "sensors/kitchen/temp")
        .cloned()
        .expect("topic listed");
    assert_eq!(kitchen["destination"], "sensors.kitchen.temp");
    assert_eq!(kitchen["subscribers"], 1);
    assert_eq!(kitchen["retained"], true);

    let clients = get(env.console, "/api/clients", Some(VIEWER)).await.json();
    let sub = clients["clients"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["client_id"] == "sub-1")
        .cloned()
        .expect("listed");
    assert_eq!(sub["subscriptions"], 1);
    assert_eq!(sub["protocol_version"], "3.1.1");
    assert!(sub["user"].is_null());
    assert!(sub["connected_unix_ms"]
        .as_u64()
        .is_some_and(|ms| ms > 1_600_000_000_000));
    env.broker.shutdown().await;
}

#[tokio::test]
async fn jolokia_reads_the_broker_mbean_as_activemq_does() {
    let env = Env::start().await;
    let mqtt = env.listener("mqtt");
    let mut a = Client::connect(mqtt, "a").await;
    a.subscribe("t/#", QoS::AtLeastOnce).await;
    let mut b = Client::connect(mqtt, "b").await;
    for _ in 0..2 {
        b.publish("t/x", QoS::AtLeastOnce, false, b"x").await;
        a.next_publish().await;
    }
    let mbean = "org.apache.activemq:type=Broker,brokerName=console-test";
    let read = |attribute: &'static str| {
        let path = format!("/api/jolokia/read/{mbean}/{attribute}");
        let console = env.console;
        async move {
            let response = get(console, &path, Some(VIEWER)).await;
            assert_eq!(response.status, 200, "{attribute}: {}", response.text());
            let json = response.json();
            assert_eq!(json["status"], 200);
            assert_eq!(json["request"]["type"], "read");
            assert_eq!(json["request"]["attribute"], attribute);
            assert_eq!(json["request"]["mbean"], mbean);
            assert!(json["timestamp"].as_u64().is_some());
            json["value"].clone()
        }
    };
    assert_eq!(read("BrokerName").await, "console-test");
    assert_eq!(read("BrokerVersion").await, env!("CARGO_PKG_VERSION"));
    assert_eq!(read("CurrentConnectionsCount").await, 2);
    assert_eq!(read("TotalConnectionsCount").await, 2);
    assert_eq!(read("TotalEnqueueCount").await, 2);
    assert_eq!(read("TotalDequeueCount").await, 2);
    assert_eq!(read("TotalConsumerCount").await, 1);
    assert_eq!(read("TotalMessageCount").await, 0);
    assert_eq!(read("MemoryPercentUsage").await, 0);
    assert!(read("MemoryLimit").await.as_u64().is_some_and(|l| l > 0));
    assert!(read("UptimeMillis").await.as_u64().is_some());
    assert!(read("Uptime")
        .await
        .as_str()
        .is_some_and(|u| u.ends_with("seconds") || u.ends_with("second")));
    // The keys in the other order, and every attribute at once.
    let all = get(
        env.console,
        "/api/jolokia/read/org.apache.activemq:brokerName=console-test,type=Broker",
        Some(ADMIN),
    )
    .await
    .json();
    assert_eq!(all["value"]["BrokerName"], "console-test");
    assert_eq!(all["value"].as_object().map(|o| o.len()), Some(15));
    // Unknown attribute or MBean: Jolokia's error shape.
    let missing = get(
        env.console,
        &format!("/api/jolokia/read/{mbean}/NoSuchThing"),
        Some(ADMIN),
    )
    .await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["status"], 404);
    assert_eq!(
        missing.json()["error_type"],
        "javax.management.AttributeNotFoundException"
    );
    let other = get(
        env.console,
        "/api/jolokia/read/org.apache.activemq:type=Broker,brokerName=other/BrokerName",
        Some(ADMIN),
    )
    .await;
    assert_eq!(
        other.json()["error_type"],
        "javax.management.InstanceNotFoundException"
    );
    env.broker.shutdown().await;
}
