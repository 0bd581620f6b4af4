//! SUBSCRIBE / UNSUBSCRIBE on topics, the delivery pump (session queues -> MESSAGE frames,
//! within each subscription's prefetch window), and ACK / NACK.
//!
//! Each topic subscription is an MQTT subscription held by a session of its own (see the
//! module docs of `stomp`). Ack modes (STOMP 1.2 "SUBSCRIBE"): `auto` (nothing to ack),
//! `client` (an ACK acknowledges that message and every earlier one of its subscription),
//! `client-individual` (only that message). Unacknowledged messages are at most the
//! subscription's `activemq.prefetchSize`; on a (non-durable) topic subscription they end with
//! the connection, as a JMS topic consumer's do.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use tokio::task::AbortHandle;

use super::destination::{
    is_wildcard, mqtt_temp_topic_name, stomp_destination_of, topic_to_mqtt, Destination,
};
use super::durable_cluster::{kept_record, ClaimFor};
use super::headers;
use super::mapping::{message_frame, Delivery};
use super::selector::topic_selects;
use super::{Close, StompConn, OUT_HIGH_WATER_BYTES};
use crate::broker::durability::{now_ms, Change};
use crate::broker::message::min_qos;
use crate::broker::runtime::TopicRefusal;
use crate::broker::selector::Selector;
use crate::broker::session::queue::QueuedMessage;
use crate::broker::session::registry::{AttachError, Attached, SessionLifetime};
use crate::broker::session::{AttachToken, Session, SubscriptionOptions};
use crate::config::DestinationKind;
use crate::metrics::latency::DeliveredBy;
use crate::protocol::stomp::{Command, Frame, Version};
use crate::protocol::QoS;
use crate::security::Action;

/// ActiveMQ's default prefetch of a STOMP topic subscription (`Short.MAX_VALUE - 1`).
pub(super) const DEFAULT_TOPIC_PREFETCH: usize = 32_766;
/// Deliveries moved from one session queue per lock acquisition.
const PUMP_BATCH: usize = 64;

/// How a subscription's messages are acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AckMode {
    Auto,
    Client,
    ClientIndividual,
}

/// A message sent and not acknowledged yet.
pub(super) struct Unacked {
    pub(super) message_id: u64,
    item: QueuedMessage,
}

/// One STOMP subscription.
pub(super) struct Sub {
    /// Names the subscription inside this connection (its page-in, its session's name).
    pub(super) key: u64,
    /// The client's `id` header.
    id: String,
    filter: String,
    ack: AckMode,
    prefetch: usize,
    pub(super) session: Arc<Session>,
    pub(super) token: AttachToken,
    /// The task passing this session's wake-ups on to the connection's.
    forwarder: AbortHandle,
    pub(super) unacked: VecDeque<Unacked>,
    /// A durable subscription (`activemq.subscriptionName`): its session outlives the
    /// connection, and what is unacknowledged at the end is delivered again.
    pub(super) durable: bool,
    /// The `selector` header: only messages it selects are sent (see `selector.rs`).
    selector: Option<Box<Selector>>,
    /// How many messages at the head of the session's queue were delivered to an earlier
    /// consumer of this durable subscription and not acknowledged: sent with
    /// `redelivered:true` (JMS redelivery).
    redeliver: usize,
    /// Nothing is sent before the SUBSCRIBE's RECEIPT, which waits (a durable one in a
    /// cluster, see `durable_cluster.rs`).
    pub(super) awaits_receipt: bool,
}

/// The client id of the persistent session of durable subscription `name` of STOMP client
/// `client_id`: U+0000 first (no MQTT client id can be it), lengths so no two pairs collide.
pub(super) fn durable_session_id(client_id: &str, name: &str) -> String {
    crate::broker::session::kind::stomp_durable_id(client_id, name)
}

/// A topic SUBSCRIBE checked and named, before its session is attached.
pub(super) struct SubscribeRequest {
    key: u64,
    id: String,
    filter: String,
    ack: AckMode,
    prefetch: usize,
    durable_name: Option<String>,
    selector: Option<Box<Selector>>,
}

/// Resolves when the connection is kicked; never without its signals.
async fn kicked(signals: Option<&crate::broker::session::signals::AttachSignals>) {
    match signals {
        Some(signals) => signals.kicked().await,
        None => std::future::pending().await,
    }
}

/// ActiveMQ's default prefetch of a durable STOMP topic subscription.
pub(super) const DEFAULT_DURABLE_TOPIC_PREFETCH: usize = 100;

