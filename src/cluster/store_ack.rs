//! What a store's acknowledgement is worth. JetStream answers a publish whose message id
//! (`Nats-Msg-Id`) is in the stream's duplicate window with `duplicate: true` and the
//! sequence recorded for that id, without storing anything. After a partition heals that
//! record can be a proposal that never committed: the leader that proposed it lost its
//! leadership, the entry was truncated, and the id stayed in its duplicate window (nats-server
//! clears staged ids on a leader change since 2.11, nats-io/nats-server#6486, but a server that
//! leads again after a partition may still hold them). Acknowledging the publisher on such an
//! answer acknowledges a message no stream has. So a duplicate answer for a message shard is
//! checked against the stream: the message at that sequence must carry the id; when it does
//! not, the message is stored again under a fresh id (a duplicate at worst, never a loss).
//!
//! And an acknowledgement is checked once more by the node's own reader of the shard
//! ([`Ledger`]): every acknowledged store of a message shard is kept (id, subject, payload)
//! until the reader reads its sequence from the stream. When the stream holds another message
//! there, or none (the reader passed it), the acknowledgement was not kept by the stream and
//! the message is stored again under a fresh id. A raft entry acknowledged and then truncated
//! when a partition heals (nats-io/nats-server#7545) is repaired this way, not lost.
//!
//! Every acknowledgement is logged at debug under the target `ferromq::store_ack` (stream,
//! sequence, duplicate flag, message id), so a run can look up where a message went:
//! `--log-level warn,ferromq::store_ack=debug`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::context::PublishAckFuture;
use async_nats::jetstream::message::PublishMessage as Publish;
use async_nats::jetstream::publish::PublishAck;
use async_nats::jetstream::Context;
use bytes::Bytes;
use std::future::IntoFuture;

/// The log target of store acknowledgements.
pub const TARGET: &str = "ferromq::store_ack";

/// The longest the check of a duplicate answer (one read of the stream's leader) may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// How a message is stored again when the stream does not have it, and the ledger its
/// acknowledgement is kept in until the node's reader confirms it.
pub struct Again {
    pub subject: String,
    pub payload: Bytes,
    pub ledger: Arc<Ledger>,
}

/// Log `ack` of the store of message id `id`; when it is a duplicate answer for a message
/// shard, make sure the stream holds the message (`again`: how to store it afresh, `None`
/// for a store that must not be repeated under another id, such as a compare-and-set). `Ok`
/// means the message is in its stream.
pub async fn confirm(
    js: &Context,
    ack: PublishAck,
    id: &str,
    again: Option<Again>,
) -> Result<(), String> {
    tracing::debug!(
        target: TARGET,
        stream = %ack.stream,
        seq = ack.sequence,
        duplicate = ack.duplicate,
        id,
        "stored"
    );
    let Some(shard) = shard_of_stream(&ack.stream) else {
        return Ok(());
    };
    if !ack.duplicate {
        if let Some(again) = &again {
            again
                .ledger
                .acknowledged(js, shard, ack.sequence, id, again);
        }
        return Ok(());
    }
    match holds(js, &ack.stream, ack.sequence, id).await {
        Ok(true) => {
            if let Some(again) = &again {
                again
                    .ledger
                    .acknowledged(js, shard, ack.sequence, id, again);
            }
            return Ok(());
        }
        Ok(false) => {}
        Err(e) => return Err(format!("duplicate answer for {id} not checked: {e}")),
    }
    tracing::warn!(
        target: TARGET,
        stream = %ack.stream,
        seq = ack.sequence,
        id,
        "the stream answered a store as a duplicate of a message it does not hold: storing it again"
    );
    let Some(again) = again else {
        return Err(format!(
            "{} answered {id} as a duplicate of sequence {} it does not hold",
            ack.stream, ack.sequence
        ));
    };
    let (seq, fresh) = store_afresh(js, id, &again).await?;
    again.ledger.acknowledged(js, shard, seq, &fresh, &again);
    Ok(())
}

