//! The runtime graph: listeners, connections, sessions, router.
//!
//! [`start`] builds a [`runtime::BrokerCore`] from a [`Config`], binds every connector (plain
//! MQTT, TLS and WebSocket; the handshakes run per connection through [`crate::transport`]) and
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

use crate::config::{Config, Listener};
use crate::transport::{SharedTls, TlsWatcher};
pub use connection::{ConnectionParams, ListenerSettings};
pub use counters::CountersSnapshot;
pub use runtime::BrokerCore;
pub use store::{MemorySessionStore, SessionStore};

/// Changes to TLS files within this window are applied as one reload.
const TLS_RENEWAL_DEBOUNCE: Duration = Duration::from_millis(500);
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
    /// Keep renewing TLS material from disk while the broker runs.
    _tls_watchers: Vec<TlsWatcher>,
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
    // Load TLS material and bind everything before spawning anything, so a bad store or a
    // port in use fails the start cleanly.
    let mut bound = Vec::new();
    let mut tls_watchers = Vec::new();
    for listener in &config.listeners {
        let tls = if listener.scheme.is_tls() {
            let shared = load_tls(&config, listener)?;
            match shared.watch(TLS_RENEWAL_DEBOUNCE) {
                Ok(watcher) => tls_watchers.push(watcher),
                Err(e) => tracing::warn!(
                    listener = %listener.name,
                    "TLS files will not be watched for renewal: {e}"
                ),
            }
            Some(shared)
        } else {
            None
        };
        let (tcp, addr) = listener::bind(listener).await?;
        let settings = Arc::new(ListenerSettings {
            name: listener.name.clone(),
            scheme: listener.scheme,
            options: listener.options.clone(),
            tls,
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
        _tls_watchers: tls_watchers,
    })
}

/// The TLS material of a TLS connector, from the broker's `<sslContext>`.
fn load_tls(config: &Config, listener: &Listener) -> anyhow::Result<Arc<SharedTls>> {
    let ssl = config.ssl.as_ref().ok_or_else(|| {
        anyhow::anyhow!(
            "connector `{}` ({}) at {} needs TLS but the broker has no <sslContext>",
            listener.name,
            listener.uri,
            listener.span
        )
    })?;
    SharedTls::load(ssl, &listener.options).map_err(|e| {
        anyhow::anyhow!(
            "cannot set up TLS for connector `{}` at {}: {e}",
            listener.name,
            listener.span
        )
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
