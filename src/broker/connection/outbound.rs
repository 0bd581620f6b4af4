//! Packets to the client: encoding into the batch buffer, moving deliveries from the session
//! queue through the in-flight window, and retransmission on session resume.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::time::Instant;

use bytes::BytesMut;

use super::outbound_aliases::AliasUse;
use super::problem_info::strip_problem_information;
use super::{CloseReason, Conn, Ready, OUT_HIGH_WATER_BYTES};
use crate::broker::durability::{Change, Commit};
use crate::broker::message::Message;
use crate::broker::session::inflight::{InflightEntry, InflightStage};
use crate::broker::session::queue::QueuedMessage;
use crate::metrics::latency::DeliveredBy;
use crate::protocol::codec::{encode_publish, publish_packet_len};
use crate::protocol::{encode, Ack, Packet, Properties, ProtocolVersion, QoS};
use crate::security::Action;

/// Deliveries moved from the queue per session-lock acquisition.
const PUMP_BATCH: usize = 64;
/// Entries waiting in the ordered store queue beyond which no more deliveries are taken from the
/// session queue: held batches are not in the output buffer, so its high-water mark does not
/// bound them, and the session queue must keep showing the backlog (publisher back-pressure).
const HELD_ENTRIES_MAX: usize = 8;

impl Conn {
    /// Append `packet` to the output buffer. For an MQTT 5 client this is also where an
    /// acknowledgement returns receive quota (`receive_quota.rs`) and where problem
    /// information it did not ask for is removed (`problem_info.rs`).
    ///
    /// Problem information also goes when it would make the packet larger than the client's
    /// Maximum Packet Size (MQTT 5 3.1.2-24; e.g. 3.4.2.2.2 for PUBACK's Reason String).
    pub(super) fn send(&mut self, mut packet: Packet) -> Result<(), CloseReason> {
        let start = self.output.out.len();
        if self.version == ProtocolVersion::V5 {
            self.release_receive_quota(&packet);
            if let Packet::PubRec(refused) = &packet {
                if refused.reason >= 0x80 {
                    let id = refused.packet_id;
                    // Taken over meanwhile: that connection answers its own PUBRELs.
                    let _ = self.with_session(|s| s.refused_qos2_mut().insert(id));
                }
            }
            if !self.limits.problem_info {
                strip_problem_information(&mut packet);
            }
        }
        self.encode_packet(&packet)?;
        let too_large = self
            .limits
            .max_packet_bytes()
            .is_some_and(|max| self.output.out.len() - start > max);
        if too_large && strip_problem_information(&mut packet) {
            self.output.out.truncate(start);
            self.encode_packet(&packet)?;
        }
        Ok(())
    }

    fn encode_packet(&mut self, packet: &Packet) -> Result<(), CloseReason> {
        encode(packet, self.version, &mut self.output.out)
            .map_err(|e| CloseReason::Internal(format!("cannot encode {packet:?}: {e}")))
    }

    /// Append a PUBLISH of `message` straight from its shared topic and payload (no packet
    /// value, no topic copy: this runs once per delivered message).
    fn send_publish(&mut self, message: &Message, header: Header) -> Result<(), CloseReason> {
        let version = self.version;
        encode_delivery(message, header, version, &mut self.output.out)
    }

    /// After CONNACK: re-send every unfinished outbound exchange of a resumed session, in the
    /// original order and with the original packet ids: PUBLISH with DUP=1, or PUBREL for
    /// exchanges the client already PUBREC'd (MQTT 3.1.1 4.4). At most the connection's window
    /// of them go now: an MQTT 5 client may have lowered its Receive Maximum since (3.3.4-9);
    /// the rest follow one per ended exchange ([`Self::resend_next_held`]).
    pub(super) fn resend_inflight(&mut self) -> Result<(), CloseReason> {
        let entries = self.with_session(|s| s.inflight().iter().cloned().collect::<Vec<_>>())?;
        let window = self.limits.inflight_window();
        let mut held = VecDeque::new();
        let mut resent = 0;
        for entry in &entries {
            if resent < window {
                resent += usize::from(self.resend_entry(entry)?);
            } else {
                held.push_back(entry.packet_id);
            }
        }
        if !held.is_empty() {
            self.limits.resend_held = Some(Box::new(held));
        }
        Ok(())
    }