/// Store `again`'s message under a fresh id derived from `id`: its sequence and the id.
async fn store_afresh(js: &Context, id: &str, again: &Again) -> Result<(u64, String), String> {
    let fresh = format!(
        "{}.{:x}",
        id.split('.').next().unwrap_or(id),
        rand::random::<u64>()
    );
    let publish = Publish::build()
        .payload(again.payload.clone())
        .message_id(fresh.as_str());
    let answer: PublishAckFuture = js
        .send_publish(again.subject.clone(), publish)
        .await
        .map_err(|e| format!("cluster store: {e}"))?;
    let ack = answer
        .into_future()
        .await
        .map_err(|e| format!("cluster store refused: {e}"))?;
    tracing::debug!(
        target: TARGET,
        stream = %ack.stream,
        seq = ack.sequence,
        duplicate = ack.duplicate,
        id = %fresh,
        "stored again"
    );
    if ack.duplicate {
        return Err(format!(
            "{} answered a fresh id {fresh} as a duplicate",
            ack.stream
        ));
    }
    Ok((ack.sequence, fresh))
}

/// `k` of `FMQ_MSG_<k>`.
fn shard_of_stream(stream: &str) -> Option<usize> {
    stream.strip_prefix("FMQ_MSG_")?.parse().ok()
}

/// Acknowledged stores kept at most before the oldest are given up on (a reader stalled that
/// long cannot confirm them; they are logged).
const LEDGER_LIMIT: usize = 200_000;
/// Payload bytes the ledger keeps at most (payloads up to NATS's `max_payload` would make
/// [`LEDGER_LIMIT`] entries many GiB): past it the oldest are given up on the same way.
const LEDGER_BYTES: usize = 64 * 1024 * 1024;
/// Per shard, how many of the last read (sequence, id) pairs are remembered for an
/// acknowledgement that arrives after the reader read its message.
const RECENT: usize = 16_384;
/// How long a re-store keeps trying.
const RESTORE_FOR: Duration = Duration::from_secs(120);

/// A store acknowledged and not yet read back by the node's reader.
struct Pending {
    id: String,
    subject: String,
    payload: Bytes,
}

#[derive(Default)]
struct Shard {
    /// By sequence.
    pending: BTreeMap<u64, Pending>,
    /// The payload bytes of `pending`.
    pending_bytes: usize,
    /// The last sequence the node's reader read.
    read_upto: u64,
    /// The last [`RECENT`] sequences read, with the id of the message (if it had one).
    recent: VecDeque<(u64, Option<String>)>,
}

/// Acknowledged stores of message shards waiting for the node's reader (see the module).
pub struct Ledger {
    shards: parking_lot::Mutex<Vec<Shard>>,
}

impl Ledger {
    pub fn new(shards: usize) -> Self {
        Ledger {
            shards: parking_lot::Mutex::new((0..shards).map(|_| Shard::default()).collect()),
        }
    }

    /// The reader of shard `k` starts at `last` (what is older was not stored by this node).
    pub fn start(&self, k: usize, last: u64) {
        if let Some(shard) = self.shards.lock().get_mut(k) {
            shard.read_upto = shard.read_upto.max(last);
        }
    }

    /// The stream acknowledged `id` at `seq` of shard `k`.
    fn acknowledged(self: &Arc<Self>, js: &Context, k: usize, seq: u64, id: &str, again: &Again) {
        let verdict = {
            let mut shards = self.shards.lock();
            let Some(shard) = shards.get_mut(k) else {
                return;
            };
            if seq > shard.read_upto {
                shard.pending_bytes += again.payload.len();
                let replaced = shard.pending.insert(
                    seq,
                    Pending {
                        id: id.to_owned(),
                        subject: again.subject.clone(),
                        payload: again.payload.clone(),
                    },
                );
                if let Some(old) = replaced {
                    shard.pending_bytes = shard.pending_bytes.saturating_sub(old.payload.len());
                }
                loop {
                    let (entries, bytes) = shards.iter().fold((0, 0), |(n, b), s| {
                        (n + s.pending.len(), b + s.pending_bytes)
                    });
                    if entries <= LEDGER_LIMIT && bytes <= LEDGER_BYTES {
                        break;
                    }
                    // The shard with the most waiting gives up its oldest entry.
                    let Some(shard) = shards.iter_mut().max_by_key(|s| s.pending.len()) else {
                        break;
                    };
                    let Some((seq, p)) = shard.pending.pop_first() else {
                        break;
                    };
                    shard.pending_bytes = shard.pending_bytes.saturating_sub(p.payload.len());
                    tracing::warn!(
                        target: TARGET,
                        shard = k,
                        seq,
                        id = %p.id,
                        "acknowledged store not confirmed: the reader is too far behind"
                    );
                }
                return;
            }
            shard
                .recent
                .iter()
                .find(|(s, _)| *s == seq)
                .map(|(_, read)| read.as_deref() == Some(id))
        };
        if verdict != Some(true) {
            let missing = Pending {
                id: id.to_owned(),
                subject: again.subject.clone(),
                payload: again.payload.clone(),
            };
            self.clone().restore(js.clone(), k, seq, missing);
        }
    }