impl StompConn {
    pub(super) fn on_subscribe(&mut self, frame: &Frame) -> Result<(), Close> {
        let Some(header) = frame.header("destination") else {
            return Err(Close::error(
                "SUBSCRIBE received without a Destination specified!",
                Some(frame),
            ));
        };
        let dest =
            Destination::parse(header).map_err(|e| Close::error(e.to_string(), Some(frame)))?;
        let id = match (frame.header("id"), self.version) {
            (Some(id), _) => id.to_owned(),
            // STOMP 1.0 makes `id` optional: the destination names the subscription.
            (None, Version::V1_0) => header.to_owned(),
            (None, _) => {
                return Err(Close::error(
                    "SUBSCRIBE received without a subscription id!",
                    Some(frame),
                ))
            }
        };
        if self.subs.iter().any(|s| s.id == id) || self.has_queue_sub(&id) {
            return Err(Close::error(
                format!("Duplicate subscription id: {id}"),
                Some(frame),
            ));
        }
        // ActiveMQ's reading: anything but `client` / `client-individual` is `auto`.
        let ack = match super::options::ack_mode_name(frame.header("ack")) {
            "client" => AckMode::Client,
            "client-individual" => AckMode::ClientIndividual,
            _ => AckMode::Auto,
        };
        headers::check_subscribe(frame)?;
        let durable_name = headers::subscription_name(frame);
        // 0 (a pull consumer, JMS only) is taken as 1: a STOMP consumer cannot pull.
        let prefetch = match super::options::prefetch_size(frame.header("activemq.prefetchSize")) {
            None if durable_name.is_some() => DEFAULT_DURABLE_TOPIC_PREFETCH,
            None => DEFAULT_TOPIC_PREFETCH,
            Some(n) => n.max(1),
        };
        if super::browse::asks_to_browse(frame) {
            return self.queue_browse(&dest, frame, id, ack);
        }
        if dest.is_queue() {
            return self.queue_subscribe(&dest, frame, id, ack);
        }
        let selector = super::selector::of_subscribe(frame)?;
        let filter = match &dest {
            Destination::Topic(name) => {
                let filter =
                    topic_to_mqtt(name).map_err(|e| Close::error(e.to_string(), Some(frame)))?;
                self.authorize_read(&filter, name, frame)?;
                filter
            }
            Destination::RemoteTempTopic(_) => {
                return Err(Close::error(
                    format!("Cannot subscribe to remote temporary destination: {dest}"),
                    Some(frame),
                ))
            }
            _ => self.temp_topic(&dest, Action::Read, frame)?,
        };
        self.cluster_filter_fits(&filter, header.len(), frame)?;
        let key = self.next_sub_key;
        self.next_sub_key += 1;
        let request = SubscribeRequest {
            key,
            id,
            filter,
            ack,
            prefetch,
            durable_name: durable_name.map(str::to_owned),
            selector,
        };
        let attached = match durable_name {
            None => {
                // U+0000 first: no MQTT client id can be this (MQTT 1.5.4-2).
                let session_client_id = format!("\u{0}stomp:{}:{key}", self.tag);
                self.core.attach(
                    &session_client_id,
                    true,
                    SessionLifetime::EndsAtDisconnect,
                    false,
                    None,
                    true,
                )
            }
            Some(durable_name) => {
                let Some(client_id) = self.client_id.clone() else {
                    return Err(Close::error(
                        "a durable subscription (activemq.subscriptionName) needs the \
                         client-id header in CONNECT",
                        Some(frame),
                    ));
                };
                let session_id = durable_session_id(&client_id, durable_name);
                if self.core.backplane().is_some() {
                    self.cluster_durable_fits(&request.filter, &client_id, durable_name, frame)?;
                    // Claimed from whichever node holds it first (`durable_cluster.rs`).
                    return self.claim_durable(session_id, frame, ClaimFor::Subscribe(request));
                }
                self.attach_durable(&session_id)
            }
        };
        self.finish_subscribe(request, attached, frame)
    }

    /// The rest of a SUBSCRIBE once its session is attached (or refused, `Err`): the durable
    /// subscription's topic and redeliveries, the subscription itself, the RECEIPT.
    /// Attach this connection to the kept session of a durable subscription: never clean,
    /// kept without expiry, never stolen from a consumer that holds it (ActiveMQ refuses a
    /// second consumer of a durable subscription), the last flag as every STOMP session has it.
    pub(super) fn attach_durable(&self, session_id: &str) -> Result<Attached, AttachError> {
        self.core.attach(
            session_id,
            false,
            SessionLifetime::Kept { expiry_secs: None },
            false,
            None,
            true,
        )
    }

