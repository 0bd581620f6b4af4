//! QoS 2 exactly once across nodes (MQTT 5 4.3.3, 4.4).
//!
//! **Inbound, a client's PUBLISH.** The message is held in its topic's shard stream on a
//! subject of its own exchange, `fmq.m.<k>.$q2.<client key>.<incarnation>.<packet id>` (no
//! MQTT topic maps to a `$q2` token: `$` is escaped in topic subjects). PUBLISH: the subject's
//! last message is read from the stream leader; a held copy of the same message means a
//! re-sent PUBLISH (PUBREC, nothing written); otherwise the held copy (the message frame,
//! header `Fmq-Q2: held`) is written with `Nats-Expected-Last-Subject-Sequence` = that last
//! sequence (0: none). PUBREL: the released copy (the same frame, no header) is written on
//! the same subject expecting the held copy's sequence; a "wrong last sequence" answer means
//! an earlier attempt released it. The readers skip held copies and route released ones, so
//! the message is delivered at PUBREL (the specification's method A) and exactly once: every
//! step is a compare-and-set on one subject, whichever node the PUBLISH, its re-send and the
//! PUBREL reach, and whatever failed between them. Message ids (`Nats-Msg-Id`) are derived
//! from the exchange and the expected sequence, the same for every retry on every node.
//! The incarnation (random per session, in its record) keeps a new session (clean start)
//! from taking an old session's packet id for its own.
//!
//! **Outbound, a QoS 2 delivery.** The packet id and state (PUBLISH sent, PUBREL sent) of each
//! QoS 2 entry are in the session record before the broker writes the PUBLISH or PUBREL
//! ([`delivery_state`]: one record write carries every change made before it), so a session
//! resumed on another node re-sends the PUBLISH (DUP) or the PUBREL by that state.

use std::collections::HashMap;
use std::sync::Arc;

use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::LastRawMessageErrorKind;
use async_nats::HeaderMap;
use bytes::Bytes;
use std::future::IntoFuture;
use tokio::sync::oneshot;

use super::codec::{decode_message, encode_message};
use super::engine::Inner;
use super::publish::Outgoing;
use super::subject::client_key;
use super::tracker::SentState;
use super::{shard_of, shard_prefix, shard_stream};
use crate::broker::durability::{
    Commit, DurabilityError, QueueSeq, ReceivingConnection, RetainedChange,
};
use crate::broker::message::Message;

/// The header marking a held copy.
const STATE_HEADER: &str = "Fmq-Q2";
const HELD: &str = "held";
/// The header of a held copy that sets (`set`) or clears (`clear`) its topic's retained
/// message at its release.
const RETAIN_HEADER: &str = "Fmq-Retain";

/// Attempts of a PUBLISH against a concurrent writer of its subject.
const ATTEMPTS: usize = 3;
/// The pause before reading an exchange again after its held copy was found being written
/// by another connection (a loopback store write takes well under this).
const IN_PROCESS_PAUSE: std::time::Duration = std::time::Duration::from_millis(10);

fn unavailable(what: impl std::fmt::Display) -> DurabilityError {
    DurabilityError::Unavailable(format!("cluster store (QoS 2): {what}"))
}

/// A held message this node wrote or found, until its PUBREL.
#[derive(Clone)]
struct Held {
    shard: usize,
    seq: u64,
    incarnation: u64,
    frame: Bytes,
    retained: RetainedChange,
}

/// The node's held inbound exchanges by (client id, packet id): the PUBREL of a PUBLISH this
/// node took needs no read. An entry that went stale (the session moved and came back) is
/// harmless: its release's compare-and-set fails, and the subject is read again.
#[derive(Default)]
pub struct Inbound {
    held: parking_lot::Mutex<HashMap<(Arc<str>, u16), Held>>,
    /// Per client, the latest release: resolves once it is handed to the store task. A
    /// release waits for the one before it, so releases reach the stream in PUBREL order
    /// (the order of delivery) even when one must first look for its held copy.
    last_release: parking_lot::Mutex<HashMap<Arc<str>, oneshot::Receiver<()>>>,
    /// The exchanges whose PUBREL this node is releasing, by (client id, packet id): the
    /// receiver resolves when the release ends (its sender is dropped). A PUBLISH that reuses
    /// the packet id meanwhile waits for it (see [`received`]).
    releasing: parking_lot::Mutex<HashMap<ExchangeKey, tokio::sync::watch::Receiver<()>>>,
}

