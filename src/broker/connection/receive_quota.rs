//! Flow control of what an MQTT 5 client sends us (MQTT 5 3.3.4-7/-8, 4.9).
//!
//! CONNACK tells the client our Receive Maximum: how many QoS 1/2 PUBLISHes it may have
//! unacknowledged. We count them as the client does: a QoS 1/2 PUBLISH counts from the moment
//! it is read until the PUBACK, the PUBCOMP or a PUBREC >= 0x80 answering it is written to the
//! output. Acknowledgements the broker itself defers (a commit to the store, a publish held by
//! producer flow control, publishes deferred behind it) keep counting, because the client is
//! still waiting for them; it is at fault only when it sends one more while Receive Maximum of
//! them are unanswered. Then it gets DISCONNECT 0x93.
//!
//! A QoS 2 PUBLISH re-sent with DUP=1 for an exchange we already know is the same exchange and
//! is not counted twice. After a reconnect the client may still count exchanges of the previous
//! connection (their PUBREL -> PUBCOMP arrive here): we do not, so our count can only be lower
//! than the client's, never higher: a client that respects Receive Maximum is never cut off.
//! MQTT 3 clients have no Receive Maximum and are not counted.

use crate::broker::runtime::BrokerCore;
use crate::protocol::{Packet, ProtocolVersion, Publish, QoS, ReasonCode};

use super::{CloseReason, Conn};

/// The Receive Maximum the broker announces in CONNACK and enforces.
pub(super) fn server_receive_maximum(core: &BrokerCore) -> u16 {
    u16::try_from(core.receive_maximum)
        .unwrap_or(u16::MAX)
        .max(1)
}

impl Conn {
    /// A PUBLISH was read: count it when it starts a QoS 1/2 exchange. `Err`: the client now
    /// has more than Receive Maximum unanswered (DISCONNECT 0x93).
    pub(super) fn count_inbound_publish(&mut self, publish: &Publish) -> Result<(), CloseReason> {
        if self.version != ProtocolVersion::V5 || publish.qos == QoS::AtMostOnce {
            return Ok(());
        }
        if publish.qos == QoS::ExactlyOnce && publish.dup {
            if let Some(id) = publish.packet_id {
                if self.with_session(|s| s.inbound_qos2().contains(&id))? {
                    return Ok(());
                }
            }
        }
        let maximum = server_receive_maximum(&self.core);
        if self.limits.unacked_inbound >= maximum {
            return Err(CloseReason::ReceiveMaximumExceeded(maximum));
        }
        self.limits.unacked_inbound += 1;
        Ok(())
    }

    /// `packet` is about to be written: a PUBACK, a PUBCOMP or a PUBREC >= 0x80 ends one of
    /// the client's exchanges (MQTT 5 4.9).
    pub(super) fn release_receive_quota(&mut self, packet: &Packet) {
        let ends_exchange = match packet {
            Packet::PubAck(_) | Packet::PubComp(_) => true,
            Packet::PubRec(ack) => ack.reason >= ReasonCode::SubAckFailureV3.code(),
            _ => false,
        };
        if ends_exchange {
            self.limits.unacked_inbound = self.limits.unacked_inbound.saturating_sub(1);
        }
    }
}