    pub(super) fn finish_subscribe(
        &mut self,
        request: SubscribeRequest,
        attached: Result<Attached, AttachError>,
        frame: &Frame,
    ) -> Result<(), Close> {
        let SubscribeRequest {
            key,
            id,
            filter,
            ack,
            prefetch,
            durable_name,
            selector,
        } = request;
        let durable_name = durable_name.as_deref();
        let attached = attached.map_err(|e| {
            let message = match e {
                AttachError::ClientIdInUse => format!(
                    "Durable consumer is in use for client: {} and subscriptionName: {}",
                    self.client_id.as_deref().unwrap_or_default(),
                    durable_name.unwrap_or_default()
                ),
                AttachError::Refused(why) => format!("the subscription's session: {why}"),
            };
            Close::error(message, Some(frame))
        })?;
        // `activemq.noLocal:true`: nothing this connection sends (MQTT No Local).
        let no_local = frame.header("activemq.noLocal") == Some("true");
        let options = SubscriptionOptions::from_subscribe(
            &crate::protocol::SubscriptionOptions {
                qos: QoS::ExactlyOnce,
                no_local,
                retain_as_published: false,
                retain_handling: crate::protocol::RetainHandling::DoNotSend,
            },
            None,
        );
        if durable_name.is_some() {
            // A durable subscription resumed on another topic starts over on the new one, as
            // ActiveMQ replaces a durable subscription whose destination changed.
            let stale: Vec<String> = attached
                .session
                .with_state(attached.token.generation, |s| {
                    s.subscriptions()
                        .keys()
                        .filter(|f| **f != filter)
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            if !stale.is_empty() {
                for old in &stale {
                    self.core
                        .unsubscribe(&attached.session, attached.token.generation, old);
                }
                let dropped: Vec<Change> = attached
                    .session
                    .with_state(attached.token.generation, |s| {
                        let mut seqs = Vec::new();
                        while let Some(item) = s.pending_mut().pop_front() {
                            seqs.extend(item.seq);
                        }
                        seqs.extend(
                            std::mem::take(s.inflight_mut())
                                .iter()
                                .filter_map(|e| e.seq),
                        );
                        seqs
                    })
                    .unwrap_or_default()
                    .into_iter()
                    .map(|seq| Change::removed(attached.session.client_id(), seq))
                    .collect();
                self.core.commit_background(dropped);
            }
        }
        let redeliver = if durable_name.is_some() {
            requeue_unacknowledged(&attached.session, attached.token.generation)
        } else {
            0
        };
        if let Some(backplane) = self.core.backplane() {
            let existed = attached
                .session
                .with_state_unchecked(|s| s.subscriptions().contains_key(&filter));
            if !existed {
                backplane.subscribing(attached.session.id(), &filter);
            }
        }
        if !self.core.subscribe(
            &attached.session,
            attached.token.generation,
            &filter,
            options,
        ) {
            return Err(Close::error("subscription not created", Some(frame)));
        }
        let (signals, conn_wake) = (attached.token.signals.clone(), self.wake.clone());
        // A durable subscription's session can be taken from this connection (another
        // node's claim, the store's quorum lost, a drain): the connection hears of it
        // (`durable_kicked`).
        let watch_kick = durable_name.is_some();
        let forwarder = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = signals.woken() => conn_wake.notify_one(),
                    _ = kicked(watch_kick.then_some(&*signals)) => {
                        conn_wake.notify_one();
                        return;
                    }
                }
            }
        })
        .abort_handle();
        // ActiveMQ replays a topic's retained message only to retroactive consumers
        // (`activemq.retroactive:true`, its RetainedMessageSubscriptionRecoveryPolicy).
        if frame.header("activemq.retroactive") == Some("true") {
            for message in self.core.retained_matching(&filter) {
                let qos = min_qos(message.qos, options.qos);
                self.core
                    .deliver_retained(&attached.session, message, qos, None);
            }
        }
        let kept = self
            .core
            .backplane()
            .filter(|_| durable_name.is_some())
            .map(|backplane| {
                (
                    backplane.interest_ready(vec![filter.clone()]),
                    kept_record(&self.core, &attached.session, attached.token.generation),
                )
            });
        self.subs.push(Sub {
            key,
            id,
            filter,
            ack,
            prefetch,
            session: attached.session,
            token: attached.token,
            forwarder,
            unacked: VecDeque::new(),
            durable: durable_name.is_some(),
            selector,
            redeliver,
            awaits_receipt: kept.is_some(),
        });
        self.out.pump_wanted = true;
        match kept {
            // In a cluster the RECEIPT says that the subscription is kept (see
            // `durable_cluster.rs`).
            Some((ready, kept)) => self.receipt_when_kept(key, ready, kept, frame),
            None => self.receipt(frame),
        }
        Ok(())
    }

    /// Read authorization of a subscription to `filter` (`name`: ActiveMQ form).
    fn authorize_read(&mut self, filter: &str, name: &str, frame: &Frame) -> Result<(), Close> {
        let security = self.core.security();
        let permitted = if is_wildcard(filter) {
            if self
                .authz
                .allowed(&security, &self.principal, Action::Read, filter)
            {
                Ok(())
            } else {
                Err(TopicRefusal::NotAuthorized)
            }
        } else {
            self.core.use_topic(
                &mut self.authz,
                &security,
                &self.principal,
                Action::Read,
                filter,
            )
        };
        match permitted {
            Ok(()) => Ok(()),
            Err(TopicRefusal::NotAuthorized) => Err(Close::error(
                format!(
                    "User {} is not authorized to read from: topic://{name}",
                    self.principal.user
                ),
                Some(frame),
            )),
            Err(TopicRefusal::NotCreated) => Err(Close::error(
                format!(
                    "User {} is not authorized to create: topic://{name}",
                    self.principal.user
                ),
                Some(frame),
            )),
        }
    }

    pub(super) fn on_unsubscribe(&mut self, frame: &Frame) -> Result<(), Close> {
        let id = match (frame.header("id"), frame.header("destination")) {
            (Some(id), _) => id,
            (None, Some(dest)) if self.version == Version::V1_0 => dest,
            _ => {
                return Err(Close::error(
                    "UNSUBSCRIBE received without a subscription id!",
                    Some(frame),
                ))
            }
        };
        let Some(at) = self.subs.iter().position(|s| s.id == id) else {
            if let Some(name) = headers::subscription_name(frame) {
                // ActiveMQ needs the `id` even here, though it names no SUBSCRIBE.
                return self.remove_offline_durable(name, frame);
            }
            if self.queue_unsubscribe(id) {
                self.receipt(frame);
                return Ok(());
            }
            return Err(Close::error(
                format!("No subscription matched: {id}"),
                Some(frame),
            ));
        };
        let sub = self.subs.remove(at);
        self.end_transacted_acks(|n| sub.unacked.iter().any(|u| u.message_id == n));
        let durable_id = match (headers::subscription_name(frame), &self.client_id) {
            (Some(name), Some(client_id)) => Some(durable_session_id(client_id, name)),
            (Some(_), None) => {
                return Err(Close::error(
                    "removing a durable subscription needs the client-id header in CONNECT",
                    Some(frame),
                ))
            }
            (None, _) => None,
        };
        self.end_sub(sub);
        if let Some(durable_id) = durable_id {
            // ActiveMQ's RemoveSubscriptionInfo: the durable subscription and what it kept go.
            if let Some(Ok(session)) = self.core.registry.remove_offline(&durable_id) {
                if self.core.backplane().is_some() {
                    // The RECEIPT once no node can resume it (its record deleted).
                    let ended = self.core.forget_committing(&session);
                    self.receipt_after(ended, frame, "the durable subscription was not removed");
                    return Ok(());
                }
                self.core.forget(&session);
            }
        }
        self.receipt(frame);
        Ok(())
    }

    /// UNSUBSCRIBE (with an `id`, as ActiveMQ requires) of a durable subscription this
    /// connection does not hold (ActiveMQ's `RemoveSubscriptionInfo`, no SUBSCRIBE needed): the offline subscription of this
    /// connection's client-id named `name` and what it kept go, without being resumed.
    /// ActiveMQ's errors when there is none, or when another connection holds it.
    fn remove_offline_durable(&mut self, name: &str, frame: &Frame) -> Result<(), Close> {
        let Some(client_id) = self.client_id.clone() else {
            return Err(Close::error(
                "removing a durable subscription needs the client-id header in CONNECT",
                Some(frame),
            ));
        };
        let session_id = durable_session_id(&client_id, name);
        if self.core.backplane().is_some() {
            // Another node may hold it: claimed first (`durable_cluster.rs`).
            return self.claim_durable(session_id, frame, ClaimFor::Remove);
        }
        self.remove_local_durable(&session_id, frame)
    }

    /// The removal of durable subscription `session_id` held (offline) by this node, as
    /// [`Self::remove_offline_durable`] describes it.
    pub(super) fn remove_local_durable(
        &mut self,
        session_id: &str,
        frame: &Frame,
    ) -> Result<(), Close> {
        match self.core.registry.remove_offline(session_id) {
            Some(Ok(session)) => {
                if self.core.backplane().is_some() {
                    let ended = self.core.forget_committing(&session);
                    self.receipt_after(ended, frame, "the durable subscription was not removed");
                    return Ok(());
                }
                self.core.forget(&session);
                self.receipt(frame);
                Ok(())
            }
            Some(Err(_)) => Err(Close::error("Durable consumer is in use", Some(frame))),
            None => {
                let (client_id, name) = durable_parts(session_id).unwrap_or_default();
                Err(Close::error(
                    format!(
                        "No durable subscription exists for clientID: {client_id} and \
                         subscriptionName: {name}"
                    ),
                    Some(frame),
                ))
            }
        }
    }

    /// End a subscription on this connection: its wake-up forwarder stops; a non-durable one's
    /// tree entry and session go; a durable one's session goes offline with what it has not
    /// had acknowledged (kept in the store all along) recorded as in flight, ahead of its
    /// queue: the next consumer gets those first, with `redelivered:true`.
    fn end_sub(&self, mut sub: Sub) {
        sub.forwarder.abort();
        if sub.durable {
            let unacked = std::mem::take(&mut sub.unacked);
            // Not redelivered yet by this consumer: they stay first in the queue.
            let not_redelivered = sub.redeliver;
            // In a cluster the session's record lists what is in flight: a resume on any
            // node sends those again first, with `redelivered:true`.
            let mut sent = Vec::new();
            sub.session.with_state(sub.token.generation, |s| {
                let mut no_room = Vec::new();
                for u in unacked {
                    if !no_room.is_empty() {
                        no_room.push(u.item);
                        continue;
                    }
                    match s.inflight_mut().insert(&u.item) {
                        Some(packet_id) => sent.extend(u.item.seq.map(|seq| (seq, packet_id))),
                        None => no_room.push(u.item),
                    }
                }
                // Beyond the 65535 ids the in-flight window can number (a prefetch that
                // large): back at the head of the queue, in order, without the flag.
                for item in no_room.into_iter().rev() {
                    s.pending_mut().push_front(item);
                }
                // Those never sent again by this consumer are still redeliveries.
                let mut again = Vec::with_capacity(not_redelivered.min(64));
                for _ in 0..not_redelivered {
                    match s.pending_mut().pop_front() {
                        Some(item) => again.push(item),
                        None => break,
                    }
                }
                let mut refused = Vec::new();
                for item in again {
                    if !refused.is_empty() {
                        refused.push(item);
                        continue;
                    }
                    match s.inflight_mut().insert(&item) {
                        Some(packet_id) => sent.extend(item.seq.map(|seq| (seq, packet_id))),
                        None => refused.push(item),
                    }
                }
                for item in refused.into_iter().rev() {
                    s.pending_mut().push_front(item);
                }
            });
            if self.core.backplane().is_some() && !sent.is_empty() {
                // Before the detach below writes the record (the engine notes them at once).
                let client_id = sub.session.client_id().clone();
                self.core.commit_background(
                    sent.into_iter()
                        .map(|(seq, packet_id)| Change::sent(&client_id, seq, packet_id))
                        .collect(),
                );
            }
        } else {
            self.core
                .unsubscribe(&sub.session, sub.token.generation, &sub.filter);
        }
        self.core.detach(&sub.session, sub.token.generation);
    }

    /// The connection closed: every subscription ends (unacknowledged topic messages with it).
    pub(super) fn release_subscriptions(&mut self) {
        for sub in std::mem::take(&mut self.subs) {
            self.end_sub(sub);
        }
        self.release_queues();
    }

    /// Move deliveries from the subscriptions' queues into MESSAGE frames, within each
    /// one's prefetch window, until the output high-water mark. Deliveries are authorized for
    /// this client (read) and skipped when expired, as for MQTT, or not selected by the
    /// subscription's selector.
    pub(super) fn pump(&mut self) -> Result<(), Close> {
        self.out.pump_wanted = false;
        let now = Instant::now();
        let mut wall_ms = None;
        let security = self.core.current_security();
        for index in 0..self.subs.len() {
            if self.subs[index].awaits_receipt {
                continue;
            }
            loop {
                if self.out.bytes >= OUT_HIGH_WATER_BYTES {
                    self.out.pump_wanted = true;
                    return Ok(());
                }
                let sub = &self.subs[index];
                let room = match sub.ack {
                    AckMode::Auto => PUMP_BATCH,
                    _ => sub
                        .prefetch
                        .saturating_sub(sub.unacked.len())
                        .min(PUMP_BATCH),
                };
                if room == 0 {
                    break;
                }
                let mut head_paged = false;
                let Some((batch, pending_len)) =
                    sub.session.with_state(sub.token.generation, |s| {
                        let mut batch = Vec::with_capacity(room.min(8));
                        while batch.len() < room {
                            if s.pending().front().is_some_and(|head| head.paged) {
                                // Its payload must be read back first (see `page_in.rs`).
                                head_paged = true;
                                break;
                            }
                            match s.pending_mut().pop_front() {
                                Some(item) => batch.push(item),
                                None => break,
                            }
                        }
                        (batch, s.pending().len())
                    })
                else {
                    break;
                };
                if head_paged {
                    self.start_page_in(index);
                }
                if batch.is_empty() {
                    break;
                }
                let taken = batch.len();
                let mut changes = Vec::new();
                let client_id = self.subs[index].session.client_id().clone();
                for item in batch {
                    let sub = &mut self.subs[index];
                    let redelivered = sub.redeliver > 0;
                    sub.redeliver = sub.redeliver.saturating_sub(1);
                    let allowed = !item.message.is_expired(now)
                        && self.authz.allowed(
                            &security,
                            &self.principal,
                            Action::Read,
                            &item.message.topic,
                        )
                        && self.subs[index].selector.as_deref().is_none_or(|selector| {
                            // Not selected: acknowledged here, never in flight.
                            topic_selects(
                                selector,
                                &item.message,
                                &self.session_name,
                                || format!("{}:{}", self.session_name, self.next_message_id + 1),
                                *wall_ms.get_or_insert_with(now_ms),
                            )
                        });
                    if !allowed {
                        if let Some(seq) = item.seq {
                            changes.push(Change::removed(&client_id, seq));
                        }
                        continue;
                    }
                    self.next_message_id += 1;
                    let n = self.next_message_id;
                    let message_id = format!("{}:{n}", self.session_name);
                    let sub = &self.subs[index];
                    let ack_header = (sub.ack != AckMode::Auto && self.version == Version::V1_2)
                        .then_some(message_id.as_str());
                    let frame = message_frame(
                        &item.message,
                        &Delivery {
                            session: &self.session_name,
                            subscription: &sub.id,
                            message_id: &message_id,
                            ack: ack_header,
                            qos: item.qos,
                            redelivered,
                        },
                        now,
                    );
                    self.send(&frame);
                    self.core
                        .counters
                        .message_out(item.qos, item.message.payload.len());
                    if !redelivered {
                        self.core
                            .metrics
                            .delivery_latency
                            .record(DeliveredBy::Stomp, item.message.stamp);
                    }
                    let sub = &mut self.subs[index];
                    if sub.ack == AckMode::Auto {
                        if let Some(seq) = item.seq {
                            changes.push(Change::removed(&client_id, seq));
                        }
                    } else {
                        sub.unacked.push_back(Unacked {
                            message_id: n,
                            item,
                        });
                    }
                }
                self.core.commit_background(changes);
                self.core.queue_drained_some(pending_len);
                if taken < room {
                    break;
                }
            }
        }
        self.pump_queues();
        Ok(())
    }

    /// ACK or NACK of a delivered message: by `id` (1.2) or `message-id` (1.0, 1.1, with
    /// `subscription`). A `client` mode ACK acknowledges every earlier message of the
    /// subscription too; a NACK is for that message only (ActiveMQ's poison ack). NACK does
    /// what ActiveMQ 5.17 does on a topic: a non-durable subscription's message is dropped
    /// (`TopicSubscription`: acknowledged), a durable one's goes to the dead-letter queue when
    /// persistent (`PrefetchSubscription.sendToDLQ`, see [`StompConn::dead_letter_nacked`]).
    pub(super) fn on_ack(&mut self, frame: &Frame) -> Result<(), Close> {
        let Some(id) = self.ack_id(frame) else {
            return Err(Close::error(
                format!("{} received without a message id", frame.command.as_str()),
                Some(frame),
            ));
        };
        let number = self.acked_number(id);
        let found = number.and_then(|n| {
            self.subs.iter().enumerate().find_map(|(i, s)| {
                s.unacked
                    .iter()
                    .position(|u| u.message_id == n)
                    .map(|at| (i, at))
            })
        });
        let Some((index, at)) = found else {
            if let Some(n) = number {
                if self.queue_ack(n, frame)? {
                    return Ok(());
                }
                if self.staging().is_some_and(|s| s.acknowledged(n)) {
                    // An earlier (cumulative) ACK of the same transaction covered it.
                    return Ok(());
                }
                if self.applying_transaction() && self.ack_of_ended_subscription(n) {
                    // Its subscription was UNSUBSCRIBEd after this ACK: nothing more to do.
                    return Ok(());
                }
                if self.browsed(n) {
                    if frame.command == Command::Nack {
                        return Err(Close::error(
                            "Cannot Nack a message on a Queue Browser Subscription.",
                            Some(frame),
                        ));
                    }
                    // A browser takes nothing: its ACK changes nothing (ActiveMQ).
                    if !self.applying_transaction() {
                        self.receipt(frame);
                    }
                    return Ok(());
                }
            }
            return Err(Close::error(
                format!(
                    "Unexpected {} received for message-id [{id}]",
                    frame.command.as_str()
                ),
                Some(frame),
            ));
        };
        let nack = frame.command == Command::Nack;
        let sub = &mut self.subs[index];
        let key = sub.key;
        let done: Vec<Unacked> = match sub.ack {
            AckMode::Client if !nack => sub.unacked.drain(..=at).collect(),
            _ => sub.unacked.remove(at).into_iter().collect(),
        };
        let client_id = sub.session.client_id().clone();
        if nack && sub.durable {
            if let Some(u) = done.into_iter().next() {
                if let Some(to) = dead_letter_target(&self.core, &u.item.message, &client_id) {
                    self.out.pump_wanted = true;
                    return self.dead_letter_nacked(u.item, client_id, &to, frame);
                }
                // The strategy keeps nothing of it (discarding, or not persistent without
                // processNonPersistent): the subscription's copy is dropped.
                let changes: Vec<Change> = u
                    .item
                    .seq
                    .map(|seq| Change::removed(&client_id, seq))
                    .into_iter()
                    .collect();
                self.core.commit_background(changes);
            }
            self.out.pump_wanted = true;
            self.receipt(frame);
            return Ok(());
        }
        let changes: Vec<Change> = done
            .iter()
            .filter_map(|u| u.item.seq.map(|seq| Change::removed(&client_id, seq)))
            .collect();
        if let Some(staging) = self.staging() {
            // Kept with the rest of its transaction (NACK is never transacted).
            staging.topic_acked(key, done, changes);
            return Ok(());
        }
        self.core.commit_background(changes);
        self.out.pump_wanted = true;
        self.receipt(frame);
        Ok(())
    }
}

