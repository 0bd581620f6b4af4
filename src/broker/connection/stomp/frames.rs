//! The client's frames once connected: SEND (routed as an MQTT PUBLISH, its RECEIPT after the
//! message is durable when it is persistent), BEGIN/COMMIT/ABORT (sends and acks held until
//! COMMIT), DISCONNECT, and the dispatch of the rest.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use super::destination::{
    is_wildcard, remote_temp_name, temp_topic_to_mqtt, topic_to_mqtt, Destination,
};
use super::mapping::message_of_send;
use super::subscribe::AckMode;
use super::{Close, Ready, StompConn};
use crate::broker::connection::flow_control::HELD_RETRY;
use crate::broker::durability::{Commit, DurabilityError};
use crate::broker::message::{Message, SampleStamp};
use crate::broker::routing::memory::{Body, HeldBytes, MESSAGE_OVERHEAD_BYTES};
use crate::broker::runtime::{BrokerCore, Refusal, TopicRefusal};
use crate::config::DestinationKind;
use crate::protocol::stomp::{Command, Frame};
use crate::protocol::QoS;
use crate::security::Action;

/// Open transactions: id -> the SENDs and ACKs held until COMMIT, in order (each checked
/// when it arrived, its `receipt` already answered).
#[derive(Default)]
pub(crate) struct Transactions {
    open: HashMap<String, OpenTransaction>,
    /// A COMMIT admitted whole is being applied: its SENDs are not checked against the
    /// broker-wide limits again (all or nothing).
    applying: bool,
    /// What the COMMIT being applied commits, gathered for one store commit (`commit.rs`);
    /// `None` on a cluster node, which applies a COMMIT frame by frame.
    pub(super) staging: Option<Box<super::commit::Staging>>,
    /// Message numbers of topic subscriptions UNSUBSCRIBEd while an open transaction held an
    /// ACK of them, by transaction: that ACK succeeds at COMMIT and acknowledges nothing
    /// more (the message left with its subscription), as ActiveMQ answers such a COMMIT.
    ended_acks: HashMap<u64, String>,
}

/// The frames of an open transaction, and their memory: charged to `memoryUsage` as they
/// arrive (they are held in memory until COMMIT), released once the COMMIT has charged each
/// message it carries, or at ABORT.
struct OpenTransaction {
    frames: Vec<Frame>,
    charge: HeldBytes,
}

/// A COMMIT whose room the broker-wide limits granted: its frames and its RECEIPT.
pub(crate) struct AdmittedTransaction {
    id: String,
    frames: Vec<Frame>,
    receipt: Option<Frame>,
    /// Its frames' memory until they are applied (see [`OpenTransaction`]).
    charge: HeldBytes,
}

/// What a frame held in a transaction is charged: its body, its headers and the message
/// overhead.
fn held_frame_bytes(frame: &Frame) -> u64 {
    let headers: usize = frame.headers.iter().map(|(n, v)| n.len() + v.len()).sum();
    (frame.body.len() + headers) as u64 + MESSAGE_OVERHEAD_BYTES
}

/// Stale plans (a receiving session ended between planning and commit) are planned again
/// this many times.
pub(super) const STALE_REPLANS: u32 = 3;

impl StompConn {
    /// One frame from the client. `Err`: close (with an ERROR frame when it says so).
    pub(super) fn handle(&mut self, frame: Frame) -> Result<(), Close> {
        self.core.counters.stomp_frame_in(frame.command);
        match frame.command {
            Command::Send => {
                if let Some(tx) = frame.header("transaction") {
                    return self.hold_in_transaction(tx.to_owned(), frame);
                }
                self.on_send(&frame)
            }
            Command::Subscribe => {
                let done = self.on_subscribe(&frame);
                self.count_subscriptions();
                done
            }
            Command::Unsubscribe => {
                let done = self.on_unsubscribe(&frame);
                self.count_subscriptions();
                done
            }
            Command::Ack | Command::Nack => {
                if let Some(tx) = frame.header("transaction") {
                    return self.hold_in_transaction(tx.to_owned(), frame);
                }
                self.refuse_ack_held_by_a_transaction(&frame, None)?;
                self.on_ack(&frame)
            }
            Command::Begin => self.on_begin(&frame),
            Command::Commit => self.on_commit(&frame),
            Command::Abort => self.on_abort(&frame),
            Command::Disconnect => {
                if let Some(receipt) = Self::receipt_for(&frame) {
                    self.send_ordered(receipt);
                }
                Err(Close::Disconnect)
            }
            Command::Connect | Command::Stomp => {
                Err(Close::error("Already connected.", Some(&frame)))
            }
            Command::Connected | Command::Message | Command::Receipt | Command::Error => {
                Err(Close::error(
                    format!("{} is a server frame", frame.command.as_str()),
                    Some(&frame),
                ))
            }
        }
    }

