//! Capturing log lines in a test.

use std::sync::Mutex;

/// Log lines written while the guard lives (on this thread: use a current-thread runtime).
#[derive(Clone, Default)]
pub struct Logs(std::sync::Arc<Mutex<Vec<u8>>>);

impl Logs {
    /// Capture INFO and above.
    pub fn capture() -> (Logs, tracing::subscriber::DefaultGuard) {
        Logs::capture_at(tracing::Level::INFO)
    }

    /// Capture `level` and above.
    pub fn capture_at(level: tracing::Level) -> (Logs, tracing::subscriber::DefaultGuard) {
        let logs = Logs::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(logs.clone())
            .with_ansi(false)
            .with_max_level(level)
            .finish();
        let guard = tracing::subscriber::set_default(subscriber);
        // A callsite first hit on a thread with no subscriber may have cached "not
        // interested"; recompute so this thread's subscriber sees its events.
        tracing::callsite::rebuild_interest_cache();
        (logs.clone(), guard)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("lock")).into_owned()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;
    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}
