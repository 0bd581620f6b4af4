//! What a users/groups change does to a live connection: a JAAS groups file re-read with
//! `reload=true` applies at the next CONNECT, while a connection keeps the groups it logged in
//! with (ActiveMQ keeps the login's `Subject` too). Authorization entry changes on live
//! subscriptions are covered by the reload tests (`users_and_permissions_follow_the_file...`).

use ferromq::broker;
use rumqttc::{QoS, SubscribeReasonCode};

use crate::support::security::write;
use crate::support::xml::load_file;
use crate::support::Client;

#[tokio::test]
async fn a_revoked_group_applies_at_the_next_connect_not_to_a_live_connection() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "users.properties",
        "alice=alice-pw\nwriter=writer-pw\n",
    );
    let groups = write(
        dir.path(),
        "groups.properties",
        "readers=alice\nwriters=writer\n",
    );
    write(
        dir.path(),
        "login.config",
        r#"activemq {
    org.apache.activemq.jaas.PropertiesLoginModule required
        org.apache.activemq.jaas.properties.user="users.properties"
        org.apache.activemq.jaas.properties.group="groups.properties"
        reload=true;
};
"#,
    );
    let config = write(
        dir.path(),
        "activemq.xml",
        r#"<beans xmlns="http://www.springframework.org/schema/beans">
  <broker xmlns="http://activemq.apache.org/schema/core" brokerName="live" persistent="false">
    <plugins>
      <jaasAuthenticationPlugin configuration="activemq"/>
      <authorizationPlugin><map><authorizationMap><authorizationEntries>
        <authorizationEntry topic="sensors.>" read="readers" write="writers" admin="readers,writers"/>
      </authorizationEntries></authorizationMap></map></authorizationPlugin>
    </plugins>
    <transportConnectors>
      <transportConnector name="mqtt" uri="mqtt://127.0.0.1:0"/>
    </transportConnectors>
  </broker>
</beans>
"#,
    );
    let handle = broker::start(load_file(&config)).await.expect("starts");
    let addr = handle.listener_addrs()[0].1;

    let mut alice = Client::login(addr, "alice-1", "alice", "alice-pw").await;
    assert_eq!(
        alice.subscribe("sensors/#", QoS::AtLeastOnce).await,
        vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );
    let mut writer = Client::login(addr, "writer", "writer", "writer-pw").await;
    writer
        .publish("sensors/1", QoS::AtLeastOnce, false, b"1")
        .await;
    assert_eq!(alice.next_publish().await.topic, "sensors/1");

    // alice leaves `readers` (a different length: the change is seen at the next CONNECT).
    std::fs::write(&groups, "readers=\nwriters=writer\n").expect("rewrite groups");

    let mut again = Client::login(addr, "alice-2", "alice", "alice-pw").await;
    assert_eq!(
        again.subscribe("sensors/#", QoS::AtLeastOnce).await,
        vec![SubscribeReasonCode::Failure],
        "a new login has the new groups"
    );
    writer
        .publish("sensors/2", QoS::AtLeastOnce, false, b"2")
        .await;
    assert_eq!(
        alice.next_publish().await.topic,
        "sensors/2",
        "the live connection keeps the groups it logged in with"
    );
    for client in [alice, again, writer] {
        client.disconnect().await;
    }
    handle.shutdown().await;
}
