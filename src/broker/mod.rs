//! The runtime graph: listeners, connections, sessions, router.
//!
//! [`start`] builds a [`runtime::BrokerCore`] from a [`Config`], binds every connector (plain
//! MQTT, TLS and WebSocket; the handshakes run per connection through [`crate::transport`]) and
//! spawns one accept loop per connector; each accepted socket gets its own task
//! ([`connection::serve`]). [`BrokerHandle::shutdown`] stops accepting, closes every client
//! (flushing what was queued for it and publishing wills, since a server-side close is not a
//! DISCONNECT), saves persistent sessions and waits for every task to end.
//!
//! Hot reload (issue 6): [`BrokerHandle::enable_reload`] starts [`crate::reload`] with
//! [`apply::BrokerApply`], which swaps the security snapshot and reconciles the listeners
//! ([`listener_set`]) with each valid new configuration.

pub mod apply;
pub mod connection;
pub mod counters;
pub mod durability;
pub mod inflight;
pub mod keepalive;
pub mod limits;
pub mod listener;
pub mod listener_set;
pub mod memory;
pub mod message;
pub mod queue;
pub mod registry;
pub mod retained;
pub mod router;
pub mod runtime;
pub mod session;
pub mod session_expiry;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Mutex};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, LoadOptions};
use crate::reload::{self, ApplyConfig, ReloadHandle};
pub use apply::BrokerApply;
pub use connection::{ConnectionParams, ListenerSettings};
pub use counters::CountersSnapshot;
pub use durability::{MemorySessionStore, SessionStore};
use listener_set::{BoundListener, ListenerSet};
pub use runtime::BrokerCore;
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
    /// The listeners as they run now (reloads add, remove and rebind them).
    listener_set: Arc<Mutex<ListenerSet>>,
    reload: Option<ReloadHandle>,
}

impl BrokerHandle {
    /// Bound address of each listener at start, by connector name (port 0 in the config is
    /// resolved here). After reloads, see [`BrokerHandle::current_listener_addrs`].
    pub fn listener_addrs(&self) -> &[(String, SocketAddr)] {
        &self.listeners
    }

    /// Bound address of each listener running now, by connector name, in configuration order.
    pub async fn current_listener_addrs(&self) -> Vec<(String, SocketAddr)> {
        self.listener_set.lock().await.addrs()
    }

    /// What applies a reloaded configuration to this broker (for [`reload::spawn`]).
    pub fn applier(&self) -> Arc<dyn ApplyConfig> {
        Arc::new(BrokerApply::new(
            self.core.clone(),
            self.listener_set.clone(),
        ))
    }

    /// Start hot reload: `running` is the configuration the broker was started with, loaded
    /// with `options` (reused for every reload). Files are watched when `watch` (`ferromq run
    /// --watch`) or when the configuration has a runtimeConfigurationPlugin; SIGHUP reloads in
    /// every case. Replaces (and stops) a reload started before.
    pub async fn enable_reload(&mut self, running: Config, options: LoadOptions, watch: bool) {
        let handle = reload::spawn(running, options, watch, self.applier());
        if let Some(previous) = self.reload.replace(handle) {
            previous.shutdown().await;
        }
    }