    /// Tell the console's list how many subscriptions this connection holds.
    fn count_subscriptions(&self) {
        if let Some(live) = &self.live {
            let queues = self.queues.as_ref().map_or(0, |q| q.len());
            live.set_subscriptions(self.subs.len() + queues);
        }
    }

    /// The frame's RECEIPT, after what is already waiting.
    pub(super) fn receipt(&mut self, frame: &Frame) {
        if let Some(receipt) = Self::receipt_for(frame) {
            self.send_ordered(receipt);
        }
    }

    fn on_send(&mut self, frame: &Frame) -> Result<(), Close> {
        let Some(header) = frame.header("destination") else {
            return Err(Close::error(
                "SEND received without a Destination specified!",
                Some(frame),
            ));
        };
        let dest =
            Destination::parse(header).map_err(|e| Close::error(e.to_string(), Some(frame)))?;
        super::headers::check_send(frame)?;
        if dest.is_queue() {
            return self.queue_send(&dest, frame);
        }
        let topic = match &dest {
            Destination::Topic(name) => {
                let topic =
                    topic_to_mqtt(name).map_err(|e| Close::error(e.to_string(), Some(frame)))?;
                if is_wildcard(&topic) {
                    return Err(Close::error(
                        format!("cannot send to the wildcard destination /topic/{name}"),
                        Some(frame),
                    ));
                }
                self.authorize_write(&topic, name, frame)?;
                topic
            }
            _ => self.temp_topic(&dest, Action::Write, frame)?,
        };
        self.cluster_topic_fits(&topic, header.len(), frame)?;
        self.cluster_message_fits(&topic, frame)?;
        self.reply_temp_queue(frame)?;
        let rewritten;
        let frame = match self.reply_to_rewritten(frame) {
            Some(f) => {
                rewritten = f;
                &rewritten
            }
            None => frame,
        };
        let mut message = message_of_send(frame, Arc::from(topic), Instant::now());
        let received = self
            .core
            .counters
            .message_in(message.qos, message.payload.len());
        message.stamp = SampleStamp::for_publish(received);
        self.publish(message, Self::receipt_for(frame));
        Ok(())
    }

    /// The MQTT topic of a temporary topic (this connection's `/temp-topic/x` or another's
    /// `/remote-temp-topic/...`), when `tempDestinationAuthorizationEntry` lets the client
    /// do `action` on temporary topics.
    pub(super) fn temp_topic(
        &mut self,
        dest: &Destination,
        action: Action,
        frame: &Frame,
    ) -> Result<String, Close> {
        let remote = match dest {
            Destination::TempTopic(local) => remote_temp_name(&self.session_name, local),
            Destination::RemoteTempTopic(remote) => remote.clone(),
            other => {
                return Err(Close::error(
                    format!("{other} is not a temporary topic"),
                    Some(frame),
                ))
            }
        };
        let topic =
            temp_topic_to_mqtt(&remote).map_err(|e| Close::error(e.to_string(), Some(frame)))?;
        let allowed = self.core.current_security().authorize_destination(
            &self.principal,
            action,
            DestinationKind::TempTopic,
            &remote,
        );
        if !allowed {
            let verb = match action {
                Action::Read => "read from",
                Action::Write => "write to",
                Action::Admin => "create",
            };
            return Err(Close::error(
                format!(
                    "User {} is not authorized to {verb}: temp-topic://{remote}",
                    self.principal.user
                ),
                Some(frame),
            ));
        }
        Ok(topic)
    }

    /// A SEND whose `reply-to` names this connection's temporary destination
    /// (`/temp-topic/x`, `/temp-queue/x`) carries the name others reach it by
    /// (`/remote-temp-topic/<connection>:x`), as ActiveMQ rewrites it. `None`: unchanged.
    pub(super) fn reply_to_rewritten(&self, frame: &Frame) -> Option<Frame> {
        let reply_to = frame.header("reply-to")?;
        let remote = if let Some(local) = reply_to.strip_prefix("/temp-topic/") {
            format!(
                "/remote-temp-topic/{}",
                remote_temp_name(&self.session_name, local)
            )
        } else if let Some(local) = reply_to.strip_prefix("/temp-queue/") {
            format!(
                "/remote-temp-queue/{}",
                remote_temp_name(&self.session_name, local)
            )
        } else {
            return None;
        };
        let mut f = frame.clone();
        for (name, value) in &mut f.headers {
            if name == "reply-to" {
                *value = remote;
                break;
            }
        }
        Some(f)
    }

