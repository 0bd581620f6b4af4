//! Message-flow scenarios: fan-in, fan-out, pairs and fixed-rate latency. Connects every client
//! first, then starts the clock, publishes for the configured time, waits for the subscribers to
//! drain, and turns the outcomes into a report.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use crate::conn::{Conn, ConnectParams};
use crate::proc_stats::{self, CpuSample, Target};
use crate::publisher::{self, PublisherOutcome, PublisherPlan};
use crate::report::{BrokerReport, Latency, ProcessGroupReport, TrafficReport};
use crate::stomp_conn::{StompConn, StompParams};
use crate::subscriber::{self, Expected, SubscriberOutcome, SubscriberPlan};
use crate::{stomp_publisher, stomp_subscriber};

/// How long publishers wait for outstanding acknowledgements after the publishing window.
const DRAIN_GRACE: Duration = Duration::from_secs(5);
/// Once publishers are done, a subscriber that sees nothing new for this long stops waiting.
const QUIET: Duration = Duration::from_secs(2);

/// Who publishes where and who subscribes to what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// N publishers on their own topics, subscribers on a `+` wildcard covering all of them.
    FanIn,
    /// Every publisher on one topic, every subscriber on that topic.
    FanOut,
    /// Publisher i and subscriber i share topic i.
    Pairs,
    /// Every publisher on one topic, every subscriber a member of one shared subscription on
    /// it: each message is expected once across all members.
    Shared,
    /// Every publisher sends to one STOMP queue, every subscriber consumes from it (competing
    /// consumers): each message is expected once across all of them.
    Queue,
}

/// The protocol one side of a run speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Mqtt,
    Stomp,
}

pub struct TrafficSettings {
    pub params: ConnectParams,
    pub topology: Topology,
    pub publisher_protocol: Protocol,
    pub subscriber_protocol: Protocol,
    /// Set when either side speaks STOMP.
    pub stomp: Option<StompParams>,
    pub qos: u8,
    pub payload_bytes: usize,
    pub publishers: usize,
    pub subscribers: usize,
    pub max_messages: u64,
    pub duration: Duration,
    pub rate_per_sec: Option<f64>,
    pub batch: usize,
    pub inflight: usize,
    pub broker_pid: Option<u32>,
    /// MQTT publisher i connects to `publisher_addrs[i % len]`, subscriber i to
    /// `subscriber_addrs[i % len]` (several nodes of a cluster); empty: `params.addr`.
    pub publisher_addrs: Vec<SocketAddr>,
    pub subscriber_addrs: Vec<SocketAddr>,
    /// MQTT subscribers connect with clean session 0.
    pub persistent_subscribers: bool,
    /// Pause between the last SUBACK and the first publish (subscription interest spreading
    /// to the other nodes of a cluster).
    pub settle: Duration,
    /// `--cpu-pids`: named groups of processes whose CPU time the report gives.
    pub cpu_groups: Vec<(String, Vec<u32>)>,
    pub run_id: String,
}

impl TrafficSettings {
    /// The MQTT topic, or for STOMP the destination (ActiveMQ's mapping: `/topic/a.b` is the
    /// MQTT topic `a/b`, so mixed runs meet on the same topics).
    fn publish_topic(&self, publisher: usize) -> String {
        let run = &self.run_id;
        match (self.publisher_protocol, self.topology) {
            (Protocol::Mqtt, Topology::FanIn) => format!("lg/{run}/in/{publisher}"),
            (Protocol::Mqtt, Topology::FanOut) => format!("lg/{run}/out"),
            (Protocol::Mqtt, Topology::Pairs) => format!("lg/{run}/pair/{publisher}"),
            (Protocol::Mqtt, Topology::Shared) => format!("lg/{run}/shared"),
            (Protocol::Stomp, Topology::FanIn) => format!("/topic/lg.{run}.in.{publisher}"),
            (Protocol::Stomp, Topology::FanOut) => format!("/topic/lg.{run}.out"),
            (Protocol::Stomp, Topology::Pairs) => format!("/topic/lg.{run}.pair.{publisher}"),
            (Protocol::Stomp, Topology::Shared) => format!("/topic/lg.{run}.shared"),
            (_, Topology::Queue) => format!("/queue/lg.{run}.q"),
        }
    }

