//! The way out when the broker's runtime is stuck: a thread of its own, with a one-thread tokio
//! runtime of its own, counts SIGINT and SIGTERM and ends the process at the second one.
//!
//! The control task relays a second signal while draining too, but it runs on the broker's
//! runtime: when that runtime is wedged (a worker blocked for good, a deadlock), the relay never
//! runs and only `kill -9` used to end the process. This thread shares nothing with that
//! runtime but tokio's process-wide signal registration (the handler writes to a pipe that each
//! runtime's driver reads, and every reader wakes every listener), so it sees the signals
//! whatever the broker's runtime is doing.

use std::io;
use std::sync::mpsc;

use super::signal::{Received, SignalStreams, Signals};

/// Start the watcher: from now on, the second SIGINT or SIGTERM (of either kind) exits the
/// process with 128 + that signal's number (130 or 143), without waiting for anything.
/// Returns once the watcher's handlers are installed, so a signal sent after the return is
/// counted. Call it after the broker owns SIGINT/SIGTERM (before, a first signal could be
/// counted here and never reach the broker, which would not drain).
///
/// Only for a process that exits on signals (`ferromq run`): a library user that owns the
/// signals itself does not want this. Errors: no thread, no runtime, or the OS refused a
/// handler (or the platform is not Unix).
pub fn exit_at_second_stop_signal() -> io::Result<()> {
    let (ready_tx, ready_rx) = mpsc::sync_channel::<io::Result<()>>(1);
    std::thread::Builder::new()
        .name("ferromq-forced-exit".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            runtime.block_on(async move {
                let stop = Signals {
                    hangup: false,
                    shutdown: true,
                };
                let mut streams = match SignalStreams::install(stop) {
                    Ok(streams) => streams,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                let mut seen = 0u32;
                loop {
                    let Received::Stop(signal) = streams.next().await else {
                        continue;
                    };
                    seen += 1;
                    if seen >= 2 {
                        tracing::warn!(
                            "{signal} received while draining: exiting now, without waiting for clients and sessions"
                        );
                        std::process::exit(128 + i32::from(signal.number()));
                    }
                    tracing::debug!("{signal} seen by the forced-exit watcher: the next SIGINT or SIGTERM exits at once");
                }
            });
        })?;
    ready_rx
        .recv()
        .unwrap_or_else(|_| Err(io::Error::other("the forced-exit watcher ended at start")))
}