    /// The `$` rule and write authorization of a SEND to `topic` (`name`: ActiveMQ form).
    fn authorize_write(&mut self, topic: &str, name: &str, frame: &Frame) -> Result<(), Close> {
        if crate::broker::system::is_system_topic(topic) {
            self.core.counters.dropped_not_authorized();
            return Err(Close::error(
                format!("the broker's $SYS topics are read-only: /topic/{name}"),
                Some(frame),
            ));
        }
        if topic.starts_with('$') && !self.listener.options.publish_dollar_topics {
            self.core.counters.dropped_dollar_topic();
            return Err(Close::error(
                format!("sending to $ topics is not allowed on this connector: /topic/{name}"),
                Some(frame),
            ));
        }
        match self.core.use_topic(
            &mut self.authz,
            &self.core.current_security(),
            &self.principal,
            Action::Write,
            topic,
        ) {
            Ok(()) => {
                self.authz
                    .count_publish(&self.core.topic_stats, topic, frame.body.len());
                Ok(())
            }
            Err(TopicRefusal::NotAuthorized) => {
                self.core.counters.dropped_not_authorized();
                Err(Close::error(
                    format!(
                        "User {} is not authorized to write to: topic://{name}",
                        self.principal.user
                    ),
                    Some(frame),
                ))
            }
            Err(TopicRefusal::NotCreated) => {
                self.core.counters.dropped_not_created();
                Err(Close::error(
                    format!(
                        "User {} is not authorized to create: topic://{name}",
                        self.principal.user
                    ),
                    Some(frame),
                ))
            }
        }
    }

    /// Route `message` as an MQTT publish of its QoS; `receipt` goes out once it is routed
    /// (a persistent message: once it is kept for every persistent session it reaches).
    fn publish(&mut self, message: Message, receipt: Option<Frame>) {
        if self.applying_transaction() {
            // Its room was granted with the whole transaction's.
            let message = self.core.memory.charge(message);
            if self.staging().is_some() {
                let planned = self.core.plan_route_from(message, &self.origin());
                if let Some(staging) = self.staging() {
                    staging.route(planned);
                }
                return;
            }
            if message.qos != QoS::AtMostOnce {
                return self.publish_admitted(message, receipt);
            }
            let (plan, changes) = self.core.plan_route_from(message, &self.origin());
            self.core.commit_background(changes);
            self.pending.push_back(Box::pin(std::future::ready(Ready {
                route: Some(plan),
                frames: receipt.into_iter().collect(),
                ..Ready::default()
            })));
            return;
        }
        if message.qos == QoS::AtMostOnce {
            if self.core.memory.is_full() {
                // ActiveMQ blocks a non-persistent producer too (producer flow control).
                return self.hold(message, Refusal::MemoryFull, receipt);
            }
            if let Some(message) = self.core.admit(message, Body::Uncharged) {
                let (plan, changes) = self.core.plan_route_from(message, &self.origin());
                self.core.commit_background(changes);
                if self.pending.is_empty() {
                    let routed = self.core.complete_route(plan);
                    self.pause_for(routed);
                } else {
                    self.pending.push_back(Box::pin(std::future::ready(Ready {
                        route: Some(plan),
                        ..Ready::default()
                    })));
                }
            }
            if let Some(receipt) = receipt {
                self.send_ordered(receipt);
            }
            return;
        }
        match self.core.admit_acknowledged(message, Body::Uncharged) {
            Ok(message) => self.publish_admitted(message, receipt),
            Err((message, refusal)) => self.hold(message, refusal, receipt),
        }
    }

    /// Commit, then route and send the receipt, in order with what waits already.
    fn publish_admitted(&mut self, message: Message, receipt: Option<Frame>) {
        let origin = self.origin();
        let (plan, changes) = self.core.plan_route_from(message, &origin);
        let first = match self.core.durability().commit(changes) {
            Commit::Done(Ok(())) if self.pending.is_empty() => {
                let routed = self.core.complete_route(plan);
                self.pause_for(routed);
                if let Some(receipt) = receipt {
                    self.send(&receipt);
                }
                return;
            }
            Commit::Done(Ok(())) => {
                self.pending.push_back(Box::pin(std::future::ready(Ready {
                    route: Some(plan),
                    frames: receipt.into_iter().collect(),
                    ..Ready::default()
                })));
                return;
            }
            other => other,
        };
        let core = self.core.clone();
        self.pending.push_back(Box::pin(async move {
            let mut plan = plan;
            let mut result = first.wait().await;
            let mut replans = 0;
            while let Err(DurabilityError::Stale(_)) = &result {
                if replans == STALE_REPLANS {
                    break;
                }
                replans += 1;
                let (replanned, changes) = core.plan_route_from(plan.into_message(), &origin);
                plan = replanned;
                result = core.durability().commit(changes).wait().await;
            }
            match result {
                Ok(()) => Ready {
                    route: Some(plan),
                    frames: receipt.into_iter().collect(),
                    ..Ready::default()
                },
                Err(e) => {
                    core.publish_refused(&plan.message().topic, &e);
                    let text = unkept_text("message", "not stored", &e);
                    Ready {
                        fail: Some(Close::error_answering(text, receipt.as_ref())),
                        ..Ready::default()
                    }
                }
            }
        }));
    }

