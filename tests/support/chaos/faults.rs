//! Faults of the NATS side, on the cluster rig of [`super::cluster`] (docs/chaos.md):
//!
//! - S3: SIGKILL the nats-server leading the hot shard's stream (`FMQ_MSG_<k>` of the shard
//!   holding most of the load's topics), or, as the second variant, the one leading the
//!   session bucket (`KV_FMQ_SESS`);
//! - S4: SIGKILL a ferromq node and the nats-server of the same "machine" together (the
//!   server leading the hot shard, and the node whose first NATS server it is).
//!
//! The victim is made a server that is not the JetStream meta leader and leads the target
//! stream (`$JS.API.STREAM.LEADER.STEPDOWN.<name>` with a preferred placement, checked with
//! `$JS.API.STREAM.INFO.<name>`), so that every run measures one stream election, not a
//! meta election as well. What else the victim leads when it dies is reported.
//!
//! The nodes run with `quorumLossTimeout="10s"` here (the default): shorter than a
//! JetStream election, a lost leader of the heartbeat bucket would be taken for the loss of
//! the quorum (docs/cluster.md).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::audit::audit;
use super::checker::check;
use super::cluster::{
    common_violations, inversion_examples, log_alarms, losses_in_logs, meta_leader, pub_gap_ms,
    stream_leaders, victim_subscriber_resumes, ClusterRig, Outcome, NODES, SHARDS,
};
use super::load::{run, LoadConfig};
use super::mqtt::{client, ClientSettings, MqttEvent, Protocol};
use super::single::BrokerProgram;

