//! The broker's running listeners, by connector name: bound at start, reconciled with the
//! configuration on every reload (everything is reloadable: see docs/compatibility.md).
//!
//! Each listener has its own stop token, a child of the broker's shutdown token, shared by its
//! accept loop and every connection it accepted: stopping a listener closes exactly its own
//! clients, gracefully (queued output flushed, wills published, sessions saved), and leaves
//! every other connector's clients alone.
//!
//! Reconciling compares the configuration with what actually runs rather than trusting the
//! diff alone, so a part that failed on an earlier reload (a port in use) is retried on the
//! next one:
//! - a connector no longer configured is stopped;
//! - a connector not running is started;
//! - a connector whose address or scheme changed is bound again and its clients are
//!   disconnected (the connector they came through is gone). A new address is bound before the
//!   old socket closes, so a failure keeps the old one serving; the same port with another
//!   scheme has to close the old socket first;
//! - a connector whose options (or, for TLS, whose `<sslContext>`) changed keeps its socket and
//!   its clients: the new settings apply to connections accepted from then on.
//!
//! The TLS files of the running connectors are watched by the broker's control task
//! ([`crate::control`]), told after every change here; a renewal on disk comes back as
//! [`ListenerSet::renew_tls`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::broker::connection::ListenerSettings;
use crate::broker::runtime::BrokerCore;
use crate::broker::server::listener;
use crate::config::{Config, Listener};
use crate::control::ControlLink;
use crate::transport::{ReloadOutcome, SharedTls, TlsError};

/// A connector's socket, bound and ready for its accept loop.
pub struct BoundListener {
    tcp: TcpListener,
    addr: SocketAddr,
    settings: ListenerSettings,
}

impl BoundListener {
    /// Load the connector's TLS material (TLS schemes) and bind its socket. Errors name the
    /// connector and where it is configured.
    pub async fn bind(config: &Config, listener: &Listener) -> anyhow::Result<BoundListener> {
        let tls = tls_for(config, listener)?;
        let (tcp, addr) = listener::bind(listener).await?;
        Ok(BoundListener {
            tcp,
            addr,
            settings: ListenerSettings {
                config: listener.clone(),
                tls,
                stats: crate::metrics::ListenerStats::new(
                    &listener.name,
                    listener
                        .scheme
                        .protocol()
                        .unwrap_or(crate::config::Protocol::Mqtt),
                    listener.scheme.is_tls(),
                ),
            },
        })
    }
}

/// One connector being served.
struct RunningListener {
    addr: SocketAddr,
    /// The connector as configured (what a reload compares with) and its TLS material; new
    /// connections take the value current when they are accepted.
    settings: Arc<ArcSwap<ListenerSettings>>,
    /// Stops the accept loop and every connection it accepted.
    stop: CancellationToken,
    accept_task: JoinHandle<()>,
}

/// Every running listener of one broker.
pub struct ListenerSet {
    core: Arc<BrokerCore>,
    shutdown: CancellationToken,
    /// Cloned into every task; `None` once the broker is shutting down (nothing starts then).
    task_alive: Option<mpsc::Sender<()>>,
    /// In configuration order.
    running: Vec<RunningListener>,
    /// Told which TLS files the running connectors use.
    control: ControlLink,
}

impl ListenerSet {
    pub fn new(
        core: Arc<BrokerCore>,
        shutdown: CancellationToken,
        task_alive: mpsc::Sender<()>,
        control: ControlLink,
    ) -> ListenerSet {
        ListenerSet {
            core,
            shutdown,
            task_alive: Some(task_alive),
            running: Vec::new(),
            control,
        }
    }

