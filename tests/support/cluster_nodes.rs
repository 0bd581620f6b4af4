//! ferromq cluster nodes as real processes (`ferromq run FILE`), for the cluster tests and
//! the chaos harness: spawn from an `activemq.xml`, wait until the MQTT port accepts, and
//! faults by pid (SIGKILL, SIGTERM, SIGSTOP/SIGCONT). [`node_xml`] writes a node's minimal
//! configuration over a NATS cluster.
//!
//! Self-contained (std, rustix), so that an example can include it (`#[allow(dead_code)]
//! #[path = "../tests/support/cluster_nodes.rs"] mod cluster_nodes;`); the binary
//! is `CARGO_BIN_EXE_ferromq` in integration tests, else `FERROMQ_BIN`, else the `ferromq`
//! beside the running executable's directory (`target/debug/examples/x` ->
//! `target/debug/ferromq`).

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{kill_process, Pid, Signal};

/// How long a node may take to start serving MQTT.
pub const NODE_READY_WITHIN: Duration = Duration::from_secs(30);

/// The `ferromq` binary to run.
pub fn ferromq_binary() -> PathBuf {
    if let Some(built) = option_env!("CARGO_BIN_EXE_ferromq") {
        return PathBuf::from(built);
    }
    if let Some(path) = std::env::var_os("FERROMQ_BIN") {
        return PathBuf::from(path);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| {
            exe.parent()
                .and_then(Path::parent)
                .map(|d| d.join("ferromq"))
        })
        .unwrap_or_else(|| PathBuf::from("ferromq"))
}

