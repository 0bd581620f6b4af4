//! The reload loop: load + compile exactly as `ferromq check` does, keep the running
//! configuration on errors, diff and hand the rest to the broker.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;
use tokio::sync::{mpsc, watch};

use super::fingerprint::ContentHashes;
use super::{ReloadReason, ReloadRequest};
use crate::config::diff::{diff_with_changed_files, keep_running_values, ConfigDiff};
use crate::config::{self, Config, Diagnostics, LoadOptions, Severity};
use crate::control::{poll_period_of, ControlLink, Lifecycle};

/// What [`ApplyConfig::apply`] returns: applying binds and closes sockets, which is async.
/// Boxed so that the trait stays usable as `Arc<dyn ApplyConfig>`.
pub type ApplyFuture<'a> = Pin<Box<dyn Future<Output = ApplyOutcome> + Send + 'a>>;

/// What the broker implements to follow a reload.
pub trait ApplyConfig: Send + Sync {
    /// Make `new` the running configuration; `diff` says what differs from the running one
    /// (settings that need a restart already carry their running values in `new`). Called only
    /// when [`ConfigDiff::has_runtime_changes`], from the reload task, one call at a time.
    fn apply<'a>(&'a self, new: Config, diff: &'a ConfigDiff) -> ApplyFuture<'a>;
}

/// How an [`ApplyConfig::apply`] went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// Everything in the diff is in effect.
    Applied,
    /// Some parts failed (a new port already in use); the rest is in effect. The new
    /// configuration becomes the running one, so fixing the failed part in the file and saving
    /// again retries it. One message per failure, saying what and where.
    Partial(Vec<String>),
    /// Nothing changed in the broker; the running configuration stays.
    Rejected(Vec<String>),
}

/// Reload counters, for logs and the metrics surface.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReloadStats {
    /// Reloads that produced a valid configuration that is now running (including "no change").
    pub reloads_ok: u64,
    /// Reloads of an invalid file, or whose apply was rejected or partial.
    pub reloads_failed: u64,
    pub last_success: Option<SystemTime>,
    pub last_failure: Option<SystemTime>,
    /// Summary of the last successful reload (`no change` included).
    pub last_summary: Option<String>,
    /// The diagnostics of the last reload of an invalid file (emptied by a good reload).
    pub last_diagnostics: Vec<crate::config::Diagnostic>,
}

/// What one reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadResult {
    /// The file has errors (each was logged); the running configuration stays.
    Invalid { errors: usize },
    /// Valid, and nothing the broker runs differs. The summary may still name settings that
    /// need a restart or a new checkPeriod.
    NoRuntimeChange { summary: String },
    /// Handed to the broker, with its outcome.
    Applied {
        summary: String,
        outcome: ApplyOutcome,
    },
}

/// Owns the running configuration and turns reload requests into applied diffs.
pub struct Reloader {
    running: Config,
    hashes: ContentHashes,
    options: LoadOptions,
    apply: Arc<dyn ApplyConfig>,
    stats: watch::Sender<ReloadStats>,
    watcher: Option<ControlLink>,
    lifecycle: Option<Lifecycle>,
}

impl Reloader {
    /// `running` was loaded from `running.source` with `options` (the same `-D` overrides are
    /// used for every reload). `watcher`, when files are watched, is told about new files and
    /// checkPeriod changes after each successful reload.
    pub fn new(
        running: Config,
        options: LoadOptions,
        apply: Arc<dyn ApplyConfig>,
        watcher: Option<ControlLink>,
    ) -> Reloader {
        // Hashed now rather than when the running config was loaded: a file edited in between
        // is only seen by the model diff, which covers everything but TLS material and JAAS
        // credential files, and those are read again by whoever applies them.
        let hashes = ContentHashes::read(&running.files);
        Reloader {
            running,
            hashes,
            options,
            apply,
            stats: watch::Sender::new(ReloadStats::default()),
            watcher,
            lifecycle: None,
        }
    }

    /// Publish `Reloading` on `lifecycle` while each reload runs.
    pub fn with_lifecycle(mut self, lifecycle: Option<Lifecycle>) -> Reloader {
        self.lifecycle = lifecycle;
        self
    }

    /// Counters, updated after every reload; `changed()` on the receiver waits for the next.
    pub fn stats(&self) -> watch::Receiver<ReloadStats> {
        self.stats.subscribe()
    }

    /// The configuration in effect.
    pub fn running(&self) -> &Config {
        &self.running
    }

    /// Serve requests until every sender is dropped. Requests that queued up while a reload ran
    /// are merged into the next one.
    pub async fn run(mut self, mut requests: mpsc::Receiver<ReloadRequest>) {
        while let Some(first) = requests.recv().await {
            let mut reasons = vec![first.reason];
            while let Ok(more) = requests.try_recv() {
                reasons.push(more.reason);
            }
            self.reload(&reasons).await;
        }
    }

    /// One reload now (the broker's phase is `Reloading` meanwhile).
    pub async fn reload(&mut self, reasons: &[ReloadReason]) -> ReloadResult {
        if let Some(lifecycle) = &self.lifecycle {
            lifecycle.reloading();
        }
        let result = self.load_and_apply(reasons).await;
        if let Some(lifecycle) = &self.lifecycle {
            lifecycle.reloaded();
        }
        result
    }

