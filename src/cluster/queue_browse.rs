//! A queue browse on a cluster node (STOMP `browser:true`, docs/queues.md "Browsing"): the
//! queue's messages read from [`QUEUE_STREAM`] by sequence (`STREAM.MSG.GET` with
//! `next_by_subj`), without a consumer (a work-queue stream takes no second one on a
//! queue's subject) and without taking them. What the stream holds of the queue: waiting,
//! pulled by a node, delivered and not acknowledged, in store order.

use std::sync::Arc;
use std::time::Instant;

use async_nats::jetstream::stream::RawMessageErrorKind;

use super::codec::decode_message;
use super::engine::Inner;
use super::queues::{queue_subject, unavailable, QUEUE_STREAM};
use crate::broker::queues::{BrowseFuture, MessageFilter, QueueDelivery, QueuedInfo};
use crate::protocol::QoS;

/// The most stored messages one browse reads (those a selector refuses count too): a browse
/// of a long queue with a rare selector stops there.
const READS_AT_MOST: usize = 10_000;

/// The browse of queue `queue`: its first `max` messages `filter` accepts, within two
/// `storeTimeout`s of reading.
pub(super) fn browse(
    inner: &Arc<Inner>,
    queue: &str,
    max: usize,
    filter: Option<Arc<dyn MessageFilter>>,
) -> BrowseFuture {
    let inner = inner.clone();
    let subject = queue_subject(queue);
    Box::pin(async move {
        let stream = inner
            .js
            .get_stream_no_info(QUEUE_STREAM)
            .await
            .map_err(|e| unavailable(format!("cluster queue stream: {e}")))?;
        let deadline = Instant::now() + inner.store_timeout * 2;
        let mut found = Vec::new();
        let mut next = 1;
        for _ in 0..READS_AT_MOST {
            if found.len() >= max || Instant::now() >= deadline {
                break;
            }
            let read = stream
                .raw_message_builder()
                .sequence(next)
                .next_by_subject(subject.clone())
                .send()
                .await;
            let stored = match read {
                Ok(stored) => stored,
                Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => break,
                Err(e) => return Err(unavailable(format!("cluster queue browse: {e}"))),
            };
            next = stored.sequence + 1;
            let Ok(frame) = decode_message(stored.payload) else {
                continue;
            };
            let persistent = frame.message.qos != QoS::AtMostOnce;
            let info = QueuedInfo {
                redeliveries: 0,
                persistent,
                accepted_ms: u64::try_from(stored.time.unix_timestamp_nanos() / 1_000_000)
                    .unwrap_or(0),
            };
            if filter
                .as_ref()
                .is_some_and(|f| !f.accepts(&frame.message, &info))
            {
                continue;
            }
            found.push(QueueDelivery {
                seq: stored.sequence,
                message: frame.message,
                redelivered: false,
                delivery_count: 1,
                persistent,
            });
        }
        Ok(found)
    })
}
