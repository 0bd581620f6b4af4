//! Admin actions as their clients observe them: disconnect (MQTT 5 DISCONNECT 0x98, MQTT
//! 3.1.1 and STOMP closed), delete an offline session with its queue (409 while connected),
//! purge a queue.

use std::time::Duration;

use rumqttc::v5::mqttbytes::v5::{DisconnectReasonCode, Packet as P5};
use rumqttc::v5::{ConnectionError, Event as Event5, MqttOptions as Options5, StateError};
use serde_json::Value;

use crate::http::{act, get};
use crate::stomp_client::StompClient;
use crate::support::STEP;
use crate::{Env, ADMIN};

/// The console's connection id of `client_id`, waiting until it is listed.
async fn connection_id(env: &Env, client_id: &str) -> String {
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let clients = get(env.console, "/api/clients", Some(ADMIN)).await.json();
        let found = clients["clients"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["client_id"] == client_id)
            .and_then(|c| c["id"].as_str().map(str::to_owned));
        if let Some(id) = found {
            return id;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{client_id} not listed: {clients}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn listed(clients: &Value, client_id: &str) -> bool {
    clients["clients"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["client_id"] == client_id)
}

#[tokio::test]
async fn a_rumqttc_v5_client_is_disconnected_and_leaves_the_list() {
    let env = Env::start().await;
    let mqtt = env.listener("mqtt");
    let mut options = Options5::new("kick-me", "127.0.0.1", mqtt.port());
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = rumqttc::v5::AsyncClient::new(options, 10);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event5::Incoming(P5::Disconnect(d))) => {
                    let _ = tx.send(Some(d.reason_code));
                }
                Ok(_) => {}
                // rumqttc reports the server's DISCONNECT as the error that ends its loop.
                Err(ConnectionError::MqttState(StateError::ServerDisconnect {
                    reason_code,
                    ..
                })) => {
                    let _ = tx.send(Some(reason_code));
                    let _ = tx.send(None);
                    return;
                }
                Err(_) => {
                    let _ = tx.send(None);
                    return;
                }
            }
        }
    });
    let id = connection_id(&env, "kick-me").await;
    let clients = get(env.console, "/api/clients", Some(ADMIN)).await.json();
    let entry = clients["clients"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["id"] == id.as_str())
        .cloned()
        .expect("entry");
    assert_eq!(entry["protocol"], "mqtt");
    assert_eq!(entry["protocol_version"], "5.0");
    assert_eq!(entry["listener"], "mqtt");
    assert_eq!(entry["keep_alive_secs"], 30);
    assert!(entry["peer"]
        .as_str()
        .is_some_and(|p| p.starts_with("127.0.0.1:")));
    let done = act(env.console, &format!("/api/clients/{id}/disconnect"), ADMIN).await;
    assert_eq!(done.status, 200, "{}", done.text());
    // rumqttc 0.24 reports the close ("connection closed by peer") without surfacing the
    // DISCONNECT's reason; if it does, it must be 0x98. The byte itself is read by a raw
    // client in `a_raw_mqtt5_client_reads_disconnect_0x98`.
    loop {
        let event = tokio::time::timeout(STEP, rx.recv())
            .await
            .expect("closed in time")
            .expect("event");
        match event {
            Some(reason) => assert_eq!(reason, DisconnectReasonCode::AdministrativeAction),
            None => break,
        }
    }
    assert!(!listed(
        &get(env.console, "/api/clients", Some(ADMIN)).await.json(),
        "kick-me"
    ));
    // Twice: the connection is gone.
    let again = act(env.console, &format!("/api/clients/{id}/disconnect"), ADMIN).await;
    assert_eq!(again.status, 404);
    drop(client);
    env.broker.shutdown().await;
}

