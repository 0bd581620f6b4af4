//! Abandoned persistent sessions expire after ActiveMQ's `offlineDurableSubscriberTimeout`
//! (checked every `offlineDurableSubscriberTaskSchedule` ms), with their queued messages, in a
//! durable broker (also across a restart) and in a memory-only one; a connected client's
//! session is never expired, and without the attribute nothing expires (ActiveMQ's default).

use std::time::Duration;

use crate::support::{publish_packet, BrokerXml, RawClient, TestBroker};
use ferromq::protocol::{Disconnect, Packet, QoS};

const TIMEOUT_MS: u64 = 300;
const SCHEDULE_MS: u64 = 50;

/// A broker (persistent unless `store` says otherwise) with `store` and `expiry_attributes`.
fn xml(store: &str, expiry_attributes: &str) -> String {
    BrokerXml::new()
        .persistent(None)
        .attributes(expiry_attributes)
        .child(store)
        .mqtt(0, &[])
        .build()
}

fn expiring() -> String {
    format!(
        r#"offlineDurableSubscriberTimeout="{TIMEOUT_MS}" offlineDurableSubscriberTaskSchedule="{SCHEDULE_MS}""#
    )
}

fn kahadb(dir: &std::path::Path) -> String {
    format!(
        r#"<persistenceAdapter><kahaDB directory="{}"/></persistenceAdapter>"#,
        dir.display()
    )
}

/// A persistent subscriber `client_id` on `t`, left offline with one queued QoS 1 message.
async fn offline_with_queued_message(broker: &TestBroker, client_id: &str) {
    let (mut sub, _) = RawClient::connected(broker.addr, client_id, false).await;
    sub.subscribe(1, &[("t", QoS::AtLeastOnce)]).await;
    sub.send(Packet::Disconnect(Disconnect {
        reason: 0,
        properties: None,
    }))
    .await;
    sub.expect_closed().await;
    let (mut publisher, _) = RawClient::connected(broker.addr, "publisher", true).await;
    publisher
        .send(publish_packet(
            "t",
            b"queued",
            QoS::AtLeastOnce,
            Some(1),
            false,
        ))
        .await;
    assert!(matches!(publisher.recv().await, Packet::PubAck(_)));
}

/// Reconnects `client_id` (clean session 0): whether its session was still there, and whether
/// its queued message came.
async fn reconnect(broker: &TestBroker, client_id: &str) -> (bool, bool) {
    let (mut client, connack) = RawClient::connected(broker.addr, client_id, false).await;
    let delivered = matches!(
        client.recv_within(Duration::from_millis(300)).await,
        Some(Packet::Publish(_))
    );
    (connack.session_present, delivered)
}

async fn wait_past_the_timeout() {
    tokio::time::sleep(Duration::from_millis(TIMEOUT_MS + 4 * SCHEDULE_MS + 200)).await;
}

#[tokio::test]
async fn a_durable_broker_expires_offline_sessions_and_spares_connected_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = xml(&kahadb(dir.path()), &expiring());
    let broker = TestBroker::from_xml(&config).await;
    offline_with_queued_message(&broker, "gone").await;
    let (_here, _) = RawClient::connected(broker.addr, "here", false).await;
    // Not before the timeout.
    tokio::time::sleep(Duration::from_millis(TIMEOUT_MS / 3)).await;
    assert!(broker.handle.core().registry.by_client_id("gone").is_some());
    wait_past_the_timeout().await;
    assert!(
        broker.handle.core().registry.by_client_id("gone").is_none(),
        "expired from memory"
    );
    assert!(broker.handle.core().registry.by_client_id("here").is_some());
    broker.shutdown().await;

    // Nor is it in the store: a restarted broker does not bring it back.
    let broker = TestBroker::from_xml(&xml(&kahadb(dir.path()), "")).await;
    assert_eq!(reconnect(&broker, "gone").await, (false, false));
    broker.shutdown().await;
}

#[tokio::test]
async fn a_memory_broker_expires_offline_sessions_with_their_queues() {
    let config = xml(
        "<persistenceAdapter><memoryPersistenceAdapter/></persistenceAdapter>",
        &expiring(),
    );
    let broker = TestBroker::from_xml(&config).await;
    offline_with_queued_message(&broker, "gone").await;
    let (_here, _) = RawClient::connected(broker.addr, "here", false).await;
    wait_past_the_timeout().await;
    assert_eq!(reconnect(&broker, "gone").await, (false, false));
    assert!(broker.handle.core().registry.by_client_id("here").is_some());
    broker.shutdown().await;
}

#[tokio::test]
async fn without_a_timeout_offline_sessions_are_kept() {
    let config = xml(
        "<persistenceAdapter><memoryPersistenceAdapter/></persistenceAdapter>",
        "",
    );
    let broker = TestBroker::from_xml(&config).await;
    offline_with_queued_message(&broker, "kept").await;
    wait_past_the_timeout().await;
    assert_eq!(reconnect(&broker, "kept").await, (true, true));
    broker.shutdown().await;
}

/// A session whose client was connected when the broker was SIGKILLed starts its offline clock
/// at the restart: connected longer than `offlineDurableSubscriberTimeout` before the crash,
/// it is still there after it, with what was published for it meanwhile (its record was last
/// written at its SUBSCRIBE, long before the crash).
#[tokio::test]
async fn a_session_connected_at_a_crash_is_offline_from_the_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = crate::support::free_port();
    let xml = BrokerXml::new()
        .persistent(None)
        .attributes(
            r#"offlineDurableSubscriberTimeout="2000" offlineDurableSubscriberTaskSchedule="100""#,
        )
        .child(&kahadb(&dir.path().join("store")))
        .mqtt(port, &[])
        .build();
    let config = dir.path().join("activemq.xml");
    std::fs::write(&config, xml).expect("config");
    let mut broker = crate::support::ChildGuard(crate::support::wire::spawn_broker(&config));
    let addr = crate::support::listening(port).await;
    let (mut sub, _) = RawClient::connected(addr, "crashed-sub", false).await;
    sub.subscribe(1, &[("t", QoS::AtLeastOnce)]).await;
    // Connected past the timeout, then the crash.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    broker.kill().expect("SIGKILL");
    broker.wait().expect("reaped");
    drop(sub);
    let mut broker = crate::support::ChildGuard(crate::support::wire::spawn_broker(&config));
    let addr = crate::support::listening(port).await;
    let (mut publisher, _) = RawClient::connected(addr, "publisher", true).await;
    publisher
        .send(publish_packet(
            "t",
            b"after",
            QoS::AtLeastOnce,
            Some(1),
            false,
        ))
        .await;
    assert!(matches!(publisher.recv().await, Packet::PubAck(_)));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (mut back, connack) = RawClient::connected(addr, "crashed-sub", false).await;
    assert!(
        connack.session_present,
        "ended at the restart: its clock ran from its SUBSCRIBE"
    );
    assert!(
        matches!(
            back.recv_within(Duration::from_secs(2)).await,
            Some(Packet::Publish(p)) if &p.payload[..] == b"after"
        ),
        "the message published for it after the restart"
    );
    broker.kill().expect("SIGKILL");
}
