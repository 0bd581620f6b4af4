//! Created destinations across restarts: a topic a principal with `admin` created exists
//! after a restart (kept in the redb store, or in the memory engine's snapshots), so a
//! principal without admin may use it; a topic declared in `<destinations>` and then removed
//! from the file stays, as ActiveMQ keeps it in its store.

use std::path::Path;
use std::sync::Arc;

use crate::support::{load_xml, BrokerXml, Client, TestBroker};
use ferromq::broker::MemorySessionStore;
use rumqttc::QoS as Q;
use rumqttc::SubscribeReasonCode as Code;

const SECURITY: &str = r#"
    <plugins>
      <simpleAuthenticationPlugin>
        <users>
          <authenticationUser username="user1" password="pw1" groups="g1"/>
          <authenticationUser username="boss" password="pwb" groups="admins"/>
        </users>
      </simpleAuthenticationPlugin>
      <authorizationPlugin><map><authorizationMap><authorizationEntries>
        <authorizationEntry topic="a.b" read="g1" write="g1"/>
        <authorizationEntry topic="c.d" read="g1" write="g1"/>
        <authorizationEntry topic=">" read="admins" write="admins" admin="admins"/>
      </authorizationEntries></authorizationMap></map></authorizationPlugin>
    </plugins>"#;

fn xml(store: Option<&Path>, destinations: &str) -> String {
    let builder = match store {
        Some(dir) => BrokerXml::new().kahadb(dir),
        None => BrokerXml::new(),
    };
    builder
        .child(destinations)
        .child(SECURITY)
        .mqtt(0, &[])
        .build()
}

async fn user_subscribe(broker: &TestBroker, topic: &str) -> Vec<Code> {
    let mut user = Client::login(broker.addr, "u1", "user1", "pw1").await;
    let codes = user.subscribe(topic, Q::AtLeastOnce).await;
    user.disconnect().await;
    codes
}

async fn boss_creates(broker: &TestBroker, topic: &str) {
    let mut boss = Client::login(broker.addr, "boss", "boss", "pwb").await;
    boss.publish(topic, Q::AtLeastOnce, false, b"create").await;
    boss.disconnect().await;
}

#[tokio::test]
async fn created_and_declared_destinations_survive_a_restart_of_the_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let declared = r#"<destinations><topic physicalName="c.d"/></destinations>"#;
    let broker = TestBroker::from_xml(&xml(Some(dir.path()), declared)).await;
    assert_eq!(user_subscribe(&broker, "a/b").await, [Code::Failure]);
    boss_creates(&broker, "a/b").await;
    broker.shutdown().await;

    // Restarted without the <destinations> entry: both topics still exist.
    let broker = TestBroker::from_xml(&xml(Some(dir.path()), "")).await;
    let names = broker.handle.core().destinations.names();
    let names: Vec<&str> = names.iter().map(|n| &**n).collect();
    assert_eq!(names, ["a/b", "c/d"]);
    assert_eq!(
        user_subscribe(&broker, "a/b").await,
        [Code::Success(Q::AtLeastOnce)]
    );
    assert_eq!(
        user_subscribe(&broker, "c/d").await,
        [Code::Success(Q::AtLeastOnce)]
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn the_memory_engine_hands_created_destinations_to_the_next_instance() {
    let store = Arc::new(MemorySessionStore::default());
    let broker = TestBroker::start_with_store(load_xml(&xml(None, "")), store.clone()).await;
    boss_creates(&broker, "a/b").await;
    broker.shutdown().await;
    let broker = TestBroker::start_with_store(load_xml(&xml(None, "")), store).await;
    assert_eq!(
        user_subscribe(&broker, "a/b").await,
        [Code::Success(Q::AtLeastOnce)]
    );
    broker.shutdown().await;
}
