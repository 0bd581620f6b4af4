//! The cluster rig of the chaos harness: a 3-server NATS JetStream cluster and 3 ferromq
//! nodes over it (short node timings), the QoS 1 load spread over the 3 nodes' addresses, and
//! the cluster scenarios built on it (docs/chaos.md):
//!
//! - S1: SIGKILL one ferromq node under load;
//! - S2: SIGKILL a nats-server that leads nothing (stream and bucket leaders moved off it first);
//! - S6: SIGSTOP a ferromq node for 10 s, then SIGCONT (a zombie owner);
//! - S9: many idle persistent sessions; JetStream consumers stay O(shards); kill the node
//!   holding a third of them, and all resume on the others.
//!
//! Each returns an [`Outcome`]: the checker's report, figures only this scenario has, and the
//! pass criteria it broke.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

// Included here too (a test binary's support module may hold them already), so that the
// harness stays self-contained for the example.
#[allow(clippy::duplicate_mod)]
#[path = "../cluster_nodes.rs"]
pub mod cluster_nodes;
#[allow(clippy::duplicate_mod)]
#[path = "../nats.rs"]
pub mod nats;

use super::checker::{check, Report};
use super::load::{run, LoadConfig};
use super::mqtt::{client, ClientSettings, MqttEvent, Protocol};
use super::recorder::{ClientRef, Recording};
use super::single::{free_port, BrokerProgram};
use nats::NatsCluster;

/// Node timings short enough for a chaos run: a dead node is known within 3 s.
pub const FAST_TIMINGS: &str =
    r#"replicas="3" heartbeatInterval="200ms" quorumLossTimeout="2s" nodeTimeout="3s""#;
/// Message shards of the rig (the default).
pub const SHARDS: usize = 8;
/// ferromq nodes (and nats-servers) of the rig.
pub const NODES: usize = 3;

/// What a cluster scenario run gives: the checker's report (S9 has none), lines of figures
/// only this scenario measures, and every pass criterion the run broke.
#[derive(Debug, Default)]
pub struct Outcome {
    pub report: Option<Report>,
    pub notes: Vec<String>,
    pub violations: Vec<String>,
    /// Named figures of the run (ms), summarised over runs (p50, p99, max) by the example.
    pub figures: Vec<(String, f64)>,
}

/// The nodes' log level: `FERROMQ_CHAOS_LOG_LEVEL`, default `warn` (what S6 reads), the
/// session claims at debug (a few lines per CONNECT: which record a claim found, what it
/// decided), which [`lost_subscribers_in_logs`] shows when a subscriber lost messages, and the
/// commits and store acknowledgements at debug (a few lines per QoS 1 publish), which
/// [`lost_publishes_in_logs`] shows when an acknowledged message was lost.
fn log_level() -> String {
    std::env::var("FERROMQ_CHAOS_LOG_LEVEL")
        .unwrap_or_else(|_| "warn,ferromq::cluster::sessions=debug,ferromq::store_ack=debug".into())
}

/// One ferromq node process, started from a configuration file; its stderr (warn level) goes
/// to a log file the scenario reads. Killed when dropped.
pub struct NodeProcess {
    pub name: String,
    program: BrokerProgram,
    config: PathBuf,
    log: PathBuf,
    pub address: SocketAddr,
    child: Mutex<Option<Child>>,
    /// The network namespace the node runs in (`ip netns exec`), for partitions.
    netns: Option<String>,
}

impl NodeProcess {
    /// A node not started yet ([`NodeProcess::spawn`] starts it), run inside network
    /// namespace `netns` when given (`ip netns exec`, which execs: the pid is the node's).
    pub fn new(
        name: String,
        program: BrokerProgram,
        config: PathBuf,
        log: PathBuf,
        address: SocketAddr,
        netns: Option<String>,
    ) -> NodeProcess {
        NodeProcess {
            name,
            program,
            config,
            log,
            address,
            child: Mutex::new(None),
            netns,
        }
    }