/// An inbound exchange of this node: (client id, packet id).
type ExchangeKey = (Arc<str>, u16);

/// Ends the entry of one release in [`Inbound::releasing`] when the release ends (or its
/// connection stops waiting for it).
struct Releasing {
    inner: Arc<Inner>,
    key: ExchangeKey,
    /// Dropped with the release: its receivers' `changed` resolves.
    done: tokio::sync::watch::Sender<()>,
}

impl Drop for Releasing {
    fn drop(&mut self) {
        let mut releasing = self.inner.q2.releasing.lock();
        if releasing
            .get(&self.key)
            .is_some_and(|rx| rx.same_channel(&self.done.subscribe()))
        {
            releasing.remove(&self.key);
        }
    }
}

impl Inbound {
    /// The session left this node: its exchanges are another node's now.
    pub fn forget(&self, client_id: &str) {
        self.held.lock().retain(|(c, _), _| &**c != client_id);
        self.last_release.lock().remove(client_id);
    }

    /// Queue a release of `client_id` behind the previous one: the previous one's signal
    /// (`None`: nothing to wait for) and this one's.
    fn queue_release(
        &self,
        client_id: &Arc<str>,
    ) -> (Option<oneshot::Receiver<()>>, oneshot::Sender<()>) {
        let (tx, rx) = oneshot::channel();
        let previous = self.last_release.lock().insert(client_id.clone(), rx);
        let previous = previous.and_then(|mut p| match p.try_recv() {
            // Handed over (or given up): nothing to wait for.
            Ok(()) | Err(oneshot::error::TryRecvError::Closed) => None,
            Err(oneshot::error::TryRecvError::Empty) => Some(p),
        });
        (previous, tx)
    }
}

/// A message read from a shard is a held copy (not to be routed).
pub fn is_held(headers: Option<&HeaderMap>) -> bool {
    headers
        .and_then(|h| h.get(STATE_HEADER))
        .is_some_and(|v| v.as_str() == HELD)
}

/// The token after a shard's prefix of every inbound QoS 2 exchange's subject.
pub const SUBJECT_TOKEN: &str = "$q2";

/// Whether NATS subject (or filter) `a` and subject `b` have a subject in common (`*` one
/// token, `>` the rest): a consumer's filter subjects must not.
pub fn subjects_collide(a: &str, b: &str) -> bool {
    let (mut a, mut b) = (a.split('.'), b.split('.'));
    loop {
        match (a.next(), b.next()) {
            (None, None) => return true,
            (Some(">"), Some(_)) | (Some(_), Some(">")) => return true,
            (Some(x), Some(y)) if x == "*" || y == "*" || x == y => continue,
            _ => return false,
        }
    }
}

/// The subject of `client_id`'s inbound exchange `packet_id` in shard `shard`.
fn subject(shard: usize, client_id: &str, incarnation: u64, packet_id: u16) -> String {
    format!(
        "{}.{SUBJECT_TOKEN}.{}.{incarnation:x}.{packet_id}",
        shard_prefix(shard),
        client_key(client_id)
    )
}

fn incarnation_of(inner: &Inner, client_id: &str) -> Option<u64> {
    inner
        .tracker
        .lock()
        .sessions
        .get(client_id)
        .map(|t| t.incarnation)
}

