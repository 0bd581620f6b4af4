//! Live (QoS 0) messages over core NATS: one NATS subscription per distinct filter used by
//! this node's sessions (reference counted), so NATS forwards a message only to the nodes
//! interested in it. Nothing is stored.
//!
//! A message that matches two of this node's filters arrives once per matching NATS
//! subscription: copies are recognised by their identity (origin process, counter) in a
//! window of recent ones and routed once. Each subscription delivers in publish order, so the
//! first copy of every message keeps the publisher's order.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::codec::decode_message;
use super::engine::Inner;
use super::subject::filter_subjects;
use super::LIVE_PREFIX;

/// Recent live messages remembered to drop their other copies.
const RECENT: usize = 8192;
/// Live arrivals waiting for the router: when it falls behind, the NATS subscriptions' own
/// bounded buffers fill and NATS drops (a slow consumer, QoS 0): memory stays bounded.
const ARRIVALS: usize = 8192;

/// How many local subscriptions use a filter, and the tasks reading its NATS subscriptions.
type Followed = (usize, Vec<JoinHandle<()>>);

/// Filters this node follows.
#[derive(Default)]
pub struct Interest {
    filters: parking_lot::Mutex<HashMap<String, Followed>>,
    arrivals: std::sync::OnceLock<mpsc::Sender<bytes::Bytes>>,
}

impl Interest {
    /// A local subscription to `filter` was added or removed.
    pub fn changed(&self, inner: &Arc<Inner>, filter: &str, added: bool) {
        let mut filters = self.filters.lock();
        if added {
            let entry = filters
                .entry(filter.to_owned())
                .or_insert_with(|| (0, Vec::new()));
            entry.0 += 1;
            if entry.0 == 1 {
                entry.1 = self.follow(inner, filter);
            }
        } else if let Some(entry) = filters.get_mut(filter) {
            entry.0 = entry.0.saturating_sub(1);
            if entry.0 == 0 {
                if let Some((_, tasks)) = filters.remove(filter) {
                    for task in tasks {
                        // Dropping the subscriber unsubscribes it.
                        task.abort();
                    }
                }
            }
        }
    }

    fn follow(&self, inner: &Arc<Inner>, filter: &str) -> Vec<JoinHandle<()>> {
        let Some(arrivals) = self.arrivals.get().cloned() else {
            return Vec::new();
        };
        filter_subjects(LIVE_PREFIX, filter)
            .into_iter()
            .map(|subject| {
                let client = inner.client.clone();
                let arrivals = arrivals.clone();
                tokio::spawn(async move {
                    let mut subscriber = match client.subscribe(subject.clone()).await {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::warn!(subject, "cluster live subscription: {e}");
                            return;
                        }
                    };
                    while let Some(message) = subscriber.next().await {
                        if arrivals.send(message.payload).await.is_err() {
                            return;
                        }
                    }
                })
            })
            .collect()
    }
}

/// Start routing live arrivals (subscriptions made before the start follow from here).
pub fn start(inner: &Arc<Inner>) {
    let (tx, mut rx) = mpsc::channel::<bytes::Bytes>(ARRIVALS);
    if inner.live.arrivals.set(tx).is_err() {
        return;
    }
    let node = inner.clone();
    tokio::spawn(async move {
        let mut seen: HashSet<(u64, u64)> = HashSet::with_capacity(RECENT);
        let mut order: VecDeque<(u64, u64)> = VecDeque::with_capacity(RECENT);
        while let Some(payload) = rx.recv().await {
            let frame = match decode_message(payload) {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!("cluster live message skipped: {e}");
                    continue;
                }
            };
            let identity = (frame.origin_instance, frame.origin_counter);
            if !seen.insert(identity) {
                continue;
            }
            order.push_back(identity);
            if order.len() > RECENT {
                if let Some(old) = order.pop_front() {
                    seen.remove(&old);
                }
            }
            let Some(core) = node.core() else { return };
            // QoS 0 needs no pacing: a session's queue evicts its oldest QoS 0 messages.
            let _ = core.deliver_from_backplane(
                frame.message,
                frame.publisher.as_deref(),
                |_| true,
                |_| {},
            );
        }
    });
    // Filters subscribed before the start (restored sessions) are followed now.
    let pending: Vec<String> = inner.live.filters.lock().keys().cloned().collect();
    for filter in pending {
        let tasks = inner.live.follow(inner, &filter);
        if let Some(entry) = inner.live.filters.lock().get_mut(&filter) {
            entry.1 = tasks;
        }
    }
}
