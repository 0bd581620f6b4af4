//! Packets from an established client: publish (with QoS 2 de-duplication), acknowledgements
//! of our deliveries, SUBSCRIBE/UNSUBSCRIBE, PINGREQ, DISCONNECT, AUTH (`enhanced_auth.rs`).

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::{CloseReason, Conn, Ready, TOPIC_ALIAS_MAXIMUM};
use crate::broker::durability::{Change, Commit, DurabilityError, QueueSeq, ReceivingConnection};
use crate::broker::message::{min_qos, Message, SampleStamp, V5Extras};
use crate::broker::routing::destinations::is_wildcard;
use crate::broker::routing::memory::Body;
use crate::broker::runtime::{Routed, TopicRefusal};
use crate::broker::session::inflight::{AckOutcome, Inflight};
use crate::broker::session::qos2_storing;
use crate::broker::session::{SessionId, SessionState, SubscriptionOptions};
use crate::protocol::codec::take_plain_puback;
use crate::protocol::topic::parse_shared_subscription;
use crate::protocol::{
    Ack, Disconnect, LastWill, Packet, Properties, ProtocolVersion, Publish, QoS, ReasonCode,
    RetainHandling, SubAck, Subscribe, UnsubAck, Unsubscribe,
};
use crate::security::Action;

/// What the read loop does after a packet.
pub(super) enum Flow {
    Continue,
    /// DISCONNECT: close without the will.
    Disconnect,
    /// MQTT 5 DISCONNECT 0x04: close and publish the will.
    DisconnectWithWill,
}

/// How long a QoS 2 state change (a PUBREL's release, a delivery's packet id) that the store
/// refuses is tried again before its connection is closed (longer than a cluster store's
/// leader election, so a failover does not close it).
pub(super) const RELEASE_RETRY_FOR: std::time::Duration = std::time::Duration::from_secs(60);
/// The pause between two attempts of such a change.
const RELEASE_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(200);

/// Wait for `committed`, the commit of `changes`, and while the store refuses them (an I/O
/// error while it reopens, a cluster store's leader election) commit them again, for at most
/// [`RELEASE_RETRY_FOR`] or until the connection closes. The state change of a QoS 2 exchange
/// must be durable before the packet that follows it leaves, and its client sends nothing
/// again before it reconnects: giving up is the caller's to turn into a close. A
/// [`DurabilityError::Stale`] refusal (the session is no longer this broker's) is final.
pub(super) async fn commit_retried(
    core: &Arc<crate::broker::runtime::BrokerCore>,
    closing: &tokio_util::sync::CancellationToken,
    committed: Commit,
    changes: Vec<Change>,
) -> Result<(), DurabilityError> {
    let give_up_at = tokio::time::Instant::now() + RELEASE_RETRY_FOR;
    let mut result = committed.wait().await;
    let mut logged = false;
    while let Err(e) = &result {
        if closing.is_cancelled()
            || tokio::time::Instant::now() >= give_up_at
            || matches!(e, DurabilityError::Stale(_))
        {
            break;
        }
        if !logged {
            tracing::warn!("a QoS 2 state change waits: the store refused it, trying again: {e}");
            logged = true;
        }
        tokio::select! {
            _ = tokio::time::sleep(RELEASE_RETRY_PAUSE) => {}
            _ = closing.cancelled() => break,
        }
        result = core.durability().commit(changes.clone()).wait().await;
    }
    result
}