    /// An exchange ended: re-send the next one held back by [`Self::resend_inflight`], if any
    /// (skipping those that ended meanwhile).
    pub(super) fn resend_next_held(&mut self) -> Result<(), CloseReason> {
        while let Some(held) = self.limits.resend_held.as_mut() {
            let next = held.pop_front();
            if held.is_empty() {
                self.limits.resend_held = None;
            }
            let Some(packet_id) = next else {
                break;
            };
            let entry = self.with_session(|s| {
                s.inflight()
                    .iter()
                    .find(|e| e.packet_id == packet_id)
                    .cloned()
            })?;
            if let Some(entry) = entry {
                if self.resend_entry(&entry)? {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Re-send one unfinished exchange (see [`Self::resend_inflight`]). `Ok(false)`: it was
    /// not sent but ended, a PUBLISH larger than the client's Maximum Packet Size on this
    /// connection (it may have lowered it since): discarded as if sent and acknowledged
    /// (MQTT 5 3.1.2-25), counted in `dropped_packet_too_large`.
    fn resend_entry(&mut self, e: &InflightEntry) -> Result<bool, CloseReason> {
        match e.stage {
            InflightStage::AwaitingPubComp => {
                self.send(Packet::PubRel(Ack::new(e.packet_id)))?;
                Ok(true)
            }
            InflightStage::AwaitingPubAck | InflightStage::AwaitingPubRec
                if !self.resend_fits(e) =>
            {
                let (packet_id, stage) = (e.packet_id, e.stage);
                let ended = self.end_delivery(|w| match stage {
                    InflightStage::AwaitingPubAck => w.on_puback(packet_id),
                    _ => w.on_pubrec_refused(packet_id),
                })?;
                if ended {
                    self.core.counters.dropped_packet_too_large();
                    tracing::debug!(
                        packet_id,
                        "in-flight message larger than the client's Maximum Packet Size: \
                         discarded instead of re-sent"
                    );
                }
                Ok(false)
            }
            InflightStage::AwaitingPubAck | InflightStage::AwaitingPubRec => {
                let header = Header {
                    qos: e.qos,
                    retain: e.retain,
                    subscription_id: e.subscription_id,
                    packet_id: Some(e.packet_id),
                    dup: true,
                    alias: None,
                };
                self.send_publish(&e.message, header)?;
                self.core
                    .counters
                    .message_out(e.qos, e.message.payload.len());
                Ok(true)
            }
        }
    }

    /// Whether the re-sent PUBLISH of `e` fits the client's Maximum Packet Size.
    fn resend_fits(&self, e: &InflightEntry) -> bool {
        let Some(max) = self.limits.max_packet_bytes() else {
            return true;
        };
        let version = self.version;
        let (topic, properties) = delivery_topic_and_properties(
            &e.message,
            e.subscription_id,
            None,
            version,
            Instant::now(),
        );
        publish_packet_len(
            topic,
            e.message.payload.len(),
            e.qos,
            properties.as_deref(),
            version,
        ) <= max
    }

    /// Move deliveries from the session queue into the output buffer: QoS 0 always, QoS 1/2
    /// while the in-flight window has room (order is kept: a QoS 1/2 message at the head waits
    /// for room rather than letting later messages overtake it). Each delivery is authorized
    /// for this client (read); refused ones are dropped silently, as ActiveMQ skips them. So
    /// are those larger than an MQTT 5 client's Maximum Packet Size and those past their
    /// Message Expiry Interval (counted).
    /// Stops at the output high-water mark.
    pub(super) fn pump(&mut self) -> Result<(), CloseReason> {
        // A draining cluster node starts no new QoS 1/2 exchange: what is queued is read
        // again from the log by the node that resumes the session (no duplicate).
        let window = if self.core.backplane().is_some_and(|b| b.is_draining()) {
            0
        } else {
            self.limits.inflight_window()
        };
        let (version, max_packet_bytes) = (self.version, self.limits.max_packet_bytes());
        loop {
            if self.pending_acks.len() >= HELD_ENTRIES_MAX {
                // Resumed when an entry leaves (the run loop pumps after every event).
                self.output.pump_wanted = true;
                return Ok(());
            }
            let mut denied = 0u64;
            let mut too_large = 0u64;
            let mut expired = 0u64;
            let now = Instant::now();
            let mut changes = Vec::new();
            let client_id = self.session.client_id().clone();
            let security = self.core.current_security();
            let (security, principal, authz) = (
                &*security,
                &self.identity.principal,
                &mut self.identity.authz,
            );
            let mut head_paged = false;
            let aliases = &mut self.limits.outbound_aliases;
            let (batch, pending_len): (Vec<(Header, QueuedMessage)>, usize) = self
                .session
                .with_state(self.token.generation, |s| {
                    let mut batch = Vec::new();
                    while batch.len() < PUMP_BATCH {
                        let head_needs_window = match s.pending().front() {
                            None => break,
                            // Its payload must be read back first (see `page_in.rs`).
                            Some(head) if head.paged => {
                                head_paged = true;
                                break;
                            }
                            Some(head) => head.qos != QoS::AtMostOnce,
                        };
                        if head_needs_window && s.inflight().len() >= window {
                            break;
                        }
                        let Some(item) = s.pending_mut().pop_front() else {
                            break;
                        };
                        let message = &item.message;
                        let live = !message.is_expired(now);
                        let alias = aliases.lookup(&message.topic);
                        let fits = max_packet_bytes.is_none_or(|max| {
                            let (topic, properties) = delivery_topic_and_properties(
                                message,
                                item.subscription_id,
                                alias,
                                version,
                                now,
                            );
                            publish_packet_len(
                                topic,
                                message.payload.len(),
                                item.qos,
                                properties.as_deref(),
                                version,
                            ) <= max
                        });
                        let allowed = live
                            && fits
                            && authz.allowed(security, principal, Action::Read, &message.topic);
                        if !allowed {
                            tracing::trace!(
                                target: "ferromq::delivery",
                                live,
                                fits,
                                seq = ?item.seq,
                                "dropped from the queue"
                            );
                            if !live {
                                expired += 1;
                            } else if !fits {
                                too_large += 1;
                            } else {
                                denied += 1;
                            }
                            if let Some(seq) = item.seq {
                                changes.push(Change::removed(&client_id, seq));
                            }
                            continue;
                        }
                        let packet_id = if head_needs_window {
                            s.inflight_mut().insert(&item)
                        } else {
                            None
                        };
                        if head_needs_window && packet_id.is_none() {
                            // No packet id free: keep the message at the head for later.
                            s.pending_mut().push_front(item);
                            break;
                        }
                        if let (Some(seq), Some(packet_id)) = (item.seq, packet_id) {
                            changes.push(Change::sent(&client_id, seq, packet_id));
                        }
                        if let Some(alias) = alias {
                            aliases.record(&item.message.topic, alias);
                        }
                        batch.push((Header::of(&item, packet_id, alias), item));
                    }
                    (batch, s.pending().len())
                })
                .ok_or(CloseReason::TakenOver)?;
            for _ in 0..denied {
                self.core.counters.dropped_not_authorized();
            }
            for _ in 0..too_large {
                self.core.counters.dropped_packet_too_large();
            }
            for _ in 0..expired {
                self.core.counters.dropped_expired();
            }
            let moved = batch.len();
            let (mut messages, mut bytes) = ([0u64; 3], [0u64; 3]);
            for (header, item) in &batch {
                messages[header.qos as usize] += 1;
                bytes[header.qos as usize] += item.message.payload.len() as u64;
            }
            self.deliver_batch(batch, changes)?;
            self.core.counters.batch_out(messages, bytes);
            if moved > 0 {
                self.core.queue_drained_some(pending_len);
            }
            if head_paged {
                // Resumed when the page is read (`finish_page_in` asks for a pump).
                self.output.pump_wanted = false;
                return self.start_page_in();
            }
            if self.output.out.len() >= OUT_HIGH_WATER_BYTES {
                self.output.pump_wanted = true;
                return Ok(());
            }
            if moved + ((denied + too_large + expired) as usize) < PUMP_BATCH {
                self.output.pump_wanted = false;
                return Ok(());
            }
        }
    }

    /// Write a batch taken from the queue, with the changes it caused. A batch holding a kept
    /// QoS 2 exchange waits until those changes are durable (see [`super::durable_acks`]),
    /// tried again while the store refuses them, and is not sent when they cannot be kept: the
    /// connection closes ([`UNSTORED_DELIVERY`]). A batch behind such a one waits its turn, so
    /// deliveries keep their order. Everything else goes straight to the output buffer.
    fn deliver_batch(
        &mut self,
        batch: Vec<(Header, QueuedMessage)>,
        changes: Vec<Change>,
    ) -> Result<(), CloseReason> {
        if !batch.is_empty() && self.output.out.capacity() == 0 {
            // Start a batch with room for many packets rather than growing from zero; only
            // when there is one: every new or woken connection pumps once, mostly for nothing,
            // and a 16 KiB block allocated and freed per connect splits the heap around the
            // connections' long-lived state (docs/scaling.md).
            self.output.out.reserve(super::OUT_BATCH_START_BYTES);
        }
        let gated = batch.iter().any(|(header, item)| {
            header.packet_id.is_some() && item.qos == QoS::ExactlyOnce && item.seq.is_some()
        });
        let traced = tracing::enabled!(target: "ferromq::delivery", tracing::Level::TRACE);
        for (header, item) in batch.iter().filter(|_| traced) {
            tracing::trace!(
                target: "ferromq::delivery",
                packet_id = ?header.packet_id,
                seq = ?item.seq,
                gated,
                held = !self.pending_acks.is_empty(),
                "delivered"
            );
        }
        // A commit to wait for (a QoS 2 batch whose changes are not durable yet), with the
        // changes to try again.
        let waiting = if gated {
            match self.core.durability().commit(changes.clone()) {
                Commit::Done(Ok(())) => None,
                committed => Some((committed, changes)),
            }
        } else {
            self.core.commit_background(changes);
            None
        };
        let Some((committed, changes)) = waiting else {
            if self.pending_acks.is_empty() {
                return self.write_batch(batch);
            }
            let held = self.encode_held(&batch)?;
            self.pending_acks.push(std::future::ready(Ready {
                deliveries: Some(held),
                ..Ready::default()
            }));
            return Ok(());
        };
        let held = self.encode_held(&batch)?;
        let unsent = packet_ids_of(&batch);
        let core = self.core.clone();
        let closing = self.pending_acks.closing();
        self.pending_acks.push(async move {
            match super::inbound::commit_retried(&core, &closing, committed, changes).await {
                Ok(()) => Ready {
                    deliveries: Some(held),
                    ..Ready::default()
                },
                Err(e) => {
                    if !closing.is_cancelled() {
                        tracing::warn!("{UNSTORED_DELIVERY}: {e}");
                    }
                    Ready {
                        close_unkept: !closing.is_cancelled(),
                        unsent,
                        ..Ready::default()
                    }
                }
            }
        });
        Ok(())
    }

    /// Encode a batch that waits (for the store, or behind one that does).
    fn encode_held(&self, batch: &[(Header, QueuedMessage)]) -> Result<BytesMut, CloseReason> {
        let mut held = BytesMut::new();
        for (header, item) in batch {
            encode_delivery(&item.message, *header, self.version, &mut held)?;
            // Counted as written now, though it waits for what is ahead of it (or the store).
            self.core
                .metrics
                .delivery_latency
                .record(DeliveredBy::Mqtt, item.message.stamp);
        }
        Ok(held)
    }

    /// Write a batch whose changes need no wait straight to the output buffer.
    fn write_batch(&mut self, batch: Vec<(Header, QueuedMessage)>) -> Result<(), CloseReason> {
        for (header, item) in batch {
            self.send_publish(&item.message, header)?;
            self.core
                .metrics
                .delivery_latency
                .record(DeliveredBy::Mqtt, item.message.stamp);
        }
        Ok(())
    }

    /// Put the deliveries `packet_ids` (in send order), which never left, back at the head of
    /// the session's queue, in their order.
    pub(super) fn unsend(&mut self, packet_ids: &[u16]) -> Result<(), CloseReason> {
        self.with_session(|s| {
            for packet_id in packet_ids.iter().rev() {
                if let Some(item) = s.inflight_mut().unsend(*packet_id) {
                    s.pending_mut().push_front(item);
                }
            }
        })
    }
}

/// The packet ids of a batch's QoS 1/2 deliveries, in send order.
fn packet_ids_of(batch: &[(Header, QueuedMessage)]) -> Vec<u16> {
    batch.iter().filter_map(|(h, _)| h.packet_id).collect()
}

/// Logged when the state of a QoS 2 delivery (its packet id, before the PUBLISH) could not
/// be stored: the store refused it until its session was no longer this broker's (a cluster
/// node that handed it over or was fenced; an ended session), or for
/// [`super::inbound::RELEASE_RETRY_FOR`]. The batch is not sent, its messages go back to the
/// head of the queue, and the connection closes (MQTT 5: DISCONNECT 0x9C); the resumed
/// session delivers them. A PUBLISH sent without its state would open an exchange that a
/// resume (on another node, or after a crash) does not know, which may give that packet id to
/// another message, which the client must take as a re-send and drop (MQTT 5 4.3.3): a loss
/// the cluster's chaos runs showed (a node cut from its NATS server sent such PUBLISHes; the
/// node that took the sessions reused their packet ids). While the store refuses, the
/// subscriber's deliveries wait (it stays connected): a pause, not a loss.
const UNSTORED_DELIVERY: &str =
    "QoS 2 delivery state not stored; closing without sending, the resumed session delivers it";

/// What one delivery's PUBLISH says besides the message itself.
#[derive(Debug, Clone, Copy)]
struct Header {
    qos: QoS,
    retain: bool,
    subscription_id: Option<NonZeroU32>,
    packet_id: Option<u16>,
    dup: bool,
    /// The topic alias it uses (see `outbound_aliases.rs`).
    alias: Option<AliasUse>,
}

impl Header {
    /// A first delivery of `item` with `packet_id` (QoS 1/2) and `alias`.
    fn of(item: &QueuedMessage, packet_id: Option<u16>, alias: Option<AliasUse>) -> Header {
        Header {
            qos: item.qos,
            retain: item.retain,
            subscription_id: item.subscription_id,
            packet_id,
            dup: false,
            alias,
        }
    }
}

/// Encode a PUBLISH of `message` straight from its shared topic and payload (no packet value,
/// no topic copy: this runs once per delivered message).
fn encode_delivery(
    message: &Message,
    header: Header,
    version: ProtocolVersion,
    out: &mut BytesMut,
) -> Result<(), CloseReason> {
    // Properties (and the clock) only for a v5 client getting a v5 message, a subscription
    // identifier or a topic alias (this runs per delivery).
    let (topic, properties) = match (&message.v5, header.subscription_id, header.alias) {
        (None, None, None) => (&*message.topic, None),
        _ if version == ProtocolVersion::V5 => delivery_topic_and_properties(
            message,
            header.subscription_id,
            header.alias,
            version,
            Instant::now(),
        ),
        _ => (&*message.topic, None),
    };
    encode_publish(
        topic,
        &message.payload,
        header.qos,
        header.retain,
        header.dup,
        header.packet_id,
        properties.as_deref(),
        version,
        out,
    )
    .map_err(|e| CloseReason::Internal(format!("cannot encode PUBLISH to {}: {e}", message.topic)))
}

/// The topic and properties of a PUBLISH of `message` to a `version` client at `now` through
/// the subscription `subscription_id` that uses `alias`: the alias goes into the properties,
/// and the topic is empty once the alias is set.
fn delivery_topic_and_properties(
    message: &Message,
    subscription_id: Option<NonZeroU32>,
    alias: Option<AliasUse>,
    version: ProtocolVersion,
    now: Instant,
) -> (&str, Option<Cow<'_, Properties>>) {
    let properties = forwarded_properties(message, subscription_id, version, now);
    let Some(alias) = alias else {
        return (&message.topic, properties);
    };
    let mut properties = properties.map(Cow::into_owned).unwrap_or_default();
    properties.topic_alias = Some(alias.alias);
    let topic = if alias.sets_topic {
        &*message.topic
    } else {
        ""
    };
    (topic, Some(Cow::Owned(properties)))
}

/// The PUBLISH properties `message` is delivered with to a `version` client at `now`: the
/// publisher's, with the Message Expiry Interval counted down, and the Subscription Identifier
/// of the subscription it was routed through (MQTT 5 3.3.4-3; a copy only for these two).
/// MQTT 3 clients get none.
fn forwarded_properties(
    message: &Message,
    subscription_id: Option<NonZeroU32>,
    version: ProtocolVersion,
    now: Instant,
) -> Option<Cow<'_, Properties>> {
    if version != ProtocolVersion::V5 {
        return None;
    }
    let v5 = message.v5.as_deref();
    let expiry = v5.and_then(|v5| v5.remaining_expiry_secs(now));
    match (v5, expiry, subscription_id) {
        (None, _, None) => None,
        (Some(v5), None, None) => Some(Cow::Borrowed(&v5.properties)),
        (v5, expiry, id) => {
            let mut properties = v5.map(|v5| v5.properties.clone()).unwrap_or_default();
            if expiry.is_some() {
                properties.message_expiry_interval = expiry;
            }
            properties.subscription_identifiers = id.map(NonZeroU32::get).into_iter().collect();
            Some(Cow::Owned(properties))
        }
    }
}
