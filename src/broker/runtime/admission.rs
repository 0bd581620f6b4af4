//! Admission of a client's PUBLISH against the broker-wide limits (`memoryUsage`, and through
//! the durability engine `storeUsage`), and the counting of refusals.

use crate::broker::durability::{should_log, DurabilityError};
use crate::broker::message::Message;
use crate::broker::routing::memory::Body;
use crate::protocol::QoS;

use super::BrokerCore;

/// Why a QoS 1/2 publish cannot be acknowledged now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// `memoryUsage` reached.
    MemoryFull,
    /// The durability engine has no room (`storeUsage`, disk space) or cannot write.
    Durability(DurabilityError),
}

impl BrokerCore {
    /// A QoS 1/2 publish the durability engine did not take (yet): counted and logged
    /// (rate-limited). The caller does not acknowledge it.
    pub fn publish_refused(&self, destination: &str, error: &DurabilityError) {
        if let DurabilityError::Full(_) = error {
            let total = self.counters.refused_store_full();
            if should_log(total) {
                tracing::warn!(
                    %destination,
                    refused_total = total,
                    "publisher paused, publish not acknowledged yet: {error}"
                );
            }
        } else {
            let total = self.counters.refused_store_unavailable();
            if should_log(total) {
                tracing::warn!(
                    %destination,
                    refused_total = total,
                    "publish not acknowledged yet: {error}"
                );
            }
        }
    }

    /// A client's QoS 1/2 PUBLISH entering the broker: charged to the memory gauge (once,
    /// shared by every copy; added to its read's charge if `body` says so) when the `memoryUsage`
    /// limit and the durability engine's room (`storeUsage`, disk space) let it in. `Err`: it
    /// may not be acknowledged now; the caller holds it and asks again (producer flow
    /// control). Not counted: see [`Self::count_held`].
    pub fn admit_acknowledged(
        &self,
        message: Message,
        body: Body,
    ) -> Result<Message, (Message, Refusal)> {
        if self.memory.is_full() {
            return Err((message, Refusal::MemoryFull));
        }
        let incoming = (message.topic.len() + message.payload.len()) as u64;
        if let Err(e) = self.durability.check_room(incoming) {
            return Err((message, Refusal::Durability(e)));
        }
        Ok(self.charged(message, body))
    }

    /// A QoS 1/2 publish held back for `refusal` (once per publish): counted and logged
    /// (rate-limited).
    pub fn count_held(&self, destination: &str, refusal: &Refusal) {
        match refusal {
            Refusal::MemoryFull => {
                let total = self.counters.refused_memory_full();
                if should_log(total) {
                    tracing::warn!(
                        %destination,
                        limit_bytes = self.memory.limit_bytes().unwrap_or(0),
                        used_bytes = self.memory.used_bytes(),
                        total,
                        "publisher paused, publish not acknowledged yet: messages held in memory \
                         reached the memoryUsage limit"
                    );
                }
            }
            Refusal::Durability(e) => self.publish_refused(destination, e),
        }
    }

    /// A client's QoS 0 PUBLISH entering the broker: charged to the memory gauge (once, shared
    /// by every copy; added to its read's charge if `body` says so), or `None` (dropped, counted
    /// and logged, rate-limited) when the `memoryUsage` limit is reached.
    pub fn admit(&self, message: Message, body: Body) -> Option<Message> {
        if !self.memory.is_full() {
            return Some(self.charged(message, body));
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
                limit_bytes = self.memory.limit_bytes().unwrap_or(0),
                used_bytes = self.memory.used_bytes(),
                total,
                "{outcome}: messages held in memory reached the memoryUsage limit"
            );
        }
        None
    }

    fn charged(&self, message: Message, body: Body) -> Message {
        match body {
            // Kept until replaced: a copy of its own, so that it does not keep its read alive
            // (nor the charges of the read's other messages) after they are delivered.
            Body::Received(_) if message.retain => self.memory.kept_apart(&message),
            Body::Received(read) => {
                read.add(&message);
                message
            }
            Body::Uncharged => self.memory.charge(message),
        }
    }
}
