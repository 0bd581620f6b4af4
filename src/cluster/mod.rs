//! The cluster engine: ferromq nodes as front ends over a NATS JetStream cluster
//! (docs/cluster.md; the design study is cluster-design.md in the shared reference).
//!
//! [`ClusterEngine`] is one more [`crate::broker::durability::Durability`] engine, with a
//! [`crate::broker::durability::Backplane`]: the broker core
//! hands it every publish and every session change and never asks which engine runs.
//!
//! | state | NATS asset | module |
//! |---|---|---|
//! | QoS 1 messages, stored once before PUBACK | streams `FMQ_MSG_<k>`, subjects `fmq.m.<k>.<topic>` | `publish.rs`, `readers.rs` |
//! | QoS 0 messages, live only | core subjects `fmq.t.<topic>`, one subscription per distinct local filter | `live.rs` |
//! | persistent sessions: owner, epoch, subscriptions, per-shard floors, in-flight | KV `FMQ_SESS`, compare-and-set on the revision | `sessions/`, `tracker.rs` |
//! | inbound QoS 2 exchanges (held until PUBREL), outbound QoS 2 states | `$q2` subjects of the shard streams, the session record | `qos2.rs` |
//! | retained messages, a full index on every node | KV `FMQ_RETAIN`, watched | `retained.rs` |
//! | node heartbeats, node id uniqueness, quorum | KV `FMQ_NODES` | `node.rs` |
//! | shared subscription groups: QoS 0 to one node, QoS 1 to one member | core queue groups; stream `FMQ_SHARED` (sources every shard), one durable consumer per group | `groups.rs` |
//! | STOMP queues: each message to one consumer on any node; a COMMIT's SENDs (queue and topic) and ACKs as one atomic batch | stream `FMQ_QUEUES` (work queue, `allow_atomic`), one durable consumer per queue, redo records `fmq.q.$tx.<node>` swept by consumer `QTXREDO` | `queues.rs`, `queue_batch.rs`, `queue_redo.rs`, `topic_redo.rs` |
//! | a STOMP queue's give-backs: every node learns a given-back message's true redelivery count before it can pull it again | core subjects `fmq.qgb`, `fmq.qgbsync` (a starting node asks for the notes) | `give_backs.rs` |
//! | a STOMP queue's purge: every node drops its pulled copies, then the stream's purge | core subjects `fmq.qpurge.request`, `fmq.qpurge.done` | `queue_purge.rs` |
//! | wills (persistent: in the session record; clean: `w.` records), the reaper's lease | KV `FMQ_SESS`, key `reaper` in `FMQ_NODES` | `wills.rs`, `reaper.rs` |
//! | the session records read for the web console (bounded, one temporary consumer) | KV `FMQ_SESS` | `kept.rs` |
//!
//! JetStream consumers per node: one ordered reader per shard, one retained watch, one
//! heartbeat watch (the reaper's), at most `readers::CATCH_UP_READERS` temporary catch-up
//! readers for sessions resuming behind, one during a reaper sweep, one while the web console
//! reads the session records (`kept.rs`); in the cluster, one
//! durable consumer per shared subscription group and per STOMP queue with consumers, and one
//! (`QTXREDO`) for the redo records of STOMP transactions.
//! Never one per MQTT subscription or session.

mod claims;
pub mod codec;
mod confirmed;
mod drain;
mod engine;
mod give_backs;
mod groups;
mod kept;
mod late_wake;
mod ledger;
mod live;
mod lost_race;
mod node;
pub mod probe;
mod publish;
mod qos2;
mod queue_batch;
mod queue_browse;
mod queue_purge;
mod queue_redo;
mod queues;
mod readers;
mod reaper;
mod retained;
mod retry_log;
mod sessions;
mod stalls;
mod store_ack;
pub mod subject;
mod temp_queues;
mod topic_redo;
mod tracker;
mod wills;

pub use engine::ClusterEngine;
pub use store_ack::payload_digest;

/// Subject prefix of live (QoS 0) messages.
/// The pause of a pull loop (shared subscriptions, queues) after a pull request failed: a
/// consumer whose raft group has no leader answers every request at once.
pub(crate) const PULL_ERROR_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

