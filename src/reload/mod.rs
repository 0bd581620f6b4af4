//! Hot reload: reload on a change of the configuration's files or SIGHUP, apply the diff.
//!
//! - The files and SIGHUP are watched by the control task ([`crate::control::Control`]): every
//!   file of `Config.files` (main file, imports, properties files, login.config and its files,
//!   TLS material), watched through its directory, debounced, with polling at checkPeriod or as
//!   a fallback. SIGHUP always reloads.
//! - [`Reloader`]: load + compile with the same code as `ferromq check`; on errors log every
//!   diagnostic and keep the running configuration; otherwise diff (see
//!   [`crate::config::diff`], which also documents what needs a restart) and hand the new
//!   configuration to the broker's [`ApplyConfig`].
//!
//! [`spawn`] runs a reloader with a control task of its own; a broker uses [`spawn_with`] with
//! its own control task and forwards the `Reload` events (`crate::broker::server::apply` applies, started
//! by `BrokerHandle::enable_reload`, which `ferromq run` calls, with `--watch` or not).

pub(crate) mod fingerprint;
mod reloader;

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::{Config, LoadOptions};
use crate::control::{
    poll_period_of, Control, ControlEvent, ControlLink, Lifecycle, Signals, WatchSettings,
};
pub use reloader::{ApplyConfig, ApplyFuture, ApplyOutcome, ReloadResult, ReloadStats, Reloader};

/// Requests waiting at most; more are merged into the waiting ones (a reload reads everything).
const REQUEST_QUEUE: usize = 8;

/// Why a reload was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadReason {
    /// These watched files changed (a burst of changes, merged).
    FilesChanged(Vec<PathBuf>),
    /// SIGHUP.
    Signal,
    /// Asked through [`ReloadHandle::request`] (an admin command, a test).
    Requested,
}

/// One request to reload the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadRequest {
    pub reason: ReloadReason,
}

/// Hot reload running for a broker. Dropping it does not stop it; call [`shutdown`].
///
/// [`shutdown`]: ReloadHandle::shutdown
pub struct ReloadHandle {
    requests: mpsc::Sender<ReloadRequest>,
    stats: watch::Receiver<ReloadStats>,
    watching: bool,
    tasks: Vec<JoinHandle<()>>,
    /// The control task of a standalone reload ([`spawn`]); a broker's is the broker's.
    control: Option<Control>,
}

impl ReloadHandle {
    /// The counters now.
    pub fn stats(&self) -> ReloadStats {
        self.stats.borrow().clone()
    }

    /// A receiver that sees every update of the counters (to wait for a reload).
    pub fn subscribe(&self) -> watch::Receiver<ReloadStats> {
        self.stats.clone()
    }

    /// Whether file changes trigger reloads (runtimeConfigurationPlugin or `--watch`).
    pub fn is_watching(&self) -> bool {
        self.watching
    }

    /// Ask for a reload now (as SIGHUP does).
    pub fn request(&self) {
        self.request_for(ReloadReason::Requested);
    }

    /// Ask for a reload for `reason`. When requests are already waiting, this one is merged
    /// into them (a reload reads everything).
    pub fn request_for(&self, reason: ReloadReason) {
        let _ = self.requests.try_send(ReloadRequest { reason });
    }

    /// Where reload requests go (the broker forwards its control events there).
    pub fn requests(&self) -> mpsc::Sender<ReloadRequest> {
        self.requests.clone()
    }

    /// Stop watching and reloading. A reload in progress is abandoned before it applies.
    pub async fn shutdown(self) {
        drop(self.control);
        for task in &self.tasks {
            task.abort();
        }
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Start hot reload for `running`, loaded from `running.source` with `options`, with a control
/// task of its own. Files are watched when `watch` (`ferromq run --watch`) or when the
/// configuration has a runtimeConfigurationPlugin; that choice is made here, once. SIGHUP
/// reloads in every case (every reloader of a process, should there be several). Must be called
/// inside a tokio runtime.
pub fn spawn(
    running: Config,
    options: LoadOptions,
    watch: bool,
    apply: Arc<dyn ApplyConfig>,
) -> ReloadHandle {
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let watched: &[PathBuf] = if watch || running.reload.is_some() {
        &running.files
    } else {
        &[]
    };
    let control = Control::start(
        watched,
        WatchSettings::for_config(&running),
        Signals::default(),
        events_tx,
    );
    let mut handle = spawn_with(running, options, watch, apply, control.link(), None);
    let requests = handle.requests();
    handle.tasks.push(tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            if let ControlEvent::Reload(reason) = event {
                match requests.try_send(ReloadRequest { reason }) {
                    Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => {}
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                }
            }
        }
    }));
    handle.control = Some(control);
    handle
}

/// [`spawn`] for a broker: `control` is the broker's control task, told here to watch the
/// configuration's files (when watching) and to own SIGHUP; its `Reload` events must be
/// forwarded to [`ReloadHandle::request_for`]. `lifecycle` shows `Reloading` while a reload
/// runs.
pub fn spawn_with(
    running: Config,
    options: LoadOptions,
    watch: bool,
    apply: Arc<dyn ApplyConfig>,
    control: ControlLink,
    lifecycle: Option<Lifecycle>,
) -> ReloadHandle {
    let (requests_tx, requests) = mpsc::channel(REQUEST_QUEUE);
    let watching = watch || running.reload.is_some();
    // Set either way: a reload enabled before on the same control task may have watched.
    control.set_poll_period_ms(poll_period_of(&running).filter(|_| watching));
    control.watch_files(if watching { &running.files } else { &[] });
    let hangup = Signals {
        hangup: true,
        shutdown: false,
    };
    if let Err(e) = control.own_signals(hangup) {
        tracing::warn!("SIGHUP will not reload the configuration: {e}");
    }
    let reloader = Reloader::new(running, options, apply, watching.then_some(control))
        .with_lifecycle(lifecycle);
    let stats = reloader.stats();
    ReloadHandle {
        requests: requests_tx,
        stats,
        watching,
        tasks: vec![tokio::spawn(reloader.run(requests))],
        control: None,
    }
}
