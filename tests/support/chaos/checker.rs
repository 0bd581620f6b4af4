//! The checker: figures of one [`Recording`] (the cluster design's section 5.1).
//!
//! - **L**: PUBACKed messages never delivered to some subscriber whose filter matches their
//!   topic (each (message, subscriber) pair counts once).
//! - **D**: deliveries of a (message, subscriber) pair beyond the first.
//! - **O**: first deliveries whose sequence is below one already delivered on the same
//!   (publisher, subscriber) pair (a redelivered duplicate is a D, not an O).
//! - **F_pub**: the largest gap between consecutive PUBACKs (all publishers), and per fault
//!   the stall: last PUBACK before it to first PUBACK after it.
//! - **F_sub**: per fault, from the fault to the first delivery after it; and to the moment
//!   the last subscriber that lost its connection received again.
//! - **resume**: per fault, the slowest client that lost its connection after the fault, from
//!   the fault to its next accepted CONNECT; and the session-present rate of reconnects.

use std::collections::{HashMap, HashSet};
use std::fmt;

use serde::Serialize;

use super::recorder::{ClientRef, Recording};

/// At most this many lost messages are listed by name in a report.
const LOST_EXAMPLES: usize = 10;

/// A message lost for one subscriber.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Lost {
    pub publisher: u32,
    pub seq: u64,
    pub subscriber: u32,
}

/// The losses of one subscriber (times in ms since the load started).
#[derive(Clone, Debug, Serialize)]
pub struct LostSpan {
    pub subscriber: u32,
    pub count: usize,
    pub first_puback_ms: f64,
    pub last_puback_ms: f64,
    /// (ms, broker address index, session present) of each accepted CONNECT.
    pub connects: Vec<(f64, usize, bool)>,
    /// (ms, broker address index, reason) of each lost or failed connection.
    pub disconnects: Vec<(f64, usize, String)>,
}

/// Figures around one fault (milliseconds; `None` when there was nothing to measure).
#[derive(Clone, Debug, Serialize)]
pub struct FaultFigures {
    pub name: String,
    pub at_ms: f64,
    /// Last PUBACK before the fault to the first after it.
    pub pub_stall_ms: Option<f64>,
    /// Fault to the first delivery after it (to any subscriber).
    pub f_sub_ms: Option<f64>,
    /// Fault to the moment the last of the subscribers that lost their connection after it
    /// received a message again (each one's first delivery after its disconnect).
    pub f_sub_affected_max_ms: Option<f64>,
    /// Clients whose connection was lost after the fault (before the next fault).
    pub clients_disconnected: usize,
    /// Of those, clients connected again by the end of the run.
    pub clients_resumed: usize,
    /// Fault to the slowest of those reconnects.
    pub resume_max_ms: Option<f64>,
}

/// The figures of one run.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub duration_s: f64,
    pub publishes: usize,
    pub acked: usize,
    /// Publishes without a PUBACK, by reason.
    pub failures: HashMap<String, usize>,
    /// PUBACKed (message, matching subscriber) pairs: what must be delivered.
    pub expected: usize,
    pub deliveries: usize,
    /// L.
    pub lost: usize,
    pub lost_examples: Vec<Lost>,
    /// Per subscriber with losses: how many, when the lost messages were acknowledged, and
    /// its connection history (what a reader of the node logs looks for first).
    pub lost_by_subscriber: Vec<LostSpan>,
    /// D.
    pub duplicates: usize,
    /// Deliveries with the DUP flag set.
    pub dup_flagged: usize,
    /// O.
    pub inversions: usize,
    /// Deliveries to a subscriber whose filter does not match the publisher's topic.
    pub unexpected: usize,
    /// F_pub: largest gap between consecutive PUBACKs of all publishers.
    pub f_pub_max_gap_ms: Option<f64>,
    pub puback_p50_ms: Option<f64>,
    pub puback_p99_ms: Option<f64>,
    pub end_to_end_p50_ms: Option<f64>,
    pub end_to_end_p99_ms: Option<f64>,
    pub reconnects: usize,
    pub reconnects_with_session: usize,
    /// Share of reconnects with session present (1.0 when there was none).
    pub session_present_rate: f64,
    /// Clients whose first CONNECT of the run, with no failed attempt before it, was answered
    /// "session present": a broker must not say so of a client id it never saw (MQTT 3.1.1
    /// 3.2.2.2). Each as "<client> at <ms> ms on address <i>".
    pub present_at_first_connect: Vec<String>,
    pub faults: Vec<FaultFigures>,
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// The `q` quantile (0..=1) of sorted values, in milliseconds.
fn quantile_ms(sorted_us: &[u64], q: f64) -> Option<f64> {
    if sorted_us.is_empty() {
        return None;
    }
    let index = ((sorted_us.len() - 1) as f64 * q).round() as usize;
    sorted_us.get(index).map(|&us| ms(us))
}

