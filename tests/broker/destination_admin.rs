//! `admin` means "may create the destination", as in ActiveMQ's AuthorizationBroker: a
//! SUBSCRIBE or PUBLISH to a topic that does not exist creates it, which needs `admin` on it.
//! Measured on ActiveMQ 5.17 with entry `a.b` read/write=g1 and no admin: a g1 user's
//! SUBSCRIBE `a/b` gets 0x80 and its PUBLISH `a/b` is acknowledged but delivered to nobody,
//! until a principal with admin created the topic; then the same subscribe is granted.
//! Wildcard subscriptions create nothing; `<destinations>` pre-creates; without an
//! authorization plugin nothing changes.

use crate::support::live::LiveBroker;
use crate::support::{
    activemq_xml, connect_packet, connect_v5, publish_packet, Client, RawClient, TestBroker,
};
use bytes::Bytes;
use ferromq::protocol::{Packet, QoS};
use rumqttc::QoS as Q;
use rumqttc::SubscribeReasonCode as Code;

fn security(destinations: &str) -> String {
    format!(
        r#"{destinations}
    <plugins>
      <simpleAuthenticationPlugin>
        <users>
          <authenticationUser username="user1" password="pw1" groups="g1"/>
          <authenticationUser username="boss" password="pwb" groups="admins"/>
        </users>
      </simpleAuthenticationPlugin>
      <authorizationPlugin><map><authorizationMap><authorizationEntries>
        <authorizationEntry topic="a.b" read="g1" write="g1"/>
        <authorizationEntry topic=">" read="admins" write="admins" admin="admins"/>
      </authorizationEntries></authorizationMap></map></authorizationPlugin>
    </plugins>"#
    )
}

async fn secured(destinations: &str) -> TestBroker {
    TestBroker::from_xml(&activemq_xml(&[], &security(destinations))).await
}

/// An observer of every topic (`#` creates nothing) that is sure no message slipped through
/// before the marker it is sent through an existing topic.
async fn observer(broker: &TestBroker) -> Client {
    let mut boss = Client::login(broker.addr, "observer", "boss", "pwb").await;
    assert_eq!(
        boss.subscribe("#", Q::AtLeastOnce).await,
        [Code::Success(Q::AtLeastOnce)]
    );
    boss
}

/// `observer` publishes a marker on `marker/x` (creating it: it has admin) and its next message
/// must be that marker: nothing published before it reached anyone.
async fn nothing_before_marker(observer: &mut Client) {
    observer
        .publish("marker/x", Q::AtLeastOnce, false, b"marker")
        .await;
    let next = observer.next_publish().await;
    assert_eq!(
        (next.topic.as_str(), &next.payload[..]),
        ("marker/x", &b"marker"[..])
    );
}

#[tokio::test]
async fn without_admin_a_topic_that_does_not_exist_is_refused_until_an_admin_creates_it() {
    let broker = secured("").await;
    let mut boss = observer(&broker).await;
    let mut user = Client::login(broker.addr, "u1", "user1", "pw1").await;
    assert_eq!(user.subscribe("a/b", Q::AtLeastOnce).await, [Code::Failure]);
    // Acknowledged (3.1.1 cannot refuse) and delivered to nobody.
    // QoS 0 first: the QoS 1 acknowledgement then says both were handled.
    user.publish("a/b", Q::AtMostOnce, false, b"lost too").await;
    user.publish("a/b", Q::AtLeastOnce, false, b"lost").await;
    nothing_before_marker(&mut boss).await;
    let counters = broker.handle.counters();
    assert_eq!(counters.dropped_not_created, 2);
    assert_eq!(counters.dropped_not_authorized, 0);
    let core = broker.handle.core();
    assert!(!core.destinations.contains("a/b"));

    // The admin creates it by subscribing; then the same subscribe is granted and publishes
    // go through.
    assert_eq!(
        boss.subscribe("a/b", Q::AtLeastOnce).await,
        [Code::Success(Q::AtLeastOnce)]
    );
    assert!(core.destinations.contains("a/b"));
    assert_eq!(
        user.subscribe("a/b", Q::AtLeastOnce).await,
        [Code::Success(Q::AtLeastOnce)]
    );
    user.publish("a/b", Q::AtLeastOnce, false, b"now").await;
    assert_eq!(&user.next_publish().await.payload[..], b"now");
    // The observer's `#` and its `a/b` overlap: one copy (3.1.1).
    assert_eq!(&boss.next_publish().await.payload[..], b"now");
    assert_eq!(broker.handle.counters().dropped_not_created, 2);
    broker.shutdown().await;
}

