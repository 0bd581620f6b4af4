//! Reading paged-out messages of a durable subscription back before delivery (as the MQTT
//! connection's `page_in.rs` does for its session): one page at a time, off the task, sized
//! by the durability engine to what `memoryUsage` has room for. No page is read while
//! `memoryUsage` is full and the subscription has deliveries not acknowledged: they hold
//! memory until their ACK, which pumps again (a prefetch of 1000 messages of 2 MiB would
//! otherwise keep reading gigabytes). A subscription with nothing unacknowledged (every
//! `ack:auto` one) always reads its next page, so a full gauge never stops delivery.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use super::StompConn;
use crate::broker::durability::{DurabilityError, PagedBody, QueueSeq};
use crate::broker::message::Message;

/// Payloads read back per page.
const PAGE_IN_BATCH: usize = 256;
/// After a failed read, the next one waits this long (the engine may be reopening).
const RETRY_AFTER_FAILURE: Duration = Duration::from_millis(200);

/// The subscription (its key), the entries read and their payloads.
pub(super) type PageResult = (
    u64,
    Vec<QueueSeq>,
    Result<Vec<Option<PagedBody>>, DurabilityError>,
);

/// A page being read.
pub(super) type PageIn = Pin<Box<dyn Future<Output = PageResult> + Send>>;

impl StompConn {
    /// Start reading the paged-out head of subscription `index`'s queue, unless a page is
    /// being read already.
    pub(super) fn start_page_in(&mut self, index: usize) {
        if self.page_in.is_some() {
            return;
        }
        let Some(sub) = self.subs.get(index) else {
            return;
        };
        if self.core.memory.is_full() && !sub.unacked.is_empty() {
            return;
        }
        let seqs = sub
            .session
            .with_state(sub.token.generation, |s| {
                s.pending().paged_head(PAGE_IN_BATCH)
            })
            .unwrap_or_default();
        if seqs.is_empty() {
            return;
        }
        let key = sub.key;
        let read = self
            .core
            .durability()
            .read_payloads(sub.session.client_id(), seqs.clone());
        self.page_in = Some(Box::pin(async move {
            let result = read.await;
            if result.is_err() {
                tokio::time::sleep(RETRY_AFTER_FAILURE).await;
            }
            (key, seqs, result)
        }));
    }

    /// A page was read: its payloads go back into the queue (charged to the memory gauge)
    /// and delivery goes on. A failed read is logged and tried again by the next pump.
    pub(super) fn finish_page_in(&mut self, (key, seqs, result): PageResult) {
        self.page_in = None;
        self.out.pump_wanted = true;
        let payloads = match result {
            Ok(payloads) => payloads,
            Err(e) => {
                tracing::warn!("paged-out messages could not be read back, retrying: {e}");
                return;
            }
        };
        let Some(sub) = self.subs.iter().find(|s| s.key == key) else {
            return;
        };
        let page: Vec<(QueueSeq, Option<PagedBody>)> = seqs.into_iter().zip(payloads).collect();
        let memory = self.core.memory.clone();
        let gone = sub.session.with_state(sub.token.generation, |s| {
            s.pending_mut().page_in(page, |envelope, body| {
                memory.charge(Message::read_back(envelope, body))
            })
        });
        if gone.is_some_and(|n| n > 0) {
            tracing::warn!("paged-out messages no longer kept by the store were skipped");
        }
    }
}
