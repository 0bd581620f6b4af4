//! Security enforced by the broker for real clients: authentication on CONNECT (CONNACK 5),
//! SUBSCRIBE refused with 0x80, PUBLISH refused silently (acknowledged, dropped), each delivery
//! and each retained message checked against the subscriber's read rights, wills checked too.

use std::time::Duration;

use crate::support::{activemq_xml, connect_packet, Client, RawClient, TestBroker};
use bytes::Bytes;
use ferromq::protocol::{ConnectReason, QoS};
use rumqttc::QoS as Q;

const SECURITY: &str = r#"
    <plugins>
      <simpleAuthenticationPlugin>
        <users>
          <authenticationUser username="admin" password="secret" groups="admins"/>
          <authenticationUser username="sensor" password="s3nsor" groups="devices"/>
          <authenticationUser username="reader" password="r3ad" groups="readers"/>
        </users>
      </simpleAuthenticationPlugin>
      <authorizationPlugin><map><authorizationMap><authorizationEntries>
        <authorizationEntry topic=">" read="admins" write="admins" admin="admins"/>
        <authorizationEntry topic="sensors.>" read="readers" write="devices" admin="devices"/>
      </authorizationEntries></authorizationMap></map></authorizationPlugin>
    </plugins>"#;

async fn secured_broker() -> TestBroker {
    TestBroker::from_xml(&activemq_xml(&[], SECURITY)).await
}

#[tokio::test]
async fn bad_or_missing_credentials_get_connack_5() {
    let broker = secured_broker().await;
    let mut wrong = connect_packet("wrong", true, 0);
    wrong.username = Some("admin".into());
    wrong.password = Some(Bytes::from_static(b"guess"));
    let (mut c, ack) = RawClient::connect(broker.addr, wrong).await;
    assert_eq!(ack.reason, ConnectReason::NotAuthorized);
    c.expect_closed().await;
    let (mut anon, ack) = RawClient::connect(broker.addr, connect_packet("anon", true, 0)).await;
    assert_eq!(
        ack.reason,
        ConnectReason::NotAuthorized,
        "anonymous access is off"
    );
    anon.expect_closed().await;
    let admin = Client::login(broker.addr, "ok", "admin", "secret").await;
    admin.disconnect().await;
    broker.shutdown().await;
}

#[tokio::test]
async fn subscribe_and_publish_rights_are_enforced() {
    let broker = secured_broker().await;
    let mut reader = Client::login(broker.addr, "reader", "reader", "r3ad").await;
    assert_eq!(
        reader.subscribe("admin/x", Q::AtLeastOnce).await,
        vec![rumqttc::SubscribeReasonCode::Failure]
    );
    assert_eq!(
        reader.subscribe("sensors/#", Q::AtLeastOnce).await,
        vec![rumqttc::SubscribeReasonCode::Success(Q::AtLeastOnce)]
    );
    let mut admin = Client::login(broker.addr, "admin", "admin", "secret").await;
    admin.subscribe("#", Q::AtLeastOnce).await;
    // The reader may not write sensors/...: acknowledged (3.1.1 cannot refuse) and dropped.
    reader
        .publish("sensors/t", Q::AtLeastOnce, false, b"forged")
        .await;
    admin.no_publish_within(Duration::from_millis(300)).await;
    assert_eq!(broker.handle.counters().dropped_not_authorized, 1);
    // The sensor may.
    let mut sensor = Client::login(broker.addr, "sensor", "sensor", "s3nsor").await;
    sensor
        .publish("sensors/t", Q::AtLeastOnce, false, b"21.5")
        .await;
    assert_eq!(&admin.next_publish().await.payload[..], b"21.5");
    assert_eq!(&reader.next_publish().await.payload[..], b"21.5");
    broker.shutdown().await;
}

#[tokio::test]
async fn wildcard_subscribers_only_get_topics_they_may_read() {
    let broker = secured_broker().await;
    let mut admin = Client::login(broker.addr, "admin", "admin", "secret").await;
    admin
        .publish("admin/retained", Q::AtLeastOnce, true, b"hidden")
        .await;
    admin
        .publish("sensors/retained", Q::AtLeastOnce, true, b"visible")
        .await;

    // `#` finds no entry but `>` (ActiveMQ looks `>` up as a literal level): refused. `+/#`
    // walks into `sensors` and finds `sensors.>` (readers may read), so it is granted; each topic
    // is then checked.
    let mut reader = Client::login(broker.addr, "reader", "reader", "r3ad").await;
    assert_eq!(
        reader.subscribe("#", Q::AtLeastOnce).await,
        vec![rumqttc::SubscribeReasonCode::Failure]
    );
    assert_eq!(
        reader.subscribe("+/#", Q::AtLeastOnce).await,
        vec![rumqttc::SubscribeReasonCode::Success(Q::AtLeastOnce)]
    );
    let retained = reader.next_publish().await;
    assert_eq!(
        (retained.topic.as_str(), retained.retain),
        ("sensors/retained", true)
    );
    admin
        .publish("admin/live", Q::AtLeastOnce, false, b"hidden")
        .await;
    admin
        .publish("sensors/live", Q::AtLeastOnce, false, b"visible")
        .await;
    assert_eq!(reader.next_publish().await.topic, "sensors/live");
    reader.no_publish_within(Duration::from_millis(300)).await;
    broker.shutdown().await;
}

#[tokio::test]
async fn wills_need_write_rights() {
    let broker = secured_broker().await;
    let mut admin = Client::login(broker.addr, "admin", "admin", "secret").await;
    admin.subscribe("#", Q::AtLeastOnce).await;
    for (id, topic) in [("w1", "admin/will"), ("w2", "sensors/will")] {
        let mut c = connect_packet(id, true, 0);
        c.username = Some("sensor".into());
        c.password = Some(Bytes::from_static(b"s3nsor"));
        c.will = Some(crate::support::will(topic, b"bye", QoS::AtLeastOnce, false));
        let (mut raw, ack) = RawClient::connect(broker.addr, c).await;
        assert_eq!(ack.reason, ConnectReason::Success);
        raw.send_raw(&[0x00, 0x00]).await; // protocol error: abnormal close
        raw.expect_closed().await;
    }
    // Only the will the sensor may write arrives.
    assert_eq!(admin.next_publish().await.topic, "sensors/will");
    admin.no_publish_within(Duration::from_millis(300)).await;
    broker.shutdown().await;
}
