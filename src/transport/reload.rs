//! TLS material that can be renewed on disk without a restart.
//!
//! [`SharedTls`] holds the current [`ServerConfig`] behind an `ArcSwap`: each handshake takes the
//! configuration current at that moment, so a swap affects new connections only; established
//! connections keep the session they negotiated. [`SharedTls::reload`] re-reads the files and
//! swaps only when their bytes changed and the new material is valid; a half-written renewal (new
//! certificate, old key) is refused and the old material stays. [`SharedTls::watch`] calls it
//! after file-system events, debounced so that a renewal that writes several files is read once.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use notify::{EventKind, RecursiveMode, Watcher};
use parking_lot::Mutex;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use super::error::TlsError;
use super::material::FileSnapshot;
use super::tls::{ClientAuth, TlsMaterial};
use crate::config::{ListenerOptions, SslContextConfig};

/// How long the watcher waits after the last file event before reloading: long enough for
/// certbot-style renewals that write the certificate and the key one after the other.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(500);

/// What a reload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The files are byte-for-byte what is already loaded.
    Unchanged,
    /// New material was loaded and is used by every new connection.
    Reloaded,
}

/// A TLS listener's current server configuration, swappable at run time.
pub struct SharedTls {
    material: TlsMaterial,
    current: ArcSwap<ServerConfig>,
    /// The bytes the current configuration was built from. The lock also keeps two reloads
    /// from interleaving.
    loaded_from: Mutex<FileSnapshot>,
}

impl SharedTls {
    /// Read and parse the stores named by `ssl` for a connector with `options`.
    pub fn load(
        ssl: &SslContextConfig,
        options: &ListenerOptions,
    ) -> Result<Arc<SharedTls>, TlsError> {
        SharedTls::from_material(TlsMaterial::new(ssl, options))
    }

    pub fn from_material(material: TlsMaterial) -> Result<Arc<SharedTls>, TlsError> {
        let snapshot = material.read_files()?;
        let config = material.build(&snapshot)?;
        Ok(Arc::new(SharedTls {
            material,
            current: ArcSwap::new(config),
            loaded_from: Mutex::new(snapshot),
        }))
    }

    /// The configuration new handshakes use now.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.current.load_full()
    }

    /// An acceptor over the current configuration.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.server_config())
    }

    pub fn client_auth(&self) -> ClientAuth {
        self.material.client_auth()
    }

    /// The files the material is read from.
    pub fn files(&self) -> Vec<PathBuf> {
        self.material.files()
    }

    /// Re-read the files; when they changed and parse into a valid configuration, make it the
    /// current one. On error the previous configuration stays in use and the error is returned
    /// for the caller to log.
    pub fn reload(&self) -> Result<ReloadOutcome, TlsError> {
        let mut loaded_from = self.loaded_from.lock();
        let snapshot = self.material.read_files()?;
        if snapshot == *loaded_from {
            return Ok(ReloadOutcome::Unchanged);
        }
        let config = self.material.build(&snapshot)?;
        self.current.store(config);
        *loaded_from = snapshot;
        Ok(ReloadOutcome::Reloaded)
    }

    /// Watch the directories of the TLS files and reload after changes (debounced by
    /// `debounce`). Directories rather than files are watched so that renewals that replace a
    /// file by renaming a new one over it (certbot, Kubernetes secret volumes) are seen.
    /// Must be called inside a tokio runtime. Dropping the returned watcher stops watching.
    pub fn watch(self: &Arc<Self>, debounce: Duration) -> Result<TlsWatcher, TlsError> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| TlsError::Watch("no tokio runtime to run the watcher on".into()))?;
        // capacity 1 + try_send: a burst of events collapses into one pending reload
        let (events_tx, mut events_rx) = tokio::sync::mpsc::channel::<()>(1);
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                match event {
                    // our own reads show up as access events: never react to them
                    Ok(event) if matches!(event.kind, EventKind::Access(_)) => {}
                    Ok(_) => {
                        let _ = events_tx.try_send(());
                    }
                    Err(e) => tracing::warn!(error = %e, "TLS file watcher error"),
                }
            })
            .map_err(|e| TlsError::Watch(e.to_string()))?;
        for dir in watched_dirs(&self.files()) {
            watcher
                .watch(&dir, RecursiveMode::NonRecursive)
                .map_err(|e| TlsError::Watch(format!("{}: {e}", dir.display())))?;
        }
        let shared: Weak<SharedTls> = Arc::downgrade(self);
        let task = runtime.spawn(async move {
            while events_rx.recv().await.is_some() {
                loop {
                    match tokio::time::timeout(debounce, events_rx.recv()).await {
                        Ok(Some(())) => continue,
                        Ok(None) => return,
                        Err(_quiet) => break,
                    }
                }
                let Some(shared) = shared.upgrade() else {
                    return;
                };
                match shared.reload() {
                    Ok(ReloadOutcome::Reloaded) => tracing::info!(
                        files = ?shared.files(),
                        "TLS material reloaded; new connections use it"
                    ),
                    Ok(ReloadOutcome::Unchanged) => {}
                    Err(e) => tracing::warn!(
                        error = %e,
                        "TLS material not reloaded; the previous certificate stays in use"
                    ),
                }
            }
        });
        Ok(TlsWatcher {
            _watcher: watcher,
            task,
        })
    }
}

impl std::fmt::Debug for SharedTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedTls")
            .field("files", &self.files())
            .field("client_auth", &self.client_auth())
            .finish_non_exhaustive()
    }
}

/// A running watch of TLS files; dropping it stops the watch.
pub struct TlsWatcher {
    _watcher: notify::RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn watched_dirs(files: &[PathBuf]) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for file in files {
        let dir = file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    dirs
}
