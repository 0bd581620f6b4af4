//! Where an acknowledged message went missing: read back every QoS 1 message the cluster
//! stored (every `FMQ_MSG_<k>` stream, from its first message to its last, with an ordered
//! consumer) and compare with what the publishers had acknowledged. A message PUBACKed and
//! not in any stream was lost by the store path (ferromq's publish or NATS); one in a stream
//! and never delivered to a matching subscriber was lost by the delivery path.

use std::collections::HashSet;
use std::time::Duration;

use futures_util::StreamExt;

use super::recorder::{decode_payload, Recording};

/// Where a message is stored: `(shard, stream sequence, Nats-Msg-Id)`.
pub type Location = (usize, u64, String);

/// What the shard streams hold of the load: every `(publisher, seq)`, and the stream order
/// inversions (a publisher's message stored after a later one of the same publisher: a
/// subscriber reading the stream gets them out of order).
#[derive(Debug, Default)]
pub struct Stored {
    pub messages: HashSet<(u32, u64)>,
    pub inversions: usize,
    /// Up to 5 `(publisher, seq stored late, the higher seq stored before it)`.
    pub inversion_examples: Vec<(u32, u64, u64)>,
    /// Readers started over because their consumer stalled.
    pub restarts: usize,
    /// Where each `(publisher, seq)` is stored: `(shard, stream sequence, Nats-Msg-Id)`, every
    /// copy (a message stored again has two).
    pub locations: std::collections::HashMap<(u32, u64), Vec<Location>>,
    /// What the streams' leaders hold, read one sequence at a time (`STREAM.MSG.GET`, answered
    /// by the leader): the consumer view above comes from whichever replica NATS placed the
    /// reading consumer on, and replicas can differ after a partition heals.
    pub at_leaders: HashSet<(u32, u64)>,
    /// Sequences the leaders did not answer for (neither a message nor "no message").
    pub leader_unread: usize,
}

/// A stream reader that gets nothing for this long starts over.
const STALL: Duration = Duration::from_secs(3);
/// The longest the audit reads one stream.
const AUDIT_BOUND: Duration = Duration::from_secs(120);

