//! MQTT 5 acknowledgements and client limits against the real broker on 127.0.0.1 port 0, with
//! exact packets: SUBACK / PUBACK / PUBREC reason codes for refusals (v3 stays as it was), the
//! client's Receive Maximum capping our in-flight window, its Maximum Packet Size dropping
//! larger deliveries.

use std::time::Duration;

use crate::support::{ack, activemq_xml, connect_v5, publish_packet, RawClient, TestBroker};
use bytes::Bytes;
use ferromq::protocol::{Packet, Properties, QoS};

const QUIET: Duration = Duration::from_millis(300);

/// A user `dev` (password `pw`, group `devices`) who may use `open.>` and not `closed.>`.
pub(crate) const SECURITY: &str = r#"
    <plugins>
      <simpleAuthenticationPlugin>
        <users><authenticationUser username="dev" password="pw" groups="devices"/></users>
      </simpleAuthenticationPlugin>
      <authorizationPlugin><map><authorizationMap><authorizationEntries>
        <authorizationEntry topic="open.>" read="devices" write="devices" admin="devices"/>
        <authorizationEntry topic="closed.>" read="admins" write="admins" admin="admins"/>
      </authorizationEntries></authorizationMap></map></authorizationPlugin>
    </plugins>"#;

/// An MQTT 5 client with `properties` on its CONNECT, connected.
async fn v5_client(broker: &TestBroker, id: &str, properties: Properties) -> RawClient {
    let mut connect = connect_v5(id, true, None);
    connect.properties = Some(Box::new(properties));
    RawClient::connect_ok(broker.addr, connect).await.0
}

async fn v5_login(broker: &TestBroker, id: &str) -> RawClient {
    let mut connect = connect_v5(id, true, None);
    connect.username = Some("dev".into());
    connect.password = Some(Bytes::from_static(b"pw"));
    RawClient::connect_ok(broker.addr, connect).await.0
}

/// The reason code of the acknowledgement of a QoS 1 or 2 publish.
async fn publish_reason(client: &mut RawClient, topic: &str, qos: QoS, id: u16) -> u8 {
    client
        .send(publish_packet(topic, b"x", qos, Some(id), false))
        .await;
    match client.recv().await {
        Packet::PubAck(a) | Packet::PubRec(a) => {
            assert_eq!(a.packet_id, id);
            a.reason
        }
        other => panic!("expected PUBACK/PUBREC, got {other:?}"),
    }
}