/// A QoS 2 PUBLISH `packet_id` of the persistent session `client_id`, read on `connection`:
/// the PUBREC may go once the answer is `Ok` (the message is held, by this PUBLISH or an
/// earlier copy of it). Nothing is written for a connection a newer one took the session
/// from (see [`ReceivingConnection`]).
pub fn received(
    inner: &Arc<Inner>,
    message: Message,
    retained: RetainedChange,
    client_id: Arc<str>,
    packet_id: u16,
    connection: Option<ReceivingConnection>,
) -> Commit {
    let Some(incarnation) = incarnation_of(inner, &client_id) else {
        // Not a session of this node: it is being handed over, and its connection is closed
        // by the hand-over (or closing already). No PUBREC goes: its client re-sends the
        // PUBLISH where the session resumes. Stored here as QoS 1, as it once was, the message
        // was delivered twice (a publisher reconnecting to another node after each burst).
        // Stale, not a store refusal: nothing is counted or logged while the connection
        // waits for the hand-over to close it.
        return Commit::Done(Err(DurabilityError::Stale(format!(
            "session {client_id} left this node: PUBLISH {packet_id} is left to the node it \
             resumes on"
        ))));
    };
    if !super::subject::topic_fits(&message.topic) {
        return Commit::Done(Err(unavailable(format!(
            "topic of {} bytes is too long for the cluster's NATS subjects",
            message.topic.len()
        ))));
    }
    let counter = inner
        .counter
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let frame = match encode_message(&message, inner.instance, counter, Some(&client_id)) {
        Ok(f) => f,
        Err(e) => return Commit::Done(Err(unavailable(e))),
    };
    let inner = inner.clone();
    Commit::Pending(Box::pin(async move {
        // A new session's record is written in the background: it must exist (with the
        // incarnation) before a PUBREC, else a node taking the session over would not find
        // what this one holds for it.
        let unwritten = inner
            .tracker
            .lock()
            .sessions
            .get(&client_id)
            .is_some_and(|t| t.revision == 0);
        if unwritten {
            super::sessions::write_record(&inner, &client_id).await?;
        }
        // A client may send a new PUBLISH under the packet id of an exchange whose PUBREL it
        // sent just before, without waiting for the PUBCOMP (rumqttc 0.24 does after a
        // reconnect: it counts no PUBREL in flight and checks only its PUBLISHes for packet
        // ids in use). Held now, the new message would replace the held copy that PUBREL is
        // releasing, and that message, acknowledged with a PUBREC, would never be delivered.
        let releasing = inner
            .q2
            .releasing
            .lock()
            .get(&(client_id.clone(), packet_id))
            .cloned();
        if let Some(mut releasing) = releasing {
            // Resolves when the release ends: its sender is dropped.
            if tokio::time::timeout(inner.store_timeout, releasing.changed())
                .await
                .is_err()
            {
                return Err(unavailable(format!(
                    "packet id {packet_id} is still being released for the PUBREL before it"
                )));
            }
        }
        let shard = shard_of(&message.topic, inner.shards);
        let subject = subject(shard, &client_id, incarnation, packet_id);
        let held = hold(
            &inner,
            shard,
            &subject,
            &message,
            frame,
            retained,
            connection.as_ref(),
        )
        .await?;
        inner.q2.held.lock().insert(
            (client_id, packet_id),
            Held {
                incarnation,
                ..held
            },
        );
        Ok(())
    }))
}

