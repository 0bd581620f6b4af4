//! The runtime graph: listeners, connections, sessions, router.
//!
//! [`start`] builds a [`runtime::BrokerCore`] from a [`Config`], binds every connector (plain
//! MQTT, TLS and WebSocket; the handshakes run per connection through [`crate::transport`]) and
//! spawns one accept loop per connector; each accepted socket gets its own task
//! ([`connection::serve`]). [`BrokerHandle::shutdown`] stops accepting, closes every client
//! (flushing what was queued for it and publishing wills, since a server-side close is not a
//! DISCONNECT), saves persistent sessions and waits for every task to end.
//!
//! Every broker has a control task ([`crate::control::Control`]) whose events it consumes in
//! one dispatcher task: `TlsRenewed` re-reads the TLS connectors' material, `Reload` goes to the
//! reloader, `Shutdown` (SIGINT/SIGTERM, owned by [`run_until_signal`] only) to whoever waits in
//! [`BrokerHandle::stop_signal`]. The broker's [`Phase`] is published on
//! [`BrokerHandle::phase`].
//!
//! Hot reload: [`BrokerHandle::enable_reload`] starts [`crate::reload`] with
//! [`server::apply::BrokerApply`], which swaps the security snapshot and reconciles the
//! listeners ([`server::listener_set`]) with each valid new configuration.

pub mod allocator;
pub mod clients;
pub mod connection;
pub mod counters;
pub mod durability;
pub mod message;
pub mod preflight;
pub mod queues;
pub mod routing;
pub mod runtime;
pub mod selector;
pub mod server;
pub mod session;
pub mod starting;
pub mod system;
pub mod topic_stats;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch, Mutex};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, LoadOptions};
pub use crate::control::Phase;
use crate::control::{Control, ControlEvent, Lifecycle, Signals, StopSignal, WatchSettings};
use crate::reload::{self, ApplyConfig, ReloadHandle, ReloadRequest};
pub use connection::{ConnectionParams, ListenerSettings};
pub use counters::CountersSnapshot;
pub use durability::{MemorySessionStore, SessionStore};
pub use runtime::BrokerCore;
pub use server::apply::BrokerApply;
use server::listener_set::{BoundListener, ListenerSet};
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
    lifecycle: Lifecycle,
    /// Owns the signals and the file watches; its events go to `dispatcher`.
    control: Control,
    dispatcher: JoinHandle<()>,
    /// Where `dispatcher` sends `Reload` events (set by [`BrokerHandle::enable_reload`]).
    reload_requests: ReloadRequests,
    /// SIGINT/SIGTERM, once owned ([`BrokerHandle::own_stop_signals`]).
    stop_signals: Option<mpsc::UnboundedReceiver<StopSignal>>,
    /// The web console, when the configuration enables it.
    console: Option<crate::console::ConsoleHandle>,
}

type ReloadRequests = Arc<parking_lot::Mutex<Option<mpsc::Sender<ReloadRequest>>>>;

