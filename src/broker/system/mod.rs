//! The broker's `$SYS` topics: what mosquitto publishes under `$SYS/broker/...` (its names
//! where ferromq has the figure, see docs/operations.md), published by the broker itself as
//! retained QoS 0 messages every `<ferromq:systemTopics interval>` (10 s by default, 0 = off).
//!
//! - One background task per broker ([`spawn`]) reads the counters and gauges the broker keeps
//!   anyway (relaxed atomics, the sizes of the subscription tree and retained store, the
//!   session registry's census: one pass over the sessions): nothing is added to the publish
//!   path. A value is published only when it changed since the last round (the
//!   retained copy serves new subscribers), as mosquitto does.
//! - They are routed like any retained publish but never written to the durable store: they
//!   are figures of this run (mosquitto does not keep them either). QoS 0 makes every copy a
//!   QoS 0 delivery, so routing has no queue entry to keep.
//! - Reading them is a subscription like any other: authorization decides (an ActiveMQ
//!   `read` entry covering `$SYS.>`, the ActiveMQ form of `$SYS/#`). The topics exist by
//!   definition, outside the destination map (a subscription to one of them needs no `admin`
//!   to create it: `BrokerCore::use_topic`). A filter starting
//!   with a wildcard never matches them (MQTT 5 4.7.2, the router's `$` rule).
//! - No client may publish to `$SYS` or below it, whatever `transport.publishDollarTopics`
//!   says ([`is_system_topic`]): MQTT 5 gets 0x87 Not authorized, MQTT 3.1.1 publishes are
//!   acknowledged and dropped, STOMP SENDs get an ERROR.

mod load;

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::broker::message::{Message, SampleStamp};
use crate::broker::runtime::{BrokerCore, Offer};
use crate::protocol::QoS;

pub use load::LoadAverage;

/// The publication interval (ms, 0 = off) as reloads set it, and the lock that makes a round
/// and a change of interval exclusive: no round publishes after the figures were turned off
/// and cleared.
#[derive(Debug)]
pub struct IntervalCell {
    interval_ms: watch::Sender<u64>,
    round: parking_lot::Mutex<()>,
}

impl IntervalCell {
    pub fn new(interval_ms: u64) -> Self {
        IntervalCell {
            interval_ms: watch::Sender::new(interval_ms),
            round: parking_lot::Mutex::new(()),
        }
    }
}

/// The root of the tree (an MQTT topic level).
pub const ROOT: &str = "$SYS";

/// Is `topic` the broker's own `$SYS` tree, which no client may publish to?
#[inline]
pub fn is_system_topic(topic: &str) -> bool {
    topic
        .strip_prefix(ROOT)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The version line of `$SYS/broker/version`, as mosquitto words its own.
pub fn version_line() -> String {
    format!("ferromq version {}", env!("CARGO_PKG_VERSION"))
}

/// Start the publisher of `core`'s `$SYS` topics: publishes a first round before returning
/// (so a broker that has started has them), then one per interval of `interval_ms` (ms, 0 =
/// off, changed by a reload through [`BrokerCore::set_system_topics_interval`]) until
/// `shutdown` or the core is gone.
pub fn spawn(core: &Arc<BrokerCore>, shutdown: CancellationToken) {
    let mut interval = core.system_topics_interval();
    let mut publisher = Publisher::new();
    let first = *interval.borrow_and_update();
    if first > 0 {
        publisher.round(core);
    }
    let core = Arc::downgrade(core);
    tokio::spawn(async move {
        let mut period_ms = first;
        loop {
            let wait = Duration::from_millis(period_ms);
            tokio::select! {
                () = shutdown.cancelled() => return,
                changed = interval.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    period_ms = *interval.borrow_and_update();
                    if period_ms == 0 {
                        // Cleared by the setter: the next round publishes every figure again.
                        publisher.forget_rounds();
                        continue;
                    }
                }
                () = tokio::time::sleep(wait), if period_ms > 0 => {}
            }
            let Some(core) = Weak::upgrade(&core) else {
                return;
            };
            publisher.round(&core);
        }
    });
}

/// What one round compares with: the values of the previous round and the load averages.
struct Publisher {
    started: Instant,
    previous_round: Option<Instant>,
    /// Payloads published, in the order of [`Publisher::figures`] (empty before the first
    /// round).
    last: Vec<String>,
    maximum_connected: u64,
    loads: [LoadAverage; LOADS.len()],
}

