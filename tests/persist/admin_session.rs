//! `ferromq session list|end`: the admin's way to end an abandoned persistent session (with its
//! queued messages) on a running broker (over MQTT) and in a stopped broker's store.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use crate::support::wire::{
    numbered_publish, spawn_broker, subscribe, write_crash_config, KillOnDrop, Wire,
};
use crate::support::{connect_packet, free_port};
use ferromq::protocol::{Packet, QoS};

fn ferromq(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ferromq"))
        .args(args)
        .output()
        .expect("run ferromq")
}

/// `client_id` subscribed to `t/#` at QoS 1, offline, with `queued` messages waiting.
async fn abandoned(addr: std::net::SocketAddr, client_id: &str, queued: u32) {
    let mut sub = Wire::connect(addr, client_id, false).await;
    subscribe(&mut sub, "t/#", QoS::AtLeastOnce).await;
    drop(sub);
    let mut publisher = Wire::connect(addr, "publisher", true).await;
    for n in 0..queued {
        let id = u16::try_from(n + 1).expect("small count");
        publisher
            .send(&numbered_publish("t/x", n, id))
            .await
            .expect("publish");
        let acked = publisher.recv(std::time::Duration::from_secs(5)).await;
        assert!(matches!(acked, Ok(Some(Packet::PubAck(_)))), "{acked:?}");
    }
}

async fn session_present(addr: std::net::SocketAddr, client_id: &str) -> bool {
    let (_wire, ack) = Wire::connect_acked(addr, connect_packet(client_id, false, 0)).await;
    ack.session_present
}

fn config_arg(config: &Path) -> String {
    config.display().to_string()
}

#[tokio::test]
async fn an_abandoned_session_is_ended_online_and_in_a_stopped_brokers_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = write_crash_config(dir.path(), port, 1000);
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let broker = Arc::new(parking_lot::Mutex::new(spawn_broker(&config)));
    let _kill = KillOnDrop(broker.clone());

    // Online: over MQTT, on the running broker.
    abandoned(addr, "gone-online", 3).await;
    let out = ferromq(&[
        "session",
        "end",
        "gone-online",
        "--broker",
        &addr.to_string(),
    ]);
    assert!(out.status.success(), "{out:?}");
    assert!(!session_present(addr, "gone-online").await, "ended online");
    // A client id the broker keeps no session of: nothing ended, and it says so.
    let out = ferromq(&["session", "end", "never-was", "--broker", &addr.to_string()]);
    assert!(!out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("kept no session with client id `never-was`: nothing ended"),
        "{said}"
    );
    // No client was connected with that id: nothing says one was disconnected.
    assert!(said.contains("if one was, was disconnected"), "{said}");
    assert!(
        !session_present(addr, "never-was").await,
        "none made either"
    );

    // The store is the running broker's: `--config` says to use --broker.
    abandoned(addr, "gone-offline", 5).await;
    let out = ferromq(&[
        "session",
        "end",
        "gone-offline",
        "--config",
        &config_arg(&config),
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--broker"),
        "{out:?}"
    );

    // `session list` cannot use the running broker's store, nor `--broker` (MQTT cannot list
    // sessions): it points at the console, which can.
    let out = ferromq(&["session", "list", "--config", &config_arg(&config)]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("in use by a running broker"), "{said}");
    assert!(said.contains("GET /api/sessions"), "{said}");
    assert!(said.contains("session end CLIENT_ID --broker"), "{said}");

    // Stopped broker: list, then end in the store.
    {
        let mut child = broker.lock();
        child.kill().expect("kill");
        child.wait().expect("wait");
    }
    let out = ferromq(&["session", "list", "--config", &config_arg(&config)]);
    assert!(out.status.success(), "{out:?}");
    let listing = String::from_utf8_lossy(&out.stdout).to_string();
    let row = listing
        .lines()
        .find(|l| l.starts_with("gone-offline\t"))
        .unwrap_or_else(|| panic!("listed:\n{listing}"));
    assert_eq!(row.split('\t').nth(2), Some("5"), "5 queued: {row}");
    // The file as `run FILE` and `check FILE` take it: the same listing.
    let out = ferromq(&["session", "list", &config_arg(&config)]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), listing);
    // Not both.
    let both = config_arg(&config);
    let out = ferromq(&["session", "list", &both, "--config", &both]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = ferromq(&[
        "session",
        "end",
        "gone-offline",
        "--config",
        &config_arg(&config),
    ]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("5 queued"));
    let out = ferromq(&["session", "end", "nobody", "--config", &config_arg(&config)]);
    assert!(!out.status.success(), "unknown client id");

    *broker.lock() = spawn_broker(&config);
    assert!(
        !session_present(addr, "gone-offline").await,
        "ended in the store"
    );
}