/// How [`run_until_signal`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Every client was closed and every session saved.
    Gracefully,
    /// A second SIGINT/SIGTERM arrived while draining: the caller should exit at once (with
    /// 128 + the signal's number, the shell's convention for "killed by").
    Forced(StopSignal),
    /// SIGINT/SIGTERM arrived before the broker served (a cluster node waiting on NATS): the
    /// start was abandoned (logged with the step it was at) and the caller should exit at
    /// once, with 128 + the signal's number as before the broker handled it.
    BeforeServing(StopSignal),
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
    /// every case. Replaces (and stops) a reload started before. Returns once the files are
    /// watched.
    pub async fn enable_reload(&mut self, running: Config, options: LoadOptions, watch: bool) {
        let handle = reload::spawn_with(
            running,
            options,
            watch,
            self.applier(),
            self.control.link(),
            Some(self.lifecycle.clone()),
        );
        *self.reload_requests.lock() = Some(handle.requests());
        if let Some(console) = &self.console {
            console.follow_reloads(handle.subscribe());
        }
        *self.core.metrics.reload.lock() = Some(handle.subscribe());
        if let Some(previous) = self.reload.replace(handle) {
            previous.shutdown().await;
        }
        self.control.synced().await;
    }

    /// Own SIGINT and SIGTERM (as `ferromq run` does): each becomes a value of
    /// [`BrokerHandle::stop_signal`] instead of ending the process. Installing the handlers
    /// replaces the signals' default action for the whole process, for good. Errors: the OS
    /// refused a handler, or the platform is not Unix.
    pub fn own_stop_signals(&mut self) -> std::io::Result<()> {
        self.control.own_signals(Signals {
            hangup: false,
            shutdown: true,
        })
    }

    /// [`BrokerHandle::own_stop_signals`] with the handlers `early` installed before the
    /// start (`ferromq run`), so that a signal received as the start ended still stops it.
    pub fn adopt_stop_signals(&mut self, early: crate::control::signal::StartSignals) {
        self.control.adopt_signals(early);
    }

    /// The next SIGINT/SIGTERM; `None` when they are not owned (or no longer forwarded).
    pub async fn stop_signal(&mut self) -> Option<StopSignal> {
        self.stop_signals.as_mut()?.recv().await
    }

    /// The broker's lifecycle: `Running` once started, `Reloading` while a configuration reload
    /// runs, `Draining` once [`BrokerHandle::shutdown`] began, `Stopped` when it is over. Wait
    /// on it (`wait_for`) instead of sleeping.
    pub fn phase(&self) -> watch::Receiver<Phase> {
        self.lifecycle.subscribe()
    }

    /// The hot reload started by [`BrokerHandle::enable_reload`] (counters, manual requests).
    pub fn reload(&self) -> Option<&ReloadHandle> {
        self.reload.as_ref()
    }

    /// The web console's bound address, when it runs.
    pub fn console_addr(&self) -> Option<SocketAddr> {
        self.console.as_ref().map(|c| c.local_addr())
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
            lifecycle,
            control,
            dispatcher,
            console,
            ..
        } = self;
        lifecycle.draining();
        if let Some(console) = console {
            console.stop().await;
        }
        // No reload may start a listener from here on.
        if let Some(reload) = reload {
            reload.shutdown().await;
        }
        listener_set.lock().await.close();
        if let Some(backplane) = core.backplane() {
            // A cluster node hands its sessions over before anything is closed.
            backplane.drain().await;
        }
        shutdown.cancel();
        core.parking.wake_stopped();
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
        // The dispatcher holds the listeners, hence the core and its store: wait until it is
        // gone, so that the store is closed when this returns (a restart reopens it).
        drop(control);
        dispatcher.abort();
        let _ = dispatcher.await;
        drop(listener_set);
        drop(core);
        lifecycle.stopped();
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
    starting::enter("recovering the persistent state");
    let core = Arc::new(BrokerCore::new(&config, durability.clone())?);
    let mut recovery = durability
        .recover(&core.memory)
        .map_err(|e| anyhow::anyhow!("cannot recover the persistent state: {e}"))?;
    let problems = recovery.problems.clone();
    // Named queues go to the queue engine; groups are recovered but not used yet.
    let (owned_queues, owned_entries) = core.queues.restore(std::mem::take(&mut recovery.queues));
    let counts = core.apply_recovery(recovery, &config);
    tracing::info!(
        store = %durability.location(),
        sessions = counts.sessions,
        retained = counts.retained,
        queued = counts.queued,
        inflight = counts.inflight,
        inbound_qos2 = counts.inbound_qos2,
        owned_queues,
        owned_entries,
        destinations = core.destinations.len(),
        "persistent state recovered"
    );
    for problem in problems {
        tracing::warn!("durable store recovery: {problem}");
    }
    if let Some(backplane) = core.backplane() {
        // Readers and the retained index before the listeners accept anyone.
        starting::enter("starting the cluster node (readers, retained index, sessions)");
        backplane.start(Arc::downgrade(&core)).await?;
        tracing::info!(node = backplane.node_id(), "cluster node started");
    }
    start_core(config, core).await
}

