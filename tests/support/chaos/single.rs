//! One durable `ferromq` process (KahaDB in a temporary directory, one MQTT connector on a
//! fixed free port) that a scenario can SIGKILL and restart on the same store and port, and the
//! scenario S0-single built on it.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use super::load::{run, LoadConfig};
use super::recorder::Recording;

/// How to start a broker: the program, and environment variables to set (the chaos example
/// re-runs itself as the broker; tests run the `ferromq` binary).
#[derive(Clone, Debug)]
pub struct BrokerProgram {
    pub path: PathBuf,
    pub env: Vec<(OsString, OsString)>,
}

/// A durable broker process; killed when dropped.
pub struct BrokerProcess {
    program: BrokerProgram,
    config: PathBuf,
    pub address: SocketAddr,
    child: Mutex<Option<Child>>,
    _dir: tempfile::TempDir,
}

#[allow(clippy::duplicate_mod)]
#[path = "../ports.rs"]
mod ports;

/// A free TCP port on 127.0.0.1, below the ephemeral range (see `ports.rs`).
pub fn free_port() -> std::io::Result<u16> {
    ports::free_port()
}

/// A broker named `name` with one MQTT connector on 127.0.0.1:`port`: durable with its KahaDB
/// store in `store`, or (`store` = `None`) a memory broker that forgets everything when killed.
pub fn broker_xml(name: &str, store: Option<&Path>, port: u16) -> String {
    let persistence = match store {
        Some(store) => format!(
            r#">
    <persistenceAdapter><kahaDB directory="{}"/></persistenceAdapter>"#,
            store.display()
        ),
        None => r#" persistent="false">"#.into(),
    };
    format!(
        r#"<beans xmlns="http://www.springframework.org/schema/beans">
  <broker xmlns="http://activemq.apache.org/schema/core" brokerName="{name}"{persistence}
    <transportConnectors>
      <transportConnector name="mqtt" uri="mqtt://127.0.0.1:{port}"/>
    </transportConnectors>
  </broker>
</beans>
"#
    )
}

impl BrokerProcess {
    /// Writes the configuration in a new temporary directory and starts the broker, durable
    /// (KahaDB there) unless `durable` is false.
    pub fn start(program: BrokerProgram, durable: bool) -> std::io::Result<BrokerProcess> {
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let config = dir.path().join("activemq.xml");
        let store = dir.path().join("kahadb");
        let xml = broker_xml("chaos-single", durable.then_some(store.as_path()), port);
        std::fs::write(&config, xml)?;
        let broker = BrokerProcess {
            program,
            config,
            address: ([127, 0, 0, 1], port).into(),
            child: Mutex::new(None),
            _dir: dir,
        };
        broker.spawn()?;
        Ok(broker)
    }

    fn spawn(&self) -> std::io::Result<()> {
        let child = Command::new(&self.program.path)
            .envs(self.program.env.iter().cloned())
            .args(["run", "--config"])
            .arg(&self.config)
            .args(["--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?;
        *self.child.lock() = Some(child);
        Ok(())
    }

    /// SIGKILL the broker (the process this started, by its pid) and reap it.
    pub fn kill(&self) {
        if let Some(mut child) = self.child.lock().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start the broker again on the same store and port.
    pub fn restart(&self) -> std::io::Result<()> {
        self.kill();
        self.spawn()
    }

    /// Waits until the broker accepts TCP connections (at most `within`).
    pub async fn wait_listening(&self, within: Duration) -> bool {
        let give_up = tokio::time::Instant::now() + within;
        while tokio::time::Instant::now() < give_up {
            if tokio::net::TcpStream::connect(self.address).await.is_ok() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// S0-single: the load against one durable broker, SIGKILLed `kill_at` after publishing
/// starts and restarted at once on the same store and port; the clients reconnect to it.
pub async fn s0_single(
    program: BrokerProgram,
    load: &LoadConfig,
    kill_at: Duration,
) -> std::io::Result<Recording> {
    kill_and_restart(program, true, load, kill_at).await
}

/// The load against one broker process (durable or not), SIGKILLed `kill_at` after publishing
/// starts and restarted at once on the same port (and store).
pub async fn kill_and_restart(
    program: BrokerProgram,
    durable: bool,
    load: &LoadConfig,
    kill_at: Duration,
) -> std::io::Result<Recording> {
    let broker = Arc::new(BrokerProcess::start(program, durable)?);
    if !broker.wait_listening(Duration::from_secs(20)).await {
        return Err(std::io::Error::other("the broker did not start listening"));
    }
    let victim = broker.clone();
    let recording = run(load, &[broker.address], kill_at, move |faults| async move {
        // One mark: the restart follows at once, and every figure is measured from the kill.
        faults.mark("SIGKILL and restart");
        if let Err(error) = victim.restart() {
            eprintln!("restart failed: {error}");
        }
    })
    .await;
    Ok(recording)
}