/// Reads every shard stream from its first message to its last; errors say which stream
/// could not be read.
pub async fn stored_messages(client: &async_nats::Client, shards: usize) -> Result<Stored, String> {
    use async_nats::jetstream::consumer::{pull::OrderedConfig, DeliverPolicy};
    let js = async_nats::jetstream::new(client.clone());
    let mut stored = Stored::default();
    let mut highest: std::collections::HashMap<u32, u64> = Default::default();
    for k in 0..shards {
        let name = ferromq::cluster::shard_stream(k);
        let mut stream = js
            .get_stream(&name)
            .await
            .map_err(|e| format!("{name}: {e}"))?;
        let last = stream
            .info()
            .await
            .map_err(|e| format!("{name}: {e}"))?
            .state
            .last_sequence;
        if last == 0 {
            continue;
        }
        // An ordered consumer sits on one of the stream's servers; after a heal that can be
        // one still catching up, which delivers nothing for a long while. So a reader that
        // gets nothing for `STALL` starts over from the next sequence (NATS places the new
        // consumer anew), within `AUDIT_BOUND` per stream.
        let started = std::time::Instant::now();
        let mut next_seq = 1u64;
        let mut restarts = 0usize;
        'stream: loop {
            if started.elapsed() > AUDIT_BOUND {
                return Err(format!(
                    "{name}: stopped before {last} (at {next_seq}, {restarts} restarts)"
                ));
            }
            let consumer = stream
                .create_consumer(OrderedConfig {
                    deliver_policy: DeliverPolicy::ByStartSequence {
                        start_sequence: next_seq,
                    },
                    ..Default::default()
                })
                .await;
            let mut messages = match consumer {
                Ok(consumer) => match consumer.messages().await {
                    Ok(messages) => messages,
                    Err(_) => {
                        restarts += 1;
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                },
                Err(_) => {
                    restarts += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            loop {
                let message = match tokio::time::timeout(STALL, messages.next()).await {
                    Ok(Some(Ok(message))) => message,
                    Ok(Some(Err(_))) | Ok(None) | Err(_) => {
                        restarts += 1;
                        continue 'stream;
                    }
                };
                let sequence = message.info().map(|i| i.stream_sequence).unwrap_or(0);
                if sequence < next_seq {
                    continue;
                }
                next_seq = sequence + 1;
                if let Ok(frame) = ferromq::cluster::codec::decode_message(message.payload.clone())
                {
                    if let Some((publisher, seq, _)) = decode_payload(&frame.message.payload) {
                        let id = message
                            .headers
                            .as_ref()
                            .and_then(|h| h.get("Nats-Msg-Id"))
                            .map_or_else(String::new, |v| v.as_str().to_owned());
                        stored
                            .locations
                            .entry((publisher, seq))
                            .or_default()
                            .push((k, sequence, id));
                        if stored.messages.insert((publisher, seq)) {
                            let top = highest.entry(publisher).or_insert(seq);
                            if seq < *top {
                                stored.inversions += 1;
                                if stored.inversion_examples.len() < 5 {
                                    stored.inversion_examples.push((publisher, seq, *top));
                                }
                            }
                            *top = (*top).max(seq);
                        }
                    }
                }
                if sequence >= last {
                    break 'stream;
                }
            }
        }
        stored.restarts += restarts;
        let (held, unread) = read_from_leader(&stream, 1, last).await;
        stored.at_leaders.extend(held);
        stored.leader_unread += unread;
    }
    Ok(stored)
}

/// The load messages `stream`'s leader holds from `first` to `last`, and how many sequences
/// it did not answer for.
async fn read_from_leader(
    stream: &async_nats::jetstream::stream::Stream,
    first: u64,
    last: u64,
) -> (Vec<(u32, u64)>, usize) {
    use async_nats::jetstream::stream::RawMessageErrorKind;
    let answers: Vec<Result<Option<(u32, u64)>, ()>> = futures_util::stream::iter(first..=last)
        .map(|seq| async move {
            for _ in 0..3 {
                match tokio::time::timeout(Duration::from_secs(2), stream.get_raw_message(seq))
                    .await
                {
                    Ok(Ok(m)) => {
                        let load = ferromq::cluster::codec::decode_message(m.payload.clone())
                            .ok()
                            .and_then(|f| decode_payload(&f.message.payload))
                            .map(|(publisher, seq, _)| (publisher, seq));
                        return Ok(load);
                    }
                    Ok(Err(e)) if e.kind() == RawMessageErrorKind::NoMessageFound => {
                        return Ok(None)
                    }
                    _ => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
            Err(())
        })
        .buffered(64)
        .collect()
        .await;
    let unread = answers.iter().filter(|a| a.is_err()).count();
    (answers.into_iter().flatten().flatten().collect(), unread)
}

/// The acknowledged messages missing from `stored`: how many, and up to 10 `(publisher,
/// seq, PUBACK time in s, how the acknowledgement was attributed)`.
pub fn acked_not_stored(
    recording: &Recording,
    stored: &HashSet<(u32, u64)>,
) -> (usize, Vec<(u32, u64, f64, &'static str)>) {
    let mut missing: Vec<(u32, u64, f64, &'static str)> = recording
        .publishes
        .iter()
        .filter(|p| p.t_puback_us.is_some() && !stored.contains(&(p.publisher, p.seq)))
        .map(|p| {
            (
                p.publisher,
                p.seq,
                p.t_puback_us.unwrap_or(0) as f64 / 1e6,
                p.acked_via.unwrap_or("?"),
            )
        })
        .collect();
    missing.sort_by(|a, b| a.2.total_cmp(&b.2));
    let count = missing.len();
    missing.truncate(10);
    (count, missing)
}

/// One line for a run's notes: the audit's verdict on the acknowledged messages.
pub async fn audit_note(
    client: &async_nats::Client,
    shards: usize,
    recording: &Recording,
) -> String {
    audit(client, shards, recording).await.0
}

/// [`audit_note`], and where each of `lost` (`(publisher, seq)` PUBACKed and not delivered to
/// some subscriber) is stored: `(shard, stream sequence, message id)` per copy, to look up in
/// the nodes' `ferromq::store_ack` logs.
pub async fn audit_note_locating(
    client: &async_nats::Client,
    shards: usize,
    recording: &Recording,
    lost: &[(u32, u64)],
) -> String {
    let stored = stored_messages(client, shards).await;
    let located: Vec<String> = match &stored {
        Ok(stored) => lost
            .iter()
            .map(|key| format!("{key:?} at {:?}", stored.locations.get(key)))
            .collect(),
        Err(_) => Vec::new(),
    };
    let mut note = describe(stored, recording);
    if !located.is_empty() {
        note.push_str(&format!(
            "; lost deliveries stored at (shard, seq, id): {}",
            located.join(", ")
        ));
    }
    note
}

/// The audit's note (see [`audit_note`]) and the messages stored after a later message of
/// their publisher (`None` when the streams could not be read). Each publisher of the load
/// has one topic, so these are inversions per (publisher, topic) in the store itself.
pub async fn audit(
    client: &async_nats::Client,
    shards: usize,
    recording: &Recording,
) -> (String, Option<usize>) {
    let stored = stored_messages(client, shards).await;
    let inversions = stored.as_ref().ok().map(|s| s.inversions);
    (describe(stored, recording), inversions)
}

fn describe(stored: Result<Stored, String>, recording: &Recording) -> String {
    match stored {
        Ok(stored) => {
            let (missing, examples) = acked_not_stored(recording, &stored.messages);
            let (missing_at_leaders, leader_examples) =
                acked_not_stored(recording, &stored.at_leaders);
            let replica_only = stored.messages.difference(&stored.at_leaders).count();
            let leader_only = stored.at_leaders.difference(&stored.messages).count();
            format!(
                "store audit: {} load messages in the streams; PUBACKed but in no stream: \
                 {missing}{}; at the leaders: {} (PUBACKed but not at the leaders: \
                 {missing_at_leaders}{}; read from a replica but not at the leader: \
                 {replica_only}; at the leader but not read from a replica: {leader_only}; \
                 sequences the leaders did not answer: {}); stored after a later message of \
                 their publisher: {}{}; readers started over after a stall: {}",
                stored.messages.len(),
                examples_of(&examples),
                stored.at_leaders.len(),
                examples_of(&leader_examples),
                stored.leader_unread,
                stored.inversions,
                if stored.inversion_examples.is_empty() {
                    String::new()
                } else {
                    format!(
                        " (publisher, seq, stored after seq: {:?})",
                        stored.inversion_examples
                    )
                },
                stored.restarts
            )
        }
        Err(e) => format!("store audit: could not read the streams: {e}"),
    }
}

fn examples_of(examples: &[(u32, u64, f64, &str)]) -> String {
    if examples.is_empty() {
        String::new()
    } else {
        format!(" (publisher, seq, PUBACK s, acknowledged by: {examples:?})")
    }
}
