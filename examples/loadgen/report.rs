//! What a run measured, as JSON (`--json`, one object, read by benches/compare.sh) or as text.

use hdrhistogram::Histogram;
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct Report {
    /// Free text from `--label` (compare.sh puts the broker and scenario names here).
    pub label: Option<String>,
    pub mode: String,
    /// Who speaks what: `mqtt`, `stomp`, or `stomp->mqtt` (publishers -> subscribers).
    pub protocol: String,
    pub mqtt_version: String,
    pub qos: u8,
    pub payload_bytes: usize,
    pub publishers: usize,
    pub subscribers: usize,
    pub duration_secs: f64,
    pub traffic: Option<TrafficReport>,
    pub idle: Option<IdleReport>,
    pub broker: Option<BrokerReport>,
    /// One entry per `--cpu-pids` group.
    pub process_groups: Vec<ProcessGroupReport>,
    /// The load generator's own CPU seconds (all threads) over the measured window, and that as a
    /// percentage of one core: near 100 x threads means the load generator was the bottleneck.
    pub loadgen_cpu_secs: f64,
    pub loadgen_cpu_percent: f64,
    pub loadgen_threads: usize,
    pub errors: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct TrafficReport {
    /// From the first publish to the last message received.
    pub elapsed_secs: f64,
    pub sent: u64,
    /// QoS 1/2: messages whose acknowledgement arrived; `unacked` = sent - acked.
    pub acked: u64,
    pub unacked: u64,
    pub acks_out_of_order: u64,
    /// Distinct messages the subscribers should have received (sent x matching subscribers).
    pub expected: u64,
    /// Distinct messages received; duplicates are counted apart.
    pub received: u64,
    /// Distinct messages received while publishers were still publishing.
    pub received_in_window: u64,
    pub duplicates: u64,
    pub foreign: u64,
    /// Expected messages not received by the end of the drain window (5 s after publishing
    /// stopped, or 2 s without progress). At QoS 0 that includes a backlog still queued.
    pub lost: u64,
    pub loss_percent: f64,
    pub sent_per_sec: f64,
    /// Delivered throughput: `received_in_window` / duration, the rate subscribers get while
    /// publishers push as hard as the broker lets them (a backlog the broker builds up does not
    /// count). When publishers stopped early at `--messages`: received / `elapsed_secs`.
    pub msgs_per_sec: f64,
    /// Publish-to-receive time over every received message (under load this is queueing time).
    pub latency_us: Option<Latency>,
    /// QoS 1/2 MQTT publishers: PUBLISH written to PUBACK (PUBCOMP) read, over every
    /// acknowledged message: what a publisher waits for the broker to take responsibility.
    pub puback_latency_us: Option<Latency>,
}

#[derive(Debug, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
    pub samples: u64,
}

impl Latency {
    pub fn from_ns(h: &Histogram<u64>) -> Option<Latency> {
        if h.is_empty() {
            return None;
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Some(Latency {
            p50: us(h.value_at_quantile(0.50)),
            p99: us(h.value_at_quantile(0.99)),
            p999: us(h.value_at_quantile(0.999)),
            max: us(h.max()),
            mean: h.mean() / 1000.0,
            samples: h.len(),
        })
    }
}

#[derive(Debug, Serialize)]
pub struct BrokerReport {
    pub pid: u32,
    /// Broker CPU seconds (user + system, all threads) over the measured window.
    pub cpu_secs: Option<f64>,
    /// Broker CPU seconds per million messages received by subscribers.
    pub cpu_secs_per_million_msgs: Option<f64>,
    /// Resident memory at the end of the run.
    pub rss_kib: Option<u64>,
}

/// `--cpu-pids NAME=PID,PID`: CPU of a group of processes (e.g. every node of a cluster) over
/// the measured window (from the first publish to the subscribers' end).
#[derive(Debug, Serialize)]
pub struct ProcessGroupReport {
    pub name: String,
    pub pids: Vec<u32>,
    /// user + system seconds of all their threads; `None` when a process could not be read.
    pub cpu_secs: Option<f64>,
    /// `cpu_secs` as a percentage of one core over the window.
    pub cpu_percent: Option<f64>,
    /// Sum of their peak resident memory (VmHWM) at the end of the window, KiB: the peak
    /// within the window when `peak_rss_in_window` (reset at its start), else since each
    /// process started.
    pub peak_rss_kib: Option<u64>,
    pub peak_rss_in_window: bool,
}

#[derive(Debug, Serialize)]
pub struct IdleReport {
    pub requested: usize,
    pub connected: usize,
    pub failed: usize,
    /// Connections the broker closed while they were held open.
    pub dropped: usize,
    pub connect_secs: f64,
    pub connects_per_sec: f64,
    pub rss_before_kib: Option<u64>,
    pub rss_after_kib: Option<u64>,
    /// (RSS with every connection open - RSS before) / connections.
    pub kib_per_connection: Option<f64>,
    /// The broker's CPU time from the first connection attempt to the last CONNACK, divided
    /// by the connections made (ms): what one connect costs it (TCP accept, task, CONNECT,
    /// CONNACK).
    pub broker_cpu_ms_per_connect: Option<f64>,
    /// PINGREQs sent while the connections were held.
    pub hold_pings: usize,
    /// The broker's CPU time over the hold divided by `hold_pings` (µs): the cost of one
    /// keep-alive round of an idle connection.
    pub broker_cpu_us_per_ping: Option<f64>,
    pub first_error: Option<String>,
}

fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref()
        .map_or_else(|| "n/a".to_owned(), |v| v.to_string())
}

