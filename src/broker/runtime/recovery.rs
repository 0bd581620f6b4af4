//! What the broker does with its durable or snapshotted state: restoring it at start
//! (retained messages, sessions, wills of a crash), expiring abandoned sessions, and refusing
//! publishes when the store or the memory limit is full.

use std::sync::Arc;

use crate::broker::message::Message;
use crate::broker::persist::{self, RecoveredCounts};
use crate::config::Config;
use crate::protocol::QoS;
use crate::store::{Op, Recovered};

use super::BrokerCore;

impl BrokerCore {
    /// Expired sessions (see [`persist::expire_sessions_periodically`]): dropped from memory,
    /// from the snapshots of a broker without a durable store, and with their queued messages.
    /// One whose client came back in the meantime is written back to the store (it is live
    /// again). `delete_stored`: also delete them from the durable store (the broker-wide sweep
    /// expired them there already; the MQTT 5 per-session sweep did not).
    pub fn drop_expired(&self, client_ids: &[Arc<str>], delete_stored: bool) {
        for client_id in client_ids {
            match self.registry.remove_offline(client_id) {
                None => {}
                Some(Ok(session)) => {
                    session.with_state_unchecked(|s| {
                        let mut tree = self.subscriptions.write();
                        for filter in s.subscriptions.keys() {
                            tree.remove(filter, &session.id());
                        }
                    });
                    if let Some(snapshots) = &self.snapshots {
                        if let Err(e) = snapshots.remove(client_id) {
                            tracing::warn!(%client_id, "{e}");
                        }
                    }
                    if delete_stored {
                        self.persist_background(vec![Op::DeleteSession {
                            client_id: client_id.clone(),
                        }]);
                    }
                }
                Some(Err(back)) => {
                    let op = back.with_state_unchecked(|s| persist::put_session_op(s));
                    self.persist_background(vec![op]);
                }
            }
        }
    }

    /// A QoS 1/2 publish the store did not take: counted and logged (rate-limited).
    pub fn publish_refused(&self, topic: &str, error: &crate::store::StoreError) {
        if let crate::store::StoreError::Full { .. } = error {
            let total = self.counters.refused_store_full();
            if persist::should_log_refusal(total) {
                tracing::warn!(%topic, refused_total = total, "publish refused: {error}");
            }
        } else {
            tracing::warn!(%topic, "publish refused, not acknowledged: {error}");
        }
    }

    /// A client's PUBLISH entering the broker: charged to the memory gauge (once, shared by
    /// every copy), or `None` when the `memoryUsage` limit is reached. Then a QoS 1/2 publish
    /// is refused like a full store (the caller does not acknowledge it) and a QoS 0 one is
    /// dropped; both counted and logged (rate-limited).
    pub fn admit(&self, message: Message) -> Option<Message> {
        if !self.memory.is_full() {
            return Some(self.memory.charge(message));
        }
        let (total, outcome) = if message.qos == QoS::AtMostOnce {
            (self.counters.dropped_memory_full(), "QoS 0 publish dropped")
        } else {
            (
                self.counters.refused_memory_full(),
                "publish refused, not acknowledged",
            )
        };
        if persist::should_log_refusal(total) {
            tracing::warn!(
                topic = %message.topic,
                limit_bytes = self.memory.limit_bytes(),
                used_bytes = self.memory.used_bytes(),
                total,
                "{outcome}: messages held in memory reached the memoryUsage limit"
            );
        }
        None
    }

    /// Rebuild retained messages and persistent sessions from what the durable store held,
    /// then publish the wills of the clients that were connected when the broker stopped
    /// without a clean shutdown (their connections closed without DISCONNECT: MQTT 3.1.1
    /// 3.1.2-8; MQTT 5 3.1.2.5 allows it after a restart), authorized as their owners as of
    /// now with `config`'s security: see [`persist::publish_recovered_wills`].
    pub fn restore_durable(&self, recovered: Recovered, config: &Config) -> RecoveredCounts {
        let counts = RecoveredCounts::of(&recovered);
        {
            let mut retained = self.retained.write();
            for message in persist::restore_retained(recovered.retained, &self.memory) {
                let topic = message.topic.clone();
                retained.set(&topic, message);
            }
        }
        let mut wills = Vec::new();
        for recovered_session in recovered.sessions {
            let (mut state, will) = persist::restore_session(recovered_session, &self.memory);
            if let Some(will) = will {
                // Gone from the record in the batch that publishes it (or drops it).
                state.stored_will = None;
                wills.push(persist::RecoveredWill {
                    forget: persist::put_session_op(&state),
                    client_id: Arc::from(state.client_id.as_str()),
                    will,
                });
            }
            self.index_restored(state);
        }
        persist::publish_recovered_wills(self, wills, config);
        counts
    }

    fn index_restored(&self, state: crate::broker::session::SessionState) {
        let session = self.registry.restore(state);
        // Lock order: session, then tree (as everywhere else).
        session.with_state_unchecked(|s| {
            let mut tree = self.subscriptions.write();
            for (filter, sub) in &s.subscriptions {
                tree.insert(filter, session.id(), sub.qos);
            }
        });
    }

    /// Bring back the persistent sessions of the store (offline until their clients return).
    pub fn restore_sessions(&self) -> anyhow::Result<usize> {
        let Some(snapshots) = &self.snapshots else {
            return Ok(0);
        };
        let states = snapshots.load_all()?;
        let count = states.len();
        for state in states {
            self.index_restored(state);
        }
        Ok(count)
    }
}
