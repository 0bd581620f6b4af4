//! Packets from an established client: publish (with QoS 2 de-duplication), acknowledgements
//! of our deliveries, SUBSCRIBE/UNSUBSCRIBE, PINGREQ, DISCONNECT.

use std::sync::Arc;

use super::{CloseReason, Conn};
use crate::broker::inflight::{AckOutcome, Inflight};
use crate::broker::message::{min_qos, Message};
use crate::broker::session::SessionState;
use crate::protocol::{
    Ack, LastWill, Packet, Publish, QoS, SubAck, Subscribe, UnsubAck, Unsubscribe,
};
use crate::security::Action;

/// SUBACK return code: subscription refused.
const SUBACK_FAILURE: u8 = 0x80;
/// UNSUBACK reason codes (MQTT 5; a v3 encoder leaves them out).
const UNSUBACK_SUCCESS: u8 = 0x00;
const UNSUBACK_NO_SUBSCRIPTION: u8 = 0x11;

/// What the read loop does after a packet.
pub(super) enum Flow {
    Continue,
    /// DISCONNECT: close without the will.
    Disconnect,
}

impl Conn {
    pub(super) fn handle(&mut self, packet: Packet) -> Result<Flow, CloseReason> {
        match packet {
            Packet::Publish(p) => self.on_publish(p)?,
            Packet::PubAck(a) => self.on_delivery_ack(|w| w.on_puback(a.packet_id))?,
            Packet::PubRec(a) => {
                self.on_delivery_ack(|w| w.on_pubrec(a.packet_id))?;
                // Also for an unknown id: the client waits for PUBREL either way.
                self.send(Packet::PubRel(Ack::new(a.packet_id)))?;
            }
            Packet::PubComp(a) => self.on_delivery_ack(|w| w.on_pubcomp(a.packet_id))?,
            Packet::PubRel(a) => {
                self.with_session(|s| s.inbound_qos2.remove(&a.packet_id))?;
                self.send(Packet::PubComp(Ack::new(a.packet_id)))?;
            }
            Packet::Subscribe(s) => self.on_subscribe(s)?,
            Packet::Unsubscribe(u) => self.on_unsubscribe(u)?,
            Packet::PingReq => self.send(Packet::PingResp)?,
            Packet::Disconnect(_) => return Ok(Flow::Disconnect),
            Packet::Connect(_) => return Err(CloseReason::ProtocolViolation("second CONNECT")),
            Packet::ConnAck(_)
            | Packet::SubAck(_)
            | Packet::UnsubAck(_)
            | Packet::PingResp
            | Packet::Auth(_) => {
                return Err(CloseReason::ProtocolViolation(
                    "client sent a packet only a server may send",
                ))
            }
        }
        Ok(Flow::Continue)
    }

    /// Run `f` on the session state; closes the connection when it was taken over.
    pub(super) fn with_session<R>(
        &self,
        f: impl FnOnce(&mut SessionState) -> R,
    ) -> Result<R, CloseReason> {
        self.session
            .with_state(self.token.generation, f)
            .ok_or(CloseReason::TakenOver)
    }

    fn on_delivery_ack(
        &mut self,
        f: impl FnOnce(&mut Inflight) -> AckOutcome,
    ) -> Result<(), CloseReason> {
        match self.with_session(|s| f(&mut s.inflight))? {
            AckOutcome::Accepted => self.pump_wanted = true,
            AckOutcome::Unknown => {
                tracing::debug!("acknowledgement for an unknown packet id ignored")
            }
        }
        Ok(())
    }

