//! The topic SENDs of a STOMP transaction kept with its queue work (`queue_batch.rs`).
//!
//! Topic messages live in the shard streams, which no atomic batch of the queue stream spans.
//! So a COMMIT's persistent topic SENDs travel in its batch as records on [`record_subject`]
//! (`fmq.q.$tx.<node>.t`, beside the acknowledgements' redo record): each record lists, in
//! frame order, the shard subject, the message id and the payload the node stores for each
//! message in its shard stream; a transaction has one record, or more when its messages
//! together pass NATS's `max_payload`. Once the batch is kept the node stores the messages
//! there itself ([`publish`], in order, through the same ordered store queues as every
//! publish), then deletes its records. A node that dies first leaves the records to the sweep
//! of `queue_redo.rs`: any node stores the messages of a record older than the grace under
//! their message ids ([`apply`]), so that a shard stream that kept the node's copy within its
//! duplicate window (twice `storeTimeout`, at least 20 s) drops the second one.
//!
//! A record's payload (binary, big-endian): a version byte ([`VERSION`]), the commit time in
//! ms since the epoch (u64), then for each message the shard subject's length (u16) and
//! bytes, the message id's length (u16) and bytes, the stored message's length (u32) and
//! bytes (the cluster codec's encoding).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::message::PublishMessage;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::future::IntoFuture;
use tokio::sync::oneshot;

use super::codec::encode_message;
use super::engine::Inner;
use super::publish::{message_id, Outgoing};
use super::queues::{unavailable, Item, QUEUE_STREAM};
use super::subject::{topic_fits, topic_subject};
use super::{shard_of, shard_prefix};
use crate::broker::durability::{now_ms, DurabilityError};
use crate::broker::queues::TopicSend;

/// The record format this node writes (a sweep leaves a newer one to a node that reads it).
const VERSION: u8 = 1;

/// Bytes of a record beside its messages' (version, time).
const RECORD_HEAD: usize = 9;

/// Room left in a batch message for what NATS and the batch add around a record (headers:
/// batch id and sequence, message id).
const BATCH_MESSAGE_MARGIN: usize = 1024;

/// One topic SEND as the node stores it in its shard stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TopicEntry {
    /// The shard stream subject it is stored under.
    pub subject: String,
    /// Its message id (`Nats-Msg-Id`) there: the same for the node and every sweep.
    pub id: String,
    /// The stored message.
    pub payload: Bytes,
}

impl TopicEntry {
    fn encoded_len(&self) -> usize {
        8 + self.subject.len() + self.id.len() + self.payload.len()
    }
}

/// Topic SENDs of one transaction as its batch keeps them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TopicRecord {
    /// When the node committed it (ms since the epoch, the node's clock).
    pub at_ms: u64,
    /// The messages, in frame order.
    pub entries: Vec<TopicEntry>,
}

/// Topic records, and the last instant this node may store their messages itself: a sweep
/// may store them from the grace on (the node seems dead: frozen, or its stores held up), and
/// a store of the node later than the shard stream's duplicate window after the sweep's
/// would be a second message. Past it the node leaves them to the sweep.
pub(super) struct Records {
    pub records: Vec<TopicRecord>,
    pub send_by: std::time::Instant,
}

/// The subject of this node's topic records (the redo records' consumer takes them).
pub(super) fn record_subject(inner: &Inner) -> String {
    format!(
        "{}.{:x}.t",
        super::queue_redo::redo_prefix(),
        inner.instance
    )
}

/// Whether `subject` (of the redo records' consumer) is a topic record's.
pub(super) fn is_record_subject(subject: &str) -> bool {
    subject.ends_with(".t")
}