#[tokio::test]
async fn refusals_carry_reason_codes_for_v5_clients() {
    let broker = TestBroker::from_xml(&activemq_xml(&[], SECURITY)).await;
    let mut client = v5_login(&broker, "dev5").await;
    assert_eq!(
        client
            .subscribe(
                1,
                &[("open/a", QoS::AtLeastOnce), ("closed/a", QoS::AtLeastOnce)]
            )
            .await,
        [1, 0x87]
    );
    assert_eq!(
        publish_reason(&mut client, "open/b", QoS::AtLeastOnce, 2).await,
        0
    );
    assert_eq!(
        publish_reason(&mut client, "closed/a", QoS::AtLeastOnce, 3).await,
        0x87
    );
    assert_eq!(
        publish_reason(&mut client, "closed/a", QoS::ExactlyOnce, 4).await,
        0x87
    );
    // The refused QoS 2 exchange is over: the same id is a new message.
    assert_eq!(
        publish_reason(&mut client, "open/b", QoS::ExactlyOnce, 4).await,
        0
    );

    // MQTT 3.1.1: 0x80 and a plain acknowledgement, as before.
    let mut v3 = crate::support::connect_packet("dev3", true, 0);
    v3.username = Some("dev".into());
    v3.password = Some(Bytes::from_static(b"pw"));
    let (mut v3, _) = RawClient::connect(broker.addr, v3).await;
    assert_eq!(
        v3.subscribe(1, &[("closed/a", QoS::AtMostOnce)]).await,
        [0x80]
    );
    assert_eq!(
        publish_reason(&mut v3, "closed/a", QoS::AtLeastOnce, 2).await,
        0
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn a_full_memory_refuses_v5_publishes_with_quota_exceeded() {
    let broker = TestBroker::from_xml(&activemq_xml(
        &[],
        r#"<systemUsage><systemUsage sendFailIfNoSpaceAfterTimeout="200">
             <memoryUsage><memoryUsage limit="2 kb"/></memoryUsage>
           </systemUsage></systemUsage>"#,
    ))
    .await;
    // An offline persistent subscriber holds what is published.
    let (sub, _) = RawClient::connect(broker.addr, connect_v5("holder", true, Some(600))).await;
    let mut sub = sub;
    sub.subscribe(1, &[("mem", QoS::AtLeastOnce)]).await;
    drop(sub);
    tokio::time::sleep(Duration::from_millis(100)).await;

    let mut publisher = v5_client(&broker, "pub", Properties::default()).await;
    let reasons = puback_reasons(&mut publisher, "mem", 10).await;
    assert_eq!(reasons.first(), Some(&0), "{reasons:?}");
    assert_eq!(reasons.last(), Some(&0x97), "{reasons:?}");
    assert!(broker.handle.counters().refused_memory_full > 0);
    broker.shutdown().await;
}

#[tokio::test]
async fn the_client_receive_maximum_caps_messages_in_flight() {
    let broker = TestBroker::default().await;
    let mut sub = v5_client(
        &broker,
        "narrow",
        Properties {
            receive_maximum: Some(2),
            ..Properties::default()
        },
    )
    .await;
    sub.subscribe(1, &[("rm", QoS::AtLeastOnce)]).await;
    let mut publisher = v5_client(&broker, "pub", Properties::default()).await;
    for id in 1..=5u16 {
        assert_eq!(
            publish_reason(&mut publisher, "rm", QoS::AtLeastOnce, id).await,
            0
        );
    }
    let first = sub.recv_publish().await;
    let second = sub.recv_publish().await;
    assert!(
        sub.recv_within(QUIET).await.is_none(),
        "a third message while two are unacknowledged"
    );
    for p in [first, second] {
        sub.send(Packet::PubAck(ack(p.packet_id.expect("QoS 1 id"))))
            .await;
    }
    for _ in 0..2 {
        let p = sub.recv_publish().await;
        sub.send(Packet::PubAck(ack(p.packet_id.expect("QoS 1 id"))))
            .await;
    }
    broker.shutdown().await;
}

#[tokio::test]
async fn deliveries_above_the_client_maximum_packet_size_are_dropped_and_counted() {
    let broker = TestBroker::default().await;
    let mut sub = v5_client(
        &broker,
        "small",
        Properties {
            maximum_packet_size: Some(64),
            ..Properties::default()
        },
    )
    .await;
    sub.subscribe(1, &[("mps", QoS::AtMostOnce)]).await;
    let mut publisher = v5_client(&broker, "pub", Properties::default()).await;
    // PUBLISH to "mps" at QoS 0 for v5: 1 + 1 + (2 + 3 + 1 + payload) bytes.
    for payload in [vec![b'a'; 56], vec![b'b'; 57], vec![b'c'; 10]] {
        publisher
            .send(publish_packet(
                "mps",
                &payload,
                QoS::AtMostOnce,
                None,
                false,
            ))
            .await;
    }
    assert_eq!(sub.recv_publish().await.payload.len(), 56, "64 bytes fits");
    assert_eq!(
        sub.recv_publish().await.payload.len(),
        10,
        "65 bytes dropped"
    );
    assert_eq!(broker.handle.counters().dropped_packet_too_large, 1);
    broker.shutdown().await;
}

#[tokio::test]
async fn a_full_store_refuses_v5_publishes_with_quota_exceeded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = TestBroker::from_xml(
        &activemq_xml(
            &[],
            &format!(
                r#"<persistenceAdapter><kahaDB directory="{}"/></persistenceAdapter>
                   <systemUsage><systemUsage sendFailIfNoSpaceAfterTimeout="200">
                     <storeUsage><storeUsage limit="1 kb"/></storeUsage>
                   </systemUsage></systemUsage>"#,
                dir.path().display()
            ),
        )
        .replace(r#"persistent="false""#, ""),
    )
    .await;
    let (mut sub, _) = RawClient::connect(broker.addr, connect_v5("holder", true, Some(600))).await;
    sub.subscribe(1, &[("full", QoS::AtLeastOnce)]).await;
    drop(sub);
    tokio::time::sleep(Duration::from_millis(100)).await;

    let mut publisher = v5_client(&broker, "pub", Properties::default()).await;
    let reasons = puback_reasons(&mut publisher, "full", 10).await;
    assert_eq!(reasons.first(), Some(&0), "{reasons:?}");
    assert_eq!(reasons.last(), Some(&0x97), "{reasons:?}");
    assert!(broker.handle.counters().refused_store_full > 0);
    broker.shutdown().await;
}

/// Publish `count` QoS 1 messages of 400 bytes to `topic`, one at a time, and return the reason
/// code of each PUBACK.
async fn puback_reasons(publisher: &mut RawClient, topic: &str, count: u16) -> Vec<u8> {
    let payload = vec![b'x'; 400];
    let mut reasons = Vec::new();
    for id in 1..=count {
        publisher
            .send(publish_packet(
                topic,
                &payload,
                QoS::AtLeastOnce,
                Some(id),
                false,
            ))
            .await;
        match publisher.recv().await {
            Packet::PubAck(a) => reasons.push(a.reason),
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }
    reasons
}
