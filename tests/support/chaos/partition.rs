//! S5: a black-hole partition of "machine 3" (its nats-server and its ferromq node) in
//! network namespaces the test makes (docs/chaos.md), needing root and `ip`.
//!
//! The network: machines 1 and 2 live in the test's own namespace on a bridge
//! (`10.231.X.1/24`, X from the test's pid); machine 3 in namespace `fmq3-<pid>`, wired to
//! the bridge by a veth pair (`10.231.X.2`). The black-hole sets the bridge's port of that
//! pair down: both ends keep their addresses and routes and every packet between machine 3
//! and the others is dropped without a word (as a switch port going down). A second veth
//! pair (`10.232.X.0/24`), never cut, carries MQTT between the load's clients and node 3:
//! the clients that can still reach the cut-off node must be turned away by it.
//!
//! Everything the test makes is removed when the [`Netns`] guard drops (even on a panic),
//! and leftovers of a test process that died are removed before a new one starts.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use super::audit::audit_note_locating;
use super::checker::check;
use super::cluster::{
    cluster_nodes, common_violations, inversion_examples, log_alarms, lost_publishes,
    lost_publishes_in_logs, lost_subscribers_in_logs, nats, pub_gap_ms, NodeProcess, Outcome,
    NODES, SHARDS,
};
use super::load::{run, LoadConfig};
use super::mqtt::{client, ClientSettings, MqttEvent, Protocol};
use super::single::{free_port, BrokerProgram};

/// `quorumLossTimeout` of S5's nodes: `FERROMQ_CHAOS_S5_QUORUM_LOSS` (a whole number with
/// `ms` or `s`), by default 1500ms: a node cut off from the quorum stops taking persistent
/// work within 1.5 s, before a node of the majority takes a session over from it (the claim's
/// 2 s kick bound), so that no session has two live owners.
fn quorum_loss() -> String {
    std::env::var("FERROMQ_CHAOS_S5_QUORUM_LOSS").unwrap_or_else(|_| "1500ms".into())
}

/// [`quorum_loss`] in ms (10 s when it does not parse).
fn quorum_loss_ms() -> f64 {
    let q = quorum_loss();
    let parsed = if let Some(ms) = q.strip_suffix("ms") {
        ms.parse::<f64>().ok()
    } else if let Some(s) = q.strip_suffix('s') {
        s.parse::<f64>().ok().map(|s| s * 1000.0)
    } else {
        q.parse::<f64>().ok()
    };
    parsed.unwrap_or(10_000.0)
}

/// How long node3 may take to close its persistent sessions after the cut: 5 s, or its
/// `quorumLossTimeout` plus two heartbeat intervals (200 ms) and 1 s when that is longer
/// (a node cannot tell a partition from an election before `quorumLossTimeout`).
fn refusal_bound_ms() -> f64 {
    (quorum_loss_ms() + 1400.0).max(5000.0)
}

/// Node timings of S5 (see [`quorum_loss`]).
pub fn partition_timings() -> String {
    let quorum_loss = quorum_loss();
    format!(
        r#"replicas="3" heartbeatInterval="200ms" quorumLossTimeout="{quorum_loss}" nodeTimeout="3s""#
    )
}

/// Prefix of the namespace the test makes.
const NETNS_PREFIX: &str = "fmq3-";
/// Prefix of the links it makes (`fq<pid><role>`, at most 15 bytes).
const LINK_PREFIX: &str = "fq";

/// Why S5 cannot run here (not root, no `ip`, no namespaces), when it cannot.
pub fn netns_unavailable() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("SKIP S5: network namespaces need root".into());
    }
    match Command::new("ip")
        .args(["netns", "list"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(status) if status.success() => None,
        _ => Some("SKIP S5: `ip netns` is not available (iproute2)".into()),
    }
}

/// Runs `ip` with `args`; the error says which command failed and why.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The pid a name made by this module carries, if it is one.
fn pid_in(name: &str, prefix: &str) -> Option<u32> {
    let digits: String = name
        .strip_prefix(prefix)?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Removes namespaces and links left by a test process that no longer runs.
fn remove_stale() {
    let dead = |pid: u32| !Path::new(&format!("/proc/{pid}")).exists();
    if let Ok(out) = Command::new("ip").args(["netns", "list"]).output() {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let name = line.split_whitespace().next().unwrap_or_default();
            if pid_in(name, NETNS_PREFIX).is_some_and(dead) {
                let _ = ip(&["netns", "del", name]);
            }
        }
    }
    if let Ok(out) = Command::new("ip").args(["-o", "link", "show"]).output() {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            // `7: fq123br: <...` or `8: fq123s3@if9: <...`
            let Some(name) = line.split(':').nth(1).map(str::trim) else {
                continue;
            };
            let name = name.split('@').next().unwrap_or_default();
            if pid_in(name, LINK_PREFIX).is_some_and(dead) {
                let _ = ip(&["link", "del", name]);
            }
        }
    }
}