impl StompConn {
    /// The message id an ACK or NACK names (`id` in STOMP 1.2, `message-id` before).
    pub(super) fn ack_id<'f>(&self, frame: &'f Frame) -> Option<&'f str> {
        match self.version {
            Version::V1_2 => frame.header("id").or_else(|| frame.header("message-id")),
            _ => frame.header("message-id").or_else(|| frame.header("id")),
        }
    }

    /// The ack mode of the subscription that delivered message number `n` and holds it
    /// unacknowledged (a topic's or a queue's).
    pub(super) fn ack_mode_of(&self, n: u64) -> Option<AckMode> {
        self.subs
            .iter()
            .find(|s| s.unacked.iter().any(|u| u.message_id == n))
            .map(|s| s.ack)
            .or_else(|| self.queue_ack_mode(n))
    }

    /// The number of this connection's message `id` (`<session>:<number>`), if it is one.
    pub(super) fn acked_number(&self, id: &str) -> Option<u64> {
        id.rsplit_once(':')
            .filter(|(prefix, _)| *prefix == &*self.session_name)
            .and_then(|(_, n)| n.parse::<u64>().ok())
    }
}

/// What earlier consumers of durable subscription `session` were sent and did not
/// acknowledge (its in-flight record, see `StompConn::end_sub`) goes back to the head of its
/// queue, in order; returns how many (they are redeliveries).
fn requeue_unacknowledged(session: &Session, generation: u64) -> usize {
    session
        .with_state(generation, |s| {
            let inflight = std::mem::take(s.inflight_mut());
            let items: Vec<QueuedMessage> = inflight
                .iter()
                .map(|e| QueuedMessage {
                    message: e.message.clone(),
                    qos: e.qos,
                    retain: e.retain,
                    subscription_id: e.subscription_id,
                    seq: e.seq,
                    paged: false,
                    shared_group: e.shared_group.clone(),
                })
                .collect();
            let count = items.len();
            for item in items.into_iter().rev() {
                s.pending_mut().push_front(item);
            }
            count
        })
        .unwrap_or(0)
}