/// Write the held copy of `message` on `subject` unless the subject holds it already, or
/// `connection` no longer holds its session.
async fn hold(
    inner: &Inner,
    shard: usize,
    subject: &str,
    message: &Message,
    frame: Bytes,
    retained: RetainedChange,
    connection: Option<&ReceivingConnection>,
) -> Result<Held, DurabilityError> {
    let stream = inner
        .js
        .get_stream_no_info(shard_stream(shard))
        .await
        .map_err(unavailable)?;
    // Set once a write of this PUBLISH lost its compare-and-set: someone else wrote the
    // exchange's subject after this PUBLISH read it.
    let mut raced = false;
    for _ in 0..ATTEMPTS {
        // From the stream leader: a replica could still show a held copy released since.
        let last = tokio::time::timeout(
            inner.store_timeout,
            stream.get_last_raw_message_by_subject(subject),
        )
        .await
        .map_err(|_| unavailable("no answer reading an exchange"))?;
        let expected = match last {
            Ok(last) => {
                if is_held(Some(&last.headers)) {
                    if let Ok(kept) = decode_message(last.payload.clone()) {
                        if same_message(&kept.message, message) {
                            // A re-sent PUBLISH (on this node or another): held already.
                            trace_exchange(
                                "held already",
                                subject,
                                last.sequence,
                                &message.payload,
                            );
                            return Ok(Held {
                                shard,
                                seq: last.sequence,
                                incarnation: 0,
                                retained: retained_of(&last.headers),
                                frame: last.payload,
                            });
                        }
                    }
                }
                // Another message on the subject after a lost race: a newer PUBLISH of this
                // client under the same packet id (from its next connection, while this one
                // is closing) wrote it since this one read. Replacing it would lose that
                // message, acknowledged or about to be, and have its PUBREL release this
                // one again; this PUBLISH is stale and gives up (its client sent it again,
                // or will). Without a race, a released exchange (the packet id is being
                // reused) or a held copy of another message whose PUBREC was refused is
                // replaced.
                if raced {
                    return Err(unavailable(format!(
                        "exchange {subject} moved on to another message while this PUBLISH was \
                         being held"
                    )));
                }
                last.sequence
            }
            Err(e) if matches!(e.kind(), LastRawMessageErrorKind::NoMessageFound) => 0,
            Err(e) => return Err(unavailable(e)),
        };
        // Checked after the read: a newer connection of the session attached after this
        // point reads the subject after it too, so the two writes meet in the
        // compare-and-set rather than this one replacing what the newer one held.
        if connection.is_some_and(|c| !c.holds_session()) {
            return Err(unavailable(format!(
                "the connection that read this PUBLISH no longer holds its session: {subject} \
                 is left to the newer connection"
            )));
        }
        let mut publish = PublishMessage::build()
            .payload(frame.clone())
            .header(STATE_HEADER, HELD)
            .expected_last_subject_sequence(expected)
            .message_id(format!("{subject}.h{expected}"));
        match retained {
            RetainedChange::Set => publish = publish.header(RETAIN_HEADER, "set"),
            RetainedChange::Clear => publish = publish.header(RETAIN_HEADER, "clear"),
            RetainedChange::Unchanged => {}
        }
        let ack = match inner
            .stores_js
            .send_publish(subject.to_owned(), publish)
            .await
        {
            Ok(ack) => ack,
            Err(e) => return Err(unavailable(e)),
        };
        let answer = super::late_wake::within(inner.store_timeout, ack.into_future()).await;
        match answer.ok_or(()) {
            // The message id was written before (by an earlier attempt, or another connection
            // of the client with the same expected sequence): what was kept may be another
            // message; the read says which.
            Ok(Ok(ack)) if ack.duplicate => {
                raced = true;
                continue;
            }
            Ok(Ok(ack)) => {
                trace_exchange("held", subject, ack.sequence, &message.payload);
                return Ok(Held {
                    shard,
                    seq: ack.sequence,
                    incarnation: 0,
                    frame,
                    retained,
                });
            }
            // Someone wrote the subject since it was read (an earlier attempt of this
            // PUBLISH, whose answer was lost): read again.
            Ok(Err(e)) if super::lost_race::publish(&e) => {
                raced = true;
                continue;
            }
            // The same held copy (same message id) being written by another connection of
            // the client: read again once that write had time to land.
            Ok(Err(e)) if super::lost_race::in_process(&e) => {
                raced = true;
                tokio::time::sleep(IN_PROCESS_PAUSE).await;
                continue;
            }
            Ok(Err(e)) => return Err(unavailable(e)),
            Err(_) => return Err(unavailable("no answer holding a message")),
        }
    }
    Err(unavailable("the exchange's subject kept changing"))
}

/// A step of an inbound exchange in the debug log of the store path (`ferromq::store_ack`),
/// with the digest of the message's payload, so that a test can follow one message through
/// its held copy and its release on every node.
fn trace_exchange(step: &str, subject: &str, seq: u64, payload: &[u8]) {
    tracing::debug!(
        target: super::store_ack::TARGET,
        subject,
        seq,
        digest = %format_args!("{:016x}", super::store_ack::payload_digest(payload)),
        "QoS 2 {step}"
    );
}

/// A re-sent PUBLISH carries the same message (MQTT 5 4.3.3: same packet id, DUP set).
fn same_message(a: &Message, b: &Message) -> bool {
    a.topic == b.topic && a.payload == b.payload && a.retain == b.retain && a.qos == b.qos
}

fn retained_of(headers: &HeaderMap) -> RetainedChange {
    match headers.get(RETAIN_HEADER).map(|v| v.as_str()) {
        Some("set") => RetainedChange::Set,
        Some("clear") => RetainedChange::Clear,
        _ => RetainedChange::Unchanged,
    }
}