    pub fn spawn(&self) -> std::io::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut command = match &self.netns {
            Some(netns) => {
                let mut command = Command::new("ip");
                command
                    .args(["netns", "exec", netns])
                    .arg(&self.program.path);
                command
            }
            None => Command::new(&self.program.path),
        };
        let child = command
            .envs(self.program.env.iter().cloned())
            .args(["run", "--config"])
            .arg(&self.config)
            .args(["--log-level", &log_level()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        *self.child.lock() = Some(child);
        Ok(())
    }

    /// SIGKILL the node (the process this rig started, by pid) and reap it.
    pub fn kill(&self) {
        if let Some(mut child) = self.child.lock().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM (a graceful drain) and wait for the exit, at most `within` (then SIGKILL);
    /// the exit status when it exited by itself.
    pub async fn terminate(&self, within: Duration) -> Option<std::process::ExitStatus> {
        if let Some(child) = self.child.lock().as_ref() {
            nats::signal(child, rustix::process::Signal::TERM);
        }
        let give_up = tokio::time::Instant::now() + within;
        while tokio::time::Instant::now() < give_up {
            let exited = match self.child.lock().as_mut() {
                Some(child) => child.try_wait().ok().flatten(),
                None => return None,
            };
            if let Some(status) = exited {
                self.child.lock().take();
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.kill();
        None
    }

    /// Start the node again (same configuration, port and log).
    pub fn restart(&self) -> std::io::Result<()> {
        self.spawn()
    }

    /// SIGSTOP: the node keeps its sockets and does nothing.
    pub fn pause(&self) {
        if let Some(child) = self.child.lock().as_ref() {
            nats::signal(child, rustix::process::Signal::STOP);
        }
    }

    /// SIGCONT.
    pub fn resume(&self) {
        if let Some(child) = self.child.lock().as_ref() {
            nats::signal(child, rustix::process::Signal::CONT);
        }
    }

    /// The node's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log's first panics and ERROR lines (at most `max`), each prefixed with the node's
    /// name: a failing scenario's message then says what the nodes saw, where a CI page shows
    /// nothing else of their logs.
    pub fn alarms(&self, max: usize) -> Vec<String> {
        self.log_text()
            .lines()
            .filter(|line| line.contains("panicked") || line.contains(" ERROR "))
            .take(max)
            .map(|line| {
                format!(
                    "{} log: {}",
                    self.name,
                    line.chars().take(300).collect::<String>()
                )
            })
            .collect()
    }

    /// Waits until the node accepts TCP connections (at most `within`), or its process exits.
    pub async fn wait_listening(&self, within: Duration) -> bool {
        let give_up = tokio::time::Instant::now() + within;
        while tokio::time::Instant::now() < give_up {
            if let Some(child) = self.child.lock().as_mut() {
                if let Ok(Some(_)) = child.try_wait() {
                    return false;
                }
            }
            if tokio::net::TcpStream::connect(self.address).await.is_ok() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.resume();
        self.kill();
    }
}

/// 3 nats-servers and 3 ferromq nodes `node1..3` over them.
pub struct ClusterRig {
    pub nats: NatsCluster,
    pub nodes: Vec<Arc<NodeProcess>>,
    _dir: tempfile::TempDir,
}

impl ClusterRig {
    /// Starts the NATS cluster, then node 1 (it creates the streams and buckets), then nodes 2
    /// and 3; every node serving MQTT. `attributes` are the `<ferromq:jetStream>` attributes
    /// besides `servers` ([`FAST_TIMINGS`]).
    pub async fn start(program: BrokerProgram, attributes: &str) -> std::io::Result<ClusterRig> {
        if nats::nats_server_binary().is_none() {
            return Err(std::io::Error::other(nats::SKIP_MESSAGE));
        }
        let nats = NatsCluster::start(NODES).await;
        let dir = tempfile::tempdir()?;
        let urls = nats.client_urls();
        let mut nodes = Vec::new();
        for i in 0..NODES {
            let name = format!("node{}", i + 1);
            let port = free_port()?;
            let data = dir.path().join(&name);
            std::fs::create_dir_all(&data)?;
            let config = dir.path().join(format!("{name}.xml"));
            // Each node's first server differs, so the nodes' NATS connections spread.
            let mut servers = urls.clone();
            servers.rotate_left(i);
            std::fs::write(
                &config,
                cluster_nodes::node_xml_with(&name, port, &servers, &data, attributes),
            )?;
            let node = NodeProcess {
                log: dir.path().join(format!("{name}.log")),
                name,
                program: program.clone(),
                config,
                address: ([127, 0, 0, 1], port).into(),
                child: Mutex::new(None),
                netns: None,
            };
            node.spawn()?;
            nodes.push(Arc::new(node));
            if i == 0 && !nodes[0].wait_listening(Duration::from_secs(60)).await {
                return Err(std::io::Error::other(format!(
                    "node1 did not serve MQTT:\n{}",
                    nodes[0].log_text()
                )));
            }
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
        Ok(ClusterRig {
            nats,
            nodes,
            _dir: dir,
        })
    }

    /// When `FERROMQ_CHAOS_KEEP_LOGS` names a directory, copy every node's log there as
    /// `<label>-nodeN.log` (the rig's own directory goes with it).
    pub fn keep_logs(&self, label: &str) {
        let Some(dir) = std::env::var_os("FERROMQ_CHAOS_KEEP_LOGS") else {
            return;
        };
        let dir = PathBuf::from(dir);
        let _ = std::fs::create_dir_all(&dir);
        for node in &self.nodes {
            let _ = std::fs::copy(&node.log, dir.join(format!("{label}-{}.log", node.name)));
        }
    }

    /// Every node's MQTT address, in order (load client `i` starts on node `i mod 3`).
    pub fn addresses(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|n| n.address).collect()
    }
}

/// Every node's [`NodeProcess::alarms`] (four at most each), for a scenario's notes.
pub fn log_alarms(nodes: &[Arc<NodeProcess>]) -> Vec<String> {
    nodes.iter().flat_map(|node| node.alarms(4)).collect()
}

/// What each node logged about the subscribers that lost messages (at most 6 lines per node
/// and subscriber): a failing scenario's message then carries the claims, fencings and
/// catch-up retries of the sessions that lost, where a CI page shows nothing else of the logs.
pub fn lost_subscribers_in_logs(
    nodes: &[Arc<NodeProcess>],
    report: &Report,
    client_prefix: &str,
) -> Vec<String> {
    let mut lines = Vec::new();
    for span in report.lost_by_subscriber.iter().take(3) {
        let client_id = format!("{client_prefix}-sub-{}", span.subscriber);
        let needle = format!("client_id={client_id}");
        for node in nodes {
            let log = node.log_text();
            let about: Vec<&str> = log.lines().filter(|l| l.contains(&needle)).collect();
            // The first and the last lines: how it began and where it stopped.
            let shown = about
                .iter()
                .take(3)
                .chain(about.iter().skip(3.max(about.len().saturating_sub(3))));
            for line in shown {
                lines.push(format!(
                    "{} log about {client_id} ({} lines): {}",
                    node.name,
                    about.len(),
                    line.chars().take(300).collect::<String>()
                ));
            }
        }
    }
    lines
}

/// What the nodes logged about the subscribers that lost messages and about the first lost
/// messages (see [`lost_subscribers_in_logs`], [`lost_publishes_in_logs`]): a failing
/// scenario's notes.
pub fn losses_in_logs(
    nodes: &[Arc<NodeProcess>],
    report: &Report,
    recording: &Recording,
    load: &LoadConfig,
) -> Vec<String> {
    let mut lines = lost_subscribers_in_logs(nodes, report, &load.client_prefix);
    lines.extend(lost_publishes_in_logs(
        nodes,
        recording,
        &lost_publishes(report),
        load.payload_size,
        &load.client_prefix,
    ));
    lines
}

/// The lost messages of `report`'s examples, `(publisher, seq)`, each once.
pub fn lost_publishes(report: &Report) -> Vec<(u32, u64)> {
    let mut lost: Vec<(u32, u64)> = report
        .lost_examples
        .iter()
        .map(|l| (l.publisher, l.seq))
        .collect();
    lost.dedup();
    lost
}

/// What each node logged about the first lost messages (`(publisher, seq)`, at most 4, and
/// at most 10 lines per node and message): the commits of the message (found by the digest of
/// its payload), what the stream answered for the message ids they used, and what the ledger
/// did with them; with the publisher's CONNECTs and lost connections. A message PUBACKed
/// without a "commit acknowledged" line was acknowledged by no commit of it (the recorder
/// attributed another PUBACK to it); one with it and no stream holding it was taken back by
/// the store after its acknowledgement.
pub fn lost_publishes_in_logs(
    nodes: &[Arc<NodeProcess>],
    recording: &Recording,
    lost: &[(u32, u64)],
    payload_size: usize,
    client_prefix: &str,
) -> Vec<String> {
    let mut lines = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let logs: Vec<(String, String)> = nodes
        .iter()
        .map(|node| (node.name.clone(), node.log_text()))
        .collect();
    for &(publisher, seq) in lost.iter().filter(|key| seen.insert(**key)).take(4) {
        let Some(record) = recording
            .publishes
            .iter()
            .find(|p| p.publisher == publisher && p.seq == seq)
        else {
            continue;
        };
        let payload =
            super::recorder::encode_payload(publisher, seq, record.t_send_us, payload_size);
        let digest = format!("digest={:016x}", ferromq::cluster::payload_digest(&payload));
        let connects: Vec<(f64, usize, bool)> = recording
            .connects
            .iter()
            .filter(|c| c.client == ClientRef::Publisher(publisher))
            .map(|c| (c.t_us as f64 / 1000.0, c.address, c.session_present))
            .collect();
        let losses: Vec<(f64, usize)> = recording
            .disconnects
            .iter()
            .filter(|d| d.client == ClientRef::Publisher(publisher))
            .map(|d| (d.t_us as f64 / 1000.0, d.address))
            .collect();
        lines.push(format!(
            "lost publish p{publisher} seq {seq}: sent at {:.1} ms, PUBACK at {:?} ms ({:?}), \
             {digest}; publisher's CONNECTs (ms, address, session present): {connects:?}; \
             lost connections (ms, address), first 10 and last 10: {:?} {:?}",
            record.t_send_us as f64 / 1000.0,
            record.t_puback_us.map(|t| t as f64 / 1000.0),
            record.acked_via,
            losses.iter().take(10).collect::<Vec<_>>(),
            losses
                .iter()
                .skip(losses.len().saturating_sub(10).max(10))
                .collect::<Vec<_>>()
        ));
        for (name, log) in &logs {
            // The message ids its commits used, then every line about those ids (stores
            // again use the id's first token with a suffix).
            let mut ids: Vec<String> = log
                .lines()
                .filter(|l| l.contains(&digest))
                .filter_map(|l| l.split(" id=").nth(1))
                .filter_map(|rest| rest.split([' ', '"']).next())
                .filter(|id| !id.is_empty())
                .map(str::to_owned)
                .collect();
            // A QoS 2 exchange's steps name its subject and held sequence: its release is
            // stored as `<subject>.r<held sequence>`.
            ids.extend(
                log.lines()
                    .filter(|l| l.contains(&digest))
                    .filter_map(release_id_of_exchange_line),
            );
            // What the publisher's PUBRELs found (QoS 2).
            let pubrels = format!("client_id={client_prefix}-pub-{publisher} ");
            let about: Vec<&str> = log
                .lines()
                .filter(|l| {
                    l.contains(&digest)
                        || ids.iter().any(|id| mentions_id(l, id))
                        || (l.contains(&pubrels) && l.contains("PUBREL"))
                })
                .collect();
            for line in about.iter().take(10) {
                lines.push(format!(
                    "{name} log about p{publisher} seq {seq} ({} lines): {}",
                    about.len(),
                    line.chars().take(300).collect::<String>()
                ));
            }
        }
    }
    lines
}

/// The message id of the release of the QoS 2 exchange a `QoS 2 ...` line of the store path
/// names (`subject=... seq=<held sequence>`).
fn release_id_of_exchange_line(line: &str) -> Option<String> {
    let field = |name: &str| {
        line.split(&format!(" {name}="))
            .nth(1)
            .and_then(|rest| rest.trim_start_matches('"').split([' ', '"']).next())
            .filter(|v| !v.is_empty())
    };
    Some(format!("{}.r{}", field("subject")?, field("seq")?))
}

/// Whether `line` names message id `id` itself or a fresh id derived from it (`<id>.<hex>`),
/// not a longer id that starts with it.
fn mentions_id(line: &str, id: &str) -> bool {
    line.match_indices(id).any(|(at, _)| {
        let after = line[at + id.len()..].chars().next();
        let before = line[..at].chars().next_back();
        matches!(before, Some('=' | '"')) && matches!(after, None | Some('"' | ' ' | '.'))
    })
}

/// The largest gap between consecutive PUBACKs of the publishers `keep` selects, ms.
pub fn pub_gap_ms(recording: &Recording, keep: impl Fn(u32) -> bool) -> Option<f64> {
    let mut acks: Vec<u64> = recording
        .publishes
        .iter()
        .filter(|p| keep(p.publisher))
        .filter_map(|p| p.t_puback_us)
        .collect();
    acks.sort_unstable();
    acks.windows(2)
        .map(|w| (w[1] - w[0]) as f64 / 1000.0)
        .reduce(f64::max)
}

/// Up to `limit` order inversions, described: a first delivery of `(publisher, seq)` to a
/// subscriber after a higher sequence of the same publisher, with both nodes (client index mod
/// 3 is the node it started on) and the receive time.
pub fn inversion_examples(recording: &Recording, limit: usize) -> Vec<String> {
    let mut deliveries: Vec<_> = recording.deliveries.iter().collect();
    deliveries.sort_by_key(|d| d.t_recv_us);
    let mut highest: std::collections::HashMap<(u32, u32), u64> = Default::default();
    let mut seen: std::collections::HashSet<(u32, u32, u64)> = Default::default();
    let mut examples = Vec::new();
    for d in deliveries {
        if !seen.insert((d.publisher, d.subscriber, d.seq)) {
            continue;
        }
        let top = highest.entry((d.publisher, d.subscriber)).or_insert(d.seq);
        if d.seq < *top && examples.len() < limit {
            examples.push(format!(
                "p{} (node{}) seq {} reached s{} (node{}) at {:.3} s after seq {} (dup flag {})",
                d.publisher,
                d.publisher as usize % NODES + 1,
                d.seq,
                d.subscriber,
                d.subscriber as usize % NODES + 1,
                d.t_recv_us as f64 / 1e6,
                top,
                d.dup
            ));
        }
        *top = (*top).max(d.seq);
    }
    examples
}

/// The pass criteria every cluster scenario shares: L = 0, nothing unexpected, and (when
/// `order` holds) O = 0.
pub fn common_violations(report: &Report, order: bool) -> Vec<String> {
    let mut violations = Vec::new();
    if report.lost > 0 {
        violations.push(format!("L = {} (must be 0)", report.lost));
    }
    if order && report.inversions > 0 {
        violations.push(format!("O = {} (must be 0)", report.inversions));
    }
    if report.unexpected > 0 {
        violations.push(format!("{} unexpected deliveries", report.unexpected));
    }
    if report.acked == 0 {
        violations.push("nothing was acknowledged".into());
    }
    if !report.present_at_first_connect.is_empty() {
        violations.push(format!(
            "session present at a first CONNECT: {:?}",
            report.present_at_first_connect
        ));
    }
    violations
}

/// The subscribers that started on node `victim` (index) whose first reconnect after
/// `after_us` had no session present, described (client, when, which node).
pub fn sessions_lost(
    recording: &Recording,
    victim: usize,
    after_us: u64,
    prefix: &str,
) -> Vec<String> {
    let mut lost = Vec::new();
    let subscribers = recording.plan.subscriber_filters.len() as u32;
    for j in (0..subscribers).filter(|j| *j as usize % NODES == victim) {
        let first = recording
            .connects
            .iter()
            .filter(|c| c.client == ClientRef::Subscriber(j) && c.reconnect && c.t_us > after_us)
            .min_by_key(|c| c.t_us);
        if let Some(c) = first.filter(|c| !c.session_present) {
            lost.push(format!(
                "{prefix}-sub-{j} (filter {}) reconnected {:.0} ms after the fault to node{} \
                 without session present",
                recording.plan.subscriber_filters[j as usize],
                (c.t_us - after_us) as f64 / 1000.0,
                c.address + 1
            ));
        }
    }
    lost
}

/// The subscribers that started on node `victim` (index): their reconnects after `after_us`,
/// and how many of those had session present.
pub fn victim_subscriber_resumes(
    recording: &Recording,
    victim: usize,
    after_us: u64,
) -> (usize, usize, usize) {
    let on_victim: Vec<u32> = (0..recording.plan.subscriber_filters.len() as u32)
        .filter(|j| *j as usize % NODES == victim)
        .collect();
    let mut resumed = 0;
    let mut with_session = 0;
    for j in &on_victim {
        let first = recording
            .connects
            .iter()
            .filter(|c| c.client == ClientRef::Subscriber(*j) && c.reconnect && c.t_us > after_us)
            .min_by_key(|c| c.t_us);
        if let Some(c) = first {
            resumed += 1;
            with_session += usize::from(c.session_present);
        }
    }
    (on_victim.len(), resumed, with_session)
}

/// S1: the load over the 3 nodes; `kill_at` into publishing node 1 is SIGKILLed (NATS intact)
/// and its clients move to nodes 2 and 3. Must: L = 0, O = 0, every subscriber of node 1
/// resumes with session present.
pub async fn s1_kill_node(
    program: BrokerProgram,
    load: &LoadConfig,
    kill_at: Duration,
) -> std::io::Result<Outcome> {
    let rig = ClusterRig::start(program, FAST_TIMINGS).await?;
    let victim = rig.nodes[0].clone();
    let recording = run(load, &rig.addresses(), kill_at, move |faults| async move {
        faults.mark("SIGKILL node1");
        victim.kill();
    })
    .await;
    let report = check(&recording);
    let mut violations = common_violations(&report, true);
    let kill_us = recording.faults.first().map_or(0, |f| f.t_us);
    let (subs, resumed, with_session) = victim_subscriber_resumes(&recording, 0, kill_us);
    if resumed < subs || with_session < subs {
        violations.push(format!(
            "node1's subscribers: {resumed}/{subs} resumed, {with_session} with session present"
        ));
    }
    let others = pub_gap_ms(&recording, |p| !(p as usize).is_multiple_of(NODES));
    let mut notes = vec![
        format!(
            "node1's persistent subscribers: {subs}, resumed {resumed}, session present {with_session}"
        ),
        format!(
            "F_pub of publishers on node2/node3 (largest PUBACK gap): {} ms",
            others.map_or("-".into(), |v| format!("{v:.0}"))
        ),
    ];
    for example in inversion_examples(&recording, 5) {
        notes.push(format!("inversion: {example}"));
    }
    for lost in sessions_lost(&recording, 0, kill_us, &load.client_prefix) {
        notes.push(format!("session lost: {lost}"));
    }
    rig.keep_logs(&load.client_prefix);
    notes.extend(log_alarms(&rig.nodes));
    notes.extend(losses_in_logs(&rig.nodes, &report, &recording, load));
    Ok(Outcome {
        report: Some(report),
        notes,
        violations,
        figures: Vec::new(),
    })
}

/// The meta leader's server name, from a server's `/jsz` monitoring page.
pub fn meta_leader(http_port: u16) -> Option<String> {
    let body = http_get(http_port, "/jsz")?;
    let json: serde_json::Value = serde_json::from_str(&body).ok()?;
    json.get("meta_cluster")?
        .get("leader")?
        .as_str()
        .map(str::to_string)
}

/// The body of a plain HTTP/1.0 GET on loopback (2 s bound).
fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    Some(text.split_once("\r\n\r\n")?.1.to_string())
}

/// Every stream's name and its raft leader's server name.
pub async fn stream_leaders(
    js: &async_nats::jetstream::Context,
) -> Result<Vec<(String, Option<String>)>, String> {
    use futures_util::TryStreamExt;
    let names: Vec<String> = js
        .stream_names()
        .try_collect()
        .await
        .map_err(|e| e.to_string())?;
    let mut leaders = Vec::new();
    for name in names {
        let mut stream = js.get_stream(&name).await.map_err(|e| e.to_string())?;
        let info = stream.info().await.map_err(|e| e.to_string())?;
        leaders.push((name, info.cluster.as_ref().and_then(|c| c.leader.clone())));
    }
    Ok(leaders)
}

/// Moves the leadership of every stream (message shards and KV buckets) off server `victim`
/// (`$JS.API.STREAM.LEADER.STEPDOWN.<stream>`, preferring `preferred`) until none is led there
/// (20 s bound). Returns how many step-downs it took and the first error a step-down answered.
async fn lead_nothing(
    client: &async_nats::Client,
    victim: &str,
    preferred: &str,
) -> Result<(usize, Option<String>), String> {
    let mut first_error = None;
    let js = async_nats::jetstream::new(client.clone());
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut stepdowns = 0;
    loop {
        let led: Vec<String> = stream_leaders(&js)
            .await?
            .into_iter()
            .filter(|(_, leader)| leader.as_deref() == Some(victim))
            .map(|(name, _)| name)
            .collect();
        if led.is_empty() {
            return Ok((stepdowns, first_error));
        }
        if Instant::now() > deadline {
            return Err(format!("{victim} still leads {led:?}"));
        }
        for name in led {
            let body = format!(r#"{{"placement":{{"preferred":"{preferred}"}}}}"#);
            let answer = client
                .request(
                    format!("$JS.API.STREAM.LEADER.STEPDOWN.{name}"),
                    body.into(),
                )
                .await;
            stepdowns += 1;
            let text = match answer {
                Ok(message) => String::from_utf8_lossy(&message.payload).into_owned(),
                Err(e) => format!("request failed: {e}"),
            };
            if first_error.is_none() && !text.contains(r#""success":true"#) {
                first_error = Some(text);
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// S2: a nats-server that is not the meta leader is made to lead no stream and no bucket
/// (step-downs, verified by each stream's info), then SIGKILLed `kill_at` into publishing.
/// Must: L = 0 (O reported).
pub async fn s2_kill_follower_server(
    program: BrokerProgram,
    load: &LoadConfig,
    kill_at: Duration,
) -> std::io::Result<Outcome> {
    let rig = ClusterRig::start(program, FAST_TIMINGS).await?;
    let names: Vec<String> = (0..NODES)
        .map(|i| rig.nats.server(i).name.clone())
        .collect();
    let meta = meta_leader(rig.nats.server(0).http_port)
        .ok_or_else(|| std::io::Error::other("no meta leader in /jsz"))?;
    let victim = (0..NODES)
        .rev()
        .find(|i| names[*i] != meta)
        .ok_or_else(|| std::io::Error::other("every server is the meta leader"))?;
    let preferred = names
        .iter()
        .find(|n| **n != names[victim])
        .cloned()
        .unwrap_or_default();
    let client = async_nats::connect(rig.nats.client_urls())
        .await
        .map_err(std::io::Error::other)?;
    let (stepdowns, stepdown_error) = lead_nothing(&client, &names[victim], &preferred)
        .await
        .map_err(std::io::Error::other)?;
    let mut notes = vec![format!(
        "victim {} (meta leader {meta}); {stepdowns} stream step-downs (preferring {preferred}) \
         before the load, every stream's info then names another leader; first refused \
         step-down: {}",
        names[victim],
        stepdown_error.as_deref().unwrap_or("none")
    )];
    // The hook kills by pid (the rig keeps the process handle and reaps it when dropped).
    let pid = rig
        .nats
        .pid(victim)
        .and_then(|p| i32::try_from(p).ok())
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| std::io::Error::other("the victim server is not running"))?;
    let recording = run(load, &rig.addresses(), kill_at, move |faults| async move {
        faults.mark("SIGKILL follower nats-server");
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    })
    .await;
    // After the run: who leads what among the survivors.
    let js = async_nats::jetstream::new(client.clone());
    if let Ok(leaders) = stream_leaders(&js).await {
        let missing = leaders.iter().filter(|(_, l)| l.is_none()).count();
        notes.push(format!(
            "after the kill: {} streams, {missing} without a leader",
            leaders.len()
        ));
    }
    let report = check(&recording);
    let violations = common_violations(&report, true);
    for example in inversion_examples(&recording, 5) {
        notes.push(format!("inversion: {example}"));
    }
    rig.keep_logs(&load.client_prefix);
    notes.extend(log_alarms(&rig.nodes));
    notes.extend(losses_in_logs(&rig.nodes, &report, &recording, load));
    notes.push(format!(
        "F_pub (largest PUBACK gap, all publishers): {} ms",
        report
            .f_pub_max_gap_ms
            .map_or("-".into(), |v| format!("{v:.0}"))
    ));
    Ok(Outcome {
        report: Some(report),
        notes,
        violations,
        figures: Vec::new(),
    })
}

/// S6: node 1 is SIGSTOPped `stop_at` into publishing for `paused`; its clients' keep-alive
/// (2 s here) makes them move to nodes 2 and 3, which take the sessions over; then SIGCONT.
/// Must: L = 0, and the woken node drops the sessions it no longer owns (its log says
/// "fenced" for them) instead of serving them further. O is reported (not a criterion of S6).
pub async fn s6_pause_node(
    program: BrokerProgram,
    load: &LoadConfig,
    stop_at: Duration,
    paused: Duration,
) -> std::io::Result<Outcome> {
    let rig = ClusterRig::start(program, FAST_TIMINGS).await?;
    let victim = rig.nodes[0].clone();
    let fenced_after = Arc::new(Mutex::new(None::<f64>));
    let load = LoadConfig {
        keep_alive: Duration::from_secs(2),
        ..load.clone()
    };
    let recording = {
        let victim = victim.clone();
        let fenced_after = fenced_after.clone();
        run(&load, &rig.addresses(), stop_at, move |faults| async move {
            faults.mark("SIGSTOP node1");
            victim.pause();
            tokio::time::sleep(paused).await;
            let before = victim.log_text().len();
            faults.mark("SIGCONT node1");
            victim.resume();
            let woke = Instant::now();
            // The time until the woken node logs that it dropped a session it no longer owns.
            while woke.elapsed() < Duration::from_secs(10) {
                let log = victim.log_text();
                if log
                    .get(before..)
                    .is_some_and(|new| new.contains("(fenced)"))
                {
                    *fenced_after.lock() = Some(woke.elapsed().as_secs_f64() * 1000.0);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
    };
    let report = check(&recording);
    let mut violations = common_violations(&report, false);
    let log = victim.log_text();
    let fenced = log.matches("(fenced)").count();
    let checked = log.contains("checking which sessions this node still owns");
    let cont_us = recording
        .faults
        .iter()
        .find(|f| f.name.starts_with("SIGCONT"))
        .map_or(0, |f| f.t_us);
    let stop_us = recording.faults.first().map_or(0, |f| f.t_us);
    // Clients of node 1 that moved while it was stopped: their sessions are now owned elsewhere.
    let moved: std::collections::HashSet<ClientRef> = recording
        .connects
        .iter()
        .filter(|c| c.reconnect && c.t_us > stop_us && c.t_us < cont_us && c.address != 0)
        .map(|c| c.client)
        .collect();
    let mut notes = vec![format!(
        "clients moved off node1 while it was stopped: {}; node1 after SIGCONT: verify-all {}, \
         {fenced} sessions fenced",
        moved.len(),
        if checked { "ran" } else { "did not run" }
    )];
    if !moved.is_empty() && fenced == 0 {
        violations.push(format!(
            "{} clients moved off node1 while it was stopped, and it fenced no session after \
             SIGCONT",
            moved.len()
        ));
    }
    for example in inversion_examples(&recording, 5) {
        notes.push(format!("inversion: {example}"));
    }
    rig.keep_logs(&load.client_prefix);
    notes.extend(log_alarms(&rig.nodes));
    notes.extend(losses_in_logs(&rig.nodes, &report, &recording, &load));
    notes.push(format!(
        "SIGCONT -> first fenced session: {} ms",
        fenced_after
            .lock()
            .map_or("- (none within 10 s)".into(), |v| format!("{v:.0}"))
    ));
    Ok(Outcome {
        report: Some(report),
        notes,
        violations,
        figures: Vec::new(),
    })
}

/// S9 options: sessions in all, and the bounds.
#[derive(Clone, Debug)]
pub struct StormConfig {
    pub sessions: usize,
    pub client_prefix: String,
    pub topic_prefix: String,
    /// All sessions of the killed node must resume within it.
    pub resume_within: Duration,
}

/// One idle persistent session's client: subscribes once, then stays; moves to the next node
/// when its connection fails. Reports (first CONNACK after `moved_after`, its session present
/// flag) and the failed connection attempts after the first loss.
struct StormClient {
    index: usize,
    addresses: Arc<[SocketAddr]>,
    settings: ClientSettings,
    filter: String,
}

#[derive(Default)]
struct StormShared {
    subscribed: AtomicUsize,
    /// Cancels every client's wait at once (a client never drops a connect in progress
    /// before it: that would open another connection for the same client id).
    stop: tokio_util::sync::CancellationToken,
    /// Failed connections before a client's first SUBACK (the storm's CONNECT errors).
    initial_errors: AtomicUsize,
    /// Per client: (µs from the kill to the CONNACK after it, session present).
    resumed: Mutex<Vec<(usize, f64, bool)>>,
    connect_errors: AtomicUsize,
    received: Mutex<std::collections::HashSet<usize>>,
    kill: Mutex<Option<Instant>>,
}

impl StormClient {
    async fn run(self, shared: Arc<StormShared>) {
        let mut current = self.index % self.addresses.len();
        let (client, mut connection) = client(&self.settings, self.addresses[current]);
        let mut subscribed = false;
        let mut lost_once = false;
        loop {
            let event = tokio::select! {
                event = connection.poll() => event,
                _ = shared.stop.cancelled() => break,
            };
            match event {
                Ok(MqttEvent::ConnAck { session_present }) => {
                    if !subscribed {
                        let _ = client.try_subscribe(&self.filter);
                    } else if let Some(kill) = *shared.kill.lock() {
                        shared.resumed.lock().push((
                            self.index,
                            kill.elapsed().as_secs_f64() * 1000.0,
                            session_present,
                        ));
                    }
                }
                Ok(MqttEvent::SubAck) => {
                    if !subscribed {
                        subscribed = true;
                        shared.subscribed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(MqttEvent::Publish { .. }) => {
                    shared.received.lock().insert(self.index);
                }
                Ok(_) => {}
                Err(_) if !subscribed => {
                    // Not placed yet: the same node again, so that a third of the sessions
                    // are on the node the storm kills.
                    shared.initial_errors.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(_) => {
                    if lost_once {
                        shared.connect_errors.fetch_add(1, Ordering::Relaxed);
                    }
                    lost_once = true;
                    current = (current + 1) % self.addresses.len();
                    connection.set_address(&self.settings, self.addresses[current]);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        let _ = client.try_disconnect();
        let _ = tokio::time::timeout(Duration::from_millis(500), connection.poll()).await;
    }
}

/// JetStream consumers on every stream of the cluster (`$JS.API.CONSUMER.NAMES.<stream>`).
pub async fn count_consumers(client: &async_nats::Client) -> Result<usize, String> {
    use futures_util::TryStreamExt;
    let js = async_nats::jetstream::new(client.clone());
    let names: Vec<String> = js
        .stream_names()
        .try_collect()
        .await
        .map_err(|e| e.to_string())?;
    let mut total = 0;
    for name in names {
        let stream = js.get_stream(&name).await.map_err(|e| e.to_string())?;
        let consumers: Vec<String> = stream
            .consumer_names()
            .try_collect()
            .await
            .map_err(|e| e.to_string())?;
        total += consumers.len();
    }
    Ok(total)
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Raises this process's soft limit of open files to its hard limit (the brokers it starts
/// inherit it): every storm client holds a socket here and one in a node. Returns the limit.
fn raise_open_files_limit() -> String {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        let _ = setrlimit(Resource::Nofile, limit);
    }
    getrlimit(Resource::Nofile)
        .current
        .map_or("unlimited".into(), |n| n.to_string())
}

/// S9 smoke: `sessions` idle persistent sessions (MQTT 3.1.1, clean session 0, one exact
/// filter each) spread over the 3 nodes; JetStream consumers counted (must stay at most
/// nodes x (shards + 1 + 8)); node 1, holding a third of them, is SIGKILLed; every one of its
/// sessions must resume with session present on the others within `resume_within`, and then
/// receive a QoS 1 message published to its filter.
pub async fn s9_session_storm(
    program: BrokerProgram,
    storm: &StormConfig,
) -> std::io::Result<Outcome> {
    let fds = raise_open_files_limit();
    let rig = ClusterRig::start(program, FAST_TIMINGS).await?;
    let nats_client = async_nats::connect(rig.nats.client_urls())
        .await
        .map_err(std::io::Error::other)?;
    let idle_consumers = count_consumers(&nats_client).await.unwrap_or(usize::MAX);
    let addresses: Arc<[SocketAddr]> = rig.addresses().into();
    let shared = Arc::new(StormShared::default());
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..storm.sessions {
        let c = StormClient {
            index: i,
            addresses: addresses.clone(),
            settings: ClientSettings {
                protocol: Protocol::V311,
                client_id: format!("{}-{i}", storm.client_prefix),
                keep_alive: Duration::from_secs(5),
                connect_timeout_s: 5,
            },
            filter: format!("{}/c{i}", storm.topic_prefix),
        };
        tasks.push(tokio::spawn(c.run(shared.clone())));
        if i % 50 == 49 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let mut violations = Vec::new();
    let mut notes = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while shared.subscribed.load(Ordering::Relaxed) < storm.sessions && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let subscribed = shared.subscribed.load(Ordering::Relaxed);
    notes.push(format!(
        "{subscribed}/{} sessions subscribed in {:.1} s; {} failed connections before a \
         SUBACK; open files limit {fds}",
        storm.sessions,
        started.elapsed().as_secs_f64(),
        shared.initial_errors.load(Ordering::Relaxed),
    ));
    if subscribed < storm.sessions {
        violations.push(format!(
            "only {subscribed}/{} sessions subscribed",
            storm.sessions
        ));
    }
    let bound = NODES * (SHARDS + 1 + 8);
    let busy_consumers = count_consumers(&nats_client).await.unwrap_or(usize::MAX);
    notes.push(format!(
        "JetStream consumers: {idle_consumers} before the sessions, {busy_consumers} with them \
         (bound {bound})"
    ));
    if busy_consumers > bound {
        violations.push(format!("{busy_consumers} consumers > {bound}"));
    }
    let victims: Vec<usize> = (0..storm.sessions)
        .filter(|i| i.is_multiple_of(NODES))
        .collect();
    *shared.kill.lock() = Some(Instant::now());
    rig.nodes[0].kill();
    let deadline = Instant::now() + storm.resume_within;
    while shared.resumed.lock().len() < victims.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Counted after the resumes settle (catch-up readers are temporary).
    let after_consumers = count_consumers(&nats_client).await.unwrap_or(usize::MAX);
    let resumed = shared.resumed.lock().clone();
    let mut times: Vec<f64> = resumed.iter().map(|r| r.1).collect();
    times.sort_by(f64::total_cmp);
    let with_session = resumed.iter().filter(|r| r.2).count();
    notes.push(format!(
        "node1's sessions: {}; resumed {} ({} with session present); resume ms from the kill: \
         p50 {:.0}, p90 {:.0}, p99 {:.0}, max {:.0}; failed connection attempts {}; consumers \
         after the resumes {after_consumers}",
        victims.len(),
        resumed.len(),
        with_session,
        percentile(&times, 0.5),
        percentile(&times, 0.9),
        percentile(&times, 0.99),
        times.last().copied().unwrap_or(f64::NAN),
        shared.connect_errors.load(Ordering::Relaxed),
    ));
    if resumed.len() < victims.len() || with_session < victims.len() {
        violations.push(format!(
            "{}/{} of node1's sessions resumed within {:?}, {with_session} with session present",
            resumed.len(),
            victims.len(),
            storm.resume_within
        ));
    }
    if after_consumers > bound {
        violations.push(format!(
            "{after_consumers} consumers after the resumes > {bound}"
        ));
    }
    // A QoS 1 message to each resumed session's filter, published on node 2.
    let publisher = ClientSettings {
        protocol: Protocol::V311,
        client_id: format!("{}-publisher", storm.client_prefix),
        keep_alive: Duration::from_secs(5),
        connect_timeout_s: 5,
    };
    let (pub_client, mut pub_connection) = client(&publisher, addresses[1]);
    for i in &victims {
        let _ = pub_client.try_publish(&format!("{}/c{i}", storm.topic_prefix), vec![1; 20]);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut acked = 0;
    while Instant::now() < deadline {
        if shared.received.lock().len() >= victims.len() && acked >= victims.len() {
            break;
        }
        match tokio::time::timeout(Duration::from_millis(200), pub_connection.poll()).await {
            Ok(Ok(MqttEvent::PubAck(_))) => acked += 1,
            Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
            _ => {}
        }
    }
    let received = victims
        .iter()
        .filter(|i| shared.received.lock().contains(i))
        .count();
    notes.push(format!(
        "after the resume: {acked} PUBACKs, {received}/{} resumed sessions received their message",
        victims.len()
    ));
    if received < victims.len() {
        violations.push(format!(
            "{} resumed sessions did not receive a message published to their filter",
            victims.len() - received
        ));
    }
    rig.keep_logs(&storm.client_prefix);
    notes.extend(log_alarms(&rig.nodes));
    shared.stop.cancel();
    for task in tasks {
        let _ = task.await;
    }
    let figures = vec![
        ("resume p50".to_string(), percentile(&times, 0.5)),
        ("resume p99".to_string(), percentile(&times, 0.99)),
        (
            "resume max".to_string(),
            times.last().copied().unwrap_or(f64::NAN),
        ),
        (
            "consumers with the sessions".to_string(),
            busy_consumers as f64,
        ),
    ];
    Ok(Outcome {
        report: None,
        notes,
        violations,
        figures,
    })
}

#[cfg(test)]
mod tests {
    use super::{mentions_id, release_id_of_exchange_line};

    #[test]
    fn a_qos2_exchange_line_names_the_id_of_its_release() {
        let held = r#"DEBUG ferromq::store_ack: QoS 2 releasing subject="fmq.m.0.$q2.ab.cd.7" seq=41 digest=00ff"#;
        assert_eq!(
            release_id_of_exchange_line(held).as_deref(),
            Some("fmq.m.0.$q2.ab.cd.7.r41")
        );
        let stored = r#"DEBUG ferromq::store_ack: stored stream=FMQ_MSG_0 seq=44 duplicate=false id="fmq.m.0.$q2.ab.cd.7.r41" subject="fmq.m.0.$q2.ab.cd.7""#;
        assert!(mentions_id(stored, "fmq.m.0.$q2.ab.cd.7.r41"));
        assert_eq!(release_id_of_exchange_line("commit id=x digest=00"), None);
    }

    #[test]
    fn a_message_id_is_found_with_its_fresh_copies_and_not_in_a_longer_id() {
        let stored = r#"DEBUG ferromq::store_ack: stored stream=FMQ_MSG_5 seq=9 duplicate=true id="4a-m1f" subject="fmq.m.5.t""#;
        assert!(mentions_id(stored, "4a-m1f"));
        assert!(!mentions_id(stored, "4a-m1"));
        let again = "WARN ferromq::store_ack: storing it again shard=5 seq=9 id=4a-m1f";
        assert!(mentions_id(again, "4a-m1f"));
        let fresh = r#"DEBUG ferromq::store_ack: stored again stream=FMQ_MSG_5 seq=12 duplicate=false id=4a-m1f.9c"#;
        assert!(mentions_id(fresh, "4a-m1f"));
        assert!(!mentions_id("commit id=x4a-m1f digest=00", "4a-m1f"));
    }
}