/// Machine 3's namespace and the links to it; removed when dropped.
pub struct Netns {
    pub name: String,
    bridge: String,
    /// The bridge's port of the veth pair to machine 3: down = the black-hole.
    port: String,
    client_link: String,
    /// The bridge's address, where machines 1 and 2 listen.
    pub majority_ip: Ipv4Addr,
    /// Machine 3's address on the cluster link.
    pub minority_ip: Ipv4Addr,
    /// Machine 3's address on the client link (MQTT from the load).
    pub minority_client_ip: Ipv4Addr,
}

impl Netns {
    /// Makes the namespace and both links; on an error, removes what it made.
    pub fn create() -> Result<Netns, String> {
        remove_stale();
        let pid = std::process::id();
        let x = u8::try_from(pid % 200 + 20).unwrap_or(20);
        let netns = Netns {
            name: format!("{NETNS_PREFIX}{pid}"),
            bridge: format!("{LINK_PREFIX}{pid}br"),
            port: format!("{LINK_PREFIX}{pid}s3"),
            client_link: format!("{LINK_PREFIX}{pid}m0"),
            majority_ip: Ipv4Addr::new(10, 231, x, 1),
            minority_ip: Ipv4Addr::new(10, 231, x, 2),
            minority_client_ip: Ipv4Addr::new(10, 232, x, 2),
        };
        let ns = netns.name.clone();
        let inner_cluster = format!("{LINK_PREFIX}{pid}c3");
        let inner_client = format!("{LINK_PREFIX}{pid}m3");
        let majority = format!("{}/24", netns.majority_ip);
        let minority = format!("{}/24", netns.minority_ip);
        let client_root = format!("10.232.{x}.1/24");
        let client_ns = format!("{}/24", netns.minority_client_ip);
        let steps: Vec<Vec<&str>> = vec![
            vec!["netns", "add", &ns],
            vec!["-n", &ns, "link", "set", "lo", "up"],
            vec!["link", "add", &netns.bridge, "type", "bridge"],
            vec!["addr", "add", &majority, "dev", &netns.bridge],
            vec!["link", "set", &netns.bridge, "up"],
            vec![
                "link",
                "add",
                &netns.port,
                "type",
                "veth",
                "peer",
                "name",
                &inner_cluster,
                "netns",
                &ns,
            ],
            vec!["link", "set", &netns.port, "master", &netns.bridge],
            vec!["link", "set", &netns.port, "up"],
            vec!["-n", &ns, "addr", "add", &minority, "dev", &inner_cluster],
            vec!["-n", &ns, "link", "set", &inner_cluster, "up"],
            vec![
                "link",
                "add",
                &netns.client_link,
                "type",
                "veth",
                "peer",
                "name",
                &inner_client,
                "netns",
                &ns,
            ],
            vec!["addr", "add", &client_root, "dev", &netns.client_link],
            vec!["link", "set", &netns.client_link, "up"],
            vec!["-n", &ns, "addr", "add", &client_ns, "dev", &inner_client],
            vec!["-n", &ns, "link", "set", &inner_client, "up"],
        ];
        for step in steps {
            ip(&step)?;
        }
        Ok(netns)
    }

    /// The link whose state cuts machine 3 off (down: packets dropped both ways, as by a
    /// switch port going down) or wires it again (up).
    pub fn cut_link(&self) -> String {
        self.port.clone()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &self.port]);
        let _ = ip(&["link", "del", &self.client_link]);
        let _ = ip(&["link", "del", &self.bridge]);
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// One nats-server of the partition rig, on `ip`, in `netns` when given. Killed when dropped.
struct NsServer {
    name: String,
    ip: Ipv4Addr,
    client_port: u16,
    cluster_port: u16,
    http_port: u16,
    netns: Option<String>,
    child: Option<Child>,
}