/// PUBREL `packet_id` of the persistent session `client_id`: the PUBCOMP may go once the
/// answer is `Ok` (the message is released, by this PUBREL or an earlier one, or there was
/// nothing to release).
pub fn released(inner: &Arc<Inner>, client_id: Arc<str>, packet_id: u16) -> Commit {
    let Some(incarnation) = incarnation_of(inner, &client_id) else {
        // The session is leaving this node (handed over, fenced): what it holds is released
        // by the PUBREL its client sends again where it resumes. A PUBCOMP here would end
        // the exchange with its message still held.
        return Commit::Done(Err(unavailable(format!(
            "session {client_id} is not served by this node: PUBREL {packet_id} is left to \
             the node it resumes on"
        ))));
    };
    let cached = inner
        .q2
        .held
        .lock()
        .remove(&(client_id.clone(), packet_id))
        .filter(|h| h.incarnation == incarnation);
    // The held copy this node wrote or found is released through the store task now, behind
    // this client's earlier publishes; without one (the PUBLISH reached another node, or
    // this one before a restart) it is looked for first, and later releases wait for it.
    let (previous, queued) = inner.q2.queue_release(&client_id);
    // The held copy as this node knew it: released even when the stream lost it.
    let known = cached.clone();
    let (first, cached) = match (previous.is_none(), cached) {
        (true, Some(held)) => (
            Some(release(inner, &client_id, incarnation, packet_id, held)),
            None,
        ),
        (_, cached) => (None, cached),
    };
    let queued = if first.is_some() {
        drop(queued);
        None
    } else {
        Some(queued)
    };
    let (done, waiters) = tokio::sync::watch::channel(());
    inner
        .q2
        .releasing
        .lock()
        .insert((client_id.clone(), packet_id), waiters);
    let releasing = Releasing {
        inner: inner.clone(),
        key: (client_id.clone(), packet_id),
        done,
    };
    let inner = inner.clone();
    Commit::Pending(Box::pin(async move {
        let _releasing = releasing;
        if let Some(previous) = previous {
            let _ = previous.await;
        }
        let first = first.or_else(|| {
            cached
                .clone()
                .map(|h| release(&inner, &client_id, incarnation, packet_id, h))
        });
        let exchange = Exchange {
            client_id: &client_id,
            incarnation,
            packet_id,
        };
        settle(&inner, exchange, first, known, queued).await
    }))
}

/// One inbound exchange of a session.
#[derive(Clone, Copy)]
struct Exchange<'a> {
    client_id: &'a Arc<str>,
    incarnation: u64,
    packet_id: u16,
}

/// Wait for a release (`first`, or one of the held copy found in the shards), reading the
/// subject again when its compare-and-set failed. `known`: the held copy this node wrote or
/// found at the PUBLISH, released even when its stream no longer holds it (see
/// [`taken_back`]). `queued` (the signal later releases of the client wait for) is dropped
/// once the release is handed to the store task.
async fn settle(
    inner: &Arc<Inner>,
    exchange: Exchange<'_>,
    first: Option<Commit>,
    mut known: Option<Held>,
    mut queued: Option<oneshot::Sender<()>>,
) -> Result<(), DurabilityError> {
    let Exchange {
        client_id,
        incarnation,
        packet_id,
    } = exchange;
    let mut attempt = first;
    for _ in 0..ATTEMPTS {
        let pending = match attempt.take() {
            Some(pending) => pending,
            None => match find_held(inner, client_id, incarnation, packet_id).await? {
                Some(held) => release(inner, client_id, incarnation, packet_id, held),
                None => match known.take() {
                    Some(held) => match taken_back(inner, exchange, &held).await? {
                        Some(last) => release(
                            inner,
                            client_id,
                            incarnation,
                            packet_id,
                            Held { seq: last, ..held },
                        ),
                        None => return Ok(()),
                    },
                    // Released already (by an earlier PUBREL), or never held.
                    None => {
                        tracing::debug!(
                            target: super::store_ack::TARGET,
                            client_id = %client_id,
                            incarnation,
                            packet_id,
                            "PUBREL: nothing held to release"
                        );
                        return Ok(());
                    }
                },
            },
        };
        drop(queued.take());
        match pending.wait().await {
            // The subject moved on since its held copy was read: an earlier attempt
            // released it, or a later copy of the PUBLISH is the one to release.
            Err(DurabilityError::Stale(_)) => continue,
            other => return other,
        }
    }
    Err(unavailable("the exchange's subject kept changing"))
}

