//! MQTT 5 sessions against the real broker on 127.0.0.1 port 0, with exact packets (our codec
//! over a raw socket): CONNACK properties, assigned client ids, clean start with the Session
//! Expiry Interval, v5 refusal reason codes.

use std::time::Duration;

use crate::support::{activemq_xml, connect_v5, BrokerXml, RawClient, TestBroker};
use bytes::Bytes;
use ferromq::protocol::{ConnectReason, Packet, Properties, QoS};

/// Subscribe, then DISCONNECT (reason 0) and wait for the broker to close.
async fn subscribe_and_leave<S>(mut client: RawClient<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    assert_eq!(client.subscribe(1, &[("t/#", QoS::AtLeastOnce)]).await, [1]);
    client
        .send(Packet::Disconnect(ferromq::protocol::Disconnect {
            reason: 0,
            properties: None,
        }))
        .await;
    client.expect_closed().await;
}

#[tokio::test]
async fn connack_v5_tells_what_the_broker_supports_and_assigns_empty_client_ids() {
    let broker = TestBroker::default().await;
    let (_client, ack) = RawClient::connect_ok(broker.addr, connect_v5("", false, None)).await;
    assert!(!ack.session_present);
    let props = ack.properties.expect("CONNACK v5 properties");
    let assigned = props
        .assigned_client_identifier
        .clone()
        .expect("assigned client id for an empty one");
    assert!(!assigned.is_empty());
    assert!(props.receive_maximum.is_some_and(|m| m > 0), "{props:?}");
    assert_eq!(props.maximum_qos, None, "QoS 2 is supported");
    assert_eq!(props.retain_available, Some(1));
    assert_eq!(props.wildcard_subscription_available, Some(1));
    assert_eq!(props.subscription_identifier_available, Some(1));
    // Served: see `shared_subscriptions`.
    assert_eq!(props.shared_subscription_available, Some(1));
    assert_eq!(props.topic_alias_maximum, Some(16));
    // A named client is not assigned anything.
    let (_named, ack) = RawClient::connect_ok(broker.addr, connect_v5("named", true, None)).await;
    let props = ack.properties.expect("CONNACK v5 properties");
    assert_eq!(props.assigned_client_identifier, None);
    broker.shutdown().await;
}

#[tokio::test]
async fn session_expiry_zero_ends_the_session_at_disconnect() {
    let broker = TestBroker::default().await;
    let (client, _) = RawClient::connect_ok(broker.addr, connect_v5("zero", true, None)).await;
    subscribe_and_leave(client).await;
    let (_client, ack) =
        RawClient::connect_ok(broker.addr, connect_v5("zero", false, Some(60))).await;
    assert!(!ack.session_present, "expiry 0: nothing was kept");
    broker.shutdown().await;
}

#[tokio::test]
async fn positive_session_expiry_keeps_the_session_and_clean_start_discards_it() {
    let broker = TestBroker::default().await;
    let (client, _) = RawClient::connect_ok(broker.addr, connect_v5("kept", true, Some(60))).await;
    subscribe_and_leave(client).await;
    let (client, ack) =
        RawClient::connect_ok(broker.addr, connect_v5("kept", false, Some(60))).await;
    assert!(ack.session_present, "kept for 60 s");
    subscribe_and_leave(client).await;
    let (_client, ack) =
        RawClient::connect_ok(broker.addr, connect_v5("kept", true, Some(60))).await;
    assert!(!ack.session_present, "clean start discards it");
    broker.shutdown().await;
}

/// In-process connections with tokio's clock paused: the sweeper's timing is exact.
#[tokio::test(start_paused = true)]
async fn a_session_expires_after_its_interval() {
    let broker = TestBroker::default().await;
    let (client, _) =
        RawClient::handshake(broker.duplex(), connect_v5("short", true, Some(2))).await;
    subscribe_and_leave(client).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (client, ack) =
        RawClient::handshake(broker.duplex(), connect_v5("short", false, Some(2))).await;
    assert!(ack.session_present, "not expired after 1.5 s of 2");
    subscribe_and_leave(client).await;
    // Swept within a second of the interval passing.
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let (_client, ack) =
        RawClient::handshake(broker.duplex(), connect_v5("short", false, Some(2))).await;
    assert!(!ack.session_present, "expired after 2 s offline");
    broker.shutdown().await;
}

