//! Live (QoS 0) messages over core NATS: one NATS subscription per distinct filter used by
//! this node's sessions (reference counted), so NATS forwards a message only to the nodes
//! interested in it. Nothing is stored.
//!
//! A message that matches two of this node's filters arrives once per matching NATS
//! subscription: copies are recognised by their identity (origin process, counter) in a
//! window of recent ones and routed once. Each subscription delivers in publish order, so the
//! first copy of every message keeps the publisher's order. This node's own messages come back
//! too (NATS echoes them) and are skipped: they reached its sessions at their publish.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::codec::decode_message;
use super::engine::Inner;
use super::subject::filter_subjects;
use super::LIVE_PREFIX;
use crate::broker::routing::memory::Body;

/// Recent live messages remembered to drop their other copies.
const RECENT: usize = 8192;
/// Live arrivals waiting for the router: when it falls behind, the NATS subscriptions' own
/// bounded buffers fill and NATS drops (a slow consumer, QoS 0): memory stays bounded.
const ARRIVALS: usize = 8192;
/// How long after its own server has a new subscription a SUBACK still waits, for the other
/// NATS servers to have it too (see [`Interest::ready`]).
const INTEREST_SETTLE: Duration = Duration::from_millis(25);

/// A filter this node follows.
struct Followed {
    /// Local subscriptions using it.
    users: usize,
    /// The task holding its NATS subscriptions (aborting it unsubscribes).
    task: Option<JoinHandle<()>>,
    /// True once NATS has the subscriptions (subscribed and flushed).
    ready: tokio::sync::watch::Receiver<bool>,
}

/// Filters this node follows.
#[derive(Default)]
pub struct Interest {
    filters: parking_lot::Mutex<HashMap<String, Followed>>,
    arrivals: std::sync::OnceLock<mpsc::Sender<bytes::Bytes>>,
}

impl Interest {
    /// A local subscription to `filter` was added or removed.
    pub fn changed(&self, inner: &Arc<Inner>, filter: &str, added: bool) {
        if !super::subject::filter_fits(filter) {
            // NATS would drop the connection on it (MQTT SUBSCRIBE refuses such filters;
            // this guards every other way in).
            tracing::warn!(
                filter_bytes = filter.len(),
                "cluster: a filter too long for NATS subjects is not followed"
            );
            return;
        }
        let mut filters = self.filters.lock();
        if added {
            let entry = filters.entry(filter.to_owned()).or_insert_with(|| {
                let (task, ready) = self.follow(inner, filter);
                Followed {
                    users: 0,
                    task,
                    ready,
                }
            });
            entry.users += 1;
        } else if let Some(entry) = filters.get_mut(filter) {
            entry.users = entry.users.saturating_sub(1);
            if entry.users == 0 {
                if let Some(task) = filters.remove(filter).and_then(|f| f.task) {
                    // Dropping the subscribers unsubscribes them.
                    task.abort();
                }
            }
        }
    }

    /// Resolves once NATS has the subscriptions of `filters` (bounded by `within`): a SUBACK
    /// waits for it, so that a QoS 0 message published after the SUBACK on this node's NATS
    /// server is not missed.
    pub fn ready(
        &self,
        filters: &[String],
        within: Duration,
    ) -> impl std::future::Future<Output = ()> {
        let waits: Vec<tokio::sync::watch::Receiver<bool>> = {
            let followed = self.filters.lock();
            filters
                .iter()
                .filter_map(|f| followed.get(f).map(|f| f.ready.clone()))
                .collect()
        };
        async move {
            let all = async {
                for mut ready in waits {
                    let _ = ready.wait_for(|r| *r).await;
                }
            };
            let _ = tokio::time::timeout(within, all).await;
        }
    }

    fn follow(
        &self,
        inner: &Arc<Inner>,
        filter: &str,
    ) -> (Option<JoinHandle<()>>, tokio::sync::watch::Receiver<bool>) {
        let (ready_tx, ready) = tokio::sync::watch::channel(false);
        let Some(arrivals) = self.arrivals.get().cloned() else {
            // Before the start: followed by `start`.
            return (None, ready);
        };
        let subjects: Vec<String> = filter_subjects(LIVE_PREFIX, filter).into_iter().collect();
        let client = inner.client.clone();
        let task = tokio::spawn(async move {
            let mut subscribers = Vec::with_capacity(subjects.len());
            for subject in subjects {
                match client.subscribe(subject.clone()).await {
                    Ok(s) => subscribers.push(s),
                    Err(e) => tracing::warn!(subject, "cluster live subscription: {e}"),
                }
            }
            // The server has the subscriptions once it answered a ping sent after them; it has
            // told the other servers of them by then, and they take them in within about a
            // round trip: a short settle covers that (interest spreads asynchronously in NATS).
            let _ = client.flush().await;
            tokio::time::sleep(INTEREST_SETTLE).await;
            let _ = ready_tx.send(true);
            let mut merged = futures_util::stream::select_all(subscribers);
            while let Some(message) = merged.next().await {
                if arrivals.send(message.payload).await.is_err() {
                    return;
                }
            }
        });
        (Some(task), ready)
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
            // This node's own QoS 0 messages reached its sessions at their publish (see
            // `BrokerCore::plan_route_from`).
            if frame.origin_instance == node.instance {
                continue;
            }
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
            // Charged to `memoryUsage`, and dropped (counted) when it is reached, as a local
            // QoS 0 publish is.
            let Some(message) = core.admit(frame.message, Body::Uncharged) else {
                continue;
            };
            // QoS 0 needs no pacing: a session's queue evicts its oldest QoS 0 messages.
            let _ = core.deliver_from_backplane(
                message,
                frame.publisher.as_deref(),
                |_| crate::broker::runtime::Offer::All,
                |_| {},
            );
        }
    });
    // Filters subscribed before the start (restored sessions) are followed now.
    let pending: Vec<String> = inner.live.filters.lock().keys().cloned().collect();
    for filter in pending {
        let (task, ready) = inner.live.follow(inner, &filter);
        if let Some(entry) = inner.live.filters.lock().get_mut(&filter) {
            entry.task = task;
            entry.ready = ready;
        }
    }
}
