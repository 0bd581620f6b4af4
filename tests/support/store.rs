//! Builders shared by the store's integration tests.

use std::sync::Arc;

use bytes::Bytes;
use ferromq::protocol::{QoS, RetainHandling, SubscriptionOptions};
use ferromq::store::{
    MessageId, Op, QueueEntry, QueueState, SessionRecord, Store, StoredMessage, SubscriptionRecord,
};

pub fn message(topic: &str, payload: &[u8], qos: QoS) -> StoredMessage {
    StoredMessage {
        topic: Arc::from(topic),
        payload: Bytes::copy_from_slice(payload),
        qos,
        retain: false,
        properties: Bytes::new(),
    }
}

pub fn session(filters: &[(&str, QoS)]) -> SessionRecord {
    SessionRecord {
        subscriptions: filters
            .iter()
            .map(|(filter, qos)| SubscriptionRecord {
                filter: Arc::from(*filter),
                options: SubscriptionOptions {
                    qos: *qos,
                    no_local: false,
                    retain_as_published: false,
                    retain_handling: RetainHandling::SendAtSubscribe,
                },
                subscription_id: None,
            })
            .collect(),
        will: None,
        expiry_ms: None,
        last_seen_ms: 1_000,
        mqtt5: false,
    }
}

pub fn queued(message_id: MessageId, qos: QoS) -> QueueEntry {
    QueueEntry {
        message_id,
        qos,
        retain: false,
        subscription_id: None,
        state: QueueState::Queued,
    }
}

pub fn put_session(client_id: &str) -> Op {
    Op::PutSession {
        client_id: Arc::from(client_id),
        session: session(&[("t/#", QoS::AtLeastOnce)]),
    }
}

/// One QoS 1 publish stored and queued for `client_ids`: returns the ops and the queue seqs.
pub fn publish_to(
    store: &Store,
    client_ids: &[&str],
    payload: &[u8],
) -> (MessageId, Vec<Op>, Vec<u64>) {
    let id = store.allocate_id();
    let mut ops = vec![Op::PutMessage {
        id,
        message: message("t/x", payload, QoS::AtLeastOnce),
    }];
    let mut seqs = Vec::new();
    for client_id in client_ids {
        let seq = store.allocate_id();
        seqs.push(seq);
        ops.push(Op::Enqueue {
            client_id: Arc::from(*client_id),
            seq,
            entry: queued(id, QoS::AtLeastOnce),
        });
    }
    (id, ops, seqs)
}