/// The records of `sends`, as the node would store their messages now: one, or more when
/// they do not fit in one NATS message together (a message too large for one alone is a
/// record of its own, which the batch's store then refuses). An error when a topic is too
/// long for NATS subjects or a message does not encode.
pub(super) fn records(inner: &Inner, sends: &[TopicSend]) -> Result<Records, DurabilityError> {
    let send_by = std::time::Instant::now() + super::publish::resend_until(inner);
    let at_ms = now_ms();
    let limit = inner
        .client
        .server_info()
        .max_payload
        .saturating_sub(BATCH_MESSAGE_MARGIN);
    let mut records: Vec<TopicRecord> = Vec::new();
    let mut bytes = 0;
    for send in sends {
        let entry = entry(inner, send)?;
        let len = entry.encoded_len();
        match records.last_mut() {
            Some(record) if bytes + len <= limit => {
                bytes += len;
                record.entries.push(entry);
            }
            _ => {
                bytes = RECORD_HEAD + len;
                records.push(TopicRecord {
                    at_ms,
                    entries: vec![entry],
                });
            }
        }
    }
    Ok(Records { records, send_by })
}

fn entry(inner: &Inner, send: &TopicSend) -> Result<TopicEntry, DurabilityError> {
    let message = &send.message;
    if !topic_fits(&message.topic) {
        return Err(unavailable(format!(
            "topic of {} bytes is too long for the cluster's NATS subjects",
            message.topic.len()
        )));
    }
    let counter = inner
        .counter
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let payload = encode_message(message, inner.instance, counter, send.publisher.as_deref())
        .map_err(|e| unavailable(e.to_string()))?;
    Ok(TopicEntry {
        subject: topic_subject(
            &shard_prefix(shard_of(&message.topic, inner.shards)),
            &message.topic,
        ),
        id: message_id(inner.instance, counter),
        payload,
    })
}

impl TopicRecord {
    /// The batch message carrying it (its own message id: the batch's copy of it).
    pub(super) fn item(&self, inner: &Inner) -> Item {
        let first = self.entries.first().map_or("", |e| e.id.as_str());
        Item {
            subject: record_subject(inner),
            id: format!("tx{first}"),
            payload: self.encode(),
        }
    }

    fn encode(&self) -> Bytes {
        let len = RECORD_HEAD
            + self
                .entries
                .iter()
                .map(TopicEntry::encoded_len)
                .sum::<usize>();
        let mut out = BytesMut::with_capacity(len);
        out.put_u8(VERSION);
        out.put_u64(self.at_ms);
        for entry in &self.entries {
            // A subject within NATS's limits, an id of two hex numbers, a payload within
            // `max_payload`.
            for field in [&entry.subject, &entry.id] {
                out.put_u16(u16::try_from(field.len()).unwrap_or(u16::MAX));
                out.put_slice(field.as_bytes());
            }
            out.put_u32(u32::try_from(entry.payload.len()).unwrap_or(u32::MAX));
            out.put_slice(&entry.payload);
        }
        out.freeze()
    }

    /// A record read back; `None` when it does not decode (or is of another version).
    pub(super) fn decode(bytes: &Bytes) -> Option<TopicRecord> {
        let mut rest = bytes.clone();
        if rest.remaining() < RECORD_HEAD || rest.get_u8() != VERSION {
            return None;
        }
        let at_ms = rest.get_u64();
        let mut entries = Vec::new();
        while rest.has_remaining() {
            let subject = text(&mut rest)?;
            let id = text(&mut rest)?;
            if rest.remaining() < 4 {
                return None;
            }
            let len = usize::try_from(rest.get_u32()).ok()?;
            if rest.remaining() < len {
                return None;
            }
            entries.push(TopicEntry {
                subject,
                id,
                payload: rest.split_to(len),
            });
        }
        Some(TopicRecord { at_ms, entries })
    }
}

/// A u16 length and that many bytes of UTF-8, taken from the front of `rest`.
fn text(rest: &mut Bytes) -> Option<String> {
    if rest.remaining() < 2 {
        return None;
    }
    let len = usize::from(rest.get_u16());
    if rest.remaining() < len {
        return None;
    }
    String::from_utf8(rest.split_to(len).to_vec()).ok()
}

