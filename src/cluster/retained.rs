//! Retained messages in `FMQ_RETAIN` (key: [`super::subject::retained_key`], value: the
//! message frame with its full topic). Every node keeps the whole set in its retained index,
//! fed by a watch of the bucket; a SUBSCRIBE reads the local index, never NATS.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv::Operation;
use futures_util::StreamExt;

use super::codec::decode_message;
use super::engine::Inner;
use super::RETAINED_BUCKET;

/// How long the start waits for the retained set before serving clients anyway.
const LOAD_TIMEOUT: Duration = Duration::from_secs(30);

/// Load the retained set into the core's index (before the listeners accept), then keep
/// following the bucket.
pub async fn start(inner: &Arc<Inner>) -> anyhow::Result<()> {
    let stored = inner
        .js
        .get_stream(format!("KV_{RETAINED_BUCKET}"))
        .await
        .map_err(|e| anyhow::anyhow!("cluster: retained bucket: {e}"))?
        .info()
        .await
        .map_err(|e| anyhow::anyhow!("cluster: retained bucket: {e}"))?
        .state
        .messages;
    let (loaded_tx, loaded_rx) = tokio::sync::oneshot::channel();
    let mut loaded_tx = if stored == 0 { None } else { Some(loaded_tx) };
    let node = inner.clone();
    tokio::spawn(async move {
        let mut connection = node.connection.clone();
        loop {
            let epoch = connection.borrow_and_update().epoch;
            let mut watch = match node.retained_kv.watch_with_history(">").await {
                Ok(w) => w,
                Err(e) => {
                    tracing::warn!("cluster retained watch: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            let mut lag = tokio::time::interval(LAG_CHECK);
            lag.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The bucket's last revision at the previous check, when the watch was behind it.
            let mut owed: Option<u64> = None;
            // Where the watch was at the previous check.
            let mut checked_at = node
                .retained_applied
                .load(std::sync::atomic::Ordering::Acquire);
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
                        let applied = node.retained_applied.load(std::sync::atomic::Ordering::Acquire);
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
                apply(&node, &entry.key, entry.operation, entry.value);
                node.retained_applied
                    .fetch_max(entry.revision, std::sync::atomic::Ordering::AcqRel);
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
/// called (bounded by `within`): a SUBSCRIBE waits for it, so a retained message whose PUBACK
/// another node sent before the SUBSCRIBE is delivered.
pub async fn caught_up(inner: &Inner, within: Duration) {
    let wait = async {
        let Ok(stream) = inner.js.get_stream(format!("KV_{RETAINED_BUCKET}")).await else {
            return;
        };
        let last = stream.cached_info().state.last_sequence;
        loop {
            let progressed = inner.retained_progress.notified();
            if inner
                .retained_applied
                .load(std::sync::atomic::Ordering::Acquire)
                >= last
            {
                return;
            }
            progressed.await;
        }
    };
    let _ = tokio::time::timeout(within, wait).await;
}

fn apply(inner: &Inner, key: &str, operation: Operation, value: bytes::Bytes) {
    let Some(core) = inner.core() else { return };
    match operation {
        Operation::Put => match decode_message(value) {
            Ok(frame) => {
                let message = frame.message;
                if message.is_expired(std::time::Instant::now()) {
                    return;
                }
                let topic = message.topic.clone();
                inner
                    .retained_keys
                    .lock()
                    .insert(key.to_owned(), topic.clone());
                core.destinations.extend(std::iter::once(topic.clone()));
                core.retained.write().set(&topic, message);
            }
            Err(e) => tracing::warn!(key, "cluster retained message skipped: {e}"),
        },
        Operation::Delete | Operation::Purge => {
            if let Some(topic) = inner.retained_keys.lock().remove(key) {
                core.retained.write().clear(&topic);
            }
        }
    }
}