    /// The hot reload started by [`BrokerHandle::enable_reload`] (counters, manual requests).
    pub fn reload(&self) -> Option<&ReloadHandle> {
        self.reload.as_ref()
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
            listener_set,
            reload,
            ..
        } = self;
        // No reload may start a listener from here on.
        if let Some(reload) = reload {
            reload.shutdown().await;
        }
        listener_set.lock().await.close();
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

/// Build the runtime graph from `config` and start serving. A durable broker (kahaDB, the
/// default) opens its store exclusively and recovers it first; `persistent="false"` or
/// `memoryPersistenceAdapter` keep everything in memory.
pub async fn start(config: Config) -> anyhow::Result<BrokerHandle> {
    let durability = durability::open(&config).await?;
    start_with(config, durability).await
}

/// [`start`] without a durable store, with the store that persistent sessions are loaded
/// from and saved to as snapshots (tests reuse one across two brokers).
pub async fn start_with_store(
    config: Config,
    store: Arc<dyn SessionStore>,
) -> anyhow::Result<BrokerHandle> {
    start_with(
        config,
        Arc::new(durability::MemoryOnly::with_snapshots(store)),
    )
    .await
}

/// [`start`] with the given durability engine: what it recovers is applied first.
pub async fn start_with(
    config: Config,
    durability: Arc<dyn durability::Durability>,
) -> anyhow::Result<BrokerHandle> {
    let core = Arc::new(BrokerCore::new(&config, durability.clone())?);
    let recovery = durability
        .recover(&core.memory)
        .map_err(|e| anyhow::anyhow!("cannot recover the persistent state: {e}"))?;
    let problems = recovery.problems.clone();
    let counts = core.apply_recovery(recovery, &config);
    tracing::info!(
        store = %durability.location(),
        sessions = counts.sessions,
        retained = counts.retained,
        queued = counts.queued,
        inflight = counts.inflight,
        inbound_qos2 = counts.inbound_qos2,
        "persistent state recovered"
    );
    for problem in problems {
        tracing::warn!("durable store recovery: {problem}");
    }
    start_core(config, core).await
}

async fn start_core(config: Config, core: Arc<BrokerCore>) -> anyhow::Result<BrokerHandle> {
    // Load TLS material and bind everything before spawning anything, so a bad store or a
    // port in use fails the start cleanly.
    let mut bound = Vec::with_capacity(config.listeners.len());
    for listener in &config.listeners {
        bound.push(BoundListener::bind(&config, listener).await?);
    }
    let shutdown = CancellationToken::new();
    let (task_alive, tasks_done) = mpsc::channel(1);
    tokio::spawn(session_expiry::sweep_periodically(
        core.clone(),
        session_expiry::AbandonedSessionTimeout::of(&config),
        shutdown.clone(),
        task_alive.clone(),
    ));
    let mut set = ListenerSet::new(core.clone(), shutdown.clone(), task_alive.clone());
    for listener in bound {
        set.spawn(listener)?;
    }
    Ok(BrokerHandle {
        listeners: set.addrs(),
        core,
        shutdown,
        task_alive,
        tasks_done,
        listener_set: Arc::new(Mutex::new(set)),
        reload: None,
    })
}

/// Start the broker and serve until SIGTERM or Ctrl-C, then shut down gracefully.
/// `<broker start="false">` builds the graph (validating security) and returns at once.
/// Hot reload as [`run_until_signal_with_reload`] without `--watch`, reloading with the default
/// [`LoadOptions`].
pub async fn run_until_signal(config: Config) -> anyhow::Result<()> {
    run_until_signal_with_reload(config, LoadOptions::default(), false).await
}

/// [`run_until_signal`] with hot reload: `config` was loaded with `options`, which every reload
/// reuses; files are watched when `watch` (`ferromq run --watch`) or when the configuration has
/// a runtimeConfigurationPlugin; SIGHUP always reloads.
pub async fn run_until_signal_with_reload(
    config: Config,
    options: LoadOptions,
    watch: bool,
) -> anyhow::Result<()> {
    if !config.broker.start {
        BrokerCore::new(&config, Arc::new(durability::MemoryOnly::default()))?;
        tracing::info!("broker start=\"false\": configuration built, not serving");
        return Ok(());
    }
    let mut handle = start(config.clone()).await?;
    for (name, addr) in handle.listener_addrs() {
        tracing::info!(listener = %name, %addr, "listening");
    }
    handle.enable_reload(config, options, watch).await;
    if handle.reload().is_some_and(ReloadHandle::is_watching) {
        tracing::info!("watching the configuration files: edits are applied live");
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