#[tokio::test]
async fn an_admins_publish_creates_the_topic_too() {
    let broker = secured("").await;
    let mut boss = observer(&broker).await;
    boss.publish("a/b", Q::AtLeastOnce, false, b"first").await;
    assert_eq!(&boss.next_publish().await.payload[..], b"first");
    let mut user = Client::login(broker.addr, "u1", "user1", "pw1").await;
    assert_eq!(
        user.subscribe("a/b", Q::AtLeastOnce).await,
        [Code::Success(Q::AtLeastOnce)]
    );
    broker.shutdown().await;
}

async fn v5_user(broker: &TestBroker, id: &str) -> RawClient {
    let mut connect = connect_v5(id, true, None);
    connect.username = Some("user1".into());
    connect.password = Some(Bytes::from_static(b"pw1"));
    RawClient::connect_ok(broker.addr, connect).await.0
}

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
async fn mqtt5_clients_are_told_not_authorized() {
    let broker = secured("").await;
    let mut boss = observer(&broker).await;
    let mut user = v5_user(&broker, "u5").await;
    assert_eq!(
        user.subscribe(1, &[("a/b", QoS::AtLeastOnce)]).await,
        [0x87]
    );
    // QoS 0 dropped (the acknowledgements below say it was handled).
    user.send(publish_packet("a/b", b"q0", QoS::AtMostOnce, None, false))
        .await;
    // Never acknowledged as a success (the no-loss rule): 0x87 for QoS 1 and 2.
    assert_eq!(
        publish_reason(&mut user, "a/b", QoS::AtLeastOnce, 2).await,
        0x87
    );
    assert_eq!(
        publish_reason(&mut user, "a/b", QoS::ExactlyOnce, 3).await,
        0x87
    );
    nothing_before_marker(&mut boss).await;
    assert_eq!(broker.handle.counters().dropped_not_created, 3);

    boss.publish("a/b", Q::AtLeastOnce, false, b"create").await;
    assert_eq!(&boss.next_publish().await.payload[..], b"create");
    assert_eq!(user.subscribe(4, &[("a/b", QoS::AtLeastOnce)]).await, [1]);
    // The refused QoS 2 exchange ended: the same packet id is a new message.
    assert_eq!(
        publish_reason(&mut user, "a/b", QoS::ExactlyOnce, 3).await,
        0
    );
    broker.shutdown().await;
}

/// rumqttc's v5 client reports a refused SUBSCRIBE or PUBLISH as an event loop error.
async fn first_error(mut eventloop: rumqttc::v5::EventLoop) -> rumqttc::v5::ConnectionError {
    loop {
        let polled = tokio::time::timeout(std::time::Duration::from_secs(5), eventloop.poll())
            .await
            .expect("in time");
        if let Err(e) = polled {
            return e;
        }
    }
}

#[tokio::test]
async fn mqtt5_rumqttc_client_gets_0x87_for_a_topic_it_may_not_create() {
    use rumqttc::v5::mqttbytes::v5::{PubAckReason, SubscribeReasonCode as C5};
    use rumqttc::v5::mqttbytes::QoS as Q5;
    use rumqttc::v5::{ConnectionError, MqttOptions, StateError};
    let broker = secured("").await;
    let client = |id: &str| {
        let mut options = MqttOptions::new(id, "127.0.0.1", broker.addr.port());
        options.set_credentials("user1", "pw1");
        rumqttc::v5::AsyncClient::new(options, 10)
    };
    let (subscriber, eventloop) = client("u5-sub");
    subscriber
        .subscribe("a/b", Q5::AtLeastOnce)
        .await
        .expect("subscribe");
    match first_error(eventloop).await {
        ConnectionError::MqttState(StateError::SubFail { reason }) => {
            assert_eq!(reason, C5::NotAuthorized)
        }
        other => panic!("expected a refused SUBSCRIBE, got {other:?}"),
    }
    let (publisher, eventloop) = client("u5-pub");
    publisher
        .publish("a/b", Q5::AtLeastOnce, false, b"x".to_vec())
        .await
        .expect("publish");
    match first_error(eventloop).await {
        ConnectionError::MqttState(StateError::PubAckFail { reason }) => {
            assert_eq!(reason, PubAckReason::NotAuthorized)
        }
        other => panic!("expected a refused PUBLISH, got {other:?}"),
    }
    assert_eq!(broker.handle.counters().dropped_not_created, 1);
    broker.shutdown().await;
}