    fn subscribe_filter(&self, subscriber: usize) -> String {
        let run = &self.run_id;
        match (self.subscriber_protocol, self.topology) {
            (Protocol::Mqtt, Topology::FanIn) => format!("lg/{run}/in/+"),
            (Protocol::Mqtt, Topology::FanOut) => format!("lg/{run}/out"),
            (Protocol::Mqtt, Topology::Pairs) => format!("lg/{run}/pair/{subscriber}"),
            (Protocol::Mqtt, Topology::Shared) => format!("$share/lg{run}/lg/{run}/shared"),
            (Protocol::Stomp, Topology::FanIn) => format!("/topic/lg.{run}.in.*"),
            (Protocol::Stomp, Topology::FanOut) => format!("/topic/lg.{run}.out"),
            (Protocol::Stomp, Topology::Pairs) => format!("/topic/lg.{run}.pair.{subscriber}"),
            (Protocol::Stomp, Topology::Shared) => format!("/topic/lg.{run}.shared"),
            (_, Topology::Queue) => format!("/queue/lg.{run}.q"),
        }
    }

    /// The connection parameters of client `i` of a side whose addresses are `addrs`.
    fn params_for(&self, addrs: &[SocketAddr], i: usize) -> ConnectParams {
        let mut params = self.params.clone();
        if !addrs.is_empty() {
            params.addr = addrs[i % addrs.len()];
        }
        params
    }

    /// The publishers' acknowledgement level: the MQTT QoS, or for STOMP 1 with receipts.
    pub fn publisher_qos(&self) -> u8 {
        match (self.publisher_protocol, self.stomp) {
            (Protocol::Stomp, Some(stomp)) => u8::from(stomp.receipt),
            _ => self.qos,
        }
    }

    /// Members of one shared subscription, or consumers of one queue, share one expectation.
    fn grouped(&self) -> bool {
        matches!(self.topology, Topology::Shared | Topology::Queue)
    }

    /// Distinct messages subscriber `s` should receive given what each publisher sent (for a
    /// shared subscription: what its members together should receive).
    fn expected_for(&self, subscriber: usize, sent: &[u64]) -> u64 {
        match self.topology {
            Topology::FanIn | Topology::FanOut | Topology::Shared | Topology::Queue => {
                sent.iter().sum()
            }
            Topology::Pairs => sent.get(subscriber).copied().unwrap_or(0),
        }
    }
}

/// An open client of either protocol.
enum AnyConn {
    Mqtt(Conn),
    Stomp(StompConn),
}

pub struct TrafficResult {
    pub traffic: TrafficReport,
    pub broker: Option<BrokerReport>,
    pub process_groups: Vec<ProcessGroupReport>,
    pub own_cpu_secs: f64,
    pub own_wall_secs: f64,
    pub errors: Vec<String>,
}