    /// A SEND a broker-wide limit stopped (`memoryUsage` for any SEND, also `storeUsage` and
    /// disk space for a persistent one): reading stops until it is admitted (ActiveMQ blocks
    /// the producer, persistent or not); its RECEIPT leaves only once it is routed (and kept,
    /// when persistent). Past `sendFailIfNoSpace[AfterTimeout]` it is refused with an ERROR in
    /// ActiveMQ's words and is not kept: never a RECEIPT for a message that is then dropped.
    fn hold(&mut self, message: Message, refusal: Refusal, receipt: Option<Frame>) {
        self.core.count_held(&message.topic, &refusal);
        self.held += 1;
        let core = self.core.clone();
        let origin = self.origin();
        let producer = self.session_name.clone();
        let fail_after = *self.core.send_fail_after.lock();
        let refuse_at_once = fail_after == Some(std::time::Duration::ZERO);
        let deadline = fail_after.map(|d| tokio::time::Instant::now() + d);
        self.pending.push_back(Box::pin(async move {
            let mut message = message;
            let mut refusal = refusal;
            loop {
                if deadline.is_some_and(|at| tokio::time::Instant::now() >= at) {
                    let text =
                        no_space_message(&core, &refusal, refuse_at_once, &producer, &message);
                    return Ready {
                        fail: Some(Close::error_answering(text, receipt.as_ref())),
                        released_hold: true,
                        ..Ready::default()
                    };
                }
                tokio::time::sleep(HELD_RETRY).await;
                match admit(&core, message) {
                    Ok(admitted) => {
                        message = admitted;
                        break;
                    }
                    Err((back, why)) => {
                        message = back;
                        refusal = why;
                    }
                }
            }
            let persistent = message.qos != QoS::AtMostOnce;
            let (plan, changes) = core.plan_route_from(message, &origin);
            if !persistent {
                core.commit_background(changes);
                return Ready {
                    route: Some(plan),
                    frames: receipt.into_iter().collect(),
                    released_hold: true,
                    ..Ready::default()
                };
            }
            match core.durability().commit(changes).wait().await {
                Ok(()) => Ready {
                    route: Some(plan),
                    frames: receipt.into_iter().collect(),
                    released_hold: true,
                    ..Ready::default()
                },
                Err(e) => Ready {
                    fail: Some(Close::error_answering(
                        unkept_text("message", "not stored", &e),
                        receipt.as_ref(),
                    )),
                    released_hold: true,
                    ..Ready::default()
                },
            }
        }));
    }

    /// The sessions of this connection's subscriptions: `activemq.noLocal` ones skip what it
    /// sends.
    pub(super) fn origin(&self) -> Vec<crate::broker::session::SessionId> {
        self.subs.iter().map(|s| s.session.id()).collect()
    }

    fn transactions(&mut self) -> &mut Transactions {
        self.transactions.get_or_insert_with(Box::default)
    }

    fn transaction_id(frame: &Frame) -> Result<String, Close> {
        frame
            .header("transaction")
            .map(str::to_owned)
            .ok_or_else(|| {
                Close::error(
                    "Must specify the transaction (transaction header)",
                    Some(frame),
                )
            })
    }

    fn on_begin(&mut self, frame: &Frame) -> Result<(), Close> {
        let id = Self::transaction_id(frame)?;
        if self.transactions().open.contains_key(&id) {
            return Err(Close::error(
                format!("The transaction was already started: {id}"),
                Some(frame),
            ));
        }
        let charge = self.core.memory.hold(0);
        self.transactions().open.insert(
            id,
            OpenTransaction {
                frames: Vec::new(),
                charge,
            },
        );
        self.receipt(frame);
        Ok(())
    }

