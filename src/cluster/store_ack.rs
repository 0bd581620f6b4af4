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
//! And an acknowledgement is checked again later by the node's own reader of the shard, and
//! once more after the stream's leader changes: [`super::ledger`].
//!
//! Every acknowledgement is logged at debug under the target `ferromq::store_ack` (stream,
//! sequence, duplicate flag, message id), so a run can look up where a message went:
//! `--log-level warn,ferromq::store_ack=debug`. So is every commit of a QoS 1/2 publish
//! (`publish.rs`): its message id, its publisher, a digest of its payload
//! ([`payload_digest`]) and how the commit ended, which is when the publisher's acknowledgement
//! is released. A message a client was acknowledged for is then found by its payload alone:
//! which node committed it, under which id, and what the stream answered for that id.

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
    /// For the released copy of a QoS 2 exchange: the sequence of the held copy it replaces.
    /// It is stored again by [`super::qos2::release_again`], which looks at its exchange
    /// first, never blindly under a fresh id.
    pub expect: Option<u64>,
    pub ledger: Arc<super::ledger::Ledger>,
}

/// Log `ack` of the store of message id `id`; when it is a duplicate answer for a message
/// shard, make sure the stream holds the message (`again`: how to store it afresh, `None`
/// for a store that must not be repeated). `Ok` means the message is in its stream.
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
        subject = again.as_ref().map_or("", |a| a.subject.as_str()),
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
    if let Some((seq, fresh)) = store_again(js, id, &again).await? {
        again.ledger.acknowledged(js, shard, seq, &fresh, &again);
    }
    Ok(())
}

/// Store `again`'s message once more because its stream does not hold the acknowledged copy:
/// where it went and its id, or `None` when the stream holds it elsewhere already (a QoS 2
/// release another PUBREL wrote again).
pub(super) async fn store_again(
    js: &Context,
    id: &str,
    again: &Again,
) -> Result<Option<(u64, String)>, String> {
    match again.expect {
        None => store_afresh(js, id, again).await.map(Some),
        Some(_) => super::qos2::release_again(js, id, again).await,
    }
}

/// Store `again`'s message under a fresh id derived from `id`: its sequence and the id.
pub(super) async fn store_afresh(
    js: &Context,
    id: &str,
    again: &Again,
) -> Result<(u64, String), String> {
    let fresh = fresh_id(id);
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

/// A fresh message id derived from `id` (its first token and a random suffix).
pub(super) fn fresh_id(id: &str) -> String {
    format!(
        "{}.{:x}",
        id.split('.').next().unwrap_or(id),
        rand::random::<u64>()
    )
}

/// The digest of a message's payload in the commit lines of the debug log (64-bit FNV-1a):
/// stable across builds and machines, so a test can compute it from a payload it sent.
pub fn payload_digest(payload: &[u8]) -> u64 {
    payload
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
        })
}

/// `k` of `FMQ_MSG_<k>`.
fn shard_of_stream(stream: &str) -> Option<usize> {
    stream.strip_prefix("FMQ_MSG_")?.parse().ok()
}

/// Whether `stream` holds a message with id `id` at `seq` (read from the stream's leader).
pub(super) async fn holds(js: &Context, stream: &str, seq: u64, id: &str) -> Result<bool, String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_payload_digest_is_64_bit_fnv_1a() {
        // The published test vectors of FNV-1a: a test run computes the same digest of a
        // payload it sent to find the message in the nodes' logs.
        assert_eq!(payload_digest(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(payload_digest(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(payload_digest(b"foobar"), 0x8594_4171_f739_67e8);
    }
}