impl StompConn {
    /// A persistent message NACKed on a durable subscription goes to ActiveMQ's shared
    /// dead-letter queue `ActiveMQ.DLQ` (the queue engine), with `original-destination` and no
    /// expiry, as ActiveMQ's `RegionBroker.sendToDeadLetterQueue` makes it (no
    /// `dlqDeliveryFailureCause`: a STOMP NACK carries no cause). The subscription's copy is
    /// removed once the dead letter is kept, and the NACK's RECEIPT leaves then. Refused by the
    /// queue engine (memory or store full): ERROR, and the copy stays with the subscription.
    fn dead_letter_nacked(
        &mut self,
        item: QueuedMessage,
        client_id: Arc<str>,
        to: &str,
        frame: &Frame,
    ) -> Result<(), Close> {
        self.cluster_dead_letter_fits(to, frame)?;
        let original = stomp_destination_of(&item.message.topic, &self.session_name);
        let copy = dead_letter_copy(&item.message, &original, to);
        let commit = match self.core.queues.send(to, copy) {
            Ok(commit) => commit,
            Err(e) => {
                return Err(Close::error(
                    format!("the NACKed message could not be dead-lettered: {e}"),
                    Some(frame),
                ))
            }
        };
        tracing::debug!(%original, dead_letter_queue = to, "NACKed message dead-lettered");
        let core = self.core.clone();
        let removed: Vec<Change> = item
            .seq
            .map(|seq| Change::removed(&client_id, seq))
            .into_iter()
            .collect();
        let receipt = Self::receipt_for(frame);
        self.pending.push_back(Box::pin(async move {
            match commit.wait().await {
                Ok(()) => {
                    core.commit_background(removed);
                    super::Ready {
                        frames: receipt.into_iter().collect(),
                        ..super::Ready::default()
                    }
                }
                // The subscription's copy is still in the store: back after a restart.
                Err(e) => super::Ready {
                    fail: Some(Close::error(
                        format!("the NACKed message could not be dead-lettered: {e}"),
                        None,
                    )),
                    ..super::Ready::default()
                },
            }
        }));
        Ok(())
    }
}

