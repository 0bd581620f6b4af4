//! The persistent sessions `FMQ_SESS` keeps, read for the web console: a node's broker holds
//! only the sessions attached or offline on it, while a session a drained node released (or
//! whose node died) is a record in the bucket and nothing else until a client resumes it.
//!
//! The records are keyed by a hash of their client id, so they are read whole and the client
//! id taken from each value. The read is bounded: one temporary pull consumer over the last
//! value of each session key (`$KV.FMQ_SESS.*`: one token, so clean sessions' `w.` will
//! records are not read), fetched in pages, at most `limit` records, then deleted. What it
//! left unread is the consumer's pending count: the answer says how many.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::kv::Operation;
use futures_util::StreamExt;

use super::codec::SessionRecord;
use super::engine::Inner;
use crate::broker::durability::{DurabilityError, KeptSession, KeptSessions};
use crate::broker::session::kind::SessionKind;

/// Records fetched per request.
const PAGE: usize = 256;
/// How long the server keeps the consumer if this node never deletes it (it died meanwhile).
const INACTIVE: Duration = Duration::from_secs(30);

fn unavailable(what: impl std::fmt::Display) -> DurabilityError {
    DurabilityError::Unavailable(format!(
        "cluster store: reading the session records: {what}"
    ))
}

/// At most `limit` session records of `FMQ_SESS`, read within `storeTimeout` as a whole.
pub async fn read(inner: &Inner, limit: usize) -> Result<KeptSessions, DurabilityError> {
    if !inner.is_available() {
        return Err(unavailable("this node's quorum is unreachable"));
    }
    let deadline = tokio::time::Instant::now() + inner.store_timeout;
    let stream = inner.sessions_kv.stream.clone();
    let config = pull::Config {
        description: Some("ferromq console: session records".into()),
        deliver_policy: DeliverPolicy::LastPerSubject,
        ack_policy: AckPolicy::None,
        filter_subject: format!("{}*", inner.sessions_kv.prefix),
        inactive_threshold: INACTIVE,
        memory_storage: true,
        num_replicas: 1,
        ..Default::default()
    };
    let consumer = tokio::time::timeout_at(deadline, stream.create_consumer(config))
        .await
        .map_err(|_| unavailable("no answer"))?
        .map_err(unavailable)?;
    let read = tokio::time::timeout_at(deadline, read_pages(&consumer, limit))
        .await
        .map_err(|_| unavailable("no answer within storeTimeout"))
        .and_then(|read| read);
    // Deleted after the answer rather than before it: one left behind (no answer, or this
    // node stopped) goes by itself after INACTIVE.
    let name = consumer.cached_info().name.clone();
    let wait = inner.store_timeout;
    tokio::spawn(async move {
        let deleted = tokio::time::timeout(wait, stream.delete_consumer(&name)).await;
        if !matches!(deleted, Ok(Ok(_))) {
            tracing::debug!(consumer = %name, "console's session read: consumer not deleted; it expires");
        }
    });
    read
}

async fn read_pages(
    consumer: &async_nats::jetstream::consumer::Consumer<pull::Config>,
    limit: usize,
) -> Result<KeptSessions, DurabilityError> {
    let mut out = KeptSessions {
        unread: consumer.cached_info().num_pending,
        ..KeptSessions::default()
    };
    while out.read < limit && out.unread > 0 {
        let page = PAGE
            .min(limit - out.read)
            .min(usize::try_from(out.unread).unwrap_or(usize::MAX));
        let mut batch = consumer
            .fetch()
            .max_messages(page)
            .messages()
            .await
            .map_err(unavailable)?;
        let mut fetched = 0usize;
        while let Some(message) = batch.next().await {
            let message = message.map_err(unavailable)?;
            fetched += 1;
            out.read += 1;
            if let Ok(info) = message.info() {
                out.unread = info.pending;
            }
            let deleted = message
                .headers
                .as_ref()
                .and_then(|h| h.get("KV-Operation"))
                .is_some_and(|op| op.as_str() != "PUT");
            if deleted {
                continue;
            }
            if let Some(kept) = kept_session(&message.payload) {
                out.sessions.push(kept);
            }
        }
        if fetched == 0 {
            // Pending fell (records deleted while reading): nothing more to read.
            out.unread = 0;
        }
    }
    Ok(out)
}