    /// The node's reader of shard `k` read `seq`, a message with `id` (its `Nats-Msg-Id`).
    pub fn read(self: &Arc<Self>, js: &Context, k: usize, seq: u64, id: Option<&str>) {
        let mut missing = Vec::new();
        {
            let mut shards = self.shards.lock();
            let Some(shard) = shards.get_mut(k) else {
                return;
            };
            if seq <= shard.read_upto {
                return;
            }
            shard.read_upto = seq;
            shard.recent.push_back((seq, id.map(str::to_owned)));
            if shard.recent.len() > RECENT {
                shard.recent.pop_front();
            }
            while let Some(entry) = shard.pending.first_entry() {
                if *entry.key() > seq {
                    break;
                }
                let (at, pending) = entry.remove_entry();
                shard.pending_bytes = shard.pending_bytes.saturating_sub(pending.payload.len());
                if at == seq && id == Some(pending.id.as_str()) {
                    continue;
                }
                missing.push((at, pending));
            }
        }
        for (at, pending) in missing {
            self.clone().restore(js.clone(), k, at, pending);
        }
    }

    /// Store again a message whose acknowledgement the stream did not keep.
    fn restore(self: Arc<Self>, js: Context, k: usize, seq: u64, missing: Pending) {
        tracing::warn!(
            target: TARGET,
            shard = k,
            seq,
            id = %missing.id,
            "an acknowledged store is not in its stream (another message or none at its \
             sequence): storing it again"
        );
        let again = Again {
            subject: missing.subject,
            payload: missing.payload,
            ledger: self.clone(),
        };
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let mut pause = Duration::from_millis(200);
            loop {
                match store_afresh(&js, &missing.id, &again).await {
                    Ok((seq, fresh)) => {
                        again.ledger.acknowledged(&js, k, seq, &fresh, &again);
                        return;
                    }
                    Err(e) if started.elapsed() < RESTORE_FOR => {
                        tracing::debug!(target: TARGET, "storing again: {e}; retrying");
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_secs(2));
                    }
                    Err(e) => {
                        tracing::error!(
                            target: TARGET,
                            id = %missing.id,
                            "an acknowledged message could not be stored again: {e}"
                        );
                        return;
                    }
                }
            }
        });
    }
}

/// Whether `stream` holds a message with id `id` at `seq` (read from the stream's leader).
async fn holds(js: &Context, stream: &str, seq: u64, id: &str) -> Result<bool, String> {
    let read = async {
        let stream = js
            .get_stream_no_info(stream)
            .await
            .map_err(|e| e.to_string())?;
        match stream.get_raw_message(seq).await {
            Ok(message) => Ok(message
                .headers
                .get("Nats-Msg-Id")
                .is_some_and(|v| v.as_str() == id)),
            Err(e)
                if e.kind()
                    == async_nats::jetstream::stream::RawMessageErrorKind::NoMessageFound =>
            {
                Ok(false)
            }
            Err(e) => Err(e.to_string()),
        }
    };
    tokio::time::timeout(CHECK_TIMEOUT, read)
        .await
        .map_err(|_| format!("no answer within {} ms", CHECK_TIMEOUT.as_millis()))?
}