/// Node timings of S3 and S4: the rig's short heartbeats and node timeout, and the default
/// `quorumLossTimeout` of 10 s, longer than a JetStream leader election; `storeTimeout` is
/// the engine's default (5 s) unless `FERROMQ_CHAOS_STORE_TIMEOUT` gives one (`15s`).
pub fn election_timings() -> String {
    let store = std::env::var("FERROMQ_CHAOS_STORE_TIMEOUT")
        .map(|t| format!(r#" storeTimeout="{t}""#))
        .unwrap_or_default();
    format!(
        r#"replicas="3" heartbeatInterval="200ms" quorumLossTimeout="10s" nodeTimeout="3s"{store}"#
    )
}

/// The session bucket's stream.
pub const SESSIONS_STREAM: &str = "KV_FMQ_SESS";

/// Which stream's leader S3 kills.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum S3Target {
    /// `FMQ_MSG_<k>` of the load's busiest shard.
    HotShard,
    /// `KV_FMQ_SESS`.
    Sessions,
}

/// The shard holding most of the load's publisher topics (ties: the lowest), and the
/// publishers whose topic is in it. Every publisher publishes at the same rate, so it is
/// the shard with the most traffic.
pub fn hot_shard(load: &LoadConfig) -> (usize, Vec<u32>) {
    let plan = load.plan();
    let shards: Vec<usize> = plan
        .publisher_topics
        .iter()
        .map(|t| ferromq::cluster::shard_of(t, SHARDS))
        .collect();
    let mut counts = [0usize; SHARDS];
    for k in &shards {
        counts[*k] += 1;
    }
    let hot = (0..SHARDS)
        .max_by_key(|k| (counts[*k], SHARDS - k))
        .unwrap_or(0);
    let publishers = (0u32..)
        .zip(&shards)
        .filter(|(_, k)| **k == hot)
        .map(|(p, _)| p)
        .collect();
    (hot, publishers)
}

/// The raft leader of `stream` (`$JS.API.STREAM.INFO.<stream>`).
pub async fn leader_of(client: &async_nats::Client, stream: &str) -> Option<String> {
    let js = async_nats::jetstream::new(client.clone());
    let mut stream = js.get_stream(stream).await.ok()?;
    let info = stream.info().await.ok()?;
    info.cluster.as_ref()?.leader.clone()
}

/// Make `server` lead `stream`: step-downs preferring it until the stream's info names it
/// (20 s bound). Returns the step-downs taken.
pub async fn make_leader(
    client: &async_nats::Client,
    stream: &str,
    server: &str,
) -> Result<usize, String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut stepdowns = 0;
    loop {
        let leader = leader_of(client, stream).await;
        if leader.as_deref() == Some(server) {
            return Ok(stepdowns);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{stream} still led by {leader:?} after {stepdowns} step-downs preferring {server}"
            ));
        }
        if leader.is_some() {
            let body = format!(r#"{{"placement":{{"preferred":"{server}"}}}}"#);
            let _ = client
                .request(
                    format!("$JS.API.STREAM.LEADER.STEPDOWN.{stream}"),
                    body.into(),
                )
                .await;
            stepdowns += 1;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Picks the victim server for `stream`: its leader when that is not the meta leader, else
/// the first other server, made its leader. Returns (server index, step-downs taken, the
/// meta leader's name).
async fn place_victim(
    rig: &ClusterRig,
    client: &async_nats::Client,
    stream: &str,
) -> std::io::Result<(usize, usize, String)> {
    let names: Vec<String> = (0..NODES)
        .map(|i| rig.nats.server(i).name.clone())
        .collect();
    let meta = meta_leader(rig.nats.server(0).http_port)
        .ok_or_else(|| std::io::Error::other("no meta leader in /jsz"))?;
    let leader = leader_of(client, stream).await;
    let target = match leader {
        Some(l) if l != meta => l,
        _ => names
            .iter()
            .find(|n| **n != meta)
            .cloned()
            .ok_or_else(|| std::io::Error::other("every server is the meta leader"))?,
    };
    let stepdowns = make_leader(client, stream, &target)
        .await
        .map_err(std::io::Error::other)?;
    let victim = names
        .iter()
        .position(|n| *n == target)
        .ok_or_else(|| std::io::Error::other(format!("no server named {target}")))?;
    Ok((victim, stepdowns, meta))
}

/// The streams `server` leads now.
async fn led_by(client: &async_nats::Client, server: &str) -> Vec<String> {
    let js = async_nats::jetstream::new(client.clone());
    let mut led: Vec<String> = stream_leaders(&js)
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|(_, leader)| leader.as_deref() == Some(server))
        .map(|(name, _)| name)
        .collect();
    led.sort();
    led
}

/// A persistent-session CONNECT every 250 ms (a new client id each time, so each one
/// creates its session record in `FMQ_SESS`) on one node: how long each took to its
/// CONNACK, from the run's start. Measures how long session writes stall.
struct ConnectProbe {
    stop: Arc<AtomicBool>,
    /// (ms since the probe started, ms to CONNACK or to the failure, accepted).
    samples: Arc<Mutex<Vec<(f64, f64, bool)>>>,
    task: tokio::task::JoinHandle<()>,
    started: Instant,
}

impl ConnectProbe {
    fn start(address: std::net::SocketAddr, prefix: String) -> ConnectProbe {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let started = Instant::now();
        let task = {
            let stop = stop.clone();
            let samples = samples.clone();
            tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let settings = ClientSettings {
                        protocol: Protocol::V311,
                        client_id: format!("{prefix}-connect-probe-{n}"),
                        keep_alive: Duration::from_secs(5),
                        connect_timeout_s: 20,
                    };
                    let at = started.elapsed().as_secs_f64() * 1000.0;
                    let begin = Instant::now();
                    let (c, mut connection) = client(&settings, address);
                    let accepted = loop {
                        match tokio::time::timeout(Duration::from_secs(20), connection.poll()).await
                        {
                            Ok(Ok(MqttEvent::ConnAck { .. })) => break true,
                            Ok(Ok(_)) => continue,
                            Ok(Err(_)) | Err(_) => break false,
                        }
                    };
                    samples
                        .lock()
                        .push((at, begin.elapsed().as_secs_f64() * 1000.0, accepted));
                    if accepted {
                        let _ = c.try_disconnect();
                        let _ = tokio::time::timeout(Duration::from_millis(500), connection.poll())
                            .await;
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            })
        };
        ConnectProbe {
            stop,
            samples,
            task,
            started,
        }
    }

    /// Stops the probe; returns (CONNECTs, refused, the slowest CONNACK in ms of those
    /// answered `after` the probe started or later, and of those answered before).
    async fn finish(self, after: Duration) -> (usize, usize, f64, f64) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = tokio::time::timeout(Duration::from_secs(25), self.task).await;
        let samples = self.samples.lock().clone();
        let cut = after.as_secs_f64() * 1000.0;
        // A CONNECT in flight at the kill counts as after it.
        let slowest = |after_kill: bool| {
            samples
                .iter()
                .filter(|s| (s.0 + s.1 >= cut) == after_kill)
                .map(|s| s.1)
                .fold(0.0, f64::max)
        };
        (
            samples.len(),
            samples.iter().filter(|s| !s.2).count(),
            slowest(true),
            slowest(false),
        )
    }

    fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