#[tokio::test]
async fn resuming_with_expiry_zero_makes_the_session_end_at_that_disconnect() {
    let broker = TestBroker::default().await;
    let (client, _) = RawClient::connect_ok(broker.addr, connect_v5("once", true, Some(60))).await;
    subscribe_and_leave(client).await;
    let (client, ack) = RawClient::connect_ok(broker.addr, connect_v5("once", false, None)).await;
    assert!(ack.session_present);
    subscribe_and_leave(client).await;
    let (_client, ack) =
        RawClient::connect_ok(broker.addr, connect_v5("once", false, Some(60))).await;
    assert!(
        !ack.session_present,
        "the resumed session ended at disconnect"
    );
    broker.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn broker_timeout_caps_the_session_expiry_interval() {
    let broker = TestBroker::from_xml(&activemq_xml(&[], "").replace(
        r#"persistent="false""#,
        r#"persistent="false" offlineDurableSubscriberTimeout="1000" offlineDurableSubscriberTaskSchedule="500""#,
    ))
    .await;
    let (client, _) =
        RawClient::handshake(broker.duplex(), connect_v5("capped", true, Some(3600))).await;
    subscribe_and_leave(client).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (_client, ack) =
        RawClient::handshake(broker.duplex(), connect_v5("capped", false, Some(3600))).await;
    assert!(
        !ack.session_present,
        "offlineDurableSubscriberTimeout=1000 ms caps 3600 s"
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn enhanced_authentication_is_refused_with_0x8c() {
    let broker = TestBroker::default().await;
    let mut connect = connect_v5("auth", true, None);
    connect.properties = Some(Box::new(Properties {
        authentication_method: Some("SCRAM-SHA-1".into()),
        ..Properties::default()
    }));
    let (mut client, ack) = RawClient::connect(broker.addr, connect).await;
    assert_eq!(ack.reason, ConnectReason::BadAuthenticationMethod);
    client.expect_closed().await;
    broker.shutdown().await;
}

#[tokio::test]
async fn bad_credentials_and_stolen_ids_get_v5_reason_codes() {
    let security = r#"
    <plugins>
      <simpleAuthenticationPlugin>
        <users><authenticationUser username="alice" password="pw" groups="g"/></users>
      </simpleAuthenticationPlugin>
    </plugins>"#;
    let broker = TestBroker::from_xml(&activemq_xml(&["allowLinkStealing=false"], security)).await;
    let mut wrong = connect_v5("wrong", true, None);
    wrong.username = Some("alice".into());
    wrong.password = Some(Bytes::from_static(b"guess"));
    let (mut client, ack) = RawClient::connect(broker.addr, wrong).await;
    assert_eq!(ack.reason, ConnectReason::BadUserNameOrPassword);
    client.expect_closed().await;

    let mut right = connect_v5("taken", true, None);
    right.username = Some("alice".into());
    right.password = Some(Bytes::from_static(b"pw"));
    let (_first, _) = RawClient::connect_ok(broker.addr, right.clone()).await;
    let (mut second, ack) = RawClient::connect(broker.addr, right).await;
    assert_eq!(ack.reason, ConnectReason::ClientIdentifierNotValid);
    second.expect_closed().await;
    broker.shutdown().await;
}

/// A durable broker (store in `dir`) with one MQTT connector.
fn durable_xml(dir: &std::path::Path) -> String {
    BrokerXml::new().kahadb(dir).mqtt(0, &[]).build()
}

#[tokio::test]
async fn expiry_intervals_survive_a_restart_and_expired_sessions_leave_the_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = TestBroker::from_xml(&durable_xml(dir.path())).await;
    let (client, _) = RawClient::connect_ok(broker.addr, connect_v5("short", true, Some(1))).await;
    subscribe_and_leave(client).await;
    let (client, _) =
        RawClient::connect_ok(broker.addr, connect_v5("long", true, Some(3600))).await;
    subscribe_and_leave(client).await;
    broker.shutdown().await;

    // Restored with their intervals: `short` expires (and is deleted from the store).
    let broker = TestBroker::from_xml(&durable_xml(dir.path())).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    broker.shutdown().await;

    // Right after the next start (well within 1 s) only `long` is still stored.
    let broker = TestBroker::from_xml(&durable_xml(dir.path())).await;
    let (_short, ack) = RawClient::connect_ok(broker.addr, connect_v5("short", false, None)).await;
    assert!(!ack.session_present, "the expired session left the store");
    let (_long, ack) =
        RawClient::connect_ok(broker.addr, connect_v5("long", false, Some(3600))).await;
    assert!(ack.session_present, "kept across restarts");
    broker.shutdown().await;
}