async fn start_core(config: Config, core: Arc<BrokerCore>) -> anyhow::Result<BrokerHandle> {
    starting::enter("binding the listeners");
    let lifecycle = Lifecycle::default();
    // Load TLS material and bind everything before spawning anything, so a bad store or a
    // port in use fails the start cleanly.
    let mut bound = Vec::with_capacity(config.listeners.len());
    for listener in server::served_listeners(&config) {
        bound.push(BoundListener::bind(&config, listener).await?);
    }
    let shutdown = CancellationToken::new();
    let (task_alive, tasks_done) = mpsc::channel(1);
    tokio::spawn(session::expiry::sweep_periodically(
        core.clone(),
        session::expiry::AbandonedSessionTimeout::of(&config),
        shutdown.clone(),
        task_alive.clone(),
    ));
    queues::sweep_periodically(Arc::downgrade(&core.queues), shutdown.clone());
    system::spawn(&core, shutdown.clone());
    allocator::spawn_release(shutdown.clone());
    // cachedLDAPAuthorizationMap: loads the entries now and follows LDAP changes.
    crate::security::ldap::authz_map::spawn_refresher(Arc::downgrade(&core), shutdown.clone());
    let (events_tx, events) = mpsc::unbounded_channel();
    let control = Control::start(&[], WatchSettings::default(), Signals::default(), events_tx);
    let mut set = ListenerSet::new(
        core.clone(),
        shutdown.clone(),
        task_alive.clone(),
        control.link(),
    );
    for listener in bound {
        set.spawn(listener)?;
    }
    let listeners = set.addrs();
    if let Some(backplane) = core.backplane() {
        backplane.listening(published_listeners(&config, &listeners));
    }
    let console = match &config.console {
        Some(console_config) => {
            let started = crate::console::start(
                console_config,
                config.ssl.as_ref(),
                core.clone(),
                console_info(&config, &listeners),
            )
            .await;
            match started {
                Ok(console) => Some(console),
                Err(e) => {
                    // Stop what was started: the broker does not run without its console.
                    shutdown.cancel();
                    core.parking.wake_stopped();
                    return Err(e);
                }
            }
        }
        None => None,
    };
    let listener_set = Arc::new(Mutex::new(set));
    let reload_requests = ReloadRequests::default();
    let (stops_tx, stops) = mpsc::unbounded_channel();
    let dispatcher = tokio::spawn(dispatch(
        events,
        listener_set.clone(),
        reload_requests.clone(),
        stops_tx,
    ));
    control.synced().await;
    lifecycle.running();
    Ok(BrokerHandle {
        listeners,
        core,
        shutdown,
        task_alive,
        tasks_done,
        listener_set,
        reload: None,
        lifecycle,
        control,
        dispatcher,
        reload_requests,
        stop_signals: Some(stops),
        console,
    })
}

/// The served connectors as (scheme, published host, published port), for a cluster's Server
/// References: each connector's `<publishedAddressPolicy>` applied to its host as written and
/// its bound port.
fn published_listeners(
    config: &Config,
    bound: &[(String, SocketAddr)],
) -> Vec<(crate::config::Scheme, String, u16)> {
    server::served_listeners(config)
        .filter_map(|l| {
            let (_, addr) = bound.iter().find(|(name, _)| *name == l.name)?;
            let (host, port) =
                server::published_address::published_address(&l.published, &l.host, addr.port());
            Some((l.scheme, host, port))
        })
        .collect()
}

/// What the console shows about this broker's configuration.
fn console_info(config: &Config, bound: &[(String, SocketAddr)]) -> crate::console::ConsoleInfo {
    let listeners = server::served_listeners(config)
        .map(|l| crate::console::ListenerInfo {
            name: l.name.clone(),
            scheme: l.scheme.as_str().to_owned(),
            address: bound
                .iter()
                .find(|(name, _)| *name == l.name)
                .map_or_else(|| format!("{}:{}", l.host, l.port), |(_, a)| a.to_string()),
            protocol: match l.scheme.protocol() {
                Some(crate::config::Protocol::Stomp) => "stomp",
                _ => "mqtt",
            },
            tls: l.scheme.is_tls(),
            websocket: l.scheme.is_websocket(),
        })
        .collect();
    crate::console::ConsoleInfo {
        broker_name: config.broker.broker_name.clone(),
        config_file: config.source.display().to_string(),
        listeners,
        store: match (&config.persistence, config.broker.persistent) {
            (crate::config::Persistence::JetStream(_), _) => crate::console::StoreInfo::Cluster,
            (_, true) => crate::console::StoreInfo::Local {
                limit_bytes: config.limits.store_limit(),
            },
            (_, false) => crate::console::StoreInfo::MemoryOnly,
        },
        metrics_open: config.console.as_ref().is_some_and(|c| c.metrics_open),
    }
}