    /// A SEND or ACK inside transaction `id`: checked now (a refused one fails now, as in
    /// ActiveMQ, and the connection closes, dropping the whole transaction), held until
    /// COMMIT, its RECEIPT answered at once (ActiveMQ does; clients wait for it). A NACK is
    /// refused: ActiveMQ's poison ack cannot be transacted.
    fn hold_in_transaction(&mut self, id: String, mut frame: Frame) -> Result<(), Close> {
        if !self.transactions().open.contains_key(&id) {
            return Err(Close::error(
                format!("Invalid transaction id: {id}"),
                Some(&frame),
            ));
        }
        match frame.command {
            Command::Nack => {
                return Err(Close::error(
                    "Poison ack cannot be transacted",
                    Some(&frame),
                ))
            }
            Command::Send => {
                self.check_transacted_send(&frame)?;
                let held = self
                    .transactions()
                    .open
                    .get(&id)
                    .map_or(0, |t| t.charge.bytes());
                if self
                    .core
                    .memory
                    .exceeds_limit(held, held_frame_bytes(&frame))
                {
                    // Held in memory until COMMIT: a transaction larger than `memoryUsage`
                    // could never be kept. The connection closes, nothing of it applied.
                    return Err(Close::error(
                        format!(
                            "Usage Manager Memory Usage limit reached: transaction {id} is \
                             larger than the memory limit; not committed, nothing of it \
                             applied. See \
                             http://activemq.apache.org/producer-flow-control.html for more info"
                        ),
                        Some(&frame),
                    ));
                }
            }
            _ => {
                self.check_transacted_ack(&frame)?;
                self.refuse_ack_held_by_a_transaction(&frame, Some(&id))?;
            }
        }
        let receipt = Self::receipt_for(&frame);
        frame
            .headers
            .retain(|(n, _)| n != "receipt" && n != "transaction");
        if let Some(held) = self.transactions().open.get_mut(&id) {
            held.charge.add(held_frame_bytes(&frame));
            held.frames.push(frame);
        }
        if let Some(receipt) = receipt {
            self.send_ordered(receipt);
        }
        Ok(())
    }

    /// What [`Self::on_send`] refuses, checked when a transacted SEND arrives.
    fn check_transacted_send(&mut self, frame: &Frame) -> Result<(), Close> {
        let Some(header) = frame.header("destination") else {
            return Err(Close::error(
                "SEND received without a Destination specified!",
                Some(frame),
            ));
        };
        let dest =
            Destination::parse(header).map_err(|e| Close::error(e.to_string(), Some(frame)))?;
        super::headers::check_send(frame)?;
        match &dest {
            Destination::Queue(name) => self.check_queue_send(name, frame),
            Destination::Topic(name) => {
                let topic =
                    topic_to_mqtt(name).map_err(|e| Close::error(e.to_string(), Some(frame)))?;
                if is_wildcard(&topic) {
                    return Err(Close::error(
                        format!("cannot send to the wildcard destination /topic/{name}"),
                        Some(frame),
                    ));
                }
                self.cluster_topic_fits(&topic, header.len(), frame)?;
                self.cluster_message_fits(&topic, frame)?;
                self.authorize_write(&topic, name, frame)
            }
            Destination::TempTopic(_) | Destination::RemoteTempTopic(_) => {
                let topic = self.temp_topic(&dest, Action::Write, frame)?;
                self.cluster_topic_fits(&topic, header.len(), frame)?;
                self.cluster_message_fits(&topic, frame)
            }
            // Checked at COMMIT (they may be created or deleted meanwhile).
            Destination::TempQueue(_) | Destination::RemoteTempQueue(_) => Ok(()),
        }
    }

    /// A transacted ACK must name a message delivered to this connection and not
    /// acknowledged yet (ActiveMQ refuses it when it arrives).
    fn check_transacted_ack(&self, frame: &Frame) -> Result<(), Close> {
        let id_header = match self.version {
            crate::protocol::stomp::Version::V1_2 => {
                frame.header("id").or_else(|| frame.header("message-id"))
            }
            _ => frame.header("message-id").or_else(|| frame.header("id")),
        };
        let Some(id) = id_header else {
            return Err(Close::error(
                format!("{} received without a message id", frame.command.as_str()),
                Some(frame),
            ));
        };
        let number = id
            .rsplit_once(':')
            .filter(|(prefix, _)| *prefix == &*self.session_name)
            .and_then(|(_, n)| n.parse::<u64>().ok());
        let known = number.is_some_and(|n| {
            self.subs
                .iter()
                .any(|s| s.unacked.iter().any(|u| u.message_id == n))
                || self.queue_unacked(n)
                // A browser takes nothing: its ACK changes nothing, in a transaction too.
                || self.browsed(n)
        });
        if known {
            Ok(())
        } else {
            Err(Close::error(
                format!(
                    "Unexpected {} received for message-id [{id}]",
                    frame.command.as_str()
                ),
                Some(frame),
            ))
        }
    }