/// S3: the nats-server leading `target`'s stream (made a server that is not the meta leader)
/// is SIGKILLed `kill_at` into publishing; the ferromq nodes stay. Must: L = 0, O = 0.
/// Reported: F_pub of the hot shard's publishers and of all, the stall at the kill, the
/// slowest persistent CONNECT (a probe on node 2) after the kill, what the victim led.
pub async fn s3_kill_leader_server(
    program: BrokerProgram,
    load: &LoadConfig,
    kill_at: Duration,
    target: S3Target,
) -> std::io::Result<Outcome> {
    s3_kill_leader_server_with(program, load, kill_at, target, &election_timings()).await
}

/// The publishers whose topic's shard stream is not in `led` (the streams the victim led
/// when it died): the ones a stream election must not hold.
pub fn publishers_off(load: &LoadConfig, led: &[String]) -> Vec<u32> {
    (0u32..)
        .zip(&load.plan().publisher_topics)
        .filter(|(_, topic)| {
            let stream = ferromq::cluster::shard_stream(ferromq::cluster::shard_of(topic, SHARDS));
            !led.contains(&stream)
        })
        .map(|(p, _)| p)
        .collect()
}

/// [`s3_kill_leader_server`] with the nodes' cluster attributes given (`timings`, such as
/// [`election_timings`] with a `storeTimeout`).
pub async fn s3_kill_leader_server_with(
    program: BrokerProgram,
    load: &LoadConfig,
    kill_at: Duration,
    target: S3Target,
    timings: &str,
) -> std::io::Result<Outcome> {
    let timings = timings.to_string();
    let rig = ClusterRig::start(program, &timings).await?;
    let client = async_nats::connect(rig.nats.client_urls())
        .await
        .map_err(std::io::Error::other)?;
    let (hot, hot_publishers) = hot_shard(load);
    let stream = match target {
        S3Target::HotShard => ferromq::cluster::shard_stream(hot),
        S3Target::Sessions => SESSIONS_STREAM.to_string(),
    };
    let (victim, stepdowns, meta) = place_victim(&rig, &client, &stream).await?;
    let victim_name = rig.nats.server(victim).name.clone();
    let pid = server_pid(&rig, victim)?;
    let probe = ConnectProbe::start(rig.nodes[1].address, load.client_prefix.clone());
    let probe_kill = Arc::new(Mutex::new(None::<Duration>));
    let led = Arc::new(Mutex::new(Vec::new()));
    let recording = {
        let probe_kill = probe_kill.clone();
        let probe_started = probe.started;
        let led = led.clone();
        let client = client.clone();
        let victim_name = victim_name.clone();
        run(load, &rig.addresses(), kill_at, move |faults| async move {
            *led.lock() = led_by(&client, &victim_name).await;
            faults.mark(&format!("SIGKILL nats-server {victim_name}"));
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            *probe_kill.lock() = Some(probe_started.elapsed());
        })
        .await
    };
    let after = probe_kill.lock().unwrap_or_else(|| probe.elapsed());
    let (connects, refused, slowest_after, slowest_before) = probe.finish(after).await;
    let new_leader = leader_of(&client, &stream).await;
    let report = check(&recording);
    let violations = common_violations(&report, true);
    let hot_gap = pub_gap_ms(&recording, |p| hot_publishers.contains(&p));
    let led_at_kill = led.lock().clone();
    let off = publishers_off(load, &led_at_kill);
    let off_gap = pub_gap_ms(&recording, |p| off.contains(&p));
    let fmt = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.0}"));
    let mut notes = vec![
        format!(
            "victim {victim_name} led {stream} ({stepdowns} step-downs to place it; meta leader \
             {meta}); at the kill it led {:?}; after the run {stream} is led by {}",
            led.lock(),
            new_leader.as_deref().unwrap_or("nobody")
        ),
        format!(
            "hot shard {hot} (publishers {hot_publishers:?}): F_pub {} ms; publishers of \
             shards the victim did not lead ({off:?}): F_pub {} ms; all publishers: F_pub {} ms",
            fmt(hot_gap),
            fmt(off_gap),
            fmt(report.f_pub_max_gap_ms)
        ),
        format!(
            "persistent CONNECT probe on node2: {connects} CONNECTs, {refused} refused; slowest \
             CONNACK before the kill {slowest_before:.0} ms, from the kill on {slowest_after:.0} ms"
        ),
    ];
    for example in inversion_examples(&recording, 5) {
        notes.push(format!("inversion: {example}"));
    }
    let (audit_line, stored_inversions) = audit(&client, SHARDS, &recording).await;
    notes.push(audit_line);
    notes.push(format!("node timings: {timings}"));
    rig.keep_logs(&load.client_prefix);
    notes.extend(log_alarms(&rig.nodes));
    notes.extend(losses_in_logs(&rig.nodes, &report, &recording, load));
    let mut figures = vec![(
        "F_pub all publishers".to_string(),
        report.f_pub_max_gap_ms.unwrap_or(0.0),
    )];
    if target == S3Target::HotShard {
        figures.push(("F_pub hot shard".into(), hot_gap.unwrap_or(0.0)));
    }
    if let Some(gap) = off_gap {
        figures.push(("F_pub shards the victim did not lead".into(), gap));
    }
    if let Some(n) = stored_inversions {
        figures.push(("stored out of order".into(), n as f64));
    }
    figures.push((
        "slowest persistent CONNECT from the kill".into(),
        slowest_after,
    ));
    Ok(Outcome {
        report: Some(report),
        notes,
        violations,
        figures,
    })
}