/// Consume the control task's events until it ends.
async fn dispatch(
    mut events: mpsc::UnboundedReceiver<ControlEvent>,
    listener_set: Arc<Mutex<ListenerSet>>,
    reload_requests: ReloadRequests,
    stops: mpsc::UnboundedSender<StopSignal>,
) {
    while let Some(event) = events.recv().await {
        match event {
            ControlEvent::Shutdown(signal) => {
                let _ = stops.send(signal);
            }
            ControlEvent::Reload(reason) => {
                let requests = reload_requests.lock().clone();
                match requests {
                    // Full: a waiting request reloads everything anyway.
                    Some(requests) => {
                        let _ = requests.try_send(ReloadRequest { reason });
                    }
                    None => tracing::debug!(?reason, "hot reload is off: reload not done"),
                }
            }
            ControlEvent::TlsRenewed { files } => listener_set.lock().await.renew_tls(&files),
        }
    }
}

/// Start the broker and serve until SIGTERM or Ctrl-C, then shut down gracefully (one during
/// the start abandons it: [`Stopped::BeforeServing`], logged with the step); a second
/// SIGTERM or Ctrl-C while draining returns [`Stopped::Forced`] at once (the caller exits), or
/// ends the process itself with 128 + the signal's number, from a thread of its own, when that
/// comes first or the runtime is stuck ([`crate::control::forced_exit`]).
/// `<broker start="false">` builds the graph (validating security) and returns at once.
/// Hot reload as [`run_until_signal_with_reload`] without `--watch`, reloading with the default
/// [`LoadOptions`].
pub async fn run_until_signal(config: Config) -> anyhow::Result<Stopped> {
    run_until_signal_with_reload(config, LoadOptions::default(), false).await
}

/// [`run_until_signal`] with hot reload: `config` was loaded with `options`, which every reload
/// reuses; files are watched when `watch` (`ferromq run --watch`) or when the configuration has
/// a runtimeConfigurationPlugin; SIGHUP always reloads. Errors: the broker cannot start (a port
/// in use, a store locked), or SIGINT/SIGTERM cannot be handled.
pub async fn run_until_signal_with_reload(
    config: Config,
    options: LoadOptions,
    watch: bool,
) -> anyhow::Result<Stopped> {
    if !config.broker.start {
        BrokerCore::new(&config, Arc::new(durability::MemoryOnly::default()))?;
        tracing::info!("broker start=\"false\": configuration built, not serving");
        return Ok(Stopped::Gracefully);
    }
    // Owned from before the start: a cluster node may wait on NATS for up to a minute there,
    // and a signal's default action would end it without a line.
    let mut early = crate::control::signal::StartSignals::install()?;
    let step = starting::Step::default();
    let started = {
        let start = starting::tracked(&step, start(config.clone()));
        tokio::pin!(start);
        tokio::select! {
            biased;
            signal = early.next() => Err(signal),
            started = &mut start => Ok(started),
        }
    };
    let mut handle = match started {
        Ok(handle) => handle?,
        Err(signal) => {
            tracing::warn!(
                step = step.current(),
                "{signal} received during start-up, while {}: stopped before serving \
                 (exit status {})",
                step.current(),
                128 + u32::from(signal.number())
            );
            return Ok(Stopped::BeforeServing(signal));
        }
    };
    handle.adopt_stop_signals(early);
    // Not through the control task: it runs on this runtime, which may be what is stuck.
    crate::control::forced_exit::exit_at_second_stop_signal()?;
    for (name, addr) in handle.listener_addrs() {
        tracing::info!(listener = %name, %addr, "listening");
    }
    handle.enable_reload(config, options, watch).await;
    if handle.reload().is_some_and(ReloadHandle::is_watching) {
        tracing::info!("watching the configuration files: edits are applied live");
    }
    let Some(signal) = handle.stop_signal().await else {
        anyhow::bail!("the control task ended: no signal can stop the broker any more");
    };
    tracing::info!("{signal} received: shutting down (send it again to exit at once)");
    let mut again = handle.stop_signals.take();
    let drain = handle.shutdown();
    tokio::pin!(drain);
    loop {
        tokio::select! {
            () = &mut drain => return Ok(Stopped::Gracefully),
            second = recv_stop(&mut again) => match second {
                Some(second) => {
                    tracing::warn!("{second} received while draining: exiting now, without waiting for clients and sessions");
                    return Ok(Stopped::Forced(second));
                }
                None => again = None,
            },
        }
    }
}

async fn recv_stop(
    signals: &mut Option<mpsc::UnboundedReceiver<StopSignal>>,
) -> Option<StopSignal> {
    match signals {
        Some(signals) => signals.recv().await,
        None => std::future::pending().await,
    }
}