/// Whether the stream took back the held copy `held` this node acknowledged with a PUBREC
/// (a raft entry truncated at a leader change, nats-io/nats-server#7545): its subject's last
/// message is older than it (or there is none), and not its release. `Some`: that last
/// sequence (0: none), for the release to expect. `None`: released already, or the subject
/// moved on past it (an exchange this node's copy is stale for).
async fn taken_back(
    inner: &Inner,
    exchange: Exchange<'_>,
    held: &Held,
) -> Result<Option<u64>, DurabilityError> {
    let subject = subject(
        held.shard,
        exchange.client_id,
        exchange.incarnation,
        exchange.packet_id,
    );
    let stream = inner
        .js
        .get_stream_no_info(shard_stream(held.shard))
        .await
        .map_err(unavailable)?;
    let last = tokio::time::timeout(
        inner.store_timeout,
        stream.get_last_raw_message_by_subject(&subject),
    )
    .await
    .map_err(|_| unavailable("no answer reading an exchange"))?;
    let last = match last {
        Ok(last) if last.payload == held.frame && !is_held(Some(&last.headers)) => return Ok(None),
        Ok(last) if last.sequence >= held.seq => return Ok(None),
        Ok(last) => last.sequence,
        Err(e) if matches!(e.kind(), LastRawMessageErrorKind::NoMessageFound) => 0,
        Err(e) => return Err(unavailable(e)),
    };
    tracing::warn!(
        target: super::store_ack::TARGET,
        subject,
        seq = held.seq,
        "an acknowledged held QoS 2 message is not in its stream: releasing this node's copy"
    );
    Ok(Some(last))
}

/// Store again the released copy `again` of an exchange (acknowledged with message id `id`)
/// that its stream does not hold (taken back at a leader
/// change). Looked at first, so that it is never released twice:
/// - the exchange's subject ends with this release: held already (`None`);
/// - it ends with this held copy: released on it (compare-and-set, a fresh id);
/// - it moved on (the packet id serves a newer exchange) or back: stored beside the
///   exchange, on [`SIDE_SUFFIX`], where it changes no exchange's compare-and-set.
pub(super) async fn release_again(
    js: &async_nats::jetstream::Context,
    id: &str,
    again: &super::store_ack::Again,
) -> Result<Option<(u64, String)>, String> {
    let shard = super::shard_of_subject(&again.subject)
        .ok_or_else(|| format!("{} is not an exchange subject", again.subject))?;
    let stream = js
        .get_stream_no_info(shard_stream(shard))
        .await
        .map_err(|e| e.to_string())?;
    for _ in 0..ATTEMPTS {
        let last = tokio::time::timeout(
            RELEASE_AGAIN_TIMEOUT,
            stream.get_last_raw_message_by_subject(&again.subject),
        )
        .await
        .map_err(|_| "no answer reading an exchange".to_owned())?;
        let expect = match last {
            Ok(last) if last.payload == again.payload => {
                if !is_held(Some(&last.headers)) {
                    return Ok(None);
                }
                last.sequence
            }
            Ok(_) => return release_beside(js, id, again).await.map(Some),
            Err(e) if matches!(e.kind(), LastRawMessageErrorKind::NoMessageFound) => {
                return release_beside(js, id, again).await.map(Some)
            }
            Err(e) => return Err(e.to_string()),
        };
        let fresh = super::store_ack::fresh_id(id);
        let publish = PublishMessage::build()
            .payload(again.payload.clone())
            .message_id(fresh.as_str())
            .expected_last_subject_sequence(expect);
        let ack = js
            .send_publish(again.subject.clone(), publish)
            .await
            .map_err(|e| format!("cluster store: {e}"))?;
        match tokio::time::timeout(RELEASE_AGAIN_TIMEOUT, ack.into_future()).await {
            Ok(Ok(ack)) => {
                tracing::debug!(
                    target: super::store_ack::TARGET,
                    stream = %ack.stream,
                    seq = ack.sequence,
                    id = %fresh,
                    "released again"
                );
                return Ok(Some((ack.sequence, fresh)));
            }
            Ok(Err(e)) if super::lost_race::publish(&e) => {}
            Ok(Err(e)) => return Err(format!("cluster store refused: {e}")),
            Err(_) => return Err("no answer releasing again".to_owned()),
        }
    }
    Err("the exchange's subject kept changing".to_owned())
}