#[tokio::test]
async fn mqtt311_and_stomp_clients_see_their_connection_closed() {
    let env = Env::start().await;
    let mut options =
        rumqttc::MqttOptions::new("old-client", "127.0.0.1", env.listener("mqtt").port());
    options.set_keep_alive(Duration::from_secs(30));
    let (_client, mut eventloop) = rumqttc::AsyncClient::new(options, 10);
    let (tx, mut closed) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while eventloop.poll().await.is_ok() {}
        let _ = tx.send(());
    });
    let mut stomp = StompClient::tcp(env.listener("stomp")).await;
    let connected = stomp.connect(&[("client-id", "stomp-kick")]).await;
    assert_eq!(connected.command, "CONNECTED");

    let id = connection_id(&env, "old-client").await;
    assert_eq!(
        act(env.console, &format!("/api/clients/{id}/disconnect"), ADMIN)
            .await
            .status,
        200
    );
    tokio::time::timeout(STEP, closed.recv())
        .await
        .expect("MQTT 3.1.1 connection closed in time");

    let id = connection_id(&env, "stomp-kick").await;
    assert!(id.starts_with("stomp-"), "{id}");
    let clients = get(env.console, "/api/clients", Some(ADMIN)).await.json();
    let entry = clients["clients"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["id"] == id.as_str())
        .cloned()
        .expect("entry");
    assert_eq!(entry["protocol"], "stomp");
    assert_eq!(entry["protocol_version"], "1.2");
    assert_eq!(
        act(env.console, &format!("/api/clients/{id}/disconnect"), ADMIN)
            .await
            .status,
        200
    );
    let error = stomp.recv().await;
    assert_eq!(error.command, "ERROR");
    assert!(
        error.body_text().contains("administrator"),
        "{}",
        error.body_text()
    );
    stomp.expect_closed_within(STEP).await;
    assert_eq!(
        act(env.console, "/api/clients/mqtt-999999/disconnect", ADMIN)
            .await
            .status,
        404
    );
    assert_eq!(
        act(env.console, "/api/clients/nonsense/disconnect", ADMIN)
            .await
            .status,
        404
    );
    env.broker.shutdown().await;
}

