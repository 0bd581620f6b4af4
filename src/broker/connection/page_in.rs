//! Reading paged-out messages back before delivery (ActiveMQ's store cursor): a session queue
//! longer than its pending limit holds only the envelopes of its kept messages (topic, QoS,
//! expiry, small properties, the engine's `seq`: `Message::envelope`); their payloads and
//! larger properties stay with the durability engine until they reach the head of the queue.
//! One page of [`PAGE_IN_BATCH`] messages is read at a time, off the connection task; the
//! page's messages are charged to `memoryUsage` while held. The durability engine may read
//! fewer (a page of large messages is sized to `memoryUsage`), and no page is read while
//! `memoryUsage` is full and the session has deliveries in flight: they hold memory until
//! acknowledged (the in-flight window counts messages, a hundred of 2 MiB is 200 MiB), and an
//! acknowledgement pumps again. A session with nothing in flight always reads its next page,
//! so a full gauge never stops delivery.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use super::{CloseReason, Conn};
use crate::broker::durability::{DurabilityError, PagedBody, QueueSeq};
use crate::broker::message::Message;

/// Payloads read back per page.
pub(super) const PAGE_IN_BATCH: usize = 256;
/// After a failed read, the next one waits this long (the engine may be reopening).
const RETRY_AFTER_FAILURE: Duration = Duration::from_millis(200);

type PageResult = (
    Vec<QueueSeq>,
    Result<Vec<Option<PagedBody>>, DurabilityError>,
);

/// A page being read. Its output is boxed: the connection task keeps room for every branch's
/// output in its `select!`, and most connections never page (idle memory).
pub(super) type PageIn = Pin<Box<dyn Future<Output = Box<PageResult>> + Send>>;

impl Conn {
    /// Start reading the paged-out head of the session queue, unless a page is being read.
    pub(super) fn start_page_in(&mut self) -> Result<(), CloseReason> {
        if self.output.page_in.is_some() {
            return Ok(());
        }
        let memory_full = self.core.memory.is_full();
        let seqs = self.with_session(|s| {
            if memory_full && !s.inflight().is_empty() {
                return Vec::new();
            }
            s.pending().paged_head(PAGE_IN_BATCH)
        })?;
        if seqs.is_empty() {
            return Ok(());
        }
        let read = self
            .core
            .durability()
            .read_payloads(self.session.client_id(), seqs.clone());
        self.output.page_in = Some(Box::pin(async move {
            let result = read.await;
            if result.is_err() {
                tokio::time::sleep(RETRY_AFTER_FAILURE).await;
            }
            Box::new((seqs, result))
        }));
        Ok(())
    }

    /// A page was read: its payloads go back into the queue (charged to the memory gauge) and
    /// delivery goes on. A failed read is logged and tried again by the next pump.
    pub(super) fn finish_page_in(&mut self, (seqs, result): PageResult) -> Result<(), CloseReason> {
        self.output.page_in = None;
        self.output.pump_wanted = true;
        let payloads = match result {
            Ok(payloads) => payloads,
            Err(e) => {
                tracing::warn!("paged-out messages could not be read back, retrying: {e}");
                return Ok(());
            }
        };
        let page: Vec<(QueueSeq, Option<PagedBody>)> = seqs.into_iter().zip(payloads).collect();
        let memory = self.core.memory.clone();
        let gone = self.with_session(|s| {
            s.pending_mut().page_in(page, |envelope, body| {
                memory.charge(Message::read_back(envelope, body))
            })
        })?;
        if gone > 0 {
            tracing::warn!(
                entries = gone,
                "paged-out messages no longer kept by the store were skipped"
            );
        }
        Ok(())
    }
}