    fn on_publish(&mut self, p: Publish) -> Result<(), CloseReason> {
        self.core.counters.messages_in();
        let message = Message {
            topic: Arc::from(p.topic),
            payload: p.payload,
            qos: p.qos,
            retain: p.retain,
        };
        match (p.qos, p.packet_id) {
            (QoS::AtMostOnce, _) => {
                self.publish(message);
            }
            (QoS::AtLeastOnce, Some(id)) => {
                self.publish(message);
                self.send(Packet::PubAck(Ack::new(id)))?;
            }
            (QoS::ExactlyOnce, Some(id)) => {
                // Exactly once: route on first receipt, remember the id until PUBREL; a
                // re-sent PUBLISH with that id is acknowledged again but not routed.
                if self.with_session(|s| s.inbound_qos2.insert(id))? {
                    self.publish(message);
                }
                self.send(Packet::PubRec(Ack::new(id)))?;
            }
            (_, None) => {
                return Err(CloseReason::ProtocolViolation(
                    "QoS 1/2 PUBLISH without a packet id",
                ))
            }
        }
        Ok(())
    }

    /// The `$` rule, write authorization, then routing (PUBLISH and will alike). A refused
    /// message is still acknowledged by the caller (3.1.1 cannot say no), as ActiveMQ does.
    fn publish(&mut self, message: Message) -> bool {
        if message.topic.starts_with('$') && !self.listener.options.publish_dollar_topics {
            self.core.counters.dropped_dollar_topic();
            tracing::debug!(topic = %message.topic, "publish to a $ topic dropped (publishDollarTopics=false)");
            return false;
        }
        if !self.authz.allowed(
            &self.security,
            &self.principal,
            Action::Write,
            &message.topic,
        ) {
            self.core.counters.dropped_not_authorized();
            tracing::info!(topic = %message.topic, user = %self.principal.user, "publish not authorized: dropped");
            return false;
        }
        self.core.route(message);
        true
    }

    /// Publish the will (abnormal close), under the same rules as a PUBLISH.
    pub(super) fn publish_will(&mut self, will: LastWill) {
        let message = Message {
            topic: Arc::from(will.topic),
            payload: will.payload,
            qos: will.qos,
            retain: will.retain,
        };
        if self.publish(message) {
            self.core.counters.wills_published();
        }
    }

    fn on_subscribe(&mut self, sub: Subscribe) -> Result<(), CloseReason> {
        let mut return_codes = Vec::with_capacity(sub.filters.len());
        let mut granted = Vec::with_capacity(sub.filters.len());
        for (filter, options) in sub.filters {
            if !self
                .authz
                .allowed(&self.security, &self.principal, Action::Read, &filter)
            {
                tracing::info!(%filter, user = %self.principal.user, "subscription not authorized");
                return_codes.push(SUBACK_FAILURE);
                continue;
            }
            if !self
                .core
                .subscribe(&self.session, self.token.generation, &filter, options.qos)
            {
                return Err(CloseReason::TakenOver);
            }
            return_codes.push(options.qos as u8);
            granted.push((filter, options.qos));
        }
        self.send(Packet::SubAck(SubAck {
            packet_id: sub.packet_id,
            return_codes,
            properties: None,
        }))?;
        // Retained messages on every SUBSCRIBE (3.1.1 3.3.1.3), after the SUBACK, with retain=1.
        for (filter, granted_qos) in granted {
            for message in self.core.retained_matching(&filter) {
                let qos = min_qos(message.qos, granted_qos);
                self.core.deliver_retained(&self.session, message, qos);
            }
        }
        Ok(())
    }

    fn on_unsubscribe(&mut self, unsub: Unsubscribe) -> Result<(), CloseReason> {
        let mut reason_codes = Vec::with_capacity(unsub.filters.len());
        for filter in &unsub.filters {
            let existed = self
                .core
                .unsubscribe(&self.session, self.token.generation, filter)
                .ok_or(CloseReason::TakenOver)?;
            reason_codes.push(if existed {
                UNSUBACK_SUCCESS
            } else {
                UNSUBACK_NO_SUBSCRIPTION
            });
        }
        self.send(Packet::UnsubAck(UnsubAck {
            packet_id: unsub.packet_id,
            reason_codes,
            properties: None,
        }))
    }
}