/// Checks `recording` (see the module docs for each figure).
pub fn check(recording: &Recording) -> Report {
    let plan = &recording.plan;
    let matching: Vec<Vec<u32>> = plan
        .publisher_topics
        .iter()
        .map(|topic| {
            (0u32..)
                .zip(&plan.subscriber_filters)
                .filter(|(_, filter)| ferromq::protocol::topic::matches(filter, topic))
                .map(|(subscriber, _)| subscriber)
                .collect()
        })
        .collect();

    let mut delivered: HashMap<(u32, u32, u64), usize> = HashMap::new();
    let mut highest: HashMap<(u32, u32), u64> = HashMap::new();
    let (mut duplicates, mut inversions, mut unexpected, mut dup_flagged) = (0, 0, 0, 0);
    let send_times: HashMap<(u32, u64), u64> = recording
        .publishes
        .iter()
        .map(|p| ((p.publisher, p.seq), p.t_send_us))
        .collect();
    let mut end_to_end = Vec::new();
    let mut deliveries = recording.deliveries.clone();
    deliveries.sort_by_key(|d| (d.subscriber, d.t_recv_us));
    for d in &deliveries {
        dup_flagged += usize::from(d.dup);
        let expected_here = matching
            .get(d.publisher as usize)
            .is_some_and(|subs| subs.contains(&d.subscriber));
        if !expected_here {
            unexpected += 1;
            continue;
        }
        let count = delivered
            .entry((d.publisher, d.subscriber, d.seq))
            .or_insert(0);
        *count += 1;
        if *count > 1 {
            duplicates += 1;
            continue;
        }
        if let Some(&t_send) = send_times.get(&(d.publisher, d.seq)) {
            end_to_end.push(d.t_recv_us.saturating_sub(t_send));
        }
        let top = highest.entry((d.publisher, d.subscriber)).or_insert(d.seq);
        if d.seq < *top {
            inversions += 1;
        } else {
            *top = d.seq;
        }
    }

    let (mut expected, mut lost, mut lost_examples) = (0, 0, Vec::new());
    let mut spans: std::collections::BTreeMap<u32, (usize, u64, u64)> = Default::default();
    let mut failures: HashMap<String, usize> = HashMap::new();
    let mut acks = Vec::new();
    let mut latencies = Vec::new();
    for p in &recording.publishes {
        let Some(t_ack) = p.t_puback_us else {
            let reason = p.failure.clone().unwrap_or_else(|| "no PUBACK".into());
            *failures.entry(reason).or_insert(0) += 1;
            continue;
        };
        acks.push(t_ack);
        latencies.push(t_ack.saturating_sub(p.t_send_us));
        for &subscriber in matching.get(p.publisher as usize).into_iter().flatten() {
            expected += 1;
            if !delivered.contains_key(&(p.publisher, subscriber, p.seq)) {
                lost += 1;
                let span = spans.entry(subscriber).or_insert((0usize, t_ack, t_ack));
                span.0 += 1;
                span.1 = span.1.min(t_ack);
                span.2 = span.2.max(t_ack);
                if lost_examples.len() < LOST_EXAMPLES {
                    lost_examples.push(Lost {
                        publisher: p.publisher,
                        seq: p.seq,
                        subscriber,
                    });
                }
            }
        }
    }
    let lost_by_subscriber = spans
        .into_iter()
        .map(|(subscriber, (count, first, last))| {
            let is_it = |c: &ClientRef| matches!(c, ClientRef::Subscriber(s) if *s == subscriber);
            LostSpan {
                subscriber,
                count,
                first_puback_ms: ms(first),
                last_puback_ms: ms(last),
                connects: recording
                    .connects
                    .iter()
                    .filter(|c| is_it(&c.client))
                    .map(|c| (ms(c.t_us), c.address, c.session_present))
                    .collect(),
                disconnects: recording
                    .disconnects
                    .iter()
                    .filter(|d| is_it(&d.client))
                    .map(|d| (ms(d.t_us), d.address, d.reason.clone()))
                    .collect(),
            }
        })
        .collect();
    acks.sort_unstable();
    latencies.sort_unstable();
    end_to_end.sort_unstable();
    let f_pub_max_gap_ms = acks.windows(2).map(|w| w[1] - w[0]).max().map(ms);

    let reconnects: Vec<_> = recording.connects.iter().filter(|c| c.reconnect).collect();
    let reconnects_with_session = reconnects.iter().filter(|c| c.session_present).count();
    let session_present_rate = if reconnects.is_empty() {
        1.0
    } else {
        reconnects_with_session as f64 / reconnects.len() as f64
    };

    let present_at_first_connect = recording
        .connects
        .iter()
        .filter(|c| !c.reconnect && c.session_present)
        .filter(|c| {
            !recording
                .disconnects
                .iter()
                .any(|d| d.client == c.client && d.t_us <= c.t_us)
        })
        .map(|c| {
            format!(
                "{:?} at {:.0} ms on address {}",
                c.client,
                ms(c.t_us),
                c.address
            )
        })
        .collect();

    Report {
        duration_s: recording.duration_us as f64 / 1e6,
        publishes: recording.publishes.len(),
        acked: acks.len(),
        failures,
        expected,
        deliveries: recording.deliveries.len(),
        lost,
        lost_examples,
        lost_by_subscriber,
        duplicates,
        dup_flagged,
        inversions,
        unexpected,
        f_pub_max_gap_ms,
        puback_p50_ms: quantile_ms(&latencies, 0.5),
        puback_p99_ms: quantile_ms(&latencies, 0.99),
        end_to_end_p50_ms: quantile_ms(&end_to_end, 0.5),
        end_to_end_p99_ms: quantile_ms(&end_to_end, 0.99),
        reconnects: reconnects.len(),
        reconnects_with_session,
        session_present_rate,
        present_at_first_connect,
        faults: fault_figures(recording, &acks),
    }
}