/// Where the configured dead-letter strategy of the message's topic sends a message NACKed
/// on durable subscription `session` (ActiveMQ's `policyEntry topic=` `deadLetterStrategy`,
/// default `ActiveMQ.DLQ`); `None` when it keeps nothing of it (discarding strategy, or a
/// non-persistent message without `processNonPersistent`). A dead-letter topic is served as
/// the queue of that name, as for queue messages (docs/dead-letter.md).
fn dead_letter_target(
    core: &crate::broker::runtime::BrokerCore,
    message: &crate::broker::message::Message,
    session: &str,
) -> Option<String> {
    let persistent = message.qos != QoS::AtMostOnce;
    let subscriber = durable_subscription_key(session);
    durable_dead_letter_queue(
        &core.queues.delivery_policy(),
        &message.topic,
        persistent,
        subscriber.as_deref(),
    )
}

/// The queue a message of MQTT topic `topic` NACKed on durable subscription `subscriber`
/// (`client-id:subscriptionName`) is dead-lettered to (see [`dead_letter_target`]).
pub(super) fn durable_dead_letter_queue(
    policy: &crate::config::delivery_policy::DeliveryPolicy,
    topic: &str,
    persistent: bool,
    subscriber: Option<&str>,
) -> Option<String> {
    use crate::config::delivery_policy::{DeadLetterReason, Destination};
    let topic = Destination::topic(crate::security::destination::mqtt_to_activemq(topic));
    policy
        .dead_letter_for(&topic)
        .destination_for(&topic, persistent, DeadLetterReason::Rejected, subscriber)
        .map(|to| to.name)
}

