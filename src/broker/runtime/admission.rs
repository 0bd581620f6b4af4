//! Admission of a client's PUBLISH against the broker-wide limits (`memoryUsage`, and through
//! the durability engine `storeUsage`), and the counting of refusals.

use crate::broker::durability::{should_log, DurabilityError};
use crate::broker::message::Message;
use crate::protocol::QoS;

use super::BrokerCore;

impl BrokerCore {
    /// A QoS 1/2 publish the durability engine did not take: counted and logged
    /// (rate-limited). The caller does not acknowledge it.
    pub fn publish_refused(&self, topic: &str, error: &DurabilityError) {
        if let DurabilityError::Full(_) = error {
            let total = self.counters.refused_store_full();
            if should_log(total) {
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
        if should_log(total) {
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
}
