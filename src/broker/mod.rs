//! The runtime graph: listeners, connections, sessions, router.
//!
//! [`start`] builds a [`runtime::BrokerCore`] from a [`Config`], binds every MQTT connector and
//! spawns one accept loop per connector; each accepted socket gets its own task
//! ([`connection::serve`]). [`BrokerHandle::shutdown`] stops accepting, closes every client
//! (flushing what was queued for it and publishing wills, since a server-side close is not a
//! DISCONNECT), saves persistent sessions and waits for every task to end.

pub mod connection;
pub mod counters;
pub mod inflight;
pub mod keepalive;
pub mod limits;
pub mod listener;
pub mod message;
pub mod queue;
pub mod registry;
pub mod retained;
pub mod router;
pub mod runtime;
pub mod session;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
pub use connection::{ConnectionParams, ListenerSettings};
pub use counters::CountersSnapshot;
pub use runtime::BrokerCore;
pub use store::{MemorySessionStore, SessionStore};

/// How long [`BrokerHandle::shutdown`] waits for connection tasks before giving up on them.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(10);

/// A running broker.
pub struct BrokerHandle {
    listeners: Vec<(String, SocketAddr)>,
    core: Arc<BrokerCore>,
    shutdown: CancellationToken,
    /// Every task holds a clone of the sender; the receiver sees `None` once all have ended.
    task_alive: mpsc::Sender<()>,
    tasks_done: mpsc::Receiver<()>,
}

impl BrokerHandle {
    /// Bound address of each listener, by connector name (port 0 in the config is resolved here).
    pub fn listener_addrs(&self) -> &[(String, SocketAddr)] {
        &self.listeners
    }

    /// The shared runtime state (sessions, subscriptions, retained messages, counters).
    pub fn core(&self) -> &Arc<BrokerCore> {
        &self.core
    }

    /// A copy of the broker's counters.
    pub fn counters(&self) -> CountersSnapshot {
        self.core.counters.snapshot()
    }

    /// Stop accepting, close every client cleanly, wait for tasks to end.
    pub async fn shutdown(self) {
        let BrokerHandle {
            core,
            shutdown,
            task_alive,
            mut tasks_done,
            ..
        } = self;
        shutdown.cancel();
        drop(task_alive);
        if tokio::time::timeout(SHUTDOWN_WAIT, tasks_done.recv())
            .await
            .is_err()
        {
            tracing::warn!(
                "some connections did not close within {} s",
                SHUTDOWN_WAIT.as_secs()
            );
        }
        core.save_all();
    }
}

/// Build the runtime graph from `config` and start serving.
pub async fn start(config: Config) -> anyhow::Result<BrokerHandle> {
    start_with_store(config, Arc::new(MemorySessionStore::default())).await
}

/// [`start`] with the store that persistent sessions are loaded from and saved to.
pub async fn start_with_store(
    config: Config,
    store: Arc<dyn SessionStore>,
) -> anyhow::Result<BrokerHandle> {
    let core = Arc::new(BrokerCore::new(&config, store)?);
    let restored = core.restore_sessions()?;
    if restored > 0 {
        tracing::info!(sessions = restored, "persistent sessions restored");
    }
    // Bind everything before spawning anything, so a port in use fails the start cleanly.
    let mut bound = Vec::new();
    for listener in &config.listeners {
        if !listener::is_served(listener.scheme) {
            tracing::warn!(
                listener = %listener.name,
                scheme = %listener.scheme,
                at = %listener.span,
                "TLS and WebSocket connectors are not served by this build yet: skipped"
            );
            continue;
        }
        let (tcp, addr) = listener::bind(listener).await?;
        let settings = Arc::new(ListenerSettings {
            name: listener.name.clone(),
            scheme: listener.scheme,
            options: listener.options.clone(),
        });
        bound.push((tcp, addr, settings));
    }
    let shutdown = CancellationToken::new();
    let (task_alive, tasks_done) = mpsc::channel(1);
    let mut listeners = Vec::with_capacity(bound.len());
    for (tcp, addr, settings) in bound {
        listeners.push((settings.name.clone(), addr));
        tokio::spawn(listener::accept_loop(
            tcp,
            settings,
            core.clone(),
            shutdown.clone(),
            task_alive.clone(),
        ));
    }
    Ok(BrokerHandle {
        listeners,
        core,
        shutdown,
        task_alive,
        tasks_done,
    })
}

/// Start the broker and serve until SIGTERM or Ctrl-C, then shut down gracefully.
/// `<broker start="false">` builds the graph (validating security) and returns at once.
pub async fn run_until_signal(config: Config) -> anyhow::Result<()> {
    if !config.broker.start {
        BrokerCore::new(&config, Arc::new(MemorySessionStore::default()))?;
        tracing::info!("broker start=\"false\": configuration built, not serving");
        return Ok(());
    }
    let handle = start(config).await?;
    for (name, addr) in handle.listener_addrs() {
        tracing::info!(listener = %name, %addr, "listening");
    }
    wait_for_signal().await?;
    tracing::info!("shutting down");
    handle.shutdown().await;
    Ok(())
}

/// Ctrl-C (SIGINT) or, on Unix, SIGTERM.
async fn wait_for_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut terminate = signal(SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r?,
            _ = terminate.recv() => {}
        }
        Ok(())
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await?;
        Ok(())
    }
}