    /// An ACK or NACK (outside a transaction, or in transaction `within`) of a
    /// `client-individual` delivery that another open transaction has ACKed: refused, as
    /// ActiveMQ refuses it (its transacted ACK takes the message out of the subscription's
    /// dispatched list when it arrives; differential script `ack_held_by_a_transaction`).
    /// Accepted, it would make that transaction's COMMIT fail. A `client` ACK is cumulative
    /// and ActiveMQ takes it (its COMMIT then fails there too). A delivery kept aside for the
    /// transaction after its subscription's UNSUBSCRIBE is refused whatever its mode.
    fn refuse_ack_held_by_a_transaction(
        &self,
        frame: &Frame,
        within: Option<&str>,
    ) -> Result<(), Close> {
        let Some(id) = self.ack_id(frame) else {
            return Ok(());
        };
        let Some(n) = self.acked_number(id) else {
            return Ok(());
        };
        let held = self
            .transacted_acks()
            .into_iter()
            .any(|(t, acked)| acked == n && within != Some(t.as_str()));
        if held && (self.ack_mode_of(n) == Some(AckMode::ClientIndividual) || self.parked(n)) {
            return Err(Close::error(
                format!(
                    "Unexpected {} received for message-id [{id}]",
                    frame.command.as_str()
                ),
                Some(frame),
            ));
        }
        Ok(())
    }

    /// Subscription `sub` (a topic's) is UNSUBSCRIBEd: the ACKs open transactions hold of
    /// its messages will succeed at COMMIT (see [`Transactions`]).
    pub(super) fn end_transacted_acks(&mut self, delivered: impl Fn(u64) -> bool) {
        let ended: Vec<(String, u64)> = self
            .transacted_acks()
            .into_iter()
            .filter(|(_, n)| delivered(*n))
            .collect();
        if let Some(transactions) = self.transactions.as_mut() {
            for (id, n) in ended {
                transactions.ended_acks.insert(n, id);
            }
        }
    }

    /// Whether message number `n` is one of [`Self::end_transacted_acks`]'s.
    pub(super) fn ack_of_ended_subscription(&self, n: u64) -> bool {
        self.transactions
            .as_ref()
            .is_some_and(|t| t.ended_acks.contains_key(&n))
    }

    /// Transaction `id` ended (COMMIT applied or stopped, ABORT): what it kept aside for its
    /// ACKs of subscriptions UNSUBSCRIBEd meanwhile goes (queue deliveries back to their
    /// queue, redelivered).
    fn transaction_ended(&mut self, id: &str) {
        if let Some(transactions) = self.transactions.as_mut() {
            transactions.ended_acks.retain(|_, t| t != id);
        }
        self.release_parked(Some(id));
    }

    /// (transaction id, message number) of every ACK the open transactions hold, in arrival
    /// order within each transaction.
    pub(super) fn transacted_acks(&self) -> Vec<(String, u64)> {
        let Some(transactions) = self.transactions.as_ref() else {
            return Vec::new();
        };
        transactions
            .open
            .iter()
            .flat_map(|(id, held)| {
                held.frames
                    .iter()
                    .filter(|f| f.command == Command::Ack)
                    .filter_map(|f| self.ack_id(f).and_then(|a| self.acked_number(a)))
                    .map(move |n| (id.clone(), n))
            })
            .collect()
    }

    /// Whether a COMMIT admitted whole is being applied now.
    pub(super) fn applying_transaction(&self) -> bool {
        self.transactions.as_ref().is_some_and(|t| t.applying)
    }

    /// COMMIT: all or nothing. The room of every message it carries is granted at once
    /// (`memoryUsage`, `storeUsage` for the persistent ones) before any is routed; while
    /// there is none the COMMIT is held (reading stops, no RECEIPT), and past
    /// `sendFailIfNoSpace[AfterTimeout]` it is refused with an ERROR, nothing of it applied.
    /// The RECEIPT follows every message it carried, so it leaves only once each is kept.
    fn on_commit(&mut self, frame: &Frame) -> Result<(), Close> {
        let id = Self::transaction_id(frame)?;
        let Some(held) = self.transactions().open.remove(&id) else {
            return Err(Close::error(
                format!("Invalid transaction id: {id}"),
                Some(frame),
            ));
        };
        let transaction = AdmittedTransaction {
            id: id.clone(),
            frames: held.frames,
            receipt: Self::receipt_for(frame),
            charge: held.charge,
        };
        match transaction_room(&self.core, &transaction.frames, transaction.charge.bytes()) {
            Ok(()) => self.apply_transaction(transaction),
            Err(refusal) => {
                self.hold_transaction(id, transaction, refusal);
                Ok(())
            }
        }
    }

    /// Apply a COMMIT whose room is granted: its frames are staged and kept by one store
    /// commit, then applied, then its RECEIPT leaves (`commit.rs`). A frame refused now (an
    /// ACK of a message no longer held) applies nothing of it.
    pub(super) fn apply_transaction(
        &mut self,
        transaction: AdmittedTransaction,
    ) -> Result<(), Close> {
        let id = transaction.id.clone();
        let result = self.apply_admitted(transaction);
        // What it kept aside and its frames did not use (it stopped at a frame before them).
        self.transaction_ended(&id);
        result
    }

