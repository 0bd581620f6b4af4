//! TLS material that can be renewed on disk without a restart.
//!
//! [`SharedTls`] holds the current [`ServerConfig`] behind an `ArcSwap`: each handshake takes the
//! configuration current at that moment, so a swap affects new connections only; established
//! connections keep the session they negotiated. [`SharedTls::reload`] re-reads the files and
//! swaps only when their bytes changed and the new material is valid; a half-written renewal (new
//! certificate, old key) is refused and the old material stays. The broker calls it when the
//! control task reports the files changed (`crate::control::ControlEvent::TlsRenewed`, debounced
//! so that a renewal that writes several files is read once).

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use super::error::TlsError;
use super::material::FileSnapshot;
use super::tls::{ClientAuth, TlsMaterial};
use crate::config::{ListenerOptions, SslContextConfig};

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
}

impl std::fmt::Debug for SharedTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedTls")
            .field("files", &self.files())
            .field("client_auth", &self.client_auth())
            .finish_non_exhaustive()
    }
}