/// The batch holding `records` is kept: store their messages in their shard streams, in
/// order, through the node's ordered store queues (none after `send_by`); once every one is
/// confirmed, delete the records (`seqs`: their queue stream sequences, empty when not
/// known). A store not confirmed leaves the records to the sweep (logged): the transaction
/// is kept either way, its batch holds them.
pub(super) async fn publish(inner: &Arc<Inner>, records: Records, seqs: Vec<u64>) {
    let Records { records, send_by } = records;
    let mut answers = Vec::new();
    for entry in records.into_iter().flat_map(|r| r.entries) {
        let (done, answer) = oneshot::channel();
        let sent = inner.outgoing.send(Outgoing::Store {
            subject: entry.subject,
            payload: entry.payload,
            delete: false,
            done: Some(done),
            expect: None,
            id: Some(entry.id),
            send_by: Some(send_by),
        });
        if sent.is_err() {
            return;
        }
        answers.push(answer);
    }
    let mut stored = true;
    for answer in answers {
        if !matches!(answer.await, Ok(Ok(()))) {
            stored = false;
        }
    }
    if !stored {
        tracing::warn!(
            "cluster queue: a topic message of a committed STOMP transaction is not confirmed \
             stored yet; its record in the transaction's batch is applied by a sweep"
        );
        return;
    }
    let Ok(stream) = inner.js.get_stream_no_info(QUEUE_STREAM).await else {
        return;
    };
    for seq in seqs {
        // One left behind is applied by a sweep (copies of stored messages, dropped).
        let _ = stream.delete_message(seq).await;
    }
}

/// A sweep's application of `record`: its messages stored in their shard streams under
/// their message ids, in order (each dropped there as a copy when its node stored it within
/// the duplicate window), all within `storeTimeout` and 5 ms more per message.
pub(super) async fn apply(inner: &Inner, record: TopicRecord) -> Result<(), DurabilityError> {
    let count = u32::try_from(record.entries.len()).unwrap_or(u32::MAX);
    let bound = inner.store_timeout + Duration::from_millis(5) * count;
    let stored = async {
        let mut acks = Vec::with_capacity(record.entries.len());
        for entry in record.entries {
            let publish = PublishMessage::build()
                .payload(entry.payload)
                .message_id(entry.id.as_str());
            acks.push(inner.js.send_publish(entry.subject, publish).await?);
        }
        for ack in acks {
            ack.into_future().await?;
        }
        Ok::<(), async_nats::Error>(())
    };
    match tokio::time::timeout(bound, stored).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(unavailable(format!("cluster store refused: {e}"))),
        Err(_) => Err(unavailable("cluster store not acknowledged in time")),
    }
}

/// How old a record must be before a sweep applies it: the grace of the acknowledgements'
/// records.
pub(super) fn due(record: &TopicRecord, grace: Duration) -> Option<Duration> {
    let age = Duration::from_millis(now_ms().saturating_sub(record.at_ms));
    (age < grace).then(|| grace.saturating_sub(age))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_as_written() {
        let entry = |n: u8| TopicEntry {
            subject: format!("fmq.m.{n}.a.b"),
            id: format!("1f-m{n}"),
            payload: Bytes::from(vec![n; usize::from(n) * 3]),
        };
        let record = TopicRecord {
            at_ms: 1_700_000_000_123,
            entries: vec![entry(0), entry(1), entry(7)],
        };
        assert_eq!(TopicRecord::decode(&record.encode()), Some(record.clone()));
        let mut newer = record.encode().to_vec();
        newer[0] = VERSION + 1;
        assert_eq!(TopicRecord::decode(&Bytes::from(newer)), None);
        let encoded = record.encode();
        for cut in [3, 12, encoded.len() - 1] {
            assert_eq!(
                TopicRecord::decode(&encoded.slice(..cut)),
                None,
                "cut at {cut}"
            );
        }
    }
}