    fn apply_admitted(&mut self, transaction: AdmittedTransaction) -> Result<(), Close> {
        if self.core.backplane().is_some() && !self.staged_on_cluster(&transaction.frames) {
            return self.apply_in_order(transaction);
        }
        let receipt_id = transaction
            .receipt
            .as_ref()
            .and_then(|r| r.header("receipt-id"))
            .map(str::to_owned);
        self.transactions().applying = true;
        self.transactions().staging = Some(Box::default());
        let result = transaction
            .frames
            .iter()
            .try_for_each(|op| match op.command {
                Command::Send => self.on_send(op),
                _ => self.on_ack(op),
            });
        let transactions = self.transactions();
        transactions.applying = false;
        let staging = transactions.staging.take();
        let result =
            result.map_err(|close| answers_commit(close, &transaction.id, &receipt_id, false));
        match (result, staging) {
            (Ok(()), Some(staging)) => {
                self.commit_staged(transaction.id, *staging, transaction.receipt);
                Ok(())
            }
            (Err(close), Some(staging)) => {
                self.abandon_staged(*staging);
                Err(close)
            }
            (result, None) => result,
        }
    }

    /// A COMMIT on a cluster node that is not only queue work (`commit.rs`,
    /// `staged_on_cluster`): each frame applied in order as if it came alone (each
    /// persistent message its own store in NATS JetStream; no store takes topic messages,
    /// queue messages and acknowledgements as one unit there), then the RECEIPT after all of
    /// them.
    fn apply_in_order(&mut self, transaction: AdmittedTransaction) -> Result<(), Close> {
        self.transactions().applying = true;
        let result = transaction
            .frames
            .iter()
            .try_for_each(|op| match op.command {
                Command::Send => self.on_send(op),
                _ => self.on_ack(op),
            });
        self.transactions().applying = false;
        let receipt_id = transaction
            .receipt
            .as_ref()
            .and_then(|r| r.header("receipt-id"))
            .map(str::to_owned);
        result.map_err(|close| answers_commit(close, &transaction.id, &receipt_id, true))?;
        if let Some(receipt) = transaction.receipt {
            self.send_ordered(receipt);
        }
        Ok(())
    }

    /// A COMMIT the broker-wide limits stopped: tried again until its whole room is
    /// granted, or refused (nothing applied) past `sendFailIfNoSpace[AfterTimeout]`.
    fn hold_transaction(&mut self, id: String, transaction: AdmittedTransaction, why: Refusal) {
        self.held += 1;
        let core = self.core.clone();
        let producer = self.session_name.clone();
        let fail_after = *self.core.send_fail_after.lock();
        let deadline = fail_after.map(|d| tokio::time::Instant::now() + d);
        self.pending.push_back(Box::pin(async move {
            let mut refusal = why;
            loop {
                if deadline.is_some_and(|at| tokio::time::Instant::now() >= at) {
                    let limit = match &refusal {
                        Refusal::MemoryFull => {
                            "Usage Manager Memory Usage limit reached".to_owned()
                        }
                        Refusal::Durability(e) => format!("Persistent store is Full ({e})"),
                    };
                    let mut error = Close::error(
                        format!(
                            "{limit}. Stopping producer ({producer}): transaction {id} not \
                             committed, nothing of it applied. See \
                             http://activemq.apache.org/producer-flow-control.html for more info"
                        ),
                        None,
                    );
                    let receipt_id = transaction
                        .receipt
                        .as_ref()
                        .and_then(|r| r.header("receipt-id"));
                    if let (Close::Error(frame), Some(r)) = (&mut error, receipt_id) {
                        frame.headers.push(("receipt-id".to_owned(), r.to_owned()));
                    }
                    return Ready {
                        fail: Some(error),
                        released_hold: true,
                        ..Ready::default()
                    };
                }
                tokio::time::sleep(HELD_RETRY).await;
                match transaction_room(&core, &transaction.frames, transaction.charge.bytes()) {
                    Ok(()) => break,
                    Err(why) => refusal = why,
                }
            }
            Ready {
                transaction: Some(Box::new(transaction)),
                released_hold: true,
                ..Ready::default()
            }
        }));
    }

    /// ABORT: the held sends are dropped; the held acks never happened, so those messages
    /// stay unacknowledged (redelivered as any unacknowledged message).
    fn on_abort(&mut self, frame: &Frame) -> Result<(), Close> {
        let id = Self::transaction_id(frame)?;
        if self.transactions().open.remove(&id).is_none() {
            return Err(Close::error(
                format!("Invalid transaction id: {id}"),
                Some(frame),
            ));
        }
        self.transaction_ended(&id);
        self.receipt(frame);
        Ok(())
    }
}

