//! The JSON API and the Jolokia read against what the broker really holds.

use rumqttc::QoS;

use crate::http::{self, get};
use crate::stomp_client::StompClient;
use crate::support::{Client, STEP};
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
    // Unknown attribute or MBean: Jolokia's answer, HTTP 200 with the error in the body.
    let missing = get(
        env.console,
        &format!("/api/jolokia/read/{mbean}/NoSuchThing"),
        Some(ADMIN),
    )
    .await;
    assert_eq!(missing.status, 200, "Jolokia reports errors in the body");
    let missing = missing.json();
    assert_eq!(missing["status"], 404);
    assert_eq!(
        missing["error_type"],
        "javax.management.AttributeNotFoundException"
    );
    assert_eq!(
        missing["error"],
        "javax.management.AttributeNotFoundException : No such attribute: NoSuchThing"
    );
    assert_eq!(missing["request"]["attribute"], "NoSuchThing");
    assert_eq!(missing["request"]["mbean"], mbean);
    assert!(missing.get("value").is_none());
    let other_mbean = "org.apache.activemq:type=Broker,brokerName=other";
    let other = get(
        env.console,
        &format!("/api/jolokia/read/{other_mbean}/BrokerName"),
        Some(ADMIN),
    )
    .await;
    assert_eq!(other.status, 200);
    let other = other.json();
    assert_eq!(other["status"], 404);
    assert_eq!(
        other["error_type"],
        "javax.management.InstanceNotFoundException"
    );
    assert_eq!(
        other["error"],
        format!("javax.management.InstanceNotFoundException : {other_mbean}")
    );
    assert_eq!(other["request"]["type"], "read");
    // Every attribute of an unknown MBean: the same error.
    let other_all = get(
        env.console,
        &format!("/api/jolokia/read/{other_mbean}"),
        Some(ADMIN),
    )
    .await
    .json();
    assert_eq!(
        other_all["error_type"],
        "javax.management.InstanceNotFoundException"
    );
    env.broker.shutdown().await;
}