/// `client-id:subscriptionName` (ActiveMQ's `SubscriptionKey`) of a durable subscription's
/// session id (see [`durable_session_id`]).
fn durable_subscription_key(session: &str) -> Option<String> {
    let (client_id, name) = durable_parts(session)?;
    Some(subscription_key(client_id, name))
}

/// ActiveMQ's `SubscriptionKey` of durable subscription `name` of client `client_id`.
pub(super) fn subscription_key(client_id: &str, name: &str) -> String {
    format!("{client_id}:{name}")
}

/// (client-id, subscription name) of a durable subscription's session id (see
/// [`durable_session_id`]).
pub(super) fn durable_parts(session: &str) -> Option<(&str, &str)> {
    crate::broker::session::kind::durable_parts(session)
}

/// `message` as it enters dead-letter queue `to` from topic `original` (`/topic/a.b`): no
/// expiry (the strategy's `expiration` is 0), `original-destination` as ActiveMQ's STOMP shows
/// it, persistent (`originalDeliveryMode:NON_PERSISTENT` when it was not), the rest unchanged.
fn dead_letter_copy(
    message: &crate::broker::message::Message,
    original: &str,
    to: &str,
) -> crate::broker::message::Message {
    use crate::broker::message::V5Extras;
    let mut extras = message.v5.as_deref().cloned().unwrap_or(V5Extras {
        properties: crate::protocol::Properties::default(),
        expires_at: None,
    });
    extras.expires_at = None;
    let props = &mut extras.properties.user_properties;
    props.retain(|(k, _)| k != "original-destination");
    props.push(("original-destination".into(), original.to_owned()));
    let mut copy = message.clone();
    crate::broker::queues::dead_letter::made_persistent(&mut copy, &mut extras.properties);
    // A queue's messages carry its ActiveMQ name.
    copy.topic = Arc::from(to);
    copy.v5 = Some(Arc::new(extras));
    copy
}