impl Report {
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "{} mode={} protocol={} mqtt={} qos={} payload={}B publishers={} subscribers={} duration={}s\n",
            self.label.as_deref().unwrap_or("loadgen"),
            self.mode,
            self.protocol,
            self.mqtt_version,
            self.qos,
            self.payload_bytes,
            self.publishers,
            self.subscribers,
            self.duration_secs
        );
        if let Some(t) = &self.traffic {
            s += &format!(
                "  sent {} ({:.0}/s), received {} of {} expected ({} while publishing) in {:.2}s\n  delivered {:.0} msgs/s\n",
                t.sent, t.sent_per_sec, t.received, t.expected, t.received_in_window, t.elapsed_secs, t.msgs_per_sec
            );
            s += &format!(
                "  lost {} ({:.3}%), duplicates {}, unacked {}, acks out of order {}\n",
                t.lost, t.loss_percent, t.duplicates, t.unacked, t.acks_out_of_order
            );
            if let Some(l) = &t.latency_us {
                s += &format!(
                    "  latency us: p50 {:.1}  p99 {:.1}  p999 {:.1}  max {:.1}  mean {:.1} ({} samples)\n",
                    l.p50, l.p99, l.p999, l.max, l.mean, l.samples
                );
            }
            if let Some(l) = &t.puback_latency_us {
                s += &format!(
                    "  PUBACK latency us: p50 {:.1}  p99 {:.1}  p999 {:.1}  max {:.1}  mean {:.1} ({} samples)\n",
                    l.p50, l.p99, l.p999, l.max, l.mean, l.samples
                );
            }
        }
        if let Some(i) = &self.idle {
            s += &format!(
                "  connections: {} of {} open ({} failed, {} dropped), {:.0} connects/s, broker CPU {} ms per connect\n",
                i.connected, i.requested, i.failed, i.dropped, i.connects_per_sec,
                opt(&i.broker_cpu_ms_per_connect.map(|ms| format!("{ms:.4}")))
            );
            s += &format!(
                "  broker RSS {} -> {} KiB: {} KiB per connection\n",
                opt(&i.rss_before_kib),
                opt(&i.rss_after_kib),
                opt(&i.kib_per_connection.map(|k| format!("{k:.2}")))
            );
            s += &format!(
                "  held: {} PINGREQs, broker CPU {} us per keep-alive round\n",
                i.hold_pings,
                opt(&i.broker_cpu_us_per_ping.map(|us| format!("{us:.2}")))
            );
        }
        if let Some(b) = &self.broker {
            s += &format!(
                "  broker pid {}: CPU {} s, {} s per million msgs, RSS {} KiB\n",
                b.pid,
                opt(&b.cpu_secs.map(|c| format!("{c:.2}"))),
                opt(&b.cpu_secs_per_million_msgs.map(|c| format!("{c:.2}"))),
                opt(&b.rss_kib)
            );
        }
        for g in &self.process_groups {
            s += &format!(
                "  {} (pids {:?}): CPU {} s, {}% of one core, peak RSS {} KiB\n",
                g.name,
                g.pids,
                opt(&g.cpu_secs.map(|c| format!("{c:.2}"))),
                opt(&g.cpu_percent.map(|c| format!("{c:.0}"))),
                opt(&g.peak_rss_kib)
            );
        }
        s += &format!(
            "  loadgen CPU {:.2} s ({:.0}% of one core, {} threads)\n",
            self.loadgen_cpu_secs, self.loadgen_cpu_percent, self.loadgen_threads
        );
        for e in &self.errors {
            s += &format!("  error: {e}\n");
        }
        s
    }
}
