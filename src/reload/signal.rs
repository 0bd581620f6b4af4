//! SIGHUP: the Unix way to ask a daemon to re-read its configuration. Always on, whether or not
//! files are watched.

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{ReloadReason, ReloadRequest};

/// Send a [`ReloadRequest`] on `requests` for every SIGHUP until the task is aborted or the
/// receiver is dropped. Installing the handler replaces SIGHUP's default action (terminate) for
/// the whole process, so call it once, from the broker.
#[cfg(unix)]
pub fn spawn_sighup(requests: mpsc::Sender<ReloadRequest>) -> std::io::Result<JoinHandle<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = signal(SignalKind::hangup())?;
    Ok(tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            tracing::info!("SIGHUP received: reloading the configuration");
            let request = ReloadRequest {
                reason: ReloadReason::Signal,
            };
            match requests.try_send(request) {
                Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => {}
                Err(mpsc::error::TrySendError::Closed(_)) => return,
            }
        }
    }))
}

/// Signals are a Unix feature; elsewhere only file changes reload.
#[cfg(not(unix))]
pub fn spawn_sighup(requests: mpsc::Sender<ReloadRequest>) -> std::io::Result<JoinHandle<()>> {
    let _ = requests;
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "SIGHUP exists only on Unix",
    ))
}
