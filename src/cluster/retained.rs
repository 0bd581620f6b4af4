//! Retained messages in `FMQ_RETAIN` (key: [`super::subject::retained_key`], value: the
//! message frame with its full topic). Every node keeps the whole set in its retained index,
//! fed by a watch of the bucket and by the answers to its own stores; a SUBSCRIBE reads the
//! local index, never NATS.
//!
//! Both feeds apply a key's change only when its revision is newer than the one the index
//! holds for that key, so the index converges on the bucket whatever order they arrive in: a
//! publish acknowledged late (after a partition healed) never puts back a value the watch
//! already replaced, and a watch started over does not set back what an answer applied.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;
use tokio::time::Instant;

use async_nats::jetstream::kv::Operation;
use futures_util::StreamExt;

use super::codec::decode_message;
use super::engine::Inner;
use super::publish::Outgoing;
use super::retry_log::{Failure, RetryLog};
use super::subject::retained_key;
use super::RETAINED_BUCKET;
use crate::broker::durability::DurabilityError;

/// How long the start waits for the retained set before serving clients anyway.
const LOAD_TIMEOUT: Duration = Duration::from_secs(30);

/// Load the retained set into the core's index (before the listeners accept), then keep
/// following the bucket.
pub async fn start(inner: &Arc<Inner>) -> anyhow::Result<()> {
    let stored = super::engine::stream_state_at_start(&inner.js, &format!("KV_{RETAINED_BUCKET}"))
        .await?
        .messages;
    let (loaded_tx, loaded_rx) = tokio::sync::oneshot::channel();
    let mut loaded_tx = if stored == 0 { None } else { Some(loaded_tx) };
    let node = inner.clone();
    tokio::spawn(async move {
        let mut connection = node.connection.clone();
        let mut retries = RetryLog::default();
        loop {
            let epoch = connection.borrow_and_update().epoch;
            let mut watch = match node.retained_kv.watch_with_history(">").await {
                Ok(w) => {
                    if let Some((unlogged, lasted)) = retries.read_again(Instant::now()) {
                        tracing::info!(
                            unlogged_failures = unlogged,
                            failing_for_ms = lasted.as_millis() as u64,
                            "cluster retained watch: reading again after failed starts"
                        );
                    }
                    w
                }
                Err(e) => {
                    match retries.failed(Instant::now()) {
                        Failure::Log { unlogged: 0 } => {
                            tracing::warn!("cluster retained watch: {e}; retrying");
                        }
                        Failure::Log { unlogged } => tracing::warn!(
                            unlogged,
                            "cluster retained watch: {e}; retrying (failed {unlogged} more \
                             times since the last such line: those are logged at debug level)"
                        ),
                        Failure::Counted => {
                            tracing::debug!("cluster retained watch: {e}; retrying");
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            let mut lag = tokio::time::interval(LAG_CHECK);
            lag.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The bucket's last revision at the previous check, when the watch was behind it.
            let mut owed: Option<u64> = None;
            // Where the watch was at the previous check.
            let mut checked_at = node.retained_applied.load(Ordering::Acquire);
            loop {
                // After a reconnection the watch starts over: its consumer may have been on
                // the server that went away, which the client notices only seconds later.
                let entry = tokio::select! {
                    entry = watch.next() => entry,
                    up = super::engine::reconnected_since(&mut connection, epoch) => {
                        if !up {
                            return;
                        }
                        break;
                    }
                    _ = lag.tick() => {
                        let applied = node.retained_applied.load(Ordering::Acquire);
                        // A watch that moves fast is busy, not stuck: a new one would not
                        // read faster, and would read the whole set again.
                        let busy = applied.saturating_sub(checked_at) >= BUSY_PROGRESS;
                        checked_at = applied;
                        if !busy && owed.is_some_and(|target| applied < target) {
                            tracing::warn!(
                                applied,
                                "cluster retained watch: fell behind its bucket; reading again"
                            );
                            break;
                        }
                        owed = bucket_last(&node).await.filter(|last| *last > applied);
                        continue;
                    }
                };
                let Some(entry) = entry else { break };
                let entry = match entry {
                    Ok(e) => e,
                    Err(e) => {
                        tracing::warn!("cluster retained watch: {e}");
                        break;
                    }
                };
                apply(
                    &node,
                    &entry.key,
                    entry.operation,
                    entry.value,
                    entry.revision,
                );
                node.retained_applied
                    .fetch_max(entry.revision, Ordering::AcqRel);
                node.retained_progress.notify_waiters();
                if entry.delta == 0 {
                    if let Some(tx) = loaded_tx.take() {
                        let _ = tx.send(());
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    if stored > 0 && tokio::time::timeout(LOAD_TIMEOUT, loaded_rx).await.is_err() {
        tracing::warn!("cluster: retained messages still loading after {LOAD_TIMEOUT:?}");
    }
    Ok(())
}

/// A watch that has not reached, within this, the bucket's last revision as it was at the
/// start of it starts over: its consumer may sit on a server that rejoined after a partition
/// and is still catching up, which delivers the bucket's changes late or never (measured: a
/// node still held retained messages 48 revisions old 30 s after a heal).
const LAG_CHECK: Duration = Duration::from_secs(3);

/// Revisions a watch applied since the previous check that make it busy rather than stuck
/// (as the shard readers' `BUSY_PROGRESS`).
const BUSY_PROGRESS: u64 = 1_000;

/// The retained bucket's last revision as its stream's leader reports it, if it answers in
/// time.
async fn bucket_last(inner: &Inner) -> Option<u64> {
    // Looking the stream up fetches its info: one request, not two.
    let look = inner.js.get_stream(format!("KV_{RETAINED_BUCKET}"));
    let stream = tokio::time::timeout(LAG_CHECK, look).await.ok()?.ok()?;
    Some(stream.cached_info().state.last_sequence)
}

/// Resolves once this node's retained index holds everything the bucket held when it was
/// called and every retained store this node sent before it was answered (bounded by
/// `within`): a SUBSCRIBE waits for it, so a retained message whose PUBACK another node sent
/// before the SUBSCRIBE is delivered, and so is one its own connection published just before
/// at QoS 0.
pub async fn caught_up(inner: &Inner, within: Duration) {
    let sent = inner.retained_puts.sent.load(Ordering::Acquire);
    let wait = async {
        let Ok(stream) = inner.js.get_stream(format!("KV_{RETAINED_BUCKET}")).await else {
            return;
        };
        let last = stream.cached_info().state.last_sequence;
        loop {
            let progressed = inner.retained_progress.notified();
            if inner.retained_applied.load(Ordering::Acquire) >= last
                && inner.retained_puts.settled.load(Ordering::Acquire) >= sent
            {
                return;
            }
            progressed.await;
        }
    };
    let _ = tokio::time::timeout(within, wait).await;
}

/// What the retained index holds for one key of the bucket.
#[derive(Debug, Clone)]
pub struct Slot {
    /// The topic (`None`: only a delete marker was seen for the key, which names no topic).
    topic: Option<Arc<str>>,
    /// The bucket revision of the change the index holds for the key.
    revision: u64,
}

/// Retained stores this node handed to its publish task (`sent`) and how many of them the
/// task has finished, stored or failed (`settled`).
#[derive(Debug, Default)]
pub struct Puts {
    sent: AtomicU64,
    settled: AtomicU64,
}

impl Puts {
    /// One more retained store handed to the publish task.
    pub fn sent(&self) {
        self.sent.fetch_add(1, Ordering::AcqRel);
    }

    /// The task has finished `settled` retained stores in all; whether that is news.
    pub fn settle(&self, settled: u64) -> bool {
        self.settled.swap(settled, Ordering::AcqRel) != settled
    }
}

/// Hand the retained change of `topic` to the publish task: `frame` (the message frame) set,
/// or, with `clear`, a delete marker. Counted for [`caught_up`] once handed over; the
/// receiver hears whether the bucket stored it. A publish and a QoS 2 release write their
/// retained messages through it.
pub fn send_change(
    inner: &Inner,
    topic: &str,
    frame: Bytes,
    clear: bool,
) -> Result<oneshot::Receiver<Result<(), DurabilityError>>, DurabilityError> {
    let (tx, rx) = oneshot::channel();
    let store = Outgoing::Store {
        subject: format!("$KV.{RETAINED_BUCKET}.{}", retained_key(topic)),
        payload: if clear { Bytes::new() } else { frame },
        delete: clear,
        done: Some(tx),
        expect: None,
        id: None,
        send_by: None,
    };
    if inner.outgoing.send(store).is_err() {
        return Err(DurabilityError::Unavailable(
            "cluster publisher stopped".into(),
        ));
    }
    inner.retained_puts.sent();
    Ok(rx)
}

/// The bucket key a store's subject writes, when it is a retained change
/// (`$KV.FMQ_RETAIN.<key>`).
pub fn key_of_subject(subject: &str) -> Option<&str> {
    subject
        .strip_prefix("$KV.")?
        .strip_prefix(RETAINED_BUCKET)?
        .strip_prefix('.')
}

/// A retained store of this node was acknowledged at `revision` (`payload`: the message
/// frame, empty for a delete).
pub fn apply_stored(inner: &Inner, subject: &str, delete: bool, payload: &Bytes, revision: u64) {
    let Some(key) = key_of_subject(subject) else {
        return;
    };
    let operation = if delete {
        Operation::Delete
    } else {
        Operation::Put
    };
    apply(inner, key, operation, payload.clone(), revision);
}

/// Apply the change of `key` at `revision` to the retained index, unless the index already
/// holds that key at this revision or a newer one. A message that has expired clears its
/// topic (it replaced the value before it).
fn apply(inner: &Inner, key: &str, operation: Operation, value: Bytes, revision: u64) {
    let Some(core) = inner.core() else { return };
    // Held while the index changes, so the two feeds apply one key's changes in turn.
    let mut keys = inner.retained_keys.lock();
    let known = keys.get(key);
    if known.is_some_and(|slot| slot.revision >= revision) {
        return;
    }
    let before = known.and_then(|slot| slot.topic.clone());
    let set = match operation {
        Operation::Put => match decode_message(value) {
            Ok(frame) => Some(frame.message),
            Err(e) => {
                // The bucket no longer holds the value before it either: the key is cleared.
                tracing::warn!(key, "cluster retained message skipped: {e}");
                None
            }
        },
        Operation::Delete | Operation::Purge => None,
    };
    let topic = match set {
        Some(message) => {
            let topic = message.topic.clone();
            if message.is_expired(std::time::Instant::now()) {
                core.retained.write().clear(&topic);
            } else {
                core.destinations.extend(std::iter::once(topic.clone()));
                core.retained.write().set(&topic, message);
            }
            Some(topic)
        }
        None => {
            if let Some(topic) = &before {
                core.retained.write().clear(topic);
            }
            before
        }
    };
    keys.insert(key.to_owned(), Slot { topic, revision });
}