/// A minimal cluster node configuration: broker `node_id`, one MQTT connector on
/// 127.0.0.1:`mqtt_port`, `<ferromq:jetStream servers=... replicas="3"/>`, and `data_dir` as
/// the broker's data directory.
pub fn node_xml(node_id: &str, mqtt_port: u16, nats_urls: &[String], data_dir: &Path) -> String {
    node_xml_with(node_id, mqtt_port, nats_urls, data_dir, r#"replicas="3""#)
}

/// [`node_xml`] with other `<ferromq:jetStream>` attributes than `replicas="3"` (as written,
/// e.g. `replicas="1" messageShards="2" heartbeatInterval="200ms"`).
pub fn node_xml_with(
    node_id: &str,
    mqtt_port: u16,
    nats_urls: &[String],
    data_dir: &Path,
    jetstream_attributes: &str,
) -> String {
    format!(
        r#"<beans xmlns="http://www.springframework.org/schema/beans" xmlns:ferromq="urn:ferromq">
  <broker xmlns="http://activemq.apache.org/schema/core" brokerName="{node_id}" dataDirectory="{data}">
    <persistenceAdapter>
      <ferromq:jetStream servers="{servers}" {jetstream_attributes}/>
    </persistenceAdapter>
    <transportConnectors>
      <transportConnector name="mqtt" uri="mqtt://127.0.0.1:{mqtt_port}"/>
    </transportConnectors>
  </broker>
</beans>
"#,
        data = data_dir.display(),
        servers = nats_urls.join(","),
    )
}

/// One `ferromq run FILE` process. Dropping it kills the process.
#[derive(Debug)]
pub struct FerromqNode {
    pub config: PathBuf,
    /// The MQTT port read from the configuration's first `mqtt://` connector.
    pub mqtt_port: u16,
    child: Option<Child>,
}

impl FerromqNode {
    /// Run `ferromq run xml_path` and wait until its MQTT port accepts connections
    /// ([`NODE_READY_WITHIN`]). Panics when the process exits first or never serves.
    pub fn spawn(xml_path: &Path) -> FerromqNode {
        let mut node = FerromqNode::start(xml_path);
        node.wait_serving();
        node
    }

    /// Run it without waiting (for a node expected to refuse to start).
    pub fn start(xml_path: &Path) -> FerromqNode {
        // A failing test's nodes can say more: FERROMQ_TEST_NODE_LOG="warn,ferromq::store_ack=debug".
        FerromqNode::start_to(xml_path, &node_log_level(), Stdio::inherit())
    }

    /// [`FerromqNode::start`] at log level `level`, its log (stderr) written to `log` (for a
    /// test that reads what the node said; [`read_log`] reads it).
    pub fn start_logging(xml_path: &Path, level: &str, log: &Path) -> FerromqNode {
        let file = std::fs::File::create(log).expect("create the node's log file");
        FerromqNode::start_to(xml_path, level, Stdio::from(file))
    }

    fn start_to(xml_path: &Path, level: &str, stderr: Stdio) -> FerromqNode {
        let text = std::fs::read_to_string(xml_path).expect("read the node's activemq.xml");
        let mqtt_port = mqtt_port_of(&text).expect("the node's activemq.xml has an mqtt:// port");
        let child = Command::new(ferromq_binary())
            .args(["run", "--config"])
            .arg(xml_path)
            .args(["--log-level", level])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn ferromq");
        FerromqNode {
            config: xml_path.to_path_buf(),
            mqtt_port,
            child: Some(child),
        }
    }

    /// `127.0.0.1:<mqtt port>`.
    pub fn mqtt_addr(&self) -> std::net::SocketAddr {
        ([127, 0, 0, 1], self.mqtt_port).into()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Poll the MQTT port until it accepts; panic if the process exits or time runs out.
    pub fn wait_serving(&mut self) {
        let deadline = Instant::now() + NODE_READY_WITHIN;
        loop {
            if let Some(status) = self.try_exit_status() {
                panic!(
                    "ferromq on {} exited before serving: {status}",
                    self.config.display()
                );
            }
            if TcpStream::connect_timeout(&self.mqtt_addr(), Duration::from_millis(200)).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "ferromq on {} did not serve MQTT on {} within {NODE_READY_WITHIN:?}",
                self.config.display(),
                self.mqtt_port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The exit status, once the process has exited (reaped then).
    pub fn try_exit_status(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Wait for the process to exit by itself, at most `within`.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.try_exit_status() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            send(&child, Signal::KILL);
            let _ = child.wait();
        }
    }

    /// SIGTERM (a graceful shutdown) and wait for the exit, SIGKILL after 15 s.
    pub fn terminate(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        send(&child, Signal::CONT);
        send(&child, Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        send(&child, Signal::KILL);
        child.wait().ok()
    }

    /// SIGTERM without waiting (see [`FerromqNode::wait_exit`]).
    pub fn send_term(&self) {
        if let Some(child) = &self.child {
            send(child, Signal::TERM);
        }
    }

    /// SIGSTOP: the process keeps its sockets and answers nothing (a zombie owner).
    pub fn pause(&self) {
        if let Some(child) = &self.child {
            send(child, Signal::STOP);
            super::nats::wait_stopped(child.id());
        }
    }

    /// SIGCONT.
    pub fn resume(&self) {
        if let Some(child) = &self.child {
            send(child, Signal::CONT);
        }
    }
}

impl Drop for FerromqNode {
    fn drop(&mut self) {
        self.kill();
    }
}

fn send(child: &Child, signal: Signal) {
    if let Some(pid) = i32::try_from(child.id()).ok().and_then(Pid::from_raw) {
        let _ = kill_process(pid, signal);
    }
}

/// What a node started with [`FerromqNode::start_logging`] has logged so far.
pub fn read_log(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

/// The port of the first `mqtt://host:port` in a configuration's text.
fn mqtt_port_of(xml: &str) -> Option<u16> {
    let after = &xml[xml.find("mqtt://")? + "mqtt://".len()..];
    let authority = after.split(['"', '?', '/']).next()?;
    authority.rsplit(':').next()?.parse().ok()
}

/// The nodes' `--log-level`: `warn`, or `FERROMQ_TEST_NODE_LOG` when set.
fn node_log_level() -> String {
    std::env::var("FERROMQ_TEST_NODE_LOG").unwrap_or_else(|_| "warn".to_owned())
}
