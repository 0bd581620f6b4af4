//! One control channel for the process: signals, configuration-file changes and TLS renewals
//! become [`ControlEvent`]s, and the broker's lifecycle is published as a [`Phase`].
//!
//! - [`Control`] is the single task that owns SIGINT/SIGTERM/SIGHUP ([`signal`]) and one
//!   `notify` watch over the union of the watched paths ([`watcher`]): the configuration's
//!   files (when reload watches them) and the TLS material of the running TLS connectors.
//! - The broker consumes the events (`crate::broker`): `Shutdown` drains and stops (a second
//!   one while draining exits at once), `Reload` goes to the [`crate::reload::Reloader`],
//!   `TlsRenewed` re-reads the TLS material of the connectors in place.
//! - [`forced_exit`] ends the process at a second SIGINT/SIGTERM from a thread and runtime of
//!   its own, so that works even when the broker's runtime is stuck (`ferromq run`).
//! - [`Lifecycle`] publishes the [`Phase`] on a `tokio::sync::watch` channel, so callers and
//!   tests can wait for `Running`, the end of a reload or `Stopped` instead of sleeping.

pub mod forced_exit;
pub mod signal;
pub mod watcher;

use std::fmt;
use std::path::PathBuf;

use tokio::sync::watch;

use crate::reload::ReloadReason;
pub use signal::{Signals, StopSignal};
pub use watcher::{
    poll_period_of, Control, ControlLink, WatchSettings, DEFAULT_DEBOUNCE_MS, FALLBACK_POLL_MS,
    TLS_DEBOUNCE_MS,
};

/// What the control task asks of the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlEvent {
    /// SIGINT or SIGTERM: close every client and stop. The same again while draining: exit now.
    Shutdown(StopSignal),
    /// Reload the configuration: SIGHUP, or watched configuration files changed.
    Reload(ReloadReason),
    /// TLS material changed on disk (a burst of changes, merged): the connectors re-read it;
    /// valid new material is used by new handshakes, invalid material is refused and the old
    /// one stays (`crate::transport::SharedTls::reload`).
    TlsRenewed { files: Vec<PathBuf> },
}

/// Where a broker is in its life. Moves forward only, except `Running` <-> `Reloading`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Binding the connectors, recovering the store.
    Starting,
    /// Serving.
    Running,
    /// Serving, and a configuration reload is being loaded and applied.
    Reloading,
    /// Shutting down: no new connections, clients being closed, sessions saved.
    Draining,
    /// Every task has ended.
    Stopped,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Starting => "starting",
            Phase::Running => "running",
            Phase::Reloading => "reloading",
            Phase::Draining => "draining",
            Phase::Stopped => "stopped",
        })
    }
}

/// The publishing side of a broker's [`Phase`]; cheap to clone.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    phase: std::sync::Arc<watch::Sender<Phase>>,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle::new(Phase::Starting)
    }
}

impl Lifecycle {
    pub fn new(phase: Phase) -> Lifecycle {
        Lifecycle {
            phase: std::sync::Arc::new(watch::Sender::new(phase)),
        }
    }

    /// The phase now.
    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    /// A receiver of every change (`wait_for(|p| *p == Phase::Running)`).
    pub fn subscribe(&self) -> watch::Receiver<Phase> {
        self.phase.subscribe()
    }

    /// `Starting` -> `Running`.
    pub fn running(&self) {
        self.move_to(Phase::Running, |p| p == Phase::Starting);
    }

    /// `Running` -> `Reloading`; does nothing in any other phase (a reload while draining).
    pub fn reloading(&self) {
        self.move_to(Phase::Reloading, |p| p == Phase::Running);
    }

    /// `Reloading` -> `Running`.
    pub fn reloaded(&self) {
        self.move_to(Phase::Running, |p| p == Phase::Reloading);
    }

    /// Any phase before `Draining` -> `Draining`.
    pub fn draining(&self) {
        self.move_to(Phase::Draining, |p| p < Phase::Draining);
    }

    /// -> `Stopped`.
    pub fn stopped(&self) {
        self.move_to(Phase::Stopped, |p| p != Phase::Stopped);
    }

    fn move_to(&self, to: Phase, from: impl Fn(Phase) -> bool) {
        self.phase.send_if_modified(|phase| {
            let allowed = from(*phase);
            if allowed {
                tracing::debug!(from = %phase, %to, "broker phase");
                *phase = to;
            }
            allowed
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_move_forward_only() {
        let lifecycle = Lifecycle::default();
        lifecycle.reloading();
        assert_eq!(lifecycle.phase(), Phase::Starting);
        lifecycle.running();
        lifecycle.reloading();
        assert_eq!(lifecycle.phase(), Phase::Reloading);
        lifecycle.draining();
        lifecycle.reloaded();
        assert_eq!(lifecycle.phase(), Phase::Draining);
        lifecycle.running();
        assert_eq!(lifecycle.phase(), Phase::Draining);
        lifecycle.stopped();
        lifecycle.draining();
        assert_eq!(lifecycle.phase(), Phase::Stopped);
    }
}
