//! A broker started in-process from a configuration, on 127.0.0.1 port 0.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ferromq::broker::{self, BrokerHandle, SessionStore};
use ferromq::config::Config;

use super::xml::{activemq_xml, load_xml};

pub struct TestBroker {
    pub handle: BrokerHandle,
    pub addr: SocketAddr,
}

impl TestBroker {
    pub async fn start(config: Config) -> TestBroker {
        let handle = broker::start(config).await.expect("broker starts");
        let addr = handle.listener_addrs()[0].1;
        TestBroker { handle, addr }
    }

    pub async fn start_with_store(config: Config, store: Arc<dyn SessionStore>) -> TestBroker {
        let handle = broker::start_with_store(config, store)
            .await
            .expect("broker starts");
        let addr = handle.listener_addrs()[0].1;
        TestBroker { handle, addr }
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
        tokio::time::timeout(Duration::from_secs(15), self.handle.shutdown())
            .await
            .expect("shutdown completes");
    }
}
