//! Process signals, owned by the control task: SIGHUP asks for a reload (the Unix way to ask a
//! daemon to re-read its configuration), SIGINT and SIGTERM for a graceful shutdown.
//!
//! Installing a handler replaces the signal's default action (terminate) for the whole process
//! and for good, so a signal is only owned when asked for: `ferromq run` owns all three, a
//! library user of hot reload owns SIGHUP only, a broker started in a test owns none.

use std::fmt;
use std::io;

/// Which signals the control task owns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Signals {
    /// SIGHUP: reload the configuration.
    pub hangup: bool,
    /// SIGINT and SIGTERM: shut down gracefully; a second one while draining exits at once.
    pub shutdown: bool,
}

/// A signal that asks the process to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGTERM (`kill`, service managers).
    Terminate,
}

impl StopSignal {
    /// The signal's name, e.g. `SIGTERM`.
    pub fn name(self) -> &'static str {
        match self {
            StopSignal::Interrupt => "SIGINT",
            StopSignal::Terminate => "SIGTERM",
        }
    }

    /// The POSIX signal number (2 or 15): a process ended by it exits with 128 + this.
    pub fn number(self) -> u8 {
        match self {
            StopSignal::Interrupt => 2,
            StopSignal::Terminate => 15,
        }
    }
}

impl fmt::Display for StopSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A signal the control task received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Received {
    Hangup,
    Stop(StopSignal),
}

/// The installed signal streams (none by default).
#[derive(Default)]
pub(super) struct SignalStreams {
    #[cfg(unix)]
    hangup: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
}

impl SignalStreams {
    /// Install the handlers for `signals`, now (so a signal sent as soon as this returns is
    /// seen). Must be called inside a tokio runtime. Errors: the OS refused a handler, or the
    /// platform has no such signals (not Unix).
    #[cfg(unix)]
    pub(super) fn install(signals: Signals) -> io::Result<SignalStreams> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut streams = SignalStreams::default();
        if signals.hangup {
            streams.hangup = Some(signal(SignalKind::hangup())?);
        }
        if signals.shutdown {
            streams.interrupt = Some(signal(SignalKind::interrupt())?);
            streams.terminate = Some(signal(SignalKind::terminate())?);
        }
        Ok(streams)
    }

    #[cfg(not(unix))]
    pub(super) fn install(signals: Signals) -> io::Result<SignalStreams> {
        if signals == Signals::default() {
            return Ok(SignalStreams::default());
        }
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "SIGHUP, SIGINT and SIGTERM are handled on Unix only",
        ))
    }

    /// Add the streams of `other` (those already owned stay).
    pub(super) fn merge(&mut self, other: SignalStreams) {
        #[cfg(unix)]
        {
            self.hangup = self.hangup.take().or(other.hangup);
            self.interrupt = self.interrupt.take().or(other.interrupt);
            self.terminate = self.terminate.take().or(other.terminate);
        }
        #[cfg(not(unix))]
        let _ = other;
    }

    /// The next signal received; pending forever when none is owned.
    pub(super) async fn next(&mut self) -> Received {
        #[cfg(unix)]
        {
            async fn recv(stream: &mut Option<tokio::signal::unix::Signal>) {
                match stream {
                    Some(s) => {
                        if s.recv().await.is_none() {
                            std::future::pending::<()>().await;
                        }
                    }
                    None => std::future::pending().await,
                }
            }
            tokio::select! {
                () = recv(&mut self.hangup) => Received::Hangup,
                () = recv(&mut self.interrupt) => Received::Stop(StopSignal::Interrupt),
                () = recv(&mut self.terminate) => Received::Stop(StopSignal::Terminate),
            }
        }
        #[cfg(not(unix))]
        std::future::pending().await
    }
}

/// SIGINT and SIGTERM owned while a broker starts, before its control task owns them: a node
/// that waits on NATS at its start can then say which step a stop interrupted instead of
/// vanishing (the default action ends the process without a line).
pub struct StartSignals(SignalStreams);

impl StartSignals {
    /// Own SIGINT and SIGTERM from now on (for good, as any handler). Must be called inside a
    /// tokio runtime. Errors: the OS refused a handler, or the platform is not Unix.
    pub fn install() -> io::Result<StartSignals> {
        SignalStreams::install(Signals {
            hangup: false,
            shutdown: true,
        })
        .map(StartSignals)
    }

    /// The next SIGINT or SIGTERM received since [`StartSignals::install`].
    pub async fn next(&mut self) -> StopSignal {
        loop {
            if let Received::Stop(signal) = self.0.next().await {
                return signal;
            }
        }
    }

    /// The streams, with what they received and no one took yet, for the control task.
    pub(super) fn into_streams(self) -> SignalStreams {
        self.0
    }
}