/// The counters with a load average: the topic's middle part, and how to read the counter.
const LOADS: [(&str, ReadTotal); 9] = [
    ("bytes/received", |t| t.bytes_received),
    ("bytes/sent", |t| t.bytes_sent),
    ("messages/received", |t| t.publish_received),
    ("messages/sent", |t| t.publish_sent),
    ("publish/received", |t| t.publish_received),
    ("publish/sent", |t| t.publish_sent),
    ("publish/dropped", |t| t.publish_dropped),
    ("connections", |t| t.sockets),
    ("sockets", |t| t.sockets),
];

/// Reads one of the [`Totals`].
type ReadTotal = fn(&Totals) -> u64;

/// The broker-wide totals a round reads.
struct Totals {
    /// Payload bytes of the messages received and sent.
    bytes_received: u64,
    bytes_sent: u64,
    publish_received: u64,
    publish_sent: u64,
    publish_dropped: u64,
    sockets: u64,
}

impl Publisher {
    fn new() -> Self {
        Publisher {
            started: Instant::now(),
            previous_round: None,
            last: Vec::new(),
            maximum_connected: 0,
            loads: Default::default(),
        }
    }

    /// After the figures were turned off (and cleared): the next round publishes them all and
    /// the load averages start again. The uptime and the maximum are the broker's, kept.
    fn forget_rounds(&mut self) {
        self.previous_round = None;
        self.last.clear();
        self.loads = Default::default();
    }

    /// Read the figures and publish those that changed (nothing when they were turned off
    /// meanwhile).
    fn round(&mut self, core: &BrokerCore) {
        let _exclusive = core.system_topics.round.lock();
        if *core.system_topics.interval_ms.borrow() == 0 {
            return;
        }
        let now = Instant::now();
        let elapsed = self
            .previous_round
            .replace(now)
            .map_or(Duration::ZERO, |at| now.duration_since(at));
        let values = self.figures(core, elapsed);
        for (n, (topic, payload)) in values.into_iter().enumerate() {
            if self.last.get(n) == Some(&payload) {
                continue;
            }
            core.publish_system(&topic, Bytes::from(payload.clone()));
            match self.last.get_mut(n) {
                Some(slot) => *slot = payload,
                None => self.last.push(payload),
            }
        }
    }