/// The session of `client_id` once its connection has left.
async fn offline_session(env: &Env, client_id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let sessions = get(env.console, "/api/sessions", Some(ADMIN)).await.json();
        let found = sessions["sessions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["client_id"] == client_id && s["connected"] == false)
            .cloned();
        if let Some(session) = found {
            return session;
        }
        assert!(tokio::time::Instant::now() < deadline, "{sessions}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_offline_session_is_deleted_with_its_queue_and_a_connected_one_is_refused() {
    let env = Env::start().await;
    let mqtt = env.listener("mqtt");
    let mut options = rumqttc::MqttOptions::new("keeper", "127.0.0.1", mqtt.port());
    options.set_clean_session(false);
    let mut subscriber = crate::support::Client::connect_with(options).await;
    subscriber
        .subscribe("news/#", rumqttc::QoS::AtLeastOnce)
        .await;

    let connected = act(env.console, "/api/sessions/keeper/delete", ADMIN).await;
    assert_eq!(connected.status, 409, "{}", connected.text());

    subscriber.disconnect().await;
    // Messages queued for the offline session.
    let mut publisher = crate::support::Client::connect(mqtt, "pub").await;
    for _ in 0..3 {
        publisher
            .publish("news/a", rumqttc::QoS::AtLeastOnce, false, b"m")
            .await;
    }
    let keeper = offline_session(&env, "keeper").await;
    assert_eq!(keeper["pending"], 3, "{keeper}");
    assert_eq!(keeper["subscriptions"], 1);
    assert!(keeper["last_seen_unix_ms"].as_u64().is_some());

    let deleted = act(env.console, "/api/sessions/keeper/delete", ADMIN).await;
    assert_eq!(deleted.status, 200, "{}", deleted.text());
    let sessions = get(env.console, "/api/sessions", Some(ADMIN)).await.json();
    assert!(
        !sessions["sessions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| s["client_id"] == "keeper"),
        "{sessions}"
    );
    // Its subscription went with it: the client comes back to no session and no messages.
    let mut options = rumqttc::MqttOptions::new("keeper", "127.0.0.1", mqtt.port());
    options.set_clean_session(false);
    let back = crate::support::Client::connect_with(options).await;
    assert!(!back.session_present);
    assert_eq!(
        act(env.console, "/api/sessions/keeper2/delete", ADMIN)
            .await
            .status,
        404
    );
    env.broker.shutdown().await;
}

#[tokio::test]
async fn purging_a_queue_empties_it() {
    let (logs, _guard) = crate::support::logs::Logs::capture();
    let env = Env::start().await;
    let mut producer = StompClient::tcp(env.listener("stomp")).await;
    producer.connect(&[]).await;
    for n in 0..3 {
        let receipt = format!("r{n}");
        producer
            .send(
                "SEND",
                &[("destination", "/queue/orders"), ("receipt", &receipt)],
                "order",
            )
            .await;
        assert_eq!(producer.recv().await.command, "RECEIPT");
    }
    let queues = get(env.console, "/api/queues", Some(ADMIN)).await.json();
    let orders = &queues["queues"][0];
    assert_eq!(orders["name"], "orders");
    assert_eq!(orders["depth"], 3);
    assert_eq!(orders["enqueued"], 3);
    assert_eq!(orders["consumers"], 0);
    let purged = act(env.console, "/api/queues/orders/purge", ADMIN).await;
    assert_eq!(purged.status, 200);
    assert_eq!(purged.json()["purged"], 3);
    // The audit line names the administrator and where the request came from.
    let text = logs.text();
    let audit = text
        .lines()
        .find(|l| l.contains("console: queue purged"))
        .unwrap_or_else(|| panic!("no audit line: {text}"));
    assert!(
        audit.contains("admin=admin") && audit.contains("peer=127.0.0.1:"),
        "{audit}"
    );
    let queues = get(env.console, "/api/queues", Some(ADMIN)).await.json();
    assert_eq!(queues["queues"][0]["depth"], 0);
    // A consumer now gets nothing.
    let mut consumer = StompClient::tcp(env.listener("stomp")).await;
    consumer.connect(&[]).await;
    consumer
        .send(
            "SUBSCRIBE",
            &[("destination", "/queue/orders"), ("id", "1")],
            "",
        )
        .await;
    assert!(consumer
        .recv_within(Duration::from_millis(300))
        .await
        .is_none());
    assert_eq!(
        act(env.console, "/api/queues/nope/purge", ADMIN)
            .await
            .status,
        404
    );
    env.broker.shutdown().await;
}

/// A persistent session of `client_id`, offline.
async fn leave_offline_session(env: &Env, client_id: &str) {
    let mut options =
        rumqttc::MqttOptions::new(client_id, "127.0.0.1", env.listener("mqtt").port());
    options.set_clean_session(false);
    let mut client = crate::support::Client::connect_with(options).await;
    client.subscribe("dots/#", rumqttc::QoS::AtLeastOnce).await;
    client.disconnect().await;
    offline_session(env, client_id).await;
}

/// A queue `name` holding one message.
async fn queue_with_a_message(env: &Env, name: &str) {
    let mut producer = StompClient::tcp(env.listener("stomp")).await;
    producer.connect(&[]).await;
    let destination = format!("/queue/{name}");
    producer
        .send(
            "SEND",
            &[("destination", &destination), ("receipt", "r")],
            "m",
        )
        .await;
    assert_eq!(producer.recv().await.command, "RECEIPT");
}

fn session_listed(env_sessions: &Value, client_id: &str) -> bool {
    env_sessions["sessions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|s| s["client_id"] == client_id)
}

/// A name that is `.` or `..` is a dot segment in a path, which browsers remove before sending
/// even when written `%2E`: the actions also take the name in the query string, where nothing
/// rewrites it; scripts' path form with `%2E` still works.
#[tokio::test]
async fn sessions_and_queues_named_dot_and_dot_dot_are_deleted_and_purged_by_query() {
    let env = Env::start().await;
    leave_offline_session(&env, ".").await;
    leave_offline_session(&env, "..").await;
    leave_offline_session(&env, "a b+c/?").await;

    for client_id in ["..", "a%20b%2Bc%2F%3F"] {
        let path = format!("/api/sessions/delete?client_id={client_id}");
        let deleted = act(env.console, &path, ADMIN).await;
        assert_eq!(deleted.status, 200, "{path}: {}", deleted.text());
    }
    let deleted = act(env.console, "/api/sessions/%2E/delete", ADMIN).await;
    assert_eq!(deleted.status, 200, "{}", deleted.text());
    assert_eq!(deleted.json()["client_id"], ".");
    let sessions = get(env.console, "/api/sessions", Some(ADMIN)).await.json();
    for client_id in [".", "..", "a b+c/?"] {
        assert!(
            !session_listed(&sessions, client_id),
            "{client_id}: {sessions}"
        );
    }
    let again = act(env.console, "/api/sessions/delete?client_id=..", ADMIN).await;
    assert_eq!(again.status, 404, "{}", again.text());

    queue_with_a_message(&env, ".").await;
    queue_with_a_message(&env, "..").await;
    let purged = act(env.console, "/api/queues/purge?name=.", ADMIN).await;
    assert_eq!(purged.status, 200, "{}", purged.text());
    assert_eq!(purged.json()["name"], ".");
    assert_eq!(purged.json()["purged"], 1);
    let purged = act(env.console, "/api/queues/%2E%2E/purge", ADMIN).await;
    assert_eq!(purged.status, 200, "{}", purged.text());
    assert_eq!(purged.json()["name"], "..");
    let queues = get(env.console, "/api/queues", Some(ADMIN)).await.json();
    for queue in queues["queues"].as_array().expect("queues") {
        assert_eq!(queue["depth"], 0, "{queues}");
    }

    // No name, or two: nothing is done.
    for path in [
        "/api/sessions/delete",
        "/api/sessions/delete?client_id=a&client_id=b",
        "/api/queues/purge",
        "/api/queues/purge?name=.&name=..",
    ] {
        let refused = act(env.console, path, ADMIN).await;
        assert_eq!(refused.status, 400, "{path}: {}", refused.text());
    }
    // The login and the CSRF token come first.
    let anonymous =
        crate::http::request(env.console, "POST", "/api/queues/purge?name=.", None, &[]).await;
    assert_eq!(anonymous.status, 401);
    let no_token = crate::http::request(
        env.console,
        "POST",
        "/api/sessions/delete",
        Some(ADMIN),
        &[],
    )
    .await;
    assert_eq!(no_token.status, 403);
    env.broker.shutdown().await;
}

#[tokio::test]
async fn a_raw_mqtt5_client_reads_disconnect_0x98() {
    disconnect_reads_0x98("raw-kick", false).await;
}

/// The same for a connection parked while idle (no task of its own): the kick wakes it.
#[tokio::test]
async fn a_parked_mqtt5_client_reads_disconnect_0x98() {
    disconnect_reads_0x98("raw-parked-kick", true).await;
}

/// A raw MQTT 5 client `client_id` (after it parked, when `parked`) disconnected from the
/// console reads DISCONNECT 0x98 (Administrative action) and is closed.
async fn disconnect_reads_0x98(client_id: &str, parked: bool) {
    let env = Env::start().await;
    let mut raw = crate::support::RawClient::connected_v5(env.listener("mqtt"), client_id).await;
    let id = connection_id(&env, client_id).await;
    if parked {
        env.broker.parked(1).await;
    }
    assert_eq!(
        act(env.console, &format!("/api/clients/{id}/disconnect"), ADMIN)
            .await
            .status,
        200
    );
    match raw.recv().await {
        ferromq::protocol::Packet::Disconnect(d) => assert_eq!(d.reason, 0x98),
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
    raw.expect_closed().await;
    env.broker.shutdown().await;
}

/// The entry of `/api/sessions` whose `client_id` is `id`, once `ready` holds for it.
async fn session_entry(
    console: std::net::SocketAddr,
    id: &str,
    ready: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let sessions = get(console, "/api/sessions", Some(ADMIN)).await.json();
        let found = sessions["sessions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["client_id"] == id && ready(s))
            .cloned();
        if let Some(entry) = found {
            return entry;
        }
        assert!(tokio::time::Instant::now() < deadline, "{id}: {sessions}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// SUBSCRIBE to durable subscription `orders` of `/topic/plant.line1`, awaiting its RECEIPT.
async fn subscribe_orders(stomp: &mut StompClient) {
    stomp
        .send(
            "SUBSCRIBE",
            &[
                ("destination", "/topic/plant.line1"),
                ("id", "1"),
                ("activemq.subscriptionName", "orders"),
                ("receipt", "subscribed"),
            ],
            "",
        )
        .await;
    assert_eq!(stomp.recv().await.command, "RECEIPT");
}

/// A single broker's console lists a STOMP durable subscription as `stomp:<client-id>:<name>`
/// with its kind and destination, and its Delete ends it with what it kept: refused (409)
/// while a STOMP client with its client-id is connected (consuming it or not), and gone for
/// good afterwards, across a restart of the real binary, its client then starting afresh.
#[tokio::test]
async fn a_stomp_durable_subscription_is_listed_and_deleted_with_what_it_kept() {
    use crate::support::cluster_nodes::FerromqNode;
    use crate::support::free_port;
    let dir = tempfile::tempdir().expect("tempdir");
    crate::write(dir.path(), "jetty-realm.properties", crate::REALM);
    let (mqtt_port, stomp_port, console_port) = (free_port(), free_port(), free_port());
    let xml = format!(
        r#"<beans xmlns="http://www.springframework.org/schema/beans">
  <broker xmlns="http://activemq.apache.org/schema/core" brokerName="durable-console">
    <console xmlns="urn:ferromq" host="127.0.0.1" port="{console_port}" realm="jetty-realm.properties"/>
    <persistenceAdapter><kahaDB directory="{store}"/></persistenceAdapter>
    <transportConnectors>
      <transportConnector name="mqtt" uri="mqtt://127.0.0.1:{mqtt_port}"/>
      <transportConnector name="stomp" uri="stomp://127.0.0.1:{stomp_port}"/>
    </transportConnectors>
  </broker>
</beans>
"#,
        store = dir.path().join("store").display()
    );
    crate::write(dir.path(), "activemq.xml", &xml);
    let config = dir.path().join("activemq.xml");
    let mut broker = FerromqNode::spawn(&config);
    let console: std::net::SocketAddr = ([127, 0, 0, 1], console_port).into();
    let stomp_addr: std::net::SocketAddr = ([127, 0, 0, 1], stomp_port).into();
    const ID: &str = "stomp:app:orders";

    let mut stomp = StompClient::tcp(stomp_addr).await;
    stomp.connect(&[("client-id", "app")]).await;
    subscribe_orders(&mut stomp).await;
    let entry = session_entry(console, ID, |s| s["connected"] == true).await;
    assert_eq!(entry["kind"], "stomp-durable-subscription", "{entry}");
    assert_eq!(entry["destination"], "/topic/plant.line1", "{entry}");
    assert_eq!(entry["stomp_client_id"], "app");
    assert_eq!(entry["subscription_name"], "orders");
    assert_eq!(entry["persistent"], true);
    let path = "/api/sessions/delete?client_id=stomp%3Aapp%3Aorders";
    let consumed = act(console, path, ADMIN).await;
    assert_eq!(consumed.status, 409, "{}", consumed.text());
    // No longer consumed, its client still connected: still refused.
    stomp
        .send("UNSUBSCRIBE", &[("id", "1"), ("receipt", "u")], "")
        .await;
    assert_eq!(stomp.recv().await.command, "RECEIPT");
    let connected = act(console, path, ADMIN).await;
    assert_eq!(connected.status, 409, "{}", connected.text());
    assert!(
        connected.text().contains("client-id app"),
        "{}",
        connected.text()
    );
    stomp.send("DISCONNECT", &[], "").await;
    stomp.expect_closed_within(STEP).await;

    // Kept for it meanwhile.
    let mut publisher = crate::support::Client::connect(broker.mqtt_addr(), "pub").await;
    for _ in 0..3 {
        publisher
            .publish("plant/line1", rumqttc::QoS::AtLeastOnce, false, b"m")
            .await;
    }
    let entry = session_entry(console, ID, |s| {
        s["connected"] == false && s["pending"] == 3
    })
    .await;
    assert!(entry["last_seen_unix_ms"].as_u64().is_some(), "{entry}");
    let overview = get(console, "/api/overview", Some(ADMIN)).await.json();
    assert_eq!(
        overview["stomp_durable_subscriptions"],
        serde_json::json!({ "online": 0, "offline": 1 }),
        "{overview}"
    );

    let deleted = act(console, path, ADMIN).await;
    assert_eq!(deleted.status, 200, "{}", deleted.text());
    let sessions = get(console, "/api/sessions", Some(ADMIN)).await.json();
    assert!(!sessions.to_string().contains(ID), "deleted: {sessions}");
    assert_eq!(act(console, path, ADMIN).await.status, 404, "deleted once");
    drop(publisher);

    // Gone from the store too: after a restart nothing is listed nor delivered.
    assert!(broker.terminate().is_some_and(|s| s.success()));
    let mut broker = FerromqNode::spawn(&config);
    let sessions = get(console, "/api/sessions", Some(ADMIN)).await.json();
    assert!(!sessions.to_string().contains(ID), "{sessions}");
    let mut stomp = StompClient::tcp(stomp_addr).await;
    stomp.connect(&[("client-id", "app")]).await;
    subscribe_orders(&mut stomp).await;
    assert!(
        stomp
            .recv_within(Duration::from_millis(500))
            .await
            .is_none(),
        "the kept messages went with the subscription"
    );
    stomp.send("DISCONNECT", &[], "").await;
    broker.terminate();
}