/// The suffix of the subject beside an exchange's where a release is stored again once the
/// exchange's subject moved on: the readers route it like a release (it carries no held
/// mark), and no exchange compares against it.
const SIDE_SUFFIX: &str = "r";

/// The longest one read or store of [`release_again`] may take.
const RELEASE_AGAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

async fn release_beside(
    js: &async_nats::jetstream::Context,
    id: &str,
    again: &super::store_ack::Again,
) -> Result<(u64, String), String> {
    let beside = super::store_ack::Again {
        subject: format!("{}{SIDE_SUFFIX}", again.subject),
        payload: again.payload.clone(),
        expect: None,
        ledger: again.ledger.clone(),
    };
    super::store_ack::store_afresh(js, id, &beside).await
}

/// The held copy of an exchange in any shard (its topic, so its shard, is unknown here):
/// the latest, if several (a shard's copy of a packet id used before for another topic is
/// released, so not held).
async fn find_held(
    inner: &Inner,
    client_id: &str,
    incarnation: u64,
    packet_id: u16,
) -> Result<Option<Held>, DurabilityError> {
    let reads = (0..inner.shards).map(|shard| async move {
        let stream = inner
            .js
            .get_stream_no_info(shard_stream(shard))
            .await
            .map_err(unavailable)?;
        let subject = subject(shard, client_id, incarnation, packet_id);
        match tokio::time::timeout(
            inner.store_timeout,
            stream.get_last_raw_message_by_subject(&subject),
        )
        .await
        {
            Ok(Ok(m)) if is_held(Some(&m.headers)) => Ok(Some((shard, m))),
            Ok(Ok(_)) => Ok(None),
            Ok(Err(e)) if matches!(e.kind(), LastRawMessageErrorKind::NoMessageFound) => Ok(None),
            Ok(Err(e)) => Err(unavailable(e)),
            Err(_) => Err(unavailable("no answer reading an exchange")),
        }
    });
    let found = futures_util::future::try_join_all(reads).await?;
    Ok(found
        .into_iter()
        .flatten()
        .max_by_key(|(_, m)| m.time)
        .map(|(shard, m)| Held {
            shard,
            seq: m.sequence,
            incarnation,
            retained: retained_of(&m.headers),
            frame: m.payload,
        }))
}

/// Release `held`: its retained change, then the released copy (compare-and-set on the held
/// copy's sequence), in the store task's order.
fn release(
    inner: &Arc<Inner>,
    client_id: &str,
    incarnation: u64,
    packet_id: u16,
    held: Held,
) -> Commit {
    let subject = subject(held.shard, client_id, incarnation, packet_id);
    let mut waits = Vec::new();
    if held.retained != RetainedChange::Unchanged {
        // Before the release: a failure between them leaves the exchange held, and the
        // client's PUBREL again writes the same retained message.
        let topic = decode_message(held.frame.clone())
            .map(|f| f.message.topic)
            .map_err(unavailable);
        let topic = match topic {
            Ok(t) => t,
            Err(e) => return Commit::Done(Err(e)),
        };
        let clear = held.retained == RetainedChange::Clear;
        match super::retained::send_change(inner, &topic, held.frame.clone(), clear) {
            Ok(rx) => waits.push(rx),
            Err(e) => return Commit::Done(Err(e)),
        }
    }
    if tracing::enabled!(target: super::store_ack::TARGET, tracing::Level::DEBUG) {
        if let Ok(kept) = decode_message(held.frame.clone()) {
            trace_exchange("releasing", &subject, held.seq, &kept.message.payload);
        }
    }
    let id = format!("{subject}.r{}", held.seq);
    waits.push(store(
        inner,
        subject,
        held.frame,
        false,
        Some((held.seq, id)),
    ));
    Commit::Pending(Box::pin(async move {
        for wait in waits {
            match wait.await {
                Ok(result) => result?,
                Err(_) => return Err(unavailable("cluster publisher stopped")),
            }
        }
        Ok(())
    }))
}