#[tokio::test]
async fn declared_destinations_exist_from_the_start() {
    let broker = secured(r#"<destinations><topic physicalName="a.b"/></destinations>"#).await;
    assert!(broker.handle.core().destinations.contains("a/b"));
    let mut user = Client::login(broker.addr, "u1", "user1", "pw1").await;
    assert_eq!(
        user.subscribe("a/b", Q::AtLeastOnce).await,
        [Code::Success(Q::AtLeastOnce)]
    );
    user.publish("a/b", Q::AtLeastOnce, false, b"hello").await;
    assert_eq!(&user.next_publish().await.payload[..], b"hello");
    assert_eq!(broker.handle.counters().dropped_not_created, 0);
    broker.shutdown().await;
}

/// A wildcard subscription creates nothing (ActiveMQ's AbstractRegion.addConsumer creates
/// only a destination that is not a pattern): it needs `read` alone, and it receives from a
/// topic once someone with admin created it. Measured on ActiveMQ 5.17 with these entries:
/// `a/+` granted, the g1 publish to `a/b` acknowledged and delivered to nobody, the admin's
/// publish then delivered to the `a/+` subscriber.
#[tokio::test]
async fn wildcard_subscriptions_need_read_only_and_create_nothing() {
    let broker = secured("").await;
    let mut user = Client::login(broker.addr, "u1", "user1", "pw1").await;
    assert_eq!(
        user.subscribe("a/+", Q::AtLeastOnce).await,
        [Code::Success(Q::AtLeastOnce)]
    );
    assert!(broker.handle.core().destinations.is_empty());
    // Its own publish to the topic that does not exist reaches nobody, not even itself.
    user.publish("a/b", Q::AtLeastOnce, false, b"lost").await;
    let mut boss = observer(&broker).await;
    boss.publish("a/b", Q::AtLeastOnce, false, b"created").await;
    assert_eq!(&user.next_publish().await.payload[..], b"created");
    assert_eq!(broker.handle.counters().dropped_not_created, 1);
    broker.shutdown().await;
}

/// Without an authorization plugin everyone may create: behaviour as before, and no destination
/// map is kept (it would only cost memory per distinct topic).
#[tokio::test]
async fn without_authorization_everything_may_create() {
    let broker = TestBroker::from_xml(&activemq_xml(&[], "")).await;
    let (mut raw, _) = RawClient::connect(broker.addr, connect_packet("sub", true, 0)).await;
    assert_eq!(raw.subscribe(1, &[("x/y", QoS::AtLeastOnce)]).await, [1]);
    let mut publisher = Client::connect(broker.addr, "pub").await;
    publisher.publish("p/q", Q::AtLeastOnce, false, b"1").await;
    publisher.publish("x/y", Q::AtLeastOnce, false, b"2").await;
    assert_eq!(&raw.recv_publish().await.payload[..], b"2");
    assert!(broker.handle.core().destinations.is_empty());
    assert_eq!(broker.handle.counters().dropped_not_created, 0);
    broker.shutdown().await;
}

/// A reload that adds a `<destinations>` entry creates the topic; one that removes it keeps it
/// (ActiveMQ keeps a destination once created).
#[tokio::test]
async fn a_reload_declaring_a_destination_creates_it_and_removing_it_keeps_it() {
    let declared = r#"<destinations><topic physicalName="a.b"/></destinations>"#;
    let mut live = LiveBroker::start(&activemq_xml(&[], &security("")), true).await;
    let addr = live.addr("mqtt").await.expect("mqtt listening");
    let mut user = Client::login(addr, "u1", "user1", "pw1").await;
    assert_eq!(user.subscribe("a/b", Q::AtLeastOnce).await, [Code::Failure]);

    let stats = live.edit(&activemq_xml(&[], &security(declared))).await;
    assert_eq!(
        (stats.reloads_ok, stats.reloads_failed),
        (1, 0),
        "{stats:?}"
    );
    assert_eq!(
        user.subscribe("a/b", Q::AtLeastOnce).await,
        [Code::Success(Q::AtLeastOnce)]
    );

    let stats = live.edit(&activemq_xml(&[], &security(""))).await;
    assert_eq!(stats.reloads_failed, 0, "{stats:?}");
    let mut again = Client::login(addr, "u2", "user1", "pw1").await;
    assert_eq!(
        again.subscribe("a/b", Q::AtLeastOnce).await,
        [Code::Success(Q::AtLeastOnce)]
    );
    live.shutdown().await;
}

/// A will is a publish of its owner: to a topic that does not exist it needs `admin` too.
/// Measured on ActiveMQ 5.17: user1's will on `a/b` reaches nobody, an admin's will on a new
/// topic is delivered.
#[tokio::test]
async fn a_will_to_a_topic_its_owner_may_not_create_is_dropped() {
    let broker = secured("").await;
    let mut boss = observer(&broker).await;
    let mut options = crate::support::options(broker.addr, "u1-will");
    options.set_credentials("user1", "pw1");
    options.set_last_will(rumqttc::LastWill::new("a/b", "gone", Q::AtLeastOnce, false));
    let user = Client::connect_with(options).await;
    user.kill();
    // The broker counts the refusal when it handles the close.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while broker.handle.counters().dropped_not_created == 0 {
        assert!(tokio::time::Instant::now() < deadline, "will not handled");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    nothing_before_marker(&mut boss).await;
    assert_eq!(broker.handle.counters().wills_published, 0);
    broker.shutdown().await;
}
