//! The runtime graph: listeners, connections, sessions, router. (Being written: issue 3.)

pub mod retained;
pub mod router;

use std::net::SocketAddr;

use crate::config::Config;

/// A running broker.
pub struct BrokerHandle {
    listeners: Vec<(String, SocketAddr)>,
}

impl BrokerHandle {
    /// Bound address of each listener, by connector name (port 0 in the config is resolved here).
    pub fn listener_addrs(&self) -> &[(String, SocketAddr)] {
        &self.listeners
    }

    /// Stop accepting, close every client cleanly, wait for tasks to end.
    pub async fn shutdown(self) {}
}

/// Build the runtime graph from `config` and start serving.
pub async fn start(config: Config) -> anyhow::Result<BrokerHandle> {
    let _ = config;
    Ok(BrokerHandle {
        listeners: Vec::new(),
    })
}

/// Start the broker and serve until SIGTERM or Ctrl-C, then shut down gracefully.
pub async fn run_until_signal(config: Config) -> anyhow::Result<()> {
    let handle = start(config).await?;
    for (name, addr) in handle.listener_addrs() {
        tracing::info!(listener = %name, %addr, "listening");
    }
    let _ = tokio::signal::ctrl_c().await;
    handle.shutdown().await;
    Ok(())
}
