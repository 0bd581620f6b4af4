//! The control task: one task owns the process signals ([`super::signal`]) and one `notify`
//! watch over every watched file, configuration files and TLS material alike, and turns them
//! into [`ControlEvent`]s. Changes are dispatched by path: a configuration file asks for a
//! reload, a TLS file for a renewal of the connectors' material (a file that is both, as TLS
//! files are when the configuration is watched, does both).
//!
//! Why directories: editors and deployment tools often save by writing a temporary file and
//! renaming it over the original (vim, `sed -i`, Ansible, Kubernetes ConfigMaps swapping a
//! symlink). A watch on the file itself follows the old inode and goes deaf after the first
//! save; a watch on its directory sees every replacement. Events are filtered by file name, and
//! an event on any other name in a watched directory re-checks the stamps of the watched files
//! there, which catches a swapped symlink target.
//!
//! Bursts (one save is often several events, a deployment touches several files) are merged
//! into one event once no event arrived for the debounce time, or after ten debounce periods
//! at most so that a file written continuously still reloads. TLS files have their own, longer
//! debounce ([`TLS_DEBOUNCE_MS`]): certbot-style renewals write the certificate and the key one
//! after the other.
//!
//! Polling compares size and modification time every period: always when the
//! runtimeConfigurationPlugin has a checkPeriod (ActiveMQ's behaviour, and the only thing that
//! works on file systems without events such as NFS), and as a fallback every
//! [`FALLBACK_POLL_MS`] when filesystem events cannot be set up.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{Instant, Interval, MissedTickBehavior};

use super::signal::{Received, SignalStreams, Signals};
use super::ControlEvent;
use crate::config::Config;
use crate::reload::fingerprint::{stamp, FileStamp};
use crate::reload::ReloadReason;

/// Quiet time that ends a burst of events, unless configured otherwise.
pub const DEFAULT_DEBOUNCE_MS: u64 = 200;
/// Polling period when filesystem events are unavailable and no checkPeriod is configured.
pub const FALLBACK_POLL_MS: u64 = 1000;
/// Quiet time that ends a burst of changes to TLS files.
pub const TLS_DEBOUNCE_MS: u64 = 500;
/// A burst is cut after this many debounce periods even if events keep coming.
const MAX_BURST_PERIODS: u32 = 10;

/// How to watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchSettings {
    /// A burst of events ends after this long without one.
    pub debounce_ms: u64,
    /// Compare stamps every this many ms (runtimeConfigurationPlugin checkPeriod); `None`: only
    /// when events are unavailable (then every [`FALLBACK_POLL_MS`]).
    pub poll_period_ms: Option<u64>,
    /// Use filesystem events (inotify, FSEvents, ...). `false`: poll only, for file systems that
    /// do not deliver events.
    pub use_events: bool,
}

impl Default for WatchSettings {
    /// Events, the default debounce, no polling.
    fn default() -> Self {
        WatchSettings {
            debounce_ms: DEFAULT_DEBOUNCE_MS,
            poll_period_ms: None,
            use_events: true,
        }
    }
}

impl WatchSettings {
    /// Settings for `config`: poll at its checkPeriod when it has one > 0, events always.
    pub fn for_config(config: &Config) -> WatchSettings {
        WatchSettings {
            debounce_ms: DEFAULT_DEBOUNCE_MS,
            poll_period_ms: poll_period_of(config),
            use_events: true,
        }
    }
}

/// The checkPeriod of `config` when polling is on (> 0).
pub fn poll_period_of(config: &Config) -> Option<u64> {
    config
        .reload
        .as_ref()
        .map(|r| r.check_period_ms)
        .filter(|ms| *ms > 0)
}

/// The running control task. Dropping it stops the task (signals stay owned by the process).
pub struct Control {
    link: ControlLink,
    task: JoinHandle<()>,
}

/// Tells the control task what to watch and which signals to own; cheap to clone (the reloader
/// and the listener set each hold one).
#[derive(Clone)]
pub struct ControlLink {
    commands: mpsc::UnboundedSender<Command>,
    events_active: Arc<AtomicBool>,
}

