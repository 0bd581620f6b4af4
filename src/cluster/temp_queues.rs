//! STOMP temporary queues across nodes. A temporary queue lives on the node of the connection
//! that made it, in memory, as on a single broker (and as ActiveMQ keeps temporary
//! destinations on the connection's broker): it is never in the queue stream. While it
//! exists the node answers requests on the core NATS subject `fmq.tq.<hex of its name>`, so a
//! client on another node can send to it (the request-reply pattern: a requester's `reply-to:
//! /temp-queue/r` reaches a responder anywhere as `/remote-temp-queue/ID:...:r`).
//!
//! A send is a NATS request carrying the message frame (`codec.rs`); the owner queues it and
//! answers [`ACCEPTED`] once its queue took it, or the reason it did not. The sender's RECEIPT
//! waits for that answer; NATS's "no responders" means no node has the queue any more:
//! ActiveMQ's "Cannot publish to a deleted Destination". Like ActiveMQ's temporary
//! destinations, nothing of it survives its node.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::task::JoinHandle;

use super::codec::{decode_message, encode_message};
use super::engine::Inner;
use crate::broker::durability::{Commit, DurabilityError};
use crate::broker::message::Message;

/// How often a send asks before it believes that no node has the queue, and the pause
/// between the asks.
const NO_RESPONDERS_ATTEMPTS: u32 = 3;
const NO_RESPONDERS_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

/// The owner's answer to a send it queued.
const ACCEPTED: &[u8] = b"+OK";

/// The core NATS subject of temporary queue `name` (hex: a name may hold any character).
pub fn subject(name: &str) -> String {
    use std::fmt::Write;
    let mut subject = String::with_capacity(7 + name.len() * 2);
    subject.push_str("fmq.tq.");
    for b in name.bytes() {
        let _ = write!(subject, "{b:02x}");
    }
    subject
}

/// Serve sends from other nodes to this node's temporary queue `name` until the task is
/// aborted (the queue was deleted).
pub fn serve(inner: &Arc<Inner>, name: &str) -> JoinHandle<()> {
    let inner = inner.clone();
    let name = name.to_owned();
    tokio::spawn(async move {
        let mut requests = match inner.client.subscribe(subject(&name)).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(queue = %name, "cluster temporary queue: not reachable from other nodes: {e}");
                return;
            }
        };
        // The interest reaches the server now, not with the next write.
        let _ = inner.client.flush().await;
        while let Some(request) = requests.next().await {
            let answer = take(&inner, &name, request.payload).await;
            if let Some(reply) = request.reply {
                if let Err(e) = inner.client.publish(reply, answer).await {
                    tracing::debug!(queue = %name, "cluster temporary queue: answer not sent: {e}");
                }
            }
        }
    })
}

/// Queue one sent message; the answer for its sender.
async fn take(inner: &Inner, name: &str, payload: Bytes) -> Bytes {
    let message = match decode_message(payload) {
        Ok(frame) => frame.message,
        Err(e) => return Bytes::from(format!("unreadable message: {e}")),
    };
    let Some(core) = inner.core() else {
        return Bytes::from_static(b"the node is stopping");
    };
    let sent = match core.queues.send_temporary(name, message) {
        None => return Bytes::from(deleted(name)),
        Some(Err(e)) => return Bytes::from(format!("temp-queue://{name} refused it: {e}")),
        Some(Ok(commit)) => commit,
    };
    drop(core);
    match sent.wait().await {
        Ok(()) => Bytes::from_static(ACCEPTED),
        Err(e) => Bytes::from(format!("temp-queue://{name} did not keep it: {e}")),
    }
}

/// ActiveMQ's words for a send to a temporary queue that no longer exists.
fn deleted(name: &str) -> String {
    format!("Cannot publish to a deleted Destination: temp-queue://{name}")
}

/// Send `message` to temporary queue `name` on whichever node has it.
pub fn send(inner: &Arc<Inner>, name: &str, message: &Message) -> Commit {
    let counter = inner
        .counter
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let payload = match encode_message(message, inner.instance, counter, None) {
        Ok(p) => p,
        Err(e) => return Commit::Done(Err(DurabilityError::Unavailable(e.to_string()))),
    };
    let inner = inner.clone();
    let name = name.to_owned();
    Commit::Pending(Box::pin(async move {
        let mut attempt = 0;
        let answer = loop {
            let request = inner.client.request(subject(&name), payload.clone());
            let answer = tokio::time::timeout(inner.store_timeout, request)
                .await
                .map_err(|_| {
                    DurabilityError::Unavailable(format!(
                        "temp-queue://{name}: its node did not answer within {} ms",
                        inner.store_timeout.as_millis()
                    ))
                })?;
            // A queue just made may not be known to every NATS server yet (interest spreads
            // between servers asynchronously): "no responders" is believed the third time.
            let unknown =
                matches!(&answer, Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders);
            attempt += 1;
            if !unknown || attempt >= NO_RESPONDERS_ATTEMPTS {
                break answer;
            }
            tokio::time::sleep(NO_RESPONDERS_PAUSE).await;
        };
        match answer {
            Ok(reply) if reply.payload.as_ref() == ACCEPTED => Ok(()),
            Ok(reply) => Err(DurabilityError::Unavailable(
                String::from_utf8_lossy(&reply.payload).into_owned(),
            )),
            Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
                Err(DurabilityError::Unavailable(deleted(&name)))
            }
            Err(e) => Err(DurabilityError::Unavailable(format!(
                "temp-queue://{name}: {e}"
            ))),
        }
    }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_temporary_queue_subject_is_one_token_whatever_the_name() {
        assert_eq!(
            super::subject("ID:a-1:r.x *"),
            "fmq.tq.49443a612d313a722e78202a"
        );
    }
}