pub async fn run(s: &TrafficSettings) -> Result<TrafficResult, String> {
    let clock_origin = Instant::now();
    let keep_alive = Duration::from_secs(u64::from(s.params.keep_alive_secs.max(1)));
    let mut sub_conns = Vec::with_capacity(s.subscribers);
    for i in 0..s.subscribers {
        let client_id = format!("lg{}-s{i}", s.run_id);
        let filter = s.subscribe_filter(i);
        sub_conns.push(match (s.subscriber_protocol, s.stomp) {
            (Protocol::Stomp, Some(stomp)) => {
                let mut conn = StompConn::open(&s.params, stomp.addr, &client_id).await?;
                conn.subscribe(&filter, &format!("s{i}"), stomp.ack, s.params.timeout)
                    .await?;
                AnyConn::Stomp(conn)
            }
            _ => {
                let mut params = s.params_for(&s.subscriber_addrs, i);
                params.clean_session = !s.persistent_subscribers;
                let mut conn = Conn::open(&params, &client_id).await?;
                conn.subscribe(&filter, s.qos, s.params.timeout).await?;
                AnyConn::Mqtt(conn)
            }
        });
    }
    let mut pub_conns = Vec::with_capacity(s.publishers);
    for i in 0..s.publishers {
        let client_id = format!("lg{}-p{i}", s.run_id);
        pub_conns.push(match (s.publisher_protocol, s.stomp) {
            (Protocol::Stomp, Some(stomp)) => {
                AnyConn::Stomp(StompConn::open(&s.params, stomp.addr, &client_id).await?)
            }
            _ => AnyConn::Mqtt(Conn::open(&s.params_for(&s.publisher_addrs, i), &client_id).await?),
        });
    }
    if !s.settle.is_zero() {
        tokio::time::sleep(s.settle).await;
    }

    let broker = s.broker_pid.map(Target::Pid);
    let broker_before = broker.map(CpuSample::take).transpose()?;
    let own_before = CpuSample::take(Target::Current)?;
    let groups_before: Vec<Vec<Option<CpuSample>>> = s
        .cpu_groups
        .iter()
        .map(|(_, pids)| {
            pids.iter()
                .map(|pid| CpuSample::take(Target::Pid(*pid)).ok())
                .collect()
        })
        .collect();
    let peak_reset = s.cpu_groups.iter().all(|(_, pids)| {
        pids.iter()
            .all(|pid| proc_stats::reset_peak_rss(Target::Pid(*pid)).is_ok())
    });
    let start = Instant::now();
    let stop_at = start + s.duration;
    let drain_until = stop_at + DRAIN_GRACE;

    let mut expectations = Vec::with_capacity(s.subscribers);
    // Members of one shared subscription stop together, once the group has everything.
    let group_unique = s.grouped().then(|| Arc::new(AtomicU64::new(0)));
    let mut sub_tasks: Vec<JoinHandle<SubscriberOutcome>> = Vec::with_capacity(s.subscribers);
    for (index, conn) in sub_conns.into_iter().enumerate() {
        let expected = Expected::unknown();
        expectations.push(expected.clone());
        let plan = SubscriberPlan {
            index,
            publishers: s.publishers,
            expected,
            clock_origin,
            quiet: QUIET,
            window_end: stop_at,
            drain_deadline: drain_until + QUIET,
            keep_alive,
            group_unique: group_unique.clone(),
        };
        let histogram = subscriber::new_histogram()?;
        sub_tasks.push(match (conn, s.stomp) {
            (AnyConn::Stomp(conn), Some(stomp)) => {
                tokio::spawn(stomp_subscriber::run(conn, plan, stomp.ack, histogram))
            }
            (AnyConn::Stomp(_), None) => return Err("STOMP without STOMP settings".to_owned()),
            (AnyConn::Mqtt(conn), _) => tokio::spawn(subscriber::run(conn, plan, histogram)),
        });
    }
    let rate_each = s.rate_per_sec.map(|r| r / s.publishers as f64);
    let mut pub_tasks: Vec<JoinHandle<PublisherOutcome>> = Vec::with_capacity(s.publishers);
    for (index, conn) in pub_conns.into_iter().enumerate() {
        let plan = PublisherPlan {
            index: index as u32,
            topic: s.publish_topic(index).into_bytes(),
            qos: s.publisher_qos(),
            payload_bytes: s.payload_bytes,
            max_messages: s.max_messages,
            stop_at,
            drain_until,
            rate_per_sec: rate_each,
            batch: s.batch,
            inflight: s.inflight,
            keep_alive,
            clock_origin,
        };
        pub_tasks.push(match (conn, s.stomp) {
            (AnyConn::Stomp(conn), Some(stomp)) => {
                tokio::spawn(stomp_publisher::run(conn, plan, stomp))
            }
            (AnyConn::Stomp(_), None) => return Err("STOMP without STOMP settings".to_owned()),
            (AnyConn::Mqtt(conn), _) => tokio::spawn(publisher::run(conn, plan)),
        });
    }

    let mut errors = Vec::new();
    let mut pubs = Vec::with_capacity(s.publishers);
    for task in pub_tasks {
        match task.await {
            Ok(outcome) => pubs.push(outcome),
            Err(e) => errors.push(format!("publisher task failed: {e}")),
        }
    }
    let mut sent_by_publisher = vec![0u64; s.publishers];
    for p in &pubs {
        if let Some(slot) = sent_by_publisher.get_mut(p.index as usize) {
            *slot = p.sent;
        }
        errors.extend(p.error.clone());
    }
    let mut expected_total = 0;
    for (i, expected) in expectations.iter().enumerate() {
        let n = s.expected_for(i, &sent_by_publisher);
        expected.set(n);
        expected_total += n;
    }
    if s.grouped() {
        expected_total = sent_by_publisher.iter().sum();
    }
    let mut subs = Vec::with_capacity(s.subscribers);
    for task in sub_tasks {
        match task.await {
            Ok(outcome) => subs.push(outcome),
            Err(e) => errors.push(format!("subscriber task failed: {e}")),
        }
    }
    let (own_cpu_secs, own_wall_secs) = own_before.since(Target::Current)?;
    let process_groups = s
        .cpu_groups
        .iter()
        .zip(&groups_before)
        .map(|((name, pids), before)| {
            let cpu: Option<f64> = pids
                .iter()
                .zip(before)
                .map(|(pid, b)| {
                    b.and_then(|b| b.since(Target::Pid(*pid)).ok())
                        .map(|(c, _)| c)
                })
                .sum();
            ProcessGroupReport {
                name: name.clone(),
                pids: pids.clone(),
                cpu_secs: cpu,
                cpu_percent: cpu.map(|c| c * 100.0 / own_wall_secs.max(1e-9)),
                peak_rss_kib: pids
                    .iter()
                    .map(|pid| proc_stats::peak_rss_kib(Target::Pid(*pid)).ok())
                    .sum(),
                peak_rss_in_window: peak_reset,
            }
        })
        .collect();
    let broker_report = match (s.broker_pid, broker, broker_before) {
        (Some(pid), Some(target), Some(before)) => {
            let received: u64 = subs.iter().map(|o| o.unique).sum();
            let cpu = before.since(target).map(|(cpu, _)| cpu);
            if let Err(e) = &cpu {
                errors.push(format!("broker CPU: {e}"));
            }
            let cpu = cpu.ok();
            Some(BrokerReport {
                pid,
                cpu_secs: cpu,
                cpu_secs_per_million_msgs: cpu
                    .filter(|_| received > 0)
                    .map(|c| c / received as f64 * 1e6),
                rss_kib: proc_stats::rss_kib(target).ok(),
            })
        }
        _ => None,
    };
    let traffic = summarize(
        start,
        s.duration,
        s.publisher_qos(),
        &pubs,
        &mut subs,
        expected_total,
        &mut errors,
    )?;
    Ok(TrafficResult {
        traffic,
        broker: broker_report,
        process_groups,
        own_cpu_secs,
        own_wall_secs,
        errors,
    })
}