impl Conn {
    /// Handle one packet from the client; `body` says how a PUBLISH's payload is charged
    /// to `memoryUsage` (see `memory.rs`).
    pub(super) fn handle(&mut self, packet: Packet, body: Body) -> Result<Flow, CloseReason> {
        match packet {
            Packet::Publish(p) => self.on_publish(p, body)?,
            Packet::PubAck(a) => self.on_delivery_ack(|w| w.on_puback(a.packet_id))?,
            Packet::PubRec(a) => self.on_pubrec(a.packet_id, a.reason)?,
            Packet::PubComp(a) => self.on_delivery_ack(|w| w.on_pubcomp(a.packet_id))?,
            Packet::PubRel(a) => self.on_pubrel(a.packet_id)?,
            Packet::Subscribe(s) => self.on_subscribe(s)?,
            Packet::Unsubscribe(u) => self.on_unsubscribe(u)?,
            Packet::PingReq => self.send(Packet::PingResp)?,
            Packet::Disconnect(d) => return self.on_disconnect(d),
            Packet::Connect(_) => return Err(CloseReason::ProtocolViolation("second CONNECT")),
            Packet::Auth(a) => self.on_auth(a)?,
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
                return Err(CloseReason::ProtocolViolation(
                    "client sent a packet only a server may send",
                ))
            }
        }
        Ok(Flow::Continue)
    }

    /// DISCONNECT. An MQTT 5 client may change its Session Expiry Interval here, but not from
    /// 0 (a session that ends at disconnect) to more (MQTT 5 3.14.2.2.2: protocol error).
    fn on_disconnect(&mut self, d: Disconnect) -> Result<Flow, CloseReason> {
        if self.version != ProtocolVersion::V5 {
            return Ok(Flow::Disconnect);
        }
        if let Some(secs) = d.properties.and_then(|p| p.session_expiry_interval) {
            let persistent = self.session.is_persistent();
            let ends_now = self.session.expiry_secs() == Some(0);
            if secs > 0 && (!persistent || ends_now) {
                return Err(CloseReason::ProtocolViolation(
                    "DISCONNECT sets a session expiry interval after connecting with 0",
                ));
            }
            if persistent {
                // Capped as at CONNECT (`offlineDurableSubscriberTimeout`, 3.2.2.3.2).
                let granted = super::connack_limits::granted_session_expiry(
                    Some(secs),
                    self.core.session_expiry_cap,
                )
                .unwrap_or(secs);
                let expiry_secs = match granted {
                    u32::MAX => None,
                    secs => Some(secs),
                };
                self.with_session(|s| s.expiry_secs = expiry_secs)?;
            }
        }
        Ok(match d.reason {
            reason if reason == ReasonCode::DisconnectWithWill.code() => Flow::DisconnectWithWill,
            _ => Flow::Disconnect,
        })
    }

    /// The topic of a PUBLISH: its own, which an MQTT 5 `alias` then stands for on this
    /// connection, or (empty topic) the one `alias` stands for.
    fn resolve_topic_alias(
        &mut self,
        topic: String,
        alias: Option<u16>,
    ) -> Result<Arc<str>, CloseReason> {
        let Some(alias) = alias else {
            return Ok(self.core.shared_topic(topic));
        };
        if alias == 0 || alias > TOPIC_ALIAS_MAXIMUM {
            return Err(CloseReason::TopicAliasInvalid(alias));
        }
        let aliases = self.limits.topic_aliases.get_or_insert_with(Box::default);
        let known = aliases.iter_mut().find(|(a, _)| *a == alias);
        match (topic.is_empty(), known) {
            (true, Some((_, topic))) => Ok(topic.clone()),
            (true, None) => Err(CloseReason::ProtocolViolation(
                "PUBLISH with an empty topic and an unknown topic alias",
            )),
            (false, Some((_, known))) => {
                *known = Arc::from(topic);
                Ok(known.clone())
            }
            (false, None) => {
                let topic: Arc<str> = Arc::from(topic);
                aliases.push((alias, topic.clone()));
                Ok(topic)
            }
        }
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

    /// PUBACK / PUBCOMP: the exchange is complete and its kept entry removed.
    fn on_delivery_ack(
        &mut self,
        f: impl FnOnce(&mut Inflight) -> AckOutcome,
    ) -> Result<(), CloseReason> {
        if self.end_delivery(f)? {
            self.resend_next_held()?;
        } else {
            tracing::debug!("acknowledgement for an unknown packet id ignored")
        }
        Ok(())
    }

    /// The PUBACKs at the front of `bytes` that hold nothing but their packet id (see
    /// `take_plain_puback`), taken out and handled as [`Self::on_delivery_ack`] would, their
    /// entries removed under one lock of the session. A subscriber's read carries dozens of
    /// them; decoding each into a packet and locking the session for each was a large part
    /// of a QoS 1 fan-out's cost. `false`: there was none, `bytes` is untouched.
    pub(super) fn take_plain_pubacks(&mut self, bytes: &mut Bytes) -> Result<bool, CloseReason> {
        let mut ids = [0u16; PUBACK_BATCH];
        let mut taken = 0;
        while taken < PUBACK_BATCH {
            let Some(id) = take_plain_puback(bytes) else {
                break;
            };
            ids[taken] = id;
            taken += 1;
        }
        if taken == 0 {
            return Ok(false);
        }
        let (ended, removed) =
            self.with_session(|s| end_acknowledged(s.inflight_mut(), &ids[..taken]))?;
        if ended > 0 {
            self.output.pump_wanted = true;
        }
        if !removed.is_empty() {
            let client_id = self.session.client_id();
            let removed = removed
                .into_iter()
                .map(|seq| Change::removed(client_id, seq));
            self.core.commit_background(removed.collect());
        }
        for _ in 0..ended {
            if self.limits.resend_held.is_none() {
                break;
            }
            self.resend_next_held()?;
        }
        Ok(true)
    }

    /// End one outbound exchange as an acknowledgement does: `f` removes its in-flight entry,
    /// then its kept entry goes and the window has room. `false`: no such exchange.
    pub(super) fn end_delivery(
        &mut self,
        f: impl FnOnce(&mut Inflight) -> AckOutcome,
    ) -> Result<bool, CloseReason> {
        match self.with_session(|s| f(s.inflight_mut()))? {
            AckOutcome::Accepted { seq } => {
                self.output.pump_wanted = true;
                if let Some(seq) = seq {
                    let removed = Change::removed(self.session.client_id(), seq);
                    self.core.commit_background(vec![removed]);
                }
                Ok(true)
            }
            AckOutcome::Unknown => Ok(false),
        }
    }

    /// PUBREC of one of our QoS 2 deliveries: answered with PUBREL, also for an unknown id (the
    /// client waits for it either way). For a kept entry the PUBREL leaves only once the
    /// entry's "released" state is durable: after a crash the restarted broker must re-send the
    /// PUBREL, not the PUBLISH the client may already have completed. A release the store
    /// refuses is tried again ([`commit_retried`]); past [`RELEASE_RETRY_FOR`] the connection
    /// closes without the PUBREL and the entry awaits its PUBREC again (`Ready::unreleased`),
    /// so memory and store agree and the resumed session re-sends the PUBLISH (DUP=1), which
    /// the client answers with PUBREC without delivering it twice (MQTT 4.3.3).
    ///
    /// An MQTT 5 PUBREC with a reason code >= 0x80 ends the exchange instead (MQTT 5 4.3.3-4,
    /// 4.9): no PUBREL, the message is discarded and its in-flight slot freed.
    fn on_pubrec(&mut self, packet_id: u16, reason: u8) -> Result<(), CloseReason> {
        if self.version == ProtocolVersion::V5 && reason >= ReasonCode::SubAckFailureV3.code() {
            tracing::debug!(
                packet_id,
                reason,
                "delivery refused by the client: discarded"
            );
            return self.on_delivery_ack(|w| w.on_pubrec_refused(packet_id));
        }
        let release = Packet::PubRel(Ack::new(packet_id));
        let seq = match self.with_session(|s| s.inflight_mut().on_pubrec(packet_id))? {
            AckOutcome::Accepted { seq } => seq,
            AckOutcome::Unknown => {
                tracing::debug!("PUBREC for an unknown packet id: PUBREL anyway");
                None
            }
        };
        let Some(seq) = seq else {
            return self.ack(release);
        };
        let released = Change::released(self.session.client_id(), seq, packet_id);
        self.ack_when_kept(
            released,
            release,
            (packet_id, true),
            "PUBREL withheld, the store kept refusing the release; closing, so that the PUBLISH is sent again where the client reconnects",
        )
    }

    /// Send `ack` (of exchange `packet_id`) once `change` is durable, trying it again while
    /// the store refuses it ([`commit_retried`]). When the store keeps refusing, the
    /// connection closes without `ack` (`gave_up` is logged), and with `undo_release` the
    /// outbound exchange awaits its PUBREC again (see `Ready::unreleased`).
    fn ack_when_kept(
        &mut self,
        change: Change,
        ack: Packet,
        (packet_id, undo_release): (u16, bool),
        gave_up: &'static str,
    ) -> Result<(), CloseReason> {
        let committed = match self.core.durability().commit(vec![change.clone()]) {
            Commit::Done(Ok(())) => return self.ack(ack),
            pending_or_failed => pending_or_failed,
        };
        let core = self.core.clone();
        let closing = self.pending_acks.closing();
        self.pending_acks.push(async move {
            match commit_retried(&core, &closing, committed, vec![change]).await {
                Ok(()) => Ready {
                    ack: Some(ack),
                    ..Ready::default()
                },
                Err(e) => {
                    if matches!(e, DurabilityError::Stale(_)) {
                        // Not a refusal: the session moved on (another node took it) and the
                        // exchange goes on from its record where it resumes.
                        tracing::debug!(
                            packet_id,
                            error = %e,
                            "acknowledgement withheld: the session left this broker"
                        );
                    } else {
                        tracing::warn!(packet_id, error = %e, "{gave_up}");
                    }
                    Ready {
                        close_unkept: !closing.is_cancelled(),
                        unreleased: undo_release.then_some(packet_id),
                        ..Ready::default()
                    }
                }
            }
        });
        Ok(())
    }

    fn on_publish(&mut self, p: Publish, body: Body) -> Result<(), CloseReason> {
        let received = self.core.counters.message_in(p.qos, p.payload.len());
        if p.properties
            .as_ref()
            .is_some_and(|props| !props.subscription_identifiers.is_empty())
        {
            // Only a server sends them (MQTT 5 3.3.4-6): DISCONNECT 0x82.
            return Err(CloseReason::ProtocolViolation(
                "PUBLISH from a client with a Subscription Identifier",
            ));
        }
        if let Some(backplane) = self.core.backplane() {
            if p.qos == QoS::ExactlyOnce && backplane.maximum_qos() != QoS::ExactlyOnce {
                return Err(CloseReason::QosNotSupported);
            }
            // Above the Maximum Packet Size a cluster announces (what NATS carries): MQTT 5
            // DISCONNECT 0x95, MQTT 3 closed; never acknowledged and then lost.
            if !p.topic.is_empty() && !backplane.topic_fits(&p.topic) {
                // The client is told nothing but a closed socket (MQTT 3) or 0x90: the log
                // says why, once (the connection ends here), without the topic or payload.
                let (subject_bytes, max_subject_bytes) = backplane.topic_bytes_carried(&p.topic);
                tracing::info!(
                    topic_bytes = p.topic.len(),
                    subject_bytes,
                    max_subject_bytes,
                    "PUBLISH refused, connection closed: a topic of {} bytes is {subject_bytes} \
                     bytes as the cluster's NATS subject, above the {max_subject_bytes} bytes a \
                     subject may take (a byte other than A-Z, a-z, 0-9, '_', '-' and '/' takes \
                     three, escaped); hint: publish to a shorter topic",
                    p.topic.len()
                );
                return Err(CloseReason::TopicTooLong(p.topic.len()));
            }
            let size = p.topic.len() + p.payload.len();
            let max = backplane.maximum_message_bytes();
            if size > max {
                return Err(CloseReason::Malformed(
                    crate::protocol::DecodeError::TooLarge { size, max },
                ));
            }
        }
        let alias = p.properties.as_ref().and_then(|props| props.topic_alias);
        let topic = self.resolve_topic_alias(p.topic, alias)?;
        let message = Message {
            stamp: SampleStamp::for_publish(received),
            topic,
            payload: p.payload,
            qos: p.qos,
            retain: p.retain,
            // The clock is read only when there are properties (this runs per PUBLISH).
            v5: p
                .properties
                .and_then(|props| V5Extras::from_publish(Some(props), Instant::now())),
        };
        match (p.qos, p.packet_id) {
            (QoS::AtMostOnce, _) => {
                let Some(message) = self.core.admit(message, body) else {
                    return Ok(());
                };
                if self.pending_acks.is_empty() {
                    if let Some(routed) = self.publish(message, Some(self.session.id())) {
                        self.pause_for(routed);
                    }
                } else if self.authorize(&message).is_ok() {
                    // Behind messages waiting for the store: delivered in turn.
                    let (plan, changes) = self.core.plan_route(message, Some(self.session.id()));
                    self.core.commit_background(changes);
                    self.pending_acks.push(std::future::ready(Ready {
                        route: Some(plan),
                        ack: None,
                        deliveries: None,
                        close_no_space: false,
                        close_unkept: false,
                        unreleased: None,
                        unsent: Vec::new(),
                    }));
                }
            }
            (QoS::AtLeastOnce, Some(id)) => {
                self.publish_acked(message, None, Packet::PubAck(Ack::new(id)), body)?;
            }
            (QoS::ExactlyOnce, Some(id)) => {
                // Exactly once: route on first receipt, remember the id until PUBREL; a
                // re-sent PUBLISH with that id is acknowledged again but not routed.
                let ack = Packet::PubRec(Ack::new(id));
                let first = self.with_session(|s| {
                    // A new exchange: an earlier refusal of this id is over.
                    s.take_refused_qos2(id);
                    s.inbound_qos2_mut().insert(id)
                })?;
                // In a cluster a persistent session's exchange is kept in the store, and
                // the id here may be that of a PUBLISH whose hold is still on its way (the
                // client dropped the connection and sent it again here at once): a PUBREC
                // from the id alone, then a PUBCOMP for a PUBREL that found nothing held
                // yet, lost the message. The store answers a re-send as held already.
                let kept_in_store = self.core.backplane().is_some() && self.session.is_persistent();
                if first || kept_in_store {
                    self.publish_acked(message, Some(id), ack, body)?;
                } else if let Some(outcome) = self.session.qos2_being_stored(id) {
                    // The first copy's commit is still on its way (on the connection this one
                    // took the session from, or on this one): a PUBREC now would stand for a
                    // message the store may yet refuse. Answer once it is known; not kept,
                    // the connection closes without a PUBREC and the client sends it again,
                    // to be stored then (its id was forgotten with the refusal).
                    self.pending_acks.push(async move {
                        if qos2_storing::kept(outcome).await {
                            Ready {
                                ack: Some(ack),
                                ..Ready::default()
                            }
                        } else {
                            Ready {
                                close_unkept: true,
                                ..Ready::default()
                            }
                        }
                    });
                } else {
                    self.ack(ack)?;
                }
            }
            (_, None) => {
                return Err(CloseReason::ProtocolViolation(
                    "QoS 1/2 PUBLISH without a packet id",
                ))
            }
        }
        Ok(())
    }

    /// The `$` rule, write authorization, then routing (QoS 0 PUBLISH and will alike).
    /// `None`: refused; else what routing did (a QoS 0 publisher pauses on it like any other).
    /// `publisher`: this connection's session for a PUBLISH (No Local), `None` for the will.
    fn publish(&mut self, message: Message, publisher: Option<SessionId>) -> Option<Routed> {
        if self.authorize(&message).is_err() {
            return None;
        }
        Some(self.core.route(message, publisher))
    }

    /// Send `ack` after every acknowledgement already waiting for the store (order is kept).
    pub(super) fn ack(&mut self, ack: Packet) -> Result<(), CloseReason> {
        if self.pending_acks.is_empty() {
            self.send(ack)
        } else {
            self.pending_acks.push(std::future::ready(Ready {
                route: None,
                ack: Some(ack),
                deliveries: None,
                close_no_space: false,
                close_unkept: false,
                unreleased: None,
                unsent: Vec::new(),
            }));
            Ok(())
        }
    }

    /// A QoS 1/2 PUBLISH: routed and acknowledged with `ack` once it is kept for every session
    /// that must get it (at once for a memory-only broker, after the commit with a store).
    /// `inbound_qos2`: the QoS 2 packet id to record with it. When a broker-wide limit
    /// (`memoryUsage`, `storeUsage`, disk space) does not let it in, it is held and the
    /// connection stops reading (producer flow control, see `flow_control.rs`). A publish the
    /// `$` rule or the policy refuses is dropped and still acknowledged to an MQTT 3 client (it
    /// cannot be told no), as ActiveMQ does; an MQTT 5 client gets 0x90 / 0x87.
    fn publish_acked(
        &mut self,
        message: Message,
        inbound_qos2: Option<u16>,
        ack: Packet,
        body: Body,
    ) -> Result<(), CloseReason> {
        let v5 = self.version == ProtocolVersion::V5;
        if let Err(reason) = self.authorize(&message) {
            if let Some(id) = inbound_qos2.filter(|_| v5) {
                // A PUBREC >= 0x80 ends the exchange: no PUBREL follows.
                self.with_session(|s| s.inbound_qos2_mut().remove(&id))?;
            }
            return self.ack(with_reason(ack, reason));
        }
        match self.core.admit_acknowledged(message, body) {
            Ok(message) => self.publish_admitted(message, inbound_qos2, ack),
            Err((message, refusal)) => self.hold(message, inbound_qos2, ack, refusal),
        }
    }

    /// A QoS 1/2 PUBLISH the limits let in: commit, then route and acknowledge in order.
    /// A commit refused by the engine (a race with other publishers after the admission
    /// check) is retried until it goes through or, past the refusal deadline, refused as
    /// `flow_control.rs` says.
    pub(super) fn publish_admitted(
        &mut self,
        message: Message,
        inbound_qos2: Option<u16>,
        ack: Packet,
    ) -> Result<(), CloseReason> {
        let v5 = self.version == ProtocolVersion::V5;
        let (plan, mut changes) = self.core.plan_route(message, Some(self.session.id()));
        // Every retry below commits the same publish under the same identity.
        let store_id = self.core.durability().store_id();
        Change::set_store_id(&mut changes, store_id);
        let qos2_change = inbound_qos2
            .filter(|_| self.session.is_persistent())
            .map(|packet_id| Change::InboundQos2Received {
                client_id: self.session.client_id().clone(),
                packet_id,
                connection: Some(self.receiving_connection()),
            });
        changes.extend(qos2_change.clone());
        let first = match self.core.durability().commit(changes) {
            Commit::Done(Ok(())) if self.pending_acks.is_empty() => {
                let routed = self.core.complete_route(plan);
                self.pause_for(routed);
                return self.send(ack);
            }
            Commit::Done(Ok(())) => {
                self.pending_acks.push(std::future::ready(Ready {
                    route: Some(plan),
                    ack: Some(ack),
                    deliveries: None,
                    close_no_space: false,
                    close_unkept: false,
                    unreleased: None,
                    unsent: Vec::new(),
                }));
                return Ok(());
            }
            pending_or_refused => pending_or_refused,
        };
        // A re-send of this QoS 2 PUBLISH meanwhile waits for this answer (`qos2_storing.rs`).
        let outcome = inbound_qos2.map(|packet_id| {
            let (answer, outcome) = qos2_storing::outcome();
            self.session.storing_qos2(packet_id, outcome.clone());
            (packet_id, answer, outcome)
        });
        let (core, session) = (self.core.clone(), self.session.clone());
        let refuse_at = self.refusal_deadline();
        let closing = self.pending_acks.closing();
        let receiving = self.receiving_connection();
        self.pending_acks.push(async move {
            let mut plan = plan;
            let mut result = first.wait().await;
            let mut counted = false;
            let mut attempts = 0u32;
            while let Err(e) = &result {
                // Stale: a receiving session ended after routing was planned; plan again at
                // once. Full or unavailable: again after a pause, until the deadline.
                let stale = matches!(e, DurabilityError::Stale(_));
                let in_time = refuse_at.is_none_or(|at| tokio::time::Instant::now() < at);
                // A newer connection took the session: its client re-sends the publish there.
                let superseded = closing.is_cancelled() || !receiving.holds_session();
                if superseded || !(in_time || (stale && attempts == 0)) {
                    break;
                }
                if !stale && !counted {
                    core.publish_refused(&plan.message().topic, e);
                    counted = true;
                }
                if !stale || attempts > 0 {
                    tokio::select! {
                        _ = tokio::time::sleep(super::flow_control::HELD_RETRY) => {}
                        _ = closing.cancelled() => break,
                    }
                }
                attempts += 1;
                // Planned again under the same entry numbers: new ones would sort after
                // this connection's later publishes kept meanwhile (`runtime/replan.rs`).
                let previous = plan.entry_seqs();
                let (mut replanned, mut changes) =
                    core.plan_route(plan.into_message(), Some(session.id()));
                replanned.reuse_entry_seqs(previous, &mut changes);
                Change::set_store_id(&mut changes, store_id);
                changes.extend(qos2_change.clone());
                plan = replanned;
                result = core.durability().commit(changes).wait().await;
            }
            if result.is_err() {
                if let Some(id) = inbound_qos2 {
                    // Not stored: a re-send of it (on a newer connection too) must be
                    // stored, not answered from the packet id as a duplicate.
                    session.with_state_unchecked(|s| s.inbound_qos2_mut().remove(&id));
                }
            }
            if let Some((packet_id, answer, outcome)) = outcome {
                answer.send_replace(Some(result.is_ok()));
                session.qos2_stored(packet_id, &outcome);
            }
            match result {
                Ok(()) => Ready {
                    route: Some(plan),
                    ack: Some(ack),
                    deliveries: None,
                    close_no_space: false,
                    close_unkept: false,
                    unreleased: None,
                    unsent: Vec::new(),
                },
                Err(e) => {
                    if !counted && receiving.holds_session() {
                        core.publish_refused(&plan.message().topic, &e);
                    }
                    // A QoS 2 message of a session that keeps no exchange across nodes is
                    // stored as it is, delivered once stored (not at its PUBREL): a cluster
                    // store that did not answer in time may still land it, and a PUBREC 0x97
                    // would have the client publish it again, a second copy. Such a client
                    // gets no PUBREC: the connection closes, promising nothing either way.
                    let outcome_unknown = inbound_qos2.is_some()
                        && qos2_change.is_none()
                        && matches!(
                            e,
                            DurabilityError::Unavailable(_) | DurabilityError::Unconfirmed(_)
                        )
                        && core.backplane().is_some();
                    if outcome_unknown {
                        tracing::warn!(
                            "QoS 2 publish not stored in time and perhaps stored later: closing \
                             without PUBREC rather than refusing it (0x97): {e}"
                        );
                        return Ready {
                            close_unkept: !closing.is_cancelled(),
                            ..Ready::default()
                        };
                    }
                    // The same outcome as a held publish past its deadline: MQTT 5 is told
                    // (0x97), MQTT 3 is closed when sendFailIfNoSpace set a deadline.
                    Ready {
                        ack: v5.then(|| with_reason(ack, ReasonCode::QuotaExceeded)),
                        close_no_space: !v5 && refuse_at.is_some() && !closing.is_cancelled(),
                        ..Ready::default()
                    }
                }
            }
        });
        Ok(())
    }

    /// This connection, as a store that keeps a QoS 2 exchange beyond it sees it.
    fn receiving_connection(&self) -> ReceivingConnection {
        ReceivingConnection::new(self.session.clone(), self.token.generation)
    }

    /// PUBREL: forget the inbound QoS 2 id, then PUBCOMP once that is durable (else a crash
    /// could bring the id back and swallow the client's next message that reuses it). In a
    /// cluster the release is what delivers the message (`cluster/qos2.rs`), so a release the
    /// store refused is tried again, not dropped: a client re-sends its PUBREL only when it
    /// reconnects (MQTT 5 4.4), and until then its message would stay held. Past
    /// [`RELEASE_RETRY_FOR`] the connection is closed instead, so that the client re-sends the
    /// PUBREL where it reconnects.
    fn on_pubrel(&mut self, packet_id: u16) -> Result<(), CloseReason> {
        // A PUBREL after this connection's PUBREC >= 0x80 (some clients send one anyway):
        // the message was refused, nothing is released, and PUBCOMP says so (MQTT 5 3.7.2.1)
        // instead of reporting success for a message nobody will get.
        if self.with_session(|s| s.take_refused_qos2(packet_id))? {
            tracing::debug!(
                packet_id,
                "PUBREL for a refused QoS 2 PUBLISH: PUBCOMP 0x92"
            );
            let mut ack = Ack::new(packet_id);
            ack.reason = ReasonCode::PacketIdentifierNotFound.code();
            return self.ack(Packet::PubComp(ack));
        }
        self.with_session(|s| s.inbound_qos2_mut().remove(&packet_id))?;
        let ack = Packet::PubComp(Ack::new(packet_id));
        if !self.session.is_persistent() {
            return self.ack(ack);
        }
        let released = Change::InboundQos2Released {
            client_id: self.session.client_id().clone(),
            packet_id,
        };
        self.ack_when_kept(
            released,
            ack,
            (packet_id, false),
            "PUBCOMP withheld, the store kept refusing the release; closing, so that the client sends the PUBREL again where it reconnects",
        )
    }

    /// The `$` rule and write authorization; counts and logs a refusal. `Err`: the MQTT 5
    /// reason code of the refusal.
    fn authorize(&mut self, message: &Message) -> Result<(), ReasonCode> {
        if message.topic.starts_with('$') && crate::broker::system::is_system_topic(&message.topic)
        {
            // The broker's own tree: no client writes it, whatever publishDollarTopics says.
            self.core.counters.dropped_not_authorized();
            tracing::info!(topic = %message.topic, user = %self.identity.principal.user, "publish to $SYS refused: dropped");
            return Err(ReasonCode::NotAuthorized);
        }
        if message.topic.starts_with('$') && !self.listener.options.publish_dollar_topics {
            self.core.counters.dropped_dollar_topic();
            tracing::debug!(topic = %message.topic, "publish to a $ topic dropped (publishDollarTopics=false)");
            return Err(ReasonCode::TopicNameInvalid);
        }
        // Write, and the topic must exist or be created (admin): one cache probe for a topic
        // this connection used before.
        match self.core.use_topic(
            &mut self.identity.authz,
            &self.core.current_security(),
            &self.identity.principal,
            Action::Write,
            &message.topic,
        ) {
            Ok(()) => {
                self.identity.authz.count_publish(
                    &self.core.topic_stats,
                    &message.topic,
                    message.payload.len(),
                );
                Ok(())
            }
            Err(TopicRefusal::NotAuthorized) => {
                self.core.counters.dropped_not_authorized();
                tracing::info!(topic = %message.topic, user = %self.identity.principal.user, "publish not authorized: dropped");
                Err(ReasonCode::NotAuthorized)
            }
            Err(TopicRefusal::NotCreated) => {
                // Logged by `use_topic` as ActiveMQ logs it.
                self.core.counters.dropped_not_created();
                Err(ReasonCode::NotAuthorized)
            }
        }
    }

    /// Publish the will (abnormal close), under the same rules as a PUBLISH.
    pub(super) fn publish_will(&mut self, will: LastWill) {
        // Charged but never refused for memory: a will is one bounded message per connection.
        let message = self.core.memory.charge(Message {
            stamp: SampleStamp::NONE,
            topic: Arc::from(will.topic),
            payload: will.payload,
            qos: will.qos,
            retain: will.retain,
            v5: V5Extras::from_publish(will.properties, Instant::now()),
        });
        // The connection is closing: nothing to pause.
        // A will has no origin session: No Local does not apply (the session is ending).
        if self.publish(message, None).is_some() {
            self.core.counters.wills_published();
        }
    }

    fn on_subscribe(&mut self, sub: Subscribe) -> Result<(), CloseReason> {
        // MQTT 5 3.8.2.1.2: at most one identifier (the codec refuses 0); it applies to every
        // filter of the packet.
        let subscription_id = match sub.properties.as_deref() {
            None => None,
            Some(props) => match props.subscription_identifiers.as_slice() {
                [] => None,
                [id] => Some(NonZeroU32::new(*id).ok_or(CloseReason::ProtocolViolation(
                    "SUBSCRIBE with Subscription Identifier 0",
                ))?),
                _ => {
                    return Err(CloseReason::ProtocolViolation(
                        "SUBSCRIBE with more than one Subscription Identifier",
                    ))
                }
            },
        };
        let mut return_codes = Vec::with_capacity(sub.filters.len());
        // In a cluster, the SUBACK waits for these filters' live subscriptions.
        let mut subscribed = Vec::new();
        let clustered = self.core.backplane().is_some();
        let mut granted = Vec::with_capacity(sub.filters.len());
        let security = self.core.security();
        for (filter, options) in sub.filters {
            // A shared subscription is authorized, and never sent retained messages, by the
            // filter inside `$share/{group}/` (MQTT 5 4.8.2, 3.8.4).
            // (The MQTT 5 codec already refuses a malformed one, and No Local on one, for the
            // whole packet; an MQTT 3.1.1 client gets 0x80 for that filter.)
            let (read_filter, shared) = match parse_shared_subscription(&filter) {
                Ok(None) => (filter.as_str(), false),
                Ok(Some(_)) if options.no_local => {
                    return Err(CloseReason::ProtocolViolation(
                        "No Local on a shared subscription (MQTT 5 3.8.3-4)",
                    ));
                }
                Ok(Some(_))
                    if self
                        .core
                        .backplane()
                        .is_some_and(|b| !b.shared_subscriptions()) =>
                {
                    // Not announced in CONNACK (Shared Subscription Available 0): 0x9E.
                    tracing::info!(%filter, "shared subscription refused: not served in a cluster");
                    return_codes.push(match self.version {
                        ProtocolVersion::V5 => ReasonCode::SharedSubscriptionsNotSupported.code(),
                        ProtocolVersion::V31 | ProtocolVersion::V311 => {
                            ReasonCode::SubAckFailureV3.code()
                        }
                    });
                    continue;
                }
                Ok(Some(share)) => (share.filter, true),
                Err(why) => {
                    tracing::info!(%filter, ?why, "malformed shared subscription refused");
                    return_codes.push(match self.version {
                        ProtocolVersion::V5 => ReasonCode::TopicFilterInvalid.code(),
                        ProtocolVersion::V31 | ProtocolVersion::V311 => {
                            ReasonCode::SubAckFailureV3.code()
                        }
                    });
                    continue;
                }
            };
            if self
                .core
                .backplane()
                .is_some_and(|b| !b.filter_fits(read_filter))
            {
                tracing::info!(
                    filter_bytes = read_filter.len(),
                    "subscription refused: the filter is too long for the cluster's NATS subjects"
                );
                return_codes.push(match self.version {
                    ProtocolVersion::V5 => ReasonCode::TopicFilterInvalid.code(),
                    ProtocolVersion::V31 | ProtocolVersion::V311 => {
                        ReasonCode::SubAckFailureV3.code()
                    }
                });
                continue;
            }
            // A concrete filter names a topic that must exist or be created (admin); a
            // wildcard creates nothing (ActiveMQ's AbstractRegion.addConsumer).
            let permitted = if is_wildcard(read_filter) {
                self.identity.authz.allowed(
                    &security,
                    &self.identity.principal,
                    Action::Read,
                    read_filter,
                )
            } else {
                // A refused creation is logged by `use_topic` as ActiveMQ logs it.
                self.core
                    .use_topic(
                        &mut self.identity.authz,
                        &security,
                        &self.identity.principal,
                        Action::Read,
                        read_filter,
                    )
                    .is_ok()
            };
            if !permitted {
                tracing::info!(%filter, user = %self.identity.principal.user, "subscription not authorized");
                return_codes.push(match self.version {
                    ProtocolVersion::V5 => ReasonCode::NotAuthorized.code(),
                    ProtocolVersion::V31 | ProtocolVersion::V311 => {
                        ReasonCode::SubAckFailureV3.code()
                    }
                });
                continue;
            }
            let existed = self.with_session(|s| s.subscriptions().contains_key(&filter))?;
            let mut options = options;
            if let Some(maximum) = self.core.backplane().map(|b| b.maximum_qos()) {
                // The server may grant less than asked (3.9.3); never more than CONNACK's
                // Maximum QoS. A cluster's shared subscription group keeps no QoS 2 exchange
                // state across nodes: granted QoS 1 at most (docs/cluster.md).
                let maximum = if filter.starts_with("$share/") {
                    maximum.min(QoS::AtLeastOnce)
                } else {
                    maximum
                };
                options.qos = options.qos.min(maximum);
            }
            let kept = SubscriptionOptions::from_subscribe(&options, subscription_id);
            if let Some(backplane) = self.core.backplane().filter(|_| !existed && !shared) {
                backplane.subscribing(self.session.id(), &filter);
            }
            if !self
                .core
                .subscribe(&self.session, self.token.generation, &filter, kept)
            {
                return Err(CloseReason::TakenOver);
            }
            if clustered {
                subscribed.push(filter.clone());
            }
            return_codes.push(options.qos as u8);
            // MQTT 5 Retain Handling (v3 always sends them, as option 0).
            let send_retained = match options.retain_handling {
                RetainHandling::SendAtSubscribe => true,
                RetainHandling::SendAtSubscribeIfNew => !existed,
                RetainHandling::DoNotSend => false,
            };
            if send_retained && !shared {
                granted.push((filter, kept));
            }
        }
        let suback = Packet::SubAck(SubAck {
            packet_id: sub.packet_id,
            return_codes,
            properties: None,
        });
        if let Some(backplane) = self.core.backplane() {
            let ready = backplane.interest_ready(subscribed);
            return self.suback_when_kept(suback, granted, ready);
        }
        self.send(suback)?;
        // Retained messages on SUBSCRIBE (3.1.1 3.3.1.3; MQTT 5 per Retain Handling), after
        // the SUBACK, with retain=1.
        // Each carries the subscription's identifier (MQTT 5 3.3.4-3).
        for (filter, kept) in granted {
            for message in self.core.retained_matching(&filter) {
                let qos = min_qos(message.qos, kept.qos);
                self.core
                    .deliver_retained(&self.session, message, qos, kept.id);
            }
        }
        Ok(())
    }

    /// In a cluster: the SUBACK leaves once the node's live subscriptions are in place (`ready`)
    /// and, for a persistent session, once its record holds the new subscriptions (a node that
    /// dies after the SUBACK then cannot lose them); the retained messages follow it, as on a
    /// single node.
    fn suback_when_kept(
        &mut self,
        suback: Packet,
        granted: Vec<(String, SubscriptionOptions)>,
        ready: crate::broker::durability::BackplaneFuture<()>,
    ) -> Result<(), CloseReason> {
        let kept = if self.session.is_persistent() {
            let data = self.with_session(|s| crate::broker::durability::SessionData::of(s))?;
            self.core
                .durability()
                .commit(vec![Change::SessionSaved(data)])
        } else {
            Commit::done()
        };
        let (core, session) = (self.core.clone(), self.session.clone());
        self.pending_acks.push(async move {
            ready.await;
            if let Err(e) = kept.wait().await {
                // No SUBACK for a subscription a resume elsewhere would not have: the client
                // is sent away (its session is written again as it goes offline).
                tracing::warn!(client_id = %session.client_id(), "subscription not kept in the cluster store: {e}; closing without SUBACK");
                return Ready {
                    close_unkept: true,
                    ..Ready::default()
                };
            }
            // Read once the retained index caught up with the cluster (`ready`).
            for (filter, options) in &granted {
                for message in core.retained_matching(filter) {
                    let qos = min_qos(message.qos, options.qos);
                    core.deliver_retained(&session, message, qos, options.id);
                }
            }
            Ready {
                ack: Some(suback),
                ..Ready::default()
            }
        });
        Ok(())
    }

    /// The security snapshot was swapped (a reload): remove the subscriptions the new policy no
    /// longer lets this client read, so they stop delivering at once. (ActiveMQ keeps them until
    /// the client reconnects; here a reloaded policy bites on live connections too, as an admin
    /// revoking a permission expects.)
    /// Messages already queued are checked again when delivered (see `pump`).
    pub(super) fn drop_denied_subscriptions(&mut self) -> Result<(), CloseReason> {
        let security = self.core.security();
        let filters: Vec<String> =
            self.with_session(|s| s.subscriptions().keys().cloned().collect())?;
        for filter in filters {
            let read_filter = match parse_shared_subscription(&filter) {
                Ok(Some(share)) => share.filter,
                _ => filter.as_str(),
            };
            if self.identity.authz.allowed(
                &security,
                &self.identity.principal,
                Action::Read,
                read_filter,
            ) {
                continue;
            }
            self.core
                .unsubscribe(&self.session, self.token.generation, &filter)
                .ok_or(CloseReason::TakenOver)?;
            tracing::info!(%filter, user = %self.identity.principal.user, "subscription removed: the reloaded policy denies reading it");
        }
        self.output.pump_wanted = true;
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
                ReasonCode::Success.code()
            } else {
                ReasonCode::NoSubscriptionExisted.code()
            });
        }
        self.send(Packet::UnsubAck(UnsubAck {
            packet_id: unsub.packet_id,
            reason_codes,
            properties: None,
        }))
    }
}