fn fault_figures(recording: &Recording, sorted_acks: &[u64]) -> Vec<FaultFigures> {
    let mut faults = recording.faults.clone();
    faults.sort_by_key(|f| f.t_us);
    let first_delivery_after = |t: u64| {
        recording
            .deliveries
            .iter()
            .map(|d| d.t_recv_us)
            .filter(|&r| r >= t)
            .min()
    };
    faults
        .iter()
        .enumerate()
        .map(|(i, fault)| {
            let t = fault.t_us;
            let window_end = faults.get(i + 1).map_or(u64::MAX, |next| next.t_us);
            let split = sorted_acks.partition_point(|&a| a < t);
            let before = split.checked_sub(1).and_then(|i| sorted_acks.get(i));
            let pub_stall_ms = sorted_acks
                .get(split)
                .map(|&after| ms(after - before.copied().unwrap_or(t).min(t)));
            let mut lost_at: HashMap<ClientRef, u64> = HashMap::new();
            for d in &recording.disconnects {
                if d.t_us >= t && d.t_us < window_end {
                    lost_at.entry(d.client).or_insert(d.t_us);
                }
            }
            let mut f_sub_affected = None;
            for (&client, &lost) in &lost_at {
                let ClientRef::Subscriber(subscriber) = client else {
                    continue;
                };
                let first = recording
                    .deliveries
                    .iter()
                    .filter(|d| d.subscriber == subscriber && d.t_recv_us >= lost)
                    .map(|d| d.t_recv_us)
                    .min();
                if let Some(first) = first {
                    f_sub_affected = f_sub_affected.max(Some(first - t));
                }
            }
            let mut resumed = HashSet::new();
            let mut resume_max = None;
            for (&client, &lost) in &lost_at {
                let back = recording
                    .connects
                    .iter()
                    .filter(|c| c.client == client && c.t_us >= lost)
                    .map(|c| c.t_us)
                    .min();
                if let Some(back) = back {
                    resumed.insert(client);
                    resume_max = resume_max.max(Some(back - t));
                }
            }
            FaultFigures {
                name: fault.name.clone(),
                at_ms: ms(t),
                pub_stall_ms,
                f_sub_ms: first_delivery_after(t).map(|r| ms(r - t)),
                f_sub_affected_max_ms: f_sub_affected.map(ms),
                clients_disconnected: lost_at.len(),
                clients_resumed: resumed.len(),
                resume_max_ms: resume_max.map(ms),
            }
        })
        .collect()
}