impl NsServer {
    fn url(&self) -> String {
        format!("nats://{}:{}", self.ip, self.client_port)
    }

    fn spawn(&mut self, binary: &Path, config: &Path, log: &Path) -> std::io::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let mut command = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(binary);
                c
            }
            None => Command::new(binary),
        };
        self.child = Some(
            command
                .arg("-c")
                .arg(config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()?,
        );
        Ok(())
    }
}

impl Drop for NsServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The status of `GET /healthz` on `ip:port` (1 s bound).
fn healthz(ip: Ipv4Addr, port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) =
        std::net::TcpStream::connect_timeout(&(ip, port).into(), Duration::from_secs(1))
    else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    if stream
        .write_all(b"GET /healthz HTTP/1.0\r\nHost: x\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && &head[9..12] == b"200"
}

/// 3 nats-servers and 3 ferromq nodes, machine 3 (server n3, node3) in its own namespace.
/// Fields drop in order: nodes, servers, then the network.
pub struct PartitionRig {
    pub nodes: Vec<Arc<NodeProcess>>,
    servers: Vec<NsServer>,
    pub netns: Netns,
    dir: tempfile::TempDir,
}

impl PartitionRig {
    pub async fn start(program: BrokerProgram, attributes: &str) -> std::io::Result<Self> {
        let binary =
            nats::nats_server_binary().ok_or_else(|| std::io::Error::other(nats::SKIP_MESSAGE))?;
        let netns = Netns::create().map_err(std::io::Error::other)?;
        let dir = tempfile::tempdir()?;
        let ports = nats::free_ports(3 * NODES);
        let mut servers: Vec<NsServer> = (0..NODES)
            .map(|i| NsServer {
                name: format!("n{}", i + 1),
                ip: if i == 2 {
                    netns.minority_ip
                } else {
                    netns.majority_ip
                },
                client_port: ports[3 * i],
                cluster_port: ports[3 * i + 1],
                http_port: ports[3 * i + 2],
                netns: (i == 2).then(|| netns.name.clone()),
                child: None,
            })
            .collect();
        let routes: Vec<String> = servers
            .iter()
            .map(|s| format!("nats-route://{}:{}", s.ip, s.cluster_port))
            .collect();
        for server in &mut servers {
            let store = dir.path().join(&server.name);
            std::fs::create_dir_all(&store)?;
            let config = dir.path().join(format!("{}.conf", server.name));
            std::fs::write(
                &config,
                format!(
                    "server_name: {name}\nlisten: {ip}:{client}\nhttp: {ip}:{http}\n\
                     jetstream {{\n  store_dir: \"{store}\"\n}}\n\
                     cluster {{\n  name: fmq-test\n  listen: {ip}:{cluster}\n  routes: [{routes}]\n}}\n",
                    name = server.name,
                    ip = server.ip,
                    client = server.client_port,
                    http = server.http_port,
                    cluster = server.cluster_port,
                    store = store.display(),
                    routes = routes.join(", "),
                ),
            )?;
            let log = dir.path().join(format!("{}.log", server.name));
            server.spawn(&binary, &config, &log)?;
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        for server in &servers {
            let (ip, port) = (server.ip, server.http_port);
            while !tokio::task::spawn_blocking(move || healthz(ip, port))
                .await
                .unwrap_or(false)
            {
                if Instant::now() > deadline {
                    return Err(std::io::Error::other(format!(
                        "nats-server {} not healthy within 60 s: {}",
                        server.name,
                        std::fs::read_to_string(dir.path().join(format!("{}.log", server.name)))
                            .unwrap_or_default()
                    )));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let urls: Vec<String> = servers.iter().map(NsServer::url).collect();
        let mut nodes = Vec::new();
        for i in 0..NODES {
            let name = format!("node{}", i + 1);
            let port = free_port()?;
            let data = dir.path().join(&name);
            std::fs::create_dir_all(&data)?;
            let config = dir.path().join(format!("{name}.xml"));
            let mut servers_of_node = urls.clone();
            servers_of_node.rotate_left(i);
            let mut xml =
                cluster_nodes::node_xml_with(&name, port, &servers_of_node, &data, attributes);
            let host = if i == 2 {
                xml = xml.replace(
                    "mqtt://127.0.0.1:",
                    &format!("mqtt://{}:", netns.minority_client_ip),
                );
                netns.minority_client_ip
            } else {
                Ipv4Addr::LOCALHOST
            };
            std::fs::write(&config, xml)?;
            let node = Arc::new(NodeProcess::new(
                name.clone(),
                program.clone(),
                config,
                dir.path().join(format!("{name}.log")),
                SocketAddr::from((host, port)),
                (i == 2).then(|| netns.name.clone()),
            ));
            node.spawn()?;
            if i == 0 && !node.wait_listening(Duration::from_secs(60)).await {
                return Err(std::io::Error::other(format!(
                    "node1 did not serve MQTT:\n{}",
                    node.log_text()
                )));
            }
            nodes.push(node);
        }
        for node in &nodes[1..] {
            if !node.wait_listening(Duration::from_secs(60)).await {
                return Err(std::io::Error::other(format!(
                    "{} did not serve MQTT:\n{}",
                    node.name,
                    node.log_text()
                )));
            }
        }
        Ok(PartitionRig {
            nodes,
            servers,
            netns,
            dir,
        })
    }

    pub fn addresses(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|n| n.address).collect()
    }

    /// Every nats-server's client URL.
    pub fn nats_urls(&self) -> Vec<String> {
        self.servers.iter().map(NsServer::url).collect()
    }

    /// Copies the node and server logs to `FERROMQ_CHAOS_KEEP_LOGS` when set.
    pub fn keep_logs(&self, label: &str) {
        let Some(keep) = std::env::var_os("FERROMQ_CHAOS_KEEP_LOGS") else {
            return;
        };
        let keep = PathBuf::from(keep);
        let _ = std::fs::create_dir_all(&keep);
        for node in &self.nodes {
            let _ = std::fs::write(
                keep.join(format!("{label}-{}.log", node.name)),
                node.log_text(),
            );
        }
        for server in &self.servers {
            let _ = std::fs::copy(
                self.dir.path().join(format!("{}.log", server.name)),
                keep.join(format!("{label}-{}.log", server.name)),
            );
        }
    }
}

/// What one probe client saw: connected now, and its CONNACKs and losses in time.
#[derive(Default)]
struct ProbeState {
    connected: AtomicBool,
    /// (when, accepted CONNACK or the loss's text).
    events: Mutex<Vec<(Instant, Result<(), String>)>>,
}

/// A persistent-session client that keeps connecting to `addresses` (the next one after a
/// failure, 100 ms later) until `stop`, recording in `state`.
async fn probe(
    settings: ClientSettings,
    addresses: Vec<SocketAddr>,
    state: Arc<ProbeState>,
    stop: CancellationToken,
) {
    let mut at = 0;
    let (c, mut connection) = client(&settings, addresses[0]);
    loop {
        let event = tokio::select! {
            event = connection.poll() => event,
            _ = stop.cancelled() => break,
        };
        match event {
            Ok(MqttEvent::ConnAck { .. }) => {
                state.connected.store(true, Ordering::SeqCst);
                state.events.lock().push((Instant::now(), Ok(())));
            }
            Ok(_) => {}
            Err(error) => {
                state.connected.store(false, Ordering::SeqCst);
                state.events.lock().push((Instant::now(), Err(error)));
                at = (at + 1) % addresses.len();
                connection.set_address(&settings, addresses[at]);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    state.connected.store(false, Ordering::SeqCst);
    let _ = c.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_millis(300), connection.poll()).await;
}

/// A QoS 1 retained PUBLISH every 250 ms on one node, to `<prefix>/ret/<writer>/<n mod 3>`
/// with payload `<topic>=<n>`, until `stop`.
async fn retained_writer(
    settings: ClientSettings,
    address: SocketAddr,
    prefix: String,
    stop: CancellationToken,
) {
    let (c, mut connection) = client(&settings, address);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut n = 0u64;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let topic = format!("{prefix}/{}", n % 3);
                let _ = c.try_publish_retained(&topic, format!("{topic}={n}").into_bytes());
                n += 1;
            }
            event = connection.poll() => {
                if event.is_err() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            _ = stop.cancelled() => break,
        }
    }
    let _ = c.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_millis(300), connection.poll()).await;
}

/// The retained messages under `filter` one node gives a new subscriber: topic -> value
/// (payloads are `<topic>=<value>`), once nothing more came for 1 s after the SUBACK.
async fn read_retained(
    address: SocketAddr,
    client_id: String,
    filter: &str,
) -> Result<BTreeMap<String, String>, String> {
    let settings = ClientSettings {
        protocol: Protocol::V311,
        client_id,
        keep_alive: Duration::from_secs(5),
        connect_timeout_s: 5,
    };
    let (c, mut connection) = client(&settings, address);
    let mut retained = BTreeMap::new();
    let give_up = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut subacked = false;
    loop {
        let bound = if subacked {
            Duration::from_secs(1)
        } else {
            give_up.saturating_duration_since(tokio::time::Instant::now())
        };
        match tokio::time::timeout(bound, connection.poll()).await {
            Err(_) if subacked => break,
            Err(_) => return Err("no SUBACK within 20 s".into()),
            Ok(Ok(MqttEvent::ConnAck { .. })) => {
                let _ = c.try_subscribe(filter);
            }
            Ok(Ok(MqttEvent::SubAck)) => subacked = true,
            Ok(Ok(MqttEvent::Publish { payload, .. })) => {
                let text = String::from_utf8_lossy(&payload).into_owned();
                if let Some((topic, value)) = text.split_once('=') {
                    retained.insert(topic.to_string(), value.to_string());
                }
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
        }
    }
    let _ = c.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_millis(300), connection.poll()).await;
    Ok(retained)
}

/// Probe sessions held on node 3 while it is cut off, and taken over on the majority.
const PROBES: usize = 5;

/// S5: machine 3 (nats-server n3 and node3, in their own namespace) is black-holed
/// `cut_at` into publishing for `cut_for`, then wired again. Publishing goes on until 15 s
/// after the heal. Besides the load, `PROBES` sessions are held on node3 (`A`, which keeps
/// connecting to node3 only) and, from the cut on, taken over on node1/node2 (`B`, same
/// client ids), with a sample of both every 100 ms; two retained writers (node1, node3).
/// Must: L = 0; node3 closes its persistent sessions within 5 s of the cut and accepts no
/// persistent CONNECT until the heal; no sample with an `A` and its `B` both connected
/// (dual owners); 30 s after the heal every node gives a new subscriber the same retained
/// messages. O is reported.
pub async fn s5_partition(
    program: BrokerProgram,
    load: &LoadConfig,
    cut_at: Duration,
    cut_for: Duration,
) -> std::io::Result<Outcome> {
    if let Some(why) = netns_unavailable() {
        return Err(std::io::Error::other(why));
    }
    let timings = partition_timings();
    let rig = PartitionRig::start(program, &timings).await?;
    let addresses = rig.addresses();
    let load = LoadConfig {
        duration: load
            .duration
            .max(cut_at + cut_for + Duration::from_secs(15)),
        ..load.clone()
    };
    let stop = CancellationToken::new();
    let probes_stop = CancellationToken::new();
    let settings = |id: String| ClientSettings {
        protocol: Protocol::V311,
        client_id: id,
        keep_alive: Duration::from_secs(5),
        connect_timeout_s: 5,
    };
    // Beside the load's topics, not under them (its `<prefix>/#` subscribers would get them).
    let ret_prefix = format!("{}-ret", load.topic_prefix);
    let writers = [(0usize, "w1"), (2, "w3")].map(|(node, name)| {
        tokio::spawn(retained_writer(
            settings(format!("{}-retained-{name}", load.client_prefix)),
            addresses[node],
            format!("{ret_prefix}/{name}"),
            stop.clone(),
        ))
    });
    let holders: Vec<Arc<ProbeState>> = (0..PROBES).map(|_| Arc::default()).collect();
    let takers: Vec<Arc<ProbeState>> = (0..PROBES).map(|_| Arc::default()).collect();
    let mut probe_tasks = Vec::new();
    for (k, holder) in holders.iter().enumerate() {
        probe_tasks.push(tokio::spawn(probe(
            settings(format!("{}-dual-{k}", load.client_prefix)),
            vec![addresses[2]],
            holder.clone(),
            probes_stop.clone(),
        )));
    }
    // Every holder on node3 before the load starts.
    let deadline = Instant::now() + Duration::from_secs(30);
    while holders.iter().any(|h| !h.connected.load(Ordering::SeqCst)) {
        if Instant::now() > deadline {
            return Err(std::io::Error::other("the probes did not connect to node3"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cut = Arc::new(Mutex::new(None::<Instant>));
    let healed = Arc::new(Mutex::new(None::<Instant>));
    let dual_samples = Arc::new(Mutex::new(Vec::<(usize, f64)>::new()));
    let network_error = Arc::new(Mutex::new(None::<String>));
    let recording = {
        let cut = cut.clone();
        let healed = healed.clone();
        let dual_samples = dual_samples.clone();
        let network_error = network_error.clone();
        let takers = takers.clone();
        let holders = holders.clone();
        let probes_stop = probes_stop.clone();
        let client_prefix = load.client_prefix.clone();
        let port = rig.netns.cut_link();
        let addresses = addresses.clone();
        run(&load, &rig.addresses(), cut_at, move |faults| async move {
            faults.mark("black-hole machine 3");
            let at = Instant::now();
            if let Err(e) = ip(&["link", "set", &port, "down"]) {
                *network_error.lock() = Some(e);
            }
            *cut.lock() = Some(at);
            let mut tasks = Vec::new();
            for (k, taker) in takers.iter().enumerate() {
                tasks.push(tokio::spawn(probe(
                    settings(format!("{client_prefix}-dual-{k}")),
                    vec![addresses[0], addresses[1]],
                    taker.clone(),
                    probes_stop.clone(),
                )));
            }
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            while at.elapsed() < cut_for {
                tick.tick().await;
                for k in 0..PROBES {
                    if holders[k].connected.load(Ordering::SeqCst)
                        && takers[k].connected.load(Ordering::SeqCst)
                    {
                        dual_samples
                            .lock()
                            .push((k, at.elapsed().as_secs_f64() * 1000.0));
                    }
                }
            }
            // The probes stop before the heal: after it, the holders would take their
            // sessions back, a takeover the test does not measure.
            probes_stop.cancel();
            for task in tasks {
                let _ = task.await;
            }
            faults.mark("heal machine 3");
            if let Err(e) = ip(&["link", "set", &port, "up"]) {
                network_error.lock().get_or_insert(e);
            }
            *healed.lock() = Some(Instant::now());
        })
        .await
    };
    probes_stop.cancel();
    for task in probe_tasks {
        let _ = task.await;
    }
    let mut violations = Vec::new();
    let mut notes = Vec::new();
    if let Some(e) = network_error.lock().take() {
        violations.push(format!("the network could not be cut or healed: {e}"));
    }
    let cut_at_instant = cut.lock().unwrap_or_else(Instant::now);
    let heal_instant = healed.lock().unwrap_or_else(Instant::now);
    // Node3 turning its persistent sessions away: each holder's first loss after the cut,
    // and any CONNACK it got after that and before the heal.
    let mut refused_after = Vec::new();
    let mut accepted_while_cut = 0;
    let mut first_refusal = None;
    for holder in &holders {
        let events = holder.events.lock().clone();
        let lost = events
            .iter()
            .find(|(t, e)| *t > cut_at_instant && e.is_err())
            .map(|(t, _)| *t);
        match lost {
            Some(t) => {
                refused_after.push(t.duration_since(cut_at_instant).as_secs_f64() * 1000.0);
                accepted_while_cut += events
                    .iter()
                    .filter(|(u, e)| *u > t && *u < heal_instant && e.is_ok())
                    .count();
                if first_refusal.is_none() {
                    first_refusal = events
                        .iter()
                        .filter(|(u, _)| *u > t)
                        .find_map(|(_, e)| e.clone().err());
                }
            }
            None => refused_after.push(f64::INFINITY),
        }
    }
    let slowest_refusal = refused_after.iter().copied().fold(0.0, f64::max);
    if slowest_refusal > refusal_bound_ms() {
        violations.push(format!(
            "node3 closed its persistent sessions {slowest_refusal:.0} ms after the cut (> {:.0} ms)",
            refusal_bound_ms()
        ));
    }
    if accepted_while_cut > 0 {
        violations.push(format!(
            "node3 accepted {accepted_while_cut} persistent CONNECTs while cut off"
        ));
    }
    let takeovers: Vec<f64> = takers
        .iter()
        .filter_map(|t| {
            t.events
                .lock()
                .iter()
                .find(|(_, e)| e.is_ok())
                .map(|(u, _)| u.duration_since(cut_at_instant).as_secs_f64() * 1000.0)
        })
        .collect();
    let dual = dual_samples.lock().clone();
    if !dual.is_empty() {
        violations.push(format!(
            "{} samples with a session connected on node3 and on the majority at once \
             (probe, ms after the cut): {:?}",
            dual.len(),
            &dual[..dual.len().min(5)]
        ));
    }
    let cut_us = recording.faults.first().map_or(0, |f| f.t_us);
    let node3_closed: Vec<f64> = {
        let mut first: BTreeMap<String, u64> = BTreeMap::new();
        for d in &recording.disconnects {
            if d.address == 2 && d.t_us > cut_us {
                first
                    .entry(format!("{:?}", d.client))
                    .or_insert(d.t_us - cut_us);
            }
        }
        first.values().map(|us| *us as f64 / 1000.0).collect()
    };
    notes.push(format!(
        "node3 closed the probes' persistent sessions {:.0}-{slowest_refusal:.0} ms after the \
         cut, then refused their CONNECTs ({}); accepted while cut off: {accepted_while_cut}; \
         the load's clients on node3: {} lost their connection, the last {:.0} ms after the cut",
        refused_after.iter().copied().fold(f64::INFINITY, f64::min),
        first_refusal.as_deref().unwrap_or("no refusal seen"),
        node3_closed.len(),
        node3_closed.iter().copied().fold(0.0, f64::max),
    ));
    notes.push(format!(
        "the probes' sessions taken over on node1/node2: {}/{PROBES}, {:.0}-{:.0} ms after \
         the cut; dual-owner samples (every 100 ms): {}",
        takeovers.len(),
        takeovers.iter().copied().fold(f64::INFINITY, f64::min),
        takeovers.iter().copied().fold(0.0, f64::max),
        dual.len()
    ));
    // Retained, 30 s after the heal, from every node.
    let settle = (heal_instant + Duration::from_secs(30)).saturating_duration_since(Instant::now());
    tokio::time::sleep(settle).await;
    stop.cancel();
    for writer in writers {
        let _ = writer.await;
    }
    let mut views = Vec::new();
    for (i, address) in addresses.iter().enumerate() {
        let view = read_retained(
            *address,
            format!("{}-retained-check-{i}", load.client_prefix),
            &format!("{ret_prefix}/#"),
        )
        .await;
        views.push(view);
    }
    let first = views[0].as_ref().ok().cloned().unwrap_or_default();
    let identical = views.iter().all(|v| v.as_ref().ok() == Some(&first));
    notes.push(format!(
        "retained 30 s after the heal: {} topics on node1, identical on all nodes: {identical}",
        first.len()
    ));
    if !identical || first.is_empty() {
        let described: Vec<String> = views
            .iter()
            .enumerate()
            .map(|(i, v)| format!("node{}: {v:?}", i + 1))
            .collect();
        violations.push(format!(
            "retained messages differ between nodes (or none): {}",
            described.join("; ")
        ));
    }
    let report = check(&recording);
    violations.extend(common_violations(&report, false));
    notes.push(format!("node timings: {timings}"));
    let mut lost_examples = Vec::new();
    match async_nats::connect(rig.nats_urls()).await {
        Ok(client) => {
            let lost = lost_publishes(&report);
            notes.push(audit_note_locating(&client, SHARDS, &recording, &lost).await);
            lost_examples = lost;
        }
        Err(e) => notes.push(format!("store audit: no NATS connection: {e}")),
    }
    let fmt = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.0}"));
    notes.push(format!(
        "F_pub (largest PUBACK gap): publishers that started on node1/node2 {} ms, all {} ms",
        fmt(pub_gap_ms(&recording, |p| p as usize % NODES != 2)),
        fmt(report.f_pub_max_gap_ms)
    ));
    for example in inversion_examples(&recording, 5) {
        notes.push(format!("inversion: {example}"));
    }
    rig.keep_logs(&load.client_prefix);
    notes.extend(log_alarms(&rig.nodes));
    notes.extend(lost_subscribers_in_logs(
        &rig.nodes,
        &report,
        &load.client_prefix,
    ));
    notes.extend(lost_publishes_in_logs(
        &rig.nodes,
        &recording,
        &lost_examples,
        load.payload_size,
        &load.client_prefix,
    ));
    let figures = vec![
        (
            "node3 closed the last probe session".to_string(),
            slowest_refusal,
        ),
        (
            "F_pub publishers that started on node1/node2".to_string(),
            pub_gap_ms(&recording, |p| p as usize % NODES != 2).unwrap_or(0.0),
        ),
        ("dual-owner samples".to_string(), dual.len() as f64),
    ];
    Ok(Outcome {
        report: Some(report),
        notes,
        violations,
        figures,
    })
}