/// Whether the broker-wide limits have room for every SEND of a transaction at once:
/// `memoryUsage` for all (not counting `own_bytes`, what the transaction's frames are already
/// charged: it must not wait for room that it takes itself), `storeUsage` (and disk) for the
/// persistent ones' bytes together.
fn transaction_room(core: &BrokerCore, frames: &[Frame], own_bytes: u64) -> Result<(), Refusal> {
    let sends = || frames.iter().filter(|f| f.command == Command::Send);
    if sends().next().is_none() {
        return Ok(());
    }
    let memory_full = core
        .memory
        .limit_bytes()
        .is_some_and(|limit| core.memory.used_bytes().saturating_sub(own_bytes) >= limit);
    if memory_full {
        return Err(Refusal::MemoryFull);
    }
    let persistent_bytes: u64 = sends()
        .filter(|f| f.header("persistent") == Some("true"))
        .map(|f| (f.header("destination").map_or(0, str::len) + f.body.len()) as u64)
        .sum();
    if persistent_bytes > 0 {
        core.durability()
            .check_room(persistent_bytes)
            .map_err(Refusal::Durability)?;
    }
    Ok(())
}

/// Admission of a held SEND: a persistent one against every limit, a non-persistent one
/// against `memoryUsage` only (it is never written to the store).
fn admit(core: &BrokerCore, message: Message) -> Result<Message, (Message, Refusal)> {
    if message.qos != QoS::AtMostOnce {
        return core.admit_acknowledged(message, Body::Uncharged);
    }
    if core.memory.is_full() {
        return Err((message, Refusal::MemoryFull));
    }
    Ok(core.memory.charge(message))
}

/// The ERROR `message` of a SEND refused for lack of room, in ActiveMQ 5.17's words
/// (`Topic.send`, `BaseDestination.waitForSpace`): `refused_at_once` is `sendFailIfNoSpace`,
/// otherwise `sendFailIfNoSpaceAfterTimeout` ran out.
fn no_space_message(
    core: &BrokerCore,
    refusal: &Refusal,
    refused_at_once: bool,
    producer: &str,
    message: &Message,
) -> String {
    const SEE: &str = "See http://activemq.apache.org/producer-flow-control.html for more info";
    let destination = qualified_name(&message.topic);
    match refusal {
        Refusal::MemoryFull if refused_at_once => format!(
            "Usage Manager memory limit ({}) reached. Rejecting send for producer ({producer}) \
             to prevent flooding {destination}. {SEE}",
            core.memory.limit_bytes().unwrap_or(0)
        ),
        Refusal::MemoryFull => format!(
            "Usage Manager Memory Usage limit reached. Stopping producer ({producer}) to \
             prevent flooding {destination}. {SEE}"
        ),
        Refusal::Durability(e) => format!(
            "Persistent store is Full ({e}). Stopping producer ({producer}) to prevent \
             flooding {destination}. {SEE}"
        ),
    }
}

/// `topic://a.b` for the MQTT topic `a/b` (a temporary topic: its `temp-topic://` name).
/// The ERROR text for a `noun` ("message", "acknowledgement") whose commit failed with `e`:
/// `failed` ("not stored"), or, when the store may still keep it (a cluster store that did
/// not answer within `storeTimeout`), "not confirmed": a client that sends the message
/// again may have it delivered twice, one that does not may still have it delivered.
pub(super) fn unkept_text(noun: &str, failed: &str, e: &DurabilityError) -> String {
    if e.outcome_unknown() {
        format!("{noun} not confirmed: {e}; it may still be kept")
    } else {
        format!("{noun} {failed}: {e}")
    }
}

fn qualified_name(topic: &str) -> String {
    match super::destination::mqtt_temp_topic_name(topic) {
        Some(remote) => format!("temp-topic://{remote}"),
        None => format!(
            "topic://{}",
            crate::security::destination::mqtt_to_activemq(topic)
        ),
    }
}

/// An ERROR met while a COMMIT's frames are applied answers the COMMIT: it names the
/// transaction and carries the COMMIT's `receipt-id` (not the held frame's own, answered when
/// it arrived). `in_order`: the frames before it were applied (a cluster node's COMMIT
/// applied frame by frame).
fn answers_commit(
    close: Close,
    transaction: &str,
    receipt_id: &Option<String>,
    in_order: bool,
) -> Close {
    let Close::Error(mut frame) = close else {
        return close;
    };
    frame.headers.retain(|(name, _)| name != "receipt-id");
    if let Some(id) = receipt_id {
        frame.headers.push(("receipt-id".to_owned(), id.clone()));
    }
    let prefix = if in_order {
        format!("transaction {transaction} stopped (its frames before this one were applied): ")
    } else {
        format!("transaction {transaction} not committed, nothing of it applied: ")
    };
    for (name, value) in frame.headers.iter_mut() {
        if name == "message" {
            value.insert_str(0, &prefix);
        }
    }
    let mut body = prefix.into_bytes();
    body.extend_from_slice(&frame.body);
    frame.body = body.into();
    Close::Error(frame)
}