fn opt(value: Option<f64>) -> String {
    value.map_or_else(|| "-".into(), |v| format!("{v:.1}"))
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rows: Vec<(&str, String)> = vec![
            ("duration s", format!("{:.1}", self.duration_s)),
            ("publishes", self.publishes.to_string()),
            ("acked", self.acked.to_string()),
            ("not acked", format!("{:?}", self.failures)),
            ("expected deliveries", self.expected.to_string()),
            ("deliveries", self.deliveries.to_string()),
            ("L lost", self.lost.to_string()),
            ("D duplicates", self.duplicates.to_string()),
            ("  with DUP flag", self.dup_flagged.to_string()),
            ("O inversions", self.inversions.to_string()),
            ("unexpected", self.unexpected.to_string()),
            ("F_pub max gap ms", opt(self.f_pub_max_gap_ms)),
            (
                "PUBACK p50/p99 ms",
                format!("{} / {}", opt(self.puback_p50_ms), opt(self.puback_p99_ms)),
            ),
            (
                "end-to-end p50/p99 ms",
                format!(
                    "{} / {}",
                    opt(self.end_to_end_p50_ms),
                    opt(self.end_to_end_p99_ms)
                ),
            ),
            (
                "reconnects (session present)",
                format!("{} ({})", self.reconnects, self.reconnects_with_session),
            ),
            (
                "session present rate",
                format!("{:.3}", self.session_present_rate),
            ),
            (
                "present at a first CONNECT",
                self.present_at_first_connect.len().to_string(),
            ),
        ];
        for (name, value) in rows {
            writeln!(f, "{name:<30} {value}")?;
        }
        for fault in &self.faults {
            writeln!(
                f,
                "fault {:<24} at {:.0} ms: pub stall {} ms, F_sub {} ms (disconnected \
                 subscribers {} ms), resumed {}/{} (max {} ms)",
                fault.name,
                fault.at_ms,
                opt(fault.pub_stall_ms),
                opt(fault.f_sub_ms),
                opt(fault.f_sub_affected_max_ms),
                fault.clients_resumed,
                fault.clients_disconnected,
                opt(fault.resume_max_ms),
            )?;
        }
        for lost in &self.lost_examples {
            writeln!(
                f,
                "lost: publisher {} seq {} for subscriber {}",
                lost.publisher, lost.seq, lost.subscriber
            )?;
        }
        for span in &self.lost_by_subscriber {
            writeln!(f, "lost for {span}")?;
        }
        Ok(())
    }
}

impl std::fmt::Display for LostSpan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "subscriber {}: {} messages PUBACKed at {:.0}-{:.0} ms; its CONNECTs (ms, address, \
             session present): {:?}; its lost connections: {:?}",
            self.subscriber,
            self.count,
            self.first_puback_ms,
            self.last_puback_ms,
            self.connects,
            self.disconnects
        )
    }
}

impl Report {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
#[path = "checker_tests.rs"]
mod tests;