/// `session list` of a memory-only broker or of a cluster node has no store to read: it says
/// where the sessions can be listed (the console, STOMP durable subscriptions too on a single
/// broker; for a cluster, not by `session list`, and its console lists no STOMP durable
/// subscription), and names `--broker` only for `session end`.
#[test]
fn session_list_without_a_store_says_where_sessions_are_listed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let memory = dir.path().join("memory.xml");
    std::fs::write(
        &memory,
        r#"<beans xmlns="http://www.springframework.org/schema/beans">
  <broker xmlns="http://activemq.apache.org/schema/core" brokerName="m" persistent="false">
    <transportConnectors>
      <transportConnector name="mqtt" uri="mqtt://127.0.0.1:1883"/>
    </transportConnectors>
  </broker>
</beans>
"#,
    )
    .expect("write memory.xml");
    let node = dir.path().join("node.xml");
    std::fs::write(
        &node,
        r#"<beans xmlns="http://www.springframework.org/schema/beans" xmlns:fmq="urn:ferromq">
  <broker xmlns="http://activemq.apache.org/schema/core" brokerName="n1">
    <persistenceAdapter>
      <fmq:jetStream servers="nats://127.0.0.1:4222"/>
    </persistenceAdapter>
    <transportConnectors>
      <transportConnector name="mqtt" uri="mqtt://127.0.0.1:1883"/>
    </transportConnectors>
  </broker>
</beans>
"#,
    )
    .expect("write node.xml");
    for (file, expected, stomp_listed) in [
        (&memory, "its web console lists them", true),
        (&node, "`session list` cannot read them", false),
    ] {
        let out = ferromq(&["session", "list", &config_arg(file)]);
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(said.contains(expected), "{said}");
        assert!(said.contains("GET /api/sessions"), "{said}");
        // A cluster node's console lists MQTT sessions only: the hint says how a STOMP
        // durable subscription is removed instead; a single broker's lists them.
        assert_eq!(
            said.contains("a cluster node's web console lists no STOMP durable subscriptions")
                && said.contains("UNSUBSCRIBE (headers id and activemq.subscriptionName"),
            !stomp_listed,
            "{said}"
        );
        assert_eq!(
            said.contains("STOMP durable subscriptions as stomp:<client-id>:<name>"),
            stomp_listed,
            "{said}"
        );
        assert!(
            !said.contains("with --broker"),
            "`session list` takes no --broker: {said}"
        );
    }
}

/// A TCP proxy to `to` that forwards the first `forwarded` connections made to it and closes
/// every later one at once: a broker that becomes unreachable between two connections.
async fn proxy_closing_after(to: std::net::SocketAddr, forwarded: usize) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the proxy");
    let addr = listener.local_addr().expect("proxy address");
    tokio::spawn(async move {
        let mut accepted = 0;
        while let Ok((mut inbound, _)) = listener.accept().await {
            accepted += 1;
            if accepted > forwarded {
                drop(inbound);
                continue;
            }
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    addr
}

/// Whether the broker keeps a session of `client_id`, asked so that the asking leaves none:
/// MQTT 5, Clean Start 0, Session Expiry Interval 0.
async fn keeps_session(addr: std::net::SocketAddr, client_id: &str) -> bool {
    let (mut client, ack) = crate::support::RawClient::connect_ok(
        addr,
        crate::support::connect_v5(client_id, false, None),
    )
    .await;
    client
        .send(Packet::Disconnect(ferromq::protocol::Disconnect {
            reason: 0,
            properties: None,
        }))
        .await;
    ack.session_present
}

/// `session end --broker` leaves no session behind when the broker cannot be reached after
/// its first connection: where there was none, that connection (Session Expiry Interval 0)
/// made nothing that outlives it and nothing more is needed; where there was one, that
/// connection resumed it with expiry 0, so it ends when it closes even though the Clean Start
/// connection that would make sure of it fails.
#[tokio::test]
async fn ending_a_session_online_leaves_none_when_the_broker_goes_away_midway() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = write_crash_config(dir.path(), port, 1000);
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let broker = Arc::new(parking_lot::Mutex::new(spawn_broker(&config)));
    let _kill = KillOnDrop(broker.clone());
    // Serving (the proxy does not retry).
    drop(Wire::connect(addr, "ready", true).await);

    let once = proxy_closing_after(addr, 1).await;
    let ended = ferromq::admin::end_session_online(once, "never-was", None, None).await;
    assert!(matches!(ended, Ok(false)), "{ended:?}");
    assert!(
        !keeps_session(addr, "never-was").await,
        "the connection that found no session left none"
    );

    abandoned(addr, "kept", 2).await;
    let once = proxy_closing_after(addr, 1).await;
    let ended = ferromq::admin::end_session_online(once, "kept", None, None).await;
    assert!(matches!(ended, Ok(true)), "{ended:?}");
    // It ends once the broker has seen that connection close.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while keeps_session(addr, "kept").await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the resumed session outlived its connection"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
