//! Shared by the reload tests: a configuration spread over several real files in a tempdir
//! (main file, an import in a subdirectory, a properties file), and an `ApplyConfig` that records
//! what it is given.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use ferromq::config::diff::ConfigDiff;
use ferromq::config::Config;
use ferromq::reload::{ApplyConfig, ApplyFuture, ApplyOutcome, ReloadStats};
use tokio::sync::{mpsc, watch};

use super::xml::{broker_xml, load_file};

/// Long enough for a loaded CI machine, short enough to fail fast.
pub const WAIT: Duration = Duration::from_secs(10);

/// `main.xml` (placeholder configurer + import), `conf.d/broker.xml` (the broker, its
/// connectors from `inner`), `ports.properties` (`mqtt.port`).
pub struct ConfigDir {
    pub dir: tempfile::TempDir,
}

pub const MAIN: &str = r#"<beans xmlns="http://www.springframework.org/schema/beans">
  <bean class="org.springframework.beans.factory.config.PropertyPlaceholderConfigurer">
    <property name="locations"><value>file:${activemq.conf}/ports.properties</value></property>
  </bean>
  <import resource="conf.d/broker.xml"/>
</beans>
"#;

impl ConfigDir {
    /// A configuration with one connector, `mqtt`, on 127.0.0.1:${mqtt.port}.
    pub fn new(plugins: &str) -> ConfigDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = ConfigDir { dir };
        std::fs::create_dir(config.path("conf.d")).expect("mkdir");
        config.write("main.xml", MAIN);
        config.write("ports.properties", "mqtt.port=1883\n");
        config.write_broker(plugins, &[("mqtt", "mqtt://127.0.0.1:${mqtt.port}")]);
        config
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn main(&self) -> PathBuf {
        self.path("main.xml")
    }

    pub fn write(&self, name: &str, contents: &str) {
        std::fs::write(self.path(name), contents).expect("write");
    }

    /// Save the way many editors do: write a temporary file, rename it over the original.
    pub fn write_by_rename(&self, name: &str, contents: &str) {
        let tmp = self.path(&format!("{name}.tmp~"));
        std::fs::write(&tmp, contents).expect("write tmp");
        std::fs::rename(&tmp, self.path(name)).expect("rename");
    }

    pub fn write_broker(&self, plugins: &str, connectors: &[(&str, &str)]) {
        self.write("conf.d/broker.xml", &broker_xml(plugins, connectors));
    }

    pub fn load(&self) -> Config {
        load_file(&self.main())
    }
}

/// Records every apply; answers with the outcomes queued in `answers` (then `Applied`).
pub struct Recorder {
    applied: mpsc::UnboundedSender<(Config, ConfigDiff)>,
    answers: Mutex<Vec<ApplyOutcome>>,
}

impl Recorder {
    pub fn new() -> (Recorder, mpsc::UnboundedReceiver<(Config, ConfigDiff)>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let recorder = Recorder {
            applied: tx,
            answers: Mutex::new(Vec::new()),
        };
        (recorder, rx)
    }

    pub fn answer_next(&self, outcome: ApplyOutcome) {
        self.answers.lock().expect("lock").push(outcome);
    }
}

impl ApplyConfig for Recorder {
    fn apply<'a>(&'a self, new: Config, diff: &'a ConfigDiff) -> ApplyFuture<'a> {
        let _ = self.applied.send((new, diff.clone()));
        let mut answers = self.answers.lock().expect("lock");
        let outcome = if answers.is_empty() {
            ApplyOutcome::Applied
        } else {
            answers.remove(0)
        };
        Box::pin(std::future::ready(outcome))
    }
}

/// The next applied configuration, within [`WAIT`].
pub async fn next_apply(
    applied: &mut mpsc::UnboundedReceiver<(Config, ConfigDiff)>,
) -> (Config, ConfigDiff) {
    tokio::time::timeout(WAIT, applied.recv())
        .await
        .expect("an apply within the wait")
        .expect("recorder alive")
}

/// Wait (bounded) until the counters satisfy `done`.
pub async fn wait_stats(
    stats: &mut watch::Receiver<ReloadStats>,
    done: impl FnMut(&ReloadStats) -> bool,
) -> ReloadStats {
    let reached = match tokio::time::timeout(WAIT, stats.wait_for(done)).await {
        Ok(Ok(s)) => Some(s.clone()),
        _ => None,
    };
    reached.unwrap_or_else(|| panic!("reload counters not reached in time: {:?}", *stats.borrow()))
}

/// The file names (not paths: directories are canonicalized) in a list of paths.
pub fn names(paths: &[PathBuf]) -> Vec<String> {
    paths
        .iter()
        .filter_map(|p| Path::new(p).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .collect()
}