/// Hand a store to the store task; its answer.
fn store(
    inner: &Inner,
    subject: String,
    payload: Bytes,
    delete: bool,
    expect: Option<(u64, String)>,
) -> oneshot::Receiver<Result<(), DurabilityError>> {
    let (tx, rx) = oneshot::channel();
    // A send error drops `tx`: the receiver answers "stopped".
    let _ = inner.outgoing.send(Outgoing::Store {
        subject,
        payload,
        delete,
        done: Some(tx),
        expect,
        id: None,
        send_by: None,
    });
    rx
}

/// Outbound entry `queue_seq` of `client_id` is about to be written with `packet_id`
/// (`released`: as PUBREL). A QoS 2 entry's state is in the session record when the answer
/// is `Ok`; a QoS 1 entry's is written with the next progress flush.
pub fn delivery_state(
    inner: &Arc<Inner>,
    client_id: Arc<str>,
    queue_seq: QueueSeq,
    packet_id: u16,
    released: bool,
) -> Commit {
    let sent = inner
        .tracker
        .lock()
        .sent(&client_id, queue_seq, packet_id, released);
    let change = match sent {
        SentState::Wait(change) => change,
        SentState::Nothing => return Commit::done(),
        SentState::Untracked if held_by_clean_session(inner, &client_id) => return Commit::done(),
        // A persistent session's delivery after the session left this node (its queue entry
        // has a number only in a persistent session or a subscription group's copy): the node
        // that holds the session now would not know an exchange opened here, as with a copy
        // handed over ([`durable`]).
        SentState::Untracked => {
            return Commit::Done(Err(DurabilityError::Stale(format!(
                "session {client_id} is not this node's"
            ))))
        }
    };
    let inner = inner.clone();
    Commit::Pending(Box::pin(async move {
        // Every change made before a write is in it: concurrent deliveries share one write.
        for _ in 0..2 {
            {
                let lock = inner.record_lock(&client_id);
                let _one_writer = lock.lock().await;
                if durable(&inner, &client_id, change)? {
                    return Ok(());
                }
            }
            super::sessions::write_record(&inner, &client_id).await?;
            if durable(&inner, &client_id, change)? {
                return Ok(());
            }
        }
        Err(unavailable("delivery state not written"))
    }))
}

/// Whether this node's broker holds `client_id`'s session as a clean one (its lifetime is
/// the connection's): a subscription group's copy delivered to it has a queue entry number,
/// and nothing of it is kept.
fn held_by_clean_session(inner: &Inner, client_id: &str) -> bool {
    inner.core().is_some_and(|core| {
        core.registry
            .by_client_id(client_id)
            .is_some_and(|session| !session.is_persistent())
    })
}

/// Whether change `change` of the session's QoS 2 delivery states is in its record.
/// [`DurabilityError::Stale`] once the session is no longer this node's (handed over, fenced
/// or ended): the node taking it would not know an exchange opened here now, and could give
/// its packet id to another message; the connection closes without sending it.
fn durable(inner: &Inner, client_id: &str, change: u64) -> Result<bool, DurabilityError> {
    match inner.tracker.lock().sessions.get(client_id) {
        Some(t) if !t.handed_over => Ok(t.qos2_written >= change),
        _ => Err(DurabilityError::Stale(format!(
            "session {client_id} left this node"
        ))),
    }
}

/// The message of a restored QoS 2 exchange whose PUBREL is re-sent while its message left
/// the log (older than `maxOfflineAge`): only its packet id is written again.
pub fn released_placeholder() -> Message {
    Message {
        stamp: crate::broker::message::SampleStamp::NONE,
        topic: Arc::from(""),
        payload: Bytes::new(),
        qos: crate::protocol::QoS::ExactlyOnce,
        retain: false,
        v5: None,
    }
}

#[cfg(test)]
mod tests {
    use super::subjects_collide;

    #[test]
    fn filter_subjects_that_cover_exchange_subjects_are_recognised() {
        let exchange = "fmq.m.*.$q2.x.y.z";
        assert!(subjects_collide("fmq.m.*.>", exchange));
        assert!(subjects_collide("fmq.m.*.*.>", exchange));
        assert!(subjects_collide("fmq.m.*.*.*.*.*", exchange));
        assert!(!subjects_collide("fmq.m.*.a.>", exchange));
        assert!(!subjects_collide("fmq.m.*.*.*", exchange));
        assert!(!subjects_collide("fmq.m.*.a", exchange));
    }
}