    /// Re-read the TLS material of every TLS connector (the control task saw `files` change).
    /// New material is used by new handshakes; material that does not load (a half-written
    /// renewal) is refused with a warning and the previous certificate stays in use.
    pub fn renew_tls(&self, files: &[PathBuf]) {
        for running in &self.running {
            let settings = running.settings.load();
            let Some(tls) = &settings.tls else { continue };
            match tls.reload() {
                Ok(ReloadOutcome::Reloaded) => tracing::info!(
                    listener = %settings.name,
                    files = ?files,
                    "TLS material reloaded; new connections use it"
                ),
                Ok(ReloadOutcome::Unchanged) => {}
                Err(e) => tracing::warn!(
                    listener = %settings.name,
                    error = %e,
                    "TLS material not reloaded; the previous {} stays in use",
                    e.kept_on_reload()
                ),
            }
        }
    }

    /// Tell the control task which TLS files the running connectors read.
    fn watch_tls_files(&self) {
        let mut files: Vec<PathBuf> = Vec::new();
        for running in &self.running {
            if let Some(tls) = &running.settings.load().tls {
                files.extend(tls.files());
            }
        }
        files.sort();
        files.dedup();
        self.control.watch_tls_files(&files);
    }

    /// Name and bound address of every running listener, in configuration order.
    pub fn addrs(&self) -> Vec<(String, SocketAddr)> {
        self.running.iter().map(|r| (r.name(), r.addr)).collect()
    }

    /// Start serving `bound` (appended at the end of the order).
    pub fn spawn(&mut self, bound: BoundListener) -> anyhow::Result<SocketAddr> {
        let Some(task_alive) = self.task_alive.clone() else {
            anyhow::bail!(
                "connector `{}` not started: the broker is shutting down",
                bound.settings.name
            );
        };
        let stop = self.shutdown.child_token();
        let settings = Arc::new(ArcSwap::from_pointee(bound.settings));
        let accept_task = tokio::spawn(listener::accept_loop(
            bound.tcp,
            settings.clone(),
            self.core.clone(),
            stop.clone(),
            task_alive,
        ));
        self.running.push(RunningListener {
            addr: bound.addr,
            settings,
            stop,
            accept_task,
        });
        self.watch_tls_files();
        Ok(bound.addr)
    }

    /// Start nothing more; the listeners already running stop with the broker's shutdown token.
    pub fn close(&mut self) {
        self.task_alive = None;
    }

    /// Make the running listeners match `config` (see the module docs). `tls_changed`: the
    /// `<sslContext>` or its files changed, so TLS connectors get freshly loaded material.
    /// Returns one message per part that failed; everything else is in effect.
    pub async fn reconcile(&mut self, config: &Config, tls_changed: bool) -> Vec<String> {
        let mut failures = Vec::new();
        let served: Vec<&Listener> = crate::broker::server::served_listeners(config).collect();
        let mut index = 0;
        while index < self.running.len() {
            let name = self.running[index].name();
            if served.iter().any(|l| l.name == name) {
                index += 1;
                continue;
            }
            let removed = self.running.remove(index);
            let addr = removed.addr;
            stop(removed, &self.core).await;
            tracing::info!(listener = %name, %addr, "connector removed: stopped listening, its clients were disconnected");
        }
        for wanted in served.iter().copied() {
            let result = match self.position(&wanted.name) {
                None => self.start(config, wanted).await,
                Some(i) if wanted.needs_rebind(&self.running[i].settings.load().config) => {
                    self.rebind(i, config, wanted).await
                }
                Some(i) => self.update_settings(i, config, wanted, tls_changed),
            };
            if let Err(e) = result {
                failures.push(format!("{e:#}"));
            }
        }
        // Keep configuration order (a rebound or new listener was appended).
        let order = |name: &str| served.iter().position(|l| l.name == name);
        self.running.sort_by_key(|r| order(&r.name()));
        self.watch_tls_files();
        failures
    }

    fn position(&self, name: &str) -> Option<usize> {
        self.running.iter().position(|r| r.name() == name)
    }

    async fn start(&mut self, config: &Config, wanted: &Listener) -> anyhow::Result<()> {
        let bound = BoundListener::bind(config, wanted).await?;
        let addr = self.spawn(bound)?;
        tracing::info!(listener = %wanted.name, %addr, "connector added: listening");
        Ok(())
    }