/// What Telegraf's jolokia2_agent input POSTs (plugins/common/jolokia2/client.go: a bulk array,
/// `attribute` a string for one path and a list for several) and `version`, with a `user`
/// login and no CSRF token: reads change nothing. The actions still need their token.
#[tokio::test]
async fn jolokia_post_answers_telegrafs_bulk_reads_without_a_csrf_token() {
    let env = Env::start().await;
    let body = r#"[
        {"type":"read","mbean":"org.apache.activemq:brokerName=console-test,type=Broker","attribute":["TotalConnectionsCount","BrokerName"]},
        {"type":"read","mbean":"org.apache.activemq:type=Broker,brokerName=console-test","attribute":"BrokerName"},
        {"type":"read","mbean":"org.apache.activemq:brokerName=*,type=Broker","attribute":["MemoryLimit"]},
        {"type":"read","mbean":"org.apache.activemq:type=Broker,brokerName=console-test"},
        {"type":"read","mbean":"org.apache.activemq:type=Broker,brokerName=console-test","attribute":"Nope"},
        {"type":"exec","mbean":"org.apache.activemq:type=Broker,brokerName=console-test","operation":"stop"}
    ]"#;
    let response = http::post_json(env.console, "/api/jolokia", Some(VIEWER), body).await;
    assert_eq!(response.status, 200, "{}", response.text());
    let answers = response.json();
    let answers = answers.as_array().expect("an array for a bulk request");
    assert_eq!(answers.len(), 6);
    assert_eq!(answers[0]["status"], 200);
    assert_eq!(answers[0]["value"]["BrokerName"], "console-test");
    assert_eq!(answers[0]["value"]["TotalConnectionsCount"], 0);
    assert_eq!(answers[1]["value"], "console-test");
    assert_eq!(answers[1]["request"]["attribute"], "BrokerName");
    assert!(
        answers[2]["value"]["org.apache.activemq:brokerName=console-test,type=Broker"]
            ["MemoryLimit"]
            .as_u64()
            .is_some_and(|l| l > 0),
        "{}",
        answers[2]
    );
    assert_eq!(answers[3]["value"].as_object().map(|o| o.len()), Some(15));
    assert_eq!(answers[4]["status"], 404);
    assert_eq!(
        answers[4]["error_type"],
        "javax.management.AttributeNotFoundException"
    );
    assert_ne!(answers[5]["status"], 200, "no operation is executed");
    // A single object gets a single answer.
    let one = http::post_json(
        env.console,
        "/api/jolokia",
        Some(VIEWER),
        r#"{"type":"read","mbean":"org.apache.activemq:type=Broker,brokerName=console-test","attribute":"BrokerName"}"#,
    )
    .await
    .json();
    assert_eq!(one["value"], "console-test");
    // Version, by GET and POST.
    let version = get(env.console, "/api/jolokia/version", Some(VIEWER))
        .await
        .json();
    assert_eq!(version["status"], 200);
    assert!(version["value"]["agent"].is_string() && version["value"]["protocol"].is_string());
    let version = http::post_json(
        env.console,
        "/api/jolokia",
        Some(VIEWER),
        r#"{"type":"version"}"#,
    )
    .await
    .json();
    assert_eq!(version["status"], 200);
    // Comma-separated attributes in a GET.
    let pair = get(
        env.console,
        "/api/jolokia/read/org.apache.activemq:type=Broker,brokerName=console-test/BrokerName,CurrentConnectionsCount",
        Some(VIEWER),
    )
    .await
    .json();
    assert_eq!(pair["value"]["BrokerName"], "console-test");
    assert_eq!(pair["value"]["CurrentConnectionsCount"], 0);
    // A login is needed; the actions still need their token.
    let anonymous =
        http::post_json(env.console, "/api/jolokia", None, r#"{"type":"version"}"#).await;
    assert_eq!(anonymous.status, 401);
    let purge = http::post_json(env.console, "/api/queues/q/purge", Some(crate::ADMIN), "{}").await;
    assert_eq!(purge.status, 403, "{}", purge.text());
    // Not JSON: Jolokia's error in the body.
    let bad = http::post_json(env.console, "/api/jolokia", Some(VIEWER), "not json")
        .await
        .json();
    assert_eq!(bad["status"], 400);
    env.broker.shutdown().await;
}

/// Telegraf's jolokia2_agent POSTs to `<url>/read` (client.go's formatReadURL), with
/// `Content-type: application/json`, basic credentials and a bulk array; Jolokia ignores the
/// path of a POST, so every POST under /api/jolokia/ is the bulk endpoint. A GET of
/// /api/jolokia(/) is the version response.
#[tokio::test]
async fn jolokia_post_to_any_path_under_the_agent_is_answered_like_telegraf_expects() {
    let env = Env::start().await;
    let body = br#"[{"type":"read","mbean":"org.apache.activemq:brokerName=*,type=Broker","attribute":["TotalEnqueueCount","MemoryPercentUsage"]}]"#;
    for path in [
        "/api/jolokia/read",
        "/api/jolokia/read?ignoreErrors=true",
        "/api/jolokia/read/",
        "/api/jolokia/",
        "/api/jolokia/version",
        "/api/jolokia/anything/else",
    ] {
        let stream = tokio::net::TcpStream::connect(env.console)
            .await
            .expect("connect");
        let response = http::send_body(
            stream,
            &env.console.to_string(),
            "POST",
            path,
            Some(VIEWER),
            &[
                ("Content-type", "application/json"),
                ("User-Agent", "Go-http-client/1.1"),
                ("Accept-Encoding", "gzip"),
            ],
            body.to_vec(),
        )
        .await;
        assert_eq!(response.status, 200, "{path}: {}", response.text());
        let answers = response.json();
        let answers = answers.as_array().expect("an array for a bulk request");
        assert_eq!(answers.len(), 1, "{path}");
        assert_eq!(answers[0]["status"], 200, "{path}: {}", answers[0]);
        let broker =
            &answers[0]["value"]["org.apache.activemq:brokerName=console-test,type=Broker"];
        assert!(
            broker["TotalEnqueueCount"].is_u64(),
            "{path}: {}",
            answers[0]
        );
        assert!(
            broker["MemoryPercentUsage"].is_u64(),
            "{path}: {}",
            answers[0]
        );
    }
    // The same login rule: a login is needed, no CSRF token.
    let anonymous = http::post_json(env.console, "/api/jolokia/read", None, "[]").await;
    assert_eq!(anonymous.status, 401);
    for path in ["/api/jolokia", "/api/jolokia/"] {
        let version = get(env.console, path, Some(VIEWER)).await;
        assert_eq!(version.status, 200, "{path}");
        let version = version.json();
        assert_eq!(version["status"], 200, "{path}");
        assert!(version["value"]["agent"].is_string(), "{path}: {version}");
        assert_eq!(get(env.console, path, None).await.status, 401);
    }
    // Not under the agent: still not found.
    assert_eq!(
        http::post_json(env.console, "/api/jolokiax", Some(VIEWER), "[]")
            .await
            .status,
        404
    );
    env.broker.shutdown().await;
}