impl StompConn {
    /// The security snapshot was swapped (a reload): the subscriptions the new policy no longer
    /// lets this client read are removed (a durable one keeps what it holds, but receives no
    /// more), and the client gets an ERROR naming them, after which the connection closes (a
    /// STOMP ERROR always does). The same rule as MQTT connections (`inbound.rs`); ActiveMQ
    /// keeps such consumers until they reconnect (docs/compatibility.md).
    pub(super) fn drop_denied_subscriptions(&mut self) -> Result<(), Close> {
        let security = self.core.current_security();
        let filters: Vec<String> = self.subs.iter().map(|s| s.filter.clone()).collect();
        let mut denied = Vec::new();
        for (index, filter) in filters.iter().enumerate() {
            let allowed = match mqtt_temp_topic_name(filter) {
                Some(remote) => security.authorize_destination(
                    &self.principal,
                    Action::Read,
                    DestinationKind::TempTopic,
                    &remote,
                ),
                None => self
                    .authz
                    .allowed(&security, &self.principal, Action::Read, filter),
            };
            if !allowed {
                denied.push(index);
            }
        }
        if denied.is_empty() {
            return Ok(());
        }
        let mut named = Vec::with_capacity(denied.len());
        for index in denied.into_iter().rev() {
            let sub = self.subs.remove(index);
            let destination = stomp_destination_of(&sub.filter, &self.session_name);
            tracing::info!(
                subscription = %sub.id,
                %destination,
                user = %self.principal.user,
                "subscription removed: the reloaded policy denies reading it"
            );
            if sub.durable {
                self.core
                    .unsubscribe(&sub.session, sub.token.generation, &sub.filter);
            }
            named.push(format!("{destination} (subscription {})", sub.id));
            self.end_sub(sub);
        }
        named.reverse();
        Err(Close::error(
            format!(
                "User {} is no longer authorized to read from: {}",
                self.principal.user,
                named.join(", ")
            ),
            None,
        ))
    }
}