fn summarize(
    start: Instant,
    duration: Duration,
    qos: u8,
    pubs: &[PublisherOutcome],
    subs: &mut [SubscriberOutcome],
    expected: u64,
    errors: &mut Vec<String>,
) -> Result<TrafficReport, String> {
    let sent: u64 = pubs.iter().map(|p| p.sent).sum();
    let acked: u64 = pubs.iter().map(|p| p.acked).sum();
    let mut latency = subscriber::new_histogram()?;
    let mut puback_latency = subscriber::new_histogram()?;
    for h in pubs.iter().filter_map(|p| p.ack_latency_ns.as_ref()) {
        if puback_latency.add(h).is_err() {
            errors.push("PUBACK latency histogram merge overflowed".to_owned());
        }
    }
    let mut last_receive = None;
    for sub in subs.iter_mut() {
        errors.extend(sub.error.take());
        if latency.add(&sub.latency_ns).is_err() {
            errors.push("latency histogram merge overflowed".to_owned());
        }
        last_receive = last_receive.max(sub.last_receive);
    }
    let received: u64 = subs.iter().map(|o| o.unique).sum();
    let received_in_window: u64 = subs.iter().map(|o| o.in_window).sum();
    let full_window = !pubs.is_empty() && pubs.iter().all(|p| p.ran_full_window);
    let elapsed_secs = last_receive
        .map(|t| t.duration_since(start))
        .unwrap_or(duration)
        .as_secs_f64()
        .max(1e-9);
    let lost = expected.saturating_sub(received);
    Ok(TrafficReport {
        elapsed_secs,
        sent,
        acked,
        unacked: if qos == 0 {
            0
        } else {
            sent.saturating_sub(acked)
        },
        acks_out_of_order: pubs.iter().map(|p| p.acks_out_of_order).sum(),
        expected,
        received,
        received_in_window,
        duplicates: subs.iter().map(|o| o.duplicates).sum(),
        foreign: subs.iter().map(|o| o.foreign).sum(),
        lost,
        loss_percent: if expected == 0 {
            0.0
        } else {
            lost as f64 * 100.0 / expected as f64
        },
        sent_per_sec: sent as f64 / duration.as_secs_f64().max(1e-9),
        msgs_per_sec: if full_window {
            received_in_window as f64 / duration.as_secs_f64().max(1e-9)
        } else {
            received as f64 / elapsed_secs
        },
        latency_us: Latency::from_ns(&latency),
        puback_latency_us: Latency::from_ns(&puback_latency),
    })
}