enum Command {
    ConfigFiles(Vec<PathBuf>),
    TlsFiles(Vec<PathBuf>),
    PollPeriod(Option<u64>),
    Signals(SignalStreams),
    Sync(oneshot::Sender<()>),
}

impl Control {
    /// Start the control task, watching the configuration `files` (may be empty) and owning
    /// `signals`; every event goes to `events`. The watches and the signal handlers are in place
    /// when this returns. Must be called inside a tokio runtime. A signal handler that cannot be
    /// installed is logged and not owned (see [`ControlLink::own_signals`] to get the error).
    pub fn start(
        files: &[PathBuf],
        settings: WatchSettings,
        signals: Signals,
        events: mpsc::UnboundedSender<ControlEvent>,
    ) -> Control {
        let (commands_tx, commands) = mpsc::unbounded_channel();
        let (notify_tx, notify_events) = mpsc::unbounded_channel();
        let events_active = Arc::new(AtomicBool::new(false));
        let notify = if settings.use_events {
            let handler = move |event: notify::Result<Event>| {
                // The receiver is gone only when the watch is being dropped.
                let _ = notify_tx.send(event);
            };
            match notify::recommended_watcher(handler) {
                Ok(w) => Some(w),
                Err(e) => {
                    tracing::warn!(
                        "cannot watch files for changes ({e}); polling every {FALLBACK_POLL_MS} ms instead"
                    );
                    None
                }
            }
        } else {
            None
        };
        let signals = SignalStreams::install(signals).unwrap_or_else(|e| {
            tracing::warn!("signals will not be handled: {e}");
            SignalStreams::default()
        });
        let mut task = WatchTask {
            notify,
            events_failed: false,
            events_active: events_active.clone(),
            dirs: BTreeSet::new(),
            stamps: BTreeMap::new(),
            config_files: BTreeSet::new(),
            tls_files: BTreeSet::new(),
            poll_period_ms: settings.poll_period_ms,
            interval: None,
            config_burst: Burst::new(settings.debounce_ms),
            tls_burst: Burst::new(TLS_DEBOUNCE_MS),
            signals,
            events,
        };
        task.set_files(Some(files), None);
        let handle = tokio::spawn(task.run(notify_events, commands));
        Control {
            link: ControlLink {
                commands: commands_tx,
                events_active,
            },
            task: handle,
        }
    }

    /// A handle for the reloader or the listener set.
    pub fn link(&self) -> ControlLink {
        self.link.clone()
    }
}

impl std::ops::Deref for Control {
    type Target = ControlLink;
    fn deref(&self) -> &ControlLink {
        &self.link
    }
}

impl ControlLink {
    /// Replace the watched configuration files (after a reload: the new configuration may name
    /// new files). Files already watched keep their stamps, so a change made during the reload
    /// is still seen.
    pub fn watch_files(&self, files: &[PathBuf]) {
        let _ = self.commands.send(Command::ConfigFiles(files.to_vec()));
    }

    /// Replace the watched TLS files (the material of every running TLS connector).
    pub fn watch_tls_files(&self, files: &[PathBuf]) {
        let _ = self.commands.send(Command::TlsFiles(files.to_vec()));
    }

    /// Change the polling period (a reload changed checkPeriod); `None`: events only.
    pub fn set_poll_period_ms(&self, period_ms: Option<u64>) {
        let _ = self.commands.send(Command::PollPeriod(period_ms));
    }

    /// Own `signals` as well, from now on (the handlers are installed before this returns).
    /// Must be called inside a tokio runtime. Errors: the OS refused a handler, or the platform
    /// has no such signals.
    pub fn own_signals(&self, signals: Signals) -> std::io::Result<()> {
        let streams = SignalStreams::install(signals)?;
        let _ = self.commands.send(Command::Signals(streams));
        Ok(())
    }

    /// Own the stop signals `early` held while the broker started: a signal it received and
    /// no one took yet reaches the task, so one sent as the start ended is neither lost nor
    /// seen twice (as a second, separately installed handler would see it).
    pub fn adopt_signals(&self, early: super::signal::StartSignals) {
        let _ = self.commands.send(Command::Signals(early.into_streams()));
    }

