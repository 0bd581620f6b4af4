//! The one support module of the integration tests, included by every test binary
//! (`#[path = "../support/mod.rs"] mod support;`). Each binary uses a different part of it.
//!
//! - [`xml`]: the `activemq.xml` builder and configuration loading;
//! - [`broker`]: a broker started in-process on 127.0.0.1 port 0;
//! - [`client`]: a raw MQTT client over TCP (or any stream) with ferromq's codec, packet
//!   builders, and a rumqttc client;
//! - [`wire`]: an error-tolerant raw client and the `ferromq` process for crash tests;
//! - [`live`]: a broker with hot reload on, started from a real file;
//! - [`reload`]: a configuration spread over several files, and a recording `ApplyConfig`;
//! - [`logs`]: capturing log lines;
//! - [`sub_options`]: MQTT 5 SUBSCRIBE with options and identifiers over a raw client;
//! - [`keytool`]: JKS/JCEKS stores made by the real `keytool`;
//! - [`tmpfs`]: a small real filesystem for the disk-full tests;
//! - [`activemq`]: Apache ActiveMQ 5.17 itself, for the differential tests;
//! - [`nats`]: a real NATS JetStream cluster (nats-server processes) for the cluster tests;
//! - [`cluster_nodes`]: ferromq cluster nodes as processes, and their configuration;
//! - [`security`], [`store`], [`tls`]: builders of security models, store records and
//!   certificates, TLS clients and an echo server over `transport::upgrade`.
#![allow(dead_code)] // each test binary uses a different subset

pub mod activemq;
pub mod broker;
pub mod client;
pub mod cluster_nodes;
pub mod keytool;
pub mod live;
pub mod logs;
pub mod nats;
// Also included by the self-contained `nats.rs` and `chaos/single.rs`.
#[allow(clippy::duplicate_mod)]
pub mod ports;
pub mod reload;
pub mod security;
pub mod slapd;
pub mod store;
pub mod sub_options;
pub mod tls;
pub mod tmpfs;
pub mod wire;
pub mod xml;

use std::time::Duration;

// Shorthands for the most used helpers (a binary may use none of them).
#[allow(unused_imports)]
pub use broker::TestBroker;
#[allow(unused_imports)]
pub use client::{
    ack, connect_packet, connect_v5, options, publish_packet, subscribe_packet, will, Client,
    RawClient,
};
#[allow(unused_imports)]
pub use xml::{activemq_xml, broker_xml, load_xml, pending_limit_policy, BrokerXml};

/// Upper bound for any single wait in a test; nothing may hang longer.
pub const STEP: Duration = Duration::from_secs(5);

/// Give the broker (or a file watcher) a moment to process something with no observable reply
/// (e.g. a QoS 0 publish before a subscriber checks, or setting up a directory watch). Use only
/// where no acknowledgement exists.
pub async fn settle() {
    settle_for(Duration::from_millis(100)).await;
}

/// [`settle`] for a given time.
pub async fn settle_for(time: Duration) {
    tokio::time::sleep(time).await;
}

/// Let a file watcher set up its directory watches (done by the watcher task, unobservable).
pub async fn settle_watch() {
    settle_for(Duration::from_millis(150)).await;
}

/// A free TCP port on 127.0.0.1 (for a broker process that must bind a known port), below the
/// ephemeral range (see `ports.rs`).
pub fn free_port() -> u16 {
    ports::free_port().expect("a free loopback port")
}

/// Waits (up to 20 s) until a broker process accepts TCP connections on 127.0.0.1:`port`, and
/// returns that address. Panics ("broker did not start") past the deadline.
pub async fn listening(port: u16) -> std::net::SocketAddr {
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "broker did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    addr
}

/// Kills the child process when dropped, so a failing test leaves no process behind.
pub struct ChildGuard(pub std::process::Child);

impl std::ops::Deref for ChildGuard {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for ChildGuard {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