pub const LIVE_PREFIX: &str = "fmq.t";
/// Session records.
pub const SESSIONS_BUCKET: &str = "FMQ_SESS";
/// Retained messages.
pub const RETAINED_BUCKET: &str = "FMQ_RETAIN";
/// Node heartbeats.
pub const NODES_BUCKET: &str = "FMQ_NODES";

/// The consumer limit set on every stream ferromq creates. NATS 2.15 gives a stream that
/// sets none a default of 1000 (the server's `default_max_consumers`; -1 no longer means
/// unlimited), which a cluster passes with more than 1000 shared subscription groups or
/// STOMP queues (one durable consumer each), or for a while when many sessions catch up at
/// once (async-nats keeps an abandoned ordered consumer on the server for 30 s). Past it,
/// NATS refuses new consumers ("maximum consumers limit reached", 10026). A limit the NATS
/// operator sets on the account still applies.
pub const MAX_CONSUMERS_PER_STREAM: i32 = 1_000_000;

/// Gives `stream`, found without a consumer limit (made before ferromq set one), the limit of
/// [`MAX_CONSUMERS_PER_STREAM`]. A server that cannot change it (NATS before 2.11 refuses
/// to edit a stream's consumer limit) keeps its default: logged with the command to run.
/// Tried once per stream per process: the groups' stream is looked up for every group's
/// consumer, and a refusal would not change on the next try.
pub(crate) async fn raise_consumer_limit(
    js: &async_nats::jetstream::Context,
    stream: &async_nats::jetstream::stream::Stream,
) {
    static TRIED: parking_lot::Mutex<Option<std::collections::HashSet<String>>> =
        parking_lot::Mutex::new(None);
    let running = &stream.cached_info().config;
    if running.max_consumers > 0
        || !TRIED
            .lock()
            .get_or_insert_with(Default::default)
            .insert(running.name.clone())
    {
        return;
    }
    let mut config = running.clone();
    config.max_consumers = MAX_CONSUMERS_PER_STREAM;
    match js.update_stream(&config).await {
        Ok(_) => tracing::info!(
            stream = %config.name,
            max_consumers = MAX_CONSUMERS_PER_STREAM,
            "cluster: stream had no consumer limit (NATS 2.15 applies 1000); set"
        ),
        Err(e) => tracing::warn!(
            stream = %config.name,
            "cluster: stream has no consumer limit and it cannot be set ({e}); NATS 2.15 \
             refuses consumers past 1000: `nats stream edit {} --max-consumers {}`",
            config.name,
            MAX_CONSUMERS_PER_STREAM
        ),
    }
}

/// The stream of message shard `k`.
pub fn shard_stream(k: usize) -> String {
    format!("FMQ_MSG_{k}")
}

/// The subject prefix of message shard `k`.
pub fn shard_prefix(k: usize) -> String {
    format!("fmq.m.{k}")
}

/// The shard `k` of a message subject `fmq.m.<k>.…` (the inverse of [`shard_prefix`]);
/// `None` for any other subject.
pub fn shard_of_subject(subject: &str) -> Option<usize> {
    subject
        .strip_prefix("fmq.m.")?
        .split('.')
        .next()?
        .parse()
        .ok()
}

/// The shard of `topic`: a hash of the whole topic, so one topic is always in one stream
/// (MQTT orders per topic) and topics spread over the shards and their raft leaders.
pub fn shard_of(topic: &str, shards: usize) -> usize {
    // FNV-1a: the same on every node, build and version (std's hashers promise none of it).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in topic.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    (h % shards.max(1) as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::shard_of;

    #[test]
    fn a_topic_keeps_its_shard_and_topics_spread_over_the_shards() {
        assert_eq!(shard_of("lg/1/t3", 8), shard_of("lg/1/t3", 8));
        let used: std::collections::BTreeSet<usize> = (0..64)
            .map(|i| shard_of(&format!("lg/run/t{i}"), 8))
            .collect();
        assert!(used.len() >= 6, "{used:?}");
        assert_eq!(shard_of("anything", 1), 0);
    }
}