    /// Same socket, new options and/or TLS material: swap the settings new connections get.
    fn update_settings(
        &mut self,
        index: usize,
        config: &Config,
        wanted: &Listener,
        tls_changed: bool,
    ) -> anyhow::Result<()> {
        let running = &mut self.running[index];
        let current = running.settings.load_full();
        let options_changed = current.options != wanted.options;
        let reload_tls = wanted.scheme.is_tls() && (tls_changed || options_changed);
        let tls = if reload_tls {
            tls_for(config, wanted)?
        } else {
            current.tls.clone()
        };
        running.settings.store(Arc::new(ListenerSettings {
            config: wanted.clone(),
            tls,
            stats: current.stats.clone(),
        }));
        if !options_changed && !reload_tls {
            return Ok(());
        }
        tracing::info!(
            listener = %wanted.name,
            tls_reloaded = reload_tls,
            "connector settings changed: they apply to new connections, existing clients keep theirs"
        );
        Ok(())
    }

    /// New address or scheme: bind again; the old socket's clients are disconnected.
    async fn rebind(
        &mut self,
        index: usize,
        config: &Config,
        wanted: &Listener,
    ) -> anyhow::Result<()> {
        let old = self.running[index].settings.load_full();
        let same_port = old.host == wanted.host && old.port == wanted.port && wanted.port != 0;
        let old_addr = self.running[index].addr;
        let bound = if same_port {
            // Only the scheme changed: the port must be free before it can be bound again.
            // A failure here leaves the connector stopped; the next reload tries again.
            stop(self.running.remove(index), &self.core).await;
            BoundListener::bind(config, wanted).await?
        } else {
            // Bind first: when that fails the old socket keeps serving.
            let bound = BoundListener::bind(config, wanted).await?;
            stop(self.running.remove(index), &self.core).await;
            bound
        };
        let addr = self.spawn(bound)?;
        tracing::info!(
            listener = %wanted.name,
            from = %old_addr,
            to = %addr,
            scheme = ?wanted.scheme,
            "connector changed: listening again, clients of the old socket were disconnected"
        );
        Ok(())
    }
}

impl RunningListener {
    fn name(&self) -> String {
        self.settings.load().name.clone()
    }
}

/// Stop a listener's accept loop (closing its socket) and close its connections.
async fn stop(listener: RunningListener, core: &BrokerCore) {
    listener.stop.cancel();
    core.parking.wake_stopped();
    let _ = listener.accept_task.await;
}

/// TLS material for a TLS connector; nothing otherwise.
fn tls_for(config: &Config, listener: &Listener) -> anyhow::Result<Option<Arc<SharedTls>>> {
    if !listener.scheme.is_tls() {
        return Ok(None);
    }
    load_tls(config, listener).map(Some)
}

/// The TLS material of a TLS connector, from the broker's `<sslContext>`.
pub(crate) fn load_tls(config: &Config, listener: &Listener) -> anyhow::Result<Arc<SharedTls>> {
    let ssl = config.ssl.as_ref().ok_or_else(|| {
        anyhow::anyhow!(
            "connector `{}` ({}) at {} needs TLS but the broker has no <sslContext>",
            listener.name,
            listener.uri,
            listener.span
        )
    })?;
    SharedTls::load(ssl, &listener.options).map_err(|tls| {
        anyhow::Error::new(ConnectorTlsError {
            listener: listener.name.clone(),
            span: listener.span.to_string(),
            tls,
        })
    })
}

/// A TLS connector whose material cannot be loaded. The [`TlsError`] is a field, not a source,
/// so that the message says it once however it is printed; `check` reads it to point at the
/// store attribute it is about.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up TLS for connector `{listener}` at {span}: {tls}")]
pub(crate) struct ConnectorTlsError {
    listener: String,
    span: String,
    pub(crate) tls: TlsError,
}