/// `client_id`'s record, if the bucket keeps one. "None" is believed only from the bucket's
/// leader, as a claim believes it (a replica that has not caught up may lack the record).
pub async fn read_one(
    inner: &Arc<Inner>,
    client_id: &str,
) -> Result<Option<KeptSession>, DurabilityError> {
    let key = super::subject::client_key(client_id);
    let entry = match super::sessions::read_record(inner, &key).await? {
        Some(e) if e.operation == Operation::Put => Some(e),
        _ => super::sessions::leader_entry(inner, &key).await?,
    };
    Ok(entry
        .filter(|e| e.operation == Operation::Put)
        .and_then(|e| kept_session(&e.value))
        .filter(|kept| kept.client_id == client_id))
}

/// A record as the console shows it: an MQTT session's or a STOMP durable subscription's;
/// `None` for one that does not decode (another version's, or damaged: nothing to act on by
/// client id) and for STOMP's other internal sessions (never kept in the cluster).
fn kept_session(value: &[u8]) -> Option<KeptSession> {
    let record = SessionRecord::decode(value).ok()?;
    if matches!(
        SessionKind::of(&record.client_id),
        SessionKind::StompInternal
    ) {
        return None;
    }
    Some(KeptSession {
        owner: (!record.owner.is_empty()).then_some(record.owner),
        connected: record.connected,
        subscriptions: record.subscriptions.len(),
        first_filter: record.subscriptions.first().map(|(f, _)| f.clone()),
        inflight: record.inflight.len(),
        offline_since_ms: (!record.connected && record.offline_since_ms > 0)
            .then_some(record.offline_since_ms),
        expiry_secs: record.expiry_secs,
        client_id: record.client_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(client_id: &str, owner: &str, connected: bool) -> SessionRecord {
        SessionRecord {
            client_id: client_id.into(),
            owner: owner.into(),
            epoch: 3,
            connected,
            offline_since_ms: if connected { 0 } else { 1_700_000_000_000 },
            expiry_secs: Some(600),
            mqtt5: true,
            subscriptions: Vec::new(),
            floors: vec![0, 0],
            inflight: Vec::new(),
            done: Vec::new(),
            will: None,
            owner_instance: 0,
            incarnation: 1,
        }
    }

    #[test]
    fn a_released_record_has_no_owner_and_its_offline_time() {
        let kept = kept_session(&record("dev-1", "", false).encode()).expect("decoded");
        assert_eq!(kept.client_id, "dev-1");
        assert_eq!(kept.owner, None);
        assert!(!kept.connected);
        assert_eq!(kept.offline_since_ms, Some(1_700_000_000_000));
        assert_eq!(kept.expiry_secs, Some(600));
    }

    #[test]
    fn a_held_record_names_its_node() {
        let kept = kept_session(&record("dev-2", "node-b", true).encode()).expect("decoded");
        assert_eq!(kept.owner.as_deref(), Some("node-b"));
        assert!(kept.connected);
        assert_eq!(kept.offline_since_ms, None);
    }

    #[test]
    fn stomp_durable_records_are_listed_with_their_destination() {
        let mut stomp = record("\u{0}stomp-durable:3:app:orders", "", false);
        stomp.subscriptions = vec![(
            "orders/eu".into(),
            crate::broker::session::SubscriptionOptions::qos(crate::protocol::QoS::AtLeastOnce),
        )];
        let kept = kept_session(&stomp.encode()).expect("listed");
        assert_eq!(kept.client_id, "\u{0}stomp-durable:3:app:orders");
        assert_eq!(kept.first_filter.as_deref(), Some("orders/eu"));
    }

    #[test]
    fn internal_stomp_records_and_garbage_are_not_listed() {
        let hold = record("\u{0}stomp-client:app", "", false);
        assert!(kept_session(&hold.encode()).is_none());
        assert!(kept_session(b"not a record").is_none());
    }
}
