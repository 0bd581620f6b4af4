//! Hot reload: watch the configuration's files, reload on change or SIGHUP, apply the diff.
//!
//! - [`watcher::Watcher`]: every file of `Config.files` (main file, imports, properties files,
//!   login.config and its files, TLS material), watched through its directory, debounced, with
//!   polling at checkPeriod or as a fallback.
//! - [`signal::spawn_sighup`]: SIGHUP always reloads.
//! - [`Reloader`]: load + compile with the same code as `ferromq check`; on errors log every
//!   diagnostic and keep the running configuration; otherwise diff (see
//!   [`crate::config::diff`], which also documents what needs a restart) and hand the new
//!   configuration to the broker's [`ApplyConfig`].
//!
//! [`spawn`] wires the three together for the broker.

mod fingerprint;
mod reloader;
pub mod signal;
pub mod watcher;

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::{Config, LoadOptions};
pub use reloader::{ApplyConfig, ApplyOutcome, ReloadResult, ReloadStats, Reloader};
pub use watcher::{WatchSettings, Watcher};

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
        let _ = self.requests.try_send(ReloadRequest {
            reason: ReloadReason::Requested,
        });
    }

    /// Stop watching and reloading. A reload in progress is abandoned before it applies.
    pub async fn shutdown(self) {
        for task in &self.tasks {
            task.abort();
        }
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Start hot reload for `running`, loaded from `running.source` with `options`. Files are
/// watched when `watch` (`ferromq run --watch`) or when the configuration has a
/// runtimeConfigurationPlugin; that choice is made here, once. SIGHUP reloads in every case
/// (every broker of a process, should there be several). Must be called inside a tokio runtime.
pub fn spawn(
    running: Config,
    options: LoadOptions,
    watch: bool,
    apply: Arc<dyn ApplyConfig>,
) -> ReloadHandle {
    let (requests_tx, requests) = mpsc::channel(REQUEST_QUEUE);
    let watching = watch || running.reload.is_some();
    let watcher = watching.then(|| {
        Watcher::start(
            &running.files,
            WatchSettings::for_config(&running),
            requests_tx.clone(),
        )
    });
    let mut tasks = Vec::new();
    match signal::spawn_sighup(requests_tx.clone()) {
        Ok(task) => tasks.push(task),
        Err(e) => tracing::warn!("SIGHUP will not reload the configuration: {e}"),
    }
    let reloader = Reloader::new(running, options, apply, watcher);
    let stats = reloader.stats();
    tasks.push(tokio::spawn(reloader.run(requests)));
    ReloadHandle {
        requests: requests_tx,
        stats,
        watching,
        tasks,
    }
}
