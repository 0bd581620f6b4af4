//! Where an acknowledged message went missing: read back every QoS 1 message the cluster
//! stored (every `FMQ_MSG_<k>` stream, from its first message to its last, with an ordered
//! consumer) and compare with what the publishers had acknowledged. A message PUBACKed and
//! not in any stream was lost by the store path (ferromq's publish or NATS); one in a stream
//! and never delivered to a matching subscriber was lost by the delivery path.

use std::collections::HashSet;
use std::time::Duration;

use futures_util::StreamExt;

use super::recorder::{decode_payload, Recording};

/// What the shard streams hold of the load: every `(publisher, seq)`, and the stream order
/// inversions (a publisher's message stored after a later one of the same publisher: a
/// subscriber reading the stream gets them out of order).
#[derive(Debug, Default)]
pub struct Stored {
    pub messages: HashSet<(u32, u64)>,
    pub inversions: usize,
    /// Up to 5 `(publisher, seq stored late, the higher seq stored before it)`.
    pub inversion_examples: Vec<(u32, u64, u64)>,
}

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
        let consumer = stream
            .create_consumer(OrderedConfig {
                deliver_policy: DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .map_err(|e| format!("{name}: {e}"))?;
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| format!("{name}: {e}"))?;
        loop {
            let next = tokio::time::timeout(Duration::from_secs(10), messages.next()).await;
            let message = match next {
                Ok(Some(Ok(message))) => message,
                Ok(Some(Err(e))) => return Err(format!("{name}: {e}")),
                Ok(None) | Err(_) => return Err(format!("{name}: stopped before {last}")),
            };
            let sequence = message.info().map(|i| i.stream_sequence).unwrap_or(0);
            if let Ok(frame) = ferromq::cluster::codec::decode_message(message.payload.clone()) {
                if let Some((publisher, seq, _)) = decode_payload(&frame.message.payload) {
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
                break;
            }
        }
    }
    Ok(stored)
}

/// The acknowledged messages missing from `stored`: how many, and up to 10 `(publisher,
/// seq, PUBACK time in s)`.
pub fn acked_not_stored(
    recording: &Recording,
    stored: &HashSet<(u32, u64)>,
) -> (usize, Vec<(u32, u64, f64)>) {
    let mut missing: Vec<(u32, u64, f64)> = recording
        .publishes
        .iter()
        .filter(|p| p.t_puback_us.is_some() && !stored.contains(&(p.publisher, p.seq)))
        .map(|p| (p.publisher, p.seq, p.t_puback_us.unwrap_or(0) as f64 / 1e6))
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
            format!(
                "store audit: {} load messages in the streams; PUBACKed but in no stream: \
                 {missing}{}; stored after a later message of their publisher: {}{}",
                stored.messages.len(),
                if examples.is_empty() {
                    String::new()
                } else {
                    format!(" (publisher, seq, PUBACK s: {examples:?})")
                },
                stored.inversions,
                if stored.inversion_examples.is_empty() {
                    String::new()
                } else {
                    format!(
                        " (publisher, seq, stored after seq: {:?})",
                        stored.inversion_examples
                    )
                }
            )
        }
        Err(e) => format!("store audit: could not read the streams: {e}"),
    }
}