/// The topic row of `topic` in an /api/topics answer.
fn topic_row(topics: &serde_json::Value, topic: &str) -> Option<serde_json::Value> {
    topics["topics"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["topic"] == topic)
        .cloned()
}

#[tokio::test]
async fn topics_count_what_is_published_over_mqtt_and_stomp() {
    let env = Env::start_with("", r#"<systemTopics xmlns="urn:ferromq" interval="100"/>"#).await;
    let mut publisher = Client::connect(env.listener("mqtt"), "pub-1").await;
    for _ in 0..3 {
        publisher
            .publish("plant/line1", QoS::AtLeastOnce, false, b"21")
            .await;
    }
    let mut stomp = StompClient::tcp(env.listener("stomp")).await;
    stomp.connect(&[("client-id", "stomp-sub")]).await;
    stomp
        .send(
            "SEND",
            &[("destination", "/topic/plant.line2"), ("receipt", "s1")],
            "abcd",
        )
        .await;
    assert_eq!(stomp.recv().await.command, "RECEIPT");

    let topics = get(env.console, "/api/topics", Some(VIEWER)).await.json();
    assert_eq!(topics["truncated"], false);
    assert_eq!(topics["tracked_limit"], 10_000);
    let line1 = topic_row(&topics, "plant/line1").expect("published topic listed");
    assert_eq!(line1["messages_in"], 3, "{line1}");
    assert_eq!(line1["bytes_in"], 6);
    assert_eq!(line1["subscribers"], 0);
    let line2 = topic_row(&topics, "plant/line2").expect("STOMP topic listed");
    assert_eq!(line2["destination"], "plant.line2");
    assert_eq!(line2["messages_in"], 1);
    assert_eq!(line2["bytes_in"], 4);

    // The broker's own $SYS topics only with ?system=true.
    let deadline = tokio::time::Instant::now() + STEP;
    let system = loop {
        let all = get(env.console, "/api/topics?system=true", Some(VIEWER))
            .await
            .json();
        if topic_row(&all, "$SYS/broker/uptime").is_some() {
            break all;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no $SYS topic: {all}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(topic_row(&system, "plant/line1").is_some());
    let topics = get(env.console, "/api/topics", Some(VIEWER)).await.json();
    let names: Vec<&str> = topics["topics"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["topic"].as_str())
        .collect();
    assert!(
        names.iter().all(|t| !t.starts_with("$SYS")),
        "hidden by default: {names:?}"
    );
    assert!(names.contains(&"plant/line1"));

    // A STOMP connection's subscriptions (a topic and a queue) are counted.
    stomp
        .send(
            "SUBSCRIBE",
            &[
                ("destination", "/topic/plant.line1"),
                ("id", "1"),
                ("receipt", "s2"),
            ],
            "",
        )
        .await;
    assert_eq!(stomp.recv().await.command, "RECEIPT");
    stomp
        .send(
            "SUBSCRIBE",
            &[
                ("destination", "/queue/orders"),
                ("id", "2"),
                ("receipt", "s3"),
            ],
            "",
        )
        .await;
    assert_eq!(stomp.recv().await.command, "RECEIPT");
    let stomp_subscriptions = |clients: serde_json::Value| {
        clients["clients"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["client_id"] == "stomp-sub")
            .map(|c| c["subscriptions"].clone())
    };
    let clients = get(env.console, "/api/clients", Some(VIEWER)).await.json();
    assert_eq!(stomp_subscriptions(clients), Some(serde_json::json!(2)));
    let topics = get(env.console, "/api/topics", Some(VIEWER)).await.json();
    assert_eq!(
        topic_row(&topics, "plant/line1").map(|t| t["subscribers"].clone()),
        Some(serde_json::json!(1))
    );
    stomp
        .send("UNSUBSCRIBE", &[("id", "2"), ("receipt", "s4")], "")
        .await;
    assert_eq!(stomp.recv().await.command, "RECEIPT");
    let clients = get(env.console, "/api/clients", Some(VIEWER)).await.json();
    assert_eq!(stomp_subscriptions(clients), Some(serde_json::json!(1)));
    env.broker.shutdown().await;
}

/// The overview's session counts are what `/api/sessions` lists of each kind: `sessions` its
/// MQTT sessions, `stomp_durable_subscriptions` its STOMP durable subscriptions, online and
/// offline; none of the broker's other internal STOMP sessions (a connected STOMP client's
/// client-id, its non-durable topic subscriptions) is either.
#[tokio::test]
async fn overview_session_counts_are_what_the_sessions_api_lists() {
    let env = Env::start().await;
    let mqtt = env.listener("mqtt");
    let online = Client::connect(mqtt, "mqtt-online").await;
    let (kept, _) = crate::support::RawClient::connected(mqtt, "mqtt-kept", false).await;
    drop(kept);
    let mut stomp = StompClient::tcp(env.listener("stomp")).await;
    stomp.connect(&[("client-id", "stomp-app")]).await;
    for (id, extra) in [
        ("1", None),
        ("2", Some(("activemq.subscriptionName", "d1"))),
    ] {
        let mut headers = vec![
            ("destination", "/topic/plant.line1"),
            ("id", id),
            ("receipt", id),
        ];
        headers.extend(extra);
        stomp.send("SUBSCRIBE", &headers, "").await;
        assert_eq!(stomp.recv().await.command, "RECEIPT");
    }

    // Both read until they agree on the expected counts, (online, offline) of MQTT sessions
    // and of STOMP durable subscriptions (the MQTT session goes offline when its
    // connection's close is seen, the STOMP durable subscription when its client leaves).
    let counts = |expected: [(u64, u64); 2]| async move {
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            let overview = get(env.console, "/api/overview", Some(VIEWER)).await.json();
            let listed = get(env.console, "/api/sessions", Some(VIEWER)).await.json();
            let sessions = listed["sessions"].as_array().cloned().unwrap_or_default();
            let of_kind = |kind: &str| {
                let all: Vec<_> = sessions.iter().filter(|s| s["kind"] == kind).collect();
                let connected = all.iter().filter(|s| s["connected"] == true).count();
                (connected as u64, (all.len() - connected) as u64)
            };
            let from_list = [of_kind("mqtt"), of_kind("stomp-durable-subscription")];
            let figure = |name: &str| {
                (
                    overview[name]["online"].as_u64().unwrap_or(u64::MAX),
                    overview[name]["offline"].as_u64().unwrap_or(u64::MAX),
                )
            };
            let from_overview = [figure("sessions"), figure("stomp_durable_subscriptions")];
            if from_overview == expected && from_list == expected && sessions.len() == 3 {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "expected {expected:?}: overview {from_overview:?}, /api/sessions {from_list:?} \
                 ({listed})"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    counts([(1, 1), (1, 0)]).await;
    stomp.send("DISCONNECT", &[], "").await;
    stomp.expect_closed_within(STEP).await;
    // The durable subscription is kept offline.
    counts([(1, 1), (0, 1)]).await;
    drop(online);
    env.broker.shutdown().await;
}