    /// Every topic and its payload now, always in the same order.
    fn figures(&mut self, core: &BrokerCore, elapsed: Duration) -> Vec<(String, String)> {
        let counters = core.counters.snapshot();
        let connected = counters.connections_current;
        self.maximum_connected = self.maximum_connected.max(connected);
        let sessions = core.registry.census();
        let disconnected = sessions.offline;
        let totals = Totals {
            bytes_received: counters.bytes_in_by_qos.iter().sum(),
            bytes_sent: counters.bytes_out_by_qos.iter().sum(),
            publish_received: counters.messages_in,
            publish_sent: counters.messages_out,
            publish_dropped: counters.dropped_queue_full
                + counters.dropped_offline_qos0
                + counters.dropped_memory_full
                + counters.dropped_packet_too_large
                + counters.dropped_expired,
            sockets: counters.connections_accepted,
        };
        let subscriptions = core.subscriptions.read().len();
        let retained = core.retained.read().len();
        // Held for delivery: MQTT session queues, ActiveMQ queues, retained messages.
        let stored = sessions.queued + core.queues.totals().messages as u64 + retained as u64;
        let memory_used = core.memory.used_bytes();
        // 0: no limit, as ActiveMQ keeps it.
        let memory_limit = core.memory.limit_bytes().unwrap_or(0);
        let mut out: Vec<(String, String)> = vec![
            ("version".into(), version_line()),
            ("bytes/received".into(), totals.bytes_received.to_string()),
            ("bytes/sent".into(), totals.bytes_sent.to_string()),
            (
                "uptime".into(),
                format!("{} seconds", self.started.elapsed().as_secs()),
            ),
            ("clients/connected".into(), connected.to_string()),
            ("clients/disconnected".into(), disconnected.to_string()),
            (
                "clients/total".into(),
                (connected + disconnected).to_string(),
            ),
            ("clients/maximum".into(), self.maximum_connected.to_string()),
            (
                "messages/received".into(),
                totals.publish_received.to_string(),
            ),
            ("messages/sent".into(), totals.publish_sent.to_string()),
            (
                "publish/messages/received".into(),
                totals.publish_received.to_string(),
            ),
            (
                "publish/messages/sent".into(),
                totals.publish_sent.to_string(),
            ),
            (
                "publish/messages/dropped".into(),
                totals.publish_dropped.to_string(),
            ),
            ("subscriptions/count".into(), subscriptions.to_string()),
            ("store/messages/count".into(), stored.to_string()),
            ("messages/stored".into(), stored.to_string()),
            ("retained messages/count".into(), retained.to_string()),
            ("memory/used".into(), memory_used.to_string()),
            ("memory/limit".into(), memory_limit.to_string()),
        ];
        if core.backplane().is_some() {
            // What claims and session records cost this cluster node (docs/cluster.md).
            out.extend([
                ("cluster/claims".into(), counters.cluster_claims.to_string()),
                (
                    "cluster/claims/confirmed".into(),
                    counters.cluster_claims_confirmed.to_string(),
                ),
                (
                    "cluster/records/read".into(),
                    counters.cluster_record_reads.to_string(),
                ),
                (
                    "cluster/records/written".into(),
                    counters.cluster_record_writes.to_string(),
                ),
                (
                    "cluster/records/unchanged".into(),
                    counters.cluster_records_unchanged.to_string(),
                ),
            ]);
        }
        for ((name, read), load) in LOADS.iter().zip(self.loads.iter_mut()) {
            let averages = load.update(read(&totals), elapsed);
            for ((window, _), average) in load::WINDOWS.iter().zip(averages) {
                out.push((format!("load/{name}/{window}"), format!("{average:.2}")));
            }
        }
        out.into_iter()
            .map(|(name, value)| (format!("{ROOT}/broker/{name}"), value))
            .collect()
    }
}

impl BrokerCore {
    /// Publish one `$SYS` figure: retained, QoS 0, routed to the subscriptions that match it,
    /// not kept in the durable store (see the module documentation).
    pub(crate) fn publish_system(&self, topic: &str, payload: Bytes) {
        // Not charged to `memoryUsage`: a few bytes per topic, bounded, the broker's own.
        let message = Message {
            stamp: SampleStamp::NONE,
            topic: Arc::from(topic),
            payload,
            qos: QoS::AtMostOnce,
            retain: true,
            v5: None,
        };
        // What routing would keep is the retained slot only (every copy is QoS 0): dropped,
        // on purpose.
        // Each broker's own, also in a cluster: routed locally only.
        let (plan, _not_kept) = self.plan_local_route(message, &[], |_| Offer::All, true);
        self.complete_route(plan);
    }

    /// The `$SYS` publication interval (ms, 0 = off) as it is now and as reloads change it.
    pub fn system_topics_interval(&self) -> watch::Receiver<u64> {
        self.system_topics.interval_ms.subscribe()
    }

    /// Apply a reloaded `<ferromq:systemTopics interval>`: the publisher takes it at once (a
    /// round now, then one per new interval). Turning them off removes the retained `$SYS`
    /// messages now, so that no stale figure is served.
    pub fn set_system_topics_interval(&self, interval_ms: u64) {
        // After a round in progress, before the next one.
        let _exclusive = self.system_topics.round.lock();
        if interval_ms == 0 {
            let mut retained = self.retained.write();
            let mut topics = Vec::new();
            retained.for_each_matching(&format!("{ROOT}/#"), |topic, _| {
                topics.push(topic.to_owned());
            });
            for topic in topics {
                retained.clear(&topic);
            }
        }
        self.system_topics.interval_ms.send_replace(interval_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_sys_tree_is_reserved() {
        for topic in ["$SYS", "$SYS/", "$SYS/broker/uptime", "$SYS/x/y"] {
            assert!(is_system_topic(topic), "{topic}");
        }
        for topic in [
            "$SYSTEM/x",
            "$sys/broker",
            "SYS/x",
            "$share/g/x",
            "a/$SYS",
            "",
        ] {
            assert!(!is_system_topic(topic), "{topic}");
        }
    }
}
