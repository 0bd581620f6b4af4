//! Wills of clients connected when the broker crashed: the `ferromq` binary is killed with
//! SIGKILL while persistent clients with wills are connected, then restarted. A will is
//! published once after recovery (QoS and retain flag honoured), authorized as its owner AS OF
//! THE RESTART: a user removed from the configuration in between gets no will published. A
//! client that sent DISCONNECT before the crash has no will published. A later restart
//! publishes nothing again.
#![cfg(unix)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferromq::protocol::{
    Ack, Connect, Disconnect, LastWill, Packet, Publish, QoS, RetainHandling, Subscribe,
    SubscriptionOptions,
};

use crate::support::wire::{spawn_broker, Wire};
use crate::support::{connect_packet, free_port, BrokerXml, ChildGuard, STEP};

/// `users`: (name, password) in group `writers`, plus `watcher` in group `readers`.
fn write_config(dir: &Path, port: u16, users: &[(&str, &str)]) -> PathBuf {
    let path = dir.join("activemq.xml");
    let writers: String = users
        .iter()
        .map(|(u, p)| {
            format!(r#"<authenticationUser username="{u}" password="{p}" groups="writers"/>"#)
        })
        .collect();
    BrokerXml::new()
        .name("wills")
        .plugins(&format!(
            r#"
      <simpleAuthenticationPlugin><users>
        {writers}
        <authenticationUser username="watcher" password="w" groups="readers"/>
      </users></simpleAuthenticationPlugin>
      <authorizationPlugin><map><authorizationMap><authorizationEntries>
        <authorizationEntry topic="wills.>" read="readers" write="writers" admin="readers,writers"/>
      </authorizationEntries></authorizationMap></map></authorizationPlugin>
    "#
        ))
        .kahadb(&dir.join("kahadb"))
        .mqtt(port, &[])
        .write(&path);
    path
}

/// The broker process; killed (SIGKILL) if still running when dropped.
struct Broker(ChildGuard);

impl Broker {
    fn spawn(config: &Path) -> Broker {
        Broker(ChildGuard(spawn_broker(config)))
    }

    fn sigkill(mut self) {
        self.0.kill().expect("SIGKILL");
        self.0.wait().expect("reaped");
    }

    async fn sigterm(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.0.try_wait().expect("wait").is_none() {
            assert!(
                Instant::now() < deadline,
                "ferromq did not exit after SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn login(client_id: &str, user: &str, password: &str, clean: bool) -> Connect {
    Connect {
        username: Some(user.into()),
        password: Some(Bytes::from(password.to_owned())),
        ..connect_packet(client_id, clean, 0)
    }
}

fn with_will(mut connect: Connect, topic: &str, qos: QoS, retain: bool) -> Connect {
    connect.will = Some(LastWill {
        topic: topic.into(),
        payload: Bytes::from(format!("{topic} is gone")),
        qos,
        retain,
        properties: None,
    });
    connect
}

async fn subscribe(wire: &mut Wire, filter: &str) {
    wire.send(&Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: vec![(
            filter.into(),
            SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                no_local: false,
                retain_as_published: false,
                retain_handling: RetainHandling::SendAtSubscribe,
            },
        )],
        properties: None,
    }))
    .await
    .expect("send SUBSCRIBE");
    match wire.recv(STEP).await.expect("SUBACK") {
        Some(Packet::SubAck(ack)) => assert_eq!(ack.return_codes, vec![1], "granted QoS 1"),
        other => panic!("expected SUBACK, got {other:?}"),
    }
}

/// Every PUBLISH that arrives until `quiet` passes without one, each acknowledged.
async fn drain(wire: &mut Wire, quiet: Duration) -> Vec<Publish> {
    let mut got = Vec::new();
    while let Some(packet) = wire.recv(quiet).await.expect("connection stays") {
        if let Packet::Publish(p) = packet {
            if let Some(id) = p.packet_id {
                wire.send(&Packet::PubAck(Ack::new(id)))
                    .await
                    .expect("PUBACK");
            }
            got.push(p);
        }
    }
    got
}

fn topics(publishes: &[Publish]) -> Vec<String> {
    let mut t: Vec<String> = publishes.iter().map(|p| p.topic.to_string()).collect();
    t.sort();
    t
}

#[tokio::test]
async fn wills_of_clients_connected_at_a_crash_are_published_once_as_their_owner_now() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let everyone = [("alice", "a"), ("bob", "b")];
    let broker = Broker::spawn(&write_config(dir.path(), port, &everyone));

    // An offline persistent watcher of every will.
    let mut watcher = Wire::connect_with(addr, login("watcher", "watcher", "w", false)).await;
    subscribe(&mut watcher, "wills/#").await;
    watcher
        .send(&Packet::Disconnect(Disconnect {
            reason: 0,
            properties: None,
        }))
        .await
        .expect("DISCONNECT");

    // Connected at the crash: alice (QoS 1, retained will) and bob (removed before restart).
    let _alice = Wire::connect_with(
        addr,
        with_will(
            login("alice", "alice", "a", false),
            "wills/alice",
            QoS::AtLeastOnce,
            true,
        ),
    )
    .await;
    let _bob = Wire::connect_with(
        addr,
        with_will(
            login("bob", "bob", "b", false),
            "wills/bob",
            QoS::AtLeastOnce,
            false,
        ),
    )
    .await;
    // Left cleanly before the crash: no will.
    let mut polite = Wire::connect_with(
        addr,
        with_will(
            login("polite", "alice", "a", false),
            "wills/polite",
            QoS::AtLeastOnce,
            false,
        ),
    )
    .await;
    polite
        .send(&Packet::Disconnect(Disconnect {
            reason: 0,
            properties: None,
        }))
        .await
        .expect("DISCONNECT");
    assert!(
        polite.recv(STEP).await.is_err(),
        "the broker closes after DISCONNECT"
    );
    // Session records are written in the background; a PUBACKed QoS 1 publish submitted after
    // them is durable only once they are (the store applies batches in order).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut sync = Wire::connect_with(addr, login("sync", "alice", "a", true)).await;
    sync.send(&crate::support::wire::numbered_publish("wills/sync", 1, 1))
        .await
        .expect("PUBLISH");
    assert!(matches!(sync.recv(STEP).await, Ok(Some(Packet::PubAck(_)))));
    broker.sigkill();

    // Restart without bob.
    let broker = Broker::spawn(&write_config(dir.path(), port, &[("alice", "a")]));
    let mut watcher = Wire::connect_with(addr, login("watcher", "watcher", "w", false)).await;
    let got = drain(&mut watcher, Duration::from_millis(800)).await;
    assert_eq!(
        topics(&got),
        vec!["wills/alice", "wills/sync"],
        "alice's will once; none for bob (removed) or polite (DISCONNECT)"
    );
    let alice_will = got
        .iter()
        .find(|p| &*p.topic == "wills/alice")
        .expect("alice's will");
    assert_eq!(alice_will.qos, QoS::AtLeastOnce);
    assert_eq!(&alice_will.payload[..], b"wills/alice is gone");
    // Its retain flag was honoured: a new subscriber gets it as a retained message.
    let mut late = Wire::connect_with(addr, login("late", "watcher", "w", true)).await;
    subscribe(&mut late, "wills/alice").await;
    let retained = drain(&mut late, Duration::from_millis(500)).await;
    assert_eq!(retained.len(), 1, "{retained:?}");
    assert!(retained[0].retain);
    tokio::time::sleep(Duration::from_millis(200)).await;
    broker.sigterm().await;

    // A second restart publishes no will again.
    let _broker = Broker::spawn(&write_config(dir.path(), port, &everyone));
    let mut watcher = Wire::connect_with(addr, login("watcher", "watcher", "w", false)).await;
    let again = drain(&mut watcher, Duration::from_millis(800)).await;
    assert!(again.is_empty(), "published again: {:?}", topics(&again));
}