/// `ack` (PUBACK or PUBREC) carrying the MQTT 5 reason code `reason` and a Reason String
/// saying why (an MQTT 3 encoder leaves both out; `Conn::send` drops the string for a client
/// that set Request Problem Information to 0).
pub(super) fn with_reason(ack: Packet, reason: ReasonCode) -> Packet {
    let properties = refusal_text(reason).map(|text| {
        Box::new(Properties {
            reason_string: Some(text.to_owned()),
            ..Properties::default()
        })
    });
    let reason = reason.code();
    match ack {
        Packet::PubAck(a) => Packet::PubAck(Ack {
            reason,
            properties,
            ..a
        }),
        Packet::PubRec(a) => Packet::PubRec(Ack {
            reason,
            properties,
            ..a
        }),
        other => other,
    }
}

/// The Reason String of a refused publish.
fn refusal_text(reason: ReasonCode) -> Option<&'static str> {
    Some(match reason {
        ReasonCode::NotAuthorized => "not authorized to publish to this topic",
        ReasonCode::TopicNameInvalid => "publishing to $ topics is not allowed on this connector",
        ReasonCode::QuotaExceeded => "the broker's memory or store limit is reached",
        _ => return None,
    })
}

/// Most PUBACKs handled under one lock of the session.
const PUBACK_BATCH: usize = 64;

/// The exchanges `ids` (PUBACKs, in arrival order) ended in `inflight`: how many ended, and the
/// kept queue entries to remove. Unknown ids (late duplicates) are ignored.
fn end_acknowledged(inflight: &mut Inflight, ids: &[u16]) -> (usize, Vec<QueueSeq>) {
    let mut ended = 0;
    let mut removed = Vec::new();
    for &id in ids {
        match inflight.on_puback(id) {
            AckOutcome::Accepted { seq } => {
                ended += 1;
                removed.extend(seq);
            }
            AckOutcome::Unknown => {
                tracing::debug!("acknowledgement for an unknown packet id ignored")
            }
        }
    }
    (ended, removed)
}
