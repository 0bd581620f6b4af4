//! A broker started in-process from a configuration, on 127.0.0.1 port 0.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ferromq::broker::connection::{self, ConnectionParams, ListenerSettings};
use ferromq::broker::{self, BrokerHandle, SessionStore};
use ferromq::config::Config;
use tokio::io::DuplexStream;
use tokio_util::sync::CancellationToken;

use super::xml::{activemq_xml, load_xml};

pub struct TestBroker {
    pub handle: BrokerHandle,
    pub addr: SocketAddr,
    /// The first connector, for connections served in-process ([`TestBroker::duplex`]).
    listener: Arc<ListenerSettings>,
    /// Ends the in-process connections at shutdown.
    duplex_shutdown: CancellationToken,
}

impl TestBroker {
    /// Wait (up to 10 s) until at least `n` of this broker's connections are parked (idle
    /// plain-TCP connections without a task, see `broker::connection::parking`).
    pub async fn parked(&self, n: u64) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let now = self.handle.core().counters.connections_parked();
            if now >= n {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "expected {n} parked connections, {now} are"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    pub async fn start(config: Config) -> TestBroker {
        let listener = first_listener(&config);
        let handle = broker::start(config).await.expect("broker starts");
        TestBroker::new(handle, listener)
    }

    pub async fn start_with_store(config: Config, store: Arc<dyn SessionStore>) -> TestBroker {
        let listener = first_listener(&config);
        let handle = broker::start_with_store(config, store)
            .await
            .expect("broker starts");
        TestBroker::new(handle, listener)
    }

    fn new(handle: BrokerHandle, listener: Arc<ListenerSettings>) -> TestBroker {
        let addr = handle.listener_addrs()[0].1;
        TestBroker {
            handle,
            addr,
            listener,
            duplex_shutdown: CancellationToken::new(),
        }
    }

    /// A connection to this broker served in-process by `connection::serve` over a
    /// `tokio::io::duplex` pipe, as if accepted on the first connector: no socket, so a test
    /// may run with paused time (`#[tokio::test(start_paused = true)]`).
    pub fn duplex(&self) -> DuplexStream {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let params = ConnectionParams {
            core: self.handle.core().clone(),
            listener: self.listener.clone(),
            peer: ([127, 0, 0, 1], 1).into(),
            tls: false,
            peer_cert_subject: None,
            shutdown: self.duplex_shutdown.clone(),
        };
        tokio::spawn(connection::serve(server, params));
        client
    }

    /// A broker started from `activemq.xml` text.
    pub async fn from_xml(xml: &str) -> TestBroker {
        TestBroker::start(load_xml(xml)).await
    }

    /// A broker with one MQTT connector with the given URI options (`name=value`).
    pub async fn with_uri_options(uri_options: &[&str]) -> TestBroker {
        TestBroker::from_xml(&activemq_xml(uri_options, "")).await
    }

    pub async fn default() -> TestBroker {
        TestBroker::with_uri_options(&[]).await
    }

    pub async fn shutdown(self) {
        self.duplex_shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(15), self.handle.shutdown())
            .await
            .expect("shutdown completes");
    }
}

/// The settings of the configuration's first connector, as the broker gives them to its
/// connections.
fn first_listener(config: &Config) -> Arc<ListenerSettings> {
    let listener = &config.listeners[0];
    Arc::new(ListenerSettings {
        config: listener.clone(),
        tls: None,
        stats: ferromq::metrics::ListenerStats::new(
            &listener.name,
            ferromq::config::Protocol::Mqtt,
            false,
        ),
    })
}