    /// Wait until the task has applied every command sent before (the watches are set up).
    pub async fn synced(&self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Sync(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Whether filesystem events are being received for every watched directory (otherwise
    /// the watch polls).
    pub fn uses_events(&self) -> bool {
        self.events_active.load(Ordering::Relaxed)
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Changed files waiting for their burst to end.
struct Burst {
    debounce: Duration,
    pending: BTreeSet<PathBuf>,
    /// (first event, last event) of the current burst.
    span: Option<(Instant, Instant)>,
}

impl Burst {
    fn new(debounce_ms: u64) -> Burst {
        Burst {
            debounce: Duration::from_millis(debounce_ms),
            pending: BTreeSet::new(),
            span: None,
        }
    }

    fn deadline(&self) -> Option<Instant> {
        self.span.map(|(first, last)| {
            (last + self.debounce).min(first + self.debounce * MAX_BURST_PERIODS)
        })
    }

    fn mark(&mut self, file: PathBuf) {
        self.pending.insert(file);
        let now = Instant::now();
        self.span = Some(match self.span {
            Some((first, _)) => (first, now),
            None => (now, now),
        });
    }

    fn take(&mut self) -> Vec<PathBuf> {
        self.span = None;
        std::mem::take(&mut self.pending).into_iter().collect()
    }
}

struct WatchTask {
    notify: Option<RecommendedWatcher>,
    /// A directory could not be watched: poll to cover it.
    events_failed: bool,
    events_active: Arc<AtomicBool>,
    dirs: BTreeSet<PathBuf>,
    /// Watched files (normalized, configuration and TLS) and their last seen stamps.
    stamps: BTreeMap<PathBuf, Option<FileStamp>>,
    config_files: BTreeSet<PathBuf>,
    tls_files: BTreeSet<PathBuf>,
    poll_period_ms: Option<u64>,
    interval: Option<Interval>,
    config_burst: Burst,
    tls_burst: Burst,
    signals: SignalStreams,
    events: mpsc::UnboundedSender<ControlEvent>,
}

impl WatchTask {
    async fn run(
        mut self,
        mut notify_events: mpsc::UnboundedReceiver<notify::Result<Event>>,
        mut commands: mpsc::UnboundedReceiver<Command>,
    ) {
        let mut events_open = self.notify.is_some();
        loop {
            let config_deadline = self.config_burst.deadline();
            let tls_deadline = self.tls_burst.deadline();
            let listened = tokio::select! {
                event = notify_events.recv(), if events_open => {
                    match event {
                        Some(event) => self.on_event(event),
                        None => events_open = false,
                    }
                    true
                }
                command = commands.recv() => match command {
                    Some(command) => {
                        self.on_command(command);
                        true
                    }
                    None => return,
                },
                received = self.signals.next() => self.send(match received {
                    Received::Hangup => {
                        tracing::info!("SIGHUP received: reloading the configuration");
                        ControlEvent::Reload(ReloadReason::Signal)
                    }
                    Received::Stop(signal) => ControlEvent::Shutdown(signal),
                }),
                () = tick(&mut self.interval) => {
                    self.check_stamps(None);
                    true
                }
                () = sleep_until(config_deadline) => {
                    let files = self.config_burst.take();
                    self.send(ControlEvent::Reload(ReloadReason::FilesChanged(files)))
                }
                () = sleep_until(tls_deadline) => {
                    let files = self.tls_burst.take();
                    self.send(ControlEvent::TlsRenewed { files })
                }
            };
            if !listened {
                return;
            }
        }
    }

    /// Send an event. Returns false when nobody listens any more.
    fn send(&self, event: ControlEvent) -> bool {
        self.events.send(event).is_ok()
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::ConfigFiles(files) => self.set_files(Some(&files), None),
            Command::TlsFiles(files) => self.set_files(None, Some(&files)),
            Command::PollPeriod(period) => {
                self.poll_period_ms = period;
                self.reset_interval();
            }
            Command::Signals(streams) => self.signals.merge(streams),
            Command::Sync(done) => {
                let _ = done.send(());
            }
        }
    }

    /// Replace the configuration files and/or the TLS files watched.
    fn set_files(&mut self, config: Option<&[PathBuf]>, tls: Option<&[PathBuf]>) {
        let normalized = |files: &[PathBuf]| files.iter().map(|f| normalize(f)).collect();
        if let Some(config) = config {
            self.config_files = normalized(config);
        }
        if let Some(tls) = tls {
            self.tls_files = normalized(tls);
        }
        let files: BTreeSet<PathBuf> = self.config_files.union(&self.tls_files).cloned().collect();
        self.stamps.retain(|f, _| files.contains(f));
        for file in &files {
            self.stamps
                .entry(file.clone())
                .or_insert_with(|| stamp(file));
        }
        let dirs: BTreeSet<PathBuf> = files
            .iter()
            .filter_map(|f| f.parent().map(Path::to_path_buf))
            .collect();
        if let Some(notify) = &mut self.notify {
            for gone in self.dirs.difference(&dirs) {
                let _ = notify.unwatch(gone);
            }
            for dir in dirs.difference(&self.dirs) {
                if let Err(e) = notify.watch(dir, RecursiveMode::NonRecursive) {
                    tracing::warn!(
                        dir = %dir.display(),
                        "cannot watch directory for changes ({e}); polling instead"
                    );
                    self.events_failed = true;
                }
            }
        }
        self.dirs = dirs;
        self.events_active.store(
            self.notify.is_some() && !self.events_failed,
            Ordering::Relaxed,
        );
        self.reset_interval();
    }

    /// Poll when configured, or when events do not cover every directory.
    fn reset_interval(&mut self) {
        let events_ok = self.notify.is_some() && !self.events_failed;
        let period_ms = match self.poll_period_ms {
            Some(ms) => Some(ms),
            None if !events_ok => Some(FALLBACK_POLL_MS),
            None => None,
        };
        let current = self.interval.as_ref().map(Interval::period);
        let wanted = period_ms.map(|ms| Duration::from_millis(ms.max(1)));
        if current != wanted {
            self.interval = wanted.map(|period| {
                let mut interval = tokio::time::interval_at(Instant::now() + period, period);
                interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
                interval
            });
        }
    }

    fn on_event(&mut self, event: notify::Result<Event>) {
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                tracing::warn!("file watch error ({e}); checking every watched file");
                self.check_stamps(None);
                return;
            }
        };
        if event.need_rescan() {
            self.check_stamps(None);
            return;
        }
        if is_read_only(&event.kind) {
            // Our own loads open and read these files: reacting would loop.
            return;
        }
        for path in &event.paths {
            if self.stamps.contains_key(path) {
                let now = stamp(path);
                self.stamps.insert(path.clone(), now);
                self.mark(path.clone());
            } else if let Some(dir) = path.parent().filter(|d| self.dirs.contains(*d)) {
                // Another name in a watched directory: a symlink swap or a rename chain may
                // have replaced one of our files without naming it.
                self.check_stamps(Some(&dir.to_path_buf()));
            }
        }
    }

    /// Compare stamps of the watched files (of one directory, or all) and mark the changed ones.
    fn check_stamps(&mut self, dir: Option<&PathBuf>) {
        let mut changed = Vec::new();
        for (file, last) in self.stamps.iter_mut() {
            if dir.is_some_and(|d| file.parent() != Some(d.as_path())) {
                continue;
            }
            let now = stamp(file);
            if now != *last {
                *last = now;
                changed.push(file.clone());
            }
        }
        for file in changed {
            self.mark(file);
        }
    }

    fn mark(&mut self, file: PathBuf) {
        tracing::debug!(file = %file.display(), "watched file changed");
        if self.tls_files.contains(&file) {
            self.tls_burst.mark(file.clone());
        }
        if self.config_files.contains(&file) {
            self.config_burst.mark(file);
        }
    }
}

/// Opening, reading and closing without writing change nothing.
fn is_read_only(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => false,
        EventKind::Access(_) => true,
        _ => false,
    }
}

/// The file in its directory's canonical form: events name files under the canonical
/// directory that was watched, so both sides must be spelled the same way.
fn normalize(file: &Path) -> PathBuf {
    let (Some(dir), Some(name)) = (file.parent(), file.file_name()) else {
        return file.to_path_buf();
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    match dir.canonicalize() {
        Ok(dir) => dir.join(name),
        Err(_) => file.to_path_buf(),
    }
}

async fn tick(interval: &mut Option<Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