fn server_pid(rig: &ClusterRig, i: usize) -> std::io::Result<rustix::process::Pid> {
    rig.nats
        .pid(i)
        .and_then(|p| i32::try_from(p).ok())
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| std::io::Error::other("the victim server is not running"))
}

/// S4: one "machine" dies: the nats-server leading the hot shard (made a server that is not
/// the meta leader) and the ferromq node whose first NATS server it is are SIGKILLed
/// together `kill_at` into publishing. Must: L = 0 (O reported). Reported: F_pub of the
/// surviving publishers of the hot shard and of the others, the killed node's subscribers'
/// resumes.
pub async fn s4_kill_machine(
    program: BrokerProgram,
    load: &LoadConfig,
    kill_at: Duration,
) -> std::io::Result<Outcome> {
    let timings = election_timings();
    let rig = ClusterRig::start(program, &timings).await?;
    let client = async_nats::connect(rig.nats.client_urls())
        .await
        .map_err(std::io::Error::other)?;
    let (hot, hot_publishers) = hot_shard(load);
    let stream = ferromq::cluster::shard_stream(hot);
    let (victim, stepdowns, meta) = place_victim(&rig, &client, &stream).await?;
    let victim_name = rig.nats.server(victim).name.clone();
    let node = rig.nodes[victim].clone();
    let pid = server_pid(&rig, victim)?;
    let led = Arc::new(Mutex::new(Vec::new()));
    let recording = {
        let led = led.clone();
        let client = client.clone();
        let victim_name = victim_name.clone();
        let node = node.clone();
        run(load, &rig.addresses(), kill_at, move |faults| async move {
            *led.lock() = led_by(&client, &victim_name).await;
            faults.mark(&format!(
                "SIGKILL {} + nats-server {victim_name}",
                node.name
            ));
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            node.kill();
        })
        .await
    };
    let report = check(&recording);
    let mut violations = common_violations(&report, false);
    let kill_us = recording.faults.first().map_or(0, |f| f.t_us);
    let (subs, resumed, with_session) = victim_subscriber_resumes(&recording, victim, kill_us);
    if resumed < subs || with_session < subs {
        violations.push(format!(
            "{}'s subscribers: {resumed}/{subs} resumed, {with_session} with session present",
            node.name
        ));
    }
    let on_victim = |p: u32| p as usize % NODES == victim;
    let hot_gap = pub_gap_ms(&recording, |p| hot_publishers.contains(&p) && !on_victim(p));
    let other_gap = pub_gap_ms(&recording, |p| {
        !hot_publishers.contains(&p) && !on_victim(p)
    });
    let led_at_kill = led.lock().clone();
    let off = publishers_off(load, &led_at_kill);
    let off_gap = pub_gap_ms(&recording, |p| off.contains(&p) && !on_victim(p));
    let fmt = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.0}"));
    let resume_ms = report
        .faults
        .first()
        .and_then(|f| f.resume_max_ms)
        .map_or("-".into(), |v| format!("{v:.0}"));
    let mut notes = vec![
        format!(
            "machine {}: {} + {victim_name}, which led {stream} ({stepdowns} step-downs; meta \
             leader {meta}); at the kill it led {:?}",
            victim + 1,
            node.name,
            led.lock()
        ),
        format!(
            "F_pub (largest PUBACK gap) of publishers not on {}: hot shard {hot} {} ms, other \
             shards {} ms (shards the victim did not lead {} ms); all {} ms",
            node.name,
            fmt(hot_gap),
            fmt(other_gap),
            fmt(off_gap),
            fmt(report.f_pub_max_gap_ms)
        ),
        format!(
            "{}'s persistent subscribers: {subs}, resumed {resumed}, session present \
             {with_session}; slowest client back {resume_ms} ms after the kill",
            node.name
        ),
    ];
    for example in inversion_examples(&recording, 5) {
        notes.push(format!("inversion: {example}"));
    }
    let (audit_line, stored_inversions) = audit(&client, SHARDS, &recording).await;
    notes.push(audit_line);
    notes.push(format!("node timings: {timings}"));
    rig.keep_logs(&load.client_prefix);
    notes.extend(log_alarms(&rig.nodes));
    notes.extend(losses_in_logs(&rig.nodes, &report, &recording, load));
    let mut figures = vec![
        (
            "F_pub hot shard, surviving publishers".to_string(),
            hot_gap.unwrap_or(0.0),
        ),
        (
            "F_pub other shards, surviving publishers".to_string(),
            other_gap.unwrap_or(0.0),
        ),
    ];
    if let Some(gap) = off_gap {
        figures.push((
            "F_pub shards the victim did not lead, surviving publishers".into(),
            gap,
        ));
    }
    if let Some(n) = stored_inversions {
        figures.push(("stored out of order".into(), n as f64));
    }
    Ok(Outcome {
        report: Some(report),
        notes,
        violations,
        figures,
    })
}