    async fn load_and_apply(&mut self, reasons: &[ReloadReason]) -> ReloadResult {
        let source = self.running.source.clone();
        tracing::info!(
            file = %source.display(),
            reason = %describe_reasons(reasons),
            "reloading the configuration"
        );
        let options = self.options.clone();
        let load = move || {
            let loaded = config::load_file(&source, &options);
            let hashes = loaded
                .config
                .as_ref()
                .map(|c| ContentHashes::read(&c.files));
            (loaded, hashes)
        };
        let (loaded, hashes) = match tokio::task::spawn_blocking(load).await {
            Ok(result) => result,
            Err(e) => {
                tracing::error!("configuration reload stopped unexpectedly ({e}); keeping the running configuration");
                self.record_failure();
                return ReloadResult::Invalid { errors: 1 };
            }
        };
        log_diagnostics(&loaded.diagnostics);
        let diagnostics = loaded.diagnostics.clone();
        let (Ok(new), Some(hashes)) = (loaded.into_result(), hashes) else {
            return self.invalid(&diagnostics);
        };
        self.valid(new, hashes).await
    }

    fn invalid(&mut self, diagnostics: &Diagnostics) -> ReloadResult {
        let errors = diagnostics.errors().count();
        tracing::error!(
            "configuration reload failed: {} has {errors} error(s); keeping the running configuration",
            self.running.source.display()
        );
        self.record_failure();
        self.stats
            .send_modify(|s| s.last_diagnostics = diagnostics.0.clone());
        // A file the broken configuration newly names (a new import with the error) must be
        // watched too, or fixing it would go unnoticed.
        if let Some(watcher) = &self.watcher {
            let mut files = self.running.files.clone();
            for d in &diagnostics.0 {
                if let Some(span) = &d.span {
                    let file = span.file.as_ref();
                    if !files.contains(file) {
                        files.push(file.clone());
                    }
                }
            }
            watcher.watch_files(&files);
        }
        ReloadResult::Invalid { errors }
    }

    async fn valid(&mut self, mut new: Config, hashes: ContentHashes) -> ReloadResult {
        self.running.keep_console_override(&mut new);
        let changed_files = hashes.changed_since(&self.hashes);
        let diff = diff_with_changed_files(&self.running, &new, &changed_files);
        for setting in &diff.restart_needed {
            tracing::warn!("{setting}");
        }
        keep_running_values(&self.running, &mut new);
        let summary = diff.summary();
        if !diff.has_runtime_changes() {
            tracing::info!("configuration reloaded: {summary}");
            self.adopt(new, hashes);
            self.record_success(&summary);
            return ReloadResult::NoRuntimeChange { summary };
        }
        let outcome = self.apply.apply(new.clone(), &diff).await;
        match &outcome {
            ApplyOutcome::Applied => {
                tracing::info!("configuration reloaded: {summary}");
                self.adopt(new, hashes);
                self.record_success(&summary);
            }
            ApplyOutcome::Partial(failures) => {
                for failure in failures {
                    tracing::error!("{failure}");
                }
                tracing::error!(
                    "configuration reload partly applied ({} part(s) failed): {summary}",
                    failures.len()
                );
                self.adopt(new, hashes);
                self.record_failure();
            }
            ApplyOutcome::Rejected(reasons) => {
                for reason in reasons {
                    tracing::error!("{reason}");
                }
                tracing::error!(
                    "configuration reload refused by the broker; keeping the running configuration ({summary})"
                );
                self.record_failure();
            }
        }
        ReloadResult::Applied { summary, outcome }
    }

    /// `new` is now running: remember it and the contents of its files, and follow its files.
    fn adopt(&mut self, new: Config, hashes: ContentHashes) {
        if let Some(watcher) = &self.watcher {
            watcher.watch_files(&new.files);
            watcher.set_poll_period_ms(poll_period_of(&new));
        }
        self.running = new;
        self.hashes = hashes;
    }

    fn record_success(&self, summary: &str) {
        self.stats.send_modify(|s| {
            s.reloads_ok += 1;
            s.last_success = Some(SystemTime::now());
            s.last_summary = Some(summary.to_owned());
            s.last_diagnostics.clear();
        });
    }

    fn record_failure(&self) {
        self.stats.send_modify(|s| {
            s.reloads_failed += 1;
            s.last_failure = Some(SystemTime::now());
        });
    }
}

/// Every diagnostic at its severity, each with file:line:col and hint, on one log line: the
/// log escapes line breaks (a `\n` would show), so the hint follows after `; `.
fn log_diagnostics(diagnostics: &Diagnostics) {
    for d in &diagnostics.0 {
        let line = one_line(&d.to_string());
        match d.severity {
            Severity::Error => tracing::error!("{line}"),
            Severity::Warning => tracing::warn!("{line}"),
            Severity::Note => tracing::info!("{line}"),
        }
    }
}

/// `text`'s lines, trimmed, joined by `; `.
fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

fn describe_reasons(reasons: &[ReloadReason]) -> String {
    let mut files: Vec<&PathBuf> = Vec::new();
    let mut parts = Vec::new();
    for reason in reasons {
        match reason {
            ReloadReason::FilesChanged(changed) => files.extend(changed),
            ReloadReason::Signal => parts.push("SIGHUP".to_owned()),
            ReloadReason::Requested => parts.push("requested".to_owned()),
        }
    }
    files.sort();
    files.dedup();
    if !files.is_empty() {
        let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        parts.insert(0, format!("changed: {}", names.join(", ")));
    }
    parts.dedup();
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_logged_diagnostic_keeps_its_hint_on_the_same_line() {
        assert_eq!(
            super::one_line("a.xml:3:4: error: bad\n  hint: do this\n"),
            "a.xml:3:4: error: bad; hint: do this"
        );
    }
}
